/*
 * tests/testutil.c -- helpers shared by the Check suites.
 */
#include "testutil.h"
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dlfcn.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>
#include "arb/ops.h"
#include "arb/plugin.h"
#include "arb/harness.h"

int arb_test_gpu_available(void)
{
#ifdef ARB_HAVE_CUDA
	static int cached = -1;
	if (cached < 0) {
		arb_error err = { 0 };
		cached = arb_backend_cuda(&err) != NULL;
	}
	return cached;
#else
	return 0;
#endif
}

int arb_test_close(const char *label, const float *a, const float *b, size_t n,
		   float atol, float rtol)
{
	int bad = 0;
	double maxd = 0;
	for (size_t i = 0; i < n; i++) {
		double d = fabs((double)a[i] - (double)b[i]);
		if (!(d <= atol + rtol * fabs((double)b[i]))) {
			if (bad < 5)
				fprintf(stderr, "%s[%zu]: got %.8g want %.8g\n",
					label, i, a[i], b[i]);
			bad++;
		}
		if (d > maxd || isnan(d)) maxd = isnan(d) ? INFINITY : d;
	}
	if (bad)
		fprintf(stderr, "%s: %d of %zu mismatches, max diff %.3g\n", label,
			bad, n, maxd);
	return bad;
}

static uint64_t mix(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void arb_test_fill(float *x, size_t n, uint64_t seed)
{
	for (size_t i = 0; i < n; i++)
		x[i] = (float)((mix(seed * 1000003u + i) >> 40) / (double)(1 << 24)) * 2.0f - 1.0f;
}

void arb_test_fill_dyadic(float *x, size_t n, uint64_t seed)
{
	for (size_t i = 0; i < n; i++)
		x[i] = (float)((int)(mix(seed * 1000003u + i) % 33) - 16) / 16.0f;
}

const char *arb_test_build_path(const char *rel)
{
	static char buf[8][4096];
	static int k;
	const char *b = getenv("ARB_TEST_BUILD");
	char *out = buf[k++ & 7];
	snprintf(out, 4096, "%s/%s", b ? b : "build", rel);
	return out;
}

/* temporary directories of this process, removed with their contents when
 * it exits (Check runs every test in a forked child: the child that made a
 * directory removes it; a process forked by a test leaves it alone) */
static char **g_tmp;        /* each path its own allocation: stable */
static int g_tmp_n, g_tmp_cap;
static pid_t g_tmp_pid;

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb; (void)flag; (void)ftw;
	remove(path);
	return 0;
}

static void tmp_cleanup(void)
{
	if (getpid() != g_tmp_pid) return;
	for (int i = 0; i < g_tmp_n; i++)
		nftw(g_tmp[i], rm_one, 16, FTW_DEPTH | FTW_PHYS);
	g_tmp_n = 0;
}

const char *arb_test_tmpdir(void)
{
	if (g_tmp_pid != getpid()) {
		/* first call in this process (or a forked child): its own list */
		if (!g_tmp_pid) atexit(tmp_cleanup);
		g_tmp_pid = getpid();
		g_tmp_n = 0;
	}
	if (g_tmp_n == g_tmp_cap) {
		int cap = g_tmp_cap ? 2 * g_tmp_cap : 16;
		char **p = realloc(g_tmp, (size_t)cap * sizeof *p);
		if (!p) {
			fprintf(stderr, "arb_test_tmpdir: out of memory\n");
			abort();
		}
		g_tmp = p;
		g_tmp_cap = cap;
	}
	char *out = malloc(64);
	if (!out) {
		fprintf(stderr, "arb_test_tmpdir: out of memory\n");
		abort();
	}
	snprintf(out, 64, "/tmp/arbtest.XXXXXX");
	if (!mkdtemp(out)) {
		perror("arb_test_tmpdir: mkdtemp");
		abort();
	}
	g_tmp[g_tmp_n++] = out;
	return out;
}

