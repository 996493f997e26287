/*
 * core/config.c -- strict INI configuration on top of the system inih.
 *
 * A file is read once with ini_parse_stream() through our own line reader:
 *   - the reader counts lines; inih calls the handler right after the reader
 *     returned a line, so the count is the handler's line number;
 *   - the reader reads each physical line whole and refuses one that does
 *     not fit in inih's buffer ("line too long"), instead of letting inih
 *     split it into a truncated value and a phantom next line;
 *   - the reader recognizes section headers itself, so that an empty
 *     section (a plugin enabled with its defaults) still exists.
 * Every error is "file:line: [section] key: message" (or "--set s.k=v: ..."
 * for overrides) with ARB_ERR_CONFIG. The first error in file order wins.
 *
 * Sections: the core ones ([run] [data] [model] [train] [schedule]) are
 * validated against core/schema.c at load time; any other [name] or
 * [name:instance] is a plugin section, kept raw (key, value, line) until
 * arb_cfg_validate_section() checks it against the plugin's schema.
 *
 * Values: indented lines continue the previous key's value (inih's
 * multi-line mode, which r55 cannot turn off); the pieces are joined
 * without a separator, so that a long comma-separated list can be wrapped.
 * arb_cfg_dump() uses this to keep every line inside inih's buffer.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <ini.h>
#include "core.h"

#define STR_MAX 1023     /* longest STRING value (arb/plugin.h) */
#define DUMP_WIDTH 120   /* dump wraps values longer than this */

/* ---------------------------------------------------------------------------
 * data */
typedef struct kv {
	char *key;
	char *value;         /* pieces of continuation lines joined */
	int line;            /* 0 when it came from --set */
	int cont_line;       /* last continuation line, 0 if none */
	char *origin;        /* the --set text, NULL for the file */
} kv;

typedef struct val {
	char *text;          /* as written (trimmed) or the default */
	int64_t i;           /* INT; BOOL 0/1; ENUM choice index */
	double f;            /* FLOAT */
	int64_t *list;       /* INT_LIST */
	int nlist;
} val;

struct arb_conf {
	char *section;
	const arb_conf_key *schema; /* our own copy: a plugin's schema may be
				       unloaded (dlclose) before the dump */
	int n;
	int nschema;                /* entries of the copy */
	val *v;
};

typedef struct section {
	char *name;
	int core;            /* index into core_tab, -1 for plugin sections */
	int line;            /* header line in the file, 0 if none */
	char *origin;        /* --set that created it, NULL otherwise */
	kv *kv;
	int nkv, cap;
	arb_conf *conf;      /* NULL until validated */
} section;

struct arb_cfg {
	char *path;
	section *sec;
	int nsec, cap;
};

static const struct {
	const char *name;
	const arb_conf_key *schema;
} core_tab[] = {
	{ "run", arb_schema_run },
	{ "data", arb_schema_data },
	{ "model", arb_schema_model },
	{ "train", arb_schema_train },
	{ "schedule", arb_schema_schedule },
};
#define NCORE ((int)(sizeof core_tab / sizeof core_tab[0]))

/* ---------------------------------------------------------------------------
 * small helpers */
static char *xstrdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *p = malloc(n);
	if (p) memcpy(p, s, n);
	return p;
}

/* optimal string alignment distance (transpositions count 1), capped */
static int edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	if (la > 63 || lb > 63) return 99;
	int d[64][64];
	for (size_t i = 0; i <= la; i++) d[i][0] = (int)i;
	for (size_t j = 0; j <= lb; j++) d[0][j] = (int)j;
	for (size_t i = 1; i <= la; i++)
		for (size_t j = 1; j <= lb; j++) {
			int cost = tolower((unsigned char)a[i - 1]) !=
				   tolower((unsigned char)b[j - 1]);
			int v = d[i - 1][j] + 1;
			if (d[i][j - 1] + 1 < v) v = d[i][j - 1] + 1;
			if (d[i - 1][j - 1] + cost < v) v = d[i - 1][j - 1] + cost;
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] &&
			    a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < v)
				v = d[i - 2][j - 2] + 1;
			d[i][j] = v;
		}
	return d[la][lb];
}

/* closest schema key within distance 2, or NULL */
static const char *near_key(const arb_conf_key *schema, const char *key)
{
	const char *best = NULL;
	int bd = 3;
	for (const arb_conf_key *k = schema; k && k->key; k++) {
		int d = edit_distance(key, k->key);
		if (d < bd) { bd = d; best = k->key; }
	}
	return best;
}

/* closest choice of an enum ("a|b|c") within distance 2, into out */
static int near_choice(const char *choices, const char *v, char *out, size_t cap)
{
	int bd = 3;
	const char *p = choices;
	while (p && *p) {
		const char *e = strchr(p, '|');
		size_t n = e ? (size_t)(e - p) : strlen(p);
		char c[128];
		if (n < sizeof c) {
			memcpy(c, p, n);
			c[n] = '\0';
			int d = edit_distance(v, c);
			if (d < bd) { bd = d; snprintf(out, cap, "%s", c); }
		}
		p = e ? e + 1 : NULL;
	}
	return bd <= 2;
}

static int core_index(const char *name)
{
	for (int i = 0; i < NCORE; i++)
		if (strcmp(core_tab[i].name, name) == 0) return i;
	return -1;
}

/* a core section name that `name` is a near miss of (NULL if none). The
 * allowed distance shrinks for short names so that a plugin called "moe"
 * is not mistaken for [model]. */
static const char *near_core(const char *name)
{
	const char *best = NULL;
	int bd = 99;
	for (int i = 0; i < NCORE; i++) {
		size_t la = strlen(name), lb = strlen(core_tab[i].name);
		size_t m = la < lb ? la : lb;
		int lim = (int)((m - 1) / 2);
		if (m == 0) continue;
		if (lim > 2) lim = 2;
		int d = edit_distance(name, core_tab[i].name);
		if (d <= lim && d < bd) { bd = d; best = core_tab[i].name; }
	}
	return best;
}

