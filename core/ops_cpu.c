/*
 * core/ops_cpu.c -- the CPU backend: the reference implementation of every op
 * of arb/ops.h, following the exact semantics written in arb/tensor.h.
 *
 * Determinism: every output element is computed by exactly one thread, in a
 * fixed order that does not depend on the thread count (OpenMP static splits
 * over rows/tiles, no float reductions across threads, integer reductions
 * only). Results are therefore bit-identical for any number of threads.
 *
 * Ternary linear ops decode weights into a small float panel (8 output
 * columns x L, scale applied) and run a register-blocked multiply written
 * with GCC vector extensions (4 lanes; plain mul + add, no reassociation: the
 * sum over the reduction index runs in ascending order for every element).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#include <pthread.h>
#include "arb/ops.h"

typedef float v4 __attribute__((vector_size(16)));

/* ------------------------------------------------------------------------- *
 * decode tables: trit j of byte b, and the number of zero trits in a byte */
static int8_t dec5[256][5];
static pthread_once_t dec_once = PTHREAD_ONCE_INIT;

static void dec_init(void)
{
	for (int b = 0; b < 256; b++) {
		int v = b;
		for (int j = 0; j < 5; j++) {
			dec5[b][j] = (int8_t)(v % 3 - 1);
			v /= 3;
		}
	}
}

static int sgnf(float x) { return (x > 0.0f) - (x < 0.0f); }
static int clampi(int x, int lo, int hi) { return x < lo ? lo : x > hi ? hi : x; }

/* ------------------------------------------------------------------------- *
 * memory */
static void *cpu_alloc(arb_backend *be, size_t bytes)
{
	return calloc(1, bytes ? bytes : 1);
}
static void cpu_free(arb_backend *be, void *p) { free(p); }
static void cpu_zero(arb_backend *be, void *p, size_t bytes) { memset(p, 0, bytes); }
static void cpu_copy(arb_backend *be, void *dst, const void *src, size_t bytes)
{
	if (dst != src) memmove(dst, src, bytes);
}
static void cpu_upload(arb_backend *be, void *dst, const void *src, size_t bytes)
{
	cpu_copy(be, dst, src, bytes);
}
static void cpu_download(arb_backend *be, void *dst, const void *src, size_t bytes)
{
	cpu_copy(be, dst, src, bytes);
}
static void cpu_sync(arb_backend *be) { }

static arb_status cpu_tern_alloc(arb_backend *be, arb_tern *t, arb_error *err)
{
	uint32_t id = t->id;
	float alpha = t->bigint_alpha;
	arb_status st = arb_tern_alloc(t, t->name, t->rows, t->cols,
				       t->group_size, t->flags, t->erule, err);
	t->id = id;
	t->bigint_alpha = alpha;
	return st;
}

static void cpu_tern_free(arb_backend *be, arb_tern *t) { arb_tern_free(t); }

/* packed-first init (tensor.h): every trit, exponent and accumulator is a
 * pure function of (seed, id, index); bytes are built directly, no float or
 * weight-shaped temporary exists. */
static void cpu_tern_init(arb_backend *be, arb_tern *t, const arb_tern_init *ini)
{
	const int64_t rows = t->rows, cols = t->cols, rb = t->row_bytes;
	const uint64_t seed = ini->seed;
	const uint64_t sT = arb_rng_stream(t->id, 0, ARB_RNG_INIT_TRIT);
	const uint64_t sS = arb_rng_stream(t->id, 0, ARB_RNG_INIT_SIGN);
	const uint64_t sA = arb_rng_stream(t->id, 0, ARB_RNG_INIT_ACCUM);
	/* u < zero_frac * 2^32  <=>  u < ceil(zero_frac * 2^32) for integer u */
	double zf = ini->zero_frac;
	uint64_t zthr = zf <= 0.0 ? 0 : zf >= 1.0 ? (1ull << 32)
			: (uint64_t)ceil(zf * 4294967296.0);
	const int ct = (ini->const_trit > 0) - (ini->const_trit < 0);
	int ai = clampi(ini->accum_init, 0, 127);
	int8_t e0 = (int8_t)clampi(ini->e_init, -128, 127);
	const int64_t ng = rows * (int64_t)t->groups;

	#pragma omp parallel for schedule(static) if (rows * cols > 65536)
	for (int64_t r = 0; r < rows; r++) {
		uint8_t *row = t->packed + r * rb;
		for (int64_t b = 0; b < rb; b++) {
			int v = 0;
			for (int j = 4; j >= 0; j--) {
				int64_t c = b * 5 + j;
				int tr = 0;
				if (c < cols) {
					uint64_t i = (uint64_t)(r * cols + c);
					if (ct) {
						tr = ct;
					} else if (arb_rng_u32(seed, sT, i) >= zthr) {
						tr = (arb_rng_u32(seed, sS, i) & 1u) ? 1 : -1;
					}
				}
				v = v * 3 + tr + 1;
			}
			row[b] = (uint8_t)v;
		}
		if (t->T_accum) {
			int8_t *A = t->T_accum + r * cols;
			if (ai == 0) {
				memset(A, 0, (size_t)cols);
			} else {
				uint32_t m = (uint32_t)(2 * ai + 1);
				for (int64_t c = 0; c < cols; c++)
					A[c] = (int8_t)((int)(arb_rng_u32(seed, sA,
						(uint64_t)(r * cols + c)) % m) - ai);
			}
		}
	}
	memset(t->E, e0, (size_t)ng);
	if (t->E_accum) memset(t->E_accum, 0, (size_t)ng);
	if (t->corr) memset(t->corr, 0, (size_t)ng * sizeof *t->corr);
	if (t->score) memset(t->score, 0, (size_t)ng * sizeof *t->score);
	t->steps = 0;
	t->rms_log2 = ARB_RMS_UNKNOWN;
	t->sumsq = 0.0;
}

