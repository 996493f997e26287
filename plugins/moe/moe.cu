/*
 * plugins/moe/moe.cu -- CUDA kernels of SharedProjectionMoE's small steps
 * (routing, dispatch, combine and their backward). Semantics: moe_kern.h;
 * the CPU reference in moe.c is the definition of record. Everything runs
 * on the legacy default stream (like the core backend); nothing here syncs
 * the host. Built with -fvisibility=hidden: only moe.c's descriptor is
 * exported from moe.so.
 *
 * Determinism: no float atomics. Reductions use fixed trees, the counting
 * sort is stable (assignment order within each expert).
 */
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include "moe_kern.h"

static cudaError_t first_err = cudaSuccess;

static void note(const char *what)
{
	cudaError_t e = cudaGetLastError();
	if (e != cudaSuccess && first_err == cudaSuccess) {
		first_err = e;
		fprintf(stderr, "moe: %s: %s\n", what, cudaGetErrorString(e));
	}
}

static unsigned int cdiv(int64_t a, int64_t b)
{
	return (unsigned int)((a + b - 1) / b);
}

__device__ __forceinline__ float dev_sigmoid(float g)
{
	return 1.0f / (1.0f + __expf(-g));
}

/* block-wide sum, fixed order; blockDim.x a multiple of 32, <= 1024 */
__device__ float block_sum(float v, float *sh)
{
	for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
	int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
	__syncthreads();
	if (lane == 0) sh[wid] = v;
	__syncthreads();
	int nw = blockDim.x >> 5;
	v = (int)threadIdx.x < nw ? sh[threadIdx.x] : 0.0f;
	if (wid == 0)
		for (int o = 16; o > 0; o >>= 1)
			v += __shfl_down_sync(0xffffffffu, v, o);
	return v; /* valid in thread 0 */
}

/* ---- route: one thread per token */
/* top-k of one token's logits l (ties -> lower index) into sel, and its
 * idx / w entries (softmax over the selected) */
__device__ __forceinline__ void route_one(const moe_dims &d, const float *l,
					  int *sel, int32_t *idx, float *w)
{
	for (int s = 0; s < d.k; s++) {
		int best = -1;
		for (int e = 0; e < d.E; e++) {
			int taken = 0;
			for (int t = 0; t < s; t++) taken |= sel[t] == e;
			if (taken) continue;
			if (best < 0 || l[e] > l[best]) best = e;
		}
		sel[s] = best;
	}
	float mx = l[sel[0]], sum = 0.0f, ws[MOE_MAX_TOPK];
	for (int s = 0; s < d.k; s++) {
		ws[s] = expf(l[sel[s]] - mx);
		sum += ws[s];
	}
	for (int s = 0; s < d.k; s++) {
		idx[s] = sel[s];
		w[s] = ws[s] / sum;
	}
}

__global__ void route_kernel(moe_dims d, const float *logits, int32_t *idx,
			     float *w)
{
	int64_t m = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (m >= d.M) return;
	int sel[MOE_MAX_TOPK];
	route_one(d, logits + m * d.E, sel, idx + m * d.k, w + m * d.k);
}

static void cu_route(const moe_dims *d, const float *logits, int32_t *idx,
		     float *w)
{
	route_kernel<<<cdiv(d->M, 128), 128>>>(*d, logits, idx, w);
	note("route");
}

/* ---- stats: block per expert (counts, prob sums), then one thread */
/* the max of one token's logits in *mx and the softmax denominator */
__device__ __forceinline__ float softmax_den(const moe_dims &d, const float *l, float *mx)
{
	float m = l[0];
	for (int j = 1; j < d.E; j++) m = fmaxf(m, l[j]);
	float sum = 0.0f;
	for (int j = 0; j < d.E; j++) sum += expf(l[j] - m);
	*mx = m;
	return sum;
}

__global__ void stats_kernel(moe_dims d, const float *logits,
			     const int32_t *idx, float *stat)
{
	__shared__ float sh[32];
	int e = blockIdx.x;
	float cnt = 0.0f, ps = 0.0f;
	for (int64_t m = threadIdx.x; m < d.M; m += blockDim.x) {
		const float *l = logits + m * d.E;
		float mx;
		const float sum = softmax_den(d, l, &mx);
		ps += expf(l[e] - mx) / sum;
		for (int s = 0; s < d.k; s++) cnt += idx[m * d.k + s] == e;
	}
	cnt = block_sum(cnt, sh);
	ps = block_sum(ps, sh);
	if (threadIdx.x == 0) {
		stat[1 + e] = cnt;
		stat[1 + d.E + e] = ps;
	}
}

