/*
 * bench/bench_linear.cu -- ternary linear kernels against cuBLAS bf16 in the
 * same run on the same GPU.
 *
 *   forward  y[M,N] = x[M,K] W^T  for M in {1,4,8,16,256,4096}, (N,K) in
 *            {(4096,4096),(11008,4096),(4096,11008)}; cuBLAS: bf16 x bf16 ->
 *            bf16, fp32 accumulate (cublasGemmEx).
 *   vote     T_accum += sign(dy^T x) at M=4096 vs cuBLAS bf16 dW = dy^T x.
 *   bwd_x    dx = dy W at M=4096 vs cuBLAS bf16 (information, no target).
 *
 * Memory-bound cases rotate among enough weight copies to exceed L2 (both
 * sides). CUDA events, 10 warm-up calls, median of 7 timings of 20 calls.
 * Targets: M <= 16 forward >= 4x cuBLAS; M = 4096 forward and vote >= 0.7x.
 */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <algorithm>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>
#include "arb/ops.h"

#define CKC(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
	fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); exit(1); } } while (0)
#define CKB(x) do { cublasStatus_t s_ = (x); if (s_ != CUBLAS_STATUS_SUCCESS) { \
	fprintf(stderr, "%s:%d %s: cublas %d\n", __FILE__, __LINE__, #x, (int)s_); exit(1); } } while (0)

static __global__ void fill_kernel(float *x, int64_t n, uint32_t seed)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x) {
		uint32_t h = (uint32_t)(arb_mix64(seed * 0x100000001ull + (uint64_t)i) >> 40);
		x[i] = (float)h / (float)(1 << 24) * 2.0f - 1.0f;
	}
}
static __global__ void fill_bf16_kernel(__nv_bfloat16 *x, int64_t n, uint32_t seed, float s)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x) {
		uint32_t h = (uint32_t)(arb_mix64(seed * 0x100000001ull + (uint64_t)i) >> 40);
		x[i] = __float2bfloat16(((float)h / (float)(1 << 24) * 2.0f - 1.0f) * s);
	}
}

/* the forward's least traffic: read the packed trits and the exponents of a
 * tensor once (each thread U 16-byte loads in flight, grid-stride), fold
 * them into one word so that the loads are not dropped; tails under 16
 * bytes are skipped */
template <int U>
static __global__ void read_kernel(const uint4 *a, int64_t na, const uint4 *b, int64_t nb,
				   unsigned *sink)
{
	const int64_t st = (int64_t)gridDim.x * blockDim.x;
	unsigned acc = 0;
	for (int part = 0; part < 2; part++) {
		const uint4 *p = part ? b : a;
		const int64_t n = part ? nb : na;
		for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += U * st) {
			uint4 v[U];
#pragma unroll
			for (int u = 0; u < U; u++)
				v[u] = i + u * st < n ? __ldcs(p + i + u * st) : make_uint4(0, 0, 0, 0);
#pragma unroll
			for (int u = 0; u < U; u++) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
		}
	}
	if (acc == 0x9e3779b9u) sink[0] = acc;
}

template <class F>
static double time_us(F f, int reps = 20)
{
	cudaEvent_t a, b;
	CKC(cudaEventCreate(&a));
	CKC(cudaEventCreate(&b));
	for (int i = 0; i < 10; i++) f(i);
	CKC(cudaDeviceSynchronize());
	std::vector<double> ts;
	for (int t = 0; t < 7; t++) {
		CKC(cudaEventRecord(a));
		for (int i = 0; i < reps; i++) f(i);
		CKC(cudaEventRecord(b));
		CKC(cudaEventSynchronize(b));
		float ms = 0;
		CKC(cudaEventElapsedTime(&ms, a, b));
		ts.push_back(ms * 1000.0 / reps);
	}
	CKC(cudaGetLastError());
	std::sort(ts.begin(), ts.end());
	return ts[3];
}

