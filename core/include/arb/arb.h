/*
 * arb/arb.h -- basic vocabulary of arbcore's public SDK: status codes, the
 * error record, log levels and the host/device helper macro.
 *
 * Everything a plugin needs lives under core/include/arb/. Plugins never link
 * core symbols: they reach the core through the host table (arb/plugin.h).
 * This header is plain C11 and also compiles as C++17 (nvcc).
 */
#ifndef ARB_ARB_H
#define ARB_ARB_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------
 * status codes: every fallible function returns arb_status (ARB_OK == 0). */
typedef enum arb_status {
	ARB_OK = 0,
	ARB_ERR_INVALID = 1,   /* bad argument or bad input value */
	ARB_ERR_CONFIG = 2,    /* configuration error (exit status 2) */
	ARB_ERR_IO = 3,        /* file could not be read or written */
	ARB_ERR_FORMAT = 4,    /* corrupt / truncated / foreign file */
	ARB_ERR_NOMEM = 5,     /* allocation failed */
	ARB_ERR_CUDA = 6,      /* CUDA runtime error or no usable GPU */
	ARB_ERR_PLUGIN = 7,    /* plugin refused or failed */
	ARB_ERR_UNSUPPORTED = 8,
	ARB_ERR_NUMERIC = 9,   /* NaN/Inf where a finite value was required */
} arb_status;

/* Error record filled by the failing function (SQLite pzErrMsg style). */
typedef struct arb_error {
	int code;          /* an arb_status */
	char msg[512];
	const char *file;  /* source location that raised it */
	int line;
} arb_error;

#if defined(__GNUC__)
#define ARB_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define ARB_PRINTF(a, b)
#endif

/* Fill err (may be NULL) and return code. Defined in core/error.c; plugins
 * use host->set_error instead (they do not link core symbols). */
int arb_error_set(arb_error *err, int code, const char *file, int line,
		  const char *fmt, ...) ARB_PRINTF(5, 6);
#define ARB_FAIL(err, code, ...) \
	arb_error_set((err), (code), __FILE__, __LINE__, __VA_ARGS__)

/* ---------------------------------------------------------------------------
 * logging */
typedef enum arb_log_level {
	ARB_LOG_ERROR = 0,
	ARB_LOG_WARN = 1,
	ARB_LOG_INFO = 2,
	ARB_LOG_DEBUG = 3,
} arb_log_level;

/* ---------------------------------------------------------------------------
 * host/device inline helpers: usable from C, C++ and CUDA device code. */
#if defined(__CUDACC__)
#define ARB_HD static __host__ __device__ __forceinline__
#else
#define ARB_HD static inline
#endif

#ifdef __cplusplus
}
#endif
#endif /* ARB_ARB_H */