/* stat[0] = coef * sum_e f_e Pbar_e from the counts and prob sums */
__device__ __forceinline__ void aux_of(const moe_dims &d, float *stat)
{
	double aux = 0.0;
	for (int e = 0; e < d.E; e++)
		aux += (double)stat[1 + e] / (double)(d.M * d.k) *
		       ((double)stat[1 + d.E + e] / (double)d.M);
	stat[0] = (float)(d.coef * aux);
}

__global__ void aux_kernel(moe_dims d, float *stat)
{
	aux_of(d, stat);
}

static void cu_stats(const moe_dims *d, const float *logits,
		     const int32_t *idx, float *stat)
{
	stats_kernel<<<d->E, 256>>>(*d, logits, idx, stat);
	note("stats");
	aux_kernel<<<1, 1>>>(*d, stat);
	note("aux");
}

/* ---- dense dispatch: thread per row j = e*M + m */
__device__ __forceinline__ void dispatch_row(const moe_dims &d, int64_t j, int e, int64_t m,
					     const int32_t *idx, const float *w, int32_t *tok,
					     int32_t *ex, float *wt, int32_t *rslot,
					     int32_t *rowpos)
{
	float wv = 0.0f;
	int32_t sl = -1;
	for (int s = 0; s < d.k; s++) {
		if (idx[m * d.k + s] != e) continue;
		wv = w[m * d.k + s];
		sl = (int32_t)(m * d.k + s);
		rowpos[sl] = (int32_t)j;
	}
	tok[j] = (int32_t)m;
	ex[j] = e;
	wt[j] = wv;
	rslot[j] = sl;
}

__global__ void dispatch_dense_kernel(moe_dims d, const int32_t *idx,
				      const float *w, int32_t *tok, int32_t *ex,
				      float *wt, int32_t *rslot,
				      int32_t *rowpos)
{
	int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (j >= d.P) return;
	dispatch_row(d, j, (int)(j / d.M), j % d.M, idx, w, tok, ex, wt, rslot, rowpos);
}

static void cu_dispatch_dense(const moe_dims *d, const int32_t *idx,
			      const float *w, int32_t *tok, int32_t *ex,
			      float *wt, int32_t *rslot, int32_t *rowpos)
{
	dispatch_dense_kernel<<<cdiv(d->P, 256), 256>>>(*d, idx, w, tok, ex, wt,
							rslot, rowpos);
	note("dispatch_dense");
}

/* ---- route + stats + aux + dense dispatch in one block (M <= 256): one
 * launch instead of four for the small batches the dense path serves (h15
 * ncu: 15 us of four latency-bound launches per forward at 16 tokens).
 * Every value is computed by the same expressions, and every sum in the
 * same order, as route_kernel, stats_kernel (block_sum over 256 threads),
 * aux_kernel and dispatch_dense_kernel: the results are bitwise the same. */
