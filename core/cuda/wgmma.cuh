/*
 * core/cuda/wgmma.cuh -- the tile GEMM of large batches on Hopper
 * (sm_90a): C[i][j] (+)= sum_r A[i][r] B[j][r] for bf16 A [I][ldp] and
 * B [J][ldp] (both K-major, ldp a multiple of 8, zero padded), fp32 C.
 *
 * A CTA computes a 128 x 256 tile with two warpgroups (64 rows each) and
 * warpgroup MMA (wgmma.mma_async m64n256k16, operands read from shared
 * memory through matrix descriptors, fp32 accumulators in registers), CTAs
 * rastered over groups of WG_GJ column tiles. A 4-stage ring holds 64
 * columns of k per stage: 128 bytes a row, in the 128-byte swizzled layout
 * that the descriptors name (16-byte chunk c of row r at chunk c ^ (r % 8);
 * 1024-byte aligned 8-row atoms). gemm_tma_kernel fills the stages with the
 * Tensor Memory Accelerator (mbarrier pipeline); gemm_wg_kernel, kept for
 * ARB_CUDA_LEGACY=tma and for a runtime without the tensor-map encoder,
 * with 16-byte cp.async from every thread and a barrier per stage.
 *
 * F8 = 1 (sign votes only): fp8 e4m3 operands, the same 128 bytes a row
 * per stage (128 of k) and m64n256k32. CL = 1 (EP_STORE): CTA pairs in
 * clusters of 2 on two row tiles of one column tile, each loading half of
 * the shared B tile into both CTAs' stages by TMA multicast.
 *
 * Epilogues: EP_STORE (forward, backward_x) and EP_VOTE for sign votes
 * (the tile's signs go through shared memory to the same T_accum / score
 * update as the mma.sync kernel's tiles, 128 columns at a time; the
 * producer warp prefetches the update's operands). The mma.sync
 * kernel in linear.cu stays for every other GPU, for sr votes and for
 * ARB_CUDA_LEGACY=wgmma. Included by linear.cu (its epilogue helpers).
 * Correctness: tests/check_gpu.c (linear_large, vote_large, vote_tile,
 * vote_f8: exact against the CPU reference).
 */
#ifndef ARB_CUDA_WGMMA_CUH
#define ARB_CUDA_WGMMA_CUH

#include <cuda.h> /* CUtensorMap and its enums (types only: the encoder is
		   * fetched through the runtime, libcuda is not linked) */

#define WG_BM 128
#define WG_BN 256
#define WG_BK 64
#define WG_STAGES 4
#ifndef WG_GJ
#define WG_GJ 8 /* column tiles per raster group */
#endif
#define WG_LOOK (WG_STAGES - 2) /* stages in flight ahead of the one read */
#define WG_STAGE_BYTES ((WG_BM + WG_BN) * WG_BK * 2)
/* after the stages: the vote epilogue's packed windows (fetched at the
 * start) */
#define WG_PFW_OFF ((size_t)WG_STAGES * WG_STAGE_BYTES)
#define WG_SMEM (WG_PFW_OFF + WG_BM * VOTE_PF_W + 1024)
/* the vote epilogue: signs [WG_BM][WG_EPS_LD], then [WG_BM][SC_G] counters */
#define WG_EPS_LD (WG_BN + 4)
#define WG_EPS_BYTES (WG_BM * WG_EPS_LD + WG_BM * SC_G * 4)
static_assert(WG_EPS_BYTES <= 2 * WG_STAGE_BYTES, "vote signs and counters: two stages");
static_assert(VOTE_PF_T <= WG_STAGE_BYTES, "vote T_accum prefetch: one stage");

#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ == 900) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define WG_HAVE 1
#else
#define WG_HAVE 0
#endif

#if WG_HAVE
/* matrix descriptor of a K-major tile in the 128-byte swizzle: start
 * address, leading offset 16 bytes (unused by this layout), stride 1024
 * bytes between 8-row atoms */
__device__ __forceinline__ uint64_t wg_desc(uint32_t saddr)
{
	return (uint64_t)((saddr & 0x3ffffu) >> 4) | ((uint64_t)1 << 16) |
	       ((uint64_t)(1024 >> 4) << 32) | ((uint64_t)1 << 62);
}

/* d[128] += A (64 x 16) B^T (16 x 256) in bf16, or (F8) A (64 x 32) B^T
 * (32 x 256) in fp8 e4m3: one warpgroup; both read 32 bytes of each row */
#define WG_D128 \
	"{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,\n" \
	"%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31,\n" \
	"%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,\n" \
	"%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63,\n" \
	"%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79,\n" \
	"%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95,\n" \
	"%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111,\n" \
	"%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}"
#define WG_D128_OUT(d) \
	  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
	  "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
	  "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
	  "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), \
	  "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), \
	  "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
	  "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), \
	  "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), \
	  "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), \
	  "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), \
	  "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), \
	  "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), \
	  "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), \
	  "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), \
	  "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), \
	  "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
