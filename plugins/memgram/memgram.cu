/*
 * plugins/memgram/memgram.cu -- CUDA kernels of MemGram's row-wise steps
 * (combine of the gathered rows, the gate and their backward). Each thread
 * runs one row through the same ARB_HD function as the CPU reference
 * (memgram_kern.h), so the two backends evaluate the same expressions in the
 * same order (the GPU test compares them with a float tolerance: nvcc may
 * contract a*b+c into an FMA). The hashing of the n-grams and the int8
 * strengths stay on the host (memgram.c). Everything runs on the legacy
 * default stream, like the core backend; nothing here syncs the host.
 * Built with -fvisibility=hidden: only memgram.c's descriptor is exported.
 */
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdint.h>
#include "memgram_kern.h"

static cudaError_t first_err = cudaSuccess;

static void note(const char *what)
{
	cudaError_t e = cudaGetLastError();
	if (e != cudaSuccess && first_err == cudaSuccess) {
		first_err = e;
		fprintf(stderr, "memgram: %s: %s\n", what, cudaGetErrorString(e));
	}
}

static unsigned int cdiv(int64_t a, int64_t b)
{
	return (unsigned int)((a + b - 1) / b);
}

__global__ void combine_kernel(int64_t M, int K, int dim, const float *c,
			       const float *e, float *m)
{
	int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (r < M) mg_combine_row(r, M, K, dim, c, e, m);
}

__global__ void combine_back_kernel(int64_t M, int K, int dim, const float *c,
				    const float *dm, float *de)
{
	int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (r < M) mg_combine_back_row(r, M, K, dim, c, dm, de);
}

__global__ void gate_kernel(int64_t M, int D, const float *hx, const float *hk,
			    const float *v, float *g, float *y)
{
	int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (r < M) mg_gate_row(r, D, hx, hk, v, g, y);
}

__global__ void gate_back_kernel(int64_t M, int D, const float *dy,
				 const float *hx, const float *hk,
				 const float *v, const float *g, float *dv,
				 float *dhx, float *dhk)
{
	int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (r < M) mg_gate_back_row(r, D, dy, hx, hk, v, g, dv, dhx, dhk);
}

static void cu_combine_forward(int64_t M, int K, int dim, const float *c,
			       const float *e, float *m)
{
	if (M <= 0) return;
	combine_kernel<<<cdiv(M, 128), 128>>>(M, K, dim, c, e, m);
	note("combine_forward");
}

static void cu_combine_backward(int64_t M, int K, int dim, const float *c,
				const float *dm, float *de)
{
	if (M <= 0) return;
	combine_back_kernel<<<cdiv(M, 128), 128>>>(M, K, dim, c, dm, de);
	note("combine_backward");
}

static void cu_gate_forward(int64_t M, int D, const float *hx, const float *hk,
			    const float *v, float *g, float *y)
{
	if (M <= 0) return;
	gate_kernel<<<cdiv(M, 128), 128>>>(M, D, hx, hk, v, g, y);
	note("gate_forward");
}

static void cu_gate_backward(int64_t M, int D, const float *dy,
			     const float *hx, const float *hk, const float *v,
			     const float *g, float *dv, float *dhx, float *dhk)
{
	if (M <= 0) return;
	gate_back_kernel<<<cdiv(M, 128), 128>>>(M, D, dy, hx, hk, v, g, dv, dhx,
						dhk);
	note("gate_backward");
}

static int cu_check(char *msg, size_t cap)
{
	note("check");
	if (first_err == cudaSuccess) return 0;
	snprintf(msg, cap, "CUDA error in a memgram kernel: %s",
		 cudaGetErrorString(first_err));
	first_err = cudaSuccess;
	return 1;
}

static const mg_kernels cuda_kernels = {
	cu_combine_forward, cu_combine_backward, cu_gate_forward,
	cu_gate_backward, cu_check,
};

extern "C" const mg_kernels *memgram_cuda_kernels(void)
{
	return &cuda_kernels;
}
