/*
 * core/ckpt.c -- checkpoint files: atomic, checksummed, exact resume.
 *
 * The file layout is documented in train.h. Writing: <dir>/<name>.tmp is
 * written record by record (each with its CRC-32, the whole file's CRC
 * accumulated alongside), flushed and fsync'ed, renamed over <dir>/<name>,
 * then the directory is fsync'ed. A crash at any point leaves either the
 * old file or the new one, never a partial file under the final name.
 *
 * Reading verifies the whole file before any state is touched: size, magic,
 * version, footer, whole-file CRC, each record's bounds and CRC. Then every
 * registry tensor is checked against its record (shape, group size, rule,
 * flags) before the first upload, so a refused checkpoint leaves the model
 * as it was. Tensors live in backend memory: they travel through host
 * staging buffers (be->download / be->upload). Trits are stored in the ARBS
 * flat interchange layout (arb_tern_export_flat / arb_tern_import_flat).
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include "train.h"

static const char magic[8] = { 'A', 'R', 'B', 'C', 'K', 'P', 'T', 0 };
static const char endmagic[8] = { 'A', 'R', 'B', 'C', 'K', 'E', 'N', 'D' };

/* ---------------------------------------------------------------------------
 * little-endian helpers */
static void put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get_u32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
	return v;
}
static uint64_t get_u64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* ---------------------------------------------------------------------------
 * writer */
typedef struct writer {
	FILE *f;
	const char *path;     /* the .tmp path (for messages) */
	uint32_t file_crc;
	uint64_t count;
	int failed;
	arb_error *err;
} writer;

static void w_raw(writer *w, const void *p, size_t n)
{
	if (w->failed || n == 0) return;
	if (fwrite(p, 1, n, w->f) != n) {
		ARB_FAIL(w->err, ARB_ERR_IO, "%s: write failed: %s", w->path,
			 strerror(errno));
		w->failed = 1;
		return;
	}
	w->file_crc = arb_crc32(w->file_crc, p, n);
}

static void w_record(writer *w, const char *name, uint32_t dtype,
		     const void *data, uint64_t len)
{
	uint8_t hdr[4 + 256 + 4 + 8];
	size_t nl = strlen(name);
	if (nl > 255) nl = 255; /* names are bounded by callers */
	put_u32(hdr, (uint32_t)nl);
	memcpy(hdr + 4, name, nl);
	put_u32(hdr + 4 + nl, dtype);
	put_u64(hdr + 8 + nl, len);
	size_t hl = 16 + nl;
	uint32_t crc = arb_crc32(0, hdr, hl);
	crc = arb_crc32(crc, data, (size_t)len);
	uint8_t c[4];
	put_u32(c, crc);
	w_raw(w, hdr, hl);
	w_raw(w, data, (size_t)len);
	w_raw(w, c, 4);
	w->count++;
}

static arb_status state_write(void *ctx, const char *name, const void *data,
			      size_t bytes)
{
	writer *w = ctx;
	char full[300];
	if (strlen(name) > 200)
		return ARB_FAIL(w->err, ARB_ERR_INVALID,
				"extra state record name too long: %.40s...", name);
	snprintf(full, sizeof full, "extra:%s", name);
	w_record(w, full, ARB_CKPT_U8, data, bytes);
	return w->failed ? ARB_ERR_IO : ARB_OK;
}

/* host copy of one tensor's state, in the layout of the tensor */
typedef struct staged {
	arb_tern h;         /* fields copied; pointers are host buffers */
	uint8_t *flat;
} staged;

static void staged_free(staged *s)
{
	free(s->h.packed);
	free(s->h.E);
	free(s->h.T_accum);
	free(s->h.E_accum);
	free(s->h.corr);
	free(s->flat);
	memset(s, 0, sizeof *s);
}

