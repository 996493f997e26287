/*
 * tests/check_cli.c -- the arbcore program as a user runs it: exit status
 * and messages for bad configs and usage, --dump-config round trip, train +
 * sample + audit on a tiny model, SIGTERM handling, an unusable device.
 * Runs the built binary (arb_test_build_path("arbcore")) through /bin/sh.
 */
#include <check.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "testutil.h"
#include "arb/arb.h"

static char tdir[64];
static char datap[128];

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "wb");
	ck_assert_msg(f != NULL, "cannot create %s", path);
	fputs(text, f);
	fclose(f);
}

static void setup(void)
{
	snprintf(tdir, sizeof tdir, "%s", arb_test_tmpdir());
	snprintf(datap, sizeof datap, "%s/text.txt", tdir);
	FILE *f = fopen(datap, "wb");
	ck_assert_ptr_nonnull(f);
	static const char *w[] = { "to ", "be ", "or ", "not ", "that ", "is ",
				   "the ", "question.\n", "Whether ", "'tis " };
	uint64_t s = 3;
	for (int i = 0; i < 5000; i++) {
		s = s * 6364136223846793005ull + 1442695040888963407ull;
		fputs(w[(s >> 33) % 10], f);
	}
	fclose(f);
}

static void teardown(void)
{
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tdir);
	if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", tdir);
}

/* run `arbcore ARGS` (stderr into the same capture unless split); returns
 * the exit status; output in *out (caller frees) */
static int run(char **out, size_t *outlen, const char *fmt, ...)
	ARB_PRINTF(3, 4);
