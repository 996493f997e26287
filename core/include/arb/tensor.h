/*
 * arb/tensor.h -- the packed ternary tensor, its counter-based RNG and the
 * exact semantics of the learning rules (sign votes, trit ladder, exponent
 * rules). Both the CPU reference (core/ops_cpu.c) and the CUDA kernels
 * (core/cuda/) implement exactly what is written here; GPU tests compare
 * integer state bit for bit.
 *
 * Legend: a ternary tensor is a matrix W of `rows` x `cols`.
 *   linear layer: rows = N (outputs), cols = K (inputs);   y = x W^T
 *   table:        rows = V (entries), cols = D (width);    out = W[idx]
 * Weight w[r][c] = t[r][c] * scale[r][c / group_size],  t in {-1, 0, +1}.
 *
 * ------------------------------------------------------------------------
 * Compute layout (in memory, CPU and GPU alike): row-aligned base 3.
 *   row_bytes = ceil(cols / 5); byte b of row r holds trits c = 5b .. 5b+4
 *   packed[r*row_bytes + c/5] = sum_{j<5} code(r, 5(c/5)+j) * 3^j,
 *   code = t + 1 (0 -> -1, 1 -> 0, 2 -> +1); trits past `cols` have code 1
 *   (zero) so that decoding a whole byte never yields a spurious weight.
 * Interchange/checkpoint layout (ARBS): the same base-3 digits over the
 *   flattened tensor (index i = r*cols + c), padded with code 0 and stripped
 *   by length. arb_tern_export_flat / arb_tern_import_flat convert exactly.
 *
 * Scales: E int8 per (row, group), groups = ceil(cols / group_size), the last
 *   group of a row may be partial. scale = 2^E (exponent rules "frozen" and
 *   "residual"), or 2^(E + alpha * corr / (steps * group_size)) ("bigint").
 *
 * Learning state: T_accum int8 per weight (row-major rows x cols), E_accum
 *   int8 per group, corr int64 per group (bigint only). All persistent state
 *   is integer; there is no float master weight and no float optimizer state.
 */
#ifndef ARB_TENSOR_H
#define ARB_TENSOR_H

#include "arb.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ARB_GROUP_MIN 4
#define ARB_GROUP_MAX 128
#define ARB_GROUP_DEFAULT 32

/* flags */
#define ARB_TERN_FROZEN   (1u << 0) /* never updated (e.g. RMSNorm gain) */
#define ARB_TERN_DEVICE   (1u << 1) /* pointers are CUDA device pointers */
#define ARB_TERN_SPARSE   (1u << 2) /* table updated only at touched rows */

/* exponent (scale) rules */
typedef enum arb_erule {
	ARB_ERULE_FROZEN = 0,   /* E stays at its initial value (default) */
	ARB_ERULE_RESIDUAL = 1, /* ARBS refactor 5: E_accum carry at +-e_threshold */
	ARB_ERULE_BIGINT = 2,   /* ARBS refactor 18: int64 correlation per group */
} arb_erule;

typedef struct arb_tern {
	char name[64];          /* unique, e.g. "blk0.attn.q" */
	int64_t rows;
	int64_t cols;
	int32_t group_size;     /* ARB_GROUP_MIN..ARB_GROUP_MAX */
	int32_t groups;         /* ceil(cols / group_size) per row */
	int64_t row_bytes;      /* ceil(cols / 5) */
	uint32_t flags;
	uint32_t id;            /* registry index: RNG stream key */
	int32_t erule;          /* arb_erule */
	float bigint_alpha;     /* bigint strength (config constant, not state) */
	/* persistent state (host or device memory, see ARB_TERN_DEVICE) */
	uint8_t *packed;        /* rows * row_bytes */
	int8_t *E;              /* rows * groups */
	int8_t *T_accum;        /* rows * cols; NULL if FROZEN */
	int8_t *E_accum;        /* rows * groups; NULL unless erule RESIDUAL */
	int64_t *corr;          /* rows * groups; NULL unless erule BIGINT */
	int64_t steps;          /* steps applied (bigint denominator) */
	int8_t rms_log2;        /* sr vote: log2 of last rms(dW); ARB_RMS_UNKNOWN */
	/* transient workspace (not persistent state; reported as workspace) */
	int32_t *score;         /* rows * groups: sum of vote*t this step; NULL
				   when erule FROZEN */
	double sumsq;           /* sr vote: sum of dW^2 this step (host value) */
	void *ws_dev;           /* backend-private device workspace */
} arb_tern;