static void line(const char *op, int64_t M, int64_t N, int64_t K, double ours, double cub,
		 double target)
{
	double sp = cub / ours;
	const char *verdict = target <= 0 ? "-" : (sp >= target ? "PASS" : "MISS");
	double flops = 2.0 * M * N * K;
	printf("%-6s M=%-5lld N=%-6lld K=%-6lld ours %9.2f us (%7.1f TF/s)  cublas-bf16 %9.2f us (%7.1f TF/s)  speedup %6.2fx  target %s%.1fx  %s\n",
	       op, (long long)M, (long long)N, (long long)K, ours, flops / ours * 1e-6, cub,
	       flops / cub * 1e-6, sp, target > 0 ? ">=" : "", target > 0 ? target : 0.0, verdict);
	fflush(stdout);
}

/* ARB_CUDA_LEGACY plus one more family for an A/B line, then back to what
 * the caller set (an unset would drop the caller's own selection) */
static char g_leg[256];
static int g_leg_had;
static void legacy_push(const char *what)
{
	const char *o = getenv("ARB_CUDA_LEGACY");
	g_leg_had = o != NULL;
	snprintf(g_leg, sizeof g_leg, "%s", o ? o : "");
	char v[320];
	snprintf(v, sizeof v, "%s%s%s", g_leg, g_leg[0] ? "," : "", what);
	setenv("ARB_CUDA_LEGACY", v, 1);
}
static void legacy_pop(void)
{
	if (g_leg_had) setenv("ARB_CUDA_LEGACY", g_leg, 1);
	else unsetenv("ARB_CUDA_LEGACY");
}

