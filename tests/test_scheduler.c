/* test_scheduler.c: the samplers against diffusers 0.30.3 (goldens
 * sched_*, and the scheduler side of the txt2img / img2img / inpainting
 * cases; SD3's flow matching: sched_flowmatch and the img2img cases of
 * sd3-tiny), the config loader, and the names of pipeline.h. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "sample/scheduler.h"
#include "testutil.h"

/* the guidance arithmetic below must round like torch's (no fma) */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#define ATOL 1e-5
#define RTOL 1e-5

/* Exact comparison of timesteps (the count too). */
static int
check_timesteps(const char *what, const float *got, int ngot, const float *want,
    size_t nwant)
{
	int ok = (size_t)ngot == nwant;

	for (int i = 0; ok && i < ngot; i++)
		ok = got[i] == want[i];
	if (!ok) {
		char buf[512] = "";
		for (int i = 0; i < ngot && strlen(buf) < 400; i++)
			snprintf(buf + strlen(buf), sizeof buf - strlen(buf), " %.9g", got[i]);
		tap_diag("%s: got %d:%s", what, ngot, buf);
		buf[0] = '\0';
		for (size_t i = 0; i < nwant && strlen(buf) < 400; i++)
			snprintf(buf + strlen(buf), sizeof buf - strlen(buf), " %.9g", want[i]);
		tap_diag("%s: want %zu:%s", what, nwant, buf);
	}
	return tap_ok(ok, "%s: %d timesteps exact", what, ngot);
}

/* How many elements differ at all (a diagnostic: bit-exactness). */
static void
diag_exact(const char *what, const float *got, const float *want, size_t n)
{
	size_t d = 0;

	for (size_t i = 0; i < n; i++)
		d += got[i] != want[i];
	tap_diag("%s: %zu of %zu values bit-exact", what, n - d, n);
}

static void
test_common(void)
{
	struct st_file *g = golden_open("sched_common");
	struct sched_config cfg;
	struct sd_error err = {0};
	float betas[1000], ac[1000], sig[1000], *want;
	size_t n;

	if (g == NULL) {
		tap_skip("sched_common: golden not found");
		return;
	}
	sched_config_sd15(&cfg);
	tap_ok(sched_train_schedule(&cfg, betas, ac, sig, &err) == 0,
	    "SD 1.5 training schedule %s", err.message);
	want = golden_f32(g, "betas", &n);
	if (n == 1000) {
		check_close("sched_common betas", betas, want, n, 0, 1e-6);
		diag_exact("betas", betas, want, n);
	}
	free(want);
	want = golden_f32(g, "alphas_cumprod", &n);
	if (n == 1000) {
		check_close("sched_common alphas_cumprod", ac, want, n, 0, 1e-6);
		diag_exact("alphas_cumprod", ac, want, n);
	}
	free(want);
	want = golden_f32(g, "sigmas_full", &n);
	if (n == 1000) {
		check_close("sched_common sigmas_full", sig, want, n, 0, 1e-6);
		diag_exact("sigmas_full", sig, want, n);
	}
	free(want);
	st_close(g);
}

/* check_close, where NaN in want (DPM2's unused sigma_interpol[0],
 * DPM2 a's last sigmas_up) must be NaN in got too. */
static int
check_close_nan(const char *what, const float *got, const float *want,
    size_t n, double atol, double rtol)
{
	float *g = malloc(n * sizeof *g), *w = malloc(n * sizeof *w);
	int ok;

	if (g == NULL || w == NULL)
		abort();
	for (size_t i = 0; i < n; i++) {
		g[i] = got[i];
		w[i] = want[i];
		if (isnan(w[i]) && isnan(g[i]))
			g[i] = w[i] = 0.0f;
	}
	ok = check_close(what, g, w, n, atol, rtol);
	free(g);
	free(w);
	return ok;
}

/* One sched_* case at S steps: schedule, model inputs, every step. */
/* The golden set and the config the sched_* cases were made with: SD 1.5's,
 * or (sd21-tiny) SD 2.1's with its prediction type and spacing. */
static const char *golden_set = "sd15-tiny";
static enum sched_prediction set_prediction = SCHED_PRED_EPSILON;
static enum sched_spacing set_spacing = SCHED_SPACING_DEFAULT;

static void
test_sched_steps(struct st_file *g, const char *casename, enum sd_sampler sampler,
    enum sd_schedule schedule, int S, int noise_seed, double tol)
{
	struct sched_config cfg;
	struct sd_error err = {0};
	struct sd_scheduler *s;
	struct sd_rng *rng;
	char key[256], what[160];
	float *x_T, *model_in, *model_out, *samples, *pred = NULL, *noise = NULL;
	float *my_in, *my_samples, *my_pred, *want, *zeros = NULL;
	float **call_noise = NULL;
	size_t n, nin, nsamples, nw;
	int calls, nfull;
	const float *ts;

	sched_config_sd15(&cfg);
	cfg.prediction_type = set_prediction;
	cfg.timestep_spacing = set_spacing;
	s = sd_scheduler_new(sampler, schedule, &cfg, S, &err);
	snprintf(what, sizeof what, "%s%s n%d", strcmp(golden_set, "sd15-tiny") == 0 ? "" :
	    strcmp(golden_set, "sd21-tiny") == 0 ? "sd21 " : "sdxl ", casename, S);
	if (!tap_ok(s != NULL, "%s: scheduler built %s", what, err.message))
		return;

#define KEY(name) (snprintf(key, sizeof key, "n%d.%s", S, name), key)
	ts = sd_scheduler_timesteps_full(s, &nfull);
	want = golden_f32(g, KEY("timesteps"), &nw);
	check_timesteps(what, ts, nfull, want, nw);
	free(want);
	calls = sd_scheduler_calls(s);
	if (st_find(g, KEY("sigmas")) != NULL) {
		const float *sig = sd_scheduler_sigmas_full(s);

		want = golden_f32(g, KEY("sigmas"), &nw);
		if (sig != NULL && nw == (size_t)sd_scheduler_nsigmas(s)) {
			char w2[200];

			snprintf(w2, sizeof w2, "%s sigmas", what);
			check_close(w2, sig, want, nw, tol, tol);
			diag_exact(w2, sig, want, nw);
		} else {
			tap_ok(0, "%s: %zu sigmas expected (got %d)", what, nw,
			    sd_scheduler_nsigmas(s));
		}
		free(want);
	}
	{
		static const char *const extra[] = {"sigmas_interpol", "sigmas_up",
		    "sigmas_down"};

		for (size_t e = 0; e < sizeof extra / sizeof extra[0]; e++) {
			const float *x = sd_scheduler_sigmas_extra(s, extra[e]);
			char w2[200];

			if (st_find(g, KEY(extra[e])) == NULL)
				continue;
			want = golden_f32(g, KEY(extra[e]), &nw);
			snprintf(w2, sizeof w2, "%s %s", what, extra[e]);
			if (x != NULL && nw == (size_t)sd_scheduler_nsigmas(s))
				check_close_nan(w2, x, want, nw, tol, tol);
			else
				tap_ok(0, "%s: %zu values expected", w2, nw);
			free(want);
		}
	}
	want = golden_f32(g, KEY("init_noise_sigma"), &nw);
	tap_ok(nw == 1 && fabsf(sd_scheduler_init_noise_sigma(s) - want[0]) <=
	    tol + tol * fabsf(want[0]), "%s: init_noise_sigma %.9g (want %.9g)",
	    what, sd_scheduler_init_noise_sigma(s), want[0]);
	free(want);

	x_T = golden_f32(g, KEY("x_T"), &n);
	model_in = golden_f32(g, KEY("model_in"), &nin);
	model_out = golden_f32(g, KEY("model_out"), NULL);
	samples = golden_f32(g, KEY("samples"), &nsamples);
	if (st_find(g, KEY("pred_x0")) != NULL)
		pred = golden_f32(g, KEY("pred_x0"), NULL);
	if (st_find(g, KEY("noise")) != NULL)
		noise = golden_f32(g, KEY("noise"), NULL);
	if (nin != (size_t)calls * n || nsamples != ((size_t)calls + 1) * n) {
		tap_ok(0, "%s: %d calls of %zu values (golden %zu inputs)", what,
		    calls, n, nin);
		goto out;
	}
	/* the recorded draws by call (noise_step; Euler a's older cases
	 * have one per call and no noise_step) */
	call_noise = calloc((size_t)calls, sizeof *call_noise);
	zeros = calloc(n, sizeof *zeros);
	if (call_noise == NULL || zeros == NULL)
		abort();
	if (noise != NULL) {
		float *ns = NULL;
		size_t nd = 0;

		if (st_find(g, KEY("noise_step")) != NULL)
			ns = golden_f32(g, KEY("noise_step"), &nd);
		else
			nd = (size_t)calls;
		for (size_t d = 0; d < nd; d++) {
			int c = ns != NULL ? (int)ns[d] : (int)d;

			if (c >= 0 && c < calls)
				call_noise[c] = noise + d * n;
		}
		{
			int draws = 0;

			for (int i = 0; i < calls; i++)
				draws += sd_scheduler_draws(s, i);
			tap_ok((size_t)draws == nd, "%s: %d calls draw noise "
			    "(golden %zu draws)", what, draws, nd);
		}
		free(ns);
	}
	my_in = malloc(nin * sizeof *my_in);
	my_samples = malloc(nsamples * sizeof *my_samples);
	my_pred = calloc(nin, sizeof *my_pred);
	if (my_in == NULL || my_samples == NULL || my_pred == NULL)
		abort();

