/* modelpath.c: finding model files and folders. */
#include "config.h"

#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/hub.h"
#include "spool/modelpath.h"
#include "spool/util.h"

const char *
model_hub_cache(char *buf, size_t size)
{
	return hub_cache_dir(NULL, buf, size);
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
	return model_resolve_hooks(given, base_dir, c, NULL, what, out, err);
}

int
model_resolve_hooks(const char *given, const char *base_dir,
    const struct sd_config *c, const struct hub_options *hooks,
    const char *what, char **out, struct sd_error *err)
{
	char looked[2048] = "", cand[PATH_MAX], real[PATH_MAX];
	int found = 0, from_hub = 0;
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
		if (!found && hub_is_id(given)) {
			/* the Hub cache, and a download when allowed */
			struct hub_options ho;
			struct sd_error herr;

			sd_error_clear(&herr);
			config_hub_options(c, &ho);
			if (hooks != NULL) {
				ho.progress = hooks->progress;
				ho.notice = hooks->notice;
				ho.user = hooks->user;
				ho.stop = hooks->stop;
			}
			found = from_hub = hub_resolve_model(given, &ho, cand,
			    sizeof cand, &herr) == 0;
			if (!found && herr.code != SD_ENOINPUT)
				return sd_fail(err, herr.code, "%s: %s", what,
				    herr.message);
			if (!found)
				return sd_fail(err, SD_ENOINPUT, "%s: \"%s\" not found "
				    "(looked at: %s); %s", what, given, looked,
				    herr.message);
		}
	}
	if (!found)
		return sd_fail(err, SD_ENOINPUT, "%s: \"%s\" not found (looked at: %s)",
		    what, given, looked);
	/* a file of a Hub snapshot keeps its name (not its blob's): the
	 * tokenizer beside it and the result record need it */
	if (from_hub && cand[0] == '/') {
		if ((*out = strdup(cand)) == NULL)
			return sd_fail(err, SD_EINTERNAL, "out of memory");
		return 0;
	}
	if (realpath(cand, real) == NULL)
		return sd_fail(err, SD_ENOINPUT, "%s: %s: cannot resolve the path",
		    what, cand);
	/* the Hub cache counts as an allowed folder */
	if (c->n_model_dirs > 0 && !from_hub) {
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
