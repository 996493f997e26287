/*
 * core/cuda/attention.cu -- causal multi-head attention for the CUDA backend,
 * fp32, q/k/v/out [B,T,H,hd], lse [B,H,T] (natural log of the softmax
 * denominator of the scaled scores). hd <= 128 (4 values per lane).
 *
 * forward:  one warp per query row; keys in chunks of 32 (lane j scores key
 *           j against the query held in shared memory), online softmax, the
 *           output accumulated lane-per-dimension.
 * backward: attn_dq_kernel1 (one warp per query: D_t = dout.out, dq) and
 *           attn_dkv_kernel2 (one warp per key: dk, dv summed over queries in
 *           ascending order, deterministic, no atomics).
 */
#include <math.h>
#include "common.cuh"

#define AWARPS 4
#define HDMAX 128

__device__ __forceinline__ int64_t at_off(int b, int t, int h, int T, int H, int hd)
{
	return (((int64_t)b * T + t) * H + h) * hd;
}

// grid: B*H*T/AWARPS blocks of AWARPS warps; warp -> (b, h, t)
__global__ void attn_forward_kernel1(const float *q, const float *k, const float *v,
				     float *out, float *lse, int B, int T, int H, int hd)
{
	__shared__ float qs[AWARPS][HDMAX];
	int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
	int64_t task = (int64_t)blockIdx.x * AWARPS + warp;
	if (task >= (int64_t)B * H * T) return;
	int t = (int)(task % T), h = (int)((task / T) % H), b = (int)(task / ((int64_t)T * H));
	const float scale = 1.0f / sqrtf((float)hd);
	const float *qr = q + at_off(b, t, h, T, H, hd);
	for (int e = lane; e < hd; e += 32) qs[warp][e] = qr[e];
	__syncwarp();
	float o[4] = { 0, 0, 0, 0 };
	float mx = -INFINITY, sum = 0.0f;
	for (int j0 = 0; j0 <= t; j0 += 32) {
		int j = j0 + lane;
		float s = -INFINITY;
		if (j <= t) {
			const float *kr = k + at_off(b, j, h, T, H, hd);
			float d = 0.0f;
			for (int e = 0; e < hd; e++) d += qs[warp][e] * kr[e];
			s = d * scale;
		}
		float cm = s;
		for (int off = 16; off > 0; off >>= 1) cm = fmaxf(cm, __shfl_xor_sync(0xffffffffu, cm, off));
		float nm = fmaxf(mx, cm);
		float corr = expf(mx - nm);
		float p = j <= t ? expf(s - nm) : 0.0f;
		float ps = p;
		for (int off = 16; off > 0; off >>= 1) ps += __shfl_xor_sync(0xffffffffu, ps, off);
		sum = sum * corr + ps;
#pragma unroll
		for (int i = 0; i < 4; i++) o[i] *= corr;
		int nj = t - j0 + 1 < 32 ? t - j0 + 1 : 32;
		for (int jj = 0; jj < nj; jj++) {
			float pj = __shfl_sync(0xffffffffu, p, jj);
			const float *vr = v + at_off(b, j0 + jj, h, T, H, hd);
#pragma unroll
			for (int i = 0; i < 4; i++) {
				int e = lane + 32 * i;
				if (e < hd) o[i] += pj * vr[e];
			}
		}
		mx = nm;
	}
	float inv = 1.0f / sum;
	float *orow = out + at_off(b, t, h, T, H, hd);
#pragma unroll
	for (int i = 0; i < 4; i++) {
		int e = lane + 32 * i;
		if (e < hd) orow[e] = o[i] * inv;
	}
	if (lane == 0) lse[((int64_t)b * H + h) * T + t] = mx + logf(sum);
}

// one warp per query: Dt = dout.out (saved to Dbuf), dq = sum_j ds_j k_j
__global__ void attn_dq_kernel1(const float *q, const float *k, const float *v,
				const float *out, const float *lse, const float *dout,
				float *dq, float *Dbuf, int B, int T, int H, int hd)
{
	__shared__ float qs[AWARPS][HDMAX], ds_[AWARPS][HDMAX];
	int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
	int64_t task = (int64_t)blockIdx.x * AWARPS + warp;
	if (task >= (int64_t)B * H * T) return;
	int t = (int)(task % T), h = (int)((task / T) % H), b = (int)(task / ((int64_t)T * H));
	const float scale = 1.0f / sqrtf((float)hd);
	int64_t off = at_off(b, t, h, T, H, hd);
	float Dt = 0.0f;
	for (int e = lane; e < hd; e += 32) {
		qs[warp][e] = q[off + e];
		ds_[warp][e] = dout[off + e];
		Dt += dout[off + e] * out[off + e];
	}
	for (int o2 = 16; o2 > 0; o2 >>= 1) Dt += __shfl_xor_sync(0xffffffffu, Dt, o2);
	__syncwarp();
	int64_t li = ((int64_t)b * H + h) * T + t;
	float l = lse[li];
	if (lane == 0) Dbuf[li] = Dt;
	float acc[4] = { 0, 0, 0, 0 };
	for (int j0 = 0; j0 <= t; j0 += 32) {
		int j = j0 + lane;
		float ds = 0.0f;
		if (j <= t) {
			const float *kr = k + at_off(b, j, h, T, H, hd);
			const float *vr = v + at_off(b, j, h, T, H, hd);
			float sd = 0.0f, dp = 0.0f;
			for (int e = 0; e < hd; e++) {
				sd += qs[warp][e] * kr[e];
				dp += ds_[warp][e] * vr[e];
			}
			float p = expf(sd * scale - l);
			ds = p * (dp - Dt) * scale;
		}
		int nj = t - j0 + 1 < 32 ? t - j0 + 1 : 32;
		for (int jj = 0; jj < nj; jj++) {
			float d = __shfl_sync(0xffffffffu, ds, jj);
			const float *kr = k + at_off(b, j0 + jj, h, T, H, hd);
#pragma unroll
			for (int i = 0; i < 4; i++) {
				int e = lane + 32 * i;
				if (e < hd) acc[i] += d * kr[e];
			}
		}
	}
#pragma unroll
	for (int i = 0; i < 4; i++) {
		int e = lane + 32 * i;
		if (e < hd) dq[off + e] = acc[i];
	}
}

