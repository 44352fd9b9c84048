/* runjob.c: run one job through the engine and write its PNGs. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/fileio.h"
#include "io/image.h"
#include "io/png.h"
#include "model/checkpoint.h"
#include "model/hub.h"
#include "sample/description.h"
#include "sample/scheduler.h"
#include "spool/metadata.h"
#include "spool/policy.h"
#include "spool/runjob.h"
#include "spool/util.h"

static const char *const status_names[] = {
	"done", "failed", "cancelled", "interrupted"
};

const char *
runjob_status_name(enum runjob_status st)
{
	return status_names[st];
}

void
model_cache_free(struct model_cache *mc)
{
	if (mc->model != NULL)
		sd_model_free(mc->model);
	free(mc->key);
	free(mc->arch);
	memset(mc, 0, sizeof *mc);
}

void
runjob_result_free(struct runjob_result *res)
{
	int i;

	for (i = 0; i < res->nimages; i++)
		free(res->images[i].path);
	free(res->images);
	free(res->model_path);
	free(res->arch);
	for (i = 0; i < res->nwarnings; i++)
		free(res->warnings[i]);
	free(res->warnings);
	memset(res, 0, sizeof *res);
}

/* Blame a job field: message prefixed with file:line when known; *line
 * (when not NULL) gets the field's line. */
static int
blame_err(const struct sd_job *job, enum job_field f, struct sd_error *err,
    int *line)
{
	const char *name = job_field_name(f);
	size_t n = strlen(name);

	snprintf(err->field, sizeof err->field, "%s", name);
	if (line != NULL)
		*line = job->line[f];
	if (job->file != NULL &&
	    strncmp(err->message, job->file, strlen(job->file)) == 0)
		return -1;	/* it says where already */
	if (strncmp(err->message, name, n) != 0 || err->message[n] != ':')
		sd_error_prefix(err, "%s", name);
	if (job->line[f] > 0 && job->file != NULL)
		sd_error_prefix(err, "%s:%d", job->file, job->line[f]);
	return -1;
}

static int
blame(struct sd_job *job, enum job_field f, struct runjob_result *res)
{
	return blame_err(job, f, &res->err, &res->err_line);
}

/* A value the job left to the model (width, height, steps) failed the
 * configured limits: say that it is the model's default. */
static void
explain_model_default(const struct sd_job *job, struct sd_error *err)
{
	const struct param_def *d = params_find(err->field);
	size_t n = strlen(err->message);

	if (d == NULL || !(d->flags & PARAM_MODEL_DEFAULT) || job->line[d->field] != 0)
		return;
	snprintf(err->message + n, sizeof err->message - n, " (the model's default; "
	    "give %s in the job, or in the configuration's defaults)", d->name);
}

/* The engine's messages start with the field they are about
 * ("schedule: karras is not available with ..."): blame it. */
static void
blame_by_message(struct sd_job *job, struct runjob_result *res)
{
	int f;

	if (res->err.code != SD_EDATA)
		return;
	for (f = 0; f < JF_COUNT_; f++) {
		const char *name = job_field_name((enum job_field)f);
		size_t n = strlen(name);
		if (strncmp(res->err.message, name, n) == 0 &&
		    res->err.message[n] == ':') {
			blame(job, (enum job_field)f, res);
			return;
		}
	}
}

static const char *
str(const char *s)
{
	return s != NULL ? s : "";
}

static int
load_model(struct runjob_env *env, struct sd_job *job, struct runjob_result *res)
{
	const struct sd_config *cfg = env->cfg;
	struct model_cache *mc = env->cache;
	struct sd_model_spec spec;
	struct progress_event ev;
	char *key;
	double t0;

	memset(&spec, 0, sizeof spec);
	spec.model = job->model;
	spec.unet = job->unet;
	spec.vae = job->vae;
	spec.tokenizer = cfg->tokenizer;
	spec.text_encoders = cfg->text_encoders;
	spec.device = cfg->device;
	spec.threads = cfg->threads;
	spec.hub_cache = cfg->hub.cache;
	key = util_printf("%s|%s|%s|%s|%s|%s|%d|%s", str(spec.model), str(spec.unet),
	    str(spec.vae), str(spec.tokenizer), str(spec.text_encoders), str(spec.device), spec.threads,
	    str(spec.hub_cache));
	if (key == NULL)
		return sd_fail(&res->err, SD_EINTERNAL, "out of memory");
	if (mc->model != NULL && strcmp(mc->key, key) == 0) {
		free(key);
		res->load_s = 0;
		res->arch = strdup(mc->arch ? mc->arch : "");
		return 0;
	}
	model_cache_free(mc);
	progress_event_init(&ev, "loading", job->id);
	ev.path = job->model;
	progress_emit(env->sink, &ev);
	t0 = util_now_mono();
	mc->model = sd_model_load(&spec, &res->err);
	res->load_s = util_now_mono() - t0;
	if (mc->model == NULL) {
		free(key);
		if (res->err.code == 0)
			res->err.code = SD_EDATA;
		if (res->err.code == SD_EUNAVAILABLE || res->err.code == SD_EINTERNAL)
			return -1;	/* not the job's fault */
		return blame(job, job->unet && strstr(res->err.message, job->unet) ?
		    JF_UNET : job->vae && strstr(res->err.message, job->vae) ?
		    JF_VAE : JF_MODEL, res);
	}
	mc->key = key;
	mc->arch = strdup(str(sd_model_arch(mc->model)));
	res->arch = strdup(str(mc->arch));
	return 0;
}

