/*
 * tests/check_memgram.c -- the memgram plugin (MemGram conditional memory)
 * against arb/harness.h's test host on the CPU backend. The plugin source is
 * included (MEMGRAM_TEST_INCLUDE: no exported descriptor, no CUDA launchers)
 * so that the hash, the strengths and the workspace can be inspected; the
 * GPU case loads the built memgram.so on the CUDA backend and compares it
 * with this CPU reference.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core.h"
#include "arb/harness.h"
#include "testutil.h"

#define MEMGRAM_TEST_INCLUDE 1
#include "../plugins/memgram/memgram.c"

/* mg_hash of three n-grams of "First Citizen:..." into 65536 rows
 * (hash_deterministic_and_in_range) */
#define MG_PIN_A 65099
#define MG_PIN_B 41229
#define MG_PIN_C 65259

typedef arb_harness thost;

/* model: width D, one block, ctx T, batch B */
static thost *th_new(arb_backend *be, int D, int B, int T)
{
	return arb_test_harness(be, &memgram_plugin, D, B, T);
}

#define th_set arb_test_harness_set
#define th_free arb_test_harness_free

/* the instance (destroyed by th_free) */
static memgram *th_mg(thost *t, const char *inst)
{
	return arb_test_harness_create(t, inst);
}

/* small memory: size rows of width 16, orders 3,5 x 2 heads */
static memgram *small(thost *t, const char *size, const char *full)
{
	th_set(t, "layers", "0");
	th_set(t, "orders", "3,5");
	th_set(t, "heads", "2");
	th_set(t, "size", size);
	th_set(t, "dim", "16");
	th_set(t, "strength_full", full);
	return th_mg(t, "mg");
}

/* one training forward + backward (residual slot: y == x, dx == dy) on
 * host arrays; bytes [B, 3T] */
static void run_fb(memgram *s, thost *t, const int32_t *bytes, int B, int T,
		   const float *x, const float *dy, float *y, float *dx,
		   const arb_vote *v)
{
	int64_t M = (int64_t)B * T, D = s->D;
	arb_io io;
	arb_test_io(&io, t->be, B, T, (int)D);
	io.layer = 0;
	io.training = 1;
	io.bytes = bytes;
	memcpy(y, x, (size_t)(M * D) * sizeof *y);
	io.x = y;
	io.y = y;
	arb_error err = { 0 };
	ck_assert_msg(memgram_forward(s, &io, &err) == ARB_OK, "forward: %s", err.msg);
	if (!dy) return;
	memcpy(dx, dy, (size_t)(M * D) * sizeof *dx);
	io.dy = dx;
	io.dx = dx;
	io.vote = v;
	ck_assert_msg(memgram_backward(s, &io, &err) == ARB_OK, "backward: %s",
		      err.msg);
}

/* ------------------------------------------------------------------------- */

