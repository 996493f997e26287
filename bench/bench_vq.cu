/*
 * bench/bench_vq.cu -- measurement harness of the vq plugin's lookups (H100).
 *
 *   1. memory of a 10M x 64 and a 5M x 64 codebook: ternary state (packed,
 *      E, T_accum) measured with cudaMemGetInfo around the backend's
 *      tern_alloc + packed-first tern_init, then the candidate index (device
 *      head/next) on top; host mirror bytes (next, head, snap) reported too.
 *   2. recall@1 of the candidate lookup against the exact lookup on a 1M-row
 *      codebook, for queries near codebook rows (noise 0.3 and 0.5 of the
 *      unit trit scale) and for random queries; queries/s of both.
 *   3. 10M x 64: candidate lookup queries/s against a brute-force similarity
 *      search with cuBLAS (bf16 codebook decoded once, bf16 GEMM with fp32
 *      accumulation, argmax of dot - |c|^2/2), same codebook, same run;
 *      plus recall of both against the exact ternary lookup on a subset.
 *
 * The lookup kernels are vq.cu's (included here); the index is built on the
 * host exactly as vq.c builds it (same coordinate draw, same key), without
 * the plugin's ABI wrapper. Usage: bench_vq [scale] (scale 1 = full sizes,
 * e.g. 0.01 for a smoke run).
 */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>
#include "arb/ops.h"
#include "../plugins/vq/vq.cu"

#define CKB(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
	fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, \
		cudaGetErrorString(e_)); exit(1); } } while (0)

static const int DIM = 64, GS = 32, TABLES = 8, BITS = 16, PROBES = 4;
static const uint64_t SEED = 1234;
/* rows scored per probed bucket (the plugin's max_scan; 0 = all) */
static int64_t max_scan = 0;
static const int64_t SCANS[] = { 0, 4096, 1024, 256 };

static size_t dev_used(void)
{
	size_t fr = 0, tot = 0;
	cudaDeviceSynchronize();
	cudaMemGetInfo(&fr, &tot);
	return tot - fr;
}

struct book {
	arb_tern t;
	std::vector<int32_t> coord, head, next;
	std::vector<uint64_t> snap;
	int32_t *coord_d = nullptr, *head_d = nullptr, *next_d = nullptr;
	float *tau_d = nullptr;
	size_t state_bytes = 0, index_dev_bytes = 0, index_host_bytes = 0;
};

static uint64_t snap_of(const uint8_t *row)
{
	uint64_t s = 0;
	for (int c = 0; c < DIM; c += 5) {
		int v = row[c / 5];
		for (int j = 0; j < 5 && c + j < DIM; j++) {
			if (v % 3 == 2) s |= 1ull << (c + j);
			v /= 3;
		}
	}
	return s;
}