/* Read an input image (before the model loads, so that a bad one fails
 * at once). */
static int
load_input(struct sd_job *job, enum job_field f, const char *path, int channels,
    struct sd_image_u8 *out, struct runjob_result *res)
{
	memset(out, 0, sizeof *out);
	if (png_read(path, channels, out, &res->err) < 0)
		return blame(job, f, res);
	return 0;
}

/* Bring an input image to the job's (resolved) size, with PIL's Lanczos
 * when it differs. */
static int
fit_input(struct sd_job *job, enum job_field f, struct sd_image_u8 *img,
    struct runjob_result *res)
{
	struct sd_image_u8 sized;

	if (img->data == NULL || (img->width == job->width && img->height == job->height))
		return 0;
	memset(&sized, 0, sizeof sized);
	if (image_resize_lanczos(img, job->width, job->height, &sized, &res->err) < 0)
		return blame(job, f, res);
	image_free(img);
	*img = sized;
	return 0;
}

/* The engine's parameters of the job, from the parameters table, with the
 * model's defaults in; they are brought back into the job, so that the
 * PNG metadata, the result record and the callback carry the effective
 * values, and checked again against the configured limits (a size the
 * job left to the model could not be checked before). */
static int
job_sd_params(struct runjob_env *env, struct sd_job *job, struct sd_params *p,
    struct runjob_result *res)
{
	const struct param_def *d;

	sd_params_init(p);
	params_to_sd(&job->params, p);
	if (sd_params_resolve(env->cache->model, p, &res->err) < 0) {
		if (res->err.code == 0)
			res->err.code = SD_EDATA;
		blame_by_message(job, res);
		return -1;
	}
	params_from_sd(&job->params, p);
	if (job_check(job, env->cfg, &res->err) < 0) {
		explain_model_default(job, &res->err);
		d = params_find(res->err.field);
		return d != NULL ? blame(job, d->field, res) : -1;
	}
	return 0;
}

/* Open (creating) the output folder; *dirpath its path for the records,
 * *pattern the file name pattern. */