/* ------------------------------------------------------------------------- *
 * GEMM core: C[m][c0 + j] (+)= sum_{i<L} A[m][i] * P[i][j], j < nc <= 8.
 * A row-major with leading dimension lda; P is a panel [L][8] (zero padded);
 * the sum runs over i ascending for every element. */
#define PW 8   /* panel width (columns of C per panel) */
#define MB 64  /* rows of A per task */

static void gemm_panel(const float *A, int64_t lda, int64_t m0, int64_t m1,
		       int64_t L, const float *P, float *C, int64_t ldc,
		       int64_t c0, int nc, int accumulate)
{
	int64_t m = m0;
	for (; m + 4 <= m1; m += 4) {
		v4 a00 = { 0 }, a01 = { 0 }, a10 = { 0 }, a11 = { 0 };
		v4 a20 = { 0 }, a21 = { 0 }, a30 = { 0 }, a31 = { 0 };
		const float *x0 = A + m * lda, *x1 = x0 + lda, *x2 = x1 + lda,
			    *x3 = x2 + lda;
		for (int64_t i = 0; i < L; i++) {
			v4 p0, p1;
			memcpy(&p0, P + i * PW, 16);
			memcpy(&p1, P + i * PW + 4, 16);
			v4 b0 = { x0[i], x0[i], x0[i], x0[i] };
			v4 b1 = { x1[i], x1[i], x1[i], x1[i] };
			v4 b2 = { x2[i], x2[i], x2[i], x2[i] };
			v4 b3 = { x3[i], x3[i], x3[i], x3[i] };
			a00 += b0 * p0; a01 += b0 * p1;
			a10 += b1 * p0; a11 += b1 * p1;
			a20 += b2 * p0; a21 += b2 * p1;
			a30 += b3 * p0; a31 += b3 * p1;
		}
		float out[4][PW];
		memcpy(out[0], &a00, 16); memcpy(out[0] + 4, &a01, 16);
		memcpy(out[1], &a10, 16); memcpy(out[1] + 4, &a11, 16);
		memcpy(out[2], &a20, 16); memcpy(out[2] + 4, &a21, 16);
		memcpy(out[3], &a30, 16); memcpy(out[3] + 4, &a31, 16);
		for (int q = 0; q < 4; q++) {
			float *y = C + (m + q) * ldc + c0;
			for (int j = 0; j < nc; j++)
				y[j] = accumulate ? y[j] + out[q][j] : out[q][j];
		}
	}
	for (; m < m1; m++) {
		v4 a0 = { 0 }, a1 = { 0 };
		const float *x0 = A + m * lda;
		for (int64_t i = 0; i < L; i++) {
			v4 p0, p1;
			memcpy(&p0, P + i * PW, 16);
			memcpy(&p1, P + i * PW + 4, 16);
			v4 b0 = { x0[i], x0[i], x0[i], x0[i] };
			a0 += b0 * p0; a1 += b0 * p1;
		}
		float out[PW];
		memcpy(out, &a0, 16); memcpy(out + 4, &a1, 16);
		float *y = C + m * ldc + c0;
		for (int j = 0; j < nc; j++)
			y[j] = accumulate ? y[j] + out[j] : out[j];
	}
}

/* scales of one row: sc[g] for g < groups */
static void row_scales(const arb_tern *w, int64_t r, float *sc)
{
	for (int32_t g = 0; g < w->groups; g++) sc[g] = arb_tern_scale(w, r, g);
}

/* panel for y = x W^T: P[k][j] = w[n0+j][k] (j < nc, zero beyond) */
static void panel_wT(const arb_tern *w, int64_t n0, int nc, float *P, float *sc)
{
	const int64_t K = w->cols;
	memset(P, 0, (size_t)K * PW * sizeof *P);
	for (int j = 0; j < nc; j++) {
		int64_t n = n0 + j;
		row_scales(w, n, sc);
		const uint8_t *row = w->packed + n * w->row_bytes;
		for (int64_t k = 0; k < K; k++)
			P[k * PW + j] = (float)dec5[row[k / 5]][k % 5] *
					sc[k / w->group_size];
	}
}

