/*
 * core/cuda/ops_cuda.cu -- the CUDA backend table (arb_backend_cuda): device
 * memory, packed-first tensor init, the ternary step (count + flip + repack +
 * exponent rule), the ternary table (embed gather / vote with duplicate
 * indices), RMSNorm, SwiGLU, axpy, add_rows, cross-entropy and the
 * deterministic reductions. Linear ops live in linear.cu, attention in
 * attention.cu. Semantics: arb/tensor.h and arb/ops.h, matched against the
 * CPU reference (core/ops_cpu.c) by tests/check_gpu.c.
 */
#include <math.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include "common.cuh"

static cuda_priv g_priv;
static int g_first_error = 0;

void cuda_report(cudaError_t e, const char *what, const char *file, int line)
{
	if (g_first_error++ < 8)
		fprintf(stderr, "arbcore cuda: %s:%d: %s: %s\n", file, line, what,
			cudaGetErrorString(e));
}

/* CUDA is initialized lazily on the first op of this process (the probe in
 * arb_backend_cuda runs in a child process so that a process which forks
 * afterwards, e.g. the Check runner, never inherits a CUDA context) */
static void lazy_init(void)
{
	static int done = 0;
	if (done) return;
	done = 1;
	CK(cudaSetDevice(g_priv.device));
	cudaDeviceGetAttribute(&g_priv.sms, cudaDevAttrMultiProcessorCount, g_priv.device);
	if (g_priv.sms < 1) g_priv.sms = 1;
	CK(cudaMalloc((void **)&g_priv.flag, sizeof(int)));
}

cuda_priv *cuda_get_priv(arb_backend *be) { lazy_init(); return (cuda_priv *)be->priv; }

double *cuda_partials(arb_backend *be, int64_t n)
{
	cuda_priv *p = cuda_get_priv(be);
	if (n > p->partials_n) {
		if (p->partials) { CK(cudaDeviceSynchronize()); CK(cudaFree(p->partials)); }
		int64_t m = n < 4096 ? 4096 : n;
		CK(cudaMalloc((void **)&p->partials, (size_t)m * sizeof(double)));
		p->partials_n = m;
	}
	return p->partials;
}

float *cuda_split_ws(arb_backend *be, int64_t n, unsigned int **cnt, int64_t ncnt)
{
	cuda_priv *p = cuda_get_priv(be);
	if (n > p->split_n) {
		if (p->split) { CK(cudaDeviceSynchronize()); CK(cudaFree(p->split)); }
		CK(cudaMalloc((void **)&p->split, (size_t)n * sizeof(float)));
		p->split_n = n;
	}
	if (ncnt > p->split_cnt_n) {
		if (p->split_cnt) { CK(cudaDeviceSynchronize()); CK(cudaFree(p->split_cnt)); }
		int64_t m = ncnt < 4096 ? 4096 : ncnt;
		CK(cudaMalloc((void **)&p->split_cnt, (size_t)m * sizeof(unsigned int)));
		CK(cudaMemset(p->split_cnt, 0, (size_t)m * sizeof(unsigned int)));
		p->split_cnt_n = m;
	}
	*cnt = p->split_cnt;
	return p->split;
}

void *cuda_scratch(arb_backend *be, size_t bytes)
{
	cuda_priv *p = cuda_get_priv(be);
	if (bytes > p->scratch_n) {
		if (p->scratch) { CK(cudaDeviceSynchronize()); CK(cudaFree(p->scratch)); }
		CK(cudaMalloc(&p->scratch, bytes));
		p->scratch_n = bytes;
	}
	return p->scratch;
}

/* ---------------------------------------------------------------------------
 * block reductions */
template <typename T>
__device__ __forceinline__ T warp_sum(T v)
{
	for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}
__device__ __forceinline__ float warp_max(float v)
{
	for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}
/* sum over the block in a fixed order; every thread gets the result.
 * blockDim.x a multiple of 32, <= 1024 */
template <typename T>
__device__ T block_sum(T v)
{
	__shared__ T sh[32];
	int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
	v = warp_sum(v);
	__syncthreads();
	if (lane == 0) sh[w] = v;
	__syncthreads();
	int nw = blockDim.x >> 5;
	T t = lane < nw ? sh[lane] : (T)0;
	return warp_sum(t);
}
__device__ float block_max(float v)
{
	__shared__ float sh[32];
	int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
	v = warp_max(v);
	__syncthreads();
	if (lane == 0) sh[w] = v;
	__syncthreads();
	int nw = blockDim.x >> 5;
	float t = lane < nw ? sh[lane] : -INFINITY;
	return warp_max(t);
}

/* ---------------------------------------------------------------------------
 * deterministic sum of partials: one block, fixed order */
__global__ void finalize_kernel1(const double *parts, int64_t n, double *dst,
				 int add, int *rms_out, int64_t nweights)
{
	double s = 0.0;
	for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += parts[i];
	s = block_sum(s);
	if (threadIdx.x == 0) {
		double tot = add ? *dst + s : s;
		*dst = tot;
		if (rms_out) *rms_out = dev_rms_log2(s, nweights);
	}
}
void cuda_finalize_sumsq(const double *parts, int64_t n, double *dst, int add,
			 int *rms_out, int64_t nweights)
{
	finalize_kernel1<<<1, 1024>>>(parts, n, dst, add, rms_out, nweights);
	CK_LAUNCH(finalize);
}

/* ---------------------------------------------------------------------------
 * memory */
static void *c_alloc(arb_backend *be, size_t bytes)
{
	void *p = NULL;
	if (bytes == 0) bytes = 1;
	cudaError_t e = cudaMalloc(&p, bytes);
	if (e != cudaSuccess) { cuda_report(e, "cudaMalloc", __FILE__, __LINE__); return NULL; }
	CK(cudaMemset(p, 0, bytes));
	return p;
}
static void c_free(arb_backend *be, void *p) { if (p) CK(cudaFree(p)); }
static void c_zero(arb_backend *be, void *p, size_t n) { if (n) CK(cudaMemsetAsync(p, 0, n, 0)); }
static void c_upload(arb_backend *be, void *d, const void *s, size_t n)
{
	if (n) CK(cudaMemcpy(d, s, n, cudaMemcpyHostToDevice));
}
/* small downloads (a plugin's few statistics per call) go through a pinned
 * bounce buffer: a pageable cudaMemcpy stages through the driver's own
 * buffer and costs several microseconds more per call */
#define BOUNCE_BYTES 65536
static void c_download(arb_backend *be, void *d, const void *s, size_t n)
{
	if (!n) return;
	cuda_priv *p = cuda_get_priv(be);
	if (n <= BOUNCE_BYTES && !p->bounce && !p->bounce_failed) {
		if (cudaMallocHost(&p->bounce, BOUNCE_BYTES) != cudaSuccess) {
			cudaGetLastError();
			p->bounce = NULL;
			p->bounce_failed = 1;
		}
	}
	if (n <= BOUNCE_BYTES && p->bounce) {
		CK(cudaMemcpyAsync(p->bounce, s, n, cudaMemcpyDeviceToHost, 0));
		CK(cudaStreamSynchronize(0));
		memcpy(d, p->bounce, n);
		return;
	}
	CK(cudaMemcpy(d, s, n, cudaMemcpyDeviceToHost));
}
static void c_copy(arb_backend *be, void *d, const void *s, size_t n)
{
	if (n) CK(cudaMemcpyAsync(d, s, n, cudaMemcpyDeviceToDevice, 0));
}
static void c_sync(arb_backend *be) { CK(cudaDeviceSynchronize()); }

/* ---------------------------------------------------------------------------
 * tensors */
static void c_tern_free(arb_backend *be, arb_tern *t)
{
	if (!t) return;
	void *ps[] = { t->packed, t->E, t->T_accum, t->E_accum, t->corr, t->score, t->ws_dev };
	for (unsigned i = 0; i < sizeof ps / sizeof ps[0]; i++)
		if (ps[i]) CK(cudaFree(ps[i]));
	t->packed = NULL; t->E = NULL; t->T_accum = NULL; t->E_accum = NULL;
	t->corr = NULL; t->score = NULL; t->ws_dev = NULL;
}

static arb_status c_tern_alloc(arb_backend *be, arb_tern *t, arb_error *err)
{
	if (t->rows < 1 || t->cols < 1 || t->group_size < ARB_GROUP_MIN ||
	    t->group_size > ARB_GROUP_MAX)
		return (arb_status)ARB_FAIL(err, ARB_ERR_INVALID,
			"tensor '%s': bad shape %lld x %lld or group size %d", t->name,
			(long long)t->rows, (long long)t->cols, t->group_size);
	t->groups = arb_groups(t->cols, t->group_size);
	t->row_bytes = arb_row_bytes(t->cols);
	t->flags |= ARB_TERN_DEVICE;
	t->rms_log2 = ARB_RMS_UNKNOWN;
	t->steps = 0;
	t->sumsq = 0.0;
	int64_t ng = t->rows * (int64_t)t->groups;
	t->packed = NULL; t->E = NULL; t->T_accum = NULL; t->E_accum = NULL;
	t->corr = NULL; t->score = NULL; t->ws_dev = NULL;
	int ok = 1;
#define DALLOC(ptr, bytes) do { void *p_ = NULL; \
	if (cudaMalloc(&p_, (size_t)(bytes)) != cudaSuccess) ok = 0; \
	else CK(cudaMemset(p_, 0, (size_t)(bytes))); \
	*(void **)&(ptr) = p_; } while (0)
	/* 16 bytes of slack: the vote GEMM's prefetch copies a row's packed
	 * window in 16-byte units (wgmma.cuh) */
	DALLOC(t->packed, t->rows * t->row_bytes + 16);
	DALLOC(t->E, ng);
	if (!(t->flags & ARB_TERN_FROZEN)) DALLOC(t->T_accum, t->rows * t->cols);
	if (t->erule == ARB_ERULE_RESIDUAL) DALLOC(t->E_accum, ng);
	if (t->erule == ARB_ERULE_BIGINT) DALLOC(t->corr, ng * 8);
	if (t->erule != ARB_ERULE_FROZEN) DALLOC(t->score, ng * 4);
	DALLOC(t->ws_dev, sizeof(tern_ws));
