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
 * The forward by batch size (cuda_linear_forward): 2..4 tokens on rows of
 * more than 64 segments the v5 skinny kernel (skinny_fwd_kernel5); one
 * token by table lookup (lut_fwd_kernel) unless the v4 skinny kernel does
 * it in one wave; 1..8 tokens the v4 skinny kernel where it is the fastest
 * (skinny4_forward says where), one token otherwise the GEMV, up to 256 tokens the v3 skinny
 * kernel while the tile GEMM would have few CTAs, else operands decoded / converted to
 * bf16 in one launch (prep_fwd_kernel) and the warpgroup-MMA GEMM
 * (wgmma.cuh) or, off Hopper, the mma.sync one. ARB_CUDA_LEGACY names
 * the families to skip (sk5, lut, fwd16, gemv, skinny, prep, wgmma, tma, gemm,
 * ...).
 *
 * Precision: activations and scales are rounded to bf16 (exact for the
 * dyadic test inputs and for power-of-two scales), products summed in fp32.
 */
#include <string.h>
#include <cuda_fp8.h>
#include "common.cuh"

#define BM 128
#define BN 128
#define BK 32
#define SROW 40 /* padded smem row (bf16): 80 bytes, ldmatrix conflict-free */

/* ---------------------------------------------------------------------------
 * mma helpers */
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
	int v4;                                         /* vote_calc4 allowed */
	int pf;                                         /* vote epilogue operands prefetched */
	tern_ws *f8;                                    /* fp8 vote: scale state to roll */
};

#define SC_G 34 /* groups a 128-wide tile can touch (gs >= 4) */

/* the sign-vote update of one lane: the 4 consecutive weights k0..k0+3 of a
 * row (fewer at the row's end), shared by the tile epilogue and the direct
 * kernel. vote_geom: what the lane's columns need; vote_load: the row's
 * accumulators and packed trits (issued for several rows before any
 * vote_apply, so that the loads overlap); vote_apply: T_accum -= step * s,
 * written back (one aligned word when vec), the score contributions added
 * to the row's shared-memory group counters (at most two groups). */
struct vote_geom {
	int64_t k0, kb0, kbound;
	int nk, d0, g0, gl0, vec;
	uint32_t p3inv;  /* ceil(2^32 / 3^d0) (d0 > 0): v / 3^d0 = umulhi(v, p3inv), v < 3^10 */
	uint32_t lomask; /* bytes of the lane's 4 weights below kbound */
};
__device__ __forceinline__ vote_geom vote_geom_of(const EpArgs &ep, int64_t kt0, int64_t k0,
						  int64_t J)
{
	vote_geom q;
	q.k0 = k0;
	q.nk = k0 >= J ? 0 : (J - k0 < 4 ? (int)(J - k0) : 4);
	q.g0 = (int)(kt0 / ep.gs);
	q.kb0 = k0 / 5;
	q.d0 = (int)(k0 - 5 * q.kb0);                          /* digit of k0 in byte kb0 */
	q.gl0 = (int)(k0 / ep.gs) - q.g0;
	q.kbound = (int64_t)(q.gl0 + q.g0 + 1) * ep.gs;        /* first k of the next group */
	q.vec = (J & 3) == 0 && q.nk == 4 && ((uintptr_t)ep.T & 3) == 0;
	const uint32_t p3 = q.d0 == 1 ? 3u : (q.d0 == 2 ? 9u : (q.d0 == 3 ? 27u : 81u));
	q.p3inv = q.d0 == 0 ? 0u : (uint32_t)((0x100000000ull + p3 - 1) / p3);
	const int64_t split = q.kbound - k0;
	q.lomask = split >= 4 ? 0xffffffffu : (split <= 0 ? 0u : (1u << (8 * split)) - 1u);
	return q;
}
__device__ __forceinline__ void vote_load(const EpArgs &ep, const vote_geom &q, int64_t n,
					  int64_t J, int8_t *tv, uint32_t *pk)
{
	const int64_t wi = n * J + q.k0;
	if (q.vec) {
		/* J % 4 == 0: the four accumulators are one aligned word */
		uint32_t t4 = *(const uint32_t *)(ep.T + wi);
#pragma unroll
		for (int b = 0; b < 4; b++) tv[b] = (int8_t)(t4 >> (8 * b));
	} else {
#pragma unroll
		for (int b = 0; b < 4; b++)
			if (b < q.nk) tv[b] = ep.T[wi + b];
	}
	if (ep.score) {
		const uint8_t *pb = ep.packed + n * ep.rb + q.kb0;
		uint32_t lo = pb[0];
		uint32_t hi = (q.d0 + q.nk > 5) ? pb[1] : 121u;
		*pk = lo | (hi << 8);
	}
}
__device__ __forceinline__ void vote_apply(const EpArgs &ep, const vote_geom &q, int64_t n,
					   int64_t J, const int *sg, int8_t *tv, uint32_t pk,
					   int *sc_row)
{
	const int64_t wi = n * J + q.k0;
	int s0 = 0, s1 = 0, ch = 0;
#pragma unroll
	for (int b = 0; b < 4; b++) {
		if (b >= q.nk) continue;
		const int s = sg[b];
		if (!s) continue;
		const int8_t nt = accum_sub(tv[b], ep.step * s);
		ch |= nt != tv[b];
		tv[b] = nt;
		if (!q.vec) ep.T[wi + b] = nt;
		if (ep.score) {
			const int dg = q.d0 + b;
			const uint32_t byte = dg < 5 ? (pk & 0xffu) : (pk >> 8);
			const int t = trit_digit(byte, dg < 5 ? dg : dg - 5);
			if (q.k0 + b < q.kbound) s0 += s * t;
			else s1 += s * t;
		}
	}
	if (q.vec && ch)
		*(uint32_t *)(ep.T + wi) = (uint32_t)(uint8_t)tv[0] | ((uint32_t)(uint8_t)tv[1] << 8) |
			((uint32_t)(uint8_t)tv[2] << 16) | ((uint32_t)(uint8_t)tv[3] << 24);
	if (s0) atomicAdd(&sc_row[q.gl0], s0);
	if (s1) atomicAdd(&sc_row[q.gl0 + 1], s1);
}
/* vote_apply for a lane whose 4 weights are one aligned T_accum word (vec)
 * with 1 <= step <= 127, the 4 signs as one word of signed bytes, in SIMD
 * byte operations (h17 ncu: the per-weight loop was a third of the vote
 * GEMM's epilogue instructions): T -= step * s saturated to [-127, 127],
 * the score terms s * trit as two byte dot products (below / from the
 * lane's group boundary). Same results as vote_apply. Split in two: the
 * arithmetic (vote_calc4, no branch and no memory access, so that a tile
 * epilogue interleaves the rows of a batch; h19: dependency waits, branch
 * resolution and instruction fetch were two thirds of the epilogue's
 * stall samples) and its writes (vote_commit4). */
__device__ __forceinline__ void vote_calc4(const EpArgs &ep, const vote_geom &q, uint32_t t4,
					   uint32_t s4, uint32_t pk, uint32_t *nt, int *lo, int *hi)
{
	const uint32_t nz = s4 & 0x01010101u, neg = (s4 >> 7) & 0x01010101u;
	const uint32_t nm = neg * 0xffu, mag = nz * (uint32_t)ep.step;
	const uint32_t inc = __vsub4(mag ^ nm, nm);
	const uint32_t nzm = nz * 0xffu; /* bytes with a vote: others keep their value */
	*nt = (__vmaxs4(__vsubss4(t4, inc), 0x81818181u) & nzm) | (t4 & ~nzm);
	/* digits d0 .. d0+3 of the two packed bytes as one base-3 number */
	const uint32_t v = (pk & 0xffu) + 243u * (pk >> 8);
	uint32_t qd = __umulhi(v, q.p3inv) + (q.d0 == 0 ? v : 0u);
	uint32_t d4 = 0;
#pragma unroll
	for (int b = 0; b < 4; b++) {
		const uint32_t q1 = (qd * 43691u) >> 17;
		d4 |= (qd - 3u * q1) << (8 * b);
		qd = q1;
	}
	const int tr = (int)__vsub4(d4, 0x01010101u);
	*lo = __dp4a((int)(s4 & q.lomask), tr, 0);
	*hi = __dp4a((int)(s4 & ~q.lomask), tr, 0);
}
__device__ __forceinline__ void vote_commit4(const EpArgs &ep, const vote_geom &q, int64_t n,
					     int64_t J, uint32_t t4, uint32_t nt, int lo, int hi,
					     int *sc_row)
{
	if (nt != t4) *(uint32_t *)(ep.T + n * J + q.k0) = nt;
	if (ep.score) {
		if (lo) atomicAdd(&sc_row[q.gl0], lo);
		if (hi) atomicAdd(&sc_row[q.gl0 + 1], hi);
	}
}
/* barrier of the 256 threads that run a tile epilogue (named barrier 1:
 * the producer warp of gemm_tma_kernel<.., 1> has left by then) */
__device__ __forceinline__ void ep_sync()
{
	asm volatile("bar.sync 1, 256;\n" ::: "memory");
}
/* the groups that the 128 columns j0 .. j0 + 127 (< J) touch: the score
 * counters a tile row uses (SC_G at most) */
__device__ __forceinline__ int vote_ngt(const EpArgs &ep, int64_t j0, int64_t J)
{
	const int64_t jl = j0 + 127 < J ? j0 + 127 : J - 1;
	return jl >= j0 ? (int)(jl / ep.gs - j0 / ep.gs) + 1 : 0;
}
/* the shared-memory group counters sc [ROWS][SC_G] of the rows from n0 and
 * the columns from j0 (only their first ngt groups: h19, scanning all SC_G
 * counters of a row cost the 4096^2 vote GEMM 10 us) into the tensor's
 * score, one global atomic per nonzero counter */
template <int ROWS>
__device__ __forceinline__ void vote_flush(const EpArgs &ep, const int *sc, int64_t n0,
					   int64_t j0, int64_t J, int64_t N)
{
	ep_sync();
	const int ng = ep.groups, g0 = (int)(j0 / ep.gs), ngt = vote_ngt(ep, j0, J);
#pragma unroll 1
	for (int e = threadIdx.x; e < ROWS * ngt; e += 256) { /* the 256 epilogue threads */
		const int r = e % ROWS, gl = e / ROWS;
		const int v = sc[r * SC_G + gl];
		if (!v) continue;
		const int64_t n = n0 + r;
		if (n < N && g0 + gl < ng) atomicAdd(&ep.score[n * ng + g0 + gl], v);
	}
}

/* Sign-vote epilogue of a 128 x 128 tile (both tile GEMMs, kind SIGN): the
 * signs go to shared memory first, then each warp walks 16 rows of the tile
 * with lane l on the 4 consecutive weights 4l..4l+3 of a row, loading the
 * T_accum bytes and packed trits of 8 rows before it writes any (the loads of
 * a batch overlap instead of one global round trip per weight), and adds its
 * score contributions per group (at most two groups per lane and row) into
 * shared memory, flushed with one global atomic per (row, group).
 * smem: [BM][BN + 4] int8 signs, then [BM][SC_G] int scores. */
#define EPS_LD (BN + 4)
/* the sign votes of a BM x BN tile (rows i0.., columns j0..) whose signs
 * are in shared memory (sg [BM][sld], score counters sc [BM][SC_G]): lane l
 * of warp w updates columns 4l .. 4l+3 of rows 16w .. 16w+15. pf (NULL:
 * from global memory): the tile's T_accum bytes [128][256] and (pw) its
 * rows' packed-trit windows [128][VOTE_PF_W] already in shared memory
 * (columns from pj0, this half at column j0 - pj0 of them) */
#define VOTE_PF_T (BM * 256)     /* T_accum [128][256] */
#define VOTE_PF_W 80             /* bytes of a row's packed window */
__device__ __forceinline__ void vote_tile_apply(const int8_t *sg, int sld, int *sc, int64_t i0,
						int64_t j0, int64_t I, int64_t J, const EpArgs &ep,
						const unsigned char *pf = NULL,
						const unsigned char *pw = NULL, int64_t pj0 = 0)
{
	const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
	if (ep.score) {
		const int ngt = vote_ngt(ep, j0, J);
		for (int e = tid; e < BM * ngt; e += 256) sc[(e % BM) * SC_G + e / BM] = 0;
	}
	ep_sync();
	const vote_geom vg = vote_geom_of(ep, j0, j0 + 4 * lane, J);
	const int v4 = ep.v4 && vg.vec && ep.step >= 1 && ep.step <= 127;
	const int64_t kbs = pj0 / 5; /* first packed byte of the windows */
	for (int r0 = 0; r0 < 16; r0 += 8) {
		uint32_t pk[8], tw[8]; /* tw: the row's 4 accumulators as one word */
#pragma unroll
		for (int r = 0; r < 8; r++) {
			const int il = warp * 16 + r0 + r;
			const int64_t n = i0 + il;
			pk[r] = 0;
			tw[r] = 0;
			if (n >= I || !vg.nk) continue;
			if (!pf) {
				int8_t tv[4] = { 0, 0, 0, 0 };
				vote_load(ep, vg, n, J, tv, &pk[r]);
				tw[r] = (uint32_t)(uint8_t)tv[0] | ((uint32_t)(uint8_t)tv[1] << 8) |
					((uint32_t)(uint8_t)tv[2] << 16) | ((uint32_t)(uint8_t)tv[3] << 24);
				continue;
			}
			/* prefetched: the whole word (J % 16 == 0), the window's
			 * bytes kb0 and kb0 + 1 */
			tw[r] = *(const uint32_t *)(pf + il * 256 + (j0 - pj0) + 4 * lane);
			if (ep.score) {
				const unsigned char *wp = pw + il * VOTE_PF_W +
					((n * ep.rb + kbs) & 15) + (vg.kb0 - kbs);
				pk[r] = wp[0] | ((vg.d0 + vg.nk > 5 ? wp[1] : 121u) << 8);
			}
		}
		if (v4) {
			/* all rows' arithmetic, then their writes */
			uint32_t nt[8];
			int lo[8], hi[8];
#pragma unroll
			for (int r = 0; r < 8; r++)
				vote_calc4(ep, vg, tw[r],
					   *(const uint32_t *)(sg + (warp * 16 + r0 + r) * sld + 4 * lane),
					   pk[r], &nt[r], &lo[r], &hi[r]);
#pragma unroll
			for (int r = 0; r < 8; r++) {
				const int il = warp * 16 + r0 + r;
				const int64_t n = i0 + il;
				if (n < I && vg.nk)
					vote_commit4(ep, vg, n, J, tw[r], nt[r], lo[r], hi[r], sc + il * SC_G);
			}
			continue;
		}
#pragma unroll
		for (int r = 0; r < 8; r++) {
			const int il = warp * 16 + r0 + r;
			const int64_t n = i0 + il;
			if (n >= I || !vg.nk) continue;
			int s4[4];
			int8_t tv[4];
#pragma unroll
			for (int b = 0; b < 4; b++) {
				s4[b] = b < vg.nk ? sg[il * sld + 4 * lane + b] : 0;
				tv[b] = (int8_t)(tw[r] >> (8 * b));
			}
			vote_apply(ep, vg, n, J, s4, tv, pk[r], sc + il * SC_G);
		}
	}
	if (ep.score) vote_flush<BM>(ep, sc, i0, j0, J, I);
}

__device__ __forceinline__ void vote_sign_epilogue(const float (&acc)[4][4][4],
	unsigned char *smem, int64_t i0, int64_t j0, int64_t I, int64_t J, const EpArgs &ep)
{
	const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
	const int wm = warp >> 2, wn = warp & 3, g = lane >> 2, q = lane & 3;
	int8_t *sg = (int8_t *)smem;
#pragma unroll
	for (int mi = 0; mi < 4; mi++)
#pragma unroll
		for (int ni = 0; ni < 4; ni++)
#pragma unroll
			for (int c = 0; c < 4; c++) {
				int il = wm * 64 + mi * 16 + g + (c >> 1) * 8;
				int jl = wn * 32 + ni * 8 + 2 * q + (c & 1);
				float d = acc[mi][ni][c];
				sg[il * EPS_LD + jl] = (int8_t)((d > 0.0f) - (d < 0.0f));
			}
	vote_tile_apply(sg, EPS_LD, (int *)(smem + BM * EPS_LD), i0, j0, I, J, ep);
}

static void split_sum_launch(const float *part, int64_t S, int64_t n, float *out, int acc);
#include "wgmma.cuh"

/* a 128 x 128 mma.sync tile's accumulators (both tile kernels) to zero */
__device__ __forceinline__ void tile_zero(float (&acc)[4][4][4])
{
#pragma unroll
	for (int a = 0; a < 4; a++)
#pragma unroll
		for (int b = 0; b < 4; b++)
#pragma unroll
			for (int c = 0; c < 4; c++) acc[a][b][c] = 0.0f;
}

/* one BK-wide stage of a 128 x 128 mma.sync tile from shared memory (A
 * rows and B columns padded to SROW): warp (wm, wn) accumulates its 64 x 32
 * block (ldmatrix x4, m16n8k16) */
__device__ __forceinline__ void tile_mma(float (&acc)[4][4][4], const __nv_bfloat16 *A,
					 const __nv_bfloat16 *B, int wm, int wn, int lane)
{
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
}

/* the epilogue of a 128 x 128 mma.sync tile (both tile kernels): warp
 * (wm, wn) of 2 x 4 holds acc[mi][ni][c] for row wm * 64 + mi * 16 + lane / 4
 * (+8 for c >= 2), column wn * 32 + ni * 8 + 2 (lane % 4) + (c & 1); the
 * store, the votes (sign: vote_sign_epilogue; sr and measure per element)
 * and the sr sum of squares */
template <int MODE>
__device__ __forceinline__ void tile_epilogue(const float (&acc)[4][4][4], unsigned char *smem,
					      int64_t i0, int64_t j0, int64_t I, int64_t J,
					      const EpArgs &ep)
{
	const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
	const int wm = warp >> 2, wn = warp & 3;
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
	if (MODE == EP_VOTE && ep.kind == ARB_VOTE_SIGN && !ep.parts) {
		vote_sign_epilogue(acc, smem, i0, j0, I, J, ep);
		return;
	}
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
	tile_zero(acc);
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
		tile_mma(acc, A, B, wm, wn, lane);
		if (kt + 1 < nk) {
			tile_store<LA>(As + (buf ^ 1) * BM * SROW, ra);
			tile_store<LB>(Bs + (buf ^ 1) * BN * SROW, rb);
		}
		__syncthreads();
	}

	tile_epilogue<MODE>(acc, smem, i0, j0, I, J, ep);
}

/* ---------------------------------------------------------------------------
 * M >= 64: both operands are first written as K-major bf16 workspaces with a
 * leading dimension padded to a multiple of 8 (zero padding), then one
 * tensor-core GEMM C[i][j] = sum_r A[i][r] B[j][r] with 16-byte cp.async
 * loads, a 4-stage shared-memory pipeline (80-byte padded rows: ldmatrix
 * and the 16-byte stores are conflict-free), 2 CTAs per SM, mma.sync
 * m16n8k16. forward: A = x, B = W; backward_x: A = dy, B = W^T;
 * vote: A = dy^T, B = x^T. */
#define GS_STAGES 4
#define GS_SMEM ((size_t)GS_STAGES * (BM + BN) * SROW * 2)

static inline int64_t pad8(int64_t r) { return (r + 7) & ~(int64_t)7; }


/* fp32 [rows][cols] -> bf16 [rows][ldp] (zero padded; ldp a multiple of
 * 8): a thread converts 8 consecutive columns and stores them as one 16-byte
 * word (h16: the per-element 64-bit index division made the 4096 x 4096
 * conversion 58 us) */