static arb_status staged_alloc(staged *s, const arb_tern *t, arb_error *err)
{
	memset(s, 0, sizeof *s);
	s->h = *t;
	s->h.flags &= ~ARB_TERN_DEVICE;
	s->h.score = NULL;
	s->h.ws_dev = NULL;
	size_t nw = (size_t)(t->rows * t->cols);
	size_t ng = (size_t)t->rows * (size_t)t->groups;
	s->h.packed = malloc((size_t)(t->rows * t->row_bytes) + 1);
	s->h.E = malloc(ng + 1);
	s->h.T_accum = t->T_accum ? malloc(nw + 1) : NULL;
	s->h.E_accum = t->E_accum ? malloc(ng + 1) : NULL;
	s->h.corr = t->corr ? malloc(ng * sizeof(int64_t) + 1) : NULL;
	s->flat = malloc((nw + 4) / 5 + 1);
	if (!s->h.packed || !s->h.E || !s->flat || (t->T_accum && !s->h.T_accum) ||
	    (t->E_accum && !s->h.E_accum) || (t->corr && !s->h.corr)) {
		staged_free(s);
		return ARB_FAIL(err, ARB_ERR_NOMEM,
				"out of memory staging tensor %s", t->name);
	}
	return ARB_OK;
}

static void meta_of(const arb_tern *t, int64_t meta[7])
{
	meta[0] = t->rows;
	meta[1] = t->cols;
	meta[2] = t->group_size;
	meta[3] = t->erule;
	meta[4] = (int64_t)(t->flags & ~(uint32_t)ARB_TERN_DEVICE);
	meta[5] = t->steps;
	meta[6] = t->rms_log2;
}

static int mkdir_one(const char *p)
{
	if (mkdir(p, 0777) == 0 || errno == EEXIST) return 0;
	return -1;
}

arb_status arb_mkdirs(const char *path, arb_error *err)
{
	char buf[4096];
	if (strlen(path) >= sizeof buf)
		return ARB_FAIL(err, ARB_ERR_IO, "path too long: %.60s...", path);
	strcpy(buf, path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/') continue;
		*p = 0;
		if (mkdir_one(buf)) {
			int e = errno;
			return ARB_FAIL(err, ARB_ERR_IO, "cannot create directory %s: %s",
					buf, strerror(e));
		}
		*p = '/';
	}
	if (mkdir_one(buf))
		return ARB_FAIL(err, ARB_ERR_IO, "cannot create directory %s: %s",
				buf, strerror(errno));
	return ARB_OK;
}

