/* test_checkpoint.c: both checkpoint layouts map to the same tensors;
 * architectures are recognised; broken files give named errors. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "model/checkpoint.h"
#include "testutil.h"

static char tmpdir[] = "/tmp/sdbatch-ckpt-XXXXXX";

/* A file with one tiny F32 tensor under each of names. */
static const char *
fake_file(const char *base, const char *const *names, int n, const int64_t *shape0)
{
	static char path[4][512];
	static int next;
	struct sd_tensor t[16];
	float zero[64] = {0};
	struct sd_error err = {0};
	char *p = path[next++ % 4];

	for (int i = 0; i < n; i++) {
		t[i] = (struct sd_tensor){.name = names[i], .dtype = SD_F32, .ndim = 2,
		    .shape = {1, 1}, .data = zero};
		if (shape0 && i == 0) {
			t[i].ndim = 4;
			memcpy(t[i].shape, shape0, 4 * sizeof *shape0);
		}
	}
	snprintf(p, 512, "%s/%s", tmpdir, base);
	if (st_write(p, t, n, NULL, NULL, 0, &err) < 0)
		tap_diag("%s", err.message);
	return p;
}

static void
expect_arch(const char *what, const char *path, const char *arch, int supported)
{
	struct sd_detect d;
	struct sd_error err = {0};
	int rc = checkpoint_detect(path, &d, &err);

	tap_ok(rc == 0 && strcmp(d.arch, arch) == 0 && d.supported == supported,
	    "%s is detected as %s (%s)", what, arch, rc == 0 ? d.name : err.message);
}