static void make_book(arb_backend *be, book &b, int64_t rows, int with_index)
{
	arb_error err;
	memset(&err, 0, sizeof err);
	memset(&b.t, 0, sizeof b.t);
	snprintf(b.t.name, sizeof b.t.name, "bench.codebook");
	b.t.rows = rows;
	b.t.cols = DIM;
	b.t.group_size = GS;
	b.t.groups = arb_groups(DIM, GS);
	b.t.row_bytes = arb_row_bytes(DIM);
	b.t.flags = ARB_TERN_DEVICE | ARB_TERN_SPARSE;
	b.t.id = 2;
	b.t.erule = ARB_ERULE_FROZEN;
	size_t u0 = dev_used();
	if (be->tern_alloc(be, &b.t, &err)) {
		fprintf(stderr, "tern_alloc: %s\n", err.msg);
		exit(1);
	}
	arb_tern_init ini;
	memset(&ini, 0, sizeof ini);
	ini.seed = SEED;
	ini.zero_frac = 1.0 / 3.0;
	ini.e_init = 0;
	ini.accum_init = 2;
	be->tern_init(be, &b.t, &ini);
	size_t u1 = dev_used();
	b.state_bytes = u1 - u0;
	if (!with_index) return;
	/* index: same coordinates and keys as vq.c */
	b.coord.resize((size_t)TABLES * BITS);
	for (int t = 0; t < TABLES; t++) {
		int perm[64];
		for (int i = 0; i < 64; i++) perm[i] = i;
		uint64_t s = arb_rng_stream(b.t.id, (uint64_t)t, ARB_RNG_PLUGIN);
		for (int k = 0; k < BITS; k++) {
			int j = k + (int)(arb_rng_u32(SEED, s, (uint64_t)k) % (uint32_t)(64 - k));
			int x = perm[k]; perm[k] = perm[j]; perm[j] = x;
			b.coord[t * BITS + k] = perm[k];
		}
	}
	int64_t H = (int64_t)TABLES << BITS;
	b.head.assign((size_t)H, -1);
	b.next.resize((size_t)(TABLES * rows));
	b.snap.resize((size_t)rows);
	const int64_t chunk = 65536, rb = b.t.row_bytes;
	std::vector<uint8_t> buf((size_t)(chunk * rb));
	for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
		int64_t n = rows - r0 < chunk ? rows - r0 : chunk;
		CKB(cudaMemcpy(buf.data(), b.t.packed + r0 * rb, (size_t)(n * rb),
			       cudaMemcpyDeviceToHost));
		for (int64_t i = 0; i < n; i++) {
			uint64_t s = snap_of(buf.data() + i * rb);
			b.snap[r0 + i] = s;
			for (int t = 0; t < TABLES; t++) {
				uint32_t k = 0;
				for (int q = 0; q < BITS; q++)
					k |= (uint32_t)((s >> b.coord[t * BITS + q]) & 1u) << q;
				int64_t hb = ((int64_t)t << BITS) | k;
				b.next[(size_t)(t * rows + r0 + i)] = b.head[hb];
				b.head[hb] = (int32_t)(r0 + i);
			}
		}
	}
	size_t u2 = dev_used();
	CKB(cudaMalloc(&b.coord_d, b.coord.size() * 4));
	CKB(cudaMalloc(&b.head_d, b.head.size() * 4));
	CKB(cudaMalloc(&b.next_d, b.next.size() * 4));
	CKB(cudaMalloc(&b.tau_d, DIM * 4));
	CKB(cudaMemcpy(b.coord_d, b.coord.data(), b.coord.size() * 4, cudaMemcpyHostToDevice));
	CKB(cudaMemcpy(b.head_d, b.head.data(), b.head.size() * 4, cudaMemcpyHostToDevice));
	CKB(cudaMemcpy(b.next_d, b.next.data(), b.next.size() * 4, cudaMemcpyHostToDevice));
	std::vector<float> tau(DIM, 0.5f);
	CKB(cudaMemcpy(b.tau_d, tau.data(), DIM * 4, cudaMemcpyHostToDevice));
	b.index_dev_bytes = dev_used() - u2;
	b.index_host_bytes = (b.head.size() + b.next.size()) * 4 + b.snap.size() * 8;
}

static void free_book(arb_backend *be, book &b)
{
	be->tern_free(be, &b.t);
	cudaFree(b.coord_d); cudaFree(b.head_d); cudaFree(b.next_d); cudaFree(b.tau_d);
	b.coord_d = b.head_d = b.next_d = nullptr;
	b.tau_d = nullptr;
	std::vector<int32_t>().swap(b.next);
	std::vector<uint64_t>().swap(b.snap);
}

static vq_tab_view view_of(const arb_tern &t)
{
	vq_tab_view v;
	v.packed = t.packed; v.E = t.E; v.corr = nullptr; v.rows = t.rows;
	v.cols = (int)t.cols; v.row_bytes = (int)t.row_bytes; v.gs = t.group_size;
	v.groups = t.groups; v.bigint_alpha = 0.0f; v.steps = 0;
	return v;
}

static uint64_t mixh(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}
static float unif(uint64_t k) { return (float)((mixh(k) >> 40) / 16777216.0) * 2.0f - 1.0f; }

/* queries: decoded row + noise * U(-1,1) (noise < 0: random N(0,1)-ish z) */
static void make_queries(const book &b, int64_t nq, float noise, uint64_t salt,
			 std::vector<float> &z)
{
	z.resize((size_t)(nq * DIM));
	const int64_t rb = b.t.row_bytes;
	std::vector<uint8_t> row((size_t)rb);
	for (int64_t i = 0; i < nq; i++) {
		if (noise < 0) {
			for (int d = 0; d < DIM; d++) {
				float s = 0;
				for (int k = 0; k < 3; k++) s += unif(salt * 7777 + i * 1000 + d * 3 + k);
				z[i * DIM + d] = s;
			}
			continue;
		}
		int64_t r = (int64_t)(mixh(salt + (uint64_t)i) % (uint64_t)b.t.rows);
		CKB(cudaMemcpy(row.data(), b.t.packed + r * rb, (size_t)rb, cudaMemcpyDeviceToHost));
		for (int d = 0; d < DIM; d++) {
			int v = row[d / 5];
			for (int j = 0; j < d % 5; j++) v /= 3;
			float w = (float)(v % 3 - 1); /* E = 0: scale 1 */
			z[i * DIM + d] = w + noise * unif(salt * 31 + i * 64 + d);
		}
	}
}

