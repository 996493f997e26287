/*
 * core/cuda/linear.cu -- ternary linear layer on the GPU: forward
 * y = x W^T, backward dx = dy W and the streamed vote (dW = dy^T x is never
 * stored: each tile of it goes straight into T_accum / score / sumsq).
 *
 * Two kernels:
 *  tc_gemm_kernel1  generic tensor-core tile GEMM C[i][j] = sum_r A(i,r) B(j,r)
 *                   (BM=BN=128, BK=32, 8 warps of 64x32, mma.sync m16n8k16
 *                   bf16 -> fp32, ldmatrix, register-staged double buffer).
 *                   Loaders decode trits*2^E or convert fp32 activations to
 *                   bf16 while filling shared memory; the epilogue either
 *                   stores C or votes with it.
 *  skinny_fwd_kernel2  y for M <= 16 (memory bound): 128 weight rows per CTA,
 *                   split-K over CTAs; 16 packed bytes per lane per step,
 *                   byte -> 5 bf16 trits through a shared-memory table,
 *                   mma with the bf16 x tile, the group scale 2^E applied per
 *                   16-wide k step (needs group_size % 16 == 0); the last CTA
 *                   of a row tile sums the split partials in a fixed order.
 *
 * Precision: activations and scales are rounded to bf16 (exact for the
 * dyadic test inputs and for power-of-two scales), products summed in fp32.
 */
#include <string.h>
#include "common.cuh"

#define BM 128
#define BN 128
#define BK 32
#define SROW 40 /* padded smem row (bf16): 80 bytes, ldmatrix conflict-free */

/* ---------------------------------------------------------------------------
 * mma helpers */
