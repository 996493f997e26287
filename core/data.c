/*
 * core/data.c -- training and validation text ([data] section).
 *
 * The text is read as raw bytes (binary-safe). Training files are
 * concatenated in the order given; validation is val_path's files or the
 * last val_fraction of the concatenated training text. Windows are
 * seqlen = 3*(ctx+1) bytes; their offsets are a pure function of
 * (seed, step, index) (see train.h), so resume needs no data cursor.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "train.h"

static const uint8_t xz_magic[6] = { 0xfd, '7', 'z', 'X', 'Z', 0x00 };

/* append file `path` (at most max_bytes of it when max_bytes > 0) */
static arb_status read_one(const char *path, int64_t max_bytes, uint8_t **buf,
			   size_t *len, size_t *cap, arb_error *err)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return ARB_FAIL(err, ARB_ERR_IO, "data file %s: cannot open: %s",
				path, strerror(errno));
	size_t start = *len, got_total = 0;
	for (;;) {
		if (max_bytes > 0 && got_total >= (size_t)max_bytes) break;
		if (*len == *cap) {
			size_t nc = *cap ? *cap * 2 : (1u << 20);
			uint8_t *nb = realloc(*buf, nc);
			if (!nb) {
				fclose(f);
				return ARB_FAIL(err, ARB_ERR_NOMEM,
						"data file %s: out of memory after %zu bytes",
						path, *len);
			}
			*buf = nb;
			*cap = nc;
		}
		size_t want = *cap - *len;
		if (max_bytes > 0 && want > (size_t)max_bytes - got_total)
			want = (size_t)max_bytes - got_total;
		size_t got = fread(*buf + *len, 1, want, f);
		*len += got;
		got_total += got;
		if (got == 0) break;
	}
	int bad = ferror(f);
	fclose(f);
	if (bad)
		return ARB_FAIL(err, ARB_ERR_IO, "data file %s: read error", path);
	if (got_total == 0)
		return ARB_FAIL(err, ARB_ERR_IO, "data file %s is empty", path);
	if (got_total >= sizeof xz_magic &&
	    memcmp(*buf + start, xz_magic, sizeof xz_magic) == 0)
		return ARB_FAIL(err, ARB_ERR_FORMAT,
				"data file %s is xz-compressed: decompress it first "
				"(xz -dk %s) and point data.path at the result",
				path, path);
	return ARB_OK;
}