arb_status arb_ckpt_save(arb_model *m, const arb_cfg *cfg,
			 const arb_train_state *st, const char *dir,
			 const char *name, arb_error *err)
{
	char tmp[4096], final[4096];
	if (snprintf(final, sizeof final, "%s/%s", dir, name) >= (int)sizeof final ||
	    snprintf(tmp, sizeof tmp, "%s/%s.tmp", dir, name) >= (int)sizeof tmp)
		return ARB_FAIL(err, ARB_ERR_IO, "checkpoint path too long");
	FILE *f = fopen(tmp, "wb");
	if (!f)
		return ARB_FAIL(err, ARB_ERR_IO, "%s: cannot create: %s", tmp,
				strerror(errno));
	writer w = { f, tmp, 0, 0, 0, err };
	arb_status s = ARB_OK;

	uint8_t hdr[16];
	memcpy(hdr, magic, 8);
	put_u32(hdr + 8, ARB_CKPT_VERSION);
	put_u32(hdr + 12, 0);
	w_raw(&w, hdr, 16);

	/* resolved config text */
	char *ctext = NULL;
	size_t clen = 0;
	FILE *mf = open_memstream(&ctext, &clen);
	if (!mf) {
		s = ARB_FAIL(err, ARB_ERR_NOMEM, "out of memory");
		goto fail;
	}
	arb_cfg_dump(cfg, mf);
	fclose(mf);
	w_record(&w, "config", ARB_CKPT_TEXT, ctext, clen);
	free(ctext);

	int64_t step = st->step, nonf = st->nonfinite;
	w_record(&w, "train.step", ARB_CKPT_I64, &step, 8);
	w_record(&w, "train.best_val", ARB_CKPT_F64, &st->best_val, 8);
	w_record(&w, "train.elapsed", ARB_CKPT_F64, &st->elapsed, 8);
	w_record(&w, "train.nonfinite", ARB_CKPT_I64, &nonf, 8);

	arb_registry *r = arb_model_registry(m);
	arb_backend *be = r->be;
	if (be->sync) be->sync(be);
	for (int i = 0; i < r->n && !w.failed; i++) {
		const arb_tern *t = r->items[i];
		staged sg;
		if ((s = staged_alloc(&sg, t, err))) goto fail;
		size_t nw = (size_t)(t->rows * t->cols);
		size_t ng = (size_t)t->rows * (size_t)t->groups;
		be->download(be, sg.h.packed, t->packed,
			     (size_t)(t->rows * t->row_bytes));
		be->download(be, sg.h.E, t->E, ng);
		if (t->T_accum) be->download(be, sg.h.T_accum, t->T_accum, nw);
		if (t->E_accum) be->download(be, sg.h.E_accum, t->E_accum, ng);
		if (t->corr)
			be->download(be, sg.h.corr, t->corr, ng * sizeof(int64_t));
		arb_tern_export_flat(&sg.h, sg.flat);
		char rn[128];
		int64_t meta[7];
		meta_of(t, meta);
		snprintf(rn, sizeof rn, "tensor:%s:meta", t->name);
		w_record(&w, rn, ARB_CKPT_I64, meta, sizeof meta);
		snprintf(rn, sizeof rn, "tensor:%s:trits", t->name);
		w_record(&w, rn, ARB_CKPT_U8, sg.flat, (nw + 4) / 5);
		snprintf(rn, sizeof rn, "tensor:%s:E", t->name);
		w_record(&w, rn, ARB_CKPT_I8, sg.h.E, ng);
		if (t->T_accum) {
			snprintf(rn, sizeof rn, "tensor:%s:T_accum", t->name);
			w_record(&w, rn, ARB_CKPT_I8, sg.h.T_accum, nw);
		}
		if (t->E_accum) {
			snprintf(rn, sizeof rn, "tensor:%s:E_accum", t->name);
			w_record(&w, rn, ARB_CKPT_I8, sg.h.E_accum, ng);
		}
		if (t->corr) {
			snprintf(rn, sizeof rn, "tensor:%s:corr", t->name);
			w_record(&w, rn, ARB_CKPT_I64, sg.h.corr,
				 ng * sizeof(int64_t));
		}
		staged_free(&sg);
	}
	if (w.failed) {
		s = ARB_ERR_IO;
		goto fail;
	}

	arb_state_io io = { &w, state_write, NULL };
	if ((s = arb_model_save_extra(m, &io, err))) goto fail;
	if (w.failed) {
		s = ARB_ERR_IO;
		goto fail;
	}

	uint8_t foot[16];
	memcpy(foot, endmagic, 8);
	put_u64(foot + 8, w.count);
	w_raw(&w, foot, 16);
	uint8_t c[4];
	put_u32(c, w.file_crc);
	w_raw(&w, c, 4);
	if (w.failed) {
		s = ARB_ERR_IO;
		goto fail;
	}
	if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
		s = ARB_FAIL(err, ARB_ERR_IO, "%s: flush failed: %s", tmp,
			     strerror(errno));
		goto fail;
	}
	if (fclose(f) != 0) {
		f = NULL;
		s = ARB_FAIL(err, ARB_ERR_IO, "%s: close failed: %s", tmp,
			     strerror(errno));
		goto fail;
	}
	f = NULL;
	if (rename(tmp, final) != 0) {
		s = ARB_FAIL(err, ARB_ERR_IO, "cannot rename %s to %s: %s", tmp,
			     final, strerror(errno));
		goto fail;
	}
	int dfd = open(dir, O_RDONLY | O_DIRECTORY);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	return ARB_OK;
fail:
	if (f) fclose(f);
	unlink(tmp);
	return s ? s : ARB_ERR_IO;
}

/* ---------------------------------------------------------------------------
 * reader */
void arb_ckpt_close(arb_ckpt *ck)
{
	free(ck->buf);
	free(ck->recs);
	free(ck->names);
	memset(ck, 0, sizeof *ck);
}

