/*
 * core/train.h -- internal interfaces of the arbcore program: training data
 * (data.c), checkpoint files (ckpt.c) and the training loop (train.c).
 * Used by core/main.c and the tests; not part of the public SDK.
 *
 * Data: a training window is seqlen = 3*(ctx+1) consecutive bytes of the
 *   training text. Window i of step t starts at
 *       arb_rng_u32(seed, arb_rng_stream(0, t, ARB_RNG_DATA), i) % range,
 *   range = len - seqlen + 1 (when range > 2^32 two draws, indices 2i and
 *   2i+1 offset by 2^32, form a 64-bit number). The data position is thus a
 *   pure function of (seed, t): resume needs no data cursor.
 *   Validation: eval_batches * B windows at evenly spaced offsets over the
 *   validation text, the same at every evaluation.
 *
 * Checkpoint file (all integers little-endian):
 *   header  "ARBCKPT\0" (8 bytes), u32 format version (ARB_CKPT_VERSION),
 *           u32 reserved (0)
 *   record  u32 name length, name bytes, u32 dtype (ARB_CKPT_* below),
 *           u64 data length, data bytes, u32 CRC-32 of everything of the
 *           record before the CRC
 *   footer  "ARBCKEND" (8 bytes), u64 record count, u32 CRC-32 of the whole
 *           file before this CRC
 *   Records: "config" (text: the resolved config), "train.step" (i64
 *   completed steps), "train.best_val" (f64), "train.elapsed" (f64 seconds),
 *   "train.nonfinite" (i64), and per registry tensor NAME:
 *   "tensor:NAME:meta" (i64 rows, cols, group_size, erule, flags, steps,
 *   rms_log2), ":trits" (ARBS flat interchange layout), ":E", ":T_accum",
 *   ":E_accum", ":corr" (those that exist); components' extra state as
 *   "extra:NAME".
 */
#ifndef ARB_TRAIN_H
#define ARB_TRAIN_H

#include "core.h"
#include "model.h"

/* ---------------------------------------------------------------------------
 * data (data.c) */
typedef struct arb_data {
	uint8_t *train;        /* concatenated training text */
	size_t train_len;
	uint8_t *val;          /* validation text (own copy) */
	size_t val_len;
	int64_t seqlen;        /* 3 * (ctx + 1) */
} arb_data;

/* Load [data] (section `data`) for windows of 3*(ctx+1) bytes. */
arb_status arb_data_load(arb_data *d, const arb_conf *data, int ctx,
			 arb_error *err);
void arb_data_free(arb_data *d);
/* B training windows of step t into out (B * seqlen bytes) */
void arb_data_train_batch(const arb_data *d, uint64_t seed, uint64_t t, int B,
			  uint8_t *out);
/* offset of window i of step t in the training text */
uint64_t arb_data_train_offset(const arb_data *d, uint64_t seed, uint64_t t,
			       uint64_t i);
/* validation batch k (0 <= k < nbatches) of B windows into out */
void arb_data_val_batch(const arb_data *d, int k, int nbatches, int B,
			uint8_t *out);

/* ---------------------------------------------------------------------------
 * checkpoints (ckpt.c) */
#define ARB_CKPT_VERSION 1
enum { ARB_CKPT_F32 = 1, ARB_CKPT_I32 = 2, ARB_CKPT_I8 = 3, ARB_CKPT_U8 = 4,
       ARB_CKPT_I64 = 5, ARB_CKPT_I16 = 6, ARB_CKPT_F64 = 64,
       ARB_CKPT_TEXT = 65 };

/* training state besides the tensors */
typedef struct arb_train_state {
	int64_t step;          /* completed steps */
	double best_val;       /* best validation loss (INFINITY: none yet) */
	double elapsed;        /* training seconds so far (all sessions) */
	int64_t nonfinite;     /* skipped non-finite steps so far */
} arb_train_state;

/* Write <dir>/<name> atomically (<name>.tmp, fsync, rename, fsync dir). */
arb_status arb_ckpt_save(arb_model *m, const arb_cfg *cfg,
			 const arb_train_state *st, const char *dir,
			 const char *name, arb_error *err);
/* Load a checkpoint into a model built from a compatible config. */
arb_status arb_ckpt_load(arb_model *m, const char *path, arb_train_state *st,
			 arb_error *err);

/* A verified checkpoint file in memory (whole-file and record CRCs checked,
 * structure validated). */
typedef struct arb_ckpt_rec {
	const char *name;      /* NUL-terminated copy */
	uint32_t dtype;
	const uint8_t *data;
	uint64_t len;
} arb_ckpt_rec;
typedef struct arb_ckpt {
	char path[4096];
	uint8_t *buf;
	size_t size;
	arb_ckpt_rec *recs;
	char *names;
	int n;
} arb_ckpt;
arb_status arb_ckpt_open(arb_ckpt *ck, const char *path, arb_error *err);
void arb_ckpt_close(arb_ckpt *ck);
const arb_ckpt_rec *arb_ckpt_find(const arb_ckpt *ck, const char *name);
/* the resolved config text stored in a checkpoint, written to a fresh
 * temporary file (path into tmp_path, caller unlinks) so it can be loaded
 * with arb_cfg_load */
arb_status arb_ckpt_config_file(const char *ckpt_path, char *tmp_path,
				size_t cap, arb_error *err);

/* ---------------------------------------------------------------------------
 * training loop (train.c) */

/* Train per cfg on backend be. On return *exit_code is the process status
 * the program should exit with: 0 done, 130/143 stopped by SIGINT/SIGTERM
 * after writing latest. Errors return non-OK (exit 1, or 2 for config). */
arb_status arb_train(const arb_cfg *cfg, arb_backend *be, int *exit_code,
		     arb_error *err);

/* Test hooks: force the loss of step t (0-based) to NaN (-1: off); quiet
 * suppresses progress output (0: print). */
extern int64_t arb_train_debug_nan_step;
extern int arb_train_quiet;

/* make the directory (and its parents) if it does not exist */
arb_status arb_mkdirs(const char *path, arb_error *err);

#endif /* ARB_TRAIN_H */
