/*
 * core/schema.c -- typed schemas of the core INI sections. They drive
 * validation, defaults, `arbcore --dump-config` and `arbcore --help-config`.
 * Keep docs/config.md in step (tests/check_config.c checks every key is
 * documented).
 */
#include "core.h"

#define DEF_DATA "/usr/share/games/fortunes/literature,/usr/share/games/fortunes/wisdom," \
	"/usr/share/games/fortunes/people,/usr/share/games/fortunes/humorists," \
	"/usr/share/games/fortunes/science,/usr/share/games/fortunes/politics," \
	"/usr/share/games/fortunes/men-women,/usr/share/games/fortunes/cookie"

const arb_conf_key arb_schema_run[] = {
	{ "dir", ARB_CONF_STRING, "runs/default", 0, 0, NULL,
	  "run directory: checkpoints latest/best/final, metrics.csv, config.ini" },
	{ "device", ARB_CONF_ENUM, "cpu", 0, 0, "cpu|cuda",
	  "compute backend; cpu is the reference" },
	{ "seed", ARB_CONF_INT, "1", 0, 9.2e18, NULL,
	  "seed of every random decision (init, data windows, votes, sampling)" },
	{ "threads", ARB_CONF_INT, "0", 0, 1024, NULL,
	  "CPU threads (0 = all cores)" },
	{ "plugin_path", ARB_CONF_STRING, "", 0, 0, NULL,
	  "directories searched for plugins (':'-separated), before $ARB_PLUGIN_PATH and the built-in directory" },
	{ "resume", ARB_CONF_BOOL, "true", 0, 0, NULL,
	  "continue from <dir>/latest if it exists (false: refuse to overwrite a run)" },
	{ "profile", ARB_CONF_BOOL, "false", 0, 0, NULL,
	  "time the trunk and every component (forward, backward, step) with the device synchronized around each call, and print the split under each progress line (slows training)" },
	ARB_CONF_END
};

const arb_conf_key arb_schema_data[] = {
	{ "path", ARB_CONF_STRING, DEF_DATA, 0, 0, NULL,
	  "training text: one or more files, comma-separated (default: English text of Debian's 'fortunes' package)" },
	{ "val_path", ARB_CONF_STRING, "", 0, 0, NULL,
	  "validation text (comma-separated files); empty = last val_fraction of path" },
	{ "val_fraction", ARB_CONF_FLOAT, "0.1", 0.001, 0.5, NULL,
	  "held-out fraction when val_path is empty" },
	{ "max_bytes", ARB_CONF_INT, "0", 0, 9.2e18, NULL,
	  "read at most this many bytes of each file (0 = all)" },
	ARB_CONF_END
};

const arb_conf_key arb_schema_model[] = {
	{ "d_model", ARB_CONF_INT, "128", 8, 16384, NULL, "model width D (multiple of heads)" },
	{ "layers", ARB_CONF_INT, "2", 0, 256, NULL, "transformer blocks" },
	{ "heads", ARB_CONF_INT, "4", 1, 256, NULL, "attention heads" },
	{ "ctx", ARB_CONF_INT, "64", 1, 65536, NULL, "positions per sequence (each position = 3 bytes)" },
	{ "ffn_hidden", ARB_CONF_INT, "0", 0, 1048576, NULL, "SwiGLU hidden width (0 = 4 * d_model)" },
	{ "latent_kv", ARB_CONF_INT, "0", 0, 16384, NULL, "MLA-style latent KV rank (0 = plain K/V projections)" },
	{ "head_hidden", ARB_CONF_INT, "-1", -1, 1048576, NULL, "ByteHead SwiGLU width shared by the 3 byte slots (-1 = 2 * d_model, 0 = none)" },
	{ "group_size", ARB_CONF_INT, "32", 4, 128, NULL, "weights per int8 exponent along the input dimension" },
	{ "zero_frac", ARB_CONF_FLOAT, "0.3333333333", 0, 0.95, NULL, "fraction of zero trits at init" },
	{ "pos_scale", ARB_CONF_FLOAT, "0.5", 0, 10, NULL, "scale of the fixed sinusoidal position signal" },
	ARB_CONF_END
};

