/* conf.c: reading sdbatch.yaml. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spool/conf.h"
#include "spool/util.h"

#ifndef SDBATCH_SYSCONFDIR
#define SDBATCH_SYSCONFDIR "/etc"
#endif

void
config_init(struct sd_config *c)
{
	memset(c, 0, sizeof *c);
	policy_init(&c->policy);
	c->callback.policy = &c->policy;
	c->device = strdup("cpu");
	c->poll_s = 2;
	c->stale_s = 300;
	c->heartbeat_s = 15;
	params_init(&c->defaults);
	c->max_deaths = 2;
	c->job_time_s = 4 * 3600;
	c->limits.width = 2048;
	c->limits.height = 2048;
	c->limits.steps = 150;
	c->limits.count = 16;
	c->limits.prompt_length = 4000;
	ytree_limits_default(&c->limits.yaml);
	c->callback.attempts = 6;
	c->callback.timeout_s = 10;
	c->callback.total_s = 600;
	c->callback.backoff_s = 1;
	c->callback.backoff_max_s = 60;
	c->serve.connections = 64;
	c->serve.gallery_images = 100;
}

void
config_free(struct sd_config *c)
{
	size_t i;

	policy_free(&c->policy);
	free(c->path);
	free(c->model);
	free(c->tokenizer);
	free(c->text_encoders);
	free(c->device);
	free(c->output_root);
	for (i = 0; i < c->n_model_dirs; i++)
		free(c->model_dirs[i]);
	free(c->model_dirs);
	for (i = 0; i < c->n_lora_dirs; i++)
		free(c->lora_dirs[i]);
	free(c->lora_dirs);
	params_free(&c->defaults);
	free(c->hub.cache);
	free(c->hub.endpoint);
	free(c->serve.listen);
	free(c->serve.token);
	free(c->serve.cors_origin);
	memset(c, 0, sizeof *c);
}

int
config_set_string(char **field, const char *value)
{
	char *s = value != NULL ? strdup(value) : NULL;

	if (value != NULL && s == NULL)
		return -1;
	free(*field);
	*field = s;
	return 0;
}

const char *
config_locate(const char *explicit_path)
{
	static const char sys[] = SDBATCH_SYSCONFDIR "/sdbatch/sdbatch.yaml";
	const char *env = getenv("SDBATCH_CONFIG");

	if (explicit_path != NULL && *explicit_path != '\0')
		return explicit_path;
	if (env != NULL && *env != '\0')
		return env;
	if (access(sys, F_OK) == 0)
		return sys;
	return NULL;
}

/* A path from the file: relative ones are taken from the file's folder. */
static int
get_path(struct yctx *y, const struct ynode *v, const char *field,
    const char *base, char **out)
{
	char *s = NULL;

	if (yget_string(y, v, field, &s) < 0)
		return -1;
	if (s[0] != '/' && base != NULL) {
		char *j = util_join(base, s);
		free(s);
		if ((s = j) == NULL)
			return sd_fail(y->err, SD_EINTERNAL, "out of memory");
	}
	free(*out);
	*out = s;
	return 0;
}

static int
geti(struct yctx *y, const struct ynode *v, const char *f, int64_t lo,
    int64_t hi, int *out)
{
	int64_t x;

	if (yget_int(y, v, f, lo, hi, &x) < 0)
		return -1;
	*out = (int)x;
	return 0;
}

static int
getz(struct yctx *y, const struct ynode *v, const char *f, int64_t lo,
    int64_t hi, size_t *out)
{
	int64_t x;

	if (yget_int(y, v, f, lo, hi, &x) < 0)
		return -1;
	*out = (size_t)x;
	return 0;
}

/* The configuration's defaults: section: the keys of the parameters table
 * marked PARAM_CONFIG, in the table's range (the limits cap jobs, not the
 * defaults). */
