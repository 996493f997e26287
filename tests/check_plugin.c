/*
 * tests/check_plugin.c -- the plugin loader (core/plugin.c) with real .so
 * files built from tests/plugins/<x>.c: a good plugin loads; every refusal
 * gives its exact message; permissions, spaces in paths and symlinks;
 * search order (config path, $ARB_PLUGIN_PATH, built-in directory);
 * validating a plugin section against the plugin's schema; a create()
 * failure surfacing the plugin's own message through a minimal host.
 */
#include <check.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "core.h"
#include "testutil.h"

static const char *plug(const char *name)
{
	static char buf[4][PATH_MAX];
	static int k;
	char rel[256];
	snprintf(rel, sizeof rel, "tests/plugins/%s.so", name);
	char *out = buf[k++ & 3];
	snprintf(out, PATH_MAX, "%s", arb_test_build_path(rel));
	return out;
}

static void copy_file(const char *src, const char *dst)
{
	uint8_t *data;
	size_t len;
	arb_error err = { 0 };
	ck_assert_msg(arb_read_file(src, &data, &len, &err) == ARB_OK, "%s", err.msg);
	FILE *f = fopen(dst, "wb");
	ck_assert_msg(f != NULL, "cannot write %s", dst);
	ck_assert_uint_eq(fwrite(data, 1, len, f), len);
	fclose(f);
	free(data);
	ck_assert_int_eq(chmod(dst, 0755), 0);
}

/* refusal of `file` (loaded as `expect`) must read exactly `fmt` with the
 * path substituted for every %s */
static void expect_refusal(const char *file, const char *expect, const char *fmt)
{
	arb_loaded_plugin p;
	arb_error err = { 0 };
	const char *path = plug(file);
	ck_assert_int_eq(arb_plugin_open_file(path, expect, &p, &err), ARB_ERR_PLUGIN);
	ck_assert_ptr_null(p.dl);
	ck_assert_ptr_null(p.desc);
	char want[1024];
	snprintf(want, sizeof want, fmt, path, path);
	ck_assert_str_eq(err.msg, want);
}

/* ------------------------------------------------------------------ load */
START_TEST(test_load_good)
{
	arb_loaded_plugin p;
	arb_error err = { 0 };
	ck_assert_msg(arb_plugin_open_file(plug("good"), "good", &p, &err) == ARB_OK,
		      "%s", err.msg);
	ck_assert_ptr_nonnull(p.dl);
	ck_assert_str_eq(p.desc->name, "good");
	ck_assert_str_eq(p.desc->version, "0.1.0");
	ck_assert_str_eq(p.desc->build_sig, ARB_BUILD_SIGNATURE);
	ck_assert_uint_eq(p.desc->abi_version, ARB_ABI_VERSION);
	ck_assert_int_eq(p.desc->slot, ARB_SLOT_FFN);
	ck_assert_str_eq(p.desc->schema[0].key, "level");
	ck_assert_str_eq(p.desc->schema[1].key, "mode");
	ck_assert_str_eq(p.desc->schema[2].key, "name");
	ck_assert_ptr_null(p.desc->schema[2].def);
	ck_assert_ptr_null(p.desc->schema[3].key);
	ck_assert_str_eq(p.path, plug("good"));
	arb_plugin_close(&p);
	ck_assert_ptr_null(p.dl);
	/* without an expected name too */
	ck_assert_int_eq(arb_plugin_open_file(plug("good"), NULL, &p, &err), ARB_OK);
	arb_plugin_close(&p);
}
END_TEST

/* -------------------------------------------------------------- refusals */
START_TEST(test_refuse_abi)
{
	char fmt[512];
	snprintf(fmt, sizeof fmt, "refusing plugin %%s: built for ABI 2.0, arbcore "
		 "provides 1.%d: rebuild the plugin against this arbcore's headers",
		 ARB_ABI_MINOR);
	expect_refusal("bad_major", "bad_major", fmt);
	snprintf(fmt, sizeof fmt, "refusing plugin %%s: built for ABI 1.%d, newer "
		 "than the ABI 1.%d this arbcore provides: update arbcore, or "
		 "rebuild the plugin against this arbcore's headers",
		 ARB_ABI_MINOR + 1, ARB_ABI_MINOR);
	expect_refusal("newer_minor", "newer_minor", fmt);
}
END_TEST

