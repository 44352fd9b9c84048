/* params.c: the table of job parameters and everything driven from it. */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "spool/conf.h"
#include "spool/params.h"
#include "spool/util.h"

/* The storage class of a member, from its C type.  An enum is compatible
 * with int or unsigned int (the default case); the tests check each
 * entry's size against its class. */
#define STORAGE(T, m) _Generic(((T *)0)->m, \
	int: PARAM_S_INT, \
	double: PARAM_S_DOUBLE, \
	float: PARAM_S_FLOAT, \
	uint64_t: PARAM_S_U64, \
	char *: PARAM_S_STRING, \
	const char *: PARAM_S_STRING, \
	default: PARAM_S_INT)
#define AT(m) .offset = offsetof(struct job_params, m), \
	.storage = STORAGE(struct job_params, m), \
	.size = sizeof(((struct job_params *)0)->m)
#define SD(m) .sd_offset = offsetof(struct sd_params, m), \
	.sd_storage = STORAGE(struct sd_params, m), \
	.sd_size = sizeof(((struct sd_params *)0)->m)

static const char *
sampler_name(int v)
{
	return sd_sampler_name((enum sd_sampler)v);
}

static const char *
sampler_png(int v)
{
	return sd_sampler_a1111_name((enum sd_sampler)v);
}

static const char *
schedule_name(int v)
{
	return sd_schedule_name((enum sd_schedule)v);
}

static const char *
schedule_png(int v)
{
	return v == SD_SCHEDULE_KARRAS ? "Karras" : "Normal";
}

static const char *
prediction_name(int v)
{
	return sd_prediction_name((enum sd_prediction)v);
}

static const char *
spacing_name(int v)
{
	return sd_spacing_name((enum sd_spacing)v);
}

static const char *
rng_name(int v)
{
	return sd_rng_name((enum sd_rng_kind)v);
}

static const char *
prompt_syntax_name(int v)
{
	return sd_prompt_syntax_name((enum sd_prompt_syntax)v);
}

static const char *
rng_png(int v)
{
	return v == SD_RNG_CPU ? "CPU" : "GPU";
}

#define MODEL PARAM_MODEL_DEFAULT

