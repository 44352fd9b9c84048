/* pipeline.h: the engine as the rest of sdbatch sees it.
 *
 * Prompt and parameters in; images and progress events out.  A model is
 * loaded once (sd_model_load) and reused by every job that names the same
 * files.  Nothing here knows about spools, job files or PNG files. */
#ifndef SD_PIPELINE_H
#define SD_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

/* SD_SAMPLER_AUTO (and every *_AUTO below) in struct sd_params means "the
 * model's default": sd_params_resolve replaces it from the model
 * description. */
enum sd_sampler {
	SD_SAMPLER_AUTO = -1,
	SD_SAMPLER_EULER_A, SD_SAMPLER_EULER, SD_SAMPLER_DDIM,
	SD_SAMPLER_DPMPP_2M, SD_SAMPLER_LMS, SD_SAMPLER_PNDM,
	SD_SAMPLER_HEUN, SD_SAMPLER_DPM2, SD_SAMPLER_DPM2_A, SD_SAMPLER_UNIPC,
	SD_SAMPLER_DPMPP_2M_SDE, SD_SAMPLER_DEIS, SD_SAMPLER_LCM,
	SD_SAMPLER_COUNT
};
enum sd_schedule { SD_SCHEDULE_NORMAL, SD_SCHEDULE_KARRAS };
enum sd_rng_kind { SD_RNG_CPU, SD_RNG_CUDA };
/* What the denoiser predicts (job field prediction:): the noise, v, or
 * the flow's velocity (SD3; its only one). */
enum sd_prediction {
	SD_PREDICTION_AUTO, SD_PREDICTION_EPSILON, SD_PREDICTION_V, SD_PREDICTION_FLOW
};
/* diffusers' timestep_spacing (job field spacing:). */
enum sd_spacing {
	SD_SPACING_AUTO, SD_SPACING_LEADING, SD_SPACING_LINSPACE, SD_SPACING_TRAILING
};

/* How a prompt is read (job field prompt_syntax:): as diffusers reads it,
 * or with AUTOMATIC1111's weights, BREAK, chunks and <lora:...> tags
 * (sample/prompt.h). */
enum sd_prompt_syntax { SD_PROMPT_PLAIN, SD_PROMPT_A1111 };
/* "plain", "a1111" */
const char *sd_prompt_syntax_name(enum sd_prompt_syntax s);
int sd_prompt_syntax_parse(const char *name, enum sd_prompt_syntax *out);

/* A LoRA file and its multiplier (job field loras:, flag --lora). */
struct sd_lora {
	const char *path;
	float scale;
};

/* "euler_a" <-> SD_SAMPLER_EULER_A ...; parse returns -1 when unknown.
 * It accepts the names users type, case-insensitively, with spaces, '-'
 * or '_' between the words: sdbatch's ("dpmpp_2m"), A1111's ("DPM++ 2M",
 * "Euler a", "DPM2 a"), diffusers'/ComfyUI's ("euler_ancestral",
 * "uni_pc", "dpm_2_ancestral"). */
const char *sd_sampler_name(enum sd_sampler s);
int sd_sampler_parse(const char *name, enum sd_sampler *out);
/* The same, also accepting a "Karras" suffix ("DPM++ 2M SDE Karras",
 * "dpmpp_2m_sde_karras"): returns 1 and sets *schedule to karras when the
 * name had it, 0 (schedule untouched) when not, -1 when unknown. */
int sd_sampler_parse_full(const char *name, enum sd_sampler *sampler,
    enum sd_schedule *schedule);
/* The diffusers class a sampler computes ("HeunDiscreteScheduler"), and
 * its other accepted spellings (space-separated, normalised). */
const char *sd_sampler_diffusers_class(enum sd_sampler s);
const char *sd_sampler_aliases(enum sd_sampler s);
/* UNet evaluations of a txt2img run of this many steps (each one batch-2
 * under guidance): heun, dpm2 and dpm2_a 2 steps - 1, pndm steps + 1
 * (its PLMS warm-up; 1 for 1 step), the others steps. */
int sd_sampler_model_calls(enum sd_sampler s, int steps);
/* Whether the sampler takes the karras schedule (all but ddim, pndm, lcm). */
int sd_sampler_karras_ok(enum sd_sampler s);
/* A1111's display name ("Euler a", "DPM++ 2M", ...) for PNG metadata. */
const char *sd_sampler_a1111_name(enum sd_sampler s);
const char *sd_schedule_name(enum sd_schedule s);
int sd_schedule_parse(const char *name, enum sd_schedule *out);
const char *sd_rng_name(enum sd_rng_kind r);
int sd_rng_parse(const char *name, enum sd_rng_kind *out);
/* "auto", "epsilon", "v", "flow" */
const char *sd_prediction_name(enum sd_prediction p);
int sd_prediction_parse(const char *name, enum sd_prediction *out);
/* "auto", "leading", "linspace", "trailing" */
const char *sd_spacing_name(enum sd_spacing s);
int sd_spacing_parse(const char *name, enum sd_spacing *out);

/* Where the model comes from. */
struct sd_model_spec {
	const char *model;	/* single-file checkpoint or diffusers folder */
	const char *unet;	/* optional: the UNet from this file instead */
	const char *vae;	/* optional: the VAE from this file instead */
	const char *tokenizer;	/* optional: folder with vocab.json + merges.txt,
				 * or one holding tokenizer/, tokenizer_2/ and
				 * tokenizer_3/ (spiece.model) */
	const char *text_encoders;	/* optional (SD3): the text encoders from
					 * this folder (clip_l.safetensors,
					 * clip_g.safetensors, t5xxl_fp16.safetensors,
					 * or a diffusers SD3 folder) */
	const char *device;	/* "cpu" (default), "cuda", "cuda:N" */
	int threads;		/* 0: the default (physical cores) */
	/* optional: the Hub cache where the tokenizer is looked for
	 * (configuration's hub.cache); NULL: the environment's */
	const char *hub_cache;
};