__device__ __forceinline__ void to_bf16_part(const float *src, int64_t rows, int64_t cols,
					     int64_t ldp, __nv_bfloat16 *dst, int64_t bid,
					     int64_t nblk)
{
	const int64_t w8 = ldp >> 3, n = rows * w8, st = nblk * blockDim.x;
	const int vec = (cols & 3) == 0 && ((uintptr_t)src & 15) == 0;
	/* two items a step, both loaded before either is stored (h17) */
	for (int64_t e0 = bid * blockDim.x + threadIdx.x; e0 < n; e0 += 2 * st) {
		float f[2][8];
		int64_t off[2];
#pragma unroll
		for (int u = 0; u < 2; u++) {
			const int64_t e = e0 + u * st;
			const int64_t r = (e < 0xffffffffll && w8 < 0xffffffffll) ?
				(int64_t)((uint32_t)e / (uint32_t)w8) : e / w8;
			const int64_t c = 8 * (e - r * w8);
			const float *s = src + r * cols + c;
			off[u] = e < n ? r * ldp + c : -1;
			if (e >= n) continue;
			if (vec && c + 8 <= cols) {
				const float4 a = __ldg((const float4 *)s), b = __ldg((const float4 *)s + 1);
				f[u][0] = a.x; f[u][1] = a.y; f[u][2] = a.z; f[u][3] = a.w;
				f[u][4] = b.x; f[u][5] = b.y; f[u][6] = b.z; f[u][7] = b.w;
			} else {
#pragma unroll
				for (int j = 0; j < 8; j++) f[u][j] = c + j < cols ? __ldg(s + j) : 0.0f;
			}
		}
#pragma unroll
		for (int u = 0; u < 2; u++) {
			if (off[u] < 0) break;
			uint4 o;
			uint32_t *ow = (uint32_t *)&o;
#pragma unroll
			for (int j = 0; j < 4; j++) {
				__nv_bfloat162 h = __floats2bfloat162_rn(f[u][2 * j], f[u][2 * j + 1]);
				ow[j] = *(uint32_t *)&h;
			}
			*(uint4 *)(dst + off[u]) = o;
		}
	}
}
__global__ void to_bf16_kernel(const float *src, int64_t rows, int64_t cols, int64_t ldp,
			       __nv_bfloat16 *dst)
{
	to_bf16_part(src, rows, cols, ldp, dst, blockIdx.x, gridDim.x);
}
/* fp32 [rows][cols] -> bf16 transposed [cols][ldp], ldp >= rows (zero
 * padded, a multiple of 8); block (32, 8), a 64 x 64 tile: two consecutive
 * source rows per thread stored as one bf16 pair */
__global__ void to_bf16_t_kernel(const float *src, int64_t rows, int64_t cols, int64_t ldp,
				 __nv_bfloat16 *dst)
{
	__shared__ float t[64][65];
	const int64_t r0 = (int64_t)blockIdx.y * 64, c0 = (int64_t)blockIdx.x * 64;
	const int tx = threadIdx.x, ty = threadIdx.y;
	const int vec = (cols & 1) == 0 && ((uintptr_t)src & 7) == 0;
	for (int i = ty; i < 64; i += 8) {
		const int64_t r = r0 + i, c = c0 + 2 * tx;
		float2 v = make_float2(0.0f, 0.0f);
		if (r < rows) {
			const float *p = src + r * cols + c;
			if (vec && c + 1 < cols) {
				v = __ldg((const float2 *)p);
			} else {
				if (c < cols) v.x = __ldg(p);
				if (c + 1 < cols) v.y = __ldg(p + 1);
			}
		}
		t[i][2 * tx] = v.x;
		t[i][2 * tx + 1] = v.y;
	}
	__syncthreads();
	for (int i = ty; i < 64; i += 8) {
		const int64_t c = c0 + i, r = r0 + 2 * tx;
		if (c >= cols || r >= ldp) continue;
		const __nv_bfloat162 h = __floats2bfloat162_rn(t[2 * tx][i], t[2 * tx + 1][i]);
		*(__nv_bfloat162 *)(dst + c * ldp + r) = h;
	}
}
/* the five weights of packed byte column bc of row r as bf16: scales looked
 * up once per group (a byte's five columns touch at most two), trits by
 * exact division by 3; columns >= cols are zero. byte5_load reads (the
 * loads of several bytes can be issued before any is decoded), byte5_emit
 * decodes. */
struct Byte5 {
	unsigned int q;
	float s0, s1;
	int split;     /* j >= split: the second group */
};
__device__ __forceinline__ Byte5 byte5_load(const tern_view &v, int64_t r, int64_t bc)
{
	Byte5 b;
	b.q = r < v.rows ? __ldg(v.packed + r * v.row_bytes + bc) : 121u;
	const int64_t c0 = bc * 5;
	const int g0 = (int)((uint32_t)c0 / (uint32_t)v.gs);
	b.split = (int)((int64_t)(g0 + 1) * v.gs - c0);
	b.s0 = 0.0f;
	b.s1 = 0.0f;
	if (r < v.rows) {
		if (g0 < v.groups) b.s0 = view_scale(v, r, g0);
		if (b.split < 5 && g0 + 1 < v.groups) b.s1 = view_scale(v, r, g0 + 1);
	}
	return b;
}
__device__ __forceinline__ void byte5_emit(const Byte5 &b, int64_t c0, int64_t cols,
					   __nv_bfloat16 *w5)
{
	unsigned int q = b.q;
#pragma unroll
	for (int j = 0; j < 5; j++) {
		const unsigned int q1 = (q * 43691u) >> 17;
		const int t = (int)(q - 3u * q1) - 1;
		q = q1;
		const float w = (t && c0 + j < cols) ? (float)t * (j < b.split ? b.s0 : b.s1) : 0.0f;
		w5[j] = __float2bfloat16(w);
	}
}
__device__ __forceinline__ void decode_byte5(const tern_view &v, int64_t r, int64_t bc,
					     __nv_bfloat16 *w5)
{
	byte5_emit(byte5_load(v, r, bc), bc * 5, v.cols, w5);
}
/* W^T -> bf16 [cols][ldp] (ldp >= rows, zero padded; even); grid (pairs of
 * rows in blocks of 256, byte columns): a thread decodes one byte column of
 * two adjacent rows and stores bf16 pairs, 128 bytes a warp (h16: a scale
 * lookup per weight and 64-bit divisions took 98 us at 4096^2, single-row
 * 2-byte stores 51 us, pairs 47 us) */
__global__ void decode_t_kernel(tern_view v, int64_t ldp, __nv_bfloat16 *out)
{
	const int64_t r = 2 * ((int64_t)blockIdx.x * blockDim.x + threadIdx.x);
	if (r >= ldp) return;
	for (int64_t bc = blockIdx.y; bc < v.row_bytes; bc += gridDim.y) {
		__nv_bfloat16 a5[5], b5[5];
		decode_byte5(v, r, bc, a5);
		decode_byte5(v, r + 1, bc, b5);
		const int64_t c0 = bc * 5;
#pragma unroll
		for (int j = 0; j < 5; j++)
			if (c0 + j < v.cols)
				*(__nv_bfloat162 *)(out + (c0 + j) * ldp + r) = __halves2bfloat162(a5[j], b5[j]);
	}
}
/* block b of n in a launch with nd decode blocks spread evenly among the
 * others: *dec whether b decodes, *idx its index among its kind */
__device__ __forceinline__ void prep_role(unsigned int b, unsigned int n, unsigned int nd,
					  unsigned int *dec, unsigned int *idx)
{
	const unsigned int before = (unsigned int)(((unsigned long long)b * nd) / n);
	const unsigned int after = (unsigned int)(((unsigned long long)(b + 1) * nd) / n);
	*dec = after > before;
	*idx = *dec ? before : b - before;
}
/* W^T -> bf16 [cols][ldp] (ldp >= rows, a multiple of 8, zero padded) by
 * tiles of 64 rows x 16 packed bytes (80 columns): the tile's bytes read
 * row-wise (4 a thread), decoded into shared memory column-major, written
 * as 128-byte runs of W^T rows (16 bytes a thread). Tile t of the grid's
 * blocks bid, bid + nblk, ... (h17: decode_t_kernel read a byte column per
 * warp, 32 rows' lines for 32 bytes) */
#define DT_R 64
#define DT_B 16
__device__ __forceinline__ void decode_t_part(const tern_view &v, int64_t ldp,
					      __nv_bfloat16 *out, int64_t bid, int64_t nblk)
{
	__shared__ __align__(16) __nv_bfloat16 tt[5 * DT_B][DT_R + 8];
	const int tid = threadIdx.x;
	const int64_t ntr = (ldp + DT_R - 1) / DT_R, ntb = (v.row_bytes + DT_B - 1) / DT_B;
	for (int64_t t = bid; t < ntr * ntb; t += nblk) {
		const int64_t tb = t / ntr, r0 = (t - tb * ntr) * DT_R, b0 = tb * DT_B;
		const int rl = tid >> 2, bl = 4 * (tid & 3);
		Byte5 by[4];
#pragma unroll
		for (int i = 0; i < 4; i++) {
			by[i].q = 121u;
			by[i].s0 = by[i].s1 = 0.0f;
			by[i].split = 5;
			if (b0 + bl + i < v.row_bytes) by[i] = byte5_load(v, r0 + rl, b0 + bl + i);
		}
		__syncthreads(); /* the previous tile's stores have read tt */
#pragma unroll
		for (int i = 0; i < 4; i++) {
			__nv_bfloat16 w5[5];
			byte5_emit(by[i], 5 * (b0 + bl + i), v.cols, w5);
#pragma unroll
			for (int j = 0; j < 5; j++) tt[5 * (bl + i) + j][rl] = w5[j];
		}
		__syncthreads();
		const int64_t c0 = 5 * b0;
		for (int e = tid; e < 5 * DT_B * (DT_R / 8); e += blockDim.x) {
			const int c = e >> 3, ch = 8 * (e & 7);
			if (c0 + c >= v.cols || r0 + ch >= ldp) continue;
			*(uint4 *)(out + (c0 + c) * ldp + r0 + ch) = *(const uint4 *)&tt[c][ch];
		}
	}
}
/* backward_x's operands in one launch: W^T tiles and dy conversion blocks
 * spread evenly (as prep_fwd_kernel; h17: one template kernel for both
 * compiled the backward's to 70 registers instead of 64 and was 2-3 %
 * slower, so they stay two kernels) */
__global__ void prep_bwd_kernel(tern_view v, int64_t ldp, __nv_bfloat16 *wt, const float *dy,
				int64_t M, int64_t N, __nv_bfloat16 *dyb, unsigned int nbd)
{
	unsigned int dec, idx;
	prep_role(blockIdx.x, gridDim.x, nbd, &dec, &idx);
	if (dec)
		decode_t_part(v, ldp, wt, idx, nbd);
	else
		to_bf16_part(dy, M, N, ldp, dyb, idx, gridDim.x - nbd);
}

/* W -> bf16 [rows][ldp] (ldp >= cols, zero padded; a multiple of 8 or of
 * 4 at least): a thread decodes 4 consecutive bytes of a row (20 weights,
 * 40 bytes of output: five 8-byte stores; its 4 bytes' loads are out
 * before any is decoded); blocks bid of nblk take part (h17: one byte per thread,
 * five scattered 2-byte stores and one byte in flight was latency-bound at
 * 13 % of DRAM bandwidth; h16: a warp staging 256 bytes' columns in shared
 * memory for 16-byte stores took 32.8 instead of 34.6 us at 4096^2) */
__device__ __forceinline__ void decode_p_part(const tern_view &v, int64_t ldp,
					      __nv_bfloat16 *out, int64_t bid, int64_t nblk)
{
	const int64_t wpr = (v.row_bytes + 3) >> 2, n = v.rows * wpr;
	for (int64_t e = bid * blockDim.x + threadIdx.x; e < n; e += nblk * blockDim.x) {
		const int64_t r = (e < 0xffffffffll && wpr < 0xffffffffll) ?
			(int64_t)((uint32_t)e / (uint32_t)wpr) : e / wpr;
		const int64_t bc0 = 4 * (e - r * wpr), c0 = 5 * bc0;
		Byte5 by[4];
#pragma unroll
		for (int i = 0; i < 4; i++) {
			by[i].q = 121u;
			by[i].s0 = by[i].s1 = 0.0f;
			by[i].split = 5;
			if (bc0 + i < v.row_bytes) by[i] = byte5_load(v, r, bc0 + i);
		}
		__align__(8) __nv_bfloat16 w[20];
#pragma unroll
		for (int i = 0; i < 4; i++) byte5_emit(by[i], c0 + 5 * i, v.cols, w + 5 * i);
		__nv_bfloat16 *o = out + r * ldp + c0;
		if (c0 + 20 <= ldp && (ldp & 3) == 0) {
#pragma unroll
			for (int i = 0; i < 5; i++) ((uint2 *)o)[i] = ((const uint2 *)w)[i];
		} else {
#pragma unroll
			for (int j = 0; j < 20; j++)
				if (c0 + j < ldp) o[j] = w[j];
		}
	}
}
__global__ void decode_p_kernel(tern_view v, int64_t ldp, __nv_bfloat16 *out)
{
	decode_p_part(v, ldp, out, blockIdx.x, gridDim.x);
}
__global__ void prep_fwd_kernel(tern_view v, int64_t ldp, __nv_bfloat16 *wb, const float *x,
				int64_t M, int64_t K, __nv_bfloat16 *xb, unsigned int nbd)
{
	/* the two kinds of blocks spread evenly over the grid (blocks start
	 * roughly in index order: h17, decode blocks first then conversion
	 * ones took 77.6 us at 4096^2; alternating, 59.6 us) */
	unsigned int dec, idx;
	prep_role(blockIdx.x, gridDim.x, nbd, &dec, &idx);
	if (dec)
		decode_p_part(v, ldp, wb, idx, nbd);
	else
		to_bf16_part(x, M, K, ldp, xb, idx, gridDim.x - nbd);
}

/* grid: (cdiv(J,BN), cdiv(I,BM)); block 256; dynamic smem GS_SMEM */
template <int MODE>
__global__ void __launch_bounds__(256, 2) gemm_tn_kernel2(const __nv_bfloat16 *Ag,
	const __nv_bfloat16 *Bg, int64_t I, int64_t J, int64_t R, int64_t ldp, EpArgs ep)
{
	extern __shared__ __align__(16) unsigned char smem[];
	__nv_bfloat16 *As = (__nv_bfloat16 *)smem;
	__nv_bfloat16 *Bs = As + GS_STAGES * BM * SROW;
	int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
	int wm = warp >> 2, wn = warp & 3;             /* 2 x 4 warps */
	int64_t i0 = (int64_t)blockIdx.y * BM, j0 = (int64_t)blockIdx.x * BN;
	float acc[4][4][4];
	tile_zero(acc);
	const int nk = (int)((R + BK - 1) / BK);
	auto load_stage = [&](int st, int kt) {
#pragma unroll
		for (int h = 0; h < 2; h++) {
			int c = tid + 256 * h, row = c >> 2, c8 = (c & 3) * 8;
			int64_t k = (int64_t)kt * BK + c8;
			int64_t ia = i0 + row, jb = j0 + row;
			int oka = ia < I && k < ldp, okb = jb < J && k < ldp;
			cp_async16(As + (st * BM + row) * SROW + c8,
				   Ag + (oka ? ia * ldp + k : 0), oka ? 16 : 0);
			cp_async16(Bs + (st * BN + row) * SROW + c8,
				   Bg + (okb ? jb * ldp + k : 0), okb ? 16 : 0);
		}
	};
#pragma unroll
	for (int s = 0; s < GS_STAGES - 1; s++) {
		if (s < nk) load_stage(s, s);
		cp_commit();
	}
	for (int kt = 0; kt < nk; kt++) {
		cp_wait<GS_STAGES - 2>();
		__syncthreads();
		int kn = kt + GS_STAGES - 1;
		if (kn < nk) load_stage(kn % GS_STAGES, kn);
		cp_commit();
		int buf = kt % GS_STAGES;
		const __nv_bfloat16 *A = As + buf * BM * SROW, *B = Bs + buf * BN * SROW;
		tile_mma(acc, A, B, wm, wn, lane);
	}
	cp_wait<0>();
	__syncthreads();

	tile_epilogue<MODE>(acc, smem, i0, j0, I, J, ep);
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
 * skinny forward v3, M <= 16, group_size a power of two in [16, 64], E-only
 * scales (no bigint correction).
 *
 * The reduction index k may be permuted freely as long as W and x use the
 * same permutation. A k-block is 320 weights = 64 packed bytes of a row;
 * lane (g, q) of a warp owns bytes 16q..16q+15 (80 trits) of rows g and g+8
 * of a 16-row tile, and mma step s (0..19) feeds it the trits 4s..4s+3 of
 * those 80 as its four k slots. x is staged in shared memory as bf16 in the
 * same order, so the B fragment of a lane is one conflict-free 8-byte load.
 * Trits become bf16 +-2^E directly (the group scale is folded into A, exact
 * for power-of-two scales): a 243-entry table maps a packed byte to five
 * PRMT selectors, and PRMT picks the bytes of h = bf16(2^E), h | sign, or
 * zero. Split-K over k-blocks; the last CTA of a row tile sums the split
 * partials in a fixed order (deterministic).
 * CTA: 8 warps x TPW tiles = 128 TPW rows; KPC k-blocks per CTA (TPW = 1
 * when the grid would be small: h14 ncu showed 0.5 waves and 2 warps per
 * scheduler for the moe's 2048 x 512 weights at 256 rows per CTA). */
#define S3_ROWS 256
#define S3_KB 320
#ifndef S3_TPW_SMS
#define S3_TPW_SMS 2 /* 256-row CTAs only when they alone (with all their
		      * split-K) fill S3_TPW_SMS CTAs per SM (h15: at two CTAs
		      * per SM, 128-row CTAs made fwd M=16 at 4096^2 21.9 us
		      * against 25.9) */
#endif
#ifndef S3_MINB
#define S3_MINB 2 /* CTAs per SM: 128 registers (h15: the 256-row, 16-token
		   * instance used 162, one CTA per SM; two made fwd M=16 at
		   * 4096^2 29.5-29.9 -> 25.8-25.9 us in the same call) */
#endif

__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t s)
{
	uint32_t d;
	asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(s));
	return d;
}

/* 16 packed bytes of row n at byte offset off (any alignment), in two
 * halves: s3_issue only loads the five aligned 4-byte words over them,
 * s3_finish (at the point of use) shifts them into place, so a load's latency
 * is not taken where it is issued (h22 ncu: the select right after the
 * loads was the v3 kernel's top stall at 16 tokens). Bytes past the row
 * (off + t >= rb) or of rows >= N read as zero trits (121). */
struct S3Raw {
	uint32_t w[5]; /* the aligned words over the 16 bytes */
	int ol;        /* byte offset in w[0] | valid bytes << 8 (16: all) */
};
__device__ __forceinline__ void s3_issue(const uint8_t *packed, int64_t N, int64_t rb,
					 int64_t n, int64_t off, S3Raw &w)
{
	if (n >= N || off >= rb) {
#pragma unroll
		for (int i = 0; i < 5; i++) w.w[i] = 0x79797979u;
		w.ol = 16 << 8;
		return;
	}
	const uint8_t *p = packed + n * rb + off;
	const uint8_t *end = packed + N * rb;
	const uintptr_t ad = (uintptr_t)p;
	const int o = (int)(ad & 3);
	const uint32_t *a0 = (const uint32_t *)(ad - o);
#pragma unroll
	for (int i = 0; i < 4; i++) w.w[i] = __ldg(a0 + i); /* a0 + 3 holds byte 15 - o >= 12 */
	w.w[4] = (const uint8_t *)(a0 + 4) < end ? __ldg(a0 + 4) : 0u;
	w.ol = o | (off + 16 > rb ? (int)(rb - off) : 16) << 8;
}
__device__ __forceinline__ void s3_finish(const S3Raw &c, uint32_t *r)
{
	const int sh = 8 * (c.ol & 3), lim = c.ol >> 8;
#pragma unroll
	for (int i = 0; i < 4; i++) r[i] = __funnelshift_r(c.w[i], c.w[i + 1], sh);
	if (lim < 16) {
#pragma unroll
		for (int t = 0; t < 16; t++)
			if (t >= lim) r[t >> 2] = (r[t >> 2] & ~(0xffu << (8 * (t & 3)))) | (0x79u << (8 * (t & 3)));
	}
}
__device__ __forceinline__ void s3_load(const uint8_t *packed, int64_t N, int64_t rb,
					int64_t n, int64_t off, uint32_t *r)
{
	S3Raw w;
	s3_issue(packed, N, rb, n, off, w);
	s3_finish(w, r);
}
/* a k-block's 16 bytes in the v3 kernel: DF, the loads' two halves apart
 * (s3_issue now, s3_finish at use); otherwise finished where issued (the
 * 16-token, 256-row instance has no registers for the raw words: 412 bytes
 * of spills) */