#undef DALLOC
	if (!ok) {
		cudaGetLastError();
		c_tern_free(be, t);
		return (arb_status)ARB_FAIL(err, ARB_ERR_NOMEM,
			"tensor '%s' (%lld x %lld): out of device memory", t->name,
			(long long)t->rows, (long long)t->cols);
	}
	/* all-zero trits (code 1 in every digit = 121) until init */
	CK(cudaMemset(t->packed, 121, (size_t)(t->rows * t->row_bytes)));
	return ARB_OK;
}

/* one thread per packed byte: 5 trits from the RNG, packed in place */
__global__ void init_trits_kernel1(uint8_t *packed, int64_t rows, int64_t cols,
				   int64_t rb, uint64_t seed, uint64_t s_trit,
				   uint64_t s_sign, double zthr, int const_trit)
{
	int64_t nb = rows * rb;
	for (int64_t b = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; b < nb;
	     b += (int64_t)gridDim.x * blockDim.x) {
		int64_t r = b / rb, c0 = (b - r * rb) * 5;
		int v = 0;
		for (int j = 4; j >= 0; j--) {
			int64_t c = c0 + j;
			int t = 0;
			if (c < cols) {
				if (const_trit) t = const_trit > 0 ? 1 : -1;
				else {
					int64_t i = r * cols + c;
					uint32_t u = arb_rng_u32(seed, s_trit, (uint64_t)i);
					if ((double)u < zthr) t = 0;
					else t = (arb_rng_u32(seed, s_sign, (uint64_t)i) & 1u) ? 1 : -1;
				}
			}
			v = v * 3 + t + 1;
		}
		packed[b] = (uint8_t)v;
	}
}
__global__ void init_accum_kernel1(int8_t *T, int64_t n, uint64_t seed,
				   uint64_t s_acc, int a)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x) {
		uint32_t u = arb_rng_u32(seed, s_acc, (uint64_t)i);
		T[i] = (int8_t)((int)(u % (uint32_t)(2 * a + 1)) - a);
	}
}

static unsigned int grid_for(int64_t n, int threads)
{
	lazy_init();
	int64_t g = (n + threads - 1) / threads;
	int64_t cap = (int64_t)g_priv.sms * 32;
	if (g > cap) g = cap;
	if (g < 1) g = 1;
	return (unsigned int)g;
}

static void c_tern_init(arb_backend *be, arb_tern *t, const arb_tern_init *ini)
{
	int64_t ng = t->rows * (int64_t)t->groups;
	uint64_t s_trit = arb_rng_stream(t->id, 0, ARB_RNG_INIT_TRIT);
	uint64_t s_sign = arb_rng_stream(t->id, 0, ARB_RNG_INIT_SIGN);
	uint64_t s_acc = arb_rng_stream(t->id, 0, ARB_RNG_INIT_ACCUM);
	int64_t nb = t->rows * t->row_bytes;
	init_trits_kernel1<<<grid_for(nb, 256), 256>>>(t->packed, t->rows, t->cols,
		t->row_bytes, ini->seed, s_trit, s_sign, ini->zero_frac * 4294967296.0,
		(ini->const_trit > 0) - (ini->const_trit < 0));
	CK_LAUNCH(init_trits);
	int e0 = ini->e_init < -128 ? -128 : (ini->e_init > 127 ? 127 : ini->e_init);
	int ai = ini->accum_init < 0 ? 0 : (ini->accum_init > 127 ? 127 : ini->accum_init);
	CK(cudaMemsetAsync(t->E, (unsigned char)(int8_t)e0, (size_t)ng, 0));
	if (t->T_accum) {
		if (ai > 0) {
			init_accum_kernel1<<<grid_for(t->rows * t->cols, 256), 256>>>(
				t->T_accum, t->rows * t->cols, ini->seed, s_acc, ai);
			CK_LAUNCH(init_accum);
		} else {
			CK(cudaMemsetAsync(t->T_accum, 0, (size_t)(t->rows * t->cols), 0));
		}
	}
	if (t->E_accum) CK(cudaMemsetAsync(t->E_accum, 0, (size_t)ng, 0));
	if (t->corr) CK(cudaMemsetAsync(t->corr, 0, (size_t)ng * 8, 0));
	if (t->score) CK(cudaMemsetAsync(t->score, 0, (size_t)ng * 4, 0));
	if (t->ws_dev) CK(cudaMemsetAsync(t->ws_dev, 0, sizeof(tern_ws), 0));
	t->steps = 0;
	t->rms_log2 = ARB_RMS_UNKNOWN;
	t->sumsq = 0.0;
}

/* ---------------------------------------------------------------------------
 * ternary step. One thread per packed byte (5 weights). */
struct step_args {
	uint8_t *packed;
	int8_t *T;
	int32_t *score;       /* non-NULL with order T_FIRST: flips subtracted */
	int64_t rows, cols, rb;
	int gs, groups;
	int thr, reset_rem;
	int capping;          /* 0 none; else compare with p32 */
	int rev;              /* capping: tiles from the last (step_fast_kernel4) */
	unsigned long long cap;
	uint64_t seed, stream;
	tern_ws *ws;
};

template <typename T>
__device__ __forceinline__ void block_add_u64(T v, unsigned long long *dst)
{
	unsigned long long s = block_sum((unsigned long long)v);
	if (threadIdx.x == 0 && s) atomicAdd(dst, s);
}

/* row of packed byte b: 32-bit division whenever it fits */
__device__ __forceinline__ int64_t row_of(int64_t b, int64_t rb)
{
	if (b < 0xffffffffll && rb < 0xffffffffll) return (int64_t)((uint32_t)b / (uint32_t)rb);
	return b / rb;
}

/* pass 1: candidates (|T| >= thr and the trit can still move) */
__global__ void step_count_kernel1(step_args a)
{
	int64_t nb = a.rows * a.rb;
	unsigned int cand = 0;
	for (int64_t b = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; b < nb;
	     b += (int64_t)gridDim.x * blockDim.x) {
		int64_t r = row_of(b, a.rb), c0 = (b - r * a.rb) * 5;
		unsigned int byte = a.packed[b];
		const int8_t *Tr = a.T + r * a.cols;
#pragma unroll
		for (int j = 0; j < 5; j++) {
			int64_t c = c0 + j;
			if (c >= a.cols) break;
			int T = Tr[c];
			int dir = T > 0 ? 1 : -1;
			if ((T >= a.thr || -T >= a.thr) && trit_digit(byte, j) != dir) cand++;
		}
	}
	block_add_u64(cand, &a.ws->cand);
}

/* frozen tensors: count zero trits only */
__global__ void step_zeros_kernel1(step_args a)
{
	int64_t nb = a.rows * a.rb;
	unsigned int zeros = 0;
	for (int64_t b = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; b < nb;
	     b += (int64_t)gridDim.x * blockDim.x) {
		int64_t r = row_of(b, a.rb), c0 = (b - r * a.rb) * 5;
		unsigned int byte = a.packed[b];
		for (int j = 0; j < 5 && c0 + j < a.cols; j++) zeros += trit_digit(byte, j) == 0;
	}
	block_add_u64(zeros, &a.ws->stats[5]);
}

/* pass 2: flips, holds, repack, stats */
__global__ void step_apply_kernel2(step_args a)
{
	int64_t nb = a.rows * a.rb;
	unsigned int flips = 0, cand = 0, sat = 0, capped = 0, zeros = 0;
	uint32_t p32 = 0;
	int capping = 0;
	if (a.capping) {
		unsigned long long nc = a.ws->cand;
		if (nc > a.cap) {
			capping = 1;
			p32 = (uint32_t)((a.cap << 32) / nc);
		}
	}
	for (int64_t b = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; b < nb;
	     b += (int64_t)gridDim.x * blockDim.x) {
		int64_t r = row_of(b, a.rb), c0 = (b - r * a.rb) * 5;
		unsigned int byte = a.packed[b];
		int8_t *Tr = a.T + r * a.cols;
		int tr[5];
		int changed = 0, fg = -1, fn = 0; /* flips of group fg (T_FIRST) */
#pragma unroll
		for (int j = 0; j < 5; j++) {
			int64_t c = c0 + j;
			tr[j] = trit_digit(byte, j);
			if (c >= a.cols) continue;
			int T = Tr[c];
			if (T >= a.thr || -T >= a.thr) {
				int dir = T > 0 ? 1 : -1;
				if (tr[j] == dir) {
					sat++;
					Tr[c] = (int8_t)(dir * a.thr);
				} else {
					cand++;
					if (capping && arb_rng_u32(a.seed, a.stream,
						(uint64_t)(r * a.cols + c)) >= p32) {
						capped++;
						Tr[c] = (int8_t)(dir * a.thr);
					} else {
						flips++;
						tr[j] += dir;
						changed = 1;
						Tr[c] = (int8_t)(a.reset_rem ? T - dir * a.thr : 0);
						if (a.score) {
							int gi = (int)((uint32_t)c / (uint32_t)a.gs);
							if (gi != fg) {
								if (fn) atomicSub(&a.score[r * a.groups + fg], fn);
								fg = gi;
								fn = 0;
							}
							fn++;
						}
					}
				}
			}
			zeros += tr[j] == 0;
		}
		if (fn) atomicSub(&a.score[r * a.groups + fg], fn);
		if (changed) {
			int v = 0;
			for (int j = 4; j >= 0; j--) v = v * 3 + tr[j] + 1;
			a.packed[b] = (uint8_t)v;
		}
	}
	block_add_u64(flips, &a.ws->stats[0]);
	block_add_u64(cand, &a.ws->stats[1]);
	block_add_u64(sat, &a.ws->stats[2]);
	block_add_u64(capped, &a.ws->stats[3]);
	block_add_u64(zeros, &a.ws->stats[5]);
}

/* the residual exponent rule of one group: E_accum ea moves one against
 * the sign of the score s; at +-ethr it carries into E (clamped to
 * [emin, emax]). ea and e updated in place. */
__device__ __forceinline__ void erule_residual(int s, int &ea, int &e, int ethr, int emin,
					       int emax)
{
	int x = ea - ((s > 0) - (s < 0));
	x = x < -127 ? -127 : (x > 127 ? 127 : x);
	if (x >= ethr) { e += 1; x -= ethr; }
	else if (x <= -ethr) { e -= 1; x += ethr; }
	e = e < emin ? emin : (e > emax ? emax : e);
	ea = x;
}

