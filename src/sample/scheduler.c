/* scheduler.c: diffusers 0.30.3's DDIM, Euler, Euler ancestral, DPM++ 2M
 * (and its SDE variant), LMS, PNDM, Heun, DPM2, DPM2 ancestral, UniPC, DEIS
 * and LCM schedulers, operation for operation.
 *
 * diffusers computes the schedules with numpy in double and rounds them to
 * float32 tensors; the steps are torch float32 tensor operations, each one
 * rounded.  The code below keeps that split: doubles where numpy works,
 * one float operation per torch operation, in the same order.  It must be
 * compiled without floating-point contraction (gcc's default with
 * -std=c11; clang gets the pragma). */
#include "config.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "io/jsonerr.h"
#include "sample/scheduler.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#define MAX_TRAIN_TIMESTEPS 100000
#define LMS_ORDER 4

static float sleef_expf(float d);

enum family {
	FAM_DDIM, FAM_PNDM, FAM_EULER, FAM_EULER_A, FAM_LMS, FAM_DPM,
	FAM_HEUN, FAM_DPM2, FAM_DPM2_A, FAM_UNIPC, FAM_DEIS, FAM_LCM
};

struct sd_scheduler {
	enum sd_sampler sampler;
	enum sd_schedule schedule;
	enum family fam;
	struct sched_config cfg;	/* with the class defaults applied */
	int steps;			/* num_inference_steps asked for */
	int ntrain;
	float *alphas_cumprod;		/* ntrain */
	float *train_sigmas;		/* ntrain, ((1 - ac)/ac)^0.5 */
	float final_alpha_cumprod;	/* DDIM, PNDM */

	int nfull;			/* timesteps of set_timesteps */
	float *timesteps;		/* nfull */
	float *sigmas;			/* nsigmas, k-diffusion families */
	int nsigmas;			/* nfull + 1; Heun 2S, DPM2 (a) 2S + 2 */
	/* DPM2 and DPM2 ancestral, expanded like sigmas (nsigmas each) */
	float *sigmas_interpol, *sigmas_up, *sigmas_down;
	int sde;			/* DPM++ 2M SDE (sde-dpmsolver++) */
	int flow;			/* flow matching: FAM_EULER is
					 * FlowMatchEulerDiscreteScheduler,
					 * FAM_HEUN FlowMatchHeunDiscrete... */
	int nprk;			/* PNDM: PRK calls before the PLMS ones */
	float init_noise_sigma;

	int begin;			/* t_start (set_begin_index) */
	int next;			/* the next call, 0-based after begin */

	/* state and buffers of n floats, allocated at the first step */
	size_t n;
	float *block;			/* one allocation for all of them */
	float *pred_x0, *noise, *tmp;
	float *hist[LMS_ORDER];		/* LMS derivatives, DPM x0, PNDM ets */
	int nhist;			/* entries in hist, newest last */
	float *cur_sample, *cur_model_output;
	float *deriv;			/* Heun: the first call's derivative */
	float heun_dt;			/* Heun: its sigma step */
	int have_cur_sample, have_cur_model_output;
	int lower_order_nums;		/* DPM, UniPC, DEIS */
	int this_order;			/* UniPC: the last predictor's order */
	int counter;			/* PNDM */
	int have_pred_x0;
};

/* ------------------------------------------------------------ configs */

void
sched_config_defaults(struct sched_config *cfg)
{
	memset(cfg, 0, sizeof *cfg);
	cfg->num_train_timesteps = 1000;
	cfg->beta_start = 0.0001;
	cfg->beta_end = 0.02;
	cfg->beta_schedule = SCHED_BETA_LINEAR;
	cfg->prediction_type = SCHED_PRED_EPSILON;
	cfg->steps_offset = 0;
	cfg->timestep_spacing = SCHED_SPACING_DEFAULT;
	cfg->set_alpha_to_one = -1;
	cfg->skip_prk_steps = -1;
	cfg->clip_sample = -1;
	cfg->clip_sample_range = 1.0;
	cfg->sigma_min = 0;
	cfg->sigma_max = 0;
	cfg->shift = 1.0;
}

void
sched_config_sd3(struct sched_config *cfg)
{
	sched_config_defaults(cfg);
	cfg->num_train_timesteps = 1000;
	cfg->prediction_type = SCHED_PRED_FLOW;
	cfg->shift = 3.0;
}

void
sched_config_sd15(struct sched_config *cfg)
{
	sched_config_defaults(cfg);
	cfg->beta_start = 0.00085;
	cfg->beta_end = 0.012;
	cfg->beta_schedule = SCHED_BETA_SCALED_LINEAR;
	cfg->steps_offset = 1;
	cfg->set_alpha_to_one = 0;
	cfg->skip_prk_steps = 1;
	cfg->clip_sample = 0;
}

static int
get_number(json_t *v, double *out)
{
	if (json_is_integer(v))
		*out = (double)json_integer_value(v);
	else if (json_is_real(v))
		*out = json_real_value(v);
	else
		return -1;
	return isfinite(*out) ? 0 : -1;
}

static int
get_bool(json_t *v, int *out)
{
	if (!json_is_boolean(v))
		return -1;
	*out = json_is_true(v);
	return 0;
}

/* A string key that must be one of names (NULL-terminated); its index. */
static int
get_choice(const char *path, const char *key, json_t *v,
    const char *const *names, int *out, struct sd_error *err)
{
	const char *s = json_string_value(v);

	if (s != NULL) {
		for (int i = 0; names[i] != NULL; i++) {
			if (strcmp(s, names[i]) == 0) {
				*out = i;
				return 0;
			}
		}
	}
	char list[256] = "";
	for (int i = 0; names[i] != NULL; i++) {
		strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
		strncat(list, names[i], sizeof list - strlen(list) - 1);
	}
	return sd_fail(err, SD_EDATA, "%s: %s: expected one of %s%s%s%s",
	    path, key, list, s ? " (got \"" : "", s ? s : "", s ? "\")" : "");
}

/* A key whose only value sdbatch supports is `ok` (a string). */
static int
only_string(const char *path, const char *key, json_t *v, const char *ok,
    struct sd_error *err)
{
	const char *s = json_string_value(v);

	if (json_is_null(v) || (s != NULL && strcmp(s, ok) == 0))
		return 0;
	if (s == NULL)
		return sd_fail(err, SD_EDATA, "%s: %s: expected a string", path, key);
	return sd_fail(err, SD_ECONFIG, "%s: %s \"%s\" is not supported "
	    "(only \"%s\")", path, key, s, ok);
}

static int
only_false(const char *path, const char *key, json_t *v, struct sd_error *err)
{
	int b;

	if (json_is_null(v))
		return 0;
	if (get_bool(v, &b) < 0)
		return sd_fail(err, SD_EDATA, "%s: %s: expected true or false", path, key);
	if (b)
		return sd_fail(err, SD_ECONFIG, "%s: %s=true is not supported", path, key);
	return 0;
}

/* A FlowMatch class's key (flow is 1): 1 when key is one, 0 when not,
 * -1 on an error. */
static int
flow_key(const char *path, const char *key, json_t *v, struct sched_config *cfg,
    struct sd_error *err)
{
	double d = 0;

	if (strcmp(key, "shift") == 0) {
		if (get_number(v, &d) < 0 || d <= 0 || d > 1e6)
			return sd_fail(err, SD_EDATA, "%s: %s: expected a positive "
			    "number", path, key);
		cfg->shift = d;
		return 1;
	}
	if (strcmp(key, "use_dynamic_shifting") == 0) {
		int b;

		if (json_is_null(v))
			return 1;
		if (get_bool(v, &b) < 0)
			return sd_fail(err, SD_EDATA, "%s: %s: expected true or false",
			    path, key);
		if (b)
			return sd_fail(err, SD_ECONFIG, "%s: %s=true (a shift that "
			    "depends on the image size, given by the pipeline as mu) is "
			    "not supported; sdbatch applies the fixed shift", path, key);
		return 1;
	}
	/* read by the dynamic shifting only */
	if (strcmp(key, "base_shift") == 0 || strcmp(key, "max_shift") == 0 ||
	    strcmp(key, "base_image_seq_len") == 0 ||
	    strcmp(key, "max_image_seq_len") == 0) {
		if (!json_is_null(v) && get_number(v, &d) < 0)
			return sd_fail(err, SD_EDATA, "%s: %s: expected a number",
			    path, key);
		return 1;
	}
	/* later diffusers releases' options, each with the one value that
	 * means what sdbatch does */
	if (strcmp(key, "invert_sigmas") == 0 || strcmp(key, "use_karras_sigmas") == 0 ||
	    strcmp(key, "use_exponential_sigmas") == 0 ||
	    strcmp(key, "use_beta_sigmas") == 0 ||
	    strcmp(key, "stochastic_sampling") == 0)
		return only_false(path, key, v, err) < 0 ? -1 : 1;
	if (strcmp(key, "shift_terminal") == 0) {
		if (!json_is_null(v))
			return sd_fail(err, SD_ECONFIG, "%s: %s is not supported "
			    "(only null)", path, key);
		return 1;
	}
	if (strcmp(key, "time_shift_type") == 0)
		return only_string(path, key, v, "exponential", err) < 0 ? -1 : 1;
	return 0;
}

int
sched_config_load(const char *path, struct sched_config *cfg,
    struct sd_error *err)
{
	static const char *const schedules[] = {
		"linear", "scaled_linear", "squaredcos_cap_v2", NULL};
	static const char *const predictions[] = {
		"epsilon", "v_prediction", "sample", NULL};
	static const char *const spacings[] = {
		"leading", "linspace", "trailing", NULL};
	json_error_t jerr;
	json_t *root, *v;
	const char *key;
	double d = 0;
	int choice, flow = 0;