START_TEST(test_refuse_struct_size)
{
	char fmt[512];
	snprintf(fmt, sizeof fmt, "refusing plugin %%s: its descriptor is %zu "
		 "bytes, larger than the %zu bytes this arbcore knows (ABI 1.%d): "
		 "rebuild the plugin against this arbcore's headers",
		 sizeof(arb_plugin) + 64, sizeof(arb_plugin), ARB_ABI_MINOR);
	expect_refusal("big_struct", "big_struct", fmt);
	snprintf(fmt, sizeof fmt, "refusing plugin %%s: its descriptor is %zu "
		 "bytes, smaller than the ABI 1.0 descriptor (%zu bytes): "
		 "corrupt, or built against foreign headers",
		 sizeof(arb_plugin) - 8, sizeof(arb_plugin));
	expect_refusal("small_struct", "small_struct", fmt);
}
END_TEST

START_TEST(test_refuse_signature)
{
	char fmt[512];
	snprintf(fmt, sizeof fmt, "refusing plugin %%s: build signature "
		 "'ptr4;tern5r1;f16;abi1' differs from arbcore's '%s': rebuild "
		 "the plugin against this arbcore's headers", ARB_BUILD_SIGNATURE);
	expect_refusal("bad_sig", "bad_sig", fmt);
}
END_TEST

START_TEST(test_refuse_symbol_and_null)
{
	expect_refusal("no_symbol", "no_symbol",
		       "refusing plugin %s: it exports no 'arb_plugin_descriptor' "
		       "symbol (not an arbcore plugin? define the descriptor with "
		       "ARB_PLUGIN_DEFINE)");
	expect_refusal("null_desc", "null_desc",
		       "refusing plugin %s: arb_plugin_descriptor() returned NULL");
}
END_TEST

START_TEST(test_refuse_name_callback_schema)
{
	expect_refusal("wrong_name", "wrong_name",
		       "refusing plugin %s: it calls itself 'good' but was loaded "
		       "for [wrong_name]: the file of plugin 'x' must be x.so");
	expect_refusal("missing_cb", "missing_cb",
		       "refusing plugin %s ('missing_cb'): the required callback "
		       "'backward' is NULL");
	expect_refusal("bad_schema", "bad_schema",
		       "refusing plugin %s ('bad_schema'): invalid schema: schema "
		       "entry 1 ('mode'): unknown type 42");
}
END_TEST

START_TEST(test_refuse_dlopen)
{
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/broken.so", arb_test_tmpdir());
	FILE *f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs("this is not an ELF file\n", f);
	fclose(f);
	chmod(path, 0755);
	arb_loaded_plugin p;
	arb_error err = { 0 };
	ck_assert_int_eq(arb_plugin_open_file(path, "broken", &p, &err), ARB_ERR_PLUGIN);
	char head[2 * PATH_MAX + 64], tail[PATH_MAX + 64];
	snprintf(head, sizeof head, "cannot load plugin %s: %s: ", path, path);
	snprintf(tail, sizeof tail, " (check its dependencies with: ldd '%s')", path);
	ck_assert_msg(strncmp(err.msg, head, strlen(head)) == 0, "%s", err.msg);
	ck_assert_msg(strlen(err.msg) > strlen(tail) &&
		      strcmp(err.msg + strlen(err.msg) - strlen(tail), tail) == 0,
		      "%s", err.msg);
	/* dlerror's own words sit between: the ELF header is refused */
	ck_assert_msg(strstr(err.msg, "ELF") || strstr(err.msg, "too short"),
		      "%s", err.msg);
}
END_TEST

START_TEST(test_refuse_not_found)
{
	char a[PATH_MAX], b[PATH_MAX], path[2 * PATH_MAX + 2];
	snprintf(a, sizeof a, "%s", arb_test_tmpdir());
	snprintf(b, sizeof b, "%s", arb_test_tmpdir());
	snprintf(path, sizeof path, "%s:%s", a, b);
	setenv("ARB_PLUGIN_PATH", "/nonexistent/env dir", 1);
	arb_loaded_plugin p;
	arb_error err = { 0 };
	ck_assert_int_eq(arb_plugin_open("nothere", path, &p, &err), ARB_ERR_PLUGIN);
	char want[4 * PATH_MAX];
	snprintf(want, sizeof want, "plugin 'nothere' not found: no nothere.so in "
		 "%s, %s, /nonexistent/env dir, %s (directories come from "
		 "run.plugin_path, $ARB_PLUGIN_PATH and the built-in directory)",
		 a, b, arb_plugin_builtin_dir());
	ck_assert_str_eq(err.msg, want);
	ck_assert_int_eq(arb_plugin_open("Bad-Name", NULL, &p, &err), ARB_ERR_PLUGIN);
	ck_assert_str_eq(err.msg, "invalid plugin name 'Bad-Name': plugin names "
			 "are [a-z0-9_]+");
}
END_TEST

