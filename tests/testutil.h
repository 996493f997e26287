/*
 * tests/testutil.h -- helpers shared by the Check suites.
 */
#ifndef ARB_TESTUTIL_H
#define ARB_TESTUTIL_H
#include <stddef.h>
#include <stdint.h>
#include "arb/ops.h"

/* 1 if a CUDA device can be used (built with CUDA and a GPU present) */
int arb_test_gpu_available(void);
/* compare float arrays: |a-b| <= atol + rtol*|b|; prints the first mismatches
 * and the max difference; returns the number of mismatches */
int arb_test_close(const char *label, const float *a, const float *b, size_t n,
		   float atol, float rtol);
/* deterministic test data: uniform in [-1,1) / dyadic values k/16, |k|<=16 */
void arb_test_fill(float *x, size_t n, uint64_t seed);
void arb_test_fill_dyadic(float *x, size_t n, uint64_t seed);
/* path of a build artifact: $ARB_TEST_BUILD/<rel> (default build/<rel>) */
const char *arb_test_build_path(const char *rel);
/* dlopen $ARB_TEST_BUILD/plugins/<name>.so (kept open for the process) and
 * return its descriptor; NULL with a message in msg when it cannot be loaded
 * or exports no descriptor */
struct arb_plugin;
const struct arb_plugin *arb_test_plugin(const char *name, char *msg, size_t cap);
/* the same, and the test fails unless it loads and its descriptor names
 * `name`, carries this build's signature and (slot >= 0) has that slot */
const struct arb_plugin *arb_test_plugin_ok(const char *name, int slot);
/* a fresh temporary directory (mkdtemp under /tmp); caller may rm -rf */
const char *arb_test_tmpdir(void);

/* in-memory arb_state_io for save/load tests: records kept in order of
 * writing (at most ARB_TEST_MEM_RECS; a write beyond fails with
 * ARB_ERR_NOMEM); a read of a missing record or of a different size fails
 * with ARB_ERR_FORMAT, as the checkpoint reader does */
#define ARB_TEST_MEM_RECS 32
typedef struct arb_test_rec { char name[64]; void *data; size_t n; } arb_test_rec;
typedef struct arb_test_mem { arb_test_rec r[ARB_TEST_MEM_RECS]; int n; } arb_test_mem;
struct arb_state_io;
/* io->ctx = m, io->write / io->read on m */
void arb_test_mem_io(arb_test_mem *m, struct arb_state_io *io);
/* the record called name, or NULL */
arb_test_rec *arb_test_mem_find(arb_test_mem *m, const char *name);
void arb_test_mem_free(arb_test_mem *m);

/* a quiet harness host (arb/harness.h) for a plugin linked into the test:
 * model width D, 1 layer, 1 head, ctx T, batch B, group size 8, seed 1234,
 * T_accum init half-width 2; free with arb_test_harness_free */
struct arb_harness;
/* *io zeroed, struct_size set, with this backend and shape (B * T rows of
 * width D); the caller sets layer, training and the buffers */
struct arb_io;
void arb_test_io(struct arb_io *io, arb_backend *be, int B, int T, int D);
struct arb_harness *arb_test_harness(arb_backend *be, const struct arb_plugin *pl,
				     int D, int B, int T);
/* set a config key / create the instance (the test fails with the message
 * on error); create returns the component's self */
void arb_test_harness_set(struct arb_harness *H, const char *key, const char *val);
void *arb_test_harness_create(struct arb_harness *H, const char *instance);
void arb_test_harness_free(struct arb_harness *H);

/* weights of a host-memory ternary tensor whose trit is not 0 */
struct arb_tern;
int64_t arb_test_nonzero_trits(const struct arb_tern *t);
#endif
