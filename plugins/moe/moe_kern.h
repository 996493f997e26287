/*
 * plugins/moe/moe_kern.h -- the small routing / dispatch / combine steps of
 * SharedProjectionMoE, shared by the CPU reference (moe.c) and the CUDA
 * kernels (moe.cu). The big ternary products never appear here: they go
 * through the backend table (linear_forward / linear_backward_x /
 * linear_vote). Internal to the plugin (nothing here is exported).
 *
 * Legend (see README.md): M tokens, D width, F hidden, E experts, k top-k,
 * r rank, P dispatch rows (dense: E*M, row j = e*M + m; sparse: M*k rows
 * grouped by expert, expert e owns rows [off[e], off[e+1])).
 * Every pointer is backend memory; int32 indices, float32 values.
 *
 *   route            idx[M,k], w[M,k]: top-k of logits[M,E] (ties -> lower
 *                    expert index), w = softmax over the k selected logits
 *   stats            stat[0] = aux = coef * sum_e f_e Pbar_e,
 *                    stat[1+e] = count_e (assignments, exact in float),
 *                    stat[1+E+e] = sum_m p_e(m) (p: softmax over all E)
 *   dispatch_dense   rows j = e*M + m for every (e, m): tok, ex, wt (route
 *                    weight or 0), rslot (m*k+s or -1); rowpos[m*k+s] = row
 *   route_dense      route, stats and dispatch_dense in one call (the
 *                    dense path; the CUDA one is one launch for M <= 256)
 *   dispatch_sparse  stable counting sort of the M*k assignments by expert:
 *                    tok, ex, wt, rslot per row, rowpos, off[E+1]
 *   build_x          Xg[P, E*r], Xu[P, E*r]: row j holds a_g / a_u of token
 *                    tok[j] in column block ex[j], zeros elsewhere
 *                    (a[M, 2Er]: expert e owns columns [2er, 2er+2r): first r
 *                    gate, then r up)
 *   combine_forward  for each selected (m, s), row = rowpos[m*k+s]:
 *                    G[row] += g0[m], U[row] += u0[m] (full pre-activations,
 *                    kept for backward); c[m] = sum_s w[m,s] silu(G) * U
 *   combine_backward per row j: dh = wt[j] * dc[tok[j]];
 *                    G[j] <- dh * u * silu'(g), U[j] <- dh * silu(g)
 *                    (in place); dw[rslot[j]] = dc[tok[j]] . (silu(g) * u)
 *   shared_grad      dg0[m] = sum_s dG[rowpos[m,s]], du0 likewise
 *   lowrank_grad     da[m, 2er + i] = dXg[row(m,e), er + i],
 *                    da[m, 2er + r + i] = dXu[row(m,e), er + i] for the
 *                    selected experts of m, 0 for the others
 *   router_grad      dlogits[m, e_s] = w_s (dw_s - sum_t w_t dw_t) for the
 *                    selected experts, plus the balance term
 *                    coef/M * p_j (f_j - sum_e f_e p_e) for every j
 */
#ifndef MOE_KERN_H
#define MOE_KERN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MOE_MAX_EXPERTS 64
#define MOE_MAX_TOPK 8

typedef struct moe_dims {
	int64_t M;   /* tokens */
	int64_t P;   /* dispatch rows */
	int D, F, E, k, r;
	float coef;  /* balance * E */
} moe_dims;

typedef struct moe_kernels {
	void (*route)(const moe_dims *d, const float *logits, int32_t *idx,
		      float *w);
	void (*stats)(const moe_dims *d, const float *logits,
		      const int32_t *idx, float *stat);
	void (*dispatch_dense)(const moe_dims *d, const int32_t *idx,
			       const float *w, int32_t *tok, int32_t *ex,
			       float *wt, int32_t *rslot, int32_t *rowpos);
	void (*route_dense)(const moe_dims *d, const float *logits, int32_t *idx,
			    float *w, float *stat, int32_t *tok, int32_t *ex,
			    float *wt, int32_t *rslot, int32_t *rowpos);
	void (*dispatch_sparse)(const moe_dims *d, const int32_t *idx,
				const float *w, const float *stat, int32_t *tok,
				int32_t *ex, float *wt, int32_t *rslot,
				int32_t *rowpos, int32_t *off);
	void (*build_x)(const moe_dims *d, const float *a, const int32_t *tok,
			const int32_t *ex, float *xg, float *xu);
	void (*combine_forward)(const moe_dims *d, const int32_t *rowpos,
				const float *w, const float *g0,
				const float *u0, float *G, float *U, float *c);
	void (*combine_backward)(const moe_dims *d, const int32_t *tok,
				 const float *wt, const int32_t *rslot,
				 const float *dc, float *G, float *U, float *dw);
	void (*shared_grad)(const moe_dims *d, const int32_t *rowpos,
			    const float *dG, const float *dU, float *dg0,
			    float *du0);
	void (*lowrank_grad)(const moe_dims *d, const int32_t *idx,
			     const int32_t *rowpos, const float *dXg,
			     const float *dXu, float *da);
	void (*router_grad)(const moe_dims *d, const float *logits,
			    const int32_t *idx, const float *w, const float *dw,
			    const float *stat, float *dlogits);
	/* 0 if every launch since the last call succeeded; else writes a
	 * message and clears the error */
	int (*check)(char *msg, size_t cap);
} moe_kernels;

/* moe.cu (built only when nvcc exists; hidden visibility) */
const moe_kernels *moe_cuda_kernels(void);

#ifdef __cplusplus
}
#endif
#endif /* MOE_KERN_H */