	sched_config_defaults(cfg);
	if (access(path, R_OK) < 0)
		return sd_fail(err, errno == ENOENT || errno == ENOTDIR ?
		    SD_ENOINPUT : SD_EIO, "%s: %s", path, strerror(errno));
	root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL)
		return sd_fail(err, SD_EDATA, "%s:%d: %s", path, jerr.line,
		    sd_json_error_kind(&jerr));
	if (!json_is_object(root)) {
		json_decref(root);
		return sd_fail(err, SD_EDATA, "%s: not a JSON object", path);
	}
	/* the flow-matching classes: their own keys, no betas */
	v = json_object_get(root, "_class_name");
	if (json_is_string(v) && strncmp(json_string_value(v), "FlowMatch", 9) == 0) {
		const char *cls = json_string_value(v);

		if (strcmp(cls, "FlowMatchEulerDiscreteScheduler") != 0 &&
		    strcmp(cls, "FlowMatchHeunDiscreteScheduler") != 0) {
			sd_fail(err, SD_ECONFIG, "%s: _class_name \"%.60s\" is not "
			    "supported (flow matching: FlowMatchEulerDiscreteScheduler "
			    "or FlowMatchHeunDiscreteScheduler)", path, cls);
			json_decref(root);
			return -1;
		}
		flow = 1;
	}
	json_object_foreach(root, key, v) {
		int rc = 0, b;

		if (flow) {
			/* num_train_timesteps is read below; other classes'
			 * keys (betas, prediction_type) mean nothing here */
			rc = flow_key(path, key, v, cfg, err);
			if (rc < 0) {
				json_decref(root);
				return -1;
			}
			if (rc == 1 || strcmp(key, "num_train_timesteps") != 0)
				continue;
			rc = 0;
		}
		if (strcmp(key, "num_train_timesteps") == 0) {
			if (!json_is_integer(v) || json_integer_value(v) < 2 ||
			    json_integer_value(v) > MAX_TRAIN_TIMESTEPS)
				rc = sd_fail(err, SD_EDATA, "%s: %s: expected an integer "
				    "from 2 to %d", path, key, MAX_TRAIN_TIMESTEPS);
			else
				cfg->num_train_timesteps = (int)json_integer_value(v);
		} else if (strcmp(key, "beta_start") == 0 ||
		    strcmp(key, "beta_end") == 0) {
			if (get_number(v, &d) < 0 || d <= 0 || d >= 1)
				rc = sd_fail(err, SD_EDATA, "%s: %s: expected a number "
				    "between 0 and 1", path, key);
			else if (key[5] == 's')
				cfg->beta_start = d;
			else
				cfg->beta_end = d;
		} else if (strcmp(key, "beta_schedule") == 0) {
			rc = get_choice(path, key, v, schedules, &choice, err);
			cfg->beta_schedule = (enum sched_beta_schedule)choice;
		} else if (strcmp(key, "prediction_type") == 0) {
			rc = get_choice(path, key, v, predictions, &choice, err);
			cfg->prediction_type = (enum sched_prediction)choice;
		} else if (strcmp(key, "timestep_spacing") == 0) {
			rc = get_choice(path, key, v, spacings, &choice, err);
			cfg->timestep_spacing = (enum sched_spacing)(choice + 1);
		} else if (strcmp(key, "steps_offset") == 0) {
			if (!json_is_integer(v) || json_integer_value(v) < 0 ||
			    json_integer_value(v) > MAX_TRAIN_TIMESTEPS)
				rc = sd_fail(err, SD_EDATA, "%s: %s: expected a "
				    "non-negative integer", path, key);
			else
				cfg->steps_offset = (int)json_integer_value(v);
		} else if (strcmp(key, "set_alpha_to_one") == 0 ||
		    strcmp(key, "skip_prk_steps") == 0 ||
		    strcmp(key, "clip_sample") == 0) {
			if (get_bool(v, &b) < 0)
				rc = sd_fail(err, SD_EDATA, "%s: %s: expected true or "
				    "false", path, key);
			else if (key[0] == 's' && key[1] == 'e')
				cfg->set_alpha_to_one = b;
			else if (key[0] == 's')
				cfg->skip_prk_steps = b;
			else
				cfg->clip_sample = b;
		} else if (strcmp(key, "clip_sample_range") == 0) {
			if (get_number(v, &d) < 0 || d <= 0)
				rc = sd_fail(err, SD_EDATA, "%s: %s: expected a positive "
				    "number", path, key);
			else
				cfg->clip_sample_range = d;
		} else if (strcmp(key, "sigma_min") == 0 ||
		    strcmp(key, "sigma_max") == 0) {
			if (json_is_null(v))
				d = 0;
			else if (get_number(v, &d) < 0 || d <= 0)
				rc = sd_fail(err, SD_EDATA, "%s: %s: expected a positive "
				    "number or null", path, key);
			if (rc == 0 && key[7] == 'i')
				cfg->sigma_min = d;
			else if (rc == 0)
				cfg->sigma_max = d;
		} else if (strcmp(key, "trained_betas") == 0) {
			if (!json_is_null(v))
				rc = sd_fail(err, SD_ECONFIG, "%s: %s (an explicit "
				    "beta list) is not supported", path, key);
		} else if (strcmp(key, "thresholding") == 0 ||
		    strcmp(key, "rescale_betas_zero_snr") == 0) {
			rc = only_false(path, key, v, err);
		} else if (strcmp(key, "timestep_type") == 0) {
			rc = only_string(path, key, v, "discrete", err);
		} else if (strcmp(key, "interpolation_type") == 0) {
			rc = only_string(path, key, v, "linear", err);
		} else if (strcmp(key, "final_sigmas_type") == 0) {
			rc = only_string(path, key, v, "zero", err);
		}
		/* anything else (_class_name, solver_order, use_karras_sigmas,
		 * ...) is another class's key or set by the sampler itself */
		if (rc < 0) {
			json_decref(root);
			return -1;
		}
	}
	json_decref(root);
	if (flow)
		cfg->prediction_type = SCHED_PRED_FLOW;
	return 0;
}

/* --------------------------------------------------- training schedule */

/* torch.linspace(start, end, n, dtype=float32) on an AVX2 CPU: pairs of
 * 8-float vectors from base = fmaf(step, idx, start) (or from the end past
 * halfway), then the last n % 16 elements by the scalar expression. */
static float
linspace_base(float start, float end, float step, int n, int idx)
{
	if (idx < n / 2)
		return fmaf(step, (float)idx, start);
	return fmaf(-step, (float)(n - idx - 1), end);
}

static void
torch_linspace_f32(float start, float end, int n, float *out)
{
	float step;
	int i = 0;

	if (n == 1) {
		out[0] = start;
		return;
	}
	step = (end - start) / (float)(n - 1);
	for (; i + 16 <= n; i += 16) {
		for (int v = 0; v < 16; v += 8) {
			float base = linspace_base(start, end, step, n, i + v);

			for (int j = 0; j < 8; j++)
				out[i + v + j] = base + (float)j * step;
		}
	}
	for (; i < n; i++)
		out[i] = i < n / 2 ? start + step * (float)i :
		    end - step * (float)(n - i - 1);
}

static double
alpha_bar_cosine(double t)
{
	double c = cos((t + 0.008) / 1.008 * M_PI / 2);

	return c * c;
}

int
sched_train_schedule(const struct sched_config *cfg, float *betas,
    float *alphas_cumprod, float *sigmas, struct sd_error *err)
{
	int n = cfg->num_train_timesteps;
	float *b;
	double prod = 1.0;

	if (n < 2 || n > MAX_TRAIN_TIMESTEPS)
		return sd_fail(err, SD_ECONFIG, "num_train_timesteps %d out of range", n);
	b = betas != NULL ? betas : malloc((size_t)n * sizeof *b);
	if (b == NULL)
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	switch (cfg->beta_schedule) {
	case SCHED_BETA_LINEAR:
		torch_linspace_f32((float)cfg->beta_start, (float)cfg->beta_end, n, b);
		break;
	case SCHED_BETA_SCALED_LINEAR:
		torch_linspace_f32((float)sqrt(cfg->beta_start),
		    (float)sqrt(cfg->beta_end), n, b);
		for (int i = 0; i < n; i++)
			b[i] = b[i] * b[i];
		break;
	case SCHED_BETA_SQUAREDCOS_CAP_V2:
		for (int i = 0; i < n; i++) {
			double t1 = (double)i / n, t2 = (double)(i + 1) / n;
			double beta = 1 - alpha_bar_cosine(t2) / alpha_bar_cosine(t1);
			b[i] = (float)(beta < 0.999 ? beta : 0.999);
		}
		break;
	default:
		if (b != betas)
			free(b);
		return sd_fail(err, SD_ECONFIG, "unknown beta_schedule");
	}
	for (int i = 0; i < n; i++) {
		float ac;

		/* torch's CPU cumprod accumulates in double */
		prod *= (double)(1.0f - b[i]);
		ac = (float)prod;
		if (alphas_cumprod != NULL)
			alphas_cumprod[i] = ac;
		if (sigmas != NULL)
			sigmas[i] = sqrtf((1.0f - ac) / ac);
	}
	if (b != betas)
		free(b);
	return 0;
}

/* ------------------------------------------------------ numpy helpers */

/* np.linspace(start, stop, num) in double. */
static void
np_linspace(double start, double stop, int num, double *out)
{
	double step;

	if (num == 1) {
		out[0] = start;
		return;
	}
	step = (stop - start) / (num - 1);
	for (int i = 0; i < num; i++)
		out[i] = (double)i * step + start;
	out[num - 1] = stop;
}

/* np.arange(start, stop, step) for a negative step: the length is
 * ceil((stop - start)/step), the values start + i*delta with delta =
 * (start + step) - start as numpy's fill computes it.  Returns the count
 * (at most max). */
static int
np_arange_down(double start, double stop, double step, double *out, int max)
{
	double len = ceil((stop - start) / step), delta;
	int n;

	if (!(len > 0))
		return 0;
	n = len > max ? max + 1 : (int)len;
	if (n > max)
		return n;
	delta = (start + step) - start;
	out[0] = start;
	for (int i = 1; i < n; i++)
		out[i] = start + (double)i * delta;
	if (n > 1)
		out[1] = start + step;
	return n;
}

/* np.interp(x, arange(n), fp) */
static double
np_interp(double x, const float *fp, int n)
{
	int j;

	if (isnan(x))
		return x;
	if (x <= 0)
		return fp[0];
	if (x >= n - 1)
		return fp[n - 1];
	j = (int)floor(x);
	if ((double)j == x)
		return fp[j];
	return ((double)fp[j + 1] - (double)fp[j]) / 1.0 * (x - j) + (double)fp[j];
}

/* Karras et al. (2022) noise levels, rho 7, from sigma_max down to
 * sigma_min (_convert_to_karras). */
static void
karras_sigmas(double sigma_min, double sigma_max, int steps, double *out)
{
	const double rho = 7.0;
	double min_inv_rho = pow(sigma_min, 1 / rho);
	double max_inv_rho = pow(sigma_max, 1 / rho);

	np_linspace(0, 1, steps, out);
	for (int i = 0; i < steps; i++)
		out[i] = pow(max_inv_rho + out[i] * (min_inv_rho - max_inv_rho), rho);
}

/* _sigma_to_t: the fractional training timestep of a sigma (a numpy
 * float64), interpolating log sigmas (float32, as numpy 1.x computes with a
 * float32 array; the weights' products with the int64 indices in
 * double). */
static double
sigma_to_t(double sigma, const float *log_sigmas, int n)
{
	float log_sigma = (float)log(sigma > 1e-10 ? sigma : 1e-10);
	int low_idx = 0, high_idx;
	float low, high, w;

	for (int i = 0; i < n; i++)
		if (log_sigma - log_sigmas[i] >= 0)
			low_idx = i;
	if (low_idx > n - 2)
		low_idx = n - 2;
	high_idx = low_idx + 1;
	low = log_sigmas[low_idx];
	high = log_sigmas[high_idx];
	w = (low - log_sigma) / (low - high);
	if (w < 0)
		w = 0;
	if (w > 1)
		w = 1;
	return (double)(1.0f - w) * low_idx + (double)w * high_idx;
}

/* The same for a sigma that is a float32 torch scalar (DPM2's
 * interpolated sigmas): torch keeps the arithmetic after the log float32,
 * the products with the indices too. */
static float
sigma_to_t_f32(float sigma, const float *log_sigmas, int n)
{
	float log_sigma = (float)log((double)sigma > 1e-10 ? (double)sigma : 1e-10);
	int low_idx = 0, high_idx;
	float low, high, w;

	if (isnan(sigma))
		return sigma;
	for (int i = 0; i < n; i++)
		if (log_sigma - log_sigmas[i] >= 0)
			low_idx = i;
	if (low_idx > n - 2)
		low_idx = n - 2;
	high_idx = low_idx + 1;
	low = log_sigmas[low_idx];
	high = log_sigmas[high_idx];
	w = (low - log_sigma) / (low - high);
	if (w < 0)
		w = 0;
	if (w > 1)
		w = 1;
	return (1.0f - w) * (float)low_idx + w * (float)high_idx;
}

/* np.log of a float32 array on x86-64 (numpy >= 1.18, AVX2+FMA3 or
 * AVX512F): a rational approximation of log(1 + x) on the mantissa, not
 * the correctly rounded logf; the interpolated timesteps of the Karras and
 * DPM2 schedules depend on its last bit.  Positive normal x only (the
 * others take logf's value, which is the same special value). */
static float
np_logf(float x)
{
	uint32_t bits;
	float e, m, num, den;

	if (!(x >= FLT_MIN) || isinf(x))
		return logf(x);
	memcpy(&bits, &x, sizeof bits);
	e = (float)((int32_t)(bits >> 23) - 0x7e);
	bits = (bits & 0x7fffffu) | (126u << 23);
	memcpy(&m, &bits, sizeof m);
	if (m <= 0.707106781186547524400844362104849039f) {
		m = m + m;
		e = e - 1.0f;
	}
	m = m - 1.0f;
	num = fmaf(2.589979117907922693523e-02f, m, 3.808837741388407920751e-01f);
	num = fmaf(num, m, 1.480000633576506585156e+00f);
	num = fmaf(num, m, 2.112677543073053063722e+00f);
	num = fmaf(num, m, 9.999999999999998702752e-01f);
	num = fmaf(num, m, 0.0f);
	den = fmaf(5.875095403124574342950e-03f, m, 1.546476374983906719538e-01f);
	den = fmaf(den, m, 9.864942958519418960339e-01f);
	den = fmaf(den, m, 2.453006071784736363091e+00f);
	den = fmaf(den, m, 2.612677543073109236779e+00f);
	den = fmaf(den, m, 1.0f);
	return fmaf(e, 0.693147180559945309417232121458176568f, num / den);
}