template <bool DF> struct S3Slot {
	S3Raw r;
	__device__ __forceinline__ void issue(const uint8_t *p, int64_t N, int64_t rb, int64_t n,
					      int64_t off) { s3_issue(p, N, rb, n, off, r); }
	__device__ __forceinline__ void get(uint32_t *o) const { s3_finish(r, o); }
};
template <> struct S3Slot<false> {
	uint32_t b[4];
	__device__ __forceinline__ void issue(const uint8_t *p, int64_t N, int64_t rb, int64_t n,
					      int64_t off) { s3_load(p, N, rb, n, off, b); }
	__device__ __forceinline__ void get(uint32_t *o) const
	{
#pragma unroll
		for (int i = 0; i < 4; i++) o[i] = b[i];
	}
};

/* the 243-entry selector table in shared memory (a 256-thread CTA): entry
 * b holds, for each digit j of packed byte b, the PRMT selector byte that
 * picks bf16 -2^E (digit 0: 0x32), zero (1: 0x44, a byte of the zero
 * operand) or +2^E (2: 0x10) from the word 2^E | (-2^E) << 16 */
__device__ __forceinline__ void s3_table(unsigned long long *tab)
{
	for (int e = threadIdx.x; e < 243; e += 256) {
		unsigned long long L = 0;
		unsigned int p = (unsigned int)e;
		for (int j = 0; j < 5; j++) {
			unsigned int c = p % 3u;
			p /= 3u;
			unsigned long long s = c == 0 ? 0x32ull : (c == 1 ? 0x44ull : 0x10ull);
			L |= s << (8 * j);
		}
		tab[e] = L;
	}
}

/* 16 bytes -> 80 PRMT selector bytes (20 words, word s = step s) */
__device__ __forceinline__ void s3_sel(const uint32_t *r, const unsigned long long *tab, uint32_t *sw)
{
#pragma unroll
	for (int i = 0; i < 20; i++) sw[i] = 0;
#pragma unroll
	for (int t = 0; t < 16; t++) {
		unsigned long long L = tab[(r[t >> 2] >> (8 * (t & 3))) & 0xffu];
		const int off = 5 * t, w0 = off >> 2, sh = 8 * (off & 3);
		sw[w0] |= (uint32_t)(L << sh);
		sw[w0 + 1] |= (uint32_t)(L >> (32 - sh));
		if (sh + 40 > 64) sw[w0 + 2] |= (uint32_t)(L >> (64 - sh));
	}
}

/* zero a [A][B][4] array of mma accumulator fragments */
template <int A, int B>
__device__ __forceinline__ void frag_zero(float (&a)[A][B][4])
{
#pragma unroll
	for (int i = 0; i < A; i++)
#pragma unroll
		for (int j = 0; j < B; j++)
#pragma unroll
			for (int c = 0; c < 4; c++) a[i][j][c] = 0.0f;
}

/* split-K: each CTA has stored its partial sums of rows nt0 .. nt0 + nv - 1
 * (part[s * stride + m * N + n], s = blockIdx.y); the last CTA to arrive on
 * *slot adds all splits' partials in split order into y (y += when acc) and
 * resets the counter. Every thread of the (256-thread) CTA calls it. The
 * loads of a batch of 8 outputs per thread are all in flight before any
 * result is stored (a store per element would serialize them: y and part
 * may alias as far as the compiler knows). */
__device__ __noinline__ void split_finish(const float *part, float *y, unsigned int *slot, int64_t N,
			     int64_t stride, int64_t nt0, int nv, int M, int acc)
{
	__shared__ int is_last;
	const int tid = threadIdx.x;
	/* the barrier orders the CTA's partials before thread 0's fence and
	 * arrival (h20: a fence by every thread cost the one-token table
	 * kernel a fifth of its stall samples) */
	__syncthreads();
	if (tid == 0) {
		__threadfence();
		is_last = atomicAdd(slot, 1u) == gridDim.y - 1;
	}
	__syncthreads();
	if (!is_last) return;
	__threadfence();
	const unsigned int S = gridDim.y;
	if (nv * M <= 256) {
		/* at most one output a thread: its splits' loads 8 at a time */
		const int m = tid / nv;
		const int64_t off = (int64_t)m * N + nt0 + (tid - m * nv);
		if (tid < nv * M) {
			float sum = 0.0f;
			unsigned int sp = 0;
			for (; sp + 8 <= S; sp += 8) {
				float a[8];
#pragma unroll
				for (int u = 0; u < 8; u++) a[u] = __ldcg(part + (int64_t)(sp + u) * stride + off);
#pragma unroll
				for (int u = 0; u < 8; u++) sum += a[u];
			}
			for (; sp < S; sp++) sum += __ldcg(part + (int64_t)sp * stride + off);
			y[off] = acc ? y[off] + sum : sum;
		}
		if (tid == 0) *slot = 0;
		return;
	}
	for (int e0 = tid; e0 < nv * M; e0 += 256 * 8) {
		int64_t off[8];
		float sum[8];
#pragma unroll
		for (int u = 0; u < 8; u++) {
			int e = e0 + 256 * u, m = e / nv;
			off[u] = e < nv * M ? (int64_t)m * N + nt0 + (e - m * nv) : -1;
			sum[u] = 0.0f;
		}
#pragma unroll 2
		for (unsigned int sp = 0; sp < S; sp++) {
			float a[8];
#pragma unroll
			for (int u = 0; u < 8; u++)
				a[u] = off[u] >= 0 ? __ldcg(part + (int64_t)sp * stride + off[u]) : 0.0f;
#pragma unroll
			for (int u = 0; u < 8; u++) sum[u] += a[u];
		}
		float old[8];
		if (acc) {
#pragma unroll
			for (int u = 0; u < 8; u++) old[u] = off[u] >= 0 ? y[off[u]] : 0.0f;
		}
#pragma unroll
		for (int u = 0; u < 8; u++)
			if (off[u] >= 0) y[off[u]] = acc ? old[u] + sum[u] : sum[u];
	}
	if (tid == 0) *slot = 0;
}

/* 128-row CTAs (TPW 1) at three an SM: 80 registers, no spills (h22, same
 * call: 16 tokens at 11008 x 4096 37.0-37.1 vs 38.3 us, 4096 x 11008
 * 33.4-33.6 vs 34.6, 8 tokens 34.3-34.5 vs 36.3 and 30.6-30.7 vs 31.6-31.7;
 * 4096^2 21.2-21.3 vs 20.9-21.0, one wave either way) */
template <int NT, int TPW>
__global__ void __launch_bounds__(256, TPW == 1 ? 3 : S3_MINB) skinny_fwd_kernel3(tern_view v, const float *x,
	float *y, int Mt, int acc, int kpc, int lg, float *part, unsigned int *cnt)
{
	/* grid.z: 16-token chunks of x (Mt tokens in all); partials [S][Mt][N],
	 * one arrival counter per (row tile, chunk) */
	const int mz = blockIdx.z * 16;
	const int M = Mt - mz < 16 ? Mt - mz : 16;
	x += (int64_t)mz * v.cols;
	y += (int64_t)mz * v.rows;
	if (part) part += (int64_t)mz * v.rows;
	if (cnt) cnt += (size_t)blockIdx.z * gridDim.x;
	extern __shared__ __align__(16) unsigned char sm[];
	unsigned long long *tab = (unsigned long long *)sm;              /* [243] (256) */
	__nv_bfloat16 *xs = (__nv_bfloat16 *)(tab + 256);                /* [kpc*20][16][16] */
	uint32_t *aw = (uint32_t *)(xs + (size_t)kpc * 20 * 256);         /* [256][ngc] */
	const int64_t N = v.rows, K = v.cols, rb = v.row_bytes;
	const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
	const int g = lane >> 2, q = lane & 3;
	const int64_t nblk = (K + S3_KB - 1) / S3_KB;
	const int64_t blk0 = (int64_t)blockIdx.y * kpc;
	const int nbk = (int)(nblk - blk0 < kpc ? nblk - blk0 : kpc);
	const int64_t nt0 = (int64_t)blockIdx.x * (128 * TPW);
	const int64_t kbase = blk0 * S3_KB;
	/* W bytes of the first k-block in flight before the shared-memory fills */
	S3Slot<!(NT == 2 && TPW == 2)> wb[TPW][2];
#pragma unroll
	for (int t = 0; t < TPW; t++)
#pragma unroll
		for (int h = 0; h < 2; h++)
			wb[t][h].issue(v.packed, N, rb, nt0 + warp * 16 * TPW + t * 16 + g + 8 * h,
				       blk0 * 64 + 16 * q);
	s3_table(tab);
	/* x tile in the permuted order: k = kbase + 320 kb + 80 q + 4 s + slot.
	 * Four consecutive k (one slot quad) are one float4 load when x rows
	 * are 16-byte aligned and one 8-byte shared store; a work item is a
	 * quad for 8 tokens (8 loads in flight), items spread over all threads
	 * with constant divisors only (h15 ncu: the per-element index division
	 * of the previous staging was most of the kernel's instructions) */
	const int kw = nbk * S3_KB, kw4 = kw >> 2;
	const int vec = (K & 3) == 0 && ((uintptr_t)x & 15) == 0;
	for (int it = tid; it < 2 * kw4; it += 256) {
		const int half = it >= kw4, j = it - half * kw4;
		const int kb = j / 80, r = j - kb * 80, qq = r / 20, s = r - qq * 20;
		const int64_t k = kbase + 4 * (int64_t)j;
		float4 xv[8];
#pragma unroll
		for (int u = 0; u < 8; u++) {
			const int m = 8 * half + u;
			const float *xp = x + (int64_t)m * K + k;
			xv[u] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
			if (m < M && k < K) {
				if (vec && k + 3 < K) {
					xv[u] = __ldg((const float4 *)xp);
				} else {
					xv[u].x = __ldg(xp);
					if (k + 1 < K) xv[u].y = __ldg(xp + 1);
					if (k + 2 < K) xv[u].z = __ldg(xp + 2);
					if (k + 3 < K) xv[u].w = __ldg(xp + 3);
				}
			}
		}
		__nv_bfloat16 *dst = xs + (((kb * 20 + s) * 16 + 8 * half) * 4 + qq) * 4;
#pragma unroll
		for (int u = 0; u < 8; u++) {
			__nv_bfloat162 lo = __floats2bfloat162_rn(xv[u].x, xv[u].y);
			__nv_bfloat162 hi = __floats2bfloat162_rn(xv[u].z, xv[u].w);
			uint2 pk2;
			pk2.x = *(uint32_t *)&lo;
			pk2.y = *(uint32_t *)&hi;
			*(uint2 *)(dst + u * 16) = pk2;
		}
	}
	/* A source words per (row, group): bf16 2^E | (bf16 -2^E) << 16; 256 /
	 * (128 TPW) threads per row, 8 loads in flight */
	const int gfirst = (int)(kbase >> lg);
	const int64_t klast = (kbase + kw < K ? kbase + kw : K) - 1;
	const int ngc = (int)(klast >> lg) - gfirst + 1;
	{
		constexpr int NR = 128 * TPW, TPR = 256 / NR;
		const int rr = tid % NR;
		const int64_t n = nt0 + rr;
		const int8_t *er = v.E + (n < N ? n : 0) * v.groups + gfirst;
		for (int g0 = tid / NR; g0 < ngc; g0 += 8 * TPR) {
			int ex[8];
#pragma unroll
			for (int u = 0; u < 8; u++) {
				const int gg = g0 + u * TPR;
				ex[u] = (n < N && gg < ngc) ? (int)er[gg] : 1000; /* 1000: no row */
			}
#pragma unroll
			for (int u = 0; u < 8; u++) {
				const int gg = g0 + u * TPR;
				if (gg >= ngc) break;
				uint32_t wv = 0;
				if (ex[u] != 1000) {
					uint32_t h = ex[u] < -126 ? 0u : (uint32_t)(ex[u] + 127) << 7;
					wv = h | ((h | 0x8000u) << 16);
				}
				aw[rr * ngc + gg] = wv;
			}
		}
	}
	__syncthreads();
	float accf[TPW][NT][4];
	frag_zero(accf);
	const uint2 *xs2 = (const uint2 *)xs;
	for (int kb = 0; kb < nbk; kb++) {
		/* this k-block's bytes; the next block's loads go out before the
		 * decode and mma of this one */
		uint32_t cb[TPW][2][4];
#pragma unroll
		for (int t = 0; t < TPW; t++)
#pragma unroll
			for (int h = 0; h < 2; h++) wb[t][h].get(cb[t][h]);
		if (kb + 1 < nbk) {
#pragma unroll
			for (int t = 0; t < TPW; t++)
#pragma unroll
				for (int h = 0; h < 2; h++)
					wb[t][h].issue(v.packed, N, rb, nt0 + warp * 16 * TPW + t * 16 + g + 8 * h,
						       (blk0 + kb + 1) * 64 + 16 * q);
		}
		const int kq = kb * S3_KB + 80 * q; /* relative to kbase */
#pragma unroll
		for (int t = 0; t < TPW; t++) {
			uint32_t sw0[20], sw1[20];
			s3_sel(cb[t][0], tab, sw0);
			s3_sel(cb[t][1], tab, sw1);
			const uint32_t *aw0 = aw + (warp * 16 * TPW + t * 16 + g) * ngc;
			const uint32_t *aw1 = aw0 + 8 * ngc;
			const int goff = (int)(kbase & ((1 << lg) - 1));
#pragma unroll
			for (int s = 0; s < 20; s++) {
				int gi = (goff + kq + 4 * s) >> lg;
				uint32_t h0 = aw0[gi], h1 = aw1[gi];
				uint32_t a[4];
				a[0] = prmt(h0, 0u, sw0[s]);
				a[1] = prmt(h1, 0u, sw1[s]);
				a[2] = prmt(h0, 0u, sw0[s] >> 16);
				a[3] = prmt(h1, 0u, sw1[s] >> 16);
#pragma unroll
				for (int u = 0; u < NT; u++) {
					uint2 b = xs2[((kb * 20 + s) * 16 + g + 8 * u) * 4 + q];
					mma16816(accf[t][u], a, b.x, b.y);
				}
			}
		}
	}
	/* accf[t][u][c]: row n = nt0 + warp*32 + t*16 + g + (c >> 1) * 8,
	 * token m = u*8 + 2q + (c & 1) */
	if (gridDim.y == 1) {
#pragma unroll
		for (int t = 0; t < TPW; t++)
#pragma unroll
			for (int u = 0; u < NT; u++)
#pragma unroll
				for (int c = 0; c < 4; c++) {
					int64_t n = nt0 + warp * 16 * TPW + t * 16 + g + (c >> 1) * 8;
					int m = u * 8 + 2 * q + (c & 1);
					if (n < N && m < M) {
						float *o = y + (int64_t)m * N + n;
						*o = acc ? *o + accf[t][u][c] : accf[t][u][c];
					}
				}
		return;
	}
#pragma unroll
	for (int t = 0; t < TPW; t++)
#pragma unroll
		for (int u = 0; u < NT; u++)
#pragma unroll
			for (int c = 0; c < 4; c++) {
				int64_t n = nt0 + warp * 16 * TPW + t * 16 + g + (c >> 1) * 8;
				int m = u * 8 + 2 * q + (c & 1);
				if (n < N && m < M)
					part[((int64_t)blockIdx.y * Mt + m) * N + n] = accf[t][u][c];
			}
	split_finish(part, y, &cnt[blockIdx.x], N, (int64_t)Mt * N, nt0,
		     (int)(N - nt0 < (128 * TPW) ? N - nt0 : (128 * TPW)), M, acc);
}

/* table, x slice, and the exponent words of a CTA's rows (128 per TPW) */
static size_t s3_smem(int kpc, int gs, int rows)
{
	int ngc = kpc * S3_KB / gs + 2;
	return 256 * 8 + (size_t)kpc * 20 * 256 * 2 + (size_t)rows * ngc * 4;
}
static int skinny3_ok(const tern_view &v)
{
	int gs = v.gs;
	return !cuda_legacy("skinny") && !v.corr && (gs & (gs - 1)) == 0 && gs >= 16 && gs <= 64;
}
template <int NT, int TPW>
static void skinny3_launch(dim3 grid, size_t smem, const tern_view &v, const float *x, float *y,
			   int64_t M, int accumulate, int kpc, int lg, float *part, unsigned int *cnt)
{
	static int ready = 0;
	if (!ready) {
		CK(cudaFuncSetAttribute(skinny_fwd_kernel3<NT, TPW>,
			cudaFuncAttributeMaxDynamicSharedMemorySize, (int)s3_smem(4, 16, S3_ROWS)));
		ready = 1;
	}
	skinny_fwd_kernel3<NT, TPW><<<grid, 256, smem>>>(v, x, y, (int)M, accumulate, kpc, lg,
							  part, cnt);
}
static int skinny3_forward(arb_backend *be, const tern_view &v, const float *x, float *y,
			   int64_t M, int accumulate)
{
	int gs = v.gs, lg = 0;
	while ((1 << lg) < gs) lg++;
	if (!skinny3_ok(v) || M > 256) return 0;
	cuda_priv *p = cuda_get_priv(be);
	int64_t N = v.rows, K = v.cols;
	int64_t Z = (M + 15) / 16; /* 16-token chunks */
	int64_t nblk = (K + S3_KB - 1) / S3_KB;
	/* 128 rows per CTA unless there are several 16-token chunks and
	 * 256-row CTAs with all the split-K they can take already fill the GPU
	 * (S3_TPW_SMS CTAs per SM). h22, same calls: for one chunk (M <= 16)
	 * 128-row CTAs everywhere: 16 tokens at 4096 x 11008 34.9-35.2 vs
	 * 46.1 us, at 11008 x 4096 38.8-39.1 vs 41.6-41.7; with more chunks
	 * it depends on the shape (24..128 tokens: either way by up to 20 %) */
	int tpw = Z > 1 && ((N + 255) / 256) * Z * nblk >= S3_TPW_SMS * p->sms ? 2 : 1;
	int64_t rows = 128 * tpw;
	int64_t tiles = (N + rows - 1) / rows;
	int64_t want = (3 * (int64_t)p->sms + tiles * Z - 1) / (tiles * Z); /* splits */
	if (want < 1) want = 1;
	int64_t kpc = (nblk + want - 1) / want;
	/* at least 16 KB of packed weights a CTA: below that, the split
	 * partials' round trips (store, fence, arrival, reload) cost more than
	 * the extra k-blocks (h15: the moe's 2048 x 512 at S = 2 took 12 us) */
	int64_t kmin = (16384 + rows * 64 - 1) / (rows * 64);
	if (kpc < kmin) kpc = kmin;
	if (kpc > 4) kpc = 4;
	if (kpc < 1) kpc = 1;
	int64_t S = (nblk + kpc - 1) / kpc;
	unsigned int *cnt = NULL;
	float *part = S > 1 ? cuda_split_ws(be, S * M * N, &cnt, tiles * Z) : NULL;
	size_t smem = s3_smem((int)kpc, gs, (int)rows);
	dim3 grid((unsigned)tiles, (unsigned)S, (unsigned)Z);
	if (M <= 8) /* one chunk: tpw is 1 */
		skinny3_launch<1, 1>(grid, smem, v, x, y, M, accumulate, (int)kpc, lg, part, cnt);
	else if (tpw == 1)
		skinny3_launch<2, 1>(grid, smem, v, x, y, M, accumulate, (int)kpc, lg, part, cnt);
	else
		skinny3_launch<2, 2>(grid, smem, v, x, y, M, accumulate, (int)kpc, lg, part, cnt);
	CK_LAUNCH(skinny_fwd3);
	return 1;
}


/* ---------------------------------------------------------------------------
 * skinny forward v4, M <= 16 tokens (h17). The weights are the mma's A
 * operand (16 rows), x its B operand (8 tokens; two mmas for 9..16 tokens).
 * Lane (g, q) of a warp owns, in every 80-wide k segment (16 packed bytes of
 * a row), the 4-byte word q of rows g and g + 8: its 20 weights fill the
 * k slots {2q, 2q+1, 2q+8, 2q+9} of the segment's five k16 steps in k order,
 * so the x values they meet, x[tok][80 s + 20 q + 0..19], are 20 consecutive
 * values of the CTA's x slice, staged once in shared memory as bf16 (in x's
 * own order: no permuted copy).
 * Decode: a byte's digits give PRMT selector halves from a 256-entry table
 * in shared memory (two words: digits 0-3 and 1-4, so that every pair of
 * consecutive weights is one 16-bit selector or one PRMT of two entries);
 * PRMT then picks bf16 +-2^E or zero (a sign-replicated byte of +2^E) from
 * the word pair (h_lo, h_hi) of the word's first and last group. With a
 * power-of-two group size >= 16 the only possible group boundary inside a
 * word is the multiple of 16 at weight 16 - 4q, so pairs from 8 - 2q on take
 * h_hi (selector | 0x4444). Warps: WR row blocks x 8 / WR k slices, TPW
 * 16-row tiles a warp; each warp loads the words and exponents of its next
 * S4_CH segments before it decodes the current ones. The k slices meet in
 * shared memory in a fixed order; split-K CTAs (grid.y) leave partials that
 * the last CTA of a row block adds in split order (split_finish).
 */
