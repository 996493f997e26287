/*
 * tests/check_tern.c -- the packed ternary tensor on the host: the ARBS flat
 * interchange format, compute <-> flat conversion, group scales, packed-first
 * init (statistics, determinism, memory: no float or weight-shaped
 * temporary), and the audit's bytes per weight.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include "core.h"
#include "testutil.h"

static uint64_t lcg(uint64_t *s)
{
	*s = *s * 6364136223846793005ull + 1442695040888963407ull;
	return *s >> 33;
}

START_TEST(flat_round_trip)
{
	uint64_t s = 7;
	for (int64_t n = 0; n <= 23; n++) {
		int8_t tr[23], back[23];
		uint8_t buf[5];
		for (int64_t i = 0; i < n; i++) tr[i] = (int8_t)((int)(lcg(&s) % 3) - 1);
		memset(back, 99, sizeof back);
		arb_pack_flat(tr, n, buf);
		arb_unpack_flat(buf, n, back);
		ck_assert_mem_eq(tr, back, (size_t)n);
		/* nothing past n is written */
		for (int64_t i = n; i < 23; i++) ck_assert_int_eq(back[i], 99);
		/* padding digits are code 0 */
		if (n % 5) {
			int v = buf[n / 5];
			for (int j = 0; j < (int)(n % 5); j++) v /= 3;
			ck_assert_int_eq(v, 0);
		}
	}
	int64_t n = 1000003;
	int8_t *tr = malloc((size_t)n), *back = malloc((size_t)n);
	uint8_t *buf = malloc((size_t)(n + 4) / 5);
	for (int64_t i = 0; i < n; i++) tr[i] = (int8_t)((int)(lcg(&s) % 3) - 1);
	arb_pack_flat(tr, n, buf);
	arb_unpack_flat(buf, n, back);
	ck_assert_mem_eq(tr, back, (size_t)n);
	free(tr); free(back); free(buf);
}
END_TEST

START_TEST(flat_hand_example)
{
	/* trits -1 0 +1 +1 -1 | +1 0 -> codes 0 1 2 2 0 | 2 1 (0 0 0 padding)
	 * byte0 = 0 + 3*1 + 9*2 + 27*2 + 81*0 = 75
	 * byte1 = 2 + 3*1 = 5 */
	int8_t tr[7] = { -1, 0, 1, 1, -1, 1, 0 }, back[7];
	uint8_t buf[2];
	arb_pack_flat(tr, 7, buf);
	ck_assert_int_eq(buf[0], 75);
	ck_assert_int_eq(buf[1], 5);
	arb_unpack_flat(buf, 7, back);
	ck_assert_mem_eq(tr, back, 7);
	/* the digits of byte 1 beyond n decode as -1 (code 0) but are
	 * stripped by length */
	ck_assert_int_eq(arb_trit_of(buf[1], 2), -1);
}
END_TEST

START_TEST(export_import)
{
	int64_t shapes[][2] = { { 7, 13 }, { 3, 1 }, { 5, 24 }, { 11, 5 }, { 2, 37 } };
	uint64_t s = 99;
	for (size_t q = 0; q < sizeof shapes / sizeof shapes[0]; q++) {
		int64_t R = shapes[q][0], C = shapes[q][1];
		arb_tern a, b;
		arb_error err = { 0 };
		ck_assert_int_eq(arb_tern_alloc(&a, "a", R, C, 4, 0, 0, &err), ARB_OK);
		ck_assert_int_eq(arb_tern_alloc(&b, "b", R, C, 4, 0, 0, &err), ARB_OK);
		int8_t *tr = malloc((size_t)(R * C));
		for (int64_t i = 0; i < R * C; i++) {
			tr[i] = (int8_t)((int)(lcg(&s) % 3) - 1);
			arb_tern_set(&a, i / C, i % C, tr[i]);
		}
		for (int64_t i = 0; i < R * C; i++)
			ck_assert_int_eq(arb_tern_get(a.packed, a.row_bytes, i / C, i % C), tr[i]);
		/* compute-layout padding digits stay code 1 (trit 0) */
		for (int64_t r = 0; r < R; r++)
			for (int64_t c = C; c < a.row_bytes * 5; c++)
				ck_assert_int_eq(arb_tern_get(a.packed, a.row_bytes, r, c), 0);
		int64_t nb = (R * C + 4) / 5;
		uint8_t *flat = malloc((size_t)nb), *ref = malloc((size_t)nb);
		arb_tern_export_flat(&a, flat);
		arb_pack_flat(tr, R * C, ref);
		ck_assert_mem_eq(flat, ref, (size_t)nb);
		arb_tern_import_flat(&b, flat);
		ck_assert_mem_eq(a.packed, b.packed, (size_t)(R * a.row_bytes));
		/* row decoding */
		int8_t *row = malloc((size_t)C);
		for (int64_t r = 0; r < R; r++) {
			arb_tern_row_trits(&a, r, row);
			ck_assert_mem_eq(row, tr + r * C, (size_t)C);
		}
		free(row); free(tr); free(flat); free(ref);
		arb_tern_free(&a);
		arb_tern_free(&b);
	}
}
END_TEST

