/*
 * plugins/vq/vq.c -- TernaryVQCodebook: a ternary vector-quantization
 * bottleneck added to the residual stream (ARB_SLOT_RESIDUAL). Several
 * instances may be loaded ([vq:shared], [vq:kg]). plugins/vq/README.md is
 * the design of record; in short, per position m (M = B*T rows):
 *
 *   z_m    = P x_m                       P: dim x D ternary (linear)
 *   zq_m   = z_rms * (z_m - mu) / rms(z_m - mu)   (mu: batch mean in
 *            training, int32 running mean otherwise; zq = z if z_rms = 0)
 *   code_m = argmax_r  zq_m . c_r - |c_r|^2 / 2     (= nearest row in L2;
 *            ties -> smaller row id)     C: size x dim ternary table
 *   y_m   += out_scale * Q c_{code_m}     Q: D x dim ternary (linear)
 *   aux    = beta / (2M) * sum_m |zq_m - c_{code_m}|^2   (commitment)
 *
 * Backward (straight-through): g = out_scale * dy,
 *   dL/dc = Q^T g (copied to dL/dzq),  dzq = Q^T g + beta/M (zq - c),
 *   dz = rmsnorm gradient of dzq (minus its batch mean after a training
 *   forward), dx += P^T dz,   votes: Q from (g, c), P from (dz, x),
 *   codebook rows that were chosen: dW_row = sum over positions choosing the
 *   row of code_weight/M * (c - zq)   (io->be->embed_vote sums duplicates).
 *
 * Lookup is exact (every row) when size <= exact_max, else by candidates
 * from a multi-table sign-hash index (README "candidate lookup"), with an
 * exact fallback for a query whose probed buckets are all empty. This file
 * is the CPU reference; vq.cu holds the CUDA kernels used when
 * io->be->is_device. Plugins may not call core functions: everything goes
 * through the host table and the backend table.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "arb/plugin.h"
#include "vq_cuda.h"

#if defined(ARB_HAVE_CUDA) && !defined(VQ_TEST_INCLUDE)
#define VQ_CUDA 1
#else
#define VQ_CUDA 0
#endif

#define VQ_MAX_TABLES 64
#define VQ_MAX_BITS 24
#define VQ_SNAP 64          /* hash coordinates come from the first 64 */
#define VQ_MAX_RESEED 4096  /* dead rows reseeded per window at most */
#define VQ_SWEEP_EVERY 1024 /* full index verification period (steps) */

static const arb_conf_key vq_schema[] = {
	{ "layers", ARB_CONF_INT_LIST, "", 0, 4096, NULL,
	  "blocks after which the code vector is added (default: the last)" },
	{ "size", ARB_CONF_INT, "4096", 2, 2000000000, NULL,
	  "codebook rows" },
	{ "dim", ARB_CONF_INT, "64", 4, 1024, NULL,
	  "code width (projection P: dim x D, Q: D x dim)" },
	{ "exact_max", ARB_CONF_INT, "65536", 0, 2000000000, NULL,
	  "exact lookup over every row when size <= exact_max, else candidates" },
	{ "tables", ARB_CONF_INT, "8", 1, VQ_MAX_TABLES, NULL,
	  "sign-hash tables of the candidate index" },
	{ "bits", ARB_CONF_INT, "16", 1, VQ_MAX_BITS, NULL,
	  "coordinates per hash key (2^bits buckets per table)" },
	{ "probes", ARB_CONF_INT, "4", 0, 255, NULL,
	  "extra buckets per table: flips of the least-confident key bits" },
	{ "beta", ARB_CONF_FLOAT, "0", 0, 100, NULL,
	  "commitment weight: d zq += beta/M (zq - c)" },
	{ "code_weight", ARB_CONF_FLOAT, "1.0", 0, 100, NULL,
	  "codebook vote weight: dW_row += code_weight/M (c - z)" },
	{ "out_scale", ARB_CONF_FLOAT, "1.0", 0, 1000, NULL,
	  "scale of Q c added to the residual stream" },
	{ "out_init", ARB_CONF_ENUM, "zero", 0, 0, "random|zero",
	  "initial trits of Q: random (trunk density) or zero (the component "
	  "adds nothing until votes flip Q's trits)" },
	{ "max_scan", ARB_CONF_INT, "0", 0, 1000000000, NULL,
	  "candidate lookup: rows scored per probed bucket at most, in bucket "
	  "order (0 = all); bounds the time of skewed buckets" },
	{ "z_rms", ARB_CONF_FLOAT, "1.0", 0, 1000, NULL,
	  "rms of the normalized query zn = z_rms * (z - mu) / rms(z - mu) that "
	  "the lookup sees (0 = raw z, no normalization)" },
	{ "center", ARB_CONF_INT, "3", 0, 16, NULL,
	  "mu = running mean of z, updated by 2^-center per training step "
	  "(integer state; 0 = mu stays 0)" },
	{ "dead_after", ARB_CONF_INT, "0", 0, 1000000000, NULL,
	  "reseed rows unused for this many steps from recent inputs (0 = off)" },
	{ "group_size", ARB_CONF_INT, "0", 0, ARB_GROUP_MAX, NULL,
	  "exponent group size of P, Q and the codebook (0 = trunk default)" },
	ARB_CONF_END
};

typedef struct vq {
	const arb_host *host;
	arb_backend *be;
	char inst[64];
	char pub[96];            /* "vq.<instance>.codes" */
	int D, dim;
	int64_t size, exact_max;
	int exact;               /* size <= exact_max */
	int tables, bits, probes;
	double beta, code_weight, out_scale;
	int64_t max_scan;        /* rows scored per probed bucket (0 = all) */
	double z_rms;            /* 0: lookup on raw z */
	int center;              /* EMA shift of mu (0: mu = 0) */
	int64_t dead_after;
	uint64_t seed;
	arb_tern *P, *Q, *C;

	/* usage counts: int16 per row in backend memory, saturating */
	int16_t *usage;
	int32_t *sat;            /* backend memory: 1 when a count saturated */
	int8_t tau_e[ARB_GROUP_MAX]; /* E0 per group: tau = 2^E0 / 2 */
	float *tau;              /* host: per coordinate (dim) */
	float *tau_dev;          /* backend copy (device backends) */

	/* candidate index (host mirror; device copy on device backends) */
	int32_t *coord;          /* tables * bits coordinates (< 64) */
	int32_t *head;           /* tables << bits: first row or -1 */
	int32_t *next;           /* tables * size: next row or -1 */
	uint64_t *snap;          /* size: bit d = (trit d == +1), d < 64 */
	int32_t *coord_dev, *head_dev, *next_dev;
	int64_t *dirty;          /* flat indices to re-upload: head (< H) and
				    next (H + i) */
	int64_t ndirty, capdirty;

	/* activations (backend memory), capacity Mcap rows */
	int64_t Mcap, M;
	float *xin, *z, *c, *o, *dz, *dcode;
	float *u, *zn, *rstd, *dzn; /* centered z, normalized z, 1/rms, d zn
				       (only with z_rms > 0) */
	int32_t *codes;
	unsigned long long *ws;  /* device: exact-lookup scratch */
	int32_t *miss, *miss_n;  /* device: candidate misses */
	unsigned long long *scan_dev; /* device: rows scored by the candidates */
	/* lookup statistics of the last forward (metrics): queries, queries
	 * that fell back to the exact search, rows scored */
	int64_t lk_q, lk_miss, lk_scan;
	int32_t *codes_h;        /* host copy of the codes of the last forward */
	float *zh, *ch;          /* host scratch (device backends) */
	int8_t *trits;           /* host scratch: one decoded row (dim) */
	float *scales;           /* host scratch: one row's scales (groups) */

	/* rows that received votes since the last after_step */
	int32_t *touched;
	int64_t ntouched, captouched;

	/* dead-code bookkeeping (saved) */
	int64_t win_steps;       /* steps in the current usage window */
	int64_t cursor;          /* next row the dead scan starts at */
	int64_t reseeded;        /* rows reseeded so far (metric) */
	double last_ppl;

	/* centering (saved): mu_q[d] = mu_d * 2^16, int32 fixed point */
	int32_t *mu_q;
	int mu_init;             /* mu_q holds a mean (first training batch) */
	float *mu;               /* host: the mean the last forward subtracted */
	float *mu_dev;           /* backend copy of mu (dim) */
	double *mean;            /* host scratch (dim) */
	float *gm, *gm_dev;      /* backward: mean of du (host, backend; dim) */
	int bn;                  /* last forward subtracted its batch mean */
	float *zq;               /* the query the lookup sees: zn or z */
} vq;

