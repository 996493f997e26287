/*
 * core/train.c -- the training loop of `arbcore train`.
 *
 * Per step t (0-based; the checkpoint's step counts completed steps):
 *   B windows of step t (data.c) -> arb_model_forward(training) -> loss;
 *   a non-finite loss skips the update (no backward, no step: the state is
 *   untouched) and is counted; otherwise arb_sched_vote -> backward -> step.
 * Every log_interval steps one progress line and one metrics.csv row; every
 * eval_interval steps (and at the end) validation on fixed windows, `best`
 * when it improves; `latest` every ckpt_interval steps; at the end (steps
 * done or time_limit reached) a final eval, `final` and `latest`.
 * SIGINT/SIGTERM finish the current step, write `latest` and return exit
 * code 130/143.
 *
 * Resume: with [run] resume = true and <dir>/latest present the run
 * continues from it; since data windows and every random decision are pure
 * functions of (seed, step, ...), N steps + resume + N steps is bit-identical
 * to 2N steps. metrics.csv rows after the resumed step (written by the run
 * that was cut short) are dropped so the file describes one trajectory.
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "train.h"

int64_t arb_train_debug_nan_step = -1;
int arb_train_quiet = 0;

static volatile sig_atomic_t stop_signal;
/* first signal: finish the step, save, exit; a second one ends the process
 * at once (the checkpoints on disk stay intact: writes are atomic) */
static void on_signal(int s)
{
	if (stop_signal) {
		signal(s, SIG_DFL);
		raise(s);
		return;
	}
	stop_signal = s;
}

static int exists(const char *dir, const char *name)
{
	char p[4096];
	struct stat sb;
	snprintf(p, sizeof p, "%s/%s", dir, name);
	return stat(p, &sb) == 0;
}

static void say(const char *fmt, ...) ARB_PRINTF(1, 2);
static void say(const char *fmt, ...)
{
	if (arb_train_quiet) return;
	va_list ap;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fflush(stdout);
}

static void fmt_rate(char *buf, size_t cap, double v)
{
	if (v >= 1e6) snprintf(buf, cap, "%.1fM", v / 1e6);
	else if (v >= 1e3) snprintf(buf, cap, "%.1fk", v / 1e3);
	else snprintf(buf, cap, "%.0f", v);
}

static void fmt_dur(char *buf, size_t cap, double s)
{
	if (!(s >= 0)) s = 0;
	long long x = (long long)(s + 0.5);
	if (x >= 3600) snprintf(buf, cap, "%lldh%02lldm", x / 3600, x / 60 % 60);
	else if (x >= 60) snprintf(buf, cap, "%lldm%02llds", x / 60, x % 60);
	else snprintf(buf, cap, "%llds", x);
}

/* mean validation loss over the fixed windows */
static arb_status evaluate(arb_model *m, const arb_data *d, int nb, int B,
			   uint8_t *buf, double *out, arb_error *err)
{
	double sum = 0;
	for (int k = 0; k < nb; k++) {
		arb_data_val_batch(d, k, nb, B, buf);
		double l;
		arb_status s = arb_model_forward(m, buf, B, 0, &l, err);
		if (s) return s;
		sum += l;
	}
	*out = sum / nb;
	return ARB_OK;
}

/* write the resolved config to <dir>/config.ini (tmp + rename) */
static arb_status write_config(const arb_cfg *cfg, const char *dir,
			       arb_error *err)
{
	char tmp[4096], fin[4096];
	snprintf(tmp, sizeof tmp, "%s/config.ini.tmp", dir);
	snprintf(fin, sizeof fin, "%s/config.ini", dir);
	FILE *f = fopen(tmp, "w");
	if (!f)
		return ARB_FAIL(err, ARB_ERR_IO, "%s: cannot create: %s", tmp,
				strerror(errno));
	arb_cfg_dump(cfg, f);
	int bad = fflush(f) != 0 || ferror(f);
	if (fclose(f) != 0) bad = 1;
	if (bad || rename(tmp, fin) != 0) {
		unlink(tmp);
		return ARB_FAIL(err, ARB_ERR_IO, "%s: write failed: %s", fin,
				strerror(errno));
	}
	return ARB_OK;
}

static const char csv_header[] =
	"step,time_s,train_loss,train_bpb,val_loss,val_bpb,flips,bytes_per_s,components\n";

/* open metrics.csv for appending; keep the header and the rows with
 * step <= keep_step (rows past it belong to a run that was cut short and
 * is being replayed) */