const struct param_def params_table[] = {
	{ .field = JF_PROMPT, .name = "prompt", .type = PARAM_TEXT,
	  .flags = PARAM_REQUIRED, .max = 1 << 20, .limit = PARAM_LIMIT_PROMPT_LENGTH,
	  AT(prompt), SD(prompt),
	  .flag = "prompt", .short_flag = 'p', .metavar = "TEXT",
	  .help = "what to render" },
	{ .field = JF_NEGATIVE_PROMPT, .name = "negative_prompt", .type = PARAM_TEXT,
	  .flags = PARAM_NULL_IS_EMPTY | PARAM_CONFIG, .max = 1 << 20,
	  .limit = PARAM_LIMIT_PROMPT_LENGTH,	/* none: NULL (SDXL: zeros) */
	  AT(negative_prompt), SD(negative_prompt),
	  .flag = "negative", .short_flag = 'n', .flag_alias = "negative-prompt",
	  .metavar = "TEXT", .help = "negative prompt" },
	{ .field = JF_MODEL, .name = "model", .type = PARAM_PATH, AT(model),
	  .flag = "model", .metavar = "PATH",
	  .help = "checkpoint file, diffusers folder or Hub id",
	  .png = "Model", .png_rank = 7 },
	{ .field = JF_UNET, .name = "unet", .type = PARAM_PATH, AT(unet),
	  .flag = "unet", .metavar = "PATH", .help = "the UNet from this file instead" },
	{ .field = JF_VAE, .name = "vae", .type = PARAM_PATH, AT(vae),
	  .flag = "vae", .metavar = "PATH", .help = "the VAE from this file instead" },
	{ .field = JF_WIDTH, .name = "width", .type = PARAM_INT,
	  .flags = MODEL | PARAM_MULTIPLE_OF_8 | PARAM_CONFIG, .min = 64, .max = 16384,
	  .limit = PARAM_LIMIT_WIDTH, .default_text = "auto", .unset = 0,
	  AT(width), SD(width),
	  .flag = "width", .short_flag = 'W', .metavar = "N",
	  .help = "image width, a multiple of 8",
	  .png = "Size", .png_rank = 6, .png_with = JF_HEIGHT },
	{ .field = JF_HEIGHT, .name = "height", .type = PARAM_INT,
	  .flags = MODEL | PARAM_MULTIPLE_OF_8 | PARAM_CONFIG, .min = 64, .max = 16384,
	  .limit = PARAM_LIMIT_HEIGHT, .default_text = "auto", .unset = 0,
	  AT(height), SD(height),
	  .flag = "height", .short_flag = 'H', .metavar = "N",
	  .help = "image height, a multiple of 8" },
	{ .field = JF_STEPS, .name = "steps", .type = PARAM_INT,
	  .flags = MODEL | PARAM_CONFIG, .min = 1, .max = 10000,
	  .limit = PARAM_LIMIT_STEPS, .default_text = "auto", .unset = 0,
	  AT(steps), SD(steps),
	  .flag = "steps", .short_flag = 's', .metavar = "N", .help = "sampling steps",
	  .png = "Steps", .png_rank = 1 },
	{ .field = JF_GUIDANCE_SCALE, .name = "guidance_scale", .type = PARAM_NUMBER,
	  .flags = MODEL | PARAM_CONFIG, .min = 0, .max = 100,
	  .default_text = "auto", .unset = -1,
	  AT(guidance_scale), SD(guidance_scale),
	  .flag = "guidance", .short_flag = 'g', .flag_alias = "guidance-scale",
	  .metavar = "X", .help = "classifier-free guidance scale",
	  .png = "CFG scale", .png_rank = 4 },
	{ .field = JF_SAMPLER, .name = "sampler", .type = PARAM_CHOICE,
	  .flags = MODEL | PARAM_CONFIG, .default_text = "auto", .unset = SD_SAMPLER_AUTO,
	  .choice_name = sampler_name,
	  .choice_png = sampler_png, AT(sampler), SD(sampler),
	  .flag = "sampler", .metavar = "NAME", .help = "sampler",
	  .png = "Sampler", .png_rank = 2 },
	{ .field = JF_SCHEDULE, .name = "schedule", .type = PARAM_CHOICE,
	  .flags = PARAM_CONFIG, .default_text = "normal",
	  .choice_name = schedule_name,
	  .choice_png = schedule_png, AT(schedule), SD(schedule),
	  .flag = "schedule", .metavar = "NAME", .help = "noise schedule",
	  .png = "Schedule type", .png_rank = 3 },
	{ .field = JF_PREDICTION, .name = "prediction", .type = PARAM_CHOICE,
	  .flags = MODEL | PARAM_CONFIG, .default_text = "auto",
	  .unset = SD_PREDICTION_AUTO,
	  .choice_name = prediction_name,
	  AT(prediction), SD(prediction),
	  .flag = "prediction", .metavar = "TYPE",
	  .help = "what the model predicts" },
	{ .field = JF_SPACING, .name = "spacing", .type = PARAM_CHOICE,
	  .flags = MODEL | PARAM_CONFIG, .default_text = "auto",
	  .unset = SD_SPACING_AUTO,
	  .choice_name = spacing_name,
	  AT(spacing), SD(spacing),
	  .flag = "spacing", .metavar = "NAME",
	  .help = "timestep spacing (diffusers' timestep_spacing)" },
	{ .field = JF_SHIFT, .name = "shift", .type = PARAM_NUMBER,
	  .flags = MODEL | PARAM_ABOVE_MIN | PARAM_CONFIG, .min = 0, .max = 100,
	  .default_text = "auto", .unset = 0,
	  AT(shift), SD(shift),
	  .flag = "shift", .metavar = "X",
	  .help = "flow-matching models (SD3): the sigma shift",
	  .png = "Shift", .png_rank = 11 },
	{ .field = JF_T5, .name = "t5", .type = PARAM_BOOL,
	  .flags = PARAM_CONFIG | PARAM_PNG_IF_NOT_DEFAULT, .default_text = "true",
	  AT(t5), SD(t5),
	  .flag = "no-t5", .flag_value = "false",
	  .help = "SD3: render without the T5 text encoder (zeros in its place)",
	  .png = "T5", .png_rank = 12 },
	{ .field = JF_SEED, .name = "seed", .type = PARAM_SEED,
	  .min = -1, .max = (double)INT64_MAX, .default_text = "-1",
	  AT(seed), SD(seed),
	  .flag = "seed", .metavar = "N", .help = "seed of the first image (-1: random)",
	  .png = "Seed", .png_rank = 5 },
	{ .field = JF_COUNT, .name = "count", .type = PARAM_INT,
	  .flags = PARAM_CONFIG, .min = 1, .max = 10000, .limit = PARAM_LIMIT_COUNT,
	  .default_text = "1", AT(count),
	  .flag = "count", .short_flag = 'c', .metavar = "N",
	  .help = "images; image i uses seed + i" },
	{ .field = JF_RNG, .name = "rng", .type = PARAM_CHOICE,
	  .flags = PARAM_CONFIG, .default_text = "cpu",
	  .choice_name = rng_name, .choice_png = rng_png,
	  AT(rng), SD(rng),
	  .flag = "rng", .metavar = "NAME",
	  .help = "whose random numbers (torch's generator)",
	  .png = "RNG", .png_rank = 10 },
	{ .field = JF_CLIP_SKIP, .name = "clip_skip", .type = PARAM_INT,
	  .flags = PARAM_CONFIG | PARAM_PNG_IF_NOT_DEFAULT, .min = 1, .max = 12,
	  .default_text = "1", AT(clip_skip), SD(clip_skip),
	  .flag = "clip-skip", .metavar = "N", .help = "1 = last CLIP layer, 2 = penultimate",
	  .png = "Clip skip", .png_rank = 9 },
	{ .field = JF_INIT_IMAGE, .name = "init_image", .type = PARAM_PATH,
	  .flags = PARAM_INPUT, AT(init_image),
	  .flag = "init-image", .metavar = "IMAGE",
	  .help = "img2img: start from this image (PNG or JPEG)" },
	{ .field = JF_STRENGTH, .name = "strength", .type = PARAM_NUMBER,
	  .flags = PARAM_ABOVE_MIN | PARAM_IMG2IMG | PARAM_CONFIG, .min = 0, .max = 1,
	  .default_text = "0.75", AT(strength), SD(strength),
	  .flag = "strength", .metavar = "X",
	  .help = "img2img/inpainting strength, 0 < X <= 1",
	  .png = "Denoising strength", .png_rank = 8 },
	{ .field = JF_MASK, .name = "mask", .type = PARAM_PATH,
	  .flags = PARAM_INPUT, AT(mask),
	  .flag = "mask", .metavar = "IMAGE",
	  .help = "inpainting mask (PNG or JPEG), white = repaint" },
	{ .field = JF_LORAS, .name = "loras", .type = PARAM_LORAS,
	  .flags = PARAM_INPUT, .min = -100, .max = 100, AT(loras),
	  .flag = "lora", .metavar = "FILE[:SCALE]",
	  .help = "merge this LoRA into the model (scale default 1; repeat for more)" },
	{ .field = JF_PROMPT_SYNTAX, .name = "prompt_syntax", .type = PARAM_CHOICE,
	  .flags = PARAM_CONFIG, .default_text = "plain",
	  .choice_name = prompt_syntax_name,
	  AT(prompt_syntax), SD(prompt_syntax),
	  .flag = "prompt-syntax", .metavar = "NAME",
	  .help = "how the prompts are read (a1111: (word:1.2), [word], BREAK, long "
	  "prompts, <lora:NAME:SCALE>)" },
};

