/*
 * core/util.c -- small utilities: CRC-32, monotonic clock, whole-file read.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "core.h"

uint32_t arb_crc32(uint32_t crc, const void *data, size_t n)
{
	static uint32_t table[256];
	static int ready;
	if (!ready) {
		for (uint32_t i = 0; i < 256; i++) {
			uint32_t c = i;
			for (int k = 0; k < 8; k++)
				c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
			table[i] = c;
		}
		ready = 1;
	}
	const uint8_t *p = data;
	crc = ~crc;
	for (size_t i = 0; i < n; i++)
		crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
	return ~crc;
}

double arb_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

arb_status arb_read_file(const char *path, uint8_t **data, size_t *len,
			 arb_error *err)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return ARB_FAIL(err, ARB_ERR_IO, "%s: cannot open: %s", path,
				strerror(errno));
	size_t cap = 1 << 20, n = 0;
	uint8_t *buf = malloc(cap);
	if (!buf) {
		fclose(f);
		return ARB_FAIL(err, ARB_ERR_NOMEM, "%s: out of memory", path);
	}
	for (;;) {
		if (n == cap) {
			uint8_t *nb = realloc(buf, cap * 2);
			if (!nb) {
				free(buf);
				fclose(f);
				return ARB_FAIL(err, ARB_ERR_NOMEM, "%s: out of memory", path);
			}
			buf = nb;
			cap *= 2;
		}
		size_t got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (got == 0) break;
	}
	int bad = ferror(f);
	fclose(f);
	if (bad) {
		free(buf);
		return ARB_FAIL(err, ARB_ERR_IO, "%s: read error", path);
	}
	*data = buf;
	*len = n;
	return ARB_OK;
}