template <int F8 = 0>
__device__ __forceinline__ void wg_mma256(float *d, uint64_t da, uint64_t db)
{
	if (F8)
		asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
			     "wgmma.mma_async.sync.aligned.m64n256k32.f32.e4m3.e4m3 " WG_D128
			     ", %128, %129, p, 1, 1;\n}\n"
			     : WG_D128_OUT(d) : "l"(da), "l"(db));
	else
		asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
			     "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 " WG_D128
			     ", %128, %129, p, 1, 1, 0, 0;\n}\n"
			     : WG_D128_OUT(d) : "l"(da), "l"(db));
}
#endif

#if WG_HAVE
__device__ __forceinline__ void mb_init(uint32_t a, unsigned int count)
{
	asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" :: "r"(a), "r"(count) : "memory");
}
__device__ __forceinline__ void mb_expect(uint32_t a, unsigned int bytes)
{
	asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n"
		     :: "r"(a), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mb_arrive(uint32_t a)
{
	asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" :: "r"(a) : "memory");
}
__device__ __forceinline__ void mb_wait(uint32_t a, unsigned int parity)
{
	uint32_t ok;
	do {
		asm volatile("{\n.reg .pred p;\n"
			     "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
			     "selp.u32 %0, 1, 0, p;\n}\n"
			     : "=r"(ok) : "r"(a), "r"(parity) : "memory");
	} while (!ok);
}
/* box (x = k, y = row) of the 2-d tensor map into shared memory at dst */
__device__ __forceinline__ void tma_load(uint32_t dst, const CUtensorMap *map, int x, int y,
					 uint32_t mbar)
{
	asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
		     " [%0], [%1, {%2, %3}], [%4];\n"
		     :: "r"(dst), "l"((uint64_t)map), "r"(x), "r"(y), "r"(mbar) : "memory");
}
/* the same box into shared memory at dst of both CTAs of a CTA pair
 * (cluster of 2), completing the mbarrier at the same offset in each */
__device__ __forceinline__ void tma_load_mc(uint32_t dst, const CUtensorMap *map, int x, int y,
					    uint32_t mbar)
{
	asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
		     ".multicast::cluster [%0], [%1, {%2, %3}], [%4], %5;\n"
		     :: "r"(dst), "l"((uint64_t)map), "r"(x), "r"(y), "r"(mbar), "h"((uint16_t)3)
		     : "memory");
}
/* arrive on the mbarrier at the same offset in CTA rank of the cluster */
__device__ __forceinline__ void mb_arrive_cl(uint32_t a, uint32_t rank)
{
	asm volatile("{\n.reg .b32 ra;\nmapa.shared::cluster.u32 ra, %0, %1;\n"
		     "mbarrier.arrive.shared::cluster.b64 _, [ra];\n}\n"
		     :: "r"(a), "r"(rank) : "memory");
}
/* every thread of the cluster, with release / acquire of shared memory */
__device__ __forceinline__ void cl_sync()
{
	asm volatile("barrier.cluster.arrive.release;\nbarrier.cluster.wait.acquire;\n" ::: "memory");
}
/* bytes (a multiple of 16, both addresses 16-byte aligned) into shared
 * memory at dst */
__device__ __forceinline__ void bulk_load(uint32_t dst, const void *src, uint32_t bytes,
					  uint32_t mbar)
{
	asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes"
		     " [%0], [%1], %2, [%3];\n"
		     :: "r"(dst), "l"((uint64_t)src), "r"(bytes), "r"(mbar) : "memory");
}
#endif

/* raster: CTAs in order over groups of WG_GJ column tiles, all row tiles
 * of a group before the next group, so that the B tiles of the CTAs in
 * flight stay in L2 (h16: B of 11008 x 4096 is 90 MB) */
__device__ __forceinline__ void wg_tile_of(int64_t I, int64_t J, int64_t *i0, int64_t *j0,
					   int cl = 0)
{
	/* cl: CTA pairs (2L, 2L + 1) on row tiles 2 bi and 2 bi + 1 of one
	 * column tile (the second one past I where the row tiles are odd) */
	const int64_t nI = (I + WG_BM - 1) / WG_BM, nJ = (J + WG_BN - 1) / WG_BN;
	const int64_t nIc = cl ? (nI + 1) / 2 : nI;
	const int64_t L = cl ? blockIdx.x >> 1 : blockIdx.x, per = (int64_t)WG_GJ * nIc;
	const int64_t grp = L / per, loc = L - grp * per, fj = grp * WG_GJ;
	const int64_t gw = nJ - fj < WG_GJ ? nJ - fj : WG_GJ;
	const int64_t bi = loc / gw;
	*i0 = (cl ? 2 * bi + (blockIdx.x & 1) : bi) * WG_BM;
	*j0 = (fj + (loc - bi * gw)) * WG_BN;
}