#define S4_CH 2 /* segments a warp loads ahead (per row tile) */

/* selector halves of one weight: digit 0 (-1): bytes 2,3 (-2^E); 1 (0):
 * byte 1 sign-replicated (0x00); 2 (+1): bytes 0,1 (+2^E). Entries >= 243
 * (not a packed byte) read as zeros. */
__device__ __forceinline__ void s4_table(uint2 *tab)
{
	for (int e = threadIdx.x; e < 256; e += blockDim.x) {
		uint32_t h[5], p = (uint32_t)e;
		for (int j = 0; j < 5; j++) {
			const uint32_t c = e < 243 ? p % 3u : 1u;
			p /= 3u;
			h[j] = c == 0 ? 0x32u : (c == 1 ? 0x99u : 0x10u);
		}
		tab[e] = make_uint2(h[0] | h[1] << 8 | h[2] << 16 | h[3] << 24,
				    h[1] | h[2] << 8 | h[3] << 16 | h[4] << 24);
	}
}
/* bf16 2^e | (bf16 -2^e) << 16; zero below 2^-126 (as the other kernels):
 * hw[e + 128] for every int8 e */
__device__ __forceinline__ void s4_hwords(uint32_t *hw)
{
	for (int i = threadIdx.x; i < 256; i += blockDim.x) {
		const int e = i - 128;
		const uint32_t hb = e < -126 ? 0u : (uint32_t)(e + 127) << 7;
		hw[i] = hb | ((hb | 0x8000u) << 16);
	}
}
/* the 4 packed bytes at p (a row's bytes from p on; AL: p 4-byte aligned);
 * bytes past the buffer read as zero trits */
template <int AL>
__device__ __forceinline__ uint32_t s4_word(const uint8_t *p, const uint8_t *end)
{
	if (AL) return __ldg((const uint32_t *)p);
	const uintptr_t a = (uintptr_t)p;
	const uint32_t *w = (const uint32_t *)(a & ~(uintptr_t)3);
	const uint32_t lo = __ldg(w);
	const int sh = 8 * (int)(a & 3);
	if (!sh) return lo;
	const uint32_t hi = (const uint8_t *)(w + 1) < end ? __ldg(w + 1) : 0x79797979u;
	return __funnelshift_r(lo, hi, sh);
}
/* a word's 20 weights as 10 bf16 pairs in k order */
__device__ __forceinline__ void s4_decode(uint32_t w, int elo, int ehi, const uint2 *tab,
					  const uint32_t *hw, const uint32_t *m, uint32_t *a)
{
	const uint32_t h0 = hw[elo + 128], h1 = hw[ehi + 128];
	const uint2 T0 = tab[w & 0xffu], T1 = tab[(w >> 8) & 0xffu];
	const uint2 T2 = tab[(w >> 16) & 0xffu], T3 = tab[w >> 24];
	uint32_t s[10];
	s[0] = T0.x; s[1] = T0.x >> 16; s[2] = prmt(T0.y, T1.x, 0x43u);
	s[3] = T1.y; s[4] = T1.y >> 16;
	s[5] = T2.x; s[6] = T2.x >> 16; s[7] = prmt(T2.y, T3.x, 0x43u);
	s[8] = T3.y; s[9] = T3.y >> 16;
	a[0] = prmt(h0, h1, s[0]);
	a[1] = prmt(h0, h1, s[1]);
#pragma unroll
	for (int p = 2; p < 10; p++) a[p] = prmt(h0, h1, s[p] | m[p]);
}

template <int TPW>
struct S4Buf {
	uint32_t w[S4_CH][TPW][2];
	int e[S4_CH][TPW][2][2];
};
/* a lane's rows n0 + 16 t + g + 8 h: packed bytes from its word q on, group
 * exponents; rows >= N read row N - 1 and are dropped (ok) */
template <int TPW>
struct S4Rows {
	const uint8_t *p[TPW][2];
	const int8_t *e[TPW][2];
	int ok[TPW][2];
};
/* the words and group exponents of segments seg0 + c, c < S4_CH; segments
 * >= seg1, bytes past the row (off >= rb) and rows >= N read as zero trits.
 * Bytes past a row's end inside a word belong to k >= K, where x is zero. */
template <int TPW, int AL>
__device__ __forceinline__ void s4_fetch(const S4Rows<TPW> &r, int seg0, int seg1, int rb,
					 int q, int lg, int g1, const uint8_t *end, S4Buf<TPW> &b)
{
#pragma unroll
	for (int c = 0; c < S4_CH; c++) {
		const int seg = seg0 + c, off = 16 * seg + 4 * q, k0 = 5 * off;
		const int okc = seg < seg1 && off < rb;
		const int glo = min(k0 >> lg, g1), ghi = min((k0 + 19) >> lg, g1);
#pragma unroll
		for (int t = 0; t < TPW; t++)
#pragma unroll
			for (int h = 0; h < 2; h++) {
				uint32_t w = 0x79797979u;
				int e0 = 0, e1 = 0;
				if (okc) {
					w = s4_word<AL>(r.p[t][h] + 16 * seg, end);
					e0 = __ldg(r.e[t][h] + glo);
					e1 = __ldg(r.e[t][h] + ghi);
				}
				b.w[c][t][h] = r.ok[t][h] ? w : 0x79797979u;
				b.e[c][t][h][0] = e0;
				b.e[c][t][h][1] = e1;
			}
	}
}

/* the v4 / v5 skinny kernels' end: red[warp][row][token] (warp = k slice
 * wk * WR + row tile wr, rows of a tile RW, TS token slots) summed over the
 * k slices in order into y (gridDim.y == 1; y += when acc) or this split's
 * partials, then the split-K tail */
template <int WK, int WR, int RW, int TS>
__device__ __forceinline__ void s4_store(const float (*red)[RW][TS + 1], float *y, float *part,
					 unsigned int *cnt, int64_t N, int64_t nt0, int M, int acc)
{
	constexpr int RB = RW * WR;
	const int nv = (int)min((int64_t)RB, N - nt0);
	float *dst = gridDim.y == 1 ? y : part + (int64_t)blockIdx.y * M * N;
	for (int e = threadIdx.x; e < RB * TS; e += 256) {
		const int r = e / TS, tok = e % TS, rw = r / RW, rl = r % RW;
		if (r >= nv || tok >= M) continue;
		float sum = 0.0f;
#pragma unroll
		for (int k = 0; k < WK; k++) sum += red[k * WR + rw][rl][tok];
		float *o = dst + (int64_t)tok * N + nt0 + r;
		*o = gridDim.y == 1 && acc ? *o + sum : sum;
	}
	if (gridDim.y > 1)
		split_finish(part, y, &cnt[blockIdx.x], N, (int64_t)M * N, nt0, nv, M, acc);
}

/* x[tok][kc0 + k] for tok < M, k < kr (a multiple of 4) as bf16 in
 * xs[tok * ldx + k], zero past K; the CTA's threads, the loads of a thread's
 * four items all out before their stores. (h21: the same loop over
 * tok * (kr / 4) items, with a division an item, made the v4 kernel's 4
 * tokens at 11008 x 4096 15 % slower.) */
__device__ __forceinline__ void s4_stage_x(const float *x, int64_t K, int kc0, int kr, int M,
					   int ldx, __nv_bfloat16 *xs)
{
	const int tid = threadIdx.x, Ki = (int)K; /* K < 2^30 (host) */
	const int vec = (K & 3) == 0 && ((uintptr_t)x & 15) == 0, k4n = kr >> 2;
	for (int tok = 0; tok < M; tok++) {
		const float *xr = x + (int64_t)tok * K + kc0;
		for (int j0 = tid; j0 < k4n; j0 += 4 * 256) {
			float4 f[4];
#pragma unroll
			for (int u = 0; u < 4; u++) {
				const int j = j0 + 256 * u, k = kc0 + 4 * j;
				f[u] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
				if (j >= k4n || k >= Ki) continue;
				if (vec) {
					f[u] = __ldg((const float4 *)(xr + 4 * j));
				} else {
					f[u].x = __ldg(xr + 4 * j);
					if (k + 1 < Ki) f[u].y = __ldg(xr + 4 * j + 1);
					if (k + 2 < Ki) f[u].z = __ldg(xr + 4 * j + 2);
					if (k + 3 < Ki) f[u].w = __ldg(xr + 4 * j + 3);
				}
			}
#pragma unroll
			for (int u = 0; u < 4; u++) {
				const int j = j0 + 256 * u;
				if (j >= k4n) break;
				__nv_bfloat162 lo = __floats2bfloat162_rn(f[u].x, f[u].y);
				__nv_bfloat162 hi = __floats2bfloat162_rn(f[u].z, f[u].w);
				uint2 pk;
				pk.x = *(uint32_t *)&lo;
				pk.y = *(uint32_t *)&hi;
				*(uint2 *)(xs + (size_t)tok * ldx + 4 * j) = pk;
			}
		}
	}
}

template <int NT, int TPW, int WR, int AL>
__global__ void __launch_bounds__(256, 2) skinny_fwd_kernel4(tern_view v, const float *x,
	float *y, int M, int acc, int lg, int spw, float *part, unsigned int *cnt)
{
	constexpr int WK = 8 / WR, RW = 16 * TPW, RB = RW * WR;
	__shared__ uint2 tab[256];
	__shared__ uint32_t hw[256];
	__shared__ float red[8][RW][16 + 1];
	extern __shared__ __align__(16) unsigned char s4x[];
	const int64_t N = v.rows, K = v.cols, rb = v.row_bytes;
	const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
	const int g = lane >> 2, q = lane & 3;
	const int wr = warp % WR, wk = warp / WR;
	const int64_t nseg = (rb + 15) / 16;
	const int64_t cseg0 = (int64_t)blockIdx.y * WK * spw; /* the CTA's segments */
	const int kr = (int)(80 * (min(cseg0 + (int64_t)WK * spw, nseg) - cseg0));
	const int ldx = kr + 8;
	const int64_t seg0 = cseg0 + (int64_t)wk * spw;
	const int64_t seg1 = min(seg0 + spw, nseg);
	const int64_t nt0 = (int64_t)blockIdx.x * RB, n0 = nt0 + wr * RW;
	const uint8_t *end = v.packed + N * rb;
	S4Rows<TPW> rw_;
#pragma unroll
	for (int t = 0; t < TPW; t++)
#pragma unroll
		for (int h = 0; h < 2; h++) {
			const int64_t n = n0 + 16 * t + g + 8 * h, nc = n < N ? n : N - 1;
			rw_.p[t][h] = v.packed + nc * rb + 4 * q;
			rw_.e[t][h] = v.E + nc * v.groups;
			rw_.ok[t][h] = n < N;
		}
	const int g1 = v.groups - 1, rbi = (int)rb;
	S4Buf<TPW> cur, nxt;
	s4_fetch<TPW, AL>(rw_, (int)seg0, (int)seg1, rbi, q, lg, g1, end, cur);
	s4_table(tab);
	s4_hwords(hw);
	/* x[tok][80 cseg0 + k] as bf16 in xs[tok][k] (zero past K) */
	__nv_bfloat16 *xs = (__nv_bfloat16 *)s4x;
	s4_stage_x(x, K, 80 * (int)cseg0, kr, M, ldx, xs);
	uint32_t m[10];
#pragma unroll
	for (int p = 0; p < 10; p++) m[p] = p >= 8 - 2 * q ? 0x4444u : 0u;
	const __nv_bfloat16 *xq[NT];
#pragma unroll
	for (int u = 0; u < NT; u++) xq[u] = xs + (8 * u + g) * ldx + 20 * q;
	float accf[TPW][NT][4];
	frag_zero(accf);
	__syncthreads();
	for (int s0 = (int)seg0; s0 < (int)seg1; s0 += S4_CH) {
		if (s0 + S4_CH < seg1)
			s4_fetch<TPW, AL>(rw_, s0 + S4_CH, (int)seg1, rbi, q, lg, g1, end, nxt);
#pragma unroll
		for (int c = 0; c < S4_CH; c++) {
			if (s0 + c >= seg1) break;
			const int kl = 80 * (s0 + c - (int)cseg0);
			/* B: x[8u + g][kl + 20 q .. + 19] as bf16 pairs */
			uint32_t bx[NT][10];
#pragma unroll
			for (int u = 0; u < NT; u++) {
				const int tok = 8 * u + g;
				const uint2 *xp = (const uint2 *)(xq[u] + kl);
#pragma unroll
				for (int i = 0; i < 5; i++) {
					const uint2 w2 = tok < M ? xp[i] : make_uint2(0u, 0u);
					bx[u][2 * i] = w2.x;
					bx[u][2 * i + 1] = w2.y;
				}
			}
#pragma unroll
			for (int t = 0; t < TPW; t++) {
				uint32_t a0[10], a1[10];
				s4_decode(cur.w[c][t][0], cur.e[c][t][0][0], cur.e[c][t][0][1], tab, hw, m, a0);
				s4_decode(cur.w[c][t][1], cur.e[c][t][1][0], cur.e[c][t][1][1], tab, hw, m, a1);
#pragma unroll
				for (int i = 0; i < 5; i++) {
					const uint32_t a[4] = { a0[2 * i], a1[2 * i], a0[2 * i + 1], a1[2 * i + 1] };
#pragma unroll
					for (int u = 0; u < NT; u++)
						mma16816(accf[t][u], a, bx[u][2 * i], bx[u][2 * i + 1]);
				}
			}
		}
		cur = nxt;
	}
	/* accf[t][u][c]: row n0 + 16 t + g + 8 (c >> 1), token 8 u + 2 q + (c & 1) */
#pragma unroll
	for (int t = 0; t < TPW; t++)
#pragma unroll
		for (int u = 0; u < NT; u++)
#pragma unroll
			for (int c = 0; c < 4; c++)
				red[warp][16 * t + g + 8 * (c >> 1)][8 * u + 2 * q + (c & 1)] = accf[t][u][c];
	__syncthreads();
	s4_store<WK, WR, RW, 16>(red, y, part, cnt, N, nt0, M, acc);
}

#define S4_XMAX (80 * 1024) /* the x slice's shared memory at most (two CTAs an SM) */
template <int NT, int TPW, int WR, int AL>
static void skinny4_go(dim3 grid, size_t smem, const tern_view &v, const float *x, float *y,
		       int M, int acc, int lg, int spw, float *part, unsigned int *cnt)
{
	static int ready = 0;
	if (!ready) {
		CK(cudaFuncSetAttribute(skinny_fwd_kernel4<NT, TPW, WR, AL>,
			cudaFuncAttributeMaxDynamicSharedMemorySize, S4_XMAX));
		ready = 1;
	}
	skinny_fwd_kernel4<NT, TPW, WR, AL><<<grid, 256, smem>>>(v, x, y, M, acc, lg, spw, part, cnt);
}
template <int NT, int TPW, int WR>
static void skinny4_launch(dim3 grid, size_t smem, const tern_view &v, int al, const float *x,
			   float *y, int M, int acc, int lg, int spw, float *part, unsigned int *cnt)
{
	if (al) skinny4_go<NT, TPW, WR, 1>(grid, smem, v, x, y, M, acc, lg, spw, part, cnt);
	else skinny4_go<NT, TPW, WR, 0>(grid, smem, v, x, y, M, acc, lg, spw, part, cnt);
}
/* 0: the tensor or the batch does not suit the kernel; ARB_CUDA_LEGACY=
 * fwd16 skips it. */
static int skinny4_forward(arb_backend *be, const tern_view &v, const float *x, float *y,
			   int64_t M, int accumulate)
{
	const int gs = v.gs;
	int lg = 0;
	while ((1 << lg) < gs) lg++;
	if (M > 16 || v.corr || (gs & (gs - 1)) || gs < 16 || v.cols >= (1 << 30) ||
	    cuda_legacy("fwd16"))
		return 0;
	const int64_t N = v.rows, nseg = (v.row_bytes + 15) / 16;
	const int sms = cuda_get_priv(be)->sms;
	/* where it runs and its shape (h17, bench_linear at 4096^2, 11008 x 4096
	 * and 4096 x 11008 with ARB_SK4 over the shapes): up to 8 tokens with
	 * 16-row CTAs when they fill the GPU once (two per SM) with each row in
	 * one CTA (4096^2: 12.5 / 14.7 / 17.4 us at 1 / 4 / 8 tokens vs the GEMV's
	 * 14.0 and the v3 kernel's 20.0 / 20.5); else up to 4 tokens with 32-row
	 * CTAs (11008 x 4096: 29.3 / 32.7 vs 31.8 / 37.0 us). Rows of more than
	 * 64 segments (K > 5120: 4096 x 11008 at one token 33.9 vs the GEMV's
	 * 30.1 us), 5..8 tokens over more than one wave and 9..16 tokens (21.8 /
	 * 49.0 / 56.7 vs 22.1 / 41.9 / 46.6 us) stay with the older kernels.
	 * ARB_SK4="tpw,wr,splits" forces it (tests, tuning; tpw, wr in {1,2}). */
	const int64_t t16 = (N + 15) / 16;
	const int one_wave = t16 <= 2 * (int64_t)sms + sms / 5 && M * nseg * 160 <= S4_XMAX;
	int tpw = 1, wr = one_wave ? 1 : 2;
	int64_t S = one_wave ? 1 : 0;
	if (M > 8) { tpw = 2; wr = 2; S = 0; }
	const char *ov = getenv("ARB_SK4");
	if (ov) {
		int a = 0, b = 0, c = 0;
		if (sscanf(ov, "%d,%d,%d", &a, &b, &c) == 3 && (a == 1 || a == 2) &&
		    (b == 1 || b == 2) && c >= 1) {
			tpw = a; wr = b; S = c;
		} else {
			static int told = 0;
			if (!told)
				fprintf(stderr, "arbcore: ARB_SK4=\"%s\" is not tpw,wr,splits with "
					"tpw and wr in {1,2} and splits >= 1; the kernel's own "
					"shape is used\n", ov);
			told = 1;
		}
	} else if (M > 8 || nseg > 64 || (M > 4 && !one_wave)) {
		return 0;
	}
	const int wk = 8 / wr;
	const int64_t rbk = 16 * (int64_t)tpw * wr, tiles = (N + rbk - 1) / rbk;
	if (S == 0) {
		S = (2 * (int64_t)sms + tiles / 2) / tiles;
		const int64_t smax = (nseg + 2 * wk - 1) / (2 * wk); /* a warp >= 2 segments */
		if (S > smax) S = smax;
		if (S < 1) S = 1;
	}
	int64_t spw = (nseg + S * wk - 1) / (S * wk);
	/* the CTA's x slice, M x 80 wk spw bf16, within S4_XMAX */
	const int64_t spw_max = (S4_XMAX / (2 * M) - 8) / (80 * wk);
	if (spw > spw_max) spw = spw_max;
	S = (nseg + spw * wk - 1) / (spw * wk);
	const size_t smem = (size_t)M * (80 * wk * spw + 8) * 2;
	unsigned int *cnt = NULL;
	float *part = S > 1 ? cuda_split_ws(be, S * M * N, &cnt, tiles) : NULL;
	const int al = (v.row_bytes & 3) == 0 && ((uintptr_t)v.packed & 3) == 0;
	const dim3 grid((unsigned)tiles, (unsigned)S);
	const int nt = M > 8 ? 2 : 1, ts = (int)spw;
#define S4_GO(NT_, T_, W_) skinny4_launch<NT_, T_, W_>(grid, smem, v, al, x, y, (int)M, accumulate, lg, ts, part, cnt)
	if (nt == 1) {
		if (tpw == 1) { if (wr == 1) S4_GO(1, 1, 1); else S4_GO(1, 1, 2); }
		else { if (wr == 1) S4_GO(1, 2, 1); else S4_GO(1, 2, 2); }
	} else {
		if (tpw == 1) { if (wr == 1) S4_GO(2, 1, 1); else S4_GO(2, 1, 2); }
		else { if (wr == 1) S4_GO(2, 2, 1); else S4_GO(2, 2, 2); }
	}
#undef S4_GO
	CK_LAUNCH(skinny_fwd4);
	return 1;
}