/* log of the training sigmas (float32, np.log of a float32 array). */
static float *
make_log_sigmas(const struct sd_scheduler *s, struct sd_error *err)
{
	float *ls = malloc((size_t)s->ntrain * sizeof *ls);

	if (ls == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		return NULL;
	}
	for (int i = 0; i < s->ntrain; i++)
		ls[i] = np_logf(s->train_sigmas[i]);
	return ls;
}

/* ------------------------------------------------------- set_timesteps */

static int
fail_steps(struct sd_error *err, int steps, int n)
{
	int rc = sd_fail(err, SD_EDATA, "steps: %d is out of range (1 to %d)",
	    steps, n);

	if (err != NULL)
		snprintf(err->field, sizeof err->field, "steps");
	return rc;
}

/* Integer timesteps of DDIM and PNDM (`_timesteps` ascending for PNDM,
 * descending for DDIM): count written to *count. */
static int
integer_timesteps(const struct sd_scheduler *s, enum sched_spacing spacing,
    int ascending, double *t, int *count, struct sd_error *err)
{
	int S = s->steps, N = s->ntrain, k;

	switch (spacing) {
	case SCHED_SPACING_LINSPACE:
		np_linspace(0, N - 1, S, t);
		for (int i = 0; i < S; i++)
			t[i] = rint(t[i]);
		k = S;
		if (!ascending)
			goto reverse;
		break;
	case SCHED_SPACING_LEADING: {
		int ratio = N / S;

		for (int i = 0; i < S; i++)
			t[i] = (double)i * ratio + s->cfg.steps_offset;
		k = S;
		if (!ascending)
			goto reverse;
		break;
	}
	case SCHED_SPACING_TRAILING:
		k = np_arange_down(N, 0, -((double)N / S), t, S);
		if (k != S)
			return sd_fail(err, SD_EDATA, "steps: %d steps with "
			    "timestep_spacing trailing give %d timesteps", S, k);
		for (int i = 0; i < k; i++)
			t[i] = rint(t[i]) - 1;
		if (ascending)
			goto reverse;
		break;
	default:
		return sd_fail(err, SD_EINTERNAL, "unknown timestep spacing");
	}
	*count = k;
	return 0;
reverse:
	for (int i = 0; i < k / 2; i++) {
		double x = t[i];
		t[i] = t[k - 1 - i];
		t[k - 1 - i] = x;
	}
	*count = k;
	return 0;
}

static int
check_train_index(double t, int n, struct sd_error *err)
{
	if (!(t >= 0 && t <= n - 1))
		return sd_fail(err, SD_EDATA, "steps: timestep %g is outside "
		    "the training schedule (0 to %d)", t, n - 1);
	return 0;
}

static int
set_timesteps_ddim(struct sd_scheduler *s, double *t, struct sd_error *err)
{
	int k;

	if (integer_timesteps(s, s->cfg.timestep_spacing, 0, t, &k, err) < 0)
		return -1;
	for (int i = 0; i < k; i++) {
		if (check_train_index(t[i], s->ntrain, err) < 0)
			return -1;
		s->timesteps[i] = (float)t[i];
	}
	s->nfull = k;
	s->init_noise_sigma = 1.0f;
	return 0;
}

static int
set_timesteps_pndm(struct sd_scheduler *s, double *t, struct sd_error *err)
{
	int k, n = 0, S = s->steps;

	if (integer_timesteps(s, s->cfg.timestep_spacing, 1, t, &k, err) < 0)
		return -1;
	if (s->cfg.skip_prk_steps) {
		/* PLMS: _timesteps[:-1], _timesteps[-2:-1], _timesteps[-1:],
		 * reversed: the second-to-last timestep comes twice */
		s->timesteps[n++] = (float)t[k - 1];
		if (k >= 2)
			s->timesteps[n++] = (float)t[k - 2];
		for (int i = k - 2; i >= 0; i--)
			s->timesteps[n++] = (float)t[i];
		s->nprk = 0;
	} else {
		/* PRK warm-up: 4 Runge-Kutta steps (12 calls) over the last
		 * pndm_order timesteps, then PLMS on the rest */
		int half = s->ntrain / S / 2;
		double prk[16], rep[16];
		int m = 0;

		if (k < 4)
			return sd_fail(err, SD_EDATA, "steps: PNDM with PRK steps "
			    "(skip_prk_steps false) needs 4 steps or more");
		for (int i = k - 4; i < k; i++) {
			prk[m++] = t[i];
			prk[m++] = t[i] + half;
		}
		/* prk[:-1].repeat(2)[1:-1], reversed */
		m = 0;
		for (int i = 0; i < 7; i++) {
			rep[m++] = prk[i];
			rep[m++] = prk[i];
		}
		for (int i = m - 2; i >= 1; i--)
			s->timesteps[n++] = (float)rep[i];
		s->nprk = n;
		for (int i = k - 4; i >= 0; i--)
			s->timesteps[n++] = (float)t[i];
	}
	for (int i = 0; i < n; i++)
		if (check_train_index(s->timesteps[i], s->ntrain, err) < 0)
			return -1;
	s->nfull = n;
	s->init_noise_sigma = 1.0f;
	return 0;
}

/* Euler, Euler ancestral and LMS: float32 timesteps, interpolated sigmas
 * (or Karras ones) and a final zero. */
static int
set_timesteps_euler(struct sd_scheduler *s, double *t, struct sd_error *err)
{
	int S = s->steps, N = s->ntrain, k = S;
	double *sig = t + S + 1;
	float smax;

	switch (s->cfg.timestep_spacing) {
	case SCHED_SPACING_LINSPACE:
		np_linspace(0, N - 1, S, t);
		for (int i = 0; i < S; i++)
			s->timesteps[i] = (float)t[S - 1 - i];
		break;
	case SCHED_SPACING_LEADING: {
		int ratio = N / S;

		for (int i = 0; i < S; i++)
			s->timesteps[i] = (float)((double)(S - 1 - i) * ratio) +
			    (float)s->cfg.steps_offset;
		break;
	}
	case SCHED_SPACING_TRAILING:
		k = np_arange_down(N, 0, -((double)N / S), t, S);
		if (k != S)
			return sd_fail(err, SD_EDATA, "steps: %d steps with "
			    "timestep_spacing trailing give %d timesteps", S, k);
		for (int i = 0; i < S; i++)
			s->timesteps[i] = (float)rint(t[i]) - 1.0f;
		break;
	default:
		return sd_fail(err, SD_EINTERNAL, "unknown timestep spacing");
	}
	for (int i = 0; i < S; i++)
		sig[i] = np_interp((double)s->timesteps[i], s->train_sigmas, N);
	if (s->schedule == SD_SCHEDULE_KARRAS) {
		double lo = sig[S - 1], hi = sig[0];
		float *log_sigmas = malloc((size_t)N * sizeof *log_sigmas);

		if (log_sigmas == NULL)
			return sd_fail(err, SD_EINTERNAL, "out of memory");
		/* only the Euler classes have sigma_min/sigma_max keys */
		int euler = s->fam == FAM_EULER || s->fam == FAM_EULER_A;

		if (euler && s->cfg.sigma_min > 0)
			lo = s->cfg.sigma_min;
		if (euler && s->cfg.sigma_max > 0)
			hi = s->cfg.sigma_max;
		for (int i = 0; i < N; i++)
			log_sigmas[i] = np_logf(s->train_sigmas[i]);
		karras_sigmas(lo, hi, S, sig);
		for (int i = 0; i < S; i++) {
			double ts = sigma_to_t(sig[i], log_sigmas, N);

			/* KDPM2 rounds them, the others keep them fractional */
			if (s->fam == FAM_DPM2 || s->fam == FAM_DPM2_A)
				ts = rint(ts);
			s->timesteps[i] = (float)ts;
		}
		free(log_sigmas);
	}
	smax = 0;
	for (int i = 0; i < S; i++) {
		s->sigmas[i] = (float)sig[i];
		if (s->sigmas[i] > smax)
			smax = s->sigmas[i];
	}
	s->sigmas[S] = 0.0f;
	s->nfull = S;
	s->nsigmas = S + 1;
	/* init_noise_sigma: the max sigma for linspace and trailing spacing,
	 * else (max^2 + 1)^0.5 */
	if (s->cfg.timestep_spacing == SCHED_SPACING_LEADING)
		s->init_noise_sigma = sqrtf(smax * smax + 1.0f);
	else
		s->init_noise_sigma = smax;
	return 0;
}

static int
set_timesteps_dpm(struct sd_scheduler *s, double *t, struct sd_error *err)
{
	int S = s->steps, N = s->ntrain, k = S;
	double *sig = t + S + 2;

	switch (s->cfg.timestep_spacing) {
	case SCHED_SPACING_LINSPACE:
		/* linspace(0, last - 1, S + 1).round()[::-1][:-1] */
		np_linspace(0, N - 1, S + 1, t);
		for (int i = 0; i < S; i++)
			s->timesteps[i] = (float)rint(t[S - i]);
		break;
	case SCHED_SPACING_LEADING: {
		int ratio = N / (S + 1);

		for (int i = 0; i < S; i++)
			s->timesteps[i] = (float)((double)(S - i) * ratio +
			    s->cfg.steps_offset);
		break;
	}
	case SCHED_SPACING_TRAILING:
		k = np_arange_down(N, 0, -((double)N / S), t, S);
		if (k != S)
			return sd_fail(err, SD_EDATA, "steps: %d steps with "
			    "timestep_spacing trailing give %d timesteps", S, k);
		for (int i = 0; i < S; i++)
			s->timesteps[i] = (float)(rint(t[i]) - 1);
		break;
	default:
		return sd_fail(err, SD_EINTERNAL, "unknown timestep spacing");
	}
	for (int i = 0; i < S; i++)
		if (check_train_index(s->timesteps[i], N, err) < 0)
			return -1;
	if (s->schedule == SD_SCHEDULE_KARRAS) {
		float *log_sigmas = malloc((size_t)N * sizeof *log_sigmas);

		if (log_sigmas == NULL)
			return sd_fail(err, SD_EINTERNAL, "out of memory");
		for (int i = 0; i < N; i++)
			log_sigmas[i] = np_logf(s->train_sigmas[i]);
		karras_sigmas(s->train_sigmas[0], s->train_sigmas[N - 1], S, sig);
		for (int i = 0; i < S; i++)
			s->timesteps[i] = (float)rint(sigma_to_t(sig[i], log_sigmas, N));
		free(log_sigmas);
	} else {
		for (int i = 0; i < S; i++)
			sig[i] = np_interp((double)s->timesteps[i], s->train_sigmas, N);
	}
	for (int i = 0; i < S; i++)
		s->sigmas[i] = (float)sig[i];
	s->sigmas[S] = 0.0f;		/* final_sigmas_type "zero" */
	if (s->fam == FAM_DEIS) {
		/* DEIS ends at sigma_min (the last Karras sigma with karras) */
		s->sigmas[S] = s->schedule == SD_SCHEDULE_KARRAS ?
		    (float)sig[S - 1] : s->train_sigmas[0];
	}
	s->nfull = S;
	s->nsigmas = S + 1;
	s->init_noise_sigma = 1.0f;
	return 0;
}

/* The flow-matching shift s' = shift*s / (1 + (shift - 1)*s) of a float32
 * tensor as torch computes it (float32 operations, the Python float
 * scalars taken as float32). */