/* ------------------------------------------------------------------------- *
 * helpers shared by the exact and candidate paths (mirrored in vq.cu) */

static float vq_scale(const arb_tern *t, const int8_t *E, const int64_t *corr,
		      int64_t r, int g)
{
	int64_t k = r * t->groups + g;
	if (t->erule == ARB_ERULE_BIGINT && corr && t->steps >= 1) {
		double x = (double)E[k] + (double)t->bigint_alpha *
			   (double)corr[k] / ((double)t->steps * (double)t->group_size);
		return (float)exp2(x);
	}
	return arb_exp2i(E[k]);
}

static void vq_decode(const uint8_t *row, int cols, int8_t *out)
{
	for (int c = 0; c < cols; c += 5) {
		int v = row[c / 5];
		for (int j = 0; j < 5 && c + j < cols; j++) {
			out[c + j] = (int8_t)(v % 3 - 1);
			v /= 3;
		}
	}
}

/* score = z . c - |c|^2 / 2 with c = trits * group scales; fixed order:
 * per group the trit-signed sum of z, then scaled; -0 folded to +0 */
static float vq_score(const float *z, const int8_t *t, const float *sc,
		      int cols, int gs)
{
	float dot = 0.0f, nn = 0.0f;
	for (int c0 = 0, g = 0; c0 < cols; c0 += gs, g++) {
		int c1 = c0 + gs < cols ? c0 + gs : cols;
		float dg = 0.0f;
		int cnt = 0;
		for (int d = c0; d < c1; d++) {
			if (t[d] > 0) dg += z[d];
			else if (t[d] < 0) dg -= z[d];
			cnt += t[d] != 0;
		}
		float s = sc[g];
		dot += s * dg;
		nn += (float)cnt * (s * s);
	}
	return (dot - 0.5f * nn) + 0.0f;
}

static int vq_better(float s, int32_t r, float bs, int32_t br)
{
	return s > bs || (s == bs && r < br);
}

/* decode row r of the host codebook t into trits and scales */
static void vq_row(const arb_tern *t, int64_t r, int8_t *tr, float *sc)
{
	vq_decode(t->packed + r * t->row_bytes, (int)t->cols, tr);
	for (int g = 0; g < t->groups; g++)
		sc[g] = vq_scale(t, t->E, t->corr, r, g);
}

/* sign pattern of a packed row: bit d = (trit d == +1), d < 64 */
static uint64_t vq_snap_of(const uint8_t *row, int cols)
{
	uint64_t s = 0;
	int n = cols < VQ_SNAP ? cols : VQ_SNAP;
	for (int c = 0; c < n; c += 5) {
		int v = row[c / 5];
		for (int j = 0; j < 5 && c + j < n; j++) {
			if (v % 3 == 2) s |= 1ull << (c + j);
			v /= 3;
		}
	}
	return s;
}

static uint32_t vq_key(const vq *q, int t, uint64_t snap)
{
	uint32_t k = 0;
	const int32_t *cd = q->coord + (int64_t)t * q->bits;
	for (int b = 0; b < q->bits; b++)
		k |= (uint32_t)((snap >> cd[b]) & 1u) << b;
	return k;
}

/* query normalization, row m (mirrored in vq.cu k_norm):
 *   u = z - mu (float),  ss = sum_d u_d^2 (double, ascending d),
 *   r = (float)(1 / sqrt(ss / dim + 1e-5)) (the backend's rmsnorm rstd),
 *   zn = u * r * s (float, left to right) */
#define VQ_NORM_EPS 1e-5
static void vq_norm_rows(const float *z, const float *mu, int64_t M, int dim,
			 float s, float *u, float *rstd, float *zn)
{
	for (int64_t m = 0; m < M; m++) {
		const float *zr = z + m * dim;
		float *ur = u + m * dim;
		double ss = 0.0;
		for (int d = 0; d < dim; d++) {
			float v = zr[d] - mu[d];
			ur[d] = v;
			ss += (double)v * (double)v;
		}
		float r = (float)(1.0 / sqrt(ss / (double)dim + VQ_NORM_EPS));
		rstd[m] = r;
		for (int d = 0; d < dim; d++) zn[m * dim + d] = ur[d] * r * s;
	}
}

/* column means of a host M x dim array (double sums over ascending m) */
static void vq_col_mean(const float *a, int64_t M, int dim, double *out)
{
	for (int d = 0; d < dim; d++) out[d] = 0.0;
	for (int64_t m = 0; m < M; m++)
		for (int d = 0; d < dim; d++) out[d] += a[m * dim + d];
	for (int d = 0; d < dim; d++) out[d] /= (double)M;
}

/* running mean for evaluation: mu_q <- mu_q + (round(bmean * 2^16) - mu_q)
 * / 2^center (rounded half away from zero); the first update sets mu_q to
 * the batch mean */
static void vq_center_update(vq *q, const double *bmean)
{
	for (int d = 0; d < q->dim; d++) {
		double bm = nearbyint(bmean[d] * 65536.0);
		if (bm > 2147483647.0) bm = 2147483647.0;
		if (bm < -2147483647.0) bm = -2147483647.0;
		int64_t b = (int64_t)bm, cur = q->mu_q[d];
		if (!q->mu_init) {
			q->mu_q[d] = (int32_t)b;
			continue;
		}
		int64_t delta = b - cur, h = (int64_t)1 << (q->center - 1);
		int64_t step = delta >= 0 ? (delta + h) >> q->center
					  : -((-delta + h) >> q->center);
		q->mu_q[d] = (int32_t)(cur + step);
	}
	q->mu_init = 1;
}

/* the mean a forward subtracts: the batch mean (training, center > 0),
 * else the running mean (0 while center = 0 or before the first batch) */
static void mu_set(vq *q, const double *bmean)
{
	for (int d = 0; d < q->dim; d++)
		q->mu[d] = bmean ? (float)bmean[d]
				 : (float)((double)q->mu_q[d] / 65536.0);
	q->be->upload(q->be, q->mu_dev, q->mu, (size_t)q->dim * sizeof *q->mu);
}

/* ------------------------------------------------------------------------- *
 * CPU lookups (host-memory codebook) */

static void cpu_exact(vq *q, const float *z, int64_t M, int32_t *codes)
{
	const arb_tern *C = q->C;
	const int dim = q->dim;
	float *bs = malloc((size_t)M * sizeof *bs);
	if (!bs) { for (int64_t m = 0; m < M; m++) codes[m] = 0; return; }
	for (int64_t m = 0; m < M; m++) { bs[m] = -INFINITY; codes[m] = INT32_MAX; }
	for (int64_t r = 0; r < C->rows; r++) {
		vq_row(C, r, q->trits, q->scales);
		for (int64_t m = 0; m < M; m++) {
			float s = vq_score(z + m * dim, q->trits, q->scales, dim,
					   C->group_size);
			if (vq_better(s, (int32_t)r, bs[m], codes[m])) {
				bs[m] = s;
				codes[m] = (int32_t)r;
			}
		}
	}
	for (int64_t m = 0; m < M; m++)
		if (codes[m] == INT32_MAX) codes[m] = 0; /* all scores NaN */
	free(bs);
}

