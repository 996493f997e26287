/*
 * tests/check_train.c -- data windows, checkpoints and the training loop
 * (core/data.c, core/ckpt.c, core/train.c), in process on the CPU backend
 * with a tiny model and a small text written to a temporary directory.
 *
 *   exact resume: 2N steps in one run == N steps + resume + N steps, record
 *     for record (every tensor's trits, E, T_accum, ..., and the step);
 *   refusals: truncated file, one flipped byte, wrong magic/version, a
 *     different model shape, resume = false over existing checkpoints;
 *   a NaN loss skips the update and leaves every tensor bit-identical;
 *   no .tmp file is left behind; metrics.csv keeps one header over resumes;
 *   data: split, window offsets, missing/empty/xz files, too-short text.
 */
#include <check.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "train.h"
#include "testutil.h"

/* ---------------------------------------------------------------------------
 * helpers */
static void write_file(const char *path, const void *data, size_t n)
{
	FILE *f = fopen(path, "wb");
	ck_assert_msg(f != NULL, "cannot create %s", path);
	ck_assert_uint_eq(fwrite(data, 1, n, f), n);
	fclose(f);
}

/* ~24 KB of pseudo-English text, deterministic */
static void write_text(const char *path, size_t n)
{
	static const char *words[] = { "the ", "cat ", "sat ", "on ", "a ",
		"mat, ", "and ", "then ", "it ", "slept. ", "A ", "dog ",
		"barked ", "at ", "night.\n", "Where ", "is ", "my ", "hat? " };
	char *buf = malloc(n);
	uint64_t s = 7;
	size_t k = 0;
	while (k < n) {
		s = arb_mix64(s);
		const char *w = words[s % (sizeof words / sizeof *words)];
		for (size_t j = 0; w[j] && k < n; j++) buf[k++] = w[j];
	}
	write_file(path, buf, n);
	free(buf);
}

typedef struct fixture {
	char dir[64];
	char data[128];
} fixture;

static void fixture_init(fixture *fx)
{
	snprintf(fx->dir, sizeof fx->dir, "%s", arb_test_tmpdir());
	snprintf(fx->data, sizeof fx->data, "%s/text.txt", fx->dir);
	write_text(fx->data, 24000);
	arb_train_quiet = 1;
	arb_train_debug_nan_step = -1;
}

static void fixture_done(fixture *fx)
{
	char cmd[160];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", fx->dir);
	if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", fx->dir);
}

/* config of a tiny model; extra overrides appended (NULL-terminated) */
static arb_cfg *tiny_cfg(const fixture *fx, const char *run, int64_t steps,
			 const char *extra1, const char *extra2)
{
	static char o[16][256];
	const char *ov[20];
	int n = 0;
	snprintf(o[n], 256, "run.dir=%s/%s", fx->dir, run); ov[n] = o[n]; n++;
	snprintf(o[n], 256, "data.path=%s", fx->data); ov[n] = o[n]; n++;
	snprintf(o[n], 256, "train.steps=%lld", (long long)steps); ov[n] = o[n]; n++;
	const char *fixed[] = { "model.d_model=32", "model.layers=1",
		"model.heads=2", "model.ctx=8", "train.batch=4",
		"train.eval_interval=4", "train.eval_batches=2",
		"train.ckpt_interval=3", "train.log_interval=2",
		"schedule.threshold=2", "run.threads=1" };
	for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++)
		ov[n++] = fixed[i];
	if (extra1) ov[n++] = extra1;
	if (extra2) ov[n++] = extra2;
	ov[n] = NULL;
	arb_cfg *cfg = NULL;
	arb_error err = { 0 };
	arb_status s = arb_cfg_load(&cfg, NULL, ov, &err);
	ck_assert_msg(s == ARB_OK, "config: %s", err.msg);
	return cfg;
}

static void train_ok(arb_cfg *cfg)
{
	arb_error err = { 0 };
	int code = -1;
	arb_status s = arb_train(cfg, arb_backend_cpu(), &code, &err);
	ck_assert_msg(s == ARB_OK, "train failed: %s", err.msg);
	ck_assert_int_eq(code, 0);
	arb_cfg_free(cfg);
}

