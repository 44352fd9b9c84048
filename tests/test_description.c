/* test_description.c: the model description: which architecture, variant,
 * prediction type (and why), heads and defaults a checkpoint gets from its
 * tensors, a folder's configs, a single file's metadata, an LDM config
 * beside it and its name. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/checkpoint.h"
#include "model/synth.h"
#include "sample/description.h"
#include "testutil.h"

static char dir[64];

static const char *
tmp(const char *name)
{
	static char buf[4][256];
	static int next;
	char *b = buf[next++ % 4];

	snprintf(b, sizeof buf[0], "%s/%s", dir, name);
	return b;
}

/* Describe path (loading it), or fail the test. */
static int
describe(const char *path, struct model_desc *d)
{
	struct sd_checkpoint ck;
	struct sd_error err = {0};
	int rc;

	if (checkpoint_load(&ck, path, NULL, NULL, &err) < 0) {
		tap_ok(0, "load %s: %s", path, err.message);
		return -1;
	}
	rc = model_describe(&ck, d, &err);
	if (rc < 0)
		tap_ok(0, "describe %s: %s", path, err.message);
	checkpoint_free(&ck);
	return rc;
}

static void
write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (f != NULL) {
		fputs(text, f);
		fclose(f);
	}
}

static void
test_arch_tables(void)
{
	struct model_desc d;

	tap_ok(model_describe_arch("sd15", &d) == 0 && d.family == MODEL_SD1 &&
	    d.unet.heads == 8 && d.text[0].clip.heads == 12 && d.text[0].clip.act == CLIP_QUICK_GELU &&
	    d.vae_scale == 0.18215f && d.default_width == 512 && d.default_sampler == SD_SAMPLER_PNDM &&
	    d.sched.prediction_type == SCHED_PRED_EPSILON && strcmp(d.text[0].pad_token, "<|endoftext|>") == 0,
	    "SD 1.x: 8 UNet heads, 12 text heads, quick-GELU, 0.18215, 512, PNDM, epsilon");
	tap_ok(model_describe_arch("sd2", &d) == 0 && d.family == MODEL_SD2 &&
	    d.unet.head_channels == 64 && d.text[0].clip.layers == -1 && d.text[0].clip.act == CLIP_GELU &&
	    strcmp(d.text[0].pad_token, "!") == 0 && d.default_width == 768 &&
	    d.sched.prediction_type == SCHED_PRED_V && d.default_sampler == SD_SAMPLER_DDIM,
	    "SD 2.x 768-v: 64-channel heads, penultimate GELU text layer, pads with !, 768, v, DDIM");
	tap_ok(model_describe_arch("sd2-base", &d) == 0 && d.default_width == 512 &&
	    d.sched.prediction_type == SCHED_PRED_EPSILON && d.default_sampler == SD_SAMPLER_PNDM,
	    "SD 2.x base: 512, epsilon, PNDM");
	tap_ok(model_describe_arch("sd-turbo", &d) == 0 && d.turbo && d.default_steps == 1 &&
	    d.default_guidance == 0.0f && d.default_sampler == SD_SAMPLER_EULER_A &&
	    d.sched.timestep_spacing == SCHED_SPACING_TRAILING && d.default_width == 512,
	    "SD-Turbo: 1 step, guidance 0, euler_a, trailing, 512");
	tap_ok(model_describe_arch("sdxl", &d) == 0 && d.family == MODEL_SDXL && d.ntext == 2 &&
	    d.text[1].pooled && d.time_ids && d.zeros_for_no_negative && d.vae_scale == 0.13025f &&
	    d.default_width == 1024 && d.default_guidance == 5.0f && d.default_sampler == SD_SAMPLER_EULER &&
	    d.sched.timestep_spacing == SCHED_SPACING_LEADING && strcmp(d.text[1].pad_token, "!") == 0 &&
	    d.text[0].clip.context_skip == 1 && d.text[0].clip.no_final_norm,
	    "SDXL: two encoders (penultimate, no final norm), pooled, time ids, zeros, 0.13025, 1024, "
	    "guidance 5, Euler leading");
	tap_ok(model_describe_arch("sdxl-turbo", &d) == 0 && d.turbo && d.default_width == 512 &&
	    d.default_steps == 1 && d.default_sampler == SD_SAMPLER_EULER_A &&
	    d.sched.timestep_spacing == SCHED_SPACING_TRAILING, "SDXL-Turbo: 512, 1 step, Euler a, trailing");
	tap_ok(model_describe_arch("sd3", &d) == 0 && d.family == MODEL_SD3 && d.ntext == 3 &&
	    d.text[0].pooled && d.text[1].pooled && d.text[0].clip.pooled_identity &&
	    d.text[2].kind == TEXT_T5 && d.text[2].max_len == 256 && d.context_width == 4096 &&
	    d.mmdit_heads == 0 && d.vae_scale == 1.5305f && d.vae_shift == 0.0609f &&
	    !d.zeros_for_no_negative && !d.time_ids && d.sched.prediction_type == SCHED_PRED_FLOW &&
	    d.sched.shift == 3.0 && d.default_width == 1024 && d.default_steps == 28 &&
	    d.default_guidance == 7.0f && d.default_sampler == SD_SAMPLER_EULER &&
	    strcmp(d.text[2].tokenizer_sub, "tokenizer_3") == 0,
	    "SD3: CLIP-L (unprojected pool), bigG, T5 of 256 tokens, context 4096, flow shift 3, "
	    "1.5305/0.0609, 1024, 28 steps, guidance 7, Euler");
	tap_ok(model_describe_arch("sdxl-unknown", &d) < 0, "an unknown architecture is refused");
}