/* exponent rule per group; score zeroed */
__global__ void step_erule_kernel3(int32_t *score, int8_t *E, int8_t *Eacc,
				   int64_t *corr, int64_t ng, int ethr, int emin,
				   int emax, tern_ws *ws)
{
	unsigned int ch = 0;
	for (int64_t g = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; g < ng;
	     g += (int64_t)gridDim.x * blockDim.x) {
		int s = score[g];
		if (Eacc) {
			int ea = Eacc[g], e0 = E[g], e = e0;
			erule_residual(s, ea, e, ethr, emin, emax);
			Eacc[g] = (int8_t)ea;
			if (e != e0) { E[g] = (int8_t)e; ch++; }
		}
		if (corr) corr[g] -= s;
		score[g] = 0;
	}
	block_add_u64(ch, &ws->stats[4]);
}

/* ---------------------------------------------------------------------------
 * fast step path (cols % 5 == 0): weight i = 5 * b + j for packed byte b, so
 * the tensor is one flat stream. A block tile is 4096 packed bytes (256
 * threads x 16 bytes, 20480 weights): one 16-byte load of packed bytes and
 * five 16-byte loads of T_accum per thread, written back only if changed.
 * When cols % group_size == 0 and group_size is a power of two, every group
 * lies inside one tile: flips are counted per group in shared memory and the
 * exponent rule runs in the same kernel (no global atomics on score). */
#define ST_TILE 4096
#define ST_W (ST_TILE * 5)
#define ST_PRE 3 /* groups per thread whose state is loaded with the tile */
#ifndef ST_MINB
#define ST_MINB 3 /* CTAs per SM (h16: 80 registers, no spills once the
		   * 16-byte register path was gone; realistic step 0.111-0.120
		   * -> 0.096-0.099 ms; h15, with that path: spills, slower) */
#endif

struct erule_args {
	int8_t *E, *Eacc;
	int64_t *corr;
	int32_t *score;   /* the tensor's score (NULL: no exponent rule) */
	int64_t ng;
	int ethr, emin, emax;
	int fuse, lg;     /* exponent rule in the step kernel; log2(group_size) */
};

struct st_ctr { unsigned int flips, cand, sat, capped, zeros; };

/* the exponent rule of group g from its loaded state: score s (flips
 * already subtracted), E_accum ea and E e0 (read only with e.Eacc); raw:
 * the score as stored (nothing to clear when 0) */
__device__ __forceinline__ int erule_vals(int s, int raw, int ea, int e0, int64_t g,
					  const erule_args &e)
{
	int ch = 0;
	if (e.Eacc) {
		int x = ea, ee = e0;
		erule_residual(s, x, ee, e.ethr, e.emin, e.emax);
		if (x != ea) e.Eacc[g] = (int8_t)x;
		if (ee != e0) { e.E[g] = (int8_t)ee; ch = 1; }
	}
	if (e.corr) e.corr[g] -= s;
	if (raw) e.score[g] = 0;
	return ch;
}

/* the first nv (<= 5) weights of one packed byte (the others are a row's
 * padding: kept as they are, not counted); T[] updated in place, returns the
 * new byte, flip bits in *fm (bit j: weight j moved) */
template <int CAPPING>
__device__ __forceinline__ unsigned int st_byte(unsigned int byte, int *T, uint64_t i0,
						const step_args &a, uint32_t p32, int capnow,
						st_ctr &ct, unsigned int *fm, int nv = 5)
{
	int tr[5];
	unsigned int q = byte;
#pragma unroll
	for (int j = 0; j < 5; j++) {
		unsigned int q1 = (q * 43691u) >> 17;
		tr[j] = (int)(q - 3u * q1) - 1;
		q = q1;
	}
	unsigned int m = 0;
#pragma unroll
	for (int j = 0; j < 5; j++) {
		if (j >= nv) break;
		int t = T[j];
		int at = t < 0 ? -t : t;
		if (at >= a.thr) {
			int dir = t > 0 ? 1 : -1;
			int held = 0;
			if (tr[j] == dir) { ct.sat++; held = 1; }
			else {
				ct.cand++;
				if (CAPPING && capnow &&
				    arb_rng_u32(a.seed, a.stream, i0 + (uint64_t)j) >= p32) {
					ct.capped++;
					held = 1;
				}
			}
			if (held) T[j] = dir * a.thr;
			else {
				ct.flips++;
				tr[j] += dir;
				m |= 1u << j;
				T[j] = a.reset_rem ? t - dir * a.thr : 0;
			}
		}
		ct.zeros += tr[j] == 0;
	}
	*fm = m;
	return (unsigned int)(tr[0] + 1) + 3u * (tr[1] + 1) + 9u * (tr[2] + 1) +
	       27u * (tr[3] + 1) + 81u * (tr[4] + 1);
}

/* flips of the global (non-fused) path: score[r][c / gs] -= n */
__device__ __forceinline__ void st_score_sub(const step_args &a, uint64_t i, int n)
{
	int64_t r, c;
	if (i < 0xffffffffull && a.cols < 0xffffffffll) {
		r = (uint32_t)i / (uint32_t)a.cols;
		c = (int64_t)i - r * a.cols;
	} else {
		r = (int64_t)(i / (uint64_t)a.cols);
		c = (int64_t)i - r * a.cols;
	}
	atomicSub(&a.score[r * a.groups + (int)((uint32_t)c / (uint32_t)a.gs)], n);
}


/* the flips m (bit j: weight j) of the packed byte at tile position pos
 * (global weight i) leave their group's score: counted in the tile's shared
 * counters when fused (five weights touch at most two groups), else one
 * global atomic each */
__device__ __forceinline__ void st_flips_byte(unsigned int m, int pos, uint64_t i,
					      const step_args &a, const erule_args &e, int *flb)
{
	if (e.fuse) {
		const int glo = pos >> e.lg, ghi = (pos + 4) >> e.lg;
		if (glo == ghi) {
			atomicAdd(&flb[glo], __popc(m));
		} else {
			const int k = (ghi << e.lg) - pos; /* weights below k: group glo */
			const unsigned int lo = m & ((1u << k) - 1u);
			if (lo) atomicAdd(&flb[glo], __popc(lo));
			if (m >> k) atomicAdd(&flb[ghi], __popc(m >> k));
		}
		return;
	}
	while (m) {
		const int j = __ffs(m) - 1;
		m &= m - 1;
		st_score_sub(a, i + (uint64_t)j, 1);
	}
}

