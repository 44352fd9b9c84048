/* scheduler.h: noise schedules and samplers, as diffusers 0.30.3 builds
 * them from_config of a model's scheduler config.
 *
 * Samplers and their diffusers classes: ddim (DDIMScheduler, eta 0),
 * euler (EulerDiscreteScheduler), euler_a (EulerAncestralDiscreteScheduler),
 * dpmpp_2m (DPMSolverMultistepScheduler, dpmsolver++, order 2, midpoint),
 * lms (LMSDiscreteScheduler, order 4), pndm (PNDMScheduler: PLMS, with PRK
 * warm-up steps when the config does not set skip_prk_steps), heun
 * (HeunDiscreteScheduler: two model calls a step but the last), dpm2
 * (KDPM2DiscreteScheduler) and dpm2_a (KDPM2AncestralDiscreteScheduler),
 * both with two calls a step but the last, unipc (UniPCMultistepScheduler:
 * bh2, order 2, predict_x0), dpmpp_2m_sde (DPMSolverMultistepScheduler,
 * sde-dpmsolver++, order 2, midpoint), deis (DEISMultistepScheduler,
 * logrho, order 2) and lcm (LCMScheduler, at most 50 steps).
 *
 * Flow-matching models (SD3: prediction SCHED_PRED_FLOW, the model
 * predicts the velocity noise - x0) have their own classes: euler is
 * FlowMatchEulerDiscreteScheduler and heun FlowMatchHeunDiscreteScheduler
 * (sigmas shifted by the config's shift, no noise scaling, input divisor
 * 1); sd_scheduler_new rejects the other samplers and karras on them.
 *
 * `schedule: karras` means use_karras_sigmas=True (rho 7) for every class
 * that has it: euler, lms, heun, dpm2, dpm2_a, dpmpp_2m, dpmpp_2m_sde,
 * unipc, deis.  diffusers 0.30.3's Euler ancestral has no Karras option;
 * sdbatch gives euler_a Karras sigmas the way EulerDiscreteScheduler
 * computes them (what later diffusers releases do too).  DDIM, PNDM and
 * LCM step on integer training timesteps and have no sigmas to space:
 * sd_scheduler_new rejects karras for them.
 *
 * A scheduler is built for one image: its steps are called in order,
 * sd_scheduler_step updating the latents in place.  Arithmetic is float32
 * where diffusers computes in float32, operation by operation, so results
 * match diffusers to the last bits or nearly. */
#ifndef SD_SCHEDULER_H
#define SD_SCHEDULER_H

#include <stddef.h>

#include "core/error.h"
#include "sample/pipeline.h"
#include "sample/rng.h"

enum sched_beta_schedule {
	SCHED_BETA_LINEAR,		/* linspace(beta_start, beta_end) */
	SCHED_BETA_SCALED_LINEAR,	/* linspace(sqrt(start), sqrt(end))^2 */
	SCHED_BETA_SQUAREDCOS_CAP_V2,	/* Glide cosine schedule */
};

enum sched_prediction {
	SCHED_PRED_EPSILON,		/* the model predicts the noise */
	SCHED_PRED_V,			/* v_prediction (SD 2.x 768) */
	SCHED_PRED_SAMPLE,		/* the model predicts x0 */
	SCHED_PRED_FLOW,		/* flow matching (SD3): the model predicts
					 * the velocity v = noise - x0; the
					 * FlowMatch* classes */
};

enum sched_spacing {
	SCHED_SPACING_DEFAULT,		/* the class's own: leading for DDIM and
					 * PNDM, linspace for the others */
	SCHED_SPACING_LEADING,
	SCHED_SPACING_LINSPACE,
	SCHED_SPACING_TRAILING,
};

/* A diffusers scheduler config.  Keys whose default differs between the
 * classes are -1 (or SCHED_SPACING_DEFAULT) when the config file does not
 * name them, and each sampler then applies its own class's default, as
 * diffusers' from_config does. */
struct sched_config {
	int num_train_timesteps;
	double beta_start, beta_end;
	enum sched_beta_schedule beta_schedule;
	enum sched_prediction prediction_type;
	int steps_offset;
	enum sched_spacing timestep_spacing;
	int set_alpha_to_one;		/* -1: DDIM true, PNDM false */
	int skip_prk_steps;		/* -1: false (PNDM runs PRK steps) */
	int clip_sample;		/* -1: DDIM true */
	double clip_sample_range;
	double sigma_min, sigma_max;	/* Karras range; 0: from the schedule */
	double shift;			/* SCHED_PRED_FLOW: the sigma shift
					 * s' = shift*s / (1 + (shift-1)*s)
					 * (diffusers' default 1.0) */
};

