/*
 * tests/check_moe.c -- the `moe` plugin (SharedProjectionMoE) through its
 * descriptor, loaded with dlopen from $ARB_TEST_BUILD/plugins/moe.so and run
 * by arb/harness.h's test host (tern_create on the backend's
 * tern_alloc/tern_init, the section's keys set from a struct, publish into a
 * table). No model is involved.
 *
 * Loss: L = sum(y * R) + aux_loss with R fixed random, so dy = R.
 *   inputs   dL/dx against central differences of L (eps 1e-2)
 *   weights  a wrapped CPU backend: linear_forward adds eps * x[:, k] into
 *            y[:, n] for one (tensor, n, k), exactly a perturbation of
 *            W[n][k]; linear_vote records dW = dy^T x in double. The
 *            recorded dW is compared with central differences.
 *   An entry whose perturbation changes the top-k routing is skipped (the
 *   loss is not differentiable there); tests assert most entries are used.
 *   Tolerances: |g - fd| <= 5e-4 + 2e-2 |fd| (float32 forward, O(1)
 *   activations, loss summed in double: rounding / (2 eps) ~ 1e-5).
 * dense == sparse: same weights (same seed and creation order), y, dx and
 *   every recorded dW within 1e-5, votes (T_accum) identical.
 * Routing: ties go to the lower expert index; every token to one expert
 *   (the other experts get no tokens, so their B blocks get exactly zero
 *   gradient); odd token counts (37, 39) that fit no tile size.
 * trunk = false: one tensor set "<instance>.<name>" (no "L<l>."), every
 *   io->layer served by it (same y for layers 0 and 7); a `layers` list with
 *   it is refused naming the key.
 * GPU (tag "gpu"): the CUDA backend against the CPU on both paths.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core.h"
#include "arb/harness.h"
#include "testutil.h"

/* ------------------------------------------------------------------------
 * plugin */

static const arb_plugin *moe_desc(void)
{
	static const arb_plugin *d;
	if (!d) d = arb_test_plugin_ok("moe", ARB_SLOT_FFN);
	return d;
}

/* ------------------------------------------------------------------------
 * test host: arb/harness.h's, with the section from a struct */

typedef struct tconf {
	int64_t experts, top_k, rank, hidden, dense;
	double balance;
	int nlayers;
	int64_t layers[8];
} tconf;

typedef struct thost {
	arb_harness H;       /* host, conf, tensors (H.tern), named tensors */
	tconf conf;
} thost;

static tconf conf_default(void)
{
	tconf c;
	memset(&c, 0, sizeof c);
	c.experts = 4;
	c.top_k = 2;
	c.rank = 3;
	c.hidden = 10;
	c.dense = 128;
	c.balance = 0.5;
	c.nlayers = 1;
	c.layers[0] = 1;
	return c;
}

static thost *th_new(arb_backend *be, int D, const tconf *c)
{
	thost *th = calloc(1, sizeof *th);
	arb_harness *H = &th->H;
	arb_model_info mi = { sizeof mi, D, 2, 1, 64, 4, 4, 1234 };
	arb_harness_init(H, be, &mi); /* D, layers, heads, ctx, batch, group, seed */
	arb_harness_use(H, moe_desc());
	arb_error err = { 0 };
	char lay[128] = "";
	for (int i = 0; i < c->nlayers; i++)
		snprintf(lay + strlen(lay), sizeof lay - strlen(lay), "%s%lld",
			 i ? "," : "", (long long)c->layers[i]);
	arb_status s = arb_harness_setf(H, "experts", &err, "%lld", (long long)c->experts);
	if (!s) s = arb_harness_setf(H, "top_k", &err, "%lld", (long long)c->top_k);
	if (!s) s = arb_harness_setf(H, "rank", &err, "%lld", (long long)c->rank);
	if (!s) s = arb_harness_setf(H, "hidden", &err, "%lld", (long long)c->hidden);
	if (!s) s = arb_harness_setf(H, "dense_dispatch_max_tokens", &err, "%lld",
				     (long long)c->dense);
	if (!s) s = arb_harness_setf(H, "balance", &err, "%.17g", c->balance);
	if (!s) s = arb_harness_set(H, "layers", lay, &err);
	ck_assert_msg(s == ARB_OK, "conf: %s", err.msg);
	th->conf = *c;
	s = arb_harness_create(H, "moe", &err);
	ck_assert_msg(s == ARB_OK, "create: %s", err.msg);
	return th;
}

