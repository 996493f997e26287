/*
 * core/main.c -- the arbcore program: command line, verbs, exit status.
 *
 *   arbcore [-c FILE] [--set section.key=value ...] [VERB] [verb options]
 *
 * Verbs: train (default), sample, audit, smoke, plugins. Global options:
 * --dump-config, --help-config, --help, --version.
 * Exit status: 0 ok; 2 usage or config error (nothing is run); 1 any other
 * error; 130/143 training stopped by SIGINT/SIGTERM (state saved). Every
 * error is one line on stderr prefixed "arbcore: ".
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "train.h"

#define ARBCORE_VERSION "0.1.0"

static void usage(FILE *f)
{
	fputs(
"usage: arbcore [-c FILE] [--set section.key=value ...] [VERB] [options]\n"
"\n"
"Trains true-ternary byte-level language models (trits packed 5 per byte,\n"
"int8 exponents, int8 sign-vote accumulators; no float training state).\n"
"\n"
"verbs:\n"
"  train                  train per the config (default); resumes from\n"
"                         <run.dir>/latest when run.resume = true\n"
"  sample [options]       generate text from a checkpoint\n"
"      --ckpt PATH        checkpoint (default <run.dir>/best, else latest)\n"
"      --prompt TEXT      text to continue (default: a newline)\n"
"      --len N            bytes to generate (default 256)\n"
"      --temperature X    0 = greedy (default 0.8)\n"
"      --top-k K          0 = all 256 bytes (default 0)\n"
"      --seed S           sampling seed (default run.seed)\n"
"  audit [--ckpt PATH]    ternary audit of the model of the config (or of a\n"
"                         checkpoint): weights, bytes per dtype, bytes per\n"
"                         weight, persistent float bytes (must be 0)\n"
"  smoke                  one forward/backward/update: first-call and\n"
"                         steady-state timings\n"
"  plugins [--help NAME]  list plugins found (and refused, with the reason),\n"
"                         or print one plugin's config schema\n"
"\n"
"options:\n"
"  -c, --config FILE      INI file (default: built-in defaults)\n"
"  --set section.key=value  override a key (repeatable; beats the file)\n"
"  --dump-config          print the resolved config and exit\n"
"  --help-config          print every core config key and exit\n"
"  --help                 this text;  --version  version and ABI\n"
"\n"
"exit status: 0 ok, 1 error, 2 usage or config error, 130/143 stopped by\n"
"SIGINT/SIGTERM after saving <run.dir>/latest\n", f);
}

static int fail(const arb_error *e)
{
	fprintf(stderr, "arbcore: %s\n", e->msg[0] ? e->msg : "unknown error");
	return e->code == ARB_ERR_CONFIG ? 2 : 1;
}

static int usage_error(const char *fmt, const char *arg)
{
	fprintf(stderr, "arbcore: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, " (see arbcore --help)\n");
	return 2;
}

/* strict number parsing for verb options */
static int parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
	char *e;
	errno = 0;
	long long v = strtoll(s, &e, 10);
	if (errno || e == s || *e || v < lo || v > hi) return -1;
	*out = v;
	return 0;
}
static int parse_f64(const char *s, double lo, double hi, double *out)
{
	char *e;
	errno = 0;
	double v = strtod(s, &e);
	if (errno || e == s || *e || !(v >= lo && v <= hi)) return -1;
	*out = v;
	return 0;
}

typedef struct opts {
	const char *config;
	const char **sets;
	int nsets;
	const char *verb;
	int dump_config, help_config, help, version;
	const char *ckpt, *prompt, *plugin_help;
	int64_t len, top_k, seed;
	int have_seed;
	double temperature;
} opts;

static int is_verb(const char *s)
{
	return !strcmp(s, "train") || !strcmp(s, "sample") ||
	       !strcmp(s, "audit") || !strcmp(s, "smoke") ||
	       !strcmp(s, "plugins");
}

