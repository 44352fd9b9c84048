/* modelpath.c: finding model files and folders. */
#include "config.h"

#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spool/modelpath.h"
#include "spool/util.h"

const char *
model_hub_cache(char *buf, size_t size)
{
	const char *e;

	if ((e = getenv("HF_HUB_CACHE")) != NULL && *e != '\0')
		snprintf(buf, size, "%s", e);
	else if ((e = getenv("HF_HOME")) != NULL && *e != '\0')
		snprintf(buf, size, "%s/hub", e);
	else if ((e = getenv("XDG_CACHE_HOME")) != NULL && *e != '\0')
		snprintf(buf, size, "%s/huggingface/hub", e);
	else
		snprintf(buf, size, "%s/.cache/huggingface/hub",
		    (e = getenv("HOME")) != NULL ? e : "");
	return buf;
}

int
model_path_inside(const char *path, const char *dir)
{
	char real[PATH_MAX];
	size_t n;

	if (realpath(dir, real) == NULL)
		return 0;
	n = strlen(real);
	if (n == 1 && real[0] == '/')
		return 1;
	return strncmp(path, real, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

/* "org/name" with the characters the Hub allows. */
static int
is_hub_id(const char *s)
{
	const char *slash = strchr(s, '/');
	const char *p;

	if (slash == NULL || slash == s || slash[1] == '\0' ||
	    strchr(slash + 1, '/') != NULL || s[0] == '.')
		return 0;
	for (p = s; *p; p++)
		if (p != slash && !(isalnum((unsigned char)*p) || *p == '-' ||
		    *p == '_' || *p == '.'))
			return 0;
	return strstr(s, "..") == NULL;
}

/* The snapshot folder of a Hub id, or -1. */
static int
hub_snapshot(const char *id, char *out, size_t size, char *repo, size_t rsize)
{
	char cache[PATH_MAX], ref[PATH_MAX], commit[128];
	const char *slash = strchr(id, '/');
	struct stat st;
	FILE *f;

	model_hub_cache(cache, sizeof cache);
	if (snprintf(repo, rsize, "%s/models--%.*s--%s", cache, (int)(slash - id),
	    id, slash + 1) >= (int)rsize ||
	    snprintf(ref, sizeof ref, "%s/refs/main", repo) >= (int)sizeof ref)
		return -1;
	if ((f = fopen(ref, "r")) == NULL)
		return -1;
	if (fgets(commit, sizeof commit, f) == NULL) {
		fclose(f);
		return -1;
	}
	fclose(f);
	commit[strcspn(commit, " \t\r\n")] = '\0';
	if (commit[0] == '\0' || strchr(commit, '/') != NULL || strcmp(commit, "..") == 0)
		return -1;
	if (snprintf(out, size, "%s/snapshots/%s", repo, commit) >= (int)size)
		return -1;
	return stat(out, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -1;
}

static int
append(char *buf, size_t size, const char *s)
{
	size_t n = strlen(buf), k = strlen(s);

	if (n > 0 && n + 2 < size) {
		memcpy(buf + n, ", ", 2);
		n += 2;
	}
	if (k > size - n - 1)
		k = size - n - 1;
	memcpy(buf + n, s, k);
	buf[n + k] = '\0';
	return 0;
}

int
model_resolve(const char *given, const char *base_dir,
    const struct sd_config *c, const char *what, char **out,
    struct sd_error *err)
{
	char looked[2048] = "", cand[PATH_MAX], real[PATH_MAX], repo[PATH_MAX];
	int found = 0;
	size_t i;

	*out = NULL;
	if (given == NULL || given[0] == '\0')
		return sd_fail(err, SD_ENOINPUT, "%s: no model given (set it in the "
		    "job, with --model or in the configuration)", what);
	if (given[0] == '/') {
		snprintf(cand, sizeof cand, "%s", given);
		found = access(cand, F_OK) == 0;
		append(looked, sizeof looked, cand);
	} else {
		if (base_dir != NULL) {
			snprintf(cand, sizeof cand, "%s/%s", base_dir, given);
			found = access(cand, F_OK) == 0;
			append(looked, sizeof looked, cand);
		}
		for (i = 0; !found && i < c->n_model_dirs; i++) {
			snprintf(cand, sizeof cand, "%s/%s", c->model_dirs[i], given);
			found = access(cand, F_OK) == 0;
			append(looked, sizeof looked, cand);
		}
		if (!found && is_hub_id(given)) {
			found = hub_snapshot(given, cand, sizeof cand, repo,
			    sizeof repo) == 0;
			if (!found) {
				char note[PATH_MAX + 32];
				snprintf(note, sizeof note, "the Hub cache %s", repo);
				append(looked, sizeof looked, note);
			}
		}
	}
	if (!found)
		return sd_fail(err, SD_ENOINPUT, "%s: \"%s\" not found (looked at: %s)",
		    what, given, looked);
	if (realpath(cand, real) == NULL)
		return sd_fail(err, SD_ENOINPUT, "%s: %s: cannot resolve the path",
		    what, cand);
	if (c->n_model_dirs > 0) {
		for (i = 0; i < c->n_model_dirs; i++)
			if (model_path_inside(real, c->model_dirs[i]))
				break;
		if (i == c->n_model_dirs)
			return sd_fail(err, SD_EDATA, "%s: %s is outside the allowed "
			    "model folders (model_dirs in the configuration)", what, real);
	}
	if ((*out = strdup(real)) == NULL)
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	return 0;
}