const size_t params_count = sizeof params_table / sizeof params_table[0];

const struct param_def *
params_find(const char *name)
{
	for (size_t i = 0; i < params_count; i++)
		if (strcmp(params_table[i].name, name) == 0)
			return &params_table[i];
	return NULL;
}

const struct param_def *
params_by_field(enum job_field f)
{
	for (size_t i = 0; i < params_count; i++)
		if (params_table[i].field == f)
			return &params_table[i];
	return NULL;
}

int
params_choices(const struct param_def *d)
{
	int n = 0;

	/* the names end where the name function says "?" (out of range),
	 * so that a value added to the enum and its names is one here too */
	while (d->type == PARAM_CHOICE && n < 256 && strcmp(d->choice_name(n), "?") != 0)
		n++;
	return n;
}

/* Values in a struct, whatever their C type. */
struct pvalue {
	int64_t i;		/* PARAM_S_INT */
	double x;		/* PARAM_S_DOUBLE, PARAM_S_FLOAT */
	uint64_t u;		/* PARAM_S_U64 */
	const char *s;		/* PARAM_S_STRING */
};

static void
load(const void *base, size_t off, enum param_storage st, struct pvalue *v)
{
	const char *p = (const char *)base + off;
	int i;
	float f;

	memset(v, 0, sizeof *v);
	switch (st) {
	case PARAM_S_INT:
		memcpy(&i, p, sizeof i);
		v->i = i;
		break;
	case PARAM_S_DOUBLE:
		memcpy(&v->x, p, sizeof v->x);
		break;
	case PARAM_S_FLOAT:
		memcpy(&f, p, sizeof f);
		v->x = f;
		break;
	case PARAM_S_U64:
		memcpy(&v->u, p, sizeof v->u);
		break;
	case PARAM_S_STRING:
		memcpy(&v->s, p, sizeof v->s);
		break;
	case PARAM_NONE:
		break;
	}
}

/* Store v; a string is copied when own (struct job_params), else the
 * pointer is stored (struct sd_params).  0, or -1 out of memory. */
static int
store(void *base, size_t off, enum param_storage st, const struct pvalue *v,
    int own)
{
	char *p = (char *)base + off;
	int i;
	float f;

	switch (st) {
	case PARAM_S_INT:
		i = (int)v->i;
		memcpy(p, &i, sizeof i);
		break;
	case PARAM_S_DOUBLE:
		memcpy(p, &v->x, sizeof v->x);
		break;
	case PARAM_S_FLOAT:
		/* the engine computes in float32, as diffusers does */
		f = (float)v->x;
		memcpy(p, &f, sizeof f);
		break;
	case PARAM_S_U64:
		memcpy(p, &v->u, sizeof v->u);
		break;
	case PARAM_S_STRING:
		if (own) {
			char *old, *s = v->s != NULL ? strdup(v->s) : NULL;
			if (v->s != NULL && s == NULL)
				return -1;
			memcpy(&old, p, sizeof old);
			free(old);
			memcpy(p, &s, sizeof s);
		} else
			memcpy(p, &v->s, sizeof v->s);
		break;
	case PARAM_NONE:
		break;
	}
	return 0;
}

static void
get(const struct param_def *d, const struct job_params *v, struct pvalue *out)
{
	load(v, d->offset, d->storage, out);
}

static int
set(const struct param_def *d, struct job_params *v, const struct pvalue *in)
{
	return store(v, d->offset, d->storage, in, 1);
}

static int
set_int(const struct param_def *d, struct job_params *v, int64_t i)
{
	struct pvalue x = { .i = i, .x = (double)i };
	return set(d, v, &x);
}

static int
set_number(const struct param_def *d, struct job_params *v, double n)
{
	struct pvalue x = { .x = n };
	return set(d, v, &x);
}

static int
set_string(const struct param_def *d, struct job_params *v, const char *s)
{
	struct pvalue x = { .s = s };
	return set(d, v, &x);
}

static int
set_seed(struct job_params *v, int64_t seed)
{
	v->seed_random = seed < 0;
	v->seed = seed < 0 ? 0 : (uint64_t)seed;
	return 0;
}

int
params_is_set(const struct param_def *d, const struct job_params *v)
{
	struct pvalue x;

	get(d, v, &x);
	switch (d->type) {
	case PARAM_TEXT:
	case PARAM_PATH:
	case PARAM_LORAS:
		return x.s != NULL;
	case PARAM_INT:
	case PARAM_CHOICE:
	case PARAM_BOOL:
		return !(d->flags & PARAM_MODEL_DEFAULT) || x.i != (int64_t)d->unset;
	case PARAM_NUMBER:
		return !(d->flags & PARAM_MODEL_DEFAULT) || x.x != d->unset;
	case PARAM_SEED:
		return 1;
	}
	return 1;
}

/* The largest value a job may give: the table's, capped by the limit. */
static double
max_of(const struct param_def *d, const struct job_limits *lim)
{
	double m = d->max;
	double l = m;

	if (lim == NULL)
		return m;
	switch (d->limit) {
	case PARAM_LIMIT_WIDTH: l = lim->width; break;
	case PARAM_LIMIT_HEIGHT: l = lim->height; break;
	case PARAM_LIMIT_STEPS: l = lim->steps; break;
	case PARAM_LIMIT_COUNT: l = lim->count; break;
	case PARAM_LIMIT_PROMPT_LENGTH: l = (double)lim->prompt_length; break;
	case PARAM_LIMIT_NONE: break;
	}
	return l < m ? l : m;
}

/* "auto, euler_a, euler, ..." */
static void
choices_text(const struct param_def *d, char *buf, size_t size)
{
	size_t n = 0;

	buf[0] = '\0';
	if (d->flags & PARAM_MODEL_DEFAULT)
		n += (size_t)snprintf(buf, size, "auto");
	for (int i = 0; i < params_choices(d) && n < size; i++) {
		if ((d->flags & PARAM_MODEL_DEFAULT) && i == (int)d->unset)
			continue;
		n += (size_t)snprintf(buf + n, size - n, "%s%s", n ? ", " : "",
		    d->choice_name(i));
	}
}