static int is_state_record(const char *name)
{
	return strncmp(name, "tensor:", 7) == 0 || strncmp(name, "extra:", 6) == 0 ||
	       strcmp(name, "train.step") == 0;
}

/* number of state records that differ between two checkpoints (records
 * missing on either side count as different); prints the first few */
static int state_diff(const char *pa, const char *pb, int *nstate)
{
	arb_ckpt a, b;
	arb_error err = { 0 };
	ck_assert_msg(arb_ckpt_open(&a, pa, &err) == ARB_OK, "%s", err.msg);
	ck_assert_msg(arb_ckpt_open(&b, pb, &err) == ARB_OK, "%s", err.msg);
	int diff = 0, n = 0, nb = 0;
	for (int i = 0; i < a.n; i++) {
		const arb_ckpt_rec *ra = &a.recs[i];
		if (!is_state_record(ra->name)) continue;
		n++;
		const arb_ckpt_rec *rb = arb_ckpt_find(&b, ra->name);
		if (!rb || rb->len != ra->len || rb->dtype != ra->dtype ||
		    memcmp(ra->data, rb->data, (size_t)ra->len) != 0) {
			if (diff < 5)
				fprintf(stderr, "record %s differs\n", ra->name);
			diff++;
		}
	}
	for (int i = 0; i < b.n; i++)
		if (is_state_record(b.recs[i].name)) nb++;
	if (nb != n) diff += abs(nb - n);
	if (nstate) *nstate = n;
	arb_ckpt_close(&a);
	arb_ckpt_close(&b);
	return diff;
}

/* tensor records only (not the step) */
static int tensor_diff(const char *pa, const char *pb)
{
	arb_ckpt a, b;
	arb_error err = { 0 };
	ck_assert_msg(arb_ckpt_open(&a, pa, &err) == ARB_OK, "%s", err.msg);
	ck_assert_msg(arb_ckpt_open(&b, pb, &err) == ARB_OK, "%s", err.msg);
	int diff = 0;
	for (int i = 0; i < a.n; i++) {
		const arb_ckpt_rec *ra = &a.recs[i];
		if (strncmp(ra->name, "tensor:", 7) != 0) continue;
		const arb_ckpt_rec *rb = arb_ckpt_find(&b, ra->name);
		if (!rb || rb->len != ra->len ||
		    memcmp(ra->data, rb->data, (size_t)ra->len) != 0)
			diff++;
	}
	arb_ckpt_close(&a);
	arb_ckpt_close(&b);
	return diff;
}

static int64_t ckpt_i64(const char *path, const char *rec)
{
	arb_ckpt c;
	arb_error err = { 0 };
	ck_assert_msg(arb_ckpt_open(&c, path, &err) == ARB_OK, "%s", err.msg);
	const arb_ckpt_rec *r = arb_ckpt_find(&c, rec);
	ck_assert_msg(r && r->len == 8, "record %s missing", rec);
	int64_t v;
	memcpy(&v, r->data, 8);
	arb_ckpt_close(&c);
	return v;
}

static int count_tmp(const char *dir)
{
	DIR *d = opendir(dir);
	ck_assert_msg(d != NULL, "cannot open %s", dir);
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		size_t l = strlen(e->d_name);
		if (l >= 4 && strcmp(e->d_name + l - 4, ".tmp") == 0) n++;
	}
	closedir(d);
	return n;
}

static char *slurp(const char *path, size_t *len)
{
	uint8_t *d = NULL;
	size_t n = 0;
	arb_error err = { 0 };
	ck_assert_msg(arb_read_file(path, &d, &n, &err) == ARB_OK, "%s", err.msg);
	char *s = realloc(d, n + 1);
	s[n] = 0;
	if (len) *len = n;
	return s;
}

/* ---------------------------------------------------------------------------
 * exact resume */
