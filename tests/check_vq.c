/*
 * tests/check_vq.c -- the vq plugin (TernaryVQCodebook) against
 * arb/harness.h's test host: the CPU backend, tern_create over the backend's
 * tern_alloc/tern_init, a name table for publish/lookup and a key/value
 * config. The plugin source is included (VQ_TEST_INCLUDE: no exported
 * descriptor, no CUDA launchers) so that the lookups can be called directly;
 * the GPU case loads the built vq.so.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core.h"
#include "arb/harness.h"
#include "testutil.h"

#define VQ_TEST_INCLUDE 1
#include "../plugins/vq/vq.c"

/* ------------------------------------------------------------------------- *
 * test host: arb/harness.h's (the key/value config over the plugin schema's
 * defaults); tensors initialize as the core's registry would with
 * accum_init 2 */

typedef arb_harness thost;

#define th_set arb_test_harness_set

/* the suites test the output path too: Q starts random (the default,
 * out_init = zero, has its own case) */
static thost *th_new(arb_backend *be, int D, int B, int T)
{
	thost *t = arb_test_harness(be, &vq_plugin, D, B, T);
	th_set(t, "out_init", "random");
	return t;
}

#define th_free arb_test_harness_free

/* the instance (destroyed by th_free) */
static vq *th_vq(thost *t, const char *inst)
{
	return arb_test_harness_create(t, inst);
}

/* the backend the instance was created on */
static arb_backend *th_be(thost *t)
{
	return t->host.backend(&t->host);
}

/* run forward on x (M x D) with y = copy of x (residual slot) */
static void run_forward(vq *q, thost *t, const float *x, float *y, int B, int T,
			int training)
{
	arb_io io;
	arb_test_io(&io, th_be(t), B, T, q->D);
	io.training = training;
	io.x = x;
	io.y = y;
	arb_error err = { 0 };
	ck_assert_msg(vq_forward(q, &io, &err) == ARB_OK, "forward: %s", err.msg);
}

/* brute force nearest row in L2 (double) over weights decoded by the core */
static int32_t brute(const arb_tern *C, const float *z)
{
	float *w = malloc((size_t)C->cols * sizeof *w);
	double best = INFINITY;
	int32_t bi = -1;
	for (int64_t r = 0; r < C->rows; r++) {
		arb_tern_row_weights(C, r, w);
		double d = 0;
		for (int64_t c = 0; c < C->cols; c++) {
			double e = (double)z[c] - w[c];
			d += e * e;
		}
		if (d < best) { best = d; bi = (int32_t)r; }
	}
	free(w);
	return bi;
}

/* ------------------------------------------------------------------------- */

START_TEST(exact_equals_brute_force)
{
	thost *t = th_new(arb_backend_cpu(), 32, 2, 16);
	th_set(t, "size", "300");
	th_set(t, "dim", "16");
	vq *q = th_vq(t, "ex");
	ck_assert_int_eq(q->exact, 1);
	const int64_t M = 200;
	float *z = malloc((size_t)M * 16 * sizeof *z);
	int32_t *codes = malloc((size_t)M * sizeof *codes);
	arb_test_fill_dyadic(z, (size_t)M * 16, 7);
	for (int64_t i = 0; i < M * 16; i++) z[i] *= 2.0f; /* [-2, 2], exact */
	cpu_lookup(q, z, M, codes);
	for (int64_t m = 0; m < M; m++)
		ck_assert_int_eq(codes[m], brute(q->C, z + m * 16));
	/* end to end: forward publishes the codes of z = P x */
	int B = 2, T = 16;
	float *x = malloc((size_t)B * T * 32 * sizeof *x);
	float *y = malloc((size_t)B * T * 32 * sizeof *y);
	arb_test_fill(x, (size_t)B * T * 32, 3);
	memcpy(y, x, (size_t)B * T * 32 * sizeof *y);
	run_forward(q, t, x, y, B, T, 0);
	const arb_named *nt = t->host.lookup(&t->host, "vq.ex.codes");
	ck_assert_ptr_nonnull(nt);
	ck_assert_int_eq(nt->dtype, ARB_I32);
	ck_assert_int_eq(nt->ndim, 1);
	ck_assert_int_eq(nt->shape[0], B * T);
	const int32_t *pc = nt->data;
	float *zz = malloc((size_t)B * T * 16 * sizeof *zz);
	float *uu = malloc((size_t)B * T * 16 * sizeof *uu);
	float *zn = malloc((size_t)B * T * 16 * sizeof *zn);
	float rs[32];
	t->be->linear_forward(t->be, q->P, x, zz, B * T, 0);
	/* evaluation forward before any training batch: mu = 0, the query is
	 * zn = z_rms * z / rms(z) */
	for (int d = 0; d < 16; d++) ck_assert(q->mu[d] == 0.0f);
	vq_norm_rows(zz, q->mu, B * T, 16, (float)q->z_rms, uu, rs, zn);
	int differ = 0;
	for (int m = 0; m < B * T; m++) {
		double s2 = 0;
		for (int d = 0; d < 16; d++) s2 += (double)zn[m * 16 + d] * zn[m * 16 + d];
		ck_assert(fabs(sqrt(s2 / 16) - q->z_rms) < 1e-3);
		ck_assert_int_eq(pc[m], brute(q->C, zn + m * 16));
		/* y = x + out_scale * Q c */
		differ += y[m * 32] != x[m * 32];
	}
	ck_assert_int_gt(differ, 0);
	ck_assert_ptr_null(t->host.lookup(&t->host, "vq.nope.codes"));
	free(zz); free(uu); free(zn); free(x); free(y); free(z); free(codes);
	th_free(t);
}
END_TEST

