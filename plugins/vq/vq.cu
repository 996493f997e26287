/*
 * plugins/vq/vq.cu -- CUDA kernels of the vq plugin (launchers declared in
 * vq_cuda.h, called by vq.c when the backend is a device backend).
 *
 * Scores follow vq.c's vq_score exactly, operation by operation, with
 * explicit round-to-nearest intrinsics (no FMA contraction), so that with
 * the same z the GPU picks the same row as the CPU reference:
 *   per group: dg = trit-signed sum of z over the group (ascending d),
 *   dot += s * dg,  nn += cnt * (s * s),  score = (dot - 0.5 * nn) + 0.
 * Best row: largest score, ties -> smallest row id, NaN scores skipped.
 * A (score, row) pair is packed into one u64 whose unsigned order is that
 * order, so a max-reduction (shuffles, atomicMax) is order-independent.
 *
 * Nothing here is exported: the plugin is linked with hidden visibility and
 * vq.c's descriptor is the only public symbol.
 */
#include <cuda_runtime.h>
#include <stdint.h>
#include "arb/tensor.h"
#include "vq_cuda.h"

#define VQ_QT 16          /* queries per tile of the exact kernel */
#define VQ_WARPS 8        /* warps per block of the candidate kernel */
#define VQ_MAXBITS 24

static inline unsigned int cdivu(int64_t a, int64_t b)
{
	return (unsigned int)((a + b - 1) / b);
}

__device__ __forceinline__ unsigned long long vq_pack(float s, int32_t r)
{
	uint32_t u = __float_as_uint(s);
	u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
	return ((unsigned long long)u << 32) | (unsigned long long)(0xFFFFFFFFu - (uint32_t)r);
}

__device__ __forceinline__ float vq_dscale(const vq_tab_view &tv, int64_t r, int g)
{
	int64_t k = r * tv.groups + g;
	if (tv.corr) {
		double x = (double)tv.E[k] + (double)tv.bigint_alpha * (double)tv.corr[k] /
			   ((double)tv.steps * (double)tv.gs);
		return (float)exp2(x);
	}
	return arb_exp2i(tv.E[k]);
}

/* score of row r against z (z may live in shared memory) */
__device__ float vq_dscore(const vq_tab_view &tv, int64_t r, const float *z)
{
	const uint8_t *row = tv.packed + r * tv.row_bytes;
	float dot = 0.0f, nn = 0.0f, dg = 0.0f;
	int cnt = 0, g = 0, gend = tv.gs < tv.cols ? tv.gs : tv.cols;
	for (int b = 0; b < tv.row_bytes; b++) {
		int v = row[b];
		for (int j = 0; j < 5; j++) {
			int d = b * 5 + j;
			if (d >= tv.cols) break;
			int t = v % 3 - 1;
			v /= 3;
			if (t > 0) dg = __fadd_rn(dg, z[d]);
			else if (t < 0) dg = __fsub_rn(dg, z[d]);
			cnt += t != 0;
			if (d + 1 == gend) {
				float s = vq_dscale(tv, r, g);
				dot = __fadd_rn(dot, __fmul_rn(s, dg));
				nn = __fadd_rn(nn, __fmul_rn((float)cnt, __fmul_rn(s, s)));
				dg = 0.0f;
				cnt = 0;
				g++;
				gend = gend + tv.gs < tv.cols ? gend + tv.gs : tv.cols;
			}
		}
	}
	return __fadd_rn(__fsub_rn(dot, __fmul_rn(0.5f, nn)), 0.0f);
}

__device__ __forceinline__ unsigned long long warp_max_u64(unsigned long long k)
{
	for (int o = 16; o > 0; o >>= 1) {
		unsigned long long x = __shfl_xor_sync(0xffffffffu, k, o);
		k = x > k ? x : k;
	}
	return k;
}

/* ---------------------------------------------------------------------------
 * exact lookup: block = 256 threads (one row each per pass), a tile of
 * VQ_QT queries staged in shared memory; per query the warp max goes to
 * ws[i] by atomicMax. Per thread: VQ_QT running group sums. */
