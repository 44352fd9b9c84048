/* test_synth.c: the synthetic SD 1.5 checkpoint generator: the tiny preset
 * has exactly the tensors of testdata/sd15-tiny/model.safetensors, the full
 * preset the parameter counts of the real SD 1.5 (counted, not written). */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/safetensors.h"
#include "model/synth.h"
#include "testutil.h"

static char dir[64];

static const char *
tmp_path(const char *name)
{
	static char buf[4][256];
	static int next;
	char *p = buf[next++ % 4];

	snprintf(p, sizeof buf[0], "%s/%s", dir, name);
	return p;
}

static int
is_float(enum sd_dtype d)
{
	return d == SD_F32 || d == SD_F16 || d == SD_BF16 || d == SD_F64;
}

/* Every tensor of ref (whose name starts with prefix, but skip) is in got
 * with the same shape and dtype class, and got has no other tensor. */
static void
compare_layout_but(const char *what, const struct st_file *got, const struct st_file *ref,
    const char *prefix, const char *skip)
{
	int nref = 0, bad = 0;

	for (int i = 0; i < st_count(ref); i++) {
		const struct sd_tensor *r = st_tensor(ref, i), *g;
		char s1[128], s2[128];

		if (strncmp(r->name, prefix, strlen(prefix)) != 0 ||
		    (skip != NULL && strcmp(r->name, skip) == 0))
			continue;
		nref++;
		g = st_find(got, r->name);
		if (g == NULL) {
			if (bad++ < 5)
				tap_diag("%s: missing %s", what, r->name);
			continue;
		}
		sd_shape_str(r, s1, sizeof s1);
		sd_shape_str(g, s2, sizeof s2);
		if (strcmp(s1, s2) != 0 || is_float(r->dtype) != is_float(g->dtype) ||
		    (!is_float(r->dtype) && r->dtype != g->dtype)) {
			if (bad++ < 5)
				tap_diag("%s: %s is %s %s, want %s %s", what, r->name,
				    sd_dtype_name(g->dtype), s2, sd_dtype_name(r->dtype), s1);
		}
	}
	tap_ok(bad == 0 && nref == st_count(got),
	    "%s: %d tensors, names, shapes and dtypes as the reference (%d in the file)",
	    what, nref, st_count(got));
}

static void
compare_layout(const char *what, const struct st_file *got, const struct st_file *ref,
    const char *prefix)
{
	compare_layout_but(what, got, ref, prefix, NULL);
}

static void
check_values(const struct st_file *f, enum sd_dtype dtype)
{
	const struct sd_tensor *t;
	float *v;
	size_t n;
	double sum = 0, sq = 0, bound, maxabs = 0;
	int ok = 1;

	for (int i = 0; i < st_count(f); i++) {
		t = st_tensor(f, i);
		if (strcmp(t->name, "cond_stage_model.transformer.text_model.embeddings.position_ids") != 0 &&
		    t->dtype != dtype)
			ok = 0;
		if ((uintptr_t)t->data % sd_dtype_size(t->dtype) != 0)
			ok = 0;
	}
	tap_ok(ok, "every tensor is %s (position_ids I64) and aligned", sd_dtype_name(dtype));

	t = st_find(f, "cond_stage_model.transformer.text_model.embeddings.position_ids");
	ok = t != NULL && t->dtype == SD_I64;
	for (int i = 0; ok && i < 77; i++)
		ok = ((const int64_t *)t->data)[i] == i;
	tap_ok(ok, "position_ids are 0..76");

	t = st_find(f, "model.diffusion_model.input_blocks.1.0.in_layers.2.weight");
	n = (size_t)sd_tensor_numel(t);
	v = malloc(n * sizeof *v);
	sd_convert_to_f32(v, t->data, t->dtype, n);
	bound = 1.0 / sqrt(32.0 * 9.0);
	for (size_t i = 0; i < n; i++) {
		sum += v[i];
		sq += (double)v[i] * v[i];
		if (fabs(v[i]) > maxabs)
			maxabs = fabs(v[i]);
	}
	free(v);
	tap_ok(maxabs <= bound * 1.001 && maxabs > bound * 0.9 && fabs(sum / n) < bound / 10 &&
	    fabs(sqrt(sq / n) - bound / sqrt(3.0)) < bound / 20,
	    "a conv weight is uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) (max %.4f, rms %.4f)",
	    maxabs, sqrt(sq / n));

	t = st_find(f, "model.diffusion_model.out.0.weight");
	v = malloc(32 * sizeof *v);
	sd_convert_to_f32(v, t->data, t->dtype, 32);
	ok = 1;
	for (int i = 0; i < 32; i++)
		ok &= v[i] == 1.0f;
	t = st_find(f, "first_stage_model.decoder.norm_out.bias");
	sd_convert_to_f32(v, t->data, t->dtype, 32);
	for (int i = 0; i < 32; i++)
		ok &= v[i] == 0.0f;
	free(v);
	tap_ok(ok, "norm weights are 1, norm biases 0");
}