struct lk {
	float *z = nullptr;
	int32_t *codes = nullptr, *miss = nullptr, *miss_n = nullptr;
	unsigned long long *ws = nullptr;
	int64_t n = 0;
};

static void lk_alloc(lk &l, int64_t n)
{
	l.n = n;
	CKB(cudaMalloc(&l.z, (size_t)n * DIM * 4));
	CKB(cudaMalloc(&l.codes, (size_t)n * 4));
	CKB(cudaMalloc(&l.miss, (size_t)n * 4));
	CKB(cudaMalloc(&l.miss_n, 4));
	CKB(cudaMalloc(&l.ws, (size_t)n * 8));
}
static void lk_free(lk &l)
{
	cudaFree(l.z); cudaFree(l.codes); cudaFree(l.miss); cudaFree(l.miss_n); cudaFree(l.ws);
}

/* candidate lookup + exact fallback for misses, as vq.c does; returns ms */
static double run_cand(const book &b, lk &l, int64_t n, int *misses)
{
	vq_tab_view tv = view_of(b.t);
	cudaEvent_t e0, e1;
	cudaEventCreate(&e0); cudaEventCreate(&e1);
	cudaEventRecord(e0);
	if (vq_cuda_candidates(&tv, l.z, n, b.tau_d, b.coord_d, b.head_d, b.next_d,
			       TABLES, BITS, PROBES, max_scan, l.codes, l.miss, l.miss_n, NULL)) {
		fprintf(stderr, "candidate kernel failed\n");
		exit(1);
	}
	int32_t nm = 0;
	CKB(cudaMemcpy(&nm, l.miss_n, 4, cudaMemcpyDeviceToHost));
	if (nm > 0) vq_cuda_exact(&tv, l.z, nm, l.miss, l.codes, l.ws);
	cudaEventRecord(e1);
	CKB(cudaEventSynchronize(e1));
	float ms = 0;
	cudaEventElapsedTime(&ms, e0, e1);
	if (misses) *misses = nm;
	return ms;
}

static double run_exact(const book &b, lk &l, int64_t n)
{
	vq_tab_view tv = view_of(b.t);
	cudaEvent_t e0, e1;
	cudaEventCreate(&e0); cudaEventCreate(&e1);
	cudaEventRecord(e0);
	if (vq_cuda_exact(&tv, l.z, n, nullptr, l.codes, l.ws)) {
		fprintf(stderr, "exact kernel failed\n");
		exit(1);
	}
	cudaEventRecord(e1);
	CKB(cudaEventSynchronize(e1));
	float ms = 0;
	cudaEventElapsedTime(&ms, e0, e1);
	return ms;
}

/* ---- cuBLAS bf16 brute force ---- */
__global__ void k_decode_bf16(const uint8_t *packed, const int8_t *E, int64_t rows,
			      int rb, int groups, __nv_bfloat16 *out, float *half)
{
	int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (r >= rows) return;
	float nn = 0;
	for (int d = 0; d < DIM; d++) {
		int v = packed[r * rb + d / 5];
		for (int j = 0; j < d % 5; j++) v /= 3;
		float w = (float)(v % 3 - 1) * arb_exp2i(E[r * groups + d / GS]);
		out[r * DIM + d] = __float2bfloat16(w);
		nn += w * w;
	}
	half[r] = 0.5f * nn;
}

__global__ void k_to_bf16(const float *z, int64_t n, __nv_bfloat16 *out)
{
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n) out[i] = __float2bfloat16(z[i]);
}

/* S column-major [m x nq]: best[q] = max over rows of (S - half) */
__global__ void k_argmax(const float *S, int64_t m, int64_t r0, const float *half,
			 unsigned long long *best)
{
	int q = blockIdx.y;
	unsigned long long k = 0;
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < m;
	     i += (int64_t)gridDim.x * blockDim.x) {
		float s = S[(int64_t)q * m + i] - half[r0 + i];
		unsigned long long kk = vq_pack(s + 0.0f, (int32_t)(r0 + i));
		k = kk > k ? kk : k;
	}
	k = warp_max_u64(k);
	if ((threadIdx.x & 31) == 0) atomicMax(&best[q], k);
}