/* read a comma-separated list of files into one buffer */
static arb_status read_list(const char *list, const char *key, int64_t max_bytes,
			    uint8_t **out, size_t *out_len, arb_error *err)
{
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0;
	int nfiles = 0;
	const char *p = list;
	while (*p) {
		const char *q = strchr(p, ',');
		size_t n = q ? (size_t)(q - p) : strlen(p);
		/* trim spaces around each name */
		while (n && (*p == ' ' || *p == '\t')) { p++; n--; }
		while (n && (p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
		if (n == 0) {
			free(buf);
			return ARB_FAIL(err, ARB_ERR_CONFIG,
					"[data] %s: empty file name in '%s'", key, list);
		}
		char path[4096];
		if (n >= sizeof path) {
			free(buf);
			return ARB_FAIL(err, ARB_ERR_CONFIG,
					"[data] %s: file name too long", key);
		}
		memcpy(path, p, n);
		path[n] = 0;
		arb_status s = read_one(path, max_bytes, &buf, &len, &cap, err);
		if (s) {
			free(buf);
			return s;
		}
		nfiles++;
		if (!q) break;
		p = q + 1;
	}
	if (nfiles == 0) {
		free(buf);
		return ARB_FAIL(err, ARB_ERR_CONFIG, "[data] %s: no files given", key);
	}
	*out = buf;
	*out_len = len;
	return ARB_OK;
}

arb_status arb_data_load(arb_data *d, const arb_conf *sec, int ctx,
			 arb_error *err)
{
	memset(d, 0, sizeof *d);
	d->seqlen = 3 * ((int64_t)ctx + 1);
	const char *path = arb_conf_str(sec, "path");
	const char *vpath = arb_conf_str(sec, "val_path");
	double frac = arb_conf_float(sec, "val_fraction");
	int64_t max_bytes = arb_conf_int(sec, "max_bytes");
	arb_status s = read_list(path, "path", max_bytes, &d->train,
				 &d->train_len, err);
	if (s) return s;
	if (vpath && *vpath) {
		s = read_list(vpath, "val_path", max_bytes, &d->val, &d->val_len,
			      err);
		if (s) goto fail;
	} else {
		size_t nval = (size_t)((double)d->train_len * frac);
		if (nval < (size_t)d->seqlen) nval = (size_t)d->seqlen;
		if (nval >= d->train_len) {
			s = ARB_FAIL(err, ARB_ERR_INVALID,
				     "training text %s is too short (%zu bytes) to hold out "
				     "a validation window of %lld bytes (3*(ctx+1)) and "
				     "still train: use more text, a smaller model.ctx or "
				     "set data.val_path",
				     path, d->train_len, (long long)d->seqlen);
			goto fail;
		}
		d->val = malloc(nval);
		if (!d->val) {
			s = ARB_FAIL(err, ARB_ERR_NOMEM, "out of memory");
			goto fail;
		}
		d->train_len -= nval;
		memcpy(d->val, d->train + d->train_len, nval);
		d->val_len = nval;
	}
	if (d->train_len < (size_t)d->seqlen) {
		s = ARB_FAIL(err, ARB_ERR_INVALID,
			     "training text (%s) has %zu bytes, fewer than one "
			     "window of %lld bytes (3*(ctx+1)): use more text or a "
			     "smaller model.ctx",
			     path, d->train_len, (long long)d->seqlen);
		goto fail;
	}
	if (d->val_len < (size_t)d->seqlen) {
		s = ARB_FAIL(err, ARB_ERR_INVALID,
			     "validation text (%s) has %zu bytes, fewer than one "
			     "window of %lld bytes (3*(ctx+1)): use more text or a "
			     "smaller model.ctx",
			     *vpath ? vpath : "held-out part of data.path",
			     d->val_len, (long long)d->seqlen);
		goto fail;
	}
	return ARB_OK;
fail:
	arb_data_free(d);
	return s;
}

void arb_data_free(arb_data *d)
{
	free(d->train);
	free(d->val);
	memset(d, 0, sizeof *d);
}

uint64_t arb_data_train_offset(const arb_data *d, uint64_t seed, uint64_t t,
			       uint64_t i)
{
	uint64_t range = (uint64_t)d->train_len - (uint64_t)d->seqlen + 1;
	uint64_t stream = arb_rng_stream(0, t, ARB_RNG_DATA);
	if (range <= (1ull << 32))
		return arb_rng_u32(seed, stream, i) % range;
	uint64_t hi = arb_rng_u32(seed, stream, (1ull << 32) + 2 * i);
	uint64_t lo = arb_rng_u32(seed, stream, (1ull << 32) + 2 * i + 1);
	return ((hi << 32) | lo) % range;
}

void arb_data_train_batch(const arb_data *d, uint64_t seed, uint64_t t, int B,
			  uint8_t *out)
{
	for (int i = 0; i < B; i++) {
		uint64_t off = arb_data_train_offset(d, seed, t, (uint64_t)i);
		memcpy(out + (size_t)i * d->seqlen, d->train + off,
		       (size_t)d->seqlen);
	}
}

void arb_data_val_batch(const arb_data *d, int k, int nbatches, int B,
			uint8_t *out)
{
	uint64_t n = (uint64_t)nbatches * (uint64_t)B;
	uint64_t span = (uint64_t)d->val_len - (uint64_t)d->seqlen;
	for (int i = 0; i < B; i++) {
		uint64_t w = (uint64_t)k * B + i;
		/* evenly spaced over [0, span]; 128-bit free: span * w fits in
		 * 64 bits for any realistic text, else fall back to division
		 * first */
		uint64_t off;
		if (n <= 1)
			off = 0;
		else if (span <= UINT64_MAX / n)
			off = span * w / (n - 1);
		else
			off = span / (n - 1) * w;
		memcpy(out + (size_t)i * d->seqlen, d->val + off,
		       (size_t)d->seqlen);
	}
}