arb_status arb_ckpt_open(arb_ckpt *ck, const char *path, arb_error *err)
{
	memset(ck, 0, sizeof *ck);
	snprintf(ck->path, sizeof ck->path, "%s", path);
	arb_status s = arb_read_file(path, &ck->buf, &ck->size, err);
	if (s) return s;
	const uint8_t *b = ck->buf;
	size_t n = ck->size;
	if (n < 8 || memcmp(b, magic, 8) != 0) {
		s = ARB_FAIL(err, ARB_ERR_FORMAT,
			     "%s: not an arbcore checkpoint (bad magic)", path);
		goto fail;
	}
	if (n < 16) {
		s = ARB_FAIL(err, ARB_ERR_FORMAT,
			     "%s: truncated checkpoint (%zu bytes)", path, n);
		goto fail;
	}
	uint32_t ver = get_u32(b + 8);
	if (ver != ARB_CKPT_VERSION) {
		s = ARB_FAIL(err, ARB_ERR_FORMAT,
			     "%s: checkpoint format version %u, this arbcore reads "
			     "version %d", path, ver, ARB_CKPT_VERSION);
		goto fail;
	}
	if (n < 16 + 20 || memcmp(b + n - 20, endmagic, 8) != 0) {
		s = ARB_FAIL(err, ARB_ERR_FORMAT,
			     "%s: truncated checkpoint (%zu bytes, no end marker): "
			     "the write was interrupted or the file was cut",
			     path, n);
		goto fail;
	}
	uint32_t want = get_u32(b + n - 4);
	uint32_t got = arb_crc32(0, b, n - 4);
	if (want != got) {
		s = ARB_FAIL(err, ARB_ERR_FORMAT,
			     "%s: checkpoint is corrupt: file CRC-32 %08x, expected "
			     "%08x", path, got, want);
		goto fail;
	}
	uint64_t count = get_u64(b + n - 12);
	size_t end = n - 20;
	if (count > end / 20) {
		s = ARB_FAIL(err, ARB_ERR_FORMAT,
			     "%s: corrupt footer (record count %llu)", path,
			     (unsigned long long)count);
		goto fail;
	}
	ck->recs = calloc(count ? count : 1, sizeof *ck->recs);
	ck->names = malloc(end + 1);
	if (!ck->recs || !ck->names) {
		s = ARB_FAIL(err, ARB_ERR_NOMEM, "%s: out of memory", path);
		goto fail;
	}
	size_t pos = 16, npos = 0;
	for (uint64_t i = 0; i < count; i++) {
		if (end - pos < 4) goto trunc;
		uint32_t nl = get_u32(b + pos);
		if (nl > 255 || end - pos < 16 + (size_t)nl) goto trunc;
		uint32_t dt = get_u32(b + pos + 4 + nl);
		uint64_t len = get_u64(b + pos + 8 + nl);
		size_t hl = 16 + nl;
		if (len > end - pos - hl || end - pos - hl - len < 4) goto trunc;
		uint32_t rc = get_u32(b + pos + hl + len);
		uint32_t cc = arb_crc32(0, b + pos, hl + (size_t)len);
		memcpy(ck->names + npos, b + pos + 4, nl);
		ck->names[npos + nl] = 0;
		if (rc != cc) {
			s = ARB_FAIL(err, ARB_ERR_FORMAT,
				     "%s: record '%s' is corrupt (CRC-32 %08x, expected "
				     "%08x)", path, ck->names + npos, cc, rc);
			goto fail;
		}
		ck->recs[i].dtype = dt;
		ck->recs[i].data = b + pos + hl;
		ck->recs[i].len = len;
		ck->recs[i].name = (const char *)(uintptr_t)npos; /* fixed below */
		npos += nl + 1;
		pos += hl + (size_t)len + 4;
	}
	if (pos != end) goto trunc;
	for (uint64_t i = 0; i < count; i++)
		ck->recs[i].name = ck->names + (uintptr_t)ck->recs[i].name;
	ck->n = (int)count;
	return ARB_OK;
trunc:
	s = ARB_FAIL(err, ARB_ERR_FORMAT,
		     "%s: corrupt checkpoint: records do not match the footer "
		     "(%llu records expected)", path, (unsigned long long)count);
fail:
	arb_ckpt_close(ck);
	return s;
}

const arb_ckpt_rec *arb_ckpt_find(const arb_ckpt *ck, const char *name)
{
	for (int i = 0; i < ck->n; i++)
		if (strcmp(ck->recs[i].name, name) == 0) return &ck->recs[i];
	return NULL;
}

