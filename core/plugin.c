/*
 * core/plugin.c -- the plugin loader: search path, dlopen, and every
 * refusal (see the loader section of core/core.h and docs/plugin-abi.md).
 *
 * Search order for plugin `name` (file name.so): each directory of the
 * config's run.plugin_path, then of $ARB_PLUGIN_PATH (both ':'-separated),
 * then arb_plugin_builtin_dir(). The first directory holding name.so wins;
 * if that file is refused, the refusal is the answer (a later directory is
 * never tried behind the user's back).
 *
 * Checks, in this order, each failing with ARB_ERR_PLUGIN and a message
 * that names the file:
 *   file or its directory writable by group/others (before any code runs)
 *   dlopen (dlerror + ldd hint), descriptor symbol, NULL descriptor,
 *   ABI major, newer minor, struct_size, build signature, name,
 *   slot, required callbacks, schema.
 */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "core.h"

#ifndef ARB_PREFIX
#define ARB_PREFIX "/usr/local"
#endif

/* the descriptor as ABI 1.0 defined it: the smallest struct_size accepted */
#define DESC_SIZE_1_0 sizeof(arb_plugin)

/* ---------------------------------------------------------------------------
 * directories */
static int is_dir(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

const char *arb_plugin_builtin_dir(void)
{
	static char dir[PATH_MAX + 64];
	char exe[PATH_MAX], cand[PATH_MAX + 64];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	if (n > 0) {
		exe[n] = '\0';
		char *slash = strrchr(exe, '/');
		if (slash) {
			*slash = '\0';
			snprintf(cand, sizeof cand, "%s/plugins", exe);
			if (is_dir(cand)) {
				snprintf(dir, sizeof dir, "%s", cand);
				return dir;
			}
			snprintf(cand, sizeof cand, "%s/../lib/arbcore/plugins", exe);
			if (is_dir(cand)) {
				snprintf(dir, sizeof dir, "%s", cand);
				return dir;
			}
		}
	}
	snprintf(dir, sizeof dir, "%s", ARB_PREFIX "/lib/arbcore/plugins");
	return dir;
}

/* the directories searched, in order, as one list of strings */
typedef struct dirlist {
	char **d;
	int n;
} dirlist;

static void dirs_add_path(dirlist *l, const char *path)
{
	if (!path) return;
	const char *p = path;
	while (*p) {
		const char *e = strchr(p, ':');
		size_t n = e ? (size_t)(e - p) : strlen(p);
		if (n) {
			char **d = realloc(l->d, (size_t)(l->n + 1) * sizeof *d);
			if (!d) return;
			l->d = d;
			if ((l->d[l->n] = malloc(n + 1))) {
				memcpy(l->d[l->n], p, n);
				l->d[l->n][n] = '\0';
				l->n++;
			}
		}
		p = e ? e + 1 : p + n;
	}
}

static void dirs_build(dirlist *l, const char *config_path)
{
	l->d = NULL;
	l->n = 0;
	dirs_add_path(l, config_path);
	dirs_add_path(l, getenv("ARB_PLUGIN_PATH"));
	char *b = strdup(arb_plugin_builtin_dir());
	if (!b) return;
	char **d = realloc(l->d, (size_t)(l->n + 1) * sizeof *d);
	if (!d) { free(b); return; }
	l->d = d;
	l->d[l->n++] = b;
}

static void dirs_free(dirlist *l)
{
	for (int i = 0; i < l->n; i++) free(l->d[i]);
	free(l->d);
}

static int name_ok(const char *s)
{
	if (!s || !*s) return 0;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
		      *s == '_'))
			return 0;
	return 1;
}

static const char *slot_name(int slot)
{
	switch (slot) {
	case ARB_SLOT_FFN: return "ffn";
	case ARB_SLOT_RESIDUAL: return "residual";
	case ARB_SLOT_INPUT: return "input";
	case ARB_SLOT_SERVICE: return "service";
	}
	return "unknown";
}

/* ---------------------------------------------------------------------------
 * permissions: a plugin runs with our privileges, so neither the file nor
 * the directory it is in may be writable by anyone else. Sticky
 * directories (like /tmp) only let owners replace their files: accepted. */
