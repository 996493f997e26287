/*
 * tests/check_rules.c -- the learning rules of arb/tensor.h, pinned on the
 * CPU reference: vote sign convention, the trit ladder, saturation, reset
 * modes, the flip cap's exact p32 rule, the residual and bigint exponent
 * rules, stochastically rounded votes, table votes with duplicate indices,
 * and the scheduler's threshold warm-up and loss-scaled step.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core.h"
#include "testutil.h"

static arb_backend *be;
static void setup(void) { be = arb_backend_cpu(); }

/* 1 x C tensor, every trit = t0, accumulators 0, E = 0 */
static void mk(arb_tern *w, int64_t R, int64_t C, int gs, int erule, int t0)
{
	ck_assert_int_eq(arb_tern_alloc(w, "r", R, C, gs, 0, erule, NULL), ARB_OK);
	w->id = 2;
	arb_tern_init ini = { 1, 0.0, t0, 0, 0 };
	if (t0 == 0) ini.zero_frac = 1.0;
	be->tern_init(be, w, &ini);
}

/* one vote with dW[n][k] = g for every weight (M = 1: x = 1, dy = g) */
static void vote_all(arb_tern *w, float g, int step)
{
	float *x = malloc((size_t)w->cols * 4), *dy = malloc((size_t)w->rows * 4);
	for (int64_t k = 0; k < w->cols; k++) x[k] = 1.0f;
	for (int64_t n = 0; n < w->rows; n++) dy[n] = g;
	arb_vote v = { ARB_VOTE_SIGN, step, 1, 1, 0 };
	be->linear_vote(be, w, x, dy, 1, &v);
	free(x);
	free(dy);
}

static arb_step params(int thr)
{
	arb_step p = { thr, ARB_RESET_ZERO, ARB_ORDER_E_FIRST, 4, -30, 10, 0, 1, 0 };
	return p;
}

static int trit(const arb_tern *w, int64_t r, int64_t c)
{
	return arb_tern_get(w->packed, w->row_bytes, r, c);
}

START_TEST(positive_gradient_moves_down)
{
	arb_tern w;
	mk(&w, 1, 7, 4, 0, 0);
	arb_step p = params(3);
	arb_step_stats st;
	/* dW > 0 lowers T_accum */
	vote_all(&w, 0.5f, 1);
	ck_assert_int_eq(w.T_accum[0], -1);
	vote_all(&w, 0.5f, 1);
	be->tern_step(be, &w, &p, &st);
	ck_assert_int_eq(trit(&w, 0, 0), 0);   /* |-2| < 3: nothing yet */
	ck_assert_int_eq(st.flips, 0);
	vote_all(&w, 0.5f, 1);
	be->tern_step(be, &w, &p, &st);
	for (int c = 0; c < 7; c++) ck_assert_int_eq(trit(&w, 0, c), -1); /* 0 -> -1 */
	ck_assert_int_eq(st.flips, 7);
	ck_assert_int_eq(w.T_accum[0], 0);
	arb_tern_free(&w);

	/* +1 -> 0, never +1 -> -1 in one step, however large the accumulator */
	mk(&w, 1, 7, 4, 0, 1);
	for (int i = 0; i < 200; i++) vote_all(&w, 1.0f, 1);
	ck_assert_int_eq(w.T_accum[0], -127);
	be->tern_step(be, &w, &p, &st);
	for (int c = 0; c < 7; c++) ck_assert_int_eq(trit(&w, 0, c), 0);
	arb_tern_free(&w);
}
END_TEST

START_TEST(negative_gradient_moves_up)
{
	arb_tern w;
	mk(&w, 2, 6, 4, 0, -1);
	arb_step p = params(2);
	arb_step_stats st;
	for (int s = 0; s < 2; s++) vote_all(&w, -0.25f, 1);
	ck_assert_int_eq(w.T_accum[0], 2);
	be->tern_step(be, &w, &p, &st);
	ck_assert_int_eq(trit(&w, 1, 5), 0);     /* -1 -> 0 */
	for (int s = 0; s < 2; s++) vote_all(&w, -0.25f, 1);
	be->tern_step(be, &w, &p, &st);
	ck_assert_int_eq(trit(&w, 1, 5), 1);     /* 0 -> +1 */
	/* zero gradient casts no vote */
	vote_all(&w, 0.0f, 1);
	ck_assert_int_eq(w.T_accum[3], 0);
	arb_tern_free(&w);
}
END_TEST