/* ---------------------------------------------------------------------------
 * v5 skinny forward, 2..4 tokens on rows of more than 64 segments
 * (skinny_fwd_kernel5; 1..8 when forced): the v4 kernel's decode and mma,
 * with every load of the CTA's weights in flight before any decode (packed
 * trits and exponents 16-byte aligned). A warp first issues
 * cp.async copies of its 16 rows x spw segments (aligned 16-byte chunks, a
 * row's slot spw + 1 chunks) and of the exponents they use; then the CTA
 * builds its tables and stages x; only then does the warp wait for its own
 * copies (no CTA barrier on them) and decode from shared memory. CTA: WR
 * 16-row tiles x 8 / WR k slices; split-K over grid.y through split_finish
 * as the v4 kernel.
 * Why it exists (h21): the v4 kernel declines rows over 64 segments (K >
 * 5120), where 4 tokens took the v3 kernel 36.4-37.1 us at 4096 x 11008;
 * this kernel 23.7-24.0 (three splits; one split 25.6-26.3). At 8 tokens
 * there it was even with the v3 kernel (36.9-40.3 vs 37.3-38.2 us in four
 * same-run pairs), so 5..8 tokens stay with that. At one token it is no
 * faster than the kernels there (4096^2 10.5-10.8 vs 10.7-10.9 us, 11008 x
 * 4096 21.4-23.4 vs the table kernel's 20.1): bench_linear's `read` line
 * reads the same bytes in 4.3-4.7 / 5.9 us, so the bytes in flight were not
 * what held those kernels back; ncu at 4096^2 (WR = 2): 3.2M warp
 * instructions, about 6 per weight and lane (decode 43 %, the copies' index
 * arithmetic 17 %), 8 warps an SM at 5 cycles an instruction. ARB_SK5
 * forces it, also at one token (tests, tuning). */
#define S5_SMAX (100 * 1024) /* dynamic shared memory a CTA (two an SM) */
__host__ __device__ inline int s5_eslot(int spw, int lg)
{
	/* exponent bytes a row's slice touches, plus an alignment chunk */
	return 16 * (((80 * spw >> lg) + 2 + 15) / 16 + 1);
}
/* a warp's cp.async copies of bytes [lo, hi) of rows n0 .. n0 + 15 of a
 * row-major array (row stride, total bytes; rows >= N repeat N - 1): the
 * aligned 16-byte chunks that hold them, row i's at dst + i * slot (slot /
 * 16 chunks at most); the last chunk reads no byte past total */
__device__ __forceinline__ void s5_copy_rows(unsigned char *dst, int slot, const uint8_t *src,
					     int64_t total, int64_t stride, int64_t lo, int64_t hi,
					     int64_t n0, int64_t N, int lane)
{
	const int nch = slot / 16;
	for (int e = lane; e < 16 * nch; e += 32) {
		const int i = e / nch, c = e - i * nch;
		const int64_t n = min(n0 + i, N - 1);
		const int64_t ch = ((n * stride + lo) >> 4) + c;
		if (16 * ch >= n * stride + hi) continue;
		const int64_t left = total - 16 * ch;
		cp_async16(dst + i * slot + 16 * c, src + 16 * ch, left >= 16 ? 16 : (int)left);
	}
}
template <int WR, int AL>
__global__ void __launch_bounds__(256) skinny_fwd_kernel5(tern_view v, const float *x,
	float *y, int M, int acc, int lg, int spw, float *part, unsigned int *cnt)
{
	constexpr int WK = 8 / WR, RB = 16 * WR;
	__shared__ uint2 tab[256];
	__shared__ uint32_t hw[256];
	__shared__ float red[8][16][8 + 1];
	extern __shared__ __align__(16) unsigned char s5m[];
	const int64_t N = v.rows, K = v.cols, rb = v.row_bytes;
	const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
	const int g = lane >> 2, q = lane & 3;
	const int wr = warp % WR, wk = warp / WR;
	const int64_t nseg = (rb + 15) / 16;
	const int64_t cseg0 = (int64_t)blockIdx.y * WK * spw;
	const int kr = (int)(80 * (min(cseg0 + (int64_t)WK * spw, nseg) - cseg0));
	const int ldx = kr + 8;
	const int seg0 = (int)(cseg0 + (int64_t)wk * spw);
	const int seg1 = (int)min((int64_t)seg0 + spw, nseg);
	const int64_t nt0 = (int64_t)blockIdx.x * RB, n0 = nt0 + wr * 16;
	const int slot = 16 * (spw + 1), eslot = s5_eslot(spw, lg);
	const size_t xbytes = ((size_t)M * ldx * 2 + 15) & ~(size_t)15;
	unsigned char *ws = s5m + xbytes + (size_t)warp * 16 * slot;
	unsigned char *es = s5m + xbytes + (size_t)8 * 16 * slot + (size_t)warp * 16 * eslot;
	const int g1 = v.groups - 1;
	const int64_t total = N * rb, etotal = N * (int64_t)v.groups;
	/* 1. the warp's copies: rows n0 .. n0 + 15 (rows >= N repeat N - 1),
	 * bytes [16 seg0, min(16 seg1, rb)) and their exponents */
	if (seg0 < seg1) {
		s5_copy_rows(ws, slot, v.packed, total, rb, 16 * (int64_t)seg0,
			     min(16 * (int64_t)seg1, rb), n0, N, lane);
		const int ga = (80 * seg0) >> lg, gb = min((80 * seg1 - 1) >> lg, g1);
		s5_copy_rows(es, eslot, (const uint8_t *)v.E, etotal, v.groups, ga, gb + 1, n0, N,
			     lane);
	}
	cp_commit();
	s4_table(tab);
	s4_hwords(hw);
	/* 2. x[tok][80 cseg0 + k] as bf16 in xs[tok][k] (zero past K) */
	__nv_bfloat16 *xs = (__nv_bfloat16 *)s5m;
	s4_stage_x(x, K, 80 * (int)cseg0, kr, M, ldx, xs);
	uint32_t m[10];
#pragma unroll
	for (int p = 0; p < 10; p++) m[p] = p >= 8 - 2 * q ? 0x4444u : 0u;
	/* the lane's two rows g, g + 8: where its bytes and exponents sit */
	const unsigned char *wp[2];
	const int8_t *ep[2];
	int sh[2], okr[2];
#pragma unroll
	for (int h = 0; h < 2; h++) {
		const int i = g + 8 * h;
		const int64_t n = min(n0 + i, N - 1);
		const int64_t bs = n * rb + 16 * (int64_t)seg0;
		const int o = (int)(bs & 15) + 4 * q;
		wp[h] = ws + i * slot + (o & ~3);
		sh[h] = 8 * (o & 3);
		const int ga = (80 * seg0) >> lg;
		ep[h] = (const int8_t *)es + i * eslot + (int)((n * v.groups + ga) & 15) - ga;
		okr[h] = n0 + i < N;
	}
	float accf[4] = { 0.0f, 0.0f, 0.0f, 0.0f };
	const __nv_bfloat16 *xq = xs + g * ldx + 20 * q;
	__syncthreads(); /* x and the tables */
	cp_wait<0>();
	__syncwarp();    /* the warp's own copies, landed */
	for (int s = seg0; s < seg1; s++) {
		const int kl = 80 * (s - (int)cseg0);
		uint32_t bx[10];
		{
			const uint2 *xp = (const uint2 *)(xq + kl);
#pragma unroll
			for (int i = 0; i < 5; i++) {
				const uint2 w2 = g < M ? xp[i] : make_uint2(0u, 0u);
				bx[2 * i] = w2.x;
				bx[2 * i + 1] = w2.y;
			}
		}
		const int off = 16 * s + 4 * q, k0 = 5 * off;
		const int glo = min(k0 >> lg, g1), ghi = min((k0 + 19) >> lg, g1);
		uint32_t a2[2][10];
#pragma unroll
		for (int h = 0; h < 2; h++) {
			const unsigned char *p = wp[h] + 16 * (s - seg0);
			uint32_t w;
			if (AL) {
				w = *(const uint32_t *)p;
			} else {
				const uint32_t lo = ((const uint32_t *)p)[0], hi = ((const uint32_t *)p)[1];
				w = __funnelshift_r(lo, hi, sh[h]);
			}
			if (off >= rb || !okr[h]) w = 0x79797979u;
			s4_decode(w, ep[h][glo], ep[h][ghi], tab, hw, m, a2[h]);
		}
#pragma unroll
		for (int i = 0; i < 5; i++) {
			const uint32_t a[4] = { a2[0][2 * i], a2[1][2 * i], a2[0][2 * i + 1], a2[1][2 * i + 1] };
			mma16816(accf, a, bx[2 * i], bx[2 * i + 1]);
		}
	}
	/* accf[c]: row n0 + g + 8 (c >> 1), token 2 q + (c & 1) */
#pragma unroll
	for (int c = 0; c < 4; c++)
		red[warp][g + 8 * (c >> 1)][2 * q + (c & 1)] = accf[c];
	__syncthreads();
	s4_store<WK, WR, 16, 8>(red, y, part, cnt, N, nt0, M, acc);
}

template <int WR, int AL>
static void skinny5_go(dim3 grid, size_t smem, const tern_view &v, const float *x, float *y,
		       int M, int acc, int lg, int spw, float *part, unsigned int *cnt)
{
	static int ready = 0;
	if (!ready) {
		CK(cudaFuncSetAttribute(skinny_fwd_kernel5<WR, AL>,
			cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024));
		ready = 1;
	}
	skinny_fwd_kernel5<WR, AL><<<grid, 256, smem>>>(v, x, y, M, acc, lg, spw, part, cnt);
}
static size_t s5_smem(int64_t M, int wk, int64_t spw, int lg)
{
	const size_t xb = ((size_t)M * (80 * wk * spw + 8) * 2 + 15) & ~(size_t)15;
	return xb + (size_t)8 * 16 * 16 * (spw + 1) + (size_t)8 * 16 * s5_eslot((int)spw, lg);
}
/* 0: the tensor or the batch does not suit the kernel; ARB_CUDA_LEGACY=sk5
 * skips it. ARB_SK5="wr,splits" forces it with that shape (wr in {1,2}). */
static int skinny5_forward(arb_backend *be, const tern_view &v, const float *x, float *y,
			   int64_t M, int accumulate)
{
	const int gs = v.gs;
	int lg = 0;
	while ((1 << lg) < gs) lg++;
	if (M > 8 || v.corr || (gs & (gs - 1)) || gs < 16 || v.cols >= (1 << 30) ||
	    v.groups >= (1 << 24) || ((uintptr_t)v.packed & 15) || ((uintptr_t)v.E & 15) ||
	    cuda_legacy("sk5") || getenv("ARB_SK4") || getenv("ARB_LUT"))
		return 0;
	const int64_t N = v.rows, nseg = (v.row_bytes + 15) / 16;
	const int sms = cuda_get_priv(be)->sms;
	int wr = 2;
	int64_t S = 0;
	const char *ov = getenv("ARB_SK5");
	if (ov) {
		int a = 0, b = 0;
		if (sscanf(ov, "%d,%d", &a, &b) == 2 && (a == 1 || a == 2) && b >= 1) {
			wr = a; S = b;
		} else {
			static int told = 0;
			if (!told)
				fprintf(stderr, "arbcore: ARB_SK5=\"%s\" is not wr,splits with wr in "
					"{1,2} and splits >= 1; the default dispatch is used\n", ov);
			told = 1;
			ov = NULL;
		}
	}
	if (!ov && (M < 2 || M > 4 || nseg <= 64)) return 0;
	const int wk = 8 / wr;
	const int64_t rbk = 16 * (int64_t)wr, tiles = (N + rbk - 1) / rbk;
	if (tiles > 0x7fffffff) return 0;
	/* by default 32-row CTAs, K split until there are about three CTAs an
	 * SM (h21, 4 tokens at 4096 x 11008: 1 / 2 / 3 splits 25.8 / 25.8 /
	 * 23.2 us) and the CTA's shared memory lets two share an SM; a forced
	 * split grows until the CTA fits */
	const size_t lim = S ? 200 * 1024 : S5_SMAX;
	if (S == 0) S = 3 * sms / tiles > 1 ? 3 * sms / tiles : 1;
	while (s5_smem(M, wk, (nseg + S * wk - 1) / (S * wk), lg) > lim && S < nseg) S++;
	int64_t spw = (nseg + S * wk - 1) / (S * wk);
	S = (nseg + spw * wk - 1) / (spw * wk);
	const size_t smem = s5_smem(M, wk, spw, lg);
	if (smem > 200 * 1024 || S > 65535) return 0;
	unsigned int *cnt = NULL;
	float *part = S > 1 ? cuda_split_ws(be, S * M * N, &cnt, tiles) : NULL;
	const int al = (v.row_bytes & 3) == 0;
	const dim3 grid((unsigned)tiles, (unsigned)S);
	if (wr == 1) {
		if (al) skinny5_go<1, 1>(grid, smem, v, x, y, (int)M, accumulate, lg, (int)spw, part, cnt);
		else skinny5_go<1, 0>(grid, smem, v, x, y, (int)M, accumulate, lg, (int)spw, part, cnt);
	} else {
		if (al) skinny5_go<2, 1>(grid, smem, v, x, y, (int)M, accumulate, lg, (int)spw, part, cnt);
		else skinny5_go<2, 0>(grid, smem, v, x, y, (int)M, accumulate, lg, (int)spw, part, cnt);
	}
	CK_LAUNCH(skinny_fwd5);
	return 1;
}

/* ---------------------------------------------------------------------------
 * GEMV forward, one token (decoding one token at a time): CUDA cores, fp32
 * products, no split-K. A CTA stages x in shared memory (80-wide chunks
 * padded to 84 floats: lanes reading consecutive chunks hit distinct banks)
 * and owns 8 * GV_RPW rows; lane l of a warp takes the 16-byte chunks l,
 * l + 32, ... of each of its rows (80 weights each). With a power-of-two
 * group size >= 16 every aligned 16-weight block of a chunk lies in one
 * group, so the weight itself, +-2^E or 0, is one PRMT of that group's word
 * h = bf16(2^E) | bf16(-2^E) << 16 into the upper half of a float (selector
 * from the skinny kernels' table), then one FFMA. The lanes' sums of a row
 * are added by shuffles in a fixed order. (h16: at 4 tokens the skinny mma
 * kernel was faster, 19.6 vs 23.1 us at 4096^2, so the multi-token variant
 * was removed in h17; loading each chunk one item ahead made one token no
 * faster, 14.9 vs 13.9 us.) */
#define GV_RPW 2 /* h16: 4 rows per warp (half the CTAs, half the x staging)
		  * was slower: 17.6-17.9 vs 14.0 us at 4096^2; so was
		  * reading x from global / L1 instead of staging it:
		  * 19.6-19.7 us */
#define GV_XROW 84

__global__ void __launch_bounds__(256) gemv_fwd_kernel(tern_view v, const float *x, float *y,
	int acc, int lg)
{
	extern __shared__ __align__(16) unsigned char gsm[];
	unsigned long long *tab = (unsigned long long *)gsm;          /* [243] (256) */
	float *xs = (float *)(gsm + 256 * 8);                          /* [nc][84] */
	const int64_t N = v.rows, K = v.cols, rb = v.row_bytes;
	const int nc = (int)((rb + 15) / 16);
	const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
	s3_table(tab);
	for (int k = tid; k < nc * 80; k += 256)
		xs[(k / 80) * GV_XROW + k % 80] = k < K ? __ldg(x + k) : 0.0f;
	__syncthreads();
	const int64_t n0 = ((int64_t)blockIdx.x * 8 + warp) * GV_RPW;
	const int gs16 = 1 << (lg - 4); /* 16-weight blocks per group */
	for (int rr = 0; rr < GV_RPW; rr++) {
		const int64_t n = n0 + rr;
		if (n >= N) break;
		const int8_t *er = v.E + n * v.groups;
		float sum = 0.0f;
		for (int c = lane; c < nc; c += 32) {
			uint32_t w4[4];
			s3_load(v.packed, N, rb, n, 16 * (int64_t)c, w4);
			/* the five 16-weight blocks' group words */
			uint32_t h[5];
#pragma unroll
			for (int s = 0; s < 5; s++) {
				const int g = (5 * c + s) / gs16;
				const int e = g < v.groups ? (int)er[g] : -127;
				const uint32_t hb = e < -126 ? 0u : (uint32_t)(e + 127) << 7;
				h[s] = hb | ((hb | 0x8000u) << 16);
			}
			unsigned long long L[16];
#pragma unroll
			for (int b = 0; b < 16; b++) L[b] = tab[(w4[b >> 2] >> (8 * (b & 3))) & 0xffu];
			const float *xc = xs + (int64_t)c * GV_XROW;
#pragma unroll
			for (int q = 0; q < 20; q++) {
				const float4 xv = *(const float4 *)(xc + 4 * q);
				const float xq[4] = { xv.x, xv.y, xv.z, xv.w };
#pragma unroll
				for (int i = 0; i < 4; i++) {
					const int p = 4 * q + i, b = p / 5, d = p % 5;
					const uint32_t sel = ((uint32_t)(L[b] >> (8 * d)) & 0xffu) << 8 | 0x44u;
					const float w = __uint_as_float(prmt(h[p >> 4], 0u, sel));
					sum = fmaf(w, xq[i], sum);
				}
			}
		}
#pragma unroll
		for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
		if (lane == 0) y[n] = acc ? y[n] + sum : sum;
	}
}

static size_t gv_smem(int64_t rb)
{
	return 256 * 8 + (size_t)((rb + 15) / 16) * GV_XROW * 4;
}
/* 0: the tensor or the batch does not suit the GEMV (the skinny kernels
 * run); ARB_CUDA_LEGACY=gemv skips it */
static int gemv_forward(const tern_view &v, const float *x, float *y, int64_t M, int accumulate)
{
	const int gs = v.gs;
	int lg = 0;
	while ((1 << lg) < gs) lg++;
	if (M != 1 || v.corr || (gs & (gs - 1)) || gs < 16 || cuda_legacy("gemv")) return 0;
	const size_t smem = gv_smem(v.row_bytes);
	if (smem > 200 * 1024) return 0;
	static int ready = 0;
	if (!ready) {
		CK(cudaFuncSetAttribute(gemv_fwd_kernel,
			cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024));
		ready = 1;
	}
	gemv_fwd_kernel<<<cdiv(v.rows, 8 * GV_RPW), 256, smem>>>(v, x, y, accumulate, lg);
	CK_LAUNCH(gemv_fwd);
	return 1;
}

/* ---------------------------------------------------------------------------
 * one-token forward by table lookup (h20). A packed byte holds five trits,
 * so its share of a row's dot product with x is one of 243 sums of five
 * signed x values. A CTA owns one slice of 32 packed byte positions (160
 * weights) and 256 rows; it tabulates, for every position p and byte
 * value b, tab[b][p] = sum_d trit_d(b) x[160 s + 5 p + d] (x past K is
 * zero), and then a row costs one shared-memory lookup and one add a byte.
 * Lane = row: the 32 lanes of a warp read 32 rows at the same position, so
 * the table's row stride is odd (random bytes spread over the banks).
 * Scales: a unit is 16 weights (group size 16) or 32 (group size >= 32, a
 * power of two: every group boundary is a unit boundary, and 160 s is a
 * multiple of 32). A byte that straddles a unit boundary has a second
 * column for the digits after it. A row's unit sums are scaled by their
 * group's 2^E (staged as floats) and added.
 * Rows are staged by cp.async (the 48 aligned bytes that hold a row's 32,
 * rows of 8 skewed by 16 bytes against bank conflicts). Every slice is a
 * split-K CTA (grid.y); the last CTA of a row chunk adds the partials in
 * slice order (split_finish): deterministic. ARB_CUDA_LEGACY=lut skips it.
 * h20 measures: 2.3M warp instructions at 4096^2 (the v4 kernel: 4.4M), of
 * which the lookups are a fifth; the rest is the table (9 x 36 tasks of 27
 * entries a CTA), staging, exponents and the split. The lookups' random
 * banks conflict (ncu: 57 % of the 0.97M shared-memory wavefronts are
 * excessive); the kernel is latency-bound at 20 cycles per
 * issued instruction with 4 CTAs an SM. Two rows a lane (half the table
 * work a row) was slower at every bench shape (13.9 / 22.7 / 28.2 us), and
 * so were CTAs that keep the table for 2, 3, 4 or 6 row chunks with the
 * next chunk's rows loading during the lookups (4096 x 11008: 23.5 / 24.6 /
 * 27.5 / 32.3 us against 20.6 with one chunk, same call): fewer CTAs.
 * h21: lanes on (row, 32-weight unit) instead of rows, so that the lookups
 * of a warp hit distinct banks (main columns at a stride of 32 words, byte
 * order rotated by row), rows copied by cp.async 8 passes of 6 rows ahead
 * into a ring a warp, 288..864 rows a CTA: 22.4 / 33.1 / 42.2 us at the
 * three bench shapes (17.0 / 29.3 / 28.8 with fewer rows a CTA) against
 * 10.7 / 20.1 / 20.5 in the same call; ncu at 4096^2: 5.1M warp
 * instructions, the lookups themselves a tenth, the ring's copies, the
 * per-row exponent and shuffles, the split tail and the CTA's start (x,
 * table) the rest. Dropped. */