static arb_status check_writable(const char *what, const char *p,
				 const char *plugin, int is_directory,
				 arb_error *err)
{
	struct stat st;
	if (stat(p, &st) != 0)
		return ARB_FAIL(err, ARB_ERR_PLUGIN, "plugin %s: cannot stat %s "
				"%s: %s", plugin, what, p, strerror(errno));
	if (is_directory && (st.st_mode & S_ISVTX)) return ARB_OK;
	int g = (st.st_mode & S_IWGRP) != 0, o = (st.st_mode & S_IWOTH) != 0;
	if (!g && !o) return ARB_OK;
	return ARB_FAIL(err, ARB_ERR_PLUGIN, "refusing plugin %s: its %s %s is "
			"writable by %s (mode %04o); fix with: chmod go-w '%s'",
			plugin, what, p,
			g && o ? "group and others" : g ? "group" : "others",
			(unsigned)(st.st_mode & 07777), p);
}

static arb_status check_permissions(const char *path, arb_error *err)
{
	char real[PATH_MAX], dir[PATH_MAX];
	arb_status st;
	if (!realpath(path, real))
		return ARB_FAIL(err, ARB_ERR_PLUGIN, "plugin %s: %s", path,
				strerror(errno));
	if ((st = check_writable("file", real, path, 0, err))) return st;
	snprintf(dir, sizeof dir, "%s", real);
	char *s = strrchr(dir, '/');
	if (s == dir) s[1] = '\0'; else if (s) *s = '\0';
	if ((st = check_writable("directory", dir, path, 1, err))) return st;
	/* the directory the path names (a symlink there could be swapped) */
	snprintf(dir, sizeof dir, "%s", path);
	s = strrchr(dir, '/');
	if (!s) snprintf(dir, sizeof dir, ".");
	else if (s == dir) s[1] = '\0';
	else *s = '\0';
	if (realpath(dir, real))
		return check_writable("directory", real, path, 1, err);
	return ARB_OK;
}

/* ---------------------------------------------------------------------------
 * loading */
static arb_status check_desc(const char *path, const char *expect,
			     const arb_plugin *d, arb_error *err)
{
	uint32_t maj = ARB_ABI_MAJOR_OF(d->abi_version);
	uint32_t min = ARB_ABI_MINOR_OF(d->abi_version);
	if (maj != ARB_ABI_MAJOR)
		return ARB_FAIL(err, ARB_ERR_PLUGIN, "refusing plugin %s: built "
				"for ABI %u.%u, arbcore provides %d.%d: rebuild "
				"the plugin against this arbcore's headers", path,
				maj, min, ARB_ABI_MAJOR, ARB_ABI_MINOR);
	if (min > ARB_ABI_MINOR)
		return ARB_FAIL(err, ARB_ERR_PLUGIN, "refusing plugin %s: built "
				"for ABI %u.%u, newer than the ABI %d.%d this "
				"arbcore provides: update arbcore, or rebuild the "
				"plugin against this arbcore's headers", path, maj,
				min, ARB_ABI_MAJOR, ARB_ABI_MINOR);
	if (d->struct_size < DESC_SIZE_1_0)
		return ARB_FAIL(err, ARB_ERR_PLUGIN, "refusing plugin %s: its "
				"descriptor is %u bytes, smaller than the ABI 1.0 "
				"descriptor (%zu bytes): corrupt, or built against "
				"foreign headers", path, d->struct_size,
				DESC_SIZE_1_0);
	if (d->struct_size > sizeof(arb_plugin))
		return ARB_FAIL(err, ARB_ERR_PLUGIN, "refusing plugin %s: its "
				"descriptor is %u bytes, larger than the %zu bytes "
				"this arbcore knows (ABI %d.%d): rebuild the plugin "
				"against this arbcore's headers", path,
				d->struct_size, sizeof(arb_plugin), ARB_ABI_MAJOR,
				ARB_ABI_MINOR);
	if (!d->build_sig || strcmp(d->build_sig, ARB_BUILD_SIGNATURE) != 0)
		return ARB_FAIL(err, ARB_ERR_PLUGIN, "refusing plugin %s: build "
				"signature '%s' differs from arbcore's '%s': rebuild "
				"the plugin against this arbcore's headers", path,
				d->build_sig ? d->build_sig : "(null)",
				ARB_BUILD_SIGNATURE);
	if (!name_ok(d->name))
		return ARB_FAIL(err, ARB_ERR_PLUGIN, "refusing plugin %s: its "
				"name '%s' is not [a-z0-9_]+", path,
				d->name ? d->name : "(null)");
	if (expect && strcmp(d->name, expect) != 0)
		return ARB_FAIL(err, ARB_ERR_PLUGIN, "refusing plugin %s: it "
				"calls itself '%s' but was loaded for [%s]: the "
				"file of plugin 'x' must be x.so", path, d->name,
				expect);
	if (d->slot < ARB_SLOT_FFN || d->slot > ARB_SLOT_SERVICE)
		return ARB_FAIL(err, ARB_ERR_PLUGIN, "refusing plugin %s ('%s'): "
				"unknown slot %d", path, d->name, d->slot);
	const char *missing = !d->create ? "create" : !d->destroy ? "destroy" :
		!d->forward ? "forward" : !d->backward ? "backward" : NULL;
	if (missing)
		return ARB_FAIL(err, ARB_ERR_PLUGIN, "refusing plugin %s ('%s'): "
				"the required callback '%s' is NULL", path, d->name,
				missing);
	if (d->schema) {
		char owner[4200];
		snprintf(owner, sizeof owner, "refusing plugin %s ('%s'): invalid "
			 "schema", path, d->name);
		arb_status st = arb_schema_check(owner, d->schema, err);
		if (st) return st;
	}
	return ARB_OK;
}