static void th_free(thost *th)
{
	arb_harness_free(&th->H);
	free(th);
}

static arb_tern *th_find(thost *th, const char *short_name)
{
	char full[64];
	snprintf(full, sizeof full, "moe.L1.%s", short_name);
	arb_tern *t = arb_harness_tern(&th->H, full);
	if (!t) ck_abort_msg("no tensor %s", full);
	return t;
}

static const arb_named *th_lookup(thost *th, const char *name)
{
	return th->H.host.lookup(&th->H.host, name);
}

/* ------------------------------------------------------------------------
 * the wrapped CPU backend: weight perturbation and dW recording */

static arb_backend wrap;
static arb_backend *orig;
static const arb_tern *pert_w;
static int64_t pert_n, pert_k;
static float pert_eps;
#define MAXREC 16
static const arb_tern *rec_w[MAXREC];
static double *rec_dw[MAXREC];
static int nrec;

static void wrap_forward(arb_backend *be, const arb_tern *w, const float *x,
			 float *y, int64_t M, int accumulate)
{
	orig->linear_forward(orig, w, x, y, M, accumulate);
	if (w != pert_w) return;
	for (int64_t m = 0; m < M; m++)
		y[m * w->rows + pert_n] += pert_eps * x[m * w->cols + pert_k];
}

static double *rec_of(const arb_tern *w)
{
	for (int i = 0; i < nrec; i++)
		if (rec_w[i] == w) return rec_dw[i];
	ck_assert_int_lt(nrec, MAXREC);
	rec_w[nrec] = w;
	rec_dw[nrec] = calloc((size_t)(w->rows * w->cols), sizeof(double));
	return rec_dw[nrec++];
}

static void rec_clear(void)
{
	for (int i = 0; i < nrec; i++) free(rec_dw[i]);
	nrec = 0;
}

static void wrap_vote(arb_backend *be, arb_tern *w, const float *x,
		      const float *dy, int64_t M, const arb_vote *v)
{
	double *dw = rec_of(w);
	for (int64_t m = 0; m < M; m++)
		for (int64_t n = 0; n < w->rows; n++) {
			double g = dy[m * w->rows + n];
			if (g == 0.0) continue;
			for (int64_t k = 0; k < w->cols; k++)
				dw[n * w->cols + k] += g * x[m * w->cols + k];
		}
	orig->linear_vote(orig, w, x, dy, M, v);
}

static arb_backend *wrapped_cpu(void)
{
	orig = arb_backend_cpu();
	wrap = *orig;
	wrap.linear_forward = wrap_forward;
	wrap.linear_vote = wrap_vote;
	pert_w = NULL;
	rec_clear();
	return &wrap;
}

/* ------------------------------------------------------------------------
 * running the component (CPU: host pointers) */

typedef struct run {
	thost *th;
	int B, T, D;
	float *x, *R, *y, *dx;
	double aux;          /* aux_loss of the last forward */
} run;

static run *run_new(thost *th, int B, int T, uint64_t seed)
{
	run *r = calloc(1, sizeof *r);
	size_t n = (size_t)B * T * th->H.info.d_model;
	r->th = th;
	r->B = B;
	r->T = T;
	r->D = th->H.info.d_model;
	r->x = malloc(n * sizeof *r->x);
	r->R = malloc(n * sizeof *r->R);
	r->y = malloc(n * sizeof *r->y);
	r->dx = malloc(n * sizeof *r->dx);
	arb_test_fill(r->x, n, seed);
	arb_test_fill(r->R, n, seed + 77);
	return r;
}

static void run_free(run *r)
{
	free(r->x);
	free(r->R);
	free(r->y);
	free(r->dx);
	free(r);
}

static double run_forward(run *r)
{
	size_t n = (size_t)r->B * r->T * r->D;
	memset(r->y, 0, n * sizeof *r->y);
	arb_io io;
	arb_test_io(&io, r->th->H.be, r->B, r->T, r->D);
	io.layer = 1;
	io.training = 1;
	io.x = r->x;
	io.y = r->y;
	arb_error err = { 0 };
	arb_status s = moe_desc()->forward(r->th->H.self, &io, &err);
	ck_assert_msg(s == ARB_OK, "forward: %s", err.msg);
	double L = io.aux_loss;
	r->aux = io.aux_loss;
	for (size_t i = 0; i < n; i++) L += (double)r->y[i] * r->R[i];
	return L;
}

