/*
 * tests/check_ops.c -- the CPU backend's float ops against references:
 * ternary linear forward against a naive triple loop on decoded weights,
 * backward passes against central finite differences of a scalar loss
 * L = sum(c * out) (c fixed random), cross-entropy against its own loss,
 * embedding lookups with duplicate indices, and bit-identical results for
 * 1 and 2 OpenMP threads.
 *
 * Finite-difference tolerances (float32 forward, loss summed in double):
 *   linear (exactly linear in x): eps 1e-2, |g - fd| <= 1e-3 + 1e-3 |fd|
 *   rmsnorm, attention, swiglu, cross-entropy: eps 1e-2 (inputs O(1)),
 *   truncation O(eps^2) ~ 1e-4, rounding ~ 1e-7 * n / eps ~ 1e-4:
 *   |g - fd| <= 2e-3 + 1e-2 |fd|.
 */
#include <check.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core.h"
#include "testutil.h"

static arb_backend *be;

static void setup(void) { be = arb_backend_cpu(); }

/* random tensor with mixed exponents per group */
static void make_tern(arb_tern *t, int64_t R, int64_t C, int gs, uint32_t id)
{
	ck_assert_int_eq(arb_tern_alloc(t, "w", R, C, gs, 0, 0, NULL), ARB_OK);
	t->id = id;
	arb_tern_init ini = { 11, 1.0 / 3, 0, -3, 0 };
	be->tern_init(be, t, &ini);
	for (int64_t i = 0; i < R * t->groups; i++) t->E[i] = (int8_t)(-2 - (i % 3));
}

static float *fvec(size_t n, uint64_t seed)
{
	float *x = malloc(n * sizeof *x);
	arb_test_fill(x, n, seed);
	return x;
}

static double dot_d(const float *a, const float *c, size_t n)
{
	double s = 0.0;
	for (size_t i = 0; i < n; i++) s += (double)a[i] * c[i];
	return s;
}

/* compare analytic gradient g with central differences of loss(p) */
typedef double (*loss_fn)(void *ctx);
static int fd_check(const char *label, float *p, const float *g, size_t n,
		    loss_fn f, void *ctx, float eps, double atol, double rtol)
{
	int bad = 0;
	for (size_t i = 0; i < n; i++) {
		float keep = p[i];
		p[i] = keep + eps;
		double lp = f(ctx);
		p[i] = keep - eps;
		double lm = f(ctx);
		p[i] = keep;
		double fd = (lp - lm) / (2.0 * (double)eps);
		if (!(fabs(g[i] - fd) <= atol + rtol * fabs(fd))) {
			if (bad < 5)
				fprintf(stderr, "%s[%zu]: analytic %.6g fd %.6g\n", label,
					i, g[i], fd);
			bad++;
		}
	}
	return bad;
}

/* ------------------------------------------------------------------------- */
START_TEST(linear_forward_naive)
{
	const int64_t M = 37, N = 29, K = 53;
	int gss[] = { 4, 12, 32 };
	for (int q = 0; q < 3; q++) {
		arb_tern w;
		make_tern(&w, N, K, gss[q], 1);
		float *x = fvec((size_t)(M * K), 1), *y = malloc((size_t)(M * N) * 4);
		float *ref = malloc((size_t)(M * N) * 4), *wr = malloc((size_t)K * 4);
		for (int64_t n = 0; n < N; n++) {
			int8_t tr[53];
			arb_tern_row_trits(&w, n, tr);
			for (int64_t k = 0; k < K; k++)
				wr[k] = (float)tr[k] * ldexpf(1.0f, w.E[n * w.groups + k / gss[q]]);
			for (int64_t m = 0; m < M; m++) {
				double s = 0.0;
				for (int64_t k = 0; k < K; k++) s += (double)x[m * K + k] * wr[k];
				ref[m * N + n] = (float)s;
			}
		}
		be->linear_forward(be, &w, x, y, M, 0);
		ck_assert_int_eq(arb_test_close("linear_forward", y, ref, (size_t)(M * N), 1e-5f, 1e-5f), 0);
		/* accumulate adds to y */
		be->linear_forward(be, &w, x, y, M, 1);
		for (int64_t i = 0; i < M * N; i++) ref[i] *= 2.0f;
		ck_assert_int_eq(arb_test_close("linear_forward acc", y, ref, (size_t)(M * N), 1e-5f, 1e-5f), 0);
		free(x); free(y); free(ref); free(wr);
		arb_tern_free(&w);
	}
}
END_TEST

