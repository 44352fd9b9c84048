/* metadata.c: the PNG text chunks. */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "spool/metadata.h"
#include "spool/util.h"

void
metadata_model_name(const char *model_path, char *out, size_t size)
{
	const char *base, *end;
	size_t n;

	if (model_path == NULL) {
		snprintf(out, size, "unknown");
		return;
	}
	/* A model from the Hub cache (.../models--ORG--NAME/snapshots/COMMIT)
	 * is named by its repository, not by the commit folder. */
	const char *repo = strstr(model_path, "/models--");
	if (repo != NULL && strstr(repo, "/snapshots/") != NULL) {
		size_t k = 0;
		repo += strlen("/models--");
		for (const char *p = repo; *p && *p != '/' && k + 1 < size; p++) {
			if (p[0] == '-' && p[1] == '-') {
				out[k++] = '/';
				p++;
			} else {
				out[k++] = *p;
			}
		}
		if (k > 0) {
			out[k] = '\0';
			return;
		}
	}
	n = strlen(model_path);
	while (n > 1 && model_path[n - 1] == '/')
		n--;
	base = model_path + n;
	while (base > model_path && base[-1] != '/')
		base--;
	end = model_path + n;
	for (const char *p = end; p > base; p--)
		if (*p == '.' && p != base) {
			if (strncmp(p, ".safetensors", 12) == 0 || strncmp(p, ".ckpt", 5) == 0)
				end = p;
			break;
		}
	snprintf(out, size, "%.*s", (int)(end - base), base);
}

char *
metadata_parameters(const struct sd_job *j, uint64_t seed, const char *model_name)
{
	const char *neg = j->negative_prompt ? j->negative_prompt : "";
	char *line = params_png_line(&j->params, seed, model_name), *s = NULL;

	if (line == NULL)
		return NULL;
	if (asprintf(&s, "%s%s%s\n%s", j->prompt ? j->prompt : "",
	    neg[0] ? "\nNegative prompt: " : "", neg, line) < 0)
		s = NULL;
	free(line);
	return s;
}

char *
metadata_sdbatch_json(const struct sd_job *j, int index, uint64_t seed,
    const char *arch)
{
	json_t *o = job_parameters_json(j);
	char *s;

	if (o == NULL)
		return NULL;
	json_object_set_new(o, "id", json_string(j->id));
	json_object_set_new(o, "index", json_integer(index));
	json_object_set_new(o, "image_seed", json_integer((json_int_t)seed));
	json_object_set_new(o, "arch", arch ? json_string(arch) : json_null());
	json_object_set_new(o, "version", json_string("sdbatch " PACKAGE_VERSION));
	s = json_dumps(o, SD_JSON_LINE);
	json_decref(o);
	return s;
}