/* panel for dx = dy W: P[n][j] = w[n][k0+j] (j < nc, zero beyond) */
static void panel_w(const arb_tern *w, int64_t k0, int nc, float *P)
{
	const int64_t N = w->rows;
	for (int64_t n = 0; n < N; n++) {
		const uint8_t *row = w->packed + n * w->row_bytes;
		for (int j = 0; j < PW; j++) {
			int64_t k = k0 + j;
			P[n * PW + j] = j < nc ? (float)dec5[row[k / 5]][k % 5] *
				arb_tern_scale(w, n, (int32_t)(k / w->group_size)) : 0.0f;
		}
	}
}

/* C[M][NC] (+)= A[M][L] * B, B given by a panel builder over NC columns */
typedef void (*panel_fn)(const void *ctx, int64_t c0, int nc, float *P, float *scratch);

static void gemm(const float *A, int64_t M, int64_t L, int64_t NC, float *C,
		 int accumulate, panel_fn mk, const void *ctx, int64_t scratch_n)
{
	const int64_t np = (NC + PW - 1) / PW, nm = (M + MB - 1) / MB;
	const int64_t tasks = np * nm;
	#pragma omp parallel if (M * L * NC > 32768)
	{
		float *P = aligned_alloc(64, (size_t)((L * PW * 4 + 63) / 64 * 64));
		float *scr = malloc((size_t)(scratch_n > 0 ? scratch_n : 1) * sizeof(float));
		int64_t last = -1;
		#pragma omp for schedule(static)
		for (int64_t q = 0; q < tasks; q++) {
			/* m-block outer, panel inner: a thread's contiguous chunk
			 * reuses its block of A */
			int64_t mb = q / np, p = q % np;
			int nc = (int)(NC - p * PW < PW ? NC - p * PW : PW);
			if (p != last) { mk(ctx, p * PW, nc, P, scr); last = p; }
			int64_t m0 = mb * MB, m1 = m0 + MB < M ? m0 + MB : M;
			gemm_panel(A, L, m0, m1, L, P, C, NC, p * PW, nc, accumulate);
		}
		free(P);
		free(scr);
	}
}

static void mk_wT(const void *ctx, int64_t c0, int nc, float *P, float *scr)
{
	panel_wT(ctx, c0, nc, P, scr);
}
static void mk_w(const void *ctx, int64_t c0, int nc, float *P, float *scr)
{
	panel_w(ctx, c0, nc, P);
}

/* y[M,N] = x[M,K] W^T */
static void cpu_linear_forward(arb_backend *be, const arb_tern *w,
			       const float *x, float *y, int64_t M, int accumulate)
{
	if (M <= 0) return;
	gemm(x, M, w->cols, w->rows, y, accumulate, mk_wT, w, w->groups);
}

/* dx[M,K] = dy[M,N] W */
static void cpu_linear_backward_x(arb_backend *be, const arb_tern *w,
				  const float *dy, float *dx, int64_t M,
				  int accumulate)
{
	if (M <= 0) return;
	gemm(dy, M, w->rows, w->cols, dx, accumulate, mk_w, w, 0);
}

/* ------------------------------------------------------------------------- *
 * votes (tensor.h VOTES) */

/* effective rms exponent for an sr vote: the tensor's value, or this call's */
static int vote_rms(const arb_tern *w, double sumsq_now)
{
	if (w->rms_log2 != ARB_RMS_UNKNOWN) return w->rms_log2;
	int rl = arb_rms_log2(sumsq_now, w->rows * w->cols);
	return rl == ARB_RMS_UNKNOWN ? 0 : rl; /* all-zero dW: no vote anyway */
}

/* stream the votes of one row's gradient g[cols] into T_accum (and score) */
static void vote_row(arb_tern *w, int64_t r, const float *g, const arb_vote *v,
		     int rl, uint64_t stream)
{
	const int64_t cols = w->cols;
	int8_t *A = w->T_accum + r * cols;
	int32_t *score = w->score ? w->score + r * w->groups : NULL;
	const uint8_t *row = w->packed + r * w->row_bytes;
	const float s = arb_exp2i(-rl);
	const float R = (float)v->sr_R;
	for (int64_t c = 0; c < cols; c++) {
		float d = g[c];
		int sg = sgnf(d), inc;
		if (v->kind == ARB_VOTE_SIGN) {
			inc = v->step * sg;
		} else {
			/* v = R * dW * 2^-rms_log2; inc = clamp(floor(v + u), -8, 8) */
			float val = R * d * s;
			if (val != val) {
				inc = 0; /* non-finite gradient casts no vote */
			} else {
				if (val > 16.0f) val = 16.0f;
				if (val < -16.0f) val = -16.0f;
				float u = arb_rng_unit(v->seed, stream,
						       (uint64_t)(r * cols + c));
				inc = clampi((int)floorf(val + u), -8, 8);
			}
		}
		A[c] = (int8_t)clampi((int)A[c] - inc, -127, 127);
		if (score && sg)
			score[c / w->group_size] += sg * dec5[row[c / 5]][c % 5];
	}
}