static int
defaults_section(struct yctx *y, struct sd_config *c, const struct ynode *m)
{
	char known[512];
	size_t i, n = 0;

	if (yget_map(y, m, "defaults") < 0)
		return -1;
	known[0] = '\0';
	for (i = 0; i < params_count && n < sizeof known; i++)
		if (params_table[i].flags & PARAM_CONFIG)
			n += (size_t)snprintf(known + n, sizeof known - n, "%s%s",
			    n ? ", " : "", params_table[i].name);
	for (i = 0; i < m->n; i++) {
		const char *k = m->keys[i]->value;
		const struct param_def *d = params_find(k);
		char f[64];

		snprintf(f, sizeof f, "defaults.%.40s", k);
		if (d == NULL || !(d->flags & PARAM_CONFIG))
			return yfail(y, m->keys[i], f, "unknown key (known: %s)", known);
		if (params_parse_yaml(d, y, m->items[i], f, NULL, &c->defaults) < 0)
			return -1;
	}
	return 0;
}

static int
limits_section(struct yctx *y, struct sd_config *c, const struct ynode *m)
{
	struct job_limits *l = &c->limits;
	size_t i;

	if (yget_map(y, m, "limits") < 0)
		return -1;
	for (i = 0; i < m->n; i++) {
		const char *k = m->keys[i]->value;
		const struct ynode *x = m->items[i];
		char f[64];
		int r;

		snprintf(f, sizeof f, "limits.%.40s", k);
		if (strcmp(k, "width") == 0)
			r = geti(y, x, f, 64, 16384, &l->width);
		else if (strcmp(k, "height") == 0)
			r = geti(y, x, f, 64, 16384, &l->height);
		else if (strcmp(k, "steps") == 0)
			r = geti(y, x, f, 1, 10000, &l->steps);
		else if (strcmp(k, "count") == 0)
			r = geti(y, x, f, 1, 10000, &l->count);
		else if (strcmp(k, "prompt_length") == 0)
			r = getz(y, x, f, 1, 1 << 20, &l->prompt_length);
		else if (strcmp(k, "job_size") == 0)
			r = getz(y, x, f, 256, 16 << 20, &l->yaml.max_document);
		else if (strcmp(k, "string_size") == 0)
			r = getz(y, x, f, 64, 16 << 20, &l->yaml.max_scalar);
		else if (strcmp(k, "depth") == 0) {
			size_t d = 0;
			if ((r = getz(y, x, f, 2, 64, &d)) == 0)
				l->yaml.max_depth = (int)d;
		} else if (strcmp(k, "nodes") == 0)
			r = getz(y, x, f, 16, 1 << 20, &l->yaml.max_nodes);
		else
			r = yfail(y, m->keys[i], f, "unknown key (known: width, height, "
			    "steps, count, prompt_length, job_size, string_size, depth, nodes)");
		if (r < 0)
			return -1;
	}
	return 0;
}

static int
callback_section(struct yctx *y, struct sd_config *c, const struct ynode *m)
{
	struct callback_config *cb = &c->callback;
	size_t i;

	if (yget_map(y, m, "callback") < 0)
		return -1;
	for (i = 0; i < m->n; i++) {
		const char *k = m->keys[i]->value;
		const struct ynode *x = m->items[i];
		char f[64];
		int r;

		snprintf(f, sizeof f, "callback.%.40s", k);
		if (strcmp(k, "attempts") == 0)
			r = geti(y, x, f, 1, 100, &cb->attempts);
		else if (strcmp(k, "timeout") == 0)
			r = yget_number(y, x, f, 0.05, 3600, &cb->timeout_s);
		else if (strcmp(k, "total_time") == 0)
			r = yget_number(y, x, f, 0.05, 7 * 86400, &cb->total_s);
		else if (strcmp(k, "backoff") == 0)
			r = yget_number(y, x, f, 0, 3600, &cb->backoff_s);
		else if (strcmp(k, "backoff_max") == 0)
			r = yget_number(y, x, f, 0, 86400, &cb->backoff_max_s);
		else
			r = yfail(y, m->keys[i], f, "unknown key (known: attempts, "
			    "timeout, total_time, backoff, backoff_max)");
		if (r < 0)
			return -1;
	}
	return 0;
}