	/* the initial noise is torch.randn(seed 600) */
	{
		struct sd_rng *r = sd_rng_new(SD_RNG_CPU, 600);
		float *x = malloc(n * sizeof *x);

		sd_rng_randn(r, x, n);
		tap_ok(memcmp(x, x_T, n * sizeof *x) == 0,
		    "%s: x_T is randn of seed 600, bit-exact", what);
		free(x);
		sd_rng_free(r);
	}

	/* 1. the recorded model outputs (and recorded noise for Euler a; the
	 * others draw from a generator, which only Euler uses, for nothing) */
	rng = sd_rng_new(SD_RNG_CPU, 601);
	for (size_t k = 0; k < n; k++)
		my_samples[k] = x_T[k] * sd_scheduler_init_noise_sigma(s);
	for (int i = 0; i < calls; i++) {
		float *cur = my_samples + (size_t)i * n, *next = cur + n;

		sd_scheduler_scale_model_input(s, i, cur, my_in + (size_t)i * n, n);
		memcpy(next, cur, n * sizeof *next);
		if (noise != NULL) {
			if (sd_scheduler_step_noise(s, i, model_out + (size_t)i * n,
			    next, n, call_noise[i] != NULL ? call_noise[i] : zeros,
			    &err) < 0)
				break;
		} else if (sd_scheduler_step(s, i, model_out + (size_t)i * n, next,
		    n, rng, &err) < 0) {
			break;
		}
		if (sd_scheduler_pred_x0(s) != NULL)
			memcpy(my_pred + (size_t)i * n, sd_scheduler_pred_x0(s),
			    n * sizeof *my_pred);
	}
	tap_ok(err.message[0] == '\0', "%s: %d steps ran %s", what, calls, err.message);
	snprintf(key, sizeof key, "%s model_in", what);
	check_close(key, my_in, model_in, nin, tol, tol);
	snprintf(key, sizeof key, "%s samples", what);
	check_close(key, my_samples, samples, nsamples, tol, tol);
	diag_exact(key, my_samples, samples, nsamples);
	if (pred != NULL) {
		snprintf(key, sizeof key, "%s pred_x0", what);
		check_close(key, my_pred, pred, nin, tol, tol);
	}

	/* 2. Euler a with its noise drawn from the generator (seed 601) */
	if (noise != NULL && noise_seed >= 0) {
		struct sd_scheduler *s2 = sd_scheduler_new(sampler, schedule, &cfg, S, &err);
		struct sd_rng *r = sd_rng_new(SD_RNG_CPU, (uint64_t)noise_seed);
		float *x = malloc(n * sizeof *x);
		int ok = s2 != NULL && x != NULL;

		for (size_t k = 0; ok && k < n; k++)
			x[k] = x_T[k] * sd_scheduler_init_noise_sigma(s2);
		for (int i = 0; ok && i < calls; i++) {
			ok = sd_scheduler_step(s2, i, model_out + (size_t)i * n, x, n,
			    r, &err) == 0;
			memcpy(my_samples + (size_t)(i + 1) * n, x, n * sizeof *x);
		}
		snprintf(key, sizeof key, "%s samples, noise from the generator "
		    "(seed %d)", what, noise_seed);
		if (ok)
			check_close(key, my_samples + n, samples + n, nsamples - n,
			    tol, tol);
		else
			tap_ok(0, "%s: %s", key, err.message);
		free(x);
		sd_rng_free(r);
		sd_scheduler_free(s2);
	}
	free(my_in);
	free(my_samples);
	free(my_pred);
	sd_rng_free(rng);
out:
	free(call_noise);
	free(zeros);
	free(x_T);
	free(model_in);
	free(model_out);
	free(samples);
	free(pred);
	free(noise);
	sd_scheduler_free(s);
#undef KEY
}

/* tol: the manifest's atol = rtol of the case. */
static void
test_sched_case_tol(const char *file, enum sd_sampler sampler,
    enum sd_schedule schedule, double tol)
{
	static const int steps[] = {1, 2, 4, 10, 20, 25};
	struct st_file *g = golden_open_in(golden_set, file);
	char key[32];

	if (g == NULL) {
		tap_skip("%s: golden not found", file);
		return;
	}
	/* the samplers that draw: the noise from the generator (seed 601)
	 * too, which checks how many draws each call takes */
	for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
		char nkey[32];

		snprintf(key, sizeof key, "n%d.timesteps", steps[i]);
		snprintf(nkey, sizeof nkey, "n%d.noise", steps[i]);
		if (st_find(g, key) != NULL)
			test_sched_steps(g, file, sampler, schedule, steps[i],
			    st_find(g, nkey) != NULL ? 601 : -1, tol);
	}
	st_close(g);
}

static void
test_sched_case(const char *file, enum sd_sampler sampler,
    enum sd_schedule schedule)
{
	test_sched_case_tol(file, sampler, schedule, ATOL);
}

/* The case's params.sched, e.g. "dpmpp_2m_karras". */
static int
parse_sched(const char *name, enum sd_sampler *sampler, enum sd_schedule *schedule)
{
	*schedule = SD_SCHEDULE_NORMAL;
	return sd_sampler_parse_full(name, sampler, schedule) < 0 ? -1 : 0;
}

static json_t *
case_params(struct st_file *g)
{
	const char *p = st_metadata(g, "params");
	json_error_t jerr;

	return p != NULL ? json_loads(p, 0, &jerr) : NULL;
}

static void
test_img2img_loop(struct st_file *g, struct sd_scheduler *s, const char *name,
    float guidance)
{
	const struct sd_tensor *t = st_find(g, "unet_out");
	size_t n, B = t != NULL && t->ndim >= 2 ? (size_t)t->shape[1] : 1;
	float *x0 = golden_f32(g, "init_latents", &n);
	float *noise = golden_f32(g, "noise", NULL);
	float *lat0 = golden_f32(g, "latents_0", NULL);
	float *uout = golden_f32(g, "unet_out", NULL);
	float *uin = golden_f32(g, "unet_in", NULL);
	float *lat = golden_f32(g, "latents", NULL);
	float *anc = st_find(g, "ancestral_noise") ?
	    golden_f32(g, "ancestral_noise", NULL) : NULL;
	int calls = sd_scheduler_calls(s), ok = 1;
	float *x = malloc(n * sizeof *x), *e = malloc(n * sizeof *e);
	float *in = malloc((size_t)calls * n * sizeof *in);
	float *out = malloc((size_t)calls * n * sizeof *out);
	float *zeros = calloc(n, sizeof *zeros);
	struct sd_error err = {0};
	char what[200];

	if (x == NULL || e == NULL || in == NULL || out == NULL || zeros == NULL)
		abort();
	sd_scheduler_add_noise(s, 0, x0, noise, x, n);
	snprintf(what, sizeof what, "%s latents_0 = add_noise(init_latents, noise)", name);
	check_close(what, x, lat0, n, ATOL, RTOL);
	memcpy(x, lat0, n * sizeof *x);
	for (int i = 0; ok && i < calls; i++) {
		const float *u = uout + (size_t)i * B * n, *c = u + (B - 1) * n;

		sd_scheduler_scale_model_input(s, i, x, in + (size_t)i * n, n);
		for (size_t k = 0; k < n; k++)
			e[k] = B == 2 ? u[k] + guidance * (c[k] - u[k]) : u[k];
		if (anc != NULL)
			ok = sd_scheduler_step_noise(s, i, e, x, n, anc + (size_t)i * n,
			    &err) == 0;
		else	/* Euler's draws are unused: zeros stand for them */
			ok = sd_scheduler_step_noise(s, i, e, x, n, zeros, &err) == 0;
		memcpy(out + (size_t)i * n, x, n * sizeof *x);
	}
	tap_ok(ok, "%s: %d steps ran %s", name, calls, err.message);
	snprintf(what, sizeof what, "%s unet_in (the scaled latents)", name);
	check_close(what, in, uin, (size_t)calls * n, ATOL, RTOL);
	snprintf(what, sizeof what, "%s latents after every step (recorded UNet "
	    "outputs)", name);
	check_close(what, out, lat, (size_t)calls * n, ATOL, RTOL);
	diag_exact(what, out, lat, (size_t)calls * n);
	free(x0);
	free(noise);
	free(lat0);
	free(uout);
	free(uin);
	free(lat);
	free(anc);
	free(x);
	free(e);
	free(in);
	free(out);
	free(zeros);
}

/* The scheduler half of a pipeline case: timesteps, sigmas, add_noise
 * coefficients, and (txt2img) every step from the recorded UNet outputs. */