/* query key of table t and the probe flip order (lowest confidence first) */
static uint32_t vq_qkey(const vq *q, int t, const float *z, int *low, int L)
{
	const int32_t *cd = q->coord + (int64_t)t * q->bits;
	float conf[VQ_MAX_BITS];
	uint32_t k = 0;
	for (int b = 0; b < q->bits; b++) {
		int j = cd[b];
		k |= (uint32_t)(z[j] > q->tau[j]) << b;
		conf[b] = fabsf(z[j] - q->tau[j]);
	}
	uint32_t used = 0;
	for (int i = 0; i < L; i++) {
		int best = -1;
		for (int b = 0; b < q->bits; b++) {
			if (used >> b & 1u) continue;
			if (best < 0 || conf[b] < conf[best]) best = b;
		}
		low[i] = best;
		used |= 1u << best;
	}
	return k;
}

static int vq_probe_bits(const vq *q)
{
	int L = 0;
	while (L < q->bits && (1 << L) <= q->probes) L++;
	return L;
}

/* candidate lookup of one query; -1 if every probed bucket is empty */
static int32_t cpu_candidate_one(vq *q, const float *z)
{
	const arb_tern *C = q->C;
	const int L = vq_probe_bits(q);
	float bs = -INFINITY;
	int32_t br = INT32_MAX;
	int found = 0;
	for (int t = 0; t < q->tables; t++) {
		int low[VQ_MAX_BITS];
		uint32_t key = vq_qkey(q, t, z, low, L);
		for (int p = 0; p <= q->probes && p < (1 << L); p++) {
			uint32_t mask = 0;
			for (int i = 0; i < L; i++)
				if (p >> i & 1) mask |= 1u << low[i];
			int64_t b = ((int64_t)t << q->bits) | (key ^ mask);
			int64_t walked = 0;
			for (int32_t r = q->head[b];
			     r >= 0 && (!q->max_scan || walked < q->max_scan);
			     r = q->next[(int64_t)t * q->size + r], walked++) {
				vq_row(C, r, q->trits, q->scales);
				float s = vq_score(z, q->trits, q->scales, q->dim,
						   C->group_size);
				found = 1;
				q->lk_scan++;
				if (vq_better(s, r, bs, br)) { bs = s; br = r; }
			}
		}
	}
	return found && br != INT32_MAX ? br : -1;
}

static void cpu_lookup(vq *q, const float *z, int64_t M, int32_t *codes)
{
	q->lk_q = M;
	q->lk_miss = 0;
	q->lk_scan = 0;
	if (q->exact) {
		cpu_exact(q, z, M, codes);
		q->lk_scan = M * q->size;
		return;
	}
	for (int64_t m = 0; m < M; m++) {
		codes[m] = cpu_candidate_one(q, z + m * q->dim);
		if (codes[m] < 0) {
			cpu_exact(q, z + m * q->dim, 1, codes + m);
			q->lk_miss++;
			q->lk_scan += q->size;
		}
	}
}

/* ------------------------------------------------------------------------- *
 * index: per table a singly linked list per bucket (head/next). Built after
 * the codebook's packed-first init; rows whose trits changed are moved
 * after each step. */

static arb_status dirty_add(vq *q, int64_t i)
{
	if (!q->be->is_device) return ARB_OK;
	if (q->ndirty == q->capdirty) {
		int64_t nc = q->capdirty ? 2 * q->capdirty : 4096;
		int64_t *nd = realloc(q->dirty, (size_t)nc * sizeof *nd);
		if (!nd) return ARB_ERR_NOMEM;
		q->dirty = nd;
		q->capdirty = nc;
	}
	q->dirty[q->ndirty++] = i;
	return ARB_OK;
}

static arb_status idx_push(vq *q, int t, uint32_t key, int32_t r)
{
	int64_t H = (int64_t)q->tables << q->bits;
	int64_t hb = ((int64_t)t << q->bits) | key, nx = (int64_t)t * q->size + r;
	q->next[nx] = q->head[hb];
	q->head[hb] = r;
	arb_status s = dirty_add(q, hb);
	return s ? s : dirty_add(q, H + nx);
}

static arb_status idx_unlink(vq *q, int t, uint32_t key, int32_t r)
{
	int64_t H = (int64_t)q->tables << q->bits;
	int64_t hb = ((int64_t)t << q->bits) | key, base = (int64_t)t * q->size;
	int32_t p = q->head[hb];
	if (p == r) {
		q->head[hb] = q->next[base + r];
		return dirty_add(q, hb);
	}
	while (p >= 0 && q->next[base + p] != r) p = q->next[base + p];
	if (p < 0) return ARB_ERR_INVALID; /* index corrupt: row not in bucket */
	q->next[base + p] = q->next[base + r];
	return dirty_add(q, H + base + p);
}

/* upload the dirty head/next entries to the device copy */
static arb_status idx_flush(vq *q, arb_error *err)
{
#if VQ_CUDA
	if (!q->be->is_device || q->ndirty == 0) return ARB_OK;
	arb_backend *be = q->be;
	int64_t H = (int64_t)q->tables << q->bits, n = q->ndirty;
	int64_t nh = 0;
	for (int64_t i = 0; i < n; i++) nh += q->dirty[i] < H;
	int64_t *idx = malloc((size_t)n * sizeof *idx);
	int32_t *val = malloc((size_t)n * sizeof *val);
	int64_t *didx = be->alloc(be, (size_t)n * sizeof *didx);
	int32_t *dval = be->alloc(be, (size_t)n * sizeof *dval);
	arb_status st = ARB_OK;
	if (!idx || !val || !didx || !dval) {
		st = q->host->set_error(err, ARB_ERR_NOMEM,
					"[%s] index update: out of memory", q->inst);
		goto out;
	}
	for (int pass = 0; pass < 2 && !st; pass++) {
		int64_t k = 0;
		for (int64_t i = 0; i < n; i++) {
			int64_t d = q->dirty[i];
			if ((d < H) != (pass == 0)) continue;
			idx[k] = pass == 0 ? d : d - H;
			val[k] = pass == 0 ? q->head[d] : q->next[d - H];
			k++;
		}
		if (!k) continue;
		be->upload(be, didx, idx, (size_t)k * sizeof *idx);
		be->upload(be, dval, val, (size_t)k * sizeof *val);
		if (vq_cuda_scatter_i32(pass == 0 ? q->head_dev : q->next_dev,
					didx, dval, k))
			st = q->host->set_error(err, ARB_ERR_CUDA,
						"[%s] index update kernel failed",
						q->inst);
	}
	(void)nh;
out:
	free(idx);
	free(val);
	if (didx) be->free(be, didx);
	if (dval) be->free(be, dval);
	q->ndirty = 0;
	return st;
#else
	(void)err;
	q->ndirty = 0;
	return ARB_OK;
#endif
}

