/* job.c: parsing and validating job files. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spool/job.h"
#include "spool/modelpath.h"
#include "spool/util.h"
#include "spool/yamltree.h"

/* The fields that are not parameters (spool/params.h has the rest). */
static const char *const section_names[] = {
	[JF_OUTPUT - JF_OUTPUT] = "output",
	[JF_CALLBACK - JF_OUTPUT] = "callback",
	[JF_METADATA - JF_OUTPUT] = "metadata",
};

const char *
job_field_name(enum job_field f)
{
	const struct param_def *d = params_by_field(f);

	if (d != NULL)
		return d->name;
	if (f >= JF_OUTPUT && f < JF_COUNT_)
		return section_names[f - JF_OUTPUT];
	return "?";
}

void
job_init(struct sd_job *j, const struct sd_config *c)
{
	memset(j, 0, sizeof *j);
	/* out of memory leaves a string NULL: job_check says what is missing */
	(void)params_copy(&j->params, &c->defaults);
}

void
job_callback_free(struct job_callback *cb)
{
	free(cb->url);
	free(cb->secret_env);
	memset(cb, 0, sizeof *cb);
}

void
job_free(struct sd_job *j)
{
	free(j->file);
	free(j->dir);
	params_free(&j->params);
	free(j->output_dir);
	free(j->output_name);
	job_callback_free(&j->callback);
	json_decref(j->metadata);
	memset(j, 0, sizeof *j);
}

/* Levenshtein distance of two short strings (for "did you mean"). */
static int
distance(const char *a, const char *b)
{
	int la = (int)strlen(a), lb = (int)strlen(b), i, k;
	int row[64];

	if (la > 60 || lb > 60)
		return 99;
	for (k = 0; k <= lb; k++)
		row[k] = k;
	for (i = 1; i <= la; i++) {
		int prev = row[0];
		row[0] = i;
		for (k = 1; k <= lb; k++) {
			int cur = row[k];
			int sub = prev + (tolower((unsigned char)a[i - 1]) !=
			    tolower((unsigned char)b[k - 1]));
			int best = row[k] + 1 < row[k - 1] + 1 ? row[k] + 1 : row[k - 1] + 1;
			row[k] = sub < best ? sub : best;
			prev = cur;
		}
	}
	return row[lb];
}

static const char *
suggest(const char *key, const char *const *names, int n)
{
	int i, best = 99, bi = -1;

	for (i = 0; i < n; i++) {
		int d = distance(key, names[i]);
		if (d < best) {
			best = d;
			bi = i;
		}
	}
	return best <= 2 && bi >= 0 ? names[bi] : NULL;
}

int
job_check_name_pattern(const char *pattern, struct sd_error *err)
{
	const char *p;

	if (pattern[0] == '\0')
		return sd_fail(err, SD_EDATA, "empty file name");
	if (strchr(pattern, '/') != NULL)
		return sd_fail(err, SD_EDATA, "\"%s\": a file name may not hold '/' "
		    "(use output.dir for folders)", pattern);
	if (strcmp(pattern, ".") == 0 || strcmp(pattern, "..") == 0)
		return sd_fail(err, SD_EDATA, "\"%s\" is not a file name", pattern);
	for (p = pattern; *p; p++) {
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return sd_fail(err, SD_EDATA, "a file name may not hold "
			    "control characters");
		if (*p == '{') {
			if (strncmp(p, "{id}", 4) != 0 && strncmp(p, "{index}", 7) != 0 &&
			    strncmp(p, "{seed}", 6) != 0) {
				int n = (int)strcspn(p, "}");
				return sd_fail(err, SD_EDATA, "unknown placeholder \"%.*s\" "
				    "(known: {id}, {index}, {seed})", n < 32 ? n + 1 : 32, p);
			}
		}
	}
	if (strlen(pattern) > 200)
		return sd_fail(err, SD_EDATA, "the file name pattern is too long");
	return 0;
}

