/*
 * core/model_internal.h -- what core/model.c and core/host.c share: the
 * loaded components (plugin instances) of a model and the host context their
 * services table points at. Not part of the public SDK.
 *
 * One arb_hostctx per model holds the facts every plugin may ask for (model
 * info, backend, registry), the named-tensor table and the component list.
 * Every component gets its OWN struct arb_host whose `core` points at its
 * arb_component record, so that host->log can prefix "[instance] " and
 * tern_create can default to the component's instance.
 */
#ifndef ARB_MODEL_INTERNAL_H
#define ARB_MODEL_INTERNAL_H

#include "core.h"

typedef struct arb_hostctx arb_hostctx;

typedef struct arb_component {
	char section[128];       /* "moe", "vq:kg" */
	char instance[64];       /* "moe", "kg" */
	arb_loaded_plugin lp;    /* lp.desc: the descriptor */
	const arb_conf *conf;    /* the validated section */
	void *self;              /* the plugin's instance (NULL until created) */
	int slot;                /* arb_slot */
	int *layers;             /* FFN: layers replaced; RESIDUAL: after which
				    blocks (-1 = after the embedding) */
	int n_layers;
	int placed;              /* 1: the core runs it in the trunk (its slot,
				    its layers); 0: a service slot, or a
				    section with trunk = false: it runs only
				    through host->call_forward/backward */
	double aux_loss;         /* last aux_loss reported through arb_io */
	double prof[3];          /* [run] profile: seconds in forward, backward,
				    after_step since the last report */
	arb_host host;           /* this component's services table */
	arb_hostctx *ctx;
} arb_component;

typedef struct arb_named_entry {
	char name[128];
	arb_named t;
} arb_named_entry;

struct arb_hostctx {
	arb_model_info info;
	arb_backend *be;
	arb_registry *reg;
	arb_component **comps;   /* in config order */
	int n_comps;
	arb_named_entry **named; /* pointers stay valid while the model lives */
	int n_named, cap_named;
	int log_level;           /* messages above this level are dropped */
};

/* Test seam (model.c): when non-NULL, plugin sections get their descriptor
 * from this function instead of arb_plugin_open (no dlopen, none of the
 * loader's checks). Lets tests/check_model.c run in-process components in
 * every slot. NULL in production; never set by the core. */
extern const arb_plugin *(*arb_model_plugin_resolver)(const char *name);

/* Fill c->host for component c of ctx (host.c). */
void arb_host_setup(arb_hostctx *ctx, arb_component *c);
/* Free the named table (not the components). */
void arb_hostctx_free(arb_hostctx *ctx);
/* Component by instance name, or NULL. */
arb_component *arb_host_find(arb_hostctx *ctx, const char *instance);

#endif /* ARB_MODEL_INTERNAL_H */