START_TEST(saturation)
{
	arb_tern w;
	mk(&w, 1, 5, 4, 0, 0);
	vote_all(&w, -1.0f, 100);
	ck_assert_int_eq(w.T_accum[0], 100);
	vote_all(&w, -1.0f, 100);               /* 200 would wrap to -56 */
	ck_assert_int_eq(w.T_accum[0], 127);
	for (int i = 0; i < 300; i++) vote_all(&w, 2.0f, 1);
	ck_assert_int_eq(w.T_accum[0], -127);
	arb_tern_free(&w);
}
END_TEST

START_TEST(reset_modes_and_ladder_end)
{
	arb_tern w;
	arb_step_stats st;
	mk(&w, 1, 4, 4, 0, 0);
	arb_step p = params(3);
	w.T_accum[0] = -5; w.T_accum[1] = 5; w.T_accum[2] = 2; w.T_accum[3] = -3;
	be->tern_step(be, &w, &p, &st);
	ck_assert_int_eq(trit(&w, 0, 0), -1);
	ck_assert_int_eq(trit(&w, 0, 1), 1);
	ck_assert_int_eq(trit(&w, 0, 2), 0);
	ck_assert_int_eq(trit(&w, 0, 3), -1);
	ck_assert_int_eq(w.T_accum[0], 0);      /* reset zero */
	ck_assert_int_eq(w.T_accum[1], 0);
	ck_assert_int_eq(w.T_accum[2], 2);
	ck_assert_int_eq(st.flips, 3);
	arb_tern_free(&w);

	mk(&w, 1, 4, 4, 0, 0);
	p.reset_mode = ARB_RESET_REMAINDER;
	w.T_accum[0] = -5; w.T_accum[1] = 7; w.T_accum[2] = 3;
	be->tern_step(be, &w, &p, &st);
	ck_assert_int_eq(w.T_accum[0], -2);     /* -5 - (-1)*3 */
	ck_assert_int_eq(w.T_accum[1], 4);
	ck_assert_int_eq(w.T_accum[2], 0);
	ck_assert_int_eq(trit(&w, 0, 1), 1);
	/* end of the ladder: held at dir * thr, counted as saturated */
	w.T_accum[1] = 90;
	w.T_accum[0] = -6;
	be->tern_step(be, &w, &p, &st);
	ck_assert_int_eq(trit(&w, 0, 1), 1);
	ck_assert_int_eq(w.T_accum[1], 3);
	ck_assert_int_eq(trit(&w, 0, 0), -1);
	ck_assert_int_eq(w.T_accum[0], -3);
	ck_assert_int_eq(st.saturated, 2);
	ck_assert_int_eq(st.flips, 0);
	ck_assert_int_eq(st.candidates, 0);
	arb_tern_free(&w);
}
END_TEST

START_TEST(flip_cap)
{
	const int64_t R = 100, C = 100;
	arb_tern w, w2;
	arb_step_stats st, st2;
	mk(&w, R, C, 4, 0, 0);
	mk(&w2, R, C, 4, 0, 0);
	/* every weight a candidate, half each direction; plus a held one */
	for (int64_t i = 0; i < R * C; i++)
		w.T_accum[i] = w2.T_accum[i] = (int8_t)((i & 1) ? 4 : -4);
	arb_step p = params(4);
	p.cap_ppm = 10000;          /* 1 %: cap = 100 */
	p.t = 17;
	be->tern_step(be, &w, &p, &st);
	be->tern_step(be, &w2, &p, &st2);
	/* the exact rule: accept iff rng_u32(seed, stream(id, t, FLIP_CAP), i)
	 * < p32 = floor(cap * 2^32 / candidates) */
	uint64_t p32 = (100ull << 32) / 10000ull;
	uint64_t s = arb_rng_stream(w.id, 17, ARB_RNG_FLIP_CAP);
	int64_t want = 0;
	for (int64_t i = 0; i < R * C; i++) {
		int acc = arb_rng_u32(1, s, (uint64_t)i) < p32;
		want += acc;
		int dir = (i & 1) ? 1 : -1;
		ck_assert_int_eq(trit(&w, i / C, i % C), acc ? dir : 0);
		ck_assert_int_eq(w.T_accum[i], acc ? 0 : 4 * dir);
	}
	ck_assert_int_eq(st.flips, want);
	ck_assert_int_eq(st.candidates, 10000);
	ck_assert_int_eq(st.capped, 10000 - want);
	ck_assert_int_le(st.flips, st.candidates);
	ck_assert_int_ge(st.flips, 60);         /* binomial(10000, 1 %): sd 10 */
	ck_assert_int_le(st.flips, 140);
	/* deterministic */
	ck_assert_int_eq(st2.flips, st.flips);
	ck_assert_mem_eq(w.packed, w2.packed, (size_t)(R * w.row_bytes));
	ck_assert_mem_eq(w.T_accum, w2.T_accum, (size_t)(R * C));
	/* under the cap: no capping at all */
	for (int64_t i = 0; i < 50; i++) w2.T_accum[i] = (int8_t)((i & 1) ? 4 : -4);
	for (int64_t i = 50; i < R * C; i++) w2.T_accum[i] = 0;
	arb_tern_free(&w2);
	mk(&w2, R, C, 4, 0, 0);
	for (int64_t i = 0; i < 50; i++) w2.T_accum[i] = -4;
	be->tern_step(be, &w2, &p, &st2);
	ck_assert_int_eq(st2.flips, 50);
	ck_assert_int_eq(st2.capped, 0);
	arb_tern_free(&w);
	arb_tern_free(&w2);
}
END_TEST