const arb_conf_key arb_schema_train[] = {
	{ "batch", ARB_CONF_INT, "16", 1, 65536, NULL, "sequences per step" },
	{ "steps", ARB_CONF_INT, "1000", 0, 1e12, NULL, "total optimizer steps" },
	{ "time_limit", ARB_CONF_FLOAT, "0", 0, 1e9, NULL, "stop (with eval and final checkpoint) after this many seconds; 0 = none" },
	{ "eval_interval", ARB_CONF_INT, "100", 0, 1e12, NULL, "steps between validation runs (0 = only at the end)" },
	{ "eval_batches", ARB_CONF_INT, "8", 1, 1e6, NULL, "validation batches per evaluation (fixed windows)" },
	{ "ckpt_interval", ARB_CONF_INT, "200", 0, 1e12, NULL, "steps between 'latest' checkpoints (0 = only final)" },
	{ "log_interval", ARB_CONF_INT, "10", 1, 1e12, NULL, "steps between progress lines" },
	ARB_CONF_END
};

const arb_conf_key arb_schema_schedule[] = {
	{ "vote", ARB_CONF_ENUM, "sign", 0, 0, "sign|sr", "vote kind: sign of dW, or stochastically rounded dW/rms(dW)" },
	{ "threshold", ARB_CONF_INT, "12", 1, 127, NULL, "T_accum magnitude that moves a trit one step" },
	{ "threshold_start", ARB_CONF_INT, "0", 0, 127, NULL, "warm-up start threshold (0 = no warm-up)" },
	{ "warmup_steps", ARB_CONF_INT, "0", 0, 1e12, NULL, "steps of linear threshold warm-up" },
	{ "threshold_end", ARB_CONF_INT, "0", 0, 127, NULL, "anneal: threshold reached at anneal_start + anneal_steps (0 = no anneal)" },
	{ "anneal_start", ARB_CONF_INT, "0", 0, 1e12, NULL, "anneal: step where the threshold starts moving toward threshold_end" },
	{ "anneal_steps", ARB_CONF_INT, "0", 0, 1e12, NULL, "anneal: steps of the linear move (required with threshold_end)" },
	{ "reset", ARB_CONF_ENUM, "zero", 0, 0, "zero|remainder", "accumulator after a flip: reset to 0, or keep the remainder" },
	{ "sr_R", ARB_CONF_INT, "2", 1, 64, NULL, "sr vote multiplier R" },
	{ "accum_init", ARB_CONF_INT, "-1", -1, 127, NULL, "random T_accum init half-width (-1 = threshold/2)" },
	{ "flip_cap", ARB_CONF_FLOAT, "0", 0, 1, NULL, "max fraction of a tensor's trits flipped per step (0 = no cap)" },
	{ "erule", ARB_CONF_ENUM, "frozen", 0, 0, "frozen|residual|bigint", "exponent rule" },
	{ "e_threshold", ARB_CONF_INT, "120", 1, 127, NULL, "residual rule: E_accum carry threshold (ARBS used 4)" },
	{ "bigint_alpha", ARB_CONF_FLOAT, "4.0", 0, 64, NULL, "bigint rule strength" },
	{ "order", ARB_CONF_ENUM, "e_first", 0, 0, "e_first|t_first", "exponent update before or after trit flips" },
	{ "loss_step", ARB_CONF_FLOAT, "0", 0, 100, NULL, "loss-scaled step: step = 1 + floor(loss_step * max(0, loss - loss_floor)) (0 = off)" },
	{ "loss_floor", ARB_CONF_FLOAT, "0", 0, 100, NULL, "loss (nats) below which the step is 1" },
	{ "loss_step_max", ARB_CONF_INT, "4", 1, 127, NULL, "cap of the loss-scaled step" },
	{ "e_min", ARB_CONF_INT, "-30", -126, 0, NULL, "lowest exponent" },
	{ "e_max", ARB_CONF_INT, "10", 0, 127, NULL, "highest exponent" },
	ARB_CONF_END
};