static float
flow_shift_f32(float shift, float s)
{
	return shift * s / (1.0f + (shift - 1.0f) * s);
}

/* FlowMatchEulerDiscreteScheduler (and Heun's): the training sigmas are
 * linspace(1, N, N)[::-1] / N shifted in float32; set_timesteps(S) takes
 * np.linspace(sigma_max*N, sigma_min*N, S) / N in float64, shifts it
 * again in float64, casts it to float32, timesteps = sigmas * N (float32),
 * and appends a final sigma 0. */
static int
set_timesteps_flow(struct sd_scheduler *s, double *t, struct sd_error *err)
{
	int S = s->steps, N = s->ntrain;
	double shift = s->cfg.shift, sigma_min, sigma_max;
	float fshift = (float)shift;

	if (!(shift > 0) || !isfinite(shift))
		return sd_fail(err, SD_ECONFIG, "shift %g: expected a positive "
		    "number", shift);
	for (int i = 0; i < N; i++)
		s->train_sigmas[i] = flow_shift_f32(fshift, (float)(N - i) / (float)N);
	sigma_max = s->train_sigmas[0];
	sigma_min = s->train_sigmas[N - 1];
	np_linspace(sigma_max * N, sigma_min * N, S, t);
	for (int i = 0; i < S; i++) {
		double x = t[i] / N;

		s->sigmas[i] = (float)(shift * x / (1 + (shift - 1) * x));
		s->timesteps[i] = s->sigmas[i] * (float)N;
	}
	s->sigmas[S] = 0.0f;
	s->nfull = S;
	s->nsigmas = S + 1;
	s->init_noise_sigma = 1.0f;
	return 0;
}

/* torch.lerp(a, b, 0.5) of float32 values (the weight >= 0.5 branch). */
static float
lerp_half(float a, float b)
{
	return b - (b - a) * 0.5f;
}

/* torch.cat([x[:1], x[1:].repeat_interleave(2), x[-1:]]) of n values (or
 * of x[1:-1] when keep_last is 0, as Heun does): the count written. */
static int
expand2(const float *x, int n, int interleave_last, float *out)
{
	int m = 0;

	out[m++] = x[0];
	for (int j = 1; j < (interleave_last ? n : n - 1); j++) {
		out[m++] = x[j];
		out[m++] = x[j];
	}
	out[m++] = x[n - 1];
	return m;
}

/* Heun, DPM2 and DPM2 ancestral: the Euler schedule of S steps, then each
 * step's second model call interleaved (2S - 1 calls). */
static int
expand_second_order(struct sd_scheduler *s, struct sd_error *err)
{
	int S = s->nfull, N = s->ntrain, n;
	size_t sz = (size_t)S + 1;
	float *t = malloc(sz * sizeof *t), *b = malloc(sz * sizeof *b);
	float *ip = calloc(sz, sizeof *ip), *up = calloc(sz, sizeof *up);
	float *down = calloc(sz, sizeof *down), *ls = NULL;
	int rc = -1;

	if (t == NULL || b == NULL || ip == NULL || up == NULL || down == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		goto out;
	}
	memcpy(t, s->timesteps, (size_t)S * sizeof *t);
	memcpy(b, s->sigmas, sz * sizeof *b);
	if (s->fam == FAM_HEUN) {
		n = 0;
		s->timesteps[n++] = t[0];
		for (int j = 1; j < S; j++) {
			s->timesteps[n++] = t[j];
			s->timesteps[n++] = t[j];
		}
		s->nfull = n;
		s->nsigmas = expand2(b, S + 1, 0, s->sigmas);
		rc = 0;
		goto out;
	}
	if ((ls = make_log_sigmas(s, err)) == NULL)
		goto out;
	if (s->fam == FAM_DPM2) {
		/* sigmas.log().lerp(sigmas.roll(1).log(), 0.5).exp() */
		for (int j = 0; j <= S; j++)
			ip[j] = sleef_expf(lerp_half(logf(b[j]), logf(b[j > 0 ? j - 1 : S])));
	} else {
		for (int j = 0; j <= S; j++) {
			float nx = j < S ? b[j + 1] : 0.0f;
			float nx2 = nx * nx, b2 = b[j] * b[j];

			up[j] = sqrtf(nx2 * (b2 - nx2) / b2);
			down[j] = j < S ? sqrtf(nx2 - up[j] * up[j]) : 0.0f;
		}
		for (int j = 0; j <= S; j++)
			ip[j] = sleef_expf(lerp_half(logf(b[j]), logf(down[j])));
		ip[S] = 0.0f;
		if (S >= 1)
			ip[S - 1] = 0.0f;
	}
	s->nsigmas = expand2(b, S + 1, 1, s->sigmas);
	expand2(ip, S + 1, 1, s->sigmas_interpol);
	if (s->fam == FAM_DPM2_A) {
		expand2(up, S + 1, 1, s->sigmas_up);
		expand2(down, S + 1, 1, s->sigmas_down);
	}
	/* [t0, ti, t1, ti, t2, ...]: DPM2 takes the midpoint timesteps of
	 * sigmas_interpol[1:-1], DPM2 a those of [:-2] */
	n = 0;
	s->timesteps[n++] = t[0];
	for (int j = 1; j < S; j++) {
		int q = s->fam == FAM_DPM2 ? j : j - 1;

		s->timesteps[n++] = sigma_to_t_f32(ip[q], ls, N);
		s->timesteps[n++] = t[j];
	}
	s->nfull = n;
	rc = 0;
out:
	free(t);
	free(b);
	free(ip);
	free(up);
	free(down);
	free(ls);
	return rc;
}

/* LCM: the steps picked from the 50-step distillation schedule
 * (original_inference_steps 50, strength 1). */
static int
set_timesteps_lcm(struct sd_scheduler *s, struct sd_error *err)
{
	const int orig = 50;
	int S = s->steps, N = s->ntrain, k;

	if (N < orig)
		return sd_fail(err, SD_ECONFIG, "LCM needs num_train_timesteps "
		    "of %d or more (got %d)", orig, N);
	if (S > orig) {
		sd_fail(err, SD_EDATA, "steps: LCM runs at most %d steps (its "
		    "distillation schedule has %d; got %d)", orig, orig, S);
		if (err != NULL)
			snprintf(err->field, sizeof err->field, "steps");
		return -1;
	}
	k = N / orig;
	for (int i = 0; i < S; i++) {
		/* np.floor(np.linspace(0, 50, S, endpoint=False)) */
		int idx = (int)floor((double)i * ((double)orig / S));

		/* origin[::-1][idx], origin = arange(1, 51) * k - 1 */
		s->timesteps[i] = (float)((orig - idx) * k - 1);
	}
	s->nfull = S;
	s->nsigmas = 0;
	s->init_noise_sigma = 1.0f;
	return 0;
}

static const char *
family_class(enum family fam, int flow)
{
	if (flow)
		return fam == FAM_HEUN ? "FlowMatchHeunDiscreteScheduler" :
		    "FlowMatchEulerDiscreteScheduler";
	switch (fam) {
	case FAM_DDIM:
		return "DDIMScheduler";
	case FAM_PNDM:
		return "PNDMScheduler";
	case FAM_EULER:
		return "EulerDiscreteScheduler";
	case FAM_EULER_A:
		return "EulerAncestralDiscreteScheduler";
	case FAM_LMS:
		return "LMSDiscreteScheduler";
	case FAM_HEUN:
		return "HeunDiscreteScheduler";
	case FAM_DPM2:
		return "KDPM2DiscreteScheduler";
	case FAM_DPM2_A:
		return "KDPM2AncestralDiscreteScheduler";
	case FAM_UNIPC:
		return "UniPCMultistepScheduler";
	case FAM_DEIS:
		return "DEISMultistepScheduler";
	case FAM_LCM:
		return "LCMScheduler";
	default:
		return "DPMSolverMultistepScheduler";
	}
}