/* keys: letters, digits, '_' (schemas use e.g. sr_R) */
static int key_ok(const char *s, size_t n)
{
	if (n == 0) return 0;
	for (size_t i = 0; i < n; i++)
		if (!(isalnum((unsigned char)s[i]) || s[i] == '_'))
			return 0;
	return 1;
}

/* section and plugin names: [a-z0-9_]+ */
static int name_ok(const char *s, size_t n)
{
	if (n == 0) return 0;
	for (size_t i = 0; i < n; i++)
		if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) ||
		      s[i] == '_'))
			return 0;
	return 1;
}

/* plugin section syntax: name or name:instance, both [a-z0-9_]+ */
static int plugin_section_ok(const char *s)
{
	const char *c = strchr(s, ':');
	if (!c) return name_ok(s, strlen(s));
	return name_ok(s, (size_t)(c - s)) && name_ok(c + 1, strlen(c + 1));
}

/* Explain why a section name is refused; 0 if it is acceptable. */
static int section_name_problem(const char *name, char *msg, size_t cap)
{
	if (core_index(name) >= 0) return 0;
	const char *nc = near_core(name);
	if (!plugin_section_ok(name)) {
		char hint[64] = "";
		if (nc) snprintf(hint, sizeof hint, " (did you mean [%s]?)", nc);
		snprintf(msg, cap, "invalid section name%s: core sections are "
			 "[run] [data] [model] [train] [schedule]; plugin "
			 "sections are [name] or [name:instance] with lowercase "
			 "letters, digits and '_'", hint);
		return 1;
	}
	if (nc) {
		snprintf(msg, cap, "unknown section (did you mean [%s]?)", nc);
		return 1;
	}
	return 0;
}

static const char *type_name(int t)
{
	switch (t) {
	case ARB_CONF_INT: return "int";
	case ARB_CONF_FLOAT: return "float";
	case ARB_CONF_BOOL: return "bool";
	case ARB_CONF_STRING: return "string";
	case ARB_CONF_ENUM: return "enum";
	case ARB_CONF_INT_LIST: return "int list";
	}
	return "unknown type";
}

static void fmt_num(char *out, size_t cap, double x)
{
	if (x == floor(x) && fabs(x) < 1e15)
		snprintf(out, cap, "%.0f", x);
	else
		snprintf(out, cap, "%g", x);
}

static int has_range(const arb_conf_key *k)
{
	return !(k->min == 0 && k->max == 0);
}

/* ---------------------------------------------------------------------------
 * sections and keys */
static section *find_section(const arb_cfg *cfg, const char *name)
{
	for (int i = 0; i < cfg->nsec; i++)
		if (strcmp(cfg->sec[i].name, name) == 0) return &cfg->sec[i];
	return NULL;
}

static section *add_section(arb_cfg *cfg, const char *name, int line,
			    const char *origin)
{
	if (cfg->nsec == cfg->cap) {
		int cap = cfg->cap ? cfg->cap * 2 : 8;
		section *s = realloc(cfg->sec, (size_t)cap * sizeof *s);
		if (!s) return NULL;
		cfg->sec = s;
		cfg->cap = cap;
	}
	section *s = &cfg->sec[cfg->nsec];
	memset(s, 0, sizeof *s);
	s->name = xstrdup(name);
	s->origin = origin ? xstrdup(origin) : NULL;
	if (!s->name || (origin && !s->origin)) {
		free(s->name);
		free(s->origin);
		return NULL;
	}
	s->core = core_index(name);
	s->line = line;
	cfg->nsec++;
	return s;
}

static kv *find_kv(section *s, const char *key)
{
	for (int i = 0; i < s->nkv; i++)
		if (strcmp(s->kv[i].key, key) == 0) return &s->kv[i];
	return NULL;
}

static kv *add_kv(section *s, const char *key, const char *value, int line,
		  const char *origin)
{
	if (s->nkv == s->cap) {
		int cap = s->cap ? s->cap * 2 : 8;
		kv *k = realloc(s->kv, (size_t)cap * sizeof *k);
		if (!k) return NULL;
		s->kv = k;
		s->cap = cap;
	}
	kv *k = &s->kv[s->nkv];
	memset(k, 0, sizeof *k);
	k->key = xstrdup(key);
	k->value = xstrdup(value);
	k->origin = origin ? xstrdup(origin) : NULL;
	if (!k->key || !k->value || (origin && !k->origin)) {
		free(k->key);
		free(k->value);
		free(k->origin);
		return NULL;
	}
	k->line = line;
	s->nkv++;
	return k;
}

static void schema_free(arb_conf_key *k, int n)
{
	if (!k) return;
	for (int i = 0; i < n; i++) {
		free((char *)k[i].key);
		free((char *)k[i].def);
		free((char *)k[i].choices);
		free((char *)k[i].help);
	}
	free(k);
}

/* deep copy of n schema entries plus the terminator */
static arb_conf_key *schema_copy(const arb_conf_key *src, int n)
{
	arb_conf_key *k = calloc((size_t)n + 1, sizeof *k);
	if (!k) return NULL;
	for (int i = 0; i < n; i++) {
		k[i] = src[i];
		k[i].key = xstrdup(src[i].key);
		k[i].def = src[i].def ? xstrdup(src[i].def) : NULL;
		k[i].choices = src[i].choices ? xstrdup(src[i].choices) : NULL;
		k[i].help = src[i].help ? xstrdup(src[i].help) : NULL;
		if (!k[i].key || (src[i].def && !k[i].def) ||
		    (src[i].choices && !k[i].choices) ||
		    (src[i].help && !k[i].help)) {
			schema_free(k, i + 1);
			return NULL;
		}
	}
	return k;
}