/* panel for dW = dy^T x: P[m][j] = x[m][k0 + j] */
typedef struct { const float *x; int64_t M, K; } xpanel;
static void mk_x(const void *ctx, int64_t c0, int nc, float *P, float *scr)
{
	const xpanel *cx = ctx;
	for (int64_t m = 0; m < cx->M; m++)
		for (int j = 0; j < PW; j++)
			P[m * PW + j] = j < nc ? cx->x[m * cx->K + c0 + j] : 0.0f;
}

/* dW[N][K] = dy^T x, built densely (CPU only), then one vote per weight */
static void cpu_linear_vote(arb_backend *be, arb_tern *w, const float *x,
			    const float *dy, int64_t M, const arb_vote *v)
{
	if (!w->T_accum || M <= 0) return;
	const int64_t N = w->rows, K = w->cols;
	float *dyT = malloc((size_t)(N * M) * sizeof *dyT);
	float *dW = malloc((size_t)(N * K) * sizeof *dW);
	double *rs = malloc((size_t)N * sizeof *rs);
	if (!dyT || !dW || !rs) {
		fprintf(stderr, "arbcore: linear_vote '%s': out of memory, votes dropped\n",
			w->name);
		free(dyT); free(dW); free(rs);
		return;
	}
	#pragma omp parallel for schedule(static) if (N * M > 65536)
	for (int64_t n = 0; n < N; n++)
		for (int64_t m = 0; m < M; m++) dyT[n * M + m] = dy[m * N + n];
	/* dW = dyT[N][M] * x[M][K]: panel P[m][j] = x[m][k0 + j] */
	xpanel cx = { x, M, K };
	gemm(dyT, N, M, K, dW, 0, mk_x, &cx, 0);
	free(dyT);

	int sr = v->kind == ARB_VOTE_SR;
	double tot = 0.0;
	if (sr) {
		#pragma omp parallel for schedule(static) if (N * K > 65536)
		for (int64_t n = 0; n < N; n++) {
			double s = 0.0;
			for (int64_t k = 0; k < K; k++)
				s += (double)dW[n * K + k] * dW[n * K + k];
			rs[n] = s;
		}
		for (int64_t n = 0; n < N; n++) tot += rs[n];
	}
	int rl = sr ? vote_rms(w, tot) : 0;
	uint64_t stream = arb_rng_stream(w->id, v->t, ARB_RNG_VOTE_SR);
	#pragma omp parallel for schedule(static) if (N * K > 65536)
	for (int64_t n = 0; n < N; n++)
		vote_row(w, n, dW + n * K, v, rl, stream);
	if (sr) w->sumsq += tot;
	free(dW);
	free(rs);
}

/* ------------------------------------------------------------------------- *
 * ternary table */
static void cpu_embed_forward(arb_backend *be, const arb_tern *w,
			      const int32_t *idx, int64_t n, float *out,
			      int accumulate)
{
	const int64_t D = w->cols;
	#pragma omp parallel if (n * D > 65536)
	{
		float *row = malloc((size_t)D * sizeof *row);
		#pragma omp for schedule(static)
		for (int64_t i = 0; i < n; i++) {
			float *o = out + i * D;
			if (idx[i] < 0 || idx[i] >= w->rows) {
				/* out-of-range index: a NaN row, caught by
				 * all_finite, never a silent wrong row */
				for (int64_t d = 0; d < D; d++) o[d] = NAN;
				continue;
			}
			arb_tern_row_weights(w, idx[i], row);
			for (int64_t d = 0; d < D; d++)
				o[d] = accumulate ? o[d] + row[d] : row[d];
		}
		free(row);
	}
}

typedef struct { int32_t idx; int32_t pad; int64_t pos; } idxpos;
static int cmp_idxpos(const void *a, const void *b)
{
	const idxpos *x = a, *y = b;
	if (x->idx != y->idx) return x->idx < y->idx ? -1 : 1;
	return (x->pos > y->pos) - (x->pos < y->pos);
}

/* duplicates summed first (ascending position order), one vote per touched
 * (row, col); untouched rows are not read or written */