struct sd_scheduler *
sd_scheduler_new(enum sd_sampler sampler, enum sd_schedule schedule,
    const struct sched_config *cfg, int steps, struct sd_error *err)
{
	struct sd_scheduler *s;
	double *work = NULL;
	int rc, N = cfg->num_train_timesteps;

	if (N < 2 || N > MAX_TRAIN_TIMESTEPS) {
		sd_fail(err, SD_ECONFIG, "num_train_timesteps %d out of range", N);
		return NULL;
	}
	if (steps < 1 || steps > N) {
		fail_steps(err, steps, N);
		return NULL;
	}
	if (schedule != SD_SCHEDULE_NORMAL && schedule != SD_SCHEDULE_KARRAS) {
		sd_fail(err, SD_EDATA, "schedule: unknown schedule");
		return NULL;
	}
	s = calloc(1, sizeof *s);
	if (s == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		return NULL;
	}
	s->sampler = sampler;
	s->schedule = schedule;
	s->cfg = *cfg;
	s->steps = steps;
	s->ntrain = N;
	switch (sampler) {
	case SD_SAMPLER_DDIM:
		s->fam = FAM_DDIM;
		break;
	case SD_SAMPLER_PNDM:
		s->fam = FAM_PNDM;
		break;
	case SD_SAMPLER_EULER:
		s->fam = FAM_EULER;
		break;
	case SD_SAMPLER_EULER_A:
		s->fam = FAM_EULER_A;
		break;
	case SD_SAMPLER_LMS:
		s->fam = FAM_LMS;
		break;
	case SD_SAMPLER_DPMPP_2M:
		s->fam = FAM_DPM;
		break;
	case SD_SAMPLER_DPMPP_2M_SDE:
		s->fam = FAM_DPM;
		s->sde = 1;
		break;
	case SD_SAMPLER_HEUN:
		s->fam = FAM_HEUN;
		break;
	case SD_SAMPLER_DPM2:
		s->fam = FAM_DPM2;
		break;
	case SD_SAMPLER_DPM2_A:
		s->fam = FAM_DPM2_A;
		break;
	case SD_SAMPLER_UNIPC:
		s->fam = FAM_UNIPC;
		break;
	case SD_SAMPLER_DEIS:
		s->fam = FAM_DEIS;
		break;
	case SD_SAMPLER_LCM:
		s->fam = FAM_LCM;
		break;
	default:
		sd_fail(err, SD_EDATA, "sampler: unknown sampler");
		goto fail;
	}
	if (cfg->prediction_type == SCHED_PRED_FLOW) {
		/* diffusers 0.30.3 has FlowMatchEuler and FlowMatchHeun only,
		 * neither with Karras sigmas */
		s->flow = 1;
		if (s->fam != FAM_EULER && s->fam != FAM_HEUN) {
			sd_fail(err, SD_EDATA, "sampler: %s cannot sample a "
			    "flow-matching model (SD3): diffusers has no flow-matching "
			    "%s; flow models take euler "
			    "(FlowMatchEulerDiscreteScheduler) or heun "
			    "(FlowMatchHeunDiscreteScheduler)",
			    sd_sampler_name(sampler), family_class(s->fam, 0));
			if (err != NULL)
				snprintf(err->field, sizeof err->field, "sampler");
			goto fail;
		}
		if (schedule == SD_SCHEDULE_KARRAS) {
			sd_fail(err, SD_EDATA, "schedule: karras is not available "
			    "for a flow-matching model (SD3): %s spaces its "
			    "shifted sigmas linearly; use normal",
			    family_class(s->fam, 1));
			if (err != NULL)
				snprintf(err->field, sizeof err->field, "schedule");
			goto fail;
		}
	}
	/* the class defaults for keys the config left unset */
	if (s->cfg.timestep_spacing == SCHED_SPACING_DEFAULT)
		s->cfg.timestep_spacing = s->fam == FAM_DDIM || s->fam == FAM_PNDM ?
		    SCHED_SPACING_LEADING : SCHED_SPACING_LINSPACE;
	/* LCMScheduler has timestep_spacing but never reads it */
	if (s->cfg.set_alpha_to_one < 0)
		s->cfg.set_alpha_to_one = s->fam == FAM_DDIM;
	if (s->cfg.skip_prk_steps < 0)
		s->cfg.skip_prk_steps = 0;
	if (s->cfg.clip_sample < 0)
		s->cfg.clip_sample = s->fam == FAM_DDIM;

	if (schedule == SD_SCHEDULE_KARRAS &&
	    (s->fam == FAM_DDIM || s->fam == FAM_PNDM || s->fam == FAM_LCM)) {
		sd_fail(err, SD_EDATA, "schedule: karras is not available with "
		    "sampler %s (diffusers' %s steps on the training timesteps "
		    "and has no Karras sigmas); use normal, or a sampler among "
		    "euler, euler_a, lms, heun, dpm2, dpm2_a, dpmpp_2m, "
		    "dpmpp_2m_sde, unipc, deis", sd_sampler_name(sampler),
		    family_class(s->fam, 0));
		if (err != NULL)
			snprintf(err->field, sizeof err->field, "schedule");
		goto fail;
	}
	if (cfg->prediction_type == SCHED_PRED_SAMPLE &&
	    (s->fam == FAM_EULER_A || s->fam == FAM_PNDM ||
	    s->fam == FAM_DPM2 || s->fam == FAM_DPM2_A)) {
		sd_fail(err, SD_ECONFIG, "prediction_type \"sample\" is not "
		    "supported by %s", family_class(s->fam, 0));
		goto fail;
	}

	s->alphas_cumprod = malloc((size_t)N * sizeof *s->alphas_cumprod);
	s->train_sigmas = malloc((size_t)N * sizeof *s->train_sigmas);
	/* PNDM with PRK: 12 + steps - 3 calls; Heun and DPM2 2 steps - 1;
	 * the others at most steps + 1 */
	s->timesteps = malloc((2 * (size_t)steps + 16) * sizeof *s->timesteps);
	s->sigmas = malloc((2 * (size_t)steps + 4) * sizeof *s->sigmas);
	if (s->fam == FAM_DPM2 || s->fam == FAM_DPM2_A) {
		size_t m = 2 * (size_t)steps + 4;

		s->sigmas_interpol = malloc(m * sizeof *s->sigmas_interpol);
		s->sigmas_up = malloc(m * sizeof *s->sigmas_up);
		s->sigmas_down = malloc(m * sizeof *s->sigmas_down);
		if (s->sigmas_interpol == NULL || s->sigmas_up == NULL ||
		    s->sigmas_down == NULL) {
			sd_fail(err, SD_EINTERNAL, "out of memory");
			goto fail;
		}
	}
	work = malloc(((size_t)steps + 2) * 2 * sizeof *work);
	if (s->alphas_cumprod == NULL || s->train_sigmas == NULL ||
	    s->timesteps == NULL || s->sigmas == NULL || work == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		goto fail;
	}
	if (!s->flow && sched_train_schedule(&s->cfg, NULL, s->alphas_cumprod,
	    s->train_sigmas, err) < 0)
		goto fail;
	s->final_alpha_cumprod = s->cfg.set_alpha_to_one ? 1.0f : s->alphas_cumprod[0];

	if (s->flow) {
		/* the alphas mean nothing here (no DDIM-style step) */
		memset(s->alphas_cumprod, 0, (size_t)N * sizeof *s->alphas_cumprod);
		s->final_alpha_cumprod = 0;
		rc = set_timesteps_flow(s, work, err);
		if (rc == 0 && s->fam == FAM_HEUN)
			rc = expand_second_order(s, err);
		if (rc < 0)
			goto fail;
		free(work);
		return s;
	}
	switch (s->fam) {
	case FAM_DDIM:
		rc = set_timesteps_ddim(s, work, err);
		break;
	case FAM_PNDM:
		rc = set_timesteps_pndm(s, work, err);
		break;
	case FAM_DPM:
	case FAM_UNIPC:
	case FAM_DEIS:
		rc = set_timesteps_dpm(s, work, err);
		break;
	case FAM_LCM:
		rc = set_timesteps_lcm(s, err);
		break;
	case FAM_HEUN:
	case FAM_DPM2:
	case FAM_DPM2_A:
		rc = set_timesteps_euler(s, work, err);
		if (rc == 0)
			rc = expand_second_order(s, err);
		break;
	default:
		rc = set_timesteps_euler(s, work, err);
		break;
	}
	if (rc < 0)
		goto fail;
	if (s->fam == FAM_DDIM || s->fam == FAM_PNDM || s->fam == FAM_LCM) {
		free(s->sigmas);
		s->sigmas = NULL;
	}
	free(work);
	return s;
fail:
	free(work);
	sd_scheduler_free(s);
	return NULL;
}

void
sd_scheduler_free(struct sd_scheduler *s)
{
	if (s == NULL)
		return;
	free(s->alphas_cumprod);
	free(s->train_sigmas);
	free(s->timesteps);
	free(s->sigmas);
	free(s->sigmas_interpol);
	free(s->sigmas_up);
	free(s->sigmas_down);
	free(s->block);
	free(s);
}

/* ------------------------------------------------------------ queries */

int
sd_scheduler_set_strength(struct sd_scheduler *s, double strength,
    struct sd_error *err)
{
	int init_timestep, t_start;
	double x;

	if (s->next != 0)
		return sd_fail(err, SD_EINTERNAL, "set_strength after the first step");
	if (!(strength >= 0 && strength <= 1)) {
		sd_fail(err, SD_EDATA, "strength: %g is not between 0 and 1", strength);
		goto field;
	}
	x = (double)s->steps * strength;	/* Python: int(steps * strength) */
	if (s->flow) {
		/* SD3's img2img: init_timestep = min(steps*strength, steps)
		 * stays a float, t_start = int(max(steps - init_timestep, 0)) */
		double init = x < s->steps ? x : s->steps, rest = s->steps - init;

		t_start = rest > 0 ? (int)rest : 0;
		init_timestep = s->steps - t_start;
	} else {
		init_timestep = (int)x;
		if (init_timestep > s->steps)
			init_timestep = s->steps;
		t_start = s->steps - init_timestep;
		if (t_start < 0)
			t_start = 0;
	}
	/* timesteps[t_start * scheduler.order:]: Heun and DPM2 have order 2 */
	if (s->fam == FAM_HEUN || s->fam == FAM_DPM2 || s->fam == FAM_DPM2_A)
		t_start *= 2;
	if (init_timestep < 1 || t_start >= s->nfull) {
		sd_fail(err, SD_EDATA, "strength: %g with %d steps leaves no step "
		    "to run (steps*strength must be %s)", strength, s->steps,
		    s->flow ? "above 0" : "1 or more");
		goto field;
	}
	s->begin = t_start;
	return 0;
field:
	if (err != NULL)
		snprintf(err->field, sizeof err->field, "strength");
	return -1;
}

int
sd_scheduler_calls(const struct sd_scheduler *s)
{
	return s->nfull - s->begin;
}

static int
clamp_call(const struct sd_scheduler *s, int i)
{
	int n = s->nfull - s->begin;

	return i < 0 ? 0 : i >= n ? n - 1 : i;
}

float
sd_scheduler_timestep(const struct sd_scheduler *s, int i)
{
	return s->timesteps[s->begin + clamp_call(s, i)];
}

const float *
sd_scheduler_timesteps_full(const struct sd_scheduler *s, int *nfull)
{
	if (nfull != NULL)
		*nfull = s->nfull;
	return s->timesteps;
}

const float *
sd_scheduler_sigmas_full(const struct sd_scheduler *s)
{
	return s->sigmas;
}

int
sd_scheduler_nsigmas(const struct sd_scheduler *s)
{
	return s->sigmas != NULL ? s->nsigmas : 0;
}

const float *
sd_scheduler_sigmas_extra(const struct sd_scheduler *s, const char *name)
{
	if (strcmp(name, "sigmas_interpol") == 0)
		return s->sigmas_interpol;
	if (strcmp(name, "sigmas_up") == 0 && s->fam == FAM_DPM2_A)
		return s->sigmas_up;
	if (strcmp(name, "sigmas_down") == 0 && s->fam == FAM_DPM2_A)
		return s->sigmas_down;
	return NULL;
}

int
sd_scheduler_model_calls_per_step(const struct sd_scheduler *s)
{
	return s->fam == FAM_HEUN || s->fam == FAM_DPM2 || s->fam == FAM_DPM2_A ? 2 : 1;
}

int
sd_scheduler_begin_index(const struct sd_scheduler *s)
{
	return s->begin;
}

float
sd_scheduler_init_noise_sigma(const struct sd_scheduler *s)
{
	return s->init_noise_sigma;
}

float
sd_scheduler_input_divisor(const struct sd_scheduler *s, int i)
{
	int k = s->begin + clamp_call(s, i);
	float sigma;

	if (s->flow)
		return 1.0f;	/* the SD3 pipelines call no scale_model_input */
	switch (s->fam) {
	case FAM_EULER:
	case FAM_EULER_A:
	case FAM_LMS:
	case FAM_HEUN:
		sigma = s->sigmas[k];
		break;
	case FAM_DPM2:
		/* the second call of a step is at the interpolated sigma */
		sigma = k % 2 == 0 ? s->sigmas[k] : s->sigmas_interpol[k];
		break;
	case FAM_DPM2_A:
		sigma = k % 2 == 0 ? s->sigmas[k] : s->sigmas_interpol[k - 1];
		break;
	default:
		return 1.0f;
	}
	return sqrtf(sigma * sigma + 1.0f);
}

void
sd_scheduler_scale_model_input(const struct sd_scheduler *s, int i,
    const float *sample, float *out, size_t n)
{
	float d = sd_scheduler_input_divisor(s, i);

	if (d == 1.0f) {
		if (out != sample)
			memmove(out, sample, n * sizeof *out);
		return;
	}
	for (size_t k = 0; k < n; k++)
		out[k] = sample[k] / d;
}

void
sd_scheduler_add_noise_coef(const struct sd_scheduler *s, int i, float *a,
    float *b)
{
	int k = s->begin + clamp_call(s, i);
	float sigma, ac;

	if (s->flow) {
		/* scale_noise: sigma*noise + (1.0 - sigma)*sample */
		*a = 1.0f - s->sigmas[k];
		*b = s->sigmas[k];
		return;
	}
	switch (s->fam) {
	case FAM_DDIM:
	case FAM_PNDM:
	case FAM_LCM:
		ac = s->alphas_cumprod[(int)s->timesteps[k]];
		*a = sqrtf(ac);
		*b = sqrtf(1.0f - ac);
		break;
	case FAM_DPM:
	case FAM_UNIPC:
	case FAM_DEIS:
		sigma = s->sigmas[k];
		*a = 1.0f / sqrtf(sigma * sigma + 1.0f);
		*b = sigma * *a;
		break;
	default:
		*a = 1.0f;
		*b = s->sigmas[k];
		break;
	}
}

void
sd_scheduler_add_noise(const struct sd_scheduler *s, int i, const float *x0,
    const float *noise, float *out, size_t n)
{
	float a, b;

	sd_scheduler_add_noise_coef(s, i, &a, &b);
	for (size_t k = 0; k < n; k++)
		out[k] = a * x0[k] + b * noise[k];
}

const float *
sd_scheduler_pred_x0(const struct sd_scheduler *s)
{
	return s->have_pred_x0 ? s->pred_x0 : NULL;
}

/* --------------------------------------------------------------- steps */

static int
reserve(struct sd_scheduler *s, size_t n, struct sd_error *err)
{
	size_t count = 3 + LMS_ORDER + 3;

	if (s->block != NULL) {
		if (n != s->n)
			return sd_fail(err, SD_EINTERNAL, "scheduler step: %zu "
			    "elements, the first step had %zu", n, s->n);
		return 0;
	}
	if (n == 0 || n > SIZE_MAX / sizeof(float) / count)
		return sd_fail(err, SD_EINTERNAL, "scheduler step: bad size %zu", n);
	s->block = malloc(n * count * sizeof(float));
	if (s->block == NULL)
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	s->n = n;
	s->pred_x0 = s->block;
	s->noise = s->block + n;
	s->tmp = s->block + 2 * n;
	for (int i = 0; i < LMS_ORDER; i++)
		s->hist[i] = s->block + (3 + (size_t)i) * n;
	s->cur_sample = s->block + (3 + LMS_ORDER) * n;
	s->cur_model_output = s->block + (4 + LMS_ORDER) * n;
	s->deriv = s->block + (5 + LMS_ORDER) * n;
	return 0;
}

