/*
 * core/core.h -- internal interfaces of libarbcore shared by its modules
 * (not installed; plugins use core/include/arb/ only).
 *
 *   config.c    strict INI loading (inih), schemas, --set, dump
 *   registry.c  every trainable ternary tensor of a run, created through one
 *               function so that the scheduler, the audit and checkpoints
 *               see all of them (core trunk and plugins alike)
 *   sched.c     the ternary-step scheduler: threshold warm-up, loss-scaled
 *               integer step, vote/step parameters per step, applying the
 *               rule to every registered tensor
 *   audit.c     bytes per dtype, bytes per weight, float state = 0
 *   plugin.c    dlopen loader and refusals; host.c: the host services table
 */
#ifndef ARB_CORE_H
#define ARB_CORE_H

#include <stdio.h>
#include "arb/arb.h"
#include "arb/tensor.h"
#include "arb/ops.h"
#include "arb/plugin.h"

/* ---------------------------------------------------------------------------
 * config (config.c). A file is parsed once into sections; each section is
 * validated against a schema (core sections: schema.c; plugin sections: the
 * plugin's descriptor). Errors: "file:line: [section] key: message". */
typedef struct arb_cfg arb_cfg;

/* Parse `path` (NULL: start from defaults only) and apply overrides
 * "section.key=value" (NULL-terminated array, may be NULL). Core sections
 * ([run] [data] [model] [train] [schedule]) are validated here; plugin
 * sections are kept for arb_cfg_validate_section. */
arb_status arb_cfg_load(arb_cfg **out, const char *path,
			const char *const *overrides, arb_error *err);
void arb_cfg_free(arb_cfg *cfg);
/* validated section or NULL if the file has no such section (core sections
 * always exist, filled with defaults) */
const arb_conf *arb_cfg_section(const arb_cfg *cfg, const char *name);
/* sections that are not core sections, in file order: "moe", "vq:kg", ... */
int arb_cfg_plugin_count(const arb_cfg *cfg);
const char *arb_cfg_plugin_section(const arb_cfg *cfg, int i);
/* validate a plugin section against its schema (unknown key, type, range,
 * required); errors point at the offending line */
arb_status arb_cfg_validate_section(arb_cfg *cfg, const char *section,
				    const arb_conf_key *schema, arb_error *err);
/* print the resolved config (every key, defaults filled) as INI */
void arb_cfg_dump(const arb_cfg *cfg, FILE *f);
/* "file:line: [section] key: message" (ARB_ERR_CONFIG) for a combination
 * of values that is wrong although each key validated: the line of `key`
 * (or its --set, or the section header when the key was not written) */
arb_status arb_cfg_key_error(const arb_cfg *cfg, const char *section,
			     const char *key, arb_error *err, const char *fmt,
			     ...) ARB_PRINTF(5, 6);
/* the config file's path ("" if none) */
const char *arb_cfg_path(const arb_cfg *cfg);

int64_t arb_conf_int(const arb_conf *c, const char *key);
double arb_conf_float(const arb_conf *c, const char *key);
int arb_conf_bool(const arb_conf *c, const char *key);
const char *arb_conf_str(const arb_conf *c, const char *key);
int arb_conf_int_list(const arb_conf *c, const char *key, int64_t *out, int max);

/* core section schemas (schema.c) */
extern const arb_conf_key arb_schema_run[];
extern const arb_conf_key arb_schema_data[];
extern const arb_conf_key arb_schema_model[];
extern const arb_conf_key arb_schema_train[];
extern const arb_conf_key arb_schema_schedule[];
/* print a schema as help text (used by `arbcore plugins --help NAME` and
 * `arbcore --help-config`) */
void arb_schema_print(const char *section, const arb_conf_key *schema, FILE *f);
/* check a schema itself (keys [a-z0-9_]+ and unique, known types, enum
 * choices, defaults valid under their own type and range); ARB_ERR_PLUGIN
 * naming `owner` and the entry. Used by the plugin loader. */
arb_status arb_schema_check(const char *owner, const arb_conf_key *schema,
			    arb_error *err);

/* ---------------------------------------------------------------------------
 * scheduler configuration ([schedule] section) */
typedef struct arb_sched_cfg {
	int vote;             /* arb_vote_kind */
	int threshold;        /* final trit threshold */
	int threshold_start;  /* warm-up start (0 = no warm-up) */
	int warmup_steps;
	int threshold_end;    /* anneal target (0 = no anneal) */
	int64_t anneal_start; /* step where the anneal begins */
	int64_t anneal_steps; /* steps to reach threshold_end */
	int reset_mode;       /* arb_reset_mode */
	int sr_R;
	int accum_init;       /* half-width of random T_accum init; -1 = thr/2 */
	double flip_cap;      /* max fraction of trits flipped per step, 0 = off */
	int erule;            /* arb_erule */
	int e_threshold;
	double bigint_alpha;
	int order;            /* arb_update_order */
	double loss_step;     /* 0 = off; else step = 1 + floor(loss_step *
				 max(0, loss - loss_floor)), capped */
	double loss_floor;
	int loss_step_max;
	int e_min, e_max;
	int group_size;       /* default group size */
	double zero_frac;     /* default init zero fraction */
	uint64_t seed;
} arb_sched_cfg;