static void cpu_embed_vote(arb_backend *be, arb_tern *w, const int32_t *idx,
			   int64_t n, const float *dout, const arb_vote *v)
{
	if (!w->T_accum || n <= 0) return;
	const int64_t D = w->cols;
	idxpos *ip = malloc((size_t)n * sizeof *ip);
	int64_t *start = malloc((size_t)(n + 1) * sizeof *start);
	if (!ip || !start) {
		fprintf(stderr, "arbcore: embed_vote '%s': out of memory, votes dropped\n",
			w->name);
		free(ip); free(start);
		return;
	}
	int64_t m = 0;
	for (int64_t i = 0; i < n; i++) {
		if (idx[i] < 0 || idx[i] >= w->rows) continue; /* no row to vote on */
		ip[m].idx = idx[i];
		ip[m].pad = 0;
		ip[m].pos = i;
		m++;
	}
	qsort(ip, (size_t)m, sizeof *ip, cmp_idxpos);
	int64_t U = 0;
	for (int64_t i = 0; i < m; i++)
		if (i == 0 || ip[i].idx != ip[i - 1].idx) start[U++] = i;
	start[U] = m;
	float *dW = malloc((size_t)(U * D + 1) * sizeof *dW);
	double *rs = malloc((size_t)(U + 1) * sizeof *rs);
	if (!dW || !rs) {
		fprintf(stderr, "arbcore: embed_vote '%s': out of memory, votes dropped\n",
			w->name);
		free(ip); free(start); free(dW); free(rs);
		return;
	}
	#pragma omp parallel for schedule(static) if (m * D > 65536)
	for (int64_t u = 0; u < U; u++) {
		float *g = dW + u * D;
		memset(g, 0, (size_t)D * sizeof *g);
		for (int64_t i = start[u]; i < start[u + 1]; i++) {
			const float *src = dout + ip[i].pos * D;
			for (int64_t d = 0; d < D; d++) g[d] += src[d];
		}
		double s = 0.0;
		for (int64_t d = 0; d < D; d++) s += (double)g[d] * g[d];
		rs[u] = s;
	}
	int sr = v->kind == ARB_VOTE_SR;
	double tot = 0.0;
	for (int64_t u = 0; u < U; u++) tot += rs[u];
	int rl = sr ? vote_rms(w, tot) : 0;
	uint64_t stream = arb_rng_stream(w->id, v->t, ARB_RNG_VOTE_SR);
	#pragma omp parallel for schedule(static) if (U * D > 65536)
	for (int64_t u = 0; u < U; u++)
		vote_row(w, ip[start[u]].idx, dW + u * D, v, rl, stream);
	if (sr) w->sumsq += tot;
	free(ip); free(start); free(dW); free(rs);
}

/* ------------------------------------------------------------------------- *
 * scheduler step (tensor.h STEP) */
static void cpu_tern_step(arb_backend *be, arb_tern *w, const arb_step *p,
			  arb_step_stats *st);
static void cpu_tern_step_many(arb_backend *be, arb_tern *const *w, const arb_step *p,
			       int n, arb_step_stats *st)
{
	for (int i = 0; i < n; i++) cpu_tern_step(be, w[i], &p[i], st ? &st[i] : NULL);
}

static void cpu_tern_step(arb_backend *be, arb_tern *w, const arb_step *p,
			  arb_step_stats *st)
{
	arb_step_stats s = { 0 };
	const int64_t rows = w->rows, cols = w->cols, rb = w->row_bytes;
	const int thr = clampi(p->threshold, 1, 127);
	const int gs = w->group_size, G = w->groups;
	if (!w->T_accum) {
		/* frozen: nothing moves; report its zeros */
		int64_t z = 0;
		for (int64_t r = 0; r < rows; r++)
			for (int64_t c = 0; c < cols; c++)
				z += arb_tern_get(w->packed, rb, r, c) == 0;
		s.zeros = z;
		if (st) *st = s;
		return;
	}

	/* pass 1: candidates (only needed for the cap) */
	int64_t cand = 0;
	int capping = 0;
	uint32_t p32 = 0;
	if (p->cap_ppm > 0) {
		#pragma omp parallel for schedule(static) reduction(+:cand) if (rows * cols > 65536)
		for (int64_t r = 0; r < rows; r++) {
			const int8_t *A = w->T_accum + r * cols;
			const uint8_t *row = w->packed + r * rb;
			for (int64_t c = 0; c < cols; c++) {
				int a = A[c];
				if (a >= thr || a <= -thr) {
					int dir = a > 0 ? 1 : -1;
					if (dec5[row[c / 5]][c % 5] != dir) cand++;
				}
			}
		}
		int64_t cap = (int64_t)((unsigned __int128)(rows * cols) *
					(uint64_t)p->cap_ppm / 1000000u);
		if (cand > cap) {
			capping = 1;
			p32 = (uint32_t)(((unsigned __int128)cap << 32) / (uint64_t)cand);
		}
	}
	const uint64_t cstream = arb_rng_stream(w->id, p->t, ARB_RNG_FLIP_CAP);
	int64_t flips = 0, sat = 0, capped = 0, ech = 0, zeros = 0;

	#pragma omp parallel reduction(+:flips, sat, capped, ech, zeros) if (rows * cols > 65536)
	{
		int32_t *gfl = calloc((size_t)G, sizeof *gfl);
		#pragma omp for schedule(static)
		for (int64_t r = 0; r < rows; r++) {
			int8_t *A = w->T_accum + r * cols;
			uint8_t *row = w->packed + r * rb;
			if (gfl) memset(gfl, 0, (size_t)G * sizeof *gfl);
			for (int64_t b = 0; b < rb; b++) {
				int8_t tr[5];
				int changed = 0;
				memcpy(tr, dec5[row[b]], 5);
				for (int j = 0; j < 5; j++) {
					int64_t c = b * 5 + j;
					if (c >= cols) break;
					int a = A[c];
					if (a < thr && a > -thr) continue;
					int dir = a > 0 ? 1 : -1;
					if (tr[j] == dir) {
						A[c] = (int8_t)(dir * thr);
						sat++;
						continue;
					}
					if (capping && arb_rng_u32(p->seed, cstream,
						(uint64_t)(r * cols + c)) >= p32) {
						A[c] = (int8_t)(dir * thr);
						capped++;
						continue;
					}
					tr[j] = (int8_t)(tr[j] + dir);
					changed = 1;
					A[c] = (int8_t)(p->reset_mode == ARB_RESET_REMAINDER
							? a - dir * thr : 0);
					flips++;
					if (gfl) gfl[c / gs]++;
				}
				if (changed) {
					int v = 0;
					for (int j = 4; j >= 0; j--) v = v * 3 + tr[j] + 1;
					row[b] = (uint8_t)v;
				}
				for (int j = 0; j < 5 && b * 5 + j < cols; j++)
					zeros += tr[j] == 0;
			}
			if (w->score) {
				int32_t *sc = w->score + r * G;
				for (int g = 0; g < G; g++) {
					int64_t sv = sc[g];
					if (p->order == ARB_ORDER_T_FIRST && gfl)
						sv -= gfl[g];
					int sg = (sv > 0) - (sv < 0);
					int64_t k = r * G + g;
					if (w->erule == ARB_ERULE_RESIDUAL && w->E_accum) {
						int ea = clampi(w->E_accum[k] - sg, -127, 127);
						int e = w->E[k], e_new = e;
						if (ea >= p->e_threshold) {
							e_new = e + 1;
							ea -= p->e_threshold;
						} else if (ea <= -p->e_threshold) {
							e_new = e - 1;
							ea += p->e_threshold;
						}
						e_new = clampi(e_new, p->e_min, p->e_max);
						if (e_new != e) ech++;
						w->E[k] = (int8_t)e_new;
						w->E_accum[k] = (int8_t)ea;
					} else if (w->erule == ARB_ERULE_BIGINT && w->corr) {
						w->corr[k] -= sv;
					}
					sc[g] = 0;
				}
			}
		}
		free(gfl);
	}
	s.flips = flips;
	s.saturated = sat;
	s.capped = capped;
	s.candidates = flips + capped;
	s.e_changes = ech;
	s.zeros = zeros;
	w->steps += 1;
	if (w->sumsq > 0.0) w->rms_log2 = (int8_t)arb_rms_log2(w->sumsq, rows * cols);
	w->sumsq = 0.0;
	if (st) *st = s;
}