START_TEST(hash_deterministic_and_in_range)
{
	/* pinned values: the table is indexed by the hash, so a change of the
	 * hash silently invalidates every trained checkpoint */
	const char *txt = "First Citizen:\nBefore we proceed";
	int32_t seq[33];
	for (int i = 0; i < 33; i++) seq[i] = (unsigned char)txt[i];
	int32_t a = mg_hash(seq, 4, 3, 0, 65536); /* "Cit" */
	int32_t b = mg_hash(seq, 4, 8, 1, 65536); /* "st Citiz" */
	int32_t c0 = mg_hash(seq, 0, 8, 0, 65536); /* pad x5 + "Fir" */
	fprintf(stderr, "memgram: pinned hashes %d %d %d\n", a, b, c0);
	ck_assert_int_eq(a, MG_PIN_A);
	ck_assert_int_eq(b, MG_PIN_B);
	ck_assert_int_eq(c0, MG_PIN_C);
	/* the n-gram alone decides: same bytes elsewhere, same row */
	int32_t seq2[33];
	for (int i = 0; i < 33; i++) seq2[i] = 'x';
	memcpy(seq2 + 9, seq + 12, 3 * sizeof *seq); /* bytes 12..14 -> 9..11 */
	ck_assert_int_eq(mg_hash(seq2, 3, 3, 1, 1000), mg_hash(seq, 4, 3, 1, 1000));
	/* a byte before the window does not matter, one inside does */
	int32_t keep = seq[11];
	int32_t h5 = mg_hash(seq, 4, 3, 0, 1 << 20);
	seq[11] = 'Q';
	ck_assert_int_eq(mg_hash(seq, 4, 3, 0, 1 << 20), h5);
	ck_assert_int_ne(mg_hash(seq, 4, 5, 0, 1 << 20),
			 (seq[11] = keep, mg_hash(seq, 4, 5, 0, 1 << 20)));
	/* the pad symbol differs from every byte value */
	int32_t z[6] = { 0, 0, 0, 0, 0, 0 };
	int32_t hp = mg_hash(z, 0, 5, 0, 1 << 20); /* pad pad 0 0 0 */
	for (int v = 0; v < 256; v++) {
		int32_t w[6] = { v, v, 0, 0, 0, 0 };
		ck_assert_int_ne(mg_hash(w, 1, 5, 0, 1 << 20), hp);
	}
	/* range and spread: 60000 random 5-grams into 61 rows, each row within
	 * 25% of the mean; heads and orders give different rows */
	int cnt[61] = { 0 };
	int same_head = 0, same_order = 0;
	int32_t r[6];
	for (int i = 0; i < 60000; i++) {
		for (int j = 0; j < 6; j++)
			r[j] = (int32_t)(arb_mix64(5000 + (uint64_t)i * 6 + j) & 255);
		int32_t h = mg_hash(r, 1, 5, 0, 61);
		ck_assert(h >= 0 && h < 61);
		ck_assert_int_eq(h, mg_hash(r, 1, 5, 0, 61));
		cnt[h]++;
		same_head += h == mg_hash(r, 1, 5, 1, 61);
		same_order += h == mg_hash(r, 1, 4, 0, 61);
	}
	for (int i = 0; i < 61; i++)
		ck_assert_msg(cnt[i] > 737 && cnt[i] < 1229, "row %d: %d", i, cnt[i]);
	ck_assert_int_lt(same_head, 60000 / 61 * 2);
	ck_assert_int_lt(same_order, 60000 / 61 * 2);
	/* the forward's gathers follow mg_hash, k = order * heads + head */
	thost *t = th_new(arb_backend_cpu(), 16, 2, 8);
	memgram *s = small(t, "97", "0");
	int32_t by[48];
	for (int i = 0; i < 48; i++) by[i] = (int32_t)(arb_mix64(77 + (uint64_t)i) & 255);
	float x[256], y[256];
	arb_test_fill(x, 256, 3);
	run_fb(s, t, by, 2, 8, x, NULL, y, NULL, NULL);
	const int ord[2] = { 3, 5 };
	for (int o = 0; o < 2; o++)
		for (int h = 0; h < 2; h++)
			for (int bq = 0; bq < 2; bq++)
				for (int p = 0; p < 8; p++)
					ck_assert_int_eq(s->L[0].idx[(o * 2 + h) * 16 + bq * 8 + p],
							 mg_hash(by + bq * 24, p, ord[o], h, 97));
	th_free(t);
}
END_TEST

/* backward against central finite differences: dx (through the gate's
 * rms(x) and the residual), Wk (reaches the output only through the gate),
 * Wv and the table rows (embed_forward perturbation, summed duplicates) */
static void fd_case(const char *full, int set_strength)
{
	thost *t = th_new(arb_backend_cpu(), 32, 2, 8);
	memgram *s = small(t, "128", full);
	if (set_strength)
		for (int64_t r = 0; r < s->size; r++) s->strength[r] = (int8_t)(r % 7);
	arb_harness_fd_opts o;
	memset(&o, 0, sizeof o);
	o.B = 2;
	o.T = 8;
	o.layer = 0;
	o.probes_x = 48;
	o.probes_w = 24;
	o.seed = 5;
	arb_harness_fd_report rep;
	arb_error err = { 0 };
	ck_assert_msg(arb_harness_fd_check(t, &o, &rep, &err) == ARB_OK, "%s", err.msg);
	fprintf(stderr, "memgram fd (strength_full %s): dx rel %.2e (%d), weights "
		"rel %.2e (%d, %d tensors; worst %s)\n", full, rep.max_rel_x,
		rep.checked_x, rep.max_rel_w, rep.checked_w, rep.tensors, rep.worst);
	ck_assert_int_eq(rep.tensors, 3); /* table, L0.wk, L0.wv */
	ck_assert_msg(rep.max_rel_x < 1e-2, "dx rel %.3g", rep.max_rel_x);
	ck_assert_msg(rep.max_rel_w < 2e-2, "dW rel %.3g at %s", rep.max_rel_w,
		      rep.worst);
	th_free(t);
}