static void run_backward(run *r)
{
	size_t n = (size_t)r->B * r->T * r->D;
	memset(r->dx, 0, n * sizeof *r->dx);
	arb_vote v = { ARB_VOTE_SIGN, 1, 1, 5, 0 };
	arb_io io;
	arb_test_io(&io, r->th->H.be, r->B, r->T, r->D);
	io.layer = 1;
	io.training = 1;
	io.x = r->x;
	io.dy = r->R;
	io.dx = r->dx;
	io.vote = &v;
	arb_error err = { 0 };
	arb_status s = moe_desc()->backward(r->th->H.self, &io, &err);
	ck_assert_msg(s == ARB_OK, "backward: %s", err.msg);
}

/* routing of the last forward (host memory on the CPU backend) */
static const int32_t *routing_idx(thost *th)
{
	const arb_named *t = th_lookup(th, "moe.L1.topk_idx");
	ck_assert_ptr_nonnull(t);
	ck_assert_int_eq(t->dtype, ARB_I32);
	return t->data;
}

static const float *routing_w(thost *th)
{
	const arb_named *t = th_lookup(th, "moe.L1.topk_w");
	ck_assert_ptr_nonnull(t);
	return t->data;
}

static const float *routing_stat(thost *th)
{
	const arb_named *t = th_lookup(th, "moe.L1.stat");
	ck_assert_ptr_nonnull(t);
	return t->data;
}

static int same_routing(thost *th, const int32_t *ref, int64_t n)
{
	return memcmp(routing_idx(th), ref, (size_t)n * sizeof *ref) == 0;
}

static int fd_close(double g, double fd)
{
	return fabs(g - fd) <= 5e-4 + 2e-2 * fabs(fd);
}

/* dL/dx against central differences; returns entries compared */
static int check_input_grad(run *r, int stride)
{
	int64_t M = (int64_t)r->B * r->T, n = M * r->D, nk = M * r->th->conf.top_k;
	run_forward(r);
	int32_t *ref = malloc((size_t)nk * sizeof *ref);
	memcpy(ref, routing_idx(r->th), (size_t)nk * sizeof *ref);
	run_backward(r);
	float *g = malloc((size_t)n * sizeof *g);
	memcpy(g, r->dx, (size_t)n * sizeof *g);
	const float eps = 1e-2f;
	int used = 0, bad = 0, tried = 0;
	for (int64_t i = 0; i < n; i += stride, tried++) {
		float keep = r->x[i];
		r->x[i] = keep + eps;
		double lp = run_forward(r);
		int ok = same_routing(r->th, ref, nk);
		r->x[i] = keep - eps;
		double lm = run_forward(r);
		ok &= same_routing(r->th, ref, nk);
		r->x[i] = keep;
		if (!ok) continue;
		used++;
		double fd = (lp - lm) / (2.0 * eps);
		if (!fd_close(g[i], fd)) {
			if (bad < 5)
				fprintf(stderr, "dx[%lld]: analytic %.6g fd %.6g\n",
					(long long)i, g[i], fd);
			bad++;
		}
	}
	free(g);
	free(ref);
	ck_assert_msg(bad == 0, "%d of %d input gradients off", bad, used);
	ck_assert_msg(used * 4 >= tried * 3, "only %d of %d entries kept routing",
		      used, tried);
	return used;
}

/* recorded dW of `name` against central differences at `count` entries
 * (n, k) from a fixed sequence; when col0 >= 0 only columns in
 * [col0, col0 + ncol) are used */