/* Is the model value a Hugging Face Hub id rather than a path relative to
 * the file's folder: no such path, the form ORG/NAME[@REV][/FILE], and not
 * a file name (ORG/NAME.safetensors is a path)? */
static int
config_is_hub_id(const struct ynode *v, const char *base)
{
	static const char *const ext[] = { ".safetensors", ".ckpt", ".bin", ".pt",
	    ".pth", ".gguf", ".json", ".yaml" };
	size_t i, n, k;
	char *path;
	int there;

	if (v->kind != YNODE_SCALAR || v->value == NULL || !hub_is_id(v->value))
		return 0;
	n = strlen(v->value);
	if (strchr(v->value, '/') == strrchr(v->value, '/'))
		for (i = 0; i < sizeof ext / sizeof ext[0]; i++) {
			k = strlen(ext[i]);
			if (n > k && strcmp(v->value + n - k, ext[i]) == 0)
				return 0;
		}
	if (base == NULL)
		return access(v->value, F_OK) != 0;
	if ((path = util_join(base, v->value)) == NULL)
		return 0;
	there = access(path, F_OK) == 0;
	free(path);
	return !there;
}

static int
hub_section(struct yctx *y, struct sd_config *c, const struct ynode *m,
    const char *base)
{
	size_t i;

	if (yget_map(y, m, "hub") < 0)
		return -1;
	for (i = 0; i < m->n; i++) {
		const char *k = m->keys[i]->value;
		const struct ynode *x = m->items[i];
		char f[64];
		int r;

		snprintf(f, sizeof f, "hub.%.40s", k);
		if (strcmp(k, "cache") == 0)
			r = ytree_is_null(x) ? config_set_string(&c->hub.cache, NULL) :
			    get_path(y, x, f, base, &c->hub.cache);
		else if (strcmp(k, "endpoint") == 0) {
			r = ytree_is_null(x) ? config_set_string(&c->hub.endpoint, NULL) :
			    yget_string(y, x, f, &c->hub.endpoint);
			if (r == 0 && c->hub.endpoint != NULL &&
			    strncmp(c->hub.endpoint, "http://", 7) != 0 &&
			    strncmp(c->hub.endpoint, "https://", 8) != 0)
				r = yfail(y, x, f, "not an http:// or https:// URL");
		} else if (strcmp(k, "offline") == 0)
			r = yget_bool(y, x, f, &c->hub.offline);
		else if (strcmp(k, "download") == 0)
			r = yget_bool(y, x, f, &c->hub.download);
		else if (strcmp(k, "fp16") == 0)
			r = yget_bool(y, x, f, &c->hub.fp16);
		else
			r = yfail(y, m->keys[i], f, "unknown key (known: cache, "
			    "endpoint, offline, download, fp16)");
		if (r < 0)
			return -1;
	}
	return 0;
}

/* serve: the HTTP front end (sdbatch serve). */
static int
serve_section(struct yctx *y, struct sd_config *c, const struct ynode *m)
{
	size_t i;

	if (yget_map(y, m, "serve") < 0)
		return -1;
	for (i = 0; i < m->n; i++) {
		const char *k = m->keys[i]->value;
		const struct ynode *x = m->items[i];
		char f[64];
		int r;

		snprintf(f, sizeof f, "serve.%.40s", k);
		if (strcmp(k, "listen") == 0)
			r = yget_string(y, x, f, &c->serve.listen);
		else if (strcmp(k, "token") == 0) {
			r = yget_string(y, x, f, &c->serve.token);
			if (r == 0 && strlen(c->serve.token) < 16)
				r = yfail(y, x, f, "too short: at least 16 characters");
		} else if (strcmp(k, "cors_origin") == 0)
			r = ytree_is_null(x) ? config_set_string(&c->serve.cors_origin,
			    NULL) : yget_string(y, x, f, &c->serve.cors_origin);
		else if (strcmp(k, "connections") == 0)
			r = geti(y, x, f, 1, 10000, &c->serve.connections);
		else if (strcmp(k, "gallery_images") == 0)
			r = geti(y, x, f, 1, 100000, &c->serve.gallery_images);
		else
			r = yfail(y, m->keys[i], f, "unknown key (known: listen, token, "
			    "cors_origin, connections, gallery_images)");
		if (r < 0)
			return -1;
	}
	return 0;
}