template <int CAPPING>
__global__ void __launch_bounds__(256, ST_MINB) step_fast_kernel4(step_args a, erule_args e)
{
	/* flips per group of a tile, double buffered: a tile's counters are
	 * cleared by the thread that reads them in the exponent rule, and the
	 * next tile counts into the other buffer, so one barrier per tile
	 * suffices (the tile after next reuses the buffer only after the next
	 * tile's barrier, which every thread reaches after its reads) */
	__shared__ int fl[2][ST_W / ARB_GROUP_MIN];
	__shared__ uint8_t zt[256]; /* zero trits per packed byte */
	for (int l = threadIdx.x; l < 256; l += 256) {
		unsigned int q = (unsigned int)l, z = 0;
		for (int d = 0; d < 5; d++) { z += q % 3u == 1u; q /= 3u; }
		zt[l] = (uint8_t)z;
	}
	if (e.fuse)
		for (int l = threadIdx.x; l < 2 * (ST_W / ARB_GROUP_MIN); l += 256) fl[0][l] = 0;
	__syncthreads();
	int par = 0;
	const int64_t nb = a.rows * a.rb;
	const int64_t ntiles = (nb + ST_TILE - 1) / ST_TILE;
	const int tid = threadIdx.x;
	uint32_t p32 = 0;
	int capnow = 0;
	if (CAPPING) {
		unsigned long long nc = a.ws->cand;
		if (nc > a.cap) { capnow = 1; p32 = (uint32_t)((a.cap << 32) / nc); }
	}
	st_ctr ct = { 0, 0, 0, 0, 0 };
	unsigned int ech = 0;
	const int ngt = e.fuse ? (ST_W >> e.lg) : 0;
	const int count_flips = a.score != NULL;
	for (int64_t it = blockIdx.x; it < ntiles; it += gridDim.x) {
		/* with the cap, last tile first: the count kernel just read the
		 * end of T_accum, still partly in L2 */
		const int64_t tile = CAPPING && a.rev ? ntiles - 1 - it : it;
		/* the tile's group state (first ST_PRE groups of this thread)
		 * loaded now: its round trip overlaps the trits' (h15 ncu: the
		 * load after the barrier was a second dependent round trip per
		 * tile, long_scoreboard + barrier the top stalls) */
		int ps[ST_PRE], pa[ST_PRE], pe[ST_PRE];
		if (e.fuse) {
#pragma unroll
			for (int u = 0; u < ST_PRE; u++) {
				const int l = tid + 256 * u;
				const int64_t G = tile * (int64_t)ngt + l;
				ps[u] = pa[u] = pe[u] = 0;
				if (l < ngt && G < e.ng) {
					ps[u] = e.score[G];
					if (e.Eacc) { pa[u] = e.Eacc[G]; pe[u] = e.E[G]; }
				}
			}
		}
		int *const flb = fl[par];
		par ^= 1;
		const int64_t b0 = tile * ST_TILE + (int64_t)tid * 16;
		const uint64_t i0 = (uint64_t)b0 * 5u;
		if (b0 + 16 <= nb) {
			/* h11: the 80 accumulators are checked 4 at a time with SIMD
			 * byte ops; only packed bytes with a weight at threshold take
			 * the per-byte update (scalar, in place); everything else is
			 * read-only: no stores unless something changes */
			uint4 pk = *(const uint4 *)(a.packed + b0);
			const uint4 *Tp = (const uint4 *)(a.T + i0);
			/* screen: bit 7 of byte i of c[w] set when |T| >= thr for
			 * weight 4w + i (|T| as an unsigned byte, 0..128, plus 128 -
			 * thr never carries out of its byte); a lane with no weight
			 * at threshold stops after the OR of its 20 words (h16 ncu:
			 * the SIMD-intrinsic compare was 15 % of the instructions) */
			const uint32_t bias4 = 0x01010101u * (uint32_t)(128 - a.thr);
			uint32_t c20[20], any = 0;
#pragma unroll
			for (int v = 0; v < 5; v++) {
				uint4 xx = Tp[v];
				uint32_t t4[4] = { xx.x, xx.y, xx.z, xx.w };
#pragma unroll
				for (int u = 0; u < 4; u++) {
					c20[4 * v + u] = (__vabsdiffs4(t4[u], 0u) + bias4) & 0x80808080u;
					any |= c20[4 * v + u];
				}
			}
			uint32_t cw[3] = { 0, 0, 0 };
			if (any) {
#pragma unroll
				for (int w = 0; w < 20; w++) {
					uint32_t nib = (c20[w] * 0x00204081u) >> 28; /* bit i: byte i */
					cw[(4 * w) >> 5] |= nib << ((4 * w) & 31);
				}
			}
			uint32_t pw[4] = { pk.x, pk.y, pk.z, pk.w };
			unsigned int z16 = 0;
#pragma unroll
			for (int jb = 0; jb < 16; jb++)
				z16 += zt[(pw[jb >> 2] >> (8 * (jb & 3))) & 0xffu];
			ct.zeros += z16; /* bytes that change correct it */
			if (cw[0] | cw[1] | cw[2]) {
				/* weights at threshold: bits 0..63 in cl, 64..79 in ch */
				uint64_t cl = ((uint64_t)cw[1] << 32) | cw[0];
				uint32_t ch = cw[2];
				if (__popcll(cl) + __popc(ch) > 4) {
					/* many weights at threshold: four bytes (20 weights,
					 * five T words) at a time, words loaded and stored
					 * whole (h16: at three CTAs per SM the 16-byte
					 * register path of h11 no longer fits) */
					uint32_t *Tw = (uint32_t *)(a.T + i0);
#pragma unroll 1
					for (int h = 0; h < 4; h++) {
						const uint32_t bits = h < 3 ? (uint32_t)(cl >> (20 * h)) & 0xfffffu :
							(uint32_t)(cl >> 60) | (ch << 4);
						if (!(bits & 0xfffffu)) continue;
						uint32_t tw[5], ow[5];
#pragma unroll
						for (int v = 0; v < 5; v++) ow[v] = tw[v] = Tw[5 * h + v];
						const uint32_t pwh = h == 0 ? pw[0] : (h == 1 ? pw[1] : (h == 2 ? pw[2] : pw[3]));
						uint32_t npw = pwh;
#pragma unroll
						for (int j = 0; j < 4; j++) {
							if (!((bits >> (5 * j)) & 31u)) continue;
							int T[5];
#pragma unroll
							for (int d = 0; d < 5; d++) {
								const int q = 5 * j + d;
								T[d] = (int)(int8_t)(tw[q >> 2] >> (8 * (q & 3)));
							}
							const unsigned int byte = (pwh >> (8 * j)) & 0xffu;
							unsigned int m;
							ct.zeros -= zt[byte];
							const unsigned int nbyte = st_byte<CAPPING>(byte, T,
								i0 + 20u * h + 5u * j, a, p32, capnow, ct, &m);
							npw = (npw & ~(0xffu << (8 * j))) | (nbyte << (8 * j));
#pragma unroll
							for (int d = 0; d < 5; d++) {
								const int q = 5 * j + d, sh = 8 * (q & 3);
								tw[q >> 2] = (tw[q >> 2] & ~(0xffu << sh)) | ((uint32_t)(T[d] & 0xff) << sh);
							}
							if (count_flips && m)
								st_flips_byte(m, tid * 80 + 20 * h + 5 * j, i0 + 20u * h + 5u * j, a, e, flb);
						}
#pragma unroll
						for (int v = 0; v < 5; v++)
							if (tw[v] != ow[v]) Tw[5 * h + v] = tw[v];
						if (npw != pwh) *(uint32_t *)(a.packed + b0 + 4 * h) = npw;
					}
					cl = 0;
					ch = 0;
				}
				/* few: the packed bytes holding a weight at threshold,
				 * one at a time */
				while (cl | ch) {
					const int p = cl ? __ffsll((long long)cl) - 1 : 63 + __ffs(ch);
					const int jb = (p * 205) >> 10; /* p / 5, p < 80 */
					const int q5 = 5 * jb;
					if (q5 < 64) cl &= ~(31ull << q5);
					if (q5 > 59) ch &= q5 >= 64 ? ~(31u << (q5 - 64)) : ~(31u >> (64 - q5));
					int T[5], T0[5];
					int8_t *tp = a.T + i0 + 5u * jb;
#pragma unroll
					for (int d = 0; d < 5; d++) T0[d] = T[d] = tp[d];
					unsigned int byte = a.packed[b0 + jb];
					unsigned int m;
					ct.zeros -= zt[byte];
					unsigned int nbyte = st_byte<CAPPING>(byte, T, i0 + 5u * jb, a, p32,
									   capnow, ct, &m);
#pragma unroll
					for (int d = 0; d < 5; d++)
						if (T[d] != T0[d]) tp[d] = (int8_t)T[d];
					if (nbyte != byte) a.packed[b0 + jb] = (uint8_t)nbyte;
					/* flips are rare here: each counted on its own (h16
					 * ncu: the flip-mask bookkeeping and the per-group
					 * popcounts after it were 11 % of the instructions) */
					if (count_flips && m)
						st_flips_byte(m, tid * 80 + 5 * jb, i0 + 5u * jb, a, e, flb);
				}
			}
		} else if (b0 < nb) {
			for (int j = 0; j < (int)(nb - b0); j++) {
				int T[5];
				int8_t *tp = a.T + i0 + 5u * j;
				for (int d = 0; d < 5; d++) T[d] = tp[d];
				unsigned int m;
				unsigned int byte = a.packed[b0 + j];
				unsigned int nbyte = st_byte<CAPPING>(byte, T, i0 + 5u * j, a, p32, capnow,
								   ct, &m);
				for (int d = 0; d < 5; d++) tp[d] = (int8_t)T[d];
				if (nbyte != byte) a.packed[b0 + j] = (uint8_t)nbyte;
				if (count_flips && m)
					st_flips_byte(m, tid * 80 + 5 * j, i0 + 5u * j, a, e, flb);
			}
		}
		if (e.fuse) {
			__syncthreads();
			int64_t G0 = tile * (int64_t)ngt;
#pragma unroll
			for (int u = 0; u < ST_PRE; u++) {
				const int l = tid + 256 * u;
				const int64_t G = G0 + l;
				if (l < ngt && G < e.ng) {
					int f = 0;
					if (count_flips) { f = flb[l]; flb[l] = 0; }
					ech += erule_vals(ps[u] - f, ps[u], pa[u], pe[u], G, e);
				}
			}
			for (int l = tid + 256 * ST_PRE; l < ngt; l += 256) {
				int64_t G = G0 + l;
				if (G >= e.ng) break;
				const int raw = e.score[G];
				const int ea = e.Eacc ? e.Eacc[G] : 0, e0 = e.Eacc ? e.E[G] : 0;
				int f = 0;
				if (count_flips) { f = flb[l]; flb[l] = 0; }
				ech += erule_vals(raw - f, raw, ea, e0, G, e);
			}
		}
	}
	block_add_u64(ct.flips, &a.ws->stats[0]);
	block_add_u64(ct.cand, &a.ws->stats[1]);
	block_add_u64(ct.sat, &a.ws->stats[2]);
	block_add_u64(ct.capped, &a.ws->stats[3]);
	block_add_u64(ech, &a.ws->stats[4]);
	block_add_u64(ct.zeros, &a.ws->stats[5]);
}

/* candidates among the five weights of packed byte q with accumulators t:
 * at threshold and not already at the trit they push toward */
__device__ __forceinline__ unsigned int st_cand_byte(unsigned int q, const int *t, int thr)
{
	unsigned int c = 0;
#pragma unroll
	for (int d = 0; d < 5; d++) {
		const unsigned int q1 = (q * 43691u) >> 17;
		const int tr = (int)(q - 3u * q1) - 1;
		q = q1;
		const int at = t[d] < 0 ? -t[d] : t[d];
		c += at >= thr && tr != (t[d] > 0 ? 1 : -1);
	}
	return c;
}

/* fast candidate count (flip cap on), same layout */
__global__ void __launch_bounds__(256) step_count_fast_kernel4(step_args a)
{
	const int64_t nb = a.rows * a.rb;
	unsigned int cand = 0;
	for (int64_t b0 = ((int64_t)blockIdx.x * 256 + threadIdx.x) * 16; b0 < nb;
	     b0 += (int64_t)gridDim.x * 256 * 16) {
		const uint64_t i0 = (uint64_t)b0 * 5u;
		if (b0 + 16 <= nb) {
			uint4 pk = *(const uint4 *)(a.packed + b0);
			const uint4 *Tp = (const uint4 *)(a.T + i0);
			/* the step kernel's screen; only weights at threshold are
			 * decoded (bit p of cl:ch at threshold, of nl:nh negative) */
			const uint32_t bias4 = 0x01010101u * (uint32_t)(128 - a.thr);
			uint32_t tw[20], any = 0;
#pragma unroll
			for (int v = 0; v < 5; v++) {
				uint4 x = Tp[v];
				tw[4 * v] = x.x; tw[4 * v + 1] = x.y; tw[4 * v + 2] = x.z; tw[4 * v + 3] = x.w;
			}
#pragma unroll
			for (int w = 0; w < 20; w++) any |= (__vabsdiffs4(tw[w], 0u) + bias4) & 0x80808080u;
			if (!any) continue;
			uint32_t cw[3] = { 0, 0, 0 }, nw[3] = { 0, 0, 0 };
#pragma unroll
			for (int w = 0; w < 20; w++) {
				const uint32_t c = (__vabsdiffs4(tw[w], 0u) + bias4) & 0x80808080u;
				cw[(4 * w) >> 5] |= ((c * 0x00204081u) >> 28) << ((4 * w) & 31);
				nw[(4 * w) >> 5] |= (((tw[w] & 0x80808080u) * 0x00204081u) >> 28) << ((4 * w) & 31);
			}
			uint64_t cl = ((uint64_t)cw[1] << 32) | cw[0], nl = ((uint64_t)nw[1] << 32) | nw[0];
			uint32_t ch = cw[2], nh = nw[2];
			if (__popcll(cl) + __popc(ch) > 8) {
				/* many: every weight decoded, no loop over bits */
				uint32_t pw[4] = { pk.x, pk.y, pk.z, pk.w };
#pragma unroll
				for (int j = 0; j < 16; j++) {
					int t[5];
#pragma unroll
					for (int d = 0; d < 5; d++)
						t[d] = (int)(int8_t)(tw[(5 * j + d) >> 2] >> (8 * ((5 * j + d) & 3)));
					cand += st_cand_byte((pw[j >> 2] >> (8 * (j & 3))) & 0xffu, t, a.thr);
				}
				continue;
			}
			const uint64_t pl = ((uint64_t)pk.y << 32) | pk.x, ph = ((uint64_t)pk.w << 32) | pk.z;
			while (cl | ch) {
				const int p = cl ? __ffsll((long long)cl) - 1 : 63 + __ffs(ch);
				const int neg = p < 64 ? (int)((nl >> p) & 1u) : (int)((nh >> (p - 64)) & 1u);
				if (p < 64) cl &= cl - 1; else ch &= ch - 1;
				const int jb = (p * 205) >> 10; /* p / 5, p < 80 */
				unsigned int q = (unsigned int)((jb < 8 ? pl >> (8 * jb) : ph >> (8 * jb - 64)) & 0xffu);
				for (int d = p - 5 * jb; d > 0; d--) q = (q * 43691u) >> 17;
				const int tr = (int)(q - 3u * ((q * 43691u) >> 17)) - 1;
				cand += tr != (neg ? -1 : 1);
			}
		} else {
			for (int64_t b = b0; b < nb; b++) {
				int t[5];
				for (int d = 0; d < 5; d++) t[d] = a.T[(uint64_t)b * 5u + d];
				cand += st_cand_byte(a.packed[b], t, a.thr);
			}
		}
	}
	block_add_u64(cand, &a.ws->cand);
}