static arb_status open_metrics(const char *dir, int64_t keep_step, FILE **out,
			       arb_error *err)
{
	char path[4096], tmp[4096];
	snprintf(path, sizeof path, "%s/metrics.csv", dir);
	snprintf(tmp, sizeof tmp, "%s/metrics.csv.tmp", dir);
	uint8_t *old = NULL;
	size_t n = 0;
	struct stat sb;
	if (stat(path, &sb) == 0) {
		arb_status s = arb_read_file(path, &old, &n, err);
		if (s) return s;
	}
	FILE *f = fopen(tmp, "w");
	if (!f) {
		free(old);
		return ARB_FAIL(err, ARB_ERR_IO, "%s: cannot create: %s", tmp,
				strerror(errno));
	}
	fputs(csv_header, f);
	/* copy kept rows (skip the old header line) */
	size_t pos = 0;
	int first = 1;
	while (pos < n) {
		size_t e = pos;
		while (e < n && old[e] != '\n') e++;
		size_t ln = e - pos;
		if (first) {
			first = 0;
		} else if (ln > 0) {
			char num[32];
			size_t k = ln < sizeof num - 1 ? ln : sizeof num - 1;
			memcpy(num, old + pos, k);
			num[k] = 0;
			long long st = strtoll(num, NULL, 10);
			if (st <= keep_step) {
				fwrite(old + pos, 1, ln, f);
				fputc('\n', f);
			}
		}
		pos = e + 1;
	}
	free(old);
	int bad = fflush(f) != 0 || ferror(f);
	if (fclose(f) != 0) bad = 1;
	if (bad || rename(tmp, path) != 0) {
		unlink(tmp);
		return ARB_FAIL(err, ARB_ERR_IO, "%s: write failed: %s", path,
				strerror(errno));
	}
	*out = fopen(path, "a");
	if (!*out)
		return ARB_FAIL(err, ARB_ERR_IO, "%s: cannot open: %s", path,
				strerror(errno));
	return ARB_OK;
}

/* a quoted CSV field (quotes doubled) and the end of the row */
static void csv_text(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"') fputc('"', f);
		if (*s != '\n' && *s != '\r') fputc(*s, f);
	}
	fputs("\"\n", f);
}

static void csv_num(FILE *f, double v, int have)
{
	if (have && isfinite(v)) fprintf(f, ",%.6g", v);
	else fputc(',', f);
}

