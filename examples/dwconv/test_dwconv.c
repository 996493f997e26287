/*
 * examples/dwconv/test_dwconv.c -- the dwconv plugin's own test, built out
 * of tree by `make check` against the installed SDK (arb/harness.h +
 * arbcore-harness.pc). It loads the real artifact (dwconv.so) and runs it
 * without the arbcore program:
 *
 *   1. CPU: backward vs central finite differences, for the input and for
 *      the three voted tensors of a layer (W_g, W_out, taps);
 *   2. CUDA (when the installed core has CUDA and a GPU is usable): the same
 *      finite-difference check, then CPU vs CUDA outputs and input gradients
 *      for the same inputs and the same initial tensors.
 *
 * Prints one PASS/FAIL/SKIP line per check; exit status 1 on any FAIL.
 *   usage: test_dwconv path/to/dwconv.so
 */
#include <stdio.h>
#include <string.h>
#include "arb/harness.h"

#define FD_TOL 2e-2     /* relative error of backward vs finite differences */
#define CMP_TOL 1e-4    /* CPU vs CUDA, relative to max |value| */

static int failures;

static void verdict(int ok, const char *what, const char *detail)
{
	printf("%s: %s%s%s\n", ok ? "PASS" : "FAIL", what, *detail ? ": " : "",
	       detail);
	failures += !ok;
}

static arb_model_info small_model(void)
{
	arb_model_info mi;
	memset(&mi, 0, sizeof mi);
	mi.struct_size = sizeof mi;
	mi.d_model = 24;
	mi.n_layers = 2;
	mi.n_heads = 2;
	mi.ctx = 10;
	mi.batch = 2;
	mi.group_size = 8;
	mi.seed = 7;
	return mi;
}

/* harness over `be` with dwconv loaded from `so`, kernel 3, layers 0,1 */
static int make_harness(arb_harness *h, arb_backend *be, const char *so,
			const arb_model_info *mi, arb_error *err)
{
	arb_harness_init(h, be, mi);
	if (arb_harness_open(h, so, err) ||
	    arb_harness_set(h, "kernel", "3", err) ||
	    arb_harness_set(h, "layers", "0,1", err) ||
	    arb_harness_create(h, NULL, err))
		return -1;
	return 0;
}

static void fd_check(arb_harness *h, const char *be_name)
{
	arb_error err;
	arb_harness_fd_opts o;
	arb_harness_fd_report r;
	char what[64], detail[320];
	memset(&o, 0, sizeof o);
	o.layer = 1;
	o.seed = 11;
	snprintf(what, sizeof what, "%s finite differences", be_name);
	if (arb_harness_fd_check(h, &o, &r, &err)) {
		verdict(0, what, err.msg);
		return;
	}
	snprintf(detail, sizeof detail,
		 "dx max rel err %.2e (%d probes), dW max rel err %.2e (%d "
		 "probes over %d tensors; worst %s)", r.max_rel_x, r.checked_x,
		 r.max_rel_w, r.checked_w, r.tensors, r.worst);
	verdict(r.max_rel_x < FD_TOL && r.max_rel_w < FD_TOL && r.tensors == 3 &&
		r.checked_x > 0, what, detail);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s path/to/dwconv.so\n", argv[0]);
		return 2;
	}
	const char *so = argv[1];
	arb_model_info mi = small_model();
	arb_error err;
	memset(&err, 0, sizeof err);

	arb_harness cpu;
	if (make_harness(&cpu, arb_backend_cpu(), so, &mi, &err)) {
		verdict(0, "load and create on cpu", err.msg);
		return 1;
	}
	verdict(1, "load and create on cpu", "");
	fd_check(&cpu, "cpu");

	arb_backend *cu = arb_backend_cuda(&err);
	if (!cu) {
		printf("SKIP: cuda checks: %s\n", err.msg);
	} else {
		arb_harness gpu;
		if (make_harness(&gpu, cu, so, &mi, &err)) {
			/* dwconv.so built without nvcc refuses the CUDA backend */
			printf("SKIP: cuda checks: %s\n", err.msg);
		} else {
			fd_check(&gpu, "cuda");
			/* fresh instances: identical initial tensors on both */
			arb_harness a, b;
			arb_harness_cmp_report r;
			char detail[200];
			if (make_harness(&a, arb_backend_cpu(), so, &mi, &err) ||
			    make_harness(&b, cu, so, &mi, &err) ||
			    arb_harness_compare(&a, &b, 3, mi.ctx, 0, 5, &r, &err)) {
				verdict(0, "cpu vs cuda", err.msg);
			} else {
				snprintf(detail, sizeof detail,
					 "y max rel diff %.2e, dx %.2e, T_accum "
					 "differing %lld of %lld", r.max_rel_y,
					 r.max_rel_dx, (long long)r.accum_diff,
					 (long long)r.accum_total);
				verdict(r.max_rel_y < CMP_TOL && r.max_rel_dx < CMP_TOL,
					"cpu vs cuda", detail);
			}
			arb_harness_free(&a);
			arb_harness_free(&b);
		}
		arb_harness_free(&gpu);
	}
	arb_harness_free(&cpu);
	printf("%s: test_dwconv\n", failures ? "FAIL" : "PASS");
	return failures ? 1 : 0;
}
