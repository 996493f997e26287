/*
 * arb/plugin.h -- arbcore's plugin ABI (versioned). A plugin is a shared
 * object that exports exactly one symbol:
 *
 *     const struct arb_plugin *arb_plugin_descriptor(void);
 *
 * (write ARB_PLUGIN_DEFINE(my_desc) once). The descriptor has no side
 * effects and never touches CUDA. Plugins never link core symbols (build
 * them with -fvisibility=hidden -Wl,-z,defs); everything they need from the
 * core comes through the host services table `struct arb_host` handed to
 * create(). docs/plugin-abi.md documents every field; a test keeps it in step
 * with this header.
 *
 * Compatibility policy: the host loads a plugin iff
 *     plugin ABI major == host ABI major  and  plugin minor <= host minor
 *     and the build signature strings are equal.
 * Structs are append-only within a major version; every struct starts with
 * its size so that either side can tell which fields exist.
 */
#ifndef ARB_PLUGIN_H
#define ARB_PLUGIN_H

#include "arb.h"
#include "tensor.h"
#include "ops.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ARB_ABI_MAJOR 1
#define ARB_ABI_MINOR 1
#define ARB_ABI_VERSION ((uint32_t)((ARB_ABI_MAJOR << 16) | ARB_ABI_MINOR))
#define ARB_ABI_MAJOR_OF(v) ((uint32_t)(v) >> 16)
#define ARB_ABI_MINOR_OF(v) ((uint32_t)(v) & 0xffffu)

/* Build signature: pointer size, trit layout id, float type. Plugins and the
 * host must agree exactly. */
#define ARB_STR2(x) #x
#define ARB_STR(x) ARB_STR2(x)
#define ARB_BUILD_SIGNATURE \
	"ptr" ARB_STR(__SIZEOF_POINTER__) ";tern5r1;f32;abi" ARB_STR(ARB_ABI_MAJOR)

/* ---------------------------------------------------------------------------
 * config schema: one entry per key of the plugin's INI section.
 * The host validates a section against the schema (unknown key, bad type,
 * out of range, missing required key -> file:line error, exit status 2)
 * before create() is called, and fills defaults. */
typedef enum arb_conf_type {
	ARB_CONF_INT = 1,     /* 64-bit integer, range [min, max] */
	ARB_CONF_FLOAT = 2,   /* double, range [min, max] */
	ARB_CONF_BOOL = 3,    /* true/false/1/0/yes/no/on/off */
	ARB_CONF_STRING = 4,  /* any string (max 1023 bytes) */
	ARB_CONF_ENUM = 5,    /* one of choices "a|b|c" */
	ARB_CONF_INT_LIST = 6,/* comma-separated integers, each in [min, max] */
} arb_conf_type;

typedef struct arb_conf_key {
	const char *key;
	int type;             /* arb_conf_type */
	const char *def;      /* default as text; NULL = required key */
	double min, max;      /* INT, FLOAT, INT_LIST ranges (inclusive) */
	const char *choices;  /* ENUM: "a|b|c"; NULL otherwise */
	const char *help;     /* one line */
} arb_conf_key;
#define ARB_CONF_END { NULL, 0, NULL, 0, 0, NULL, NULL }

/* A validated, defaults-filled section (opaque; read through the host). */
typedef struct arb_conf arb_conf;

/* ---------------------------------------------------------------------------
 * where a component sits in the trunk */
typedef enum arb_slot {
	ARB_SLOT_FFN = 1,      /* replaces the SwiGLU FFN of the layers named by
				  the section's `layers` key (all if absent) */
	ARB_SLOT_RESIDUAL = 2, /* adds to the residual stream after the blocks
				  named by `layers` (after the last if absent) */
	ARB_SLOT_INPUT = 3,    /* adds to the input embeddings (sidecars) */
	ARB_SLOT_SERVICE = 4,  /* runs nowhere by itself; other components call
				  it through the host (e.g. experts for ACT) */
} arb_slot;