// one warp per key j: dk = sum_{t>=j} ds_tj q_t, dv = sum_{t>=j} p_tj dout_t
__global__ void attn_dkv_kernel2(const float *q, const float *k, const float *v,
				 const float *lse, const float *dout, const float *Dbuf,
				 float *dk, float *dv, int B, int T, int H, int hd)
{
	__shared__ float ks[AWARPS][HDMAX], vs[AWARPS][HDMAX];
	int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
	int64_t task = (int64_t)blockIdx.x * AWARPS + warp;
	if (task >= (int64_t)B * H * T) return;
	int j = (int)(task % T), h = (int)((task / T) % H), b = (int)(task / ((int64_t)T * H));
	const float scale = 1.0f / sqrtf((float)hd);
	int64_t off = at_off(b, j, h, T, H, hd);
	for (int e = lane; e < hd; e += 32) {
		ks[warp][e] = k[off + e];
		vs[warp][e] = v[off + e];
	}
	__syncwarp();
	const float *lrow = lse + ((int64_t)b * H + h) * T;
	const float *Drow = Dbuf + ((int64_t)b * H + h) * T;
	float ak[4] = { 0, 0, 0, 0 }, av[4] = { 0, 0, 0, 0 };
	for (int t0 = j; t0 < T; t0 += 32) {
		int t = t0 + lane;
		float ds = 0.0f, p = 0.0f;
		if (t < T) {
			const float *qr = q + at_off(b, t, h, T, H, hd);
			const float *dr = dout + at_off(b, t, h, T, H, hd);
			float sd = 0.0f, dp = 0.0f;
			for (int e = 0; e < hd; e++) {
				sd += qr[e] * ks[warp][e];
				dp += dr[e] * vs[warp][e];
			}
			p = expf(sd * scale - lrow[t]);
			ds = p * (dp - Drow[t]) * scale;
		}
		int nt = T - t0 < 32 ? T - t0 : 32;
		for (int tt = 0; tt < nt; tt++) {
			float d = __shfl_sync(0xffffffffu, ds, tt);
			float pp = __shfl_sync(0xffffffffu, p, tt);
			const float *qr = q + at_off(b, t0 + tt, h, T, H, hd);
			const float *dr = dout + at_off(b, t0 + tt, h, T, H, hd);
#pragma unroll
			for (int i = 0; i < 4; i++) {
				int e = lane + 32 * i;
				if (e < hd) {
					ak[i] += d * qr[e];
					av[i] += pp * dr[e];
				}
			}
		}
	}
#pragma unroll
	for (int i = 0; i < 4; i++) {
		int e = lane + 32 * i;
		if (e < hd) {
			dk[off + e] = ak[i];
			dv[off + e] = av[i];
		}
	}
}

void cuda_attention_forward(arb_backend *be, const float *q, const float *k,
			    const float *v, float *out, float *lse, int B,
			    int T, int H, int hd)
{
	int64_t tasks = (int64_t)B * H * T;
	if (tasks <= 0) return;
	if (hd > HDMAX) {
		fprintf(stderr, "arbcore cuda: attention head dim %d > %d unsupported\n", hd, HDMAX);
		return;
	}
	attn_forward_kernel1<<<cdiv(tasks, AWARPS), AWARPS * 32>>>(q, k, v, out, lse, B, T, H, hd);
	CK_LAUNCH(attn_forward);
}

void cuda_attention_backward(arb_backend *be, const float *q, const float *k,
			     const float *v, const float *out, const float *lse,
			     const float *dout, float *dq, float *dk, float *dv,
			     int B, int T, int H, int hd)
{
	int64_t tasks = (int64_t)B * H * T;
	if (tasks <= 0) return;
	if (hd > HDMAX) {
		fprintf(stderr, "arbcore cuda: attention head dim %d > %d unsupported\n", hd, HDMAX);
		return;
	}
	float *Dbuf = (float *)cuda_scratch(be, (size_t)tasks * sizeof(float));
	attn_dq_kernel1<<<cdiv(tasks, AWARPS), AWARPS * 32>>>(q, k, v, out, lse, dout, dq,
							      Dbuf, B, T, H, hd);
	CK_LAUNCH(attn_dq);
	attn_dkv_kernel2<<<cdiv(tasks, AWARPS), AWARPS * 32>>>(q, k, v, lse, dout, Dbuf, dk,
							       dv, B, T, H, hd);
	CK_LAUNCH(attn_dkv);
}