/* The SD 1.5 config (v1-5's scheduler/scheduler_config.json, a
 * PNDMScheduler config): scaled_linear 0.00085..0.012, 1000 steps,
 * steps_offset 1, set_alpha_to_one false, skip_prk_steps true, clip_sample
 * false, epsilon, no timestep_spacing (so each class uses its own). */
void sched_config_sd15(struct sched_config *cfg);
/* SD3 Medium's scheduler/scheduler_config.json: FlowMatchEulerDiscrete-
 * Scheduler, num_train_timesteps 1000, shift 3.0 (prediction
 * SCHED_PRED_FLOW). */
void sched_config_sd3(struct sched_config *cfg);
/* diffusers' defaults for a config without any key. */
void sched_config_defaults(struct sched_config *cfg);
/* Read a diffusers folder's scheduler/scheduler_config.json.  Keys the file
 * lacks keep diffusers' defaults (sched_config_defaults); keys of other
 * classes are ignored, as from_config does; settings sdbatch cannot honour
 * (thresholding, rescale_betas_zero_snr, trained_betas, ...) are errors
 * naming the key.  A "_class_name" of FlowMatchEulerDiscreteScheduler or
 * FlowMatchHeunDiscreteScheduler makes a flow-matching config
 * (SCHED_PRED_FLOW, its "shift"; use_dynamic_shifting true is an error).
 * SD_ENOINPUT when the file is missing, SD_EDATA when it is malformed. */
int sched_config_load(const char *path, struct sched_config *cfg,
    struct sd_error *err);

/* The training noise schedule of cfg (n = num_train_timesteps elements
 * each; any output may be NULL): betas, alphas_cumprod and the k-diffusion
 * sigmas ((1 - ac)/ac)^0.5, bit-exact with diffusers' float32 tensors. */
int sched_train_schedule(const struct sched_config *cfg, float *betas,
    float *alphas_cumprod, float *sigmas, struct sd_error *err);

struct sd_scheduler;

/* set_timesteps(steps) of the sampler's class on cfg.  steps in
 * [1, num_train_timesteps].  Errors (SD_EDATA, field "schedule" or
 * "steps", or SD_ECONFIG for the config) say what is wrong.  On a flow
 * config (SCHED_PRED_FLOW) only euler and heun run, on the normal
 * schedule (SD_EDATA, field "sampler" or "schedule", otherwise). */
struct sd_scheduler *sd_scheduler_new(enum sd_sampler sampler,
    enum sd_schedule schedule, const struct sched_config *cfg, int steps,
    struct sd_error *err);
void sd_scheduler_free(struct sd_scheduler *s);

/* img2img / inpainting: run only the last part of the schedule, as the
 * diffusers pipelines do: init_timestep = min(int(steps*strength), steps)
 * (in double), t_start = steps - init_timestep, calls from timesteps_full
 * [t_start] on (set_begin_index(t_start)).  On a flow config, SD3's
 * img2img rule: init_timestep = min(steps*strength, steps) stays a double
 * and t_start = int(steps - init_timestep) (10 steps at 0.75: t_start 2,
 * 8 steps run).  Heun's t_start counts 2 calls a step.  Call before the
 * first step.  Fails (SD_EDATA, field "strength") when no step would be
 * left. */
int sd_scheduler_set_strength(struct sd_scheduler *s, double strength,
    struct sd_error *err);

/* Number of UNet calls to run (PNDM: steps + 1, with the repeated
 * timestep; after set_strength: the remaining ones). */
int sd_scheduler_calls(const struct sd_scheduler *s);
/* The timestep of call i (0-based among the calls to run); fractional
 * for the Euler-type samplers. */
float sd_scheduler_timestep(const struct sd_scheduler *s, int i);
/* The whole schedule of set_timesteps (before set_strength): nfull
 * timesteps; and for the k-diffusion style samplers (euler, euler_a, lms,
 * dpmpp_2m) their nfull + 1 sigmas (the last is the final sigma), else
 * NULL. */