#define LT_P 32
template <int LG> struct LtShape {
	static constexpr int U = 16 << LG;      /* weights a unit */
	static constexpr int NS = LG ? 4 : 8;   /* straddling bytes a slice */
	static constexpr int C = LT_P + NS;     /* table columns */
	static constexpr int S = C + 1;         /* odd row stride (words) */
	static constexpr int NU = 160 / U;      /* units a slice */
	static constexpr int SCS = NU | 1;      /* odd scale row stride */
};
template <int LG>
static size_t lt_smem()
{
	typedef LtShape<LG> L;
	return 256 * L::S * 4 + 256 * 50 + 256 * L::SCS * 4 + 161 * 4;
}
template <int D>
__device__ __forceinline__ float lt_add(float a, float c)
{
	return D == 1 ? a : (D == 0 ? a - c : a + c);
}
template <int LG, int AL>
__global__ void __launch_bounds__(256) lut_fwd_kernel(tern_view v, const float *x, float *y,
	int acc, int sh, float *part, unsigned int *cnt)
{
	typedef LtShape<LG> L;
	constexpr int R = 256;
	extern __shared__ __align__(16) unsigned char ltm[];
	float *tab = (float *)ltm;
	unsigned char *srow = ltm + 256 * L::S * 4;
	float *scl = (float *)(srow + R * 50);
	float *xs = scl + R * L::SCS; /* x[160 s ..], zero past K; [160]: spare */
	const int64_t N = v.rows, K = v.cols, rb = v.row_bytes;
	const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
	const int s = blockIdx.y;
	const int64_t n0 = (int64_t)blockIdx.x * R, total = N * rb;
	/* first every load of the CTA's: the rows (three aligned 16-byte
	 * chunks each, by cp.async), the slice of x and the units' exponents
	 * (to registers) */
	const int64_t c0 = n0 * rb + 32 * s;      /* the CTA's first row, slice start */
	const int64_t left0 = total - (c0 & ~(int64_t)15);
	const int nr = (int)min((int64_t)R, N - n0), rbi = (int)rb; /* rb < 2^22 (host) */
#pragma unroll
	for (int q = 0; q < 3; q++) {
		const int i = tid + 256 * q, r = i / 3, c = i - 3 * r;
		/* bytes of the chunk within the tensor (0: a row >= N) */
		const int ad = (int)((c0 & 15) + r * rbi) & ~15;
		const int64_t left = r < nr ? left0 - ad - 16 * c : 0;
		const int bytes = left >= 16 ? 16 : (left > 0 ? (int)left : 0);
		cp_async16(srow + r * 48 + 16 * (r >> 3) + 16 * c,
			   bytes ? v.packed + (c0 & ~(int64_t)15) + ad + 16 * c : v.packed, bytes);
	}
	cp_commit();
	const int64_t k0 = 160 * (int64_t)s;
	const float xv = tid < 160 && k0 + tid < K ? __ldg(x + k0 + tid) : 0.0f;
	constexpr int NE = (R * L::NU + 255) / 256;
	int ev[NE];
	const int8_t *E0 = v.E + n0 * v.groups;
#pragma unroll
	for (int q = 0; q < NE; q++) {
		const int i = tid + 256 * q, r = i / L::NU, u = i - L::NU * r;
		const int g = min((L::NU * s + u) >> sh, v.groups - 1);
		ev[q] = i < R * L::NU && r < nr ? E0[r * v.groups + g] : -127;
	}
	xs[tid < 160 ? tid : 160] = xv;
	__syncthreads();
	/* the table: task (column c, top digits h) fills the 27 entries
	 * b = 27 h + lo; entries 243..255 (no packed byte) are zero */
	for (int t = tid; t < 9 * L::C; t += 256) {
		const int h = t / L::C, c = t - h * L::C;
		int p, dlo, dhi;
		if (c < LT_P) {
			p = c;
			dlo = 0;
			dhi = min(5, (5 * c / L::U + 1) * L::U - 5 * c);
		} else {
			const int i = c - LT_P, j = LG ? i : (i < 4 ? i : i + 1);
			const int bnd = L::U * (j + 1);
			p = bnd / 5;
			dlo = bnd - 5 * p;
			dhi = 5;
		}
		float cf[5];
#pragma unroll
		for (int d = 0; d < 5; d++) cf[d] = d >= dlo && d < dhi ? xs[5 * p + d] : 0.0f;
		const int d3 = h % 3, d4 = h / 3;
		float B = d3 == 0 ? -cf[3] : (d3 == 2 ? cf[3] : 0.0f);
		B = d4 == 0 ? B - cf[4] : (d4 == 2 ? B + cf[4] : B);
		float *col = tab + 27 * h * L::S + c;
		const float a20 = lt_add<0>(B, cf[2]), a21 = lt_add<1>(B, cf[2]),
			    a22 = lt_add<2>(B, cf[2]);
		const float a2[3] = { a20, a21, a22 };
#pragma unroll
		for (int d2 = 0; d2 < 3; d2++) {
			const float a10 = lt_add<0>(a2[d2], cf[1]), a11 = lt_add<1>(a2[d2], cf[1]),
				    a12 = lt_add<2>(a2[d2], cf[1]);
			const float a1[3] = { a10, a11, a12 };
#pragma unroll
			for (int d1 = 0; d1 < 3; d1++) {
				float *e = col + (9 * d2 + 3 * d1) * L::S;
				e[0] = lt_add<0>(a1[d1], cf[0]);
				e[L::S] = lt_add<1>(a1[d1], cf[0]);
				e[2 * L::S] = lt_add<2>(a1[d1], cf[0]);
			}
		}
	}
	for (int i = tid; i < 13 * L::C; i += 256)
		tab[(243 + i / L::C) * L::S + i % L::C] = 0.0f;
#pragma unroll
	for (int q = 0; q < NE; q++) {
		const int i = tid + 256 * q, r = i / L::NU, u = i - L::NU * r;
		if (i < R * L::NU) scl[r * L::SCS + u] = arb_exp2i(ev[q]);
	}
	cp_wait<0>();
	__syncthreads();
	float res;
	{
		const int r = 32 * warp + lane;
		const int64_t n = n0 + r;
		const unsigned char *sr = srow + r * 48 + 16 * (r >> 3);
		const int o = (int)((n * rb + 32 * s) & 15);
		uint32_t w[8];
		if (AL) {
#pragma unroll
			for (int i = 0; i < 8; i++) w[i] = *(const uint32_t *)(sr + o + 4 * i);
		} else {
			const uint32_t *q = (const uint32_t *)(sr + (o & ~3));
			uint32_t t9[9];
#pragma unroll
			for (int i = 0; i < 9; i++) t9[i] = q[i];
#pragma unroll
			for (int i = 0; i < 8; i++) w[i] = __funnelshift_r(t9[i], t9[i + 1], 8 * (o & 3));
		}
		float us[L::NU];
#pragma unroll
		for (int u = 0; u < L::NU; u++) us[u] = 0.0f;
		int si = 0;
#pragma unroll
		for (int p = 0; p < LT_P; p++) {
			const uint32_t b = prmt(w[p >> 2], 0u, 0x4440u | (uint32_t)(p & 3));
			const float *e = tab + b * L::S;
			const int ulo = 5 * p / L::U, uhi = (5 * p + 4) / L::U;
			us[ulo] += e[p];
			if (uhi != ulo) {
				us[uhi] += e[LT_P + si];
				si++;
			}
		}
		const float *sc = scl + r * L::SCS;
		float sum = 0.0f;
#pragma unroll
		for (int u = 0; u < L::NU; u++) sum = fmaf(us[u], sc[u], sum);
		res = sum;
	}
	if (n0 + tid < N) {
		if (gridDim.y == 1) y[n0 + tid] = acc ? y[n0 + tid] + res : res;
		else part[(int64_t)s * N + n0 + tid] = res;
	}
	if (gridDim.y > 1)
		split_finish(part, y, &cnt[blockIdx.x], N, N, n0, (int)min((int64_t)256, N - n0), 1,
			     acc);
}

template <int LG, int AL>
static void lut_go(dim3 grid, const tern_view &v, const float *x, float *y, int acc, int sh,
		   float *part, unsigned int *cnt)
{
	const size_t smem = lt_smem<LG>();
	static int ready = 0;
	if (!ready) {
		CK(cudaFuncSetAttribute(lut_fwd_kernel<LG, AL>,
			cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
		ready = 1;
	}
	lut_fwd_kernel<LG, AL><<<grid, 256, smem>>>(v, x, y, acc, sh, part, cnt);
}
/* 0: the tensor or the batch does not suit the table kernel, or the v4
 * skinny kernel runs it in one wave, where that is faster (h20, after the
 * split_finish change: 4096^2 10.7-11.0 us vs the table's 12.2-12.7 before
 * it; 11008 x 4096 20.3 vs the v4 kernel's 22.7-23.1; 4096 x 11008 20.5-20.6
 * vs the GEMV's 27.7). ARB_LUT=1 forces it (tests). */
static int lut_forward(arb_backend *be, const tern_view &v, const float *x, float *y,
		       int64_t M, int accumulate)
{
	const int gs = v.gs;
	if (M != 1 || v.corr || (gs & (gs - 1)) || gs < 16 || cuda_legacy("lut") ||
	    getenv("ARB_SK4") || ((uintptr_t)v.packed & 15))
		return 0;
	const int64_t N = v.rows, rb = v.row_bytes, slices = (rb + 31) / 32;
	if (slices > 65535 || rb >= (1 << 22) || v.groups >= (1 << 22)) return 0;
	const char *ov = getenv("ARB_LUT");
	if (ov && strcmp(ov, "1")) {
		static int told = 0;
		if (!told)
			fprintf(stderr, "arbcore: ARB_LUT=\"%s\" is not 1 (the only value, which "
				"forces the one-token table kernel); the default dispatch is used\n", ov);
		told = 1;
		ov = NULL;
	}
	const int sms = cuda_get_priv(be)->sms;
	if (!ov && (rb + 15) / 16 <= 64 &&
	    (N + 15) / 16 <= 2 * (int64_t)sms + sms / 5 && !cuda_legacy("fwd16"))
		return 0;
	int lg = 0;
	while ((1 << lg) < gs) lg++;
	const int LG = gs >= 32, sh = lg - 4 - LG;
	const int64_t chunks = (N + 255) / 256;
	if (chunks > 0x7fffffff) return 0;
	unsigned int *cnt = NULL;
	float *part = slices > 1 ? cuda_split_ws(be, slices * N, &cnt, chunks) : NULL;
	const dim3 grid((unsigned)chunks, (unsigned)slices);
	if ((rb & 3) == 0) {
		if (LG) lut_go<1, 1>(grid, v, x, y, accumulate, sh, part, cnt);
		else lut_go<0, 1>(grid, v, x, y, accumulate, sh, part, cnt);
	} else {
		if (LG) lut_go<1, 0>(grid, v, x, y, accumulate, sh, part, cnt);
		else lut_go<0, 0>(grid, v, x, y, accumulate, sh, part, cnt);
	}
	CK_LAUNCH(lut_fwd);
	return 1;
}

/* ---------------------------------------------------------------------------
 * skinny backward_x, M <= 256: dx[m,k] = sum_n dy[m,n] W[n,k]. The reduction
 * runs over the rows of W. A CTA owns 32 packed byte columns (160 k) and a
 * chunk of at most 256 rows: it first stages the chunk's packed bytes and
 * exponents in shared memory (coalesced loads, all in flight at once), then,
 * for every 16 rows of dy (staged as [16][rows], read as a broadcast), lane l
 * of warp w walks rows w, w + 8, ... of byte column l, decodes five trits
 * and accumulates them times dy. Five consecutive k touch at most two groups
 * (group_size >= 4). The 8 warps' sums are added as a fixed tree; with several
 * row chunks (grid.y) each writes its partial sums and a second kernel adds
 * them in chunk order (deterministic). */
#define XB_LANES 32   /* packed bytes per CTA: 160 k */
#define XB_WARPS 8
#define XB_MT 16      /* dy rows per pass */
#define XB_RPC 256    /* rows per chunk at most */
#define XB_NGT 42     /* groups 160 k can touch (group_size >= 4) */

static size_t xb_smem(int64_t rpc, int ngt)
{
	size_t a = ((size_t)rpc * (XB_LANES + ngt) + 15) & ~(size_t)15;
	return a + ((size_t)XB_MT * rpc + 4 * XB_LANES * (XB_MT * 5 + 1)) * 4;
}

__global__ void __launch_bounds__(256) skinny_bwdx_kernel(tern_view v, const float *dy,
	float *dx, int M, int acc, int rpc, int ngt, float *part)
{
	extern __shared__ __align__(16) unsigned char xsm[];
	uint8_t *pk = xsm;                                   /* [rpc][32] */
	int8_t *ek = (int8_t *)(xsm + (size_t)rpc * XB_LANES); /* [rpc][ngt] */
	float *ds = (float *)(xsm + (((size_t)rpc * (XB_LANES + ngt) + 15) & ~(size_t)15));
	float *red = ds + XB_MT * rpc;                       /* [4][32][MT*5+1] */
	const int64_t N = v.rows, K = v.cols, rb = v.row_bytes;
	const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
	const int64_t tb0 = (int64_t)blockIdx.x * XB_LANES;
	const int64_t b = tb0 + lane;
	const int64_t n0 = (int64_t)blockIdx.y * rpc;
	const int nr = (int)(N - n0 < rpc ? N - n0 : rpc);
	const int gt0 = (int)(tb0 * 5 / v.gs);
	/* staging with 8 loads in flight per thread (latency bound) */
	for (int e0 = tid; e0 < nr * XB_LANES; e0 += 256 * 8) {
		uint8_t b8[8];
#pragma unroll
		for (int u = 0; u < 8; u++) {
			int e = e0 + 256 * u, r = e >> 5, l = e & 31;
			b8[u] = (e < nr * XB_LANES && tb0 + l < rb) ?
				__ldg(v.packed + (n0 + r) * rb + tb0 + l) : (uint8_t)121;
		}
#pragma unroll
		for (int u = 0; u < 8; u++)
			if (e0 + 256 * u < nr * XB_LANES) pk[e0 + 256 * u] = b8[u];
	}
	for (int e0 = tid; e0 < nr * ngt; e0 += 256 * 8) {
		int8_t x8[8];
#pragma unroll
		for (int u = 0; u < 8; u++) {
			int e = e0 + 256 * u, r = e / ngt, j = e - r * ngt;
			x8[u] = (e < nr * ngt && gt0 + j < v.groups) ?
				v.E[(n0 + r) * v.groups + gt0 + j] : (int8_t)0;
		}
#pragma unroll
		for (int u = 0; u < 8; u++)
			if (e0 + 256 * u < nr * ngt) ek[e0 + 256 * u] = x8[u];
	}
	const int64_t k0 = b * 5;
	const int glo = (int)(k0 / v.gs);
	int ghi = (int)((k0 + 4) / v.gs);
	if (ghi >= v.groups) ghi = v.groups - 1;
	if (ghi - gt0 >= ngt) ghi = glo;                     /* lanes past the row */
	const int64_t kb = (int64_t)(glo + 1) * v.gs;        /* first k of group ghi */
	const int64_t kt0 = tb0 * 5;
	const int nkt = XB_LANES * 5;
	for (int mc = blockIdx.z * XB_MT; mc < M; mc += gridDim.z * XB_MT) {
		const int mm = M - mc < XB_MT ? M - mc : XB_MT;
		__syncthreads();
		for (int e0 = tid; e0 < XB_MT * nr; e0 += 256 * 8) {
			float d8[8];
#pragma unroll
			for (int u = 0; u < 8; u++) {
				int e = e0 + 256 * u, m = e / nr, r = e - m * nr;
				d8[u] = (e < XB_MT * nr && m < mm) ?
					__ldg(dy + (int64_t)(mc + m) * N + n0 + r) : 0.0f;
			}
#pragma unroll
			for (int u = 0; u < 8; u++) {
				int e = e0 + 256 * u;
				if (e >= XB_MT * nr) break;
				int m = e / nr, r = e - m * nr;
				ds[m * rpc + r] = d8[u];
			}
		}
		__syncthreads();
		float a[XB_MT][5];
#pragma unroll
		for (int m = 0; m < XB_MT; m++)
#pragma unroll
			for (int j = 0; j < 5; j++) a[m][j] = 0.0f;
		if (b < rb) {
			for (int r = warp; r < nr; r += XB_WARPS) {
				unsigned int q = pk[r * XB_LANES + lane];
				float slo, shi;
				if (v.corr) {
					slo = view_scale(v, n0 + r, glo);
					shi = view_scale(v, n0 + r, ghi);
				} else {
					slo = arb_exp2i(ek[r * ngt + glo - gt0]);
					shi = arb_exp2i(ek[r * ngt + ghi - gt0]);
				}
				float w[5];
#pragma unroll
				for (int j = 0; j < 5; j++) {
					unsigned int q3 = (q * 43691u) >> 17;   /* q / 3 */
					int t = (int)(q - 3u * q3) - 1;
					q = q3;
					float sc = k0 + j < kb ? slo : shi;
					w[j] = t ? (t > 0 ? sc : -sc) : 0.0f;
				}
#pragma unroll
				for (int m = 0; m < XB_MT; m++) {
					float d = ds[m * rpc + r];
#pragma unroll
					for (int j = 0; j < 5; j++) a[m][j] = fmaf(d, w[j], a[m][j]);
				}
			}
		}
		/* the 8 warps' sums added as a tree in a fixed order, ((w0 + w4) +
		 * (w2 + w6)) + ((w1 + w5) + (w3 + w7)), through 4 shared buffers:
		 * 3 rounds instead of 8 (h14 ncu: the in-order chain was most of
		 * the kernel at 8 rows per warp) */
		const int RS = XB_LANES * (XB_MT * 5 + 1); /* one buffer */
		for (int h = 4; h >= 1; h >>= 1) {
			if (warp >= h && warp < 2 * h) {
				float *o = red + (warp - h) * RS + lane * (XB_MT * 5 + 1);
#pragma unroll
				for (int m = 0; m < XB_MT; m++)
#pragma unroll
					for (int j = 0; j < 5; j++) o[m * 5 + j] = a[m][j];
			}
			__syncthreads();
			if (warp < h) {
				const float *o = red + warp * RS + lane * (XB_MT * 5 + 1);
#pragma unroll
				for (int m = 0; m < XB_MT; m++)
#pragma unroll
					for (int j = 0; j < 5; j++) a[m][j] += o[m * 5 + j];
			}
			__syncthreads();
		}
		if (warp == 0) {
			float *o = red + lane * (XB_MT * 5 + 1);
#pragma unroll
			for (int m = 0; m < XB_MT; m++)
#pragma unroll
				for (int j = 0; j < 5; j++) o[m * 5 + j] = a[m][j];
		}
		__syncthreads();
		for (int e = tid; e < mm * nkt; e += 256) {
			int m = e / nkt, kl = e - m * nkt;
			int64_t k = kt0 + kl;
			if (k >= K) continue;
			float sv = red[(kl / 5) * (XB_MT * 5 + 1) + m * 5 + kl % 5];
			if (part) {
				part[((int64_t)blockIdx.y * M + mc + m) * K + k] = sv;
			} else {
				float *o = dx + (int64_t)(mc + m) * K + k;
				*o = acc ? *o + sv : sv;
			}
		}
	}
}

/* out[i] (+)= sum_s part[s * n + i], s in order */
__global__ void split_sum_kernel(const float *part, int S, int64_t n, float *out, int acc)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x) {
		float s = 0.0f;
#pragma unroll 8
		for (int sp = 0; sp < S; sp++) s += __ldcg(part + (int64_t)sp * n + i);
		out[i] = acc ? out[i] + s : s;
	}
}

