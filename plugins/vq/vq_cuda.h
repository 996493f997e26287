/*
 * plugins/vq/vq_cuda.h -- launchers of the vq plugin's CUDA kernels (vq.cu),
 * called by vq.c when the backend is a device backend. Every symbol here has
 * hidden visibility (the plugin is built with -fvisibility=hidden); the only
 * exported symbol of vq.so is the descriptor in vq.c.
 *
 * All pointers are device pointers. Every launcher returns 0 on success and
 * a nonzero CUDA error code otherwise (the caller turns it into
 * ARB_ERR_CUDA). Kernels run on the legacy default stream, like the core's.
 */
#ifndef ARB_VQ_CUDA_H
#define ARB_VQ_CUDA_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* what a kernel needs to read the decoded codebook rows */
typedef struct vq_tab_view {
	const uint8_t *packed;
	const int8_t *E;
	const int64_t *corr;  /* NULL unless bigint rule with steps >= 1 */
	int64_t rows;
	int cols, row_bytes, gs, groups;
	float bigint_alpha;
	int64_t steps;
} vq_tab_view;

/* exact lookup: codes[q] = argmax_r score(z[q], row r) for every query q of
 * qlist (n entries; NULL = all queries 0..n-1). ws: n u64 scratch. */
int vq_cuda_exact(const vq_tab_view *tv, const float *z, int64_t n,
		  const int32_t *qlist, int32_t *codes, unsigned long long *ws);

/* candidate lookup (README "candidate lookup"): codes[q] = best candidate
 * among the first max_scan rows (0 = all) of each probed bucket,
 * or -1 when no bucket probed held a row; queries with -1 are appended to
 * miss (miss_n: one int32 counter, zeroed by the launcher). scanned (NULL =
 * not counted): one u64 to which the kernel adds the rows it scored. */
int vq_cuda_candidates(const vq_tab_view *tv, const float *z, int64_t n,
		       const float *tau, const int32_t *coord,
		       const int32_t *head, const int32_t *next, int tables,
		       int bits, int probes, int64_t max_scan, int32_t *codes,
		       int32_t *miss, int32_t *miss_n,
		       unsigned long long *scanned);

/* query normalization (vq.c vq_norm_rows, bit-identical): per row m of z
 * (M x dim), u = z - mu, rstd[m] = (float)(1 / sqrt(sum u^2 / dim + 1e-5)),
 * zn = u * rstd * s */
int vq_cuda_norm(const float *z, const float *mu, int64_t M, int dim, float s,
		 float *u, float *rstd, float *zn);

/* usage[codes[q]] += 1, saturating at INT16_MAX; *sat = 1 when a count
 * reached the limit */
int vq_cuda_usage(int16_t *usage, const int32_t *codes, int64_t n,
		  int64_t rows, int32_t *sat);
/* usage[r] >>= 1 for every row */
int vq_cuda_halve(int16_t *usage, int64_t rows);
/* out[i * row_bytes ..] = packed row rows[i] */
int vq_cuda_gather_rows(const uint8_t *packed, int64_t row_bytes,
			const int32_t *rows, int64_t n, uint8_t *out);
/* dst[idx[i]] = val[i] */
int vq_cuda_scatter_i32(int32_t *dst, const int64_t *idx, const int32_t *val,
			int64_t n);

#ifdef __cplusplus
}
#endif
#endif /* ARB_VQ_CUDA_H */
