/* test_pipeline.c: whole runs against diffusers: txt2img with every
 * sampler, img2img, inpainting with the 4- and 9-channel UNets, and
 * per-seed batches, from the seed (so the RNG order is tested too). */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "io/png.h"
#include "sample/pipeline.h"
#include "core/ops.h"
#include "testutil.h"

#define MAXSTEPS 32

/* The golden set of the cases being run. */
static const char *set = "sd15-tiny";
/* A folder with the sd21-tiny single files beside an LDM config that gives
 * their 8-channel heads (real SD 2.x files have 64, the description's
 * default). */
static char sd2dir[256], sdxldir[256], sd3dir[256];

struct capture {
	float *latents0;
	float *unet_out[MAXSTEPS];
	float *latents[MAXSTEPS];
	float *image;
	size_t nlat, nout;
	int calls;
};

static float *
fdup(const float *x, size_t n)
{
	float *p = malloc(n * sizeof *p);
	memcpy(p, x, n * sizeof *p);
	return p;
}

static void
on_debug(void *user, const char *name, int step, const float *data, size_t n)
{
	struct capture *c = user;

	if (strcmp(name, "latents_0") == 0) {
		c->latents0 = fdup(data, n);
		c->nlat = n;
	} else if ((strcmp(name, "unet_out") == 0 || strcmp(name, "model_out") == 0) && step < MAXSTEPS) {
		c->unet_out[step] = fdup(data, n);
		c->nout = n;
	} else if (strcmp(name, "latents") == 0 && step < MAXSTEPS) {
		c->latents[step] = fdup(data, n);
		if (step + 1 > c->calls)
			c->calls = step + 1;
	} else if (strcmp(name, "image_decoded") == 0) {
		c->image = fdup(data, n);
	}
}

static void
capture_free(struct capture *c)
{
	free(c->latents0);
	free(c->image);
	for (int i = 0; i < MAXSTEPS; i++) {
		free(c->unet_out[i]);
		free(c->latents[i]);
	}
	memset(c, 0, sizeof *c);
}

static struct sd_model *
load(const char *model, const char *unet)
{
	struct sd_model_spec spec = {0};
	struct sd_error err = {0};
	struct sd_model *m;
	char mpath[4096], upath[4096];

	if (model[0] == '/')
		snprintf(mpath, sizeof mpath, "%s", model);
	else
		snprintf(mpath, sizeof mpath, "%s", shared_path(model));
	spec.model = mpath;
	if (unet != NULL) {
		snprintf(upath, sizeof upath, "%s", shared_path(unet));
		spec.unet = upath;
	}
	spec.tokenizer = shared_path("data/clip-tokenizer");
	spec.device = test_device();
	m = sd_model_load(&spec, &err);
	if (m == NULL)
		tap_ok(0, "load %s: %s", model, err.message);
	return m;
}

static int
parse_sampler(const char *name, struct sd_params *p)
{
	if (name == NULL) {	/* SD3: the model's (flow-matching Euler) */
		p->sampler = SD_SAMPLER_AUTO;
		return 0;
	}
	if (strcmp(name, "turbo") == 0) {	/* sdxl-turbo's config */
		p->sampler = SD_SAMPLER_EULER_A;
		p->spacing = SD_SPACING_TRAILING;
		return 0;
	}
	if (strcmp(name, "ddim_trailing") == 0) {
		p->sampler = SD_SAMPLER_DDIM;
		p->spacing = SD_SPACING_TRAILING;
		return 0;
	}
	/* "dpmpp_2m_sde_karras": the sampler and the karras schedule */
	p->schedule = SD_SCHEDULE_NORMAL;
	return sd_sampler_parse_full(name, &p->sampler, &p->schedule) < 0 ? -1 : 0;
}