START_TEST(test_exact_resume)
{
	fixture fx;
	fixture_init(&fx);
	char pa[256], pb[256], pmid[256], cp[512];
	/* A: 10 steps in one run */
	train_ok(tiny_cfg(&fx, "a", 10, NULL, NULL));
	/* B: 5 steps, then the same command with steps = 10 resumes */
	train_ok(tiny_cfg(&fx, "b", 5, NULL, NULL));
	snprintf(pmid, sizeof pmid, "%s/mid", fx.dir);
	snprintf(cp, sizeof cp, "cp '%s/b/latest' '%s'", fx.dir, pmid);
	ck_assert_int_eq(system(cp), 0);
	ck_assert_int_eq(ckpt_i64(pmid, "train.step"), 5);
	train_ok(tiny_cfg(&fx, "b", 10, NULL, NULL));

	snprintf(pa, sizeof pa, "%s/a/final", fx.dir);
	snprintf(pb, sizeof pb, "%s/b/final", fx.dir);
	ck_assert_int_eq(ckpt_i64(pa, "train.step"), 10);
	ck_assert_int_eq(ckpt_i64(pb, "train.step"), 10);
	int n = 0;
	int d = state_diff(pa, pb, &n);
	ck_assert_msg(d == 0, "%d of %d state records differ after resume", d, n);
	ck_assert_msg(n > 20, "only %d state records compared", n);
	/* and training really changed the state between step 5 and 10 */
	ck_assert_msg(tensor_diff(pmid, pb) > 0,
		      "state at step 5 equals state at step 10: nothing learned");
	snprintf(pa, sizeof pa, "%s/a/latest", fx.dir);
	snprintf(pb, sizeof pb, "%s/b/latest", fx.dir);
	ck_assert_int_eq(state_diff(pa, pb, NULL), 0);

	/* metrics.csv: one header, steps strictly increasing after resume */
	char mp[256];
	snprintf(mp, sizeof mp, "%s/b/metrics.csv", fx.dir);
	char *csv = slurp(mp, NULL);
	int headers = 0;
	long long last = -1;
	int rows = 0;
	for (char *line = strtok(csv, "\n"); line; line = strtok(NULL, "\n")) {
		if (strncmp(line, "step,", 5) == 0) {
			headers++;
			continue;
		}
		long long st = strtoll(line, NULL, 10);
		ck_assert_msg(st >= last, "metrics.csv rows out of order: %lld after %lld",
			      st, last);
		last = st;
		rows++;
	}
	free(csv);
	ck_assert_int_eq(headers, 1);
	ck_assert_int_eq(last, 10);
	ck_assert_msg(rows >= 5, "only %d metrics rows", rows);

	/* no temporary files left behind; config.ini written */
	char dir[256];
	snprintf(dir, sizeof dir, "%s/a", fx.dir);
	ck_assert_int_eq(count_tmp(dir), 0);
	snprintf(dir, sizeof dir, "%s/b", fx.dir);
	ck_assert_int_eq(count_tmp(dir), 0);
	struct stat sb;
	snprintf(dir, sizeof dir, "%s/b/config.ini", fx.dir);
	ck_assert_int_eq(stat(dir, &sb), 0);
	fixture_done(&fx);
}
END_TEST

/* the same with a plugin component (moe in the FFN slot): its tensors are
 * registry tensors, its extra state goes through arb_model_save_extra */
START_TEST(test_exact_resume_plugin)
{
	fixture fx;
	fixture_init(&fx);
	char pp[300];
	snprintf(pp, sizeof pp, "run.plugin_path=%s", arb_test_build_path("plugins"));
	char so[300];
	snprintf(so, sizeof so, "%s/moe.so", arb_test_build_path("plugins"));
	struct stat sb;
	ck_assert_msg(stat(so, &sb) == 0, "%s is not built (make builds every plugin "
		      "before the tests)", so);
	train_ok(tiny_cfg(&fx, "pa", 8, pp, "moe.experts=4"));
	train_ok(tiny_cfg(&fx, "pb", 4, pp, "moe.experts=4"));
	train_ok(tiny_cfg(&fx, "pb", 8, pp, "moe.experts=4"));
	char pa[256], pb[256];
	snprintf(pa, sizeof pa, "%s/pa/final", fx.dir);
	snprintf(pb, sizeof pb, "%s/pb/final", fx.dir);
	int n = 0, moe = 0;
	int d = state_diff(pa, pb, &n);
	ck_assert_msg(d == 0, "%d of %d state records differ after resume", d, n);
	arb_ckpt c;
	arb_error err = { 0 };
	ck_assert_msg(arb_ckpt_open(&c, pa, &err) == ARB_OK, "%s", err.msg);
	for (int i = 0; i < c.n; i++)
		if (strstr(c.recs[i].name, "moe")) moe++;
	arb_ckpt_close(&c);
	ck_assert_msg(moe > 0, "no moe records in the checkpoint");
	/* a checkpoint with the plugin does not load into a model without it */
	arb_cfg *plain = tiny_cfg(&fx, "pc", 8, NULL, NULL);
	arb_model *m = NULL;
	ck_assert_int_eq(arb_model_create(&m, plain, arb_backend_cpu(), 4, &err), ARB_OK);
	ck_assert_int_eq(arb_ckpt_load(m, pa, NULL, &err), ARB_ERR_FORMAT);
	ck_assert_msg(strstr(err.msg, pa) != NULL, "%s", err.msg);
	arb_model_free(m);
	arb_cfg_free(plain);
	fixture_done(&fx);
}
END_TEST