static int check_weight_grad(run *r, const char *name, int count, int64_t col0,
			     int64_t ncol)
{
	thost *th = r->th;
	arb_tern *w = th_find(th, name);
	int64_t nk = (int64_t)r->B * r->T * th->conf.top_k;
	rec_clear();
	pert_w = NULL;
	run_forward(r);
	int32_t *ref = malloc((size_t)nk * sizeof *ref);
	memcpy(ref, routing_idx(th), (size_t)nk * sizeof *ref);
	run_backward(r);
	double *dw = rec_of(w);
	double norm = 0.0;
	for (int64_t i = 0; i < w->rows * w->cols; i++) norm += fabs(dw[i]);
	ck_assert_msg(norm > 0.0, "%s: recorded dW is zero", name);
	const float eps = 1e-2f;
	int used = 0, bad = 0;
	for (int i = 0; i < count; i++) {
		uint64_t h = arb_mix64(0x5eed + 977 * (uint64_t)i);
		int64_t n = (int64_t)(h % (uint64_t)w->rows);
		int64_t k = col0 >= 0 ? col0 + (int64_t)((h >> 32) % (uint64_t)ncol)
				      : (int64_t)((h >> 32) % (uint64_t)w->cols);
		pert_w = w;
		pert_n = n;
		pert_k = k;
		pert_eps = eps;
		double lp = run_forward(r);
		int ok = same_routing(th, ref, nk);
		pert_eps = -eps;
		double lm = run_forward(r);
		ok &= same_routing(th, ref, nk);
		pert_w = NULL;
		if (!ok) continue;
		used++;
		double fd = (lp - lm) / (2.0 * eps), g = dw[n * w->cols + k];
		if (!fd_close(g, fd)) {
			if (bad < 5)
				fprintf(stderr, "%s dW[%lld][%lld]: analytic %.6g fd "
					"%.6g\n", name, (long long)n, (long long)k,
					g, fd);
			bad++;
		}
	}
	free(ref);
	ck_assert_msg(bad == 0, "%s: %d of %d weight gradients off", name, bad,
		      used);
	ck_assert_msg(used * 4 >= count * 3, "%s: only %d of %d entries kept "
		      "routing", name, used, count);
	return used;
}

static const char *const all_tensors[] = { "router", "gate", "up", "down",
					   "a", "bg", "bu" };

/* ------------------------------------------------------------------------
 * tests */

static void fd_case(int dense)
{
	tconf c = conf_default();
	c.dense = dense ? 128 : 0;
	thost *th = th_new(wrapped_cpu(), 12, &c);
	run *r = run_new(th, 1, 7, 3);
	check_input_grad(r, 1);
	for (int t = 0; t < 7; t++)
		check_weight_grad(r, all_tensors[t], 12, -1, 0);
	run_free(r);
	th_free(th);
	rec_clear();
}

START_TEST(test_fd_dense)
{
	fd_case(1);
}
END_TEST

START_TEST(test_fd_sparse)
{
	fd_case(0);
}
END_TEST

/* forward + backward of the same weights on the dense and the sparse path */
static void dense_vs_sparse(const tconf *base, int D, int B, int T,
			    uint64_t seed)
{
	tconf cd = *base, cs = *base;
	cd.dense = 1 << 20;
	cs.dense = 0;
	arb_backend *be = wrapped_cpu();
	thost *hd = th_new(be, D, &cd), *hs = th_new(be, D, &cs);
	ck_assert_int_eq(hd->H.n_tern, hs->H.n_tern);
	run *rd = run_new(hd, B, T, seed), *rs = run_new(hs, B, T, seed);
	size_t n = (size_t)B * T * D;
	double ld = run_forward(rd);
	double ls = run_forward(rs);
	ck_assert_int_eq(arb_test_close("y", rs->y, rd->y, n, 1e-5f, 1e-5f), 0);
	ck_assert_msg(fabs(ld - ls) <= 1e-5 * (1 + fabs(ld)), "loss %g vs %g",
		      ld, ls);
	rec_clear();
	run_backward(rd);
	int nd = nrec;
	const arb_tern *wd[MAXREC];
	double *dwd[MAXREC];
	for (int i = 0; i < nd; i++) {
		wd[i] = rec_w[i];
		dwd[i] = rec_dw[i];
	}
	nrec = 0;
	run_backward(rs);
	ck_assert_int_eq(nrec, nd);
	ck_assert_int_eq(arb_test_close("dx", rs->dx, rd->dx, n, 1e-5f, 1e-5f), 0);
	for (int i = 0; i < nd; i++) {
		const arb_tern *a = wd[i], *b = NULL;
		double *db = NULL;
		for (int j = 0; j < nrec; j++)
			if (!strcmp(rec_w[j]->name, a->name)) {
				b = rec_w[j];
				db = rec_dw[j];
			}
		ck_assert_ptr_nonnull(b);
		int64_t m = a->rows * a->cols;
		int bad = 0;
		for (int64_t q = 0; q < m; q++)
			bad += !(fabs(dwd[i][q] - db[q]) <= 1e-5 * (1 + fabs(db[q])));
		ck_assert_msg(bad == 0, "%s: %d dW entries differ", a->name, bad);
		ck_assert_msg(memcmp(a->T_accum, b->T_accum, (size_t)m) == 0,
			      "%s: votes differ", a->name);
		free(dwd[i]);
	}
	rec_clear();
	/* the same routing on both paths */
	ck_assert(memcmp(routing_idx(hd), routing_idx(hs),
			 (size_t)B * T * base->top_k * sizeof(int32_t)) == 0);
	run_free(rd);
	run_free(rs);
	th_free(hd);
	th_free(hs);
}