/* Compare the stacked per-step tensors of the golden with the capture. */
static void
check_steps(const char *cs, const char *what, struct st_file *g, const char *name,
    float *const *got, int calls, size_t each)
{
	size_t n;
	float *want, *all;
	char label[256];

	if (st_find(g, name) == NULL)
		return;
	want = golden_f32(g, name, &n);
	snprintf(label, sizeof label, "%s: %s (%d calls)", cs, what, calls);
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
check_u8(const char *cs, struct st_file *g, const char *name, const uint8_t *rgb, size_t n)
{
	const struct sd_tensor *t = st_find(g, name);
	size_t off1 = 0, big = 0;

	if (t == NULL || (size_t)sd_tensor_numel(t) != n) {
		tap_ok(0, "%s: %s has %zu values", cs, name, t ? (size_t)sd_tensor_numel(t) : 0);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		int d = abs((int)rgb[i] - (int)((const uint8_t *)t->data)[i]);
		if (d == 1)
			off1++;
		else if (d > 1)
			big++;
	}
	tap_ok(big == 0, "%s: 8-bit image within 1 level (%zu of %zu values off by one, %zu by more)",
	    cs, off1, n, big);
}

static void
run_case(struct sd_model *m, const char *cs, const char *prefix, int index, struct st_file *g,
    json_t *params)
{
	struct sd_params p;
	struct sd_image img;
	struct sd_error err = {0};
	struct capture cap = {0};
	struct sd_image_u8 init = {0}, mask = {0};
	char label[512], key[160];
	json_t *hw = json_object_get(params, "hw");
	const char *negative = json_string_value(json_object_get(params, "negative"));
	/* SDXL cases: negative_prompt null (zeros) or a string (even "") */
	json_t *negp = json_object_get(params, "negative_prompt");
	json_t *init_png = json_object_get(params, "init_png"), *mask_png = json_object_get(params, "mask_png");

	sd_params_init(&p);
	p.prompt = json_string_value(json_object_get(params, "prompt"));
	p.negative_prompt = negative ? negative : "";
	if (negp != NULL)
		p.negative_prompt = json_string_value(negp);
	p.height = (int)json_integer_value(hw ? json_array_get(hw, 0) : json_object_get(params, "height"));
	p.width = (int)json_integer_value(hw ? json_array_get(hw, 1) : json_object_get(params, "width"));
	p.steps = (int)json_integer_value(json_object_get(params, "steps"));
	p.guidance_scale = (float)json_number_value(json_object_get(params, "guidance"));
	p.seed = (uint64_t)json_integer_value(json_object_get(params, "seed"));
	if (json_object_get(params, "strength"))
		p.strength = json_number_value(json_object_get(params, "strength"));
	if (json_is_false(json_object_get(params, "t5")))
		p.t5 = 0;
	if (parse_sampler(json_string_value(json_object_get(params, "sched")), &p) < 0) {
		tap_ok(0, "%s: unknown sampler", cs);
		return;
	}
	/* SD 2.x cases: the prediction and spacing of the case's scheduler
	 * config (the 768-v, base and Turbo conventions on one file). */
	json_t *sc = json_object_get(params, "scheduler_config");
	const char *pt = json_string_value(json_object_get(sc, "prediction_type"));
	const char *sp = json_string_value(json_object_get(sc, "timestep_spacing"));
	if (strcmp(set, "sd15-tiny") != 0 && strcmp(set, "sd3-tiny") != 0) {
		if (pt != NULL)
			p.prediction = strcmp(pt, "v_prediction") == 0 ? SD_PREDICTION_V : SD_PREDICTION_EPSILON;
		if (sp != NULL && p.spacing == SD_SPACING_AUTO && sd_spacing_parse(sp, &p.spacing) < 0) {
			tap_ok(0, "%s: spacing %s", cs, sp);
			return;
		}
	}
	snprintf(label, sizeof label, "%s%s", cs, prefix);
	if (init_png != NULL) {
		if (png_read_rgb(shared_path(json_string_value(init_png) ? 
		    (snprintf(key, sizeof key, "testdata/%s/%s", set, json_string_value(init_png)), key) : ""),
		    &init, &err) < 0) {
			tap_ok(0, "%s: init image: %s", label, err.message);
			return;
		}
		p.init_rgb = init.data;
	}
	if (mask_png != NULL) {
		snprintf(key, sizeof key, "testdata/%s/%s", set, json_string_value(mask_png));
		if (png_read_grey(shared_path(key), &mask, &err) < 0) {
			tap_ok(0, "%s: mask: %s", label, err.message);
			image_free(&init);
			return;
		}
		p.mask_grey = mask.data;
	}
	sd_model_set_debug(m, on_debug, &cap);
	if (sd_generate(m, &p, index, &img, NULL, NULL, NULL, &err) < 0) {
		tap_ok(0, "%s: sd_generate: %s", label, err.message);
		goto out;
	}
	snprintf(key, sizeof key, "%slatents_0", prefix);
	if (st_find(g, key)) {
		size_t n;
		float *want = golden_f32(g, key, &n);
		snprintf(label, sizeof label, "%s: %s", cs, key);
		if (n == cap.nlat)
			check_close(label, cap.latents0, want, n, 1e-3, 1e-3);
		else
			tap_ok(0, "%s: %zu values, %zu expected", label, cap.nlat, n);
		free(want);
	}
	snprintf(key, sizeof key, "%sunet_out", prefix);
	check_steps(cs, key, g, key, cap.unet_out, cap.calls, cap.nout);
	snprintf(key, sizeof key, "%smodel_out", prefix);	/* SD3's name */
	check_steps(cs, key, g, key, cap.unet_out, cap.calls, cap.nout);
	snprintf(key, sizeof key, "%slatents", prefix);
	check_steps(cs, key, g, key, cap.latents, cap.calls, cap.nlat);
	snprintf(key, sizeof key, "%simage_decoded", prefix);
	if (st_find(g, key) && cap.image) {
		size_t n;
		float *want = golden_f32(g, key, &n);
		snprintf(label, sizeof label, "%s: %s", cs, key);
		check_close(label, cap.image, want, n, 1e-3, 1e-3);
		free(want);
	}
	snprintf(key, sizeof key, "%simage_u8", prefix);
	check_u8(cs, g, key, img.rgb, (size_t)img.width * img.height * 3);
	sd_image_free(&img);
out:
	sd_model_set_debug(m, NULL, NULL);
	capture_free(&cap);
	image_free(&init);
	image_free(&mask);
}

/* The sd21-tiny single files beside an LDM config (FILE.yaml) with their
 * head sizes. */
static int
make_set_dir(char *dir, size_t size, const char *setname, const char *yaml)
{
	static const char *files[] = { "model.safetensors", "model-f16.safetensors" };
	const char *tmp = getenv("TMPDIR");
	char path[512], target[512];
	FILE *f;

	snprintf(dir, size, "%s/sdbatch-pipe-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (mkdtemp(dir) == NULL)
		return -1;
	for (int i = 0; i < 2; i++) {
		char rel[128], *abs;
		snprintf(rel, sizeof rel, "testdata/%s/%s", setname, files[i]);
		if ((abs = realpath(shared_path(rel), NULL)) == NULL)
			return -1;
		snprintf(target, sizeof target, "%s", abs);
		free(abs);
		snprintf(path, sizeof path, "%s/%s", dir, files[i]);
		if (symlink(target, path) < 0)
			return -1;
		snprintf(path, sizeof path, "%s/%.*s.yaml", dir, (int)strlen(files[i]) - 12, files[i]);
		if ((f = fopen(path, "w")) == NULL)
			return -1;
		fputs(yaml, f);
		fclose(f);
	}
	return 0;
}

static int
make_sd2_dir(void)
{
	return make_set_dir(sd2dir, sizeof sd2dir, "sd21-tiny",
	    "model:\n  params:\n    parameterization: \"v\"\n    scale_factor: 0.18215\n"
	    "    unet_config:\n      params:\n        num_head_channels: 8\n"
	    "        use_linear_in_transformer: True\n    cond_stage_config:\n"
	    "      params:\n        layer: \"penultimate\"\n        heads: 2\n");
}

/* SDXL's LDM config (sd_xl_base.yaml) has num_head_channels 64; 4 here. */
static int
make_sdxl_dir(void)
{
	return make_set_dir(sdxldir, sizeof sdxldir, "sdxl-tiny",
	    "model:\n  params:\n    scale_factor: 0.13025\n    network_config:\n      params:\n"
	    "        num_head_channels: 4\n        use_linear_in_transformer: True\n");
}

/* SD3's heads are of 64 channels; the tiny model's are not: sdbatch's own
 * keys say how many.  The T5 tokenizer beside the files (tokenizer_3/). */
static int
make_sd3_dir(void)
{
	char path[512], *abs;

	if (make_set_dir(sd3dir, sizeof sd3dir, "sd3-tiny",
	    "model:\n  params:\n    network_config:\n      params:\n        num_heads: 4\n"
	    "    text_encoders:\n      clip_l:\n        heads: 3\n      clip_g:\n        heads: 5\n") < 0)
		return -1;
	if ((abs = realpath(shared_path("testdata/sd3-tiny/diffusers/tokenizer_3"), NULL)) == NULL)
		return -1;
	snprintf(path, sizeof path, "%s/tokenizer_3", sd3dir);
	if (symlink(abs, path) < 0) {
		free(abs);
		return -1;
	}
	free(abs);
	return 0;
}

static void
remove_set_dir(const char *dir)
{
	static const char *files[] = { "model.safetensors", "model-f16.safetensors", "model.yaml",
	    "model-f16.yaml", "tokenizer_3" };
	char path[512];

	for (int i = 0; i < 5; i++) {
		snprintf(path, sizeof path, "%s/%s", dir, files[i]);
		unlink(path);
	}
	rmdir(dir);
}

static void
run_set(const char *only)
{
	json_t *manifest, *cases;
	json_error_t jerr;
	struct sd_model *plain = NULL, *f16 = NULL, *inpaint = NULL;
	int sd2 = strcmp(set, "sd15-tiny") != 0;
	char rel[128], model[512], model16[512];
	size_t i;

	snprintf(rel, sizeof rel, "testdata/%s/manifest.json", set);
	manifest = json_load_file(shared_path(rel), 0, &jerr);
	if (manifest == NULL) {
		tap_ok(0, "%s: %s", rel, jerr.text);
		return;
	}
	if (sd2) {
		const char *d = strcmp(set, "sdxl-tiny") == 0 ? sdxldir :
		    strcmp(set, "sd3-tiny") == 0 ? sd3dir : sd2dir;
		snprintf(model, sizeof model, "%s/model.safetensors", d);
		snprintf(model16, sizeof model16, "%s/model-f16.safetensors", d);
	} else {
		snprintf(model, sizeof model, "testdata/%s/model.safetensors", set);
		snprintf(model16, sizeof model16, "testdata/%s/model-f16.safetensors", set);
	}
	cases = json_object_get(manifest, "cases");
	json_t *c;
	json_array_foreach(cases, i, c) {
		const char *name = json_string_value(json_object_get(c, "name"));
		json_t *params = json_object_get(c, "params");
		struct sd_model **mp;
		struct st_file *g;

		if (only && strcmp(only, name) != 0)
			continue;
		if (strncmp(name, "txt2img_", 8) && strncmp(name, "img2img_", 8) &&
		    strncmp(name, "inpaint", 7) && strncmp(name, "batch_", 6) &&
		    strncmp(name, "turbo_", 6))
			continue;
		if (strncmp(name, "batch_n2", 8) == 0) {
			tap_skip("%s: diffusers' num_images_per_prompt convention; sdbatch renders "
			    "image i with seed + i (batch_seeds_* checks that)", name);
			continue;
		}
		if (strncmp(name, "inpaint9", 8) == 0) {
			mp = &inpaint;
			if (*mp == NULL)
				*mp = load("testdata/sd15-tiny/model.safetensors",
				    "testdata/sd15-tiny/model-inpaint.safetensors");
		} else if (json_is_true(json_object_get(params, "f16w")) ||
		    (strlen(name) > 5 && strcmp(name + strlen(name) - 5, "_f16w") == 0)) {
			mp = &f16;
			if (*mp == NULL)
				*mp = load(model16, NULL);
		} else {
			mp = &plain;
			if (*mp == NULL)
				*mp = load(model, NULL);
		}
		if (*mp == NULL)
			break;
		g = golden_open_in(set, name);
		if (g == NULL) {
			tap_ok(0, "%s: golden file", name);
			continue;
		}
		if (strncmp(name, "batch_seeds", 11) == 0) {
			run_case(*mp, name, "img0.", 0, g, params);
			run_case(*mp, name, "img1.", 1, g, params);
		} else {
			run_case(*mp, name, "", 0, g, params);
		}
		st_close(g);
	}
	sd_model_free(plain);
	sd_model_free(f16);
	sd_model_free(inpaint);
	json_decref(manifest);
}

/* The SD 2.x diffusers folder: its own configs say everything (heads,
 * v-prediction, DDIM, 128x128): one case through the folder. */
static void
run_sd2_folder(void)
{
	struct sd_model *m = load("testdata/sd21-tiny/diffusers", NULL);
	struct st_file *g;
	json_t *manifest, *c;
	json_error_t jerr;
	size_t i;

	if (m == NULL)
		return;
	tap_ok(strcmp(sd_model_arch(m), "sd2") == 0, "sd21 folder: the 768-v model (%s)", sd_model_arch(m));
	manifest = json_load_file(shared_path("testdata/sd21-tiny/manifest.json"), 0, &jerr);
	json_array_foreach(json_object_get(manifest, "cases"), i, c) {
		const char *name = json_string_value(json_object_get(c, "name"));
		if (name == NULL || (strcmp(name, "txt2img_v_ddim_s4") != 0 &&
		    strcmp(name, "img2img_v_ddim_s10_str06") != 0))
			continue;
		if ((g = golden_open_in("sd21-tiny", name)) == NULL)
			continue;
		run_case(m, name, "", 0, g, json_object_get(c, "params"));
		st_close(g);
	}
	json_decref(manifest);
	sd_model_free(m);
}

/* The SD3 diffusers folder: its configs give the heads and the scheduler,
 * its tokenizer_3 the T5 tokenizer: two cases through it. */
static void
run_sd3_folder(void)
{
	struct sd_model *m = load("testdata/sd3-tiny/diffusers", NULL);
	struct st_file *g;
	json_t *manifest, *c;
	json_error_t jerr;
	size_t i;
	const char *saved = set;

	if (m == NULL)
		return;
	tap_ok(strcmp(sd_model_arch(m), "sd3") == 0, "sd3 folder: SD3 (%s)", sd_model_arch(m));
	manifest = json_load_file(shared_path("testdata/sd3-tiny/manifest.json"), 0, &jerr);
	set = "sd3-tiny";
	json_array_foreach(json_object_get(manifest, "cases"), i, c) {
		const char *name = json_string_value(json_object_get(c, "name"));
		if (name == NULL || (strcmp(name, "txt2img_s5_neg_128x64") != 0 &&
		    strcmp(name, "img2img_s6_str05_nocfg_64x128") != 0))
			continue;
		if ((g = golden_open_in("sd3-tiny", name)) == NULL)
			continue;
		run_case(m, name, "", 0, g, json_object_get(c, "params"));
		st_close(g);
	}
	set = saved;
	json_decref(manifest);
	sd_model_free(m);
}

int
main(int argc, char **argv)
{
	const char *only = argc > 1 ? argv[1] : NULL;

	if (shared_dir() == NULL)
		return tap_skip_all("../shared is absent: no reference tensors");
	if (strcmp(test_device(), "cpu") != 0)
		sd_ctx_free(test_ctx_new());	/* skips everything without the device */
	set = "sd15-tiny";
	run_set(only);
	if (make_sd2_dir() < 0) {
		tap_ok(0, "make a folder for the SD 2.x files");
		return tap_done();
	}
	set = "sd21-tiny";
	run_set(only);
	if (only == NULL)
		run_sd2_folder();
	remove_set_dir(sd2dir);
	if (make_sdxl_dir() < 0) {
		tap_ok(0, "make a folder for the SDXL files");
		return tap_done();
	}
	set = "sdxl-tiny";
	run_set(only);
	remove_set_dir(sdxldir);
	if (make_sd3_dir() < 0) {
		tap_ok(0, "make a folder for the SD3 files");
		return tap_done();
	}
	set = "sd3-tiny";
	run_set(only);
	if (only == NULL)
		run_sd3_folder();
	remove_set_dir(sd3dir);
	return tap_done();
}