/* ---------------------------------------------------------------------------
 * skinny backward_x on tensor cores (h15), M <= 16 per grid.z chunk:
 * dx[m, k] = sum_n dy[m, n] W[n, k] as mma m16n8k16 with A = dy (16 tokens
 * x 16 rows of W, bf16) and B = W (16 rows x 8 packed byte columns). The
 * mma's n index may be permuted freely: column t of B for step j (0..4) is
 * digit j of byte t, so a lane (g, q) decodes byte g of rows 2q, 2q+1,
 * 2q+8, 2q+9 once and feeds it to five mmas, the trits becoming bf16
 * +-2^E directly (PRMT on the 243-entry selector table of the forward).
 * CTA: 8 warps, each an 8-byte column block (40 k) of the CTA's 64 bytes,
 * all over the same chunk of R rows (grid.y: chunks; split partials added
 * by split_sum_kernel in chunk order). The chunk's packed bytes, exponents
 * and dy (as bf16 in the A-fragment layout) are staged in shared memory
 * first. Any group size (five consecutive k touch at most two groups). No
 * bigint correction (those tensors take skinny_bwdx_kernel). */
#define XM_BYTES 64   /* packed byte columns per CTA (320 k) */
#define XM_AROW 24    /* padded A row (bf16): conflict-free fragment loads */

static size_t xm_smem(int R, int ngt)
{
	size_t a = 256 * 8;                                   /* selector table */
	a += (size_t)R * XM_BYTES;                            /* packed bytes */
	a = (a + (size_t)R * ngt + 15) & ~(size_t)15;         /* exponents */
	return a + (size_t)(R / 16) * 16 * XM_AROW * 2;       /* dy, bf16 */
}

__global__ void __launch_bounds__(256) skinny_bwdx_mma_kernel(tern_view v, const float *dy,
	float *dx, int Mt, int acc, int R, int ngt, float *part)
{
	extern __shared__ __align__(16) unsigned char xmsm[];
	unsigned long long *tab = (unsigned long long *)xmsm;       /* [256] */
	uint8_t *pk = xmsm + 256 * 8;                                 /* [R][64] */
	int8_t *ek = (int8_t *)(pk + (size_t)R * XM_BYTES);           /* [R][ngt] */
	__nv_bfloat16 *as = (__nv_bfloat16 *)(xmsm + (((size_t)256 * 8 + (size_t)R * XM_BYTES +
					       (size_t)R * ngt + 15) & ~(size_t)15));
	const int64_t N = v.rows, K = v.cols, rb = v.row_bytes;
	const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
	const int g = lane >> 2, q = lane & 3;
	const int mz = blockIdx.z * 16;
	const int M = Mt - mz < 16 ? Mt - mz : 16;
	dy += (int64_t)mz * N;
	const int64_t cb0 = (int64_t)blockIdx.x * XM_BYTES;     /* first byte column */
	const int64_t n0 = (int64_t)blockIdx.y * R;
	const int nr = (int)(N - n0 < R ? N - n0 : R);
	const int gt0 = (int)(cb0 * 5 / v.gs);
	/* staging: the first batch of every kind (packed bytes, exponents, dy)
	 * issued before any store, so their round trips overlap; R <= 256
	 * keeps the packed bytes to one batch */
	uint32_t w4[4][4];
#pragma unroll
	for (int u = 0; u < 4; u++) {
		const int e = tid + 256 * u, r = e >> 2, sg = e & 3;
		if (e < R * (XM_BYTES / 16))
			s3_load(v.packed, r < nr ? N : 0, rb, n0 + r, cb0 + 16 * sg, w4[u]);
	}
	int8_t x8[8];
	float d16[16];
	auto e_load = [&](int e0) {
#pragma unroll
		for (int u = 0; u < 8; u++) {
			const int e = e0 + 256 * u, r = e / ngt, j = e - r * ngt;
			x8[u] = (e < nr * ngt && gt0 + j < v.groups) ?
				v.E[(n0 + r) * v.groups + gt0 + j] : (int8_t)0;
		}
	};
	auto e_store = [&](int e0) {
#pragma unroll
		for (int u = 0; u < 8; u++)
			if (e0 + 256 * u < nr * ngt) ek[e0 + 256 * u] = x8[u];
	};
	/* dy[m][n0 + r] -> as[r / 16][m][r % 16] (rows >= nr and tokens >= M:
	 * zeros) */
	auto d_load = [&](int e0) {
#pragma unroll
		for (int u = 0; u < 16; u++) {
			const int e = e0 + 256 * u, m = e / R, r = e - m * R;
			d16[u] = (e < 16 * R && m < M && r < nr) ? __ldg(dy + (int64_t)m * N + n0 + r) : 0.0f;
		}
	};
	auto d_store = [&](int e0) {
#pragma unroll
		for (int u = 0; u < 16; u++) {
			const int e = e0 + 256 * u;
			if (e >= 16 * R) break;
			const int m = e / R, r = e - m * R;
			as[((r >> 4) * 16 + m) * XM_AROW + (r & 15)] = __float2bfloat16(d16[u]);
		}
	};
	e_load(tid);
	d_load(tid);
	s3_table(tab);
#pragma unroll
	for (int u = 0; u < 4; u++) {
		const int e = tid + 256 * u;
		if (e < R * (XM_BYTES / 16))
			*(uint4 *)(pk + 16 * e) = make_uint4(w4[u][0], w4[u][1], w4[u][2], w4[u][3]);
	}
	e_store(tid);
	d_store(tid);
	for (int e0 = tid + 256 * 8; e0 < nr * ngt; e0 += 256 * 8) {
		e_load(e0);
		e_store(e0);
	}
	for (int e0 = tid + 256 * 16; e0 < 16 * R; e0 += 256 * 16) {
		d_load(e0);
		d_store(e0);
	}
	__syncthreads();
	/* lane: byte column cb = 8 warp + g of the CTA; its five k = 5 (cb0 +
	 * cb) + j lie in groups glo (j < jb) and ghi */
	const int cbl = 8 * warp + g;
	const int64_t kk0 = 5 * (cb0 + cbl);
	int glo = (int)(kk0 / v.gs) - gt0;
	int jb = (int)((int64_t)(glo + gt0 + 1) * v.gs - kk0);
	int ghi = glo + 1;
	if (jb >= 5 || ghi >= ngt) { jb = 5; ghi = glo; }
	if (glo >= ngt) glo = ghi = ngt - 1; /* a column past the row: zero trits */
	float c[5][4];
#pragma unroll
	for (int j = 0; j < 5; j++)
#pragma unroll
		for (int t = 0; t < 4; t++) c[j][t] = 0.0f;
	const int rows4[4] = { 2 * q, 2 * q + 1, 2 * q + 8, 2 * q + 9 };
	for (int st = 0; st < R / 16; st++) {
		const int rbase = 16 * st;
		uint32_t a[4];
		const __nv_bfloat16 *ap = as + (st * 16) * XM_AROW;
		a[0] = *(const uint32_t *)(ap + g * XM_AROW + 2 * q);
		a[1] = *(const uint32_t *)(ap + (g + 8) * XM_AROW + 2 * q);
		a[2] = *(const uint32_t *)(ap + g * XM_AROW + 2 * q + 8);
		a[3] = *(const uint32_t *)(ap + (g + 8) * XM_AROW + 2 * q + 8);
		/* the four rows' selector words and scale words */
		unsigned long long L[4];
		uint32_t hlo[4], hhi[4];
#pragma unroll
		for (int i = 0; i < 4; i++) {
			const int r = rbase + rows4[i];
			L[i] = tab[pk[r * XM_BYTES + cbl]];
			const int elo = ek[r * ngt + glo], ehi = ek[r * ngt + ghi];
			uint32_t h = elo < -126 ? 0u : (uint32_t)(elo + 127) << 7;
			hlo[i] = h | ((h | 0x8000u) << 16);
			h = ehi < -126 ? 0u : (uint32_t)(ehi + 127) << 7;
			hhi[i] = h | ((h | 0x8000u) << 16);
		}
#pragma unroll
		for (int j = 0; j < 5; j++) {
			uint32_t w[4];
#pragma unroll
			for (int i = 0; i < 4; i++)
				w[i] = prmt(j < jb ? hlo[i] : hhi[i], 0u, (uint32_t)(L[i] >> (8 * j)));
			const uint32_t b0 = prmt(w[0], w[1], 0x5410u);
			const uint32_t b1 = prmt(w[2], w[3], 0x5410u);
			mma16816(c[j], a, b0, b1);
		}
	}
	/* c[j][t]: token m = g + 8 (t >> 1), byte column 2q + (t & 1) of the
	 * warp's block, digit j */
#pragma unroll
	for (int j = 0; j < 5; j++)
#pragma unroll
		for (int t = 0; t < 4; t++) {
			const int m = g + 8 * (t >> 1);
			const int64_t k = 5 * (cb0 + 8 * warp + 2 * q + (t & 1)) + j;
			if (m >= M || k >= K) continue;
			if (part) {
				part[((int64_t)blockIdx.y * Mt + mz + m) * K + k] = c[j][t];
			} else {
				float *o = dx + (int64_t)(mz + m) * K + k;
				*o = acc ? *o + c[j][t] : c[j][t];
			}
		}
}

static void split_sum_launch(const float *part, int64_t S, int64_t n, float *out, int acc)
{
	unsigned int gb = (unsigned int)((n + 255) / 256);
	if (gb > 4096) gb = 4096;
	split_sum_kernel<<<gb, 256>>>(part, (int)S, n, out, acc);
	CK_LAUNCH(split_sum);
}

/* rows of W per chunk of a skinny backward_x split over row chunks (grid.y;
 * *S the number of chunks): about two CTAs per SM with `ctas` CTAs per
 * chunk, at least 128 rows a chunk (h15 ncu: 32-row chunks spent most
 * instructions on staging and the warp tree, and split_sum over 64 partials
 * took 4.6 us a call), at most 256, a multiple of align, the partial sums at
 * most 16M floats; 0 when even that would exceed 64M floats */
static int64_t bwdx_chunk_rows(arb_backend *be, int64_t N, int64_t M, int64_t K, int64_t ctas,
			       int align, int64_t *S_out)
{
	int64_t S = (2 * (int64_t)cuda_get_priv(be)->sms + ctas - 1) / ctas;
	const int64_t smax = (N + 127) / 128;
	if (S > smax) S = smax;
	while (S > 1 && S * M * K > ((int64_t)1 << 24)) S /= 2;
	if (S < 1) S = 1;
	int64_t R = (N + S - 1) / S;
	R = (R + align - 1) / align * align;
	if (R > 256) R = 256;
	S = (N + R - 1) / R;
	if (S > 1 && S * M * K > ((int64_t)1 << 26)) return 0; /* too much partial memory */
	*S_out = S;
	return R;
}

static int g_xm_ready = 0;
static int skinny_backward_x_mma(arb_backend *be, const tern_view &v, const float *dy, float *dx,
				 int64_t M, int accumulate)
{
	if (v.corr || cuda_legacy("bwdx") || M > 256) return 0;
	const int64_t N = v.rows, K = v.cols;
	const int64_t tiles = (v.row_bytes + XM_BYTES - 1) / XM_BYTES;
	const int64_t Z = (M + 15) / 16;
	/* about two CTAs per SM over row chunks of 128..256 rows (h15: 64-row
	 * chunks left the moe's 2048 x 512 at 10 us plus a split_sum over 32
	 * partials) */
	int64_t S;
	const int64_t R = bwdx_chunk_rows(be, N, M, K, tiles * Z, 16, &S);
	if (!R) return 0;
	int64_t span = (int64_t)(XM_BYTES * 5 + v.gs - 2) / v.gs + 1;
	const int ngt = (int)(span < v.groups ? span : v.groups);
	if (!g_xm_ready) {
		CK(cudaFuncSetAttribute(skinny_bwdx_mma_kernel,
			cudaFuncAttributeMaxDynamicSharedMemorySize,
			(int)xm_smem(256, (XM_BYTES * 5 + ARB_GROUP_MIN - 2) / ARB_GROUP_MIN + 1)));
		g_xm_ready = 1;
	}
	unsigned int *cnt = NULL;
	float *part = S > 1 ? cuda_split_ws(be, S * M * K, &cnt, 1) : NULL;
	dim3 grid((unsigned)tiles, (unsigned)S, (unsigned)Z);
	skinny_bwdx_mma_kernel<<<grid, 256, xm_smem((int)R, ngt)>>>(v, dy, dx, (int)M, accumulate,
								   (int)R, ngt, part);
	CK_LAUNCH(skinny_bwdx_mma);
	if (part) split_sum_launch(part, S, M * K, dx, accumulate);
	return 1;
}

static int g_xb_ready = 0;
static int skinny_backward_x(arb_backend *be, const tern_view &v, const float *dy, float *dx,
			     int64_t M, int accumulate)
{
	if (cuda_legacy("skinny") || M > 256) return 0;
	if (skinny_backward_x_mma(be, v, dy, dx, M, accumulate)) return 1;
	if (!g_xb_ready) {
		CK(cudaFuncSetAttribute(skinny_bwdx_kernel,
			cudaFuncAttributeMaxDynamicSharedMemorySize, (int)xb_smem(XB_RPC, XB_NGT)));
		g_xb_ready = 1;
	}
	cuda_priv *p = cuda_get_priv(be);
	const int64_t N = v.rows, K = v.cols;
	const int64_t tiles = (v.row_bytes + XB_LANES - 1) / XB_LANES;
	/* about two CTAs per SM, the partial sums at most 16M floats */
	/* 16-row chunks of dy over grid.z when the columns and row chunks alone
	 * give too few CTAs (the low-rank products: K of 128, M of 128) */
	int64_t Z = (2 * (int64_t)p->sms + tiles - 1) / tiles;
	if (Z > (M + XB_MT - 1) / XB_MT) Z = (M + XB_MT - 1) / XB_MT;
	if (Z < 1) Z = 1;
	int64_t S;
	const int64_t rpc = bwdx_chunk_rows(be, N, M, K, tiles * Z, 1, &S);
	if (!rpc) return 0;
	/* groups the widest tile touches */
	int64_t span = (int64_t)(XB_LANES * 5 + v.gs - 2) / v.gs + 1;
	int ngt = (int)(span < v.groups ? span : v.groups);
	unsigned int *cnt = NULL;
	float *part = S > 1 ? cuda_split_ws(be, S * M * K, &cnt, 1) : NULL;
	dim3 grid((unsigned)tiles, (unsigned)S, (unsigned)Z);
	skinny_bwdx_kernel<<<grid, 256, xb_smem(rpc, ngt)>>>(v, dy, dx, (int)M, accumulate,
							      (int)rpc, ngt, part);
	CK_LAUNCH(skinny_bwdx);
	if (part) split_sum_launch(part, S, M * K, dx, accumulate);
	return 1;
}

/* two workspaces carved from the backend scratch */
/* ---------------------------------------------------------------------------
 * fp8 operands of the sign vote (Hopper, M >= 256): dy^T and x^T in e4m3,
 * each scaled by a power of two, which changes no sign of dW and, inside
 * the e4m3 normal range, no rounding either: a sum of products of the
 * rounded values, twice the tensor-core rate of bf16.
 * The scale comes from the last vote's |max| of the same operand (tern_ws),
 * so the conversion is one pass; it records this |max| and, where a value
 * went past 448 (or there was no last vote), asks for pass 1, which does
 * the tile again with the exact scale; pass 1 also redoes it when this
 * |max| fell below 1/16 of the last (precision). The vote GEMM's block 0
 * rolls the state over. */
__device__ __forceinline__ float f8_scale(float a, int exact)
{
	if (!(a > 0.0f) || isinf(a)) return 1.0f;
	int ex;
	frexpf(a, &ex); /* a in [2^(ex-1), 2^ex) */
	/* a * 2^e in [128, 256) (exact) or [64, 128) (stale: headroom) */
	int e = (exact ? 8 : 7) - ex;
	e = e < -126 ? -126 : (e > 126 ? 126 : e);
	return ldexpf(1.0f, e);
}
/* the two operands of one vote: src fp32 [rows][cols[t]] -> dst[t] e4m3
 * [cols[t]][ldp] (rows past `rows` zero) */
struct f8_job {
	const float *src[2];
	uint8_t *dst[2];
	int64_t cols[2], rows, ldp;
	int tiles[2], tx[2]; /* 128 x 64 tiles, of them across the columns */
};
/* pass 0: one tile per block (blockIdx.y: the operand); pass 1: a small
 * grid that leaves at once unless the operand needs redoing, then strides
 * over its tiles. Block 32 x 8; a tile's 128 rows x 64 columns through
 * shared memory. Within every whole 128-row block of M the output row keeps
 * row r at byte 4 (r % 32) + r / 32 (thread tx writes rows tx + 32 j, j <
 * 4, as one word, no bank conflict): both operands alike, and the GEMM's
 * sum over M does not depend on its order; a last partial block keeps its
 * rows in order. */
__global__ void __launch_bounds__(256) to_f8_t_kernel(f8_job jb, tern_ws *ws, int pass)
{
	const int t = blockIdx.y;
	const float prev = ws->f8_amax[t];
	float sc;
	if (pass == 0) {
		sc = f8_scale(prev, 0);
	} else {
		const float now = __uint_as_float(ws->f8_now[t]);
		if (!ws->f8_redo[t] && !(now * 16.0f < prev)) return;
		sc = f8_scale(now, 1);
	}
	__shared__ float tl[128][65];
	__shared__ float red[8];
	/* the operand's fields by selection (indexing the parameter by t
	 * copied it to local memory) */
	const float *src = t ? jb.src[1] : jb.src[0];
	uint8_t *dst = t ? jb.dst[1] : jb.dst[0];
	const int64_t cols = t ? jb.cols[1] : jb.cols[0], rows = jb.rows, ldp = jb.ldp;
	const int ntile = t ? jb.tiles[1] : jb.tiles[0], ntx = t ? jb.tx[1] : jb.tx[0];
	const int tx = threadIdx.x, ty = threadIdx.y;
	const int vec = (cols & 1) == 0 && ((uintptr_t)src & 7) == 0;
	float mx = 0.0f;
	int over = 0;
	for (int tile = blockIdx.x; tile < ntile; tile += gridDim.x) {
		const int64_t r0 = (int64_t)(tile / ntx) * 128, c0 = (int64_t)(tile % ntx) * 64;
		float2 v[16];
#pragma unroll
		for (int u = 0; u < 16; u++) {
			const int64_t r = r0 + ty + 8 * u, c = c0 + 2 * tx;
			v[u] = make_float2(0.0f, 0.0f);
			if (r < rows) {
				const float *p = src + r * cols + c;
				if (vec && c + 1 < cols) {
					v[u] = __ldg((const float2 *)p);
				} else {
					if (c < cols) v[u].x = __ldg(p);
					if (c + 1 < cols) v[u].y = __ldg(p + 1);
				}
			}
		}
		if (tile != (int)blockIdx.x) __syncthreads(); /* the last tile is read */
#pragma unroll
		for (int u = 0; u < 16; u++) {
			tl[ty + 8 * u][2 * tx] = v[u].x;
			tl[ty + 8 * u][2 * tx + 1] = v[u].y;
			mx = fmaxf(mx, fmaxf(fabsf(v[u].x), fabsf(v[u].y)));
		}
		__syncthreads();
		const int whole = r0 + 128 <= ldp;
		for (int i = ty; i < 64; i += 8) {
			const int64_t c = c0 + i;
			if (c >= cols) continue;
			if (whole) {
				/* rows tx + 32 j as one word at 4 tx (h19: a 128-byte
				 * store per warp instead of four 32-byte ones) */
				uint32_t wd = 0;
#pragma unroll
				for (int j = 0; j < 4; j++) {
					const float a = tl[tx + 32 * j][i] * sc;
					over |= fabsf(a) > 448.0f;
					wd |= (uint32_t)__nv_cvt_float_to_fp8(a, __NV_SATFINITE, __NV_E4M3)
					      << (8 * j);
				}
				*(uint32_t *)(dst + c * ldp + r0 + 4 * tx) = wd;
				continue;
			}
#pragma unroll
			for (int j = 0; j < 4; j++) {
				const int64_t r = r0 + tx + 32 * j;
				if (r >= ldp) continue;
				const float a = tl[tx + 32 * j][i] * sc;
				over |= fabsf(a) > 448.0f;
				dst[c * ldp + r] = (uint8_t)__nv_cvt_float_to_fp8(a, __NV_SATFINITE, __NV_E4M3);
			}
		}
	}
	if (pass) return;
	if (over || !(prev > 0.0f)) ws->f8_redo[t] = 1;
	for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
	if (tx == 0) red[ty] = mx;
	__syncthreads();
	if (tx == 0 && ty == 0) {
		for (int w = 1; w < 8; w++) mx = fmaxf(mx, red[w]);
		if (mx > 0.0f) atomicMax(&ws->f8_now[t], __float_as_uint(mx));
	}
}