/* the tile's results (d: this thread's accumulators) to their epilogue */
template <int MODE>
__device__ __forceinline__ void wg_epilogue(const float *d, unsigned char *sm, int64_t i0,
					    int64_t j0, int64_t I, int64_t J, const EpArgs &ep,
					    const unsigned char *pf = NULL, const unsigned char *pw = NULL,
					    uint32_t pf_bar = 0)
{
	const int tid = threadIdx.x, wg = tid >> 7, wt = tid & 127;
	/* accumulator layout (per warpgroup, m64nN): warp w of the group owns
	 * rows 16w .. 16w+15; d[4c + 0/1] = row 16w + lane/4, columns 8c +
	 * 2 (lane % 4) + 0/1; d[4c + 2/3] the same columns 8 rows lower (h16:
	 * one n256 instead of two n128 per k-step, forward 4096^2 334 -> 320
	 * us in one call) */
	const int w = wt >> 5, lane = wt & 31, g = lane >> 2, q = lane & 3;
	if (MODE == EP_VOTE) {
		/* all 256 signs of a row first (the accumulators die before the
		 * update's loads and registers), then the two 128-wide halves */
		ep_sync(); /* every wgmma is done with the stages */
		int8_t *sg = (int8_t *)sm;
		int *sc = (int *)(sm + WG_BM * WG_EPS_LD);
#pragma unroll
		for (int h = 0; h < 2; h++)
#pragma unroll
			for (int c = 0; c < 16; c++)
#pragma unroll
				for (int e = 0; e < 4; e += 2) {
					/* two adjacent columns: one 16-bit store */
					const float v0 = d[64 * h + 4 * c + e], v1 = d[64 * h + 4 * c + e + 1];
					const int s0 = (v0 > 0.0f) - (v0 < 0.0f), s1 = (v1 > 0.0f) - (v1 < 0.0f);
					*(uint16_t *)(sg + (wg * 64 + 16 * w + g + 8 * (e >> 1)) * WG_EPS_LD +
						      128 * h + 8 * c + 2 * q) =
						(uint16_t)((s0 & 0xff) | (s1 << 8));
				}
#if WG_HAVE
		if (pf) { /* the prefetches have landed */
			mb_wait(pf_bar, 0);
			mb_wait(pf_bar + 8, 0);
		}
#endif
#pragma unroll 1
		for (int h = 0; h < 2; h++) {
			vote_tile_apply(sg + 128 * h, WG_EPS_LD, sc, i0, j0 + 128 * h, I, J, ep, pf, pw,
					j0);
			ep_sync();
		}
		return;
	}
	float *out = ep.out;
	const int64_t ld = ep.ld;
	const int acc = ep.acc;
	const int pair = (ld & 1) == 0 && ((uintptr_t)out & 7) == 0;
#pragma unroll
	for (int h = 0; h < 2; h++)
#pragma unroll
		for (int c = 0; c < 16; c++)
#pragma unroll
			for (int e = 0; e < 4; e += 2) {
				const int64_t i = i0 + wg * 64 + 16 * w + g + 8 * (e >> 1);
				const int64_t j = j0 + 128 * h + 8 * c + 2 * q;
				if (i >= I || j >= J) continue;
				float *o = out + i * ld + j;
				float v0 = d[64 * h + 4 * c + e], v1 = d[64 * h + 4 * c + e + 1];
				if (pair && j + 1 < J) {
					if (acc) {
						const float2 p = *(const float2 *)o;
						v0 += p.x;
						v1 += p.y;
					}
					*(float2 *)o = make_float2(v0, v1);
				} else {
					o[0] = acc ? o[0] + v0 : v0;
					if (j + 1 < J) o[1] = acc ? o[1] + v1 : v1;
				}
			}
}

template <int MODE>
__global__ void __launch_bounds__(256, 1) gemm_wg_kernel(const __nv_bfloat16 *Ag,
	const __nv_bfloat16 *Bg, int64_t I, int64_t J, int64_t ldp, EpArgs ep)
{
#if WG_HAVE
	extern __shared__ unsigned char wg_raw[];
	/* 1024-byte alignment of every atom */
	/* 1024-byte aligned by pointer arithmetic on the shared array, so that
	 * the compiler knows every pointer from it is shared (h19: through an
	 * integer cast the vote epilogue's accesses were generic) */
	unsigned char *sm = wg_raw + ((0u - smem_u32(wg_raw)) & 1023u);
	const uint32_t s0 = smem_u32(sm);
	const int tid = threadIdx.x, wg = tid >> 7;
	int64_t i0, j0;
	wg_tile_of(I, J, &i0, &j0);
	const int nk = (int)((ldp + WG_BK - 1) / WG_BK);
	/* a thread's share of a stage: 16-byte chunk tid % 8 of rows tid / 8 +
	 * 32 u (u < 4: rows of A, then 8 x 32 rows of B); the row pointers are
	 * fixed, only k moves */
	const int c8 = tid & 7, r0 = tid >> 3;
	const __nv_bfloat16 *src[12];
	unsigned int rowok = 0;
#pragma unroll
	for (int u = 0; u < 12; u++) {
		const int row = r0 + 32 * u;
		const int64_t gr = row < WG_BM ? i0 + row : j0 + row - WG_BM;
		const int ok = row < WG_BM ? gr < I : gr < J;
		src[u] = (row < WG_BM ? Ag : Bg) + (ok ? gr * ldp : 0) + 8 * c8;
		rowok |= (unsigned int)ok << u;
	}
	/* stage st: A rows at s0 + st * STAGE, B rows after the 128 A rows */
	auto load_stage = [&](int st, int kt) {
		const uint32_t sb = s0 + (uint32_t)st * WG_STAGE_BYTES;
		const int64_t k = (int64_t)kt * WG_BK;
		const int kok = k + 8 * c8 < ldp;
#pragma unroll
		for (int u = 0; u < 12; u++) {
			const int row = r0 + 32 * u;
			const int ok = kok && ((rowok >> u) & 1u);
			const uint32_t dst = sb + (uint32_t)row * 128 + (uint32_t)((c8 ^ (row & 7)) << 4);
			asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n"
				     :: "r"(dst), "l"(ok ? src[u] + k : src[u]), "r"(ok ? 16 : 0));
		}
	};
	float d[128]; /* columns 0..127, then 128..255 */
