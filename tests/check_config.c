/*
 * tests/check_config.c -- strict INI configuration (core/config.c): typed
 * values, every error class with its exact "file:line: [section] key:"
 * message, --set overrides, long lines, dump round trip, accessor misuse,
 * and docs/config.md covering every core key.
 */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core.h"
#include "testutil.h"

static char g_path[512];

/* write `text` to a fresh temp file; returns its path (static buffer) */
static const char *write_ini(const char *text)
{
	snprintf(g_path, sizeof g_path, "%s/t.ini", arb_test_tmpdir());
	FILE *f = fopen(g_path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
	return g_path;
}

/* load must fail with ARB_ERR_CONFIG and exactly the message
 * "<path>:<rest>" (rest given as printf format after the path) */
static void expect_file_error(const char *text, const char *const *ov,
			      const char *want_after_path)
{
	const char *p = write_ini(text);
	arb_cfg *cfg = (arb_cfg *)1;
	arb_error err = { 0 };
	arb_status st = arb_cfg_load(&cfg, p, ov, &err);
	char want[1024];
	snprintf(want, sizeof want, "%s%s", p, want_after_path);
	ck_assert_int_eq(st, ARB_ERR_CONFIG);
	ck_assert_int_eq(err.code, ARB_ERR_CONFIG);
	ck_assert_ptr_null(cfg);
	ck_assert_str_eq(err.msg, want);
}

static void expect_set_error(const char *const *ov, const char *want)
{
	arb_cfg *cfg = NULL;
	arb_error err = { 0 };
	ck_assert_int_eq(arb_cfg_load(&cfg, NULL, ov, &err), ARB_ERR_CONFIG);
	ck_assert_ptr_null(cfg);
	ck_assert_str_eq(err.msg, want);
}

/* ------------------------------------------------------------------ good */
START_TEST(test_good_file)
{
	const char *p = write_ini(
		"; a comment\n"
		"# another\n"
		"\n"
		"[run]\n"
		"seed = 42\n"
		"device = cuda   ; inline comment\n"
		"resume = off\n"
		"dir = runs/my run\n"
		"[model]\n"
		"d_model = 256\n"
		"zero_frac = 0.25\n"
		"[data]\n"
		"path = a.txt,\n"
		"\tb.txt,\n"
		"    c.txt\n"
		"[moe]\n"
		"experts = 8\n"
		"[vq:kg]\n"
		"[schedule]\n"
		"vote = sr\n"
		"threshold = 20\n");
	arb_cfg *cfg;
	arb_error err = { 0 };
	ck_assert_msg(arb_cfg_load(&cfg, p, NULL, &err) == ARB_OK, "%s", err.msg);
	ck_assert_str_eq(arb_cfg_path(cfg), p);
	const arb_conf *run = arb_cfg_section(cfg, "run");
	ck_assert_int_eq(arb_conf_int(run, "seed"), 42);
	ck_assert_str_eq(arb_conf_str(run, "device"), "cuda");
	ck_assert_int_eq(arb_conf_int(run, "device"), 1);   /* enum index */
	ck_assert_int_eq(arb_conf_bool(run, "resume"), 0);
	ck_assert_str_eq(arb_conf_str(run, "dir"), "runs/my run");
	ck_assert_int_eq(arb_conf_int(run, "threads"), 0);  /* default */
	const arb_conf *model = arb_cfg_section(cfg, "model");
	ck_assert_int_eq(arb_conf_int(model, "d_model"), 256);
	ck_assert(arb_conf_float(model, "zero_frac") == 0.25);
	ck_assert(arb_conf_float(model, "pos_scale") == 0.5);
	ck_assert(arb_conf_float(model, "layers") == 2.0);  /* int as float */
	/* indented lines continue a value; pieces join directly */
	ck_assert_str_eq(arb_conf_str(arb_cfg_section(cfg, "data"), "path"),
			 "a.txt,b.txt,c.txt");
	const arb_conf *sch = arb_cfg_section(cfg, "schedule");
	ck_assert_str_eq(arb_conf_str(sch, "vote"), "sr");
	ck_assert_int_eq(arb_conf_int(sch, "threshold"), 20);
	ck_assert_str_eq(arb_conf_str(sch, "erule"), "frozen");
	/* train was absent: exists with defaults */
	ck_assert_int_eq(arb_conf_int(arb_cfg_section(cfg, "train"), "batch"), 16);
	/* plugin sections, in file order, also an empty one; not validated */
	ck_assert_int_eq(arb_cfg_plugin_count(cfg), 2);
	ck_assert_str_eq(arb_cfg_plugin_section(cfg, 0), "moe");
	ck_assert_str_eq(arb_cfg_plugin_section(cfg, 1), "vq:kg");
	ck_assert_ptr_null(arb_cfg_plugin_section(cfg, 2));
	ck_assert_ptr_null(arb_cfg_section(cfg, "moe"));
	ck_assert_ptr_null(arb_cfg_section(cfg, "nothere"));
	arb_cfg_free(cfg);
}
END_TEST

START_TEST(test_defaults_only)
{
	arb_cfg *cfg;
	arb_error err = { 0 };
	ck_assert_int_eq(arb_cfg_load(&cfg, NULL, NULL, &err), ARB_OK);
	ck_assert_str_eq(arb_cfg_path(cfg), "");
	ck_assert_int_eq(arb_cfg_plugin_count(cfg), 0);
	ck_assert_int_eq(arb_conf_int(arb_cfg_section(cfg, "model"), "ctx"), 64);
	ck_assert_int_eq(arb_conf_int(arb_cfg_section(cfg, "schedule"), "e_min"), -30);
	ck_assert_int_eq(arb_conf_bool(arb_cfg_section(cfg, "run"), "resume"), 1);
	arb_cfg_free(cfg);
}
END_TEST

/* ---------------------------------------------------------------- errors */
START_TEST(test_error_unknown_key)
{
	expect_file_error("[run]\nseed = 1\nsed = 3\n", NULL,
			  ":3: [run] sed: unknown key (did you mean 'seed'?)");
	expect_file_error("[train]\n\nzzzzzz = 3\n", NULL,
			  ":3: [train] zzzzzz: unknown key (keys of [train]: batch, "
			  "steps, time_limit, eval_interval, eval_batches, "
			  "ckpt_interval, log_interval)");
	expect_file_error("[model]\nd model = 3\n", NULL,
			  ":2: [model] d model: unknown key: keys are letters, "
			  "digits and '_' (did you mean 'd_model'?)");
}
END_TEST

START_TEST(test_error_unknown_section)
{
	expect_file_error("[run]\nseed = 1\n[trian]\nbatch = 3\n", NULL,
			  ":3: [trian]: unknown section (did you mean [train]?)");
	expect_file_error("\n[Model]\n", NULL,
			  ":2: [Model]: invalid section name (did you mean "
			  "[model]?): core sections are [run] [data] [model] "
			  "[train] [schedule]; plugin sections are [name] or "
			  "[name:instance] with lowercase letters, digits and '_'");
	/* a plugin called moe is not a near miss of [model] */
	const char *p = write_ini("[moe]\n");
	arb_cfg *cfg;
	arb_error err = { 0 };
	ck_assert_int_eq(arb_cfg_load(&cfg, p, NULL, &err), ARB_OK);
	arb_cfg_free(cfg);
}
END_TEST

START_TEST(test_error_duplicates)
{
	expect_file_error("[run]\nseed = 1\n\nseed = 2\n", NULL,
			  ":4: [run] seed: duplicate key (first set at line 2)");
	expect_file_error("[run]\nseed = 1\n[model]\n[run]\n", NULL,
			  ":4: [run]: duplicate section (first at line 1)");
}
END_TEST

START_TEST(test_error_malformed)
{
	expect_file_error("[model]\nlayers = two\n", NULL,
			  ":2: [model] layers: 'two' is not an integer");
	expect_file_error("[model]\nlayers = 2.5\n", NULL,
			  ":2: [model] layers: '2.5' is not an integer");
	expect_file_error("[data]\nval_fraction = 0.1x\n", NULL,
			  ":2: [data] val_fraction: '0.1x' is not a number");
	expect_file_error("[data]\nval_fraction = inf\n", NULL,
			  ":2: [data] val_fraction: 'inf' is not a finite number");
	expect_file_error("[run]\nresume = maybe\n", NULL,
			  ":2: [run] resume: 'maybe' is not a boolean (true/false, "
			  "yes/no, on/off, 1/0)");
	expect_file_error("[schedule]\n\n\nvote = sgn\n", NULL,
			  ":4: [schedule] vote: 'sgn' is not one of sign|sr (did "
			  "you mean 'sign'?)");
	expect_file_error("[run]\ndevice = metal\n", NULL,
			  ":2: [run] device: 'metal' is not one of cpu|cuda");
	/* an indented key line continues the previous value */
	expect_file_error("[run]\nseed = 1\n  threads = 2\n", NULL,
			  ":2: [run] seed: '1threads = 2' is not an integer (the "
			  "value continues on indented line 3; remove the "
			  "indentation if that line is a key of its own)");
}
END_TEST

START_TEST(test_error_range)
{
	expect_file_error("[model]\nlayers = 300\n", NULL,
			  ":2: [model] layers: 300 is out of range [0, 256]");
	expect_file_error("[model]\nheads = 0\n", NULL,
			  ":2: [model] heads: 0 is out of range [1, 256]");
	expect_file_error("[data]\nval_fraction = 0.9\n", NULL,
			  ":2: [data] val_fraction: 0.9 is out of range [0.001, 0.5]");
	expect_file_error("[run]\nseed = 99999999999999999999\n", NULL,
			  ":2: [run] seed: 99999999999999999999 is out of range "
			  "[0, 9.2e+18]");
}
END_TEST

START_TEST(test_error_syntax)
{
	expect_file_error("[run]\nseed = 1\nnoequals\n", NULL,
			  ":3: [run] syntax error: expected 'key = value', got "
			  "'noequals'");
	expect_file_error("[run\nseed = 1\n", NULL,
			  ":1: syntax error: section header without ']': [run");
	expect_file_error("[run] extra\n", NULL,
			  ":1: syntax error: text after the section header: [run] extra");
	expect_file_error("seed = 1\n[run]\n", NULL,
			  ":1: seed: key before the first [section]");
	expect_file_error("[run]\ndir = a ;b\n  c ;d\n", NULL,
			  ":2: [run] dir: value contains ' ;', which starts an INI "
			  "comment (comments are not allowed inside a value or on a "
			  "continuation line) (the value continues on indented line "
			  "3; remove the indentation if that line is a key of its own)");
}
END_TEST

START_TEST(test_error_missing_required)
{
	static const arb_conf_key schema[] = {
		{ "size", ARB_CONF_INT, "4", 1, 8, NULL, "size" },
		{ "name", ARB_CONF_STRING, NULL, 0, 0, NULL, "the name" },
		ARB_CONF_END
	};
	const char *p = write_ini("[run]\nseed = 2\n\n[thing]\nsize = 3\n");
	arb_cfg *cfg;
	arb_error err = { 0 };
	char want[700];
	ck_assert_int_eq(arb_cfg_load(&cfg, p, NULL, &err), ARB_OK);
	ck_assert_int_eq(arb_cfg_validate_section(cfg, "thing", schema, &err),
			 ARB_ERR_CONFIG);
	snprintf(want, sizeof want, "%s:4: [thing] name: missing required key "
		 "(string: the name)", p);
	ck_assert_str_eq(err.msg, want);
	ck_assert_ptr_null(arb_cfg_section(cfg, "thing"));
	ck_assert_int_eq(arb_cfg_validate_section(cfg, "absent", schema, &err),
			 ARB_ERR_INVALID);
	ck_assert_str_eq(err.msg, "config has no section [absent]");
	arb_cfg_free(cfg);
}
END_TEST

START_TEST(test_long_line)
{
	char text[1024], dir[301];
	memset(dir, 'x', 300);
	dir[300] = '\0';
	/* line 3 is "dir = " + 300 chars = 306 bytes */
	snprintf(text, sizeof text, "[run]\nseed = 1\ndir = %s\nthreads = 2\n", dir);
	expect_file_error(text, NULL, ":3: line too long (306 bytes, max 197)");
	/* the longest line that fits is accepted */
	memset(dir, 'y', 191);
	dir[191] = '\0';
	snprintf(text, sizeof text, "[run]\ndir = %s\nthreads = 2\n", dir);
	const char *p = write_ini(text);
	arb_cfg *cfg;
	arb_error err = { 0 };
	ck_assert_msg(arb_cfg_load(&cfg, p, NULL, &err) == ARB_OK, "%s", err.msg);
	ck_assert_str_eq(arb_conf_str(arb_cfg_section(cfg, "run"), "dir"), dir);
	ck_assert_int_eq(arb_conf_int(arb_cfg_section(cfg, "run"), "threads"), 2);
	arb_cfg_free(cfg);
	/* one byte more is refused, on its own line */
	snprintf(text, sizeof text, "[run]\ndir = %sy\n", dir);
	expect_file_error(text, NULL, ":2: line too long (198 bytes, max 197)");
}
END_TEST

START_TEST(test_missing_file)
{
	arb_cfg *cfg;
	arb_error err = { 0 };
	ck_assert_int_eq(arb_cfg_load(&cfg, "/nonexistent/x.ini", NULL, &err),
			 ARB_ERR_CONFIG);
	ck_assert_str_eq(err.msg, "/nonexistent/x.ini: cannot open config file: "
			 "No such file or directory");
}
END_TEST

/* ------------------------------------------------------------- overrides */
START_TEST(test_overrides)
{
	const char *p = write_ini("[train]\nbatch = 4\nsteps = 10\n[moe]\nexperts = 2\n");
	const char *ov[] = { "train.batch=32", "train.batch = 64", "run.seed=7",
			     "moe.top_k=2", "vq:kg.size=100", "memgram.n=3", NULL };
	arb_cfg *cfg;
	arb_error err = { 0 };
	ck_assert_msg(arb_cfg_load(&cfg, p, ov, &err) == ARB_OK, "%s", err.msg);
	const arb_conf *tr = arb_cfg_section(cfg, "train");
	ck_assert_int_eq(arb_conf_int(tr, "batch"), 64);   /* last --set wins */
	ck_assert_int_eq(arb_conf_int(tr, "steps"), 10);
	ck_assert_int_eq(arb_conf_int(arb_cfg_section(cfg, "run"), "seed"), 7);
	ck_assert_int_eq(arb_cfg_plugin_count(cfg), 3);
	ck_assert_str_eq(arb_cfg_plugin_section(cfg, 0), "moe");
	ck_assert_str_eq(arb_cfg_plugin_section(cfg, 1), "vq:kg");
	ck_assert_str_eq(arb_cfg_plugin_section(cfg, 2), "memgram");
	/* the plugin keys are validated against the plugin's schema later */
	static const arb_conf_key moe[] = {
		{ "experts", ARB_CONF_INT, "4", 1, 64, NULL, "experts" },
		{ "top_k", ARB_CONF_INT, "1", 1, 8, NULL, "k" },
		{ "layers", ARB_CONF_INT_LIST, "", 0, 255, NULL, "layers" },
		ARB_CONF_END
	};
	ck_assert_int_eq(arb_cfg_validate_section(cfg, "moe", moe, &err), ARB_OK);
	const arb_conf *m = arb_cfg_section(cfg, "moe");
	ck_assert_int_eq(arb_conf_int(m, "experts"), 2);
	ck_assert_int_eq(arb_conf_int(m, "top_k"), 2);
	ck_assert_int_eq(arb_conf_int_list(m, "layers", NULL, 0), 0);
	static const arb_conf_key vq[] = {
		{ "size", ARB_CONF_INT, "16", 1, 50, NULL, "codes" },
		ARB_CONF_END
	};
	ck_assert_int_eq(arb_cfg_validate_section(cfg, "vq:kg", vq, &err),
			 ARB_ERR_CONFIG);
	ck_assert_str_eq(err.msg, "--set vq:kg.size=100: [vq:kg] size: 100 is out "
			 "of range [1, 50]");
	arb_cfg_free(cfg);
}
END_TEST

START_TEST(test_override_errors)
{
	const char *a[] = { "train.batch=0", NULL };
	expect_set_error(a, "--set train.batch=0: [train] batch: 0 is out of range "
			 "[1, 65536]");
	const char *b[] = { "train.bach=3", NULL };
	expect_set_error(b, "--set train.bach=3: [train] bach: unknown key (did you "
			 "mean 'batch'?)");
	const char *c[] = { "train.batch", NULL };
	expect_set_error(c, "--set train.batch: expected section.key=value (e.g. "
			 "train.steps=100)");
	const char *d[] = { "trian.batch=3", NULL };
	expect_set_error(d, "--set trian.batch=3: [trian]: unknown section (did you "
			 "mean [train]?)");
	const char *e[] = { "schedule.vote=sgn", NULL };
	expect_set_error(e, "--set schedule.vote=sgn: [schedule] vote: 'sgn' is not "
			 "one of sign|sr (did you mean 'sign'?)");
}
END_TEST

/* an override replaces the file's value and is blamed for it */
START_TEST(test_override_replaces_file_value)
{
	const char *p = write_ini("[model]\nlayers = 3\n");
	const char *ov[] = { "model.layers=x", NULL };
	arb_cfg *cfg;
	arb_error err = { 0 };
	ck_assert_int_eq(arb_cfg_load(&cfg, p, ov, &err), ARB_ERR_CONFIG);
	ck_assert_str_eq(err.msg, "--set model.layers=x: [model] layers: 'x' is not "
			 "an integer");
}
END_TEST

/* ------------------------------------------------------------------ dump */
static void same_values(const arb_cfg *a, const arb_cfg *b)
{
	const char *secs[] = { "run", "data", "model", "train", "schedule" };
	const arb_conf_key *sch[] = { arb_schema_run, arb_schema_data,
				      arb_schema_model, arb_schema_train,
				      arb_schema_schedule };
	for (int s = 0; s < 5; s++)
		for (const arb_conf_key *k = sch[s]; k->key; k++)
			ck_assert_msg(strcmp(arb_conf_str(arb_cfg_section(a, secs[s]), k->key),
					     arb_conf_str(arb_cfg_section(b, secs[s]), k->key)) == 0,
				      "[%s] %s differs after dump", secs[s], k->key);
}

static arb_cfg *dump_reload(const arb_cfg *cfg)
{
	char path[512];
	snprintf(path, sizeof path, "%s/dump.ini", arb_test_tmpdir());
	FILE *f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	arb_cfg_dump(cfg, f);
	fclose(f);
	arb_cfg *back = NULL;
	arb_error err = { 0 };
	ck_assert_msg(arb_cfg_load(&back, path, NULL, &err) == ARB_OK, "%s", err.msg);
	return back;
}

START_TEST(test_dump_roundtrip)
{
	arb_cfg *cfg, *back;
	arb_error err = { 0 };
	ck_assert_int_eq(arb_cfg_load(&cfg, NULL, NULL, &err), ARB_OK);
	back = dump_reload(cfg);   /* default data.path is ~300 bytes: wrapped */
	same_values(cfg, back);
	ck_assert_str_eq(arb_conf_str(arb_cfg_section(back, "data"), "path"),
			 arb_schema_data[0].def);
	arb_cfg_free(back);
	arb_cfg_free(cfg);

	/* non-default values, a long value without commas, a plugin section */
	char longdir[600] = "--set=run.dir=";
	size_t n = strlen(longdir);
	for (int i = 0; i < 500; i++) longdir[n + i] = (char)('a' + i % 26);
	longdir[n + 500] = '\0';
	const char *ov[] = { longdir + 6, "schedule.vote=sr", "data.val_fraction=0.25",
			     "moe.experts=8", NULL };
	ck_assert_msg(arb_cfg_load(&cfg, NULL, ov, &err) == ARB_OK, "%s", err.msg);
	back = dump_reload(cfg);
	same_values(cfg, back);
	ck_assert_int_eq(strlen(arb_conf_str(arb_cfg_section(back, "run"), "dir")), 500);
	ck_assert_int_eq(arb_cfg_plugin_count(back), 1);
	ck_assert_str_eq(arb_cfg_plugin_section(back, 0), "moe");
	arb_cfg_free(back);
	arb_cfg_free(cfg);
}
END_TEST

START_TEST(test_schema_print)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	arb_schema_print("schedule", arb_schema_schedule, f);
	fclose(f);
	ck_assert_ptr_nonnull(strstr(buf, "[schedule]\n"));
	ck_assert_ptr_nonnull(strstr(buf, "  vote             enum     default \"sign\"  one of sign|sr\n"));
	ck_assert_ptr_nonnull(strstr(buf, "  threshold        int      default \"12\"  range [1, 127]\n"
					  "      T_accum magnitude that moves a trit one step\n"));
	free(buf);
}
END_TEST