static int
is_auto(const struct ynode *n)
{
	return n != NULL && n->kind == YNODE_SCALAR && n->value != NULL &&
	    strcmp(n->value, "auto") == 0;
}

/* A path: no control characters, shorter than PATH_MAX. */
static const char *
path_problem(const char *s)
{
	for (const char *p = s; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return "a path may not hold control characters";
	if (strlen(s) >= PATH_MAX)
		return "path too long";
	return NULL;
}

/* Add one LoRA to the list of d in v. */
static int
lora_add(const struct param_def *d, struct job_params *v, const char *path, double scale)
{
	struct pvalue x;
	char *s = NULL;
	int r;

	get(d, v, &x);
	if (asprintf(&s, "%s%.17g\t%s\n", x.s != NULL ? x.s : "", scale, path) < 0)
		return -1;
	r = set_string(d, v, s);
	free(s);
	return r;
}

/* "PATH" or "PATH:SCALE" (the last ':' followed by a number): 0 with
 * *path (malloc'd) and *scale, or -1 with why. */
static int
lora_split(const char *text, char **path, double *scale, char *why, size_t size)
{
	const char *colon = strrchr(text, ':');
	char *end;

	*scale = 1.0;
	if (colon != NULL && colon[1] != '\0') {
		errno = 0;
		double x = strtod(colon + 1, &end);
		if (*end == '\0' && errno == 0 && x == x && x > -1e300 && x < 1e300) {
			*scale = x;
			*path = strndup(text, (size_t)(colon - text));
			goto done;
		}
	}
	*path = strdup(text);
done:
	if (*path == NULL) {
		snprintf(why, size, "out of memory");
		return -1;
	}
	if ((*path)[0] == '\0') {
		snprintf(why, size, "no LoRA file in \"%.60s\"", text);
		free(*path);
		return -1;
	}
	return 0;
}

/* loras: a sequence of { file: PATH, scale: X } mappings or "PATH[:X]"
 * strings. */
static int
parse_loras(const struct param_def *d, struct yctx *y, const struct ynode *n,
    const char *f, struct job_params *v)
{
	static const struct pvalue none;
	char why[256];

	set(d, v, &none);
	if (ytree_is_null(n))
		return 0;
	if (n->kind != YNODE_SEQ && n->kind != YNODE_SCALAR)
		return yfail(y, n, f, "expected a list of { file: FILE, scale: X }, got %s",
		    ytree_kind_name(n));
	/* one "FILE[:SCALE]" alone is a list of one */
	for (size_t i = 0; i < (n->kind == YNODE_SEQ ? n->n : 1); i++) {
		const struct ynode *it = n->kind == YNODE_SEQ ? n->items[i] : n, *fn, *sn;
		char *path = NULL;
		const char *problem;
		double scale = 1.0;
		if (it->kind == YNODE_MAP) {
			for (size_t k = 0; k < it->n; k++)
				if (strcmp(it->keys[k]->value, "file") != 0 &&
				    strcmp(it->keys[k]->value, "scale") != 0)
					return yfail(y, it->keys[k], f, "unknown key \"%.40s\" (file, scale)",
					    it->keys[k]->value);
			if ((fn = ytree_get(it, "file")) == NULL)
				return yfail(y, it, f, "a LoRA without a file");
			if (yget_string(y, fn, f, &path) < 0)
				return -1;
			if ((sn = ytree_get(it, "scale")) != NULL &&
			    yget_number(y, sn, f, d->min, d->max, &scale) < 0) {
				free(path);
				return -1;
			}
		} else if (it->kind == YNODE_SCALAR) {
			char *text = NULL;
			if (yget_string(y, it, f, &text) < 0)
				return -1;
			if (lora_split(text, &path, &scale, why, sizeof why) < 0) {
				free(text);
				return yfail(y, it, f, "%s", why);
			}
			free(text);
			if (scale < d->min || scale > d->max) {
				free(path);
				return yfail(y, it, f, "scale %g is out of range (%g..%g)", scale,
				    d->min, d->max);
			}
		} else {
			return yfail(y, it, f, "expected { file: FILE, scale: X }, got %s",
			    ytree_kind_name(it));
		}
		if ((problem = path_problem(path)) != NULL || strchr(path, '\n') != NULL ||
		    strchr(path, '\t') != NULL) {
			free(path);
			return yfail(y, it, f, "%s", problem ? problem :
			    "a path may not hold control characters");
		}
		if (lora_add(d, v, path, scale) < 0) {
			free(path);
			return sd_fail(y->err, SD_EINTERNAL, "out of memory");
		}
		free(path);
	}
	return 0;
}

int
params_loras(const struct job_params *v, struct sd_lora **out, int *n)
{
	const char *s = v->loras;
	int count = 0, i = 0;

	*out = NULL;
	*n = 0;
	if (s == NULL)
		return 0;
	for (const char *p = s; *p; p++)
		count += *p == '\n';
	if ((*out = calloc((size_t)count + 1, sizeof **out)) == NULL)
		return -1;
	for (const char *p = s; *p && i < count; i++) {
		const char *tab = strchr(p, '\t'), *nl = strchr(p, '\n');
		if (tab == NULL || nl == NULL || tab > nl)
			break;
		(*out)[i].scale = (float)strtod(p, NULL);
		if (((*out)[i].path = strndup(tab + 1, (size_t)(nl - tab - 1))) == NULL) {
			params_loras_free(*out, i);
			*out = NULL;
			return -1;
		}
		p = nl + 1;
	}
	*n = i;
	return 0;
}

void
params_loras_free(struct sd_lora *l, int n)
{
	for (int i = 0; l != NULL && i < n; i++)
		free((char *)l[i].path);
	free(l);
}

int
params_lora_set_path(struct job_params *v, int i, const char *path)
{
	const struct param_def *d = params_by_field(JF_LORAS);
	struct sd_lora *l;
	char *s = NULL;
	int n, r = 0;
	size_t len = 0;

	if (params_loras(v, &l, &n) < 0 || i < 0 || i >= n)
		return -1;
	for (int k = 0; k < n; k++)
		len += strlen(k == i ? path : l[k].path) + 32;
	if ((s = malloc(len + 1)) == NULL) {
		params_loras_free(l, n);
		return -1;
	}
	s[0] = '\0';
	/* keep the scales' text as it was: rebuild from the old lines */
	const char *p = v->loras;
	for (int k = 0; k < n; k++) {
		const char *tab = strchr(p, '\t'), *nl = strchr(p, '\n');
		strncat(s, p, (size_t)(tab - p + 1));
		strcat(s, k == i ? path : l[k].path);
		strcat(s, "\n");
		p = nl + 1;
	}
	r = set_string(d, v, s);
	free(s);
	params_loras_free(l, n);
	return r;
}

int
params_parse_yaml(const struct param_def *d, struct yctx *y,
    const struct ynode *n, const char *label, const struct job_limits *lim,
    struct job_params *v)
{
	const char *f = label != NULL ? label : d->name;
	char choices[256], *s = NULL;
	const char *why;
	int64_t i;
	double x;
	int r;

	switch (d->type) {
	case PARAM_TEXT:
		if ((d->flags & PARAM_NULL_IS_EMPTY) && ytree_is_null(n))
			s = strdup("");
		else if (yget_string(y, n, f, &s) < 0)
			return -1;
		if (s == NULL)
			return sd_fail(y->err, SD_EINTERNAL, "out of memory");
		if ((d->flags & PARAM_REQUIRED) && s[strspn(s, " \t\r\n")] == '\0') {
			free(s);
			return yfail(y, n, f, "empty");
		}
		if (lim != NULL && d->limit != PARAM_LIMIT_NONE) {
			size_t len = util_utf8_length(s, strlen(s));
			size_t max = (size_t)max_of(d, lim);
			if (len > max) {
				free(s);
				return yfail(y, n, f, "%zu characters, over the limit of %zu",
				    len, max);
			}
		}
		r = set_string(d, v, s);
		free(s);
		return r < 0 ? sd_fail(y->err, SD_EINTERNAL, "out of memory") : 0;
	case PARAM_PATH:
		if (yget_string(y, n, f, &s) < 0)
			return -1;
		if ((why = path_problem(s)) != NULL) {
			free(s);
			return yfail(y, n, f, "%s", why);
		}
		r = set_string(d, v, s);
		free(s);
		return r < 0 ? sd_fail(y->err, SD_EINTERNAL, "out of memory") : 0;
	case PARAM_INT:
		if ((d->flags & PARAM_MODEL_DEFAULT) && is_auto(n))
			return set_int(d, v, (int64_t)d->unset);
		if (yget_int(y, n, f, (int64_t)d->min, (int64_t)max_of(d, lim), &i) < 0)
			return -1;
		if ((d->flags & PARAM_MULTIPLE_OF_8) && i % 8 != 0)
			return yfail(y, n, f, "%" PRId64 " is not a multiple of 8", i);
		return set_int(d, v, i);
	case PARAM_NUMBER:
		if ((d->flags & PARAM_MODEL_DEFAULT) && is_auto(n))
			return set_number(d, v, d->unset);
		if (yget_number(y, n, f, d->min, max_of(d, lim), &x) < 0)
			return -1;
		if ((d->flags & PARAM_ABOVE_MIN) && x <= d->min)
			return yfail(y, n, f, "must be above %g (%g < %s <= %g)", d->min,
			    d->min, d->name, max_of(d, lim));
		return set_number(d, v, x);
	case PARAM_CHOICE:
		if (yget_string(y, n, f, &s) < 0)
			return -1;
		if ((d->flags & PARAM_MODEL_DEFAULT) && strcmp(s, "auto") == 0) {
			free(s);
			return set_int(d, v, (int64_t)d->unset);
		}
		for (int k = 0; k < params_choices(d); k++)
			if (strcmp(s, d->choice_name(k)) == 0) {
				free(s);
				return set_int(d, v, k);
			}
		if (d->field == JF_SAMPLER) {
			/* A1111's and diffusers' names, any case; a "Karras"
			 * suffix ("DPM++ 2M Karras") sets the schedule too */
			enum sd_sampler smp;
			enum sd_schedule sch;
			int r = sd_sampler_parse_full(s, &smp, &sch);
			if (r >= 0) {
				free(s);
				if (r == 1 && set_int(params_by_field(JF_SCHEDULE), v, (int64_t)sch) < 0)
					return -1;
				return set_int(d, v, (int64_t)smp);
			}
		}
		free(s);
		choices_text(d, choices, sizeof choices);
		if (d->field == JF_SAMPLER)
			return yfail(y, n, f, "unknown sampler \"%.40s\" (one of: %s; A1111's names "
			    "too: sdbatch run --list-samplers)", n->value, choices);
		return yfail(y, n, f, "unknown value \"%.40s\" (one of: %s)", n->value,
		    choices);
	case PARAM_SEED:
		if (ytree_is_null(n))
			return set_seed(v, -1);
		if (yget_int(y, n, f, -1, INT64_MAX, &i) < 0)
			return -1;
		return set_seed(v, i);
	case PARAM_LORAS:
		return parse_loras(d, y, n, f, v);
	case PARAM_BOOL: {
		int b;
		if (yget_bool(y, n, f, &b) < 0)
			return -1;
		return set_int(d, v, b);
	}
	}
	return yfail(y, n, f, "unknown parameter type");
}

int
params_parse_text(const struct param_def *d, const char *text,
    struct job_params *v, char *why, size_t size)
{
	static const char label[] = "x";
	struct sd_error e;
	struct yctx y = { label, SD_EDATA, &e, NULL };
	struct ynode n;
	const char *problem, *msg;
	char *cwd, *path;
	int r;

	if (text == NULL)
		text = d->flag_value != NULL ? d->flag_value : "";
	switch (d->type) {
	case PARAM_TEXT:
		if (set_string(d, v, text) < 0) {
			snprintf(why, size, "out of memory");
			return -1;
		}
		return 0;
	case PARAM_LORAS: {
		/* one more LoRA: FILE[:SCALE], relative to the current folder */
		double scale;
		char *file;
		if (lora_split(text, &file, &scale, why, size) < 0)
			return -1;
		if ((problem = path_problem(file)) != NULL || scale < d->min || scale > d->max) {
			if (problem != NULL)
				snprintf(why, size, "%s", problem);
			else
				snprintf(why, size, "scale %g is out of range (%g..%g)", scale, d->min, d->max);
			free(file);
			return -1;
		}
		if (file[0] != '/') {
			if ((cwd = getcwd(NULL, 0)) == NULL) {
				snprintf(why, size, "the current folder: %s", strerror(errno));
				free(file);
				return -1;
			}
			path = util_join(cwd, file);
			free(cwd);
			free(file);
			file = path;
		}
		r = file != NULL ? lora_add(d, v, file, scale) : -1;
		free(file);
		if (r < 0)
			snprintf(why, size, "out of memory");
		return r;
	}
	case PARAM_PATH:
		if ((problem = path_problem(text)) != NULL) {
			snprintf(why, size, "%s", problem);
			return -1;
		}
		if (!(d->flags & PARAM_INPUT) || text[0] == '/')
			r = set_string(d, v, text);
		else {
			/* relative to the current folder, not to the job file's */
			if ((cwd = getcwd(NULL, 0)) == NULL) {
				snprintf(why, size, "the current folder: %s", strerror(errno));
				return -1;
			}
			path = util_join(cwd, text);
			free(cwd);
			r = path != NULL ? set_string(d, v, path) : -1;
			free(path);
		}
		if (r < 0)
			snprintf(why, size, "out of memory");
		return r;
	default:
		break;
	}
	/* Anything else is read as the plain YAML scalar a job file would
	 * hold, so that flags and job files agree; the message loses the
	 * "x: x: " that yfail puts before it. */
	memset(&n, 0, sizeof n);
	n.kind = YNODE_SCALAR;
	n.value = (char *)text;
	n.len = strlen(text);
	sd_error_clear(&e);
	if (params_parse_yaml(d, &y, &n, label, NULL, v) == 0)
		return 0;
	msg = e.message;
	if (strncmp(msg, "x: x: ", 6) == 0)
		msg += 6;
	snprintf(why, size, "%s", msg);
	return -1;
}

int
params_check(const struct param_def *d, const struct job_params *v,
    const struct job_limits *lim, struct sd_error *err)
{
	struct pvalue x;
	const char *why;
	double max = max_of(d, lim);

#define BAD(...) (err != NULL ? (void)snprintf(err->field, sizeof err->field, \
	"%s", d->name) : (void)0, sd_fail(err, SD_EDATA, __VA_ARGS__))
	if (!params_is_set(d, v)) {
		if (d->flags & PARAM_REQUIRED)
			return BAD("%s: missing (every job needs a %s)", d->name, d->name);
		return 0;
	}
	get(d, v, &x);
	switch (d->type) {
	case PARAM_TEXT:
		if ((d->flags & PARAM_REQUIRED) && x.s[strspn(x.s, " \t\r\n")] == '\0')
			return BAD("%s: empty", d->name);
		if (d->limit != PARAM_LIMIT_NONE && lim != NULL &&
		    util_utf8_length(x.s, strlen(x.s)) > (size_t)max)
			return BAD("%s: over the limit of %zu characters", d->name,
			    (size_t)max);
		return 0;
	case PARAM_PATH:
		if ((why = path_problem(x.s)) != NULL)
			return BAD("%s: %s", d->name, why);
		return 0;
	case PARAM_INT:
		if (x.i < d->min || x.i > max)
			return BAD("%s: %" PRId64 " is out of range (%g..%g)", d->name,
			    x.i, d->min, max);
		if ((d->flags & PARAM_MULTIPLE_OF_8) && x.i % 8 != 0)
			return BAD("%s: %" PRId64 " is not a multiple of 8", d->name, x.i);
		return 0;
	case PARAM_NUMBER:
		if ((d->flags & PARAM_ABOVE_MIN) && !(x.x > d->min && x.x <= max))
			return BAD("%s: %g is out of range (%g < %s <= %g)", d->name,
			    x.x, d->min, d->name, max);
		if (!(x.x >= d->min && x.x <= max))
			return BAD("%s: %g is out of range (%g..%g)", d->name, x.x,
			    d->min, max);
		return 0;
	case PARAM_CHOICE:
		if (x.i < 0 || x.i >= params_choices(d))
			return BAD("%s: unknown value %" PRId64, d->name, x.i);
		return 0;
	case PARAM_SEED:
		return 0;
	case PARAM_BOOL:
		if (x.i != 0 && x.i != 1)
			return BAD("%s: %" PRId64 " is not true or false", d->name, x.i);
		return 0;
	case PARAM_LORAS: {
		struct sd_lora *l;
		int n;
		if (params_loras(v, &l, &n) < 0)
			return BAD("%s: out of memory", d->name);
		for (int i = 0; i < n; i++)
			if ((why = path_problem(l[i].path)) != NULL || !(l[i].scale >= d->min &&
			    l[i].scale <= d->max)) {
				params_loras_free(l, n);
				return BAD("%s: %s", d->name, why ? why : "a scale out of range");
			}
		params_loras_free(l, n);
		return 0;
	}
	}