START_TEST(test_dense_equals_sparse)
{
	tconf c = conf_default();
	dense_vs_sparse(&c, 12, 2, 5, 11);
	c.experts = 6;
	c.top_k = 3;
	c.rank = 2;
	c.hidden = 0;     /* 4 * D */
	dense_vs_sparse(&c, 8, 3, 4, 12);
}
END_TEST

/* token counts that fit no tile size: 37 and 3 x 13 tokens */
START_TEST(test_odd_token_counts)
{
	tconf c = conf_default();
	c.experts = 5;
	c.top_k = 3;
	c.rank = 4;
	c.hidden = 24;
	dense_vs_sparse(&c, 20, 1, 37, 21);
	dense_vs_sparse(&c, 20, 3, 13, 22);
	c.dense = 0;
	thost *th = th_new(wrapped_cpu(), 20, &c);
	run *r = run_new(th, 3, 13, 23);
	check_input_grad(r, 7);
	check_weight_grad(r, "bg", 8, -1, 0);
	check_weight_grad(r, "a", 8, -1, 0);
	run_free(r);
	th_free(th);
	rec_clear();
}
END_TEST

static void set_rows(arb_tern *t, const int *row_val)
{
	for (int64_t rr = 0; rr < t->rows; rr++)
		for (int64_t cc = 0; cc < t->cols; cc++)
			arb_tern_set(t, rr, cc, row_val[rr]);
}

START_TEST(test_routing_ties)
{
	for (int dense = 0; dense < 2; dense++) {
		tconf c = conf_default();
		c.dense = dense ? 128 : 0;
		thost *th = th_new(arb_backend_cpu(), 12, &c);
		run *r = run_new(th, 2, 3, 31);
		int64_t M = 6;
		for (int64_t i = 0; i < M * 12; i++) r->x[i] = 0.25f + fabsf(r->x[i]);
		arb_tern *router = th_find(th, "router");
		/* all logits equal: experts 0 and 1, half each */
		int zero[4] = { 0, 0, 0, 0 };
		set_rows(router, zero);
		run_forward(r);
		const int32_t *idx = routing_idx(th);
		const float *w = routing_w(th);
		for (int64_t m = 0; m < M; m++) {
			ck_assert_int_eq(idx[2 * m], 0);
			ck_assert_int_eq(idx[2 * m + 1], 1);
			ck_assert_float_eq(w[2 * m], 0.5f);
			ck_assert_float_eq(w[2 * m + 1], 0.5f);
		}
		/* experts 1 and 3 tie on top (positive inputs, +1 rows) */
		int two[4] = { 0, 1, 0, 1 };
		set_rows(router, two);
		run_forward(r);
		idx = routing_idx(th);
		for (int64_t m = 0; m < M; m++) {
			ck_assert_int_eq(idx[2 * m], 1);
			ck_assert_int_eq(idx[2 * m + 1], 3);
		}
		/* three-way tie for two slots: the two lowest indices */
		int three[4] = { 0, 1, 1, 1 };
		set_rows(router, three);
		run_forward(r);
		idx = routing_idx(th);
		w = routing_w(th);
		const float *st = routing_stat(th);
		for (int64_t m = 0; m < M; m++) {
			ck_assert_int_eq(idx[2 * m], 1);
			ck_assert_int_eq(idx[2 * m + 1], 2);
			ck_assert_float_eq(w[2 * m], 0.5f);
		}
		ck_assert_float_eq(st[1 + 0], 0.0f);
		ck_assert_float_eq(st[1 + 1], (float)M);
		ck_assert_float_eq(st[1 + 2], (float)M);
		ck_assert_float_eq(st[1 + 3], 0.0f);
		run_backward(r);
		for (int64_t i = 0; i < M * 12; i++) ck_assert(isfinite(r->dx[i]));
		run_free(r);
		th_free(th);
	}
}
END_TEST