/* returns -1 when parsing succeeded, else the exit status */
static int parse_args(int argc, char **argv, opts *o)
{
	o->sets = calloc((size_t)argc + 1, sizeof *o->sets);
	if (!o->sets) return 1;
	o->len = 256;
	o->temperature = 0.8;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *next = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_ARG() do { if (!next) return usage_error("option %s needs a value", a); i++; } while (0)
		if (!strcmp(a, "-c") || !strcmp(a, "--config")) {
			NEED_ARG();
			o->config = next;
		} else if (!strncmp(a, "--config=", 9)) {
			o->config = a + 9;
		} else if (!strcmp(a, "--set")) {
			NEED_ARG();
			o->sets[o->nsets++] = next;
		} else if (!strncmp(a, "--set=", 6)) {
			o->sets[o->nsets++] = a + 6;
		} else if (!strcmp(a, "--dump-config")) {
			o->dump_config = 1;
		} else if (!strcmp(a, "--help-config")) {
			o->help_config = 1;
		} else if (!strcmp(a, "--version")) {
			o->version = 1;
		} else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			if (o->verb && !strcmp(o->verb, "plugins") && next &&
			    next[0] != '-') {
				o->plugin_help = next;
				i++;
			} else {
				o->help = 1;
			}
		} else if (!strcmp(a, "--ckpt")) {
			NEED_ARG();
			o->ckpt = next;
		} else if (!strcmp(a, "--prompt")) {
			NEED_ARG();
			o->prompt = next;
		} else if (!strcmp(a, "--len")) {
			NEED_ARG();
			if (parse_i64(next, 0, 100000000, &o->len))
				return usage_error("--len: '%s' is not an integer in [0, 100000000]", next);
		} else if (!strcmp(a, "--temperature")) {
			NEED_ARG();
			if (parse_f64(next, 0, 100, &o->temperature))
				return usage_error("--temperature: '%s' is not a number in [0, 100]", next);
		} else if (!strcmp(a, "--top-k")) {
			NEED_ARG();
			if (parse_i64(next, 0, 256, &o->top_k))
				return usage_error("--top-k: '%s' is not an integer in [0, 256]", next);
		} else if (!strcmp(a, "--seed")) {
			NEED_ARG();
			if (parse_i64(next, 0, INT64_MAX, &o->seed))
				return usage_error("--seed: '%s' is not a non-negative integer", next);
			o->have_seed = 1;
		} else if (a[0] == '-' && a[1]) {
			return usage_error("unknown option '%s'", a);
		} else if (!o->verb) {
			if (!is_verb(a))
				return usage_error("unknown verb '%s' (verbs: train, sample, audit, smoke, plugins)", a);
			o->verb = a;
		} else {
			return usage_error("unexpected argument '%s'", a);
		}
#undef NEED_ARG
	}
	if (!o->verb) o->verb = "train";
	/* options that only make sense with some verbs */
	int is_sample = !strcmp(o->verb, "sample"), is_audit = !strcmp(o->verb, "audit");
	if (o->ckpt && !is_sample && !is_audit)
		return usage_error("--ckpt is an option of 'sample' and 'audit', not '%s'", o->verb);
	if (!is_sample && (o->prompt || o->have_seed || o->top_k))
		return usage_error("--prompt/--seed/--top-k are options of 'sample', not '%s'", o->verb);
	return -1;
}

/* validate plugin sections against their plugins' schemas (fills their
 * defaults for --dump-config). The validated sections point into the
 * plugins' schemas: the plugins stay open until the caller closes them
 * (lp[0..*n-1]) after the config is no longer used. */
static arb_status validate_plugins(arb_cfg *cfg, arb_loaded_plugin *lp, int *n,
				   arb_error *err)
{
	const char *pp = arb_conf_str(arb_cfg_section(cfg, "run"), "plugin_path");
	*n = 0;
	for (int i = 0; i < arb_cfg_plugin_count(cfg); i++) {
		const char *sec = arb_cfg_plugin_section(cfg, i);
		char name[128];
		snprintf(name, sizeof name, "%s", sec);
		char *colon = strchr(name, ':');
		if (colon) *colon = 0;
		arb_status s = arb_plugin_open(name, pp, &lp[*n], err);
		if (s) return s;
		(*n)++;
		s = arb_cfg_validate_section(cfg, sec, lp[*n - 1].desc->schema, err);
		if (s) return s;
	}
	return ARB_OK;
}

static arb_backend *pick_backend(const arb_cfg *cfg, arb_error *err)
{
	const arb_conf *run = arb_cfg_section(cfg, "run");
	int64_t threads = arb_conf_int(run, "threads");
#ifdef _OPENMP
	if (threads > 0) omp_set_num_threads((int)threads);
#else
	(void)threads;
#endif
	const char *dev = arb_conf_str(run, "device");
	if (!strcmp(dev, "cuda")) {
		arb_backend *be = arb_backend_cuda(err);
		if (!be && err->msg[0] == 0)
			ARB_FAIL(err, ARB_ERR_CUDA, "device = cuda: no usable CUDA backend");
		return be;
	}
	return arb_backend_cpu();
}

static int file_exists(const char *p)
{
	struct stat sb;
	return stat(p, &sb) == 0;
}