/* ---------------------------------------------------------------------------
 * row-batched step (h15): up to SR_MAXT tensors in one launch. A block owns
 * a run of whole rows of one tensor, so every group lies inside one block:
 * flips are counted per group in shared memory and the exponent rule runs
 * in the same kernel. Any cols (a row's last packed byte may be padding) and
 * any group size; no flip cap (a cap needs the tensor's candidates counted
 * before any weight moves). One launch instead of two per tensor for the
 * many small tensors of a layer (moe: 7 tensors, 14 launches). */
#define SR_MAXT 16
#define SR_GROUPS 2048   /* groups per block (shared flip counters) */
#define SR_BYTES 2048    /* packed bytes per block, about */
struct sr_tensor {
	step_args a;
	erule_args e;         /* e.score NULL: no exponent rule */
	int rpb;              /* rows per block */
	unsigned int block0;  /* the tensor's first block */
};
struct sr_batch {
	sr_tensor t[SR_MAXT];
	int n;
};

/* the six step counters of a block added to ws->stats with one shared
 * pass (instead of six block_sum calls) */
__device__ __forceinline__ void block_add_stats(const unsigned int *v, tern_ws *ws)
{
	__shared__ unsigned int sh[6][32];
	const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
	for (int j = 0; j < 6; j++) {
		unsigned int x = warp_sum(v[j]);
		if (lane == 0) sh[j][w] = x;
	}
	__syncthreads();
	if (w < 6) {
		unsigned int x = lane < nw ? sh[w][lane] : 0u;
		x = warp_sum(x);
		if (lane == 0 && x) atomicAdd(&ws->stats[w], (unsigned long long)x);
	}
}

#define SR_U 8 /* packed bytes per thread in flight */
__device__ __forceinline__ int sr_row(int l, int rb, float inv_rb)
{
	int r = __float2int_rz((float)l * inv_rb);
	if (r * rb > l) r--;
	else if ((r + 1) * rb <= l) r++;
	return r;
}
__global__ void __launch_bounds__(256) step_rows_kernel(const __grid_constant__ sr_batch b)
{
	__shared__ int fl[SR_GROUPS];
	int ti = 0;
	while (ti + 1 < b.n && blockIdx.x >= b.t[ti + 1].block0) ti++;
	const step_args &a = b.t[ti].a;
	const erule_args &e = b.t[ti].e;
	const int64_t r0 = (int64_t)(blockIdx.x - b.t[ti].block0) * b.t[ti].rpb;
	const int64_t left = a.rows - r0;
	const int nr = (int)(left < b.t[ti].rpb ? left : b.t[ti].rpb);
	const int ng = nr * a.groups;
	const int rb = (int)a.rb, cols = (int)a.cols;
	const int count = a.score != NULL; /* T_FIRST: flips leave the score */
	if (count) {
		for (int l = threadIdx.x; l < ng; l += blockDim.x) fl[l] = 0;
		__syncthreads();
	}
	__shared__ uint8_t zt[256]; /* zero trits per packed byte */
	for (int l = threadIdx.x; l < 256; l += blockDim.x) {
		unsigned int q = (unsigned int)l, z = 0;
		for (int d = 0; d < 5; d++) { z += q % 3u == 1u; q /= 3u; }
		zt[l] = (uint8_t)z;
	}
	__syncthreads();
	st_ctr ct = { 0, 0, 0, 0, 0 };
	const int nbytes = nr * rb;
	/* row of local byte l: a float reciprocal, corrected (l < 2^24) */
	const float inv_rb = 1.0f / (float)rb;
	for (int base = 0; base < nbytes; base += 256 * SR_U) {
		/* every load of the chunk in flight before any update (the
		 * updates store to memory the compiler cannot tell apart) */
		unsigned int byte[SR_U];
		int T[SR_U][5];
#pragma unroll
		for (int u = 0; u < SR_U; u++) {
			const int l = base + (int)threadIdx.x + 256 * u;
			byte[u] = 121u;
#pragma unroll
			for (int d = 0; d < 5; d++) T[u][d] = 0;
			if (l < nbytes) {
				const int r = sr_row(l, rb, inv_rb), cb = l - r * rb, c0 = 5 * cb;
				const int nv = cols - c0 < 5 ? cols - c0 : 5;
				const int64_t row = r0 + r;
				byte[u] = a.packed[row * a.rb + cb];
				const int8_t *tp = a.T + row * a.cols + c0;
#pragma unroll
				for (int d = 0; d < 5; d++)
					if (d < nv) T[u][d] = tp[d];
			}
		}
#pragma unroll
		for (int u = 0; u < SR_U; u++) {
			const int l = base + (int)threadIdx.x + 256 * u;
			if (l >= nbytes) break;
			/* most bytes have no weight at threshold: their zeros only */
			int amax = 0;
#pragma unroll
			for (int d = 0; d < 5; d++) {
				const int t = T[u][d] < 0 ? -T[u][d] : T[u][d];
				amax = t > amax ? t : amax;
			}
			const int r = sr_row(l, rb, inv_rb), cb = l - r * rb, c0 = 5 * cb;
			const int nv = cols - c0 < 5 ? cols - c0 : 5;
			if (amax < a.thr) {
				if (nv == 5) {
					ct.zeros += zt[byte[u]];
				} else {
					unsigned int q = byte[u];
					for (int d = 0; d < nv; d++) { ct.zeros += q % 3u == 1u; q /= 3u; }
				}
				continue;
			}
			const int64_t row = r0 + r;
			int T0[5];
#pragma unroll
			for (int d = 0; d < 5; d++) T0[d] = T[u][d];
			unsigned int m;
			const unsigned int nbyte = st_byte<0>(byte[u], T[u], (uint64_t)(row * a.cols + c0),
							      a, 0, 0, ct, &m, nv);
			int8_t *tp = a.T + row * a.cols + c0;
#pragma unroll
			for (int d = 0; d < 5; d++)
				if (d < nv && T[u][d] != T0[d]) tp[d] = (int8_t)T[u][d];
			if (nbyte != byte[u]) a.packed[row * a.rb + cb] = (uint8_t)nbyte;
			if (count) {
				while (m) {
					const int j = __ffs(m) - 1;
					m &= m - 1;
					atomicAdd(&fl[r * a.groups + (c0 + j) / a.gs], 1);
				}
			}
		}
	}
	unsigned int ech = 0;
	if (e.score) {
		__syncthreads();
		const int64_t G0 = r0 * a.groups;
		for (int l0 = threadIdx.x; l0 < ng; l0 += 256 * 4) {
			/* all loads first, as above */
			int sc[4], ea[4], e0[4];
#pragma unroll
			for (int u = 0; u < 4; u++) {
				const int l = l0 + 256 * u;
				sc[u] = ea[u] = e0[u] = 0;
				if (l < ng) {
					sc[u] = e.score[G0 + l];
					if (e.Eacc) { ea[u] = e.Eacc[G0 + l]; e0[u] = e.E[G0 + l]; }
				}
			}
#pragma unroll
			for (int u = 0; u < 4; u++) {
				const int l = l0 + 256 * u;
				if (l >= ng) break;
				ech += erule_vals(count ? sc[u] - fl[l] : sc[u], sc[u], ea[u], e0[u],
						  G0 + l, e);
			}
		}
	}
	const unsigned int v6[6] = { ct.flips, ct.cand, ct.sat, ct.capped, ech, ct.zeros };
	block_add_stats(v6, a.ws);
}

/* the step arguments of one tensor (ws->stats, sumsq, measured and cand are
 * zero between steps: zeroed at alloc/init and after every step) */
static void step_args_of(arb_tern *w, const arb_step *p, step_args *pa)
{
	step_args &a = *pa;
	a.packed = w->packed;
	a.T = w->T_accum;
	a.score = (w->score && p->order == ARB_ORDER_T_FIRST) ? w->score : NULL;
	a.rows = w->rows; a.cols = w->cols; a.rb = w->row_bytes;
	a.gs = w->group_size; a.groups = w->groups;
	a.thr = p->threshold < 1 ? 1 : (p->threshold > 127 ? 127 : p->threshold);
	a.reset_rem = p->reset_mode == ARB_RESET_REMAINDER;
	a.capping = p->cap_ppm > 0;
	a.rev = !cuda_legacy("srev");
	a.cap = p->cap_ppm > 0 ?
		(unsigned long long)((w->rows * w->cols) * p->cap_ppm / 1000000) : 0;
	a.seed = p->seed;
	a.stream = arb_rng_stream(w->id, p->t, ARB_RNG_FLIP_CAP);
	a.ws = (tern_ws *)w->ws_dev;
}