START_TEST(residual_rule)
{
	arb_tern w;
	arb_step_stats st;
	mk(&w, 1, 40, 32, ARB_ERULE_RESIDUAL, 1);  /* groups: 32 + partial 8 */
	ck_assert_ptr_nonnull(w.E_accum);
	w.E[0] = w.E[1] = -3;
	arb_step p = params(120);
	p.e_threshold = 4;
	/* dW aligned with t (t = +1, dW > 0): weights too large */
	for (int s = 1; s <= 4; s++) {
		vote_all(&w, 1.0f, 1);
		ck_assert_int_eq(w.score[0], 32);
		ck_assert_int_eq(w.score[1], 8);
		be->tern_step(be, &w, &p, &st);
		ck_assert_int_eq(w.score[0], 0);     /* zeroed after the step */
		if (s < 4) {
			ck_assert_int_eq(w.E[0], -3);
			ck_assert_int_eq(w.E_accum[0], -s);
		}
	}
	ck_assert_int_eq(w.E[0], -4);            /* lost magnitude */
	ck_assert_int_eq(w.E[1], -4);
	ck_assert_int_eq(w.E_accum[0], 0);
	ck_assert_int_eq(st.e_changes, 2);
	/* e_min clamps */
	p.e_min = -4;
	for (int s = 0; s < 4; s++) { vote_all(&w, 1.0f, 1); be->tern_step(be, &w, &p, &st); }
	ck_assert_int_eq(w.E[0], -4);
	ck_assert_int_eq(st.e_changes, 0);
	/* opposed gradient: magnitude grows */
	p.e_min = -30;
	for (int s = 0; s < 4; s++) { vote_all(&w, -1.0f, 1); be->tern_step(be, &w, &p, &st); }
	ck_assert_int_eq(w.E[0], -3);
	arb_tern_free(&w);

	/* order t_first: each flip of the step is subtracted from the score */
	mk(&w, 1, 4, 4, ARB_ERULE_RESIDUAL, 0);
	p = params(1);
	p.order = ARB_ORDER_T_FIRST;
	w.T_accum[0] = -1;  /* flips 0 -> -1 */
	w.score[0] = 1;
	be->tern_step(be, &w, &p, &st);
	ck_assert_int_eq(st.flips, 1);
	ck_assert_int_eq(w.E_accum[0], 0);       /* s = 1 - 1 = 0 */
	w.T_accum[0] = -1;                       /* at the ladder's end now */
	w.score[0] = 1;
	p.order = ARB_ORDER_E_FIRST;
	be->tern_step(be, &w, &p, &st);
	ck_assert_int_eq(w.E_accum[0], -1);
	arb_tern_free(&w);
}
END_TEST

START_TEST(bigint_rule)
{
	arb_tern w;
	arb_step_stats st;
	mk(&w, 1, 32, 32, ARB_ERULE_BIGINT, 1);
	w.bigint_alpha = 1.0f;
	w.E[0] = -3;
	arb_step p = params(120);
	float s0 = arb_tern_scale(&w, 0, 0);
	ck_assert_float_eq(s0, 0.125f);
	float prev = s0;
	for (int s = 1; s <= 3; s++) {
		vote_all(&w, 1.0f, 1);  /* aligned: score 32 */
		be->tern_step(be, &w, &p, &st);
		ck_assert_int_eq(w.corr[0], -32 * s);
		ck_assert_int_eq(w.steps, s);
		/* 2^(E + alpha * corr / (steps * gs)) = 2^(-3 - 1) */
		float sc = arb_tern_scale(&w, 0, 0);
		ck_assert_float_eq_tol(sc, 0.0625f, 1e-7);
		ck_assert(sc < s0);
		prev = sc;
	}
	/* opposed votes push it back up */
	for (int s = 0; s < 3; s++) { vote_all(&w, -1.0f, 1); be->tern_step(be, &w, &p, &st); }
	ck_assert_int_eq(w.corr[0], 0);
	ck_assert(arb_tern_scale(&w, 0, 0) > prev);
	arb_tern_free(&w);
}
END_TEST