/* build a model from the config stored in a checkpoint (+ overrides) and
 * load the checkpoint into it */
static arb_status model_from_ckpt(const char *path, const char *const *sets,
				  arb_cfg **cfg_out, arb_backend **be_out,
				  arb_model **m_out, int batch, arb_error *err)
{
	char tmp[256];
	arb_status s = arb_ckpt_config_file(path, tmp, sizeof tmp, err);
	if (s) return s;
	s = arb_cfg_load(cfg_out, tmp, sets, err);
	unlink(tmp);
	if (s) {
		char msg[sizeof err->msg];
		snprintf(msg, sizeof msg, "%s", err->msg);
		return ARB_FAIL(err, s, "%s: the config stored in this checkpoint "
				"(with --set overrides) is refused: %.300s", path, msg);
	}
	*be_out = pick_backend(*cfg_out, err);
	if (!*be_out) return ARB_ERR_CUDA;
	if ((s = arb_model_create(m_out, *cfg_out, *be_out, batch, err))) return s;
	return arb_ckpt_load(*m_out, path, NULL, err);
}

static int cmd_sample(const opts *o, arb_cfg *cfg0)
{
	arb_error err = { 0 };
	char path[4096];
	const char *dir = arb_conf_str(arb_cfg_section(cfg0, "run"), "dir");
	if (o->ckpt) {
		snprintf(path, sizeof path, "%s", o->ckpt);
	} else {
		snprintf(path, sizeof path, "%s/best", dir);
		if (!file_exists(path)) snprintf(path, sizeof path, "%s/latest", dir);
		if (!file_exists(path)) {
			fprintf(stderr, "arbcore: no checkpoint to sample from: neither "
				"%s/best nor %s/latest exists (train first, or give "
				"--ckpt PATH)\n", dir, dir);
			return 1;
		}
	}
	arb_cfg *cfg = NULL;
	arb_backend *be = NULL;
	arb_model *m = NULL;
	int rc = 0;
	if (model_from_ckpt(path, o->sets, &cfg, &be, &m, 1, &err)) {
		rc = fail(&err);
		goto out;
	}
	const char *prompt = o->prompt ? o->prompt : "\n";
	size_t n = strlen(prompt), gen = (size_t)o->len;
	uint64_t seed = o->have_seed ? (uint64_t)o->seed :
		(uint64_t)arb_conf_int(arb_cfg_section(cfg, "run"), "seed");
	uint8_t *outb = malloc(n + gen + 8);
	if (!outb) {
		fprintf(stderr, "arbcore: out of memory\n");
		rc = 1;
		goto out;
	}
	size_t out_len = 0;
	if (arb_model_sample(m, (const uint8_t *)prompt, n, gen, o->temperature,
			     (int)o->top_k, seed, outb, &out_len, &err)) {
		free(outb);
		rc = fail(&err);
		goto out;
	}
	if (out_len < gen) {
		free(outb);
		fprintf(stderr, "arbcore: sampler returned %zu bytes, fewer than "
			"the %zu requested\n", out_len, gen);
		rc = 1;
		goto out;
	}
	/* the prompt as given, then exactly the generated bytes */
	fwrite(prompt, 1, n, stdout);
	fwrite(outb + out_len - gen, 1, gen, stdout);
	fputc('\n', stdout);
	free(outb);
out:
	arb_model_free(m);
	arb_cfg_free(cfg);
	return rc;
}

/* every packed byte must be a valid 5-trit code (0..242) */
static arb_status check_trits(arb_registry *r, int64_t *nbytes, arb_error *err)
{
	*nbytes = 0;
	for (int i = 0; i < r->n; i++) {
		const arb_tern *t = r->items[i];
		size_t nb = (size_t)(t->rows * t->row_bytes);
		uint8_t *h = malloc(nb + 1);
		if (!h) return ARB_FAIL(err, ARB_ERR_NOMEM, "out of memory");
		r->be->download(r->be, h, t->packed, nb);
		for (size_t k = 0; k < nb; k++) {
			if (h[k] > 242) {
				ARB_FAIL(err, ARB_ERR_FORMAT,
					 "tensor %s: packed byte %zu is %u, not a "
					 "valid 5-trit code (0..242)", t->name, k,
					 h[k]);
				free(h);
				return ARB_ERR_FORMAT;
			}
		}
		free(h);
		*nbytes += (int64_t)nb;
	}
	return ARB_OK;
}

/* counts the components' extra (non-ternary) checkpoint records */
typedef struct extra_count {
	int64_t bytes, records;
} extra_count;