static int run(char **out, size_t *outlen, const char *fmt, ...)
{
	char args[4096], cmd[8192];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(args, sizeof args, fmt, ap);
	va_end(ap);
	snprintf(cmd, sizeof cmd, "%s %s", arb_test_build_path("arbcore"), args);
	FILE *p = popen(cmd, "r");
	ck_assert_msg(p != NULL, "popen failed");
	size_t cap = 1 << 16, n = 0;
	char *buf = malloc(cap + 1);
	size_t got;
	while ((got = fread(buf + n, 1, cap - n, p)) > 0) {
		n += got;
		if (n == cap) {
			cap *= 2;
			buf = realloc(buf, cap + 1);
		}
	}
	buf[n] = 0;
	int st = pclose(p);
	if (out) *out = buf;
	else free(buf);
	if (outlen) *outlen = n;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int count_lines(const char *s)
{
	int n = 0;
	for (; *s; s++) n += *s == '\n';
	return n;
}

/* a config whose line `line` is wrong: exit 2, one line "arbcore: FILE:LINE:" */
static void expect_config_error(const char *name, const char *text, int line,
				const char *word)
{
	char path[256], want[300];
	snprintf(path, sizeof path, "%s/%s.ini", tdir, name);
	write_file(path, text);
	char *out;
	int rc = run(&out, NULL, "-c %s --set run.dir=%s/never 2>&1", path, tdir);
	ck_assert_msg(rc == 2, "%s: exit %d, output: %.400s", name, rc, out);
	snprintf(want, sizeof want, "arbcore: %s:%d: ", path, line);
	ck_assert_msg(strncmp(out, want, strlen(want)) == 0,
		      "%s: want prefix '%s', got: %.400s", name, want, out);
	ck_assert_msg(strstr(out, word), "%s: message lacks '%s': %.400s", name, word, out);
	ck_assert_msg(count_lines(out) == 1, "%s: not one line: %.400s", name, out);
	free(out);
	/* nothing was run */
	struct stat sb;
	snprintf(path, sizeof path, "%s/never", tdir);
	ck_assert_msg(stat(path, &sb) != 0, "%s: run directory was created", name);
}

START_TEST(test_config_errors)
{
	expect_config_error("unknown_key", "[model]\nd_model = 64\nbogus_key = 1\n",
			    3, "bogus_key");
	expect_config_error("bad_value", "[run]\nseed = 4\n[train]\nbatch = abc\n",
			    4, "batch");
	expect_config_error("range", "[train]\nbatch = 0\n", 2, "batch");
	expect_config_error("section", "[run]\nseed = 1\n[trian]\nbatch = 4\n", 3,
			    "trian");
	char *big = malloc(5000);
	strcpy(big, "[data]\npath = ");
	size_t l = strlen(big);
	memset(big + l, 'a', 3000);
	strcpy(big + l + 3000, "\n");
	expect_config_error("long_line", big, 2, "long");
	free(big);

	/* a bad --set and usage errors: exit 2, one line */
	char *out;
	int rc = run(&out, NULL, "--set train.batch=-3 --dump-config 2>&1");
	ck_assert_msg(rc == 2 && strncmp(out, "arbcore: ", 9) == 0, "%d %.400s", rc, out);
	free(out);
	rc = run(&out, NULL, "frobnicate 2>&1");
	ck_assert_msg(rc == 2 && strstr(out, "unknown verb"), "%d %.400s", rc, out);
	free(out);
	rc = run(&out, NULL, "--no-such-option 2>&1");
	ck_assert_msg(rc == 2 && strstr(out, "--no-such-option"), "%d %.400s", rc, out);
	free(out);
	rc = run(&out, NULL, "sample --len many 2>&1");
	ck_assert_msg(rc == 2 && strstr(out, "--len"), "%d %.400s", rc, out);
	free(out);
	rc = run(&out, NULL, "-c %s/missing.ini 2>&1", tdir);
	ck_assert_msg(rc != 0 && strstr(out, "missing.ini"), "%d %.400s", rc, out);
	free(out);
	/* help texts */
	rc = run(&out, NULL, "--help");
	ck_assert_msg(rc == 0 && strstr(out, "sample") && strstr(out, "--set"), "%.400s", out);
	free(out);
	rc = run(&out, NULL, "--help-config");
	ck_assert_msg(rc == 0 && strstr(out, "d_model") && strstr(out, "eval_interval"),
		      "%.400s", out);
	free(out);
	rc = run(&out, NULL, "--version");
	ck_assert_msg(rc == 0 && strncmp(out, "arbcore ", 8) == 0, "%.400s", out);
	free(out);
}
END_TEST

/* drop the "; read from FILE" comment line, which names the source */
static void strip_source(char *s)
{
	char *p = strstr(s, "; read from ");
	if (!p) return;
	char *e = strchr(p, '\n');
	if (!e) {
		*p = 0;
		return;
	}
	memmove(p, e + 1, strlen(e + 1) + 1);
}

START_TEST(test_dump_config_reparses)
{
	char p1[256], p2[256], p3[256];
	snprintf(p1, sizeof p1, "%s/in.ini", tdir);
	write_file(p1, "; a comment\n[model]\nd_model = 48\nheads = 3\n"
		   "[train]\nbatch = 5\n");
	char *a, *b;
	int rc = run(&a, NULL, "-c %s --set schedule.threshold=9 "
		     "--set 'data.path=%s' --dump-config", p1, datap);
	ck_assert_int_eq(rc, 0);
	ck_assert_msg(strstr(a, "d_model = 48") && strstr(a, "threshold = 9") &&
		      strstr(a, "batch = 5"), "%s", a);
	snprintf(p2, sizeof p2, "%s/dump.ini", tdir);
	write_file(p2, a);
	rc = run(&b, NULL, "-c %s --dump-config 2>&1", p2);
	ck_assert_msg(rc == 0, "dumped config does not re-parse: %.300s", b);
	strip_source(a);
	strip_source(b);
	ck_assert_msg(strcmp(a, b) == 0, "dump of the dump differs");
	free(b);
	/* the stock configs parse too */
	const char *conf[] = { "conf/tiny.ini", "conf/small-gpu.ini",
			       "conf/smoke.ini", "conf/arb.ini" };
	for (int i = 0; i < 4; i++) {
		rc = run(&b, NULL, "-c %s --dump-config 2>&1", conf[i]);
		ck_assert_msg(rc == 0, "%s: %s", conf[i], b);
		snprintf(p3, sizeof p3, "%s/c%d.ini", tdir, i);
		write_file(p3, b);
		free(b);
		rc = run(&b, NULL, "-c %s --dump-config 2>&1", p3);
		ck_assert_msg(rc == 0, "%s dump: %s", conf[i], b);
		free(b);
	}
	free(a);
}
END_TEST

static void write_tiny(char *cfg, size_t cap, const char *run_name, int steps)
{
	char text[1024];
	snprintf(cfg, cap, "%s/%s.ini", tdir, run_name);
	snprintf(text, sizeof text,
		 "[run]\ndir = %s/%s\nthreads = 1\n"
		 "[data]\npath = %s\n"
		 "[model]\nd_model = 32\nlayers = 1\nheads = 2\nctx = 8\n"
		 "[train]\nbatch = 4\nsteps = %d\neval_interval = 5\n"
		 "eval_batches = 2\nckpt_interval = 5\nlog_interval = 5\n"
		 "[schedule]\nthreshold = 2\n", tdir, run_name, datap, steps);
	write_file(cfg, text);
}

START_TEST(test_train_sample_audit)
{
	char cfg[256];
	write_tiny(cfg, sizeof cfg, "t", 10);
	char *out;
	size_t n;
	int rc = run(&out, NULL, "-c %s 2>&1", cfg);
	ck_assert_msg(rc == 0, "train: %.400s", out);
	ck_assert_msg(strstr(out, "step 10/10 | loss ") && strstr(out, " bpb") &&
		      strstr(out, "B/s") && strstr(out, "flips") && strstr(out, "ETA"),
		      "progress line: %.400s", out);
	ck_assert_msg(strstr(out, "val loss"), "%.400s", out);
	free(out);
	/* second invocation resumes, trains to 15 */
	rc = run(&out, NULL, "-c %s --set train.steps=15 2>&1", cfg);
	ck_assert_msg(rc == 0 && strstr(out, "resuming from") &&
		      strstr(out, "at step 10"), "resume: %.400s", out);
	free(out);

	/* sample: the prompt, then exactly --len bytes, then a newline */
	rc = run(&out, &n, "-c %s sample --prompt abc --len 50 --seed 3", cfg);
	ck_assert_msg(rc == 0, "sample: %.400s", out);
	ck_assert_uint_eq(n, 3 + 50 + 1);
	ck_assert_int_eq(memcmp(out, "abc", 3), 0);
	ck_assert_int_eq(out[n - 1], '\n');
	char first[64];
	memcpy(first, out, 54);
	free(out);
	/* same seed -> same text; explicit --ckpt works */
	rc = run(&out, &n, "sample --ckpt %s/t/best --prompt abc --len 50 --seed 3",
		 tdir);
	ck_assert_int_eq(rc, 0);
	ck_assert_uint_eq(n, 54);
	ck_assert_int_eq(memcmp(out, first, 54), 0);
	free(out);
	rc = run(&out, &n, "-c %s sample --prompt x --len 7 --temperature 0", cfg);
	ck_assert_msg(rc == 0 && n == 1 + 7 + 1, "greedy: %d %zu %.400s", rc, n, out);
	free(out);
	rc = run(&out, NULL, "sample --ckpt %s/nothing 2>&1", tdir);
	ck_assert_msg(rc == 1 && strncmp(out, "arbcore: ", 9) == 0 &&
		      strstr(out, "nothing"), "%.400s", out);
	free(out);

	/* audit of the config and of the checkpoint: float state 0 */
	rc = run(&out, NULL, "-c %s audit 2>&1", cfg);
	ck_assert_msg(rc == 0, "audit: %.400s", out);
	ck_assert_msg(strstr(out, "float state: 0 bytes"), "%.400s", out);
	ck_assert_msg(strstr(out, "every weight is in {-1, 0, +1}"), "%.400s", out);
	free(out);
	rc = run(&out, NULL, "audit --ckpt %s/t/final 2>&1", tdir);
	ck_assert_msg(rc == 0 && strstr(out, "float state: 0 bytes"), "%.400s", out);
	free(out);

	/* smoke: first call and steady state for fwd, bwd, update */
	rc = run(&out, NULL, "-c %s smoke 2>&1", cfg);
	ck_assert_msg(rc == 0 && strstr(out, "forward") && strstr(out, "backward") &&
		      strstr(out, "update") && strstr(out, "steady"), "%.400s", out);
	free(out);

	/* resume = false over a run with checkpoints: refused, exit 1 */
	rc = run(&out, NULL, "-c %s --set run.resume=false 2>&1", cfg);
	ck_assert_msg(rc == 1 && strstr(out, "refusing"), "%d %.400s", rc, out);
	free(out);
}
END_TEST

START_TEST(test_sigterm_saves_latest)
{
	char cfg[256], csv[256], latest[256];
	write_tiny(cfg, sizeof cfg, "s", 1000000);
	snprintf(csv, sizeof csv, "%s/s/metrics.csv", tdir);
	snprintf(latest, sizeof latest, "%s/s/latest", tdir);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		if (!freopen("/dev/null", "w", stdout)) _exit(99);
		execl(arb_test_build_path("arbcore"), "arbcore", "-c", cfg,
		      "--set", "train.ckpt_interval=0", "--set",
		      "train.eval_interval=0", (char *)NULL);
		_exit(98);
	}
	/* wait until training is under way (metrics rows appear) */
	struct stat sb;
	int ready = 0;
	for (int i = 0; i < 400 && !ready; i++) {
		usleep(25000);
		ready = stat(csv, &sb) == 0 && sb.st_size > 120;
	}
	ck_assert_msg(ready, "training did not start");
	ck_assert_msg(stat(latest, &sb) != 0, "latest written before the signal");
	kill(pid, SIGTERM);
	int st;
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert_msg(WIFEXITED(st), "killed by signal %d", WTERMSIG(st));
	ck_assert_int_eq(WEXITSTATUS(st), 143);
	ck_assert_msg(stat(latest, &sb) == 0, "no latest after SIGTERM");
}
END_TEST

