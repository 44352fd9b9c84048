/* caserun.h: run one txt2img / img2img golden case of sd15-tiny through
 * sd_generate and compare every step with diffusers (test_lora,
 * test_prompt).  Header-only: each test includes it once. */
#ifndef SD_CASERUN_H
#define SD_CASERUN_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "io/png.h"
#include "sample/pipeline.h"
#include "testutil.h"

#define CASE_MAXSTEPS 32

struct case_capture {
	float *unet_out[CASE_MAXSTEPS];
	float *latents[CASE_MAXSTEPS];
	float *image;
	size_t nlat, nout;
	int calls;
	char warnings[4096];
};

static float *
case_dup(const float *x, size_t n)
{
	float *p = malloc(n * sizeof *p);
	memcpy(p, x, n * sizeof *p);
	return p;
}

static void
case_on_debug(void *user, const char *name, int step, const float *data, size_t n)
{
	struct case_capture *c = user;

	if (strcmp(name, "unet_out") == 0 && step < CASE_MAXSTEPS) {
		c->unet_out[step] = case_dup(data, n);
		c->nout = n;
	} else if (strcmp(name, "latents") == 0 && step < CASE_MAXSTEPS) {
		c->latents[step] = case_dup(data, n);
		c->nlat = n;
		if (step + 1 > c->calls)
			c->calls = step + 1;
	} else if (strcmp(name, "image_decoded") == 0) {
		c->image = case_dup(data, n);
	}
}

static int
case_on_progress(void *user, const struct sd_progress *p)
{
	struct case_capture *c = user;

	if (strcmp(p->event, "warning") == 0 && p->message != NULL) {
		size_t n = strlen(c->warnings);
		snprintf(c->warnings + n, sizeof c->warnings - n, "%s\n", p->message);
	}
	return 0;
}

static void
case_capture_free(struct case_capture *c)
{
	free(c->image);
	for (int i = 0; i < CASE_MAXSTEPS; i++) {
		free(c->unet_out[i]);
		free(c->latents[i]);
	}
	memset(c, 0, sizeof *c);
}

static void
case_steps(const char *cs, struct st_file *g, const char *name, float *const *got, int calls, size_t each)
{
	size_t n;
	float *want, *all;
	char label[256];

	if (st_find(g, name) == NULL)
		return;
	want = golden_f32(g, name, &n);
	snprintf(label, sizeof label, "%s: %s (%d calls)", cs, name, calls);
	if (calls == 0 || n != (size_t)calls * each) {
		tap_ok(0, "%s: %zu values recorded, %zu expected", label, (size_t)calls * each, n);
		free(want);
		return;
	}
	all = malloc(n * sizeof *all);
	for (int i = 0; i < calls; i++)
		memcpy(all + (size_t)i * each, got[i], each * sizeof *all);
	check_close(label, all, want, n, 1e-3, 1e-3);
	free(all);
	free(want);
}

static void
case_u8(const char *cs, struct st_file *g, const uint8_t *rgb, size_t n)
{
	const struct sd_tensor *t = st_find(g, "image_u8");
	size_t off1 = 0, big = 0;

	if (t == NULL || (size_t)sd_tensor_numel(t) != n) {
		tap_ok(0, "%s: image_u8 has %zu values", cs, t ? (size_t)sd_tensor_numel(t) : 0);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		int d = abs((int)rgb[i] - (int)((const uint8_t *)t->data)[i]);
		off1 += d == 1;
		big += d > 1;
	}
	tap_ok(big == 0, "%s: 8-bit image within 1 level (%zu of %zu values off by one, %zu by more)",
	    cs, off1, n, big);
}

/* Fill p from a case's params (prompt, negative, size, steps, guidance,
 * seed, sampler, strength); init gets the init image of img2img cases.
 * -1 when the sampler is unknown or the image cannot be read. */
static int
case_params(json_t *params, struct sd_params *p, struct sd_image_u8 *init)
{
	json_t *hw = json_object_get(params, "hw");
	const char *negative = json_string_value(json_object_get(params, "negative"));
	const char *png = json_string_value(json_object_get(params, "init_png"));
	struct sd_error err = {0};
	char rel[256];

	sd_params_init(p);
	p->prompt = json_string_value(json_object_get(params, "prompt"));
	p->negative_prompt = negative ? negative : "";
	p->height = (int)json_integer_value(json_array_get(hw, 0));
	p->width = (int)json_integer_value(json_array_get(hw, 1));
	p->steps = (int)json_integer_value(json_object_get(params, "steps"));
	p->guidance_scale = (float)json_number_value(json_object_get(params, "guidance"));
	p->seed = (uint64_t)json_integer_value(json_object_get(params, "seed"));
	if (json_object_get(params, "strength"))
		p->strength = json_number_value(json_object_get(params, "strength"));
	if (sd_sampler_parse(json_string_value(json_object_get(params, "sched")), &p->sampler) < 0)
		return -1;
	memset(init, 0, sizeof *init);
	if (png != NULL) {
		snprintf(rel, sizeof rel, "testdata/sd15-tiny/%s", png);
		if (png_read_rgb(shared_path(rel), init, &err) < 0) {
			tap_diag("%s: %s", png, err.message);
			return -1;
		}
		p->init_rgb = init->data;
	}
	return 0;
}

/* Run p on m and compare unet_out, latents, image_decoded and image_u8 with
 * the golden g.  warnings (when not NULL, 4096 bytes) gets the warning
 * events. */
static void
case_run(struct sd_model *m, const char *cs, const struct sd_params *p, struct st_file *g,
    char *warnings)
{
	struct case_capture cap = {0};
	struct sd_image img;
	struct sd_error err = {0};

	sd_model_set_debug(m, case_on_debug, &cap);
	if (sd_generate(m, p, 0, &img, NULL, case_on_progress, &cap, &err) < 0) {
		tap_ok(0, "%s: sd_generate: %s", cs, err.message);
		goto out;
	}
	case_steps(cs, g, "unet_out", cap.unet_out, cap.calls, cap.nout);
	case_steps(cs, g, "latents", cap.latents, cap.calls, cap.nlat);
	if (st_find(g, "image_decoded") && cap.image) {
		size_t n;
		float *want = golden_f32(g, "image_decoded", &n);
		char label[256];
		snprintf(label, sizeof label, "%s: image_decoded", cs);
		check_close(label, cap.image, want, n, 1e-3, 1e-3);
		free(want);
	}
	case_u8(cs, g, img.rgb, (size_t)img.width * img.height * 3);
	sd_image_free(&img);
out:
	if (warnings != NULL)
		snprintf(warnings, 4096, "%s", cap.warnings);
	sd_model_set_debug(m, NULL, NULL);
	case_capture_free(&cap);
}

/* sd15-tiny's manifest entry of a case, or NULL. */
static json_t *
case_find(json_t *manifest, const char *name)
{
	json_t *cases = json_object_get(manifest, "cases"), *c;
	size_t i;

	json_array_foreach(cases, i, c)
		if (strcmp(json_string_value(json_object_get(c, "name")), name) == 0)
			return c;
	return NULL;
}

/* Load a model with the shared tokenizer; NULL (and a "not ok") on error. */
static struct sd_model *
case_load(const char *path)
{
	struct sd_model_spec spec = {0};
	struct sd_error err = {0};
	struct sd_model *m;

	spec.model = path;
	spec.tokenizer = shared_path("data/clip-tokenizer");
	spec.device = test_device();
	m = sd_model_load(&spec, &err);
	if (m == NULL)
		tap_ok(0, "load %s: %s", path, err.message);
	return m;
}

#endif