typedef struct { arb_tern *w; float *x, *y, *c; int64_t M; } lin_ctx;
static double lin_loss(void *p)
{
	lin_ctx *l = p;
	be->linear_forward(be, l->w, l->x, l->y, l->M, 0);
	return dot_d(l->y, l->c, (size_t)(l->M * l->w->rows));
}

START_TEST(linear_backward_fd)
{
	const int64_t M = 9, N = 23, K = 31;
	arb_tern w;
	make_tern(&w, N, K, 4, 2);
	float *x = fvec((size_t)(M * K), 3), *y = malloc((size_t)(M * N) * 4);
	float *c = fvec((size_t)(M * N), 4), *dx = malloc((size_t)(M * K) * 4);
	be->linear_backward_x(be, &w, c, dx, M, 0);
	lin_ctx l = { &w, x, y, c, M };
	ck_assert_int_eq(fd_check("linear dx", x, dx, (size_t)(M * K), lin_loss, &l,
				  1e-2f, 1e-3, 1e-3), 0);
	/* accumulate */
	float *dx2 = malloc((size_t)(M * K) * 4);
	memcpy(dx2, dx, (size_t)(M * K) * 4);
	be->linear_backward_x(be, &w, c, dx2, M, 1);
	for (int64_t i = 0; i < M * K; i++) ck_assert_float_eq(dx2[i], 2.0f * dx[i]);
	free(x); free(y); free(c); free(dx); free(dx2);
	arb_tern_free(&w);
}
END_TEST

/* sign votes from zero accumulators reproduce -sign(dW) of a naive dW */
START_TEST(linear_vote_naive)
{
	const int64_t M = 17, N = 13, K = 22;
	arb_tern w;
	make_tern(&w, N, K, 4, 3);
	float *x = fvec((size_t)(M * K), 5), *dy = fvec((size_t)(M * N), 6);
	memset(w.T_accum, 0, (size_t)(N * K));
	arb_vote v = { ARB_VOTE_SIGN, 3, 1, 1, 0 };
	be->linear_vote(be, &w, x, dy, M, &v);
	for (int64_t n = 0; n < N; n++)
		for (int64_t k = 0; k < K; k++) {
			double s = 0.0;
			for (int64_t m = 0; m < M; m++) s += (double)dy[m * N + n] * x[m * K + k];
			if (fabs(s) < 1e-5) continue;
			ck_assert_int_eq(w.T_accum[n * K + k], s > 0 ? -3 : 3);
		}
	free(x); free(dy);
	arb_tern_free(&w);
}
END_TEST

typedef struct { arb_tern *g; float *x, *y, *r, *c; int64_t M, D; } rms_ctx;
static double rms_loss(void *p)
{
	rms_ctx *l = p;
	be->rmsnorm_forward(be, l->g, l->x, l->y, l->r, l->M, l->D);
	return dot_d(l->y, l->c, (size_t)(l->M * l->D));
}

START_TEST(rmsnorm_fd)
{
	const int64_t M = 5, D = 16;
	for (int withg = 0; withg < 2; withg++) {
		arb_tern g;
		make_tern(&g, 1, D, 4, 4);
		for (int i = 0; i < g.groups; i++) g.E[i] = 0;
		float *x = fvec((size_t)(M * D), 7), *y = malloc((size_t)(M * D) * 4);
		float *r = malloc((size_t)M * 4), *c = fvec((size_t)(M * D), 8);
		float *dx = malloc((size_t)(M * D) * 4);
		arb_tern *gp = withg ? &g : NULL;
		be->rmsnorm_forward(be, gp, x, y, r, M, D);
		/* forward against the definition */
		float gw[16];
		arb_tern_row_weights(&g, 0, gw);
		for (int64_t m = 0; m < M; m++) {
			double ss = 0;
			for (int64_t d = 0; d < D; d++) ss += (double)x[m * D + d] * x[m * D + d];
			double rr = 1.0 / sqrt(ss / D + 1e-5);
			ck_assert_double_le(fabs(r[m] - rr), 1e-6 * rr);
			for (int64_t d = 0; d < D; d++)
				ck_assert_double_le(fabs(y[m * D + d] -
					x[m * D + d] * rr * (withg ? gw[d] : 1.0)), 1e-5);
		}
		be->rmsnorm_backward(be, gp, x, r, c, dx, M, D, 0);
		rms_ctx l = { gp, x, y, r, c, M, D };
		ck_assert_int_eq(fd_check("rmsnorm dx", x, dx, (size_t)(M * D), rms_loss, &l,
					  1e-2f, 2e-3, 1e-2), 0);
		free(x); free(y); free(r); free(c); free(dx);
		arb_tern_free(&g);
	}
}
END_TEST