/* ------------------------------------------------------------ permissions */
START_TEST(test_refuse_writable)
{
	char dir[PATH_MAX], file[PATH_MAX + 16], want[4 * PATH_MAX];
	snprintf(dir, sizeof dir, "%s", arb_test_tmpdir());
	snprintf(file, sizeof file, "%s/good.so", dir);
	copy_file(plug("good"), file);
	arb_loaded_plugin p;
	arb_error err = { 0 };
	ck_assert_msg(arb_plugin_open("good", dir, &p, &err) == ARB_OK, "%s", err.msg);
	arb_plugin_close(&p);

	chmod(file, 0775);
	ck_assert_int_eq(arb_plugin_open("good", dir, &p, &err), ARB_ERR_PLUGIN);
	snprintf(want, sizeof want, "refusing plugin %s: its file %s is writable by "
		 "group (mode 0775); fix with: chmod go-w '%s'", file, file, file);
	ck_assert_str_eq(err.msg, want);

	chmod(file, 0757);
	ck_assert_int_eq(arb_plugin_open("good", dir, &p, &err), ARB_ERR_PLUGIN);
	snprintf(want, sizeof want, "refusing plugin %s: its file %s is writable by "
		 "others (mode 0757); fix with: chmod go-w '%s'", file, file, file);
	ck_assert_str_eq(err.msg, want);

	chmod(file, 0755);
	chmod(dir, 0770);
	ck_assert_int_eq(arb_plugin_open("good", dir, &p, &err), ARB_ERR_PLUGIN);
	snprintf(want, sizeof want, "refusing plugin %s: its directory %s is "
		 "writable by group (mode 0770); fix with: chmod go-w '%s'", file,
		 dir, dir);
	ck_assert_str_eq(err.msg, want);
	chmod(dir, 0700);
	ck_assert_int_eq(arb_plugin_open("good", dir, &p, &err), ARB_OK);
	arb_plugin_close(&p);
}
END_TEST

START_TEST(test_spaces_and_symlinks)
{
	char base[PATH_MAX], dir[PATH_MAX + 32], file[PATH_MAX + 64];
	char link_dir[PATH_MAX + 32], link_file[PATH_MAX + 64];
	snprintf(base, sizeof base, "%s", arb_test_tmpdir());
	snprintf(dir, sizeof dir, "%s/my plugin dir", base);
	ck_assert_int_eq(mkdir(dir, 0755), 0);
	snprintf(file, sizeof file, "%s/good.so", dir);
	copy_file(plug("good"), file);
	arb_loaded_plugin p;
	arb_error err = { 0 };
	ck_assert_msg(arb_plugin_open("good", dir, &p, &err) == ARB_OK, "%s", err.msg);
	ck_assert_str_eq(p.path, file);
	arb_plugin_close(&p);
	/* a symlinked directory */
	snprintf(link_dir, sizeof link_dir, "%s/linked dir", base);
	ck_assert_int_eq(symlink(dir, link_dir), 0);
	ck_assert_msg(arb_plugin_open("good", link_dir, &p, &err) == ARB_OK, "%s",
		      err.msg);
	arb_plugin_close(&p);
	/* a symlinked file (e.g. good.so -> good-0.1.0.so) */
	char other[PATH_MAX + 32];
	snprintf(other, sizeof other, "%s/links", base);
	ck_assert_int_eq(mkdir(other, 0755), 0);
	snprintf(link_file, sizeof link_file, "%s/good.so", other);
	ck_assert_int_eq(symlink(file, link_file), 0);
	ck_assert_msg(arb_plugin_open("good", other, &p, &err) == ARB_OK, "%s",
		      err.msg);
	ck_assert_str_eq(p.path, link_file);
	ck_assert_str_eq(p.desc->name, "good");
	arb_plugin_close(&p);
	/* the link's target sits in a writable directory: refused */
	chmod(dir, 0777);
	ck_assert_int_eq(arb_plugin_open("good", other, &p, &err), ARB_ERR_PLUGIN);
	ck_assert_msg(strstr(err.msg, "is writable by group and others (mode 0777)"),
		      "%s", err.msg);
	chmod(dir, 0755);
}
END_TEST