static int
open_output(struct runjob_env *env, struct sd_job *job, int *dfd,
    char **dirpath, char **pattern, struct runjob_result *res)
{
	const char *root = env->output_root;
	const char *sub = job->output_dir ? job->output_dir : env->default_dir;
	char realroot[PATH_MAX], *rel = NULL, *p, *save = NULL, *tok;
	int fd = -1, nfd;

	*dfd = -1;
	*dirpath = *pattern = NULL;
	if (env->output_path != NULL) {
		const char *o = env->output_path;
		size_t n = strlen(o);
		char *dir;
		if (n > 0 && o[n - 1] == '/') {
			dir = strdup(o);
			*pattern = strdup(env->default_name ? env->default_name : "{id}.png");
		} else {
			const char *slash = strrchr(o, '/');
			dir = util_dirname(o);
			*pattern = strdup(slash ? slash + 1 : o);
		}
		if (dir == NULL || *pattern == NULL) {
			free(dir);
			return sd_fail(&res->err, SD_EINTERNAL, "out of memory");
		}
		if (job_check_name_pattern(*pattern, &res->err) < 0) {
			free(dir);
			return sd_error_prefix(&res->err, "--output %s", o);
		}
		if (util_mkdirs(dir, &res->err) < 0 ||
		    (fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
			if (fd < 0 && res->err.code == 0)
				sd_fail(&res->err, SD_EIO, "%s: %s", dir, strerror(errno));
			free(dir);
			return -1;
		}
		*dfd = fd;
		*dirpath = dir;
		return 0;
	}
	*pattern = strdup(job->output_name ? job->output_name :
	    env->default_name ? env->default_name : "{id}.png");
	if (*pattern == NULL)
		return sd_fail(&res->err, SD_EINTERNAL, "out of memory");
	if (root == NULL) {
		/* No output root: anywhere the user says (run). */
		const char *dir = sub ? sub : ".";
		if (util_mkdirs(dir, &res->err) < 0)
			return job->output_dir ? blame(job, JF_OUTPUT, res) : -1;
		if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
			return sd_fail(&res->err, SD_EIO, "%s: %s", dir, strerror(errno));
		*dfd = fd;
		*dirpath = strdup(dir);
		return 0;
	}
	if (util_mkdirs(root, &res->err) < 0 || realpath(root, realroot) == NULL) {
		if (res->err.code == 0)
			sd_fail(&res->err, SD_EIO, "output root %s: %s", root, strerror(errno));
		return -1;
	}
	if (sub == NULL)
		rel = strdup("");
	else if (sub[0] == '/') {
		size_t n = strlen(realroot), m = strlen(root);
		if (strncmp(sub, realroot, n) == 0 && (sub[n] == '/' || sub[n] == '\0'))
			rel = strdup(sub + n);
		else if (strncmp(sub, root, m) == 0 && (sub[m] == '/' || sub[m] == '\0'))
			rel = strdup(sub + m);
		else {
			sd_fail(&res->err, SD_EDATA, "output.dir: %s is outside the output "
			    "root %s", sub, realroot);
			return blame(job, JF_OUTPUT, res);
		}
	} else
		rel = strdup(sub);
	if (rel == NULL)
		return sd_fail(&res->err, SD_EINTERNAL, "out of memory");
	if ((fd = open(realroot, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		free(rel);
		return sd_fail(&res->err, SD_EIO, "output root %s: %s", realroot,
		    strerror(errno));
	}
	/* Walk down from the root without following any link, so that no
	 * symbolic link inside the root can lead out of it. */
	p = strdup(realroot);
	for (tok = strtok_r(rel, "/", &save); tok != NULL && p != NULL;
	    tok = strtok_r(NULL, "/", &save)) {
		char *np;
		if (strcmp(tok, ".") == 0)
			continue;
		if (strcmp(tok, "..") == 0) {
			sd_fail(&res->err, SD_EDATA, "output.dir: \"..\" is not allowed");
			goto bad;
		}
		if (mkdirat(fd, tok, 0777) < 0 && errno != EEXIST) {
			sd_fail(&res->err, SD_EIO, "%s/%s: cannot create: %s", p, tok,
			    strerror(errno));
			goto fail;
		}
		nfd = openat(fd, tok, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (nfd < 0) {
			if (errno == ELOOP || errno == ENOTDIR) {
				sd_fail(&res->err, SD_EDATA, "output folder %s/%s is a "
				    "symbolic link or not a folder (outputs may not leave "
				    "the output root)", p, tok);
				goto bad;
			}
			sd_fail(&res->err, SD_EIO, "%s/%s: %s", p, tok, strerror(errno));
			goto fail;
		}
		close(fd);
		fd = nfd;
		np = util_printf("%s/%s", p, tok);
		free(p);
		p = np;
	}
	free(rel);
	if (p == NULL) {
		close(fd);
		return sd_fail(&res->err, SD_EINTERNAL, "out of memory");
	}
	*dfd = fd;
	*dirpath = p;
	return 0;
bad:
	free(rel);
	free(p);
	close(fd);
	return job->output_dir ? blame(job, JF_OUTPUT, res) : -1;
fail:
	free(rel);
	free(p);
	close(fd);
	return -1;
}

/* Is dirfd/name a PNG that job id wrote (its sdbatch text chunk)? */
static int
written_by(int dfd, const char *dirpath, const char *name, const char *id)
{
	char *path = util_printf("%s/%s", dirpath, name), *text = NULL;
	json_t *j = NULL;
	int r = 0;

	(void)dfd;
	if (path != NULL && png_read_text(path, "sdbatch", &text, NULL, NULL) == 1 &&
	    text != NULL && (j = json_loads(text, 0, NULL)) != NULL) {
		const char *v = json_string_value(json_object_get(j, "id"));
		r = v != NULL && strcmp(v, id) == 0;
	}
	json_decref(j);
	free(text);
	free(path);
	return r;
}

/* Write data as dirfd/NAME with the one atomic writer.  In a spool
 * (unique set) an existing file of another job (or anyone's) is never
 * replaced: a free name NAME-2.EXT, NAME-3.EXT, ... is taken instead and
 * *name updated; a file an earlier run of the same job wrote is. */
static int
write_at(int dfd, const char *dirpath, char **name, const void *data,
    size_t len, const char *id, int unique, struct sd_error *err)
{
	struct sd_atomic_file f;
	char *try = NULL;
	int k;

	for (k = 1; k < 1000; k++) {
		const char *n = *name;
		if (k > 1) {
			const char *dot = strrchr(*name, '.');
			size_t stem = dot && dot != *name ? (size_t)(dot - *name) :
			    strlen(*name);
			free(try);
			try = util_printf("%.*s-%d%s", (int)stem, *name, k,
			    *name + stem);
			if (try == NULL)
				return sd_fail(err, SD_EINTERNAL, "out of memory");
			n = try;
		}
		if (sd_atomic_open(&f, dfd, n, id, 0666, err) < 0 ||
		    sd_atomic_write(&f, data, len, err) < 0) {
			free(try);
			return sd_error_prefix(err, "%s", dirpath);
		}
		if (!unique || written_by(dfd, dirpath, n, id)) {
			if (sd_atomic_commit(&f, 0, err) < 0)
				break;
		} else if (sd_atomic_commit(&f, 1, err) < 0) {
			if (errno == EEXIST)
				continue;
			break;
		}
		if (try != NULL) {
			free(*name);
			*name = try;
		}
		return 0;
	}
	free(try);
	if (k == 1000)
		sd_fail(err, SD_EIO, "%s/%s: no free name for the image", dirpath, *name);
	return sd_error_prefix(err, "%s", dirpath);
}

/* The PNG to standard output (run -o -), all of it. */
static int
write_stdout(const void *data, size_t len, struct sd_error *err)
{
	const char *p = data;

	while (len > 0) {
		ssize_t n = write(STDOUT_FILENO, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return sd_fail(err, SD_EIO, "writing the PNG to standard output: %s",
			    n < 0 ? strerror(errno) : "nothing written");
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Remove what a killed write of this job left in its output folder. */
static void
clean_leftovers(int dfd, const char *id)
{
	struct dirent *de;
	DIR *d;
	int fd = dup(dfd);

	if (fd < 0 || (d = fdopendir(fd)) == NULL) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((de = readdir(d)) != NULL)
		if (sd_atomic_is_leftover(de->d_name, id))
			unlinkat(dfd, de->d_name, 0);
	closedir(d);
}

struct step_ctx {
	struct runjob_env *env;
	struct sd_job *job;
	struct runjob_result *res;
	int image;
	double job_start, last_check, image_est;
	int cancelled, interrupted, timed_out;
};

static int
should_stop(struct step_ctx *c)
{
	double now = util_now_mono();

	if ((c->env->stop != NULL && *c->env->stop) ||
	    (c->env->claim != NULL && c->env->claim->lost)) {
		c->interrupted = 1;
		return 1;
	}
	if (c->env->cfg->job_time_s > 0 && now - c->job_start > c->env->cfg->job_time_s) {
		c->timed_out = 1;
		return 1;
	}
	if (c->env->claim != NULL && now - c->last_check >= 0.2) {
		c->last_check = now;
		if (spool_cancel_requested(c->env->claim)) {
			c->cancelled = 1;
			return 1;
		}
	}
	return 0;
}

static int
on_progress(void *user, const struct sd_progress *p)
{
	struct step_ctx *c = user;
	struct progress_event ev;

	if (should_stop(c))
		return 1;
	if (p->event != NULL && strcmp(p->event, "warning") == 0 && p->message != NULL &&
	    c->image == 0) {
		/* a LoRA that matched in part, a plain prompt cut at 77 tokens:
		 * on stderr, in the progress log and the result record */
		char *m = util_printf("%s: warning: %s", c->job->id, p->message);
		char **w = realloc(c->res->warnings, (size_t)(c->res->nwarnings + 1) *
		    sizeof *w);
		if (m != NULL && c->env->notice != NULL)
			c->env->notice(c->env->notice_user, m);
		free(m);
		if (w != NULL) {
			c->res->warnings = w;
			if ((w[c->res->nwarnings] = strdup(p->message)) != NULL)
				c->res->nwarnings++;
		}
		progress_event_init(&ev, "warning", c->job->id);
		ev.message = p->message;
		progress_emit(c->env->sink, &ev);
	}
	if (p->event == NULL || strcmp(p->event, "step") != 0)
		return 0;
	c->res->steps_done++;
	progress_event_init(&ev, "step", c->job->id);
	ev.image = c->image;
	ev.images = c->job->count;
	ev.step = p->step;
	ev.steps = p->steps;
	ev.elapsed_s = util_now_mono() - c->job_start;
	if (p->eta_s >= 0) {
		double per_image = p->elapsed_s + p->eta_s;
		if (c->image_est > 0)
			per_image = c->image_est;
		ev.eta_s = p->eta_s + per_image * (c->job->count - c->image - 1);
	}
	progress_emit(c->env->sink, &ev);
	return 0;
}

static int
stop_status(struct step_ctx *c, struct runjob_result *res)
{
	if (c->timed_out) {
		res->status = RUNJOB_FAILED;
		sd_fail(&res->err, SD_EDATA, "stopped after %.0f s: over the job time "
		    "limit (job_time_limit: %g s in the configuration)",
		    util_now_mono() - c->job_start, c->env->cfg->job_time_s);
	} else if (c->cancelled) {
		res->status = RUNJOB_CANCELLED;
		sd_fail(&res->err, SD_EREQUEUED, "cancelled");
	} else {
		res->status = RUNJOB_INTERRUPTED;
		sd_fail(&res->err, SD_EREQUEUED, "interrupted by a signal");
	}
	res->err.field[0] = '\0';
	return -1;
}

static int
render(struct runjob_env *env, struct sd_job *job, struct runjob_result *res,
    struct step_ctx *ctx)
{
	struct sd_image_u8 init, mask;
	struct sd_params p;
	char model_name[256], *dirpath = NULL, *pattern = NULL;
	int dfd = -1, i, r = -1, nloras = 0;
	struct sd_lora *loras = NULL;

	memset(&init, 0, sizeof init);
	memset(&mask, 0, sizeof mask);
	/* Input images may be up to 4 times the largest output (they are
	 * resized), checked before decoding. */
	png_set_max_pixels((uint64_t)4 * (uint64_t)env->cfg->limits.width *
	    (uint64_t)env->cfg->limits.height);
	if (job->init_image != NULL &&
	    load_input(job, JF_INIT_IMAGE, job->init_image, 3, &init, res) < 0)
		goto out;
	if (job->mask != NULL && load_input(job, JF_MASK, job->mask, 1, &mask, res) < 0)
		goto out;
	if (env->output_stdout) {
		if (job->count != 1) {
			sd_fail(&res->err, SD_EUSAGE, "standard output takes one image "
			    "(count is %d)", job->count);
			goto out;
		}
	} else if (open_output(env, job, &dfd, &dirpath, &pattern, res) < 0)
		goto out;
	if (env->claim != NULL && dfd >= 0)
		clean_leftovers(dfd, job->id);
	if (should_stop(ctx)) {
		stop_status(ctx, res);
		goto out;
	}
	if (load_model(env, job, res) < 0)
		goto out;
	metadata_model_name(job->model, model_name, sizeof model_name);
	if (job_sd_params(env, job, &p, res) < 0 ||
	    fit_input(job, JF_INIT_IMAGE, &init, res) < 0 ||
	    fit_input(job, JF_MASK, &mask, res) < 0)
		goto out;
	p.init_rgb = init.data;
	p.mask_grey = mask.data;
	/* the LoRAs: the job's files, and <lora:NAME> found in lora_dirs */
	if (params_loras(&job->params, &loras, &nloras) < 0) {
		sd_fail(&res->err, SD_EINTERNAL, "out of memory");
		goto out;
	}
	p.loras = loras;
	p.nloras = nloras;
	p.lora_dirs = (const char *const *)env->cfg->lora_dirs;
	p.nlora_dirs = (int)env->cfg->n_lora_dirs;
	if ((res->images = calloc((size_t)job->count, sizeof *res->images)) == NULL) {
		sd_fail(&res->err, SD_EINTERNAL, "out of memory");
		goto out;
	}
	for (i = 0; i < job->count; i++) {
		struct sd_image img;
		struct sd_timings t;
		struct png_text texts[2];
		struct progress_event ev;
		char *params, *json, *name, *path;
		uint8_t *png = NULL;
		size_t pnglen = 0;
		double t0 = util_now_mono();
		int w;

		memset(&img, 0, sizeof img);
		memset(&t, 0, sizeof t);
		ctx->image = i;
		if (should_stop(ctx)) {
			stop_status(ctx, res);
			goto out;
		}
		if (sd_generate(env->cache->model, &p, i, &img, &t, on_progress, ctx,
		    &res->err) < 0) {
			sd_image_free(&img);
			if (res->err.code == SD_EREQUEUED || ctx->cancelled ||
			    ctx->interrupted || ctx->timed_out) {
				stop_status(ctx, res);
				goto out;
			}
			if (res->err.code == 0)
				res->err.code = SD_EINTERNAL;
			/* Out of memory or a device error: the model's context
			 * keeps it (sticky); the next job loads anew. */
			if (res->err.code == SD_EINTERNAL || res->err.code == SD_EUNAVAILABLE)
				model_cache_free(env->cache);
			blame_by_message(job, res);
			goto out;
		}
		ctx->image_est = util_now_mono() - t0;
		res->encode_s += t.encode_s;
		res->sample_s += t.sample_s;
		res->decode_s += t.decode_s;
		name = env->output_stdout ? strdup("-") :
		    job_output_name(pattern, job->id, i, img.seed, job->count, &res->err);
		params = metadata_parameters(job, img.seed, model_name);
		{
			int nused;
			const struct sd_lora_used *used = sd_model_loras(env->cache->model, &nused);
			if (params != NULL && nused > 0)
				params = metadata_add_lora_hashes(params, used, nused);
		}
		json = metadata_sdbatch_json(job, i, img.seed, res->arch);
		texts[0].key = "parameters";
		texts[0].text = params ? params : "";
		texts[1].key = "sdbatch";
		texts[1].text = json ? json : "{}";
		w = name != NULL && png_encode_rgb(img.rgb, img.width, img.height, texts,
		    2, &png, &pnglen, &res->err) == 0;
		free(params);
		free(json);
		/* A paused worker whose claim was taken over writes nothing. */
		if (w && env->claim != NULL && !spool_claim_held(env->claim)) {
			((struct spool_claim *)env->claim)->lost = 1;
			free(png);
			free(name);
			sd_image_free(&img);
			ctx->interrupted = 1;
			stop_status(ctx, res);
			goto out;
		}
		if (w && env->output_stdout)
			w = write_stdout(png, pnglen, &res->err) == 0;
		else if (w)
			w = write_at(dfd, dirpath, &name, png, pnglen, job->id,
			    env->claim != NULL, &res->err) == 0;
		if (!w) {
			free(png);
			free(name);
			sd_image_free(&img);
			goto out;
		}
		path = env->output_stdout ? strdup("-") :
		    strcmp(dirpath, ".") == 0 && env->output_path != NULL ?
		    strdup(name) : util_printf("%s/%s", dirpath, name);
		free(name);
		res->images[i].path = path;
		res->images[i].seed = img.seed;
		res->images[i].width = img.width;
		res->images[i].height = img.height;
		util_sha256_hex(png, pnglen, res->images[i].sha256);
		res->nimages = i + 1;
		free(png);
		sd_image_free(&img);
		progress_event_init(&ev, "image", job->id);
		ev.image = i;
		ev.images = job->count;
		ev.elapsed_s = util_now_mono() - ctx->job_start;
		ev.path = path;
		progress_emit(env->sink, &ev);
		if (env->on_image != NULL && path != NULL)
			env->on_image(env->on_image_user, path);
	}
	r = 0;
out:
	if (dfd >= 0)
		close(dfd);
	free(dirpath);
	free(pattern);
	image_free(&init);
	image_free(&mask);
	params_loras_free(loras, nloras);
	return r;
}

/* A model named by Hub id, downloaded on first use: a "loading" event
 * (path: ORG/NAME/FILE) as each file starts, and either a notice then or
 * the bytes as they arrive to env->download. */
struct download_ctx {
	struct runjob_env *env;
	struct sd_job *job;
	char file[1200];	/* the file being downloaded */
};

static void
on_download_notice(void *user, const char *message)
{
	struct download_ctx *d = user;
	char *m;

	if (d->env->notice == NULL)
		return;
	if ((m = util_printf("%s: %s", d->job->id, message)) == NULL)
		return;
	d->env->notice(d->env->notice_user, m);
	free(m);
}

static void
on_download(void *user, const struct hub_progress *p)
{
	struct download_ctx *d = user;
	struct runjob_env *env = d->env;
	struct progress_event ev;
	char name[1200], size[32], count[32] = "", *m;

	if (p->state == HUB_FILE_DONE && env->download != NULL) {
		env->download(env->download_user, d->job->id, p);
		return;
	}
	if (p->state != HUB_FILE_PROGRESS)
		return;
	snprintf(name, sizeof name, "%s/%s", p->repo, p->file);
	if (strcmp(name, d->file) != 0) {
		/* a file starts */
		snprintf(d->file, sizeof d->file, "%s", name);
		if (env->notice != NULL && env->download == NULL) {
			if (p->count > 0)
				snprintf(count, sizeof count, " [%d/%d]", p->index,
				    p->count);
			util_bytes_text(p->total, "size unknown", size, sizeof size);
			m = util_printf("%s: downloading%s %s (%s)", d->job->id,
			    count, name, size);
			if (m != NULL)
				env->notice(env->notice_user, m);
			free(m);
		}
		progress_event_init(&ev, "loading", d->job->id);
		ev.path = name;
		progress_emit(env->sink, &ev);
	}
	if (env->download != NULL)
		env->download(env->download_user, d->job->id, p);
}

/* The job's LoRA files (loras:) inside the input roots: relative ones
 * against the job's folder (else the current one), as written and where
 * they lead; one answer whether a file outside exists or not.  (<lora:NAME>
 * reads from lora_dirs, which the configuration keeps inside the roots.) */
static int
check_policy_loras(const struct sd_config *cfg, struct sd_job *job, struct sd_error *err,
    int *line)
{
	struct sd_lora *l;
	char cwd[4096];
	int n, i, ok = 1;

	if (job->line[JF_LORAS] == 0)
		return 0;
	if (params_loras(&job->params, &l, &n) < 0)
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	for (i = 0; ok && i < n; i++) {
		const char *dir = job->dir;
		char *cand = NULL;
		if (l[i].path[0] != '/') {
			if (dir == NULL)
				dir = getcwd(cwd, sizeof cwd);
			cand = dir != NULL ? util_join(dir, l[i].path) : NULL;
		}
		ok = policy_input_allowed(&cfg->policy, cand ? cand : l[i].path);
		free(cand);
		if (!ok)
			sd_fail(err, SD_EDATA, "loras: %s is outside the configuration's input "
			    "roots (policy.input_roots)", l[i].path);
	}
	params_loras_free(l, n);
	return ok ? 0 : blame_err(job, JF_LORAS, err, line);
}

/* The configuration's trust policy (policy.h) on what the job names.
 * given: paths as the job wrote them (before resolution: a path outside
 * the input roots gets the same answer whether it exists or not), else
 * the resolved ones (symbolic links followed). */
static int
check_policy(const struct sd_config *cfg, struct sd_job *job, int given,
    struct sd_error *err, int *line)
{
	const struct sd_policy *pol = &cfg->policy;
	const char *paths[5] = { job->model, job->unet, job->vae, job->init_image,
	    job->mask };
	static const enum job_field fields[5] = { JF_MODEL, JF_UNET, JF_VAE,
	    JF_INIT_IMAGE, JF_MASK };
	char why[600];
	int i;

	if (given && job->callback.url != NULL) {
		if (policy_check_url(pol, job->callback.url, why, sizeof why) < 0) {
			sd_fail(err, SD_EDATA, "callback: %s", why);
			return blame_err(job, JF_CALLBACK, err, line);
		}
		if (job->callback.secret_env != NULL &&
		    !policy_secret_allowed(pol, job->callback.secret_env)) {
			sd_fail(err, SD_EDATA, "callback: secret_env %.64s is not "
			    "among the configuration's secret_envs (policy.secret_envs)",
			    job->callback.secret_env);
			return blame_err(job, JF_CALLBACK, err, line);
		}
	}
	if (pol->n_input_roots == 0)
		return 0;
	for (i = 0; i < 5; i++) {
		char *cand = NULL;
		const char *p = paths[i];
		int ok;
		struct stat st;

		/* what the configuration names itself is trusted */
		if (p == NULL || job->line[fields[i]] == 0)
			continue;
		if (given && p[0] != '/') {
			/* relative: against the job's folder when it is a path
			 * there; else the model folders or the Hub decide */
			if (job->dir == NULL)
				continue;
			cand = util_printf("%s/%s", job->dir, p);
			if (cand == NULL)
				return sd_fail(err, SD_EINTERNAL, "out of memory");
			if (p[0] != '.' && stat(cand, &st) < 0) {
				free(cand);
				continue;
			}
			p = cand;
		}
		ok = policy_input_allowed(pol, p);
		free(cand);
		if (!ok) {
			sd_fail(err, SD_EDATA, "%s: %s is outside the configuration's "
			    "input roots (policy.input_roots)", job_field_name(fields[i]),
			    paths[i]);
			return blame_err(job, fields[i], err, line);
		}
	}
	return check_policy_loras(cfg, job, err, line);
}

int
runjob_check(const struct sd_config *cfg, struct sd_job *job,
    struct sd_error *err, int *line)
{
	static const enum job_field parts[3] = { JF_MODEL, JF_UNET, JF_VAE };
	struct sd_config c = *cfg;	/* the same, but nothing downloads here */
	struct sd_checkpoint ck;
	struct model_desc d;
	int i, r, later = 0, inpaint;

	if (line != NULL)
		*line = 0;
	c.hub.download = 0;
	c.hub.offline = 1;
	if (check_policy(cfg, job, 1, err, line) < 0)
		return -1;
	for (i = 0; i < 3; i++) {
		const char *given = i == 0 ? (job->model ? job->model : cfg->model) :
		    i == 1 ? job->unet : job->vae;
		if (job_resolve_model_part(job, &c, NULL, parts[i], err, line) == 0)
			continue;
		/* a model named by Hub id that the worker will fetch on first
		 * use: the rest can still be checked */
		if (err->code == SD_ENOINPUT && cfg->hub.download &&
		    !cfg->hub.offline && given != NULL && hub_is_id(given)) {
			sd_error_clear(err);
			if (line != NULL)
				*line = 0;
			later = 1;
			continue;
		}
		return -1;
	}
	if (job_resolve_inputs(job, err, line) < 0 ||
	    check_policy(cfg, job, 0, err, line) < 0)
		return -1;
	if (later)
		return 0;
	/* The model's description (its tensors' names and shapes, its
	 * configs; no weight is read): its defaults against the limits. */
	memset(&ck, 0, sizeof ck);
	if (checkpoint_load(&ck, job->model, job->unet, job->vae, err) < 0 ||
	    (cfg->text_encoders != NULL && *cfg->text_encoders != '\0' &&
	    checkpoint_add_text_encoders(&ck, cfg->text_encoders, err) < 0) ||
	    model_describe(&ck, &d, err) < 0 ||
	    (d.family == MODEL_SD3 && !ck.detect.has_text_encoder &&
	    sd_fail(err, SD_ENOINPUT, "this SD3 file holds no text encoders (as "
	    "sd3_medium.safetensors): give them with --text-encoders DIR (a folder "
	    "of clip_l.safetensors, clip_g.safetensors and t5xxl_fp16.safetensors, "
	    "or a diffusers SD3 folder), or use a file that includes them") < 0)) {
		/* (the last: sd_model_load's message, as the worker says it) */
		checkpoint_free(&ck);
		if (err->code == 0)
			err->code = SD_EDATA;
		return blame_err(job, job->unet && strstr(err->message, job->unet) ?
		    JF_UNET : job->vae && strstr(err->message, job->vae) ?
		    JF_VAE : JF_MODEL, err, line);
	}
	inpaint = strstr(ck.detect.arch, "inpaint") != NULL ||
	    strstr(d.arch, "inpaint") != NULL;
	checkpoint_free(&ck);
	{
		int w = job->width, h = job->height, st = job->steps;
		if (job->width <= 0)
			job->width = d.default_width;
		if (job->height <= 0)
			job->height = d.default_height;
		if (job->steps <= 0)
			job->steps = d.default_steps;
		r = job_check(job, cfg, err);
		job->width = w;
		job->height = h;
		job->steps = st;
		if (r < 0) {
			const struct param_def *pd = params_find(err->field);
			explain_model_default(job, err);
			return pd != NULL ? blame_err(job, pd->field, err, line) : -1;
		}
	}
	{
		/* the sampler, schedule, steps and strength as the engine
		 * will take them (sd_generate) */
		struct sched_config sc = d.sched;
		struct sd_scheduler *sched;
		enum sd_sampler sampler = job->sampler == SD_SAMPLER_AUTO ?
		    d.default_sampler : job->sampler;
		int steps = job->steps > 0 ? job->steps : d.default_steps;

		/* (sd_params_resolve's rules, without a loaded model) */
		if (d.sched.prediction_type == SCHED_PRED_FLOW &&
		    job->prediction != SD_PREDICTION_AUTO &&
		    job->prediction != SD_PREDICTION_FLOW) {
			sd_fail(err, SD_EDATA, "prediction: %s is a flow-matching model: "
			    "prediction must be auto or flow, not %s", d.name,
			    sd_prediction_name(job->prediction));
			return blame_err(job, JF_PREDICTION, err, line);
		}
		if (d.sched.prediction_type != SCHED_PRED_FLOW &&
		    job->prediction == SD_PREDICTION_FLOW) {
			sd_fail(err, SD_EDATA, "prediction: %s is not a flow-matching "
			    "model: prediction flow is for SD3", d.name);
			return blame_err(job, JF_PREDICTION, err, line);
		}
		if (d.family == MODEL_SD3 && job->mask != NULL) {
			sd_fail(err, SD_EDATA, "mask: inpainting is not supported on %s",
			    d.name);
			return blame_err(job, JF_MASK, err, line);
		}
		if (sc.prediction_type == SCHED_PRED_FLOW && job->shift > 0)
			sc.shift = job->shift;
		if (job->prediction == SD_PREDICTION_V)
			sc.prediction_type = SCHED_PRED_V;
		else if (job->prediction == SD_PREDICTION_EPSILON)
			sc.prediction_type = SCHED_PRED_EPSILON;
		else if (sc.prediction_type == SCHED_PRED_SAMPLE) {
			sd_fail(err, SD_EDATA, "the model's scheduler config predicts "
			    "the sample, which sdbatch does not support");
			return blame_err(job, JF_MODEL, err, line);
		}
		if (job->spacing != SD_SPACING_AUTO)
			sc.timestep_spacing = job->spacing == SD_SPACING_LEADING ?
			    SCHED_SPACING_LEADING : job->spacing == SD_SPACING_LINSPACE ?
			    SCHED_SPACING_LINSPACE : SCHED_SPACING_TRAILING;
		sched = sd_scheduler_new(sampler, job->schedule, &sc, steps, err);
		if (sched != NULL && job->init_image != NULL &&
		    sd_scheduler_set_strength(sched, job->strength, err) < 0) {
			sd_scheduler_free(sched);
			sched = NULL;
		}
		if (sched == NULL) {
			const struct param_def *pd = params_find(err->field);
			if (err->code == 0)
				err->code = SD_EDATA;
			if (pd == NULL) {
				/* the engine's messages start with the field */
				size_t k;
				for (k = 0; k < params_count && pd == NULL; k++) {
					size_t n = strlen(params_table[k].name);
					if (strncmp(err->message, params_table[k].name, n) == 0 &&
					    err->message[n] == ':')
						pd = &params_table[k];
				}
			}
			return pd != NULL ? blame_err(job, pd->field, err, line) : -1;
		}
		sd_scheduler_free(sched);
	}
	if (inpaint && job->mask == NULL) {
		sd_fail(err, SD_EDATA, "this is an inpainting model (9-channel UNet): "
		    "it needs an init_image and a mask");
		return blame_err(job, job->line[JF_UNET] ? JF_UNET : JF_MODEL, err, line);
	}
	return 0;
}

int
runjob_run(struct runjob_env *env, struct sd_job *job, struct runjob_result *res)
{
	struct download_ctx dl;
	struct hub_options hooks;
	struct step_ctx ctx;
	double t0 = util_now_mono();
	int r;

	memset(res, 0, sizeof *res);
	res->started = util_now();
	memset(&ctx, 0, sizeof ctx);
	ctx.env = env;
	ctx.job = job;
	ctx.res = res;
	ctx.job_start = t0;
	if (job->seed_random) {
		/* 32 bits, like A1111, so the seed is easy to reuse anywhere. */
		job->seed = util_random_u64() & 0xffffffffu;
		job->seed_random = 0;
		res->seed_was_random = 1;
	}
	memset(&dl, 0, sizeof dl);
	dl.env = env;
	dl.job = job;
	hub_options_init(&hooks);
	hooks.progress = on_download;
	hooks.notice = on_download_notice;
	hooks.user = &dl;
	hooks.stop = env->stop;
	r = check_policy(env->cfg, job, 1, &res->err, &res->err_line);
	if (r == 0)
		r = job_resolve_hooks(job, env->cfg, &hooks, &res->err, &res->err_line);
	if (r == 0)
		r = check_policy(env->cfg, job, 0, &res->err, &res->err_line);
	if (r < 0 && (res->err.code == SD_EREQUEUED ||
	    (env->stop != NULL && *env->stop))) {
		/* a signal while a model was downloading: requeue */
		res->status = RUNJOB_INTERRUPTED;
		sd_fail(&res->err, SD_EREQUEUED, "interrupted by a signal");
		res->err.field[0] = '\0';
		res->err_line = 0;
	}
	if (r == 0 && job_check(job, env->cfg, &res->err) < 0)
		r = -1;
	if (r == 0) {
		res->model_path = job->model ? strdup(job->model) : NULL;
		r = render(env, job, res, &ctx);
	}
	res->total_s = util_now_mono() - t0;
	res->finished = util_now();
	if (r < 0 && res->status == RUNJOB_DONE)
		res->status = RUNJOB_FAILED;
	return r;
}