/* queries near codebook rows: decoded row + small noise */
static void near_queries(const arb_tern *C, int64_t nq, float *z, int32_t *src)
{
	float *w = malloc((size_t)C->cols * sizeof *w);
	float *noise = malloc((size_t)C->cols * sizeof *noise);
	for (int64_t i = 0; i < nq; i++) {
		int64_t r = (int64_t)(arb_mix64(99 + (uint64_t)i) % (uint64_t)C->rows);
		src[i] = (int32_t)r;
		arb_tern_row_weights(C, r, w);
		arb_test_fill(noise, (size_t)C->cols, 1000 + (uint64_t)i);
		for (int64_t c = 0; c < C->cols; c++)
			z[i * C->cols + c] = w[c] + 0.3f * noise[c];
	}
	free(w);
	free(noise);
}

START_TEST(candidate_recall_and_determinism)
{
	thost *t = th_new(arb_backend_cpu(), 16, 1, 8);
	th_set(t, "size", "50000");
	th_set(t, "dim", "64");
	th_set(t, "exact_max", "0");
	vq *q = th_vq(t, "big");
	ck_assert_int_eq(q->exact, 0);
	/* every row sits in exactly one bucket per table */
	int64_t members = 0;
	for (int64_t b = 0; b < ((int64_t)q->tables << q->bits); b++)
		for (int32_t r = q->head[b]; r >= 0;
		     r = q->next[(b >> q->bits) * q->size + r])
			members++;
	ck_assert_int_eq(members, (int64_t)q->tables * q->size);

	const int64_t nq = 300;
	float *z = malloc((size_t)nq * 64 * sizeof *z);
	int32_t *src = malloc((size_t)nq * sizeof *src);
	int32_t *a = malloc((size_t)nq * sizeof *a), *b = malloc((size_t)nq * sizeof *b);
	int32_t *ex = malloc((size_t)nq * sizeof *ex);
	near_queries(q->C, nq, z, src);
	cpu_lookup(q, z, nq, a);
	cpu_lookup(q, z, nq, b);
	ck_assert_mem_eq(a, b, (size_t)nq * sizeof *a);
	cpu_exact(q, z, nq, ex);
	int hit = 0;
	for (int64_t i = 0; i < nq; i++) hit += a[i] == ex[i];
	double recall = (double)hit / (double)nq;
	fprintf(stderr, "vq: candidate recall@1 vs exact on 50000 rows: %.3f\n",
		recall);
	ck_assert_msg(recall >= 0.9, "recall@1 %.3f < 0.9", recall);
	/* a second instance over the same tensors' seed: same ids */
	thost *t2 = th_new(arb_backend_cpu(), 16, 1, 8);
	th_set(t2, "size", "50000");
	th_set(t2, "dim", "64");
	th_set(t2, "exact_max", "0");
	vq *q2 = th_vq(t2, "big");
	cpu_lookup(q2, z, nq, b);
	ck_assert_mem_eq(a, b, (size_t)nq * sizeof *a);
	th_free(t2);
	free(z); free(src); free(a); free(b); free(ex);
	th_free(t);
}
END_TEST

static void run_backward(vq *q, thost *t, const float *dy, float *dx, int B,
			 int T, const arb_vote *v)
{
	arb_io io;
	arb_test_io(&io, th_be(t), B, T, q->D);
	io.training = 1;
	io.dy = dy;
	io.dx = dx;
	io.vote = v;
	arb_error err = { 0 };
	ck_assert_msg(vq_backward(q, &io, &err) == ARB_OK, "backward: %s", err.msg);
}