__global__ void k_exact(vq_tab_view tv, const float *__restrict__ z, int64_t n,
			const int32_t *__restrict__ qlist,
			unsigned long long *__restrict__ ws)
{
	extern __shared__ float zs[];
	const int cols = tv.cols;
	const int64_t i0 = (int64_t)blockIdx.y * VQ_QT;
	const int nq = n - i0 < VQ_QT ? (int)(n - i0) : VQ_QT;
	for (int k = threadIdx.x; k < VQ_QT * cols; k += blockDim.x) {
		int qi = k / cols, d = k % cols;
		float v = 0.0f;
		if (qi < nq) {
			int64_t q = qlist ? qlist[i0 + qi] : i0 + qi;
			v = z[q * cols + d];
		}
		zs[k] = v;
	}
	__syncthreads();
	const int64_t stride = (int64_t)gridDim.x * blockDim.x;
	const int64_t rows_pad = ((tv.rows + 31) / 32) * 32;
	for (int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; r < rows_pad;
	     r += stride) {
		const int valid = r < tv.rows;
		float dot[VQ_QT], dg[VQ_QT];
		float nn = 0.0f;
#pragma unroll
		for (int q = 0; q < VQ_QT; q++) { dot[q] = 0.0f; dg[q] = 0.0f; }
		if (valid) {
			const uint8_t *row = tv.packed + r * tv.row_bytes;
			int cnt = 0, g = 0, gend = tv.gs < cols ? tv.gs : cols;
			for (int b = 0; b < tv.row_bytes; b++) {
				int v = row[b];
				for (int j = 0; j < 5; j++) {
					int d = b * 5 + j;
					if (d >= cols) break;
					int t = v % 3 - 1;
					v /= 3;
					if (t > 0) {
#pragma unroll
						for (int q = 0; q < VQ_QT; q++)
							dg[q] = __fadd_rn(dg[q], zs[q * cols + d]);
					} else if (t < 0) {
#pragma unroll
						for (int q = 0; q < VQ_QT; q++)
							dg[q] = __fsub_rn(dg[q], zs[q * cols + d]);
					}
					cnt += t != 0;
					if (d + 1 == gend) {
						float s = vq_dscale(tv, r, g);
#pragma unroll
						for (int q = 0; q < VQ_QT; q++) {
							dot[q] = __fadd_rn(dot[q], __fmul_rn(s, dg[q]));
							dg[q] = 0.0f;
						}
						nn = __fadd_rn(nn, __fmul_rn((float)cnt, __fmul_rn(s, s)));
						cnt = 0;
						g++;
						gend = gend + tv.gs < cols ? gend + tv.gs : cols;
					}
				}
			}
		}
		const float half = __fmul_rn(0.5f, nn);
#pragma unroll
		for (int q = 0; q < VQ_QT; q++) {
			if (q >= nq) break; /* uniform over the block */
			unsigned long long key = 0;
			if (valid) {
				float s = __fadd_rn(__fsub_rn(dot[q], half), 0.0f);
				if (s == s) key = vq_pack(s, (int32_t)r);
			}
			key = warp_max_u64(key);
			if ((threadIdx.x & 31) == 0 && key) atomicMax(&ws[i0 + q], key);
		}
	}
}

__global__ void k_exact_final(const unsigned long long *__restrict__ ws, int64_t n,
			      const int32_t *__restrict__ qlist, int32_t *codes)
{
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n) return;
	unsigned long long k = ws[i];
	int32_t r = k ? (int32_t)(0xFFFFFFFFu - (uint32_t)(k & 0xFFFFFFFFull)) : 0;
	codes[qlist ? qlist[i] : i] = r;
}

extern "C" int vq_cuda_exact(const vq_tab_view *tv, const float *z, int64_t n,
			     const int32_t *qlist, int32_t *codes,
			     unsigned long long *ws)
{
	if (n <= 0) return 0;
	cudaMemsetAsync(ws, 0, (size_t)n * sizeof *ws, 0);
	int dev = 0, sms = 132;
	cudaGetDevice(&dev);
	cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
	int64_t tiles = (n + VQ_QT - 1) / VQ_QT;
	/* enough row blocks to fill the GPU about 4 times over */
	int64_t want = (int64_t)sms * 8 / (tiles < 1 ? 1 : tiles);
	int64_t rb = cdivu(tv->rows, 256);
	if (want < 1) want = 1;
	if (want > rb) want = rb;
	size_t shm = (size_t)VQ_QT * tv->cols * sizeof(float);
	if (shm > 48 * 1024)
		cudaFuncSetAttribute(k_exact, cudaFuncAttributeMaxDynamicSharedMemorySize,
				     (int)shm);
	/* grid.y is limited to 65535: launch tile ranges */
	for (int64_t t0 = 0; t0 < tiles; t0 += 65535) {
		int64_t nt = tiles - t0 < 65535 ? tiles - t0 : 65535;
		int64_t q0 = t0 * VQ_QT;
		int64_t nq = n - q0 < nt * VQ_QT ? n - q0 : nt * VQ_QT;
		dim3 grid((unsigned)want, (unsigned)nt);
		k_exact<<<grid, 256, shm>>>(*tv, qlist ? z : z + q0 * tv->cols, nq,
					    qlist ? qlist + q0 : NULL, ws + q0);
	}
	k_exact_final<<<cdivu(n, 256), 256>>>(ws, n, qlist, codes);
	return (int)cudaGetLastError();
}