typedef struct { float *q, *k, *v, *o, *lse, *c; int B, T, H, hd; } att_ctx;
static double att_loss(void *p)
{
	att_ctx *a = p;
	be->attention_forward(be, a->q, a->k, a->v, a->o, a->lse, a->B, a->T, a->H, a->hd);
	return dot_d(a->o, a->c, (size_t)a->B * a->T * a->H * a->hd);
}

START_TEST(attention_fd)
{
	const int B = 2, T = 5, H = 2, hd = 4;
	size_t n = (size_t)B * T * H * hd;
	float *q = fvec(n, 9), *k = fvec(n, 10), *v = fvec(n, 11), *c = fvec(n, 12);
	float *o = malloc(n * 4), *lse = malloc((size_t)B * H * T * 4);
	float *dq = malloc(n * 4), *dk = malloc(n * 4), *dv = malloc(n * 4);
	be->attention_forward(be, q, k, v, o, lse, B, T, H, hd);
	/* forward reference for one (b, t, h): causal softmax */
	{
		int b = 1, t = 3, h = 1;
		double s[5], mx = -1e30, sum = 0;
		for (int j = 0; j <= t; j++) {
			double d = 0;
			for (int e = 0; e < hd; e++)
				d += (double)q[(((b * T + t) * H) + h) * hd + e] *
				     k[(((b * T + j) * H) + h) * hd + e];
			s[j] = d / sqrt((double)hd);
			if (s[j] > mx) mx = s[j];
		}
		for (int j = 0; j <= t; j++) sum += exp(s[j] - mx);
		ck_assert_double_le(fabs(lse[(b * H + h) * T + t] - (mx + log(sum))), 1e-5);
		for (int e = 0; e < hd; e++) {
			double acc = 0;
			for (int j = 0; j <= t; j++)
				acc += exp(s[j] - mx) / sum * v[(((b * T + j) * H) + h) * hd + e];
			ck_assert_double_le(fabs(o[(((b * T + t) * H) + h) * hd + e] - acc), 1e-5);
		}
	}
	be->attention_backward(be, q, k, v, o, lse, c, dq, dk, dv, B, T, H, hd);
	att_ctx a = { q, k, v, o, lse, c, B, T, H, hd };
	ck_assert_int_eq(fd_check("attn dq", q, dq, n, att_loss, &a, 1e-2f, 2e-3, 1e-2), 0);
	ck_assert_int_eq(fd_check("attn dk", k, dk, n, att_loss, &a, 1e-2f, 2e-3, 1e-2), 0);
	ck_assert_int_eq(fd_check("attn dv", v, dv, n, att_loss, &a, 1e-2f, 2e-3, 1e-2), 0);
	free(q); free(k); free(v); free(c); free(o); free(lse); free(dq); free(dk); free(dv);
}
END_TEST

typedef struct { float *a, *b, *o, *c; int64_t n; } swi_ctx;
static double swi_loss(void *p)
{
	swi_ctx *s = p;
	be->swiglu_forward(be, s->a, s->b, s->o, s->n);
	return dot_d(s->o, s->c, (size_t)s->n);
}

START_TEST(swiglu_fd)
{
	const int64_t n = 64;
	float *a = fvec((size_t)n, 13), *b = fvec((size_t)n, 14), *c = fvec((size_t)n, 15);
	float *o = malloc((size_t)n * 4), *da = malloc((size_t)n * 4), *db = malloc((size_t)n * 4);
	for (int64_t i = 0; i < n; i++) a[i] *= 4.0f; /* cover the sigmoid's range */
	be->swiglu_forward(be, a, b, o, n);
	for (int64_t i = 0; i < n; i++)
		ck_assert_double_le(fabs(o[i] - a[i] / (1.0 + exp(-(double)a[i])) * b[i]), 1e-5);
	be->swiglu_backward(be, a, b, c, da, db, n);
	swi_ctx s = { a, b, o, c, n };
	ck_assert_int_eq(fd_check("swiglu da", a, da, (size_t)n, swi_loss, &s, 1e-2f, 2e-3, 1e-2), 0);
	ck_assert_int_eq(fd_check("swiglu db", b, db, (size_t)n, swi_loss, &s, 1e-2f, 2e-3, 1e-2), 0);
	free(a); free(b); free(c); free(o); free(da); free(db);
}
END_TEST