#define RD_THREADS 256
__global__ void __launch_bounds__(RD_THREADS) route_dense_kernel(moe_dims d,
	const float *__restrict__ logits, int32_t *__restrict__ idx,
	float *__restrict__ w, float *__restrict__ stat, int32_t *__restrict__ tok,
	int32_t *__restrict__ ex, float *__restrict__ wt, int32_t *__restrict__ rslot,
	int32_t *__restrict__ rowpos)
{
	/* (restrict: the logits row stays in registers / L1 across the loops
	 * below instead of being reloaded after every store) */
	__shared__ float part[2][MOE_MAX_EXPERTS][RD_THREADS / 32];
	const int m = threadIdx.x, lane = m & 31, wid = m >> 5;
	const int valid = m < d.M;
	const float *l = logits + (int64_t)(valid ? m : 0) * d.E;
	int sel[MOE_MAX_TOPK];
	float mx = 0.0f, sum = 0.0f;
	if (valid) {
		route_one(d, l, sel, idx + m * d.k, w + m * d.k);
		sum = softmax_den(d, l, &mx); /* the softmax over all E of stats_kernel */
	}
	for (int e = 0; e < d.E; e++) {
		float cnt = 0.0f, ps = 0.0f;
		if (valid) {
			ps += expf(l[e] - mx) / sum;
			for (int s = 0; s < d.k; s++) cnt += sel[s] == e;
		}
		for (int o = 16; o > 0; o >>= 1) {
			cnt += __shfl_down_sync(0xffffffffu, cnt, o);
			ps += __shfl_down_sync(0xffffffffu, ps, o);
		}
		if (lane == 0) {
			part[0][e][wid] = cnt;
			part[1][e][wid] = ps;
		}
	}
	__syncthreads();
	for (int e = wid; e < d.E; e += RD_THREADS / 32) {
		float cnt = lane < RD_THREADS / 32 ? part[0][e][lane] : 0.0f;
		float ps = lane < RD_THREADS / 32 ? part[1][e][lane] : 0.0f;
		for (int o = 16; o > 0; o >>= 1) {
			cnt += __shfl_down_sync(0xffffffffu, cnt, o);
			ps += __shfl_down_sync(0xffffffffu, ps, o);
		}
		if (lane == 0) {
			stat[1 + e] = cnt;
			stat[1 + d.E + e] = ps;
		}
	}
	__syncthreads();
	if (m == 0) aux_of(d, stat);
	/* P = E * M <= 64 * 256: 32-bit index arithmetic */
	const int Mi = (int)d.M, Pi = (int)d.P;
	for (int j = m; j < Pi; j += RD_THREADS) {
		const int e = j / Mi;
		dispatch_row(d, j, e, j - e * Mi, idx, w, tok, ex, wt, rslot, rowpos);
	}
}

static void cu_route_dense(const moe_dims *d, const float *logits, int32_t *idx,
			   float *w, float *stat, int32_t *tok, int32_t *ex,
			   float *wt, int32_t *rslot, int32_t *rowpos)
{
	/* ARB_MOE_UNFUSED: the separate kernels (tests compare the two) */
	if (d->M > RD_THREADS || getenv("ARB_MOE_UNFUSED")) {
		cu_route(d, logits, idx, w);
		cu_stats(d, logits, idx, stat);
		cu_dispatch_dense(d, idx, w, tok, ex, wt, rslot, rowpos);
		return;
	}
	route_dense_kernel<<<1, RD_THREADS>>>(*d, logits, idx, w, stat, tok, ex,
					      wt, rslot, rowpos);
	note("route_dense");
}

/* ---- sparse dispatch: stable counting sort, one block (1024 threads) per
 * expert scanning the M*k assignments in chunks with a ballot prefix. The
 * counts come from stats (exact integers in float). */
__global__ void dispatch_sparse_kernel(moe_dims d, const int32_t *idx,
				       const float *w, const float *stat,
				       int32_t *tok, int32_t *ex, float *wt,
				       int32_t *rslot, int32_t *rowpos,
				       int32_t *off)
{
	__shared__ int warp_tot[32];
	__shared__ int base_sh;
	int e = blockIdx.x;
	int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
	int nw = blockDim.x >> 5;
	if (threadIdx.x == 0) {
		int o = 0;
		for (int j = 0; j < e; j++) o += (int)stat[1 + j];
		base_sh = o;
		off[e] = o;
		if (e == d.E - 1) off[d.E] = (int)(d.M * d.k);
	}
	__syncthreads();
	int64_t n = d.M * d.k;
	for (int64_t c0 = 0; c0 < n; c0 += blockDim.x) {
		int64_t i = c0 + threadIdx.x;
		int flag = i < n && idx[i] == e;
		unsigned int bal = __ballot_sync(0xffffffffu, flag);
		int pre = __popc(bal & ((1u << lane) - 1u));
		if (lane == 0) warp_tot[wid] = __popc(bal);
		__syncthreads();
		int wbase = 0, tot = 0;
		for (int q = 0; q < nw; q++) {
			wbase += q < wid ? warp_tot[q] : 0;
			tot += warp_tot[q];
		}
		if (flag) {
			int row = base_sh + wbase + pre;
			tok[row] = (int32_t)(i / d.k);
			ex[row] = e;
			wt[row] = w[i];
			rslot[row] = (int32_t)i;
			rowpos[i] = row;
		}
		__syncthreads();
		if (threadIdx.x == 0) base_sh += tot;
		__syncthreads();
	}
}