/* ---------------------------------------------------------------------------
 * candidate lookup: one warp per query; lane slots enumerate
 * (table, probe) pairs; each walks its bucket list and scores rows. */
__global__ void k_cand(vq_tab_view tv, const float *__restrict__ z, int64_t n,
		       const float *__restrict__ tau, const int32_t *__restrict__ coord,
		       const int32_t *__restrict__ head, const int32_t *__restrict__ next,
		       int tables, int bits, int probes, int L, int64_t max_scan,
		       int32_t *codes,
		       int32_t *miss, int32_t *miss_n, unsigned long long *scanned)
{
	extern __shared__ float zsh[];
	const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
	const int64_t q = (int64_t)blockIdx.x * VQ_WARPS + warp;
	float *zs = zsh + warp * tv.cols;
	if (q < n)
		for (int d = lane; d < tv.cols; d += 32) zs[d] = z[q * tv.cols + d];
	__syncwarp();
	if (q >= n) return;
	const int np = probes + 1 < (1 << L) ? probes + 1 : (1 << L);
	unsigned long long best = 0, nscan = 0;
	int found = 0;
	for (int s = lane; s < tables * np; s += 32) {
		const int t = s / np, p = s % np;
		const int32_t *cd = coord + (int64_t)t * bits;
		float conf[VQ_MAXBITS];
		uint32_t key = 0;
		for (int b = 0; b < bits; b++) {
			int j = cd[b];
			key |= (uint32_t)(zs[j] > tau[j]) << b;
			conf[b] = fabsf(__fsub_rn(zs[j], tau[j]));
		}
		uint32_t used = 0, mask = 0;
		for (int i = 0; i < L; i++) {
			int bb = -1;
			for (int b = 0; b < bits; b++) {
				if ((used >> b) & 1u) continue;
				if (bb < 0 || conf[b] < conf[bb]) bb = b;
			}
			used |= 1u << bb;
			if ((p >> i) & 1) mask |= 1u << bb;
		}
		const int64_t hb = ((int64_t)t << bits) | (key ^ mask);
		const int64_t base = (int64_t)t * tv.rows;
		int64_t walked = 0;
		for (int32_t r = head[hb]; r >= 0 && (!max_scan || walked < max_scan);
		     r = next[base + r], walked++) {
			float sc = vq_dscore(tv, r, zs);
			found = 1;
			nscan++;
			if (sc == sc) {
				unsigned long long k = vq_pack(sc, r);
				best = k > best ? k : best;
			}
		}
	}
	best = warp_max_u64(best);
	found = __any_sync(0xffffffffu, found);
	if (scanned) {
		for (int o = 16; o > 0; o >>= 1)
			nscan += __shfl_xor_sync(0xffffffffu, nscan, o);
		if (lane == 0) atomicAdd(scanned, nscan);
	}
	if (lane == 0) {
		if (found && best) {
			codes[q] = (int32_t)(0xFFFFFFFFu - (uint32_t)(best & 0xFFFFFFFFull));
		} else {
			codes[q] = -1;
			miss[atomicAdd(miss_n, 1)] = (int32_t)q;
		}
	}
}

extern "C" int vq_cuda_candidates(const vq_tab_view *tv, const float *z,
				  int64_t n, const float *tau, const int32_t *coord,
				  const int32_t *head, const int32_t *next,
				  int tables, int bits, int probes, int64_t max_scan,
				  int32_t *codes, int32_t *miss, int32_t *miss_n,
				  unsigned long long *scanned)
{
	cudaMemsetAsync(miss_n, 0, sizeof *miss_n, 0);
	if (n <= 0) return (int)cudaGetLastError();
	int L = 0;
	while (L < bits && (1 << L) <= probes) L++;
	size_t shm = (size_t)VQ_WARPS * tv->cols * sizeof(float);
	if (shm > 48 * 1024)
		cudaFuncSetAttribute(k_cand, cudaFuncAttributeMaxDynamicSharedMemorySize,
				     (int)shm);
	k_cand<<<cdivu(n, VQ_WARPS), VQ_WARPS * 32, shm>>>(
		*tv, z, n, tau, coord, head, next, tables, bits, probes, L, max_scan,
		codes,
		miss, miss_n, scanned);
	return (int)cudaGetLastError();
}

