/* names.c: the names of samplers, schedules and generators, and the
 * default job parameters (declared in sample/pipeline.h). */
#include "config.h"

#include <stddef.h>
#include <string.h>

#include "sample/pipeline.h"

static const struct {
	const char *name;	/* job files, command line, result records */
	const char *a1111;	/* PNG "parameters" text */
} samplers[SD_SAMPLER_COUNT] = {
	[SD_SAMPLER_EULER_A] = {"euler_a", "Euler a"},
	[SD_SAMPLER_EULER] = {"euler", "Euler"},
	[SD_SAMPLER_DDIM] = {"ddim", "DDIM"},
	[SD_SAMPLER_DPMPP_2M] = {"dpmpp_2m", "DPM++ 2M"},
	[SD_SAMPLER_LMS] = {"lms", "LMS"},
	[SD_SAMPLER_PNDM] = {"pndm", "PLMS"},
};

static const char *const schedules[] = {
	[SD_SCHEDULE_NORMAL] = "normal",
	[SD_SCHEDULE_KARRAS] = "karras",
};

static const char *const rngs[] = {
	[SD_RNG_CPU] = "cpu",
	[SD_RNG_CUDA] = "cuda",
};

static const char *const predictions[] = {
	[SD_PREDICTION_AUTO] = "auto",
	[SD_PREDICTION_EPSILON] = "epsilon",
	[SD_PREDICTION_V] = "v",
};

static const char *const spacings[] = {
	[SD_SPACING_AUTO] = "auto",
	[SD_SPACING_LEADING] = "leading",
	[SD_SPACING_LINSPACE] = "linspace",
	[SD_SPACING_TRAILING] = "trailing",
};

/* The index of name in a table of n names, or -1. */
static int
name_index(const char *const *names, size_t n, const char *name)
{
	if (name == NULL)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (strcmp(name, names[i]) == 0)
			return (int)i;
	return -1;
}

const char *
sd_prediction_name(enum sd_prediction p)
{
	return (unsigned)p < sizeof predictions / sizeof predictions[0] ? predictions[p] : "?";
}

int
sd_prediction_parse(const char *name, enum sd_prediction *out)
{
	int i = name_index(predictions, sizeof predictions / sizeof predictions[0], name);

	if (i < 0)
		return -1;
	*out = (enum sd_prediction)i;
	return 0;
}

const char *
sd_spacing_name(enum sd_spacing s)
{
	return (unsigned)s < sizeof spacings / sizeof spacings[0] ? spacings[s] : "?";
}

int
sd_spacing_parse(const char *name, enum sd_spacing *out)
{
	int i = name_index(spacings, sizeof spacings / sizeof spacings[0], name);

	if (i < 0)
		return -1;
	*out = (enum sd_spacing)i;
	return 0;
}

const char *
sd_sampler_name(enum sd_sampler s)
{
	return (unsigned)s < SD_SAMPLER_COUNT ? samplers[s].name : "?";
}

int
sd_sampler_parse(const char *name, enum sd_sampler *out)
{
	if (name == NULL)
		return -1;
	for (int i = 0; i < SD_SAMPLER_COUNT; i++) {
		if (strcmp(name, samplers[i].name) == 0) {
			*out = (enum sd_sampler)i;
			return 0;
		}
	}
	return -1;
}

const char *
sd_sampler_a1111_name(enum sd_sampler s)
{
	return (unsigned)s < SD_SAMPLER_COUNT ? samplers[s].a1111 : "?";
}

const char *
sd_schedule_name(enum sd_schedule s)
{
	return (unsigned)s < sizeof schedules / sizeof schedules[0] ?
	    schedules[s] : "?";
}

int
sd_schedule_parse(const char *name, enum sd_schedule *out)
{
	if (name == NULL)
		return -1;
	for (size_t i = 0; i < sizeof schedules / sizeof schedules[0]; i++) {
		if (strcmp(name, schedules[i]) == 0) {
			*out = (enum sd_schedule)i;
			return 0;
		}
	}
	return -1;
}

const char *
sd_rng_name(enum sd_rng_kind r)
{
	return (unsigned)r < sizeof rngs / sizeof rngs[0] ? rngs[r] : "?";
}

int
sd_rng_parse(const char *name, enum sd_rng_kind *out)
{
	if (name == NULL)
		return -1;
	for (size_t i = 0; i < sizeof rngs / sizeof rngs[0]; i++) {
		if (strcmp(name, rngs[i]) == 0) {
			*out = (enum sd_rng_kind)i;
			return 0;
		}
	}
	return -1;
}

void
sd_params_init(struct sd_params *p)
{
	memset(p, 0, sizeof *p);
	p->prompt = NULL;		/* required: the caller must set it */
	p->negative_prompt = NULL;		/* none (SDXL: zeros) */
	p->width = 0;			/* the model's defaults: sd_params_resolve */
	p->height = 0;
	p->steps = 0;
	p->guidance_scale = -1;
	p->sampler = SD_SAMPLER_AUTO;
	p->schedule = SD_SCHEDULE_NORMAL;
	p->prediction = SD_PREDICTION_AUTO;
	p->spacing = SD_SPACING_AUTO;
	p->seed = 0;
	p->rng = SD_RNG_CPU;
	p->clip_skip = 1;
	p->init_rgb = NULL;
	p->mask_grey = NULL;
	p->strength = 0.75f;
}