/* ------------------------------------------------------------------------- *
 * TernaryRMSNorm: y = x * rstd * g, rstd = 1/sqrt(mean(x^2) + eps) */
#define RMS_EPS 1e-5

static void gain_vec(const arb_tern *gain, int64_t D, float *g)
{
	if (!gain) {
		for (int64_t d = 0; d < D; d++) g[d] = 1.0f;
		return;
	}
	arb_tern_row_weights(gain, 0, g);
}

static void cpu_rmsnorm_forward(arb_backend *be, const arb_tern *gain,
				const float *x, float *y, float *rstd, int64_t M,
				int64_t D)
{
	float *g = malloc((size_t)D * sizeof *g);
	gain_vec(gain, D, g);
	#pragma omp parallel for schedule(static) if (M * D > 65536)
	for (int64_t m = 0; m < M; m++) {
		const float *xr = x + m * D;
		double ss = 0.0;
		for (int64_t d = 0; d < D; d++) ss += (double)xr[d] * xr[d];
		float r = (float)(1.0 / sqrt(ss / (double)D + RMS_EPS));
		rstd[m] = r;
		for (int64_t d = 0; d < D; d++) y[m * D + d] = xr[d] * r * g[d];
	}
	free(g);
}

/* dx_i = r g_i dy_i - x_i r^3 / D * sum_j dy_j g_j x_j (gain is frozen) */
static void cpu_rmsnorm_backward(arb_backend *be, const arb_tern *gain,
				 const float *x, const float *rstd,
				 const float *dy, float *dx, int64_t M, int64_t D,
				 int accumulate)
{
	float *g = malloc((size_t)D * sizeof *g);
	gain_vec(gain, D, g);
	#pragma omp parallel for schedule(static) if (M * D > 65536)
	for (int64_t m = 0; m < M; m++) {
		const float *xr = x + m * D, *dr = dy + m * D;
		double dot = 0.0;
		for (int64_t d = 0; d < D; d++) dot += (double)dr[d] * g[d] * xr[d];
		float r = rstd[m];
		float c = (float)((double)r * r * r * dot / (double)D);
		for (int64_t d = 0; d < D; d++) {
			float v = r * g[d] * dr[d] - xr[d] * c;
			dx[m * D + d] = accumulate ? dx[m * D + d] + v : v;
		}
	}
	free(g);
}

/* ------------------------------------------------------------------------- *
 * causal attention, q/k/v/out [B,T,H,hd], lse [B,H,T] */
#define AT(p, b, t, h) ((p) + (((int64_t)(b) * T + (t)) * H + (h)) * hd)