START_TEST(sparse_update_and_index_refresh)
{
	const int B = 2, T = 8, D = 16, M = B * T;
	thost *t = th_new(arb_backend_cpu(), D, B, T);
	th_set(t, "size", "2000");
	th_set(t, "dim", "16");
	th_set(t, "exact_max", "0");
	th_set(t, "bits", "10");
	vq *q = th_vq(t, "sp");
	arb_tern *C = q->C;
	const int64_t rb = C->row_bytes;
	uint8_t *pk = malloc((size_t)(C->rows * rb));
	int8_t *acc = malloc((size_t)(C->rows * C->cols));
	int8_t *E = malloc((size_t)(C->rows * C->groups));
	memcpy(pk, C->packed, (size_t)(C->rows * rb));
	memcpy(acc, C->T_accum, (size_t)(C->rows * C->cols));
	memcpy(E, C->E, (size_t)(C->rows * C->groups));

	float *x = malloc((size_t)M * D * sizeof *x), *y = malloc((size_t)M * D * sizeof *y);
	float *dy = malloc((size_t)M * D * sizeof *dy), *dx = calloc((size_t)M * D, sizeof *dx);
	arb_test_fill(x, (size_t)M * D, 11);
	for (int i = 0; i < M * D; i++) x[i] *= 3.0f;
	memcpy(y, x, (size_t)M * D * sizeof *y);
	arb_test_fill(dy, (size_t)M * D, 12);
	run_forward(q, t, x, y, B, T, 1);
	int32_t codes[16];
	memcpy(codes, q->codes_h, sizeof codes);
	arb_vote v = { ARB_VOTE_SIGN, 3, 1, 1234, 1 };
	run_backward(q, t, dy, dx, B, T, &v);
	arb_step p;
	memset(&p, 0, sizeof p);
	p.threshold = 4;
	p.e_threshold = 8;
	p.e_min = -30;
	p.e_max = 10;
	p.seed = 1234;
	p.t = 1;
	arb_step_stats stt;
	memset(&stt, 0, sizeof stt);
	t->be->tern_step(t->be, C, &p, &stt);
	ck_assert_int_gt(stt.flips, 0);
	arb_error err = { 0 };
	ck_assert_msg(vq_after_step(q, 1, &err) == ARB_OK, "%s", err.msg);

	int changed = 0;
	for (int64_t r = 0; r < C->rows; r++) {
		int used = 0;
		for (int m = 0; m < M; m++) used |= codes[m] == r;
		int same = memcmp(pk + r * rb, C->packed + r * rb, (size_t)rb) == 0 &&
			   memcmp(acc + r * C->cols, C->T_accum + r * C->cols,
				  (size_t)C->cols) == 0 &&
			   memcmp(E + r * C->groups, C->E + r * C->groups,
				  (size_t)C->groups) == 0;
		if (!used) ck_assert_msg(same, "untouched row %lld changed", (long long)r);
		else changed += !same;
	}
	ck_assert_int_gt(changed, 0);
	/* index matches the rows' current sign patterns */
	for (int tb = 0; tb < q->tables; tb++) {
		int64_t cnt = 0;
		for (int64_t k = 0; k < (1 << q->bits); k++) {
			int64_t hb = ((int64_t)tb << q->bits) | k;
			for (int32_t r = q->head[hb]; r >= 0;
			     r = q->next[(int64_t)tb * q->size + r]) {
				uint64_t s = vq_snap_of(C->packed + (int64_t)r * rb, 16);
				ck_assert_int_eq(vq_key(q, tb, s), k);
				cnt++;
			}
		}
		ck_assert_int_eq(cnt, C->rows);
	}
	free(pk); free(acc); free(E); free(x); free(y); free(dy); free(dx);
	th_free(t);
}
END_TEST

START_TEST(duplicate_indices_one_vote)
{
	const int B = 1, T = 8, D = 16, M = B * T;
	thost *t = th_new(arb_backend_cpu(), D, B, T);
	th_set(t, "size", "64");
	th_set(t, "dim", "16");
	vq *q = th_vq(t, "dup");
	arb_tern *C = q->C;
	float *x = malloc((size_t)M * D * sizeof *x), *y = malloc((size_t)M * D * sizeof *y);
	arb_test_fill(x, (size_t)M * D, 21);
	/* positions 0..3 identical, 4..7 identical -> duplicate codes */
	for (int m = 1; m < 4; m++) memcpy(x + m * D, x, D * sizeof *x);
	for (int m = 5; m < 8; m++) memcpy(x + m * D, x + 4 * D, D * sizeof *x);
	for (int m = 4; m < 8; m++)
		for (int d = 0; d < D; d++) x[m * D + d] += 0.01f * (float)(m - 4);
	memcpy(y, x, (size_t)M * D * sizeof *y);
	run_forward(q, t, x, y, B, T, 1);
	ck_assert_int_eq(q->codes_h[0], q->codes_h[3]);
	int8_t *acc = malloc((size_t)(C->rows * C->cols));
	memcpy(acc, C->T_accum, (size_t)(C->rows * C->cols));
	float *dy = calloc((size_t)M * D, sizeof *dy), *dx = calloc((size_t)M * D, sizeof *dx);
	arb_vote v = { ARB_VOTE_SIGN, 1, 1, 1234, 1 };
	run_backward(q, t, dy, dx, B, T, &v);
	/* expected: per touched row one sign vote of the summed (c - z) */
	for (int64_t r = 0; r < C->rows; r++) {
		for (int d = 0; d < 16; d++) {
			float s = 0.0f;
			int n = 0;
			for (int m = 0; m < M; m++)
				if (q->codes_h[m] == r) {
					s += q->dcode[m * 16 + d];
					n++;
				}
			int want = acc[r * 16 + d];
			if (n) {
				int sg = (s > 0) - (s < 0);
				want -= sg;
				if (want > 127) want = 127;
				if (want < -127) want = -127;
			}
			ck_assert_int_eq(C->T_accum[r * 16 + d], want);
		}
	}
	free(acc); free(x); free(y); free(dy); free(dx);
	th_free(t);
}
END_TEST