static void conf_free(arb_conf *c)
{
	if (!c) return;
	for (int i = 0; i < c->n; i++) {
		free(c->v[i].text);
		free(c->v[i].list);
	}
	schema_free((arb_conf_key *)c->schema, c->nschema);
	free(c->v);
	free(c->section);
	free(c);
}

void arb_cfg_free(arb_cfg *cfg)
{
	if (!cfg) return;
	for (int i = 0; i < cfg->nsec; i++) {
		section *s = &cfg->sec[i];
		for (int j = 0; j < s->nkv; j++) {
			free(s->kv[j].key);
			free(s->kv[j].value);
			free(s->kv[j].origin);
		}
		free(s->kv);
		free(s->name);
		free(s->origin);
		conf_free(s->conf);
	}
	free(cfg->sec);
	free(cfg->path);
	free(cfg);
}

/* ---------------------------------------------------------------------------
 * value parsing: fills v from text per the key's type; on failure writes a
 * message (without location) into msg and returns 1 */
static int parse_int(const char *s, int64_t *out)
{
	if (!*s) return 1;
	errno = 0;
	char *end;
	long long x = strtoll(s, &end, 10);
	if (*end || isspace((unsigned char)*s)) return 1;
	if (errno == ERANGE) return 2;
	*out = x;
	return 0;
}

static int parse_value(const arb_conf_key *k, const char *text, val *v,
		       char *msg, size_t cap)
{
	char lo[32], hi[32];
	fmt_num(lo, sizeof lo, k->min);
	fmt_num(hi, sizeof hi, k->max);
	memset(v, 0, sizeof *v);
	for (const char *p = text; *p; p++)
		if (*p == ';' && p > text && isspace((unsigned char)p[-1])) {
			snprintf(msg, cap, "value contains ' ;', which starts an "
				 "INI comment (comments are not allowed inside a "
				 "value or on a continuation line)");
			return 1;
		}
	switch (k->type) {
	case ARB_CONF_INT: {
		int r = parse_int(text, &v->i);
		if (r == 1) {
			snprintf(msg, cap, "'%s' is not an integer", text);
			return 1;
		}
		if (r == 2 || (has_range(k) && ((double)v->i < k->min ||
						(double)v->i > k->max))) {
			snprintf(msg, cap, "%s is out of range [%s, %s]", text,
				 lo, hi);
			return 1;
		}
		break;
	}
	case ARB_CONF_FLOAT: {
		char *end;
		errno = 0;
		v->f = strtod(text, &end);
		if (!*text || *end || isspace((unsigned char)*text)) {
			snprintf(msg, cap, "'%s' is not a number", text);
			return 1;
		}
		if (!isfinite(v->f)) {
			snprintf(msg, cap, "'%s' is not a finite number", text);
			return 1;
		}
		if (has_range(k) && (v->f < k->min || v->f > k->max)) {
			snprintf(msg, cap, "%s is out of range [%s, %s]", text,
				 lo, hi);
			return 1;
		}
		break;
	}
	case ARB_CONF_BOOL: {
		static const char *const t[] = { "true", "yes", "on", "1" };
		static const char *const f[] = { "false", "no", "off", "0" };
		int found = 0;
		for (int i = 0; i < 4; i++) {
			if (strcasecmp(text, t[i]) == 0) { v->i = 1; found = 1; }
			if (strcasecmp(text, f[i]) == 0) { v->i = 0; found = 1; }
		}
		if (!found) {
			snprintf(msg, cap, "'%s' is not a boolean (true/false, "
				 "yes/no, on/off, 1/0)", text);
			return 1;
		}
		break;
	}
	case ARB_CONF_STRING:
		if (strlen(text) > STR_MAX) {
			snprintf(msg, cap, "value is too long (%zu bytes, max %d)",
				 strlen(text), STR_MAX);
			return 1;
		}
		break;
	case ARB_CONF_ENUM: {
		int idx = 0, found = 0;
		const char *p = k->choices;
		size_t n = strlen(text);
		while (p && *p) {
			const char *e = strchr(p, '|');
			size_t m = e ? (size_t)(e - p) : strlen(p);
			if (m == n && memcmp(p, text, n) == 0) { found = 1; break; }
			idx++;
			p = e ? e + 1 : NULL;
		}
		if (!found) {
			char near[128], hint[160] = "";
			if (near_choice(k->choices, text, near, sizeof near))
				snprintf(hint, sizeof hint, " (did you mean '%s'?)",
					 near);
			snprintf(msg, cap, "'%s' is not one of %s%s", text,
				 k->choices ? k->choices : "(no choices)", hint);
			return 1;
		}
		v->i = idx;
		break;
	}
	case ARB_CONF_INT_LIST: {
		int n = 0, item = 0;
		const char *p = text;
		size_t len = strlen(text);
		v->list = malloc((len / 2 + 1) * sizeof *v->list);
		if (!v->list) {
			snprintf(msg, cap, "out of memory");
			return 1;
		}
		while (*text && p) {
			const char *e = strchr(p, ',');
			size_t m = e ? (size_t)(e - p) : strlen(p);
			char buf[64];
			item++;
			while (m && isspace((unsigned char)*p)) { p++; m--; }
			while (m && isspace((unsigned char)p[m - 1])) m--;
			int r = m < sizeof buf ? 0 : 1;
			if (!r) {
				memcpy(buf, p, m);
				buf[m] = '\0';
				r = parse_int(buf, &v->list[n]);
			}
			if (r == 1) {
				snprintf(msg, cap, "'%s' is not a comma-separated "
					 "list of integers (item %d: '%.*s')", text,
					 item, (int)(m < 40 ? m : 40), p);
				goto list_fail;
			}
			if (r == 2 || (has_range(k) &&
				       ((double)v->list[n] < k->min ||
					(double)v->list[n] > k->max))) {
				snprintf(msg, cap, "item %d (%s) is out of range "
					 "[%s, %s]", item, buf, lo, hi);
				goto list_fail;
			}
			n++;
			p = e ? e + 1 : NULL;
		}
		v->nlist = n;
		break;
list_fail:
		free(v->list);
		v->list = NULL;
		return 1;
	}
	default:
		snprintf(msg, cap, "schema entry has unknown type %d", k->type);
		return 1;
	}
	v->text = xstrdup(text);
	if (!v->text) {
		free(v->list);
		v->list = NULL;
		snprintf(msg, cap, "out of memory");
		return 1;
	}
	return 0;
}