/* the exponent rule's arguments of one tensor, not fused */
static void erule_args_of(arb_tern *w, const arb_step *p, erule_args *e)
{
	memset(e, 0, sizeof *e);
	if (!w->score) return;
	e->E = w->E;
	e->Eacc = w->erule == ARB_ERULE_RESIDUAL ? w->E_accum : NULL;
	e->corr = w->erule == ARB_ERULE_BIGINT ? w->corr : NULL;
	e->score = w->score;
	e->ng = w->rows * (int64_t)w->groups;
	e->ethr = p->e_threshold; e->emin = p->e_min; e->emax = p->e_max;
}

/* rows per block of the row-batched step; 0: the tensor cannot take it */
static int step_rows_rpb(const arb_tern *w, const arb_step *p)
{
	if (!w->T_accum || p->cap_ppm > 0 || cuda_legacy("step")) return 0;
	if (w->groups > SR_GROUPS || w->row_bytes > 0x7fffffff || w->cols > 0x7fffffff) return 0;
	/* the streaming kernel for large tensors that it takes */
	if (w->cols % 5 == 0 && w->rows * w->cols > ((int64_t)1 << 22)) return 0;
	int64_t rpb = SR_BYTES / w->row_bytes;
	int64_t rg = SR_GROUPS / w->groups;
	if (rg < rpb) rpb = rg;
	if (rpb < 1) rpb = 1;
	if (rpb > w->rows) rpb = w->rows;
	return (int)rpb;
}

static void step_rows_flush(sr_batch *b, unsigned int blocks)
{
	if (!b->n) return;
	step_rows_kernel<<<blocks, 256>>>(*b);
	CK_LAUNCH(step_rows);
	b->n = 0;
}

/* the kernels of one tensor's step; the statistics stay in its ws_dev until
 * step_finish reads a host copy of it */
static void step_launch(arb_tern *w, const arb_step *p)
{
	tern_ws *ws = (tern_ws *)w->ws_dev;
	step_args a;
	step_args_of(w, p, &a);
	int64_t nb = w->rows * w->row_bytes;
	unsigned int grid = grid_for(nb, 256);
	if (!w->T_accum) {
		/* frozen: nothing moves; report its zeros */
		step_zeros_kernel1<<<grid, 256>>>(a);
		CK_LAUNCH(step_zeros);
		return;
	}
	int fast = !cuda_legacy("step") && w->cols % 5 == 0 && ((uintptr_t)w->packed & 15) == 0 &&
		   ((uintptr_t)w->T_accum & 15) == 0;
	int fused = 0;
	if (fast) {
		erule_args e;
		int gs = w->group_size, lg = 0;
		while ((1 << lg) < gs) lg++;
		erule_args_of(w, p, &e);
		if (w->score && (1 << lg) == gs && w->cols % gs == 0) {
			fused = 1;
			e.fuse = 1; e.lg = lg;
		} else {
			e.score = NULL;
		}
		int64_t ntiles = (nb + ST_TILE - 1) / ST_TILE;
		int64_t g4 = (int64_t)g_priv.sms * ST_MINB * 2; /* two waves of resident CTAs */
		unsigned int gf = (unsigned int)(ntiles < g4 ? ntiles : g4);
		if (gf < 1) gf = 1;
		if (a.capping) {
			step_count_fast_kernel4<<<gf, 256>>>(a);
			CK_LAUNCH(step_count_fast);
			step_fast_kernel4<1><<<gf, 256>>>(a, e);
		} else {
			step_fast_kernel4<0><<<gf, 256>>>(a, e);
		}
		CK_LAUNCH(step_fast);
	} else {
		if (a.capping) {
			step_count_kernel1<<<grid, 256>>>(a);
			CK_LAUNCH(step_count);
		}
		step_apply_kernel2<<<grid, 256>>>(a);
		CK_LAUNCH(step_apply);
	}
	if (w->score && !fused) {
		int64_t ng = w->rows * (int64_t)w->groups;
		step_erule_kernel3<<<grid_for(ng, 256), 256>>>(w->score, w->E,
			w->erule == ARB_ERULE_RESIDUAL ? w->E_accum : NULL,
			w->erule == ARB_ERULE_BIGINT ? w->corr : NULL, ng,
			p->e_threshold, p->e_min, p->e_max, ws);
		CK_LAUNCH(step_erule);
	}
}

/* host bookkeeping of one step from the host copy h of the tensor's ws_dev
 * (ws_collect_kernel has already zeroed the device workspace for the next
 * step) */
static void step_finish(arb_tern *w, const tern_ws *h, arb_step_stats *st)
{
	if (st) memset(st, 0, sizeof *st);
	if (!w->T_accum) {
		/* frozen: nothing moved; its zeros */
		if (st) st->zeros = (int64_t)h->stats[5];
		return;
	}
	if (st) {
		st->flips = (int64_t)h->stats[0];
		st->candidates = (int64_t)h->stats[1];
		st->saturated = (int64_t)h->stats[2];
		st->capped = (int64_t)h->stats[3];
		st->e_changes = (int64_t)h->stats[4];
		st->zeros = (int64_t)h->stats[5];
	}
	w->steps += 1;
	double sumsq = h->sumsq + w->sumsq;
	if (sumsq > 0.0) w->rms_log2 = (int8_t)arb_rms_log2(sumsq, w->rows * w->cols);
	w->sumsq = 0.0;
}

/* the workspaces of up to WS_BATCH tensors copied into mapped pinned host
 * memory and zeroed for the next step, by one kernel (instead of a copy and
 * a memset per tensor): ws->stats, sumsq, measured and cand are zero between
 * steps; a frozen tensor's workspace only ever holds stats */
#define WS_BATCH 32
struct ws_batch {
	tern_ws *src[WS_BATCH];
	int frozen[WS_BATCH];
	int n;
};
__global__ void ws_collect_kernel(ws_batch b, tern_ws *dst)
{
	const int i = blockIdx.x;
	if (i >= b.n || threadIdx.x != 0) return;
	tern_ws *w = b.src[i];
	dst[i] = *w;
	for (int j = 0; j < 6; j++) w->stats[j] = 0;
	if (!b.frozen[i]) {
		w->sumsq = 0.0;
		w->measured = 0.0;
		w->cand = 0;
	}
}

/* the pinned host copies of n workspaces; 0 if they cannot be had */
static int hws_reserve(cuda_priv *pv, int n)
{
	if (n <= pv->hws_n) return 1;
	if (pv->hws) { CK(cudaDeviceSynchronize()); CK(cudaFreeHost(pv->hws)); }
	pv->hws = NULL;
	pv->hws_dev = NULL;
	pv->hws_n = 0;
	int m = n < 64 ? 64 : n;
	if (cudaHostAlloc((void **)&pv->hws, (size_t)m * sizeof(tern_ws),
			  cudaHostAllocMapped) != cudaSuccess ||
	    cudaHostGetDevicePointer((void **)&pv->hws_dev, pv->hws, 0) != cudaSuccess) {
		cudaGetLastError();
		if (pv->hws) cudaFreeHost(pv->hws);
		pv->hws = NULL;
		pv->hws_dev = NULL;
		return 0;
	}
	pv->hws_n = m;
	return 1;
}

/* n steps, one wait: every tensor's kernels, one kernel per WS_BATCH tensors
 * that copies their workspaces to mapped host memory and zeroes them, one
 * stream synchronisation, then the host bookkeeping in order */
static void c_tern_step_many(arb_backend *be, arb_tern *const *w, const arb_step *p, int n,
			     arb_step_stats *st)
{
	if (n <= 0) return;
	cuda_priv *pv = cuda_get_priv(be);
	if (!hws_reserve(pv, n)) {
		/* no pinned memory: a blocking copy per tensor */
		for (int i = 0; i < n; i++) {
			step_launch(w[i], &p[i]);
			tern_ws h;
			CK(cudaMemcpy(&h, w[i]->ws_dev, sizeof h, cudaMemcpyDeviceToHost));
			tern_ws *ws = (tern_ws *)w[i]->ws_dev;
			if (w[i]->T_accum)
				CK(cudaMemset(ws, 0, offsetof(tern_ws, cand) + sizeof ws->cand));
			else
				CK(cudaMemset(ws->stats, 0, sizeof ws->stats));
			step_finish(w[i], &h, st ? &st[i] : NULL);
		}
		return;
	}
	/* the tensors that take it share row-batched launches; the others
	 * their own kernels */
	sr_batch sb; /* a launch's parameters (about 3 KB) */
	unsigned int blocks = 0;
	sb.n = 0;
	for (int i = 0; i < n; i++) {
		int rpb = step_rows_rpb(w[i], &p[i]);
		if (!rpb) {
			step_launch(w[i], &p[i]);
			continue;
		}
		unsigned int nbk = (unsigned int)((w[i]->rows + rpb - 1) / rpb);
		if (sb.n == SR_MAXT || blocks + (uint64_t)nbk > 0x7fffffffu) {
			step_rows_flush(&sb, blocks);
			blocks = 0;
		}
		sr_tensor *t = &sb.t[sb.n++];
		step_args_of(w[i], &p[i], &t->a);
		erule_args_of(w[i], &p[i], &t->e);
		t->rpb = rpb;
		t->block0 = blocks;
		blocks += nbk;
	}
	step_rows_flush(&sb, blocks);
	ws_batch b;
	b.n = 0;
	int first = 0;
	for (int i = 0; i < n; i++) {
		b.src[b.n] = (tern_ws *)w[i]->ws_dev;
		b.frozen[b.n] = w[i]->T_accum == NULL;
		b.n++;
		if (b.n == WS_BATCH || i == n - 1) {
			ws_collect_kernel<<<b.n, 32>>>(b, pv->hws_dev + first);
			CK_LAUNCH(ws_collect);
			first = i + 1;
			b.n = 0;
		}
	}
	CK(cudaStreamSynchronize(0));
	for (int i = 0; i < n; i++) step_finish(w[i], &pv->hws[i], st ? &st[i] : NULL);
}

static void c_tern_step(arb_backend *be, arb_tern *w, const arb_step *p,
			arb_step_stats *st)
{
	c_tern_step_many(be, &w, p, 1, st);
}

/* ---------------------------------------------------------------------------
 * ternary table */