/* aux loss + w . out_scale Q zn(P x), zn the normalized query (mu = the
 * batch mean in training, else the running mean); straight-through: the code
 * value moves with zn */
static double surrogate_loss(vq *q, thost *t, const float *x, const float *w,
			     int B, int T, int training, const int32_t *codes0,
			     int *stable)
{
	const int M = B * T, D = q->D, dim = q->dim;
	float *y = calloc((size_t)M * D, sizeof *y);
	float *zz = malloc((size_t)M * dim * sizeof *zz);
	float *uu = malloc((size_t)M * dim * sizeof *uu);
	float *zn = malloc((size_t)M * dim * sizeof *zn);
	float *rs = malloc((size_t)M * sizeof *rs);
	float *mu = malloc((size_t)dim * sizeof *mu);
	float *oo = malloc((size_t)M * D * sizeof *oo);
	double aux = 0;
	{
		arb_io io;
		arb_test_io(&io, th_be(t), B, T, D);
		io.x = x; io.y = y;
		io.training = training;
		arb_error err = { 0 };
		ck_assert(vq_forward(q, &io, &err) == ARB_OK);
		aux = io.aux_loss;
	}
	for (int m = 0; m < M; m++) *stable &= q->codes_h[m] == codes0[m];
	t->be->linear_forward(t->be, q->P, x, zz, M, 0);
	for (int d = 0; d < dim; d++) {
		double s = 0;
		for (int m = 0; m < M; m++) s += zz[m * dim + d];
		mu[d] = training ? (float)(s / M)
				 : (float)((double)q->mu_q[d] / 65536.0);
	}
	vq_norm_rows(zz, mu, M, dim, (float)q->z_rms, uu, rs, zn);
	t->be->linear_forward(t->be, q->Q, zn, oo, M, 0);
	double L = aux;
	for (int i = 0; i < M * D; i++) L += (double)w[i] * q->out_scale * oo[i];
	free(y); free(zz); free(uu); free(zn); free(rs); free(mu); free(oo);
	return L;
}

START_TEST(straight_through_gradient_fd)
{
	const int B = 1, T = 4, D = 16, M = B * T;
	thost *t = th_new(arb_backend_cpu(), D, B, T);
	th_set(t, "size", "32");
	th_set(t, "dim", "8");
	th_set(t, "beta", "2.0");
	th_set(t, "out_scale", "0.5");
	vq *q = th_vq(t, "fd");
	float *x = malloc((size_t)M * D * sizeof *x), *y = malloc((size_t)M * D * sizeof *y);
	float *w = malloc((size_t)M * D * sizeof *w), *dx = calloc((size_t)M * D, sizeof *dx);
	arb_test_fill(x, (size_t)M * D, 31);
	arb_test_fill(w, (size_t)M * D, 32);
	float *fd = malloc((size_t)M * D * sizeof *fd);
	/* evaluation (mu = running mean = 0 here), then training (mu = batch
	 * mean, with its gradient) */
	for (int tr = 0; tr < 2; tr++) {
		memcpy(y, x, (size_t)M * D * sizeof *y);
		run_forward(q, t, x, y, B, T, tr);
		int32_t codes0[4];
		memcpy(codes0, q->codes_h, sizeof codes0);
		memset(dx, 0, (size_t)M * D * sizeof *dx);
		run_backward(q, t, w, dx, B, T, NULL);
		const float h = 1e-2f;
		int stable = 1;
		for (int i = 0; i < M * D; i++) {
			float x0 = x[i];
			x[i] = x0 + h;
			double lp = surrogate_loss(q, t, x, w, B, T, tr, codes0, &stable);
			x[i] = x0 - h;
			double lm = surrogate_loss(q, t, x, w, B, T, tr, codes0, &stable);
			x[i] = x0;
			fd[i] = (float)((lp - lm) / (2.0 * h));
		}
		ck_assert_msg(stable, "code assignment moved under the FD step (training %d)",
			      tr);
		ck_assert_int_eq(arb_test_close(tr ? "vq dx (training)" : "vq dx (eval)",
						dx, fd, (size_t)M * D, 2e-3f, 1e-2f), 0);
	}
	free(x); free(y); free(w); free(dx); free(fd);
	th_free(t);
}
END_TEST