arb_status arb_train(const arb_cfg *cfg, arb_backend *be, int *exit_code,
		     arb_error *err)
{
	const arb_conf *run = arb_cfg_section(cfg, "run");
	const arb_conf *dsec = arb_cfg_section(cfg, "data");
	const arb_conf *msec = arb_cfg_section(cfg, "model");
	const arb_conf *tsec = arb_cfg_section(cfg, "train");
	const char *dir = arb_conf_str(run, "dir");
	uint64_t seed = (uint64_t)arb_conf_int(run, "seed");
	int resume = arb_conf_bool(run, "resume");
	int ctx = (int)arb_conf_int(msec, "ctx");
	int B = (int)arb_conf_int(tsec, "batch");
	int64_t steps = arb_conf_int(tsec, "steps");
	double time_limit = arb_conf_float(tsec, "time_limit");
	int64_t eval_interval = arb_conf_int(tsec, "eval_interval");
	int eval_batches = (int)arb_conf_int(tsec, "eval_batches");
	int64_t ckpt_interval = arb_conf_int(tsec, "ckpt_interval");
	int64_t log_interval = arb_conf_int(tsec, "log_interval");
	*exit_code = 1;

	arb_status s;
	arb_data data;
	arb_model *m = NULL;
	uint8_t *buf = NULL;
	FILE *csv = NULL;
	struct sigaction sa, old_int, old_term;
	int handlers = 0;
	memset(&data, 0, sizeof data);

	if (!*dir)
		return ARB_FAIL(err, ARB_ERR_CONFIG, "[run] dir: must not be empty");
	int have_latest = exists(dir, "latest");
	if (!resume && (have_latest || exists(dir, "best") || exists(dir, "final")))
		return ARB_FAIL(err, ARB_ERR_INVALID,
				"run directory %s already holds checkpoints and "
				"[run] resume = false: refusing to overwrite them; "
				"use another run.dir, remove the directory, or set "
				"run.resume = true to continue", dir);
	if (resume && !have_latest && (exists(dir, "best") || exists(dir, "final")))
		return ARB_FAIL(err, ARB_ERR_INVALID,
				"run directory %s has checkpoints but no 'latest' to "
				"resume from: refusing to overwrite them; use another "
				"run.dir or remove the directory", dir);

	if ((s = arb_data_load(&data, dsec, ctx, err))) return s;
	if ((s = arb_model_create(&m, cfg, be, B, err))) goto out;
	/* the run directory is made only once the data and the model are
	 * known to be good */
	if ((s = arb_mkdirs(dir, err))) goto out;
	const arb_sched_cfg *sc = arb_model_sched(m);
	arb_registry *reg = arb_model_registry(m);

	arb_train_state st = { 0, INFINITY, 0, 0 };
	if (resume && have_latest) {
		char p[4096];
		snprintf(p, sizeof p, "%s/latest", dir);
		if ((s = arb_ckpt_load(m, p, &st, err))) goto out;
		say("resuming from %s at step %lld\n", p, (long long)st.step);
	}
	if ((s = write_config(cfg, dir, err))) goto out;
	if ((s = open_metrics(dir, st.step, &csv, err))) goto out;

	arb_audit au;
	arb_audit_registry(reg, &au);
	int64_t seqlen = data.seqlen;
	double bytes_per_step = (double)B * ctx * 3;
	say("data: %zu training bytes, %zu validation bytes, windows of %lld "
	    "bytes | model: %lld ternary weights (%lld trainable), %.3f bytes "
	    "per weight, %lld persistent float bytes | %s backend\n",
	    data.train_len, data.val_len, (long long)seqlen,
	    (long long)au.weights, (long long)au.trainable_weights,
	    au.bytes_per_weight, (long long)au.bytes_float, be->name);
	buf = malloc((size_t)B * (size_t)seqlen);
	if (!buf) {
		s = ARB_FAIL(err, ARB_ERR_NOMEM, "out of memory for the batch");
		goto out;
	}

	stop_signal = 0;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);
	handlers = 1;

	double t0 = arb_now(), elapsed0 = st.elapsed;
	double win_t0 = t0, win_loss = 0, win_flips = 0;
	int64_t win_n = 0, win_ok = 0, last_eval = -1;
	int time_up = 0;
	char mbuf[1024], pbuf[1024];

	for (int64_t t = st.step; t < steps; t++) {
		if (stop_signal) break;
		if (time_limit > 0 && arb_now() - t0 >= time_limit) {
			time_up = 1;
			break;
		}
		arb_data_train_batch(&data, seed, (uint64_t)t, B, buf);
		double loss;
		if ((s = arb_model_forward(m, buf, B, 1, &loss, err))) goto out;
		if (t == arb_train_debug_nan_step) loss = NAN;
		arb_step_stats ss;
		memset(&ss, 0, sizeof ss);
		if (!isfinite(loss)) {
			say("step %lld: non-finite loss, update skipped\n",
			    (long long)(t + 1));
			st.nonfinite++;
		} else {
			arb_vote v;
			arb_sched_vote(sc, (uint64_t)t, loss, &v);
			if ((s = arb_model_backward(m, &v, err))) goto out;
			if ((s = arb_model_step(m, (uint64_t)t, &ss, err))) goto out;
			win_loss += loss;
			win_ok++;
		}
		win_flips += (double)ss.flips;
		win_n++;
		st.step = t + 1;
		double now = arb_now();
		st.elapsed = elapsed0 + (now - t0);

		int do_log = st.step % log_interval == 0 || st.step == steps;
		int do_eval = (eval_interval > 0 && st.step % eval_interval == 0) ||
			      st.step == steps;
		double vloss = NAN;
		if (do_eval) {
			if ((s = evaluate(m, &data, eval_batches, B, buf, &vloss,
					  err)))
				goto out;
			last_eval = st.step;
		}
		if (do_log) {
			double dt = now - win_t0;
			double sps = dt / (double)win_n;
			double tl = win_ok ? win_loss / win_ok : NAN;
			double fl = win_flips / (double)win_n;
			double bps = dt > 0 ? bytes_per_step * win_n / dt : 0;
			double eta = sps * (double)(steps - st.step);
			if (time_limit > 0 && time_limit - (now - t0) < eta)
				eta = time_limit - (now - t0);
			char rate[32], etas[32], spss[32];
			fmt_rate(rate, sizeof rate, bps);
			fmt_dur(etas, sizeof etas, eta);
			if (sps >= 1) snprintf(spss, sizeof spss, "%.1f s/step", sps);
			else snprintf(spss, sizeof spss, "%.0f ms/step", sps * 1e3);
			mbuf[0] = 0;
			arb_model_metrics(m, mbuf, sizeof mbuf);
			say("step %lld/%lld | loss %.4f | %.3f bpb | %s B/s | flips "
			    "%.0f (%.2f%%) | %s | ETA %s%s%s\n",
			    (long long)st.step, (long long)steps, tl, tl / M_LN2,
			    rate, fl,
			    au.trainable_weights ? 100.0 * fl / au.trainable_weights : 0.0,
			    spss, etas, mbuf[0] ? " | " : "", mbuf);
			if (arb_model_profile(m, pbuf, sizeof pbuf) > 0)
				say("  profile: %s\n", pbuf);
			fprintf(csv, "%lld,%.3f", (long long)st.step, st.elapsed);
			csv_num(csv, tl, win_ok > 0);
			csv_num(csv, tl / M_LN2, win_ok > 0);
			csv_num(csv, vloss, do_eval);
			csv_num(csv, vloss / M_LN2, do_eval);
			fprintf(csv, ",%.1f,%.1f,", fl, bps);
			csv_text(csv, mbuf);
			fflush(csv);
			win_t0 = now;
			win_loss = win_flips = 0;
			win_n = win_ok = 0;
		} else if (do_eval) {
			fprintf(csv, "%lld,%.3f,,", (long long)st.step, st.elapsed);
			csv_num(csv, vloss, 1);
			csv_num(csv, vloss / M_LN2, 1);
			fprintf(csv, ",,,\"\"\n");
			fflush(csv);
		}
		if (do_eval) {
			int better = vloss < st.best_val;
			if (better) st.best_val = vloss;
			say("eval step %lld | val loss %.4f | %.3f bpb | best %.3f bpb%s\n",
			    (long long)st.step, vloss, vloss / M_LN2,
			    st.best_val / M_LN2, better ? " (new best)" : "");
			if (better && (s = arb_ckpt_save(m, cfg, &st, dir, "best", err)))
				goto out;
		}
		if (ckpt_interval > 0 && st.step % ckpt_interval == 0 &&
		    st.step < steps &&
		    (s = arb_ckpt_save(m, cfg, &st, dir, "latest", err)))
			goto out;
	}

	if (stop_signal) {
		int sig = stop_signal;
		if ((s = arb_ckpt_save(m, cfg, &st, dir, "latest", err))) goto out;
		fprintf(stderr, "arbcore: stopped by %s after step %lld; state saved "
			"to %s/latest (run the same command again to resume)\n",
			sig == SIGINT ? "SIGINT" : "SIGTERM", (long long)st.step,
			dir);
		*exit_code = 128 + sig;
		s = ARB_OK;
		goto out;
	}
	if (time_up)
		say("time limit of %.0f s reached at step %lld of %lld\n", time_limit,
		    (long long)st.step, (long long)steps);
	if (last_eval != st.step) {
		double vloss;
		if ((s = evaluate(m, &data, eval_batches, B, buf, &vloss, err)))
			goto out;
		int better = vloss < st.best_val;
		if (better) st.best_val = vloss;
		say("eval step %lld | val loss %.4f | %.3f bpb | best %.3f bpb%s\n",
		    (long long)st.step, vloss, vloss / M_LN2, st.best_val / M_LN2,
		    better ? " (new best)" : "");
		fprintf(csv, "%lld,%.3f,,", (long long)st.step, st.elapsed);
		csv_num(csv, vloss, 1);
		csv_num(csv, vloss / M_LN2, 1);
		fprintf(csv, ",,,\"\"\n");
		fflush(csv);
		if (better && (s = arb_ckpt_save(m, cfg, &st, dir, "best", err)))
			goto out;
	}
	if ((s = arb_ckpt_save(m, cfg, &st, dir, "final", err))) goto out;
	if ((s = arb_ckpt_save(m, cfg, &st, dir, "latest", err))) goto out;
	say("done: step %lld, best val %.3f bpb, %lld non-finite steps skipped, "
	    "%.1f s; checkpoints in %s\n", (long long)st.step,
	    st.best_val / M_LN2, (long long)st.nonfinite,
	    arb_now() - t0, dir);
	*exit_code = 0;
	s = ARB_OK;
out:
	if (handlers) {
		sigaction(SIGINT, &old_int, NULL);
		sigaction(SIGTERM, &old_term, NULL);
	}
	if (csv) fclose(csv);
	free(buf);
	arb_model_free(m);
	arb_data_free(&data);
	return s;
}