START_TEST(sr_vote)
{
	const int64_t C = 4096;
	arb_tern w, w2;
	mk(&w, 2, C, 32, 0, 0);
	mk(&w2, 2, C, 32, 0, 0);
	float *x = malloc((size_t)C * 4);
	for (int64_t k = 0; k < C; k++) x[k] = 1.0f;
	float dy[2] = { 0.3f, -0.45f };
	arb_vote v = { ARB_VOTE_SR, 1, 2, 99, 5 };
	w.rms_log2 = 0;   /* v = R * dW */
	w2.rms_log2 = 0;
	be->linear_vote(be, &w, x, dy, 1, &v);
	be->linear_vote(be, &w2, x, dy, 1, &v);
	ck_assert_mem_eq(w.T_accum, w2.T_accum, (size_t)(2 * C));
	double m0 = 0, m1 = 0;
	for (int64_t k = 0; k < C; k++) {
		int a0 = -w.T_accum[k], a1 = -w.T_accum[C + k];
		ck_assert(a0 == 0 || a0 == 1);        /* floor(0.6 + u) */
		ck_assert(a1 == -1 || a1 == -0);      /* floor(-0.9 + u) */
		m0 += a0;
		m1 += a1;
	}
	m0 /= C;
	m1 /= C;
	/* E[inc] = R * dW / 2^rms_log2; sd of the mean ~ 0.5 / 64 */
	ck_assert_double_le(fabs(m0 - 0.6), 0.03);
	ck_assert_double_le(fabs(m1 + 0.9), 0.03);
	/* another step number draws other rounding */
	v.t = 6;
	memset(w2.T_accum, 0, (size_t)(2 * C));
	be->linear_vote(be, &w2, x, dy, 1, &v);
	ck_assert(memcmp(w.T_accum, w2.T_accum, (size_t)(2 * C)) != 0);
	/* sumsq accumulates sum(dW^2); the step turns it into rms_log2 */
	double want = C * (0.3 * 0.3 + 0.45 * 0.45);
	ck_assert_double_le(fabs(w.sumsq - want), 1e-3 * want);
	arb_step p = params(100);
	arb_step_stats st;
	be->tern_step(be, &w, &p, &st);
	ck_assert_int_eq(w.rms_log2, arb_rms_log2(want, 2 * C)); /* rms .38 -> -2 */
	ck_assert_int_eq(w.rms_log2, -2);
	ck_assert(w.sumsq == 0.0);
	/* unknown rms: measured first from this call's dW, v = R dW / 2^-2 */
	arb_tern w3;
	mk(&w3, 2, C, 32, 0, 0);
	be->linear_vote(be, &w3, x, dy, 1, &v);
	int inc = -w3.T_accum[0];
	ck_assert(inc == 2 || inc == 3);  /* floor(2 * 0.3 * 4 + u) */
	/* increments are clamped to +-8 */
	arb_tern w4;
	mk(&w4, 2, C, 32, 0, 0);
	w4.rms_log2 = -6;
	be->linear_vote(be, &w4, x, dy, 1, &v);
	ck_assert_int_eq(w4.T_accum[0], -8);
	ck_assert_int_eq(w4.T_accum[C], 8);
	free(x);
	arb_tern_free(&w); arb_tern_free(&w2); arb_tern_free(&w3); arb_tern_free(&w4);
}
END_TEST