#define ARB_RMS_UNKNOWN (-128)

/* ---------------------------------------------------------------------------
 * trit codes and the packed layout */
ARB_HD int64_t arb_row_bytes(int64_t cols) { return (cols + 4) / 5; }
ARB_HD int32_t arb_groups(int64_t cols, int32_t gs) {
	return (int32_t)((cols + gs - 1) / gs);
}
/* digit j (0..4) of a packed byte, as a trit in {-1,0,1} */
ARB_HD int arb_trit_of(uint8_t byte, int j) {
	int p = byte;
	for (int i = 0; i < j; i++) p /= 3;
	return p % 3 - 1;
}
ARB_HD int arb_tern_get(const uint8_t *packed, int64_t row_bytes, int64_t r,
			int64_t c) {
	return arb_trit_of(packed[r * row_bytes + c / 5], (int)(c % 5));
}
/* power-of-two scale for an int8 exponent, exact in float */
ARB_HD float arb_exp2i(int e) {
	union { uint32_t u; float f; } v;
	if (e < -126) return 0.0f; /* never produced by sane inits */
	v.u = (uint32_t)(e + 127) << 23;
	return v.f;
}

/* ---------------------------------------------------------------------------
 * counter-based RNG (splitmix64 finalizer). Every random decision in arbcore
 * is a pure function of (seed, stream, index) so that CPU and GPU agree and
 * resume is bit-exact. Streams: arb_rng_stream(tensor id, step, purpose). */
ARB_HD uint64_t arb_mix64(uint64_t z) {
	z += 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}
enum { ARB_RNG_INIT_TRIT = 1, ARB_RNG_INIT_SIGN = 2, ARB_RNG_INIT_ACCUM = 3,
       ARB_RNG_VOTE_SR = 4, ARB_RNG_FLIP_CAP = 5, ARB_RNG_DATA = 6,
       ARB_RNG_SAMPLE = 7, ARB_RNG_PLUGIN = 16 };
ARB_HD uint64_t arb_rng_stream(uint32_t tensor_id, uint64_t step,
			       uint32_t purpose) {
	return arb_mix64(((uint64_t)tensor_id << 40) ^ ((uint64_t)purpose << 32) ^
			 arb_mix64(step));
}
ARB_HD uint32_t arb_rng_u32(uint64_t seed, uint64_t stream, uint64_t index) {
	return (uint32_t)(arb_mix64(seed ^ arb_mix64(stream + index)) >> 32);
}
/* uniform float in [0,1) with 24 random bits: exact in float */
ARB_HD float arb_rng_unit(uint64_t seed, uint64_t stream, uint64_t index) {
	return (float)(arb_rng_u32(seed, stream, index) >> 8) * (1.0f / 16777216.0f);
}

/* ---------------------------------------------------------------------------
 * packed-first initialization (no float copy is ever made):
 *   u = rng_u32(seed, stream(id, 0, INIT_TRIT), i)   i = r*cols + c
 *   t = 0 if u < zero_frac * 2^32, else sign from bit 0 of
 *       rng_u32(seed, stream(id, 0, INIT_SIGN), i): 1 -> +1, 0 -> -1
 *   (or every trit = const_trit if const_trit != 0: e.g. RMSNorm gain +1)
 *   E = e_init for every group (see arb_e_from_fanin)
 *   T_accum: uniform integer in [-accum_init, accum_init] from
 *       rng_u32(seed, stream(id, 0, INIT_ACCUM), i) % (2*accum_init + 1)
 *       - accum_init  (0 when accum_init == 0)
 *   E_accum = 0, corr = 0, steps = 0, rms_log2 = ARB_RMS_UNKNOWN. */
typedef struct arb_tern_init {
	uint64_t seed;
	double zero_frac;      /* fraction of zero trits, 0..1 (default 1/3) */
	int const_trit;        /* 0: random; +1/-1: every trit this value */
	int e_init;            /* initial exponent for every group */
	int accum_init;        /* half-width of the random T_accum init */
} arb_tern_init;