static void
test_pipeline_case(const char *name)
{
	struct st_file *g = golden_open(name);
	struct sched_config cfg;
	struct sd_error err = {0};
	struct sd_scheduler *s = NULL;
	enum sd_sampler sampler = SD_SAMPLER_DDIM;
	enum sd_schedule schedule = SD_SCHEDULE_NORMAL;
	json_t *params;
	float *want;
	size_t nw;
	int steps, calls, nfull;
	double strength;
	char what[200];

	if (g == NULL) {
		tap_skip("%s: golden not found", name);
		return;
	}
	params = case_params(g);
	if (!tap_ok(params != NULL && parse_sched(json_string_value(
	    json_object_get(params, "sched")), &sampler, &schedule) == 0,
	    "%s: params name a known sampler", name))
		goto out;
	steps = (int)json_integer_value(json_object_get(params, "steps"));
	strength = json_number_value(json_object_get(params, "strength"));
	sched_config_sd15(&cfg);
	s = sd_scheduler_new(sampler, schedule, &cfg, steps, &err);
	if (!tap_ok(s != NULL, "%s: scheduler built %s", name, err.message))
		goto out;
	if (json_object_get(params, "strength") != NULL) {
		const float *full;
		int rc = sd_scheduler_set_strength(s, strength, &err);
		int begin = sd_scheduler_begin_index(s);

		tap_ok(rc == 0 && begin == json_integer_value(json_object_get(params,
		    "t_start")), "%s: strength %g gives t_start %d %s", name,
		    strength, begin, err.message);
		want = golden_f32(g, "timesteps_full", &nw);
		snprintf(what, sizeof what, "%s timesteps_full", name);
		full = sd_scheduler_timesteps_full(s, &nfull);
		check_timesteps(what, full, nfull, want, nw);
		free(want);
	}
	calls = sd_scheduler_calls(s);
	{
		float *ts = malloc(((size_t)calls + 1) * sizeof *ts);

		for (int i = 0; i < calls; i++)
			ts[i] = sd_scheduler_timestep(s, i);
		want = golden_f32(g, "timesteps", &nw);
		snprintf(what, sizeof what, "%s timesteps", name);
		check_timesteps(what, ts, calls, want, nw);
		free(want);
		free(ts);
	}
	if (st_find(g, "sigmas_full") != NULL || st_find(g, "sigmas") != NULL) {
		const char *key = st_find(g, "sigmas_full") ? "sigmas_full" : "sigmas";
		const float *sig = sd_scheduler_sigmas_full(s);

		sd_scheduler_timesteps_full(s, &nfull);
		want = golden_f32(g, key, &nw);
		snprintf(what, sizeof what, "%s %s", name, key);
		if (sig != NULL && nw == (size_t)sd_scheduler_nsigmas(s))
			check_close(what, sig, want, nw, ATOL, RTOL);
		else
			tap_ok(0, "%s: %zu values", what, nw);
		free(want);
	}
	if (st_find(g, "add_noise_coef") != NULL) {
		float ab[2];

		sd_scheduler_add_noise_coef(s, 0, &ab[0], &ab[1]);
		want = golden_f32(g, "add_noise_coef", &nw);
		snprintf(what, sizeof what, "%s add_noise_coef", name);
		if (nw == 2)
			check_close(what, ab, want, 2, 0, 1e-6);
		free(want);
	}
	if (st_find(g, "blend_coef") != NULL) {
		float *ab = malloc(2 * (size_t)calls * sizeof *ab);

		/* after step i the pipeline noises to timesteps[i + 1] */
		for (int i = 0; i + 1 < calls; i++)
			sd_scheduler_add_noise_coef(s, i + 1, &ab[2 * i], &ab[2 * i + 1]);
		want = golden_f32(g, "blend_coef", &nw);
		snprintf(what, sizeof what, "%s blend_coef", name);
		if (nw == 2 * ((size_t)calls - 1))
			check_close(what, ab, want, nw, 0, 1e-6);
		else
			tap_ok(0, "%s: %zu values", what, nw);
		free(want);
		free(ab);
	}

	/* img2img: the noised start, then the loop from the recorded UNet
	 * outputs (and Euler a's recorded noise), from t_start on */
	if (st_find(g, "init_latents") != NULL && st_find(g, "latents_0") != NULL &&
	    st_find(g, "mask_in") == NULL)
		test_img2img_loop(g, s, name, (float)json_number_value(
		    json_object_get(params, "guidance")));

	/* txt2img: the whole loop from the recorded (guided) UNet outputs,
	 * the noise of Euler a drawn from the case's seed after the latents */
	if (json_object_get(params, "strength") == NULL &&
	    st_find(g, "unet_out") != NULL && st_find(g, "latents_given") != NULL) {
		const struct sd_tensor *t = st_find(g, "unet_out");
		float *given = golden_f32(g, "latents_given", &nw);
		float *uout = golden_f32(g, "unet_out", NULL);
		float *uin = golden_f32(g, "unet_in", NULL);
		float *lat = golden_f32(g, "latents", NULL);
		float guidance = (float)json_number_value(json_object_get(params,
		    "guidance"));
		size_t n = nw, B = t->ndim >= 2 ? (size_t)t->shape[1] : 1;
		float *x = malloc(n * sizeof *x), *in = malloc((size_t)calls * n * sizeof *in);
		float *out = malloc((size_t)calls * n * sizeof *out), *e = malloc(n * sizeof *e);
		struct sd_rng *r = sd_rng_new(SD_RNG_CPU, (uint64_t)json_integer_value(
		    json_object_get(params, "seed")));
		int ok = 1;

		sd_rng_randn(r, x, n);
		tap_ok(memcmp(x, given, n * sizeof *x) == 0,
		    "%s: latents_given is randn of the seed, bit-exact", name);
		for (size_t k = 0; k < n; k++)
			x[k] = given[k] * sd_scheduler_init_noise_sigma(s);
		for (int i = 0; ok && i < calls; i++) {
			const float *u = uout + (size_t)i * B * n, *c = u + (B - 1) * n;

			sd_scheduler_scale_model_input(s, i, x, in + (size_t)i * n, n);
			for (size_t k = 0; k < n; k++)
				e[k] = B == 2 ? u[k] + guidance * (c[k] - u[k]) : u[k];
			ok = sd_scheduler_step(s, i, e, x, n, r, &err) == 0;
			memcpy(out + (size_t)i * n, x, n * sizeof *x);
		}
		tap_ok(ok, "%s: %d steps ran %s", name, calls, err.message);
		snprintf(what, sizeof what, "%s unet_in (the scaled latents)", name);
		check_close(what, in, uin, (size_t)calls * n, ATOL, RTOL);
		snprintf(what, sizeof what, "%s latents after every step "
		    "(recorded UNet outputs)", name);
		check_close(what, out, lat, (size_t)calls * n, ATOL, RTOL);
		free(given);
		free(uout);
		free(uin);
		free(lat);
		free(x);
		free(in);
		free(out);
		free(e);
		sd_rng_free(r);
	}
out:
	json_decref(params);
	sd_scheduler_free(s);
	st_close(g);
}

static void
test_config(void)
{
	struct sched_config a, b;
	struct sd_error err = {0};
	const char *path = shared_path("testdata/sd15-tiny/diffusers/scheduler/"
	    "scheduler_config.json");
	char tmp[] = "/tmp/sdbatch-sched-XXXXXX";
	int fd;
	FILE *f;

	sched_config_sd15(&b);
	if (path != NULL) {
		int rc = sched_config_load(path, &a, &err);

		tap_ok(rc == 0, "SD 1.5 scheduler_config.json loads %s", err.message);
		tap_ok(rc == 0 && memcmp(&a, &b, sizeof a) == 0,
		    "it equals sched_config_sd15");
	} else {
		tap_skip("SD 1.5 scheduler_config.json: shared/ not found");
		tap_skip("SD 1.5 scheduler_config.json: shared/ not found");
	}
	sd_error_clear(&err);
	tap_ok(sched_config_load("/nonexistent/scheduler_config.json", &a, &err) < 0 &&
	    err.code == SD_ENOINPUT, "a missing config: exit status 66 (%s)", err.message);

	fd = mkstemp(tmp);
	if (fd < 0 || (f = fdopen(fd, "w")) == NULL) {
		tap_skip("temporary file");
		return;
	}
	fputs("{\"beta_schedule\": \"cosine\"}", f);
	fclose(f);
	sd_error_clear(&err);
	tap_ok(sched_config_load(tmp, &a, &err) < 0 && err.code == SD_EDATA &&
	    strstr(err.message, "beta_schedule") != NULL,
	    "an unknown beta_schedule is named (%s)", err.message);

	f = fopen(tmp, "w");
	fputs("{\"num_train_timesteps\": 1000, \"thresholding\": true}", f);
	fclose(f);
	sd_error_clear(&err);
	tap_ok(sched_config_load(tmp, &a, &err) < 0 && err.code == SD_ECONFIG &&
	    strstr(err.message, "thresholding") != NULL,
	    "an unsupported setting is named (%s)", err.message);

	f = fopen(tmp, "w");
	fputs("[1, 2", f);
	fclose(f);
	sd_error_clear(&err);
	tap_ok(sched_config_load(tmp, &a, &err) < 0 && err.code == SD_EDATA,
	    "malformed JSON (%s)", err.message);

	f = fopen(tmp, "w");
	fputs("{\"_class_name\": \"DDIMScheduler\", \"beta_start\": 0.00085, "
	    "\"beta_end\": 0.012, \"beta_schedule\": \"scaled_linear\", "
	    "\"timestep_spacing\": \"trailing\", \"prediction_type\": "
	    "\"v_prediction\", \"solver_order\": 3, \"steps_offset\": 1}", f);
	fclose(f);
	sd_error_clear(&err);
	tap_ok(sched_config_load(tmp, &a, &err) == 0 &&
	    a.timestep_spacing == SCHED_SPACING_TRAILING &&
	    a.prediction_type == SCHED_PRED_V && a.set_alpha_to_one == -1 &&
	    a.clip_sample == -1, "an SD 2.x-style config: keys read, the "
	    "missing ones left to each class %s", err.message);
	unlink(tmp);
}

static void
spacing_case(const char *what, enum sd_sampler sampler,
    const struct sched_config *cfg, int steps, const float *want, size_t nwant)
{
	struct sd_error err = {0};
	struct sd_scheduler *s = sd_scheduler_new(sampler, SD_SCHEDULE_NORMAL,
	    cfg, steps, &err);
	const float *ts;
	int n;

	if (!tap_ok(s != NULL, "%s: built %s", what, err.message))
		return;
	ts = sd_scheduler_timesteps_full(s, &n);
	check_timesteps(what, ts, n, want, nwant);
	sd_scheduler_free(s);
}