#pragma unroll
	for (int r = 0; r < 128; r++) d[r] = 0.0f;
	/* WG_LOOK stages ahead: the wgmma of a stage may still run during the
	 * next iteration (wait_group 1), so a stage is refilled only two
	 * iterations after it was read */
#pragma unroll
	for (int s = 0; s < WG_LOOK; s++) {
		if (s < nk) load_stage(s, s);
		cp_commit();
	}
	for (int kt = 0; kt < nk; kt++) {
		cp_wait<WG_LOOK - 1>();
		/* the copies (generic proxy) visible to wgmma (async proxy) */
		asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
		__syncthreads();
		const uint32_t sb = s0 + (uint32_t)(kt % WG_STAGES) * WG_STAGE_BYTES;
		const uint32_t sa = sb + (uint32_t)wg * 64 * 128;
		const uint32_t sbb = sb + WG_BM * 128;
		asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
		for (int kk = 0; kk < WG_BK / 16; kk++) {
			const uint64_t da = wg_desc(sa + 32 * kk);
			wg_mma256(d, da, wg_desc(sbb + 32 * kk));
		}
		asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
		/* the next copies go out while the tensor cores work: into the
		 * stage read two iterations ago, whose wgmma finished (both
		 * warpgroups waited for it before the barrier above) */
		const int kn = kt + WG_LOOK;
		if (kn < nk) load_stage(kn % WG_STAGES, kn);
		cp_commit();
		asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
		/* the accumulators are not touched across the wait */
#pragma unroll
		for (int r = 0; r < 128; r++) asm volatile("" : "+f"(d[r]) :: "memory");
	}
	asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
#pragma unroll
	for (int r = 0; r < 128; r++) asm volatile("" : "+f"(d[r]) :: "memory");
	cp_wait<0>();
	wg_epilogue<MODE>(d, sm, i0, j0, I, J, ep);
#else
	(void)Ag; (void)Bg; (void)I; (void)J; (void)ldp; (void)ep;
	__trap();
#endif
}


/* ---------------------------------------------------------------------------
 * the same GEMM with its stages filled by the Tensor Memory Accelerator:
 * thread 0 issues one bulk tensor copy per operand and stage (128-byte
 * swizzle, zero fill outside the matrix); a stage's "full" mbarrier
 * completes when its bytes have landed, its "empty" one when both
 * warpgroups' wgmma on it are done. No cp.async from every thread, no
 * barrier per stage. */

/* WS = 1: a ninth warp issues the copies (block of 288): the consumers
 * only wait for full stages and release them, and no warpgroup waits for
 * the other's release before its next wgmma (WS = 0: thread 0 of warpgroup
 * 0 refills a stage once both released it); for EP_VOTE with ep.pf it then
 * prefetches the epilogue's T_accum tile and packed windows */
/* CL = 1 (with WS): CTA pairs (clusters of 2) on two row tiles of one
 * column tile; each CTA loads its A rows and one 128-row half of the
 * shared B tile, multicast into both CTAs' stage, so that the pair reads
 * B from L2 once (h19: the mainloops wait on their stage loads, 48 KB a k
 * step per CTA; forward 4096^2 263 -> 242 us). A stage is free once the
 * four warpgroups of the pair have released it (each arrives on both
 * CTAs' empty barrier); the pair meets at the start (barriers ready) and
 * at the end (no arrival on a CTA that has left). Used for EP_STORE (the
 * votes' epilogues vary: a pair waits for the slower one). */