/* packed bytes of n rows into host memory (out: n * row_bytes) */
static arb_status rows_to_host(vq *q, const int32_t *rows, int64_t n,
			       uint8_t *out, arb_error *err)
{
	const arb_tern *C = q->C;
	const int64_t rb = C->row_bytes;
	if (!q->be->is_device) {
		for (int64_t i = 0; i < n; i++)
			memcpy(out + i * rb, C->packed + (int64_t)rows[i] * rb,
			       (size_t)rb);
		return ARB_OK;
	}
#if VQ_CUDA
	arb_backend *be = q->be;
	int32_t *drows = be->alloc(be, (size_t)n * sizeof *drows);
	uint8_t *dout = be->alloc(be, (size_t)(n * rb));
	arb_status st = ARB_OK;
	if (!drows || !dout) {
		st = q->host->set_error(err, ARB_ERR_NOMEM,
					"[%s] row gather: out of device memory",
					q->inst);
	} else {
		be->upload(be, drows, rows, (size_t)n * sizeof *drows);
		if (vq_cuda_gather_rows(C->packed, rb, drows, n, dout))
			st = q->host->set_error(err, ARB_ERR_CUDA,
						"[%s] row gather kernel failed",
						q->inst);
		else
			be->download(be, out, dout, (size_t)(n * rb));
	}
	if (drows) be->free(be, drows);
	if (dout) be->free(be, dout);
	return st;
#else
	return q->host->set_error(err, ARB_ERR_UNSUPPORTED,
				  "[%s] device backend without CUDA kernels",
				  q->inst);
#endif
}

/* move rows whose sign pattern changed to their new buckets */
static arb_status idx_refresh(vq *q, const int32_t *rows, int64_t n,
			      arb_error *err)
{
	if (q->exact || n <= 0) return ARB_OK;
	const int64_t rb = q->C->row_bytes;
	uint8_t *buf = malloc((size_t)(n * rb));
	if (!buf)
		return q->host->set_error(err, ARB_ERR_NOMEM,
					  "[%s] index refresh: out of memory",
					  q->inst);
	arb_status st = rows_to_host(q, rows, n, buf, err);
	for (int64_t i = 0; i < n && !st; i++) {
		int32_t r = rows[i];
		uint64_t ns = vq_snap_of(buf + i * rb, q->dim), os = q->snap[r];
		if (ns == os) continue;
		for (int t = 0; t < q->tables && !st; t++) {
			uint32_t ok = vq_key(q, t, os), nk = vq_key(q, t, ns);
			if (ok == nk) continue;
			st = idx_unlink(q, t, ok, r);
			if (!st) st = idx_push(q, t, nk, r);
			if (st == ARB_ERR_INVALID)
				st = q->host->set_error(err, ARB_ERR_INVALID,
					"[%s] index: row %d missing from its bucket",
					q->inst, r);
		}
		q->snap[r] = ns;
	}
	free(buf);
	if (!st) st = idx_flush(q, err);
	return st;
}

/* full build over every row, in chunks (no weight-shaped temporary) */
static arb_status idx_build(vq *q, arb_error *err)
{
	if (q->exact) return ARB_OK;
	const arb_tern *C = q->C;
	const int64_t rb = C->row_bytes, H = (int64_t)q->tables << q->bits;
	const int64_t chunk = 65536;
	for (int64_t i = 0; i < H; i++) q->head[i] = -1;
	uint8_t *buf = q->be->is_device ? malloc((size_t)(chunk * rb)) : NULL;
	if (q->be->is_device && !buf)
		return q->host->set_error(err, ARB_ERR_NOMEM,
					  "[%s] index build: out of memory", q->inst);
	for (int64_t r0 = 0; r0 < q->size; r0 += chunk) {
		int64_t n = q->size - r0 < chunk ? q->size - r0 : chunk;
		const uint8_t *src = C->packed + r0 * rb;
		if (buf) {
			q->be->download(q->be, buf, C->packed + r0 * rb,
					(size_t)(n * rb));
			src = buf;
		}
		for (int64_t i = 0; i < n; i++) {
			int64_t r = r0 + i;
			uint64_t s = vq_snap_of(src + i * rb, q->dim);
			q->snap[r] = s;
			for (int t = 0; t < q->tables; t++) {
				int64_t hb = ((int64_t)t << q->bits) | vq_key(q, t, s);
				q->next[(int64_t)t * q->size + r] = q->head[hb];
				q->head[hb] = (int32_t)r;
			}
		}
	}
	free(buf);
	q->ndirty = 0;
	if (q->be->is_device) {
		q->be->upload(q->be, q->head_dev, q->head, (size_t)H * sizeof *q->head);
		q->be->upload(q->be, q->next_dev, q->next,
			      (size_t)(q->tables * q->size) * sizeof *q->next);
	}
	return ARB_OK;
}

/* ------------------------------------------------------------------------- *
 * buffers */

static void bufs_free(vq *q)
{
	arb_backend *be = q->be;
	void *dev[] = { q->xin, q->z, q->c, q->o, q->dz, q->dcode, q->codes,
			q->ws, q->miss, q->miss_n, q->scan_dev, q->u, q->zn, q->rstd,
			q->dzn };
	for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
		if (dev[i]) be->free(be, dev[i]);
	free(q->codes_h);
	free(q->zh);
	free(q->ch);
	q->xin = q->z = q->c = q->o = q->dz = q->dcode = NULL;
	q->u = q->zn = q->rstd = q->dzn = q->zq = NULL;
	q->codes = q->miss = q->miss_n = NULL;
	q->scan_dev = NULL;
	q->ws = NULL;
	q->codes_h = NULL;
	q->zh = q->ch = NULL;
	q->Mcap = 0;
}

static arb_status bufs_ensure(vq *q, int64_t M, arb_error *err)
{
	if (M <= q->Mcap) return ARB_OK;
	arb_backend *be = q->be;
	bufs_free(q);
	size_t fD = (size_t)M * q->D * sizeof(float);
	size_t fd = (size_t)M * q->dim * sizeof(float);
	q->xin = be->alloc(be, fD);
	q->o = be->alloc(be, fD);
	q->z = be->alloc(be, fd);
	q->c = be->alloc(be, fd);
	q->dz = be->alloc(be, fd);
	q->dcode = be->alloc(be, fd);
	q->codes = be->alloc(be, (size_t)M * sizeof(int32_t));
	q->codes_h = malloc((size_t)M * sizeof(int32_t));
	int ok = q->xin && q->o && q->z && q->c && q->dz && q->dcode &&
		 q->codes && q->codes_h;
	if (q->z_rms > 0) {
		q->u = be->alloc(be, fd);
		q->zn = be->alloc(be, fd);
		q->dzn = be->alloc(be, fd);
		q->rstd = be->alloc(be, (size_t)M * sizeof(float));
		ok = ok && q->u && q->zn && q->dzn && q->rstd;
	}
	q->zq = q->z_rms > 0 ? q->zn : q->z;
	if (be->is_device) {
		q->ws = be->alloc(be, (size_t)M * sizeof *q->ws);
		q->miss = be->alloc(be, (size_t)M * sizeof(int32_t));
		q->miss_n = be->alloc(be, sizeof(int32_t));
		q->scan_dev = be->alloc(be, sizeof *q->scan_dev);
		q->zh = malloc(2 * fd); /* z, then zn */
		q->ch = malloc(fd);
		ok = ok && q->ws && q->miss && q->miss_n && q->scan_dev && q->zh &&
		     q->ch;
	}
	if (!ok) {
		bufs_free(q);
		return q->host->set_error(err, ARB_ERR_NOMEM,
					  "[%s] activation buffers for %lld rows: out of "
					  "memory", q->inst, (long long)M);
	}
	q->Mcap = M;
	return ARB_OK;
}

/* ------------------------------------------------------------------------- *
 * lifecycle */

static void vq_destroy(void *self)
{
	vq *q = self;
	if (!q) return;
	arb_backend *be = q->be;
	if (be) {
		bufs_free(q);
		if (q->usage) be->free(be, q->usage);
		if (q->sat) be->free(be, q->sat);
		if (q->mu_dev) be->free(be, q->mu_dev);
		if (q->gm_dev) be->free(be, q->gm_dev);
		if (be->is_device) {
			if (q->tau_dev) be->free(be, q->tau_dev);
			if (q->coord_dev) be->free(be, q->coord_dev);
			if (q->head_dev) be->free(be, q->head_dev);
			if (q->next_dev) be->free(be, q->next_dev);
		}
	}
	free(q->tau);
	free(q->mu_q);
	free(q->mu);
	free(q->mean);
	free(q->gm);
	free(q->coord);
	free(q->head);
	free(q->next);
	free(q->snap);
	free(q->dirty);
	free(q->trits);
	free(q->scales);
	free(q->touched);
	free(q);
}