/* Shape facts of the model the component is part of. */
typedef struct arb_model_info {
	uint32_t struct_size;
	int d_model;        /* D */
	int n_layers;
	int n_heads;
	int ctx;            /* T: positions (trigrams) per sequence */
	int batch;          /* B of training */
	int group_size;     /* default group size of the trunk */
	uint64_t seed;
} arb_model_info;

/* Everything one forward/backward call of a component sees.
 * FFN slot: x = normalized input [M,D]; the component ADDS its output to y
 *   (the residual stream) in forward; in backward dy is the gradient of the
 *   residual stream and the component ADDS dL/dx into dx.
 * RESIDUAL slot: x = the residual stream itself, y == x (add in place);
 *   dx == dy (add in place).
 * All float/int pointers are backend memory. */
typedef struct arb_io {
	uint32_t struct_size;
	arb_backend *be;
	int B, T, D;              /* M = B * T rows */
	int layer;                /* block index; -1 for INPUT slot */
	int training;             /* 1 in training forward, 0 in eval/sample */
	const float *x;           /* [M, D] */
	float *y;                 /* [M, D] (forward) */
	const float *dy;          /* [M, D] (backward) */
	float *dx;                /* [M, D] (backward) */
	const int32_t *bytes;     /* [B, 3T] input bytes as int32 (backend mem) */
	const arb_vote *vote;     /* how this step votes (backward) */
	double aux_loss;          /* component may set an auxiliary loss value
				     (reported in metrics; its gradient must
				     already be part of its backward) */
} arb_io;

/* Named tensors exchanged between components (e.g. "vq.shared.codes"). */
typedef enum arb_dtype {
	ARB_F32 = 1, ARB_I32 = 2, ARB_I8 = 3, ARB_U8 = 4, ARB_I64 = 5, ARB_I16 = 6,
} arb_dtype;
typedef struct arb_named {
	uint32_t struct_size;
	int dtype;                /* arb_dtype */
	int ndim;
	int64_t shape[4];
	void *data;               /* backend memory, valid until the next
				     forward of the publisher */
} arb_named;

/* Extra (non-ternary) component state for checkpoints, in host memory. The
 * ternary tensors a component creates through the host are saved by the
 * core; save/load cover anything else (edge lists, usage counts, ...). */
typedef struct arb_state_io {
	void *ctx;
	arb_status (*write)(void *ctx, const char *name, const void *data,
			    size_t bytes);
	/* fails with ARB_ERR_FORMAT if the record is missing or its size
	 * differs */
	arb_status (*read)(void *ctx, const char *name, void *data, size_t bytes);
} arb_state_io;

/* How a component asks for a ternary tensor. */
typedef struct arb_tern_param {
	uint32_t struct_size;
	int32_t group_size;       /* 0 = trunk default */
	int frozen;               /* 1 = never updated */
	int sparse;               /* 1 = table updated at touched rows only */
	double zero_frac;         /* < 0 = trunk default; 1 = every trit 0 at
				     init (E0 as for the trunk's default
				     density): a branch whose output starts
				     at zero */
	int const_trit;           /* 0 random, +-1 constant */
	int64_t fan_in;           /* for E0; 0 = cols */
} arb_tern_param;

/* ---------------------------------------------------------------------------
 * host services table: the only way a plugin reaches the core. Append-only;
 * check struct_size before using a member added after 1.0. */
typedef struct arb_host arb_host;
struct arb_host {
	uint32_t abi_version;
	uint32_t struct_size;
	void *core;               /* opaque core context */

	void (*log)(const arb_host *h, int level, const char *fmt, ...)
		ARB_PRINTF(3, 4);
	/* fill err, return code (like ARB_FAIL) */
	int (*set_error)(arb_error *err, int code, const char *fmt, ...)
		ARB_PRINTF(3, 4);

	/* model shape and the compute backend of this run */
	const arb_model_info *(*model)(const arb_host *h);
	arb_backend *(*backend)(const arb_host *h);

	/* config of the component's own section (validated, defaults filled) */
	int64_t (*conf_int)(const arb_conf *c, const char *key);
	double (*conf_float)(const arb_conf *c, const char *key);
	int (*conf_bool)(const arb_conf *c, const char *key);
	const char *(*conf_str)(const arb_conf *c, const char *key);
	/* INT_LIST: copies up to max values, returns the count */
	int (*conf_int_list)(const arb_conf *c, const char *key, int64_t *out,
			     int max);