template <int MODE, int WS, int F8 = 0, int CL = 0>
__global__ void __launch_bounds__(WS ? 288 : 256, 1) gemm_tma_kernel(
	const __grid_constant__ CUtensorMap ta, const __grid_constant__ CUtensorMap tb,
	const __grid_constant__ CUtensorMap tt, int64_t I, int64_t J, int64_t ldp, EpArgs ep)
{
#if WG_HAVE
	extern __shared__ unsigned char wg_raw[];
	/* full[s], empty[s], then the vote prefetch's */
	__shared__ __align__(8) uint64_t bars[2 * WG_STAGES + 2];
	/* 1024-byte aligned by pointer arithmetic on the shared array, so that
	 * the compiler knows every pointer from it is shared (h19: through an
	 * integer cast the vote epilogue's accesses were generic) */
	unsigned char *sm = wg_raw + ((0u - smem_u32(wg_raw)) & 1023u);
	const uint32_t s0 = smem_u32(sm), b0 = smem_u32(bars);
	const int tid = threadIdx.x, wg = tid >> 7, wt = tid & 127;
	static_assert(!CL || WS, "CTA pairs have the producer warp");
	int64_t i0, j0;
	wg_tile_of(I, J, &i0, &j0, CL);
	const uint32_t rank = CL ? blockIdx.x & 1u : 0u; /* the CTA's rank in its pair */
	const int bke = F8 ? 2 * WG_BK : WG_BK; /* k per stage: 128 bytes a row */
	/* split K (EP_STORE, gridDim.y > 1): k steps kt0 .. kt0 + nk - 1 of
	 * this CTA's share, its partial sums to slice blockIdx.y of ep.out */
	const int nk_all = (int)((ldp + bke - 1) / bke);
	const int kt0 = (int)((int64_t)nk_all * blockIdx.y / gridDim.y);
	const int nk = (int)((int64_t)nk_all * (blockIdx.y + 1) / gridDim.y) - kt0;
	if (MODE == EP_STORE && gridDim.y > 1) ep.out += (int64_t)blockIdx.y * I * ep.ld;
	auto full = [&](int st) { return b0 + 8u * (uint32_t)st; };
	auto empty = [&](int st) { return b0 + 8u * (uint32_t)(WG_STAGES + st); };
	auto issue = [&](int st, int kt) {
		const uint32_t sb = s0 + (uint32_t)st * WG_STAGE_BYTES;
		const int kx = (kt0 + kt) * bke;
		mb_expect(full(st), WG_STAGE_BYTES); /* CL: with the partner's half of B */
		tma_load(sb, &ta, kx, (int)i0, full(st));
		if (CL)
			tma_load_mc(sb + WG_BM * 128 + rank * 128 * 128, &tb, kx,
				    (int)j0 + 128 * (int)rank, full(st));
		else
			tma_load(sb + WG_BM * 128, &tb, kx, (int)j0, full(st));
	};
	if (tid == 0) {
		for (int st = 0; st < WG_STAGES; st++) {
			mb_init(full(st), 1);
			mb_init(empty(st), CL ? 4 : 2);
		}
		mb_init(b0 + 16u * WG_STAGES, 1);
		mb_init(b0 + 16u * WG_STAGES + 8u, 1);
		asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
		if (F8 && blockIdx.x == 0 && ep.f8) {
			/* the conversions of this vote are done (stream order) and
			 * nothing reads their state until the next: this vote's
			 * |max| becomes the next one's scale */
			for (int t = 0; t < 2; t++) {
				ep.f8->f8_amax[t] = __uint_as_float(ep.f8->f8_now[t]);
				ep.f8->f8_now[t] = 0;
				ep.f8->f8_redo[t] = 0;
			}
		}
	}
	if (CL)
		cl_sync(); /* both CTAs' barriers initialized before any copy */
	else
		__syncthreads();
	if (WS && tid >= 256) {
		const int lane = tid & 31, pre = nk < WG_STAGES ? nk : WG_STAGES;
		const uint32_t pbar = b0 + 16u * WG_STAGES;
		if (lane == 0)
			for (int kt = 0; kt < pre; kt++) issue(kt, kt);
		if (MODE == EP_VOTE && ep.pf && ep.score) {
			/* the rows' packed-trit windows (128 small copies: h19,
			 * issued at the end they were often late) into their own
			 * room, right after the first stages */
			const int64_t kbs = j0 / 5, kbe0 = (j0 + WG_BN - 1) / 5 + 2;
			const int64_t kbe = kbe0 < ep.rb ? kbe0 : ep.rb;
			int64_t a[4];
			uint32_t len[4], tot = 0;
#pragma unroll
			for (int u = 0; u < 4; u++) {
				const int64_t n = i0 + lane + 32 * u;
				len[u] = 0;
				a[u] = 0;
				if (n >= I) continue;
				a[u] = (n * ep.rb + kbs) & ~(int64_t)15;
				len[u] = (uint32_t)((n * ep.rb + kbe - a[u] + 15) & ~(int64_t)15);
				tot += len[u];
			}
			for (int o = 16; o > 0; o >>= 1) tot += __shfl_xor_sync(0xffffffffu, tot, o);
			if (lane == 0) mb_expect(pbar + 8u, tot);
			__syncwarp();
#pragma unroll
			for (int u = 0; u < 4; u++)
				if (len[u])
					bulk_load(s0 + (uint32_t)WG_PFW_OFF + (uint32_t)(lane + 32 * u) * VOTE_PF_W,
						  ep.packed + a[u], len[u], pbar + 8u);
		} else if (MODE == EP_VOTE && ep.pf && lane == 0) {
			mb_arrive(pbar + 8u); /* no windows */
		}
		if (lane == 0)
			for (int kt = pre; kt < nk; kt++) {
				const int st = kt % WG_STAGES;
				mb_wait(empty(st), (unsigned int)(kt / WG_STAGES - 1) & 1u);
				issue(st, kt);
			}
		if (MODE == EP_VOTE && ep.pf && lane == 0 && i0 < I) {
			/* the epilogue's T_accum tile into the stage that frees
			 * first after the last copy (the one of k step nk - 4),
			 * while the last stages are multiplied */
			const int st = nk % WG_STAGES;
			if (nk >= WG_STAGES)
				mb_wait(empty(st), (unsigned int)((nk - WG_STAGES) / WG_STAGES) & 1u);
			mb_expect(pbar, VOTE_PF_T);
			tma_load(s0 + (uint32_t)st * WG_STAGE_BYTES, &tt, (int)j0, (int)i0, pbar);
		}
		if (CL) {
			__syncwarp();
			cl_sync();
		}
		return;
	}
	if (!WS && tid == 0)
		for (int st = 0; st < WG_STAGES && st < nk; st++) issue(st, st);
	float d[128];
#pragma unroll
	for (int r = 0; r < 128; r++) d[r] = 0.0f;
	for (int kt = 0; kt < nk; kt++) {
		const int st = kt % WG_STAGES;
		mb_wait(full(st), (unsigned int)(kt / WG_STAGES) & 1u);
		const uint32_t sb = s0 + (uint32_t)st * WG_STAGE_BYTES;
		const uint32_t sa = sb + (uint32_t)wg * 64 * 128, sbb = sb + WG_BM * 128;
		/* 32 bytes further along k: +2 in the descriptor's address field
		 * (addresses < 256 KB: no carry out of it) */
		const uint64_t da = wg_desc(sa), db = wg_desc(sbb);
		asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
		for (int kk = 0; kk < WG_BK / 16; kk++)
			wg_mma256<F8>(d, da + 2 * kk, db + 2 * kk);
		asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
		asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
#pragma unroll
		for (int r = 0; r < 128; r++) asm volatile("" : "+f"(d[r]) :: "memory");
		/* the previous stage is read by this warpgroup; once both have
		 * said so, thread 0 refills it */
		if (kt > 0) {
			const int ps = (kt - 1) % WG_STAGES;
			if (wt == 0) {
				mb_arrive(empty(ps));
				if (CL) mb_arrive_cl(empty(ps), rank ^ 1u);
			}
			if (!WS && tid == 0 && kt - 1 + WG_STAGES < nk) {
				mb_wait(empty(ps), (unsigned int)((kt - 1) / WG_STAGES) & 1u);
				issue(ps, kt - 1 + WG_STAGES);
			}
		}
	}
	asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
#pragma unroll
	for (int r = 0; r < 128; r++) asm volatile("" : "+f"(d[r]) :: "memory");
	if (i0 >= I) {
		/* the second CTA of a pair past the last row tile: nothing of its
		 * own to write */
	} else if (MODE == EP_VOTE && WS && ep.pf) {
		/* signs and counters (two stages' room) in the two stages
		 * below or above the prefetched one */
		wg_epilogue<MODE>(d, sm + (nk % WG_STAGES < 2 ? 2 * WG_STAGE_BYTES : 0), i0, j0, I,
				  J, ep, sm + (size_t)(nk % WG_STAGES) * WG_STAGE_BYTES,
				  sm + WG_PFW_OFF, b0 + 16u * WG_STAGES);
	} else {
		wg_epilogue<MODE>(d, sm, i0, j0, I, J, ep);
	}
	if (CL) cl_sync(); /* the partner's arrivals on this CTA are done */
#else
	(void)ta; (void)tb; (void)tt; (void)I; (void)J; (void)ldp; (void)ep;
	__trap();
#endif
}