static int
same_files(const char *a, const char *b)
{
	FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
	int ca, cb, same = fa && fb;

	while (same) {
		ca = getc(fa);
		cb = getc(fb);
		if (ca != cb)
			same = 0;
		if (ca == EOF || cb == EOF)
			break;
	}
	if (fa)
		fclose(fa);
	if (fb)
		fclose(fb);
	return same;
}

int
main(void)
{
	struct synth_config cfg = synth_config_sd15_tiny;
	struct sd_error err = {0};
	struct synth_counts c;
	struct st_file *got, *ref;
	struct stat st;
	int rc;

	snprintf(dir, sizeof dir, "/tmp/test_synth.XXXXXX");
	if (mkdtemp(dir) == NULL)
		return tap_skip_all("cannot make a temporary folder");

	/* The full preset, counted without writing 2 GB. */
	rc = synth_count(&synth_config_sd15_full, &c, &err);
	tap_ok(rc == 0 && c.unet_params == 859520964, "full SD 1.5 UNet: %lld parameters (859,520,964)",
	    (long long)c.unet_params);
	tap_ok(rc == 0 && c.vae_params == 83653863, "full SD 1.5 VAE: %lld parameters (83,653,863)",
	    (long long)c.vae_params);
	tap_ok(rc == 0 && c.clip_params == 123060480, "full SD 1.5 CLIP text: %lld parameters (123,060,480)",
	    (long long)c.clip_params);
	tap_ok(rc == 0 && c.tensors == 1131 && c.file_size > 2130000000ull && c.file_size < 2135000000ull,
	    "full SD 1.5: %d tensors, %llu bytes in F16", c.tensors, (unsigned long long)c.file_size);

	/* SD 2.1 768-v: the released UNet has 865,910,724 parameters. */
	rc = synth_count(&synth_config_sd2_full, &c, &err);
	tap_ok(rc == 0 && c.unet_params == 865910724, "full SD 2.1 UNet: %lld parameters (865,910,724)",
	    (long long)c.unet_params);
	tap_ok(rc == 0 && c.vae_params == 83653863 && c.clip_params == 354032641,
	    "full SD 2.1 VAE %lld, OpenCLIP-H text tower %lld parameters (24 layers stored, "
	    "text_projection and logit_scale included)", (long long)c.vae_params,
	    (long long)c.clip_params);
	/* SDXL base 1.0: UNet 2,567,463,684; CLIP-L 123,060,480 + bigG with
	 * its projection 694,659,840 (+ logit_scale). */
	rc = synth_count(&synth_config_sdxl_full, &c, &err);
	tap_ok(rc == 0 && c.unet_params == 2567463684LL && c.clip_params == 123060480LL + 694659841LL &&
	    c.vae_params == 83653863, "full SDXL: UNet %lld, text encoders %lld, VAE %lld parameters",
	    (long long)c.unet_params, (long long)c.clip_params, (long long)c.vae_params);
	if (shared_dir() != NULL) {
		struct synth_config c3 = synth_config_sdxl_tiny;
		struct st_file *g3, *r3;
		rc = synth_checkpoint(tmp_path("tinyxl.safetensors"), &c3, &err);
		g3 = rc == 0 ? st_open(tmp_path("tinyxl.safetensors"), &err) : NULL;
		r3 = st_open(shared_path("testdata/sdxl-tiny/model.safetensors"), &err);
		if (g3 != NULL && r3 != NULL)
			compare_layout("tiny SDXL preset", g3, r3, "");
		else
			tap_ok(0, "tiny SDXL preset: %s", err.message);
		st_close(g3);
		st_close(r3);
		unlink(tmp_path("tinyxl.safetensors"));
	}
	/* SD3 Medium: MMDiT 2,084,951,104 with its 192x192 pos_embed table
	 * (2,028,328,000 without it); CLIP-L 123,060,480 and bigG 694,659,840
	 * without position_ids nor logit_scale; T5-XXL's encoder 4,762,310,656;
	 * the 16-channel VAE without quant convs. */
	rc = synth_count(&synth_config_sd3_full, &c, &err);
	tap_ok(rc == 0 && c.unet_params == 2084951104LL && c.clip_params == 123060480LL + 694659840LL &&
	    c.t5_params == 4762310656LL, "full SD3 Medium: MMDiT %lld, CLIP %lld, T5 %lld, VAE %lld "
	    "parameters, %.2f GB", (long long)c.unet_params, (long long)c.clip_params,
	    (long long)c.t5_params, (long long)c.vae_params, (double)c.file_size / 1e9);
	if (shared_dir() != NULL) {
		struct synth_config c3 = synth_config_sd3_tiny;
		struct st_file *g3, *r3;
		c3.dtype = SD_F32;
		rc = synth_checkpoint(tmp_path("tiny3.safetensors"), &c3, &err);
		g3 = rc == 0 ? st_open(tmp_path("tiny3.safetensors"), &err) : NULL;
		r3 = st_open(shared_path("testdata/sd3-tiny/model.safetensors"), &err);
		/* the reference also holds T5's tied copy of its embedding,
		 * which neither sdbatch nor stable-diffusion.cpp reads */
		if (g3 != NULL && r3 != NULL)
			compare_layout_but("tiny SD3 preset", g3, r3, "",
			    "text_encoders.t5xxl.transformer.encoder.embed_tokens.weight");
		else
			tap_ok(0, "tiny SD3 preset: %s", err.message);
		tap_ok(g3 != NULL && strcmp(st_metadata(g3, "modelspec.prediction_type"), "flow") == 0 &&
		    strcmp(st_metadata(g3, "sdbatch.mmdit_heads"), "4") == 0 &&
		    strcmp(st_metadata(g3, "sdbatch.text_heads"), "3,5") == 0,
		    "the SD3 file's metadata says flow and the head counts");
		st_close(g3);
		st_close(r3);
		c3.parts = SYNTH_ALL & ~SYNTH_T5;
		rc = synth_checkpoint(tmp_path("tiny3.safetensors"), &c3, &err);
		g3 = rc == 0 ? st_open(tmp_path("tiny3.safetensors"), &err) : NULL;
		tap_ok(g3 != NULL && st_find(g3, "text_encoders.t5xxl.transformer.shared.weight") == NULL &&
		    st_find(g3, "text_encoders.clip_g.transformer.text_projection.weight") != NULL,
		    "SD3 without T5: no T5 tensors, the CLIPs there");
		st_close(g3);
		unlink(tmp_path("tiny3.safetensors"));
	}
	{
		struct synth_config c2;
		tap_ok(synth_preset("sd-turbo", 0, &c2) == 0 && strcmp(c2.arch, "sd-turbo") == 0 &&
		    synth_preset("sd3", 0, &c2) == 0 && strcmp(c2.arch, "sd3") == 0 &&
		    synth_preset("flux", 0, &c2) < 0 &&
		    synth_preset("sdxl-turbo", 1, &c2) == 0 && c2.unet_adm == 2816, "presets by architecture");
	}
	if (shared_dir() != NULL) {
		struct synth_config c2 = synth_config_sd2_tiny;
		struct st_file *g2, *r2;
		rc = synth_checkpoint(tmp_path("tiny2.safetensors"), &c2, &err);
		g2 = rc == 0 ? st_open(tmp_path("tiny2.safetensors"), &err) : NULL;
		r2 = st_open(shared_path("testdata/sd21-tiny/model.safetensors"), &err);
		if (g2 != NULL && r2 != NULL)
			compare_layout("tiny SD 2.x preset", g2, r2, "");
		else
			tap_ok(0, "tiny SD 2.x preset: %s", err.message);
		tap_ok(g2 != NULL && strcmp(st_metadata(g2, "modelspec.prediction_type"), "v") == 0 &&
		    strcmp(st_metadata(g2, "sdbatch.unet_head_channels"), "8") == 0 &&
		    strcmp(st_metadata(g2, "sdbatch.text_heads"), "2") == 0,
		    "the SD 2.x file's metadata says v-prediction and the head sizes");
		st_close(g2);
		st_close(r2);
		unlink(tmp_path("tiny2.safetensors"));
	}

	/* The tiny preset against the reference model. */
	rc = synth_checkpoint(tmp_path("tiny.safetensors"), &cfg, &err);
	tap_ok(rc == 0, "writes the tiny preset%s%s", rc ? ": " : "", err.message);
	got = st_open(tmp_path("tiny.safetensors"), &err);
	tap_ok(got != NULL && st_count(got) == 961, "the file opens, 961 tensors%s%s",
	    got ? "" : ": ", got ? "" : err.message);
	if (got == NULL) {
		unlink(tmp_path("tiny.safetensors"));
		rmdir(dir);
		return tap_done();
	}
	rc = synth_count(&cfg, &c, &err);
	tap_ok(rc == 0 && stat(tmp_path("tiny.safetensors"), &st) == 0 &&
	    (uint64_t)st.st_size == c.file_size && c.tensors == 961,
	    "the dry run agrees on the size (%llu bytes) and tensor count",
	    (unsigned long long)c.file_size);
	tap_ok(strcmp(st_metadata(got, "format"), "pt") == 0, "metadata format pt");
	check_values(got, SD_F16);
	if (shared_dir() == NULL) {
		tap_skip("tiny preset vs sd15-tiny/model.safetensors: shared/ not found");
		tap_skip("inpainting UNet vs sd15-tiny/model-inpaint.safetensors: shared/ not found");
	} else {
		ref = st_open(shared_path("testdata/sd15-tiny/model.safetensors"), &err);
		if (ref == NULL)
			tap_ok(0, "reference model: %s", err.message);
		else
			compare_layout("tiny preset", got, ref, "");
		st_close(ref);

		cfg.parts = SYNTH_UNET;
		cfg.unet_in_channels = 9;
		rc = synth_checkpoint(tmp_path("inpaint.safetensors"), &cfg, &err);
		ref = st_open(shared_path("testdata/sd15-tiny/model-inpaint.safetensors"), &err);
		struct st_file *inp = rc == 0 ? st_open(tmp_path("inpaint.safetensors"), &err) : NULL;
		if (ref == NULL || inp == NULL)
			tap_ok(0, "inpainting UNet: %s", err.message);
		else
			compare_layout("inpainting UNet only", inp, ref, "");
		st_close(ref);
		st_close(inp);
		unlink(tmp_path("inpaint.safetensors"));
		cfg = synth_config_sd15_tiny;
	}
	st_close(got);

	/* Deterministic, seed-dependent, other dtypes. */
	rc = synth_checkpoint(tmp_path("again.safetensors"), &cfg, &err);
	tap_ok(rc == 0 && same_files(tmp_path("tiny.safetensors"), tmp_path("again.safetensors")),
	    "the same configuration gives the same bytes");
	cfg.seed = 1;
	rc = synth_checkpoint(tmp_path("again.safetensors"), &cfg, &err);
	tap_ok(rc == 0 && !same_files(tmp_path("tiny.safetensors"), tmp_path("again.safetensors")),
	    "another seed gives other values");
	cfg.seed = 0;
	cfg.dtype = SD_BF16;
	rc = synth_checkpoint(tmp_path("again.safetensors"), &cfg, &err);
	got = rc == 0 ? st_open(tmp_path("again.safetensors"), &err) : NULL;
	tap_ok(got != NULL, "BF16 variant written");
	if (got != NULL)
		check_values(got, SD_BF16);
	st_close(got);
	cfg.dtype = SD_F32;
	rc = synth_checkpoint(tmp_path("again.safetensors"), &cfg, &err);
	got = rc == 0 ? st_open(tmp_path("again.safetensors"), &err) : NULL;
	tap_ok(got != NULL, "F32 variant written");
	if (got != NULL)
		check_values(got, SD_F32);
	st_close(got);

	/* Errors. */
	cfg = synth_config_sd15_tiny;
	cfg.unet_channels[1] = 40;
	tap_ok(synth_count(&cfg, &c, &err) < 0 && err.code == SD_EUSAGE,
	    "a width that is not a multiple of 32 is refused (%s)", err.message);
	cfg = synth_config_sd15_tiny;
	cfg.dtype = SD_I32;
	tap_ok(synth_checkpoint(tmp_path("bad.safetensors"), &cfg, &err) < 0 &&
	    access(tmp_path("bad.safetensors"), F_OK) < 0, "an integer dtype is refused (%s)", err.message);
	cfg = synth_config_sd15_tiny;
	rc = synth_checkpoint(tmp_path("no/such/dir.safetensors"), &cfg, &err);
	tap_ok(rc < 0 && err.code == SD_EIO, "a missing folder is an I/O error (%s)", err.message);

	unlink(tmp_path("tiny.safetensors"));
	unlink(tmp_path("again.safetensors"));
	rmdir(dir);
	return tap_done();
}