START_TEST(test_schema_check)
{
	arb_error err = { 0 };
	const arb_conf_key *sch[] = { arb_schema_run, arb_schema_data,
				      arb_schema_model, arb_schema_train,
				      arb_schema_schedule };
	for (int s = 0; s < 5; s++)
		ck_assert_msg(arb_schema_check("core", sch[s], &err) == ARB_OK, "%s",
			      err.msg);
	static const arb_conf_key bad_def[] = {
		{ "n", ARB_CONF_INT, "99", 1, 8, NULL, "n" }, ARB_CONF_END
	};
	ck_assert_int_eq(arb_schema_check("x", bad_def, &err), ARB_ERR_PLUGIN);
	ck_assert_str_eq(err.msg, "x: schema entry 0 ('n'): default '99' is invalid: "
			 "99 is out of range [1, 8]");
	static const arb_conf_key bad_type[] = {
		{ "n", 9, "1", 0, 0, NULL, "n" }, ARB_CONF_END
	};
	ck_assert_int_eq(arb_schema_check("x", bad_type, &err), ARB_ERR_PLUGIN);
	ck_assert_str_eq(err.msg, "x: schema entry 0 ('n'): unknown type 9");
}
END_TEST

START_TEST(test_int_list)
{
	static const arb_conf_key s[] = {
		{ "layers", ARB_CONF_INT_LIST, "0", 0, 16, NULL, "layers" },
		ARB_CONF_END
	};
	const char *p = write_ini("[moe]\nlayers = 1, 3,5\n[vq]\nlayers = 1,,2\n"
				  "[graph]\nlayers = 1,17\n");
	arb_cfg *cfg;
	arb_error err = { 0 };
	char want[700];
	ck_assert_int_eq(arb_cfg_load(&cfg, p, NULL, &err), ARB_OK);
	ck_assert_int_eq(arb_cfg_validate_section(cfg, "moe", s, &err), ARB_OK);
	int64_t v[8];
	const arb_conf *m = arb_cfg_section(cfg, "moe");
	ck_assert_int_eq(arb_conf_int_list(m, "layers", NULL, 0), 3);
	ck_assert_int_eq(arb_conf_int_list(m, "layers", v, 2), 2);
	ck_assert_int_eq(arb_conf_int_list(m, "layers", v, 8), 3);
	ck_assert(v[0] == 1 && v[1] == 3 && v[2] == 5);
	ck_assert_int_eq(arb_cfg_validate_section(cfg, "vq", s, &err), ARB_ERR_CONFIG);
	snprintf(want, sizeof want, "%s:4: [vq] layers: '1,,2' is not a "
		 "comma-separated list of integers (item 2: '')", p);
	ck_assert_str_eq(err.msg, want);
	ck_assert_int_eq(arb_cfg_validate_section(cfg, "graph", s, &err), ARB_ERR_CONFIG);
	snprintf(want, sizeof want, "%s:6: [graph] layers: item 2 (17) is out of "
		 "range [0, 16]", p);
	ck_assert_str_eq(err.msg, want);
	arb_cfg_free(cfg);
}
END_TEST