/* On CUDA: 2N == N + resume + N record for record, and a checkpoint written
 * from device memory loads into a CPU model and saves back unchanged. */
START_TEST(test_exact_resume_gpu)
{
	fixture fx;
	fixture_init(&fx);
	arb_error err = { 0 };
	arb_backend *gpu = arb_backend_cuda(&err);
	ck_assert_msg(gpu != NULL, "%s", err.msg);
	const char *runs[3] = { "ga", "gb", "gb" };
	int64_t steps[3] = { 10, 5, 10 };
	for (int i = 0; i < 3; i++) {
		arb_cfg *cfg = tiny_cfg(&fx, runs[i], steps[i], "run.device=cuda", NULL);
		int code = -1;
		arb_status s = arb_train(cfg, gpu, &code, &err);
		ck_assert_msg(s == ARB_OK && code == 0, "train on cuda: %s", err.msg);
		arb_cfg_free(cfg);
	}
	char pa[256], pb[256], pc[256];
	snprintf(pa, sizeof pa, "%s/ga/final", fx.dir);
	snprintf(pb, sizeof pb, "%s/gb/final", fx.dir);
	int n = 0;
	int d = state_diff(pa, pb, &n);
	ck_assert_msg(d == 0, "cuda: %d of %d state records differ after resume", d, n);

	arb_cfg *cfg = tiny_cfg(&fx, "gc", 10, NULL, NULL);
	arb_model *m = NULL;
	ck_assert_int_eq(arb_model_create(&m, cfg, arb_backend_cpu(), 4, &err), ARB_OK);
	arb_train_state st;
	ck_assert_msg(arb_ckpt_load(m, pa, &st, &err) == ARB_OK, "%s", err.msg);
	snprintf(pc, sizeof pc, "%s/ga", fx.dir);
	ck_assert_msg(arb_ckpt_save(m, cfg, &st, pc, "oncpu", &err) == ARB_OK, "%s",
		      err.msg);
	snprintf(pc, sizeof pc, "%s/ga/oncpu", fx.dir);
	ck_assert_int_eq(state_diff(pa, pc, NULL), 0);
	arb_model_free(m);
	arb_cfg_free(cfg);
	fixture_done(&fx);
}
END_TEST

/* ---------------------------------------------------------------------------
 * corrupt files are refused */
static void expect_refused(const char *path, const char *what)
{
	arb_ckpt c;
	arb_error err = { 0 };
	arb_status s = arb_ckpt_open(&c, path, &err);
	ck_assert_msg(s == ARB_ERR_FORMAT, "%s: status %d, msg '%s'", path, s,
		      err.msg);
	ck_assert_msg(strstr(err.msg, path) != NULL, "message does not name the file: %s",
		      err.msg);
	ck_assert_msg(strstr(err.msg, what) != NULL, "message lacks '%s': %s", what,
		      err.msg);
}