START_TEST(usage_save_load_and_metrics)
{
	const int B = 2, T = 8, D = 16, M = B * T;
	thost *t = th_new(arb_backend_cpu(), D, B, T);
	th_set(t, "size", "3000");
	th_set(t, "dim", "16");
	th_set(t, "exact_max", "0");
	th_set(t, "bits", "8");
	vq *q = th_vq(t, "us");
	float *x = malloc((size_t)M * D * sizeof *x), *y = malloc((size_t)M * D * sizeof *y);
	for (int it = 0; it < 3; it++) {
		arb_test_fill(x, (size_t)M * D, 40 + (uint64_t)it);
		memcpy(y, x, (size_t)M * D * sizeof *y);
		run_forward(q, t, x, y, B, T, 1);
	}
	int64_t tot = 0;
	for (int64_t r = 0; r < q->size; r++) tot += q->usage[r];
	ck_assert_int_eq(tot, 3 * M);
	char buf[256];
	int n = vq_metrics(q, buf, sizeof buf);
	ck_assert_int_gt(n, 0);
	ck_assert_ptr_nonnull(strstr(buf, "vq.us.ppl="));
	double ppl = atof(strstr(buf, "vq.us.ppl=") + 10);
	ck_assert(ppl >= 1.0 && ppl <= 3.0 * M);
	/* lookup statistics of the last forward: every query found a
	 * candidate, and the candidates are a strict subset of the rows */
	ck_assert_int_eq(q->lk_q, M);
	ck_assert_int_eq(q->lk_miss, 0);
	ck_assert(q->lk_scan > 0 && q->lk_scan < (int64_t)M * q->size);
	ck_assert_ptr_nonnull(strstr(buf, "vq.us.miss=0 "));
	ck_assert(atof(strstr(buf, "vq.us.scan=") + 11) ==
		  (double)(int64_t)((double)q->lk_scan / M + 0.5));

	arb_test_mem ms = { 0 };
	arb_state_io io;
	arb_test_mem_io(&ms, &io);
	arb_error err = { 0 };
	ck_assert(vq_save(q, &io, &err) == ARB_OK);
	thost *t2 = th_new(arb_backend_cpu(), D, B, T);
	th_set(t2, "size", "3000");
	th_set(t2, "dim", "16");
	th_set(t2, "exact_max", "0");
	th_set(t2, "bits", "8");
	vq *q2 = th_vq(t2, "us");
	ck_assert(vq_load(q2, &io, &err) == ARB_OK);
	ck_assert_mem_eq(q->usage, q2->usage, (size_t)q->size * sizeof *q->usage);
	char buf2[256];
	vq_metrics(q2, buf2, sizeof buf2);
	/* the saved part (usage, reseeds) round-trips; the lookup statistics
	 * describe a forward, and q2 has run none */
	*strstr(buf, " vq.us.miss=") = 0;
	ck_assert_ptr_nonnull(strstr(buf2, " vq.us.miss=0 vq.us.scan=0"));
	*strstr(buf2, " vq.us.miss=") = 0;
	ck_assert_str_eq(buf, buf2);
	/* a codebook of another size refuses the state */
	thost *t3 = th_new(arb_backend_cpu(), D, B, T);
	th_set(t3, "size", "100");
	th_set(t3, "dim", "16");
	vq *q3 = th_vq(t3, "us");
	ck_assert_int_eq(vq_load(q3, &io, &err), ARB_ERR_FORMAT);
	arb_test_mem_free(&ms);
	th_free(t3);
	th_free(t2);
	free(x); free(y);
	th_free(t);
}
END_TEST

