/*
 * core/audit.c -- the memory audit of a run: logical ternary weights,
 * persistent bytes per dtype, bytes per logical weight, persistent float
 * bytes (must be 0) and transient workspace, reported apart.
 *
 * Bytes are counted from a table that describes every state member of
 * arb_tern (array or scalar, its dtype and its element count), not from
 * constants: a float state member added to the struct would have to be
 * listed here and would show up as persistent float bytes. Config constants
 * of the struct (bigint_alpha) are not state and are not counted.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include "core.h"

enum { N_ONE, N_WEIGHTS, N_ROWBYTES, N_GROUPS };
typedef struct {
	const char *name;
	size_t off;       /* offsetof(arb_tern, member) */
	int is_ptr;       /* 1: pointer to an array (NULL = absent) */
	int dtype;        /* arb_dtype */
	int count;        /* N_*: elements */
	int persistent;   /* 0: workspace */
} state_member;

static const state_member members[] = {
	{ "packed",   offsetof(arb_tern, packed),   1, ARB_U8,  N_ROWBYTES, 1 },
	{ "E",        offsetof(arb_tern, E),        1, ARB_I8,  N_GROUPS,   1 },
	{ "T_accum",  offsetof(arb_tern, T_accum),  1, ARB_I8,  N_WEIGHTS,  1 },
	{ "E_accum",  offsetof(arb_tern, E_accum),  1, ARB_I8,  N_GROUPS,   1 },
	{ "corr",     offsetof(arb_tern, corr),     1, ARB_I64, N_GROUPS,   1 },
	{ "steps",    offsetof(arb_tern, steps),    0, ARB_I64, N_ONE,      1 },
	{ "rms_log2", offsetof(arb_tern, rms_log2), 0, ARB_I8,  N_ONE,      1 },
	{ "score",    offsetof(arb_tern, score),    1, ARB_I32, N_GROUPS,   0 },
	{ "sumsq",    offsetof(arb_tern, sumsq),    0, ARB_F32, N_ONE,      0 },
};

static int64_t dtype_size(int dt)
{
	switch (dt) {
	case ARB_U8: case ARB_I8: return 1;
	case ARB_I16: return 2;
	case ARB_I32: case ARB_F32: return 4;
	case ARB_I64: return 8;
	}
	return 0;
}

static int64_t member_bytes(const arb_tern *t, const state_member *m)
{
	if (m->is_ptr && !*(void *const *)((const char *)t + m->off)) return 0;
	int64_t n = 1;
	switch (m->count) {
	case N_WEIGHTS: n = t->rows * t->cols; break;
	case N_ROWBYTES: n = t->rows * t->row_bytes; break;
	case N_GROUPS: n = t->rows * (int64_t)t->groups; break;
	}
	/* sumsq is a double on the host: count its real size */
	if (strcmp(m->name, "sumsq") == 0) return (int64_t)sizeof t->sumsq;
	return n * dtype_size(m->dtype);
}

static int64_t count_zeros(arb_backend *be, const arb_tern *t)
{
	/* zero trits per packed byte value (the padding trits of a row's
	 * last byte are taken off below) */
	int zb[256];
	for (int v = 0; v < 256; v++) {
		zb[v] = 0;
		for (int j = 0; j < 5; j++) zb[v] += arb_trit_of((uint8_t)v, j) == 0;
	}
	const int64_t rb = t->row_bytes;
	const int pad = (int)(rb * 5 - t->cols); /* trits past cols in the last byte */
	const int64_t total = t->rows * rb;
	/* device tensors come over in chunks of whole rows (about 16 MB):
	 * one copy per chunk, not per row */
	int64_t chunk_rows = rb > 0 ? ((int64_t)16 << 20) / rb : 1;
	if (chunk_rows < 1) chunk_rows = 1;
	if (chunk_rows > t->rows) chunk_rows = t->rows;
	uint8_t *buf = NULL;
	if (be && be->is_device && total > 0) {
		buf = malloc((size_t)(chunk_rows * rb));
		if (!buf) return -1;
	}
	int64_t z = 0;
	for (int64_t r0 = 0; r0 < t->rows; r0 += chunk_rows) {
		int64_t n = t->rows - r0 < chunk_rows ? t->rows - r0 : chunk_rows;
		const uint8_t *src = t->packed + r0 * rb;
		if (buf) {
			be->download(be, buf, src, (size_t)(n * rb));
			src = buf;
		}
		for (int64_t i = 0; i < n; i++) {
			const uint8_t *row = src + i * rb;
			for (int64_t c = 0; c < rb; c++)
				z += zb[row[c]];
			/* the padding trits of the last byte are not weights */
			if (pad > 0)
				for (int j = 5 - pad; j < 5; j++)
					z -= arb_trit_of(row[rb - 1], j) == 0;
		}
	}
	free(buf);
	return z;
}

void arb_audit_registry(const arb_registry *r, arb_audit *a)
{
	memset(a, 0, sizeof *a);
	int64_t persistent = 0;
	for (int i = 0; i < r->n; i++) {
		const arb_tern *t = r->items[i];
		a->tensors++;
		a->weights += t->rows * t->cols;
		if (!(t->flags & ARB_TERN_FROZEN))
			a->trainable_weights += t->rows * t->cols;
		for (size_t k = 0; k < sizeof members / sizeof members[0]; k++) {
			const state_member *m = &members[k];
			int64_t b = member_bytes(t, m);
			if (!m->persistent) {
				a->bytes_workspace += b;
				continue;
			}
			persistent += b;
			switch (m->dtype) {
			case ARB_U8: a->bytes_u8 += b; break;
			case ARB_I8: a->bytes_i8 += b; break;
			case ARB_I16: a->bytes_i16 += b; break;
			case ARB_I32: a->bytes_i32 += b; break;
			case ARB_I64: a->bytes_i64 += b; break;
			case ARB_F32: a->bytes_float += b; break;
			}
		}
		int64_t z = count_zeros(r->be, t);
		if (z > 0) a->zeros += z;
	}
	a->bytes_per_weight = a->weights ? (double)persistent / (double)a->weights : 0.0;
}

void arb_audit_print(const arb_audit *a, FILE *f)
{
	int64_t persistent = a->bytes_u8 + a->bytes_i8 + a->bytes_i16 +
			     a->bytes_i32 + a->bytes_i64 + a->bytes_float;
	fprintf(f, "audit: %lld ternary tensors, %lld logical weights (%lld trainable), "
		"%.1f%% zero trits\n", (long long)a->tensors, (long long)a->weights,
		(long long)a->trainable_weights,
		a->weights ? 100.0 * (double)a->zeros / (double)a->weights : 0.0);
	fprintf(f, "audit: persistent bytes: uint8 %lld, int8 %lld, int16 %lld, "
		"int32 %lld, int64 %lld, float %lld (total %lld)\n",
		(long long)a->bytes_u8, (long long)a->bytes_i8, (long long)a->bytes_i16,
		(long long)a->bytes_i32, (long long)a->bytes_i64,
		(long long)a->bytes_float, (long long)persistent);
	fprintf(f, "audit: %.4f persistent bytes per logical weight; persistent float "
		"state: %lld bytes%s\n", a->bytes_per_weight, (long long)a->bytes_float,
		a->bytes_float ? " (NOT ZERO)" : "");
	fprintf(f, "audit: transient workspace (not state): %lld bytes\n",
		(long long)a->bytes_workspace);
}