/* the device's compute capability major (cached) */
static int wg_major(void)
{
	static int major = -1;
	if (major < 0) {
		int dev = 0;
		major = 0;
		if (cudaGetDevice(&dev) == cudaSuccess)
			cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
	}
	return major;
}

/* the driver's tensor-map encoder through the runtime (NULL: none) */
typedef CUresult (*wg_encode_fn)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *,
				 const cuuint64_t *, const cuuint64_t *, const cuuint32_t *,
				 const cuuint32_t *, CUtensorMapInterleave, CUtensorMapSwizzle,
				 CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
static wg_encode_fn wg_encoder(void)
{
	static int tried = 0;
	static wg_encode_fn fn = NULL;
	if (!tried) {
		tried = 1;
		void *p = NULL;
		cudaDriverEntryPointQueryResult q;
		if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000,
						     cudaEnableDefault, &q) == cudaSuccess &&
		    q == cudaDriverEntryPointSuccess)
			fn = (wg_encode_fn)p;
		else
			cudaGetLastError();
	}
	return fn;
}
/* tensor map of a bf16 (f8: fp8 e4m3) [rows][ldp] matrix read in boxes of
 * 128 bytes x box_rows rows, 128-byte swizzled, zeros outside */
static int wg_map(CUtensorMap *m, const void *p, int64_t rows, int64_t ldp,
		  unsigned int box_rows, int f8 = 0)
{
	wg_encode_fn enc = wg_encoder();
	if (!enc || rows > 0x7fffffff || ldp > 0x7fffffff) return 0;
	const cuuint64_t dim[2] = { (cuuint64_t)ldp, (cuuint64_t)rows };
	const cuuint64_t stride[1] = { (cuuint64_t)ldp * (f8 ? 1 : 2) };
	const cuuint32_t box[2] = { (cuuint32_t)(f8 ? 2 * WG_BK : WG_BK), box_rows }, es[2] = { 1, 1 };
	return enc(m, f8 ? CU_TENSOR_MAP_DATA_TYPE_UINT8 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2,
		   (void *)p, dim, stride, box, es,
		   CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
		   CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) ==
	       CUDA_SUCCESS;
}