int
sd_scheduler_prepare(struct sd_scheduler *s, size_t n, struct sd_error *err)
{
	return reserve(s, n, err);
}

/* Append to the history ring (newest last), keeping at most max entries;
 * returns the buffer to fill. */
static float *
hist_push(struct sd_scheduler *s, int max)
{
	float *slot;

	if (s->nhist < max)
		return s->hist[s->nhist++];
	slot = s->hist[0];
	for (int i = 0; i < max - 1; i++)
		s->hist[i] = s->hist[i + 1];
	s->hist[max - 1] = slot;
	return slot;
}

/* The newest-but-k history entry. */
static const float *
hist_back(const struct sd_scheduler *s, int k)
{
	return s->hist[s->nhist - 1 - k];
}

/* x0 from the model output at noise level sigma (Euler, Euler a, LMS). */
static void
k_pred_x0(const struct sd_scheduler *s, float sigma, const float *mo,
    const float *sample, float *x0)
{
	size_t n = s->n;

	switch (s->cfg.prediction_type) {
	case SCHED_PRED_EPSILON:
	case SCHED_PRED_FLOW:
		/* flow: denoised = sample - model_output * sigma */
		for (size_t k = 0; k < n; k++)
			x0[k] = sample[k] - sigma * mo[k];
		break;
	case SCHED_PRED_V: {
		float c2 = sigma * sigma + 1.0f;
		float c1 = -sigma / sqrtf(c2);

		for (size_t k = 0; k < n; k++)
			x0[k] = mo[k] * c1 + sample[k] / c2;
		break;
	}
	default:
		memcpy(x0, mo, n * sizeof *x0);
		break;
	}
}

static void
step_euler(struct sd_scheduler *s, int k, const float *mo, float *sample)
{
	float sigma = s->sigmas[k];
	float sigma_hat = sigma * (0.0f + 1.0f);	/* s_churn 0: gamma 0 */
	float dt = s->sigmas[k + 1] - sigma_hat;
	float *x0 = s->pred_x0;

	k_pred_x0(s, sigma_hat, mo, sample, x0);
	for (size_t j = 0; j < s->n; j++) {
		float derivative = (sample[j] - x0[j]) / sigma_hat;

		sample[j] = sample[j] + derivative * dt;
	}
}

/* FlowMatchEulerDiscreteScheduler.step: prev = sample + (sigma_next -
 * sigma) * model_output, in float32.  pred_x0 (which diffusers does not
 * compute) is sample - sigma * model_output, for previews. */
static void
step_flow_euler(struct sd_scheduler *s, int k, const float *mo, float *sample)
{
	float sigma = s->sigmas[k], dt = s->sigmas[k + 1] - sigma;
	float *x0 = s->pred_x0;

	for (size_t j = 0; j < s->n; j++) {
		x0[j] = sample[j] - sigma * mo[j];
		sample[j] = sample[j] + dt * mo[j];
	}
}

static void
step_euler_a(struct sd_scheduler *s, int k, const float *mo, float *sample,
    const float *noise)
{
	float sigma = s->sigmas[k];
	float from = s->sigmas[k], to = s->sigmas[k + 1];
	float sigma_up = sqrtf(to * to * (from * from - to * to) / (from * from));
	float sigma_down = sqrtf(to * to - sigma_up * sigma_up);
	float dt = sigma_down - sigma;
	float *x0 = s->pred_x0;

	k_pred_x0(s, sigma, mo, sample, x0);
	for (size_t j = 0; j < s->n; j++) {
		float derivative = (sample[j] - x0[j]) / sigma;
		float prev = sample[j] + derivative * dt;

		sample[j] = prev + noise[j] * sigma_up;
	}
}

/* The Lagrange basis polynomial j of the nodes x[0..order-1] at tau, the
 * way diffusers' lms_derivative evaluates it: torch float32 operations on
 * the float32 sigmas. */
static double
lms_basis(const float *x, int order, int j, double tau)
{
	float t = (float)tau, prod = 1.0f;

	for (int k = 0; k < order; k++)
		if (k != j)
			prod = prod * ((t - x[k]) / (x[j] - x[k]));
	return prod;
}

/* The LMS coefficient: the integral over [a, b] of that polynomial, as
 * scipy.integrate.quad computes it (QUADPACK's 21-point Gauss-Kronrod
 * rule, whose first estimate quad accepts for such a cubic).  The exact
 * integral differs only by the float32 noise of the integrand. */
static double
lms_coefficient(const float *x, int order, int j, double a, double b)
{
	static const double xgk[11] = {
		0.995657163025808080735527280689003,
		0.973906528517171720077964012084452,
		0.930157491355708226001207180059508,
		0.865063366688984510732096688423493,
		0.780817726586416897063717578345042,
		0.679409568299024406234327365114874,
		0.562757134668604683339000099272694,
		0.433395394129247190799265943165784,
		0.294392862701460198131126603103866,
		0.148874338981631210884826001129720,
		0.000000000000000000000000000000000,
	};
	static const double wgk[11] = {
		0.011694638867371874278064396062192,
		0.032558162307964727478818972459390,
		0.054755896574351996031381300244580,
		0.075039674810919952767043140916190,
		0.093125454583697605535065465083366,
		0.109387158802297641899210590325805,
		0.123491976262065851077958109831074,
		0.134709217311473325928054001771707,
		0.142775938577060080797094273138717,
		0.147739104901338491374841515972068,
		0.149445554002916905664936468389821,
	};
	double centr = 0.5 * (a + b), hlgth = 0.5 * (b - a);
	double resk = wgk[10] * lms_basis(x, order, j, centr);

	/* the Gauss nodes first, then the Kronrod ones, as dqk21 sums */
	for (int pass = 0; pass < 2; pass++) {
		for (int q = 1 - pass; q < 10; q += 2) {
			double absc = hlgth * xgk[q];
			double fsum = lms_basis(x, order, j, centr - absc) +
			    lms_basis(x, order, j, centr + absc);

			resk = resk + wgk[q] * fsum;
		}
	}
	return resk * hlgth;
}

static void
step_lms(struct sd_scheduler *s, int k, const float *mo, float *sample)
{
	float sigma = s->sigmas[k];
	float *x0 = s->pred_x0, *d = hist_push(s, LMS_ORDER);
	float coeff[LMS_ORDER], x[LMS_ORDER];
	int order = k + 1 < LMS_ORDER ? k + 1 : LMS_ORDER, used;

	k_pred_x0(s, sigma, mo, sample, x0);
	for (size_t j = 0; j < s->n; j++)
		d[j] = (sample[j] - x0[j]) / sigma;
	/* nodes sigmas[k], sigmas[k-1], ...; integrate to sigmas[k + 1] */
	for (int q = 0; q < order; q++)
		x[q] = s->sigmas[k - q];
	for (int q = 0; q < order; q++)
		coeff[q] = (float)lms_coefficient(x, order, q, s->sigmas[k],
		    s->sigmas[k + 1]);
	used = order < s->nhist ? order : s->nhist;
	for (size_t j = 0; j < s->n; j++) {
		float sum = coeff[0] * hist_back(s, 0)[j];

		for (int q = 1; q < used; q++)
			sum = sum + coeff[q] * hist_back(s, q)[j];
		sample[j] = sample[j] + sum;
	}
}

/* torch.exp of a float32 0-dim tensor: torch's CPU kernel evaluates it
 * with SLEEF's Sleef_expf8_u10 (1-ulp accuracy, FMA), whose result is not
 * always glibc's correctly rounded expf; this is that algorithm for one
 * lane (SLEEF's xexpf, Boost license). */
static float
sleef_expf(float d)
{
	const float r_ln2 = 1.442695040888963407359924681001892137426645954152985934135449406931f;
	float s, u;
	int q;

	if (isnan(d))
		return d;
	if (d < -104.0f)
		return 0.0f;
	if (d > 100.0f)
		return INFINITY;
	q = (int)rintf(d * r_ln2);
	s = fmaf((float)q, -0.693145751953125f, d);
	s = fmaf((float)q, -1.428606765330187045e-06f, s);
	u = 0.000198527617612853646278381f;
	u = fmaf(u, s, 0.00139304355252534151077271f);
	u = fmaf(u, s, 0.00833336077630519866943359f);
	u = fmaf(u, s, 0.0416664853692054748535156f);
	u = fmaf(u, s, 0.166666671633720397949219f);
	u = fmaf(u, s, 0.5f);
	u = 1.0f + fmaf(s * s, u, s);
	return ldexpf(ldexpf(u, q >> 1), q - (q >> 1));
}

static void
dpm_alpha_sigma(float sigma, float *alpha_t, float *sigma_t)
{
	*alpha_t = 1.0f / sqrtf(sigma * sigma + 1.0f);
	*sigma_t = sigma * *alpha_t;
}

/* The x0 prediction of the multistep solvers (DPM++, UniPC, DEIS) at
 * sigmas[k]. */
static void
ms_convert_x0(const struct sd_scheduler *s, int k, const float *mo,
    const float *sample, float *x0)
{
	float alpha, sigma;
	size_t n = s->n;

	dpm_alpha_sigma(s->sigmas[k], &alpha, &sigma);
	switch (s->cfg.prediction_type) {
	case SCHED_PRED_EPSILON:
		for (size_t j = 0; j < n; j++)
			x0[j] = (sample[j] - sigma * mo[j]) / alpha;
		break;
	case SCHED_PRED_V:
		for (size_t j = 0; j < n; j++)
			x0[j] = alpha * sample[j] - sigma * mo[j];
		break;
	default:
		memcpy(x0, mo, n * sizeof *x0);
		break;
	}
}

static void
step_dpm(struct sd_scheduler *s, int k, const float *mo, float *sample,
    const float *noise)
{
	float alpha_t, sigma_t, alpha_s0, sigma_s0, lambda_t, lambda_s0, h;
	float *x0 = hist_push(s, 2);
	size_t n = s->n;

	/* convert_model_output: the x0 prediction (dpmsolver++) */
	dpm_alpha_sigma(s->sigmas[k], &alpha_s0, &sigma_s0);
	ms_convert_x0(s, k, mo, sample, x0);
	memcpy(s->pred_x0, x0, n * sizeof *x0);

	dpm_alpha_sigma(s->sigmas[k + 1], &alpha_t, &sigma_t);
	lambda_t = logf(alpha_t) - logf(sigma_t);
	lambda_s0 = logf(alpha_s0) - logf(sigma_s0);
	h = lambda_t - lambda_s0;
	if (s->sde) {
		/* sde-dpmsolver++, midpoint: the noise enters every step */
		float e2 = 1.0f - sleef_expf(-2.0f * h);
		float a = sigma_t / sigma_s0 * sleef_expf(-h);
		float b = alpha_t * e2, c = sigma_t * sqrtf(e2);

		if (s->lower_order_nums < 1 || k == s->nfull - 1) {
			for (size_t j = 0; j < n; j++)
				sample[j] = a * sample[j] + b * x0[j] + c * noise[j];
		} else {
			float alpha_s1, sigma_s1, lambda_s1, r0, rinv, b2 = 0.5f * b;
			const float *m1 = hist_back(s, 1);

			dpm_alpha_sigma(s->sigmas[k - 1], &alpha_s1, &sigma_s1);
			lambda_s1 = logf(alpha_s1) - logf(sigma_s1);
			r0 = (lambda_s0 - lambda_s1) / h;
			rinv = 1.0f / r0;
			for (size_t j = 0; j < n; j++) {
				float d1 = rinv * (x0[j] - m1[j]);

				sample[j] = a * sample[j] + b * x0[j] + b2 * d1 +
				    c * noise[j];
			}
		}
	} else if (s->lower_order_nums < 1 || k == s->nfull - 1) {
		/* DPM-Solver++ first order (the last step always: the final
		 * sigma is zero) */
		float a = sigma_t / sigma_s0;
		float b = alpha_t * (sleef_expf(-h) - 1.0f);

		for (size_t j = 0; j < n; j++)
			sample[j] = a * sample[j] - b * x0[j];
	} else {
		/* multistep second order, midpoint */
		float alpha_s1, sigma_s1, lambda_s1, h_0, r0, rinv, a, b, c;
		const float *m1 = hist_back(s, 1);

		dpm_alpha_sigma(s->sigmas[k - 1], &alpha_s1, &sigma_s1);
		lambda_s1 = logf(alpha_s1) - logf(sigma_s1);
		h_0 = lambda_s0 - lambda_s1;
		r0 = h_0 / h;
		rinv = 1.0f / r0;
		a = sigma_t / sigma_s0;
		b = alpha_t * (sleef_expf(-h) - 1.0f);
		c = 0.5f * b;
		for (size_t j = 0; j < n; j++) {
			float d1 = rinv * (x0[j] - m1[j]);

			sample[j] = a * sample[j] - b * x0[j] - c * d1;
		}
	}
	if (s->lower_order_nums < 2)
		s->lower_order_nums++;
}