/* ---------------------------------------------------------------------------
 * error locations */
static int fail_at(arb_error *err, const arb_cfg *cfg, const section *s,
		   const kv *k, const char *fmt, ...) ARB_PRINTF(5, 6);
static int fail_at(arb_error *err, const arb_cfg *cfg, const section *s,
		   const kv *k, const char *fmt, ...)
{
	char where[1200], what[600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	const char *path = cfg->path && *cfg->path ? cfg->path : "(no file)";
	if (k && k->origin)
		snprintf(where, sizeof where, "--set %s", k->origin);
	else if (k)
		snprintf(where, sizeof where, "%s:%d", path, k->line);
	else if (s && s->line)
		snprintf(where, sizeof where, "%s:%d", path, s->line);
	else if (s && s->origin)
		snprintf(where, sizeof where, "--set %s", s->origin);
	else
		snprintf(where, sizeof where, "%s", path);
	return ARB_FAIL(err, ARB_ERR_CONFIG, "%s: %s", where, what);
}

/* Validate section s against schema: unknown keys, values, required keys;
 * builds s->conf. */
static arb_status validate(arb_cfg *cfg, section *s, const arb_conf_key *schema,
			   arb_error *err)
{
	char msg[600];
	int n = 0;
	for (const arb_conf_key *k = schema; k->key; k++) n++;
	for (int i = 0; i < s->nkv; i++) {
		kv *k = &s->kv[i];
		const arb_conf_key *sk = NULL;
		for (int j = 0; j < n; j++)
			if (strcmp(schema[j].key, k->key) == 0) sk = &schema[j];
		if (sk) continue;
		const char *nk = near_key(schema, k->key);
		if (nk)
			return fail_at(err, cfg, s, k, "[%s] %s: unknown key (did "
				       "you mean '%s'?)", s->name, k->key, nk);
		char keys[400] = "";
		size_t used = 0;
		for (int j = 0; j < n && used + 2 < sizeof keys; j++)
			used += (size_t)snprintf(keys + used, sizeof keys - used,
						 "%s%s", j ? ", " : "",
						 schema[j].key);
		return fail_at(err, cfg, s, k, "[%s] %s: unknown key (keys of "
			       "[%s]: %s)", s->name, k->key, s->name,
			       n ? keys : "none");
	}
	arb_conf *c = calloc(1, sizeof *c);
	if (!c) return ARB_FAIL(err, ARB_ERR_NOMEM, "out of memory");
	c->section = xstrdup(s->name);
	c->schema = schema_copy(schema, n);
	c->nschema = c->schema ? n : 0;
	c->v = calloc((size_t)n + 1, sizeof *c->v);
	if (!c->section || !c->schema || !c->v) {
		conf_free(c);
		return ARB_FAIL(err, ARB_ERR_NOMEM, "out of memory");
	}
	for (int j = 0; j < n; j++) {
		const arb_conf_key *sk = &schema[j];
		kv *k = find_kv(s, sk->key);
		if (!k && !sk->def) {
			conf_free(c);
			return fail_at(err, cfg, s, NULL, "[%s] %s: missing "
				       "required key (%s: %s)", s->name, sk->key,
				       type_name(sk->type), sk->help ? sk->help : "");
		}
		const char *text = k ? k->value : sk->def;
		if (parse_value(sk, text, &c->v[j], msg, sizeof msg)) {
			conf_free(c);
			if (!k)
				return fail_at(err, cfg, s, NULL, "[%s] %s: default "
					       "'%s' is invalid: %s", s->name,
					       sk->key, sk->def, msg);
			if (k->cont_line)
				return fail_at(err, cfg, s, k, "[%s] %s: %s (the "
					       "value continues on indented line "
					       "%d; remove the indentation if that "
					       "line is a key of its own)", s->name,
					       k->key, msg, k->cont_line);
			return fail_at(err, cfg, s, k, "[%s] %s: %s", s->name,
				       k->key, msg);
		}
		c->n = j + 1;
	}
	c->n = n;
	conf_free(s->conf);
	s->conf = c;
	return ARB_OK;
}

/* ---------------------------------------------------------------------------
 * the file: reader and handler for inih */
typedef struct parse_state {
	arb_cfg *cfg;
	FILE *f;
	int lineno;          /* lines handed to inih so far */
	section *cur;        /* current section (NULL before the first) */
	int prev_key;        /* a key was seen in the current section (inih's
				prev_name: an indented line continues it) */
	kv *last;            /* the kv an indented line would continue */
	char *line;          /* the current physical line */
	size_t cap;
	arb_error *err;
	int failed;
} parse_state;

static int pfail(parse_state *ps, const char *fmt, ...) ARB_PRINTF(2, 3);
static int pfail(parse_state *ps, const char *fmt, ...)
{
	char what[900];
	va_list ap;
	if (ps->failed) return 0;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	ARB_FAIL(ps->err, ARB_ERR_CONFIG, "%s:%d: %s", ps->cfg->path, ps->lineno,
		 what);
	ps->failed = 1;
	return 0;
}

/* inih's section header: '[' ... ']' where ']' is searched like inih does
 * (an inline ';' comment after whitespace ends the search) */
static const char *header_end(const char *s)
{
	int ws = 0;
	for (; *s; s++) {
		if (*s == ']') return s;
		if (*s == ';' && ws) return NULL;
		ws = isspace((unsigned char)*s) != 0;
	}
	return NULL;
}

static void on_header(parse_state *ps, const char *start)
{
	const char *end = header_end(start + 1);
	if (!end) {
		pfail(ps, "syntax error: section header without ']': %s", start);
		return;
	}
	for (const char *p = end + 1; *p; p++) {
		if (*p == ';' || *p == '#') break;
		if (!isspace((unsigned char)*p)) {
			pfail(ps, "syntax error: text after the section header: %s",
			      start);
			return;
		}
	}
	char name[256];
	size_t n = (size_t)(end - start - 1);
	if (n >= sizeof name) n = sizeof name - 1;
	memcpy(name, start + 1, n);
	name[n] = '\0';
	char msg[400];
	if (section_name_problem(name, msg, sizeof msg)) {
		pfail(ps, "[%s]: %s", name, msg);
		return;
	}
	section *s = find_section(ps->cfg, name);
	if (s && s->line) {
		pfail(ps, "[%s]: duplicate section (first at line %d)", name,
		      s->line);
		return;
	}
	if (s) {
		s->line = ps->lineno;    /* a core section made earlier */
	} else if (!(s = add_section(ps->cfg, name, ps->lineno, NULL))) {
		pfail(ps, "out of memory");
		return;
	}
	ps->cur = s;
	ps->prev_key = 0;
	ps->last = NULL;
}

static char *reader(char *str, int num, void *stream)
{
	parse_state *ps = stream;
	if (ps->failed) return NULL;
	size_t n = 0;
	int c, nul = 0;
	for (;;) {
		c = getc(ps->f);
		if (c == EOF) break;
		if (n + 2 > ps->cap) {
			size_t cap = ps->cap ? ps->cap * 2 : 256;
			char *l = realloc(ps->line, cap);
			if (!l) {
				ps->lineno++;
				pfail(ps, "out of memory");
				return NULL;
			}
			ps->line = l;
			ps->cap = cap;
		}
		if (c == '\0') nul = 1;
		ps->line[n++] = (char)c;
		if (c == '\n') break;
	}
	if (n == 0) {
		if (ferror(ps->f)) {
			ps->lineno++;
			pfail(ps, "read error");
		}
		return NULL;
	}
	ps->line[n] = '\0';
	ps->lineno++;
	/* bytes of the line without its terminator; inih needs room for
	 * '\r', '\n' and '\0' beyond the longest line */
	size_t len = n - (ps->line[n - 1] == '\n');
	if (len && ps->line[len - 1] == '\r') len--;
	int max = num - 3;
	if ((long)len > max) {
		pfail(ps, "line too long (%zu bytes, max %d)", len, max);
		return NULL;
	}
	if (nul) {
		pfail(ps, "line contains a NUL byte");
		return NULL;
	}
	memcpy(str, ps->line, n + 1);

	/* mirror inih's classification to see section headers (also empty
	 * sections, which never reach the handler) */
	char *s = ps->line;
	if (ps->lineno == 1 && (unsigned char)s[0] == 0xEF &&
	    (unsigned char)s[1] == 0xBB && (unsigned char)s[2] == 0xBF)
		s += 3;
	char *start = s;
	while (*start && isspace((unsigned char)*start)) start++;
	char *e = start + strlen(start);
	while (e > start && isspace((unsigned char)e[-1])) *--e = '\0';
	if (*start == '\0' || *start == ';' || *start == '#')
		return str;
	if (ps->prev_key && start > s)
		return str;                  /* continuation of a value */
	if (*start == '[')
		on_header(ps, start);
	else if (!strpbrk(start, "=:") && ps->cur)
		pfail(ps, "[%s] syntax error: expected 'key = value', got "
		      "'%.60s'", ps->cur->name, start);
	else if (!strpbrk(start, "=:"))
		pfail(ps, "syntax error: expected '[section]' or 'key = value', "
		      "got '%.60s'", start);
	return str;
}

static int handler(void *user, const char *sec, const char *name,
		   const char *value)
{
	parse_state *ps = user;
	if (ps->failed) return 1;
	/* the raw line decides whether inih treated it as a continuation */
	const char *raw = ps->line;
	if (ps->lineno == 1 && (unsigned char)raw[0] == 0xEF) raw += 3;
	int cont = ps->prev_key && isspace((unsigned char)raw[0]);
	if (cont) {
		kv *k = ps->last;
		if (!k) return 1;
		size_t a = strlen(k->value), b = strlen(value);
		char *v = realloc(k->value, a + b + 1);
		if (!v) return pfail(ps, "out of memory"), 1;
		memcpy(v + a, value, b + 1);
		k->value = v;
		k->cont_line = ps->lineno;
		return 1;
	}
	if (!ps->cur) {
		pfail(ps, "%s: key before the first [section]", name);
		return 1;
	}
	if (strcmp(sec, ps->cur->name) != 0) {
		/* cannot happen unless our header parsing and inih's differ */
		pfail(ps, "[%s] %s: internal error: inih reports section [%s]",
		      ps->cur->name, name, sec);
		return 1;
	}
	section *s = ps->cur;
	kv *old = find_kv(s, name);
	if (old) {
		pfail(ps, "[%s] %s: duplicate key (first set at line %d)", s->name,
		      name, old->line);
		return 1;
	}
	if (!key_ok(name, strlen(name))) {
		/* strict: a key is [A-Za-z0-9_]+ in every schema */
		const arb_conf_key *schema =
			s->core >= 0 ? core_tab[s->core].schema : NULL;
		const char *nk = schema ? near_key(schema, name) : NULL;
		char hint[100] = "";
		if (nk) snprintf(hint, sizeof hint, " (did you mean '%s'?)", nk);
		pfail(ps, "[%s] %s: unknown key: keys are letters, digits and "
		      "'_'%s", s->name, name, hint);
		return 1;
	}
	kv *k = add_kv(s, name, value, ps->lineno, NULL);
	if (!k) return pfail(ps, "out of memory"), 1;
	ps->prev_key = 1;
	ps->last = k;
	return 1;
}

static arb_status parse_file(arb_cfg *cfg, const char *path, arb_error *err)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return ARB_FAIL(err, ARB_ERR_CONFIG, "%s: cannot open config "
				"file: %s", path, strerror(errno));
	parse_state ps = { .cfg = cfg, .f = f, .err = err };
	int r = ini_parse_stream(reader, &ps, handler, &ps);
	fclose(f);
	free(ps.line);
	if (ps.failed) return ARB_ERR_CONFIG;
	if (r == -2) return ARB_FAIL(err, ARB_ERR_NOMEM, "%s: out of memory", path);
	if (r != 0)  /* a syntax error our reader did not classify */
		return ARB_FAIL(err, ARB_ERR_CONFIG, "%s:%d: syntax error", path, r);
	return ARB_OK;
}