START_TEST(backward_matches_finite_differences)
{
	fd_case("0", 0); /* every row weighs 1 */
	fd_case("4", 1); /* weights c = min(s, 4)/4 with s = r % 7 (some 0) */
}
END_TEST

/* the gate alone: with Wv's output fixed, dL/da from FD of the gate logit
 * equals what gate_backward implies (dhx . hk = da * |hk|^2) */
START_TEST(gate_gradient_matches_fd)
{
	const int D = 24, M = 5;
	float hx[5 * 24], hk[5 * 24], v[5 * 24], dy[5 * 24], g[5], y[5 * 24];
	float dv[5 * 24], dhx[5 * 24], dhk[5 * 24];
	arb_test_fill(hx, M * D, 1);
	arb_test_fill(hk, M * D, 2);
	arb_test_fill(v, M * D, 3);
	arb_test_fill(dy, M * D, 4);
	memset(y, 0, sizeof y);
	cpu_gate_forward(M, D, hx, hk, v, g, y);
	cpu_gate_backward(M, D, dy, hx, hk, v, g, dv, dhx, dhk);
	for (int r = 0; r < M; r++) {
		/* L = sum dy * g(hx . hk / sqrt D) v; perturb hx[r][d] */
		for (int d = 0; d < D; d += 5) {
			double L2[2];
			for (int sgn = 0; sgn < 2; sgn++) {
				float keep = hx[r * D + d];
				hx[r * D + d] = keep + (sgn ? -1e-2f : 1e-2f);
				float gg[5], yy[5 * 24];
				memset(yy, 0, sizeof yy);
				cpu_gate_forward(M, D, hx, hk, v, gg, yy);
				double L = 0;
				for (int i = 0; i < M * D; i++) L += (double)dy[i] * yy[i];
				L2[sgn] = L;
				hx[r * D + d] = keep;
			}
			double fd = (L2[0] - L2[1]) / 2e-2;
			ck_assert_msg(fabs(fd - dhx[r * D + d]) < 1e-3 + 1e-2 * fabs(fd),
				      "dhx[%d][%d] %g fd %g", r, d, dhx[r * D + d], fd);
		}
		/* dv = g dy */
		for (int d = 0; d < D; d++)
			ck_assert(fabsf(dv[r * D + d] - g[r] * dy[r * D + d]) < 1e-7f);
		ck_assert(g[r] > 0.0f && g[r] < 1.0f);
	}
}
END_TEST

/* bytes where many positions share n-grams: "abcabc..." repeats the same
 * trigram at every position */
static void repeated_bytes(int32_t *by, int n)
{
	for (int i = 0; i < n; i++) by[i] = "abc"[i % 3];
}

START_TEST(duplicate_ngrams_one_vote_per_row)
{
	const int B = 2, T = 8, D = 16, M = B * T;
	thost *t = th_new(arb_backend_cpu(), D, B, T);
	memgram *s = small(t, "4096", "0");
	arb_tern *tab = s->table;
	int32_t by[48];
	repeated_bytes(by, 48);
	int8_t *acc0 = malloc((size_t)(tab->rows * tab->cols));
	memcpy(acc0, tab->T_accum, (size_t)(tab->rows * tab->cols));
	float x[M * 16], y[M * 16], dy[M * 16], dx[M * 16];
	arb_test_fill(x, M * D, 8);
	arb_test_fill(dy, M * D, 9);
	arb_vote v = { ARB_VOTE_SIGN, 3, 1, 1234, 1 };
	run_fb(s, t, by, B, T, x, dy, y, dx, &v);
	/* the gathered rows: K*M = 64 gathers, few distinct rows */
	const int32_t *idx = s->L[0].idx;
	int distinct = 0;
	for (int i = 0; i < s->K * M; i++) {
		int seen = 0;
		for (int j = 0; j < i && !seen; j++) seen = idx[j] == idx[i];
		distinct += !seen;
	}
	ck_assert_int_lt(distinct, s->K * M / 4);
	/* each touched row got exactly one vote of step 3 per weight:
	 * T_accum -= 3 * sign(sum of its gathers' gradients) (s->e holds the
	 * gathers' gradients after backward) */
	int64_t checked = 0;
	for (int i = 0; i < s->K * M; i++) {
		int32_t r = idx[i];
		int first = 1;
		for (int j = 0; j < i; j++) first &= idx[j] != r;
		if (!first) continue;
		for (int d = 0; d < 16; d++) {
			float sum = 0;
			for (int j = 0; j < s->K * M; j++)
				if (idx[j] == r) sum += s->e[(int64_t)j * 16 + d];
			int sg = (sum > 0) - (sum < 0);
			int want = acc0[r * 16 + d] - 3 * sg;
			ck_assert_int_eq(tab->T_accum[r * 16 + d], want);
			checked++;
		}
	}
	ck_assert_int_eq(checked, (int64_t)distinct * 16);
	/* strengths: +1 per step for each gathered row, however often */
	arb_error err = { 0 };
	ck_assert(memgram_after_step(s, 1, &err) == ARB_OK);
	int64_t ones = 0;
	for (int64_t r = 0; r < s->size; r++) {
		ck_assert_int_le(s->strength[r], 1);
		ones += s->strength[r];
	}
	ck_assert_int_eq(ones, distinct);
	free(acc0);
	th_free(t);
}
END_TEST