static void tau_from_e(vq *q)
{
	for (int d = 0; d < q->dim; d++)
		q->tau[d] = 0.5f * arb_exp2i(q->tau_e[d / q->C->group_size]);
	if (q->be->is_device)
		q->be->upload(q->be, q->tau_dev, q->tau,
			      (size_t)q->dim * sizeof *q->tau);
}

static arb_status vq_create(const arb_host *host, const arb_conf *conf,
			    const char *instance, void **self, arb_error *err)
{
	*self = NULL;
	vq *q = calloc(1, sizeof *q);
	if (!q) return host->set_error(err, ARB_ERR_NOMEM, "[vq] out of memory");
	const arb_model_info *mi = host->model(host);
	q->host = host;
	q->be = host->backend(host);
	snprintf(q->inst, sizeof q->inst, "%s", instance ? instance : "vq");
	snprintf(q->pub, sizeof q->pub, "vq.%s.codes", q->inst);
	q->D = mi->d_model;
	q->seed = mi->seed;
	q->dim = (int)host->conf_int(conf, "dim");
	q->size = host->conf_int(conf, "size");
	q->exact_max = host->conf_int(conf, "exact_max");
	q->exact = q->size <= q->exact_max;
	q->tables = (int)host->conf_int(conf, "tables");
	q->bits = (int)host->conf_int(conf, "bits");
	q->probes = (int)host->conf_int(conf, "probes");
	q->beta = host->conf_float(conf, "beta");
	q->code_weight = host->conf_float(conf, "code_weight");
	q->out_scale = host->conf_float(conf, "out_scale");
	q->max_scan = host->conf_int(conf, "max_scan");
	q->dead_after = host->conf_int(conf, "dead_after");
	q->z_rms = host->conf_float(conf, "z_rms");
	q->center = (int)host->conf_int(conf, "center");
	int gs = (int)host->conf_int(conf, "group_size");
	arb_status st = ARB_OK;
	*self = q;
	if (gs != 0 && gs < ARB_GROUP_MIN) {
		st = host->set_error(err, ARB_ERR_CONFIG,
				     "[vq:%s] group_size %d: 0 or %d..%d", q->inst,
				     gs, ARB_GROUP_MIN, ARB_GROUP_MAX);
		goto fail;
	}
	if (q->size > INT32_MAX) {
		st = host->set_error(err, ARB_ERR_CONFIG,
				     "[vq:%s] size %lld: row ids are int32", q->inst,
				     (long long)q->size);
		goto fail;
	}
	int ncoord = q->dim < VQ_SNAP ? q->dim : VQ_SNAP;
	if (!q->exact && q->bits > ncoord) {
		st = host->set_error(err, ARB_ERR_CONFIG,
				     "[vq:%s] bits %d > %d hashable coordinates "
				     "(min(dim, 64))", q->inst, q->bits, ncoord);
		goto fail;
	}
	arb_tern_param pp = { sizeof pp, gs, 0, 0, -1.0, 0, 0 };
	if ((st = host->tern_create(host, q->inst, "P", q->dim, q->D, &pp, &q->P,
				    err)))
		goto fail;
	arb_tern_param pq = pp;
	if (strcmp(host->conf_str(conf, "out_init"), "zero") == 0) pq.zero_frac = 1.0;
	if ((st = host->tern_create(host, q->inst, "Q", q->D, q->dim, &pq, &q->Q,
				    err)))
		goto fail;
	/* codebook: sparse table; fan_in 1 puts E0 at 0 (unit trits), the
	 * scale of z = P x for unit-variance x */
	arb_tern_param pc = { sizeof pc, gs, 0, 1, -1.0, 0, 1 };
	if ((st = host->tern_create(host, q->inst, "codebook", q->size, q->dim,
				    &pc, &q->C, err)))
		goto fail;
	if (q->C->groups > ARB_GROUP_MAX) {
		st = host->set_error(err, ARB_ERR_CONFIG, "[vq:%s] too many groups",
				     q->inst);
		goto fail;
	}

	arb_backend *be = q->be;
	q->usage = be->alloc(be, (size_t)q->size * sizeof *q->usage);
	q->sat = be->alloc(be, sizeof *q->sat);
	q->tau = malloc((size_t)q->dim * sizeof *q->tau);
	q->trits = malloc((size_t)q->dim);
	q->scales = malloc((size_t)q->C->groups * sizeof *q->scales);
	q->mu_q = calloc((size_t)q->dim, sizeof *q->mu_q);
	q->mu = calloc((size_t)q->dim, sizeof *q->mu);
	q->mean = calloc((size_t)q->dim, sizeof *q->mean);
	q->gm = calloc((size_t)q->dim, sizeof *q->gm);
	q->mu_dev = be->alloc(be, (size_t)q->dim * sizeof(float));
	q->gm_dev = be->alloc(be, (size_t)q->dim * sizeof(float));
	if (be->is_device) q->tau_dev = be->alloc(be, (size_t)q->dim * sizeof(float));
	if (!q->usage || !q->sat || !q->tau || !q->trits || !q->scales ||
	    !q->mu_q || !q->mu || !q->mean || !q->mu_dev || !q->gm || !q->gm_dev ||
	    (be->is_device && !q->tau_dev)) {
		st = host->set_error(err, ARB_ERR_NOMEM, "[vq:%s] out of memory",
				     q->inst);
		goto fail;
	}
	/* E0 of the freshly initialized codebook (row 0), fixed for the run */
	be->download(be, q->tau_e, q->C->E, (size_t)q->C->groups);
	tau_from_e(q);

	if (!q->exact) {
		int64_t H = (int64_t)q->tables << q->bits;
		q->coord = malloc((size_t)q->tables * q->bits * sizeof *q->coord);
		q->head = malloc((size_t)H * sizeof *q->head);
		q->next = malloc((size_t)(q->tables * q->size) * sizeof *q->next);
		q->snap = malloc((size_t)q->size * sizeof *q->snap);
		if (!q->coord || !q->head || !q->next || !q->snap) {
			st = host->set_error(err, ARB_ERR_NOMEM,
					     "[vq:%s] candidate index (%lld bytes): out "
					     "of memory", q->inst,
					     (long long)(H * 4 + q->tables * q->size * 4 +
							 q->size * 8));
			goto fail;
		}
		/* coordinates per table: partial Fisher-Yates over 0..ncoord-1 */
		for (int t = 0; t < q->tables; t++) {
			int perm[VQ_SNAP];
			for (int i = 0; i < ncoord; i++) perm[i] = i;
			uint64_t s = arb_rng_stream(q->C->id, (uint64_t)t,
						    ARB_RNG_PLUGIN);
			for (int b = 0; b < q->bits; b++) {
				int j = b + (int)(arb_rng_u32(q->seed, s, (uint64_t)b) %
						  (uint32_t)(ncoord - b));
				int x = perm[b]; perm[b] = perm[j]; perm[j] = x;
				q->coord[t * q->bits + b] = perm[b];
			}
		}
		if (be->is_device) {
			q->coord_dev = be->alloc(be, (size_t)q->tables * q->bits * 4);
			q->head_dev = be->alloc(be, (size_t)H * 4);
			q->next_dev = be->alloc(be, (size_t)(q->tables * q->size) * 4);
			if (!q->coord_dev || !q->head_dev || !q->next_dev) {
				st = host->set_error(err, ARB_ERR_NOMEM,
						     "[vq:%s] device candidate index: out "
						     "of memory", q->inst);
				goto fail;
			}
			be->upload(be, q->coord_dev, q->coord,
				   (size_t)q->tables * q->bits * 4);
		}
		if ((st = idx_build(q, err))) goto fail;
	}
	{
		int64_t M = (int64_t)(mi->batch > 0 ? mi->batch : 1) *
			    (mi->ctx > 0 ? mi->ctx : 1);
		if ((st = bufs_ensure(q, M, err))) goto fail;
	}
	host->log(host, ARB_LOG_DEBUG,
		  "vq:%s %lld x %d codebook, %s lookup, index %lld bytes", q->inst,
		  (long long)q->size, q->dim, q->exact ? "exact" : "candidate",
		  q->exact ? 0LL : (long long)(((int64_t)q->tables << q->bits) * 4 +
					       q->tables * q->size * 4 +
					       q->size * 8));
	return ARB_OK;
fail:
	vq_destroy(q);
	*self = NULL;
	return st;
}