arb_status arb_sched_cfg_from_conf(arb_sched_cfg *s, const arb_conf *sched,
				   const arb_conf *model, uint64_t seed,
				   arb_error *err);
/* effective threshold at step t (integer linear warm-up from
 * threshold_start to threshold over warmup_steps; then, with threshold_end,
 * an integer linear anneal from threshold to threshold_end over
 * [anneal_start, anneal_start + anneal_steps]) */
int arb_sched_threshold(const arb_sched_cfg *s, uint64_t t);
/* loss-scaled integer step (documented formula above) */
int arb_sched_loss_step(const arb_sched_cfg *s, double loss);
void arb_sched_vote(const arb_sched_cfg *s, uint64_t t, double loss,
		    arb_vote *v);
void arb_sched_step_params(const arb_sched_cfg *s, uint64_t t, int64_t rows_x_cols,
			   arb_step *p);

/* ---------------------------------------------------------------------------
 * registry of trainable ternary tensors (registry.c) */
typedef struct arb_registry {
	arb_backend *be;
	const arb_sched_cfg *sched;
	arb_tern **items;
	int n, cap;
} arb_registry;

void arb_registry_init(arb_registry *r, arb_backend *be,
		       const arb_sched_cfg *sched);
void arb_registry_free(arb_registry *r);   /* frees the tensors too */
/* allocate in backend memory, init packed-first (seed, id, zero_frac,
 * E from fan-in, T_accum from accum_init), register; name must be unique */
arb_status arb_registry_create(arb_registry *r, const char *name,
			       int64_t rows, int64_t cols,
			       const arb_tern_param *p, arb_tern **out,
			       arb_error *err);
arb_tern *arb_registry_find(const arb_registry *r, const char *name);
/* apply the step rule to every non-frozen tensor; sums stats */
void arb_registry_step(arb_registry *r, uint64_t t, arb_step_stats *total);

/* ---------------------------------------------------------------------------
 * audit (audit.c) */
typedef struct arb_audit {
	int64_t tensors;
	int64_t weights;          /* logical ternary weights (trainable+frozen) */
	int64_t trainable_weights;
	int64_t bytes_u8, bytes_i8, bytes_i16, bytes_i32, bytes_i64;
	int64_t bytes_float;      /* persistent float bytes: must be 0 */
	int64_t bytes_workspace;  /* transient workspace (reported apart) */
	int64_t zeros;            /* zero trits */
	double bytes_per_weight;  /* persistent bytes / logical weights */
} arb_audit;
/* extra: plugin-owned integer state the registry doesn't see */
void arb_audit_registry(const arb_registry *r, arb_audit *a);
void arb_audit_print(const arb_audit *a, FILE *f);

/* ---------------------------------------------------------------------------
 * utilities (util.c) */
uint32_t arb_crc32(uint32_t crc, const void *data, size_t n);
double arb_now(void);                       /* monotonic seconds */
/* read a whole file into memory; caller frees */
arb_status arb_read_file(const char *path, uint8_t **data, size_t *len,
			 arb_error *err);

/* ---------------------------------------------------------------------------
 * plugin loader (plugin.c) */
typedef struct arb_loaded_plugin {
	void *dl;
	const arb_plugin *desc;
	char path[4096];
} arb_loaded_plugin;

/* Search order for plugin `name` (file <name>.so): each directory of
 * config_path (':'-separated, may be NULL/empty), then of $ARB_PLUGIN_PATH,
 * then arb_plugin_builtin_dir(). Refusals (each a clear message naming the
 * path): not found (lists every directory tried), dlopen failure (dlerror +
 * ldd hint), missing descriptor symbol, NULL descriptor, ABI major mismatch,
 * plugin minor newer than host, struct_size too small or too large, build
 * signature mismatch, name mismatch, missing required callback, file or
 * directory writable by group/others. */
arb_status arb_plugin_open(const char *name, const char *config_path,
			   arb_loaded_plugin *out, arb_error *err);
/* open a specific file (used by open and by tests) */
arb_status arb_plugin_open_file(const char *path, const char *expect_name,
				arb_loaded_plugin *out, arb_error *err);
void arb_plugin_close(arb_loaded_plugin *p);
/* directory of the plugins shipped with this build/installation */
const char *arb_plugin_builtin_dir(void);
/* `arbcore plugins`: list every plugin found (name, version, ABI, path) and
 * every refused file with its reason; returns the count found */
int arb_plugin_list(const char *config_path, FILE *f);
/* `arbcore plugins --help NAME`: description + schema */
arb_status arb_plugin_help(const char *name, const char *config_path, FILE *f,
			   arb_error *err);

#endif /* ARB_CORE_H */