static void
step_ddim(struct sd_scheduler *s, int k, const float *mo, float *sample)
{
	int t = (int)s->timesteps[k], prev = t - s->ntrain / s->steps;
	float a_t = s->alphas_cumprod[t];
	float a_prev = prev >= 0 ? s->alphas_cumprod[prev] : s->final_alpha_cumprod;
	float b_t = 1.0f - a_t;
	float sa = sqrtf(a_t), sb = sqrtf(b_t);
	float dir = sqrtf(1.0f - a_prev - 0.0f), sprev = sqrtf(a_prev);
	float range = (float)s->cfg.clip_sample_range;
	float *x0 = s->pred_x0, *eps = s->tmp;
	size_t n = s->n;

	switch (s->cfg.prediction_type) {
	case SCHED_PRED_EPSILON:
		for (size_t j = 0; j < n; j++) {
			x0[j] = (sample[j] - sb * mo[j]) / sa;
			eps[j] = mo[j];
		}
		break;
	case SCHED_PRED_V:
		for (size_t j = 0; j < n; j++) {
			x0[j] = sa * sample[j] - sb * mo[j];
			eps[j] = sa * mo[j] + sb * sample[j];
		}
		break;
	default:
		for (size_t j = 0; j < n; j++) {
			x0[j] = mo[j];
			eps[j] = (sample[j] - sa * x0[j]) / sb;
		}
		break;
	}
	if (s->cfg.clip_sample)
		for (size_t j = 0; j < n; j++)
			x0[j] = x0[j] < -range ? -range : x0[j] > range ? range : x0[j];
	for (size_t j = 0; j < n; j++)
		sample[j] = sprev * x0[j] + dir * eps[j];
}

/* PNDM's _get_prev_sample (formula (9) of the PNDM paper). */
static int
pndm_prev_sample(struct sd_scheduler *s, const float *sample, int t, int prev,
    const float *mo, float *out, struct sd_error *err)
{
	if (t < 0 || t >= s->ntrain || prev >= s->ntrain)
		return sd_fail(err, SD_EINTERNAL, "PNDM: timestep %d -> %d outside "
		    "the training schedule", t, prev);
	float a_t = s->alphas_cumprod[t];
	float a_prev = prev >= 0 ? s->alphas_cumprod[prev] : s->final_alpha_cumprod;
	float b_t = 1.0f - a_t, b_prev = 1.0f - a_prev;
	float sample_coeff = sqrtf(a_prev / a_t);
	float denom = a_t * sqrtf(b_prev) + sqrtf(a_t * b_t * a_prev);
	float diff = a_prev - a_t;
	size_t n = s->n;

	for (size_t j = 0; j < n; j++) {
		float m = mo[j];

		if (s->cfg.prediction_type == SCHED_PRED_V)
			m = sqrtf(a_t) * m + sqrtf(b_t) * sample[j];
		out[j] = sample_coeff * sample[j] - diff * m / denom;
	}
	return 0;
}

static int
step_pndm_prk(struct sd_scheduler *s, int k, const float *mo, float *sample,
    struct sd_error *err)
{
	int ratio = s->ntrain / s->steps, c = s->counter;
	int t = (int)s->timesteps[k];
	int prev = t - (c % 2 ? 0 : ratio / 2);
	float *m = s->tmp;
	size_t n = s->n;

	t = (int)s->timesteps[c / 4 * 4];
	if (c % 4 == 0) {
		float *e = hist_push(s, LMS_ORDER);

		for (size_t j = 0; j < n; j++)
			s->cur_model_output[j] = (s->have_cur_model_output ?
			    s->cur_model_output[j] : 0.0f) + (float)(1.0 / 6.0) * mo[j];
		s->have_cur_model_output = 1;
		memcpy(e, mo, n * sizeof *e);
		memcpy(s->cur_sample, sample, n * sizeof *sample);
		s->have_cur_sample = 1;
		memcpy(m, mo, n * sizeof *m);
	} else if (c % 4 == 1 || c % 4 == 2) {
		for (size_t j = 0; j < n; j++)
			s->cur_model_output[j] = s->cur_model_output[j] +
			    (float)(1.0 / 3.0) * mo[j];
		memcpy(m, mo, n * sizeof *m);
	} else {
		for (size_t j = 0; j < n; j++)
			m[j] = s->cur_model_output[j] + (float)(1.0 / 6.0) * mo[j];
		s->have_cur_model_output = 0;
	}
	return pndm_prev_sample(s, s->have_cur_sample ? s->cur_sample : sample,
	    t, prev, m, sample, err);
}

static int
step_pndm_plms(struct sd_scheduler *s, int k, const float *mo, float *sample,
    struct sd_error *err)
{
	int ratio = s->ntrain / s->steps;
	int t = (int)s->timesteps[k], prev = t - ratio;
	const float *src = sample;
	float *m = s->tmp;
	size_t n = s->n;

	if (s->counter != 1) {
		/* ets = ets[-3:] + [model_output] */
		float *e = hist_push(s, 4);

		memcpy(e, mo, n * sizeof *e);
	} else {
		prev = t;
		t = t + ratio;
	}
	if (s->nhist == 1 && s->counter == 0) {
		memcpy(m, mo, n * sizeof *m);
		memcpy(s->cur_sample, sample, n * sizeof *sample);
		s->have_cur_sample = 1;
	} else if (s->nhist == 1 && s->counter == 1) {
		const float *e1 = hist_back(s, 0);

		for (size_t j = 0; j < n; j++)
			m[j] = (mo[j] + e1[j]) / 2.0f;
		src = s->cur_sample;
		s->have_cur_sample = 0;
	} else if (s->nhist == 2) {
		const float *e1 = hist_back(s, 0), *e2 = hist_back(s, 1);

		for (size_t j = 0; j < n; j++)
			m[j] = (3.0f * e1[j] - e2[j]) / 2.0f;
	} else if (s->nhist == 3) {
		const float *e1 = hist_back(s, 0), *e2 = hist_back(s, 1);
		const float *e3 = hist_back(s, 2);

		for (size_t j = 0; j < n; j++)
			m[j] = (23.0f * e1[j] - 16.0f * e2[j] + 5.0f * e3[j]) / 12.0f;
	} else {
		const float *e1 = hist_back(s, 0), *e2 = hist_back(s, 1);
		const float *e3 = hist_back(s, 2), *e4 = hist_back(s, 3);
		const float c = (float)(1.0 / 24.0);

		for (size_t j = 0; j < n; j++)
			m[j] = c * (55.0f * e1[j] - 59.0f * e2[j] + 37.0f * e3[j] -
			    9.0f * e4[j]);
	}
	return pndm_prev_sample(s, src, t, prev, m, sample, err);
}

static void
clip_x0(const struct sd_scheduler *s, float *x0)
{
	float range = (float)s->cfg.clip_sample_range;

	if (!s->cfg.clip_sample)
		return;
	for (size_t j = 0; j < s->n; j++)
		x0[j] = x0[j] < -range ? -range : x0[j] > range ? range : x0[j];
}

/* Heun: an Euler step, then (second call, the model evaluated at the
 * Euler prediction) the trapezoid from the remembered sample. */
static void
step_heun(struct sd_scheduler *s, int k, const float *mo, float *sample)
{
	float *x0 = s->pred_x0, *d1 = s->deriv, *x = s->cur_sample;
	size_t n = s->n;

	if (!s->have_cur_sample) {
		float sigma = s->sigmas[k], next = s->sigmas[k + 1];
		float dt = next - sigma;

		k_pred_x0(s, sigma, mo, sample, x0);
		clip_x0(s, x0);
		for (size_t j = 0; j < n; j++) {
			d1[j] = (sample[j] - x0[j]) / sigma;
			x[j] = sample[j];
			sample[j] = sample[j] + d1[j] * dt;
		}
		s->heun_dt = dt;
		s->have_cur_sample = 1;
	} else {
		float next = s->sigmas[k], dt = s->heun_dt;

		k_pred_x0(s, next, mo, sample, x0);
		clip_x0(s, x0);
		for (size_t j = 0; j < n; j++) {
			float d2 = (sample[j] - x0[j]) / next;
			float d = (d1[j] + d2) / 2.0f;

			sample[j] = x[j] + d * dt;
		}
		s->have_cur_sample = 0;
	}
}

/* DPM2 (KDPM2): Euler to the log-midpoint sigma, then from the remembered
 * sample with the midpoint's derivative.  The ancestral variant aims at
 * sigma_down and adds sigma_up * noise after the second call. */
static void
step_dpm2(struct sd_scheduler *s, int k, const float *mo, float *sample,
    const float *noise)
{
	float *x0 = s->pred_x0, *x = s->cur_sample;
	int anc = s->fam == FAM_DPM2_A;
	size_t n = s->n;

	if (!s->have_cur_sample) {
		float sigma = s->sigmas[k];
		float si = anc ? s->sigmas_interpol[k] : s->sigmas_interpol[k + 1];
		float dt = si - sigma;

		k_pred_x0(s, sigma, mo, sample, x0);
		for (size_t j = 0; j < n; j++) {
			float d = (sample[j] - x0[j]) / sigma;

			x[j] = sample[j];
			sample[j] = sample[j] + d * dt;
		}
		s->have_cur_sample = 1;
	} else {
		float sigma = s->sigmas[k - 1];
		float si = anc ? s->sigmas_interpol[k - 1] : s->sigmas_interpol[k];
		float dt = (anc ? s->sigmas_down[k - 1] : s->sigmas[k]) - sigma;
		float up = anc ? s->sigmas_up[k - 1] : 0.0f;

		k_pred_x0(s, si, mo, sample, x0);
		for (size_t j = 0; j < n; j++) {
			float d = (sample[j] - x0[j]) / si;
			float prev = x[j] + d * dt;

			sample[j] = anc ? prev + noise[j] * up : prev;
		}
		s->have_cur_sample = 0;
	}
}


static float
lambda_of(float sigma)
{
	float alpha, sig;

	dpm_alpha_sigma(sigma, &alpha, &sig);
	return logf(alpha) - logf(sig);
}

/* torch.linalg.solve of [[1, 1], [r, 1]] x = b in float32 (LU with
 * partial pivoting, as LAPACK's sgesv). */
static void
solve2(float r, const float b[2], float x[2])
{
	float a11 = 1.0f, a12 = 1.0f, a21 = r, a22 = 1.0f, b1 = b[0], b2 = b[1];

	if (fabsf(a21) > fabsf(a11)) {
		float t;

		t = a11, a11 = a21, a21 = t;
		t = a12, a12 = a22, a22 = t;
		t = b1, b1 = b2, b2 = t;
	}
	{
		float l = a21 * (1.0f / a11);
		float u22 = a22 - l * a12;
		float y2 = b2 - l * b1;

		x[1] = y2 / u22;
		x[0] = (b1 - a12 * x[1]) / a11;
	}
}