/* ------------------------------------------------------------------------- *
 * forward / backward */

static arb_status lookup(vq *q, int64_t M, arb_error *err)
{
	arb_backend *be = q->be;
	if (!be->is_device) {
		cpu_lookup(q, q->zq, M, q->codes);
		return ARB_OK;
	}
#if VQ_CUDA
	const arb_tern *C = q->C;
	vq_tab_view tv = { C->packed, C->E,
			   C->erule == ARB_ERULE_BIGINT && C->steps >= 1 ? C->corr : NULL,
			   C->rows, (int)C->cols, (int)C->row_bytes, C->group_size,
			   C->groups, C->bigint_alpha, C->steps };
	int rc;
	q->lk_q = M;
	q->lk_miss = 0;
	if (q->exact) {
		rc = vq_cuda_exact(&tv, q->zq, M, NULL, q->codes, q->ws);
		q->lk_scan = M * q->size;
	} else {
		be->zero(be, q->scan_dev, sizeof *q->scan_dev);
		rc = vq_cuda_candidates(&tv, q->zq, M, q->tau_dev, q->coord_dev,
					q->head_dev, q->next_dev, q->tables, q->bits,
					q->probes, q->max_scan, q->codes, q->miss,
					q->miss_n, q->scan_dev);
		int32_t nmiss = 0;
		unsigned long long ns = 0;
		if (!rc) be->download(be, &nmiss, q->miss_n, sizeof nmiss);
		if (!rc) be->download(be, &ns, q->scan_dev, sizeof ns);
		if (!rc && nmiss > 0)
			rc = vq_cuda_exact(&tv, q->zq, nmiss, q->miss, q->codes, q->ws);
		q->lk_miss = nmiss;
		q->lk_scan = (int64_t)ns + (int64_t)nmiss * q->size;
	}
	if (rc)
		return q->host->set_error(err, ARB_ERR_CUDA,
					  "[vq:%s] lookup kernel failed (CUDA error %d)",
					  q->inst, rc);
	return ARB_OK;
#else
	return q->host->set_error(err, ARB_ERR_UNSUPPORTED,
				  "[vq:%s] device backend but the plugin was built "
				  "without CUDA", q->inst);
#endif
}

static arb_status usage_add(vq *q, int64_t M, arb_error *err)
{
	if (!q->be->is_device) {
		for (int64_t m = 0; m < M; m++) {
			int32_t r = q->codes_h[m];
			if (r < 0 || r >= q->size) continue;
			if (q->usage[r] < INT16_MAX) q->usage[r]++;
			if (q->usage[r] == INT16_MAX) *q->sat = 1;
		}
		return ARB_OK;
	}
#if VQ_CUDA
	if (vq_cuda_usage(q->usage, q->codes, M, q->size, q->sat))
		return q->host->set_error(err, ARB_ERR_CUDA,
					  "[vq:%s] usage kernel failed", q->inst);
	return ARB_OK;
#else
	return ARB_ERR_UNSUPPORTED;
#endif
}

static arb_status vq_forward(void *self, arb_io *io, arb_error *err)
{
	vq *q = self;
	arb_backend *be = io->be;
	const int64_t M = (int64_t)io->B * io->T;
	arb_status st;
	if (io->D != q->D)
		return q->host->set_error(err, ARB_ERR_INVALID,
					  "[vq:%s] io D %d != model D %d", q->inst,
					  io->D, q->D);
	if (M <= 0) return ARB_OK;
	if ((st = bufs_ensure(q, M, err))) return st;
	q->M = M;
	be->copy(be, q->xin, io->x, (size_t)(M * q->D) * sizeof(float));
	be->linear_forward(be, q->P, q->xin, q->z, M, 0);
	/* the query: zn = z_rms * (z - mu) / rms(z - mu), or z itself; mu =
	 * this batch's mean in training (the running mean follows it), the
	 * running mean otherwise */
	const size_t fd = (size_t)(M * q->dim) * sizeof(float);
	const float *zh = q->z;
	if (be->is_device) {
		be->download(be, q->zh, q->z, fd);
		zh = q->zh;
	}
	q->bn = 0;
	if (q->z_rms > 0) {
		if (io->training && q->center > 0) {
			vq_col_mean(zh, M, q->dim, q->mean);
			vq_center_update(q, q->mean);
			mu_set(q, q->mean);
			q->bn = 1;
		} else {
			mu_set(q, NULL);
		}
		if (!be->is_device) {
			vq_norm_rows(q->z, q->mu, M, q->dim, (float)q->z_rms, q->u,
				     q->rstd, q->zn);
		} else {
#if VQ_CUDA
			if (vq_cuda_norm(q->z, q->mu_dev, M, q->dim, (float)q->z_rms,
					 q->u, q->rstd, q->zn))
				return q->host->set_error(err, ARB_ERR_CUDA,
							  "[vq:%s] norm kernel failed",
							  q->inst);
#endif
		}
	}
	if ((st = lookup(q, M, err))) return st;
	be->embed_forward(be, q->C, q->codes, M, q->c, 0);
	be->linear_forward(be, q->Q, q->c, q->o, M, 0);
	be->axpy(be, io->y, q->o, (float)q->out_scale, M * q->D);

	/* commitment loss value (host, fixed order) */
	const float *qh = q->zq, *ch = q->c;
	if (be->is_device) {
		qh = q->zh;
		if (q->zq != q->z) {
			be->download(be, q->zh + M * q->dim, q->zq, fd);
			qh = q->zh + M * q->dim;
		}
		be->download(be, q->ch, q->c, fd);
		ch = q->ch;
	}
	double s2 = 0.0;
	for (int64_t i = 0; i < M * q->dim; i++) {
		double d = (double)qh[i] - (double)ch[i];
		s2 += d * d;
	}
	io->aux_loss = q->beta / (2.0 * (double)M) * s2;

	arb_named nt;
	memset(&nt, 0, sizeof nt);
	nt.struct_size = sizeof nt;
	nt.dtype = ARB_I32;
	nt.ndim = 1;
	nt.shape[0] = M;
	nt.data = q->codes;
	if ((st = q->host->publish(q->host, q->pub, &nt, err))) return st;

	be->download(be, q->codes_h, q->codes, (size_t)M * sizeof(int32_t));
	if (io->training && (st = usage_add(q, M, err))) return st;
	return ARB_OK;
}

static arb_status touched_add(vq *q, const int32_t *rows, int64_t n)
{
	if (q->exact) return ARB_OK; /* no index to refresh */
	if (q->ntouched + n > q->captouched) {
		int64_t nc = q->captouched ? q->captouched : 4096;
		while (nc < q->ntouched + n) nc *= 2;
		int32_t *nt = realloc(q->touched, (size_t)nc * sizeof *nt);
		if (!nt) return ARB_ERR_NOMEM;
		q->touched = nt;
		q->captouched = nc;
	}
	memcpy(q->touched + q->ntouched, rows, (size_t)n * sizeof *rows);
	q->ntouched += n;
	return ARB_OK;
}