__global__ void embed_forward_kernel1(tern_view v, const int32_t *idx, int64_t n,
				      float *out, int acc)
{
	int64_t D = v.cols;
	for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n * D;
	     e += (int64_t)gridDim.x * blockDim.x) {
		int64_t p = e / D, d = e - p * D;
		int64_t r = idx[p];
		if (r < 0 || r >= v.rows) { out[e] = NAN; continue; }
		int t = trit_digit(v.packed[r * v.row_bytes + d / 5], (int)(d % 5));
		float w = t ? (float)t * view_scale(v, r, (int)(d / v.gs)) : 0.0f;
		out[e] = acc ? out[e] + w : w;
	}
}
static void c_embed_forward(arb_backend *be, const arb_tern *w, const int32_t *idx,
			    int64_t n, float *out, int accumulate)
{
	if (n <= 0) return;
	embed_forward_kernel1<<<grid_for(n * w->cols, 256), 256>>>(tern_view_of(w),
		idx, n, out, accumulate);
	CK_LAUNCH(embed_forward);
}

/* ---- bitonic sort of 64-bit keys (row << 32 | position), n a power of 2.
 * Stages with a partner distance below 1024 run in shared memory. */
__global__ void sort_pack_kernel(const int32_t *idx, int64_t n, int64_t np, uint64_t *v)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < np;
	     i += (int64_t)gridDim.x * blockDim.x)
		v[i] = i < n ? ((uint64_t)(uint32_t)idx[i] << 32) | (uint64_t)i : ~0ull;
}
__device__ __forceinline__ void cas64(uint64_t &a, uint64_t &b, bool up)
{
	if ((a > b) == up) { uint64_t t = a; a = b; b = t; }
}
/* one launch per (k, j) with j >= 1024 */
__global__ void bitonic_global_kernel(uint64_t *v, int64_t np, int64_t k, int64_t j)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < np;
	     i += (int64_t)gridDim.x * blockDim.x) {
		int64_t l = i ^ j;
		if (l > i) {
			bool up = (i & k) == 0;
			uint64_t a = v[i], b = v[l];
			if ((a > b) == up) { v[i] = b; v[l] = a; }
		}
	}
}
/* stages k (or all k <= 2048 when k == 0) with j from min(k/2, 1024) down to 1,
 * 2048 elements per block */
__global__ void bitonic_shared_kernel(uint64_t *v, int64_t k_only)
{
	__shared__ uint64_t s[2048];
	int64_t base = (int64_t)blockIdx.x * 2048;
	s[threadIdx.x] = v[base + threadIdx.x];
	s[threadIdx.x + 1024] = v[base + threadIdx.x + 1024];
	__syncthreads();
	int64_t k0 = k_only ? k_only : 2, k1 = k_only ? k_only : 2048;
	for (int64_t k = k0; k <= k1; k <<= 1) {
		for (int64_t j = (k >> 1) < 1024 ? (k >> 1) : 1024; j > 0; j >>= 1) {
			int t = threadIdx.x;
			int64_t i = 2 * j * (t / j) + (t % j); /* lower element of a pair */
			int64_t gi = base + i;
			bool up = (gi & k) == 0;
			cas64(s[i], s[i + j], up);
			__syncthreads();
		}
	}
	v[base + threadIdx.x] = s[threadIdx.x];
	v[base + threadIdx.x + 1024] = s[threadIdx.x + 1024];
}
static void sort_rows(const int32_t *idx, int64_t n, int64_t np, uint64_t *v)
{
	sort_pack_kernel<<<grid_for(np, 256), 256>>>(idx, n, np, v);
	CK_LAUNCH(sort_pack);
	unsigned int blocks = (unsigned int)(np / 2048);
	bitonic_shared_kernel<<<blocks, 1024>>>(v, 0);
	CK_LAUNCH(bitonic_shared);
	for (int64_t k = 4096; k <= np; k <<= 1) {
		for (int64_t j = k >> 1; j >= 2048; j >>= 1) {
			bitonic_global_kernel<<<grid_for(np, 256), 256>>>(v, np, k, j);
			CK_LAUNCH(bitonic_global);
		}
		bitonic_shared_kernel<<<blocks, 1024>>>(v, k);
		CK_LAUNCH(bitonic_shared);
	}
}

/* one warp per sorted position; the first position of each run of equal
 * rows sums the run in position order (deterministic) and votes the row.
 * mode 0: measure sumsq only; 1: vote (and sumsq if want_sq) */
struct evote_args {
	const uint64_t *kv;     /* sorted (row << 32 | position) */
	int64_t n;
	const float *dout;
	int8_t *T;
	int32_t *score;
	const uint8_t *packed;
	int64_t rows, cols, rb;
	int gs, groups;
	int kind, step, R, rms_host;
	const int *rms_dev;
	uint64_t seed, stream;
	double *parts;
	int mode, want_sq;
};
__global__ void embed_vote_kernel1(evote_args a)
{
	int64_t i = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
	int lane = threadIdx.x & 31;
	if (i >= a.n) return;
	int32_t row = (int32_t)(a.kv[i] >> 32);
	double sq = 0.0;
	if (row >= 0 && row < a.rows && (i == 0 || (int32_t)(a.kv[i - 1] >> 32) != row)) {
		int64_t end = i + 1;
		while (end < a.n && (int32_t)(a.kv[end] >> 32) == row) end++;
		int rms = vote_rms_dev(a.rms_host, a.rms_dev);
		for (int64_t d = lane; d < a.cols; d += 32) {
			float g = 0.0f;
			for (int64_t j = i; j < end; j++)
				g += a.dout[(int64_t)(uint32_t)a.kv[j] * a.cols + d];
			sq += (double)g * (double)g;
			if (a.mode == 0) continue;
			int64_t wi = (int64_t)row * a.cols + d;
			int sg = (g > 0.0f) - (g < 0.0f);
			int inc = a.kind == ARB_VOTE_SR ? sr_inc(g, a.R, rms, a.seed, a.stream, (uint64_t)wi)
							: a.step * sg;
			a.T[wi] = accum_sub(a.T[wi], inc);
			if (a.score && sg) {
				int t = trit_digit(a.packed[(int64_t)row * a.rb + d / 5], (int)(d % 5));
				if (t) atomicAdd(&a.score[(int64_t)row * a.groups + d / a.gs], sg * t);
			}
		}
	}
	if (a.parts) {
		sq = warp_sum(sq);
		if (lane == 0) a.parts[i] = sq;
	}
}

static void c_embed_vote(arb_backend *be, arb_tern *w, const int32_t *idx,
			 int64_t n, const float *dout, const arb_vote *v)
{
	if (n <= 0 || !w->T_accum) return;
	tern_ws *ws = (tern_ws *)w->ws_dev;
	int64_t np = 2048;
	while (np < n) np <<= 1;
	uint64_t *kv = (uint64_t *)cuda_scratch(be, (size_t)np * 8);
	sort_rows(idx, n, np, kv);
	int sr = v->kind == ARB_VOTE_SR;
	double *parts = sr ? cuda_partials(be, n) : NULL;
	evote_args a;
	a.kv = kv; a.n = n; a.dout = dout; a.T = w->T_accum;
	a.score = w->score; a.packed = w->packed; a.rows = w->rows; a.cols = w->cols; a.rb = w->row_bytes;
	a.gs = w->group_size; a.groups = w->groups; a.kind = v->kind; a.step = v->step;
	a.R = v->sr_R; a.rms_host = w->rms_log2; a.rms_dev = &ws->rms_now;
	a.seed = v->seed; a.stream = arb_rng_stream(w->id, v->t, ARB_RNG_VOTE_SR);
	a.parts = parts; a.want_sq = sr;
	unsigned int grid = cdiv(n * 32, 256);
	if (sr && w->rms_log2 == ARB_RMS_UNKNOWN) {
		a.mode = 0;
		embed_vote_kernel1<<<grid, 256>>>(a);
		CK_LAUNCH(embed_measure);
		cuda_finalize_sumsq(parts, n, &ws->measured, 0, &ws->rms_now, w->rows * w->cols);
	}
	a.mode = 1;
	embed_vote_kernel1<<<grid, 256>>>(a);
	CK_LAUNCH(embed_vote);
	if (sr) cuda_finalize_sumsq(parts, n, &ws->sumsq, 1, NULL, 0);
}

/* ---------------------------------------------------------------------------
 * RMSNorm: one block per row */
__device__ __forceinline__ float gain_at(const tern_view &g, int has, int64_t d)
{
	if (!has) return 1.0f;
	int t = trit_digit(g.packed[d / 5], (int)(d % 5));
	return t ? (float)t * view_scale(g, 0, (int)(d / g.gs)) : 0.0f;
}
__global__ void rmsnorm_forward_kernel1(tern_view g, int hasg, const float *x,
					float *y, float *rstd, int64_t D)
{
	int64_t m = blockIdx.x;
	const float *xr = x + m * D;
	double ss = 0.0;
	for (int64_t d = threadIdx.x; d < D; d += blockDim.x) ss += (double)xr[d] * xr[d];
	ss = block_sum(ss);
	float rs = (float)(1.0 / sqrt(ss / (double)D + 1e-5));
	if (threadIdx.x == 0) rstd[m] = rs;
	for (int64_t d = threadIdx.x; d < D; d += blockDim.x)
		y[m * D + d] = xr[d] * rs * gain_at(g, hasg, d);
}
__global__ void rmsnorm_backward_kernel1(tern_view g, int hasg, const float *x,
					 const float *rstd, const float *dy,
					 float *dx, int64_t D, int acc)
{
	int64_t m = blockIdx.x;
	const float *xr = x + m * D, *dyr = dy + m * D;
	double dot = 0.0;
	for (int64_t d = threadIdx.x; d < D; d += blockDim.x)
		dot += (double)dyr[d] * gain_at(g, hasg, d) * xr[d];
	dot = block_sum(dot);
	float rs = rstd[m];
	float c = (float)((double)rs * rs * rs * dot / (double)D);
	for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
		float v = rs * gain_at(g, hasg, d) * dyr[d] - xr[d] * c;
		dx[m * D + d] = acc ? dx[m * D + d] + v : v;
	}
}
static int norm_threads(int64_t D) { return D >= 1024 ? 512 : (D >= 256 ? 256 : 128); }
static void c_rmsnorm_forward(arb_backend *be, const arb_tern *gain, const float *x,
			      float *y, float *rstd, int64_t M, int64_t D)
{
	if (M <= 0) return;
	tern_view g;
	memset(&g, 0, sizeof g);
	if (gain) g = tern_view_of(gain);
	rmsnorm_forward_kernel1<<<(unsigned)M, norm_threads(D)>>>(g, gain != NULL, x, y, rstd, D);
	CK_LAUNCH(rmsnorm_forward);
}
static void c_rmsnorm_backward(arb_backend *be, const arb_tern *gain, const float *x,
			       const float *rstd, const float *dy, float *dx,
			       int64_t M, int64_t D, int accumulate)
{
	if (M <= 0) return;
	tern_view g;
	memset(&g, 0, sizeof g);
	if (gain) g = tern_view_of(gain);
	rmsnorm_backward_kernel1<<<(unsigned)M, norm_threads(D)>>>(g, gain != NULL, x, rstd,
		dy, dx, D, accumulate);
	CK_LAUNCH(rmsnorm_backward);
}