#undef BAD
	return 0;
}

json_t *
params_json(const struct param_def *d, const struct job_params *v)
{
	struct pvalue x;

	if ((d->flags & PARAM_IMG2IMG) && v->init_image == NULL)
		return json_null();
	get(d, v, &x);
	if (!params_is_set(d, v))
		return d->type == PARAM_TEXT ? json_string("") : d->type == PARAM_LORAS ?
		    json_array() : json_null();
	switch (d->type) {
	case PARAM_TEXT:
	case PARAM_PATH:
		return json_string(x.s);
	case PARAM_INT:
		return json_integer((json_int_t)x.i);
	case PARAM_NUMBER:
		return json_real(x.x);
	case PARAM_CHOICE:
		return json_string(d->choice_name((int)x.i));
	case PARAM_SEED:
		return json_integer(v->seed_random ? -1 : (json_int_t)v->seed);
	case PARAM_BOOL:
		return json_boolean(x.i != 0);
	case PARAM_LORAS: {
		json_t *a = json_array();
		struct sd_lora *l;
		int n;
		if (params_loras(v, &l, &n) < 0)
			return a;
		for (int i = 0; i < n; i++) {
			json_t *o = json_object();
			json_object_set_new(o, "file", json_string(l[i].path));
			json_object_set_new(o, "scale", json_real(l[i].scale));
			json_array_append_new(a, o);
		}
		params_loras_free(l, n);
		return a;
	}
	}
	return json_null();
}