/* tensor map of the int8 T_accum [rows][cols] in boxes of 256 columns x 128
 * rows, unswizzled (the vote epilogue's prefetch); 0 where cols or the base
 * is not 16-byte aligned */
static int wg_map_t(CUtensorMap *m, const int8_t *T, int64_t rows, int64_t cols)
{
	wg_encode_fn enc = wg_encoder();
	if (!enc || (cols & 15) || ((uintptr_t)T & 15) || rows > 0x7fffffff || cols > 0x7fffffff)
		return 0;
	const cuuint64_t dim[2] = { (cuuint64_t)cols, (cuuint64_t)rows };
	const cuuint64_t stride[1] = { (cuuint64_t)cols };
	const cuuint32_t box[2] = { WG_BN, WG_BM }, es[2] = { 1, 1 };
	return enc(m, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, (void *)T, dim, stride, box, es,
		   CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE,
		   CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) ==
	       CUDA_SUCCESS;
}

/* 1 when kernel k has sm_90a machine code (a build without it would run
 * the portable PTX, whose body traps) */
static int wg_usable(const void *k)
{
	cudaFuncAttributes fa;
	if (cudaFuncGetAttributes(&fa, k) != cudaSuccess || fa.binaryVersion != 90) return 0;
	CK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)WG_SMEM));
	return 1;
}

/* gemm_tma_kernel<MODE, 1, 0, 1> on CTA pairs: a grid of whole pairs (the
 * row tiles rounded up to even) times S splits of K, clusters of 2 (mb: B
 * in boxes of 128 rows); 0 where the launch is refused (the caller runs
 * single CTAs) */
template <int MODE>
static int wg_go_pairs(const CUtensorMap &ma, const CUtensorMap &mb, const CUtensorMap &mt,
		       int64_t I, int64_t J, int64_t ldp, const EpArgs &ep, int S)
{
	const unsigned int grid = (unsigned int)(2 * ((cdiv(I, WG_BM) + 1) / 2) * cdiv(J, WG_BN));
	cudaLaunchConfig_t cfg = {};
	cfg.gridDim = dim3(grid, (unsigned int)S);
	cfg.blockDim = dim3(288);
	cfg.dynamicSmemBytes = WG_SMEM;
	cudaLaunchAttribute at[1];
	at[0].id = cudaLaunchAttributeClusterDimension;
	at[0].val.clusterDim.x = 2;
	at[0].val.clusterDim.y = 1;
	at[0].val.clusterDim.z = 1;
	cfg.attrs = at;
	cfg.numAttrs = 1;
	if (cudaLaunchKernelEx(&cfg, gemm_tma_kernel<MODE, 1, 0, 1>, ma, mb, mt, I, J, ldp, ep) ==
	    cudaSuccess)
		return 1;
	cudaGetLastError(); /* not launched: clear it */
	return 0;
}

/* C = A B^T on the warpgroup MMA when the device is an sm_90 and the
 * epilogue one it has: stages by TMA, or by cp.async where no tensor map
 * can be made (or ARB_CUDA_LEGACY=tma); 0: the caller's kernel runs */
