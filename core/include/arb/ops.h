/*
 * arb/ops.h -- the compute backend: one table of operations implemented twice,
 * by the CPU reference (core/ops_cpu.c, plain C, the definition of record)
 * and by CUDA (core/cuda/ops_cuda.cu). The model, the trainer and plugins call
 * these through the table and never care which backend runs.
 *
 * All pointers passed to an op live in the backend's memory (host memory for
 * "cpu", device memory for "cuda"); move data with upload/download.
 * Shapes: M rows of activations (M = B*T tokens), row-major, float32.
 * Legend: B batch, T positions, H heads, hd head dim, D = H*hd model width.
 *
 * Float results of the CUDA backend match the CPU within the tolerances in
 * tests/check_gpu.c; integer state (trits, E, accumulators) matches exactly
 * whenever the float votes have the same signs (tests use dyadic inputs whose
 * sums are exact in any order).
 */
#ifndef ARB_OPS_H
#define ARB_OPS_H

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct arb_backend arb_backend;

struct arb_backend {
	const char *name;   /* "cpu" or "cuda" */
	int is_device;      /* 1: pointers are device pointers */
	void *priv;

	/* ---- memory ---------------------------------------------------- */
	void *(*alloc)(arb_backend *be, size_t bytes);        /* zeroed */
	void (*free)(arb_backend *be, void *p);
	void (*zero)(arb_backend *be, void *p, size_t bytes);
	void (*upload)(arb_backend *be, void *dst, const void *host_src, size_t bytes);
	void (*download)(arb_backend *be, void *host_dst, const void *src, size_t bytes);
	void (*copy)(arb_backend *be, void *dst, const void *src, size_t bytes);
	void (*sync)(arb_backend *be);
	/* allocate backend memory for a tensor already described by
	 * arb_tern_alloc-style fields (rows, cols, group_size, flags, erule);
	 * sets packed/E/T_accum/E_accum/corr/score in backend memory */
	arb_status (*tern_alloc)(arb_backend *be, arb_tern *t, arb_error *err);
	void (*tern_free)(arb_backend *be, arb_tern *t);
	/* packed-first init per arb/tensor.h */
	void (*tern_init)(arb_backend *be, arb_tern *t, const arb_tern_init *ini);

	/* ---- ternary linear: W is rows=N x cols=K ------------------------ */
	/* y[M,N] = x[M,K] W^T (+ y if accumulate) */
	void (*linear_forward)(arb_backend *be, const arb_tern *w, const float *x,
			       float *y, int64_t M, int accumulate);
	/* dx[M,K] = dy[M,N] W (+ dx if accumulate) */
	void (*linear_backward_x)(arb_backend *be, const arb_tern *w,
				  const float *dy, float *dx, int64_t M,
				  int accumulate);
	/* stream votes from dW = dy^T x into T_accum (and score); tensor.h */
	void (*linear_vote)(arb_backend *be, arb_tern *w, const float *x,
			    const float *dy, int64_t M, const arb_vote *v);

	/* ---- ternary table: W is rows=V x cols=D ------------------------- */
	/* out[n,D] = W[idx[n]] (+ out if accumulate); idx in [0, V) */
	void (*embed_forward)(arb_backend *be, const arb_tern *w,
			      const int32_t *idx, int64_t n, float *out,
			      int accumulate);
	/* votes for touched rows only; duplicate indices are summed first */
	void (*embed_vote)(arb_backend *be, arb_tern *w, const int32_t *idx,
			   int64_t n, const float *dout, const arb_vote *v);

	/* ---- scheduler step (tensor.h STEP) ------------------------------ */
	void (*tern_step)(arb_backend *be, arb_tern *w, const arb_step *p,
			  arb_step_stats *st);

	/* ---- TernaryRMSNorm: y = x / rms(x) * g, g = frozen ternary gain
	 * (rows=1 x cols=D tensor; NULL means gain 1). rstd[M] saved for
	 * backward. eps = 1e-5. */
	void (*rmsnorm_forward)(arb_backend *be, const arb_tern *gain,
				const float *x, float *y, float *rstd, int64_t M,
				int64_t D);
	void (*rmsnorm_backward)(arb_backend *be, const arb_tern *gain,
				 const float *x, const float *rstd,
				 const float *dy, float *dx, int64_t M, int64_t D,
				 int accumulate);

	/* ---- causal multi-head attention, q/k/v/out are [B,T,H,hd] -------
	 * out = softmax(q k^T / sqrt(hd) + causal mask) v; lse[B,H,T] saved. */
	void (*attention_forward)(arb_backend *be, const float *q, const float *k,
				  const float *v, float *out, float *lse,
				  int B, int T, int H, int hd);
	/* dq, dk, dv are overwritten */
	void (*attention_backward)(arb_backend *be, const float *q,
				   const float *k, const float *v,
				   const float *out, const float *lse,
				   const float *dout, float *dq, float *dk,
				   float *dv, int B, int T, int H, int hd);

	/* ---- elementwise ------------------------------------------------ */
	/* out = silu(a) * b */
	void (*swiglu_forward)(arb_backend *be, const float *a, const float *b,
			       float *out, int64_t n);
	void (*swiglu_backward)(arb_backend *be, const float *a, const float *b,
				const float *dout, float *da, float *db,
				int64_t n);
	/* y += alpha * x */
	void (*axpy)(arb_backend *be, float *y, const float *x, float alpha,
		     int64_t n);
	/* y[m, :] += x[m % period, :] * alpha  (position table broadcast) */
	void (*add_rows)(arb_backend *be, float *y, const float *x, int64_t M,
			 int64_t period, int64_t D, float alpha);

	/* ---- softmax cross-entropy over V classes ------------------------
	 * loss[m] = -log softmax(logits[m])[target[m]] (natural log);
	 * if dlogits != NULL: dlogits[m] = (softmax - onehot) * grad_scale.
	 * target < 0 means "ignore": loss 0, gradient 0. */
	void (*cross_entropy)(arb_backend *be, const float *logits,
			      const int32_t *target, int64_t M, int64_t V,
			      float *loss, float *dlogits, float grad_scale);
	/* sum of n floats, returned to the host (deterministic order) */
	double (*sum)(arb_backend *be, const float *x, int64_t n);
	/* 1 if all n floats are finite */
	int (*all_finite)(arb_backend *be, const float *x, int64_t n);

	/* ---- appended in ABI 1.1 ----------------------------------------- */
	/* the step of n tensors: w[i] with p[i]; st[i] filled when st != NULL.
	 * Same results as n tern_step calls in order; the CUDA backend waits
	 * for the device once instead of once per tensor. */
	void (*tern_step_many)(arb_backend *be, arb_tern *const *w,
			       const arb_step *p, int n, arb_step_stats *st);
};

/* backends provided by the core */
arb_backend *arb_backend_cpu(void);
/* NULL (with err) when CUDA support was not built or no GPU is usable */
arb_backend *arb_backend_cuda(arb_error *err);

#ifdef __cplusplus
}
#endif
#endif /* ARB_OPS_H */