char *
job_output_name(const char *pattern, const char *id, int index, uint64_t seed,
    int count, struct sd_error *err)
{
	char buf[1024], num[32];
	size_t o = 0;
	const char *p;
	int has_index = strstr(pattern, "{index}") != NULL;

	if (job_check_name_pattern(pattern, err) < 0)
		return NULL;
	for (p = pattern; *p && o < sizeof buf - 64;) {
		const char *rep = NULL;
		size_t skip = 1;
		if (strncmp(p, "{id}", 4) == 0) {
			rep = id;
			skip = 4;
		} else if (strncmp(p, "{index}", 7) == 0) {
			snprintf(num, sizeof num, "%d", index);
			rep = num;
			skip = 7;
		} else if (strncmp(p, "{seed}", 6) == 0) {
			snprintf(num, sizeof num, "%" PRIu64, seed);
			rep = num;
			skip = 6;
		}
		if (rep != NULL) {
			size_t n = strlen(rep);
			if (o + n >= sizeof buf - 64)
				break;
			memcpy(buf + o, rep, n);
			o += n;
		} else
			buf[o++] = *p;
		p += skip;
	}
	buf[o] = '\0';
	/* Every image is a PNG. */
	if (o < 4 || strcasecmp(buf + o - 4, ".png") != 0) {
		memcpy(buf + o, ".png", 5);
		o += 4;
	}
	if (count > 1 && !has_index) {
		char *dot = strrchr(buf, '.');
		char ext[16];
		snprintf(ext, sizeof ext, "%s", dot);
		snprintf(dot, sizeof buf - (size_t)(dot - buf), "-%d%s", index, ext);
	}
	if (strcmp(buf, ".png") == 0 || buf[0] == '\0')
		return sd_fail(err, SD_EDATA, "empty file name"), NULL;
	return strdup(buf);
}

struct parser {
	struct yctx y;
	struct sd_job *j;
	const struct sd_config *c;
};

/* A path field: a string without control characters. */
static int
get_path(struct parser *p, const struct ynode *v, const char *field, char **out)
{
	const char *s;

	if (yget_string(&p->y, v, field, out) < 0)
		return -1;
	for (s = *out; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return yfail(&p->y, v, field, "a path may not hold control characters");
	if (strlen(*out) >= PATH_MAX)
		return yfail(&p->y, v, field, "path too long");
	return 0;
}

static int
has_dotdot(const char *path)
{
	const char *s = path;

	while (*s) {
		size_t n = strcspn(s, "/");
		if (n == 2 && s[0] == '.' && s[1] == '.')
			return 1;
		s += n;
		while (*s == '/')
			s++;
	}
	return 0;
}

static int
output_section(struct parser *p, const struct ynode *m)
{
	struct sd_error e;
	size_t i;

	if (yget_map(&p->y, m, "output") < 0)
		return -1;
	for (i = 0; i < m->n; i++) {
		const char *k = m->keys[i]->value;
		const struct ynode *v = m->items[i];

		if (strcmp(k, "dir") == 0) {
			if (get_path(p, v, "output.dir", &p->j->output_dir) < 0)
				return -1;
			if (has_dotdot(p->j->output_dir))
				return yfail(&p->y, v, "output.dir", "\"..\" is not allowed "
				    "(outputs stay inside the output root)");
		} else if (strcmp(k, "name") == 0) {
			if (get_path(p, v, "output.name", &p->j->output_name) < 0)
				return -1;
			sd_error_clear(&e);
			if (job_check_name_pattern(p->j->output_name, &e) < 0)
				return yfail(&p->y, v, "output.name", "%s", e.message);
		} else {
			static const char *const known[] = { "dir", "name" };
			const char *s = suggest(k, known, 2);
			char f[80];
			snprintf(f, sizeof f, "output.%.60s", k);
			return yfail(&p->y, m->keys[i], f, "unknown field%s%s%s (known: dir, name)",
			    s ? " (did you mean \"" : "", s ? s : "", s ? "\"?)" : "");
		}
	}
	return 0;
}

static int
check_url(const char *url, char *why, size_t size)
{
	const char *host, *p;

	if (strncasecmp(url, "http://", 7) == 0)
		host = url + 7;
	else if (strncasecmp(url, "https://", 8) == 0)
		host = url + 8;
	else {
		snprintf(why, size, "only http:// and https:// URLs are allowed");
		return -1;
	}
	if (*host == '\0' || *host == '/' || *host == ':' || *host == '?') {
		snprintf(why, size, "the URL has no host");
		return -1;
	}
	for (p = url; *p; p++)
		if ((unsigned char)*p <= 0x20 || *p == 0x7f) {
			snprintf(why, size, "the URL holds spaces or control characters");
			return -1;
		}
	if (strlen(url) > 2048) {
		snprintf(why, size, "the URL is too long");
		return -1;
	}
	return 0;
}

static int
callback_section(struct yctx *y, const struct ynode *m, struct job_callback *cb)
{
	const struct ynode *urlnode = NULL;
	char why[128];
	size_t i;

	if (yget_map(y, m, "callback") < 0)
		return -1;
	for (i = 0; i < m->n; i++) {
		const char *k = m->keys[i]->value;
		const struct ynode *v = m->items[i];

		if (strcmp(k, "url") == 0) {
			urlnode = v;
			if (yget_string(y, v, "callback.url", &cb->url) < 0)
				return -1;
			if (check_url(cb->url, why, sizeof why) < 0)
				return yfail(y, v, "callback.url", "%s", why);
		} else if (strcmp(k, "secret_env") == 0) {
			const char *s;
			if (yget_string(y, v, "callback.secret_env", &cb->secret_env) < 0)
				return -1;
			s = cb->secret_env;
			if (!(isalpha((unsigned char)s[0]) || s[0] == '_') ||
			    strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
			    "0123456789_") != strlen(s) || strlen(s) > 128)
				return yfail(y, v, "callback.secret_env", "\"%.40s\" is not an "
				    "environment variable name (the secret itself never "
				    "goes into a job file)", s);
		} else if (strcmp(k, "include_images") == 0) {
			if (yget_bool(y, v, "callback.include_images",
			    &cb->include_images) < 0)
				return -1;
		} else {
			static const char *const known[] = { "url", "secret_env",
			    "include_images" };
			const char *s = suggest(k, known, 3);
			char f[80];
			snprintf(f, sizeof f, "callback.%.60s", k);
			return yfail(y, m->keys[i], f, "unknown field%s%s%s (known: url, "
			    "secret_env, include_images)", s ? " (did you mean \"" : "",
			    s ? s : "", s ? "\"?)" : "");
		}
	}
	if (urlnode == NULL)
		return yfail(y, m, "callback.url", "missing (the callback needs a url)");
	return 0;
}