/* Timesteps of the spacings and class defaults (values from diffusers). */
static void
test_spacings(void)
{
	static const float ddim_trailing10[] = {999, 899, 799, 699, 599, 499, 399, 299, 199, 99};
	static const float ddim_linspace10[] = {999, 888, 777, 666, 555, 444, 333, 222, 111, 0};
	static const float euler_leading4[] = {751, 501, 251, 1};
	static const float dpm_trailing4[] = {999, 749, 499, 249};
	static const float heun_trailing4[] = {999, 749, 749, 499, 499, 249, 249};
	static const float pndm1[] = {1}, pndm2[] = {501, 1, 1};
	struct sched_config cfg;
	struct sd_error err = {0};
	struct sd_scheduler *s;

	sched_config_sd15(&cfg);
	cfg.timestep_spacing = SCHED_SPACING_TRAILING;
	spacing_case("DDIM trailing 10", SD_SAMPLER_DDIM, &cfg, 10, ddim_trailing10, 10);
	spacing_case("DPM++ trailing 4", SD_SAMPLER_DPMPP_2M, &cfg, 4, dpm_trailing4, 4);
	spacing_case("UniPC trailing 4", SD_SAMPLER_UNIPC, &cfg, 4, dpm_trailing4, 4);
	spacing_case("DEIS trailing 4", SD_SAMPLER_DEIS, &cfg, 4, dpm_trailing4, 4);
	spacing_case("DPM++ 2M SDE trailing 4", SD_SAMPLER_DPMPP_2M_SDE, &cfg, 4,
	    dpm_trailing4, 4);
	spacing_case("Heun trailing 4", SD_SAMPLER_HEUN, &cfg, 4, heun_trailing4, 7);
	cfg.timestep_spacing = SCHED_SPACING_LINSPACE;
	spacing_case("DDIM linspace 10", SD_SAMPLER_DDIM, &cfg, 10, ddim_linspace10, 10);
	cfg.timestep_spacing = SCHED_SPACING_LEADING;
	spacing_case("Euler leading 4", SD_SAMPLER_EULER, &cfg, 4, euler_leading4, 4);
	s = sd_scheduler_new(SD_SAMPLER_EULER, SD_SCHEDULE_NORMAL, &cfg, 4, &err);
	if (s != NULL) {
		/* leading spacing: init_noise_sigma = (max^2 + 1)^0.5 */
		tap_ok(fabsf(sd_scheduler_init_noise_sigma(s) - 4.0f) < 1.0f,
		    "Euler leading: init_noise_sigma sqrt(max^2+1) = %g",
		    sd_scheduler_init_noise_sigma(s));
	}
	sd_scheduler_free(s);
	sched_config_sd15(&cfg);
	spacing_case("PNDM 1 step", SD_SAMPLER_PNDM, &cfg, 1, pndm1, 1);
	spacing_case("PNDM 2 steps", SD_SAMPLER_PNDM, &cfg, 2, pndm2, 3);
}

/* Things that must fail cleanly, and runs without reference data. */
static void
test_errors_and_runs(void)
{
	struct sched_config cfg;
	struct sd_error err = {0};
	struct sd_scheduler *s;
	float x[64], e[64];
	int ok;

	sched_config_sd15(&cfg);
	s = sd_scheduler_new(SD_SAMPLER_DDIM, SD_SCHEDULE_KARRAS, &cfg, 10, &err);
	tap_ok(s == NULL && err.code == SD_EDATA && strcmp(err.field, "schedule") == 0,
	    "karras with ddim is rejected (%s)", err.message);
	sd_error_clear(&err);
	s = sd_scheduler_new(SD_SAMPLER_PNDM, SD_SCHEDULE_KARRAS, &cfg, 10, &err);
	tap_ok(s == NULL && strcmp(err.field, "schedule") == 0,
	    "karras with pndm is rejected");
	sd_error_clear(&err);
	s = sd_scheduler_new(SD_SAMPLER_EULER, SD_SCHEDULE_NORMAL, &cfg, 0, &err);
	tap_ok(s == NULL && strcmp(err.field, "steps") == 0, "0 steps rejected (%s)",
	    err.message);
	sd_error_clear(&err);
	s = sd_scheduler_new(SD_SAMPLER_EULER, SD_SCHEDULE_NORMAL, &cfg, 1001, &err);
	tap_ok(s == NULL && strcmp(err.field, "steps") == 0, "1001 steps rejected");
	sd_error_clear(&err);
	s = sd_scheduler_new(SD_SAMPLER_DDIM, SD_SCHEDULE_NORMAL, &cfg, 8, &err);
	tap_ok(s != NULL && sd_scheduler_set_strength(s, 0.1, &err) < 0 &&
	    strcmp(err.field, "strength") == 0, "strength 0.1 with 8 steps: no step "
	    "left (%s)", err.message);
	sd_error_clear(&err);
	tap_ok(s != NULL && sd_scheduler_set_strength(s, 1.5, &err) < 0,
	    "strength 1.5 rejected");
	sd_error_clear(&err);
	/* 10*0.29 = 2.9 -> 2, 100*0.29 = 28.999999999999996 -> 28 (Python int) */
	tap_ok(s != NULL && sd_scheduler_set_strength(s, 0.29, &err) == 0 &&
	    sd_scheduler_calls(s) == 2, "8 steps, strength 0.29: 2 calls");
	sd_scheduler_free(s);
	s = sd_scheduler_new(SD_SAMPLER_EULER, SD_SCHEDULE_NORMAL, &cfg, 100, &err);
	tap_ok(s != NULL && sd_scheduler_set_strength(s, 0.29, &err) == 0 &&
	    sd_scheduler_calls(s) == 28, "100 steps, strength 0.29: 28 calls "
	    "(in double, like Python)");
	sd_scheduler_free(s);

	/* steps in order only */
	s = sd_scheduler_new(SD_SAMPLER_DDIM, SD_SCHEDULE_NORMAL, &cfg, 4, &err);
	memset(x, 0, sizeof x);
	memset(e, 0, sizeof e);
	tap_ok(s != NULL && sd_scheduler_step(s, 1, e, x, 64, NULL, &err) < 0,
	    "a step out of order is refused (%s)", err.message);
	sd_error_clear(&err);
	tap_ok(s != NULL && sd_scheduler_step(s, 0, e, x, 64, NULL, &err) == 0 &&
	    sd_scheduler_step(s, 1, e, x, 32, NULL, &err) < 0,
	    "a step with another size is refused");
	sd_scheduler_free(s);
	sd_error_clear(&err);
	s = sd_scheduler_new(SD_SAMPLER_EULER_A, SD_SCHEDULE_NORMAL, &cfg, 4, &err);
	tap_ok(s != NULL && sd_scheduler_step(s, 0, e, x, 64, NULL, &err) < 0,
	    "euler_a without a generator is refused (%s)", err.message);
	sd_scheduler_free(s);

	/* every sampler and schedule runs to a finite end, with 1, 2 and 7
	 * steps, epsilon and v-prediction; PNDM's PRK mode */
	for (int smp = 0; smp < SD_SAMPLER_COUNT; smp++) {
		for (int sch = 0; sch < 2; sch++) {
			for (int prk = 0; prk < 2; prk++) {
			for (int nst = 1; nst <= 7; nst += nst == 2 ? 5 : 1) {
				struct sd_rng *r;
				int calls;

				if (prk && (smp != SD_SAMPLER_PNDM || nst != 7))
					continue;
				r = sd_rng_new(SD_RNG_CPU, 7);
				sched_config_sd15(&cfg);
				cfg.skip_prk_steps = prk ? 0 : 1;
				cfg.prediction_type = sch ? SCHED_PRED_V : SCHED_PRED_EPSILON;
				sd_error_clear(&err);
				s = sd_scheduler_new((enum sd_sampler)smp,
				    (enum sd_schedule)sch, &cfg, nst, &err);
				if (s == NULL) {
					tap_ok(sch == 1 && (smp == SD_SAMPLER_DDIM ||
					    smp == SD_SAMPLER_PNDM || smp == SD_SAMPLER_LCM),
					    "%s %s: %s",
					    sd_sampler_name(smp), sd_schedule_name(sch),
					    err.message);
					sd_rng_free(r);
					continue;
				}
				calls = sd_scheduler_calls(s);
				sd_rng_randn(r, x, 64);
				for (int k = 0; k < 64; k++)
					x[k] *= sd_scheduler_init_noise_sigma(s);
				ok = 1;
				for (int i = 0; ok && i < calls; i++) {
					for (int k = 0; k < 64; k++)
						e[k] = 0.1f * x[k] / sd_scheduler_input_divisor(s, i);
					ok = sd_scheduler_step(s, i, e, x, 64, r, &err) == 0;
				}
				for (int k = 0; ok && k < 64; k++)
					ok = isfinite(x[k]);
				tap_ok(ok && calls == (prk ? calls :
				    sd_sampler_model_calls(smp, nst)),
				    "%s %s%s%s, %d steps: %d calls, finite %s",
				    sd_sampler_name(smp), sd_schedule_name(sch),
				    prk ? " (PRK warm-up)" : "",
				    sch ? " v_prediction" : "", nst, calls, err.message);
				if (prk)
					tap_ok(calls == 12 + 7 - 3, "PNDM with PRK: 12 + "
					    "steps - 3 calls (%d)", calls);
				sd_scheduler_free(s);
				sd_rng_free(r);
			}
			}
		}
	}
}

