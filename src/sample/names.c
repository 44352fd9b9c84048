/* names.c: the names of samplers, schedules and generators, and the
 * default job parameters (declared in sample/pipeline.h). */
#include "config.h"

#include <stddef.h>
#include <string.h>
#include <strings.h>

#include "sample/pipeline.h"

static const struct {
	const char *name;	/* job files, command line, result records */
	const char *a1111;	/* PNG "parameters" text */
	/* other spellings users type (diffusers', ComfyUI's, older A1111
	 * ones), normalised as in normalise(), space-separated */
	const char *aliases;
	const char *diffusers;	/* the class it computes */
} samplers[SD_SAMPLER_COUNT] = {
	[SD_SAMPLER_EULER_A] = {"euler_a", "Euler a", "euler_ancestral k_euler_a "
	    "k_euler_ancestral", "EulerAncestralDiscreteScheduler"},
	[SD_SAMPLER_EULER] = {"euler", "Euler", "k_euler", "EulerDiscreteScheduler"},
	[SD_SAMPLER_DDIM] = {"ddim", "DDIM", NULL, "DDIMScheduler"},
	[SD_SAMPLER_DPMPP_2M] = {"dpmpp_2m", "DPM++ 2M", "k_dpmpp_2m",
	    "DPMSolverMultistepScheduler"},
	[SD_SAMPLER_LMS] = {"lms", "LMS", "k_lms", "LMSDiscreteScheduler"},
	[SD_SAMPLER_PNDM] = {"pndm", "PLMS", "plms", "PNDMScheduler"},
	[SD_SAMPLER_HEUN] = {"heun", "Heun", "k_heun", "HeunDiscreteScheduler"},
	[SD_SAMPLER_DPM2] = {"dpm2", "DPM2", "dpm_2 k_dpm_2", "KDPM2DiscreteScheduler"},
	[SD_SAMPLER_DPM2_A] = {"dpm2_a", "DPM2 a", "dpm_2_ancestral dpm2_ancestral "
	    "dpm_2_a k_dpm_2_a k_dpm_2_ancestral", "KDPM2AncestralDiscreteScheduler"},
	[SD_SAMPLER_UNIPC] = {"unipc", "UniPC", "uni_pc uni_pc_bh2",
	    "UniPCMultistepScheduler"},
	[SD_SAMPLER_DPMPP_2M_SDE] = {"dpmpp_2m_sde", "DPM++ 2M SDE",
	    "k_dpmpp_2m_sde", "DPMSolverMultistepScheduler (sde-dpmsolver++)"},
	[SD_SAMPLER_DEIS] = {"deis", "DEIS", NULL, "DEISMultistepScheduler"},
	[SD_SAMPLER_LCM] = {"lcm", "LCM", NULL, "LCMScheduler"},
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
	[SD_PREDICTION_FLOW] = "flow",
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

/* A sampler name as users type it, lower-cased, "++" spelled "pp", runs
 * of spaces, '-' and '_' as one '_': "DPM++ 2M SDE Karras" ->
 * "dpmpp_2m_sde_karras", "Euler a" -> "euler_a".  -1 when it does not fit
 * or has other characters. */
static int
normalise(const char *name, char *out, size_t size)
{
	size_t o = 0;
	int sep = 0;

	if (name == NULL)
		return -1;
	for (const char *p = name; *p != '\0'; p++) {
		unsigned char c = (unsigned char)*p;

		if (c == ' ' || c == '-' || c == '_' || c == '\t') {
			sep = o > 0;
			continue;
		}
		if (o + 4 >= size)
			return -1;
		if (sep)
			out[o++] = '_';
		sep = 0;
		if (c == '+' && p[1] == '+') {
			out[o++] = 'p';
			out[o++] = 'p';
			p++;
		} else if (c >= 'A' && c <= 'Z') {
			out[o++] = (char)(c - 'A' + 'a');
		} else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
			out[o++] = (char)c;
		} else {
			return -1;
		}
	}
	out[o] = '\0';
	return o > 0 ? 0 : -1;
}

/* The sampler of a normalised name (its own name or an alias), or -1. */
static int
lookup(const char *norm)
{
	size_t len = strlen(norm);

	for (int i = 0; i < SD_SAMPLER_COUNT; i++) {
		const char *a = samplers[i].aliases;

		if (strcmp(norm, samplers[i].name) == 0)
			return i;
		while (a != NULL && *a != '\0') {
			size_t n = strcspn(a, " ");

			if (n == len && strncmp(a, norm, n) == 0)
				return i;
			a += n;
			a += *a == ' ';
		}
	}
	return -1;
}

int
sd_sampler_parse(const char *name, enum sd_sampler *out)
{
	char norm[64];
	int i;

	if (normalise(name, norm, sizeof norm) < 0 || (i = lookup(norm)) < 0)
		return -1;
	*out = (enum sd_sampler)i;
	return 0;
}

int
sd_sampler_parse_full(const char *name, enum sd_sampler *sampler,
    enum sd_schedule *schedule)
{
	char norm[64];
	size_t len;
	int i;

	if (normalise(name, norm, sizeof norm) < 0)
		return -1;
	if ((i = lookup(norm)) >= 0) {
		*sampler = (enum sd_sampler)i;
		return 0;
	}
	len = strlen(norm);
	if (len > 7 && strcmp(norm + len - 7, "_karras") == 0) {
		norm[len - 7] = '\0';
		if ((i = lookup(norm)) < 0)
			return -1;
		*sampler = (enum sd_sampler)i;
		*schedule = SD_SCHEDULE_KARRAS;
		return 1;
	}
	return -1;
}

const char *
sd_sampler_diffusers_class(enum sd_sampler s)
{
	return (unsigned)s < SD_SAMPLER_COUNT ? samplers[s].diffusers : "?";
}

int
sd_sampler_model_calls(enum sd_sampler s, int steps)
{
	switch (s) {
	case SD_SAMPLER_HEUN:
	case SD_SAMPLER_DPM2:
	case SD_SAMPLER_DPM2_A:
		return 2 * steps - 1;
	case SD_SAMPLER_PNDM:
		return steps > 1 ? steps + 1 : steps;
	default:
		return steps;
	}
}

int
sd_sampler_karras_ok(enum sd_sampler s)
{
	return s != SD_SAMPLER_DDIM && s != SD_SAMPLER_PNDM && s != SD_SAMPLER_LCM &&
	    (unsigned)s < SD_SAMPLER_COUNT;
}

const char *
sd_sampler_aliases(enum sd_sampler s)
{
	return (unsigned)s < SD_SAMPLER_COUNT && samplers[s].aliases != NULL ?
	    samplers[s].aliases : "";
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
		if (strcasecmp(name, schedules[i]) == 0) {
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
	p->shift = 0;			/* the model's (flow models only) */
	p->t5 = 1;
	p->seed = 0;
	p->rng = SD_RNG_CPU;
	p->clip_skip = 1;
	p->init_rgb = NULL;
	p->mask_grey = NULL;
	p->strength = 0.75f;
}