typedef struct { float *l, *loss; int32_t *t; int64_t M, V; float gs; } ce_ctx;
static double ce_loss(void *p)
{
	ce_ctx *c = p;
	be->cross_entropy(be, c->l, c->t, c->M, c->V, c->loss, NULL, 1.0f);
	double s = 0;
	for (int64_t m = 0; m < c->M; m++) s += c->loss[m];
	return s * c->gs;
}

START_TEST(cross_entropy_fd)
{
	const int64_t M = 6, V = 11;
	float *l = fvec((size_t)(M * V), 16), *loss = malloc((size_t)M * 4);
	float *dl = malloc((size_t)(M * V) * 4);
	int32_t t[6] = { 3, 0, -1, 10, 5, 5 };
	for (int64_t i = 0; i < M * V; i++) l[i] *= 3.0f;
	l[7] = 80.0f; /* a large logit: stability */
	be->cross_entropy(be, l, t, M, V, loss, dl, 0.5f);
	for (int64_t m = 0; m < M; m++) {
		if (t[m] < 0) {
			ck_assert_float_eq(loss[m], 0.0f);
			for (int64_t i = 0; i < V; i++) ck_assert_float_eq(dl[m * V + i], 0.0f);
			continue;
		}
		double mx = -1e30, s = 0;
		for (int64_t i = 0; i < V; i++) if (l[m * V + i] > mx) mx = l[m * V + i];
		for (int64_t i = 0; i < V; i++) s += exp(l[m * V + i] - mx);
		double want = mx + log(s) - l[m * V + t[m]];
		ck_assert_double_le(fabs(loss[m] - want), 1e-5 * (1 + want));
	}
	ce_ctx c = { l, loss, t, M, V, 0.5f };
	float *dlc = malloc((size_t)(M * V) * 4);
	memcpy(dlc, dl, (size_t)(M * V) * 4);
	ck_assert_int_eq(fd_check("ce dlogits", l, dlc, (size_t)(M * V), ce_loss, &c,
				  1e-2f, 2e-3, 1e-2), 0);
	/* a target >= V is not silently ignored: NaN loss */
	int32_t bad = (int32_t)V;
	float bl;
	be->cross_entropy(be, l, &bad, 1, V, &bl, NULL, 1.0f);
	ck_assert(isnan(bl));
	ck_assert_int_eq(be->all_finite(be, &bl, 1), 0);
	free(l); free(loss); free(dl); free(dlc);
}
END_TEST

START_TEST(embed_forward_dups)
{
	arb_tern w;
	make_tern(&w, 10, 13, 4, 5);
	int32_t idx[6] = { 3, 7, 3, 0, 9, 3 };
	float out[6 * 13], row[13], init[6 * 13];
	be->embed_forward(be, &w, idx, 6, out, 0);
	for (int i = 0; i < 6; i++) {
		arb_tern_row_weights(&w, idx[i], row);
		ck_assert_mem_eq(out + i * 13, row, sizeof row);
	}
	arb_test_fill(init, 6 * 13, 17);
	memcpy(out, init, sizeof out);
	be->embed_forward(be, &w, idx, 6, out, 1);
	for (int i = 0; i < 6; i++) {
		arb_tern_row_weights(&w, idx[i], row);
		for (int d = 0; d < 13; d++)
			ck_assert_float_eq(out[i * 13 + d], init[i * 13 + d] + row[d]);
	}
	arb_tern_free(&w);
}
END_TEST

START_TEST(small_ops)
{
	float y[6] = { 1, 2, 3, 4, 5, 6 }, x[6] = { 1, 1, 1, 2, 2, 2 };
	be->axpy(be, y, x, 0.5f, 6);
	ck_assert_float_eq(y[0], 1.5f);
	ck_assert_float_eq(y[5], 7.0f);
	float z[8] = { 0 }, p[4] = { 1, 2, 3, 4 }; /* M=4, D=2, period 2 */
	be->add_rows(be, z, p, 4, 2, 2, 2.0f);
	float want[8] = { 2, 4, 6, 8, 2, 4, 6, 8 };
	ck_assert_mem_eq(z, want, sizeof z);
	float *big = malloc(100000 * 4);
	for (int i = 0; i < 100000; i++) big[i] = (float)(i % 7) * 0.25f;
	double s = 0;
	for (int i = 0; i < 100000; i++) s += big[i];
	ck_assert_double_eq(be->sum(be, big, 100000), s);
	ck_assert_int_eq(be->all_finite(be, big, 100000), 1);
	big[77777] = INFINITY;
	ck_assert_int_eq(be->all_finite(be, big, 100000), 0);
	free(big);
}
END_TEST