/* ------------------------------------------------------ flow matching */

/* Within one float32 ulp each (the manifest's rule for the flow-matching
 * timesteps and sigmas). */
static int
check_ulp(const char *what, const float *got, int ngot, const float *want,
    size_t nwant)
{
	int ok = (size_t)ngot == nwant, exact = 0;

	for (int i = 0; ok && i < ngot; i++) {
		float up = nextafterf(want[i], INFINITY), down = nextafterf(want[i], -INFINITY);

		ok = got[i] == want[i] || got[i] == up || got[i] == down;
		exact += got[i] == want[i];
		if (!ok)
			tap_diag("%s[%d]: got %.9g, want %.9g", what, i, got[i], want[i]);
	}
	return tap_ok(ok, "%s: %d values within 1 ulp (%d exact)", what, ngot, exact);
}

/* The fake model of the golden: 0.1*x + cos(float32(t)/100). */
static void
flow_fake_model(const float *x, float t, float *v, size_t n)
{
	float c = cosf(t / 100.0f);

	for (size_t k = 0; k < n; k++)
		v[k] = 0.1f * x[k] + c;
}

/* sched_flowmatch: FlowMatchEulerDiscreteScheduler with SD3's config,
 * 4/10/20 steps: timesteps, sigmas, and the samples from x_T and the
 * recorded model outputs. */
static void
test_flowmatch(void)
{
	static const int steps[] = {4, 10, 20};
	struct st_file *g = golden_open_in("sd3-tiny", "sched_flowmatch");
	struct sched_config cfg;
	struct sd_error err = {0};
	char key[64], what[160];

	if (g == NULL) {
		tap_skip("sched_flowmatch: golden not found");
		return;
	}
	sched_config_sd3(&cfg);
	for (size_t si = 0; si < sizeof steps / sizeof steps[0]; si++) {
		int S = steps[si], nfull, ok = 1;
		struct sd_scheduler *s = sd_scheduler_new(SD_SAMPLER_EULER,
		    SD_SCHEDULE_NORMAL, &cfg, S, &err);
		float *want, *xT, *mo, *samples, *x, *fake;
		const float *ts;
		size_t nw, n, nm, ns;

		if (!tap_ok(s != NULL, "flow euler %d steps: built %s", S, err.message))
			continue;
		snprintf(key, sizeof key, "n%d.timesteps", S);
		want = golden_f32(g, key, &nw);
		ts = sd_scheduler_timesteps_full(s, &nfull);
		snprintf(what, sizeof what, "sched_flowmatch %s", key);
		check_ulp(what, ts, nfull, want, nw);
		free(want);
		snprintf(key, sizeof key, "n%d.sigmas", S);
		want = golden_f32(g, key, &nw);
		snprintf(what, sizeof what, "sched_flowmatch %s", key);
		check_ulp(what, sd_scheduler_sigmas_full(s), sd_scheduler_nsigmas(s),
		    want, nw);
		free(want);
		tap_ok(sd_scheduler_calls(s) == S && sd_scheduler_init_noise_sigma(s) == 1.0f &&
		    sd_scheduler_input_divisor(s, 0) == 1.0f &&
		    sd_scheduler_input_divisor(s, S - 1) == 1.0f &&
		    sd_scheduler_model_calls_per_step(s) == 1 && !sd_scheduler_draws(s, 0),
		    "flow euler %d steps: %d calls, no noise scaling, input divisor 1, "
		    "no draws", S, sd_scheduler_calls(s));

		snprintf(key, sizeof key, "n%d.x_T", S);
		xT = golden_f32(g, key, &n);
		snprintf(key, sizeof key, "n%d.model_out", S);
		mo = golden_f32(g, key, &nm);
		snprintf(key, sizeof key, "n%d.samples", S);
		samples = golden_f32(g, key, &ns);
		if (!tap_ok(n > 0 && nm == (size_t)S * n && ns == ((size_t)S + 1) * n,
		    "flow euler %d steps: golden shapes", S)) {
			free(xT);
			free(mo);
			free(samples);
			sd_scheduler_free(s);
			continue;
		}
		x = malloc(n * sizeof *x);
		fake = malloc(n * sizeof *fake);
		memcpy(x, xT, n * sizeof *x);
		tap_ok(memcmp(samples, xT, n * sizeof *x) == 0, "flow euler %d steps: "
		    "samples[0] is x_T (no init_noise_sigma scaling)", S);
		{
			/* x_T is randn of seed 500 */
			struct sd_rng *r = sd_rng_new(SD_RNG_CPU, 500);

			sd_rng_randn(r, fake, n);
			tap_ok(memcmp(fake, xT, n * sizeof *x) == 0,
			    "flow euler %d steps: x_T is randn(seed 500)", S);
			sd_rng_free(r);
		}
		for (int i = 0; ok && i < S; i++) {
			/* the model is called with the fractional timestep */
			flow_fake_model(samples + (size_t)i * n, sd_scheduler_timestep(s, i),
			    fake, n);
			snprintf(what, sizeof what, "flow euler %d steps: model_out[%d] = "
			    "0.1*x + cos(t/100)", S, i);
			if (i == 0 || i == S - 1)
				check_close(what, fake, mo + (size_t)i * n, n, 1e-6, 1e-6);
			ok = sd_scheduler_step(s, i, mo + (size_t)i * n, x, n, NULL, &err) == 0;
			snprintf(what, sizeof what, "flow euler %d steps: sample %d", S, i + 1);
			if (ok && !check_close(what, x, samples + (size_t)(i + 1) * n, n,
			    ATOL, RTOL))
				ok = 0;
		}
		tap_ok(ok, "flow euler %d steps: every step within the tolerance %s",
		    S, err.message);
		tap_ok(sd_scheduler_pred_x0(s) != NULL, "flow euler: a predicted x0 "
		    "(sample - sigma*v) for previews");
		free(x);
		free(fake);
		free(xT);
		free(mo);
		free(samples);
		sd_scheduler_free(s);
	}
	st_close(g);
}

/* FlowMatchHeunDiscreteScheduler, checked by construction: its schedule
 * is Euler's with each sigma but the first and last twice, and its steps
 * are Heun's trapezoid on the velocity (diffusers 0.30.3's code written
 * out below in float32, one torch operation at a time). */
static void
test_flow_heun(void)
{
	enum { N = 48 };
	struct sched_config cfg;
	struct sd_error err = {0};
	struct sd_scheduler *e, *h;
	float x[N], ref[N], v[N], d1[N], keep[N];
	int ok = 1, ne, nh;

	sched_config_sd3(&cfg);
	e = sd_scheduler_new(SD_SAMPLER_EULER, SD_SCHEDULE_NORMAL, &cfg, 5, &err);
	h = sd_scheduler_new(SD_SAMPLER_HEUN, SD_SCHEDULE_NORMAL, &cfg, 5, &err);
	if (!tap_ok(e != NULL && h != NULL, "flow heun 5 steps: built %s", err.message)) {
		sd_scheduler_free(e);
		sd_scheduler_free(h);
		return;
	}
	{
		const float *te = sd_scheduler_timesteps_full(e, &ne);
		const float *th = sd_scheduler_timesteps_full(h, &nh);
		const float *se = sd_scheduler_sigmas_full(e), *sh = sd_scheduler_sigmas_full(h);
		int good = nh == 2 * ne - 1 && sd_scheduler_nsigmas(h) == 2 * ne &&
		    th[0] == te[0] && sh[0] == se[0] && sh[2 * ne - 1] == 0.0f;

		for (int j = 1; good && j < ne; j++)
			good = th[2 * j - 1] == te[j] && th[2 * j] == te[j] &&
			    sh[2 * j - 1] == se[j] && sh[2 * j] == se[j];
		tap_ok(good, "flow heun: timesteps [t0, t1, t1, ..., t4, t4], sigmas "
		    "[s0, s1, s1, ..., s4, s4, 0] (%d calls)", nh);
		tap_ok(sd_scheduler_calls(h) == 9 && sd_scheduler_model_calls_per_step(h) == 2 &&
		    sd_sampler_model_calls(SD_SAMPLER_HEUN, 5) == 9 &&
		    sd_scheduler_input_divisor(h, 1) == 1.0f &&
		    sd_scheduler_init_noise_sigma(h) == 1.0f && !sd_scheduler_draws(h, 0),
		    "flow heun: 2 steps - 1 calls, input divisor 1, no draws");
		for (int k = 0; k < N; k++)
			x[k] = ref[k] = (float)sin(0.37 * k + 0.1);
		/* the reference */
		for (int i = 0; i < nh; i++) {
			float t = th[i];

			flow_fake_model(ref, t, v, N);
			if (i % 2 == 0) {
				/* first order: sigma = sigmas[i], next = sigmas[i + 1] */
				float sigma = sh[i], next = sh[i + 1], dt = next - sigma;

				for (int k = 0; k < N; k++) {
					float den = ref[k] - v[k] * sigma;

					d1[k] = (ref[k] - den) / sigma;
					keep[k] = ref[k];
					ref[k] = ref[k] + d1[k] * dt;
				}
			} else {
				float sigma = sh[i - 1], next = sh[i], dt = next - sigma;

				for (int k = 0; k < N; k++) {
					float den = ref[k] - v[k] * next;
					float d2 = (ref[k] - den) / next;
					float d = 0.5f * (d1[k] + d2);

					ref[k] = keep[k] + d * dt;
				}
			}
		}
		for (int i = 0; ok && i < nh; i++) {
			flow_fake_model(x, sd_scheduler_timestep(h, i), v, N);
			ok = sd_scheduler_step(h, i, v, x, N, NULL, &err) == 0;
		}
		tap_ok(ok && memcmp(x, ref, sizeof x) == 0, "flow heun: 9 calls equal the "
		    "written-out FlowMatchHeunDiscreteScheduler bit for bit %s", err.message);
	}
	sd_scheduler_free(h);
	/* img2img on Heun: t_start counts two calls a step */
	h = sd_scheduler_new(SD_SAMPLER_HEUN, SD_SCHEDULE_NORMAL, &cfg, 10, &err);
	tap_ok(h != NULL && sd_scheduler_set_strength(h, 0.75, &err) == 0 &&
	    sd_scheduler_begin_index(h) == 4 && sd_scheduler_calls(h) == 15,
	    "flow heun, 10 steps at 0.75: begins at call 4 (t_start 2), 15 calls %s",
	    err.message);
	if (h != NULL) {
		float a, b;

		sd_scheduler_add_noise_coef(h, 0, &a, &b);
		tap_ok(b == sd_scheduler_sigmas_full(h)[4] && a == 1.0f - b,
		    "flow heun: scale_noise at sigmas[4] = the step's sigma");
	}
	sd_scheduler_free(h);
	sd_scheduler_free(e);
}

