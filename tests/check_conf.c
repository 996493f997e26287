/*
 * tests/check_conf.c -- the ready configurations in conf/ stay valid.
 *
 *   load      every conf/<name>.ini parses through the real config parser
 *             (arb_cfg_load: core sections validated) and each plugin
 *             section is validated against the schema of the plugin this
 *             build made (arb_plugin_open in build/plugins, then
 *             arb_cfg_validate_section): a stale or misspelled key in a
 *             conf file, or a section whose plugin was not built, fails
 *             here. A [graph] section must come after the [vq:<inst>]
 *             section whose codes it reads (file order is run order).
 *   stale     the same check refuses a plugin section with a key its
 *             schema lacks (so the test above can fail).
 *   arb-tiny  conf/arb-tiny.ini builds its model (moe + vq + graph) on the
 *             CPU backend and runs 2 training steps with a finite loss
 *             (batch 2 instead of 16 to stay fast).
 *
 * Runs from the repository root (as `make test` does).
 */
#include <check.h>
#include <glob.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core.h"
#include "model.h"
#include "testutil.h"

/* validate every plugin section of cfg against its built plugin; 0 on
 * success, else the message in err */
static arb_status validate_plugins(arb_cfg *cfg, const char *file,
				   arb_error *err)
{
	const char *pdir = arb_test_build_path("plugins");
	int n = arb_cfg_plugin_count(cfg);
	for (int i = 0; i < n; i++) {
		const char *sec = arb_cfg_plugin_section(cfg, i);
		char name[128];
		snprintf(name, sizeof name, "%s", sec);
		char *colon = strchr(name, ':');
		if (colon) *colon = 0;
		arb_loaded_plugin lp;
		memset(&lp, 0, sizeof lp);
		arb_status s = arb_plugin_open(name, pdir, &lp, err);
		if (s) return s;
		s = arb_cfg_validate_section(cfg, sec, lp.desc->schema, err);
		arb_plugin_close(&lp);
		if (s) return s;
	}
	(void)file;
	return ARB_OK;
}

/* index of plugin section `sec` in file order, -1 if absent */
static int section_index(const arb_cfg *cfg, const char *sec)
{
	int n = arb_cfg_plugin_count(cfg);
	for (int i = 0; i < n; i++)
		if (strcmp(arb_cfg_plugin_section(cfg, i), sec) == 0) return i;
	return -1;
}

START_TEST(test_conf_files_load)
{
	glob_t g;
	ck_assert_msg(glob("conf/*.ini", 0, NULL, &g) == 0,
		      "no conf/*.ini (run from the repository root)");
	int seen_arb = 0, seen_tiny = 0;
	for (size_t f = 0; f < g.gl_pathc; f++) {
		const char *path = g.gl_pathv[f];
		seen_arb += strcmp(path, "conf/arb.ini") == 0;
		seen_tiny += strcmp(path, "conf/arb-tiny.ini") == 0;
		arb_cfg *cfg = NULL;
		arb_error err = { 0 };
		arb_status s = arb_cfg_load(&cfg, path, NULL, &err);
		ck_assert_msg(s == ARB_OK, "%s: %s", path, err.msg);
		s = validate_plugins(cfg, path, &err);
		ck_assert_msg(s == ARB_OK, "%s: %s", path, err.msg);
		/* graph after the vq instance it reads */
		int n = arb_cfg_plugin_count(cfg);
		for (int i = 0; i < n; i++) {
			const char *sec = arb_cfg_plugin_section(cfg, i);
			if (strncmp(sec, "graph", 5) != 0 ||
			    (sec[5] != 0 && sec[5] != ':'))
				continue;
			const char *vq = arb_conf_str(arb_cfg_section(cfg, sec), "vq");
			char want[160];
			if (strcmp(vq, "vq") == 0) snprintf(want, sizeof want, "vq");
			else snprintf(want, sizeof want, "vq:%s", vq);
			int j = section_index(cfg, want);
			ck_assert_msg(j >= 0, "%s: [%s] reads vq.%s.codes but has no "
				      "[%s] section", path, sec, vq, want);
			ck_assert_msg(j < i, "%s: [%s] must come after [%s] (it reads "
				      "the codes published in the same forward)",
				      path, sec, want);
		}
		printf("conf: %s: %d plugin section(s) valid\n", path, n);
		arb_cfg_free(cfg);
	}
	globfree(&g);
	ck_assert_msg(seen_arb && seen_tiny, "conf/arb.ini or conf/arb-tiny.ini missing");
}
END_TEST

