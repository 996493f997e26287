/*
 * core/cuda_stub.c -- arb_backend_cuda when arbcore was built without nvcc.
 */
#include "arb/ops.h"

arb_backend *arb_backend_cuda(arb_error *err)
{
	ARB_FAIL(err, ARB_ERR_CUDA,
		 "this arbcore was built without CUDA (nvcc not found at build "
		 "time); rebuild with nvcc on PATH or use device = cpu");
	return NULL;
}