int
config_device_valid(const char *device)
{
	const char *p;

	if (device == NULL)
		return 0;
	if (strcmp(device, "cpu") == 0 || strcmp(device, "cuda") == 0)
		return 1;
	if (strncmp(device, "cuda:", 5) != 0)
		return 0;
	p = device + 5;
	if (!isdigit((unsigned char)p[0]))
		return 0;
	if (p[1] == '\0')
		return 1;
	if (p[0] == '0' || !isdigit((unsigned char)p[1]))
		return 0;	/* no leading zeros */
	if (p[2] == '\0')
		return 1;
	if (!isdigit((unsigned char)p[2]) || p[3] != '\0')
		return 0;
	return atoi(p) <= 255;
}

void
config_hub_options(const struct sd_config *c, struct hub_options *o)
{
	hub_options_init(o);
	o->cache = c->hub.cache;
	o->endpoint = c->hub.endpoint;
	o->offline = c->hub.offline;
	o->download = c->hub.download;
	o->prefer_fp16 = c->hub.fp16;
}

/* A list of folders (model_dirs, lora_dirs): one path or a sequence. */
static int
folder_list(struct yctx *y, const struct ynode *v, const char *key,
    const char *base, char ***list, size_t *n)
{
	size_t i;

	for (i = 0; i < *n; i++)
		free((*list)[i]);
	free(*list);
	*list = NULL;
	*n = 0;
	if (ytree_is_null(v))
		return 0;
	if (v->kind == YNODE_SCALAR) {
		if ((*list = calloc(1, sizeof **list)) == NULL)
			return sd_fail(y->err, SD_EINTERNAL, "out of memory");
		*n = 1;
		return get_path(y, v, key, base, &(*list)[0]);
	}
	if (v->kind != YNODE_SEQ)
		return yfail(y, v, key, "expected a list of folders");
	if ((*list = calloc(v->n + 1, sizeof **list)) == NULL)
		return sd_fail(y->err, SD_EINTERNAL, "out of memory");
	for (i = 0; i < v->n; i++) {
		(*n)++;
		if (get_path(y, v->items[i], key, base, &(*list)[i]) < 0)
			return -1;
	}
	return 0;
}