	/* Create, initialize (packed-first) and register a trainable ternary
	 * tensor in backend memory. The core owns it: it applies the learning
	 * rule to it each step, counts it in the audit and saves it in
	 * checkpoints under "<instance>.<name>". */
	arb_status (*tern_create)(const arb_host *h, const char *instance,
				  const char *name, int64_t rows, int64_t cols,
				  const arb_tern_param *p, arb_tern **out,
				  arb_error *err);

	/* named tensor exchange */
	arb_status (*publish)(const arb_host *h, const char *name,
			      const arb_named *t, arb_error *err);
	/* NULL if nothing of that name was published */
	const arb_named *(*lookup)(const arb_host *h, const char *name);

	/* call another loaded component (SERVICE slot or any other) by its
	 * instance name; used e.g. by the graph's ACT loop to run experts */
	arb_status (*call_forward)(const arb_host *h, const char *instance,
				   arb_io *io, arb_error *err);
	arb_status (*call_backward)(const arb_host *h, const char *instance,
				    arb_io *io, arb_error *err);
};

/* ---------------------------------------------------------------------------
 * the plugin descriptor */
typedef struct arb_plugin {
	uint32_t abi_version;     /* ARB_ABI_VERSION the plugin was built for */
	uint32_t struct_size;     /* sizeof(struct arb_plugin) */
	const char *build_sig;    /* ARB_BUILD_SIGNATURE */
	const char *name;         /* section name that loads it, [a-z0-9_] */
	const char *version;      /* plugin's own semver */
	const char *description;  /* one line */
	const char *license;
	int slot;                 /* arb_slot */
	const arb_conf_key *schema; /* ended by ARB_CONF_END */

	/* required: create an instance. `instance` is the section's instance
	 * name ("vq:kg" -> "kg"; "moe" -> "moe"). Tensors are created here
	 * through host->tern_create. */
	arb_status (*create)(const arb_host *host, const arb_conf *conf,
			     const char *instance, void **self, arb_error *err);
	/* required: must accept NULL */
	void (*destroy)(void *self);
	/* required */
	arb_status (*forward)(void *self, arb_io *io, arb_error *err);
	/* required: gradients into io->dx, votes into the tensors'
	 * accumulators through io->be->linear_vote / embed_vote */
	arb_status (*backward)(void *self, arb_io *io, arb_error *err);
	/* optional: non-ternary state for checkpoints */
	arb_status (*save)(void *self, const arb_state_io *io, arb_error *err);
	arb_status (*load)(void *self, const arb_state_io *io, arb_error *err);
	/* optional: after the core's scheduler step (counters, reseeding) */
	arb_status (*after_step)(void *self, uint64_t step, arb_error *err);
	/* optional: append "key=value" metrics for the log (e.g. perplexity);
	 * returns bytes written */
	int (*metrics)(void *self, char *buf, size_t cap);
} arb_plugin;

typedef const arb_plugin *(*arb_plugin_descriptor_fn)(void);
#define ARB_PLUGIN_SYMBOL "arb_plugin_descriptor"

#if defined(__GNUC__)
#define ARB_EXPORT __attribute__((visibility("default")))
#else
#define ARB_EXPORT
#endif

/* Export the descriptor: ARB_PLUGIN_DEFINE(my_plugin); */
#ifdef __cplusplus
#define ARB_PLUGIN_DEFINE(desc) \
	extern "C" ARB_EXPORT const arb_plugin *arb_plugin_descriptor(void) { return &(desc); }
#else
#define ARB_PLUGIN_DEFINE(desc) \
	ARB_EXPORT const arb_plugin *arb_plugin_descriptor(void); \
	ARB_EXPORT const arb_plugin *arb_plugin_descriptor(void) { return &(desc); }
#endif

#ifdef __cplusplus
}
#endif
#endif /* ARB_PLUGIN_H */