START_TEST(untouched_rows_bit_identical)
{
	const int B = 2, T = 8, D = 16, M = B * T;
	thost *t = th_new(arb_backend_cpu(), D, B, T);
	memgram *s = small(t, "2048", "0");
	arb_tern *tab = s->table;
	const int64_t rb = tab->row_bytes, G = tab->groups, C = tab->cols;
	uint8_t *pk = malloc((size_t)(tab->rows * rb));
	int8_t *acc = malloc((size_t)(tab->rows * C));
	int8_t *E = malloc((size_t)(tab->rows * G));
	memcpy(pk, tab->packed, (size_t)(tab->rows * rb));
	memcpy(acc, tab->T_accum, (size_t)(tab->rows * C));
	memcpy(E, tab->E, (size_t)(tab->rows * G));
	int32_t by[48];
	for (int i = 0; i < 48; i++) by[i] = (int32_t)(arb_mix64(31 + (uint64_t)i) & 255);
	float x[M * 16], y[M * 16], dy[M * 16], dx[M * 16];
	arb_test_fill(x, M * D, 18);
	arb_test_fill(dy, M * D, 19);
	/* step 6 against threshold 4: every touched weight whose vote is not
	 * zero crosses the threshold */
	arb_vote v = { ARB_VOTE_SIGN, 6, 1, 1234, 1 };
	run_fb(s, t, by, B, T, x, dy, y, dx, &v);
	arb_step p;
	memset(&p, 0, sizeof p);
	p.threshold = 4;
	p.e_threshold = 8;
	p.e_min = -30;
	p.e_max = 10;
	p.seed = 1234;
	p.t = 1;
	arb_step_stats stt;
	arb_harness_step(t, &p, &stt);
	ck_assert_int_gt(stt.flips, 0);
	int changed = 0, untouched = 0;
	for (int64_t r = 0; r < tab->rows; r++) {
		int used = 0;
		for (int i = 0; i < s->K * M; i++) used |= s->L[0].idx[i] == r;
		int same = memcmp(pk + r * rb, tab->packed + r * rb, (size_t)rb) == 0 &&
			   memcmp(acc + r * C, tab->T_accum + r * C, (size_t)C) == 0 &&
			   memcmp(E + r * G, tab->E + r * G, (size_t)G) == 0;
		if (!used) {
			ck_assert_msg(same, "untouched row %lld changed", (long long)r);
			untouched++;
		} else {
			changed += memcmp(pk + r * rb, tab->packed + r * rb, (size_t)rb) != 0;
		}
	}
	ck_assert_int_gt(untouched, 2048 - s->K * M - 1);
	ck_assert_int_gt(changed, 0);
	free(pk); free(acc); free(E);
	th_free(t);
}
END_TEST