int
config_parse(struct sd_config *c, const char *buf, size_t len,
    const char *name, struct sd_error *err)
{
	struct yctx y = { name, SD_ECONFIG, err, NULL };
	struct ylimits lim;
	struct ynode *root;
	char *base = NULL;
	size_t i;
	int r = 0;

	ytree_limits_default(&lim);
	lim.max_document = 1 << 20;
	lim.max_nodes = 65536;
	if ((root = ytree_parse(buf, len, name, &lim, err, NULL)) == NULL) {
		if (err != NULL)
			err->code = SD_ECONFIG;
		return -1;
	}
	if (root->kind != YNODE_MAP) {
		sd_fail(err, SD_ECONFIG, "%s: the configuration must be a mapping "
		    "(key: value lines), not %s", name, ytree_kind_name(root));
		ytree_free(root);
		return -1;
	}
	if (strchr(name, '/') != NULL)
		base = util_dirname(name);
	for (i = 0; r == 0 && i < root->n; i++) {
		const char *k = root->keys[i]->value;
		const struct ynode *x = root->items[i];

		if (strcmp(k, "model") == 0 && config_is_hub_id(x, base))
			/* a Hub id stays one */
			r = config_set_string(&c->model, x->value);
		else if (strcmp(k, "model") == 0)
			r = ytree_is_null(x) ? config_set_string(&c->model, NULL) :
			    get_path(&y, x, k, base, &c->model);
		else if (strcmp(k, "tokenizer") == 0)
			r = ytree_is_null(x) ? config_set_string(&c->tokenizer, NULL) :
			    get_path(&y, x, k, base, &c->tokenizer);
		else if (strcmp(k, "text_encoders") == 0)
			r = ytree_is_null(x) ? config_set_string(&c->text_encoders, NULL) :
			    get_path(&y, x, k, base, &c->text_encoders);
		else if (strcmp(k, "device") == 0) {
			r = yget_string(&y, x, k, &c->device);
			if (r == 0 && !config_device_valid(c->device))
				r = yfail(&y, x, k, "unknown device \"%.40s\" "
				    "(cpu, cuda or cuda:N)", c->device);
		} else if (strcmp(k, "threads") == 0)
			r = geti(&y, x, k, 0, 4096, &c->threads);
		else if (strcmp(k, "output_root") == 0)
			r = ytree_is_null(x) ? config_set_string(&c->output_root, NULL) :
			    get_path(&y, x, k, base, &c->output_root);
		else if (strcmp(k, "model_dirs") == 0)
			r = folder_list(&y, x, k, base, &c->model_dirs, &c->n_model_dirs);
		else if (strcmp(k, "lora_dirs") == 0)
			r = folder_list(&y, x, k, base, &c->lora_dirs, &c->n_lora_dirs);
		else if (strcmp(k, "poll_interval") == 0)
			r = yget_number(&y, x, k, 0.01, 3600, &c->poll_s);
		else if (strcmp(k, "stale_after") == 0)
			r = yget_number(&y, x, k, 1, 30 * 86400, &c->stale_s);
		else if (strcmp(k, "heartbeat_interval") == 0)
			r = yget_number(&y, x, k, 0.05, 86400, &c->heartbeat_s);
		else if (strcmp(k, "max_worker_deaths") == 0)
			r = geti(&y, x, k, 1, 1000, &c->max_deaths);
		else if (strcmp(k, "job_time_limit") == 0)
			r = yget_number(&y, x, k, 0, 365 * 86400, &c->job_time_s);
		else if (strcmp(k, "defaults") == 0)
			r = defaults_section(&y, c, x);
		else if (strcmp(k, "limits") == 0)
			r = limits_section(&y, c, x);
		else if (strcmp(k, "callback") == 0)
			r = callback_section(&y, c, x);
		else if (strcmp(k, "hub") == 0)
			r = hub_section(&y, c, x, base);
		else if (strcmp(k, "policy") == 0)
			r = policy_parse(&y, &c->policy, x, base);
		else if (strcmp(k, "serve") == 0)
			r = serve_section(&y, c, x);
		else
			r = yfail(&y, root->keys[i], k, "unknown key (known: model, "
			    "tokenizer, text_encoders, device, threads, output_root, model_dirs, lora_dirs, "
			    "poll_interval, stale_after, heartbeat_interval, "
			    "max_worker_deaths, job_time_limit, policy, defaults, "
			    "limits, callback, hub, serve)");
		if (r < 0 && err != NULL && err->code != SD_EINTERNAL)
			err->code = SD_ECONFIG;
	}
	if (r == 0 && c->heartbeat_s * 2 > c->stale_s)
		r = sd_fail(err, SD_ECONFIG, "%s: heartbeat_interval (%g s) must be at "
		    "most half of stale_after (%g s)", name, c->heartbeat_s, c->stale_s);
	/* jobs name files in lora_dirs (<lora:NAME>): inside the input roots */
	if (r == 0 && policy_check_dirs(&c->policy, "lora_dirs", c->lora_dirs, c->n_lora_dirs, err) < 0)
		r = sd_error_prefix(err, "%s", name);
	free(base);
	ytree_free(root);
	return r;
}

int
config_load(struct sd_config *c, const char *path, struct sd_error *err)
{
	size_t len;
	char *buf;
	int r;

	if ((buf = util_read_file(path, 1 << 20, 0, &len, err)) == NULL) {
		if (err != NULL)
			err->code = err->code == SD_ENOINPUT ? SD_ECONFIG : err->code;
		return sd_error_prefix(err, "configuration");
	}
	r = config_parse(c, buf, len, path, err);
	free(buf);
	if (r == 0 && config_set_string(&c->path, path) < 0)
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	return r;
}