START_TEST(embed_vote_dups_and_untouched)
{
	const int64_t V = 50, D = 8;
	arb_tern w;
	ck_assert_int_eq(arb_tern_alloc(&w, "emb", V, D, 4, ARB_TERN_SPARSE, 0, NULL), ARB_OK);
	w.id = 4;
	arb_tern_init ini = { 3, 1.0 / 3, 0, -2, 2 };
	be->tern_init(be, &w, &ini);
	uint8_t *pk0 = malloc((size_t)(V * w.row_bytes));
	int8_t *acc0 = malloc((size_t)(V * D));
	memcpy(pk0, w.packed, (size_t)(V * w.row_bytes));
	memcpy(acc0, w.T_accum, (size_t)(V * D));
	int32_t idx[4] = { 3, 3, 5, 3 };
	float dout[4 * 8];
	for (int d = 0; d < 8; d++) {
		/* row 3: d < 4: 1 - 0.25 - 0.25 = +0.5; d >= 4: 1 - 0.25 + 0 */
		dout[0 * 8 + d] = 1.0f;
		dout[1 * 8 + d] = -0.25f;
		dout[2 * 8 + d] = -0.5f;   /* row 5 */
		dout[3 * 8 + d] = d < 4 ? -0.25f : 0.0f;
	}
	arb_vote v = { ARB_VOTE_SIGN, 1, 1, 1, 0 };
	be->embed_vote(be, &w, idx, 4, dout, &v);
	for (int d = 0; d < 8; d++) {
		/* one vote on the summed gradient: -1. Separate sign votes per
		 * position would give -1 + 1 + 1 = +1 (d < 4) or 0 (d >= 4). */
		ck_assert_int_eq(w.T_accum[3 * D + d], acc0[3 * D + d] - 1);
		ck_assert_int_eq(w.T_accum[5 * D + d], acc0[5 * D + d] + 1);
	}
	arb_step p = params(3);
	arb_step_stats st;
	be->tern_step(be, &w, &p, &st);
	/* accum_init 2 < threshold 3: rows never voted on stay bit-identical */
	for (int64_t r = 0; r < V; r++) {
		if (r == 3 || r == 5) continue;
		ck_assert_mem_eq(w.packed + r * w.row_bytes, pk0 + r * w.row_bytes,
				 (size_t)w.row_bytes);
		ck_assert_mem_eq(w.T_accum + r * D, acc0 + r * D, (size_t)D);
	}
	free(pk0); free(acc0);
	arb_tern_free(&w);
}
END_TEST

START_TEST(schedule)
{
	arb_sched_cfg s;
	arb_error err = { 0 };
	ck_assert_int_eq(arb_sched_cfg_from_conf(&s, NULL, NULL, 7, &err), ARB_OK);
	ck_assert_int_eq(s.threshold, 12);
	ck_assert_int_eq(s.accum_init, 6);       /* -1 -> threshold / 2 */
	ck_assert_int_eq(s.vote, ARB_VOTE_SIGN);
	ck_assert_int_eq(arb_sched_threshold(&s, 0), 12); /* no warm-up */
	s.threshold_start = 4;
	s.warmup_steps = 8;
	ck_assert_int_eq(arb_sched_threshold(&s, 0), 4);
	ck_assert_int_eq(arb_sched_threshold(&s, 3), 7);
	ck_assert_int_eq(arb_sched_threshold(&s, 4), 8);
	ck_assert_int_eq(arb_sched_threshold(&s, 7), 11);
	ck_assert_int_eq(arb_sched_threshold(&s, 8), 12);
	ck_assert_int_eq(arb_sched_threshold(&s, 1000), 12);
	s.threshold_start = 20;                  /* warm-up downward */
	ck_assert_int_eq(arb_sched_threshold(&s, 2), 18);
	ck_assert_int_eq(arb_sched_threshold(&s, 8), 12);
	/* anneal after the warm-up: 12 -> 24 over steps (100, 140] */
	s.threshold_end = 24;
	s.anneal_start = 100;
	s.anneal_steps = 40;
	ck_assert_int_eq(arb_sched_threshold(&s, 2), 18);  /* warm-up untouched */
	ck_assert_int_eq(arb_sched_threshold(&s, 100), 12);
	ck_assert_int_eq(arb_sched_threshold(&s, 103), 12); /* 12 + 12*3/40 */
	ck_assert_int_eq(arb_sched_threshold(&s, 104), 13);
	ck_assert_int_eq(arb_sched_threshold(&s, 120), 18);
	ck_assert_int_eq(arb_sched_threshold(&s, 139), 23);
	ck_assert_int_eq(arb_sched_threshold(&s, 140), 24);
	ck_assert_int_eq(arb_sched_threshold(&s, 99999), 24);
	s.threshold_end = 6;                     /* anneal downward */
	ck_assert_int_eq(arb_sched_threshold(&s, 120), 9);
	ck_assert_int_eq(arb_sched_threshold(&s, 200), 6);
	s.threshold_end = 0;
	ck_assert_int_eq(arb_sched_threshold(&s, 200), 12);

	/* step = min(max, 1 + floor(loss_step * max(0, loss - floor))) */
	ck_assert_int_eq(arb_sched_loss_step(&s, 5.0), 1); /* off */
	s.loss_step = 2.0;
	s.loss_floor = 1.5;
	s.loss_step_max = 4;
	ck_assert_int_eq(arb_sched_loss_step(&s, 1.0), 1);
	ck_assert_int_eq(arb_sched_loss_step(&s, 2.0), 2);
	ck_assert_int_eq(arb_sched_loss_step(&s, 2.9), 3);
	ck_assert_int_eq(arb_sched_loss_step(&s, 10.0), 4);
	ck_assert_int_eq(arb_sched_loss_step(&s, NAN), 1);
	arb_vote v;
	arb_sched_vote(&s, 33, 2.0, &v);
	ck_assert_int_eq(v.step, 2);
	ck_assert_int_eq(v.t, 33);
	ck_assert_int_eq(v.seed, 7);
	s.flip_cap = 0.0125;
	arb_step p;
	arb_sched_step_params(&s, 2, 1000, &p);
	ck_assert_int_eq(p.cap_ppm, 12500);
	ck_assert_int_eq(p.threshold, 18);
	ck_assert_int_eq(p.e_threshold, 120);
	ck_assert_int_eq(p.e_min, -30);
	ck_assert_int_eq(p.e_max, 10);
}
END_TEST

