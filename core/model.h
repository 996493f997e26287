/*
 * core/model.h -- the ARB text trunk and its components (model.c).
 *
 * Data layout: a training sequence is 3*(T+1) bytes. Position p (0..T-1)
 * holds input bytes b[3p..3p+2] and predicts the next trigram
 * c = b[3p+3..3p+5]; byte j of c is conditioned on bytes 0..j-1 of c.
 *
 *   x_p   = sum_j Emb[256*j + b[3p+j]] + pos_scale * sinusoid(p)      (D)
 *   block = x += O(Attn(Q n1(x), K n1(x), V n1(x)));   x += FFN(n2(x))
 *           FFN = W2 (silu(W1 u) * W3 u) or a plugin (FFN slot);
 *           latent_kv = r > 0: K = Wuk Wdkv n1(x), V = Wuv Wdkv n1(x)
 *   z     = nf(x)
 *   head  = for j = 0..2:  u_j = z + sum_{i<j} Cond[256*i + c_i]
 *           logits_j = Head_j nh(u_j)   (256 classes)
 *   loss  = mean over B*T*3 predicted bytes of cross-entropy (nats);
 *           bits per byte = loss / ln 2.
 * Every matrix is a ternary tensor; norms use frozen ternary gains (+1).
 */
#ifndef ARB_MODEL_H
#define ARB_MODEL_H

#include "core.h"

typedef struct arb_model arb_model;

/* Build the trunk from [model] and load the plugin sections of cfg. All
 * tensors are created in `be` memory through the model's registry.
 * batch is the largest B forward will be called with. */
arb_status arb_model_create(arb_model **out, const arb_cfg *cfg,
			    arb_backend *be, int batch, arb_error *err);
void arb_model_free(arb_model *m);

arb_registry *arb_model_registry(arb_model *m);
const arb_model_info *arb_model_info_of(const arb_model *m);
const arb_sched_cfg *arb_model_sched(const arb_model *m);

/* Forward over B sequences of 3*(T+1) bytes (host memory, row-major).
 * *loss = mean cross-entropy in nats per predicted byte. With training = 1
 * the activations needed by backward are kept. */
arb_status arb_model_forward(arb_model *m, const uint8_t *bytes, int B,
			     int training, double *loss, arb_error *err);
/* Backward of the last training forward: gradients flow, votes stream into
 * every registered tensor's accumulators (no step is applied). */
arb_status arb_model_backward(arb_model *m, const arb_vote *v, arb_error *err);
/* Apply the scheduler step to every tensor, then the components'
 * after_step callbacks. */
arb_status arb_model_step(arb_model *m, uint64_t t, arb_step_stats *st,
			  arb_error *err);

/* Generate `gen` bytes after `prompt` (left-padded with spaces to a multiple
 * of 3; the last ctx positions are used). temperature 0 = greedy; top_k 0 =
 * all. Writes prompt + generation to out (caller-provided, n + gen + 3). */
arb_status arb_model_sample(arb_model *m, const uint8_t *prompt, size_t n,
			    size_t gen, double temperature, int top_k,
			    uint64_t seed, uint8_t *out, size_t *out_len,
			    arb_error *err);

/* Components' non-ternary state for checkpoints */
arb_status arb_model_save_extra(arb_model *m, const arb_state_io *io,
				arb_error *err);
arb_status arb_model_load_extra(arb_model *m, const arb_state_io *io,
				arb_error *err);
/* components' metrics appended to the log line ("k=v k=v") */
int arb_model_metrics(arb_model *m, char *buf, size_t cap);
/* [run] profile = true: per training step averages since the last call, in
 * ms, of the whole forward / backward / step and the share of the trunk and
 * of each component ("forward 12.3 ms (trunk 8.1, moe 4.2) | ..."); resets
 * the counters. Writes nothing (returns 0) when profiling is off. */
int arb_model_profile(arb_model *m, char *buf, size_t cap);

/* Test hook: pointer to the float gradient of the input embedding output
 * and friends is not exposed; finite-difference tests perturb inputs of
 * individual ops in tests/check_ops.c instead. */

#endif /* ARB_MODEL_H */
