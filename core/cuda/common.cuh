/*
 * core/cuda/common.cuh -- shared pieces of the CUDA backend: error checks,
 * the backend's private state, the per-tensor device workspace and the
 * device-side helpers that decode packed trits and group scales.
 *
 * Every kernel runs on the legacy default stream (stream 0); ops never sync
 * the host except the ones whose result is a host value (sum, all_finite,
 * tern_step's stats).
 */
#ifndef ARB_CUDA_COMMON_CUH
#define ARB_CUDA_COMMON_CUH

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <stdio.h>
#include <stdint.h>
#include "arb/ops.h"

/* report a CUDA failure once per call site; ops return void so the backend
 * keeps the first error in cuda_priv.err for callers that check */
void cuda_report(cudaError_t e, const char *what, const char *file, int line);
#define CK(call) do { cudaError_t e_ = (call); \
	if (e_ != cudaSuccess) cuda_report(e_, #call, __FILE__, __LINE__); } while (0)
#define CK_LAUNCH(name) CK(cudaGetLastError())

static inline unsigned int cdiv(int64_t a, int64_t b) { return (unsigned int)((a + b - 1) / b); }

/* per-tensor device workspace (arb_tern.ws_dev) */
typedef struct tern_ws {
	unsigned long long stats[6];  /* flips cand sat capped e_changes zeros */
	double sumsq;                 /* sr vote: sum of dW^2 this step */
	double measured;              /* sr vote: sumsq of the measuring pass */
	unsigned long long cand;      /* step: candidates counted first */
	int rms_now;                  /* rms_log2 measured this call */
	int pad;
	/* fp8 vote operands (dy, x): the last vote's |max| (0: none yet) sets
	 * this vote's scale; this vote's |max| (float bits, atomicMax) and
	 * whether the stale scale did not fit (linear.cu, to_f8_t_kernel) */
	float f8_amax[2];
	unsigned int f8_now[2];
	int f8_redo[2];
} tern_ws;

/* backend-private state */
typedef struct cuda_priv {
	int device;
	int sms;
	double *partials;     /* deterministic reduction scratch */
	int64_t partials_n;
	float *split;         /* split-K partial outputs */
	int64_t split_n;
	unsigned int *split_cnt;
	int64_t split_cnt_n;
	int *flag;            /* all_finite */
	void *scratch;        /* embed vote sort buffers */
	size_t scratch_n;
	tern_ws *hws;         /* mapped pinned host copies of workspaces (tern_step_many) */
	tern_ws *hws_dev;     /* the device address of hws */
	void *bounce;         /* pinned bounce buffer of small downloads */
	int bounce_failed;
	int hws_n;
} cuda_priv;

cuda_priv *cuda_get_priv(arb_backend *be);
double *cuda_partials(arb_backend *be, int64_t n);
float *cuda_split_ws(arb_backend *be, int64_t n, unsigned int **cnt, int64_t ncnt);
void *cuda_scratch(arb_backend *be, size_t bytes);
/* deterministic sum of n doubles (fixed order) into *dst (+= if add); when
 * rms_out != NULL also stores the device rms_log2 of (sum / nweights) */
void cuda_finalize_sumsq(const double *parts, int64_t n, double *dst, int add,
			 int *rms_out, int64_t nweights);

/* device copy of arb_rms_log2 (core/tern.c) */
__device__ __forceinline__ int dev_rms_log2(double sumsq, int64_t n)
{
	if (!(sumsq > 0.0) || n <= 0) return ARB_RMS_UNKNOWN;
	float mean = (float)(sumsq / (double)n);
	if (mean == 0.0f) return -127;
	if (isinf(mean)) return 127;
	int e = ilogbf(mean) >> 1;
	if (e < -127) e = -127;
	if (e > 127) e = 127;
	return e;
}

/* sr vote increment for one weight (CPU vote_row): v = R * dW * 2^-rms,
 * clamped to +-16, NaN casts no vote; inc = clamp(floor(v + u), -8, 8) */
__device__ __forceinline__ int sr_inc(float dw, int R, int rms, uint64_t seed,
				      uint64_t stream, uint64_t i)
{
	float v = (float)R * dw * arb_exp2i(-rms);
	if (v != v) return 0;
	v = fminf(fmaxf(v, -16.0f), 16.0f);
	float u = arb_rng_unit(seed, stream, i);
	int f = (int)floorf(v + u);
	return f < -8 ? -8 : (f > 8 ? 8 : f);
}
/* effective rms for an sr vote: the tensor's, else this call's measured one
 * (UNKNOWN after measuring: all-zero dW, use 0) */
__device__ __forceinline__ int vote_rms_dev(int host, const int *dev)
{
	if (host != ARB_RMS_UNKNOWN) return host;
	int r = dev ? *dev : 0;
	return r == ARB_RMS_UNKNOWN ? 0 : r;
}

__device__ __forceinline__ int8_t accum_sub(int8_t T, int inc)
{
	int x = (int)T - inc;
	x = x < -127 ? -127 : (x > 127 ? 127 : x);
	return (int8_t)x;
}

/* ---- linear ops (linear.cu) */
void cuda_linear_forward(arb_backend *be, const arb_tern *w, const float *x,
			 float *y, int64_t M, int accumulate);
void cuda_linear_backward_x(arb_backend *be, const arb_tern *w,
			    const float *dy, float *dx, int64_t M, int accumulate);
void cuda_linear_vote(arb_backend *be, arb_tern *w, const float *x,
		      const float *dy, int64_t M, const arb_vote *v);
/* ---- attention (attention.cu) */
void cuda_attention_forward(arb_backend *be, const float *q, const float *k,
			    const float *v, float *out, float *lse, int B,
			    int T, int H, int hd);
void cuda_attention_backward(arb_backend *be, const float *q, const float *k,
			     const float *v, const float *out, const float *lse,
			     const float *dout, float *dq, float *dk, float *dv,
			     int B, int T, int H, int hd);

/* ARB_CUDA_LEGACY=<keys> (any subset, comma separated) selects the previous
 * kernels of a family: for A/B timing and for bisecting a GPU-suite failure.
 * Keys: step skinny gemv gemm wgmma tma vote bwdx fwd16 prep wspec vsimd vpf
 * vf8 wcl wsk srev lut sk5 (lut: the one-token forward without the table
 * kernel; sk5: 2..4 tokens on wide rows without the v5 skinny kernel;
 * vf8: the sign vote's bf16 operands instead of fp8
 * e4m3; vpf: its epilogue without the producer warp's prefetch; wcl: the
 * Hopper store GEMM on single CTAs instead of CTA pairs sharing the B tile;
 * wsk: that GEMM's K not split on small tile grids; srev: the capped
 * step's tiles in ascending order). Matched by strstr: no key may contain
 * another. */
#include <stdlib.h>
#include <string.h>
static inline int cuda_legacy(const char *what)
{
	const char *e = getenv("ARB_CUDA_LEGACY");
	return e && strstr(e, what) != NULL;
}

/* ---------------------------------------------------------------------------
 * device helpers */

/* what a kernel needs to know about a tensor to read its weights */
typedef struct tern_view {
	const uint8_t *packed;
	const int8_t *E;
	const int64_t *corr;   /* NULL unless bigint with steps >= 1 */
	int64_t rows, cols, row_bytes;
	int gs, groups;
	double alpha;          /* bigint: alpha and steps * group_size */
	double big_den;
} tern_view;

static inline tern_view tern_view_of(const arb_tern *t)
{
	tern_view v;
	v.packed = t->packed;
	v.E = t->E;
	v.rows = t->rows;
	v.cols = t->cols;
	v.row_bytes = t->row_bytes;
	v.gs = t->group_size;
	v.groups = t->groups;
	v.corr = NULL;
	v.alpha = 0.0;
	v.big_den = 1.0;
	if (t->erule == ARB_ERULE_BIGINT && t->corr && t->steps >= 1) {
		v.corr = t->corr;
		v.alpha = (double)t->bigint_alpha;
		v.big_den = (double)t->steps * (double)t->group_size;
	}
	return v;
}

/* scale of (row r, group g): the same formula as arb_tern_scale (bigint in
 * double, then rounded to float) */
__device__ __forceinline__ float view_scale(const tern_view &v, int64_t r, int g)
{
	int64_t k = r * v.groups + g;
	int e = v.E[k];
	if (v.corr)
		return (float)exp2((double)e + v.alpha * (double)v.corr[k] / v.big_den);
	return arb_exp2i(e);
}

/* trit j (0..4) of packed byte b, division-free (exact for every b < 243) */
__device__ __forceinline__ int trit_digit(unsigned int b, int j)
{
	/* q = b / 3^j: repeated exact division by 3 (q * 43691) >> 17, q < 256 */
	unsigned int q = b;
	for (int i = 0; i < j; i++) q = (q * 43691u) >> 17;
	return (int)(q - 3u * ((q * 43691u) >> 17)) - 1;
}

/* shared-memory address and asynchronous global -> shared copies (cp.async,
 * sm_80+): 16 or 4 bytes, bytes < size zero-fills the rest (0: reads none) */
__device__ __forceinline__ uint32_t smem_u32(const void *p)
{
	return (uint32_t)__cvta_generic_to_shared(p);
}
__device__ __forceinline__ void cp_async16(void *s, const void *g, int bytes)
{
	asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n"
		     :: "r"(smem_u32(s)), "l"(g), "r"(bytes));
}
/* 4 bytes; bytes = 0 fills zeros without reading g */
__device__ __forceinline__ void cp_async4(void *s, const void *g, int bytes)
{
	asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n"
		     :: "r"(smem_u32(s)), "l"(g), "r"(bytes));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n"); }
template <int N>
__device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;\n" :: "n"(N)); }

#endif /* ARB_CUDA_COMMON_CUH */
