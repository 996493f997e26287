/*
 * core/error.c -- the error record (arb/arb.h).
 */
#include <stdio.h>
#include "arb/arb.h"

int arb_error_set(arb_error *err, int code, const char *file, int line,
		  const char *fmt, ...)
{
	if (!err) return code;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof err->msg, fmt, ap);
	va_end(ap);
	err->code = code;
	err->file = file;
	err->line = line;
	return code;
}