/* The img2img cases' scheduler side: the scheduler built from the case's
 * scheduler_config (via the loader), SD3's t_start rule, scale_noise and
 * the steps from the recorded transformer outputs. */
static void
test_flow_img2img(const char *name)
{
	struct st_file *g = golden_open_in("sd3-tiny", name);
	struct sched_config cfg;
	struct sd_error err = {0};
	struct sd_scheduler *s = NULL;
	json_t *params;
	char tmp[] = "/tmp/sdbatch-flowcfg-XXXXXX", what[200];
	float *want, *x0 = NULL, *noise = NULL, *lat0 = NULL, *mo = NULL, *lat = NULL;
	float *x = NULL, *e = NULL, a, b, guidance;
	const float *full;
	size_t nw, n = 0, B;
	int steps, nfull, calls, ok = 1, fd;
	double strength;
	FILE *f;

	if (g == NULL) {
		tap_skip("%s: golden not found", name);
		return;
	}
	params = case_params(g);
	fd = mkstemp(tmp);
	if (params == NULL || fd < 0 || (f = fdopen(fd, "w")) == NULL) {
		tap_ok(0, "%s: params and a temporary file", name);
		goto out;
	}
	/* the case records the scheduler's config without its class name */
	json_object_set_new(json_object_get(params, "scheduler_config"), "_class_name",
	    json_string("FlowMatchEulerDiscreteScheduler"));
	json_dumpf(json_object_get(params, "scheduler_config"), f, 0);
	fclose(f);
	tap_ok(sched_config_load(tmp, &cfg, &err) == 0 &&
	    cfg.prediction_type == SCHED_PRED_FLOW && cfg.shift == 3.0 &&
	    cfg.num_train_timesteps == 1000, "%s: its scheduler_config (with "
	    "use_dynamic_shifting false and the base/max shift keys) loads as SD3's %s",
	    name, err.message);
	unlink(tmp);
	sched_config_sd3(&cfg);
	steps = (int)json_integer_value(json_object_get(params, "steps"));
	strength = json_number_value(json_object_get(params, "strength"));
	guidance = (float)json_number_value(json_object_get(params, "guidance"));
	s = sd_scheduler_new(SD_SAMPLER_EULER, SD_SCHEDULE_NORMAL, &cfg, steps, &err);
	if (!tap_ok(s != NULL, "%s: scheduler built %s", name, err.message))
		goto out;
	full = sd_scheduler_timesteps_full(s, &nfull);
	want = golden_f32(g, "timesteps_full", &nw);
	snprintf(what, sizeof what, "%s timesteps_full", name);
	check_timesteps(what, full, nfull, want, nw);
	free(want);
	want = golden_f32(g, "sigmas_full", &nw);
	snprintf(what, sizeof what, "%s sigmas_full", name);
	check_ulp(what, sd_scheduler_sigmas_full(s), sd_scheduler_nsigmas(s), want, nw);
	free(want);
	ok = sd_scheduler_set_strength(s, strength, &err) == 0;
	tap_ok(ok && sd_scheduler_begin_index(s) == json_integer_value(json_object_get(params,
	    "t_start")) && sd_scheduler_calls(s) == json_integer_value(
	    json_object_get(params, "steps_run")), "%s: strength %g of %d steps: "
	    "t_start %d, %d steps run (init_timestep a float) %s", name, strength,
	    steps, sd_scheduler_begin_index(s), sd_scheduler_calls(s), err.message);
	sd_scheduler_add_noise_coef(s, 0, &a, &b);
	tap_ok(b == (float)json_number_value(json_object_get(params,
	    "scale_noise_sigma")) && a == 1.0f - b, "%s: scale_noise sigma %.9g", name, b);

	x0 = golden_f32(g, "init_latents", &n);
	noise = golden_f32(g, "noise", NULL);
	lat0 = golden_f32(g, "latents_0", NULL);
	mo = golden_f32(g, "model_out", &nw);
	lat = golden_f32(g, "latents", NULL);
	calls = sd_scheduler_calls(s);
	B = n > 0 ? nw / n / (size_t)calls : 0;
	if (!tap_ok(n > 0 && (B == 1 || B == 2) && nw == (size_t)calls * B * n,
	    "%s: golden shapes (batch %zu)", name, B))
		goto out;
	x = malloc(n * sizeof *x);
	e = malloc(n * sizeof *e);
	sd_scheduler_add_noise(s, 0, x0, noise, x, n);
	snprintf(what, sizeof what, "%s latents_0 = scale_noise(init_latents, noise)", name);
	check_close(what, x, lat0, n, ATOL, RTOL);
	diag_exact(what, x, lat0, n);
	memcpy(x, lat0, n * sizeof *x);
	for (int i = 0; ok && i < calls; i++) {
		const float *u = mo + (size_t)i * B * n, *c = u + (B - 1) * n;

		for (size_t k = 0; k < n; k++)
			e[k] = B == 2 ? u[k] + guidance * (c[k] - u[k]) : u[k];
		ok = sd_scheduler_step(s, i, e, x, n, NULL, &err) == 0;
		snprintf(what, sizeof what, "%s latents after step %d (recorded "
		    "transformer outputs)", name, i);
		if (ok)
			ok = check_close(what, x, lat + (size_t)i * n, n, ATOL, RTOL);
	}
	tap_ok(ok, "%s: %d steps ran within the tolerance %s", name, calls, err.message);
out:
	free(x);
	free(e);
	free(x0);
	free(noise);
	free(lat0);
	free(mo);
	free(lat);
	json_decref(params);
	sd_scheduler_free(s);
	st_close(g);
}