/* ---------------------------------------------------------------------------
 * overrides "section.key=value" */
static arb_status apply_override(arb_cfg *cfg, const char *o, arb_error *err)
{
	const char *eq = strchr(o, '=');
	const char *dot = strchr(o, '.');
	if (!eq || !dot || dot > eq || dot == o || dot + 1 == eq)
		return ARB_FAIL(err, ARB_ERR_CONFIG, "--set %s: expected "
				"section.key=value (e.g. train.steps=100)", o);
	char sec[256], key[256];
	size_t ns = (size_t)(dot - o), nk = (size_t)(eq - dot - 1);
	while (nk && isspace((unsigned char)dot[nk])) nk--;
	if (ns >= sizeof sec || nk >= sizeof key)
		return ARB_FAIL(err, ARB_ERR_CONFIG, "--set %s: section or key "
				"name too long", o);
	memcpy(sec, o, ns);
	sec[ns] = '\0';
	memcpy(key, dot + 1, nk);
	key[nk] = '\0';
	const char *v = eq + 1;
	while (isspace((unsigned char)*v)) v++;
	char *value = xstrdup(v);
	if (!value) return ARB_FAIL(err, ARB_ERR_NOMEM, "out of memory");
	size_t vl = strlen(value);
	while (vl && isspace((unsigned char)value[vl - 1])) value[--vl] = '\0';
	char msg[400];
	arb_status st = ARB_OK;
	if (strchr(value, '\n')) {
		st = ARB_FAIL(err, ARB_ERR_CONFIG, "--set %s: [%s] %s: the value "
			      "contains a newline", o, sec, key);
		goto out;
	}
	if (section_name_problem(sec, msg, sizeof msg)) {
		st = ARB_FAIL(err, ARB_ERR_CONFIG, "--set %s: [%s]: %s", o, sec,
			      msg);
		goto out;
	}
	if (!key_ok(key, strlen(key))) {
		st = ARB_FAIL(err, ARB_ERR_CONFIG, "--set %s: [%s] %s: unknown "
			      "key: keys are letters, digits and '_'",
			      o, sec, key);
		goto out;
	}
	section *s = find_section(cfg, sec);
	if (!s && !(s = add_section(cfg, sec, 0, o))) {
		st = ARB_FAIL(err, ARB_ERR_NOMEM, "out of memory");
		goto out;
	}
	kv *k = find_kv(s, key);
	if (k) {             /* replaces the file's value (or an earlier --set) */
		char *nv = xstrdup(value), *no = xstrdup(o);
		if (!nv || !no) {
			free(nv);
			free(no);
			st = ARB_FAIL(err, ARB_ERR_NOMEM, "out of memory");
			goto out;
		}
		free(k->value);
		free(k->origin);
		k->value = nv;
		k->origin = no;
		k->cont_line = 0;
	} else if (!add_kv(s, key, value, 0, o)) {
		st = ARB_FAIL(err, ARB_ERR_NOMEM, "out of memory");
	}
out:
	free(value);
	return st;
}

