/*
 * examples/dwconv/dwconv_kern.h -- the three kernels of the depthwise causal
 * convolution, implemented twice: in plain C (dwconv.c, the definition of
 * record) and in CUDA (dwconv.cu). All pointers are backend memory.
 *
 * Layout: x, c, dc, dx are [B, T, D] row-major (M = B*T rows of D);
 * wt is the decoded tap matrix transposed, [D, k]: wt[d*k + j] is the tap of
 * channel d at lag j (lag 0 = the position itself).
 *
 *   conv_fwd:   c[b,t,d]  = sum_{j<k, t-j>=0} wt[d,j] * x[b,t-j,d]
 *   conv_bwd_x: dx[b,t,d] += sum_{j<k, t+j<T} wt[d,j] * dc[b,t+j,d]
 *   tap_grad:   dtaps[j,d] = sum_{b, t>=j} dc[b,t,d] * x[b,t-j,d]   ([k, D])
 *
 * The convolution never crosses a sequence boundary (causal per sequence).
 * tap_grad sums in a fixed order (b, then t), so it is deterministic.
 */
#ifndef DWCONV_KERN_H
#define DWCONV_KERN_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dw_kernels {
	void (*conv_fwd)(const float *x, const float *wt, float *c, int B, int T,
			 int D, int k);
	void (*conv_bwd_x)(const float *dc, const float *wt, float *dx, int B,
			   int T, int D, int k);
	void (*tap_grad)(const float *dc, const float *x, float *dtaps, int B,
			 int T, int D, int k);
} dw_kernels;

/* dwconv.cu (built only when nvcc is present: ARB_HAVE_CUDA) */
const dw_kernels *dw_cuda_kernels(void);

#ifdef __cplusplus
}
#endif
#endif /* DWCONV_KERN_H */