/* What flow-matching configs refuse, and the config loader's flow keys. */
static void
test_flow_errors(void)
{
	struct sched_config cfg, a;
	struct sd_error err = {0};
	struct sd_scheduler *s;
	const char *path = shared_path("testdata/sd3-tiny/diffusers/scheduler/"
	    "scheduler_config.json");
	char tmp[] = "/tmp/sdbatch-flowerr-XXXXXX";
	int fd, rejected = 0, nrej = 0;
	FILE *f;

	sched_config_sd3(&cfg);
	for (int smp = 0; smp < SD_SAMPLER_COUNT; smp++) {
		if (smp == SD_SAMPLER_EULER || smp == SD_SAMPLER_HEUN)
			continue;
		sd_error_clear(&err);
		s = sd_scheduler_new((enum sd_sampler)smp, SD_SCHEDULE_NORMAL, &cfg, 10, &err);
		nrej++;
		if (s == NULL && err.code == SD_EDATA && strcmp(err.field, "sampler") == 0 &&
		    strstr(err.message, sd_sampler_name(smp)) != NULL &&
		    strstr(err.message, "euler") != NULL && strstr(err.message, "heun") != NULL)
			rejected++;
		else
			tap_diag("%s on a flow config: %s", sd_sampler_name(smp),
			    s ? "built" : err.message);
		sd_scheduler_free(s);
	}
	tap_ok(rejected == nrej, "every sampler but euler and heun is refused on a "
	    "flow config, naming it and the ones that work (%d of %d)", rejected, nrej);
	sd_error_clear(&err);
	s = sd_scheduler_new(SD_SAMPLER_DPMPP_2M, SD_SCHEDULE_NORMAL, &cfg, 10, &err);
	tap_diag("e.g. %s", err.message);
	sd_scheduler_free(s);
	sd_error_clear(&err);
	s = sd_scheduler_new(SD_SAMPLER_EULER, SD_SCHEDULE_KARRAS, &cfg, 10, &err);
	tap_ok(s == NULL && err.code == SD_EDATA && strcmp(err.field, "schedule") == 0 &&
	    strstr(err.message, "karras") != NULL, "karras on a flow config is "
	    "refused (%s)", err.message);
	sd_scheduler_free(s);
	sd_error_clear(&err);
	s = sd_scheduler_new(SD_SAMPLER_EULER, SD_SCHEDULE_NORMAL, &cfg, 10, &err);
	tap_ok(s != NULL && sd_scheduler_set_strength(s, 1e-300, &err) < 0 &&
	    strcmp(err.field, "strength") == 0, "flow: a strength that leaves no "
	    "step is refused (%s)", err.message);
	sd_scheduler_free(s);
	sd_error_clear(&err);
	s = sd_scheduler_new(SD_SAMPLER_EULER, SD_SCHEDULE_NORMAL, &cfg, 10, &err);
	tap_ok(s != NULL && sd_scheduler_set_strength(s, 0.05, &err) == 0 &&
	    sd_scheduler_calls(s) == 1 && sd_scheduler_begin_index(s) == 9,
	    "flow: 10 steps at 0.05 run 1 step (init_timestep 0.5, t_start 9), "
	    "where SD 1.5's rule runs none");
	sd_scheduler_free(s);
	s = sd_scheduler_new(SD_SAMPLER_EULER, SD_SCHEDULE_NORMAL, &cfg, 10, &err);
	tap_ok(s != NULL && sd_scheduler_set_strength(s, 1.0, &err) == 0 &&
	    sd_scheduler_calls(s) == 10 && sd_scheduler_begin_index(s) == 0,
	    "flow: strength 1 runs every step");
	sd_scheduler_free(s);
	/* another shift: the sigmas move, the ends stay */
	cfg.shift = 1.0;
	s = sd_scheduler_new(SD_SAMPLER_EULER, SD_SCHEDULE_NORMAL, &cfg, 4, &err);
	tap_ok(s != NULL && sd_scheduler_sigmas_full(s)[0] == 1.0f &&
	    fabsf(sd_scheduler_sigmas_full(s)[1] - (float)(1 - 0.999 / 3)) < 1e-6f &&
	    sd_scheduler_sigmas_full(s)[4] == 0.0f && sd_scheduler_timestep(s, 0) == 1000.0f,
	    "flow shift 1: unshifted linear sigmas 1, %.7g, ..., 0",
	    s ? sd_scheduler_sigmas_full(s)[1] : 0);
	sd_scheduler_free(s);

	if (path != NULL) {
		sd_error_clear(&err);
		sched_config_sd3(&cfg);
		tap_ok(sched_config_load(path, &a, &err) == 0 &&
		    memcmp(&a, &cfg, sizeof a) == 0, "SD3's scheduler_config.json "
		    "loads and equals sched_config_sd3 %s", err.message);
	} else {
		tap_skip("SD3 scheduler_config.json: shared/ not found");
	}
	fd = mkstemp(tmp);
	if (fd < 0 || (f = fdopen(fd, "w")) == NULL) {
		tap_skip("temporary file");
		return;
	}
	fputs("{\"_class_name\": \"FlowMatchEulerDiscreteScheduler\", \"shift\": 3.0, "
	    "\"use_dynamic_shifting\": true}", f);
	fclose(f);
	sd_error_clear(&err);
	tap_ok(sched_config_load(tmp, &a, &err) < 0 && err.code == SD_ECONFIG &&
	    strstr(err.message, "use_dynamic_shifting") != NULL,
	    "use_dynamic_shifting true is named (%s)", err.message);
	f = fopen(tmp, "w");
	fputs("{\"_class_name\": \"FlowMatchEulerDiscreteScheduler\", \"shift\": -1}", f);
	fclose(f);
	sd_error_clear(&err);
	tap_ok(sched_config_load(tmp, &a, &err) < 0 && err.code == SD_EDATA &&
	    strstr(err.message, "shift") != NULL, "a negative shift is named (%s)",
	    err.message);
	f = fopen(tmp, "w");
	fputs("{\"_class_name\": \"FlowMatchEulerDiscreteScheduler\", \"shift\": 3.0, "
	    "\"invert_sigmas\": true}", f);
	fclose(f);
	sd_error_clear(&err);
	tap_ok(sched_config_load(tmp, &a, &err) < 0 && err.code == SD_ECONFIG &&
	    strstr(err.message, "invert_sigmas") != NULL, "invert_sigmas true is "
	    "named (%s)", err.message);
	f = fopen(tmp, "w");
	fputs("{\"_class_name\": \"FlowMatchLCMScheduler\", \"shift\": 3.0}", f);
	fclose(f);
	sd_error_clear(&err);
	tap_ok(sched_config_load(tmp, &a, &err) < 0 && err.code == SD_ECONFIG &&
	    strstr(err.message, "FlowMatchLCMScheduler") != NULL, "an unknown "
	    "flow-matching class is named (%s)", err.message);
	f = fopen(tmp, "w");
	fputs("{\"_class_name\": \"FlowMatchHeunDiscreteScheduler\", \"shift\": 2.5, "
	    "\"num_train_timesteps\": 500, \"prediction_type\": \"v_prediction\", "
	    "\"beta_schedule\": \"nonsense\"}", f);
	fclose(f);
	sd_error_clear(&err);
	tap_ok(sched_config_load(tmp, &a, &err) == 0 && a.prediction_type == SCHED_PRED_FLOW &&
	    a.shift == 2.5 && a.num_train_timesteps == 500,
	    "a Heun flow config: shift and num_train_timesteps read, other "
	    "classes' keys ignored %s", err.message);
	unlink(tmp);
}

static void
test_names(void)
{
	struct sd_params p;
	enum sd_sampler smp;
	enum sd_schedule sch;
	enum sd_rng_kind rk;
	enum sd_prediction pred;
	enum sd_spacing sp;
	int ok = 1;

	for (int i = 0; i < SD_SAMPLER_COUNT; i++)
		ok &= sd_sampler_parse(sd_sampler_name(i), &smp) == 0 &&
		    smp == (enum sd_sampler)i;
	tap_ok(ok, "every sampler name parses back");
	ok = 1;
	for (int i = 0; i < SD_SAMPLER_COUNT; i++)
		ok &= sd_sampler_parse(sd_sampler_a1111_name(i), &smp) == 0 &&
		    smp == (enum sd_sampler)i;
	tap_ok(ok, "every A1111 name parses to its sampler");
	tap_ok(sd_sampler_parse("eulera", &smp) < 0 && sd_sampler_parse("", &smp) < 0 &&
	    sd_sampler_parse("  ", &smp) < 0 && sd_sampler_parse("euler\xc3\xa0", &smp) < 0 &&
	    sd_sampler_parse("dpmpp_2m_karras", &smp) < 0 &&
	    sd_sampler_parse("dpm+ 2m", &smp) < 0 &&
	    sd_sampler_parse(NULL, &smp) < 0, "unknown sampler names fail");
	tap_ok(sd_sampler_parse("Euler a", &smp) == 0 && smp == SD_SAMPLER_EULER_A &&
	    sd_sampler_parse("EULER-A", &smp) == 0 && smp == SD_SAMPLER_EULER_A &&
	    sd_sampler_parse("euler_ancestral", &smp) == 0 && smp == SD_SAMPLER_EULER_A &&
	    sd_sampler_parse("DPM2 a", &smp) == 0 && smp == SD_SAMPLER_DPM2_A &&
	    sd_sampler_parse("dpm_2_ancestral", &smp) == 0 && smp == SD_SAMPLER_DPM2_A &&
	    sd_sampler_parse("dpm_2", &smp) == 0 && smp == SD_SAMPLER_DPM2 &&
	    sd_sampler_parse("uni_pc_bh2", &smp) == 0 && smp == SD_SAMPLER_UNIPC &&
	    sd_sampler_parse("DPM++ 2M SDE", &smp) == 0 && smp == SD_SAMPLER_DPMPP_2M_SDE &&
	    sd_sampler_parse("PLMS", &smp) == 0 && smp == SD_SAMPLER_PNDM &&
	    sd_sampler_parse("lcm", &smp) == 0 && smp == SD_SAMPLER_LCM,
	    "names as users type them (A1111, diffusers, ComfyUI), any case");
	sch = SD_SCHEDULE_NORMAL;
	tap_ok(sd_sampler_parse_full("DPM++ 2M SDE Karras", &smp, &sch) == 1 &&
	    smp == SD_SAMPLER_DPMPP_2M_SDE && sch == SD_SCHEDULE_KARRAS,
	    "\"DPM++ 2M SDE Karras\": the sampler and the karras schedule");
	sch = SD_SCHEDULE_NORMAL;
	tap_ok(sd_sampler_parse_full("dpmpp_2m_sde_karras", &smp, &sch) == 1 &&
	    smp == SD_SAMPLER_DPMPP_2M_SDE && sch == SD_SCHEDULE_KARRAS &&
	    sd_sampler_parse_full("Heun", &smp, &sch) == 0 && smp == SD_SAMPLER_HEUN &&
	    sch == SD_SCHEDULE_KARRAS && sd_sampler_parse_full("karras", &smp, &sch) < 0 &&
	    sd_sampler_parse_full("_karras", &smp, &sch) < 0 &&
	    sd_sampler_parse_full("foo karras", &smp, &sch) < 0,
	    "dpmpp_2m_sde_karras; a name without a schedule leaves it alone");
	tap_ok(strcmp(sd_sampler_a1111_name(SD_SAMPLER_EULER_A), "Euler a") == 0 &&
	    strcmp(sd_sampler_a1111_name(SD_SAMPLER_DPMPP_2M), "DPM++ 2M") == 0 &&
	    strcmp(sd_sampler_a1111_name(SD_SAMPLER_DPMPP_2M_SDE), "DPM++ 2M SDE") == 0 &&
	    strcmp(sd_sampler_a1111_name(SD_SAMPLER_DPM2_A), "DPM2 a") == 0,
	    "A1111 names");
	tap_ok(sd_schedule_parse("karras", &sch) == 0 && sch == SD_SCHEDULE_KARRAS &&
	    sd_schedule_parse("Karras", &sch) == 0 && sch == SD_SCHEDULE_KARRAS &&
	    sd_schedule_parse("exponential", &sch) < 0 &&
	    strcmp(sd_schedule_name(SD_SCHEDULE_NORMAL), "normal") == 0, "schedule names");
	tap_ok(sd_rng_parse("cuda", &rk) == 0 && rk == SD_RNG_CUDA &&
	    sd_rng_parse("gpu", &rk) < 0 && strcmp(sd_rng_name(SD_RNG_CPU), "cpu") == 0,
	    "rng names");
	tap_ok(sd_prediction_parse("v", &pred) == 0 && pred == SD_PREDICTION_V &&
	    sd_prediction_parse("V", &pred) < 0 && strcmp(sd_prediction_name(SD_PREDICTION_EPSILON), "epsilon") == 0 &&
	    sd_spacing_parse("trailing", &sp) == 0 && sp == SD_SPACING_TRAILING &&
	    sd_spacing_parse("first", &sp) < 0 && strcmp(sd_spacing_name(SD_SPACING_AUTO), "auto") == 0,
	    "prediction and spacing names");
	sd_params_init(&p);
	tap_ok(p.width == 0 && p.height == 0 && p.steps == 0 &&
	    p.guidance_scale < 0 && p.sampler == SD_SAMPLER_AUTO &&
	    p.prediction == SD_PREDICTION_AUTO && p.spacing == SD_SPACING_AUTO &&
	    p.schedule == SD_SCHEDULE_NORMAL && p.seed == 0 && p.rng == SD_RNG_CPU &&
	    p.clip_skip == 1 && p.strength == 0.75f && p.negative_prompt == NULL &&
	    p.shift == 0 && p.t5 == 1 &&
	    p.init_rgb == NULL && p.mask_grey == NULL, "sd_params_init defaults");
}