/* E0 = round(log2(1 / sqrt(fan_in * (1 - zero_frac)))) so that a row of
 * random trits has unit gain on unit-variance input. */
int arb_e_from_fanin(int64_t fan_in, double zero_frac);

/* ---------------------------------------------------------------------------
 * VOTES: what one backward pass streams into the accumulators.
 * For a linear layer, dW[n][k] = sum_m dy[m][n] * x[m][k] (never stored
 * densely on the GPU). For a table, dW[r][d] = sum over positions p with
 * idx[p] == r of dout[p][d] (duplicates summed first, then one vote).
 *
 *   sign vote (ARB_VOTE_SIGN):  inc = step * sign(dW)            (step >= 1)
 *   sr vote   (ARB_VOTE_SR):    v   = R * dW * 2^(-rms_log2)
 *                               inc = clamp(floor(v + u), -8, 8)
 *       u = arb_rng_unit(seed, stream(id, t, VOTE_SR), r*cols + c);
 *       rms_log2 is the tensor's value from the previous step; when it is
 *       ARB_RMS_UNKNOWN the op first measures this step's rms (one extra
 *       pass) and uses it. After every vote call, sumsq accumulates
 *       sum(dW^2); arb_step turns it into the next rms_log2 (see below).
 *   T_accum = clamp(T_accum - inc, -127, 127)   (saturates, never wraps)
 *   A positive gradient therefore lowers T_accum and moves the trit
 *   toward -1.
 *   If score != NULL: score[r][g] += sign(dW) * t   (t before any flip)
 * The CPU computes dW in fp32. The CUDA backend multiplies bf16 copies of dy
 * and x; on Hopper a sign vote over M >= 256 rows multiplies fp8 e4m3 copies
 * scaled by powers of two (no sign depends on the scale; fp32 accumulators).
 * The GPU's sign can therefore differ from the CPU's only where |dW| is
 * within the operands' rounding of zero.
 */
typedef enum arb_vote_kind { ARB_VOTE_SIGN = 0, ARB_VOTE_SR = 1 } arb_vote_kind;

typedef struct arb_vote {
	int kind;          /* arb_vote_kind */
	int step;          /* sign vote: integer step (loss-scaled, >= 1) */
	int sr_R;          /* sr vote: multiplier R (>= 1) */
	uint64_t seed;     /* run seed */
	uint64_t t;        /* global step number (RNG key) */
} arb_vote;

/* rms_log2 from a sum of squares over n weights:
 *   mean = (float)(sumsq / n); rms_log2 = clamp(ilogb(mean) >> 1, -127, 127)
 *   (floor of log2 of the rms, computed on the float exponent: exact and
 *   identical on every backend); 0 sum -> ARB_RMS_UNKNOWN. */
int arb_rms_log2(double sumsq, int64_t n);

/* ---------------------------------------------------------------------------
 * STEP: applied once per optimizer step to every registered tensor, after
 * all votes of that step are in (arb_backend.tern_step).
 *
 *   thr = effective trit threshold (1..127; warm-up computed by the caller)
 *   Pass 1 counts candidates: |T_accum| >= thr and t can still move in
 *   direction dir = sign(T_accum). If cap_ppm > 0 and
 *   candidates > cap = floor(rows*cols * cap_ppm / 1e6), each candidate is
 *   accepted iff rng_u32(seed, stream(id, t, FLIP_CAP), i) < p32 with
 *   p32 = floor(cap * 2^32 / candidates) (64-bit integer arithmetic).
 *   For each weight with |T_accum| >= thr:
 *     - t at the end of the ladder in direction dir: T_accum = dir * thr
 *       (held, counted as "saturated");
 *     - candidate refused by the cap: T_accum = dir * thr (held);
 *     - otherwise the trit moves ONE step: t += dir (-1 <-> 0 <-> +1) and
 *       T_accum = 0 (reset_mode ZERO) or T_accum - dir * thr (REMAINDER).
 *   Exponent rule (if the tensor has score):
 *     s = score[r][g]; with order T_FIRST, s -= number of flips in that
 *     group this step (each flip moved t against the vote direction).
 *     RESIDUAL: E_accum = clamp(E_accum - sign(s), -127, 127);
 *               if E_accum >= e_thr: E += 1, E_accum -= e_thr;
 *               if E_accum <= -e_thr: E -= 1, E_accum += e_thr;
 *               (E clamped to [e_min, e_max]).
 *       s > 0 means the gradient agrees with the trits: the weights are too
 *       large, so the group loses magnitude.
 *     BIGINT:   corr -= s (int64, never clipped);
 *       scale = 2^(E + alpha * corr / (steps * group_size)), steps >= 1.
 *     score is zeroed afterwards.
 *   steps += 1; sr: rms_log2 = arb_rms_log2(sumsq, rows*cols) when sumsq > 0,
 *   then sumsq = 0.
 */