/* ------------------------------------------------------------------------- *
 * same results for 1 and 2 threads, bit for bit */
typedef struct {
	float *y, *dx, *o, *lse, *dq, *dk, *dv, *loss, *dl;
	double sum;
	int8_t *acc;
	uint8_t *packed;
	arb_step_stats st;
} run_out;

static void run_all(int threads, run_out *r)
{
	omp_set_num_threads(threads);
	const int64_t M = 64, N = 260, K = 300;
	arb_tern w;
	ck_assert_int_eq(arb_tern_alloc(&w, "d", N, K, 32, 0, ARB_ERULE_RESIDUAL, NULL), ARB_OK);
	w.id = 1;
	arb_tern_init ini = { 5, 1.0 / 3, 0, -4, 6 };
	be->tern_init(be, &w, &ini);
	float *x = fvec((size_t)(M * K), 20), *dy = fvec((size_t)(M * N), 21);
	r->y = malloc((size_t)(M * N) * 4);
	r->dx = malloc((size_t)(M * K) * 4);
	be->linear_forward(be, &w, x, r->y, M, 0);
	be->linear_backward_x(be, &w, dy, r->dx, M, 0);
	arb_vote v = { ARB_VOTE_SR, 1, 2, 5, 3 };
	be->linear_vote(be, &w, x, dy, M, &v);
	be->linear_vote(be, &w, x, dy, M, &v);
	arb_step p = { 4, ARB_RESET_ZERO, ARB_ORDER_E_FIRST, 2, -30, 10, 20000, 5, 3 };
	be->tern_step(be, &w, &p, &r->st);
	r->acc = malloc((size_t)(N * K));
	memcpy(r->acc, w.T_accum, (size_t)(N * K));
	r->packed = malloc((size_t)(N * w.row_bytes));
	memcpy(r->packed, w.packed, (size_t)(N * w.row_bytes));
	const int B = 2, T = 40, H = 4, hd = 16;
	size_t n = (size_t)B * T * H * hd;
	float *q = fvec(n, 22), *k = fvec(n, 23), *vv = fvec(n, 24), *c = fvec(n, 25);
	r->o = malloc(n * 4); r->lse = malloc((size_t)B * H * T * 4);
	r->dq = malloc(n * 4); r->dk = malloc(n * 4); r->dv = malloc(n * 4);
	be->attention_forward(be, q, k, vv, r->o, r->lse, B, T, H, hd);
	be->attention_backward(be, q, k, vv, r->o, r->lse, c, r->dq, r->dk, r->dv, B, T, H, hd);
	const int64_t CM = 300, CV = 256;
	float *lg = fvec((size_t)(CM * CV), 26);
	int32_t *tg = malloc((size_t)CM * 4);
	for (int64_t i = 0; i < CM; i++) tg[i] = (int32_t)((i * 37) % CV);
	r->loss = malloc((size_t)CM * 4); r->dl = malloc((size_t)(CM * CV) * 4);
	be->cross_entropy(be, lg, tg, CM, CV, r->loss, r->dl, 1.0f / CM);
	r->sum = be->sum(be, lg, CM * CV);
	free(x); free(dy); free(q); free(k); free(vv); free(c); free(lg); free(tg);
	arb_tern_free(&w);
}

START_TEST(threads_bit_identical)
{
	run_out a, b;
	run_all(1, &a);
	run_all(2, &b);
	ck_assert_int_eq(omp_get_max_threads(), 2);
	ck_assert_mem_eq(a.y, b.y, 64 * 260 * 4);
	ck_assert_mem_eq(a.dx, b.dx, 64 * 300 * 4);
	ck_assert_mem_eq(a.acc, b.acc, 260 * 300);
	ck_assert_mem_eq(a.packed, b.packed, 260 * 60);
	ck_assert_int_eq(a.st.flips, b.st.flips);
	ck_assert_int_eq(a.st.capped, b.st.capped);
	ck_assert_int_gt(a.st.flips, 0);
	size_t n = 2 * 40 * 4 * 16;
	ck_assert_mem_eq(a.o, b.o, n * 4);
	ck_assert_mem_eq(a.lse, b.lse, 2 * 4 * 40 * 4);
	ck_assert_mem_eq(a.dq, b.dq, n * 4);
	ck_assert_mem_eq(a.dk, b.dk, n * 4);
	ck_assert_mem_eq(a.dv, b.dv, n * 4);
	ck_assert_mem_eq(a.loss, b.loss, 300 * 4);
	ck_assert_mem_eq(a.dl, b.dl, 300 * 256 * 4);
	ck_assert(a.sum == b.sum);
	run_out *rs[2] = { &a, &b };
	for (int i = 0; i < 2; i++) {
		run_out *r = rs[i];
		free(r->y); free(r->dx); free(r->acc); free(r->packed);
		free(r->o); free(r->lse); free(r->dq); free(r->dk); free(r->dv);
		free(r->loss); free(r->dl);
	}
}
END_TEST