__device__ __forceinline__ uint32_t smem_u32(const void *p)
{
	return (uint32_t)__cvta_generic_to_shared(p);
}
__device__ __forceinline__ void ldsm_x4(uint32_t &r0, uint32_t &r1, uint32_t &r2,
					uint32_t &r3, const void *p)
{
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
		     : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(smem_u32(p)));
}
__device__ __forceinline__ void mma16816(float *c, const uint32_t *a, uint32_t b0, uint32_t b1)
{
	asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
		     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
		     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
		     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* ---------------------------------------------------------------------------
 * loaders: value of operand element (i, r); RC: threads run along r */
struct LoadRM {  /* p[i*ld + r] */
	const float *p; int64_t ld, I, R;
	static constexpr bool RC = true;
	__device__ __forceinline__ float get(int64_t i, int64_t r) const {
		return (i < I && r < R) ? __ldg(p + i * ld + r) : 0.0f;
	}
};
struct LoadCM {  /* p[r*ld + i] */
	const float *p; int64_t ld, I, R;
	static constexpr bool RC = false;
	__device__ __forceinline__ float get(int64_t i, int64_t r) const {
		return (i < I && r < R) ? __ldg(p + r * ld + i) : 0.0f;
	}
};
__device__ __forceinline__ float tern_w(const tern_view &v, int64_t n, int64_t k)
{
	uint32_t kk = (uint32_t)k, kb = kk / 5u;
	int t = trit_digit(__ldg(v.packed + n * v.row_bytes + kb), (int)(kk - 5u * kb));
	return t ? (float)t * view_scale(v, n, (int)(kk / (uint32_t)v.gs)) : 0.0f;
}
struct LoadWnk { /* (i=n, r=k) */
	tern_view v;
	static constexpr bool RC = true;
	__device__ __forceinline__ float get(int64_t n, int64_t k) const {
		return (n < v.rows && k < v.cols) ? tern_w(v, n, k) : 0.0f;
	}
};
struct LoadWkn { /* (i=k, r=n) */
	tern_view v;
	static constexpr bool RC = false;
	__device__ __forceinline__ float get(int64_t k, int64_t n) const {
		return (n < v.rows && k < v.cols) ? tern_w(v, n, k) : 0.0f;
	}
};

struct LoadBRM { /* bf16 p[i*ld + r] */
	const __nv_bfloat16 *p; int64_t ld, I, R;
	static constexpr bool RC = true;
	__device__ __forceinline__ float get(int64_t i, int64_t r) const {
		return (i < I && r < R) ? __bfloat162float(p[i * ld + r]) : 0.0f;
	}
};
struct LoadBCM { /* bf16 p[r*ld + i] */
	const __nv_bfloat16 *p; int64_t ld, I, R;
	static constexpr bool RC = false;
	__device__ __forceinline__ float get(int64_t i, int64_t r) const {
		return (i < I && r < R) ? __bfloat162float(p[r * ld + i]) : 0.0f;
	}
};

/* W -> bf16 [rows][cols] (t * scale), one thread per packed byte */
__global__ void decode_bf16_kernel1(tern_view v, __nv_bfloat16 *out)
{
	int64_t nb = v.rows * v.row_bytes;
	for (int64_t b = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; b < nb;
	     b += (int64_t)gridDim.x * blockDim.x) {
		int64_t r = (b < 0xffffffffll) ? (int64_t)((uint32_t)b / (uint32_t)v.row_bytes)
					       : b / v.row_bytes;
		int64_t c0 = (b - r * v.row_bytes) * 5;
		unsigned int byte = v.packed[b];
		for (int j = 0; j < 5 && c0 + j < v.cols; j++) {
			int t = trit_digit(byte, j);
			float w = t ? (float)t * view_scale(v, r, (int)((uint32_t)(c0 + j) / (uint32_t)v.gs)) : 0.0f;
			out[r * v.cols + c0 + j] = __float2bfloat16(w);
		}
	}
}
static __nv_bfloat16 *decode_w(arb_backend *be, const tern_view &v)
{
	__nv_bfloat16 *w = (__nv_bfloat16 *)cuda_scratch(be, (size_t)(v.rows * v.cols) * 2);
	int64_t nb = v.rows * v.row_bytes;
	int64_t g = (nb + 255) / 256;
	if (g > 132 * 64) g = 132 * 64;
	decode_bf16_kernel1<<<(unsigned)g, 256>>>(v, w);
	CK_LAUNCH(decode_bf16);
	return w;
}

/* fill 16 values of a BMxBK (BNxBK) tile for thread t */
template <class L>
__device__ __forceinline__ void tile_load(const L &l, int64_t i0, int64_t r0, float *v)
{
	int t = threadIdx.x;
#pragma unroll
	for (int s = 0; s < 16; s++) {
		if (L::RC) v[s] = l.get(i0 + t / 32 + 8 * s, r0 + (t % 32));
		else v[s] = l.get(i0 + (t % 128), r0 + t / 128 + 2 * s);
	}
}
template <class L>
__device__ __forceinline__ void tile_store(__nv_bfloat16 *S, const float *v)
{
	int t = threadIdx.x;
#pragma unroll
	for (int s = 0; s < 16; s++) {
		int i, r;
		if (L::RC) { i = t / 32 + 8 * s; r = t % 32; }
		else { i = t % 128; r = t / 128 + 2 * s; }
		S[i * SROW + r] = __float2bfloat16(v[s]);
	}
}

/* epilogue modes */
enum { EP_STORE = 0, EP_VOTE = 1, EP_MEASURE = 2 };
struct EpArgs {
	float *out; int64_t ld; int acc;               /* store */
	int8_t *T; int32_t *score; const uint8_t *packed;
	int64_t rb; int gs, groups;
	int kind, step, R, rms_host; const int *rms_dev;
	uint64_t seed, stream;
	double *parts;                                  /* sr: per-CTA sumsq */
};

#define SC_G 34 /* groups a 128-wide tile can touch (gs >= 4) */

/* grid: (cdiv(J,BN), cdiv(I,BM)); block 256 */
template <class LA, class LB, int MODE>
__global__ void __launch_bounds__(256) tc_gemm_kernel1(LA la, LB lb, int64_t I,
							int64_t J, int64_t R, EpArgs ep)
{
	__shared__ __align__(16) unsigned char smem[2 * (BM + BN) * SROW * 2];
	__nv_bfloat16 *As = (__nv_bfloat16 *)smem;
	__nv_bfloat16 *Bs = As + 2 * BM * SROW;
	int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
	int wm = warp >> 2, wn = warp & 3;             /* 2 x 4 warps */
	int64_t i0 = (int64_t)blockIdx.y * BM, j0 = (int64_t)blockIdx.x * BN;
	float acc[4][4][4];
#pragma unroll
	for (int a = 0; a < 4; a++)
#pragma unroll
		for (int b = 0; b < 4; b++)
#pragma unroll
			for (int c = 0; c < 4; c++) acc[a][b][c] = 0.0f;
	float ra[16], rb[16];
	int nk = (int)((R + BK - 1) / BK);
	tile_load(la, i0, 0, ra);
	tile_load(lb, j0, 0, rb);
	tile_store<LA>(As, ra);
	tile_store<LB>(Bs, rb);
	__syncthreads();
	for (int kt = 0; kt < nk; kt++) {
		int buf = kt & 1;
		if (kt + 1 < nk) {
			tile_load(la, i0, (int64_t)(kt + 1) * BK, ra);
			tile_load(lb, j0, (int64_t)(kt + 1) * BK, rb);
		}
		const __nv_bfloat16 *A = As + buf * BM * SROW, *B = Bs + buf * BN * SROW;
#pragma unroll
		for (int kk = 0; kk < BK; kk += 16) {
			uint32_t af[4][4], bf[4][2];
#pragma unroll
			for (int mi = 0; mi < 4; mi++) {
				int row = wm * 64 + mi * 16 + (lane & 15);
				ldsm_x4(af[mi][0], af[mi][1], af[mi][2], af[mi][3],
					A + row * SROW + kk + (lane >> 4) * 8);
			}
#pragma unroll
			for (int np = 0; np < 2; np++) {
				int col = wn * 32 + np * 16 + (lane & 7) + (lane >> 4) * 8;
				uint32_t r0, r1, r2, r3;
				ldsm_x4(r0, r1, r2, r3, B + col * SROW + kk + ((lane >> 3) & 1) * 8);
				bf[2 * np][0] = r0; bf[2 * np][1] = r1;
				bf[2 * np + 1][0] = r2; bf[2 * np + 1][1] = r3;
			}
#pragma unroll
			for (int mi = 0; mi < 4; mi++)
#pragma unroll
				for (int ni = 0; ni < 4; ni++)
					mma16816(acc[mi][ni], af[mi], bf[ni][0], bf[ni][1]);
		}
		if (kt + 1 < nk) {
			tile_store<LA>(As + (buf ^ 1) * BM * SROW, ra);
			tile_store<LB>(Bs + (buf ^ 1) * BN * SROW, rb);
		}
		__syncthreads();
	}

	int g = lane >> 2, q = lane & 3;
	if (MODE == EP_STORE) {
#pragma unroll
		for (int mi = 0; mi < 4; mi++)
#pragma unroll
			for (int ni = 0; ni < 4; ni++)
#pragma unroll
				for (int c = 0; c < 4; c++) {
					int64_t i = i0 + wm * 64 + mi * 16 + g + (c >> 1) * 8;
					int64_t j = j0 + wn * 32 + ni * 8 + 2 * q + (c & 1);
					if (i < I && j < J) {
						float *o = ep.out + i * ep.ld + j;
						*o = ep.acc ? *o + acc[mi][ni][c] : acc[mi][ni][c];
					}
				}
		return;
	}
	/* vote / measure: i = n (row of W), j = k (column of W) */
	int *sc = (int *)smem; /* [BM][SC_G] */
	int g0 = (int)(j0 / ep.gs);
	if (MODE == EP_VOTE && ep.score) {
		for (int e = tid; e < BM * SC_G; e += 256) sc[e] = 0;
		__syncthreads();
	}
	int rms = MODE == EP_VOTE ? vote_rms_dev(ep.rms_host, ep.rms_dev) : 0;
	double sq = 0.0;
#pragma unroll
	for (int mi = 0; mi < 4; mi++)
#pragma unroll
		for (int ni = 0; ni < 4; ni++)
#pragma unroll
			for (int c = 0; c < 4; c++) {
				int il = wm * 64 + mi * 16 + g + (c >> 1) * 8;
				int64_t n = i0 + il;
				int64_t k = j0 + wn * 32 + ni * 8 + 2 * q + (c & 1);
				if (n >= I || k >= J) continue;
				float d = acc[mi][ni][c];
				sq += (double)d * (double)d;
				if (MODE != EP_VOTE) continue;
				int64_t wi = n * J + k;
				int sg = (d > 0.0f) - (d < 0.0f);
				int inc = ep.kind == ARB_VOTE_SR ?
					sr_inc(d, ep.R, rms, ep.seed, ep.stream, (uint64_t)wi) :
					ep.step * sg;
				if (inc) ep.T[wi] = accum_sub(ep.T[wi], inc);
				if (ep.score && sg) {
					uint32_t kk = (uint32_t)k, kb = kk / 5u;
					int t = trit_digit(ep.packed[n * ep.rb + kb], (int)(kk - 5u * kb));
					if (t) atomicAdd(&sc[il * SC_G + (int)(kk / (uint32_t)ep.gs) - g0], sg * t);
				}
			}
	if (MODE == EP_VOTE && ep.score) {
		__syncthreads();
		int ng = ep.groups;
		for (int e = tid; e < BM * SC_G; e += 256) {
			int v = sc[e];
			if (!v) continue;
			int64_t n = i0 + e / SC_G;
			int gg = g0 + e % SC_G;
			if (n < I && gg < ng) atomicAdd(&ep.score[n * ng + gg], v);
		}
	}
	if (ep.parts) {
		/* fixed-order block reduction of sq */
		__shared__ double red[8];
		for (int o = 16; o > 0; o >>= 1) sq += __shfl_xor_sync(0xffffffffu, sq, o);
		if (lane == 0) red[warp] = sq;
		__syncthreads();
		if (tid == 0) {
			double s = 0.0;
			for (int w = 0; w < 8; w++) s += red[w];
			ep.parts[(int64_t)blockIdx.y * gridDim.x + blockIdx.x] = s;
		}
	}
}

/* ---------------------------------------------------------------------------
 * skinny forward, M <= 16 */
#define SK_ROWS 128   /* weight rows per CTA: 8 warps x 16 */
#define SK_KC 160     /* k per chunk: two 80-wide steps (16 packed bytes each) */
#define SK_SROW 168   /* padded bf16 row */
#define SK_G 12       /* groups a 160-wide chunk touches (group_size >= 16) */
#define SK_SMEM ((size_t)(16 + 8 * 16) * SK_SROW * 2 + (243 * 5 + 2) * 2 + SK_ROWS * SK_G * 4)

__constant__ uint16_t c_dec[243 * 5]; /* bf16 bits of each digit of a byte */

__device__ __forceinline__ void load16(const uint8_t *p, int64_t avail, uint8_t *o)
{
	/* 16 bytes, or `avail` (< 16) bytes followed by zero-trit bytes (121) */
	uintptr_t a = (uintptr_t)p;
	if (avail >= 16 && (a & 15) == 0) {
		uint4 v = __ldg((const uint4 *)p);
		*(uint4 *)o = v;
	} else if (avail >= 16 && (a & 3) == 0) {
		const uint32_t *w = (const uint32_t *)p;
		uint32_t *ow = (uint32_t *)o;
		ow[0] = __ldg(w); ow[1] = __ldg(w + 1); ow[2] = __ldg(w + 2); ow[3] = __ldg(w + 3);
	} else {
#pragma unroll
		for (int b = 0; b < 16; b++) o[b] = b < avail ? __ldg(p + b) : (uint8_t)121;
	}
}

/* grid: (cdiv(N,128), S); block 256; dyn smem: dec table + x tile + 8 W tiles */
__global__ void __launch_bounds__(256) skinny_fwd_kernel2(tern_view v, const float *x,
	float *y, int M, int acc, int chunks_per_split, float *part, unsigned int *cnt)
{
	extern __shared__ __align__(16) unsigned char sm[];
	__nv_bfloat16 *xs = (__nv_bfloat16 *)sm;                   /* [16][SK_SROW] */
	__nv_bfloat16 *wsm = xs + 16 * SK_SROW;                    /* [8][16][SK_SROW] */
	uint16_t *dec = (uint16_t *)(wsm + 8 * 16 * SK_SROW);      /* [243*5] */
	float *ssc = (float *)(dec + 243 * 5 + 1);                 /* [128][SK_G] */
	__shared__ int is_last;
	const int64_t N = v.rows, K = v.cols, rb = v.row_bytes;
	int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
	for (int e = tid; e < 243 * 5; e += 256) dec[e] = c_dec[e];
	int64_t n0 = (int64_t)blockIdx.x * SK_ROWS + warp * 16;
	int64_t nchunks = (K + SK_KC - 1) / SK_KC;
	int64_t c_lo = (int64_t)blockIdx.y * chunks_per_split;
	int64_t c_hi = c_lo + chunks_per_split < nchunks ? c_lo + chunks_per_split : nchunks;
	__nv_bfloat16 *W = wsm + warp * 16 * SK_SROW;
	float accf[2][4] = { { 0, 0, 0, 0 }, { 0, 0, 0, 0 } };
	int g = lane >> 2, q = lane & 3;
	int64_t nA = n0 + g, nB = n0 + g + 8;
	int lrow = lane & 15, half = lane >> 4;
	int64_t nl = n0 + lrow;
	uint8_t bytes[16];
	/* prefetch the first chunk's bytes */
	auto fetch = [&](int64_t ch) {
		int64_t boff = ch * (SK_KC / 5) + half * 16;
		if (nl < N && boff < rb) load16(v.packed + nl * rb + boff, rb - boff, bytes);
		else {
#pragma unroll
			for (int b = 0; b < 16; b++) bytes[b] = 121;
		}
	};
	if (c_lo < c_hi) fetch(c_lo);
	for (int64_t ch = c_lo; ch < c_hi; ch++) {
		int64_t k0 = ch * SK_KC;
		__syncthreads(); /* previous chunk's tiles consumed; dec ready */
		int gfirst = (int)(k0 / v.gs);
		int glast = (int)((k0 + SK_KC - 1 < K ? k0 + SK_KC - 1 : K - 1) / v.gs);
		int ngc = glast - gfirst + 1;
		for (int e = tid; e < SK_ROWS * ngc; e += 256) {
			int rr = e / ngc, gg = e - rr * ngc;
			int64_t n = (int64_t)blockIdx.x * SK_ROWS + rr;
			ssc[rr * SK_G + gg] = n < N ? view_scale(v, n, gfirst + gg) : 0.0f;
		}
		/* x tile: [16][160] fp32 -> bf16 */
		for (int e = tid; e < 16 * SK_KC; e += 256) {
			int m = e / SK_KC, kk = e % SK_KC;
			int64_t k = k0 + kk;
			float xv = (m < M && k < K) ? __ldg(x + (int64_t)m * K + k) : 0.0f;
			xs[m * SK_SROW + kk] = __float2bfloat16(xv);
		}
		/* W tile: lane decodes 16 bytes (80 trits) of row lrow */
		uint16_t *wr = (uint16_t *)(W + lrow * SK_SROW + half * 80);
#pragma unroll
		for (int b = 0; b < 16; b++) {
			const uint16_t *d = dec + bytes[b] * 5;
#pragma unroll
			for (int j = 0; j < 5; j++) wr[b * 5 + j] = d[j];
		}
		if (ch + 1 < c_hi) fetch(ch + 1);
		__syncthreads();
		/* 10 k16 steps; scale per (row, group) per step */
#pragma unroll
		for (int s = 0; s < SK_KC / 16; s++) {
			int64_t k = k0 + s * 16;
			if (k >= K) break;
			uint32_t a[4], b0, b1, b2, b3;
			ldsm_x4(a[0], a[1], a[2], a[3], W + lrow * SK_SROW + s * 16 + half * 8);
			ldsm_x4(b0, b1, b2, b3, xs + ((lane & 7) + (lane >> 4) * 8) * SK_SROW +
				s * 16 + ((lane >> 3) & 1) * 8);
			float c0[4] = { 0, 0, 0, 0 }, c1[4] = { 0, 0, 0, 0 };
			mma16816(c0, a, b0, b1);
			mma16816(c1, a, b2, b3);
			int gi = (int)((uint32_t)k / (uint32_t)v.gs) - gfirst;
			float sA = ssc[(warp * 16 + g) * SK_G + gi];
			float sB = ssc[(warp * 16 + g + 8) * SK_G + gi];
			accf[0][0] += sA * c0[0]; accf[0][1] += sA * c0[1];
			accf[0][2] += sB * c0[2]; accf[0][3] += sB * c0[3];
			accf[1][0] += sA * c1[0]; accf[1][1] += sA * c1[1];
			accf[1][2] += sB * c1[2]; accf[1][3] += sB * c1[3];
		}
	}
	/* accf[t][c]: row n = (c < 2 ? nA : nB), token m = t*8 + 2q + (c & 1) */
	if (gridDim.y == 1) {
#pragma unroll
		for (int t = 0; t < 2; t++)
#pragma unroll
			for (int c = 0; c < 4; c++) {
				int64_t n = c < 2 ? nA : nB;
				int m = t * 8 + 2 * q + (c & 1);
				if (n < N && m < M) {
					float *o = y + (int64_t)m * N + n;
					*o = acc ? *o + accf[t][c] : accf[t][c];
				}
			}
		return;
	}
	/* split-K: partial[s][m][n], the last CTA of this row tile reduces */
#pragma unroll
	for (int t = 0; t < 2; t++)
#pragma unroll
		for (int c = 0; c < 4; c++) {
			int64_t n = c < 2 ? nA : nB;
			int m = t * 8 + 2 * q + (c & 1);
			if (n < N && m < M)
				part[((int64_t)blockIdx.y * M + m) * N + n] = accf[t][c];
		}
	__threadfence();
	__syncthreads();
	if (tid == 0) {
		unsigned int prev = atomicAdd(&cnt[blockIdx.x], 1u);
		is_last = prev == gridDim.y - 1;
	}
	__syncthreads();
	if (!is_last) return;
	__threadfence();
	int64_t nb0 = (int64_t)blockIdx.x * SK_ROWS;
	for (int e = tid; e < SK_ROWS * M; e += 256) {
		int m = e / SK_ROWS;
		int64_t n = nb0 + e % SK_ROWS;
		if (n >= N) continue;
		float s = 0.0f;
		for (unsigned int sp = 0; sp < gridDim.y; sp++)
			s += __ldcg(part + ((int64_t)sp * M + m) * N + n);
		float *o = y + (int64_t)m * N + n;
		*o = acc ? *o + s : s;
	}
	if (tid == 0) cnt[blockIdx.x] = 0;
}

static int g_dec_ready = 0;
static void dec_table_init(void)
{
	if (g_dec_ready) return;
	uint16_t h[243 * 5];
	for (int b = 0; b < 243; b++) {
		int p = b;
		for (int j = 0; j < 5; j++) {
			int t = p % 3 - 1;
			p /= 3;
			h[b * 5 + j] = t == 0 ? 0 : (t > 0 ? 0x3f80 : 0xbf80); /* bf16 +-1 */
		}
	}
	CK(cudaMemcpyToSymbol(c_dec, h, sizeof h));
	size_t smem = SK_SMEM;
	CK(cudaFuncSetAttribute(skinny_fwd_kernel2, cudaFuncAttributeMaxDynamicSharedMemorySize,
				(int)smem));
	g_dec_ready = 1;
}

/* ---------------------------------------------------------------------------
 * launchers */
void cuda_linear_forward(arb_backend *be, const arb_tern *w, const float *x,
			 float *y, int64_t M, int accumulate)
{
	if (M <= 0) return;
	tern_view v = tern_view_of(w);
	int64_t N = w->rows, K = w->cols;
	if (M <= 16 && w->group_size % 16 == 0) {
		dec_table_init();
		cuda_priv *p = cuda_get_priv(be);
		int64_t tiles = (N + SK_ROWS - 1) / SK_ROWS;
		int64_t nchunks = (K + SK_KC - 1) / SK_KC;
		int64_t want = (2 * (int64_t)p->sms + tiles - 1) / tiles;
		if (want > nchunks) want = nchunks;
		if (want < 1) want = 1;
		int64_t cps = (nchunks + want - 1) / want;
		int64_t S = (nchunks + cps - 1) / cps;
		unsigned int *cnt = NULL;
		float *part = S > 1 ? cuda_split_ws(be, S * M * N, &cnt, tiles) : NULL;
		size_t smem = SK_SMEM;
		dim3 grid((unsigned)tiles, (unsigned)S);
		skinny_fwd_kernel2<<<grid, 256, smem>>>(v, x, y, (int)M, accumulate, (int)cps,
							part, cnt);
		CK_LAUNCH(skinny_fwd);
		return;
	}
	EpArgs ep;
	memset(&ep, 0, sizeof ep);
	ep.out = y; ep.ld = N; ep.acc = accumulate;
	LoadRM la = { x, K, M, K };
	dim3 grid(cdiv(N, BN), cdiv(M, BM));
	if (M >= 64) {
		/* decode once (bf16 workspace), then a plain tile GEMM */
		LoadBRM lb = { decode_w(be, v), K, N, K };
		tc_gemm_kernel1<LoadRM, LoadBRM, EP_STORE><<<grid, 256>>>(la, lb, M, N, K, ep);
	} else {
		LoadWnk lb = { v };
		tc_gemm_kernel1<LoadRM, LoadWnk, EP_STORE><<<grid, 256>>>(la, lb, M, N, K, ep);
	}
	CK_LAUNCH(linear_forward);
}

void cuda_linear_backward_x(arb_backend *be, const arb_tern *w, const float *dy,
			    float *dx, int64_t M, int accumulate)
{
	if (M <= 0) return;
	tern_view v = tern_view_of(w);
	int64_t N = w->rows, K = w->cols;
	EpArgs ep;
	memset(&ep, 0, sizeof ep);
	ep.out = dx; ep.ld = K; ep.acc = accumulate;
	LoadRM la = { dy, N, M, N };
	dim3 grid(cdiv(K, BN), cdiv(M, BM));
	if (M >= 64) {
		LoadBCM lb = { decode_w(be, v), K, K, N };
		tc_gemm_kernel1<LoadRM, LoadBCM, EP_STORE><<<grid, 256>>>(la, lb, M, K, N, ep);
	} else {
		LoadWkn lb = { v };
		tc_gemm_kernel1<LoadRM, LoadWkn, EP_STORE><<<grid, 256>>>(la, lb, M, K, N, ep);
	}
	CK_LAUNCH(linear_backward_x);
}

void cuda_linear_vote(arb_backend *be, arb_tern *w, const float *x, const float *dy,
		      int64_t M, const arb_vote *vt)
{
	if (M <= 0 || !w->T_accum) return;
	int64_t N = w->rows, K = w->cols;
	tern_ws *ws = (tern_ws *)w->ws_dev;
	int sr = vt->kind == ARB_VOTE_SR;
	dim3 grid(cdiv(K, BN), cdiv(N, BM));
	int64_t nblk = (int64_t)grid.x * grid.y;
	EpArgs ep;
	memset(&ep, 0, sizeof ep);
	ep.T = w->T_accum; ep.score = w->score; ep.packed = w->packed; ep.rb = w->row_bytes;
	ep.gs = w->group_size; ep.groups = w->groups; ep.kind = vt->kind; ep.step = vt->step;
	ep.R = vt->sr_R; ep.rms_host = w->rms_log2; ep.rms_dev = &ws->rms_now;
	ep.seed = vt->seed; ep.stream = arb_rng_stream(w->id, vt->t, ARB_RNG_VOTE_SR);
	ep.parts = sr ? cuda_partials(be, nblk) : NULL;
	LoadCM la = { dy, N, N, M };
	LoadCM lb = { x, K, K, M };
	if (sr && w->rms_log2 == ARB_RMS_UNKNOWN) {
		tc_gemm_kernel1<LoadCM, LoadCM, EP_MEASURE><<<grid, 256>>>(la, lb, N, K, M, ep);
		CK_LAUNCH(linear_measure);
		cuda_finalize_sumsq(ep.parts, nblk, &ws->measured, 0, &ws->rms_now, N * K);
	}
	tc_gemm_kernel1<LoadCM, LoadCM, EP_VOTE><<<grid, 256>>>(la, lb, N, K, M, ep);
	CK_LAUNCH(linear_vote);
	if (sr) cuda_finalize_sumsq(ep.parts, nblk, &ws->sumsq, 1, NULL, 0);
}