typedef enum arb_reset_mode { ARB_RESET_ZERO = 0, ARB_RESET_REMAINDER = 1 } arb_reset_mode;
typedef enum arb_update_order { ARB_ORDER_E_FIRST = 0, ARB_ORDER_T_FIRST = 1 } arb_update_order;

typedef struct arb_step {
	int threshold;     /* effective trit threshold this step, 1..127 */
	int reset_mode;    /* arb_reset_mode */
	int order;         /* arb_update_order */
	int e_threshold;   /* residual rule carry threshold, 1..127 */
	int e_min, e_max;  /* exponent clamp, e.g. -30, 10 */
	int64_t cap_ppm;   /* max flips per step in parts per million; 0 = none */
	uint64_t seed;
	uint64_t t;        /* global step number */
} arb_step;

typedef struct arb_step_stats {
	int64_t flips;       /* trits moved */
	int64_t candidates;  /* weights at threshold that could move */
	int64_t saturated;   /* held at the end of the ladder */
	int64_t capped;      /* refused by the flip cap */
	int64_t e_changes;   /* exponents changed (residual rule) */
	int64_t zeros;       /* zero trits after the step */
} arb_step_stats;

/* ---------------------------------------------------------------------------
 * host-memory helpers implemented in core/tern.c (CPU). The host table in
 * arb/plugin.h exposes the same operations to plugins. */

/* Allocate host memory for a tensor (state per erule/flags); no init. */
arb_status arb_tern_alloc(arb_tern *t, const char *name, int64_t rows,
			  int64_t cols, int32_t group_size, uint32_t flags,
			  int erule, arb_error *err);
void arb_tern_free(arb_tern *t);
/* Pack n trits (values -1/0/+1) into the ARBS flat interchange layout
 * (ceil(n/5) bytes) and back. */
void arb_pack_flat(const int8_t *trits, int64_t n, uint8_t *out);
void arb_unpack_flat(const uint8_t *in, int64_t n, int8_t *trits);
/* compute layout <-> interchange layout (host memory) */
void arb_tern_export_flat(const arb_tern *t, uint8_t *flat);
void arb_tern_import_flat(arb_tern *t, const uint8_t *flat);
/* decode row r to trits / to float weights (t * scale) */
void arb_tern_row_trits(const arb_tern *t, int64_t r, int8_t *out);
void arb_tern_row_weights(const arb_tern *t, int64_t r, float *out);
/* scale of group g in row r (handles all erules) */
float arb_tern_scale(const arb_tern *t, int64_t r, int32_t g);
/* set a single trit (host tensors; used by tests and init) */
void arb_tern_set(arb_tern *t, int64_t r, int64_t c, int v);

/* Persistent bytes by kind (the audit's numbers). */
typedef struct arb_tern_bytes {
	int64_t weights;     /* logical ternary weights */
	int64_t packed;      /* uint8 trits */
	int64_t e;           /* int8 exponents */
	int64_t t_accum;     /* int8 */
	int64_t e_accum;     /* int8 */
	int64_t corr;        /* int64 */
	int64_t workspace;   /* transient (score etc.), not persistent state */
} arb_tern_bytes;
void arb_tern_count_bytes(const arb_tern *t, arb_tern_bytes *b);

#ifdef __cplusplus
}
#endif
#endif /* ARB_TENSOR_H */
