/*
 * core/tern.c -- host-memory helpers of the packed ternary tensor
 * (arb/tensor.h): allocation, the ARBS flat interchange format, conversion
 * between the row-aligned compute layout and the flat layout, row decoding,
 * group scales for every exponent rule, byte accounting, and the two small
 * numeric helpers arb_e_from_fanin and arb_rms_log2.
 *
 * Packed-first initialization is a backend op (arb_backend.tern_init); the
 * CPU version lives in core/ops_cpu.c.
 */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "arb/tensor.h"

/* byte whose five digits are all code 1 (trit 0): 1+3+9+27+81 */
#define ZERO_BYTE 121

int arb_e_from_fanin(int64_t fan_in, double zero_frac)
{
	double live = (double)fan_in * (1.0 - zero_frac);
	if (!(live > 0.0)) return 0;
	/* log2(1/sqrt(live)) = -0.5 * log2(live) */
	double e = nearbyint(-0.5 * log2(live));
	if (e < -126) e = -126;
	if (e > 127) e = 127;
	return (int)e;
}

int arb_rms_log2(double sumsq, int64_t n)
{
	if (!(sumsq > 0.0) || n <= 0) return ARB_RMS_UNKNOWN;
	float mean = (float)(sumsq / (double)n);
	if (mean == 0.0f) return -127;      /* underflow: smallest exponent */
	if (isinf(mean)) return 127;
	int e = ilogbf(mean) >> 1;          /* floor(log2(mean) / 2) */
	if (e < -127) e = -127;
	if (e > 127) e = 127;
	return e;
}

/* ------------------------------------------------------------------------- */

arb_status arb_tern_alloc(arb_tern *t, const char *name, int64_t rows,
			  int64_t cols, int32_t group_size, uint32_t flags,
			  int erule, arb_error *err)
{
	char nm[64];
	if (!t)
		return ARB_FAIL(err, ARB_ERR_INVALID, "arb_tern_alloc: NULL tensor");
	if (!name || !name[0])
		return ARB_FAIL(err, ARB_ERR_INVALID, "arb_tern_alloc: empty tensor name");
	if (strlen(name) >= sizeof nm)
		return ARB_FAIL(err, ARB_ERR_INVALID,
				"tensor '%s': name longer than %zu bytes", name,
				sizeof nm - 1);
	memcpy(nm, name, strlen(name) + 1); /* name may alias t->name */
	if (rows < 1 || cols < 1)
		return ARB_FAIL(err, ARB_ERR_INVALID,
				"tensor '%s': shape %lld x %lld must be at least 1 x 1",
				nm, (long long)rows, (long long)cols);
	if (rows > INT64_MAX / cols)
		return ARB_FAIL(err, ARB_ERR_INVALID,
				"tensor '%s': shape %lld x %lld overflows", nm,
				(long long)rows, (long long)cols);
	if (group_size < ARB_GROUP_MIN || group_size > ARB_GROUP_MAX)
		return ARB_FAIL(err, ARB_ERR_INVALID,
				"tensor '%s': group_size %d outside %d..%d", nm,
				group_size, ARB_GROUP_MIN, ARB_GROUP_MAX);
	if (erule < ARB_ERULE_FROZEN || erule > ARB_ERULE_BIGINT)
		return ARB_FAIL(err, ARB_ERR_INVALID,
				"tensor '%s': unknown exponent rule %d", nm, erule);
	if (flags & ARB_TERN_DEVICE)
		return ARB_FAIL(err, ARB_ERR_INVALID,
				"tensor '%s': arb_tern_alloc allocates host memory; "
				"use the CUDA backend's tern_alloc for device tensors", nm);

	memset(t, 0, sizeof *t);
	memcpy(t->name, nm, strlen(nm) + 1);
	t->rows = rows;
	t->cols = cols;
	t->group_size = group_size;
	t->groups = arb_groups(cols, group_size);
	t->row_bytes = arb_row_bytes(cols);
	t->flags = flags;
	t->erule = erule;
	t->rms_log2 = ARB_RMS_UNKNOWN;

	int64_t ng = rows * (int64_t)t->groups;
	t->packed = malloc((size_t)(rows * t->row_bytes));
	t->E = calloc((size_t)ng, 1);
	int ok = t->packed && t->E;
	if (!(flags & ARB_TERN_FROZEN)) {
		t->T_accum = calloc((size_t)(rows * cols), 1);
		ok = ok && t->T_accum;
	}
	if (erule == ARB_ERULE_RESIDUAL) {
		t->E_accum = calloc((size_t)ng, 1);
		ok = ok && t->E_accum;
	}
	if (erule == ARB_ERULE_BIGINT) {
		t->corr = calloc((size_t)ng, sizeof *t->corr);
		ok = ok && t->corr;
	}
	if (erule != ARB_ERULE_FROZEN) {
		t->score = calloc((size_t)ng, sizeof *t->score);
		ok = ok && t->score;
	}
	if (!ok) {
		arb_tern_free(t);
		return ARB_FAIL(err, ARB_ERR_NOMEM,
				"tensor '%s' (%lld x %lld): out of host memory", nm,
				(long long)rows, (long long)cols);
	}
	/* all-zero trits with padding code 1: a valid tensor until init */
	memset(t->packed, ZERO_BYTE, (size_t)(rows * t->row_bytes));
	return ARB_OK;
}