START_TEST(group_scales)
{
	int gss[] = { 4, 12, 32, 64 };
	const int64_t R = 3, C = 70; /* 70 is not a multiple of any of them */
	for (size_t q = 0; q < 4; q++) {
		int gs = gss[q];
		arb_tern t;
		arb_error err = { 0 };
		ck_assert_int_eq(arb_tern_alloc(&t, "g", R, C, gs, 0, 0, &err), ARB_OK);
		ck_assert_int_eq(t.groups, (70 + gs - 1) / gs);
		for (int64_t i = 0; i < R * t.groups; i++) t.E[i] = (int8_t)(i % 7 - 3);
		for (int64_t r = 0; r < R; r++)
			for (int64_t c = 0; c < C; c++)
				arb_tern_set(&t, r, c, (int)((r + c) % 3) - 1);
		float w[70];
		for (int64_t r = 0; r < R; r++) {
			arb_tern_row_weights(&t, r, w);
			for (int64_t c = 0; c < C; c++) {
				int64_t g = c / gs;
				float want = (float)((int)((r + c) % 3) - 1) *
					     ldexpf(1.0f, t.E[r * t.groups + g]);
				ck_assert_float_eq(w[c], want);
			}
		}
		arb_tern_free(&t);
	}
	/* bigint: 2^(E + alpha*corr/(steps*gs)); steps == 0 -> plain 2^E */
	arb_tern t;
	ck_assert_int_eq(arb_tern_alloc(&t, "b", 1, 8, 4, 0, ARB_ERULE_BIGINT, NULL), ARB_OK);
	ck_assert_ptr_nonnull(t.corr);
	ck_assert_ptr_nonnull(t.score);
	ck_assert_ptr_null(t.E_accum);
	t.bigint_alpha = 2.0f;
	t.E[0] = -3;
	t.corr[0] = -8;
	ck_assert_float_eq(arb_tern_scale(&t, 0, 0), 0.125f);
	t.steps = 2; /* -3 + 2 * -8 / (2 * 4) = -5 */
	ck_assert_float_eq_tol(arb_tern_scale(&t, 0, 0), 0.03125f, 1e-9);
	arb_tern_free(&t);
	/* bad group size is refused with a message */
	arb_error err = { 0 };
	ck_assert_int_eq(arb_tern_alloc(&t, "x", 1, 8, 3, 0, 0, &err), ARB_ERR_INVALID);
	ck_assert(strstr(err.msg, "group_size") != NULL);
}
END_TEST

START_TEST(helpers)
{
	/* fan_in 512, zf 1/3: log2(1/sqrt(341.3)) = -4.21 -> -4 */
	ck_assert_int_eq(arb_e_from_fanin(512, 1.0 / 3), -4);
	ck_assert_int_eq(arb_e_from_fanin(64, 0.0), -3);
	ck_assert_int_eq(arb_e_from_fanin(1, 1.0 / 3), 0);
	/* rms_log2 = floor(log2(rms)) from the float exponent of the mean */
	ck_assert_int_eq(arb_rms_log2(4.0 * 100, 100), 1);   /* rms 2 */
	ck_assert_int_eq(arb_rms_log2(0.3 * 100, 100), -1);  /* rms .548 */
	ck_assert_int_eq(arb_rms_log2(0.1 * 100, 100), -2);  /* rms .316 */
	ck_assert_int_eq(arb_rms_log2(0.0, 100), ARB_RMS_UNKNOWN);
}
END_TEST

static void init_tensor(arb_tern *t, uint32_t id, uint64_t seed, double zf,
			int e, int ai, int64_t R, int64_t C)
{
	arb_backend *be = arb_backend_cpu();
	ck_assert_int_eq(arb_tern_alloc(t, "i", R, C, 32, 0, 0, NULL), ARB_OK);
	t->id = id;
	arb_tern_init ini = { seed, zf, 0, e, ai };
	be->tern_init(be, t, &ini);
}