START_TEST(dead_codes_reseeded)
{
	const int B = 1, T = 8, D = 16, M = B * T;
	thost *t = th_new(arb_backend_cpu(), D, B, T);
	th_set(t, "size", "40");
	th_set(t, "dim", "16");
	th_set(t, "dead_after", "2");
	vq *q = th_vq(t, "dd");
	float *x = malloc((size_t)M * D * sizeof *x), *y = malloc((size_t)M * D * sizeof *y);
	arb_test_fill(x, (size_t)M * D, 51);
	for (int i = 0; i < M * D; i++) x[i] *= 2.0f;
	arb_error err = { 0 };
	for (int s = 1; s <= 2; s++) {
		memcpy(y, x, (size_t)M * D * sizeof *y);
		run_forward(q, t, x, y, B, T, 1);
		if (s == 1) ck_assert(vq_after_step(q, 1, &err) == ARB_OK);
	}
	int used[40] = { 0 };
	for (int m = 0; m < M; m++) used[q->codes_h[m]] = 1;
	int first_dead = -1;
	for (int r = 0; r < 40 && first_dead < 0; r++)
		if (!used[r]) first_dead = r;
	ck_assert_int_ge(first_dead, 0);
	ck_assert(vq_after_step(q, 2, &err) == ARB_OK);
	ck_assert_int_eq(q->reseeded, M); /* capped at M per window */
	/* first dead row now carries the pattern of z at position 0 + step % stride */
	int8_t tr[16];
	vq_decode(q->C->packed + (int64_t)first_dead * q->C->row_bytes, 16, tr);
	const float *zr = q->zq; /* the normalized query; j = 0, stride 1: position 0 */
	for (int d = 0; d < 16; d++) {
		int want = zr[d] > q->tau[d] ? 1 : zr[d] < -q->tau[d] ? -1 : 0;
		ck_assert_int_eq(tr[d], want);
		ck_assert_int_eq(q->C->T_accum[first_dead * 16 + d], 0);
	}
	for (int r = 0; r < 40; r++) ck_assert_int_eq(q->usage[r], 0);
	free(x); free(y);
	th_free(t);
}
END_TEST

/* clustered inputs on a large common offset: x_m = 16 o + 0.5 k_(m % 8) +
 * 0.05 n_m (o, k, n: fixed pseudo-random, entries in [-1, 1)). The z = P x
 * of such a batch is dominated by P o, which made the raw lookup send every
 * position to one row (the collapse seen in training). Counts distinct
 * codes among the 8 clusters' positions. */
static int offset_cluster_run(const char *zrms, int steps, int *eval_same,
			      double *ppl)
{
	const int B = 1, T = 64, D = 16, M = B * T, K = 8;
	thost *t = th_new(arb_backend_cpu(), D, B, T);
	th_set(t, "size", "256");
	th_set(t, "dim", "16");
	th_set(t, "z_rms", zrms);
	vq *q = th_vq(t, "oc");
	float o[16], k[8][16], nz[16];
	arb_test_fill(o, 16, 71);
	for (int c = 0; c < K; c++) arb_test_fill(k[c], 16, 72 + (uint64_t)c);
	float *x = malloc((size_t)M * D * sizeof *x), *y = malloc((size_t)M * D * sizeof *y);
	float *dy = malloc((size_t)M * D * sizeof *dy), *dx = calloc((size_t)M * D, sizeof *dx);
	for (int m = 0; m < M; m++) {
		arb_test_fill(nz, 16, 100 + (uint64_t)m);
		for (int d = 0; d < D; d++)
			x[m * D + d] = 16.0f * o[d] + 0.5f * k[m % K][d] + 0.05f * nz[d];
	}
	arb_test_fill(dy, (size_t)M * D, 81);
	for (int i = 0; i < M * D; i++) dy[i] *= 1.0f / (float)M;
	arb_step p;
	memset(&p, 0, sizeof p);
	p.threshold = 4;
	p.e_threshold = 8;
	p.e_min = -30;
	p.e_max = 10;
	p.seed = 1234;
	arb_error err = { 0 };
	int32_t codes[64];
	for (int s = 1; s <= steps; s++) {
		memcpy(y, x, (size_t)M * D * sizeof *y);
		run_forward(q, t, x, y, B, T, 1);
		arb_vote v = { ARB_VOTE_SIGN, 1, 1, 1234, (uint64_t)s };
		run_backward(q, t, dy, dx, B, T, &v);
		p.t = (uint64_t)s;
		arb_harness_step(t, &p, NULL);
		ck_assert(vq_after_step(q, (uint64_t)s, &err) == ARB_OK);
	}
	/* a fresh usage window, then training forwards without updates: the
	 * running mean (rate 1/8) converges to this batch's mean (the gap left
	 * by the updates, up to a few units of z, times (7/8)^100 < 2e-6) */
	for (int64_t r = 0; r < q->size; r++) q->usage[r] = 0;
	for (int s = 0; s < 100; s++) {
		memcpy(y, x, (size_t)M * D * sizeof *y);
		run_forward(q, t, x, y, B, T, 1);
	}
	memcpy(codes, q->codes_h, sizeof codes);
	char buf[256];
	vq_metrics(q, buf, sizeof buf);
	*ppl = atof(strstr(buf, "vq.oc.ppl=") + 10);
	/* evaluation forward of the same batch (running mean): the same codes */
	memcpy(y, x, (size_t)M * D * sizeof *y);
	run_forward(q, t, x, y, B, T, 0);
	*eval_same = memcmp(codes, q->codes_h, sizeof codes) == 0;
	int distinct = 0;
	for (int m = 0; m < M; m++) {
		int seen = 0;
		for (int j = 0; j < m && !seen; j++) seen = codes[j] == codes[m];
		distinct += !seen;
	}
	free(x); free(y); free(dy); free(dx);
	th_free(t);
	return distinct;
}