START_TEST(test_corrupt_refused)
{
	fixture fx;
	fixture_init(&fx);
	train_ok(tiny_cfg(&fx, "r", 3, NULL, NULL));
	char p[256], q[256];
	snprintf(p, sizeof p, "%s/r/final", fx.dir);
	size_t n;
	char *buf = slurp(p, &n);
	ck_assert_msg(n > 1000, "checkpoint only %zu bytes", n);

	snprintf(q, sizeof q, "%s/trunc", fx.dir);
	write_file(q, buf, n - 7);
	expect_refused(q, "truncated");
	write_file(q, buf, n / 2);
	expect_refused(q, "truncated");

	/* one flipped byte anywhere: header, a record, the footer */
	size_t where[] = { 9, n / 3, n / 2, n - 10 };
	for (int i = 0; i < 4; i++) {
		buf[where[i]] ^= 0x10;
		snprintf(q, sizeof q, "%s/flip%d", fx.dir, i);
		write_file(q, buf, n);
		arb_ckpt c;
		arb_error err = { 0 };
		arb_status s = arb_ckpt_open(&c, q, &err);
		ck_assert_msg(s == ARB_ERR_FORMAT, "flip at %zu accepted", where[i]);
		ck_assert_msg(strstr(err.msg, q) != NULL, "%s", err.msg);
		buf[where[i]] ^= 0x10;
	}
	buf[0] = 'X';
	snprintf(q, sizeof q, "%s/magic", fx.dir);
	write_file(q, buf, n);
	expect_refused(q, "magic");
	buf[0] = 'A';

	/* a corrupt latest stops the resume with the file named, and the
	 * state on disk is not overwritten */
	snprintf(q, sizeof q, "%s/r/latest", fx.dir);
	buf[n / 2] ^= 1;
	write_file(q, buf, n);
	buf[n / 2] ^= 1;
	arb_cfg *cfg = tiny_cfg(&fx, "r", 6, NULL, NULL);
	arb_error err = { 0 };
	int code = -1;
	arb_status s = arb_train(cfg, arb_backend_cpu(), &code, &err);
	arb_cfg_free(cfg);
	ck_assert_int_eq(s, ARB_ERR_FORMAT);
	ck_assert_msg(strstr(err.msg, "latest") && strstr(err.msg, "CRC"), "%s",
		      err.msg);
	size_t n2;
	char *again = slurp(q, &n2);
	ck_assert_uint_eq(n2, n);
	free(again);

	/* a checkpoint of a different shape names the tensor and both shapes */
	arb_cfg *c48 = tiny_cfg(&fx, "other", 3, "model.d_model=48", NULL);
	arb_model *m = NULL;
	ck_assert_int_eq(arb_model_create(&m, c48, arb_backend_cpu(), 4, &err), ARB_OK);
	s = arb_ckpt_load(m, p, NULL, &err);
	ck_assert_int_eq(s, ARB_ERR_FORMAT);
	ck_assert_msg(strstr(err.msg, "48") && strstr(err.msg, "32") &&
		      strstr(err.msg, "tensor '"), "%s", err.msg);
	arb_model_free(m);
	arb_cfg_free(c48);

	/* resume = false over existing checkpoints is refused */
	cfg = tiny_cfg(&fx, "r", 6, "run.resume=false", NULL);
	s = arb_train(cfg, arb_backend_cpu(), &code, &err);
	arb_cfg_free(cfg);
	ck_assert_int_ne(s, ARB_OK);
	ck_assert_msg(strstr(err.msg, "refusing"), "%s", err.msg);
	free(buf);
	fixture_done(&fx);
}
END_TEST

/* checkpoint round trip through a model: load(save(m)) == m, and a version
 * from the future is refused */
START_TEST(test_roundtrip_version)
{
	fixture fx;
	fixture_init(&fx);
	train_ok(tiny_cfg(&fx, "v", 4, NULL, NULL));
	char p[256], q[256];
	snprintf(p, sizeof p, "%s/v/final", fx.dir);
	arb_cfg *cfg = tiny_cfg(&fx, "v", 4, NULL, NULL);
	arb_model *m = NULL;
	arb_error err = { 0 };
	ck_assert_int_eq(arb_model_create(&m, cfg, arb_backend_cpu(), 4, &err), ARB_OK);
	arb_train_state st;
	ck_assert_msg(arb_ckpt_load(m, p, &st, &err) == ARB_OK, "%s", err.msg);
	ck_assert_int_eq(st.step, 4);
	ck_assert_msg(isfinite(st.best_val) && st.best_val > 0, "best %g", st.best_val);
	snprintf(q, sizeof q, "%s/v", fx.dir);
	ck_assert_msg(arb_ckpt_save(m, cfg, &st, q, "again", &err) == ARB_OK, "%s",
		      err.msg);
	snprintf(q, sizeof q, "%s/v/again", fx.dir);
	ck_assert_int_eq(state_diff(p, q, NULL), 0);
	arb_model_free(m);
	arb_cfg_free(cfg);

	size_t n;
	char *buf = slurp(p, &n);
	buf[8] = 99; /* format version */
	snprintf(q, sizeof q, "%s/future", fx.dir);
	write_file(q, buf, n);
	expect_refused(q, "version 99");
	free(buf);
	fixture_done(&fx);
}
END_TEST