static int
field(struct parser *p, enum job_field f, const struct ynode *v)
{
	struct sd_job *j = p->j;
	const struct param_def *d = params_by_field(f);

	if (d != NULL)
		return params_parse_yaml(d, &p->y, v, NULL, &p->c->limits, &j->params);
	switch (f) {
	case JF_OUTPUT:
		return output_section(p, v);
	case JF_CALLBACK:
		return callback_section(&p->y, v, &j->callback);
	case JF_METADATA:
		json_decref(j->metadata);
		if ((j->metadata = ytree_to_json(v)) == NULL)
			return sd_fail(p->y.err, SD_EINTERNAL, "out of memory");
		return 0;
	default:
		return -1;
	}
}

int
job_check(const struct sd_job *j, const struct sd_config *c, struct sd_error *err)
{
	size_t i;

	for (i = 0; i < params_count; i++)
		if (params_check(&params_table[i], &j->params, &c->limits, err) < 0)
			return -1;
#define BAD(f, ...) (snprintf(err->field, sizeof err->field, "%s", f), \
	sd_fail(err, SD_EDATA, __VA_ARGS__))
	if (!j->seed_random && j->seed > (uint64_t)INT64_MAX - (uint64_t)j->count)
		return BAD("seed", "seed: %" PRIu64 " + count is over %" PRId64,
		    j->seed, INT64_MAX);
	if (j->mask != NULL && j->init_image == NULL)
		return BAD("mask", "mask: a mask needs an init_image to repaint");
#undef BAD
	return 0;
}

int
job_parse(struct sd_job *j, const struct sd_config *c, const char *buf,
    size_t len, const char *name, const char *dir, const char *id,
    struct sd_error *err, int *line)
{
	const char *names[JF_COUNT_];
	struct parser p;
	struct ynode *root;
	size_t i;
	int f, r = 0;