/* ---------------------------------------------------------------------------
 * public API */
arb_status arb_cfg_load(arb_cfg **out, const char *path,
			const char *const *overrides, arb_error *err)
{
	*out = NULL;
	arb_cfg *cfg = calloc(1, sizeof *cfg);
	if (!cfg) return ARB_FAIL(err, ARB_ERR_NOMEM, "out of memory");
	cfg->path = xstrdup(path ? path : "");
	if (!cfg->path) {
		arb_cfg_free(cfg);
		return ARB_FAIL(err, ARB_ERR_NOMEM, "out of memory");
	}
	arb_status st = ARB_OK;
	if (path && (st = parse_file(cfg, path, err))) goto fail;
	for (int i = 0; overrides && overrides[i]; i++)
		if ((st = apply_override(cfg, overrides[i], err))) goto fail;
	/* core sections always exist; they come first, in table order */
	for (int i = 0; i < NCORE; i++) {
		if (!find_section(cfg, core_tab[i].name) &&
		    !add_section(cfg, core_tab[i].name, 0, NULL)) {
			st = ARB_FAIL(err, ARB_ERR_NOMEM, "out of memory");
			goto fail;
		}
	}
	for (int i = 0; i < NCORE; i++) {
		section *s = find_section(cfg, core_tab[i].name);
		if ((st = validate(cfg, s, core_tab[i].schema, err))) goto fail;
	}
	*out = cfg;
	return ARB_OK;
fail:
	arb_cfg_free(cfg);
	return st;
}

const arb_conf *arb_cfg_section(const arb_cfg *cfg, const char *name)
{
	section *s = find_section(cfg, name);
	return s ? s->conf : NULL;
}

int arb_cfg_plugin_count(const arb_cfg *cfg)
{
	int n = 0;
	for (int i = 0; i < cfg->nsec; i++) n += cfg->sec[i].core < 0;
	return n;
}

const char *arb_cfg_plugin_section(const arb_cfg *cfg, int i)
{
	for (int j = 0; j < cfg->nsec; j++)
		if (cfg->sec[j].core < 0 && i-- == 0) return cfg->sec[j].name;
	return NULL;
}