START_TEST(packed_first_init)
{
	const int64_t R = 64, C = 203;
	double zfs[] = { 0.0, 0.25, 1.0 / 3, 0.6 };
	for (int q = 0; q < 4; q++) {
		arb_tern t;
		int e = arb_e_from_fanin(C, zfs[q]);
		init_tensor(&t, 3, 42, zfs[q], e, 6, R, C);
		int64_t z = 0, pos = 0, amin = 0, amax = 0;
		for (int64_t r = 0; r < R; r++)
			for (int64_t c = 0; c < C; c++) {
				int v = arb_tern_get(t.packed, t.row_bytes, r, c);
				z += v == 0;
				pos += v == 1;
				int a = t.T_accum[r * C + c];
				if (a < amin) amin = a;
				if (a > amax) amax = a;
			}
		double n = (double)(R * C);
		ck_assert_double_le(fabs(z / n - zfs[q]), 0.015);
		if (zfs[q] < 1.0)
			ck_assert_double_le(fabs(pos / (n - z) - 0.5), 0.02);
		ck_assert_int_eq(amin, -6);
		ck_assert_int_eq(amax, 6);
		for (int64_t i = 0; i < R * t.groups; i++) ck_assert_int_eq(t.E[i], e);
		ck_assert_int_eq(t.rms_log2, ARB_RMS_UNKNOWN);
		arb_tern_free(&t);
	}
	arb_tern a, b, c, d;
	init_tensor(&a, 5, 42, 1.0 / 3, -4, 6, R, C);
	init_tensor(&b, 5, 42, 1.0 / 3, -4, 6, R, C);
	init_tensor(&c, 6, 42, 1.0 / 3, -4, 6, R, C);
	init_tensor(&d, 5, 43, 1.0 / 3, -4, 6, R, C);
	size_t pb = (size_t)(R * a.row_bytes);
	ck_assert_mem_eq(a.packed, b.packed, pb);
	ck_assert_mem_eq(a.T_accum, b.T_accum, (size_t)(R * C));
	ck_assert(memcmp(a.packed, c.packed, pb) != 0);
	ck_assert(memcmp(a.T_accum, c.T_accum, (size_t)(R * C)) != 0);
	ck_assert(memcmp(a.packed, d.packed, pb) != 0);
	/* the init follows tensor.h literally for a few indices */
	for (int64_t i = 0; i < 50; i++) {
		uint32_t u = arb_rng_u32(42, arb_rng_stream(5, 0, ARB_RNG_INIT_TRIT), (uint64_t)i);
		int want = 0;
		if ((double)u >= (1.0 / 3) * 4294967296.0)
			want = (arb_rng_u32(42, arb_rng_stream(5, 0, ARB_RNG_INIT_SIGN),
					    (uint64_t)i) & 1) ? 1 : -1;
		ck_assert_int_eq(arb_tern_get(a.packed, a.row_bytes, i / C, i % C), want);
		int wa = (int)(arb_rng_u32(42, arb_rng_stream(5, 0, ARB_RNG_INIT_ACCUM),
					   (uint64_t)i) % 13) - 6;
		ck_assert_int_eq(a.T_accum[i], wa);
	}
	arb_tern_free(&a); arb_tern_free(&b); arb_tern_free(&c); arb_tern_free(&d);
}
END_TEST

static int64_t vm_hwm_kb(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	int64_t v = -1;
	if (!f) return -1;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "VmHWM: %lld", (long long *)&v) == 1) break;
	fclose(f);
	return v;
}

/* 10,000,000 x 64 table: packed-first init in host memory must not need any
 * float copy or weight-shaped temporary: peak RSS growth <= 1.1 x state */