/* top-1 routing with every token on expert 2: experts 0, 1, 3 get no
 * tokens; their B blocks and A rows get exactly zero gradient */
START_TEST(test_one_expert_takes_all)
{
	tconf c = conf_default();
	c.top_k = 1;
	int rows[4] = { 0, 0, 1, 0 };
	for (int dense = 0; dense < 2; dense++) {
		c.dense = dense ? 128 : 0;
		thost *th = th_new(wrapped_cpu(), 12, &c);
		set_rows(th_find(th, "router"), rows);
		run *r = run_new(th, 1, 9, 41);
		for (int64_t i = 0; i < 9 * 12; i++) r->x[i] = 0.25f + fabsf(r->x[i]);
		run_forward(r);
		const int32_t *idx = routing_idx(th);
		const float *w = routing_w(th);
		for (int m = 0; m < 9; m++) {
			ck_assert_int_eq(idx[m], 2);
			ck_assert_float_eq(w[m], 1.0f);
		}
		ck_assert_float_eq(routing_stat(th)[1 + 2], 9.0f);
		rec_clear();
		run_backward(r);
		arb_tern *bg = th_find(th, "bg"), *bu = th_find(th, "bu"),
			 *a = th_find(th, "a");
		int rk = (int)c.rank;
		for (int t = 0; t < 2; t++) {
			arb_tern *b = t ? bu : bg;
			double *dw = rec_of(b), busy = 0.0;
			for (int64_t n = 0; n < b->rows; n++)
				for (int64_t k = 0; k < b->cols; k++) {
					double v = dw[n * b->cols + k];
					if (k / rk == 2) busy += fabs(v);
					else ck_assert(v == 0.0);
				}
			ck_assert(busy > 0.0);
		}
		double *dwa = rec_of(a);
		for (int64_t n = 0; n < a->rows; n++)
			for (int64_t k = 0; k < a->cols; k++)
				if (n / (2 * rk) != 2)
					ck_assert(dwa[n * a->cols + k] == 0.0);
		/* the busy expert's low-rank weights against differences */
		check_weight_grad(r, "bg", 6, 2 * rk, rk);
		check_weight_grad(r, "bu", 6, 2 * rk, rk);
		run_free(r);
		th_free(th);
		rec_clear();
	}
	dense_vs_sparse(&c, 12, 1, 9, 41);
}
END_TEST

START_TEST(test_schema_and_refusals)
{
	const arb_plugin *d = moe_desc();
	const char *keys[] = { "layers", "trunk", "experts", "top_k", "rank",
			       "hidden", "balance", "dense_dispatch_max_tokens" };
	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
		const arb_conf_key *k = d->schema;
		while (k->key && strcmp(k->key, keys[i])) k++;
		ck_assert_msg(k->key != NULL, "schema lacks %s", keys[i]);
		ck_assert_ptr_nonnull(k->def);
	}
	/* top_k > experts is refused with a message */
	tconf c = conf_default();
	thost *th = th_new(arb_backend_cpu(), 12, &c);
	arb_error err = { 0 };
	ck_assert_int_eq(arb_harness_set(&th->H, "top_k", "5", &err), ARB_OK);
	void *self = NULL;
	arb_status s = d->create(&th->H.host, (const arb_conf *)&th->H.conf, "moe2",
				 &self, &err);
	ck_assert_int_ne(s, ARB_OK);
	ck_assert_msg(strstr(err.msg, "top_k") != NULL, "message: %s", err.msg);
	d->destroy(self);
	d->destroy(NULL);
	th_free(th);
}
END_TEST