/* ------------------------------------------------------------ search order */
START_TEST(test_search_order)
{
	char a[PATH_MAX], b[PATH_MAX], fa[PATH_MAX + 16], fb[PATH_MAX + 16];
	snprintf(a, sizeof a, "%s", arb_test_tmpdir());
	snprintf(b, sizeof b, "%s", arb_test_tmpdir());
	snprintf(fa, sizeof fa, "%s/good.so", a);
	snprintf(fb, sizeof fb, "%s/good.so", b);
	copy_file(plug("good"), fa);
	copy_file(plug("good"), fb);
	arb_loaded_plugin p;
	arb_error err = { 0 };
	/* config path beats $ARB_PLUGIN_PATH */
	setenv("ARB_PLUGIN_PATH", b, 1);
	ck_assert_int_eq(arb_plugin_open("good", a, &p, &err), ARB_OK);
	ck_assert_str_eq(p.path, fa);
	arb_plugin_close(&p);
	/* an empty or missing config directory falls through to the env */
	ck_assert_int_eq(arb_plugin_open("good", "", &p, &err), ARB_OK);
	ck_assert_str_eq(p.path, fb);
	arb_plugin_close(&p);
	ck_assert_int_eq(arb_plugin_open("good", "/nonexistent:", &p, &err), ARB_OK);
	ck_assert_str_eq(p.path, fb);
	arb_plugin_close(&p);
	/* $ARB_PLUGIN_PATH beats the built-in directory, which for this test
	 * runner (build/tests/check_arbcore) is build/tests/plugins */
	unsetenv("ARB_PLUGIN_PATH");
	const char *bi = arb_plugin_builtin_dir();
	ck_assert_msg(strlen(bi) > 14 &&
		      strcmp(bi + strlen(bi) - 14, "/tests/plugins") == 0, "%s", bi);
	ck_assert_int_eq(arb_plugin_open("good", NULL, &p, &err), ARB_OK);
	char want[2 * PATH_MAX + 64];
	snprintf(want, sizeof want, "%s/good.so", bi);
	ck_assert_str_eq(p.path, want);
	arb_plugin_close(&p);
	/* the first directory holding the file decides, even when refused */
	char c[PATH_MAX], fc[PATH_MAX + 32], path[3 * PATH_MAX];
	snprintf(c, sizeof c, "%s", arb_test_tmpdir());
	snprintf(fc, sizeof fc, "%s/good.so", c);
	copy_file(plug("bad_major"), fc);
	snprintf(path, sizeof path, "%s:%s", c, a);
	ck_assert_int_eq(arb_plugin_open("good", path, &p, &err), ARB_ERR_PLUGIN);
	snprintf(want, sizeof want, "refusing plugin %s: built for ABI 2.0", fc);
	ck_assert_msg(strncmp(err.msg, want, strlen(want)) == 0, "%s", err.msg);
}
END_TEST

/* ---------------------------------------------------- list and help output */
static char *capture_list(const char *dirs, int *found)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	*found = arb_plugin_list(dirs, f);
	fclose(f);
	return buf;
}

START_TEST(test_list_and_help)
{
	char a[PATH_MAX], f1[PATH_MAX + 32], f2[PATH_MAX + 32], line[3 * PATH_MAX];
	snprintf(a, sizeof a, "%s", arb_test_tmpdir());
	snprintf(f1, sizeof f1, "%s/good.so", a);
	snprintf(f2, sizeof f2, "%s/bad_major.so", a);
	copy_file(plug("good"), f1);
	copy_file(plug("bad_major"), f2);
	unsetenv("ARB_PLUGIN_PATH");
	int found;
	char *out = capture_list(a, &found);
	/* good.so here, plus the built-in directory's plugins (the test
	 * plugins: good there is shadowed by ours) */
	ck_assert_int_ge(found, 1);
	snprintf(line, sizeof line, "good         0.1.0     ABI 1.%d  slot ffn      %s\n"
		 "             test plugin: good\n", ARB_ABI_MINOR, f1);
	ck_assert_msg(strstr(out, line), "%s", out);
	snprintf(line, sizeof line, "refused   %s\n          refusing plugin %s: "
		 "built for ABI 2.0, arbcore provides 1.%d", f2, f2, ARB_ABI_MINOR);
	ck_assert_msg(strstr(out, line), "%s", out);
	snprintf(line, sizeof line, "shadowed  %s/good.so (an earlier directory "
		 "provides 'good')", arb_plugin_builtin_dir());
	ck_assert_msg(strstr(out, line), "%s", out);
	free(out);

	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	arb_error err = { 0 };
	ck_assert_int_eq(arb_plugin_help("good", a, f, &err), ARB_OK);
	fclose(f);
	ck_assert_msg(strstr(buf, "good 0.1.0 -- test plugin: good\n"), "%s", buf);
	char abi[64];
	snprintf(abi, sizeof abi, "license MIT, slot ffn, ABI 1.%d", ARB_ABI_MINOR);
	ck_assert_msg(strstr(buf, abi), "%s", buf);
	ck_assert_msg(strstr(buf, "  level            int      default \"10\"  range [1, 100]\n"
				  "      how much (test key with a range)\n"), "%s", buf);
	ck_assert_msg(strstr(buf, "  mode             enum     default \"fast\"  one of fast|exact\n"),
		      "%s", buf);
	ck_assert_msg(strstr(buf, "  name             string   required\n"), "%s", buf);
	free(buf);
}
END_TEST