/* asking for a key the schema lacks is a programming error: abort() */
START_TEST(test_accessor_unknown_key_aborts)
{
	arb_cfg *cfg;
	arb_error err = { 0 };
	ck_assert_int_eq(arb_cfg_load(&cfg, NULL, NULL, &err), ARB_OK);
	arb_conf_int(arb_cfg_section(cfg, "model"), "no_such_key");
}
END_TEST

START_TEST(test_accessor_wrong_type_aborts)
{
	arb_cfg *cfg;
	arb_error err = { 0 };
	ck_assert_int_eq(arb_cfg_load(&cfg, NULL, NULL, &err), ARB_OK);
	arb_conf_bool(arb_cfg_section(cfg, "model"), "d_model");
}
END_TEST

/* ------------------------------------------------------------------ docs */
START_TEST(test_every_core_key_documented)
{
	uint8_t *doc;
	size_t len;
	arb_error err = { 0 };
	ck_assert_msg(arb_read_file("docs/config.md", &doc, &len, &err) == ARB_OK,
		      "%s", err.msg);
	char *text = malloc(len + 1);
	memcpy(text, doc, len);
	text[len] = '\0';
	free(doc);
	const char *secs[] = { "run", "data", "model", "train", "schedule" };
	const arb_conf_key *sch[] = { arb_schema_run, arb_schema_data,
				      arb_schema_model, arb_schema_train,
				      arb_schema_schedule };
	for (int s = 0; s < 5; s++) {
		/* the section's table runs from "## [name]" to the next "## " */
		char head[64], cell[128];
		snprintf(head, sizeof head, "\n## [%s]", secs[s]);
		char *start = strstr(text, head);
		ck_assert_msg(start != NULL, "docs/config.md lacks '## [%s]'", secs[s]);
		char *end = strstr(start + 1, "\n## ");
		size_t span = end ? (size_t)(end - start) : strlen(start);
		for (const arb_conf_key *k = sch[s]; k->key; k++) {
			snprintf(cell, sizeof cell, "| `%s` |", k->key);
			char *hit = strstr(start, cell);
			ck_assert_msg(hit && (size_t)(hit - start) < span,
				      "docs/config.md: [%s] lacks a row for `%s`",
				      secs[s], k->key);
			/* and it shows the current default */
			char *eol = strchr(hit, '\n');
			char def[1200];
			if (!k->def)
				snprintf(def, sizeof def, "(required)");
			else if (!*k->def)
				snprintf(def, sizeof def, "(empty)");
			else
				snprintf(def, sizeof def, "`%s`", k->def);
			if (strlen(k->def ? k->def : "") < 60) {
				char *d = strstr(hit, def);
				ck_assert_msg(d && (!eol || d < eol),
					      "docs/config.md: [%s] %s: default %s "
					      "not in its row", secs[s], k->key, def);
			}
		}
	}
	free(text);
}
END_TEST