static void cu_dispatch_sparse(const moe_dims *d, const int32_t *idx,
			       const float *w, const float *stat, int32_t *tok,
			       int32_t *ex, float *wt, int32_t *rslot,
			       int32_t *rowpos, int32_t *off)
{
	dispatch_sparse_kernel<<<d->E, 1024>>>(*d, idx, w, stat, tok, ex, wt,
					       rslot, rowpos, off);
	note("dispatch_sparse");
}

/* ---- build block-masked B inputs: thread per (row, column) */
__global__ void build_x_kernel(moe_dims d, const float *a, const int32_t *tok,
			       const int32_t *ex, float *xg, float *xu)
{
	int Er = d.E * d.r;
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= d.P * Er) return;
	int64_t j = i / Er;
	int col = (int)(i % Er);
	int e = col / d.r, q = col % d.r;
	float vg = 0.0f, vu = 0.0f;
	if (ex[j] == e) {
		const float *am = a + (int64_t)tok[j] * 2 * Er + 2 * e * d.r;
		vg = am[q];
		vu = am[d.r + q];
	}
	xg[i] = vg;
	xu[i] = vu;
}

static void cu_build_x(const moe_dims *d, const float *a, const int32_t *tok,
		       const int32_t *ex, float *xg, float *xu)
{
	int64_t n = d->P * d->E * d->r;
	build_x_kernel<<<cdiv(n, 256), 256>>>(*d, a, tok, ex, xg, xu);
	note("build_x");
}

/* ---- combine forward: grid (tokens, column tiles) */
__global__ void combine_forward_kernel(moe_dims d, const int32_t *rowpos,
				       const float *w, const float *g0,
				       const float *u0, float *G, float *U,
				       float *c)
{
	int64_t m = blockIdx.x;
	int64_t f = (int64_t)blockIdx.y * blockDim.x + threadIdx.x;
	if (f >= d.F) return;
	float gb = g0[m * d.F + f], ub = u0[m * d.F + f], acc = 0.0f;
	for (int s = 0; s < d.k; s++) {
		int64_t row = rowpos[m * d.k + s];
		float g = G[row * d.F + f] + gb;
		float u = U[row * d.F + f] + ub;
		G[row * d.F + f] = g;
		U[row * d.F + f] = u;
		acc += w[m * d.k + s] * (g * dev_sigmoid(g) * u);
	}
	c[m * d.F + f] = acc;
}

static void cu_combine_forward(const moe_dims *d, const int32_t *rowpos,
			       const float *w, const float *g0, const float *u0,
			       float *G, float *U, float *c)
{
	dim3 grid((unsigned int)d->M, cdiv(d->F, 256));
	combine_forward_kernel<<<grid, 256>>>(*d, rowpos, w, g0, u0, G, U, c);
	note("combine_forward");
}

/* ---- combine backward: block per dispatch row (dot needs the whole row) */
__global__ void combine_backward_kernel(moe_dims d, const int32_t *tok,
					const float *wt, const int32_t *rslot,
					const float *dc, float *G, float *U,
					float *dw)
{
	__shared__ float sh[32];
	int64_t j = blockIdx.x;
	const float *dcm = dc + (int64_t)tok[j] * d.F;
	float *g = G + j * d.F, *u = U + j * d.F;
	float wj = wt[j], dot = 0.0f;
	for (int64_t f = threadIdx.x; f < d.F; f += blockDim.x) {
		float gv = g[f], uv = u[f], dcv = dcm[f];
		float sg = dev_sigmoid(gv), sl = gv * sg;
		float dh = wj * dcv;
		dot += dcv * (sl * uv);
		g[f] = dh * uv * (sg * (1.0f + gv * (1.0f - sg)));
		u[f] = dh * sl;
	}
	dot = block_sum(dot, sh);
	if (threadIdx.x == 0 && rslot[j] >= 0) dw[rslot[j]] = dot;
}

static void cu_combine_backward(const moe_dims *d, const int32_t *tok,
				const float *wt, const int32_t *rslot,
				const float *dc, float *G, float *U, float *dw)
{
	int th = d->F >= 512 ? 256 : 128;
	combine_backward_kernel<<<(unsigned int)d->P, th>>>(*d, tok, wt, rslot,
							    dc, G, U, dw);
	note("combine_backward");
}