/* ------------------------------------------ config section + create() */
static const arb_conf *g_conf;

static void t_log(const arb_host *h, int level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
}

static int t_set_error(arb_error *err, int code, const char *fmt, ...)
{
	if (!err) return code;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof err->msg, fmt, ap);
	va_end(ap);
	err->code = code;
	return code;
}

static arb_host test_host(void)
{
	arb_host h;
	memset(&h, 0, sizeof h);
	h.abi_version = ARB_ABI_VERSION;
	h.struct_size = sizeof h;
	h.log = t_log;
	h.set_error = t_set_error;
	h.conf_int = arb_conf_int;
	h.conf_float = arb_conf_float;
	h.conf_bool = arb_conf_bool;
	h.conf_str = arb_conf_str;
	h.conf_int_list = arb_conf_int_list;
	return h;
}

static arb_cfg *load_text(const char *text, char *path, size_t cap)
{
	snprintf(path, cap, "%s/p.ini", arb_test_tmpdir());
	FILE *f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
	arb_cfg *cfg;
	arb_error err = { 0 };
	ck_assert_msg(arb_cfg_load(&cfg, path, NULL, &err) == ARB_OK, "%s", err.msg);
	return cfg;
}

START_TEST(test_section_against_schema)
{
	arb_loaded_plugin p;
	arb_error err = { 0 };
	char path[PATH_MAX], want[2 * PATH_MAX];
	ck_assert_int_eq(arb_plugin_open_file(plug("good"), "good", &p, &err), ARB_OK);
	const arb_conf_key *s = p.desc->schema;

	arb_cfg *cfg = load_text("[run]\nseed = 3\n\n[good]\nname = a\nlevle = 5\n",
				 path, sizeof path);
	ck_assert_int_eq(arb_cfg_validate_section(cfg, "good", s, &err), ARB_ERR_CONFIG);
	snprintf(want, sizeof want, "%s:6: [good] levle: unknown key (did you mean "
		 "'level'?)", path);
	ck_assert_str_eq(err.msg, want);
	arb_cfg_free(cfg);

	cfg = load_text("[good:two]\nname = a\nlevel = 101\n", path, sizeof path);
	ck_assert_int_eq(arb_cfg_validate_section(cfg, "good:two", s, &err),
			 ARB_ERR_CONFIG);
	snprintf(want, sizeof want, "%s:3: [good:two] level: 101 is out of range "
		 "[1, 100]", path);
	ck_assert_str_eq(err.msg, want);
	arb_cfg_free(cfg);

	cfg = load_text("[model]\n[good]\nlevel = 4\nmode = exact\n", path, sizeof path);
	ck_assert_int_eq(arb_cfg_validate_section(cfg, "good", s, &err), ARB_ERR_CONFIG);
	snprintf(want, sizeof want, "%s:2: [good] name: missing required key "
		 "(string: required test string)", path);
	ck_assert_str_eq(err.msg, want);
	arb_cfg_free(cfg);

	cfg = load_text("[good]\nname = x\nmode = exakt\n", path, sizeof path);
	ck_assert_int_eq(arb_cfg_validate_section(cfg, "good", s, &err), ARB_ERR_CONFIG);
	snprintf(want, sizeof want, "%s:3: [good] mode: 'exakt' is not one of "
		 "fast|exact (did you mean 'exact'?)", path);
	ck_assert_str_eq(err.msg, want);
	arb_cfg_free(cfg);
	arb_plugin_close(&p);
}
END_TEST