static arb_status vq_backward(void *self, arb_io *io, arb_error *err)
{
	vq *q = self;
	arb_backend *be = io->be;
	const int64_t M = (int64_t)io->B * io->T;
	if (M <= 0) return ARB_OK;
	if (M != q->M)
		return q->host->set_error(err, ARB_ERR_INVALID,
					  "[vq:%s] backward of %lld rows after a forward "
					  "of %lld", q->inst, (long long)M,
					  (long long)q->M);
	const int64_t nd = M * q->dim;
	const float bm = (float)(q->beta / (double)M);
	const float cw = (float)(q->code_weight / (double)M);
	/* g = out_scale * dy (into o; dy may alias dx) */
	be->zero(be, q->o, (size_t)(M * q->D) * sizeof(float));
	be->axpy(be, q->o, io->dy, (float)q->out_scale, M * q->D);
	/* d zq = Q^T g + beta/M (zq - c)   (zq = zn, or z without norm) */
	float *dq = q->z_rms > 0 ? q->dzn : q->dz;
	be->linear_backward_x(be, q->Q, q->o, dq, M, 0);
	be->axpy(be, dq, q->zq, bm, nd);
	be->axpy(be, dq, q->c, -bm, nd);
	/* dz = d/du of (z_rms * u * rstd(u)) applied to d zq (mu is constant) */
	if (q->z_rms > 0) {
		be->zero(be, q->dcode, (size_t)nd * sizeof(float));
		be->axpy(be, q->dcode, q->dzn, (float)q->z_rms, nd);
		be->rmsnorm_backward(be, NULL, q->u, q->rstd, q->dcode, q->dz, M,
				     q->dim, 0);
		/* through the batch mean: dz_m = du_m - mean_m' du_m' */
		if (q->bn) {
			const float *dh = q->dz;
			if (be->is_device) {
				be->download(be, q->zh, q->dz, (size_t)nd * sizeof(float));
				dh = q->zh;
			}
			vq_col_mean(dh, M, q->dim, q->mean);
			for (int d = 0; d < q->dim; d++) q->gm[d] = (float)q->mean[d];
			be->upload(be, q->gm_dev, q->gm, (size_t)q->dim * sizeof(float));
			be->add_rows(be, q->dz, q->gm_dev, M, 1, q->dim, -1.0f);
		}
	}
	/* codebook gradient: code_weight/M (c - zq) */
	be->zero(be, q->dcode, (size_t)nd * sizeof(float));
	be->axpy(be, q->dcode, q->c, cw, nd);
	be->axpy(be, q->dcode, q->zq, -cw, nd);
	if (io->vote) {
		be->linear_vote(be, q->Q, q->c, q->o, M, io->vote);
		be->embed_vote(be, q->C, q->codes, M, q->dcode, io->vote);
		be->linear_vote(be, q->P, q->xin, q->dz, M, io->vote);
		if (touched_add(q, q->codes_h, M))
			return q->host->set_error(err, ARB_ERR_NOMEM,
						  "[vq:%s] out of memory", q->inst);
	}
	be->linear_backward_x(be, q->P, q->dz, io->dx, M, 1);
	return ARB_OK;
}

/* ------------------------------------------------------------------------- *
 * after_step: dead-code reseeding, usage decay, index refresh */

static int cmp_i32(const void *a, const void *b)
{
	int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
	return (x > y) - (x < y);
}

/* write row r of the codebook from z: trit = +1 (z > tau), -1 (z < -tau),
 * else 0; E = E0; accumulators 0 */
static void reseed_row(vq *q, int64_t r, const float *z)
{
	arb_tern *C = q->C;
	arb_backend *be = q->be;
	uint8_t row[256];
	int8_t zero[1024];
	memset(zero, 0, sizeof zero);
	for (int64_t b = 0; b < C->row_bytes; b++) {
		int v = 0;
		for (int j = 4; j >= 0; j--) {
			int64_t c = b * 5 + j;
			int t = 0;
			if (c < C->cols)
				t = z[c] > q->tau[c] ? 1 : z[c] < -q->tau[c] ? -1 : 0;
			v = v * 3 + t + 1;
		}
		row[b] = (uint8_t)v;
	}
	be->upload(be, C->packed + r * C->row_bytes, row, (size_t)C->row_bytes);
	be->upload(be, C->E + r * C->groups, q->tau_e, (size_t)C->groups);
	if (C->T_accum)
		be->upload(be, C->T_accum + r * C->cols, zero, (size_t)C->cols);
	if (C->E_accum)
		be->upload(be, C->E_accum + r * C->groups, zero, (size_t)C->groups);
	if (C->corr) {
		int64_t zc[ARB_GROUP_MAX];
		memset(zc, 0, sizeof zc);
		be->upload(be, C->corr + r * C->groups, zc,
			   (size_t)C->groups * sizeof *zc);
	}
}

static arb_status reseed_dead(vq *q, uint64_t step, arb_error *err)
{
	arb_backend *be = q->be;
	int16_t *u = q->usage;
	int16_t *hu = NULL;
	if (be->is_device) {
		hu = malloc((size_t)q->size * sizeof *hu);
		if (!hu)
			return q->host->set_error(err, ARB_ERR_NOMEM,
						  "[vq:%s] out of memory", q->inst);
		be->download(be, hu, q->usage, (size_t)q->size * sizeof *hu);
		u = hu;
	}
	int64_t cap = q->M < VQ_MAX_RESEED ? q->M : VQ_MAX_RESEED;
	int32_t *dead = malloc((size_t)(cap > 0 ? cap : 1) * sizeof *dead);
	if (!dead) {
		free(hu);
		return q->host->set_error(err, ARB_ERR_NOMEM, "[vq:%s] out of memory",
					  q->inst);
	}
	int64_t nd = 0, r = q->cursor;
	for (int64_t k = 0; k < q->size && nd < cap; k++) {
		if (u[r] == 0) dead[nd++] = (int32_t)r;
		r = r + 1 == q->size ? 0 : r + 1;
	}
	q->cursor = r;
	/* update the usage-based perplexity of the closing window first */
	double tot = 0.0, h = 0.0;
	for (int64_t i = 0; i < q->size; i++) tot += u[i];
	if (tot > 0) {
		for (int64_t i = 0; i < q->size; i++)
			if (u[i] > 0) {
				double p = u[i] / tot;
				h -= p * log(p);
			}
		q->last_ppl = exp(h);
	}
	free(hu);
	const float *zh = q->zq; /* the queries the lookup saw */
	if (be->is_device && nd > 0) {
		be->download(be, q->zh, q->zq, (size_t)(q->M * q->dim) * sizeof(float));
		zh = q->zh;
	}
	int64_t stride = nd > 0 ? q->M / nd : 1;
	for (int64_t j = 0; j < nd; j++) {
		int64_t pos = (j * stride + (int64_t)(step % (uint64_t)(stride))) % q->M;
		reseed_row(q, dead[j], zh + pos * q->dim);
	}
	q->reseeded += nd;
	arb_status st = nd ? touched_add(q, dead, nd) : ARB_OK;
	free(dead);
	be->zero(be, q->usage, (size_t)q->size * sizeof *q->usage);
	if (st)
		return q->host->set_error(err, ARB_ERR_NOMEM, "[vq:%s] out of memory",
					  q->inst);
	return ARB_OK;
}