/* ---------------------------------------------------------------------------
 * non-finite loss */
START_TEST(test_nan_skips_update)
{
	fixture fx;
	fixture_init(&fx);
	/* C: 6 steps with the loss of step index 5 forced to NaN;
	 * D: 5 steps. Their tensors must be identical. */
	arb_train_debug_nan_step = 5;
	train_ok(tiny_cfg(&fx, "c", 6, NULL, NULL));
	arb_train_debug_nan_step = -1;
	train_ok(tiny_cfg(&fx, "d", 5, NULL, NULL));
	char pc[256], pd[256];
	snprintf(pc, sizeof pc, "%s/c/final", fx.dir);
	snprintf(pd, sizeof pd, "%s/d/final", fx.dir);
	ck_assert_int_eq(tensor_diff(pc, pd), 0);
	ck_assert_int_eq(ckpt_i64(pc, "train.nonfinite"), 1);
	ck_assert_int_eq(ckpt_i64(pd, "train.nonfinite"), 0);
	ck_assert_int_eq(ckpt_i64(pc, "train.step"), 6);
	/* a NaN in the middle: training goes on afterwards */
	arb_train_debug_nan_step = 2;
	train_ok(tiny_cfg(&fx, "e", 6, NULL, NULL));
	arb_train_debug_nan_step = -1;
	snprintf(pc, sizeof pc, "%s/e/final", fx.dir);
	ck_assert_int_eq(ckpt_i64(pc, "train.nonfinite"), 1);
	ck_assert_int_eq(ckpt_i64(pc, "train.step"), 6);
	fixture_done(&fx);
}
END_TEST

/* ---------------------------------------------------------------------------
 * data */
static arb_status load_data(const fixture *fx, const char *path,
			    const char *val_path, const char *extra, int ctx,
			    arb_data *d, arb_error *err)
{
	char o1[256], o2[256];
	const char *ov[4] = { o1, NULL, NULL, NULL };
	snprintf(o1, sizeof o1, "data.path=%s", path);
	int n = 1;
	if (val_path) {
		snprintf(o2, sizeof o2, "data.val_path=%s", val_path);
		ov[n++] = o2;
	}
	if (extra) ov[n++] = extra;
	arb_cfg *cfg = NULL;
	arb_error e2 = { 0 };
	ck_assert_msg(arb_cfg_load(&cfg, NULL, ov, &e2) == ARB_OK, "%s", e2.msg);
	arb_status s = arb_data_load(d, arb_cfg_section(cfg, "data"), ctx, err);
	arb_cfg_free(cfg);
	return s;
}