struct blas {
	cublasHandle_t h;
	__nv_bfloat16 *cb = nullptr, *zb = nullptr;
	float *half = nullptr, *S = nullptr;
	int64_t chunk = 0;
};

static double run_blas(blas &B, const book &b, lk &l, int64_t nq)
{
	const int64_t rows = b.t.rows;
	cudaEvent_t e0, e1;
	cudaEventCreate(&e0); cudaEventCreate(&e1);
	cudaEventRecord(e0);
	k_to_bf16<<<cdivu(nq * DIM, 256), 256>>>(l.z, nq * DIM, B.zb);
	cudaMemsetAsync(l.ws, 0, (size_t)nq * 8, 0);
	const float one = 1.0f, zero = 0.0f;
	for (int64_t r0 = 0; r0 < rows; r0 += B.chunk) {
		int64_t m = rows - r0 < B.chunk ? rows - r0 : B.chunk;
		cublasStatus_t st = cublasGemmEx(B.h, CUBLAS_OP_T, CUBLAS_OP_N, (int)m,
			(int)nq, DIM, &one, B.cb + r0 * DIM, CUDA_R_16BF, DIM, B.zb,
			CUDA_R_16BF, DIM, &zero, B.S, CUDA_R_32F, (int)m,
			CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
		if (st != CUBLAS_STATUS_SUCCESS) {
			fprintf(stderr, "cublasGemmEx failed: %d\n", (int)st);
			exit(1);
		}
		dim3 g(64, (unsigned)nq);
		k_argmax<<<g, 256>>>(B.S, m, r0, B.half, l.ws);
	}
	k_exact_final<<<cdivu(nq, 256), 256>>>(l.ws, nq, nullptr, l.codes);
	cudaEventRecord(e1);
	CKB(cudaEventSynchronize(e1));
	float ms = 0;
	cudaEventElapsedTime(&ms, e0, e1);
	return ms;
}

static std::vector<int32_t> codes_of(const lk &l, int64_t n)
{
	std::vector<int32_t> c((size_t)n);
	CKB(cudaMemcpy(c.data(), l.codes, (size_t)n * 4, cudaMemcpyDeviceToHost));
	return c;
}
static double agree(const std::vector<int32_t> &a, const std::vector<int32_t> &b)
{
	int64_t h = 0;
	for (size_t i = 0; i < a.size(); i++) h += a[i] == b[i];
	return (double)h / (double)a.size();
}

int main(int argc, char **argv)
{
	double scale = argc > 1 ? atof(argv[1]) : 1.0;
	arb_error err;
	memset(&err, 0, sizeof err);
	arb_backend *be = arb_backend_cuda(&err);
	if (!be) {
		fprintf(stderr, "bench_vq: no CUDA backend: %s\n", err.msg);
		return 1;
	}
	cudaFree(0);
	const int64_t R10 = (int64_t)(10000000 * scale), R5 = (int64_t)(5000000 * scale);
	const int64_t R1 = (int64_t)(1000000 * scale);
	printf("bench_vq: dim %d, group %d, tables %d, bits %d, probes %d\n", DIM, GS,
	       TABLES, BITS, PROBES);

	/* 1. memory: 5M then 10M (10M kept for part 3) */
	{
		book b5;
		make_book(be, b5, R5, 1);
		printf("memory %lld x %d: ternary state %.1f MB (packed+E+T_accum), "
		       "index device %.1f MB, index host mirror %.1f MB\n",
		       (long long)R5, DIM, b5.state_bytes / 1e6, b5.index_dev_bytes / 1e6,
		       b5.index_host_bytes / 1e6);
		free_book(be, b5);
	}
	/* 2. recall on 1M */
	{
		book b1;
		make_book(be, b1, R1, 1);
		const int64_t nq = 4096;
		lk l;
		lk_alloc(l, nq);
		const float noises[3] = { 0.3f, 0.5f, -1.0f };
		for (int k = 0; k < 3; k++) {
			std::vector<float> z;
			make_queries(b1, nq, noises[k], 17 + k, z);
			CKB(cudaMemcpy(l.z, z.data(), z.size() * 4, cudaMemcpyHostToDevice));
			run_exact(b1, l, nq);
			double me = run_exact(b1, l, nq);
			std::vector<int32_t> ce = codes_of(l, nq);
			for (int64_t ms : SCANS) {
			max_scan = ms;
			run_cand(b1, l, nq, nullptr); /* warm-up */
			int misses = 0;
			double mc = run_cand(b1, l, nq, &misses);
			std::vector<int32_t> cc = codes_of(l, nq);
			run_cand(b1, l, nq, nullptr);
			std::vector<int32_t> c2 = codes_of(l, nq);
			printf("%lld rows, %s queries (%lld), max_scan %lld: recall@1 %.4f, "
			       "deterministic %s, misses->exact %d; candidate %.0f q/s, "
			       "exact %.0f q/s\n",
			       (long long)R1,
			       noises[k] < 0 ? "random" : noises[k] < 0.4f ? "near (0.3)" : "near (0.5)",
			       (long long)nq, (long long)ms, agree(cc, ce),
			       agree(cc, c2) == 1.0 ? "yes" : "NO",
			       misses, nq / (mc / 1e3), nq / (me / 1e3));
			}
		}
		max_scan = 0;
		lk_free(l);
		free_book(be, b1);
	}
	/* 3. 10M: candidate vs cuBLAS bf16 brute force */
	{
		book b;
		make_book(be, b, R10, 1);
		printf("memory %lld x %d: ternary state %.1f MB (packed+E+T_accum), "
		       "index device %.1f MB, index host mirror %.1f MB\n",
		       (long long)R10, DIM, b.state_bytes / 1e6, b.index_dev_bytes / 1e6,
		       b.index_host_bytes / 1e6);
		const int64_t nq = 8192;
		lk l;
		lk_alloc(l, nq);
		blas B;
		cublasCreate(&B.h);
		B.chunk = 65536;
		CKB(cudaMalloc(&B.cb, (size_t)R10 * DIM * 2));
		CKB(cudaMalloc(&B.half, (size_t)R10 * 4));
		CKB(cudaMalloc(&B.zb, (size_t)nq * DIM * 2));
		CKB(cudaMalloc(&B.S, (size_t)B.chunk * nq * 4));
		k_decode_bf16<<<cdivu(R10, 256), 256>>>(b.t.packed, b.t.E, R10,
			(int)b.t.row_bytes, b.t.groups, B.cb, B.half);
		CKB(cudaDeviceSynchronize());
		for (int k = 0; k < 2; k++) {
			std::vector<float> z;
			make_queries(b, nq, k == 0 ? 0.3f : -1.0f, 91 + k, z);
			CKB(cudaMemcpy(l.z, z.data(), z.size() * 4, cudaMemcpyHostToDevice));
			for (int64_t ms : SCANS) {
			if (ms == 0) continue;
			max_scan = ms;
			run_cand(b, l, nq, nullptr);
			int mm = 0;
			double mcs = run_cand(b, l, nq, &mm);
			printf("%lld rows, %s queries, max_scan %lld: candidate %.0f q/s "
			       "(misses %d)\n", (long long)R10,
			       k == 0 ? "near (0.3)" : "random", (long long)ms,
			       nq / (mcs / 1e3), mm);
			}
			max_scan = 0;
			run_cand(b, l, nq, nullptr);
			int misses = 0;
			double mc = run_cand(b, l, nq, &misses);
			std::vector<int32_t> cc = codes_of(l, nq);
			run_blas(B, b, l, nq);
			double mb = run_blas(B, b, l, nq);
			std::vector<int32_t> cb = codes_of(l, nq);
			/* exact ternary on a subset (full-table scan per query) */
			const int64_t ns = 256;
			double me = run_exact(b, l, ns);
			std::vector<int32_t> ce = codes_of(l, ns);
			std::vector<int32_t> cc_s(cc.begin(), cc.begin() + ns),
				cb_s(cb.begin(), cb.begin() + ns);
			printf("%lld rows, %s queries: candidate %.0f q/s (%.2f ms / %lld, misses %d), "
			       "cuBLAS bf16 brute force %.0f q/s (%.2f ms), exact ternary %.0f q/s; "
			       "recall@1 vs exact (first %lld): candidate %.4f, bf16 %.4f\n",
			       (long long)R10, k == 0 ? "near (0.3)" : "random", nq / (mc / 1e3), mc,
			       (long long)nq, misses, nq / (mb / 1e3), mb, ns / (me / 1e3),
			       (long long)ns, agree(cc_s, ce), agree(cb_s, ce));
		}
		cudaFree(B.cb); cudaFree(B.half); cudaFree(B.zb); cudaFree(B.S);
		cublasDestroy(B.h);
		lk_free(l);
		free_book(be, b);
	}
	return 0;
}