static arb_status count_extra(void *ctx, const char *name, const void *data,
			      size_t bytes)
{
	extra_count *c = ctx;
	(void)name;
	(void)data;
	c->bytes += (int64_t)bytes;
	c->records++;
	return ARB_OK;
}

static int cmd_audit(const opts *o, arb_cfg *cfg0)
{
	arb_error err = { 0 };
	arb_cfg *cfg = NULL;
	arb_backend *be = NULL;
	arb_model *m = NULL;
	int rc = 0;
	if (o->ckpt) {
		if (model_from_ckpt(o->ckpt, o->sets, &cfg, &be, &m, 1, &err)) {
			rc = fail(&err);
			goto out;
		}
		printf("audit of checkpoint %s\n", o->ckpt);
	} else {
		be = pick_backend(cfg0, &err);
		if (!be || arb_model_create(&m, cfg0, be, 1, &err)) {
			rc = fail(&err);
			goto out;
		}
		printf("audit of the freshly initialized model of %s\n",
		       *arb_cfg_path(cfg0) ? arb_cfg_path(cfg0) : "the built-in defaults");
	}
	arb_registry *reg = arb_model_registry(m);
	arb_audit a;
	arb_audit_registry(reg, &a);
	arb_audit_print(&a, stdout);
	int64_t nb;
	if (check_trits(reg, &nb, &err)) {
		rc = fail(&err);
		goto out;
	}
	printf("trit check: all %lld packed bytes are valid codes: every weight "
	       "is in {-1, 0, +1}\n", (long long)nb);
	/* plugins' own state (usage counts, edge lists, ...) is not in the
	 * registry: report what they write into checkpoints */
	extra_count ec = { 0, 0 };
	arb_state_io eio = { &ec, count_extra, NULL };
	if (arb_model_save_extra(m, &eio, &err)) {
		rc = fail(&err);
		goto out;
	}
	printf("component state outside ternary tensors: %lld bytes in %lld "
	       "checkpoint records (integer state owned by plugins; indexes they "
	       "rebuild at load are not included)\n",
	       (long long)ec.bytes, (long long)ec.records);
	if (a.bytes_float != 0) {
		fprintf(stderr, "arbcore: audit failed: %lld bytes of persistent "
			"float state\n", (long long)a.bytes_float);
		rc = 1;
	}
out:
	arb_model_free(m);
	arb_cfg_free(cfg);
	return rc;
}

static int cmd_smoke(arb_cfg *cfg)
{
	arb_error err = { 0 };
	arb_backend *be = pick_backend(cfg, &err);
	if (!be) return fail(&err);
	int ctx = (int)arb_conf_int(arb_cfg_section(cfg, "model"), "ctx");
	int B = (int)arb_conf_int(arb_cfg_section(cfg, "train"), "batch");
	uint64_t seed = (uint64_t)arb_conf_int(arb_cfg_section(cfg, "run"), "seed");
	arb_data d;
	if (arb_data_load(&d, arb_cfg_section(cfg, "data"), ctx, &err))
		return fail(&err);
	arb_model *m = NULL;
	double t0 = arb_now();
	if (arb_model_create(&m, cfg, be, B, &err)) {
		arb_data_free(&d);
		return fail(&err);
	}
	double t_create = arb_now() - t0;
	uint8_t *buf = malloc((size_t)B * (size_t)d.seqlen);
	int rc = 0;
	if (!buf) {
		fprintf(stderr, "arbcore: out of memory\n");
		rc = 1;
		goto out;
	}
	const arb_sched_cfg *sc = arb_model_sched(m);
	double tf[6], tb[6], tu[6], loss[6];
	int64_t flips[6];
	for (int k = 0; k < 6; k++) {
		arb_data_train_batch(&d, seed, (uint64_t)k, B, buf);
		double a = arb_now();
		if (arb_model_forward(m, buf, B, 1, &loss[k], &err)) goto err;
		if (be->sync) be->sync(be);
		double b = arb_now();
		arb_vote v;
		arb_sched_vote(sc, (uint64_t)k, loss[k], &v);
		if (arb_model_backward(m, &v, &err)) goto err;
		if (be->sync) be->sync(be);
		double c = arb_now();
		arb_step_stats st;
		memset(&st, 0, sizeof st);
		if (arb_model_step(m, (uint64_t)k, &st, &err)) goto err;
		if (be->sync) be->sync(be);
		double e = arb_now();
		tf[k] = b - a;
		tb[k] = c - b;
		tu[k] = e - c;
		flips[k] = st.flips;
	}
	double mf = 0, mb = 0, mu = 0;
	for (int k = 1; k < 6; k++) {
		mf += tf[k] / 5;
		mb += tb[k] / 5;
		mu += tu[k] / 5;
	}
	printf("smoke: %s backend, batch %d x %d bytes, model created in %.1f ms\n",
	       be->name, B, (int)d.seqlen, t_create * 1e3);
	printf("           first call   steady (mean of next 5)\n");
	printf("forward  %10.2f ms  %10.2f ms\n", tf[0] * 1e3, mf * 1e3);
	printf("backward %10.2f ms  %10.2f ms\n", tb[0] * 1e3, mb * 1e3);
	printf("update   %10.2f ms  %10.2f ms\n", tu[0] * 1e3, mu * 1e3);
	printf("step     %10.2f ms  %10.2f ms  (%.1fk bytes/s steady)\n",
	       (tf[0] + tb[0] + tu[0]) * 1e3, (mf + mb + mu) * 1e3,
	       (double)B * ctx * 3 / (mf + mb + mu) / 1e3);
	printf("loss     %.4f (first) .. %.4f (last); flips first %lld, last %lld\n",
	       loss[0], loss[5], (long long)flips[0], (long long)flips[5]);
	for (int k = 0; k < 6; k++)
		if (!isfinite(loss[k])) {
			fprintf(stderr, "arbcore: smoke: non-finite loss at call %d\n",
				k + 1);
			rc = 1;
		}
	goto out;
err:
	rc = fail(&err);
out:
	free(buf);
	arb_model_free(m);
	arb_data_free(&d);
	return rc;
}