template <int MODE>
static int wg_launch(arb_backend *be, const __nv_bfloat16 *A, const __nv_bfloat16 *B, int64_t I,
		     int64_t J, int64_t ldp, const EpArgs &ep)
{
	if (wg_major() != 9 || cuda_legacy("wgmma")) return 0;
	if (MODE == EP_VOTE && (ep.kind != ARB_VOTE_SIGN || ep.parts)) return 0;
	/* a short reduction is mostly epilogue: the mma.sync kernel's two CTAs
	 * per SM overlap it better (h16: vote M=16 at 4096^2 took 150 us here) */
	if (ldp < 256) return 0;
	if (MODE != EP_STORE && MODE != EP_VOTE) return 0;
	static int ok_cp = 0, ok_tma = 0; /* 1 usable, -1 not in this binary */
	if (!ok_cp) ok_cp = wg_usable((const void *)gemm_wg_kernel<MODE>) ? 1 : -1;
	if (!ok_tma) ok_tma = wg_usable((const void *)gemm_tma_kernel<MODE, 0>) ? 1 : -1;
	static int ok_ws = 0, ok_cl = 0;
	if (!ok_ws)
		ok_ws = MODE != EP_MEASURE && wg_usable((const void *)gemm_tma_kernel<MODE, 1>) ? 1 : -1;
	if (!ok_cl)
		ok_cl = MODE == EP_STORE &&
			wg_usable((const void *)gemm_tma_kernel<EP_STORE, 1, 0, 1>) ? 1 : -1;
	const unsigned int grid = cdiv(J, WG_BN) * cdiv(I, WG_BM);
	/* stores on CTA pairs sharing B (ARB_CUDA_LEGACY=wcl: single CTAs).
	 * Not the votes (h19, same runs: fp8 vote GEMM at 4096^2 180.5 vs
	 * 175.6 us single, ncu; a pair waits for the slower epilogue) */
	const int cl = MODE == EP_STORE && ok_ws > 0 && ok_cl > 0 && !cuda_legacy("wcl");
	CUtensorMap ma, mb, mt, mh;
	if (ok_tma > 0 && !cuda_legacy("tma") && wg_map(&ma, A, I, ldp, WG_BM) &&
	    wg_map(&mb, B, J, ldp, WG_BN)) {
		if (MODE == EP_STORE && ok_ws > 0 && !cuda_legacy("wspec")) {
			/* a tile grid of at most half the SMs: K split S ways
			 * (at least 4 k steps each, at most 8 splits) into
			 * partial sums, added in split order (ARB_CUDA_LEGACY=wsk:
			 * no split) */
			const int64_t tiles = (int64_t)cdiv(I, WG_BM) * cdiv(J, WG_BN);
			const int64_t sms = cuda_get_priv(be)->sms, nks = (ldp + WG_BK - 1) / WG_BK;
			int64_t S = 1;
			if (2 * tiles <= sms && ep.ld == J && !cuda_legacy("wsk")) {
				S = sms / tiles;
				if (S > nks / 4) S = nks / 4;
				if (S > 8) S = 8;
				if (S < 1) S = 1;
			}
			EpArgs e2 = ep;
			unsigned int *cnt = NULL;
			if (S > 1) {
				e2.out = cuda_split_ws(be, S * I * J, &cnt, 0);
				e2.acc = 0;
			}
			if (!(cl && wg_map(&mh, B, J, ldp, WG_BN / 2) &&
			      wg_go_pairs<EP_STORE>(ma, mh, ma, I, J, ldp, e2, (int)S)))
				gemm_tma_kernel<EP_STORE, 1><<<dim3(grid, (unsigned int)S), 288, WG_SMEM>>>(
					ma, mb, ma, I, J, ldp, e2);
			if (S > 1) {
				CK_LAUNCH(gemm_tma);
				split_sum_launch(e2.out, S, I * J, ep.out, ep.acc);
			}
		} else if (MODE == EP_VOTE && ok_ws > 0 && !cuda_legacy("vpf") &&
			   wg_map_t(&mt, ep.T, I, J)) {
			/* the producer warp also prefetches the epilogue's
			 * operands (the packed windows may read up to 15 bytes
			 * past the last row: c_tern_alloc's slack) */
			EpArgs e2 = ep;
			e2.pf = 1;
			gemm_tma_kernel<EP_VOTE, 1><<<grid, 288, WG_SMEM>>>(ma, mb, mt, I, J, ldp, e2);
		} else {
			gemm_tma_kernel<MODE, 0><<<grid, 256, WG_SMEM>>>(ma, mb, ma, I, J, ldp, ep);
		}
		CK_LAUNCH(gemm_tma);
		return 1;
	}
	if (ok_cp < 0) return 0;
	gemm_wg_kernel<MODE><<<grid, 256, WG_SMEM>>>(A, B, I, J, ldp, ep);
	CK_LAUNCH(gemm_wg);
	return 1;
}

/* the sign-vote GEMM on fp8 e4m3 operands A [I][ldp], B [J][ldp] (bytes,
 * K-major, ldp a multiple of 16) with the producer warp's prefetch
 * (wg_f8_ok: this device and binary have it) */
static int wg_f8_ok(void)
{
	if (wg_major() != 9 || cuda_legacy("wgmma") || cuda_legacy("tma") || !wg_encoder())
		return 0;
	static int ok = 0;
	if (!ok) ok = wg_usable((const void *)gemm_tma_kernel<EP_VOTE, 1, 1>) ? 1 : -1;
	return ok > 0;
}
static int wg_launch_f8(const uint8_t *A, const uint8_t *B, int64_t I, int64_t J, int64_t ldp,
			const EpArgs &ep)
{
	CUtensorMap ma, mb, mt;
	if (!wg_f8_ok() || !wg_map(&ma, A, I, ldp, WG_BM, 1) || !wg_map(&mb, B, J, ldp, WG_BN, 1))
		return 0;
	EpArgs e2 = ep;
	e2.pf = !cuda_legacy("vpf") && wg_map_t(&mt, ep.T, I, J);
	const unsigned int grid = cdiv(J, WG_BN) * cdiv(I, WG_BM);
	gemm_tma_kernel<EP_VOTE, 1, 1><<<grid, 288, WG_SMEM>>>(ma, mb, e2.pf ? mt : ma, I, J, ldp, e2);
	CK_LAUNCH(gemm_tma_f8);
	return 1;
}

#endif /* ARB_CUDA_WGMMA_CUH */