const float *sd_scheduler_timesteps_full(const struct sd_scheduler *s,
    int *nfull);
const float *sd_scheduler_sigmas_full(const struct sd_scheduler *s);
/* How many values sd_scheduler_sigmas_full has: nfull + 1 for the
 * one-call samplers, 2 steps for heun, 2 steps + 2 for dpm2 and dpm2_a (as
 * diffusers expands them); 0 when it returns NULL. */
int sd_scheduler_nsigmas(const struct sd_scheduler *s);
/* dpm2 and dpm2_a: "sigmas_interpol" (both), "sigmas_up", "sigmas_down"
 * (dpm2_a), expanded like the sigmas; NULL for other names or samplers. */
const float *sd_scheduler_sigmas_extra(const struct sd_scheduler *s,
    const char *name);
/* UNet calls a sampling step costs: 2 for heun, dpm2, dpm2_a (each step
 * but the last evaluates the model twice), 1 for the others. */
int sd_scheduler_model_calls_per_step(const struct sd_scheduler *s);
/* Whether call i draws a randn of the sample's shape from the generator
 * (euler, euler_a, dpm2_a every call; dpmpp_2m_sde every step; lcm every
 * step but the last). */
int sd_scheduler_draws(const struct sd_scheduler *s, int i);
/* The index of the first call to run in the full schedule (t_start). */
int sd_scheduler_begin_index(const struct sd_scheduler *s);

/* The initial latents are randn * init_noise_sigma (txt2img). */
float sd_scheduler_init_noise_sigma(const struct sd_scheduler *s);
/* scale_model_input for call i: the UNet input is sample / divisor
 * (sqrt(sigma^2 + 1) for euler, euler_a and lms; 1 for the others). */
float sd_scheduler_input_divisor(const struct sd_scheduler *s, int i);
/* out[k] = sample[k] / divisor (out may be sample). */
void sd_scheduler_scale_model_input(const struct sd_scheduler *s, int i,
    const float *sample, float *out, size_t n);

/* add_noise(x0, noise, timestep of call i) = a*x0 + b*noise (float32
 * products, then their sum), the scheduler's own formula: DDIM and PNDM
 * a = sqrt(alphas_cumprod[t]), b = sqrt(1 - alphas_cumprod[t]); euler,
 * euler_a, lms a = 1, b = sigma; dpmpp_2m a = 1/sqrt(sigma^2 + 1),
 * b = sigma*a; flow matching (scale_noise) a = 1 - sigma, b = sigma.  i may be sd_scheduler_calls(s) - 1 at most. */
void sd_scheduler_add_noise_coef(const struct sd_scheduler *s, int i,
    float *a, float *b);
/* out[k] = a*x0[k] + b*noise[k] with the coefficients above. */
void sd_scheduler_add_noise(const struct sd_scheduler *s, int i,
    const float *x0, const float *noise, float *out, size_t n);

/* Allocate the step buffers for samples of n floats now, so that the
 * sampling loop allocates nothing (sd_scheduler_step does it at the first
 * step otherwise).  Returns 0, or -1 (SD_EINTERNAL) out of memory. */
int sd_scheduler_prepare(struct sd_scheduler *s, size_t n, struct sd_error *err);

/* scheduler.step for call i (calls must come in order 0, 1, ...):
 * model_out is the (guided) UNet output for sample / divisor; sample
 * (n floats, the same n every call) becomes the latents after the step.
 * The samplers that draw (sd_scheduler_draws) take one randn of n elements
 * from rng in that call, used or not, exactly like diffusers; the others
 * ignore rng.
 * Buffers are allocated at the first step, never later.  Returns 0, or -1
 * (SD_EINTERNAL) when called out of order or out of memory. */
int sd_scheduler_step(struct sd_scheduler *s, int i, const float *model_out,
    float *sample, size_t n, struct sd_rng *rng, struct sd_error *err);
/* The same with the step's noise given (n values) instead of drawn; noise
 * is not read in calls that draw nothing. */
int sd_scheduler_step_noise(struct sd_scheduler *s, int i,
    const float *model_out, float *sample, size_t n, const float *noise,
    struct sd_error *err);
/* The x0 predicted by the last step (n floats), or NULL when the sampler
 * has none (pndm) or no step ran yet.  For dpmpp_2m it is the converted
 * model output. */
const float *sd_scheduler_pred_x0(const struct sd_scheduler *s);

#endif