static __nv_bfloat16 *gs_ws(arb_backend *be, int64_t na, int64_t nb, __nv_bfloat16 **b)
{
	size_t a2 = ((size_t)na * 2 + 255) & ~(size_t)255;
	char *p = (char *)cuda_scratch(be, a2 + (size_t)nb * 2);
	*b = (__nv_bfloat16 *)(p + a2);
	return (__nv_bfloat16 *)p;
}
static unsigned int gs_grid(int64_t n)
{
	int64_t g = (n + 255) / 256;
	if (g > 132 * 16) g = 132 * 16;
	return (unsigned int)(g < 1 ? 1 : g);
}
static int g_gs_ready = 0;
template <int MODE>
static void gs_launch(const __nv_bfloat16 *A, const __nv_bfloat16 *B, int64_t I, int64_t J,
		      int64_t R, int64_t ldp, const EpArgs &ep)
{
	if (!g_gs_ready) {
		CK(cudaFuncSetAttribute(gemm_tn_kernel2<EP_STORE>,
			cudaFuncAttributeMaxDynamicSharedMemorySize, (int)GS_SMEM));
		CK(cudaFuncSetAttribute(gemm_tn_kernel2<EP_VOTE>,
			cudaFuncAttributeMaxDynamicSharedMemorySize, (int)GS_SMEM));
		CK(cudaFuncSetAttribute(gemm_tn_kernel2<EP_MEASURE>,
			cudaFuncAttributeMaxDynamicSharedMemorySize, (int)GS_SMEM));
		g_gs_ready = 1;
	}
	dim3 grid(cdiv(J, BN), cdiv(I, BM));
	gemm_tn_kernel2<MODE><<<grid, 256, GS_SMEM>>>(A, B, I, J, R, ldp, ep);
}

/* ---------------------------------------------------------------------------
 * direct sign vote for few rows (M <= DV_MMAX, or a small dW): no bf16
 * transposes, no 128 x 128 tile. A CTA owns DV_ROWS weight rows x DV_K
 * columns; it stages x[:, k-tile] and dy[:, n-tile] in shared memory
 * (DV_MC rows of M at a time), lane l of warp w sums dW for the 4 columns
 * 4l..4l+3 of rows w, w+8, ... in fp32 (m in order), then updates T_accum
 * and the per-group scores like vote_sign_epilogue. fp32 products: exact for
 * the dyadic test inputs, at least as close to the CPU reference as the bf16
 * tile GEMM elsewhere. */
/* the x and dy tiles of one chunk of rows, copied to shared memory
 * asynchronously (cp.async, no registers, everything in flight at once):
 * d1[r][c] = s1[r * ld1 + c01 + c] for c < C1 and d2[r][c] = s2[r * ld2 +
 * c02 + c] for c < C2 (zeros past cmax1 / cmax2), r < rows. x rows go as
 * 16-byte copies when vec (row starts and c01 16-byte aligned). The caller
 * commits and waits. */
template <int C1, int C2>
__device__ __forceinline__ void stage_async(float *d1, const float *s1, int64_t ld1, int64_t c01,
					    int64_t cmax1, float *d2, const float *s2, int64_t ld2,
					    int64_t c02, int64_t cmax2, int rows, int vec)
{
	if (vec) {
		for (int e = threadIdx.x; e < rows * (C1 / 4); e += 256) {
			const int r = e / (C1 / 4), c = 4 * (e % (C1 / 4));
			const int64_t left = cmax1 - (c01 + c);
			const int nb = left >= 4 ? 16 : (left > 0 ? 4 * (int)left : 0);
			cp_async16(d1 + r * C1 + c, s1 + (int64_t)r * ld1 + c01 + (nb ? c : 0), nb);
		}
	} else {
		for (int e = threadIdx.x; e < rows * C1; e += 256) {
			const int r = e / C1, c = e % C1;
			const int ok = c01 + c < cmax1;
			cp_async4(d1 + e, s1 + (int64_t)r * ld1 + (ok ? c01 + c : 0), ok ? 4 : 0);
		}
	}
	for (int e = threadIdx.x; e < rows * C2; e += 256) {
		const int r = e / C2, c = e % C2;
		const int ok = c02 + c < cmax2;
		cp_async4(d2 + e, s2 + (int64_t)r * ld2 + (ok ? c02 + c : 0), ok ? 4 : 0);
	}
}

#define DV_K 128
#define DV_ROWS 16 /* h14: 64 rows gave 128 CTAs for a 1M-weight tensor, 0.5 waves */
#define DV_MC 32
#define DV_RPW (DV_ROWS / 8)

__global__ void __launch_bounds__(256) vote_direct_kernel(const float *x, const float *dy,
	int M, int64_t N, int64_t K, EpArgs ep)
{
	__shared__ __align__(16) float xs[2][DV_MC][DV_K];
	__shared__ __align__(16) float ds[2][DV_MC][DV_ROWS];
	__shared__ int sc[DV_ROWS * SC_G];
	const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
	const int64_t k0 = (int64_t)blockIdx.x * DV_K, n0 = (int64_t)blockIdx.y * DV_ROWS;
	if (ep.score)
		for (int e = tid; e < DV_ROWS * SC_G; e += 256) sc[e] = 0;
	/* the thread's T_accum bytes and packed trits first: they do not
	 * depend on the sums, so their loads overlap the staging */
	const vote_geom q = vote_geom_of(ep, k0, k0 + 4 * lane, K);
	int8_t tv[DV_RPW][4];
	uint32_t pk[DV_RPW];
#pragma unroll
	for (int i = 0; i < DV_RPW; i++) {
		const int64_t n = n0 + warp + 8 * i;
		pk[i] = 0;
		if (n < N && q.nk) vote_load(ep, q, n, K, tv[i], &pk[i]);
	}
	float acc[DV_RPW][4];
#pragma unroll
	for (int i = 0; i < DV_RPW; i++)
#pragma unroll
		for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
	/* chunks of DV_MC rows of M, double buffered: chunk c + 1 is in flight
	 * while chunk c is summed (rows m < mm only: the sums read no others) */
	const int vec = (K & 3) == 0 && ((uintptr_t)x & 15) == 0;
	const int nch = (M + DV_MC - 1) / DV_MC;
	stage_async<DV_K, DV_ROWS>(&xs[0][0][0], x, K, k0, K, &ds[0][0][0], dy, N, n0, N,
				   M < DV_MC ? M : DV_MC, vec);
	cp_commit();
	for (int c = 0; c < nch; c++) {
		const int mc = c * DV_MC, bf = c & 1;
		const int mm = M - mc < DV_MC ? M - mc : DV_MC;
		if (c + 1 < nch) {
			const int mn = mc + DV_MC;
			stage_async<DV_K, DV_ROWS>(&xs[bf ^ 1][0][0], x + (int64_t)mn * K, K, k0, K,
						   &ds[bf ^ 1][0][0], dy + (int64_t)mn * N, N, n0, N,
						   M - mn < DV_MC ? M - mn : DV_MC, vec);
			cp_commit();
			cp_wait<1>();
		} else {
			cp_wait<0>();
		}
		__syncthreads();
		for (int m = 0; m < mm; m++) {
			const float4 xv = *(const float4 *)&xs[bf][m][4 * lane];
#pragma unroll
			for (int i = 0; i < DV_RPW; i++) {
				const float d = ds[bf][m][warp + 8 * i];
				acc[i][0] = fmaf(d, xv.x, acc[i][0]);
				acc[i][1] = fmaf(d, xv.y, acc[i][1]);
				acc[i][2] = fmaf(d, xv.z, acc[i][2]);
				acc[i][3] = fmaf(d, xv.w, acc[i][3]);
			}
		}
		__syncthreads(); /* buffer bf is the target of chunk c + 2 */
	}
#pragma unroll
	for (int i = 0; i < DV_RPW; i++) {
		const int il = warp + 8 * i;
		const int64_t n = n0 + il;
		if (n >= N || !q.nk) continue;
		int s4[4];
#pragma unroll
		for (int b = 0; b < 4; b++) {
			const float d = acc[i][b];
			s4[b] = (d > 0.0f) - (d < 0.0f);
		}
		vote_apply(ep, q, n, K, s4, tv[i], pk[i], sc + il * SC_G);
	}
	if (ep.score) vote_flush<DV_ROWS>(ep, sc, n0, k0, K, N);
}

/* the direct kernel for sign votes with few rows: its work is M multiply-adds
 * per weight against the tile GEMM's fixed cost (two bf16 transposes and a
 * 128 x 128 tile per CTA) */
static int vote_direct_ok(int64_t M, int64_t N, int64_t K)
{
	/* h14 (bench_linear, M = 16): 4096 x 4096 direct 84.6 us vs tile GEMM
	 * 59.5 us; the direct kernel is for small weights (the moe's, <= 1M) */
	return !cuda_legacy("vote") && N * K <= ((int64_t)1 << 22) &&
	       (M <= DV_MC || N * K * M <= ((int64_t)1 << 27));
}

/* ---------------------------------------------------------------------------
 * launchers */

/* backward_x by the skinny kernel instead of the 128 x 128 tile GEMM: below
 * 64 rows, and up to 256 rows while the GEMM would have fewer than half as
 * many CTAs as the GPU has SMs (e.g. dx of 128 x 128 from 2048 rows of W:
 * one CTA) */
static int few_tiles(arb_backend *be, int64_t M, int64_t ncols)
{
	if (M < 64) return 1;
	if (M > 256) return 0;
	/* h17: above 128 rows the warpgroup-MMA path wins on Hopper even with
	 * few tiles (M = 256, bench_linear: forward 4096^2 77.2-77.7 vs
	 * 188.0-189.6 us, 4096 x 11008 183.7-189.0 vs 378.6-379.3, 11008 x 4096
	 * 128.2-131.9 vs 160.9-162.4; backward_x 79.8-80.2 vs 322.5-324.8,
	 * 192.3-192.8 vs 814.5-826.0, 137.5-137.7 vs 139.4-140.9) */
	if (M > 128 && wg_major() == 9 && !cuda_legacy("wgmma")) return 0;
	int64_t ctas = (int64_t)cdiv(ncols, BN) * cdiv(M, BM);
	return 2 * ctas < cuda_get_priv(be)->sms;
}
void cuda_linear_forward(arb_backend *be, const arb_tern *w, const float *x,
			 float *y, int64_t M, int accumulate)
{
	if (M <= 0) return;
	tern_view v = tern_view_of(w);
	int64_t N = w->rows, K = w->cols;
	/* up to 256 tokens, while the tile GEMM would have few CTAs: the skinny
	 * kernel over 16-token chunks (grid.z); on Hopper up to 64 tokens only
	 * (h22, forward at 96 / 128 tokens, warpgroup-MMA path vs skinny
	 * kernel: 4096^2 66.0-66.3 vs 78.6-79.7 / 68.0-68.7 vs 110.0-110.9 us,
	 * 4096 x 11008 139.9-140.1 vs 164.9 / 142.3-142.8 vs 205.0-205.6,
	 * 11008 x 4096 even; at 64 tokens the skinny kernel: 57.0-57.3 vs
	 * 66.2-66.5 at 4096^2), and on tensors of 2^24 weights or more only:
	 * the moe's small dense dispatch (128 tokens on small tensors) went
	 * 0.093-0.099 -> 0.112-0.119 ms forward with the warpgroup path */
	const int wg_tokens = M > 64 && N * K >= ((int64_t)1 << 24) && wg_major() == 9 &&
			      !cuda_legacy("wgmma");
	if (M > 16 && !wg_tokens && (M < 64 || few_tiles(be, M, N)) &&
	    skinny3_forward(be, v, x, y, M, accumulate))
		return;
	if (M > 16 && M < 64 && w->group_size % 16 == 0) {
		/* a few tokens more than the skinny kernels take: 16 rows at a
		 * time (the weights stream once per 16 rows; the tile GEMM's
		 * grid would be N / 128 CTAs) */
		for (int64_t m0 = 0; m0 < M; m0 += 16)
			cuda_linear_forward(be, w, x + m0 * K, y + m0 * N,
					    M - m0 < 16 ? M - m0 : 16, accumulate);
		return;
	}
	if (M <= 8 && skinny5_forward(be, v, x, y, M, accumulate)) return;
	if (lut_forward(be, v, x, y, M, accumulate)) return;
	if (M <= 16 && skinny4_forward(be, v, x, y, M, accumulate)) return;
	if (gemv_forward(v, x, y, M, accumulate)) return;
	if (M <= 16 && skinny3_forward(be, v, x, y, M, accumulate)) return;
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
	if (M >= 64 && cuda_legacy("gemm")) {
		LoadWnk lb = { v };
		tc_gemm_kernel1<LoadRM, LoadWnk, EP_STORE><<<grid, 256>>>(la, lb, M, N, K, ep);
	} else if (M >= 64) {
		/* decode once (bf16 workspace), then the pipelined tile GEMM */
		int64_t ldp = pad8(K);
		__nv_bfloat16 *xb, *wb = gs_ws(be, N * ldp, M * ldp, &xb);
		if (ldp != K) CK(cudaMemsetAsync(wb, 0, (size_t)(N * ldp) * 2, 0));
		if (cuda_legacy("prep")) {
			decode_p_kernel<<<gs_grid(N * ((w->row_bytes + 3) / 4)), 256>>>(v, ldp, wb);
			to_bf16_kernel<<<gs_grid(M * ldp / 8), 256>>>(x, M, K, ldp, xb);
		} else {
			/* h17: up to twice the decode blocks (one item a thread) was
			 * no faster (51.5-51.7 vs 50.7-51.8 us at 4096^2) */
			const unsigned int nbd = gs_grid(N * ((w->row_bytes + 3) / 4));
			prep_fwd_kernel<<<nbd + gs_grid(M * ldp / 8), 256>>>(v, ldp, wb, x, M, K,
									     xb, nbd);
		}
		CK_LAUNCH(prep_fwd);
		if (!wg_launch<EP_STORE>(be, xb, wb, M, N, ldp, ep))
			gs_launch<EP_STORE>(xb, wb, M, N, K, ldp, ep);
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
	if (few_tiles(be, M, K) && skinny_backward_x(be, v, dy, dx, M, accumulate)) return;
	LoadRM la = { dy, N, M, N };
	dim3 grid(cdiv(K, BN), cdiv(M, BM));
	if (M >= 64 && cuda_legacy("gemm")) {
		LoadWkn lb = { v };
		tc_gemm_kernel1<LoadRM, LoadWkn, EP_STORE><<<grid, 256>>>(la, lb, M, K, N, ep);
	} else if (M >= 64) {
		int64_t ldp = pad8(N);
		__nv_bfloat16 *dyb, *wt = gs_ws(be, K * ldp, M * ldp, &dyb);
		if (cuda_legacy("prep")) {
			decode_t_kernel<<<dim3(cdiv(ldp, 512),
					       (unsigned)(w->row_bytes < 65535 ? w->row_bytes : 65535)),
					  256>>>(v, ldp, wt);
			to_bf16_kernel<<<gs_grid(M * ldp / 8), 256>>>(dy, M, N, ldp, dyb);
		} else {
			const int64_t tiles = (int64_t)cdiv(ldp, DT_R) * cdiv(w->row_bytes, DT_B);
			const unsigned int nbd = (unsigned int)(tiles < 132 * 16 ? tiles : 132 * 16);
			prep_bwd_kernel<<<nbd + gs_grid(M * ldp / 8), 256>>>(v, ldp, wt, dy, M, N,
									     dyb, nbd);
		}
		CK_LAUNCH(prep_bwd);
		if (!wg_launch<EP_STORE>(be, dyb, wt, M, K, ldp, ep))
			gs_launch<EP_STORE>(dyb, wt, M, K, N, ldp, ep);
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
	ep.v4 = !cuda_legacy("vsimd");
	ep.parts = sr ? cuda_partials(be, nblk) : NULL;
	if (cuda_legacy("gemm")) {
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
		return;
	}
	if (!sr && vote_direct_ok(M, N, K)) {
		dim3 dg(cdiv(K, DV_K), cdiv(N, DV_ROWS));
		vote_direct_kernel<<<dg, 256>>>(x, dy, (int)M, N, K, ep);
		CK_LAUNCH(vote_direct);
		return;
	}
	if (!sr && M >= 256 && !cuda_legacy("vf8") && wg_f8_ok()) {
		/* dy^T [N][l8] and x^T [K][l8] in fp8 e4m3, then the GEMM */
		const int64_t l8 = (M + 15) & ~(int64_t)15;
		const size_t na = ((size_t)(N * l8) + 255) & ~(size_t)255;
		uint8_t *a8 = (uint8_t *)cuda_scratch(be, na + (size_t)(K * l8)), *b8 = a8 + na;
		f8_job jb;
		jb.src[0] = dy; jb.src[1] = x;
		jb.dst[0] = a8; jb.dst[1] = b8;
		jb.cols[0] = N; jb.cols[1] = K;
		jb.rows = M; jb.ldp = l8;
		for (int t = 0; t < 2; t++) {
			jb.tx[t] = (int)cdiv(jb.cols[t], 64);
			jb.tiles[t] = jb.tx[t] * (int)cdiv(l8, 128);
		}
		const int most = jb.tiles[0] > jb.tiles[1] ? jb.tiles[0] : jb.tiles[1];
		to_f8_t_kernel<<<dim3(most, 2), dim3(32, 8)>>>(jb, ws, 0);
		/* pass 1: a block per SM of H100 at most (mostly it leaves at
		 * once; h19: 264 blocks took 5.4 us to do so) */
		to_f8_t_kernel<<<dim3(most < 132 ? most : 132, 2), dim3(32, 8)>>>(jb, ws, 1);
		CK_LAUNCH(vote_f8);
		ep.f8 = ws;
		if (wg_launch_f8(a8, b8, N, K, l8, ep)) return;
		ep.f8 = NULL; /* no tensor map for these operands: bf16 below */
	}
	/* dy^T [N][ldp] and x^T [K][ldp] in bf16, then the pipelined GEMM */
	int64_t ldp = pad8(M);
	__nv_bfloat16 *xt, *dyt = gs_ws(be, N * ldp, K * ldp, &xt);
	dim3 tb(32, 8);
	/* h17: the two in one launch, tiles alternating, was no faster (vote
	 * M = 4096: 370-376 vs 373-382 us at 4096^2) */
	to_bf16_t_kernel<<<dim3(cdiv(N, 64), cdiv(ldp, 64)), tb>>>(dy, M, N, ldp, dyt);
	to_bf16_t_kernel<<<dim3(cdiv(K, 64), cdiv(ldp, 64)), tb>>>(x, M, K, ldp, xt);
	CK_LAUNCH(vote_transpose);
	if (sr && w->rms_log2 == ARB_RMS_UNKNOWN) {
		gs_launch<EP_MEASURE>(dyt, xt, N, K, M, ldp, ep);
		CK_LAUNCH(linear_measure);
		cuda_finalize_sumsq(ep.parts, nblk, &ws->measured, 0, &ws->rms_now, N * K);
	}
	if (!wg_launch<EP_VOTE>(be, dyt, xt, N, K, ldp, ep))
		gs_launch<EP_VOTE>(dyt, xt, N, K, M, ldp, ep);
	CK_LAUNCH(linear_vote);
	if (sr) cuda_finalize_sumsq(ep.parts, nblk, &ws->sumsq, 1, NULL, 0);
}