void arb_tern_free(arb_tern *t)
{
	if (!t) return;
	free(t->packed);
	free(t->E);
	free(t->T_accum);
	free(t->E_accum);
	free(t->corr);
	free(t->score);
	t->packed = NULL;
	t->E = NULL;
	t->T_accum = NULL;
	t->E_accum = NULL;
	t->corr = NULL;
	t->score = NULL;
}

/* ------------------------------------------------------------------------- *
 * flat interchange layout: digit i%5 of byte i/5 is code(trit i); padding 0 */

void arb_pack_flat(const int8_t *trits, int64_t n, uint8_t *out)
{
	int64_t nb = (n + 4) / 5;
	for (int64_t b = 0; b < nb; b++) {
		int v = 0;
		for (int j = 4; j >= 0; j--) {
			int64_t i = b * 5 + j;
			int code = i < n ? trits[i] + 1 : 0;
			v = v * 3 + code;
		}
		out[b] = (uint8_t)v;
	}
}

void arb_unpack_flat(const uint8_t *in, int64_t n, int8_t *trits)
{
	for (int64_t i = 0; i < n; i += 5) {
		int v = in[i / 5];
		for (int j = 0; j < 5 && i + j < n; j++) {
			trits[i + j] = (int8_t)(v % 3 - 1);
			v /= 3;
		}
	}
}

void arb_tern_export_flat(const arb_tern *t, uint8_t *flat)
{
	int64_t n = t->rows * t->cols;
	int64_t nb = (n + 4) / 5;
	/* build each flat byte from 5 consecutive flat indices */
	for (int64_t b = 0; b < nb; b++) {
		int v = 0;
		for (int j = 4; j >= 0; j--) {
			int64_t i = b * 5 + j;
			int code = 0;
			if (i < n)
				code = arb_tern_get(t->packed, t->row_bytes,
						    i / t->cols, i % t->cols) + 1;
			v = v * 3 + code;
		}
		flat[b] = (uint8_t)v;
	}
}

void arb_tern_import_flat(arb_tern *t, const uint8_t *flat)
{
	int8_t trits[5];
	for (int64_t r = 0; r < t->rows; r++) {
		uint8_t *row = t->packed + r * t->row_bytes;
		for (int64_t b = 0; b < t->row_bytes; b++) {
			int v = 0;
			for (int j = 0; j < 5; j++) {
				int64_t c = b * 5 + j;
				trits[j] = 0;
				if (c < t->cols) {
					int64_t i = r * t->cols + c;
					int code = flat[i / 5];
					for (int k = 0; k < (int)(i % 5); k++) code /= 3;
					trits[j] = (int8_t)(code % 3 - 1);
				}
			}
			for (int j = 4; j >= 0; j--) v = v * 3 + trits[j] + 1;
			row[b] = (uint8_t)v;
		}
	}
}

void arb_tern_row_trits(const arb_tern *t, int64_t r, int8_t *out)
{
	const uint8_t *row = t->packed + r * t->row_bytes;
	for (int64_t c = 0; c < t->cols; c += 5) {
		int v = row[c / 5];
		for (int j = 0; j < 5 && c + j < t->cols; j++) {
			out[c + j] = (int8_t)(v % 3 - 1);
			v /= 3;
		}
	}
}

float arb_tern_scale(const arb_tern *t, int64_t r, int32_t g)
{
	int64_t k = r * t->groups + g;
	int e = t->E[k];
	if (t->erule == ARB_ERULE_BIGINT && t->corr && t->steps >= 1) {
		double x = (double)e + (double)t->bigint_alpha * (double)t->corr[k] /
			   ((double)t->steps * (double)t->group_size);
		return (float)exp2(x);
	}
	return arb_exp2i(e);
}

void arb_tern_row_weights(const arb_tern *t, int64_t r, float *out)
{
	const uint8_t *row = t->packed + r * t->row_bytes;
	for (int32_t g = 0; g < t->groups; g++) {
		float s = arb_tern_scale(t, r, g);
		int64_t c0 = (int64_t)g * t->group_size;
		int64_t c1 = c0 + t->group_size;
		if (c1 > t->cols) c1 = t->cols;
		for (int64_t c = c0; c < c1; c++)
			out[c] = (float)arb_trit_of(row[c / 5], (int)(c % 5)) * s;
	}
}

void arb_tern_set(arb_tern *t, int64_t r, int64_t c, int v)
{
	uint8_t *p = t->packed + r * t->row_bytes + c / 5;
	int pw = 1;
	for (int j = 0; j < (int)(c % 5); j++) pw *= 3;
	int old = (*p / pw) % 3;
	int code = (v > 0) - (v < 0) + 1;
	*p = (uint8_t)(*p + (code - old) * pw);
}

void arb_tern_count_bytes(const arb_tern *t, arb_tern_bytes *b)
{
	int64_t ng = t->rows * (int64_t)t->groups;
	memset(b, 0, sizeof *b);
	b->weights = t->rows * t->cols;
	b->packed = t->packed ? t->rows * t->row_bytes : 0;
	b->e = t->E ? ng : 0;
	b->t_accum = t->T_accum ? t->rows * t->cols : 0;
	b->e_accum = t->E_accum ? ng : 0;
	b->corr = t->corr ? ng * (int64_t)sizeof *t->corr : 0;
	b->workspace = t->score ? ng * (int64_t)sizeof *t->score : 0;
}
