/*
 * plugins/graph/graph.cu -- CUDA kernels of MoEGraph (graph_kern.h has the
 * definitions; graph_core.h the CPU reference they must match). Built with
 * -fvisibility=hidden: nothing here is exported, graph.c reaches the table
 * through graph_cuda_kernels(). All launches go to the default stream, like
 * the backend's ops, so ordering with linear_forward & co. is implicit.
 *
 *   csr       one warp per output row, lanes stride the D columns (coalesced
 *             rows of `in`); entries of the row are summed in entry order
 *             by every lane: deterministic, no atomics, no dense scatter
 *             buffer. This single kernel is the edge aggregation (CSR by
 *             target), its transpose (CSR by source), the gather of node
 *             states to positions and the gather-add backward over
 *             duplicate positions (CSR node -> positions).
 *   edge_dot  one warp per edge, shuffle reduction
 *   act_step  thread per position; the running count by a block reduction
 *             and one atomicAdd per block (an int: exact)
 */
#include <cuda_runtime.h>
#include <stdio.h>
#include "graph_kern.h"

namespace {

cudaError_t first_err = cudaSuccess;

void note(const char *what)
{
	(void)what;
	cudaError_t e = cudaGetLastError();
	if (e != cudaSuccess && first_err == cudaSuccess) first_err = e;
}

int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

__global__ void csr_kernel(int64_t rows, int D, const int32_t *ptr,
			   const int32_t *col, const float *w, const float *in,
			   float *out, int accumulate)
{
	int64_t r = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
	int lane = threadIdx.x & 31;
	if (r >= rows) return;
	int32_t k0 = ptr[r], k1 = ptr[r + 1];
	for (int d = lane; d < D; d += 32) {
		float acc = accumulate ? out[r * D + d] : 0.0f;
		for (int32_t k = k0; k < k1; k++)
			acc += w[k] * in[(int64_t)col[k] * D + d];
		out[r * D + d] = acc;
	}
}

void cu_csr(int64_t rows, int D, const int32_t *ptr, const int32_t *col,
	    const float *w, const float *in, float *out, int accumulate)
{
	if (rows <= 0) return;
	csr_kernel<<<(unsigned)cdiv(rows * 32, 256), 256>>>(rows, D, ptr, col, w,
							    in, out, accumulate);
	note("csr");
}

__global__ void edge_dot_kernel(int64_t n, int D, const int32_t *src,
				const int32_t *dst, const float *scale,
				const float *Mg, const float *dA, float *g)
{
	int64_t k = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
	int lane = threadIdx.x & 31;
	if (k >= n) return;
	const float *a = dA + (int64_t)dst[k] * D;
	const float *b = Mg + (int64_t)src[k] * D;
	float s = 0.0f;
	for (int d = lane; d < D; d += 32) s += a[d] * b[d];
	for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
	if (lane == 0) g[k] += scale[k] * s;
}

void cu_edge_dot(int64_t n, int D, const int32_t *src, const int32_t *dst,
		 const float *scale, const float *Mg, const float *dA, float *g)
{
	if (n <= 0) return;
	edge_dot_kernel<<<(unsigned)cdiv(n * 32, 256), 256>>>(n, D, src, dst, scale,
							     Mg, dA, g);
	note("edge_dot");
}

__global__ void act_step_kernel(int64_t M, int it, int last, float thr,
				const float *p, float *cum, int32_t *run,
				int32_t *n, float *w, float *rho, int32_t *n_run)
{
	__shared__ int32_t cnt;
	if (threadIdx.x == 0) cnt = 0;
	__syncthreads();
	int64_t m = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	int still = 0;
	if (m < M) {
		if (!run[m]) {
			w[m] = 0.0f;
		} else if (last || cum[m] + p[m] >= thr) {
			float r = 1.0f - cum[m];
			w[m] = r;
			n[m] = it + 1;
			rho[m] = (float)(it + 1) + r;
			run[m] = 0;
		} else {
			w[m] = p[m];
			cum[m] += p[m];
			still = 1;
		}
	}
	if (still) atomicAdd(&cnt, 1);
	__syncthreads();
	if (threadIdx.x == 0 && cnt) atomicAdd(n_run, cnt);
}

void cu_act_step(int64_t M, int it, int last, float thr, const float *p,
		 float *cum, int32_t *run, int32_t *n, float *w, float *rho,
		 int32_t *n_run)
{
	cudaMemsetAsync(n_run, 0, sizeof(int32_t));
	if (M > 0)
		act_step_kernel<<<(unsigned)cdiv(M, 256), 256>>>(M, it, last, thr, p,
								 cum, run, n, w,
								 rho, n_run);
	note("act_step");
}

__global__ void sigmoid_kernel(int64_t M, const float *z, float bias, float *p)
{
	int64_t m = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (m < M) p[m] = 1.0f / (1.0f + expf(-(z[m] + bias)));
}

void cu_sigmoid(int64_t M, const float *z, float bias, float *p)
{
	if (M <= 0) return;
	sigmoid_kernel<<<(unsigned)cdiv(M, 256), 256>>>(M, z, bias, p);
	note("sigmoid");
}

__global__ void row_axpy_kernel(int64_t M, int D, const float *a,
				const float *x, float *y)
{
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < M * D) y[i] += a[i / D] * x[i];
}

void cu_row_axpy(int64_t M, int D, const float *a, const float *x, float *y)
{
	if (M <= 0) return;
	row_axpy_kernel<<<(unsigned)cdiv(M * D, 256), 256>>>(M, D, a, x, y);
	note("row_axpy");
}

__global__ void row_dot_kernel(int64_t M, int D, const float *a, const float *b,
			       float *out)
{
	int64_t m = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
	int lane = threadIdx.x & 31;
	if (m >= M) return;
	float s = 0.0f;
	for (int d = lane; d < D; d += 32) s += a[m * D + d] * b[m * D + d];
	for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
	if (lane == 0) out[m] = s;
}

void cu_row_dot(int64_t M, int D, const float *a, const float *b, float *out)
{
	if (M <= 0) return;
	row_dot_kernel<<<(unsigned)cdiv(M * 32, 256), 256>>>(M, D, a, b, out);
	note("row_dot");
}

__global__ void act_grad_kernel(int64_t M, int it, const float *p,
				const int32_t *n, const float *dw, float tau_m,
				float *dz)
{
	int64_t m = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (m >= M) return;
	if (it >= n[m] - 1) { dz[m] = 0.0f; return; }
	float dp = dw[(int64_t)it * M + m] - dw[(int64_t)(n[m] - 1) * M + m] - tau_m;
	dz[m] = dp * p[m] * (1.0f - p[m]);
}

void cu_act_grad(int64_t M, int it, const float *p, const int32_t *n,
		 const float *dw, float tau_m, float *dz)
{
	if (M <= 0) return;
	act_grad_kernel<<<(unsigned)cdiv(M, 256), 256>>>(M, it, p, n, dw, tau_m, dz);
	note("act_grad");
}

int cu_check(char *msg, size_t cap)
{
	note("check");
	if (first_err == cudaSuccess) return 0;
	snprintf(msg, cap, "CUDA error in a graph kernel: %s",
		 cudaGetErrorString(first_err));
	first_err = cudaSuccess;
	return 1;
}

const graph_kernels cuda_kernels = {
	cu_csr, cu_edge_dot, cu_act_step, cu_sigmoid, cu_row_axpy, cu_row_dot,
	cu_act_grad, cu_check,
};

} /* namespace */

extern "C" const graph_kernels *graph_cuda_kernels(void)
{
	return &cuda_kernels;
}
