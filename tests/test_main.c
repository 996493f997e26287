/*
 * tests/test_main.c -- the one Check runner: every tests/check_<unit>.c
 * defines `Suite *suite_<unit>(void)`; the Makefile lists them in
 * build/tests/suites.h. One runner prints one summary line.
 *
 * GPU cases carry the tag "gpu". Without a usable CUDA device they are
 * excluded and the runner says so. Set ARB_TEST_ONLY=<unit> to run one suite.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "testutil.h"

#define SUITE(u) Suite *suite_##u(void);
#include "suites.h"
#undef SUITE

int main(void)
{
	SRunner *sr = srunner_create(NULL);
	const char *only = getenv("ARB_TEST_ONLY");
#define SUITE(u) if (!only || strcmp(only, #u) == 0) srunner_add_suite(sr, suite_##u());
#include "suites.h"
#undef SUITE
	int gpu = arb_test_gpu_available();
	if (!gpu) {
		printf("SKIP: no usable CUDA device: GPU test cases (tag 'gpu') are not run here; "
		       "run `make test` on a GPU machine for them\n");
		setenv("CK_EXCLUDE_TAGS", "gpu", 1);
	} else {
		printf("GPU found: GPU test cases (tag 'gpu') run\n");
	}
	fflush(stdout);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