	if (line != NULL)
		*line = 0;
	p.y.name = name;
	p.y.code = SD_EDATA;
	p.y.err = err;
	p.y.line = line;
	p.j = j;
	p.c = c;
	if (!util_valid_id(id)) {
		if (err != NULL)
			snprintf(err->field, sizeof err->field, "id");
		return sd_fail(err, SD_EDATA, "%s: \"%.140s\" is not a valid job id "
		    "(1-128 characters: letters, digits, '.', '_', '-', starting "
		    "with a letter or digit)", name, id);
	}
	snprintf(j->id, sizeof j->id, "%s", id);
	if (config_set_string(&j->file, name) < 0 ||
	    config_set_string(&j->dir, dir) < 0)
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	if ((root = ytree_parse(buf, len, name, &c->limits.yaml, err, line)) == NULL)
		return -1;
	if (root->kind != YNODE_MAP) {
		if (line != NULL)
			*line = root->line;
		r = sd_fail(err, SD_EDATA, "%s:%d: a job is a mapping of fields "
		    "(\"prompt: ...\"), not %s", name, root->line,
		    ytree_kind_name(root));
		goto out;
	}
	for (f = 0; f < JF_COUNT_; f++)
		names[f] = job_field_name((enum job_field)f);
	for (i = 0; i < root->n && r == 0; i++) {
		const char *k = root->keys[i]->value;

		for (f = 0; f < JF_COUNT_; f++)
			if (strcmp(k, names[f]) == 0)
				break;
		if (f == JF_COUNT_) {
			const char *s = suggest(k, names, JF_COUNT_);
			char kq[80];
			snprintf(kq, sizeof kq, "%.60s", k);
			r = yfail(&p.y, root->keys[i], kq, "unknown field%s%s%s",
			    s ? " (did you mean \"" : "", s ? s : "", s ? "\"?)" : "");
			break;
		}
		j->line[f] = root->keys[i]->line;
		r = field(&p, (enum job_field)f, root->items[i]);
	}
	if (r < 0)
		goto out;
	if (j->line[JF_PROMPT] == 0) {
		r = yfail(&p.y, NULL, "prompt", "missing (every job needs a prompt)");
		goto out;
	}
	for (i = 0; i < params_count && j->init_image == NULL; i++) {
		const struct param_def *d = &params_table[i];
		if ((d->flags & PARAM_IMG2IMG) && j->line[d->field] != 0) {
			r = yfail(&p.y, ytree_get(root, d->name), d->name, "%s applies "
			    "to img2img and inpainting: give an init_image", d->name);
			goto out;
		}
	}
	if (j->mask != NULL && j->init_image == NULL) {
		r = yfail(&p.y, ytree_get(root, "mask"), "mask",
		    "a mask needs an init_image to repaint");
		goto out;
	}
	if (!j->seed_random && j->seed > (uint64_t)INT64_MAX - (uint64_t)j->count) {
		r = yfail(&p.y, ytree_get(root, "seed"), "seed", "%" PRIu64
		    " + count is over %" PRId64, j->seed, INT64_MAX);
		goto out;
	}
out:
	ytree_free(root);
	return r;
}

/* An input file (init_image, mask) relative to the job's folder; must be a
 * regular file. */
static int
resolve_input(struct sd_job *j, enum job_field f, char **path,
    struct sd_error *err, int *line)
{
	struct stat st;
	char *p;

	if (*path == NULL)
		return 0;
	p = (*path)[0] == '/' || j->dir == NULL ? strdup(*path) : util_join(j->dir, *path);
	if (p == NULL)
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	if (line != NULL)
		*line = j->line[f];
	if (err != NULL)
		snprintf(err->field, sizeof err->field, "%s", job_field_name(f));
	if (stat(p, &st) < 0) {
		sd_fail(err, SD_ENOINPUT, "%s:%d: %s: %s: %s", j->file ? j->file : "job",
		    j->line[f], job_field_name(f), p, errno == ENOENT ? "no such file" :
		    strerror(errno));
		free(p);
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		sd_fail(err, SD_EDATA, "%s:%d: %s: %s: not a regular file",
		    j->file ? j->file : "job", j->line[f], job_field_name(f), p);
		free(p);
		return -1;
	}
	free(*path);
	*path = p;
	if (err != NULL)
		err->field[0] = '\0';
	if (line != NULL)
		*line = 0;
	return 0;
}

int
job_resolve(struct sd_job *j, const struct sd_config *c, struct sd_error *err,
    int *line)
{
	return job_resolve_hooks(j, c, NULL, err, line);
}