START_TEST(test_stale_key_refused)
{
	const char *dir = arb_test_tmpdir();
	char path[256];
	snprintf(path, sizeof path, "%s/stale.ini", dir);
	FILE *f = fopen(path, "w");
	ck_assert(f != NULL);
	fputs("[model]\nd_model = 32\nlayers = 2\nheads = 2\n"
	      "[vq:shared]\nsize = 64\ncodebook_size = 64\n", f);
	fclose(f);
	arb_cfg *cfg = NULL;
	arb_error err = { 0 };
	ck_assert_msg(arb_cfg_load(&cfg, path, NULL, &err) == ARB_OK, "%s", err.msg);
	ck_assert_int_ne(validate_plugins(cfg, path, &err), ARB_OK);
	ck_assert_msg(strstr(err.msg, "codebook_size") && strstr(err.msg, ":7:"),
		      "message should name the key and line: %s", err.msg);
	arb_cfg_free(cfg);
	remove(path);
	remove(dir);
}
END_TEST

START_TEST(test_arb_tiny_trains)
{
	char pp[4200];
	snprintf(pp, sizeof pp, "run.plugin_path=%s", arb_test_build_path("plugins"));
	const char *ov[] = { pp, "run.device=cpu", NULL };
	arb_cfg *cfg = NULL;
	arb_error err = { 0 };
	ck_assert_msg(arb_cfg_load(&cfg, "conf/arb-tiny.ini", ov, &err) == ARB_OK,
		      "%s", err.msg);
	/* moe, vq:shared, graph, moe:graph_experts, vq:kg */
	ck_assert_int_eq(arb_cfg_plugin_count(cfg), 5);
	const int B = 2;
	int T = (int)arb_conf_int(arb_cfg_section(cfg, "model"), "ctx");
	arb_model *m = NULL;
	arb_status s = arb_model_create(&m, cfg, arb_backend_cpu(), B, &err);
	ck_assert_msg(s == ARB_OK, "arb-tiny model: %s", err.msg);
	const arb_sched_cfg *sc = arb_model_sched(m);
	size_t S = 3 * (size_t)(T + 1);
	uint8_t *bytes = malloc((size_t)B * S);
	ck_assert(bytes != NULL);
	static const char text[] =
		"Now is the winter of our discontent made glorious summer by "
		"this sun of York; and all the clouds that lour'd upon our "
		"house in the deep bosom of the ocean buried. ";
	for (uint64_t t = 0; t < 2; t++) {
		for (size_t i = 0; i < (size_t)B * S; i++)
			bytes[i] = (uint8_t)text[(i * 7 + t * 31 + i / S) % (sizeof text - 1)];
		double loss = NAN;
		s = arb_model_forward(m, bytes, B, 1, &loss, &err);
		ck_assert_msg(s == ARB_OK, "forward %d: %s", (int)t, err.msg);
		ck_assert_msg(isfinite(loss) && loss > 0, "step %d: loss %g",
			      (int)t, loss);
		arb_vote v;
		arb_sched_vote(sc, t, loss, &v);
		s = arb_model_backward(m, &v, &err);
		ck_assert_msg(s == ARB_OK, "backward %d: %s", (int)t, err.msg);
		arb_step_stats st;
		s = arb_model_step(m, t, &st, &err);
		ck_assert_msg(s == ARB_OK, "step %d: %s", (int)t, err.msg);
		char met[2048];
		arb_model_metrics(m, met, sizeof met);
		printf("conf: arb-tiny step %d: loss %.4f | %.160s\n", (int)t,
		       loss, met);
		ck_assert_msg(strstr(met, "vq.shared.") && strstr(met, "vq.kg.") &&
			      strstr(met, "graph") && strstr(met, "moe") &&
			      strstr(met, "graph_experts_aux="),
			      "metrics lack a component: %s", met);
	}
	free(bytes);
	arb_model_free(m);
	arb_cfg_free(cfg);
}
END_TEST

Suite *suite_conf(void)
{
	Suite *s = suite_create("conf");
	TCase *tc = tcase_create("conf");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_conf_files_load);
	tcase_add_test(tc, test_stale_key_refused);
	tcase_add_test(tc, test_arb_tiny_trains);
	suite_add_tcase(s, tc);
	return s;
}