static void cpu_attention_forward(arb_backend *be, const float *q,
				  const float *k, const float *v, float *out,
				  float *lse, int B, int T, int H, int hd)
{
	const float scale = 1.0f / sqrtf((float)hd);
	const int64_t tasks = (int64_t)B * H * T;
	#pragma omp parallel if (tasks * T * hd > 65536)
	{
		float *s = malloc((size_t)T * sizeof *s);
		#pragma omp for schedule(static)
		for (int64_t q_i = 0; q_i < tasks; q_i++) {
			int t = (int)(q_i % T), h = (int)((q_i / T) % H),
			    b = (int)(q_i / ((int64_t)T * H));
			const float *qr = AT(q, b, t, h);
			float mx = -INFINITY;
			for (int j = 0; j <= t; j++) {
				const float *kr = AT(k, b, j, h);
				float d = 0.0f;
				for (int e = 0; e < hd; e++) d += qr[e] * kr[e];
				s[j] = d * scale;
				if (s[j] > mx) mx = s[j];
			}
			double sum = 0.0;
			for (int j = 0; j <= t; j++) {
				s[j] = expf(s[j] - mx);
				sum += s[j];
			}
			float inv = (float)(1.0 / sum);
			float *o = AT(out, b, t, h);
			for (int e = 0; e < hd; e++) o[e] = 0.0f;
			for (int j = 0; j <= t; j++) {
				const float *vr = AT(v, b, j, h);
				float pj = s[j] * inv;
				for (int e = 0; e < hd; e++) o[e] += pj * vr[e];
			}
			lse[((int64_t)b * H + h) * T + t] = mx + (float)log(sum);
		}
		free(s);
	}
}

/* exact backward from the saved lse: p_j = exp(s_j - lse_t),
 * dS_j = p_j (dout.v_j - dout.out_t); one (b,h) per task so that the
 * dk/dv sums over t run in a fixed order */
static void cpu_attention_backward(arb_backend *be, const float *q,
				   const float *k, const float *v,
				   const float *out, const float *lse,
				   const float *dout, float *dq, float *dk,
				   float *dv, int B, int T, int H, int hd)
{
	const float scale = 1.0f / sqrtf((float)hd);
	const int64_t tasks = (int64_t)B * H;
	#pragma omp parallel if (tasks * T * T * hd > 65536)
	{
		#pragma omp for schedule(static)
		for (int64_t bh = 0; bh < tasks; bh++) {
			int b = (int)(bh / H), h = (int)(bh % H);
			for (int t = 0; t < T; t++) {
				float *a = AT(dq, b, t, h), *c = AT(dk, b, t, h),
				      *d = AT(dv, b, t, h);
				for (int e = 0; e < hd; e++) a[e] = c[e] = d[e] = 0.0f;
			}
			for (int t = 0; t < T; t++) {
				const float *qr = AT(q, b, t, h), *dor = AT(dout, b, t, h),
					    *orow = AT(out, b, t, h);
				float l = lse[((int64_t)b * H + h) * T + t];
				float Dt = 0.0f;
				for (int e = 0; e < hd; e++) Dt += dor[e] * orow[e];
				float *dqr = AT(dq, b, t, h);
				for (int j = 0; j <= t; j++) {
					const float *kr = AT(k, b, j, h), *vr = AT(v, b, j, h);
					float sd = 0.0f, dp = 0.0f;
					for (int e = 0; e < hd; e++) {
						sd += qr[e] * kr[e];
						dp += dor[e] * vr[e];
					}
					float p = expf(sd * scale - l);
					float ds = p * (dp - Dt) * scale;
					float *dkr = AT(dk, b, j, h), *dvr = AT(dv, b, j, h);
					for (int e = 0; e < hd; e++) {
						dqr[e] += ds * kr[e];
						dkr[e] += ds * qr[e];
						dvr[e] += p * dor[e];
					}
				}
			}
		}
	}
}
#undef AT

/* ------------------------------------------------------------------------- *
 * elementwise */
static float sigm(float a) { return 1.0f / (1.0f + expf(-a)); }

static void cpu_swiglu_forward(arb_backend *be, const float *a, const float *b,
			       float *out, int64_t n)
{
	#pragma omp parallel for schedule(static) if (n > 65536)
	for (int64_t i = 0; i < n; i++) out[i] = a[i] * sigm(a[i]) * b[i];
}

/* d silu(a)/da = s (1 + a (1 - s)) */
static void cpu_swiglu_backward(arb_backend *be, const float *a, const float *b,
				const float *dout, float *da, float *db, int64_t n)
{
	#pragma omp parallel for schedule(static) if (n > 65536)
	for (int64_t i = 0; i < n; i++) {
		float s = sigm(a[i]);
		float silu = a[i] * s;
		float g = dout[i];
		da[i] = g * b[i] * s * (1.0f + a[i] * (1.0f - s));
		db[i] = g * silu;
	}
}