/* tern_step_many = tern_step tensor by tensor, in state and stats (the
 * trainer and the harness step through it) */
START_TEST(step_many_equals_steps)
{
	enum { NT = 3 };
	arb_tern a[NT], b[NT];
	arb_tern *pb[NT];
	arb_step p[NT];
	const int64_t M = 16;
	static const int64_t rows[NT] = { 40, 17, 64 }, cols[NT] = { 100, 33, 65 };
	static const int gss[NT] = { 32, 4, 12 };
	for (int i = 0; i < NT; i++) {
		arb_tern *ts[2] = { &a[i], &b[i] };
		for (int j = 0; j < 2; j++) {
			ck_assert_int_eq(arb_tern_alloc(ts[j], "s", rows[i], cols[i], gss[i], 0,
					 i == 2 ? ARB_ERULE_BIGINT : ARB_ERULE_RESIDUAL, NULL),
					 ARB_OK);
			ts[j]->id = 10 + i;
			arb_tern_init ini = { 50 + i, 1.0 / 3, 0, -4, 3 };
			be->tern_init(be, ts[j], &ini);
		}
		float *x = fvec((size_t)(M * cols[i]), 60 + i), *dy = fvec((size_t)(M * rows[i]), 70 + i);
		arb_vote v = { ARB_VOTE_SIGN, 1, 1, 5, 0 };
		be->linear_vote(be, &a[i], x, dy, M, &v);
		be->linear_vote(be, &b[i], x, dy, M, &v);
		free(x);
		free(dy);
		p[i] = (arb_step){ 2, i % 2, (i / 2) % 2, 2, -8, 2, i == 1 ? 50000 : 0, 5, 1 };
		pb[i] = &b[i];
	}
	arb_step_stats sa[NT], sb[NT];
	for (int i = 0; i < NT; i++) be->tern_step(be, &a[i], &p[i], &sa[i]);
	be->tern_step_many(be, pb, p, NT, sb);
	int64_t flips = 0;
	for (int i = 0; i < NT; i++) {
		ck_assert_mem_eq(&sa[i], &sb[i], sizeof sa[i]);
		ck_assert_mem_eq(a[i].packed, b[i].packed, (size_t)(rows[i] * a[i].row_bytes));
		ck_assert_mem_eq(a[i].T_accum, b[i].T_accum, (size_t)(rows[i] * cols[i]));
		ck_assert_mem_eq(a[i].E, b[i].E, (size_t)(rows[i] * a[i].groups));
		ck_assert_int_eq(a[i].steps, b[i].steps);
		flips += sa[i].flips;
		arb_tern_free(&a[i]);
		arb_tern_free(&b[i]);
	}
	ck_assert_int_gt(flips, 0);
	be->tern_step_many(be, pb, p, 0, NULL); /* nothing to do */
}
END_TEST

Suite *suite_ops(void)
{
	Suite *s = suite_create("ops");
	TCase *tc = tcase_create("cpu");
	tcase_add_checked_fixture(tc, setup, NULL);
	tcase_add_test(tc, linear_forward_naive);
	tcase_add_test(tc, linear_backward_fd);
	tcase_add_test(tc, linear_vote_naive);
	tcase_add_test(tc, rmsnorm_fd);
	tcase_add_test(tc, attention_fd);
	tcase_add_test(tc, swiglu_fd);
	tcase_add_test(tc, cross_entropy_fd);
	tcase_add_test(tc, embed_forward_dups);
	tcase_add_test(tc, small_ops);
	tcase_add_test(tc, threads_bit_identical);
	tcase_add_test(tc, step_many_equals_steps);
	suite_add_tcase(s, tc);
	return s;
}