START_TEST(no_collapse_on_offset_clusters)
{
	int same = 0;
	double ppl = 0;
	/* the raw-z lookup (z_rms = 0, the lookup before the fix): one row */
	int raw = offset_cluster_run("0", 30, &same, &ppl);
	fprintf(stderr, "vq: offset clusters, raw z: %d distinct codes, ppl %.2f\n",
		raw, ppl);
	ck_assert_int_le(raw, 2);
	ck_assert(ppl < 2.0);
	/* centered and normalized query (defaults): the 8 clusters keep their
	 * own codes through 30 steps of votes on P, Q and the codebook */
	int fixed = offset_cluster_run("1.0", 30, &same, &ppl);
	fprintf(stderr, "vq: offset clusters, normalized: %d distinct codes, ppl %.2f\n",
		fixed, ppl);
	ck_assert_int_ge(fixed, 8);
	ck_assert(ppl >= 6.0);
	ck_assert_msg(same, "evaluation codes differ from the training codes");
}
END_TEST

/* max_scan: at most that many rows of each probed bucket are scored */
START_TEST(max_scan_caps_bucket_walk)
{
	const int B = 2, T = 16, D = 16, M = B * T;
	const char *caps[3] = { "0", "4", "20000" };
	int64_t scan[3];
	int32_t codes[3][M];
	float *x = malloc((size_t)M * D * sizeof *x), *y = malloc((size_t)M * D * sizeof *y);
	arb_test_fill(x, (size_t)M * D, 77);
	for (int k = 0; k < 3; k++) {
		thost *t = th_new(arb_backend_cpu(), D, B, T);
		th_set(t, "size", "20000");
		th_set(t, "dim", "16");
		th_set(t, "exact_max", "0");
		th_set(t, "bits", "8");
		th_set(t, "max_scan", caps[k]);
		vq *q = th_vq(t, "ms");
		memcpy(y, x, (size_t)M * D * sizeof *y);
		run_forward(q, t, x, y, B, T, 0);
		ck_assert_int_eq(q->lk_miss, 0);
		scan[k] = q->lk_scan;
		memcpy(codes[k], q->codes, sizeof codes[k]);
		if (k == 1) /* tables 8 x (probes 4 + 1) buckets of <= 4 rows */
			ck_assert_int_le(scan[k], (int64_t)M * 8 * 5 * 4);
		th_free(t);
	}
	fprintf(stderr, "vq: rows scored per query: all %.1f, max_scan 4: %.1f\n",
		(double)scan[0] / M, (double)scan[1] / M);
	ck_assert_int_lt(scan[1], scan[0]);
	/* a cap no bucket reaches changes nothing */
	ck_assert_int_eq(scan[2], scan[0]);
	ck_assert_mem_eq(codes[2], codes[0], sizeof codes[0]);
	free(x); free(y);
}
END_TEST

/* out_init = zero: Q starts all-zero (the residual stream is untouched) and
 * still receives votes, so it can grow */
START_TEST(out_init_zero_starts_silent)
{
	const int B = 2, T = 8, D = 16, M = B * T;
	thost *t = th_new(arb_backend_cpu(), D, B, T);
	th_set(t, "size", "500");
	th_set(t, "dim", "16");
	th_set(t, "out_init", "zero");
	vq *q = th_vq(t, "oz");
	const arb_tern *Q = q->Q;
	ck_assert_int_eq(arb_test_nonzero_trits(Q), 0);
	/* its exponent is the one of a randomly initialized Q */
	ck_assert_int_eq(Q->E[0], arb_e_from_fanin(Q->cols, 1.0 / 3.0));
	float *x = malloc((size_t)M * D * sizeof *x), *y = malloc((size_t)M * D * sizeof *y);
	float *dy = malloc((size_t)M * D * sizeof *dy), *dx = calloc((size_t)M * D, sizeof *dx);
	arb_test_fill(x, (size_t)M * D, 5);
	memcpy(y, x, (size_t)M * D * sizeof *y);
	run_forward(q, t, x, y, B, T, 1);
	ck_assert_mem_eq(y, x, (size_t)M * D * sizeof *y);
	arb_test_fill(dy, (size_t)M * D, 6);
	int8_t *before = malloc((size_t)(Q->rows * Q->cols));
	memcpy(before, Q->T_accum, (size_t)(Q->rows * Q->cols));
	arb_vote v = { ARB_VOTE_SIGN, 1, 1, 1234, 1 };
	run_backward(q, t, dy, dx, B, T, &v);
	int64_t moved = 0;
	for (int64_t i = 0; i < Q->rows * Q->cols; i++) moved += Q->T_accum[i] != before[i];
	ck_assert_int_gt(moved, Q->rows * Q->cols / 2);
	free(before); free(x); free(y); free(dy); free(dx);
	th_free(t);
}
END_TEST