static void cpu_axpy(arb_backend *be, float *y, const float *x, float alpha,
		     int64_t n)
{
	#pragma omp parallel for schedule(static) if (n > 65536)
	for (int64_t i = 0; i < n; i++) y[i] += alpha * x[i];
}

static void cpu_add_rows(arb_backend *be, float *y, const float *x, int64_t M,
			 int64_t period, int64_t D, float alpha)
{
	#pragma omp parallel for schedule(static) if (M * D > 65536)
	for (int64_t m = 0; m < M; m++) {
		const float *xr = x + (m % period) * D;
		float *yr = y + m * D;
		for (int64_t d = 0; d < D; d++) yr[d] += xr[d] * alpha;
	}
}

/* stable log-softmax: lse = max + log(sum exp(l - max)) */
static void cpu_cross_entropy(arb_backend *be, const float *logits,
			      const int32_t *target, int64_t M, int64_t V,
			      float *loss, float *dlogits, float grad_scale)
{
	#pragma omp parallel for schedule(static) if (M * V > 65536)
	for (int64_t m = 0; m < M; m++) {
		const float *l = logits + m * V;
		float *dl = dlogits ? dlogits + m * V : NULL;
		int32_t tg = target[m];
		if (tg < 0 || tg >= V) {
			/* ignored (< 0) or invalid (>= V: NaN loss, caught by
			 * all_finite rather than silently dropped) */
			loss[m] = tg < 0 ? 0.0f : NAN;
			if (dl) memset(dl, 0, (size_t)V * sizeof *dl);
			continue;
		}
		float mx = l[0];
		for (int64_t i = 1; i < V; i++) if (l[i] > mx) mx = l[i];
		double sum = 0.0;
		for (int64_t i = 0; i < V; i++) sum += exp((double)(l[i] - mx));
		double lse = (double)mx + log(sum);
		loss[m] = (float)(lse - (double)l[tg]);
		if (dl) {
			for (int64_t i = 0; i < V; i++) {
				double p = exp((double)l[i] - lse);
				dl[i] = (float)((p - (i == tg ? 1.0 : 0.0)) * grad_scale);
			}
		}
	}
}

/* fixed chunks summed in order: same result for any thread count */
#define SUM_CHUNK 4096
static double cpu_sum(arb_backend *be, const float *x, int64_t n)
{
	if (n <= 0) return 0.0;
	int64_t nc = (n + SUM_CHUNK - 1) / SUM_CHUNK;
	double stackbuf[64];
	double *part = nc <= 64 ? stackbuf : malloc((size_t)nc * sizeof *part);
	if (!part) {
		double s = 0.0;
		for (int64_t i = 0; i < n; i++) s += x[i];
		return s;
	}
	#pragma omp parallel for schedule(static) if (n > 65536)
	for (int64_t c = 0; c < nc; c++) {
		int64_t i1 = (c + 1) * SUM_CHUNK < n ? (c + 1) * SUM_CHUNK : n;
		double s = 0.0;
		for (int64_t i = c * SUM_CHUNK; i < i1; i++) s += x[i];
		part[c] = s;
	}
	double s = 0.0;
	for (int64_t c = 0; c < nc; c++) s += part[c];
	if (part != stackbuf) free(part);
	return s;
}

static int cpu_all_finite(arb_backend *be, const float *x, int64_t n)
{
	int64_t bad = 0;
	#pragma omp parallel for schedule(static) reduction(+:bad) if (n > 65536)
	for (int64_t i = 0; i < n; i++) bad += !isfinite(x[i]);
	return bad == 0;
}

/* ------------------------------------------------------------------------- */
static arb_backend cpu_backend = {
	.name = "cpu",
	.is_device = 0,
	.priv = NULL,
	.alloc = cpu_alloc,
	.free = cpu_free,
	.zero = cpu_zero,
	.upload = cpu_upload,
	.download = cpu_download,
	.copy = cpu_copy,
	.sync = cpu_sync,
	.tern_alloc = cpu_tern_alloc,
	.tern_free = cpu_tern_free,
	.tern_init = cpu_tern_init,
	.linear_forward = cpu_linear_forward,
	.linear_backward_x = cpu_linear_backward_x,
	.linear_vote = cpu_linear_vote,
	.embed_forward = cpu_embed_forward,
	.embed_vote = cpu_embed_vote,
	.tern_step = cpu_tern_step,
	.tern_step_many = cpu_tern_step_many,
	.rmsnorm_forward = cpu_rmsnorm_forward,
	.rmsnorm_backward = cpu_rmsnorm_backward,
	.attention_forward = cpu_attention_forward,
	.attention_backward = cpu_attention_backward,
	.swiglu_forward = cpu_swiglu_forward,
	.swiglu_backward = cpu_swiglu_backward,
	.axpy = cpu_axpy,
	.add_rows = cpu_add_rows,
	.cross_entropy = cpu_cross_entropy,
	.sum = cpu_sum,
	.all_finite = cpu_all_finite,
};

arb_backend *arb_backend_cpu(void)
{
	pthread_once(&dec_once, dec_init);
	return &cpu_backend;
}