const arb_plugin *arb_test_plugin(const char *name, char *msg, size_t cap)
{
	char rel[256];
	snprintf(rel, sizeof rel, "plugins/%s.so", name);
	const char *path = arb_test_build_path(rel);
	void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!dl) {
		snprintf(msg, cap, "cannot load %s: %s", path, dlerror());
		return NULL;
	}
	arb_plugin_descriptor_fn fn =
		(arb_plugin_descriptor_fn)dlsym(dl, ARB_PLUGIN_SYMBOL);
	if (!fn) {
		snprintf(msg, cap, "%s: no descriptor", path);
		return NULL;
	}
	return fn();
}

/* ------------------------------------------------------------------------
 * in-memory arb_state_io */

static arb_status mem_write(void *ctx, const char *name, const void *data,
			    size_t bytes)
{
	arb_test_mem *m = ctx;
	if (m->n >= ARB_TEST_MEM_RECS) return ARB_ERR_NOMEM;
	arb_test_rec *r = &m->r[m->n];
	r->data = malloc(bytes ? bytes : 1);
	if (!r->data) return ARB_ERR_NOMEM;
	snprintf(r->name, sizeof r->name, "%s", name);
	if (bytes) memcpy(r->data, data, bytes);
	r->n = bytes;
	m->n++;
	return ARB_OK;
}

static arb_status mem_read(void *ctx, const char *name, void *data, size_t bytes)
{
	arb_test_rec *r = arb_test_mem_find(ctx, name);
	if (!r || r->n != bytes) return ARB_ERR_FORMAT;
	if (bytes) memcpy(data, r->data, bytes);
	return ARB_OK;
}

void arb_test_mem_io(arb_test_mem *m, arb_state_io *io)
{
	io->ctx = m;
	io->write = mem_write;
	io->read = mem_read;
}

arb_test_rec *arb_test_mem_find(arb_test_mem *m, const char *name)
{
	for (int i = 0; i < m->n; i++)
		if (!strcmp(m->r[i].name, name)) return &m->r[i];
	return NULL;
}

void arb_test_mem_free(arb_test_mem *m)
{
	for (int i = 0; i < m->n; i++) free(m->r[i].data);
	m->n = 0;
}

/* ------------------------------------------------------------------------
 * harness host for plugin suites */

arb_harness *arb_test_harness(arb_backend *be, const arb_plugin *pl, int D,
			      int B, int T)
{
	arb_harness *H = calloc(1, sizeof *H);
	ck_assert_ptr_nonnull(H);
	/* D, layers, heads, ctx, batch, group, seed */
	arb_model_info mi = { sizeof mi, D, 1, 1, T, B, 8, 1234 };
	arb_harness_init(H, be, &mi);
	H->accum_init = 2;
	H->verbose = -1; /* no log lines */
	arb_harness_use(H, pl);
	return H;
}

void arb_test_harness_set(arb_harness *H, const char *key, const char *val)
{
	arb_error err = { 0 };
	ck_assert_msg(arb_harness_set(H, key, val, &err) == ARB_OK, "%s", err.msg);
}

void *arb_test_harness_create(arb_harness *H, const char *instance)
{
	arb_error err = { 0 };
	arb_status s = arb_harness_create(H, instance, &err);
	ck_assert_msg(s == ARB_OK, "create %s: %s", instance, err.msg);
	return H->self;
}

void arb_test_harness_free(arb_harness *H)
{
	arb_harness_free(H);
	free(H);
}

const arb_plugin *arb_test_plugin_ok(const char *name, int slot)
{
	char msg[600];
	const arb_plugin *d = arb_test_plugin(name, msg, sizeof msg);
	ck_assert_msg(d != NULL, "%s", msg);
	ck_assert_str_eq(d->name, name);
	if (slot >= 0) ck_assert_int_eq(d->slot, slot);
	ck_assert_str_eq(d->build_sig, ARB_BUILD_SIGNATURE);
	return d;
}

void arb_test_io(arb_io *io, arb_backend *be, int B, int T, int D)
{
	memset(io, 0, sizeof *io);
	io->struct_size = sizeof *io;
	io->be = be;
	io->B = B;
	io->T = T;
	io->D = D;
}

int64_t arb_test_nonzero_trits(const arb_tern *t)
{
	int64_t n = 0;
	for (int64_t r = 0; r < t->rows; r++)
		for (int64_t c = 0; c < t->cols; c++)
			n += arb_tern_get(t->packed, t->row_bytes, r, c) != 0;
	return n;
}