/* record `name` of exactly `len` bytes, or a format error */
static arb_status need(const arb_ckpt *ck, const char *name, uint64_t len,
		       const arb_ckpt_rec **out, arb_error *err)
{
	const arb_ckpt_rec *r = arb_ckpt_find(ck, name);
	if (!r)
		return ARB_FAIL(err, ARB_ERR_FORMAT,
				"%s: record '%s' is missing (checkpoint of a different "
				"model?)", ck->path, name);
	if (r->len != len)
		return ARB_FAIL(err, ARB_ERR_FORMAT,
				"%s: record '%s' has %llu bytes, the current model "
				"needs %llu", ck->path, name,
				(unsigned long long)r->len, (unsigned long long)len);
	*out = r;
	return ARB_OK;
}

typedef struct reader {
	const arb_ckpt *ck;
	arb_error *err;
} reader;

static arb_status state_read(void *ctx, const char *name, void *data,
			     size_t bytes)
{
	reader *rd = ctx;
	char full[300];
	snprintf(full, sizeof full, "extra:%s", name);
	const arb_ckpt_rec *r;
	arb_status s = need(rd->ck, full, bytes, &r, rd->err);
	if (s) return s;
	memcpy(data, r->data, bytes);
	return ARB_OK;
}

/* check every tensor's meta record against the model (nothing uploaded) */
static arb_status check_shapes(const arb_ckpt *ck, arb_registry *r,
			       arb_error *err)
{
	int ntens = 0;
	for (int i = 0; i < ck->n; i++) {
		size_t l = strlen(ck->recs[i].name);
		if (strncmp(ck->recs[i].name, "tensor:", 7) == 0 && l > 5 &&
		    strcmp(ck->recs[i].name + l - 5, ":meta") == 0)
			ntens++;
	}
	for (int i = 0; i < r->n; i++) {
		const arb_tern *t = r->items[i];
		char rn[128];
		snprintf(rn, sizeof rn, "tensor:%s:meta", t->name);
		const arb_ckpt_rec *rec = arb_ckpt_find(ck, rn);
		if (!rec)
			return ARB_FAIL(err, ARB_ERR_FORMAT,
					"%s: has no tensor '%s' of the current model "
					"(checkpoint of a different config?)",
					ck->path, t->name);
		if (rec->len != 7 * 8)
			return ARB_FAIL(err, ARB_ERR_FORMAT,
					"%s: tensor '%s': bad meta record", ck->path,
					t->name);
		int64_t mm[7], cur[7];
		memcpy(mm, rec->data, sizeof mm);
		meta_of(t, cur);
		if (mm[0] != cur[0] || mm[1] != cur[1])
			return ARB_FAIL(err, ARB_ERR_FORMAT,
					"%s: tensor '%s' is %lld x %lld in the checkpoint "
					"but %lld x %lld in the current model",
					ck->path, t->name, (long long)mm[0],
					(long long)mm[1], (long long)cur[0],
					(long long)cur[1]);
		if (mm[2] != cur[2] || mm[3] != cur[3] || mm[4] != cur[4])
			return ARB_FAIL(err, ARB_ERR_FORMAT,
					"%s: tensor '%s': checkpoint has group_size %lld, "
					"erule %lld, flags %lld; the current model has %lld, "
					"%lld, %lld",
					ck->path, t->name, (long long)mm[2],
					(long long)mm[3], (long long)mm[4],
					(long long)cur[2], (long long)cur[3],
					(long long)cur[4]);
	}
	if (ntens != r->n)
		return ARB_FAIL(err, ARB_ERR_FORMAT,
				"%s: checkpoint holds %d tensors, the current model "
				"has %d (checkpoint of a different config?)",
				ck->path, ntens, r->n);
	return ARB_OK;
}

static arb_status get_scalar(const arb_ckpt *ck, const char *name, void *out,
			     arb_error *err)
{
	const arb_ckpt_rec *r;
	arb_status s = need(ck, name, 8, &r, err);
	if (s) return s;
	memcpy(out, r->data, 8);
	return ARB_OK;
}