arb_status arb_plugin_open_file(const char *path, const char *expect_name,
				arb_loaded_plugin *out, arb_error *err)
{
	memset(out, 0, sizeof *out);
	char p[sizeof out->path];
	/* dlopen searches the library path for a name without '/' */
	if (snprintf(p, sizeof p, "%s%s", strchr(path, '/') ? "" : "./", path) >=
	    (int)sizeof p)
		return ARB_FAIL(err, ARB_ERR_PLUGIN, "plugin path too long: %s",
				path);
	if (access(p, F_OK) != 0)
		return ARB_FAIL(err, ARB_ERR_PLUGIN, "plugin %s: %s", p,
				strerror(errno));
	arb_status st = check_permissions(p, err);
	if (st) return st;
	dlerror();
	void *dl = dlopen(p, RTLD_NOW | RTLD_LOCAL);
	if (!dl) {
		const char *e = dlerror();
		return ARB_FAIL(err, ARB_ERR_PLUGIN, "cannot load plugin %s: %s "
				"(check its dependencies with: ldd '%s')", p,
				e ? e : "unknown dlopen error", p);
	}
	dlerror();
	void *sym = dlsym(dl, ARB_PLUGIN_SYMBOL);
	if (!sym) {
		dlclose(dl);
		return ARB_FAIL(err, ARB_ERR_PLUGIN, "refusing plugin %s: it "
				"exports no '%s' symbol (not an arbcore plugin? "
				"define the descriptor with ARB_PLUGIN_DEFINE)", p,
				ARB_PLUGIN_SYMBOL);
	}
	arb_plugin_descriptor_fn fn;
	memcpy(&fn, &sym, sizeof fn);
	const arb_plugin *d = fn();
	if (!d) {
		dlclose(dl);
		return ARB_FAIL(err, ARB_ERR_PLUGIN, "refusing plugin %s: %s() "
				"returned NULL", p, ARB_PLUGIN_SYMBOL);
	}
	if ((st = check_desc(p, expect_name, d, err))) {
		dlclose(dl);
		return st;
	}
	out->dl = dl;
	out->desc = d;
	snprintf(out->path, sizeof out->path, "%s", p);
	return ARB_OK;
}

void arb_plugin_close(arb_loaded_plugin *p)
{
	if (!p) return;
	if (p->dl) dlclose(p->dl);
	memset(p, 0, sizeof *p);
}

arb_status arb_plugin_open(const char *name, const char *config_path,
			   arb_loaded_plugin *out, arb_error *err)
{
	memset(out, 0, sizeof *out);
	if (!name_ok(name))
		return ARB_FAIL(err, ARB_ERR_PLUGIN, "invalid plugin name '%s': "
				"plugin names are [a-z0-9_]+", name ? name : "");
	dirlist l;
	dirs_build(&l, config_path);
	char file[PATH_MAX + 300];
	for (int i = 0; i < l.n; i++) {
		snprintf(file, sizeof file, "%s/%s.so", l.d[i], name);
		if (access(file, F_OK) == 0) {
			dirs_free(&l);
			return arb_plugin_open_file(file, name, out, err);
		}
	}
	char tried[400] = "";
	size_t used = 0;
	for (int i = 0; i < l.n && used + 4 < sizeof tried; i++)
		used += (size_t)snprintf(tried + used, sizeof tried - used, "%s%s",
					 i ? ", " : "", l.d[i]);
	dirs_free(&l);
	return ARB_FAIL(err, ARB_ERR_PLUGIN, "plugin '%s' not found: no %s.so "
			"in %s (directories come from run.plugin_path, "
			"$ARB_PLUGIN_PATH and the built-in directory)", name, name,
			tried);
}

