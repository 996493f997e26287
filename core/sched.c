/*
 * core/sched.c -- the ternary-step scheduler: reads [schedule] (and the
 * group_size / zero_frac defaults of [model]), computes the effective trit
 * threshold (integer linear warm-up and anneal), the loss-scaled integer vote step, and
 * the per-step vote and step parameters handed to the backend.
 *
 * Loss-scaled step (sign votes), with L the current training loss in nats:
 *     step = 1                                     if loss_step == 0 or L is
 *                                                  not finite
 *     step = min(loss_step_max,
 *                1 + floor(loss_step * max(0, L - loss_floor)))   otherwise
 * so a high loss moves accumulators faster and the step falls back to 1 as
 * the loss approaches loss_floor.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "core.h"

/* schema default of a key (used when a section is absent: NULL conf) */
static const char *schema_def(const arb_conf_key *schema, const char *key)
{
	for (const arb_conf_key *k = schema; k->key; k++)
		if (strcmp(k->key, key) == 0) return k->def;
	return NULL;
}

static int64_t get_int(const arb_conf *c, const arb_conf_key *schema,
		       const char *key)
{
	if (c) return arb_conf_int(c, key);
	const char *d = schema_def(schema, key);
	return d ? strtoll(d, NULL, 10) : 0;
}

static double get_float(const arb_conf *c, const arb_conf_key *schema,
			const char *key)
{
	if (c) return arb_conf_float(c, key);
	const char *d = schema_def(schema, key);
	return d ? strtod(d, NULL) : 0.0;
}

static const char *get_str(const arb_conf *c, const arb_conf_key *schema,
			   const char *key)
{
	const char *v = c ? arb_conf_str(c, key) : schema_def(schema, key);
	return v ? v : "";
}

/* index of `v` in "a|b|c", or -1 */
static int choice(const char *choices, const char *v)
{
	int i = 0;
	size_t n = strlen(v);
	for (const char *p = choices; p; i++) {
		const char *bar = strchr(p, '|');
		size_t len = bar ? (size_t)(bar - p) : strlen(p);
		if (len == n && strncmp(p, v, n) == 0) return i;
		p = bar ? bar + 1 : NULL;
	}
	return -1;
}

static arb_status get_enum(const arb_conf *c, const char *key,
			   const char *choices, int *out, arb_error *err)
{
	const char *v = get_str(c, arb_schema_schedule, key);
	int k = choice(choices, v);
	if (k < 0)
		return ARB_FAIL(err, ARB_ERR_CONFIG,
				"[schedule] %s: '%s' is not one of %s", key, v,
				choices);
	*out = k;
	return ARB_OK;
}

arb_status arb_sched_cfg_from_conf(arb_sched_cfg *s, const arb_conf *sched,
				   const arb_conf *model, uint64_t seed,
				   arb_error *err)
{
	const arb_conf_key *S = arb_schema_schedule, *Mo = arb_schema_model;
	arb_status st;
	memset(s, 0, sizeof *s);
	/* enum order follows the arb_* enums: sign|sr, zero|remainder, ... */
	if ((st = get_enum(sched, "vote", "sign|sr", &s->vote, err))) return st;
	if ((st = get_enum(sched, "reset", "zero|remainder", &s->reset_mode, err)))
		return st;
	if ((st = get_enum(sched, "erule", "frozen|residual|bigint", &s->erule, err)))
		return st;
	if ((st = get_enum(sched, "order", "e_first|t_first", &s->order, err)))
		return st;
	s->threshold = (int)get_int(sched, S, "threshold");
	s->threshold_start = (int)get_int(sched, S, "threshold_start");
	s->warmup_steps = (int)get_int(sched, S, "warmup_steps");
	s->threshold_end = (int)get_int(sched, S, "threshold_end");
	s->anneal_start = get_int(sched, S, "anneal_start");
	s->anneal_steps = get_int(sched, S, "anneal_steps");
	s->sr_R = (int)get_int(sched, S, "sr_R");
	s->accum_init = (int)get_int(sched, S, "accum_init");
	s->flip_cap = get_float(sched, S, "flip_cap");
	s->e_threshold = (int)get_int(sched, S, "e_threshold");
	s->bigint_alpha = get_float(sched, S, "bigint_alpha");
	s->loss_step = get_float(sched, S, "loss_step");
	s->loss_floor = get_float(sched, S, "loss_floor");
	s->loss_step_max = (int)get_int(sched, S, "loss_step_max");
	s->e_min = (int)get_int(sched, S, "e_min");
	s->e_max = (int)get_int(sched, S, "e_max");
	s->group_size = (int)get_int(model, Mo, "group_size");
	s->zero_frac = get_float(model, Mo, "zero_frac");
	s->seed = seed;

	if (s->threshold < 1 || s->threshold > 127)
		return ARB_FAIL(err, ARB_ERR_CONFIG,
				"[schedule] threshold: %d outside 1..127", s->threshold);
	if (s->threshold_start < 0 || s->threshold_start > 127)
		return ARB_FAIL(err, ARB_ERR_CONFIG,
				"[schedule] threshold_start: %d outside 0..127",
				s->threshold_start);
	if (s->threshold_end < 0 || s->threshold_end > 127)
		return ARB_FAIL(err, ARB_ERR_CONFIG,
				"[schedule] threshold_end: %d outside 0..127",
				s->threshold_end);
	if (s->threshold_end > 0 && s->anneal_steps <= 0)
		return ARB_FAIL(err, ARB_ERR_CONFIG,
				"[schedule] anneal_steps: must be > 0 when "
				"threshold_end is set (%d)", s->threshold_end);
	if (s->threshold_end > 0 && s->warmup_steps > 0 &&
	    s->anneal_start < s->warmup_steps)
		return ARB_FAIL(err, ARB_ERR_CONFIG,
				"[schedule] anneal_start: %lld is inside the warm-up "
				"(warmup_steps %d)", (long long)s->anneal_start,
				s->warmup_steps);
	if (s->accum_init == -1)
		s->accum_init = s->threshold / 2;
	if (s->accum_init < 0 || s->accum_init > 127)
		return ARB_FAIL(err, ARB_ERR_CONFIG,
				"[schedule] accum_init: %d outside -1..127", s->accum_init);
	if (s->e_threshold < 1 || s->e_threshold > 127)
		return ARB_FAIL(err, ARB_ERR_CONFIG,
				"[schedule] e_threshold: %d outside 1..127", s->e_threshold);
	if (s->e_min > s->e_max)
		return ARB_FAIL(err, ARB_ERR_CONFIG,
				"[schedule] e_min %d is above e_max %d", s->e_min, s->e_max);
	if (s->sr_R < 1)
		return ARB_FAIL(err, ARB_ERR_CONFIG, "[schedule] sr_R: %d < 1", s->sr_R);
	if (s->loss_step_max < 1)
		return ARB_FAIL(err, ARB_ERR_CONFIG,
				"[schedule] loss_step_max: %d < 1", s->loss_step_max);
	if (!(s->flip_cap >= 0.0 && s->flip_cap <= 1.0))
		return ARB_FAIL(err, ARB_ERR_CONFIG,
				"[schedule] flip_cap: %g outside 0..1", s->flip_cap);
	if (s->group_size < ARB_GROUP_MIN || s->group_size > ARB_GROUP_MAX)
		return ARB_FAIL(err, ARB_ERR_CONFIG,
				"[model] group_size: %d outside %d..%d", s->group_size,
				ARB_GROUP_MIN, ARB_GROUP_MAX);
	if (!(s->zero_frac >= 0.0 && s->zero_frac < 1.0))
		return ARB_FAIL(err, ARB_ERR_CONFIG,
				"[model] zero_frac: %g outside [0, 1)", s->zero_frac);
	return ARB_OK;
}