static arb_status vq_after_step(void *self, uint64_t step, arb_error *err)
{
	vq *q = self;
	arb_backend *be = q->be;
	arb_status st;
	int32_t sat = 0;
	be->download(be, &sat, q->sat, sizeof sat);
	if (sat) {
		if (!be->is_device) {
			for (int64_t i = 0; i < q->size; i++) q->usage[i] >>= 1;
		} else {
#if VQ_CUDA
			if (vq_cuda_halve(q->usage, q->size))
				return q->host->set_error(err, ARB_ERR_CUDA,
							  "[vq:%s] usage kernel failed",
							  q->inst);
#endif
		}
		be->zero(be, q->sat, sizeof *q->sat);
	}
	if (q->dead_after > 0 && q->M > 0 && ++q->win_steps >= q->dead_after) {
		q->win_steps = 0;
		if ((st = reseed_dead(q, step, err))) return st;
	}
	if (!q->exact && q->ntouched) {
		qsort(q->touched, (size_t)q->ntouched, sizeof *q->touched, cmp_i32);
		int64_t u = 0;
		for (int64_t i = 0; i < q->ntouched; i++)
			if (q->touched[i] >= 0 && q->touched[i] < q->size &&
			    (u == 0 || q->touched[i] != q->touched[u - 1]))
				q->touched[u++] = q->touched[i];
		q->ntouched = 0;
		if ((st = idx_refresh(q, q->touched, u, err))) return st;
	}
	/* rows held at the flip threshold by a flip cap may move without a
	 * vote: verify every row's pattern now and then */
	if (!q->exact && step > 0 && step % VQ_SWEEP_EVERY == 0) {
		int32_t ids[4096];
		for (int64_t r0 = 0; r0 < q->size; r0 += 4096) {
			int64_t n = q->size - r0 < 4096 ? q->size - r0 : 4096;
			for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)(r0 + i);
			if ((st = idx_refresh(q, ids, n, err))) return st;
		}
	}
	return ARB_OK;
}

/* ------------------------------------------------------------------------- *
 * state, metrics */

static arb_status vq_save(void *self, const arb_state_io *io, arb_error *err)
{
	vq *q = self;
	arb_backend *be = q->be;
	int16_t *u = malloc((size_t)q->size * sizeof *u);
	if (!u)
		return q->host->set_error(err, ARB_ERR_NOMEM, "[vq:%s] out of memory",
					  q->inst);
	be->download(be, u, q->usage, (size_t)q->size * sizeof *u);
	int32_t sat = 0;
	be->download(be, &sat, q->sat, sizeof sat);
	int64_t meta[6] = { 2, q->size, q->win_steps, q->cursor, q->reseeded, sat };
	int32_t *cen = malloc((size_t)(q->dim + 1) * sizeof *cen);
	arb_status st = cen ? ARB_OK : ARB_ERR_NOMEM;
	if (!st) {
		memcpy(cen, q->mu_q, (size_t)q->dim * sizeof *cen);
		cen[q->dim] = q->mu_init;
		st = io->write(io->ctx, "usage", u, (size_t)q->size * sizeof *u);
	}
	if (!st) st = io->write(io->ctx, "meta", meta, sizeof meta);
	if (!st) st = io->write(io->ctx, "tau_e", q->tau_e, (size_t)q->C->groups);
	if (!st) st = io->write(io->ctx, "center", cen,
				(size_t)(q->dim + 1) * sizeof *cen);
	free(cen);
	free(u);
	if (st)
		return q->host->set_error(err, st, "[vq:%s] saving state failed",
					  q->inst);
	return ARB_OK;
}

static arb_status vq_load(void *self, const arb_state_io *io, arb_error *err)
{
	vq *q = self;
	arb_backend *be = q->be;
	int64_t meta[6];
	arb_status st = io->read(io->ctx, "meta", meta, sizeof meta);
	if (st)
		return q->host->set_error(err, st, "[vq:%s] checkpoint has no vq state "
					  "(meta)", q->inst);
	if ((meta[0] != 1 && meta[0] != 2) || meta[1] != q->size)
		return q->host->set_error(err, ARB_ERR_FORMAT,
					  "[vq:%s] checkpoint state version %lld size "
					  "%lld, this codebook has %lld rows", q->inst,
					  (long long)meta[0], (long long)meta[1],
					  (long long)q->size);
	int16_t *u = malloc((size_t)q->size * sizeof *u);
	if (!u)
		return q->host->set_error(err, ARB_ERR_NOMEM, "[vq:%s] out of memory",
					  q->inst);
	int32_t *cen = calloc((size_t)q->dim + 1, sizeof *cen);
	st = cen ? io->read(io->ctx, "usage", u, (size_t)q->size * sizeof *u)
		 : ARB_ERR_NOMEM;
	if (!st) st = io->read(io->ctx, "tau_e", q->tau_e, (size_t)q->C->groups);
	/* version 1 (before centering): mu starts again from the next batch */
	if (!st && meta[0] >= 2)
		st = io->read(io->ctx, "center", cen,
			      (size_t)(q->dim + 1) * sizeof *cen);
	if (!st) {
		memcpy(q->mu_q, cen, (size_t)q->dim * sizeof *cen);
		q->mu_init = cen[q->dim] != 0;
	}
	free(cen);
	if (st) {
		free(u);
		return q->host->set_error(err, st, "[vq:%s] checkpoint vq state "
					  "missing or truncated", q->inst);
	}
	be->upload(be, q->usage, u, (size_t)q->size * sizeof *u);
	free(u);
	int32_t sat = (int32_t)meta[5];
	be->upload(be, q->sat, &sat, sizeof sat);
	q->win_steps = meta[2];
	q->cursor = meta[3];
	q->reseeded = meta[4];
	q->ntouched = 0;
	tau_from_e(q);
	/* the core loaded the codebook rows before this call */
	return idx_build(q, err);
}

static int vq_metrics(void *self, char *buf, size_t cap)
{
	vq *q = self;
	arb_backend *be = q->be;
	const int16_t *u = q->usage;
	int16_t *hu = NULL;
	if (be->is_device) {
		hu = malloc((size_t)q->size * sizeof *hu);
		if (!hu) return 0;
		be->download(be, hu, q->usage, (size_t)q->size * sizeof *hu);
		u = hu;
	}
	double tot = 0.0, h = 0.0;
	int64_t used = 0;
	for (int64_t i = 0; i < q->size; i++) {
		tot += u[i];
		used += u[i] > 0;
	}
	double ppl = q->last_ppl;
	if (tot > 0) {
		for (int64_t i = 0; i < q->size; i++)
			if (u[i] > 0) {
				double p = u[i] / tot;
				h -= p * log(p);
			}
		ppl = exp(h);
	}
	free(hu);
	int n = snprintf(buf, cap, "vq.%s.ppl=%.2f vq.%s.used=%lld vq.%s.reseeded=%lld "
			 "vq.%s.miss=%lld vq.%s.scan=%.0f",
			 q->inst, ppl, q->inst, (long long)used, q->inst,
			 (long long)q->reseeded, q->inst, (long long)q->lk_miss,
			 q->inst, q->lk_q ? (double)q->lk_scan / (double)q->lk_q : 0.0);
	if (n < 0) return 0;
	return (size_t)n < cap ? n : (int)(cap ? cap - 1 : 0);
}

static const arb_plugin vq_plugin = {
	ARB_ABI_VERSION,
	sizeof(arb_plugin),
	ARB_BUILD_SIGNATURE,
	"vq",
	"0.1.0",
	"TernaryVQCodebook: ternary codebook bottleneck on the residual stream "
	"(exact or sign-hash candidate lookup, int16 usage counts)",
	"MIT",
	ARB_SLOT_RESIDUAL,
	vq_schema,
	vq_create,
	vq_destroy,
	vq_forward,
	vq_backward,
	vq_save,
	vq_load,
	vq_after_step,
	vq_metrics,
};

#ifndef VQ_TEST_INCLUDE
ARB_PLUGIN_DEFINE(vq_plugin)
#endif