const char *
params_text(const struct param_def *d, const struct job_params *v, char *buf,
    size_t size)
{
	struct pvalue x;

	get(d, v, &x);
	if (!params_is_set(d, v))
		snprintf(buf, size, "%s", d->type == PARAM_TEXT ||
		    d->type == PARAM_PATH || d->type == PARAM_LORAS ? "" : "auto");
	else if (d->type == PARAM_TEXT || d->type == PARAM_PATH)
		snprintf(buf, size, "%s", x.s);
	else if (d->type == PARAM_INT)
		snprintf(buf, size, "%" PRId64, x.i);
	else if (d->type == PARAM_NUMBER)
		snprintf(buf, size, "%.17g", x.x);
	else if (d->type == PARAM_CHOICE)
		snprintf(buf, size, "%s", d->choice_name((int)x.i));
	else if (d->type == PARAM_BOOL)
		snprintf(buf, size, "%s", x.i ? "true" : "false");
	else if (d->type == PARAM_LORAS) {
		/* FILE:SCALE, ... */
		size_t o = 0;
		buf[0] = '\0';
		for (const char *p = x.s; *p && o < size; ) {
			const char *tab = strchr(p, '\t'), *nl = strchr(p, '\n');
			if (tab == NULL || nl == NULL)
				break;
			o += (size_t)snprintf(buf + o, size - o, "%s%.*s:%.*s", o ? ", " : "",
			    (int)(nl - tab - 1), tab + 1, (int)(tab - p), p);
			p = nl + 1;
		}
	} else if (v->seed_random)
		snprintf(buf, size, "-1");
	else
		snprintf(buf, size, "%" PRIu64, v->seed);
	return buf;
}