START_TEST(registry_step)
{
	arb_sched_cfg s;
	ck_assert_int_eq(arb_sched_cfg_from_conf(&s, NULL, NULL, 3, NULL), ARB_OK);
	s.threshold = 2;
	s.accum_init = 0;
	arb_registry reg;
	arb_registry_init(&reg, be, &s);
	arb_tern *a, *b, *g;
	arb_error err = { 0 };
	ck_assert_int_eq(arb_registry_create(&reg, "a", 4, 10, NULL, &a, &err), ARB_OK);
	ck_assert_int_eq(arb_registry_create(&reg, "b", 3, 10, NULL, &b, &err), ARB_OK);
	arb_tern_param fp = { sizeof fp, 0, 1, 0, -1.0, 1, 1 };
	ck_assert_int_eq(arb_registry_create(&reg, "g", 1, 10, &fp, &g, &err), ARB_OK);
	ck_assert_int_eq(a->id, 0);
	ck_assert_int_eq(b->id, 1);
	ck_assert_int_eq(a->E[0], arb_e_from_fanin(10, s.zero_frac));
	ck_assert_ptr_eq(arb_registry_find(&reg, "b"), b);
	ck_assert_ptr_null(arb_registry_find(&reg, "zz"));
	uint8_t g0[2];
	memcpy(g0, g->packed, 2);
	for (int64_t i = 0; i < 40; i++) a->T_accum[i] = -2;
	for (int64_t i = 0; i < 30; i++) b->T_accum[i] = 2;
	int64_t cand = 0;
	for (int64_t i = 0; i < 40; i++) cand += arb_tern_get(a->packed, a->row_bytes, i / 10, i % 10) != -1;
	for (int64_t i = 0; i < 30; i++) cand += arb_tern_get(b->packed, b->row_bytes, i / 10, i % 10) != 1;
	arb_step_stats tot;
	arb_registry_step(&reg, 0, &tot);
	ck_assert_int_eq(tot.flips, cand);
	ck_assert_int_eq(tot.saturated, 70 - cand);
	ck_assert_mem_eq(g->packed, g0, 2);      /* frozen untouched */
	arb_registry_free(&reg);
}
END_TEST

Suite *suite_rules(void)
{
	Suite *s = suite_create("rules");
	TCase *tc = tcase_create("cpu");
	tcase_add_checked_fixture(tc, setup, NULL);
	tcase_add_test(tc, positive_gradient_moves_down);
	tcase_add_test(tc, negative_gradient_moves_up);
	tcase_add_test(tc, saturation);
	tcase_add_test(tc, reset_modes_and_ladder_end);
	tcase_add_test(tc, flip_cap);
	tcase_add_test(tc, residual_rule);
	tcase_add_test(tc, bigint_rule);
	tcase_add_test(tc, sr_vote);
	tcase_add_test(tc, embed_vote_dups_and_untouched);
	tcase_add_test(tc, schedule);
	tcase_add_test(tc, registry_step);
	suite_add_tcase(s, tc);
	return s;
}