/* ---------------------------------------------------------------------------
 * elementwise */
__global__ void swiglu_forward_kernel1(const float *a, const float *b, float *o, int64_t n)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x) {
		float x = a[i], s = 1.0f / (1.0f + expf(-x));
		o[i] = x * s * b[i];
	}
}
__global__ void swiglu_backward_kernel1(const float *a, const float *b, const float *dout,
					float *da, float *db, int64_t n)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x) {
		float x = a[i], s = 1.0f / (1.0f + expf(-x)), g = dout[i];
		da[i] = g * b[i] * s * (1.0f + x * (1.0f - s));
		db[i] = g * x * s;
	}
}
__global__ void axpy_kernel1(float *y, const float *x, float alpha, int64_t n)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x) y[i] += alpha * x[i];
}
__global__ void add_rows_kernel1(float *y, const float *x, int64_t M, int64_t period,
				 int64_t D, float alpha)
{
	int64_t n = M * D;
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x) {
		int64_t m = i / D, d = i - m * D;
		y[i] += x[(m % period) * D + d] * alpha;
	}
}
static void c_swiglu_forward(arb_backend *be, const float *a, const float *b, float *o, int64_t n)
{
	if (n <= 0) return;
	swiglu_forward_kernel1<<<grid_for(n, 256), 256>>>(a, b, o, n);
	CK_LAUNCH(swiglu_forward);
}
static void c_swiglu_backward(arb_backend *be, const float *a, const float *b,
			      const float *dout, float *da, float *db, int64_t n)
{
	if (n <= 0) return;
	swiglu_backward_kernel1<<<grid_for(n, 256), 256>>>(a, b, dout, da, db, n);
	CK_LAUNCH(swiglu_backward);
}
static void c_axpy(arb_backend *be, float *y, const float *x, float alpha, int64_t n)
{
	if (n <= 0) return;
	axpy_kernel1<<<grid_for(n, 256), 256>>>(y, x, alpha, n);
	CK_LAUNCH(axpy);
}
static void c_add_rows(arb_backend *be, float *y, const float *x, int64_t M,
		       int64_t period, int64_t D, float alpha)
{
	if (M <= 0 || D <= 0) return;
	add_rows_kernel1<<<grid_for(M * D, 256), 256>>>(y, x, M, period, D, alpha);
	CK_LAUNCH(add_rows);
}

/* ---------------------------------------------------------------------------
 * cross-entropy: one block per row */
__global__ void cross_entropy_kernel1(const float *logits, const int32_t *target,
				      int64_t V, float *loss, float *dlogits, float gs)
{
	int64_t m = blockIdx.x;
	const float *l = logits + m * V;
	int tg = target[m];
	float mx = -INFINITY;
	for (int64_t i = threadIdx.x; i < V; i += blockDim.x) mx = fmaxf(mx, l[i]);
	mx = block_max(mx);
	float se = 0.0f;
	for (int64_t i = threadIdx.x; i < V; i += blockDim.x) se += expf(l[i] - mx);
	se = block_sum(se);
	float lse = mx + logf(se);
	int bad = tg < 0 || tg >= V;
	if (threadIdx.x == 0) loss[m] = bad ? (tg < 0 ? 0.0f : NAN) : lse - l[tg];
	if (dlogits) {
		float *dl = dlogits + m * V;
		for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
			if (bad) { dl[i] = 0.0f; continue; }
			float p = expf(l[i] - lse);
			dl[i] = (p - (i == tg ? 1.0f : 0.0f)) * gs;
		}
	}
}
static void c_cross_entropy(arb_backend *be, const float *logits, const int32_t *target,
			    int64_t M, int64_t V, float *loss, float *dlogits,
			    float grad_scale)
{
	if (M <= 0) return;
	cross_entropy_kernel1<<<(unsigned)M, 512>>>(logits, target, V, loss, dlogits, grad_scale);
	CK_LAUNCH(cross_entropy);
}

/* ---------------------------------------------------------------------------
 * sum (double partials per fixed chunk, then one block in order) */
#define SUM_BLOCKS 512
__global__ void sum_kernel1(const float *x, int64_t n, double *parts)
{
	int64_t chunk = (n + gridDim.x - 1) / gridDim.x;
	int64_t lo = blockIdx.x * chunk, hi = lo + chunk < n ? lo + chunk : n;
	double s = 0.0;
	for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) s += (double)x[i];
	s = block_sum(s);
	if (threadIdx.x == 0) parts[blockIdx.x] = s;
}
static double c_sum(arb_backend *be, const float *x, int64_t n)
{
	if (n <= 0) return 0.0;
	double *parts = cuda_partials(be, SUM_BLOCKS + 1);
	sum_kernel1<<<SUM_BLOCKS, 256>>>(x, n, parts);
	CK_LAUNCH(sum);
	cuda_finalize_sumsq(parts, SUM_BLOCKS, parts + SUM_BLOCKS, 0, NULL, 0);
	double h = 0.0;
	c_download(be, &h, parts + SUM_BLOCKS, sizeof h);
	return h;
}
__global__ void finite_kernel1(const float *x, int64_t n, int *flag)
{
	int bad = 0;
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x) bad |= !isfinite(x[i]);
	if (__syncthreads_or(bad) && threadIdx.x == 0) atomicOr(flag, 1);
}
static int c_all_finite(arb_backend *be, const float *x, int64_t n)
{
	if (n <= 0) return 1;
	cuda_priv *p = cuda_get_priv(be);
	CK(cudaMemsetAsync(p->flag, 0, sizeof(int), 0));
	finite_kernel1<<<grid_for(n, 256), 256>>>(x, n, p->flag);
	CK_LAUNCH(all_finite);
	int h = 1;
	c_download(be, &h, p->flag, sizeof h);
	return !h;
}

/* ---------------------------------------------------------------------------
 * the table */
static arb_backend g_cuda;
static int g_ready = 0;

extern "C" arb_backend *arb_backend_cuda(arb_error *err)
{
	if (g_ready) return &g_cuda;
	char why[256] = "";
	int ok = 0;
	int fds[2] = { -1, -1 };
	pid_t pid = -1;
	if (pipe(fds) == 0) pid = fork();
	if (pid == 0) {
		/* child: probe, report, exit without touching the parent's state */
		int n = 0;
		cudaError_t e = cudaGetDeviceCount(&n);
		if (e == cudaSuccess && n > 0) {
			void *p = NULL;
			e = cudaMalloc(&p, 16);
		}
		char msg[256];
		int len = snprintf(msg, sizeof msg, "%s", e != cudaSuccess ?
				   cudaGetErrorString(e) : (n > 0 ? "" : "no GPU found"));
		if (write(fds[1], msg, (size_t)len + 1) < 0) _exit(2);
		_exit(e == cudaSuccess && n > 0 ? 0 : 1);
	}
	if (pid > 0) {
		close(fds[1]);
		ssize_t got = read(fds[0], why, sizeof why - 1);
		why[got > 0 ? got : 0] = 0;
		close(fds[0]);
		int status = 0;
		while (waitpid(pid, &status, 0) < 0) {}
		ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
		if (!ok && !why[0]) snprintf(why, sizeof why, "device probe failed");
	} else {
		/* no fork: probe here */
		if (pid < 0 && fds[0] >= 0) { close(fds[0]); close(fds[1]); }
		int n = 0;
		cudaError_t e = cudaGetDeviceCount(&n);
		ok = e == cudaSuccess && n > 0;
		if (!ok) {
			cudaGetLastError();
			snprintf(why, sizeof why, "%s", e != cudaSuccess ?
				 cudaGetErrorString(e) : "no GPU found");
		}
	}
	if (!ok) {
		ARB_FAIL(err, ARB_ERR_CUDA, "no usable CUDA device: %s", why);
		return NULL;
	}
	memset(&g_priv, 0, sizeof g_priv);
	g_priv.device = 0;
	arb_backend *b = &g_cuda;
	memset(b, 0, sizeof *b);
	b->name = "cuda";
	b->is_device = 1;
	b->priv = &g_priv;
	b->alloc = c_alloc;
	b->free = c_free;
	b->zero = c_zero;
	b->upload = c_upload;
	b->download = c_download;
	b->copy = c_copy;
	b->sync = c_sync;
	b->tern_alloc = c_tern_alloc;
	b->tern_free = c_tern_free;
	b->tern_init = c_tern_init;
	b->linear_forward = cuda_linear_forward;
	b->linear_backward_x = cuda_linear_backward_x;
	b->linear_vote = cuda_linear_vote;
	b->embed_forward = c_embed_forward;
	b->embed_vote = c_embed_vote;
	b->tern_step = c_tern_step;
	b->tern_step_many = c_tern_step_many;
	b->rmsnorm_forward = c_rmsnorm_forward;
	b->rmsnorm_backward = c_rmsnorm_backward;
	b->attention_forward = cuda_attention_forward;
	b->attention_backward = cuda_attention_backward;
	b->swiglu_forward = c_swiglu_forward;
	b->swiglu_backward = c_swiglu_backward;
	b->axpy = c_axpy;
	b->add_rows = c_add_rows;
	b->cross_entropy = c_cross_entropy;
	b->sum = c_sum;
	b->all_finite = c_all_finite;
	g_ready = 1;
	return b;
}