int
main(void)
{
	struct sd_checkpoint a, b;
	struct sd_error err = {0};
	const char *model, *f16, *diff, *inpaint;

	if (mkdtemp(tmpdir) == NULL)
		return tap_skip_all("cannot make a temporary folder");

	/* Other architectures are named, not misread. */
	const char *sdxl[] = {"conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight",
	    "conditioner.embedders.1.model.token_embedding", "model.diffusion_model.input_blocks.0.0.weight"};
	const char *sd2[] = {"cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight",
	    "model.diffusion_model.input_blocks.0.0.weight"};
	const char *sd3[] = {"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight"};
	const char *flux[] = {"double_blocks.0.img_attn.qkv.weight"};
	const char *junk[] = {"foo.bar"};
	expect_arch("an SDXL file", fake_file("sdxl.safetensors", sdxl, 3, NULL), "sdxl", 1);
	expect_arch("an SD 2.x file", fake_file("sd2.safetensors", sd2, 2, NULL), "sd2", 1);
	expect_arch("an SD3 file", fake_file("sd3.safetensors", sd3, 1, NULL), "sd3", 1);
	expect_arch("a FLUX file", fake_file("flux.safetensors", flux, 1, NULL), "flux", 0);
	expect_arch("a file of unknown tensors", fake_file("junk.safetensors", junk, 1, NULL), "unknown", 0);
	tap_ok(checkpoint_load(&a, fake_file("flux.safetensors", flux, 1, NULL), NULL, NULL, &err) < 0 &&
	    strstr(err.message, "FLUX") && strstr(err.message, "not supported yet"),
	    "loading FLUX says it is not supported yet (%s)", err.message);
	if (shared_dir() != NULL) {
		/* SD3 from a folder whose T5 is sharded (an index of
		 * .safetensors shards), the other parts the tiny model's */
		static const char *parts[] = {"transformer", "vae", "text_encoder", "text_encoder_2",
		    "tokenizer", "tokenizer_2", "scheduler", "model_index.json"};
		const char *sh1[] = {"shared.weight", "encoder.block.0.layer.0.SelfAttention.q.weight"};
		const char *sh2[] = {"encoder.final_layer_norm.weight"};
		char dir[600], from[600], to[700], *abs;
		FILE *f;
		snprintf(dir, sizeof dir, "%s/sd3-sharded", tmpdir);
		mkdir(dir, 0777);
		for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
			snprintf(from, sizeof from, "testdata/sd3-tiny/diffusers/%s", parts[i]);
			abs = realpath(shared_path(from), NULL);
			snprintf(to, sizeof to, "%s/%s", dir, parts[i]);
			if (abs == NULL || symlink(abs, to) < 0)
				tap_diag("cannot link %s", to);
			free(abs);
		}
		snprintf(to, sizeof to, "%s/text_encoder_3", dir);
		mkdir(to, 0777);
		fake_file("sd3-sharded/text_encoder_3/model-00001-of-00002.safetensors", sh1, 2, NULL);
		fake_file("sd3-sharded/text_encoder_3/model-00002-of-00002.safetensors", sh2, 1, NULL);
		snprintf(to, sizeof to, "%s/text_encoder_3/model.safetensors.index.json", dir);
		if ((f = fopen(to, "w")) != NULL) {
			fputs("{\"metadata\": {}, \"weight_map\": {\"shared.weight\": \"model-00001-of-00002.safetensors\", "
			    "\"encoder.block.0.layer.0.SelfAttention.q.weight\": \"model-00001-of-00002.safetensors\", "
			    "\"encoder.final_layer_norm.weight\": \"model-00002-of-00002.safetensors\"}}", f);
			fclose(f);
		}
		int rc = checkpoint_load(&a, dir, NULL, NULL, &err);
		tap_ok(rc == 0 && strcmp(a.detect.arch, "sd3") == 0 &&
		    weights_get(a.weights, SD_PREFIX_SD3_T5 "shared.weight") != NULL &&
		    weights_get(a.weights, SD_PREFIX_SD3_T5 "encoder.final_layer_norm.weight") != NULL &&
		    weights_get(a.weights, SD_PREFIX_SD3_CLIP_G "text_projection.weight") != NULL &&
		    weights_get(a.weights, SD_PREFIX_UNET "pos_embed.pos_embed") != NULL,
		    "an SD3 folder with a sharded text_encoder_3: every shard read, the parts under the "
		    "single file's prefixes (%s)", rc == 0 ? "loaded" : err.message);
		if (rc == 0)
			checkpoint_free(&a);
		/* a shard outside the folder is refused */
		if ((f = fopen(to, "w")) != NULL) {
			fputs("{\"weight_map\": {\"shared.weight\": \"../../x.safetensors\"}}", f);
			fclose(f);
		}
		rc = checkpoint_load(&a, dir, NULL, NULL, &err);
		tap_ok(rc < 0 && strstr(err.message, "same folder") != NULL,
		    "a shard named outside its folder is refused (%s)", err.message);
		if (rc == 0)
			checkpoint_free(&a);
	}
	expect_arch("an SDXL refiner file", fake_file("refiner.safetensors", (const char *[]){
	    "conditioner.embedders.0.model.token_embedding.weight",
	    "model.diffusion_model.input_blocks.0.0.weight"}, 2, NULL), "sdxl-refiner", 0);
	if (shared_dir() != NULL) {
		expect_arch("the SDXL tiny single file", shared_path("testdata/sdxl-tiny/model.safetensors"),
		    "sdxl", 1);
		expect_arch("the SDXL tiny diffusers folder", shared_path("testdata/sdxl-tiny/diffusers"),
		    "sdxl", 1);
	}
	tap_ok(checkpoint_load(&a, "/nonexistent.safetensors", NULL, NULL, &err) < 0 &&
	    err.code == SD_ENOINPUT, "a missing model is SD_ENOINPUT (%s)", err.message);

	if (shared_dir() == NULL) {
		tap_skip("../shared is absent: no test models");
		return tap_done();
	}
	model = shared_path("testdata/sd15-tiny/model.safetensors");
	f16 = shared_path("testdata/sd15-tiny/model-f16.safetensors");
	diff = shared_path("testdata/sd15-tiny/diffusers");
	inpaint = shared_path("testdata/sd15-tiny/model-inpaint.safetensors");
	expect_arch("the tiny single file", model, "sd15", 1);
	expect_arch("the tiny F16 file", f16, "sd15", 1);
	expect_arch("the tiny diffusers folder", diff, "sd15", 1);
	expect_arch("the 9-channel inpainting UNet", inpaint, "sd15-inpaint", 1);
	expect_arch("the SD 2.x tiny single file", shared_path("testdata/sd21-tiny/model.safetensors"),
	    "sd2", 1);
	expect_arch("the SD 2.x tiny F16 file", shared_path("testdata/sd21-tiny/model-f16.safetensors"),
	    "sd2", 1);
	expect_arch("the SD 2.x tiny diffusers folder", shared_path("testdata/sd21-tiny/diffusers"),
	    "sd2", 1);

	if (checkpoint_load(&a, model, NULL, NULL, &err) < 0 ||
	    checkpoint_load(&b, diff, NULL, NULL, &err) < 0) {
		tap_ok(0, "load both layouts: %s", err.message);
		return tap_done();
	}
	/* Every tensor of the single file but position_ids is in the folder,
	 * with the same shape and bytes. */
	int missing = 0, differ = 0, total = 0;
	char first[512] = "";
	for (int i = 0; i < 3; i++) {
		const char *prefix[] = {SD_PREFIX_UNET, SD_PREFIX_VAE, SD_PREFIX_CLIP};
		struct st_file *f = st_open(model, &err);
		for (int k = 0; f && k < st_count(f); k++) {
			const struct sd_tensor *t = st_tensor(f, k), *u;
			if (strncmp(t->name, prefix[i], strlen(prefix[i])) != 0 || strstr(t->name, "position_ids"))
				continue;
			total++;
			u = weights_get(b.weights, t->name);
			if (u == NULL) {
				if (!missing++)
					snprintf(first, sizeof first, "%s", t->name);
				continue;
			}
			size_t nb = sd_tensor_nbytes(t);
			int same_shape = t->ndim == u->ndim || (t->ndim == 4 && u->ndim == 2 &&
			    t->shape[2] == 1 && t->shape[3] == 1);
			if (!same_shape || sd_tensor_nbytes(u) != nb || memcmp(t->data, u->data, nb) != 0)
				differ++;
		}
		st_close(f);
	}
	tap_ok(missing == 0 && differ == 0 && total == 960,
	    "the diffusers folder maps to all %d original names with identical data (missing %d%s%s, differing %d)",
	    total, missing, missing ? ": first " : "", first, differ);
	tap_ok(b.scheduler_config != NULL, "the folder's scheduler config is found");
	checkpoint_free(&a);
	checkpoint_free(&b);

	/* A UNet from another file. */
	if (checkpoint_load(&a, model, inpaint, NULL, &err) == 0) {
		const struct sd_tensor *t = weights_get(a.weights, SD_PREFIX_UNET "input_blocks.0.0.weight");
		tap_ok(t && t->shape[1] == 9 && strcmp(a.detect.arch, "sd15-inpaint") == 0 &&
		    weights_get(a.weights, SD_PREFIX_VAE "decoder.conv_in.weight") != NULL,
		    "--unet replaces the UNet (9 input channels) and keeps the model's VAE");
		checkpoint_free(&a);
	} else {
		tap_ok(0, "load with --unet: %s", err.message);
	}
	tap_ok(checkpoint_load(&a, inpaint, NULL, NULL, &err) == 0 &&
	    weights_get(a.weights, SD_PREFIX_VAE "decoder.conv_in.weight") == NULL,
	    "a UNet-only file loads as a model (its VAE and text encoder must come from elsewhere)");
	checkpoint_free(&a);
	tap_ok(checkpoint_load(&a, model, NULL, inpaint, &err) < 0 && strstr(err.message, "no VAE"),
	    "a --vae file without a VAE is refused (%s)", err.message);

	/* A BF16 copy of the model loads, and its weights widen back to the
	 * F32 ones within BF16's precision. */
	{
		struct st_file *f = st_open(model, &err);
		int n = f ? st_count(f) : 0, bad = 0;
		struct sd_tensor *t = calloc((size_t)n + 1, sizeof *t);
		char bf[600];
		for (int k = 0; k < n; k++) {
			t[k] = *st_tensor(f, k);
			if (t[k].dtype == SD_F32) {
				size_t cnt = (size_t)sd_tensor_numel(&t[k]);
				uint16_t *h = malloc(cnt * 2 + 2);
				for (size_t e = 0; e < cnt; e++)
					h[e] = sd_f32_to_bf16(((const float *)t[k].data)[e]);
				t[k].dtype = SD_BF16;
				t[k].data = h;
			}
		}
		snprintf(bf, sizeof bf, "%s/bf16.safetensors", tmpdir);
		if (f != NULL && st_write(bf, t, n, NULL, NULL, 0, &err) == 0 &&
		    checkpoint_load(&a, bf, NULL, NULL, &err) == 0) {
			for (int k = 0; k < n; k++) {
				const struct sd_tensor *o = st_tensor(f, k), *u = weights_get(a.weights, o->name);
				if (o->dtype != SD_F32)
					continue;
				if (u == NULL || u->dtype != SD_BF16) {
					bad++;
					continue;
				}
				for (int64_t e = 0; e < sd_tensor_numel(o); e++) {
					float x = ((const float *)o->data)[e];
					float y = sd_bf16_to_f32(((const uint16_t *)u->data)[e]);
					if (fabsf(x - y) > fabsf(x) * (1.0f / 256))
						bad++;
				}
			}
			tap_ok(bad == 0 && strcmp(a.detect.arch, "sd15") == 0 && a.detect.dtype_counts[SD_BF16] > 0,
			    "a BF16 checkpoint loads as sd15 with its weights (%d mismatches)", bad);
			checkpoint_free(&a);
		} else {
			tap_ok(0, "BF16 checkpoint: %s", err.message);
		}
		for (int k = 0; k < n; k++)
			if (t[k].dtype == SD_BF16)
				free(t[k].data);
		free(t);
		st_close(f);
	}

	/* A truncated copy of the model. */
	char cmd[4096], cut[600];
	snprintf(cut, sizeof cut, "%s/cut.safetensors", tmpdir);
	snprintf(cmd, sizeof cmd, "head -c 100000 '%s' > '%s'", model, cut);
	if (system(cmd) == 0)
		tap_ok(checkpoint_load(&a, cut, NULL, NULL, &err) < 0 && strstr(err.message, "cut.safetensors") &&
		    strstr(err.message, "truncated"), "a truncated checkpoint is named as such (%s)", err.message);
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		tap_diag("could not remove %s", tmpdir);
	return tap_done();
}