/* UniPC (bh2, predict_x0, order <= 2): the corrector UniC for the sample
 * received (when a previous step exists), then the predictor UniP. */
static void
step_unipc(struct sd_scheduler *s, int k, const float *mo, float *sample)
{
	float *x0 = s->pred_x0, *last = s->cur_sample;
	size_t n = s->n;
	int order;

	ms_convert_x0(s, k, mo, sample, x0);
	if (k > 0 && s->have_cur_sample) {
		/* UniC: this_sample = sample, last_sample, m0 = the previous
		 * x0, model_t = x0; order = the last predictor's */
		const float *m0 = hist_back(s, 0);
		float alpha_t, sigma_t, alpha_s0, sigma_s0, lt, ls0, h, hh;
		float h_phi_1, h_phi_k, B_h, a, c, rho1, rhos[2] = {0.5f, 0.0f};
		float rk = 0.0f;
		int p = s->this_order;

		dpm_alpha_sigma(s->sigmas[k], &alpha_t, &sigma_t);
		dpm_alpha_sigma(s->sigmas[k - 1], &alpha_s0, &sigma_s0);
		lt = logf(alpha_t) - logf(sigma_t);
		ls0 = logf(alpha_s0) - logf(sigma_s0);
		h = lt - ls0;
		hh = -h;
		h_phi_1 = expm1f(hh);
		h_phi_k = h_phi_1 / hh - 1.0f;
		B_h = expm1f(hh);
		a = sigma_t / sigma_s0;
		c = alpha_t * h_phi_1;
		if (p == 2) {
			float b[2];

			rk = (lambda_of(s->sigmas[k - 2]) - ls0) / h;
			b[0] = h_phi_k * 1.0f / B_h;
			h_phi_k = h_phi_k / hh - 0.5f;
			b[1] = h_phi_k * 2.0f / B_h;
			solve2(rk, b, rhos);
		}
		rho1 = p == 2 ? rhos[1] : rhos[0];
		{
			float ab = alpha_t * B_h;
			const float *m1 = p == 2 ? hist_back(s, 1) : NULL;

			for (size_t j = 0; j < n; j++) {
				float xt_ = a * last[j] - c * m0[j];
				float d1t = x0[j] - m0[j];
				float corr = rho1 * d1t;

				if (m1 != NULL)
					corr = rhos[0] * ((m1[j] - m0[j]) / rk) + corr;
				sample[j] = xt_ - ab * corr;
			}
		}
	}
	memcpy(hist_push(s, 2), x0, n * sizeof *x0);
	order = 2 < s->nfull - k ? 2 : s->nfull - k;
	if (order > s->lower_order_nums + 1)
		order = s->lower_order_nums + 1;
	s->this_order = order;
	memcpy(last, sample, n * sizeof *last);
	s->have_cur_sample = 1;
	{
		/* UniP from the (corrected) sample */
		const float *m0 = hist_back(s, 0);
		float alpha_t, sigma_t, alpha_s0, sigma_s0, lt, ls0, h, hh;
		float h_phi_1, a, c, rk = 0.0f, ab;
		const float *m1 = order == 2 ? hist_back(s, 1) : NULL;

		dpm_alpha_sigma(s->sigmas[k + 1], &alpha_t, &sigma_t);
		dpm_alpha_sigma(s->sigmas[k], &alpha_s0, &sigma_s0);
		lt = logf(alpha_t) - logf(sigma_t);
		ls0 = logf(alpha_s0) - logf(sigma_s0);
		h = lt - ls0;
		hh = -h;
		h_phi_1 = expm1f(hh);
		a = sigma_t / sigma_s0;
		c = alpha_t * h_phi_1;
		ab = alpha_t * expm1f(hh);
		if (m1 != NULL)
			rk = (lambda_of(s->sigmas[k - 1]) - ls0) / h;
		for (size_t j = 0; j < n; j++) {
			float xt_ = a * sample[j] - c * m0[j];

			if (m1 != NULL) {
				float pred_res = 0.5f * ((m1[j] - m0[j]) / rk);

				xt_ = xt_ - ab * pred_res;
			}
			sample[j] = xt_;
		}
	}
	if (s->lower_order_nums < 2)
		s->lower_order_nums++;
}

/* DEIS's log-rho integral (order 2): Integrate[(log t - log c) /
 * (log b - log c), t]. */
static float
deis_ind(float t, float b, float c)
{
	return t * (-logf(c) + logf(t) - 1.0f) / (logf(b) - logf(c));
}

/* DEIS (logrho, order <= 2) on the noise prediction. */
static void
step_deis(struct sd_scheduler *s, int k, const float *mo, float *sample)
{
	float *x0 = s->pred_x0, *eps = hist_push(s, 2);
	float alpha_t, sigma_t, alpha_s0, sigma_s0;
	int final = k == s->nfull - 1 && s->nfull < 15;
	size_t n = s->n;

	ms_convert_x0(s, k, mo, sample, x0);
	dpm_alpha_sigma(s->sigmas[k], &alpha_s0, &sigma_s0);
	for (size_t j = 0; j < n; j++)
		eps[j] = (sample[j] - alpha_s0 * x0[j]) / sigma_s0;
	dpm_alpha_sigma(s->sigmas[k + 1], &alpha_t, &sigma_t);
	if (s->lower_order_nums < 1 || final) {
		float lt = logf(alpha_t) - logf(sigma_t);
		float ls = logf(alpha_s0) - logf(sigma_s0);
		float h = lt - ls;
		float a = alpha_t / alpha_s0;
		float b = sigma_t * (sleef_expf(h) - 1.0f);

		for (size_t j = 0; j < n; j++)
			sample[j] = a * sample[j] - b * eps[j];
	} else {
		float alpha_s1, sigma_s1, rt, r0, r1, c1, c2;
		const float *m1 = hist_back(s, 1);

		dpm_alpha_sigma(s->sigmas[k - 1], &alpha_s1, &sigma_s1);
		rt = sigma_t / alpha_t;
		r0 = sigma_s0 / alpha_s0;
		r1 = sigma_s1 / alpha_s1;
		c1 = deis_ind(rt, r0, r1) - deis_ind(r0, r0, r1);
		c2 = deis_ind(rt, r1, r0) - deis_ind(r0, r1, r0);
		for (size_t j = 0; j < n; j++)
			sample[j] = alpha_t * (sample[j] / alpha_s0 + c1 * eps[j] +
			    c2 * m1[j]);
	}
	if (s->lower_order_nums < 2)
		s->lower_order_nums++;
}

/* LCM: the consistency-model denoised sample, noised again to the next
 * timestep with a fresh draw (none after the last step). */
static void
step_lcm(struct sd_scheduler *s, int k, const float *mo, float *sample,
    const float *noise)
{
	int t = (int)s->timesteps[k];
	int prev = k + 1 < s->nfull ? (int)s->timesteps[k + 1] : t;
	float ac = s->alphas_cumprod[t];
	float ac_prev = prev >= 0 ? s->alphas_cumprod[prev] : s->final_alpha_cumprod;
	float sa = sqrtf(ac), sb = sqrtf(1.0f - ac);
	float sp = sqrtf(ac_prev), sbp = sqrtf(1.0f - ac_prev);
	float st = (float)t * 10.0f;		/* timestep_scaling */
	float c_skip = 0.25f / (st * st + 0.25f);
	float c_out = st / sqrtf(st * st + 0.25f);
	float *x0 = s->tmp, *den = s->pred_x0;
	size_t n = s->n;

	switch (s->cfg.prediction_type) {
	case SCHED_PRED_EPSILON:
		for (size_t j = 0; j < n; j++)
			x0[j] = (sample[j] - sb * mo[j]) / sa;
		break;
	case SCHED_PRED_V:
		for (size_t j = 0; j < n; j++)
			x0[j] = sa * sample[j] - sb * mo[j];
		break;
	default:
		memcpy(x0, mo, n * sizeof *x0);
		break;
	}
	clip_x0(s, x0);
	for (size_t j = 0; j < n; j++)
		den[j] = c_out * x0[j] + c_skip * sample[j];
	if (k != s->steps - 1) {
		for (size_t j = 0; j < n; j++)
			sample[j] = sp * den[j] + sbp * noise[j];
	} else {
		memcpy(sample, den, n * sizeof *sample);
	}
}

/* Whether step k draws a randn of the sample's shape (diffusers draws it
 * whether or not the formula uses it). */
static int
step_draws(const struct sd_scheduler *s, int k)
{
	if (s->flow)
		return 0;
	switch (s->fam) {
	case FAM_EULER:
	case FAM_EULER_A:
	case FAM_DPM2_A:
		return 1;
	case FAM_DPM:
		return s->sde;
	case FAM_LCM:
		return k != s->steps - 1;
	default:
		return 0;
	}
}

int
sd_scheduler_draws(const struct sd_scheduler *s, int i)
{
	return step_draws(s, s->begin + clamp_call(s, i));
}

static int
do_step(struct sd_scheduler *s, int i, const float *mo, float *sample,
    size_t n, struct sd_rng *rng, const float *noise, struct sd_error *err)
{
	int k;

	if (i != s->next || i < 0 || i >= s->nfull - s->begin)
		return sd_fail(err, SD_EINTERNAL, "scheduler step %d called, "
		    "expected step %d of %d", i, s->next, s->nfull - s->begin);
	if (reserve(s, n, err) < 0)
		return -1;
	k = s->begin + i;
	if (step_draws(s, k) && noise == NULL) {
		if (rng == NULL)
			return sd_fail(err, SD_EINTERNAL, "scheduler step: "
			    "%s needs a generator", sd_sampler_name(s->sampler));
		sd_rng_randn(rng, s->noise, n);
		noise = s->noise;
	}
	switch (s->fam) {
	case FAM_HEUN:
		step_heun(s, k, mo, sample);
		s->have_pred_x0 = 1;
		break;
	case FAM_DPM2:
	case FAM_DPM2_A:
		step_dpm2(s, k, mo, sample, noise);
		s->have_pred_x0 = 1;
		break;
	case FAM_UNIPC:
		step_unipc(s, k, mo, sample);
		s->have_pred_x0 = 1;
		break;
	case FAM_DEIS:
		step_deis(s, k, mo, sample);
		s->have_pred_x0 = 1;
		break;
	case FAM_LCM:
		step_lcm(s, k, mo, sample, noise);
		s->have_pred_x0 = 1;
		break;
	case FAM_EULER:
	case FAM_EULER_A:
		if (s->fam == FAM_EULER && s->flow)
			step_flow_euler(s, k, mo, sample);
		else if (s->fam == FAM_EULER)
			step_euler(s, k, mo, sample);
		else
			step_euler_a(s, k, mo, sample, noise);
		s->have_pred_x0 = 1;
		break;
	case FAM_LMS:
		step_lms(s, k, mo, sample);
		s->have_pred_x0 = 1;
		break;
	case FAM_DPM:
		step_dpm(s, k, mo, sample, noise);
		s->have_pred_x0 = 1;
		break;
	case FAM_DDIM:
		step_ddim(s, k, mo, sample);
		s->have_pred_x0 = 1;
		break;
	case FAM_PNDM:
		if ((s->counter < s->nprk ? step_pndm_prk(s, k, mo, sample, err) :
		    step_pndm_plms(s, k, mo, sample, err)) < 0)
			return -1;
		s->counter++;
		break;
	}
	s->next++;
	return 0;
}

int
sd_scheduler_step(struct sd_scheduler *s, int i, const float *model_out,
    float *sample, size_t n, struct sd_rng *rng, struct sd_error *err)
{
	return do_step(s, i, model_out, sample, n, rng, NULL, err);
}

int
sd_scheduler_step_noise(struct sd_scheduler *s, int i, const float *model_out,
    float *sample, size_t n, const float *noise, struct sd_error *err)
{
	return do_step(s, i, model_out, sample, n, NULL, noise, err);
}
