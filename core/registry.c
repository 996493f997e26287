/*
 * core/registry.c -- every trainable ternary tensor of a run. Tensors are
 * created here (backend allocation + packed-first init), so that the
 * scheduler step, the audit and checkpoints see all of them, whether the
 * core trunk or a plugin asked for them. The registration index is the
 * tensor's id, which keys its RNG streams.
 */
#include <stdlib.h>
#include <string.h>
#include "core.h"

void arb_registry_init(arb_registry *r, arb_backend *be,
		       const arb_sched_cfg *sched)
{
	memset(r, 0, sizeof *r);
	r->be = be;
	r->sched = sched;
}

void arb_registry_free(arb_registry *r)
{
	for (int i = 0; i < r->n; i++) {
		r->be->tern_free(r->be, r->items[i]);
		free(r->items[i]);
	}
	free(r->items);
	r->items = NULL;
	r->n = r->cap = 0;
}

arb_tern *arb_registry_find(const arb_registry *r, const char *name)
{
	for (int i = 0; i < r->n; i++)
		if (strcmp(r->items[i]->name, name) == 0) return r->items[i];
	return NULL;
}

arb_status arb_registry_create(arb_registry *r, const char *name,
			       int64_t rows, int64_t cols,
			       const arb_tern_param *p, arb_tern **out,
			       arb_error *err)
{
	const arb_sched_cfg *s = r->sched;
	arb_tern_param def = { sizeof def, 0, 0, 0, -1.0, 0, 0 };
	if (!p) p = &def;
	if (!s || !r->be)
		return ARB_FAIL(err, ARB_ERR_INVALID,
				"registry: no backend or scheduler config");
	if (!name || !name[0])
		return ARB_FAIL(err, ARB_ERR_INVALID, "registry: empty tensor name");
	if (strlen(name) >= sizeof(((arb_tern *)0)->name))
		return ARB_FAIL(err, ARB_ERR_INVALID,
				"tensor '%s': name longer than %zu bytes", name,
				sizeof(((arb_tern *)0)->name) - 1);
	if (arb_registry_find(r, name))
		return ARB_FAIL(err, ARB_ERR_INVALID,
				"tensor '%s' is already registered (names must be unique)",
				name);
	if (rows < 1 || cols < 1)
		return ARB_FAIL(err, ARB_ERR_INVALID,
				"tensor '%s': shape %lld x %lld must be at least 1 x 1",
				name, (long long)rows, (long long)cols);
	int32_t gs = p->group_size ? p->group_size : s->group_size;
	if (gs < ARB_GROUP_MIN || gs > ARB_GROUP_MAX)
		return ARB_FAIL(err, ARB_ERR_INVALID,
				"tensor '%s': group_size %d outside %d..%d", name, gs,
				ARB_GROUP_MIN, ARB_GROUP_MAX);
	double zf = p->zero_frac < 0 ? s->zero_frac : p->zero_frac;
	if (!(zf >= 0.0 && zf <= 1.0))
		return ARB_FAIL(err, ARB_ERR_INVALID,
				"tensor '%s': zero_frac %g outside 0..1", name, zf);
	if (p->fan_in < 0)
		return ARB_FAIL(err, ARB_ERR_INVALID,
				"tensor '%s': negative fan_in %lld", name,
				(long long)p->fan_in);
	if (r->n == r->cap) {
		int nc = r->cap ? r->cap * 2 : 16;
		arb_tern **ni = realloc(r->items, (size_t)nc * sizeof *ni);
		if (!ni)
			return ARB_FAIL(err, ARB_ERR_NOMEM, "registry: out of memory");
		r->items = ni;
		r->cap = nc;
	}
	arb_tern *t = calloc(1, sizeof *t);
	if (!t) return ARB_FAIL(err, ARB_ERR_NOMEM, "registry: out of memory");
	memcpy(t->name, name, strlen(name) + 1);
	t->rows = rows;
	t->cols = cols;
	t->group_size = gs;
	t->groups = arb_groups(cols, gs);
	t->row_bytes = arb_row_bytes(cols);
	t->flags = (p->frozen ? ARB_TERN_FROZEN : 0) |
		   (p->sparse ? ARB_TERN_SPARSE : 0) |
		   (r->be->is_device ? ARB_TERN_DEVICE : 0);
	t->id = (uint32_t)r->n;
	/* a frozen tensor never updates: its exponent rule is frozen too */
	t->erule = p->frozen ? ARB_ERULE_FROZEN : s->erule;
	t->bigint_alpha = (float)s->bigint_alpha;
	arb_status st = r->be->tern_alloc(r->be, t, err);
	if (st) {
		free(t);
		return st;
	}
	arb_tern_init ini;
	memset(&ini, 0, sizeof ini);
	ini.seed = s->seed;
	ini.zero_frac = zf;
	ini.const_trit = p->const_trit;
	/* zero_frac = 1 (every trit 0: a branch that starts silent): E0 is the
	 * one of the trunk's default density, the scale its trits will have
	 * once votes flip them */
	ini.e_init = arb_e_from_fanin(p->fan_in ? p->fan_in : cols,
				      zf >= 1.0 ? s->zero_frac : zf);
	ini.accum_init = p->frozen ? 0 : s->accum_init;
	r->be->tern_init(r->be, t, &ini);
	r->items[r->n++] = t;
	if (out) *out = t;
	return ARB_OK;
}

static void stats_add(arb_step_stats *sum, const arb_step_stats *st)
{
	sum->flips += st->flips;
	sum->candidates += st->candidates;
	sum->saturated += st->saturated;
	sum->capped += st->capped;
	sum->e_changes += st->e_changes;
	sum->zeros += st->zeros;
}

void arb_registry_step(arb_registry *r, uint64_t t, arb_step_stats *total)
{
	arb_step_stats sum;
	memset(&sum, 0, sizeof sum);
	/* one batch (one device wait on CUDA); tensor by tensor if the
	 * arrays cannot be had */
	arb_tern **w = malloc((size_t)(r->n ? r->n : 1) * sizeof *w);
	arb_step *p = malloc((size_t)(r->n ? r->n : 1) * sizeof *p);
	arb_step_stats *st = calloc((size_t)(r->n ? r->n : 1), sizeof *st);
	int n = 0;
	for (int i = 0; i < r->n; i++) {
		arb_tern *x = r->items[i];
		if (x->flags & ARB_TERN_FROZEN) continue;
		arb_step one;
		arb_sched_step_params(r->sched, t, x->rows * x->cols, &one);
		if (w && p && st && r->be->tern_step_many) {
			w[n] = x;
			p[n++] = one;
			continue;
		}
		arb_step_stats s1;
		memset(&s1, 0, sizeof s1);
		r->be->tern_step(r->be, x, &one, &s1);
		stats_add(&sum, &s1);
	}
	if (n) r->be->tern_step_many(r->be, w, p, n, st);
	for (int i = 0; i < n; i++) stats_add(&sum, &st[i]);
	free(w);
	free(p);
	free(st);
	if (total) *total = sum;
}