arb_status arb_ckpt_load(arb_model *m, const char *path, arb_train_state *st,
			 arb_error *err)
{
	arb_ckpt ck;
	arb_status s = arb_ckpt_open(&ck, path, err);
	if (s) return s;
	arb_registry *r = arb_model_registry(m);
	arb_backend *be = r->be;
	arb_train_state tmp;
	if ((s = get_scalar(&ck, "train.step", &tmp.step, err)) ||
	    (s = get_scalar(&ck, "train.best_val", &tmp.best_val, err)) ||
	    (s = get_scalar(&ck, "train.elapsed", &tmp.elapsed, err)) ||
	    (s = get_scalar(&ck, "train.nonfinite", &tmp.nonfinite, err)))
		goto out;
	if ((s = check_shapes(&ck, r, err))) goto out;
	/* every record of every tensor must be present with the right size
	 * before anything is uploaded */
	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < r->n; i++) {
			arb_tern *t = r->items[i];
			size_t nw = (size_t)(t->rows * t->cols);
			size_t ng = (size_t)t->rows * (size_t)t->groups;
			char rn[128];
			const arb_ckpt_rec *rt, *re, *rta = NULL, *rea = NULL,
					   *rc = NULL, *rm;
			snprintf(rn, sizeof rn, "tensor:%s:trits", t->name);
			if ((s = need(&ck, rn, (nw + 4) / 5, &rt, err))) goto out;
			snprintf(rn, sizeof rn, "tensor:%s:E", t->name);
			if ((s = need(&ck, rn, ng, &re, err))) goto out;
			if (t->T_accum) {
				snprintf(rn, sizeof rn, "tensor:%s:T_accum", t->name);
				if ((s = need(&ck, rn, nw, &rta, err))) goto out;
			}
			if (t->E_accum) {
				snprintf(rn, sizeof rn, "tensor:%s:E_accum", t->name);
				if ((s = need(&ck, rn, ng, &rea, err))) goto out;
			}
			if (t->corr) {
				snprintf(rn, sizeof rn, "tensor:%s:corr", t->name);
				if ((s = need(&ck, rn, ng * 8, &rc, err))) goto out;
			}
			snprintf(rn, sizeof rn, "tensor:%s:meta", t->name);
			if ((s = need(&ck, rn, 56, &rm, err))) goto out;
			if (pass == 0) continue;
			staged sg;
			if ((s = staged_alloc(&sg, t, err))) goto out;
			arb_tern_import_flat(&sg.h, rt->data);
			be->upload(be, t->packed, sg.h.packed,
				   (size_t)(t->rows * t->row_bytes));
			be->upload(be, t->E, re->data, ng);
			if (rta) be->upload(be, t->T_accum, rta->data, nw);
			if (rea) be->upload(be, t->E_accum, rea->data, ng);
			if (rc) be->upload(be, t->corr, rc->data, ng * 8);
			int64_t mm[7];
			memcpy(mm, rm->data, sizeof mm);
			t->steps = mm[5];
			t->rms_log2 = (int8_t)mm[6];
			staged_free(&sg);
		}
	}
	if (be->sync) be->sync(be);
	reader rd = { &ck, err };
	arb_state_io io = { &rd, NULL, state_read };
	if ((s = arb_model_load_extra(m, &io, err))) goto out;
	if (st) *st = tmp;
out:
	arb_ckpt_close(&ck);
	return s;
}

arb_status arb_ckpt_config_file(const char *ckpt_path, char *tmp_path,
				size_t cap, arb_error *err)
{
	arb_ckpt ck;
	arb_status s = arb_ckpt_open(&ck, ckpt_path, err);
	if (s) return s;
	const arb_ckpt_rec *r = arb_ckpt_find(&ck, "config");
	if (!r) {
		s = ARB_FAIL(err, ARB_ERR_FORMAT, "%s: has no config record",
			     ckpt_path);
		goto out;
	}
	snprintf(tmp_path, cap, "/tmp/arbcore-ckpt-config.XXXXXX");
	int fd = mkstemp(tmp_path);
	if (fd < 0) {
		s = ARB_FAIL(err, ARB_ERR_IO, "cannot create a temporary file: %s",
			     strerror(errno));
		goto out;
	}
	size_t off = 0;
	while (off < r->len) {
		ssize_t k = write(fd, r->data + off, (size_t)r->len - off);
		if (k <= 0) {
			close(fd);
			unlink(tmp_path);
			s = ARB_FAIL(err, ARB_ERR_IO, "%s: write failed", tmp_path);
			goto out;
		}
		off += (size_t)k;
	}
	close(fd);
out:
	arb_ckpt_close(&ck);
	return s;
}
