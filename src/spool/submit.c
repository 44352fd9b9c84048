/* submit.c: enqueueing a job (sdbatch submit, sdbatch serve). */
#include "config.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "spool/runjob.h"
#include "spool/submit.h"
#include "spool/util.h"
#include "spool/yamltree.h"

struct edit {
	size_t start, end;
	char *text;
};

static int
by_start_desc(const void *a, const void *b)
{
	const struct edit *x = a, *y = b;

	return x->start < y->start ? 1 : x->start > y->start ? -1 : 0;
}

/* Make relative paths that exist beside the job file absolute, editing the
 * text in place so that comments and layout stay.  Returns a malloc'd
 * copy (or NULL when nothing changes). */
static char *
absolute_paths(const char *buf, size_t len, const char *dir,
    const struct sd_config *cfg, size_t *outlen)
{
	static const char *const fields[] = { "model", "unet", "vae",
	    "init_image", "mask" };
	struct edit edits[5];
	struct ynode *root;
	size_t i, n = 0, total;
	char *out, *p;

	root = ytree_parse(buf, len, "job", &cfg->limits.yaml, NULL, NULL);
	if (root == NULL)
		return NULL;
	for (i = 0; i < 5; i++) {
		struct ynode *v = ytree_get(root, fields[i]);
		char *cand, real[PATH_MAX];
		json_t *q;

		if (v == NULL || v->kind != YNODE_SCALAR || ytree_is_null(v) ||
		    v->value[0] == '/' || v->end <= v->start || v->end > len)
			continue;
		cand = util_join(dir, v->value);
		if (cand == NULL || realpath(cand, real) == NULL) {
			free(cand);
			continue;
		}
		free(cand);
		q = json_string(real);
		edits[n].text = q ? json_dumps(q, JSON_ENCODE_ANY) : NULL;
		json_decref(q);
		if (edits[n].text == NULL)
			continue;
		edits[n].start = v->start;
		edits[n].end = v->end;
		n++;
	}
	ytree_free(root);
	if (n == 0)
		return NULL;
	total = len;
	for (i = 0; i < n; i++)
		total += strlen(edits[i].text);
	if ((out = malloc(total + 1)) == NULL)
		goto done;
	memcpy(out, buf, len);
	out[len] = '\0';
	*outlen = len;
	qsort(edits, n, sizeof *edits, by_start_desc);
	for (i = 0; i < n; i++) {
		size_t tl = strlen(edits[i].text), old = edits[i].end - edits[i].start;
		p = out + edits[i].start;
		memmove(p + tl, p + old, *outlen - edits[i].end + 1);
		memcpy(p, edits[i].text, tl);
		*outlen = *outlen - old + tl;
	}
done:
	for (i = 0; i < n; i++)
		free(edits[i].text);
	return out;
}

void
submit_new_id(char id[JOB_ID_MAX + 1])
{
	char stamp[32], hex[9];
	time_t t = time(NULL);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
	util_random_hex(hex, 4);
	snprintf(id, JOB_ID_MAX + 1, "job-%s-%s", stamp, hex);
}

int
spool_submit_job(struct spool *s, const struct sd_config *cfg,
    const struct submit_request *r, char id_out[JOB_ID_MAX + 1],
    struct sd_error *err, int *line)
{
	struct sd_job job;
	char id[JOB_ID_MAX + 1], *edited = NULL;
	const char *name = r->name ? r->name : "job";
	size_t elen = 0;
	int rc;

	if (line != NULL)
		*line = 0;
	if (r->id != NULL) {
		if (!util_valid_id(r->id)) {
			if (err != NULL)
				snprintf(err->field, sizeof err->field, "id");
			return sd_fail(err, SD_EDATA, "\"%.140s\" is not a valid job id "
			    "(1-128 characters: letters, digits, '.', '_', '-', "
			    "starting with a letter or digit)", r->id);
		}
		snprintf(id, sizeof id, "%s", r->id);
	} else
		submit_new_id(id);
	if (r->len > cfg->limits.yaml.max_document)
		return sd_fail(err, SD_EDATA, "%s: %zu bytes, over the limit of %zu "
		    "(limits.job_size)", name, r->len, cfg->limits.yaml.max_document);
	job_init(&job, cfg);
	rc = job_parse(&job, cfg, r->data, r->len, name, r->dir ? r->dir : ".",
	    id, err, line);
	job_free(&job);
	if (rc < 0)
		return -1;
	if (r->absolute_paths)
		edited = absolute_paths(r->data, r->len, r->dir ? r->dir : ".", cfg,
		    &elen);
	/* What the worker will read, from where it reads it (relative paths
	 * against SPOOL/running/): refuse what can never run. */
	job_init(&job, cfg);
	rc = job_parse(&job, cfg, edited ? edited : r->data, edited ? elen : r->len,
	    name, s->running, id, err, line);
	if (rc == 0)
		rc = runjob_check(cfg, &job, err, line);
	job_free(&job);
	if (rc < 0) {
		free(edited);
		return -1;
	}
	rc = spool_submit(s, id, edited ? edited : r->data, edited ? elen : r->len,
	    err);
	free(edited);
	if (rc < 0)
		return -1;
	memcpy(id_out, id, sizeof id);
	return 0;
}