struct sd_model;

struct sd_model *sd_model_load(const struct sd_model_spec *spec, struct sd_error *err);
void sd_model_free(struct sd_model *m);
/* "sd15", "sd15-inpaint", "sd2", "sd2-base", "sd-turbo", "sdxl",
 * "sdxl-turbo", "sd3" */
const char *sd_model_arch(const struct sd_model *m);
/* What the model is made of and its defaults (sample/description.h). */
struct model_desc;
const struct model_desc *sd_model_description(const struct sd_model *m);

/* One job's parameters (defaults: sd_params_init).  Values marked "model
 * default" are filled by sd_params_resolve from the model description
 * (SD 1.x 512x512, 20 steps, 7.5; SD 2.x 768-v 768x768; Turbo 512x512, 1
 * step, guidance 0, euler_a trailing; ...). */
struct sd_params {
	const char *prompt;
	const char *negative_prompt;	/* NULL when none: "" is encoded (SD 1.x,
					 * 2.x), zeros are the unconditional
					 * input (SDXL); "" given is encoded */
	int width, height;		/* multiples of 8; 0: model default */
	int steps;			/* 0: model default */
	float guidance_scale;		/* < 0: model default */
	enum sd_sampler sampler;	/* SD_SAMPLER_AUTO: model default */
	enum sd_schedule schedule;
	enum sd_prediction prediction;	/* AUTO: the model's */
	enum sd_spacing spacing;	/* AUTO: the model's scheduler config */
	double shift;			/* flow-matching models (SD3): the sigma
					 * shift; <= 0: the model's (its
					 * scheduler config's, SD3 3.0); other
					 * models leave it 0 */
	int t5;				/* SD3: 1 (default) encodes with T5 when
					 * the model has it, 0 renders without
					 * it (zeros in its place) */
	uint64_t seed;			/* image i uses seed + i */
	enum sd_rng_kind rng;
	int clip_skip;			/* A1111 meaning: 1 = last layer */
	/* img2img / inpainting: 8-bit RGB, width x height; mask 8-bit grey,
	 * white = repaint.  NULL when unused. */
	const uint8_t *init_rgb;
	const uint8_t *mask_grey;
	double strength;		/* (0, 1], img2img and inpainting */
	/* LoRAs merged into the model for this job; with prompt_syntax
	 * a1111 also the <lora:NAME:M> tags of the prompts, NAME looked up as
	 * NAME.safetensors (or NAME) in lora_dirs, in order.  A merge is kept
	 * for the next job that asks for the same set. */
	const struct sd_lora *loras;
	int nloras;
	const char *const *lora_dirs;
	int nlora_dirs;
	enum sd_prompt_syntax prompt_syntax;
};

void sd_params_init(struct sd_params *p);

/* Replace every "model default" value of p by the model's (see struct
 * sd_params), so that p holds the effective values that sd_generate will
 * use: call it before writing them anywhere (PNG metadata, result record).
 * Returns 0, or -1 with err (SD_EDATA naming the field) when the
 * combination cannot run on this model. */
int sd_params_resolve(const struct sd_model *m, struct sd_params *p, struct sd_error *err);

struct sd_progress {
	const char *event;	/* "loading", "encoding", "step", "decoding" */
	int step, steps;	/* sampling steps of this image */
	double elapsed_s;	/* since this image started */
	double eta_s;		/* estimate for this image, -1 unknown */
	const char *message;	/* event "warning": what to tell the user
				 * (a LoRA that matched only in part, a plain
				 * prompt cut at 77 tokens) */
};

/* Called after every sampling step (and at phase changes).  Return 0 to go
 * on, nonzero to stop: sd_generate then fails with SD_EREQUEUED. */
typedef int (*sd_progress_fn)(void *user, const struct sd_progress *p);

struct sd_image {
	int width, height;
	uint8_t *rgb;		/* width*height*3, malloc'd; sd_image_free */
	uint64_t seed;		/* the seed this image used */
};

void sd_image_free(struct sd_image *img);

struct sd_timings {
	double encode_s, sample_s, decode_s;
};

/* Render image number index of the job (seed = p->seed + index).
 * Returns 0, or -1 with err filled (SD_EREQUEUED when progress said stop). */
int sd_generate(struct sd_model *m, const struct sd_params *p, int index,
    struct sd_image *out, struct sd_timings *timings,
    sd_progress_fn progress, void *user, struct sd_error *err);

/* A LoRA the last sd_generate merged. */
struct sd_lora_used {
	char name[256];		/* the <lora:NAME> name, else the file name less .safetensors */
	char path[4096];
	float scale;		/* the text encoder's multiplier */
	float unet_scale;	/* the UNet's (the same unless a tag said otherwise) */
	char hash[13];		/* A1111's short hash (Lora hashes) */
};

/* The LoRAs merged by the last sd_generate of m, *n of them (valid until
 * the next sd_generate or sd_model_free). */
const struct sd_lora_used *sd_model_loras(const struct sd_model *m, int *n);

/* For tests and debugging: fn gets intermediate tensors (host memory):
 * "latents_0" (step -1), then per UNet call i "unet_out" ([batch, 4, h, w],
 * [uncond, cond] under guidance) and "latents" (after the step), and
 * "image_decoded" ([1, 3, H, W], unclamped). fn NULL turns it off. */
typedef void (*sd_debug_fn)(void *user, const char *name, int step, const float *data, size_t n);
void sd_model_set_debug(struct sd_model *m, sd_debug_fn fn, void *user);

#endif