/* ---------------------------------------------------------------------------
 * query normalization: one thread per row, the operations of vq.c's
 * vq_norm_rows in the same order with round-to-nearest intrinsics (float
 * difference, double sum of squares over ascending d, double divide and
 * square root, one rounding to float), so zn is bit-identical to the CPU. */
__global__ void k_norm(const float *__restrict__ z, const float *__restrict__ mu,
		       int64_t M, int dim, float s, float *__restrict__ u,
		       float *__restrict__ rstd, float *__restrict__ zn)
{
	int64_t m = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (m >= M) return;
	const float *zr = z + m * dim;
	float *ur = u + m * dim;
	double ss = 0.0;
	for (int d = 0; d < dim; d++) {
		float v = __fsub_rn(zr[d], mu[d]);
		ur[d] = v;
		ss = __dadd_rn(ss, __dmul_rn((double)v, (double)v));
	}
	double t = __dadd_rn(__ddiv_rn(ss, (double)dim), 1e-5);
	float r = (float)__ddiv_rn(1.0, __dsqrt_rn(t));
	rstd[m] = r;
	for (int d = 0; d < dim; d++)
		zn[m * dim + d] = __fmul_rn(__fmul_rn(ur[d], r), s);
}

extern "C" int vq_cuda_norm(const float *z, const float *mu, int64_t M, int dim,
			    float s, float *u, float *rstd, float *zn)
{
	if (M > 0) k_norm<<<cdivu(M, 128), 128>>>(z, mu, M, dim, s, u, rstd, zn);
	return (int)cudaGetLastError();
}

/* ---------------------------------------------------------------------------
 * usage counts: saturating int16 increment through a 32-bit CAS on the
 * aligned word that holds the count */
__global__ void k_usage(int16_t *usage, const int32_t *__restrict__ codes,
			int64_t n, int64_t rows, int32_t *sat)
{
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n) return;
	int32_t r = codes[i];
	if (r < 0 || r >= rows) return;
	uintptr_t a = (uintptr_t)(usage + r);
	unsigned int *w = (unsigned int *)(a & ~(uintptr_t)3);
	unsigned int sh = (unsigned int)(a & 2) * 8u;
	unsigned int old = *(volatile unsigned int *)w, assumed;
	do {
		assumed = old;
		int cur = (int16_t)((assumed >> sh) & 0xFFFFu);
		if (cur >= 32767) { *sat = 1; return; }
		unsigned int nv = (assumed & ~(0xFFFFu << sh)) |
				  ((unsigned int)(uint16_t)(cur + 1) << sh);
		old = atomicCAS(w, assumed, nv);
		if (old == assumed && cur + 1 == 32767) *sat = 1;
	} while (old != assumed);
}

extern "C" int vq_cuda_usage(int16_t *usage, const int32_t *codes, int64_t n,
			     int64_t rows, int32_t *sat)
{
	if (n > 0) k_usage<<<cdivu(n, 256), 256>>>(usage, codes, n, rows, sat);
	return (int)cudaGetLastError();
}

__global__ void k_halve(int16_t *usage, int64_t rows)
{
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < rows;
	     i += (int64_t)gridDim.x * blockDim.x)
		usage[i] = (int16_t)(usage[i] >> 1);
}

extern "C" int vq_cuda_halve(int16_t *usage, int64_t rows)
{
	unsigned int g = cdivu(rows, 256);
	if (g > 65535u * 4u) g = 65535u * 4u;
	if (rows > 0) k_halve<<<g, 256>>>(usage, rows);
	return (int)cudaGetLastError();
}

__global__ void k_gather(const uint8_t *__restrict__ packed, int64_t rb,
			 const int32_t *__restrict__ rows, int64_t n, uint8_t *out)
{
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n * rb) return;
	int64_t k = i / rb, b = i % rb;
	out[i] = packed[(int64_t)rows[k] * rb + b];
}

extern "C" int vq_cuda_gather_rows(const uint8_t *packed, int64_t row_bytes,
				   const int32_t *rows, int64_t n, uint8_t *out)
{
	if (n > 0)
		k_gather<<<cdivu(n * row_bytes, 256), 256>>>(packed, row_bytes, rows, n,
							     out);
	return (int)cudaGetLastError();
}

__global__ void k_scatter(int32_t *dst, const int64_t *__restrict__ idx,
			  const int32_t *__restrict__ val, int64_t n)
{
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n) dst[idx[i]] = val[i];
}

extern "C" int vq_cuda_scatter_i32(int32_t *dst, const int64_t *idx,
				   const int32_t *val, int64_t n)
{
	if (n > 0) k_scatter<<<cdivu(n, 256), 256>>>(dst, idx, val, n);
	return (int)cudaGetLastError();
}
