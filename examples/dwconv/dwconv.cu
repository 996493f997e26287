/*
 * examples/dwconv/dwconv.cu -- CUDA kernels of the depthwise causal
 * convolution (semantics: dwconv_kern.h; dwconv.c's CPU kernels are the
 * definition of record). Launched on the legacy default stream, like the
 * core backend; nothing here synchronizes the host.
 *
 * One thread per (row, channel) for the convolution and its input gradient
 * (coalesced along D); one thread per (lag, channel) for the tap gradient,
 * summing over b and t in a fixed order (deterministic, no atomics).
 */
#include <cuda_runtime.h>
#include <stdio.h>
#include "dwconv_kern.h"

static void note(const char *what)
{
	cudaError_t e = cudaGetLastError();
	if (e != cudaSuccess)
		fprintf(stderr, "dwconv: %s: %s\n", what, cudaGetErrorString(e));
}

static unsigned int cdiv(long long a, long long b)
{
	return (unsigned int)((a + b - 1) / b);
}

__global__ void conv_fwd_kernel(const float *x, const float *wt, float *c,
				int B, int T, int D, int k)
{
	long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	long long M = (long long)B * T;
	if (i >= M * D) return;
	int d = (int)(i % D);
	long long m = i / D;
	int t = (int)(m % T);
	float s = 0.0f;
	for (int j = 0; j < k && j <= t; j++)
		s += wt[(long long)d * k + j] * x[(m - j) * D + d];
	c[i] = s;
}

__global__ void conv_bwd_x_kernel(const float *dc, const float *wt, float *dx,
				  int B, int T, int D, int k)
{
	long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	long long M = (long long)B * T;
	if (i >= M * D) return;
	int d = (int)(i % D);
	long long m = i / D;
	int t = (int)(m % T);
	float s = 0.0f;
	for (int j = 0; j < k && t + j < T; j++)
		s += wt[(long long)d * k + j] * dc[(m + j) * D + d];
	dx[i] += s;
}

__global__ void tap_grad_kernel(const float *dc, const float *x, float *dtaps,
				int B, int T, int D, int k)
{
	int d = blockIdx.x * blockDim.x + threadIdx.x;
	int j = blockIdx.y;
	if (d >= D || j >= k) return;
	float s = 0.0f;
	for (int b = 0; b < B; b++) {
		long long base = (long long)b * T;
		for (int t = j; t < T; t++)
			s += dc[(base + t) * D + d] * x[(base + t - j) * D + d];
	}
	dtaps[(long long)j * D + d] = s;
}

static void cu_conv_fwd(const float *x, const float *wt, float *c, int B,
			int T, int D, int k)
{
	long long n = (long long)B * T * D;
	conv_fwd_kernel<<<cdiv(n, 256), 256>>>(x, wt, c, B, T, D, k);
	note("conv_fwd");
}

static void cu_conv_bwd_x(const float *dc, const float *wt, float *dx, int B,
			  int T, int D, int k)
{
	long long n = (long long)B * T * D;
	conv_bwd_x_kernel<<<cdiv(n, 256), 256>>>(dc, wt, dx, B, T, D, k);
	note("conv_bwd_x");
}

static void cu_tap_grad(const float *dc, const float *x, float *dtaps, int B,
			int T, int D, int k)
{
	dim3 grid(cdiv(D, 128), (unsigned int)k);
	tap_grad_kernel<<<grid, 128>>>(dc, x, dtaps, B, T, D, k);
	note("tap_grad");
}

static const dw_kernels cuda_kernels = { cu_conv_fwd, cu_conv_bwd_x, cu_tap_grad };

extern "C" const dw_kernels *dw_cuda_kernels(void)
{
	return &cuda_kernels;
}