/* GPU: the built vq.so on the CUDA backend against this CPU reference */
START_TEST(gpu_matches_cpu)
{
#ifdef ARB_HAVE_CUDA
	arb_error err = { 0 };
	arb_backend *gbe = arb_backend_cuda(&err);
	ck_assert_ptr_nonnull(gbe);
	const arb_plugin *d = arb_test_plugin_ok("vq", -1);
	/* size, exact_max, max_scan */
	const char *sizes[3][3] = { { "3000", "65536", "0" }, { "20000", "0", "0" },
				    { "20000", "0", "6" } };
	for (int k = 0; k < 3; k++) {
		const int B = 4, T = 64, D = 32, M = B * T;
		thost *tc = th_new(arb_backend_cpu(), D, B, T);
		thost *tg = th_new(gbe, D, B, T);
		arb_harness_use(tg, d);
		th_set(tc, "size", sizes[k][0]); th_set(tc, "exact_max", sizes[k][1]);
		th_set(tg, "size", sizes[k][0]); th_set(tg, "exact_max", sizes[k][1]);
		th_set(tc, "max_scan", sizes[k][2]); th_set(tg, "max_scan", sizes[k][2]);
		vq *qc = th_vq(tc, "g");
		ck_assert_msg(arb_harness_create(tg, "g", &err) == ARB_OK, "%s", err.msg);
		void *qg = tg->self;
		/* dyadic z through P: use dyadic x */
		float *x = malloc((size_t)M * D * sizeof *x), *y = malloc((size_t)M * D * sizeof *y);
		arb_test_fill_dyadic(x, (size_t)M * D, 61 + (uint64_t)k);
		memcpy(y, x, (size_t)M * D * sizeof *y);
		run_forward(qc, tc, x, y, B, T, 1);
		float *gx = gbe->alloc(gbe, (size_t)M * D * 4), *gy = gbe->alloc(gbe, (size_t)M * D * 4);
		gbe->upload(gbe, gx, x, (size_t)M * D * 4);
		gbe->upload(gbe, gy, x, (size_t)M * D * 4);
		arb_io io;
		arb_test_io(&io, th_be(tg), B, T, D);
		io.training = 1; io.x = gx; io.y = gy;
		ck_assert_msg(d->forward(qg, &io, &err) == ARB_OK, "%s", err.msg);
		const arb_named *nt = tg->host.lookup(&tg->host, "vq.g.codes");
		ck_assert_ptr_nonnull(nt);
		int32_t *gc = malloc((size_t)M * 4);
		gbe->download(gbe, gc, nt->data, (size_t)M * 4);
		ck_assert_mem_eq(gc, qc->codes_h, (size_t)M * 4);
		char b1[256], b2[256];
		vq_metrics(qc, b1, sizeof b1);
		d->metrics(qg, b2, sizeof b2);
		ck_assert_str_eq(b1, b2);
		gbe->free(gbe, gx); gbe->free(gbe, gy);
		free(gc); free(x); free(y);
		th_free(tg); /* d->destroy(qg) */
		th_free(tc);
	}
#endif
}
END_TEST

Suite *suite_vq(void)
{
	Suite *s = suite_create("vq");
	TCase *tc = tcase_create("cpu");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, exact_equals_brute_force);
	tcase_add_test(tc, candidate_recall_and_determinism);
	tcase_add_test(tc, sparse_update_and_index_refresh);
	tcase_add_test(tc, duplicate_indices_one_vote);
	tcase_add_test(tc, straight_through_gradient_fd);
	tcase_add_test(tc, usage_save_load_and_metrics);
	tcase_add_test(tc, dead_codes_reseeded);
	tcase_add_test(tc, no_collapse_on_offset_clusters);
	tcase_add_test(tc, max_scan_caps_bucket_walk);
	tcase_add_test(tc, out_init_zero_starts_silent);
	suite_add_tcase(s, tc);
	TCase *tg = tcase_create("gpu");
	tcase_set_tags(tg, "gpu");
	tcase_set_timeout(tg, 120);
	tcase_add_test(tg, gpu_matches_cpu);
	suite_add_tcase(s, tg);
	return s;
}