START_TEST(test_data)
{
	fixture fx;
	fixture_init(&fx);
	arb_data d;
	arb_error err = { 0 };
	ck_assert_int_eq(load_data(&fx, fx.data, NULL, NULL, 8, &d, &err), ARB_OK);
	ck_assert_int_eq(d.seqlen, 27);
	ck_assert_uint_eq(d.train_len, 21600);
	ck_assert_uint_eq(d.val_len, 2400);
	size_t n;
	char *all = slurp(fx.data, &n);
	ck_assert_int_eq(memcmp(d.val, all + 21600, 2400), 0);
	ck_assert_int_eq(memcmp(d.train, all, 21600), 0);
	/* windows: in range, deterministic, different per step */
	uint8_t a[4 * 27], b[4 * 27];
	arb_data_train_batch(&d, 1, 7, 4, a);
	arb_data_train_batch(&d, 1, 7, 4, b);
	ck_assert_int_eq(memcmp(a, b, sizeof a), 0);
	for (int i = 0; i < 4; i++) {
		uint64_t off = arb_data_train_offset(&d, 1, 7, (uint64_t)i);
		ck_assert_uint_le(off, 21600 - 27);
		uint64_t want = arb_rng_u32(1, arb_rng_stream(0, 7, ARB_RNG_DATA), (uint64_t)i) %
				(21600 - 27 + 1);
		ck_assert_uint_eq(off, want);
		ck_assert_int_eq(memcmp(a + 27 * i, all + off, 27), 0);
	}
	arb_data_train_batch(&d, 1, 8, 4, b);
	ck_assert_int_ne(memcmp(a, b, sizeof a), 0);
	/* validation windows: first at 0, last at the end, same each time */
	uint8_t v[4 * 27];
	arb_data_val_batch(&d, 0, 2, 4, v);
	ck_assert_int_eq(memcmp(v, d.val, 27), 0);
	arb_data_val_batch(&d, 1, 2, 4, v);
	ck_assert_int_eq(memcmp(v + 3 * 27, d.val + d.val_len - 27, 27), 0);
	arb_data_free(&d);

	/* two files concatenated; max_bytes per file; explicit val_path */
	char two[300];
	snprintf(two, sizeof two, "%s,%s", fx.data, fx.data);
	ck_assert_int_eq(load_data(&fx, two, fx.data, "data.max_bytes=1000", 8, &d,
				   &err), ARB_OK);
	ck_assert_uint_eq(d.train_len, 2000);
	ck_assert_uint_eq(d.val_len, 1000);
	ck_assert_int_eq(memcmp(d.train + 1000, all, 1000), 0);
	arb_data_free(&d);

	/* refusals name the file */
	char p[256], list[600];
	snprintf(p, sizeof p, "%s/missing.txt", fx.dir);
	snprintf(list, sizeof list, "%s,%s", fx.data, p);
	ck_assert_int_eq(load_data(&fx, list, NULL, NULL, 8, &d, &err), ARB_ERR_IO);
	ck_assert_msg(strstr(err.msg, p), "%s", err.msg);
	snprintf(p, sizeof p, "%s/empty.txt", fx.dir);
	write_file(p, "", 0);
	ck_assert_int_eq(load_data(&fx, p, NULL, NULL, 8, &d, &err), ARB_ERR_IO);
	ck_assert_msg(strstr(err.msg, p) && strstr(err.msg, "empty"), "%s", err.msg);
	snprintf(p, sizeof p, "%s/text.xz", fx.dir);
	write_file(p, "\xfd" "7zXZ\0\0\0\x04\xe6\xd6\xb4\x46", 14);
	ck_assert_int_eq(load_data(&fx, p, NULL, NULL, 8, &d, &err), ARB_ERR_FORMAT);
	ck_assert_msg(strstr(err.msg, "xz -dk") && strstr(err.msg, p), "%s", err.msg);
	snprintf(p, sizeof p, "%s/short.txt", fx.dir);
	write_file(p, "abcdefghijklmnopqrstuvwxyz0123456789", 36);
	ck_assert_int_eq(load_data(&fx, p, NULL, NULL, 8, &d, &err), ARB_ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "window"), "%s", err.msg);
	/* binary-safe: NUL bytes are data */
	uint8_t bin[4000];
	for (int i = 0; i < 4000; i++) bin[i] = (uint8_t)(i * 7);
	snprintf(p, sizeof p, "%s/bin.dat", fx.dir);
	write_file(p, bin, sizeof bin);
	ck_assert_int_eq(load_data(&fx, p, NULL, NULL, 8, &d, &err), ARB_OK);
	ck_assert_uint_eq(d.train_len + d.val_len, 4000);
	ck_assert_int_eq(memcmp(d.train, bin, d.train_len), 0);
	arb_data_free(&d);
	free(all);
	fixture_done(&fx);
}
END_TEST

Suite *suite_train(void)
{
	Suite *s = suite_create("train");
	TCase *tc = tcase_create("train");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_data);
	tcase_add_test(tc, test_exact_resume);
	tcase_add_test(tc, test_exact_resume_plugin);
	tcase_add_test(tc, test_corrupt_refused);
	tcase_add_test(tc, test_roundtrip_version);
	tcase_add_test(tc, test_nan_skips_update);
	suite_add_tcase(s, tc);
	TCase *tg = tcase_create("train_gpu");
	tcase_set_tags(tg, "gpu");
	tcase_set_timeout(tg, 120);
	tcase_add_test(tg, test_exact_resume_gpu);
	suite_add_tcase(s, tg);
	return s;
}