int main(void)
{
	arb_error err = { 0 };
	arb_backend *be = arb_backend_cuda(&err);
	if (!be) { fprintf(stderr, "bench_linear: %s\n", err.msg); return 1; }
	cudaDeviceProp prop;
	CKC(cudaGetDeviceProperties(&prop, 0));
	printf("device: %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount,
	       prop.l2CacheSize >> 20);
	cublasHandle_t h;
	CKB(cublasCreate(&h));
	const int64_t shapes[3][2] = { { 4096, 4096 }, { 11008, 4096 }, { 4096, 11008 } };
	const int64_t Ms[6] = { 1, 4, 8, 16, 256, 4096 };
	const double l2x = 3.0 * prop.l2CacheSize;
	/* ARB_BENCH_ONLY=small: the forward at M <= 16 only (tuning runs) */
	const char *only = getenv("ARB_BENCH_ONLY");
	const int small_only = only && !strcmp(only, "small");
	/* ARB_BENCH_ONLY=vote: the votes at M = 4096 only */
	const int vote_only = only && !strcmp(only, "vote");
	/* ARB_BENCH_M=m: the forward at that M only (any M up to 4096);
	 * ARB_BENCH_SHAPE=i: shape i (0..2) only (profiling runs: a known
	 * launch order) */
	const char *bm = getenv("ARB_BENCH_M"), *bs = getenv("ARB_BENCH_SHAPE");
	int64_t only_m = 0;
	int only_s = -1;
	if (bm) {
		char *e = NULL;
		const long long v = strtoll(bm, &e, 10);
		if (e == bm || *e || v < 1 || v > 4096) {
			fprintf(stderr, "bench_linear: ARB_BENCH_M='%s': want a token count 1..4096\n", bm);
			return 2;
		}
		only_m = v;
	}
	if (bs) {
		char *e = NULL;
		const long v = strtol(bs, &e, 10);
		if (e == bs || *e || v < 0 || v > 2) {
			fprintf(stderr, "bench_linear: ARB_BENCH_SHAPE='%s': want 0, 1 or 2 "
				"(4096x4096, 11008x4096, 4096x11008)\n", bs);
			return 2;
		}
		only_s = (int)v;
	}
	for (int s = 0; s < 3; s++) {
		if (only_s >= 0 && s != only_s) continue;
		int64_t N = shapes[s][0], K = shapes[s][1];
		/* our weights: rotate copies to exceed L2 */
		int64_t pbytes = N * ((K + 4) / 5);
		int nours = (int)std::min<double>(32, std::max<double>(1, l2x / pbytes + 1));
		std::vector<arb_tern> ws(nours);
		for (int i = 0; i < nours; i++) {
			arb_tern *t = &ws[i];
			memset(t, 0, sizeof *t);
			snprintf(t->name, sizeof t->name, "w%d", i);
			t->rows = N; t->cols = K; t->group_size = 32;
			t->flags = i == 0 ? 0 : ARB_TERN_FROZEN; /* copy 0 also votes */
			/* copy 0 votes with the scores of the residual E rule (the
			 * epilogue's whole work: T_accum and per-group scores) */
			t->erule = i == 0 ? ARB_ERULE_RESIDUAL : ARB_ERULE_FROZEN; t->id = (uint32_t)i;
			if (be->tern_alloc(be, t, &err) != ARB_OK) { fprintf(stderr, "%s\n", err.msg); return 1; }
			arb_tern_init ini = { .seed = 1, .zero_frac = 1.0 / 3.0, .const_trit = 0,
					      .e_init = arb_e_from_fanin(K, 1.0 / 3.0), .accum_init = 0 };
			be->tern_init(be, t, &ini);
		}
		int64_t bbytes = N * K * 2;
		int ncub = (int)std::min<double>(8, std::max<double>(1, l2x / bbytes + 1));
		std::vector<__nv_bfloat16 *> wb(ncub);
		for (int i = 0; i < ncub; i++) {
			CKC(cudaMalloc(&wb[i], bbytes));
			fill_bf16_kernel<<<1024, 256>>>(wb[i], N * K, 7 + i, 0.02f);
		}
		int64_t Mmax = 4096;
		float *x, *y, *dy, *dx;
		__nv_bfloat16 *xb, *yb, *dyb, *dWb, *dxb;
		CKC(cudaMalloc(&x, Mmax * K * 4)); CKC(cudaMalloc(&y, Mmax * N * 4));
		CKC(cudaMalloc(&dy, Mmax * N * 4)); CKC(cudaMalloc(&dx, Mmax * K * 4));
		CKC(cudaMalloc(&xb, Mmax * K * 2)); CKC(cudaMalloc(&yb, Mmax * N * 2));
		CKC(cudaMalloc(&dyb, Mmax * N * 2)); CKC(cudaMalloc(&dWb, N * K * 2));
		CKC(cudaMalloc(&dxb, Mmax * K * 2));
		fill_kernel<<<1024, 256>>>(x, Mmax * K, 1);
		fill_kernel<<<1024, 256>>>(dy, Mmax * N, 2);
		fill_bf16_kernel<<<1024, 256>>>(xb, Mmax * K, 3, 1.0f);
		fill_bf16_kernel<<<1024, 256>>>(dyb, Mmax * N, 4, 1.0f);
		CKC(cudaDeviceSynchronize());
		float one = 1.0f, zero = 0.0f;
		unsigned *sink;
		CKC(cudaMalloc(&sink, 4));
		for (int mi = 0; mi < 6; mi++) {
			int64_t M = only_m ? only_m : Ms[mi];
			if (only_m && mi > 0) break;
			if ((small_only && M > 16) || vote_only) continue;
			double ours = time_us([&](int i) {
				be->linear_forward(be, &ws[i % nours], x, y, M, 0);
			});
			double cub = time_us([&](int i) {
				CKB(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)M, (int)K, &one,
						 wb[i % ncub], CUDA_R_16BF, (int)K, xb, CUDA_R_16BF, (int)K,
						 &zero, yb, CUDA_R_16BF, (int)N, CUBLAS_COMPUTE_32F,
						 CUBLAS_GEMM_DEFAULT));
			});
			line("fwd", M, N, K, ours, cub, M <= 16 ? 4.0 : (M == 4096 ? 0.7 : 0.0));
			if (M == 1) {
				/* line `read`: only reading the bytes every forward must
				 * read (packed trits + exponents), best of a few launch
				 * shapes: the floor under the small-batch forward */
				double best = 1e30;
				int bu = 0, bg = 0;
				for (int u : { 1, 2, 4, 8 })
					for (int gm : { 1, 2, 4, 8 }) {
						const int grid = gm * prop.multiProcessorCount;
						const double us = time_us([&](int i) {
							const arb_tern *t = &ws[i % nours];
							const uint4 *a = (const uint4 *)t->packed, *b = (const uint4 *)t->E;
							const int64_t na = t->rows * t->row_bytes / 16;
							const int64_t nb = t->rows * (int64_t)t->groups / 16;
							if (u == 1) read_kernel<1><<<grid, 256>>>(a, na, b, nb, sink);
							if (u == 2) read_kernel<2><<<grid, 256>>>(a, na, b, nb, sink);
							if (u == 4) read_kernel<4><<<grid, 256>>>(a, na, b, nb, sink);
							if (u == 8) read_kernel<8><<<grid, 256>>>(a, na, b, nb, sink);
						});
						if (us < best) { best = us; bu = u; bg = gm; }
					}
				const double mb = (double)N * (ws[0].row_bytes + ws[0].groups) / 1e6;
				line("read", M, N, K, best, cub, 0.0);
				printf("read   %.2f MB in %.2f us = %.2f TB/s (%d loads a thread, %d CTAs of 256 an SM); "
				       "4x cuBLAS = %.2f us\n", mb, best, mb / best, bu, bg,
				       cub / 4.0);
			}
			/* A/B lines, same run: the forward with one more kernel family
			 * back at its previous kernel */
			auto ab = [&](const char *name, const char *legacy) {
				legacy_push(legacy);
				double us = time_us([&](int i) {
					be->linear_forward(be, &ws[i % nours], x, y, M, 0);
				});
				legacy_pop();
				line(name, M, N, K, us, cub, 0.0);
			};
			if (M <= 4) ab("fwdpre", "sk5");   /* the dispatch before the v5 kernel */
			if (M == 1) ab("fwd4", "sk5,lut");      /* the v4 skinny kernel */
			if (M <= 16) ab("fwdold", "sk5,lut,fwd16,skinny,gemv"); /* the v2 skinny kernel */
			if (M <= 16) ab("fwd3", "sk5,lut,fwd16");   /* GEMV (M = 1) or the v3 skinny kernel */
			if (M <= 4) ab("fwdsk", "sk5,lut,fwd16,gemv");      /* the v3 skinny kernel */
			if (M == 4096) ab("fwdcp", "tma");        /* wgmma, cp.async stages */
			if (M == 4096) ab("fwdpr", "prep");       /* decode and x conversion apart */
			if (M == 4096) ab("fwdws", "wspec");      /* no producer warp in the GEMM */
			if (M == 4096) ab("fwdcl", "wcl");  /* single CTAs, not pairs sharing B */
			if (M == 256) ab("fwdns", "wsk");   /* K not split on few tiles */
		}
		for (int64_t M : { (int64_t)16, (int64_t)256, (int64_t)4096 }) {
			if (small_only || only_m) break;
			if (vote_only && M != 4096) continue;
			if (!vote_only) {
				const double ours = time_us([&](int i) {
					be->linear_backward_x(be, &ws[i % nours], dy, dx, M, 0);
				});
				const double cub = time_us([&](int i) {
					CKB(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, (int)K, (int)M, (int)N, &one,
							 wb[i % ncub], CUDA_R_16BF, (int)K, dyb, CUDA_R_16BF, (int)N,
							 &zero, dxb, CUDA_R_16BF, (int)K, CUBLAS_COMPUTE_32F,
							 CUBLAS_GEMM_DEFAULT));
				});
				line("bwd_x", M, N, K, ours, cub, 0.0);
				if (M == 256) {
					legacy_push("wsk"); /* K not split on few tiles */
					const double ns = time_us([&](int i) {
						be->linear_backward_x(be, &ws[i % nours], dy, dx, M, 0);
					});
					legacy_pop();
					line("bwdns", M, N, K, ns, cub, 0.0);
				}
				if (M == 4096) {
					/* ARB_CUDA_LEGACY=prep: decode and conversion apart */
					legacy_push("prep");
					const double pr = time_us([&](int i) {
						be->linear_backward_x(be, &ws[i % nours], dy, dx, M, 0);
					});
					legacy_pop();
					line("bwdpr", M, N, K, pr, cub, 0.0);
					legacy_push("wcl"); /* single CTAs, not pairs sharing B */
					const double c1 = time_us([&](int i) {
						be->linear_backward_x(be, &ws[i % nours], dy, dx, M, 0);
					});
					legacy_pop();
					line("bwdcl", M, N, K, c1, cub, 0.0);
				}
			}
			arb_vote v = { .kind = ARB_VOTE_SIGN, .step = 1, .sr_R = 1, .seed = 1, .t = 0 };
			double ours = time_us([&](int i) {
				be->linear_vote(be, &ws[0], x, dy, M, &v);
			}, 5);
			double cub = time_us([&](int i) {
				CKB(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_T, (int)K, (int)N, (int)M, &one,
						 xb, CUDA_R_16BF, (int)K, dyb, CUDA_R_16BF, (int)N,
						 &zero, dWb, CUDA_R_16BF, (int)K, CUBLAS_COMPUTE_32F,
						 CUBLAS_GEMM_DEFAULT));
			}, 5);
			line("vote", M, N, K, ours, cub, M == 4096 ? 0.7 : 0.0);
			/* A/B lines, same run: the vote with one family back at its
			 * previous kernel */
			auto vab = [&](const char *name, const char *legacy) {
				legacy_push(legacy);
				const double us = time_us([&](int i) {
					be->linear_vote(be, &ws[0], x, dy, M, &v);
				}, 5);
				legacy_pop();
				line(name, M, N, K, us, cub, 0.0);
			};
			if (M == 4096) {
				vab("votesc", "vsimd"); /* the per-weight epilogue loop */
				vab("votenp", "vpf");   /* the epilogue's operands not prefetched */
				vab("votebf", "vf8");   /* bf16 operands instead of fp8 */
			}
			if (M == 16) vab("voteold", "vote"); /* the bf16 tile GEMM */
		}
		for (int i = 0; i < nours; i++) be->tern_free(be, &ws[i]);
		for (int i = 0; i < ncub; i++) CKC(cudaFree(wb[i]));
		void *fr[] = { x, y, dy, dx, xb, yb, dyb, dWb, dxb, sink };
		for (void *p : fr) CKC(cudaFree(p));
	}
	cublasDestroy(h);

	if (small_only || vote_only || only_m) return 0;
	/* the step of a small model's tensors: 12 of 2048 x 512 (the moe small
	 * shape's order of size), tern_step one by one (a device wait each) vs
	 * one tern_step_many (one wait); us per step of all 12 */
	{
		enum { NT = 12 };
		arb_tern st[NT];
		arb_tern *sp[NT];
		arb_step pp[NT];
		for (int i = 0; i < NT; i++) {
			memset(&st[i], 0, sizeof st[i]);
			snprintf(st[i].name, sizeof st[i].name, "s%d", i);
			st[i].rows = 2048; st[i].cols = 512; st[i].group_size = 32;
			st[i].erule = ARB_ERULE_RESIDUAL; st[i].id = 100 + i;
			if (be->tern_alloc(be, &st[i], &err) != ARB_OK) { fprintf(stderr, "%s\n", err.msg); return 1; }
			arb_tern_init ini = { (uint64_t)i, 1.0 / 3.0, 0, -4, 4 };
			be->tern_init(be, &st[i], &ini);
			sp[i] = &st[i];
			pp[i] = (arb_step){ 8, ARB_RESET_ZERO, ARB_ORDER_E_FIRST, 64, -30, 10, 0, 7, 0 };
		}
		double one = time_us([&](int) {
			for (int i = 0; i < NT; i++) be->tern_step(be, &st[i], &pp[i], NULL);
		}, 10);
		double many = time_us([&](int) { be->tern_step_many(be, sp, pp, NT, NULL); }, 10);
		printf("step   12 x 2048x512  tern_step x12 %9.2f us  tern_step_many %9.2f us  (%.2fx)\n",
		       one, many, one / many);
		for (int i = 0; i < NT; i++) be->tern_free(be, &st[i]);
	}
	return 0;
}