/* a moe declared with trunk = false (called through the host only) */
START_TEST(test_trunk_false)
{
	const arb_plugin *d = moe_desc();
	int D = 12, B = 2, T = 5;
	size_t n = (size_t)B * T * D;
	arb_harness H;
	arb_model_info mi = { sizeof mi, D, 2, 1, 64, 4, 4, 1234 };
	arb_harness_init(&H, arb_backend_cpu(), &mi);
	arb_harness_use(&H, d);
	arb_error err = { 0 };
	ck_assert_int_eq(arb_harness_set(&H, "trunk", "false", &err), ARB_OK);
	ck_assert_int_eq(arb_harness_set(&H, "hidden", "10", &err), ARB_OK);
	ck_assert_int_eq(arb_harness_set(&H, "experts", "4", &err), ARB_OK);
	ck_assert_int_eq(arb_harness_set(&H, "layers", "1", &err), ARB_OK);
	ck_assert_int_eq(arb_harness_create(&H, "gx", &err), ARB_ERR_CONFIG);
	ck_assert_msg(strstr(err.msg, "[gx] layers: must be empty with trunk = false"),
		      "%s", err.msg);
	arb_harness_free(&H);
	arb_harness_init(&H, arb_backend_cpu(), &mi);
	arb_harness_use(&H, d);
	ck_assert_int_eq(arb_harness_set(&H, "trunk", "false", &err), ARB_OK);
	ck_assert_int_eq(arb_harness_set(&H, "hidden", "10", &err), ARB_OK);
	ck_assert_int_eq(arb_harness_set(&H, "experts", "4", &err), ARB_OK);
	ck_assert_msg(arb_harness_create(&H, "gx", &err) == ARB_OK, "%s", err.msg);
	ck_assert_int_eq(H.n_tern, 7);
	static const char *const names[] = { "gx.router", "gx.gate", "gx.up",
		"gx.down", "gx.a", "gx.bg", "gx.bu" };
	for (int i = 0; i < 7; i++) ck_assert_str_eq(H.tern[i]->name, names[i]);
	float *x = malloc(n * 4), *y0 = calloc(n, 4), *y7 = calloc(n, 4);
	arb_test_fill(x, n, 3);
	arb_io io;
	arb_test_io(&io, H.host.backend(&H.host), B, T, D);
	io.x = x;
	io.layer = 0;
	io.y = y0;
	ck_assert_int_eq(d->forward(H.self, &io, &err), ARB_OK);
	ck_assert_ptr_nonnull(H.host.lookup(&H.host, "gx.topk_idx"));
	io.layer = 7;
	io.y = y7;
	ck_assert_int_eq(d->forward(H.self, &io, &err), ARB_OK);
	ck_assert(memcmp(y0, y7, n * 4) == 0);
	double s = 0;
	for (size_t i = 0; i < n; i++) s += fabs(y0[i]);
	ck_assert_msg(s > 1e-3, "|y| = %g", s);
	free(x);
	free(y0);
	free(y7);
	arb_harness_free(&H);
}
END_TEST

/* ------------------------------------------------------------------------
 * GPU against CPU. The CUDA backend rounds activations to bf16 inside its
 * ternary products (core/cuda/linear.cu), so floats are compared by relative
 * norm (||gpu - cpu|| <= 3e-2 ||cpu||) and the votes, whose signs flip where
 * |dW| is within the bf16 error, must agree on >= 90% of the weights. */

static double rel_norm(const float *a, const float *b, size_t n)
{
	double num = 0.0, den = 0.0;
	for (size_t i = 0; i < n; i++) {
		num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
		den += (double)b[i] * b[i];
	}
	return sqrt(num / (den > 0.0 ? den : 1.0));
}