int main(int argc, char **argv)
{
	opts o;
	memset(&o, 0, sizeof o);
	int rc = parse_args(argc, argv, &o);
	if (rc >= 0) goto done;
	rc = 0;
	if (o.help) {
		usage(stdout);
		goto done;
	}
	if (o.version) {
		printf("arbcore %s (plugin ABI %d.%d, build %s, %s)\n",
		       ARBCORE_VERSION, ARB_ABI_MAJOR, ARB_ABI_MINOR,
		       ARB_BUILD_SIGNATURE,
#ifdef ARB_HAVE_CUDA
		       "CUDA"
#else
		       "CPU only"
#endif
		);
		goto done;
	}
	if (o.help_config) {
		arb_schema_print("run", arb_schema_run, stdout);
		arb_schema_print("data", arb_schema_data, stdout);
		arb_schema_print("model", arb_schema_model, stdout);
		arb_schema_print("train", arb_schema_train, stdout);
		arb_schema_print("schedule", arb_schema_schedule, stdout);
		goto done;
	}
	arb_error err = { 0 };
	arb_cfg *cfg = NULL;
	if (arb_cfg_load(&cfg, o.config, o.sets, &err)) {
		rc = fail(&err);
		goto done;
	}
	const char *pp = arb_conf_str(arb_cfg_section(cfg, "run"), "plugin_path");
	if (o.dump_config) {
		int np = arb_cfg_plugin_count(cfg), nopen = 0;
		arb_loaded_plugin *lp = calloc((size_t)np + 1, sizeof *lp);
		if (!lp) {
			fprintf(stderr, "arbcore: out of memory\n");
			rc = 1;
		} else if (validate_plugins(cfg, lp, &nopen, &err)) {
			rc = fail(&err);
		} else {
			arb_cfg_dump(cfg, stdout);
		}
		/* the config refers to the plugins' schemas: free it first */
		arb_cfg_free(cfg);
		cfg = NULL;
		for (int i = 0; i < nopen; i++) arb_plugin_close(&lp[i]);
		free(lp);
	} else if (!strcmp(o.verb, "plugins")) {
		if (o.plugin_help) {
			if (arb_plugin_help(o.plugin_help, pp, stdout, &err))
				rc = fail(&err);
		} else {
			arb_plugin_list(pp, stdout);
		}
	} else if (!strcmp(o.verb, "sample")) {
		rc = cmd_sample(&o, cfg);
	} else if (!strcmp(o.verb, "audit")) {
		rc = cmd_audit(&o, cfg);
	} else if (!strcmp(o.verb, "smoke")) {
		rc = cmd_smoke(cfg);
	} else {
		arb_backend *be = pick_backend(cfg, &err);
		if (!be) {
			rc = fail(&err);
		} else {
			int code = 1;
			if (arb_train(cfg, be, &code, &err)) rc = fail(&err);
			else rc = code;
		}
	}
	arb_cfg_free(cfg);
done:
	free(o.sets);
	fflush(stdout);
	return rc;
}