/* A number as Python's str(float): 7.5, 7.0, 0.75 (A1111 writes them so). */
static void
pyfloat(double x, char *out, size_t size)
{
	snprintf(out, size, "%.15g", x);
	if (strpbrk(out, ".eEn") == NULL)
		strncat(out, ".0", size - strlen(out) - 1);
}

/* A1111 quotes a value holding ',', ':', '"' or a newline as JSON. */
static void
quote(const char *s, char *out, size_t size)
{
	json_t *j;
	char *q;

	if (strpbrk(s, ",:\n\"") == NULL) {
		snprintf(out, size, "%s", s);
		return;
	}
	j = json_string(s);
	q = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
	snprintf(out, size, "%s", q ? q : "\"\"");
	free(q);
	json_decref(j);
}

/* The PNG text's value of d ("Euler a", "7.5", "512x768"); 0, or -1
 * when it is not written. */
static int
png_value(const struct param_def *d, const struct job_params *v, uint64_t seed,
    const char *model_name, char *buf, size_t size)
{
	const struct param_def *with;
	struct pvalue x;
	char t[64], u[64];

	if ((d->flags & PARAM_IMG2IMG) && v->init_image == NULL)
		return -1;
	if (d->type != PARAM_PATH && d->type != PARAM_SEED && !params_is_set(d, v))
		return -1;	/* the model's, not known yet */
	if (d->type == PARAM_LORAS)
		return -1;	/* Lora hashes: written with the LoRAs merged */
	if ((d->flags & PARAM_PNG_IF_NOT_DEFAULT) && d->default_text != NULL &&
	    strcmp(params_text(d, v, t, sizeof t), d->default_text) == 0)
		return -1;
	get(d, v, &x);
	switch (d->type) {
	case PARAM_TEXT:
		snprintf(t, sizeof t, "%s", x.s);
		break;
	case PARAM_PATH:
		/* the model: its display name */
		quote(model_name != NULL ? model_name : "unknown", buf, size);
		return 0;
	case PARAM_SEED:
		snprintf(t, sizeof t, "%" PRIu64, seed);
		break;
	case PARAM_INT:
		snprintf(t, sizeof t, "%" PRId64, x.i);
		with = d->png_with != JF_PROMPT ? params_by_field(d->png_with) : NULL;
		if (with != NULL) {
			if (!params_is_set(with, v))
				return -1;
			snprintf(u, sizeof u, "%s", t);
			snprintf(t, sizeof t, "%.30sx%.30s", u,
			    params_text(with, v, buf, size));
		}
		break;
	case PARAM_NUMBER:
		pyfloat(x.x, t, sizeof t);
		break;
	case PARAM_CHOICE:
		snprintf(t, sizeof t, "%s", d->choice_png != NULL ?
		    d->choice_png((int)x.i) : d->choice_name((int)x.i));
		break;
	case PARAM_BOOL:
		/* as A1111 writes its booleans: Python's str() */
		snprintf(t, sizeof t, "%s", x.i ? "True" : "False");
		break;
	case PARAM_LORAS:
		return -1;
	}
	quote(t, buf, size);
	return 0;
}