int
main(void)
{
	static const char *const pipeline_cases[] = {
		"txt2img_ddim_s4", "txt2img_ddim_s8_64x128", "txt2img_euler_a_s4",
		"txt2img_euler_a_s8_64x128", "txt2img_dpmpp2m_s4",
		"txt2img_dpmpp2m_s8_64x128", "txt2img_ddim_s4_nocfg_128x64",
		"txt2img_dpmpp2m_karras_s4_64x128", "txt2img_pndm_s4_128x64",
		"img2img_ddim_s10_str075", "img2img_euler_a_s10_str075",
		"img2img_dpmpp2m_s10_str075", "img2img_ddim_s8_str03_64x128",
		"img2img_euler_a_s8_str03_64x128", "img2img_dpmpp2m_s8_str03_64x128",
		"inpaint4_ddim_s10_str1", "inpaint4_euler_a_s10_str1_64x128",
		"inpaint4_ddim_s10_str08_64x128", "inpaint4_euler_a_s10_str08_64x128",
		"inpaint9_ddim_s10_str1", "inpaint9_euler_a_s10_str1_64x128",
		"inpaint9_ddim_s10_str08_64x128", "inpaint9_euler_a_s10_str08_64x128",
		"txt2img_heun_s4", "txt2img_dpm2_s4_64x128", "txt2img_dpm2_a_s4_64x128",
		"txt2img_unipc_s4", "txt2img_dpmpp2m_sde_s4_64x128",
		"txt2img_dpmpp2m_sde_karras_s4", "txt2img_deis_s4_64x128",
		"txt2img_lcm_s4_nocfg_64x128", "txt2img_euler_karras_s4_64x128",
		"txt2img_lms_karras_s4_64x128", "txt2img_ddim_s4_72x104",
		"txt2img_euler_a_s4_120x88", "img2img_dpmpp2m_karras_s10_str06",
		"img2img_euler_karras_s10_str08_64x128",
		"inpaint4_dpmpp2m_karras_s8_str075_64x128",
	};

	test_names();
	test_spacings();
	test_errors_and_runs();
	test_config();
	test_flow_heun();
	test_flow_errors();
	if (shared_dir() == NULL) {
		tap_skip("scheduler goldens: shared/ not found");
		return tap_done();
	}
	test_common();
	test_sched_case("sched_ddim", SD_SAMPLER_DDIM, SD_SCHEDULE_NORMAL);
	test_sched_case("sched_pndm", SD_SAMPLER_PNDM, SD_SCHEDULE_NORMAL);
	test_sched_case("sched_euler", SD_SAMPLER_EULER, SD_SCHEDULE_NORMAL);
	test_sched_case("sched_euler_a", SD_SAMPLER_EULER_A, SD_SCHEDULE_NORMAL);
	test_sched_case("sched_lms", SD_SAMPLER_LMS, SD_SCHEDULE_NORMAL);
	test_sched_case("sched_dpmpp_2m", SD_SAMPLER_DPMPP_2M, SD_SCHEDULE_NORMAL);
	test_sched_case("sched_dpmpp_2m_karras", SD_SAMPLER_DPMPP_2M, SD_SCHEDULE_KARRAS);
	test_sched_case("sched_heun", SD_SAMPLER_HEUN, SD_SCHEDULE_NORMAL);
	test_sched_case("sched_dpm2", SD_SAMPLER_DPM2, SD_SCHEDULE_NORMAL);
	/* the manifest's tolerance for DPM2 a is 5e-5 (see its note) */
	test_sched_case_tol("sched_dpm2_a", SD_SAMPLER_DPM2_A, SD_SCHEDULE_NORMAL, 5e-5);
	test_sched_case("sched_unipc", SD_SAMPLER_UNIPC, SD_SCHEDULE_NORMAL);
	test_sched_case("sched_dpmpp_2m_sde", SD_SAMPLER_DPMPP_2M_SDE, SD_SCHEDULE_NORMAL);
	test_sched_case("sched_dpmpp_2m_sde_karras", SD_SAMPLER_DPMPP_2M_SDE,
	    SD_SCHEDULE_KARRAS);
	test_sched_case("sched_deis", SD_SAMPLER_DEIS, SD_SCHEDULE_NORMAL);
	test_sched_case("sched_lcm", SD_SAMPLER_LCM, SD_SCHEDULE_NORMAL);
	test_sched_case("sched_euler_karras", SD_SAMPLER_EULER, SD_SCHEDULE_KARRAS);
	test_sched_case("sched_lms_karras", SD_SAMPLER_LMS, SD_SCHEDULE_KARRAS);
	for (size_t i = 0; i < sizeof pipeline_cases / sizeof pipeline_cases[0]; i++)
		test_pipeline_case(pipeline_cases[i]);

	/* SD 2.x: v-prediction in every sampler (the SD 2.1 config), trailing
	 * spacing, and SD-Turbo's config (trailing, epsilon). */
	golden_set = "sd21-tiny";
	set_prediction = SCHED_PRED_V;
	test_sched_case("sched_v_ddim", SD_SAMPLER_DDIM, SD_SCHEDULE_NORMAL);
	test_sched_case("sched_v_euler", SD_SAMPLER_EULER, SD_SCHEDULE_NORMAL);
	test_sched_case("sched_v_euler_a", SD_SAMPLER_EULER_A, SD_SCHEDULE_NORMAL);
	test_sched_case("sched_v_dpmpp_2m", SD_SAMPLER_DPMPP_2M, SD_SCHEDULE_NORMAL);
	test_sched_case("sched_v_dpmpp_2m_karras", SD_SAMPLER_DPMPP_2M, SD_SCHEDULE_KARRAS);
	test_sched_case("sched_v_lms", SD_SAMPLER_LMS, SD_SCHEDULE_NORMAL);
	test_sched_case("sched_v_pndm", SD_SAMPLER_PNDM, SD_SCHEDULE_NORMAL);
	set_spacing = SCHED_SPACING_TRAILING;
	test_sched_case("sched_v_ddim_trailing", SD_SAMPLER_DDIM, SD_SCHEDULE_NORMAL);
	test_sched_case("sched_v_euler_a_trailing", SD_SAMPLER_EULER_A, SD_SCHEDULE_NORMAL);
	set_prediction = SCHED_PRED_EPSILON;
	test_sched_case("sched_turbo_euler_a", SD_SAMPLER_EULER_A, SD_SCHEDULE_NORMAL);
	test_sched_case("sched_turbo_euler", SD_SAMPLER_EULER, SD_SCHEDULE_NORMAL);

	/* SDXL base's config (leading spacing) and the trailing ones
	 * (sdxl-turbo's: Euler a). */
	golden_set = "sdxl-tiny";
	set_prediction = SCHED_PRED_EPSILON;
	set_spacing = SCHED_SPACING_LEADING;
	test_sched_case("sched_euler", SD_SAMPLER_EULER, SD_SCHEDULE_NORMAL);
	test_sched_case("sched_euler_a", SD_SAMPLER_EULER_A, SD_SCHEDULE_NORMAL);
	test_sched_case("sched_dpmpp_2m", SD_SAMPLER_DPMPP_2M, SD_SCHEDULE_NORMAL);
	test_sched_case("sched_dpmpp_2m_karras", SD_SAMPLER_DPMPP_2M, SD_SCHEDULE_KARRAS);
	test_sched_case("sched_ddim", SD_SAMPLER_DDIM, SD_SCHEDULE_NORMAL);
	set_spacing = SCHED_SPACING_TRAILING;
	test_sched_case("sched_euler_trailing", SD_SAMPLER_EULER, SD_SCHEDULE_NORMAL);
	test_sched_case("sched_ddim_trailing", SD_SAMPLER_DDIM, SD_SCHEDULE_NORMAL);
	test_sched_case("sched_turbo", SD_SAMPLER_EULER_A, SD_SCHEDULE_NORMAL);

	/* SD3: flow matching */
	test_flowmatch();
	test_flow_img2img("img2img_s10_str075");
	test_flow_img2img("img2img_s6_str05_nocfg_64x128");
	return tap_done();
}