START_TEST(strength_decay_save_load)
{
	const int B = 2, T = 8, D = 16, M = B * T;
	thost *t = th_new(arb_backend_cpu(), D, B, T);
	th_set(t, "decay_interval", "3");
	memgram *s = small(t, "512", "4");
	int32_t by[48];
	float x[M * 16], y[M * 16], dy[M * 16], dx[M * 16];
	arb_test_fill(x, M * D, 28);
	arb_test_fill(dy, M * D, 29);
	arb_error err = { 0 };
	/* 5 steps on the same bytes: the gathered rows reach 5, except that
	 * step 3 decays (3 -> 3 - ceil(3/8) = 2), so they end at 4 */
	for (int i = 0; i < 48; i++) by[i] = (int32_t)(arb_mix64(41 + (uint64_t)i) & 255);
	for (int st = 1; st <= 5; st++) {
		run_fb(s, t, by, B, T, x, dy, y, dx, NULL);
		ck_assert(memgram_after_step(s, (uint64_t)st, &err) == ARB_OK);
	}
	int64_t n4 = 0;
	for (int64_t r = 0; r < s->size; r++) {
		int used = 0;
		for (int i = 0; i < s->K * M; i++) used |= s->L[0].idx[i] == r;
		ck_assert_int_eq(s->strength[r], used ? 4 : 0);
		n4 += used;
	}
	ck_assert_int_gt(n4, 0);
	/* c of those rows is min(4, 4)/4 = 1 */
	run_fb(s, t, by, B, T, x, NULL, y, NULL, NULL);
	for (int i = 0; i < s->K * M; i++) ck_assert(s->L[0].c[i] == 1.0f);
	/* decay arithmetic: 127 -> 111, 8 -> 7, 1 -> 0, 0 -> 0 */
	s->strength[0] = 127; s->strength[1] = 8; s->strength[2] = 1; s->strength[3] = 0;
	ck_assert(memgram_after_step(s, 6, &err) == ARB_OK);
	ck_assert_int_eq(s->strength[0], 111);
	ck_assert_int_eq(s->strength[1], 7);
	ck_assert_int_eq(s->strength[2], 0);
	ck_assert_int_eq(s->strength[3], 0);
	for (int64_t r = 4; r < s->size; r++)
		s->strength[r] = (int8_t)((r * 37) % 128);
	float y1[M * 16];
	run_fb(s, t, by, B, T, x, NULL, y1, NULL, NULL);
	char m1[256];
	ck_assert_int_gt(memgram_metrics(s, m1, sizeof m1), 0);
	ck_assert_ptr_nonnull(strstr(m1, "mg_live="));

	arb_test_mem ms = { 0 };
	arb_state_io io;
	arb_test_mem_io(&ms, &io);
	ck_assert(memgram_save(s, &io, &err) == ARB_OK);
	/* a fresh instance (same seed: same tensors) loads the strengths and
	 * produces the same output */
	thost *t2 = th_new(arb_backend_cpu(), D, B, T);
	th_set(t2, "decay_interval", "3");
	memgram *s2 = small(t2, "512", "4");
	ck_assert(memgram_load(s2, &io, &err) == ARB_OK);
	ck_assert_mem_eq(s->strength, s2->strength, (size_t)s->size);
	float y2[M * 16];
	run_fb(s2, t2, by, B, T, x, NULL, y2, NULL, NULL);
	ck_assert_mem_eq(y1, y2, sizeof y1);
	char m2[256];
	memgram_metrics(s2, m2, sizeof m2);
	ck_assert_str_eq(m1, m2);
	/* another table size refuses the state */
	thost *t3 = th_new(arb_backend_cpu(), D, B, T);
	memgram *s3 = small(t3, "256", "4");
	ck_assert_int_eq(memgram_load(s3, &io, &err), ARB_ERR_FORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "size 512"));
	arb_test_mem_free(&ms);
	th_free(t3);
	th_free(t2);
	th_free(t);
}
END_TEST

static arb_status try_create(const char *key, const char *val, arb_error *err)
{
	thost *t = th_new(arb_backend_cpu(), 16, 2, 8); /* ctx 8: 24 bytes */
	ck_assert(arb_harness_set(t, key, val, err) == ARB_OK);
	arb_status st = arb_harness_create(t, "bad", err);
	th_free(t);
	return st;
}

START_TEST(config_errors)
{
	arb_error err = { 0 };
	ck_assert_int_eq(try_create("orders", "3,5,3", &err), ARB_ERR_CONFIG);
	ck_assert_ptr_nonnull(strstr(err.msg, "orders: 3 listed twice"));
	memset(&err, 0, sizeof err);
	ck_assert_int_eq(try_create("orders", "3,30", &err), ARB_ERR_CONFIG);
	ck_assert_ptr_nonnull(strstr(err.msg, "longer than a context"));
	memset(&err, 0, sizeof err);
	ck_assert_int_eq(try_create("orders", "1,2,3,4,5,6,7,8,9", &err), ARB_ERR_CONFIG);
	ck_assert_ptr_nonnull(strstr(err.msg, "orders: 9 values"));
	memset(&err, 0, sizeof err);
	ck_assert_int_eq(try_create("layers", "1", &err), ARB_ERR_CONFIG);
	ck_assert_ptr_nonnull(strstr(err.msg, "not a block index"));
}
END_TEST

