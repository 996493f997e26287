/*
 * tests/check_docs.c -- docs/plugin-abi.md stays in step with the ABI
 * header: every member of struct arb_host, struct arb_plugin and struct
 * arb_io, as parsed from core/include/arb/plugin.h, must appear in the
 * document in backquotes (e.g. `tern_create`).
 */
#include <check.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core.h"
#include "testutil.h"

static char *slurp(const char *path)
{
	uint8_t *data;
	size_t len;
	arb_error err = { 0 };
	ck_assert_msg(arb_read_file(path, &data, &len, &err) == ARB_OK, "%s", err.msg);
	char *s = malloc(len + 1);
	memcpy(s, data, len);
	s[len] = '\0';
	free(data);
	return s;
}

/* remove comments in place (block and line comments become spaces) */
static void strip_comments(char *s)
{
	for (char *p = s; *p; p++) {
		if (p[0] == '/' && p[1] == '*') {
			char *e = strstr(p + 2, "*/");
			char *end = e ? e + 2 : p + strlen(p);
			memset(p, ' ', (size_t)(end - p));
			p = end - 1;
		} else if (p[0] == '/' && p[1] == '/') {
			while (*p && *p != '\n') *p++ = ' ';
			if (!*p) break;
		}
	}
}

/* Members of the struct whose body starts after `opener`: for a function
 * pointer the name inside "(*name)", else the last identifier of the
 * declaration. Returns the count; names in out[][64]. */
static int members(const char *hdr, const char *opener, char out[][64], int max)
{
	const char *b = strstr(hdr, opener);
	ck_assert_msg(b != NULL, "plugin.h: '%s' not found", opener);
	b = strchr(b, '{');
	ck_assert_ptr_nonnull(b);
	const char *end = b + 1;
	for (int depth = 1; *end; end++) {
		if (*end == '{') depth++;
		if (*end == '}' && --depth == 0) break;
	}
	ck_assert_msg(*end == '}', "plugin.h: '%s' has no closing brace", opener);
	int n = 0;
	const char *p = b + 1;
	while (p < end) {
		const char *semi = memchr(p, ';', (size_t)(end - p));
		if (!semi) break;
		char decl[512];
		size_t len = (size_t)(semi - p);
		if (len >= sizeof decl) len = sizeof decl - 1;
		memcpy(decl, p, len);
		decl[len] = '\0';
		p = semi + 1;
		char *fp = strstr(decl, "(*");
		char name[64] = "";
		if (fp) {
			fp += 2;
			while (isspace((unsigned char)*fp)) fp++;
			size_t k = 0;
			while ((isalnum((unsigned char)fp[k]) || fp[k] == '_') && k < 63) {
				name[k] = fp[k];
				k++;
			}
			name[k] = '\0';
		} else {
			/* last identifier, ignoring an array suffix */
			char *br = strchr(decl, '[');
			if (br) *br = '\0';
			char *q = decl + strlen(decl);
			while (q > decl && !(isalnum((unsigned char)q[-1]) || q[-1] == '_')) q--;
			char *e = q;
			while (q > decl && (isalnum((unsigned char)q[-1]) || q[-1] == '_')) q--;
			size_t k = (size_t)(e - q);
			if (k > 63) k = 63;
			memcpy(name, q, k);
			name[k] = '\0';
		}
		if (!*name) continue;
		/* several names in one declaration ("int B, T, D;") */
		if (!fp && strchr(decl, ',')) {
			char *tok = decl;
			/* skip the type: names follow the first identifier run */
			char *c;
			while ((c = strchr(tok, ','))) {
				char *q = c;
				while (q > decl && isspace((unsigned char)q[-1])) q--;
				char *e = q;
				while (q > decl && (isalnum((unsigned char)q[-1]) || q[-1] == '_')) q--;
				if (e > q && n < max) {
					size_t k = (size_t)(e - q);
					if (k > 63) k = 63;
					memcpy(out[n], q, k);
					out[n][k] = '\0';
					n++;
				}
				tok = c + 1;
			}
		}
		if (n < max) snprintf(out[n++], 64, "%s", name);
	}
	return n;
}

static int has(char names[][64], int n, const char *x)
{
	for (int i = 0; i < n; i++)
		if (strcmp(names[i], x) == 0) return 1;
	return 0;
}

START_TEST(test_parser_sees_the_members)
{
	char *hdr = slurp("core/include/arb/plugin.h");
	strip_comments(hdr);
	char names[64][64];
	int n = members(hdr, "struct arb_host {", names, 64);
	/* the parser must find the known ones, or the doc test proves nothing */
	ck_assert_int_ge(n, 17);
	ck_assert(has(names, n, "abi_version") && has(names, n, "core") &&
		  has(names, n, "log") && has(names, n, "set_error") &&
		  has(names, n, "tern_create") && has(names, n, "call_backward") &&
		  has(names, n, "conf_int_list"));
	n = members(hdr, "typedef struct arb_plugin {", names, 64);
	ck_assert_int_ge(n, 17);
	ck_assert(has(names, n, "build_sig") && has(names, n, "schema") &&
		  has(names, n, "create") && has(names, n, "metrics"));
	n = members(hdr, "typedef struct arb_io {", names, 64);
	ck_assert(has(names, n, "B") && has(names, n, "T") && has(names, n, "D") &&
		  has(names, n, "aux_loss") && has(names, n, "bytes"));
	free(hdr);
}
END_TEST

static void check_struct(const char *hdr, const char *doc, const char *opener,
			 const char *label)
{
	char names[64][64], want[80];
	int n = members(hdr, opener, names, 64);
	for (int i = 0; i < n; i++) {
		snprintf(want, sizeof want, "`%.63s`", names[i]);
		ck_assert_msg(strstr(doc, want) != NULL,
			      "docs/plugin-abi.md does not describe %s member %s",
			      label, want);
	}
}

START_TEST(test_every_member_documented)
{
	char *hdr = slurp("core/include/arb/plugin.h");
	char *doc = slurp("docs/plugin-abi.md");
	strip_comments(hdr);
	check_struct(hdr, doc, "struct arb_host {", "struct arb_host");
	check_struct(hdr, doc, "typedef struct arb_plugin {", "struct arb_plugin");
	check_struct(hdr, doc, "typedef struct arb_io {", "struct arb_io");
	free(hdr);
	free(doc);
}
END_TEST

/* the topics the document promises */
START_TEST(test_doc_sections)
{
	char *doc = slurp("docs/plugin-abi.md");
	const char *want[] = {
		"## Lifecycle", "## Host services", "## Slots and `struct arb_io`",
		"## Tensors", "## Named tensors", "## Config schemas",
		"## Versioning and compatibility", "## Building a plugin",
		"## A minimal plugin", "-fvisibility=hidden", "-Wl,-z,defs",
		"-Xcompiler -fPIC,-fvisibility=hidden", "-Xlinker -z,defs",
		"ARB_PLUGIN_DEFINE(", "`struct_size`", "`build_sig`",
	};
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
		ck_assert_msg(strstr(doc, want[i]) != NULL,
			      "docs/plugin-abi.md lacks '%s'", want[i]);
	free(doc);
}
END_TEST

Suite *suite_docs(void)
{
	Suite *s = suite_create("docs");
	TCase *tc = tcase_create("plugin_abi");
	tcase_add_test(tc, test_parser_sees_the_members);
	tcase_add_test(tc, test_every_member_documented);
	tcase_add_test(tc, test_doc_sections);
	suite_add_tcase(s, tc);
	return s;
}