START_TEST(test_create_failure_surfaces)
{
	arb_loaded_plugin p;
	arb_error err = { 0 };
	char path[PATH_MAX];
	ck_assert_int_eq(arb_plugin_open_file(plug("good"), "good", &p, &err), ARB_OK);
	arb_host host = test_host();

	arb_cfg *cfg = load_text("[good]\nname = n\nlevel = 13\n", path, sizeof path);
	ck_assert_int_eq(arb_cfg_validate_section(cfg, "good", p.desc->schema, &err),
			 ARB_OK);
	g_conf = arb_cfg_section(cfg, "good");
	ck_assert_ptr_nonnull(g_conf);
	ck_assert_int_eq(arb_conf_int(g_conf, "level"), 13);
	ck_assert_str_eq(arb_conf_str(g_conf, "mode"), "fast");   /* default */
	void *self = NULL;
	ck_assert_int_eq(p.desc->create(&host, g_conf, "good", &self, &err),
			 ARB_ERR_PLUGIN);
	ck_assert_ptr_null(self);
	ck_assert_str_eq(err.msg, "good[good]: level 13 is refused on purpose (test "
			 "of the create failure path)");
	arb_cfg_free(cfg);

	/* the same plugin creates fine with another level */
	cfg = load_text("[good]\nname = n\nlevel = 12\n", path, sizeof path);
	ck_assert_int_eq(arb_cfg_validate_section(cfg, "good", p.desc->schema, &err),
			 ARB_OK);
	ck_assert_int_eq(p.desc->create(&host, arb_cfg_section(cfg, "good"), "good",
					&self, &err), ARB_OK);
	ck_assert_ptr_nonnull(self);
	p.desc->destroy(self);
	p.desc->destroy(NULL);
	arb_cfg_free(cfg);
	arb_plugin_close(&p);
}
END_TEST

/* a validated section keeps its own copy of the schema: it can still be
 * read and dumped after the plugin is unloaded */
START_TEST(test_conf_outlives_plugin)
{
	arb_loaded_plugin p;
	arb_error err = { 0 };
	char path[PATH_MAX];
	ck_assert_int_eq(arb_plugin_open_file(plug("good"), "good", &p, &err), ARB_OK);
	arb_cfg *cfg = load_text("[good]\nname = kept\n", path, sizeof path);
	ck_assert_int_eq(arb_cfg_validate_section(cfg, "good", p.desc->schema, &err),
			 ARB_OK);
	arb_plugin_close(&p);
	const arb_conf *c = arb_cfg_section(cfg, "good");
	ck_assert_str_eq(arb_conf_str(c, "name"), "kept");
	ck_assert_int_eq(arb_conf_int(c, "level"), 10);
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	arb_cfg_dump(cfg, f);
	fclose(f);
	ck_assert_msg(strstr(buf, "\n[good]\n; how much (test key with a range) (int "
			     "in [1, 100], default \"10\")\nlevel = 10\n"), "%s", buf);
	ck_assert_msg(strstr(buf, "; required test string (string, required)\n"
			     "name = kept\n"), "%s", buf);
	free(buf);
	arb_cfg_free(cfg);
}
END_TEST

Suite *suite_plugin(void)
{
	Suite *s = suite_create("plugin");
	TCase *tc = tcase_create("load");
	tcase_add_test(tc, test_load_good);
	tcase_add_test(tc, test_list_and_help);
	suite_add_tcase(s, tc);
	tc = tcase_create("refusals");
	tcase_add_test(tc, test_refuse_abi);
	tcase_add_test(tc, test_refuse_struct_size);
	tcase_add_test(tc, test_refuse_signature);
	tcase_add_test(tc, test_refuse_symbol_and_null);
	tcase_add_test(tc, test_refuse_name_callback_schema);
	tcase_add_test(tc, test_refuse_dlopen);
	tcase_add_test(tc, test_refuse_not_found);
	tcase_add_test(tc, test_refuse_writable);
	suite_add_tcase(s, tc);
	tc = tcase_create("paths");
	tcase_add_test(tc, test_spaces_and_symlinks);
	tcase_add_test(tc, test_search_order);
	suite_add_tcase(s, tc);
	tc = tcase_create("config");
	tcase_add_test(tc, test_section_against_schema);
	tcase_add_test(tc, test_create_failure_surfaces);
	tcase_add_test(tc, test_conf_outlives_plugin);
	suite_add_tcase(s, tc);
	return s;
}