static void gpu_case(int dense)
{
	arb_error err = { 0 };
	arb_backend *gpu = arb_backend_cuda(&err);
	ck_assert_msg(gpu != NULL, "cuda backend: %s", err.msg);
	tconf c = conf_default();
	c.experts = 6;
	c.top_k = 2;
	c.rank = 4;
	c.hidden = 40;
	c.dense = dense ? 1 << 20 : 0;
	int D = 24, B = 3, T = 11;
	size_t n = (size_t)B * T * D;
	thost *hc = th_new(arb_backend_cpu(), D, &c), *hg = th_new(gpu, D, &c);
	run *r = run_new(hc, B, T, 51);
	run_forward(r);
	/* the same on the GPU */
	float *x = gpu->alloc(gpu, n * 4), *y = gpu->alloc(gpu, n * 4),
	      *R = gpu->alloc(gpu, n * 4), *dx = gpu->alloc(gpu, n * 4);
	gpu->upload(gpu, x, r->x, n * 4);
	gpu->upload(gpu, R, r->R, n * 4);
	arb_io io;
	arb_test_io(&io, gpu, B, T, D);
	io.layer = 1;
	io.training = 1;
	io.x = x;
	io.y = y;
	ck_assert_int_eq(moe_desc()->forward(hg->H.self, &io, &err), ARB_OK);
	float *yg = malloc(n * 4), *dxg = malloc(n * 4);
	gpu->download(gpu, yg, y, n * 4);
	double ey = rel_norm(yg, r->y, n);
	ck_assert_msg(ey <= 3e-2, "gpu y: relative error %g", ey);
	ck_assert_msg(fabs(io.aux_loss - r->aux) <= 1e-2 * (1 + fabs(r->aux)),
		      "aux %g vs %g", io.aux_loss, r->aux);
	if (dense) {
		/* the one-launch routing (route_dense) against the separate
		 * route / stats / dispatch kernels: bitwise the same */
		float *y2 = gpu->alloc(gpu, n * 4), *y2h = malloc(n * 4);
		double aux1 = io.aux_loss;
		setenv("ARB_MOE_UNFUSED", "1", 1);
		io.y = y2;
		ck_assert_int_eq(moe_desc()->forward(hg->H.self, &io, &err), ARB_OK);
		unsetenv("ARB_MOE_UNFUSED");
		gpu->download(gpu, y2h, y2, n * 4);
		ck_assert_msg(memcmp(y2h, yg, n * 4) == 0, "fused routing: y differs");
		ck_assert_msg(io.aux_loss == aux1, "fused routing: aux %.9g vs %.9g",
			      aux1, io.aux_loss);
		io.y = y;
		gpu->free(gpu, y2);
		free(y2h);
	}
	run_backward(r);
	arb_vote v = { ARB_VOTE_SIGN, 1, 1, 5, 0 };
	io.y = NULL;
	io.dy = R;
	io.dx = dx;
	io.vote = &v;
	ck_assert_int_eq(moe_desc()->backward(hg->H.self, &io, &err), ARB_OK);
	gpu->download(gpu, dxg, dx, n * 4);
	double ex = rel_norm(dxg, r->dx, n);
	ck_assert_msg(ex <= 3e-2, "gpu dx: relative error %g", ex);
	fprintf(stderr, "moe gpu vs cpu (%s): y rel %.2e, dx rel %.2e\n",
		dense ? "dense" : "sparse", ey, ex);
	/* votes: identical except where |dW| is within the bf16 error */
	for (int i = 0; i < hc->H.n_tern; i++) {
		arb_tern *a = hc->H.tern[i], *b = hg->H.tern[i];
		int64_t m = a->rows * a->cols, diff = 0;
		int8_t *ta = malloc((size_t)m);
		gpu->download(gpu, ta, b->T_accum, (size_t)m);
		for (int64_t q = 0; q < m; q++) diff += ta[q] != a->T_accum[q];
		fprintf(stderr, "  %s: %lld of %lld votes differ\n", a->name,
			(long long)diff, (long long)m);
		ck_assert_msg(diff * 10 <= m, "%s: %lld of %lld votes differ",
			      a->name, (long long)diff, (long long)m);
		free(ta);
	}
	gpu->free(gpu, x);
	gpu->free(gpu, y);
	gpu->free(gpu, R);
	gpu->free(gpu, dx);
	free(yg);
	free(dxg);
	run_free(r);
	th_free(hc);
	th_free(hg);
}

START_TEST(test_gpu_dense)
{
	gpu_case(1);
}
END_TEST

START_TEST(test_gpu_sparse)
{
	gpu_case(0);
}
END_TEST

Suite *suite_moe(void)
{
	Suite *s = suite_create("moe");
	TCase *tc = tcase_create("cpu");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_schema_and_refusals);
	tcase_add_test(tc, test_fd_dense);
	tcase_add_test(tc, test_fd_sparse);
	tcase_add_test(tc, test_dense_equals_sparse);
	tcase_add_test(tc, test_odd_token_counts);
	tcase_add_test(tc, test_routing_ties);
	tcase_add_test(tc, test_one_expert_takes_all);
	tcase_add_test(tc, test_trunk_false);
	suite_add_tcase(s, tc);
	TCase *tg = tcase_create("gpu");
	tcase_set_tags(tg, "gpu");
	tcase_set_timeout(tg, 60);
	tcase_add_test(tg, test_gpu_dense);
	tcase_add_test(tg, test_gpu_sparse);
	suite_add_tcase(s, tg);
	return s;
}