Suite *suite_config(void)
{
	Suite *s = suite_create("config");
	TCase *tc = tcase_create("parse");
	tcase_add_test(tc, test_good_file);
	tcase_add_test(tc, test_defaults_only);
	tcase_add_test(tc, test_int_list);
	suite_add_tcase(s, tc);
	tc = tcase_create("errors");
	tcase_add_test(tc, test_error_unknown_key);
	tcase_add_test(tc, test_error_unknown_section);
	tcase_add_test(tc, test_error_duplicates);
	tcase_add_test(tc, test_error_malformed);
	tcase_add_test(tc, test_error_range);
	tcase_add_test(tc, test_error_syntax);
	tcase_add_test(tc, test_error_missing_required);
	tcase_add_test(tc, test_long_line);
	tcase_add_test(tc, test_missing_file);
	tcase_add_test_raise_signal(tc, test_accessor_unknown_key_aborts, SIGABRT);
	tcase_add_test_raise_signal(tc, test_accessor_wrong_type_aborts, SIGABRT);
	suite_add_tcase(s, tc);
	tc = tcase_create("overrides");
	tcase_add_test(tc, test_overrides);
	tcase_add_test(tc, test_override_errors);
	tcase_add_test(tc, test_override_replaces_file_value);
	suite_add_tcase(s, tc);
	tc = tcase_create("dump_and_docs");
	tcase_add_test(tc, test_dump_roundtrip);
	tcase_add_test(tc, test_schema_print);
	tcase_add_test(tc, test_schema_check);
	tcase_add_test(tc, test_every_core_key_documented);
	suite_add_tcase(s, tc);
	return s;
}