START_TEST(test_runtime_errors)
{
	char cfg[256];
	write_tiny(cfg, sizeof cfg, "g", 2);
	char *out;
	/* a missing data file: exit 1, one line naming it, no run directory */
	int rc = run(&out, NULL, "-c %s --set data.path=%s/absent.txt 2>&1", cfg, tdir);
	ck_assert_msg(rc == 1 && strncmp(out, "arbcore: ", 9) == 0 &&
		      strstr(out, "absent.txt") && count_lines(out) == 1, "%d %.400s",
		      rc, out);
	free(out);
	struct stat sb;
	char rd[256];
	snprintf(rd, sizeof rd, "%s/g", tdir);
	ck_assert_msg(stat(rd, &sb) != 0, "run directory made for a failed run");
	if (arb_test_gpu_available()) return; /* only meaningful without a GPU */
	rc = run(&out, NULL, "-c %s --set run.device=cuda 2>&1", cfg);
	ck_assert_msg(rc == 1 && strncmp(out, "arbcore: ", 9) == 0 &&
		      strstr(out, "CUDA") && count_lines(out) == 1, "%d %.400s", rc, out);
	free(out);
}
END_TEST

Suite *suite_cli(void)
{
	Suite *s = suite_create("cli");
	TCase *tc = tcase_create("cli");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_config_errors);
	tcase_add_test(tc, test_dump_config_reparses);
	tcase_add_test(tc, test_train_sample_audit);
	tcase_add_test(tc, test_sigterm_saves_latest);
	tcase_add_test(tc, test_runtime_errors);
	suite_add_tcase(s, tc);
	return s;
}