/* GPU: the built memgram.so on the CUDA backend against the CPU reference
 * (same config and seed: same initial tensors; same strengths via load) */
START_TEST(gpu_matches_cpu)
{
#ifdef ARB_HAVE_CUDA
	arb_error err = { 0 };
	arb_backend *gbe = arb_backend_cuda(&err);
	ck_assert_ptr_nonnull(gbe);
	const arb_plugin *d = arb_test_plugin_ok("memgram", -1);
	const char *fulls[2] = { "0", "4" };
	for (int k = 0; k < 2; k++) {
		const int B = 4, T = 32, D = 64;
		thost *tc = th_new(arb_backend_cpu(), D, B, T);
		thost *tg = th_new(gbe, D, B, T);
		arb_harness_use(tg, d);
		memgram *sc = small(tc, "4096", fulls[k]);
		th_set(tg, "layers", "0"); th_set(tg, "orders", "3,5");
		th_set(tg, "heads", "2"); th_set(tg, "size", "4096");
		th_set(tg, "dim", "16"); th_set(tg, "strength_full", fulls[k]);
		ck_assert_msg(arb_harness_create(tg, "mg", &err) == ARB_OK, "%s", err.msg);
		for (int64_t r = 0; r < sc->size; r++) sc->strength[r] = (int8_t)(r % 6);
		arb_test_mem ms = { 0 };
		arb_state_io io;
		arb_test_mem_io(&ms, &io);
		ck_assert(memgram_save(sc, &io, &err) == ARB_OK);
		ck_assert_msg(d->load(tg->self, &io, &err) == ARB_OK, "%s", err.msg);
		arb_harness_cmp_report rep;
		ck_assert_msg(arb_harness_compare(tc, tg, B, T, 0, 11, &rep, &err) ==
			      ARB_OK, "%s", err.msg);
		fprintf(stderr, "memgram gpu vs cpu (full %s): y %.2e dx %.2e, "
			"accum %lld of %lld differ\n", fulls[k], rep.max_rel_y,
			rep.max_rel_dx, (long long)rep.accum_diff,
			(long long)rep.accum_total);
		ck_assert(rep.max_rel_y < 1e-4);
		ck_assert(rep.max_rel_dx < 1e-3);
		ck_assert(rep.accum_diff * 1000 <= rep.accum_total);
		/* the after_step strengths follow the same gathers */
		ck_assert(memgram_after_step(sc, 1, &err) == ARB_OK);
		ck_assert(d->after_step(tg->self, 1, &err) == ARB_OK);
		ck_assert_mem_eq(sc->strength, ((memgram *)tg->self)->strength,
				 (size_t)sc->size);
		char b1[256], b2[256];
		memgram_metrics(sc, b1, sizeof b1);
		d->metrics(tg->self, b2, sizeof b2);
		fprintf(stderr, "memgram metrics cpu: %s | gpu: %s\n", b1, b2);
		arb_test_mem_free(&ms);
		th_free(tg);
		th_free(tc);
	}
#endif
}
END_TEST

Suite *suite_memgram(void)
{
	Suite *s = suite_create("memgram");
	TCase *tc = tcase_create("cpu");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, hash_deterministic_and_in_range);
	tcase_add_test(tc, backward_matches_finite_differences);
	tcase_add_test(tc, gate_gradient_matches_fd);
	tcase_add_test(tc, duplicate_ngrams_one_vote_per_row);
	tcase_add_test(tc, untouched_rows_bit_identical);
	tcase_add_test(tc, strength_decay_save_load);
	tcase_add_test(tc, config_errors);
	suite_add_tcase(s, tc);
	TCase *tg = tcase_create("gpu");
	tcase_set_tags(tg, "gpu");
	tcase_set_timeout(tg, 120);
	tcase_add_test(tg, gpu_matches_cpu);
	suite_add_tcase(s, tg);
	return s;
}