arb_status arb_cfg_validate_section(arb_cfg *cfg, const char *name,
				    const arb_conf_key *schema, arb_error *err)
{
	section *s = find_section(cfg, name);
	if (!s)
		return ARB_FAIL(err, ARB_ERR_INVALID, "config has no section [%s]",
				name);
	if (!schema)
		return ARB_FAIL(err, ARB_ERR_INVALID, "[%s]: no schema", name);
	arb_status st = arb_schema_check(name, schema, err);
	if (st) return st;
	return validate(cfg, s, schema, err);
}

/* A semantic error found after validation (a combination of keys): the
 * location of `key` in [section] (its line, or its --set; the section header
 * when the key was not written), then "[section] key: message". */
arb_status arb_cfg_key_error(const arb_cfg *cfg, const char *name,
			     const char *key, arb_error *err, const char *fmt,
			     ...)
{
	char what[600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	section *s = find_section(cfg, name);
	kv *k = s && key ? find_kv(s, key) : NULL;
	return fail_at(err, cfg, s, k, "[%s] %s: %s", name, key ? key : "",
		       what);
}

const char *arb_cfg_path(const arb_cfg *cfg)
{
	return cfg->path;
}

/* Check a schema itself (plugins' schemas come from foreign code): keys
 * [A-Za-z0-9_]+ and unique, known types, enum choices, valid defaults. */
arb_status arb_schema_check(const char *owner, const arb_conf_key *schema,
			    arb_error *err)
{
	char msg[600];
	if (!schema)
		return ARB_FAIL(err, ARB_ERR_PLUGIN, "%s: schema is NULL", owner);
	for (int i = 0; schema[i].key; i++) {
		const arb_conf_key *k = &schema[i];
		if (i > 10000)
			return ARB_FAIL(err, ARB_ERR_PLUGIN, "%s: schema has no "
					"ARB_CONF_END terminator", owner);
		if (!key_ok(k->key, strlen(k->key)))
			return ARB_FAIL(err, ARB_ERR_PLUGIN, "%s: schema entry %d: "
					"key '%s' is not [A-Za-z0-9_]+", owner, i,
					k->key);
		for (int j = 0; j < i; j++)
			if (strcmp(schema[j].key, k->key) == 0)
				return ARB_FAIL(err, ARB_ERR_PLUGIN, "%s: schema "
						"entry %d: key '%s' appears twice",
						owner, i, k->key);
		if (k->type < ARB_CONF_INT || k->type > ARB_CONF_INT_LIST)
			return ARB_FAIL(err, ARB_ERR_PLUGIN, "%s: schema entry %d "
					"('%s'): unknown type %d", owner, i,
					k->key, k->type);
		if (k->type == ARB_CONF_ENUM && (!k->choices || !*k->choices))
			return ARB_FAIL(err, ARB_ERR_PLUGIN, "%s: schema entry %d "
					"('%s'): enum without choices", owner, i,
					k->key);
		if (has_range(k) && k->min > k->max)
			return ARB_FAIL(err, ARB_ERR_PLUGIN, "%s: schema entry %d "
					"('%s'): min > max", owner, i, k->key);
		if (k->def) {
			val v;
			if (parse_value(k, k->def, &v, msg, sizeof msg))
				return ARB_FAIL(err, ARB_ERR_PLUGIN, "%s: schema "
						"entry %d ('%s'): default '%s' is "
						"invalid: %s", owner, i, k->key,
						k->def, msg);
			free(v.text);
			free(v.list);
		}
	}
	return ARB_OK;
}

/* ---------------------------------------------------------------------------
 * dump and help */
/* "; help (type ...)" wrapped at spaces so that no line outgrows inih's
 * buffer */
static void key_comment(const arb_conf_key *k, FILE *f)
{
	char lo[32], hi[32], buf[1400];
	size_t n = 0;
	fmt_num(lo, sizeof lo, k->min);
	fmt_num(hi, sizeof hi, k->max);
	n += (size_t)snprintf(buf + n, sizeof buf - n, "%s (%s",
			      k->help ? k->help : "", type_name(k->type));
	if (k->type == ARB_CONF_ENUM)
		n += (size_t)snprintf(buf + n, sizeof buf - n, ": %s",
				      k->choices ? k->choices : "");
	else if ((k->type == ARB_CONF_INT || k->type == ARB_CONF_FLOAT ||
		  k->type == ARB_CONF_INT_LIST) && has_range(k))
		n += (size_t)snprintf(buf + n, sizeof buf - n, " in [%s, %s]", lo,
				      hi);
	if (!k->def)
		n += (size_t)snprintf(buf + n, sizeof buf - n, ", required");
	else if (strlen(k->def) <= 40)
		n += (size_t)snprintf(buf + n, sizeof buf - n, ", default \"%s\"",
				      k->def);
	if (n < sizeof buf - 2) snprintf(buf + n, sizeof buf - n, ")");
	const char *p = buf;
	while (*p) {
		size_t len = strlen(p), cut = len;
		if (len > DUMP_WIDTH - 4) {
			cut = DUMP_WIDTH - 4;
			while (cut > 20 && p[cut] != ' ') cut--;
			if (p[cut] != ' ') cut = DUMP_WIDTH - 4;
		}
		fprintf(f, "; %.*s\n", (int)cut, p);
		p += cut;
		while (*p == ' ') p++;
	}
}

/* "key = value", wrapped onto indented continuation lines when long. A
 * piece ends after a ',' where possible, else between two non-blank
 * characters; a piece never starts with a comment character. */
static void dump_kv(const char *key, const char *value, FILE *f)
{
	size_t len = strlen(value);
	fprintf(f, "%s = ", key);
	if (len + strlen(key) + 3 <= DUMP_WIDTH) {
		fprintf(f, "%s\n", value);
		return;
	}
	size_t pos = 0;
	int first = 1;
	while (pos < len) {
		size_t end = len;
		if (len - pos > DUMP_WIDTH - 8) {
			size_t lim = pos + DUMP_WIDTH - 8, cut = 0;
			for (size_t i = lim; i > pos + 8 && !cut; i--)
				if (value[i - 1] == ',' && !isspace((unsigned char)value[i]) &&
				    value[i] != ';' && value[i] != '#')
					cut = i;
			for (size_t i = lim; i > pos + 8 && !cut; i--)
				if (!isspace((unsigned char)value[i - 1]) &&
				    !isspace((unsigned char)value[i]) &&
				    value[i] != ';' && value[i] != '#')
					cut = i;
			if (cut) end = cut;
		}
		fprintf(f, "%s%.*s\n", first ? "" : "\t", (int)(end - pos),
			value + pos);
		first = 0;
		pos = end;
	}
}

void arb_cfg_dump(const arb_cfg *cfg, FILE *f)
{
	fprintf(f, "; arbcore configuration: every key, defaults filled\n");
	if (cfg->path && *cfg->path)
		fprintf(f, "; read from %s\n", cfg->path);
	for (int i = 0; i < cfg->nsec; i++) {
		const section *s = &cfg->sec[i];
		fprintf(f, "\n[%s]\n", s->name);
		if (s->conf) {
			for (int j = 0; j < s->conf->n; j++) {
				key_comment(&s->conf->schema[j], f);
				dump_kv(s->conf->schema[j].key, s->conf->v[j].text, f);
			}
		} else {
			fprintf(f, "; plugin section not validated yet: keys as "
				"given\n");
			for (int j = 0; j < s->nkv; j++)
				dump_kv(s->kv[j].key, s->kv[j].value, f);
		}
	}
}

void arb_schema_print(const char *sec, const arb_conf_key *schema, FILE *f)
{
	char lo[32], hi[32];
	fprintf(f, "[%s]\n", sec);
	if (!schema || !schema->key) {
		fprintf(f, "  (no keys)\n");
		return;
	}
	for (const arb_conf_key *k = schema; k->key; k++) {
		fmt_num(lo, sizeof lo, k->min);
		fmt_num(hi, sizeof hi, k->max);
		fprintf(f, "  %-16s %-8s ", k->key, type_name(k->type));
		if (k->def)
			fprintf(f, "default \"%s\"", k->def);
		else
			fprintf(f, "required");
		if (k->type == ARB_CONF_ENUM)
			fprintf(f, "  one of %s", k->choices ? k->choices : "");
		else if ((k->type == ARB_CONF_INT || k->type == ARB_CONF_FLOAT ||
			  k->type == ARB_CONF_INT_LIST) && has_range(k))
			fprintf(f, "  range [%s, %s]", lo, hi);
		fprintf(f, "\n      %s\n", k->help ? k->help : "");
	}
}

/* ---------------------------------------------------------------------------
 * typed accessors. Asking for a key the schema lacks, or with the wrong
 * type, is a programming error: say which and abort. */
static const val *lookup(const arb_conf *c, const char *key, const char *fn,
			 int t1, int t2, int t3, const arb_conf_key **sk)
{
	if (!c) {
		fprintf(stderr, "arbcore: %s(\"%s\") on a NULL section (not "
			"validated?)\n", fn, key);
		abort();
	}
	for (int i = 0; i < c->n; i++)
		if (strcmp(c->schema[i].key, key) == 0) {
			int t = c->schema[i].type;
			if (t != t1 && t != t2 && t != t3) {
				fprintf(stderr, "arbcore: %s: key '%s' of section "
					"[%s] is of type %s\n", fn, key,
					c->section, type_name(t));
				abort();
			}
			if (sk) *sk = &c->schema[i];
			return &c->v[i];
		}
	fprintf(stderr, "arbcore: %s: section [%s] has no key '%s' in its "
		"schema\n", fn, c->section, key);
	abort();
}

/* INT; also BOOL (0/1) and ENUM (index of the choice) */
int64_t arb_conf_int(const arb_conf *c, const char *key)
{
	return lookup(c, key, "arb_conf_int", ARB_CONF_INT, ARB_CONF_BOOL,
		      ARB_CONF_ENUM, NULL)->i;
}

/* FLOAT; also INT */
double arb_conf_float(const arb_conf *c, const char *key)
{
	const arb_conf_key *sk;
	const val *v = lookup(c, key, "arb_conf_float", ARB_CONF_FLOAT,
			      ARB_CONF_INT, ARB_CONF_FLOAT, &sk);
	return sk->type == ARB_CONF_INT ? (double)v->i : v->f;
}

int arb_conf_bool(const arb_conf *c, const char *key)
{
	return (int)lookup(c, key, "arb_conf_bool", ARB_CONF_BOOL, ARB_CONF_BOOL,
			   ARB_CONF_BOOL, NULL)->i;
}

/* the value's text for any type (STRING, ENUM choice, numbers as written) */
const char *arb_conf_str(const arb_conf *c, const char *key)
{
	const arb_conf_key *sk = NULL;
	for (int i = 0; c && i < c->n; i++)
		if (strcmp(c->schema[i].key, key) == 0) sk = &c->schema[i];
	return lookup(c, key, "arb_conf_str", sk ? sk->type : ARB_CONF_STRING,
		      ARB_CONF_STRING, ARB_CONF_STRING, NULL)->text;
}

/* copies up to max values and returns how many it copied; with out == NULL
 * returns the length of the list */
int arb_conf_int_list(const arb_conf *c, const char *key, int64_t *out, int max)
{
	const val *v = lookup(c, key, "arb_conf_int_list", ARB_CONF_INT_LIST,
			      ARB_CONF_INT_LIST, ARB_CONF_INT_LIST, NULL);
	if (!out) return v->nlist;
	int n = v->nlist < max ? v->nlist : max;
	for (int i = 0; i < n; i++) out[i] = v->list[i];
	return n;
}