/* thr(t) = start + (threshold - start) * t / warmup_steps (integer division,
 * truncating toward zero, i.e. toward start) for t < warmup_steps;
 * threshold afterwards or when there is no warm-up. With threshold_end > 0:
 * thr(t) = threshold + (end - threshold) * (t - a) / anneal_steps for
 * a < t < a + anneal_steps (a = anneal_start, same truncation), end from
 * then on: the integer analogue of a decaying learning rate (a larger
 * threshold needs more agreeing votes per flip) */
int arb_sched_threshold(const arb_sched_cfg *s, uint64_t t)
{
	int thr = s->threshold;
	if (s->threshold_start > 0 && s->warmup_steps > 0 &&
	    t < (uint64_t)s->warmup_steps) {
		int64_t d = (int64_t)s->threshold - s->threshold_start;
		thr = (int)(s->threshold_start + d * (int64_t)t / s->warmup_steps);
	}
	if (s->threshold_end > 0 && s->anneal_steps > 0 &&
	    t > (uint64_t)s->anneal_start) {
		uint64_t dt = t - (uint64_t)s->anneal_start;
		int64_t d = (int64_t)s->threshold_end - s->threshold;
		thr = dt >= (uint64_t)s->anneal_steps ? s->threshold_end
			: (int)(s->threshold + d * (int64_t)dt / s->anneal_steps);
	}
	return thr < 1 ? 1 : thr > 127 ? 127 : thr;
}

int arb_sched_loss_step(const arb_sched_cfg *s, double loss)
{
	if (!(s->loss_step > 0.0) || !isfinite(loss)) return 1;
	double ex = loss - s->loss_floor;
	if (ex < 0.0) ex = 0.0;
	double st = 1.0 + floor(s->loss_step * ex);
	int cap = s->loss_step_max < 1 ? 1 : s->loss_step_max;
	return st >= (double)cap ? cap : (int)st;
}

void arb_sched_vote(const arb_sched_cfg *s, uint64_t t, double loss,
		    arb_vote *v)
{
	memset(v, 0, sizeof *v);
	v->kind = s->vote;
	v->step = arb_sched_loss_step(s, loss);
	v->sr_R = s->sr_R;
	v->seed = s->seed;
	v->t = t;
}

void arb_sched_step_params(const arb_sched_cfg *s, uint64_t t,
			   int64_t rows_x_cols, arb_step *p)
{
	memset(p, 0, sizeof *p);
	p->threshold = arb_sched_threshold(s, t);
	p->reset_mode = s->reset_mode;
	p->order = s->order;
	p->e_threshold = s->e_threshold;
	p->e_min = s->e_min;
	p->e_max = s->e_max;
	/* cap_ppm = floor(flip_cap * 1e6); the cap itself is applied per tensor
	 * by tern_step (floor(rows*cols * cap_ppm / 1e6)) */
	p->cap_ppm = (int64_t)floor(s->flip_cap * 1e6);
	p->seed = s->seed;
	p->t = t;
}
