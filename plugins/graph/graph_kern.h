/*
 * plugins/graph/graph_kern.h -- the small steps of MoEGraph that are not
 * ternary products: sparse row sums (edge aggregation and the gather-add of
 * node states to positions, both directions), per-edge gradient dots and the
 * ACT bookkeeping. CPU reference in graph_core.h, CUDA in graph.cu. The
 * ternary products go through the backend table (linear_forward, ...).
 * Internal to the plugin: nothing here is exported.
 *
 * Every pointer is backend memory; int32 indices, float32 values.
 *
 *   csr         out[r, :] (+)= sum_{k in [ptr[r], ptr[r+1])} w[k] in[col[k], :]
 *               for r < rows, width D. One output row is owned by one
 *               thread group: no atomics, no dense scatter buffer, and the
 *               sum order is the entry order (deterministic). It is the edge
 *               aggregation (rows = target nodes, col = source, w = sign /
 *               indeg), its transpose (rows = source nodes), the gather of
 *               node states to positions (rows = positions, one entry each)
 *               and the gather-add backward (rows = nodes, entries = the
 *               positions holding that node: duplicates summed).
 *   edge_dot    g[k] += scale[k] * dA[dst[k], :] . Mg[src[k], :] for k < n
 *               (gradient of a loss w.r.t. edge k's sign; scale = 1/indeg)
 *   act_step    one ACT iteration over M positions (Graves):
 *               running positions with cum + p >= thr or last: w = 1 - cum
 *               (the remainder R), n = it + 1, rho = n + R, run = 0;
 *               other running positions: w = p, cum += p; halted: w = 0.
 *               *n_run = positions still running afterwards.
 *   sigmoid     p[m] = 1 / (1 + exp(-(z[m] + bias)))
 *   row_axpy    y[m, :] += a[m] * x[m, :]
 *   row_dot     d[m] = a[m, :] . b[m, :]
 *   act_grad    dz[m] for iteration it: positions with it < n[m] - 1:
 *               dp = dw[it] - dw[n - 1] - tau_m, dz = dp * p (1 - p);
 *               0 elsewhere (dw stride M: dw[i*M + m]).
 */
#ifndef GRAPH_KERN_H
#define GRAPH_KERN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct graph_kernels {
	void (*csr)(int64_t rows, int D, const int32_t *ptr, const int32_t *col,
		    const float *w, const float *in, float *out, int accumulate);
	void (*edge_dot)(int64_t n, int D, const int32_t *src,
			 const int32_t *dst, const float *scale, const float *Mg,
			 const float *dA, float *g);
	void (*act_step)(int64_t M, int it, int last, float thr, const float *p,
			 float *cum, int32_t *run, int32_t *n, float *w,
			 float *rho, int32_t *n_run);
	void (*sigmoid)(int64_t M, const float *z, float bias, float *p);
	void (*row_axpy)(int64_t M, int D, const float *a, const float *x,
			 float *y);
	void (*row_dot)(int64_t M, int D, const float *a, const float *b,
			float *d);
	void (*act_grad)(int64_t M, int it, const float *p, const int32_t *n,
			 const float *dw, float tau_m, float *dz);
	/* 0 if every launch since the last call succeeded; else writes a
	 * message and clears the error */
	int (*check)(char *msg, size_t cap);
} graph_kernels;

/* graph.cu (built only when nvcc exists; hidden visibility) */
const graph_kernels *graph_cuda_kernels(void);

#ifdef __cplusplus
}
#endif
#endif /* GRAPH_KERN_H */