/* ---------------------------------------------------------------------------
 * `arbcore plugins` and `arbcore plugins --help NAME` */
static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int arb_plugin_list(const char *config_path, FILE *f)
{
	dirlist l;
	int found = 0, nseen = 0;
	char **seen = NULL;   /* names already found (shadow later ones) */
	dirs_build(&l, config_path);
	fprintf(f, "plugin directories, in search order:\n");
	for (int i = 0; i < l.n; i++)
		fprintf(f, "  %s%s\n", l.d[i], is_dir(l.d[i]) ? "" : "  (missing)");
	for (int i = 0; i < l.n; i++) {
		DIR *dir = opendir(l.d[i]);
		if (!dir) continue;
		char **names = NULL;
		int n = 0;
		struct dirent *e;
		while ((e = readdir(dir))) {
			size_t len = strlen(e->d_name);
			if (len <= 3 || strcmp(e->d_name + len - 3, ".so") != 0)
				continue;
			char **nn = realloc(names, (size_t)(n + 1) * sizeof *nn);
			if (!nn) break;
			names = nn;
			if ((names[n] = strdup(e->d_name))) n++;
		}
		closedir(dir);
		qsort(names, (size_t)n, sizeof *names, cmp_str);
		for (int j = 0; j < n; j++) {
			char path[PATH_MAX + 300], name[256];
			snprintf(path, sizeof path, "%s/%s", l.d[i], names[j]);
			snprintf(name, sizeof name, "%.*s",
				 (int)(strlen(names[j]) - 3), names[j]);
			int shadow = 0;
			for (int k = 0; k < nseen; k++)
				shadow |= strcmp(seen[k], name) == 0;
			if (shadow) {
				fprintf(f, "shadowed  %s (an earlier directory "
					"provides '%s')\n", path, name);
				free(names[j]);
				continue;
			}
			arb_loaded_plugin p;
			arb_error err = { 0 };
			if (arb_plugin_open_file(path, name, &p, &err) == ARB_OK) {
				const arb_plugin *d = p.desc;
				fprintf(f, "%-12s %-9s ABI %u.%u  slot %-8s %s\n"
					"             %s\n", d->name,
					d->version ? d->version : "?",
					ARB_ABI_MAJOR_OF(d->abi_version),
					ARB_ABI_MINOR_OF(d->abi_version),
					slot_name(d->slot), p.path,
					d->description ? d->description : "");
				arb_plugin_close(&p);
				found++;
				char **ns = realloc(seen, (size_t)(nseen + 1) * sizeof *ns);
				if (ns) {
					seen = ns;
					if ((seen[nseen] = strdup(name))) nseen++;
				}
			} else {
				fprintf(f, "refused   %s\n          %s\n", path, err.msg);
			}
			free(names[j]);
		}
		free(names);
	}
	for (int k = 0; k < nseen; k++) free(seen[k]);
	free(seen);
	dirs_free(&l);
	fprintf(f, "%d plugin%s found\n", found, found == 1 ? "" : "s");
	return found;
}

arb_status arb_plugin_help(const char *name, const char *config_path, FILE *f,
			   arb_error *err)
{
	arb_loaded_plugin p;
	arb_status st = arb_plugin_open(name, config_path, &p, err);
	if (st) return st;
	const arb_plugin *d = p.desc;
	fprintf(f, "%s %s -- %s\n", d->name, d->version ? d->version : "?",
		d->description ? d->description : "");
	fprintf(f, "license %s, slot %s, ABI %u.%u, file %s\n",
		d->license ? d->license : "?", slot_name(d->slot),
		ARB_ABI_MAJOR_OF(d->abi_version), ARB_ABI_MINOR_OF(d->abi_version),
		p.path);
	fprintf(f, "config: section [%s] (or [%s:instance] for more than one "
		"instance); keys:\n", d->name, d->name);
	static const arb_conf_key none[] = { ARB_CONF_END };
	arb_schema_print(d->name, d->schema ? d->schema : none, f);
	arb_plugin_close(&p);
	return ARB_OK;
}