char *
params_png_line(const struct job_params *v, uint64_t seed, const char *model_name)
{
	const struct param_def *order[64];
	size_t n = 0, i, k, len = 0;
	char *out, val[600];

	for (i = 0; i < params_count && n < 64; i++)
		if (params_table[i].png != NULL)
			order[n++] = &params_table[i];
	for (i = 1; i < n; i++)
		for (k = i; k > 0 && order[k - 1]->png_rank > order[k]->png_rank; k--) {
			const struct param_def *t = order[k];
			order[k] = order[k - 1];
			order[k - 1] = t;
		}
	if ((out = malloc(n * (sizeof val + 32) + 64)) == NULL)
		return NULL;
	out[0] = '\0';
	for (i = 0; i < n; i++) {
		if (png_value(order[i], v, seed, model_name, val, sizeof val) < 0)
			continue;
		len += (size_t)sprintf(out + len, "%s%s: %s", len ? ", " : "",
		    order[i]->png, val);
	}
	sprintf(out + len, "%sVersion: sdbatch %s", len ? ", " : "", PACKAGE_VERSION);
	return out;
}

void
params_to_sd(const struct job_params *v, struct sd_params *p)
{
	for (size_t i = 0; i < params_count; i++) {
		const struct param_def *d = &params_table[i];
		struct pvalue x;

		if (d->sd_storage == PARAM_NONE)
			continue;
		get(d, v, &x);
		if (d->storage == PARAM_S_STRING && x.s == NULL)
			continue;	/* sd_params_init's ("" negative prompt) */
		store(p, d->sd_offset, d->sd_storage, &x, 0);
	}
}

void
params_from_sd(struct job_params *v, const struct sd_params *p)
{
	for (size_t i = 0; i < params_count; i++) {
		const struct param_def *d = &params_table[i];
		struct pvalue x;

		if (d->sd_storage == PARAM_NONE || !(d->flags & PARAM_MODEL_DEFAULT) ||
		    params_is_set(d, v))
			continue;
		load(p, d->sd_offset, d->sd_storage, &x);
		set(d, v, &x);
	}
}

int
params_copy_one(const struct param_def *d, struct job_params *dst,
    const struct job_params *src)
{
	struct pvalue x;

	get(d, src, &x);
	if (d->type == PARAM_SEED)
		dst->seed_random = src->seed_random;
	return set(d, dst, &x);
}

int
params_copy(struct job_params *dst, const struct job_params *src)
{
	for (size_t i = 0; i < params_count; i++)
		if (params_copy_one(&params_table[i], dst, src) < 0)
			return -1;
	return 0;
}

void
params_free(struct job_params *v)
{
	static const struct pvalue none;

	for (size_t i = 0; i < params_count; i++)
		if (params_table[i].storage == PARAM_S_STRING)
			set(&params_table[i], v, &none);
}

void
params_init(struct job_params *v)
{
	char why[SD_ERROR_MAX];

	memset(v, 0, sizeof *v);
	for (size_t i = 0; i < params_count; i++) {
		const struct param_def *d = &params_table[i];
		if (d->default_text != NULL)
			(void)params_parse_text(d, d->default_text, v, why, sizeof why);
	}
}

char *
params_flags_help(void)
{
	size_t cap = 8192, len = 0;
	char *out = malloc(cap), opt[80], desc[512], choices[256];

	if (out == NULL)
		return NULL;
	out[0] = '\0';
	for (size_t i = 0; i < params_count; i++) {
		const struct param_def *d = &params_table[i];
		const char *p, *line;
		size_t col, dl;

		if (d->flag == NULL)
			continue;
		if (d->flag_value != NULL)
			snprintf(opt, sizeof opt, "      --%s", d->flag);
		else if (d->short_flag)
			snprintf(opt, sizeof opt, "  -%c, --%s %s", d->short_flag, d->flag,
			    d->metavar);
		else
			snprintf(opt, sizeof opt, "      --%s %s", d->flag, d->metavar);
		dl = (size_t)snprintf(desc, sizeof desc, "%s", d->help);
		if (d->type == PARAM_CHOICE) {
			choices_text(d, choices, sizeof choices);
			dl += (size_t)snprintf(desc + dl, sizeof desc - dl, ": %s", choices);
		}
		if (d->flags & PARAM_MODEL_DEFAULT)
			snprintf(desc + dl, sizeof desc - dl, " (default: the model's)");
		else if (d->default_text != NULL && d->default_text[0] != '\0' &&
		    d->type != PARAM_SEED && d->flag_value == NULL)
			snprintf(desc + dl, sizeof desc - dl, " (default %s)",
			    d->default_text);
		if (len + strlen(opt) + strlen(desc) + 256 > cap) {
			char *n = realloc(out, cap *= 2);
			if (n == NULL) {
				free(out);
				return NULL;
			}
			out = n;
		}
		/* the option, then its description from column 26, wrapped
		 * at 79 columns */
		len += (size_t)sprintf(out + len, "%s", opt);
		col = strlen(opt);
		if (col + 2 > 26) {
			len += (size_t)sprintf(out + len, "\n");
			col = 0;
		}
		len += (size_t)sprintf(out + len, "%*s", (int)(26 - col), "");
		col = 26;
		for (line = desc; *line; ) {
			size_t w = strcspn(line, " ");
			if (col > 26 && col + 1 + w > 79) {
				len += (size_t)sprintf(out + len, "\n%26s", "");
				col = 26;
			} else if (col > 26) {
				out[len++] = ' ';
				col++;
			}
			memcpy(out + len, line, w);
			len += w;
			col += w;
			p = line + w;
			line = *p == ' ' ? p + 1 : p;
		}
		out[len++] = '\n';
		out[len] = '\0';
	}
	return out;
}