/* ---- shared projection gradients: thread per (token, column) */
__global__ void shared_grad_kernel(moe_dims d, const int32_t *rowpos,
				   const float *dG, const float *dU, float *dg0,
				   float *du0)
{
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= d.M * d.F) return;
	int64_t m = i / d.F, f = i % d.F;
	float sg = 0.0f, su = 0.0f;
	for (int s = 0; s < d.k; s++) {
		int64_t row = rowpos[m * d.k + s];
		sg += dG[row * d.F + f];
		su += dU[row * d.F + f];
	}
	dg0[i] = sg;
	du0[i] = su;
}

static void cu_shared_grad(const moe_dims *d, const int32_t *rowpos,
			   const float *dG, const float *dU, float *dg0,
			   float *du0)
{
	shared_grad_kernel<<<cdiv(d->M * d->F, 256), 256>>>(*d, rowpos, dG, dU,
							     dg0, du0);
	note("shared_grad");
}

/* ---- low-rank input gradient: thread per (token, column of a) */
__global__ void lowrank_grad_kernel(moe_dims d, const int32_t *idx,
				    const int32_t *rowpos, const float *dXg,
				    const float *dXu, float *da)
{
	int Er = d.E * d.r;
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= d.M * 2 * Er) return;
	int64_t m = i / (2 * Er);
	int col = (int)(i % (2 * Er));
	int e = col / (2 * d.r), q = col % (2 * d.r);
	float v = 0.0f;
	for (int s = 0; s < d.k; s++) {
		if (idx[m * d.k + s] != e) continue;
		int64_t row = rowpos[m * d.k + s];
		v = q < d.r ? dXg[row * Er + e * d.r + q]
			    : dXu[row * Er + e * d.r + q - d.r];
	}
	da[i] = v;
}

static void cu_lowrank_grad(const moe_dims *d, const int32_t *idx,
			    const int32_t *rowpos, const float *dXg,
			    const float *dXu, float *da)
{
	int64_t n = d->M * 2 * d->E * d->r;
	lowrank_grad_kernel<<<cdiv(n, 256), 256>>>(*d, idx, rowpos, dXg, dXu, da);
	note("lowrank_grad");
}

/* ---- router gradient: thread per token */
__global__ void router_grad_kernel(moe_dims d, const float *logits,
				   const int32_t *idx, const float *w,
				   const float *dw, const float *stat,
				   float *dlogits)
{
	int64_t m = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (m >= d.M) return;
	const float *l = logits + m * d.E;
	float *dl = dlogits + m * d.E;
	float fk = 1.0f / (float)(d.M * d.k), cm = d.coef / (float)d.M;
	float mx = l[0];
	for (int e = 1; e < d.E; e++) mx = fmaxf(mx, l[e]);
	float sum = 0.0f;
	for (int e = 0; e < d.E; e++) sum += expf(l[e] - mx);
	float fp = 0.0f;
	for (int e = 0; e < d.E; e++)
		fp += stat[1 + e] * fk * (expf(l[e] - mx) / sum);
	for (int e = 0; e < d.E; e++) {
		float p = expf(l[e] - mx) / sum;
		dl[e] = cm * p * (stat[1 + e] * fk - fp);
	}
	float wdw = 0.0f;
	for (int s = 0; s < d.k; s++) wdw += w[m * d.k + s] * dw[m * d.k + s];
	for (int s = 0; s < d.k; s++)
		dl[idx[m * d.k + s]] += w[m * d.k + s] * (dw[m * d.k + s] - wdw);
}

static void cu_router_grad(const moe_dims *d, const float *logits,
			   const int32_t *idx, const float *w, const float *dw,
			   const float *stat, float *dlogits)
{
	router_grad_kernel<<<cdiv(d->M, 128), 128>>>(*d, logits, idx, w, dw, stat,
						     dlogits);
	note("router_grad");
}

static int cu_check(char *msg, size_t cap)
{
	note("check");
	if (first_err == cudaSuccess) return 0;
	snprintf(msg, cap, "CUDA error in a moe kernel: %s",
		 cudaGetErrorString(first_err));
	first_err = cudaSuccess;
	return 1;
}

static const moe_kernels cuda_kernels = {
	cu_route, cu_stats, cu_dispatch_dense, cu_route_dense, cu_dispatch_sparse, cu_build_x,
	cu_combine_forward, cu_combine_backward, cu_shared_grad,
	cu_lowrank_grad, cu_router_grad, cu_check,
};

extern "C" const moe_kernels *moe_cuda_kernels(void)
{
	return &cuda_kernels;
}