int
job_resolve_model_part(struct sd_job *j, const struct sd_config *c,
    const struct hub_options *hooks, enum job_field part, struct sd_error *err,
    int *line)
{
	char **val = part == JF_UNET ? &j->unet : part == JF_VAE ? &j->vae : &j->model;
	const char *given = *val;
	char *out = NULL;

	if (line != NULL)
		*line = 0;
	if (given == NULL && part == JF_MODEL)
		given = c->model;	/* none: model_resolve says so */
	else if (given == NULL)
		return 0;
	/* Relative to the job file when the job names it, else to the
	 * current folder (the configuration's are absolute). */
	if (model_resolve_hooks(given, j->line[part] ? j->dir : ".", c, hooks,
	    job_field_name(part), &out, err) < 0) {
		if (line != NULL)
			*line = j->line[part];
		if (err != NULL) {
			snprintf(err->field, sizeof err->field, "%s", job_field_name(part));
			if (j->line[part] > 0)
				sd_error_prefix(err, "%s:%d", j->file ? j->file : "job",
				    j->line[part]);
		}
		return -1;
	}
	free(*val);
	*val = out;
	return 0;
}

int
job_resolve_inputs(struct sd_job *j, struct sd_error *err, int *line)
{
	struct sd_lora *l;
	int i, nl;

	if (line != NULL)
		*line = 0;
	if (resolve_input(j, JF_INIT_IMAGE, &j->init_image, err, line) < 0 ||
	    resolve_input(j, JF_MASK, &j->mask, err, line) < 0)
		return -1;
	/* the LoRA files, relative to the job's folder */
	if (params_loras(&j->params, &l, &nl) < 0)
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	for (i = 0; i < nl; i++) {
		char *path = strdup(l[i].path);
		if (path == NULL || resolve_input(j, JF_LORAS, &path, err, line) < 0 ||
		    params_lora_set_path(&j->params, i, path) < 0) {
			if (path != NULL && err != NULL && err->message[0] == '\0')
				sd_fail(err, SD_EINTERNAL, "out of memory");
			free(path);
			params_loras_free(l, nl);
			return -1;
		}
		free(path);
	}
	params_loras_free(l, nl);
	return 0;
}

int
job_resolve_hooks(struct sd_job *j, const struct sd_config *c,
    const struct hub_options *hooks, struct sd_error *err, int *line)
{
	if (job_resolve_model_part(j, c, hooks, JF_MODEL, err, line) < 0 ||
	    job_resolve_model_part(j, c, hooks, JF_UNET, err, line) < 0 ||
	    job_resolve_model_part(j, c, hooks, JF_VAE, err, line) < 0)
		return -1;
	return job_resolve_inputs(j, err, line);
}

int
job_load(struct sd_job *j, const struct sd_config *c, const char *path,
    const char *id, struct sd_error *err, int *line)
{
	size_t len;
	char *buf, *dir;
	int r;

	if (line != NULL)
		*line = 0;
	buf = util_read_file(path, c->limits.yaml.max_document, 1, &len, err);
	if (buf == NULL)
		return -1;
	dir = util_dirname(path);
	r = job_parse(j, c, buf, len, path, dir, id, err, line);
	free(dir);
	free(buf);
	return r;
}

int
job_parse_callback(const char *buf, size_t len, const struct sd_config *c,
    struct job_callback *cb)
{
	struct sd_error e;
	struct yctx y = { "job", SD_EDATA, &e, NULL };
	struct ynode *root, *m;
	int r = -1;

	memset(cb, 0, sizeof *cb);
	if ((root = ytree_parse(buf, len, "job", &c->limits.yaml, &e, NULL)) == NULL)
		return -1;
	if ((m = ytree_get(root, "callback")) != NULL)
		r = callback_section(&y, m, cb);
	if (r < 0)
		job_callback_free(cb);
	ytree_free(root);
	return r;
}

json_t *
job_parameters_json(const struct sd_job *j)
{
	json_t *o = json_object(), *out;
	size_t i;

	if (o == NULL)
		return NULL;
	for (i = 0; i < params_count; i++)
		json_object_set_new(o, params_table[i].name,
		    params_json(&params_table[i], &j->params));
	out = json_object();
	json_object_set_new(out, "dir", j->output_dir ? json_string(j->output_dir) :
	    json_null());
	json_object_set_new(out, "name", j->output_name ? json_string(j->output_name) :
	    json_null());
	json_object_set_new(o, "output", out);
	return o;
}