START_TEST(big_table_init)
{
	const int64_t R = 10000000, C = 64;
	int64_t before = vm_hwm_kb();
	ck_assert_int_gt(before, 0);
	double t0 = arb_now();
	arb_tern t;
	arb_error err = { 0 };
	ck_assert_int_eq(arb_tern_alloc(&t, "kg", R, C, 32, ARB_TERN_SPARSE, 0, &err), ARB_OK);
	t.id = 9;
	arb_tern_init ini = { 1, 1.0 / 3, 0, arb_e_from_fanin(C, 1.0 / 3), 0 };
	arb_backend_cpu()->tern_init(arb_backend_cpu(), &t, &ini);
	double dt = arb_now() - t0;
	int64_t after = vm_hwm_kb();
	arb_tern_bytes b;
	arb_tern_count_bytes(&t, &b);
	int64_t state = b.packed + b.e + b.t_accum + b.e_accum + b.corr;
	double growth = (double)(after - before) * 1024.0;
	fprintf(stderr, "big_table_init: 10M x 64 in %.2f s, state %.1f MB, "
		"peak RSS growth %.1f MB (%.3fx)\n", dt, state / 1e6, growth / 1e6,
		growth / (double)state);
	ck_assert_int_eq(state, R * 13 + R * 2 + R * C);
	ck_assert_double_le(growth, 1.1 * (double)state);
	/* spot check a few rows decode to ternary values */
	int64_t z = 0;
	for (int64_t r = R - 100; r < R; r++)
		for (int64_t c = 0; c < C; c++) z += arb_tern_get(t.packed, t.row_bytes, r, c) == 0;
	ck_assert_double_le(fabs(z / 6400.0 - 1.0 / 3), 0.03);
	arb_tern_free(&t);
}
END_TEST

START_TEST(audit_bytes)
{
	arb_sched_cfg s;
	arb_error err = { 0 };
	ck_assert_int_eq(arb_sched_cfg_from_conf(&s, NULL, NULL, 1, &err), ARB_OK);
	ck_assert_int_eq(s.group_size, 32);
	ck_assert_int_eq(s.erule, ARB_ERULE_FROZEN);
	arb_registry reg;
	arb_registry_init(&reg, arb_backend_cpu(), &s);
	ck_assert_int_eq(arb_registry_create(&reg, "emb", 256, 128, NULL, NULL, &err), ARB_OK);
	ck_assert_int_eq(arb_registry_create(&reg, "q", 128, 128, NULL, NULL, &err), ARB_OK);
	ck_assert_int_eq(arb_registry_create(&reg, "ffn", 512, 128, NULL, NULL, &err), ARB_OK);
	arb_tern_param gp = { sizeof gp, 0, 1, 0, -1.0, 1, 1 };
	arb_tern *g = NULL;
	ck_assert_int_eq(arb_registry_create(&reg, "norm", 1, 128, &gp, &g, &err), ARB_OK);
	ck_assert_ptr_null(g->T_accum);
	ck_assert_int_eq(g->id, 3);
	/* duplicate names are refused */
	ck_assert_int_eq(arb_registry_create(&reg, "q", 4, 4, NULL, NULL, &err), ARB_ERR_INVALID);
	ck_assert(strstr(err.msg, "already registered") != NULL);
	arb_audit a;
	arb_audit_registry(&reg, &a);
	arb_audit_print(&a, stderr);
	ck_assert_int_eq(a.tensors, 4);
	ck_assert_int_eq(a.weights, (256 + 128 + 512 + 1) * 128);
	ck_assert_int_eq(a.trainable_weights, (256 + 128 + 512) * 128);
	ck_assert_int_eq(a.bytes_float, 0);
	ck_assert_int_eq(a.bytes_u8, (256 + 128 + 512 + 1) * 26);
	ck_assert_double_le(a.bytes_per_weight, 1.27);
	ck_assert_double_ge(a.bytes_per_weight, 1.0);
	ck_assert_int_eq(a.bytes_workspace, 4 * 8); /* sumsq doubles only */
	/* zero trits: counted weight by weight (128 % 5 = 3: every row's
	 * last byte holds 2 padding trits, which are not weights) */
	int64_t zeros = 0;
	for (int i = 0; i < reg.n; i++) {
		const arb_tern *t = reg.items[i];
		for (int64_t r = 0; r < t->rows; r++)
			for (int64_t c = 0; c < t->cols; c++)
				zeros += arb_trit_of(t->packed[r * t->row_bytes + c / 5],
						     (int)(c % 5)) == 0;
	}
	ck_assert_int_gt(zeros, 0);
	ck_assert_int_eq(a.zeros, zeros);
	arb_registry_free(&reg);
}
END_TEST

Suite *suite_tern(void)
{
	Suite *s = suite_create("tern");
	TCase *tc = tcase_create("layout");
	tcase_add_test(tc, flat_round_trip);
	tcase_add_test(tc, flat_hand_example);
	tcase_add_test(tc, export_import);
	tcase_add_test(tc, group_scales);
	tcase_add_test(tc, helpers);
	tcase_add_test(tc, packed_first_init);
	tcase_add_test(tc, audit_bytes);
	suite_add_tcase(s, tc);
	TCase *big = tcase_create("big");
	tcase_set_timeout(big, 60);
	tcase_add_test(big, big_table_init);
	suite_add_tcase(s, big);
	return s;
}
