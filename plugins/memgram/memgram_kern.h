/*
 * plugins/memgram/memgram_kern.h -- the small row-wise steps of MemGram,
 * shared by the CPU reference (memgram.c) and the CUDA kernels
 * (memgram.cu). The per-row math is written once, below, as ARB_HD
 * functions that both sides call, so that the two backends compute the same
 * expressions in the same order. The ternary products never appear here:
 * they go through the backend table (embed_forward / embed_vote,
 * linear_forward / linear_backward_x / linear_vote, rmsnorm_*).
 * Internal to the plugin (nothing here is exported).
 *
 * Legend: M positions, K = (orders x heads) gathered rows per position
 * (entry k*M + r), dim table width, D model width. Pointers are backend
 * memory, float32.
 *
 *   combine_forward   m[r, :]   = sum_k c[k*M + r] * e[k*M + r, :]
 *   combine_backward  de[k*M + r, :] = c[k*M + r] * dm[r, :]
 *   gate_forward      a_r = <hx_r, hk_r> / sqrt(D),  g_r = sigmoid(a_r),
 *                     y[r, :] += g_r * v[r, :]            (g kept)
 *   gate_backward     dg_r = <dy_r, v_r>, da_r = dg_r g_r (1 - g_r) / sqrt(D)
 *                     dv_r = g_r dy_r, dhx_r = da_r hk_r, dhk_r = da_r hx_r
 */
#ifndef MEMGRAM_KERN_H
#define MEMGRAM_KERN_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include "arb/arb.h"

#ifdef __cplusplus
extern "C" {
#endif

ARB_HD void mg_combine_row(int64_t r, int64_t M, int K, int dim,
			   const float *c, const float *e, float *m)
{
	for (int d = 0; d < dim; d++) {
		float acc = 0.0f;
		for (int k = 0; k < K; k++) {
			int64_t i = (int64_t)k * M + r;
			acc += c[i] * e[i * dim + d];
		}
		m[r * dim + d] = acc;
	}
}

ARB_HD void mg_combine_back_row(int64_t r, int64_t M, int K, int dim,
				const float *c, const float *dm, float *de)
{
	for (int k = 0; k < K; k++) {
		int64_t i = (int64_t)k * M + r;
		for (int d = 0; d < dim; d++) de[i * dim + d] = c[i] * dm[r * dim + d];
	}
}

ARB_HD float mg_sigmoid(float a)
{
	return 1.0f / (1.0f + expf(-a));
}

ARB_HD void mg_gate_row(int64_t r, int D, const float *hx, const float *hk,
			const float *v, float *g, float *y)
{
	const float *a = hx + r * D, *b = hk + r * D;
	float dot = 0.0f;
	for (int d = 0; d < D; d++) dot += a[d] * b[d];
	float gr = mg_sigmoid(dot * (1.0f / sqrtf((float)D)));
	g[r] = gr;
	for (int d = 0; d < D; d++) y[r * D + d] += gr * v[r * D + d];
}

ARB_HD void mg_gate_back_row(int64_t r, int D, const float *dy,
			     const float *hx, const float *hk, const float *v,
			     const float *g, float *dv, float *dhx, float *dhk)
{
	const float *dyr = dy + r * D, *vr = v + r * D;
	float dg = 0.0f;
	for (int d = 0; d < D; d++) dg += dyr[d] * vr[d];
	float gr = g[r];
	float da = dg * gr * (1.0f - gr) * (1.0f / sqrtf((float)D));
	for (int d = 0; d < D; d++) {
		dv[r * D + d] = gr * dyr[d];
		dhx[r * D + d] = da * hk[r * D + d];
		dhk[r * D + d] = da * hx[r * D + d];
	}
}

typedef struct mg_kernels {
	void (*combine_forward)(int64_t M, int K, int dim, const float *c,
				const float *e, float *m);
	void (*combine_backward)(int64_t M, int K, int dim, const float *c,
				 const float *dm, float *de);
	void (*gate_forward)(int64_t M, int D, const float *hx, const float *hk,
			     const float *v, float *g, float *y);
	void (*gate_backward)(int64_t M, int D, const float *dy, const float *hx,
			      const float *hk, const float *v, const float *g,
			      float *dv, float *dhx, float *dhk);
	/* 0 if every launch since the last call succeeded; else writes a
	 * message and clears the error */
	int (*check)(char *msg, size_t cap);
} mg_kernels;

/* memgram.cu (built only when nvcc exists; hidden visibility) */
const mg_kernels *memgram_cuda_kernels(void);

#ifdef __cplusplus
}
#endif
#endif /* MEMGRAM_KERN_H */