int
main(void)
{
	struct model_desc d;
	struct synth_config cfg;
	struct sd_error err = {0};
	char abs[4096];

	snprintf(dir, sizeof dir, "/tmp/test_description.XXXXXX");
	if (mkdtemp(dir) == NULL)
		return tap_skip_all("cannot make a temporary folder");
	test_arch_tables();

	/* Files sdbatch writes say what they are in their metadata. */
	synth_preset("sd-turbo", 0, &cfg);
	if (synth_checkpoint(tmp("made-turbo.safetensors"), &cfg, &err) == 0 &&
	    describe(tmp("made-turbo.safetensors"), &d) == 0)
		tap_ok(strcmp(d.arch, "sd-turbo") == 0 && d.unet.head_channels == 8 &&
		    d.text[0].clip.heads == 2 && strstr(d.prediction_why, "metadata") != NULL,
		    "a made SD-Turbo file: %s, heads of %d, %d text heads (%s)", d.arch,
		    d.unet.head_channels, d.text[0].clip.heads, d.prediction_why);
	else
		tap_ok(0, "make an SD-Turbo file: %s", err.message);
	synth_preset("sd15", 0, &cfg);
	if (synth_checkpoint(tmp("made-sd15.safetensors"), &cfg, &err) == 0 &&
	    describe(tmp("made-sd15.safetensors"), &d) == 0)
		tap_ok(strcmp(d.arch, "sd15") == 0 && d.unet.heads == 8 && d.text[0].clip.heads == 12,
		    "a made SD 1.5 file: %s", d.arch);

	if (shared_dir() == NULL) {
		tap_skip("../shared is absent: no SD 2.x test model");
		goto out;
	}
	if (realpath(shared_path("testdata/sd21-tiny/model.safetensors"), abs) == NULL) {
		tap_ok(0, "sd21-tiny/model.safetensors");
		goto out;
	}
	/* A file without metadata: its name, else the SD 2.x default. */
	if (symlink(abs, tmp("v2-1_768-ema-pruned.safetensors")) == 0 &&
	    describe(tmp("v2-1_768-ema-pruned.safetensors"), &d) == 0)
		tap_ok(strcmp(d.arch, "sd2") == 0 && d.sched.prediction_type == SCHED_PRED_V &&
		    strstr(d.prediction_why, "default") != NULL,
		    "an SD 2.x file without metadata is the 768-v model (%s)", d.prediction_why);
	if (symlink(abs, tmp("v2-1_512-ema-pruned.safetensors")) == 0 &&
	    describe(tmp("v2-1_512-ema-pruned.safetensors"), &d) == 0)
		tap_ok(strcmp(d.arch, "sd2-base") == 0 && d.sched.prediction_type == SCHED_PRED_EPSILON &&
		    d.default_width == 512, "a file named 512 is the 2.x base model (%s)", d.prediction_why);
	if (symlink(abs, tmp("sd_turbo.safetensors")) == 0 &&
	    describe(tmp("sd_turbo.safetensors"), &d) == 0)
		tap_ok(strcmp(d.arch, "sd-turbo") == 0 && d.turbo, "sd_turbo.safetensors is SD-Turbo (%s)",
		    d.prediction_why);
	/* An LDM config beside the file: parameterization and head sizes. */
	if (symlink(abs, tmp("custom.safetensors")) == 0) {
		write_file(tmp("custom.yaml"), "model:\n  target: ldm.models.diffusion.ddpm.LatentDiffusion\n"
		    "  params:\n    scale_factor: 0.18215\n    unet_config:\n      params:\n"
		    "        num_head_channels: 8\n        attention_resolutions: [4, 2, 1]\n"
		    "    cond_stage_config:\n      params:\n        layer: penultimate\n        heads: 2\n");
		if (describe(tmp("custom.safetensors"), &d) == 0)
			tap_ok(strcmp(d.arch, "sd2-base") == 0 && d.unet.head_channels == 8 &&
			    d.text[0].clip.heads == 2 && strstr(d.prediction_why, "LDM config") != NULL,
			    "an LDM config without parameterization: epsilon, heads of %d (%s)",
			    d.unet.head_channels, d.prediction_why);
		write_file(tmp("custom.yaml"), "model:\n  params:\n    parameterization: \"v\"\n"
		    "    unet_config:\n      params:\n        num_head_channels: 8\n");
		if (describe(tmp("custom.safetensors"), &d) == 0)
			tap_ok(strcmp(d.arch, "sd2") == 0 && d.sched.prediction_type == SCHED_PRED_V,
			    "an LDM config with parameterization v: the 768-v model");
		write_file(tmp("custom.yaml"), "model: [unclosed\n");
		{
			struct sd_checkpoint ck;
			int rc = checkpoint_load(&ck, tmp("custom.safetensors"), NULL, NULL, &err);
			tap_ok(rc == 0 && model_describe(&ck, &d, &err) < 0 &&
			    strstr(err.message, "custom.yaml") != NULL,
			    "a malformed LDM config is an error naming it (%s)", err.message);
			if (rc == 0)
				checkpoint_free(&ck);
		}
	}
	/* The diffusers folder says everything in its configs. */
	if (describe(shared_path("testdata/sd21-tiny/diffusers"), &d) == 0)
		tap_ok(strcmp(d.arch, "sd2") == 0 && d.unet.head_channels == 8 && d.text[0].clip.heads == 2 &&
		    d.text[0].clip.layers == 2 && d.text[0].clip.act == CLIP_GELU &&
		    d.default_width == 128 && d.default_sampler == SD_SAMPLER_DDIM &&
		    d.sched.prediction_type == SCHED_PRED_V,
		    "the SD 2.x folder: heads of %d, %d text layers, %dx%d, DDIM, v (%s)",
		    d.unet.head_channels, d.text[0].clip.layers, d.default_width, d.default_height,
		    d.prediction_why);
	if (describe(shared_path("testdata/sdxl-tiny/diffusers"), &d) == 0)
		tap_ok(strcmp(d.arch, "sdxl") == 0 && (d.unet.head_channels == 4 || d.unet.heads == 8) && d.text[0].clip.heads == 3 &&
		    d.text[1].clip.heads == 5 && d.default_width == 128 && d.default_sampler == SD_SAMPLER_EULER &&
		    d.sched.timestep_spacing == SCHED_SPACING_LEADING && d.vae_scale == 0.13025f,
		    "the SDXL folder: heads of %d (or %d heads), text heads %d and %d, %dx%d, Euler, leading",
		    d.unet.head_channels, d.unet.heads, d.text[0].clip.heads, d.text[1].clip.heads, d.default_width,
		    d.default_height);
	if (describe(shared_path("testdata/sd3-tiny/diffusers"), &d) == 0)
		tap_ok(strcmp(d.arch, "sd3") == 0 && d.mmdit_heads == 4 && d.text[0].clip.heads == 3 &&
		    d.text[1].clip.heads == 5 && d.context_width == 48 && d.default_width == 128 &&
		    d.sched.prediction_type == SCHED_PRED_FLOW && d.sched.shift == 3.0 &&
		    d.vae_scale == 1.5305f && d.vae_shift == 0.0609f,
		    "the SD3 folder: 4 MMDiT heads, text heads 3 and 5, context 48, 128x128, flow shift 3 "
		    "(%s)", d.prediction_why);
	/* a made SD3 file says its heads in its metadata */
	synth_preset("sd3", 0, &cfg);
	if (synth_checkpoint(tmp("made-sd3.safetensors"), &cfg, &err) == 0 &&
	    describe(tmp("made-sd3.safetensors"), &d) == 0)
		tap_ok(strcmp(d.arch, "sd3") == 0 && d.mmdit_heads == 4 && d.text[0].clip.heads == 3 &&
		    d.text[1].clip.heads == 5 && d.context_width == 48,
		    "a made SD3 file: %d MMDiT heads, text heads %d and %d", d.mmdit_heads,
		    d.text[0].clip.heads, d.text[1].clip.heads);
	else
		tap_ok(0, "make an SD3 file: %s", err.message);
	if (describe(shared_path("testdata/sd15-tiny/diffusers"), &d) == 0)
		tap_ok(strcmp(d.arch, "sd15") == 0 && d.unet.heads == 8 && d.text[0].clip.heads == 12 &&
		    d.text[0].clip.act == CLIP_QUICK_GELU && d.sched.prediction_type == SCHED_PRED_EPSILON,
		    "the SD 1.5 folder: 8 heads, quick-GELU, epsilon");
out:
	{
		static const char *names[] = { "made-turbo.safetensors", "made-sd15.safetensors",
		    "v2-1_768-ema-pruned.safetensors", "v2-1_512-ema-pruned.safetensors",
		    "sd_turbo.safetensors", "custom.safetensors", "custom.yaml", "made-sd3.safetensors" };
		for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
			unlink(tmp(names[i]));
		rmdir(dir);
	}
	return tap_done();
}
