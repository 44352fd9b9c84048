/* test_lora.c: LoRA files against diffusers/PEFT (sd15-tiny's lora_* cases):
 * the key mapping of every layer, the merged weights at two scales, whole
 * txt2img and img2img runs with one and two LoRAs; the base weights stay
 * untouched and come back; bad files are clear errors. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "model/checkpoint.h"
#include "model/lora.h"
#include "caserun.h"

static json_t *manifest;
static char tmpdir[256];

static const char *
lora_path(const char *rel)
{
	static char buf[4][1024];
	static int k;
	char r[512];

	snprintf(r, sizeof r, "testdata/sd15-tiny/%s", rel);
	k = (k + 1) % 4;
	snprintf(buf[k], sizeof buf[k], "%s", shared_path(r));
	return buf[k];
}

static const struct lora_model sd15 = {
	.unet_prefix = SD_PREFIX_UNET, .text_prefix = {SD_PREFIX_CLIP}, .ntext = 1,
};

/* The merge cases: every layer of key_map lands on its tensor, and the
 * merged tensors at scales 1 and 0.5 are diffusers'. */
static void
merge_case(struct st_file *base, const char *name)
{
	json_t *c = case_find(manifest, name), *params = json_object_get(c, "params");
	json_t *km = json_object_get(params, "key_map"), *row;
	struct sd_error err = {0};
	struct lora *l;
	struct st_file *g = golden_open(name);
	size_t i;

	if (c == NULL || g == NULL) {
		tap_ok(0, "%s: case missing", name);
		return;
	}
	l = lora_open(lora_path(json_string_value(json_object_get(params, "lora_file"))), &err);
	if (!tap_ok(l != NULL, "%s: lora_open: %s", name, l ? "ok" : err.message)) {
		st_close(g);
		return;
	}
	tap_ok(l->format == LORA_KOHYA && l->nlayers == (int)json_array_size(km),
	    "%s: kohya format, %d layers (key_map %zu)", name, l->nlayers, json_array_size(km));
	tap_ok(l->max_rank == (int)json_integer_value(json_object_get(params, "rank")),
	    "%s: rank %d", name, l->max_rank);

	for (int si = 0; si < 2; si++) {
		float scale = si == 0 ? 1.0f : 0.5f;
		struct sd_weights *w = weights_new();
		struct lora_use use = {l, scale, scale};
		struct lora_report rep = {0};
		struct lora_merge *mg;
		int mapped = 0, layers = 0, checked = 0, good = 1;

		weights_add_file(w, base, NULL);
		mg = lora_merge_apply(w, &sd15, &use, 1, &rep, &err);
		if (!tap_ok(mg != NULL, "%s s=%g: merge: %s", name, scale, mg ? "ok" : err.message)) {
			weights_free(w);
			continue;
		}
		tap_ok(rep.applied == l->nlayers && rep.unmatched == 0, "%s s=%g: %d layers applied, %d unmatched",
		    name, scale, rep.applied, rep.unmatched);
		/* every key_map row: its tensor now is a merged copy */
		json_array_foreach(km, i, row) {
			const char *key = json_string_value(json_array_get(row, 2));
			layers++;
			if (weights_get(w, key) != NULL && weights_get(w, key) != st_find(base, key) &&
			    weights_get(w, key)->dtype == SD_F32)
				mapped++;
		}
		tap_ok(mapped == layers, "%s s=%g: %d of %d key_map layers merged into their tensor",
		    name, scale, mapped, layers);
		/* the golden merged tensors */
		for (int t = 0; t < st_count(g); t++) {
			const struct sd_tensor *gt = st_tensor(g, t);
			char prefix[32];
			snprintf(prefix, sizeof prefix, "merged_s%g/", scale);
			if (strncmp(gt->name, prefix, strlen(prefix)) != 0)
				continue;
			const struct sd_tensor *got = weights_get(w, gt->name + strlen(prefix));
			if (got == NULL || got->dtype != SD_F32 || sd_tensor_numel(got) != sd_tensor_numel(gt)) {
				tap_ok(0, "%s: %s missing or not F32", name, gt->name);
				good = 0;
				continue;
			}
			good &= check_close(gt->name, got->data, gt->data, (size_t)sd_tensor_numel(gt), 1e-6, 1e-6);
			checked++;
		}
		tap_ok(checked >= 3 && good, "%s s=%g: %d merged tensors checked", name, scale, checked);
		tap_ok(lora_merge_bytes(mg) > 0 && lora_merge_tensors(mg) <= l->nlayers,
		    "%s: the merge holds %d tensors, %zu bytes (only the touched layers)", name,
		    lora_merge_tensors(mg), lora_merge_bytes(mg));
		/* undo: the mmap'd originals are back */
		lora_merge_undo(mg, w);
		int back = 1;
		json_array_foreach(km, i, row) {
			const char *key = json_string_value(json_array_get(row, 2));
			back &= weights_get(w, key) == st_find(base, key);
		}
		tap_ok(back, "%s s=%g: undo puts the original tensors back", name, scale);
		weights_free(w);
	}
	lora_free(l);
	st_close(g);
}

/* On an F16 model the merged layers stay F16 (the size of the layers a LoRA
 * touches, no more): diffusers' merged values rounded to F16. */
static void
f16_merge(void)
{
	struct sd_error err = {0};
	struct st_file *f = st_open(shared_path("testdata/sd15-tiny/model-f16.safetensors"), &err);
	struct st_file *g = golden_open("lora_merge_full_r8");
	struct lora *l = lora_open(lora_path("lora/lora_te_unet_locon_r8.safetensors"), &err);
	struct sd_weights *w = weights_new();
	size_t checked = 0, bad = 0;

	if (f == NULL || g == NULL || l == NULL) {
		tap_ok(0, "F16 merge: %s", err.message);
		goto out;
	}
	weights_add_file(w, f, NULL);
	struct lora_use use = {l, 1, 1};
	struct lora_merge *mg = lora_merge_apply(w, &sd15, &use, 1, NULL, &err);
	for (int t = 0; mg != NULL && t < st_count(g); t++) {
		const struct sd_tensor *gt = st_tensor(g, t);
		if (strncmp(gt->name, "merged_s1/", 10) != 0)
			continue;
		const struct sd_tensor *got = weights_get(w, gt->name + 10);
		size_t n = (size_t)sd_tensor_numel(gt);
		if (got == NULL || got->dtype != SD_F16) {
			bad++;
			continue;
		}
		for (size_t i = 0; i < n; i++) {
			float x = sd_f16_to_f32(((const uint16_t *)got->data)[i]), want = ((const float *)gt->data)[i];
			bad += fabsf(x - want) > 2e-3f + 2e-3f * fabsf(want);
		}
		checked++;
	}
	/* the layers' own F16 size (each aligned to 64 bytes) */
	size_t layers = 0, i;
	json_t *row, *km = json_object_get(json_object_get(case_find(manifest, "lora_merge_full_r8"),
	    "params"), "key_map");
	json_array_foreach(km, i, row)
		layers += (sd_tensor_nbytes(st_find(f, json_string_value(json_array_get(row, 2)))) + 63) & ~(size_t)63;
	tap_ok(mg != NULL && checked >= 5 && bad == 0 && lora_merge_bytes(mg) == layers,
	    "F16 model: merged layers stay F16, within F16 rounding of diffusers' (%zu tensors, %zu off; "
	    "%zu bytes = the touched layers' %zu)", checked, bad, lora_merge_bytes(mg), layers);
	lora_merge_undo(mg, w);
out:
	weights_free(w);
	lora_free(l);
	st_close(g);
	st_close(f);
}

/* Write a LoRA file of n layers named names[i] with down [r, in] and up
 * [out, r] of the given sizes (random-ish F32 values). */
static int
write_lora(const char *path, int n, const char *const *names, const int *in, const int *out, int r)
{
	struct sd_tensor *t = calloc((size_t)n * 3, sizeof *t);
	float **data = calloc((size_t)n * 3, sizeof *data);
	char **nm = calloc((size_t)n * 3, sizeof *nm);
	struct sd_error err = {0};
	int rc;

	for (int i = 0; i < n; i++) {
		for (int k = 0; k < 3; k++) {
			size_t numel = k == 0 ? (size_t)r * in[i] : k == 1 ? (size_t)out[i] * r : 1;
			struct sd_tensor *x = &t[3 * i + k];
			nm[3 * i + k] = malloc(256);
			snprintf(nm[3 * i + k], 256, "%s%s", names[i],
			    k == 0 ? ".lora_down.weight" : k == 1 ? ".lora_up.weight" : ".alpha");
			x->name = nm[3 * i + k];
			x->dtype = SD_F32;
			data[3 * i + k] = malloc(numel * sizeof(float));
			for (size_t j = 0; j < numel; j++)
				data[3 * i + k][j] = k == 2 ? (float)r : 0.01f * (float)((j * 7 + (size_t)i) % 13) - 0.06f;
			x->data = data[3 * i + k];
			if (k == 0) {
				x->ndim = 2;
				x->shape[0] = r;
				x->shape[1] = in[i];
			} else if (k == 1) {
				x->ndim = 2;
				x->shape[0] = out[i];
				x->shape[1] = r;
			} else {
				x->ndim = 0;
			}
		}
	}
	rc = st_write(path, t, 3 * n, NULL, NULL, 0, &err);
	if (rc < 0)
		tap_diag("st_write: %s", err.message);
	for (int i = 0; i < 3 * n; i++) {
		free(data[i]);
		free(nm[i]);
	}
	free(data);
	free(nm);
	free(t);
	return rc;
}

static void
errors(struct st_file *base)
{
	struct sd_error err = {0};
	struct sd_weights *w = weights_new();
	char path[512];
	struct lora *l;

	weights_add_file(w, base, NULL);

	/* the model itself is not a LoRA */
	l = lora_open(shared_path("testdata/sd15-tiny/model.safetensors"), &err);
	tap_ok(l == NULL && strstr(err.message, "not a LoRA weight") != NULL &&
	    strstr(err.message, "model.safetensors") != NULL, "a model file: %s", err.message);
	lora_free(l);

	/* an SD 2.x-shaped LoRA (a 1024-wide context) on SD 1.x */
	{
		const char *names[] = {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"};
		int in[] = {1024}, out[] = {32};
		snprintf(path, sizeof path, "%s/sd2.safetensors", tmpdir);
		write_lora(path, 1, names, in, out, 4);
		l = lora_open(path, &err);
		struct lora_use use = {l, 1, 1};
		struct lora_merge *mg = l ? lora_merge_apply(w, &sd15, &use, 1, NULL, &err) : NULL;
		tap_ok(l != NULL && mg == NULL && strstr(err.message, "does not fit") != NULL &&
		    strstr(err.message, "SD 2.x") != NULL && strstr(err.message, path) != NULL,
		    "another architecture: %s", err.message);
		tap_ok(weights_get(w, SD_PREFIX_UNET "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight") ==
		    st_find(base, SD_PREFIX_UNET "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"),
		    "a failed merge leaves the weights unchanged");
		lora_merge_undo(mg, w);
		lora_free(l);
	}
	/* an SDXL LoRA: nothing matches */
	{
		const char *names[] = {"lora_te2_text_model_encoder_layers_0_self_attn_q_proj",
		    "lora_unet_input_blocks_4_1_transformer_blocks_1_attn1_to_q"};
		int in[] = {1280, 640}, out[] = {1280, 640};
		snprintf(path, sizeof path, "%s/sdxl.safetensors", tmpdir);
		write_lora(path, 2, names, in, out, 4);
		l = lora_open(path, &err);
		struct lora_use use = {l, 1, 1};
		struct lora_merge *mg = l ? lora_merge_apply(w, &sd15, &use, 1, NULL, &err) : NULL;
		tap_ok(mg == NULL && strstr(err.message, "none of its 2 layers") != NULL &&
		    strstr(err.message, "SDXL") != NULL, "matching nothing: %s", err.message);
		lora_merge_undo(mg, w);
		lora_free(l);
	}
	/* partial: one layer matches, one does not */
	{
		const char *names[] = {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
		    "lora_unet_down_blocks_5_attentions_0_transformer_blocks_0_attn1_to_q"};
		int in[] = {32, 32}, out[] = {32, 32};
		struct lora_report rep = {0};
		snprintf(path, sizeof path, "%s/partial.safetensors", tmpdir);
		write_lora(path, 2, names, in, out, 2);
		l = lora_open(path, &err);
		struct lora_use use = {l, 1, 1};
		struct lora_merge *mg = l ? lora_merge_apply(w, &sd15, &use, 1, &rep, &err) : NULL;
		tap_ok(mg != NULL && rep.applied == 1 && rep.unmatched == 1 &&
		    strcmp(rep.first_unmatched, names[1]) == 0, "a partial match is reported: %d applied, "
		    "%d unmatched (%s)", rep.applied, rep.unmatched, rep.first_unmatched);
		lora_merge_undo(mg, w);
		lora_free(l);
	}
	/* an unpaired key */
	{
		struct sd_tensor t = {.name = "lora_unet_x.lora_down.weight", .dtype = SD_F32, .ndim = 2,
		    .shape = {1, 1}};
		float v = 1;
		t.data = &v;
		snprintf(path, sizeof path, "%s/unpaired.safetensors", tmpdir);
		st_write(path, &t, 1, NULL, NULL, 0, &err);
		l = lora_open(path, &err);
		tap_ok(l == NULL && strstr(err.message, "has no up") != NULL, "an unpaired layer: %s", err.message);
		lora_free(l);
	}
	/* LoHa */
	{
		struct sd_tensor t = {.name = "lora_unet_x.hada_w1_a", .dtype = SD_F32, .ndim = 2, .shape = {1, 1}};
		float v = 1;
		t.data = &v;
		snprintf(path, sizeof path, "%s/loha.safetensors", tmpdir);
		st_write(path, &t, 1, NULL, NULL, 0, &err);
		l = lora_open(path, &err);
		tap_ok(l == NULL && strstr(err.message, "LoHa") != NULL, "LyCORIS LoHa: %s", err.message);
		lora_free(l);
	}
	weights_free(w);
}

/* The same layers in the PEFT (diffusers) format give the same merge as
 * the kohya file. */
static void
peft_format(struct st_file *base)
{
	struct sd_error err = {0};
	struct lora *k = lora_open(lora_path("lora/lora_attn_r8_f32.safetensors"), &err), *p;
	struct sd_tensor *t;
	char path[512], (*names)[256];
	int n = 0;

	if (!tap_ok(k != NULL, "open the F32 LoRA: %s", k ? "ok" : err.message))
		return;
	t = calloc((size_t)k->nlayers * 3, sizeof *t);
	names = calloc((size_t)k->nlayers * 3, sizeof *names);
	float *alphas = calloc((size_t)k->nlayers, sizeof *alphas);
	for (int i = 0; i < k->nlayers; i++) {
		const struct lora_layer *y = &k->layers[i];
		const char *part = y->part == LORA_UNET ? "unet" : "text_encoder";
		snprintf(names[n], sizeof names[n], "%s.%s.lora_A.weight", part, y->module);
		t[n] = *y->down;
		t[n].name = names[n];
		n++;
		snprintf(names[n], sizeof names[n], "%s.%s.lora_B.weight", part, y->module);
		t[n] = *y->up;
		t[n].name = names[n];
		n++;
		/* PEFT keeps alpha in its config; a diffusers file may carry it
		 * as <module>.alpha */
		snprintf(names[n], sizeof names[n], "%s.%s.alpha", part, y->module);
		alphas[i] = y->alpha;
		t[n] = (struct sd_tensor){.name = names[n], .dtype = SD_F32, .ndim = 0, .data = &alphas[i]};
		n++;
	}
	snprintf(path, sizeof path, "%s/peft.safetensors", tmpdir);
	st_write(path, t, n, NULL, NULL, 0, &err);
	p = lora_open(path, &err);
	if (tap_ok(p != NULL && p->format == LORA_PEFT && p->nlayers == k->nlayers,
	    "PEFT keys: %s", p ? "read" : err.message)) {
		struct sd_weights *w1 = weights_new(), *w2 = weights_new();
		struct lora_use u1 = {k, 0.5f, 0.5f}, u2 = {p, 0.5f, 0.5f};
		weights_add_file(w1, base, NULL);
		weights_add_file(w2, base, NULL);
		struct lora_merge *m1 = lora_merge_apply(w1, &sd15, &u1, 1, NULL, &err);
		struct lora_merge *m2 = lora_merge_apply(w2, &sd15, &u2, 1, NULL, &err);
		int same = m1 != NULL && m2 != NULL && lora_merge_tensors(m1) == lora_merge_tensors(m2);
		for (int i = 0; same && i < st_count(base); i++) {
			const char *nm = st_tensor(base, i)->name;
			const struct sd_tensor *a = weights_get(w1, nm), *b = weights_get(w2, nm);
			same = a->dtype == b->dtype && memcmp(a->data, b->data, sd_tensor_nbytes(a)) == 0;
		}
		tap_ok(same, "the PEFT file merges exactly as the kohya file (%d tensors)", lora_merge_tensors(m1));
		lora_merge_undo(m1, w1);
		lora_merge_undo(m2, w2);
		weights_free(w1);
		weights_free(w2);
	}
	lora_free(p);
	lora_free(k);
	free(t);
	free(names);
	free(alphas);
}

/* Write the tensors of f, as w has them, to path, with the LDM config
 * beside it that gives sdxl-tiny's head size. */
static int
write_model(const struct st_file *f, const struct sd_weights *w, const char *path)
{
	int n = st_count(f);
	struct sd_tensor *t = malloc((size_t)n * sizeof *t);
	struct sd_error err = {0};
	char yaml[600];
	FILE *y;
	int rc;

	for (int i = 0; i < n; i++)
		t[i] = *weights_get(w, st_tensor(f, i)->name);
	rc = st_write(path, t, n, NULL, NULL, 0, &err);
	free(t);
	snprintf(yaml, sizeof yaml, "%.*s.yaml", (int)strlen(path) - 12, path);
	if (rc < 0 || (y = fopen(yaml, "w")) == NULL)
		return -1;
	fputs("model:\n  params:\n    scale_factor: 0.13025\n    network_config:\n      params:\n"
	    "        num_head_channels: 4\n", y);
	fclose(y);
	return 0;
}

static int
render_xl(const char *model, const char *lora, float scale, struct sd_image *img)
{
	struct sd_model *m = case_load(model);
	struct sd_params p;
	struct sd_lora l = {lora, scale};
	struct sd_error err = {0};
	int rc;

	if (m == NULL)
		return -1;
	sd_params_init(&p);
	p.prompt = "a photo of an astronaut riding a horse on mars";
	p.negative_prompt = "blurry";
	p.width = p.height = 64;
	p.steps = 2;
	p.sampler = SD_SAMPLER_EULER_A;
	p.seed = 11;
	if (lora != NULL) {
		p.loras = &l;
		p.nloras = 1;
	}
	rc = sd_generate(m, &p, 0, img, NULL, NULL, NULL, &err);
	if (rc < 0)
		tap_diag("SDXL render: %s", err.message);
	sd_model_free(m);
	return rc;
}

/* The SDXL LoRA through sd_generate gives the image of a file whose weights
 * were merged beforehand (so the pipeline applies it to the UNet and both
 * text encoders); without it the image differs. */
static void
sdxl_pipeline(const struct st_file *f, const struct sd_weights *merged, const char *lora)
{
	struct sd_weights *plain = weights_new();
	char base[512], pre[512];
	struct sd_image a = {0}, b = {0}, c = {0};
	int ok;

	weights_add_file(plain, f, NULL);
	snprintf(base, sizeof base, "%s/sd_xl_base_tiny.safetensors", tmpdir);
	snprintf(pre, sizeof pre, "%s/sd_xl_base_tiny_merged.safetensors", tmpdir);
	ok = write_model(f, plain, base) == 0 && write_model(f, merged, pre) == 0;
	weights_free(plain);
	if (!tap_ok(ok, "SDXL: the test models are written"))
		return;
	if (render_xl(base, lora, 0.7f, &a) == 0 && render_xl(pre, NULL, 0, &b) == 0 &&
	    render_xl(base, NULL, 0, &c) == 0) {
		size_t n = (size_t)a.width * a.height * 3, off = 0, changed = 0;
		for (size_t i = 0; i < n; i++) {
			off += abs(a.rgb[i] - b.rgb[i]) > 1;
			changed += a.rgb[i] != c.rgb[i];
		}
		tap_ok(off == 0 && b.width == a.width, "SDXL: --lora at 0.7 renders as the weights merged "
		    "beforehand (%zu of %zu values off by more than 1)", off, n);
		tap_ok(changed > 0, "SDXL: the LoRA changes the image (%zu of %zu values)", changed, n);
	} else {
		tap_ok(0, "SDXL renders");
	}
	sd_image_free(&a);
	sd_image_free(&b);
	sd_image_free(&c);
}

/* SDXL: a kohya SDXL LoRA (the UNet under its original names, lora_te1_ on
 * the CLIP-L encoder, lora_te2_ on the OpenCLIP one whose q/k/v live in the
 * fused in_proj) made from sdxl-tiny's keys, merged and checked against
 * W + m * alpha/rank * up @ down computed in double here. */
static void
sdxl(void)
{
	static const char *const names[] = {
		"lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q",
		"lora_unet_middle_block_1_transformer_blocks_0_attn2_to_k",
		"lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
		"lora_te2_text_model_encoder_layers_0_self_attn_k_proj",
		"lora_te2_text_model_encoder_layers_0_self_attn_out_proj",
		"lora_te2_text_model_encoder_layers_0_mlp_fc1",
	};
	static const char *const targets[] = {
		"model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight",
		"model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight",
		"conditioner.embedders.0.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight",
		"conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight",
		"conditioner.embedders.1.model.transformer.resblocks.0.attn.out_proj.weight",
		"conditioner.embedders.1.model.transformer.resblocks.0.mlp.c_fc.weight",
	};
	static const int in[] = {32, 32, 12, 20, 20, 20}, out[] = {32, 32, 12, 20, 20, 80};
	static const int row0[] = {0, 0, 0, 20, 0, 0};
	const struct lora_model xl = {
		.unet_prefix = "model.diffusion_model.",
		.text_prefix = {"conditioner.embedders.0.transformer.text_model.", "conditioner.embedders.1.model."},
		.ntext = 2,
	};
	struct sd_error err = {0};
	struct st_file *f = st_open(shared_path("testdata/sdxl-tiny/model.safetensors"), &err);
	char path[512], base[128];

	if (f == NULL) {
		tap_skip("sdxl-tiny: %s", err.message);
		return;
	}
	snprintf(path, sizeof path, "%s/sdxl-kohya.safetensors", tmpdir);
	write_lora(path, 6, (const char *const *)names, in, out, 4);
	struct lora *l = lora_open(path, &err);
	struct sd_weights *w = weights_new();
	weights_add_file(w, f, NULL);
	struct lora_use use = {l, 0.7f, 0.7f};
	struct lora_report rep = {0};
	struct lora_merge *mg = l ? lora_merge_apply(w, &xl, &use, 1, &rep, &err) : NULL;
	tap_ok(mg != NULL && rep.applied == 6 && rep.unmatched == 0 && l->ntext[0] == 1 && l->ntext[1] == 3 &&
	    strcmp(lora_base_guess(l, base, sizeof base), "SDXL") == 0,
	    "SDXL kohya LoRA: %d layers applied (%s), made for %s", rep.applied, mg ? "ok" : err.message,
	    l ? lora_base_guess(l, base, sizeof base) : "?");
	for (int i = 0; mg != NULL && i < 6; i++) {
		const struct sd_tensor *o = st_find(f, targets[i]), *m = weights_get(w, targets[i]);
		const struct lora_layer *y = NULL;
		for (int j = 0; j < l->nlayers; j++)
			if (strcmp(l->layers[j].name, names[i]) == 0)
				y = &l->layers[j];
		size_t rows = (size_t)o->shape[0], k = (size_t)o->shape[1], bad = 0;
		const float *W = o->data, *M = m->data, *U = y->up->data, *D = y->down->data;
		for (size_t r = 0; r < rows; r++)
			for (size_t c = 0; c < k; c++) {
				double want = W[r * k + c];
				if ((int)r >= row0[i] && (int)r < row0[i] + out[i]) {
					double acc = 0;
					for (int q = 0; q < 4; q++)
						acc += (double)U[(r - (size_t)row0[i]) * 4 + (size_t)q] * D[(size_t)q * k + c];
					want += 0.7 * (y->alpha / 4.0) * acc;
				}
				if (fabs(M[r * k + c] - want) > 1e-6 + 1e-6 * fabs(want))
					bad++;
			}
		tap_ok(m != o && bad == 0, "SDXL %s -> %s (rows %d..%d): %zu values off", names[i], targets[i],
		    row0[i], row0[i] + out[i] - 1, bad);
	}
	if (mg != NULL && getenv("SDBATCH_TEST_QUICK") == NULL)
		sdxl_pipeline(f, w, path);
	lora_merge_undo(mg, w);
	weights_free(w);
	lora_free(l);
	st_close(f);
}

/* The whole runs: the LoRA (files and multipliers of params.effective)
 * through sd_generate. */
static void
run_cases(struct sd_model *m)
{
	json_t *cases = json_object_get(manifest, "cases"), *c;
	size_t i;

	json_array_foreach(cases, i, c) {
		const char *name = json_string_value(json_object_get(c, "name"));
		json_t *params = json_object_get(c, "params"), *eff = json_object_get(params, "effective"), *e;
		struct sd_params p;
		struct sd_image_u8 init;
		struct sd_lora loras[4];
		char paths[4][1024];
		size_t k;

		if (strncmp(name, "lora_t2i_", 9) != 0 && strncmp(name, "lora_img2img_", 13) != 0)
			continue;
		struct st_file *g = golden_open(name);
		if (g == NULL || case_params(params, &p, &init) < 0) {
			tap_ok(0, "%s: case", name);
			st_close(g);
			continue;
		}
		if (eff == NULL) {
			/* img2img: fused at the scale of its calls */
			json_array_foreach(json_object_get(params, "loras"), k, e) {
				snprintf(paths[k], sizeof paths[k], "%s",
				    lora_path(json_string_value(json_object_get(e, "file"))));
				loras[k].path = paths[k];
				loras[k].scale = strstr(name, "fused08") ? 0.8f : 1.0f;
				p.nloras = (int)k + 1;
			}
		} else {
			json_array_foreach(eff, k, e) {
				snprintf(paths[k], sizeof paths[k], "%s",
				    lora_path(json_string_value(json_object_get(e, "file"))));
				loras[k].path = paths[k];
				loras[k].scale = (float)json_number_value(json_object_get(e, "multiplier"));
				p.nloras = (int)k + 1;
			}
		}
		p.loras = loras;
		case_run(m, name, &p, g, NULL);
		image_free(&init);
		st_close(g);
	}
}

/* lora_make_random: a kohya LoRA over the model's transformer and text
 * encoder layers that merges in full; lora_find: a name stays in its
 * lora_dir. */
static void
random_and_find(struct st_file *base)
{
	struct sd_weights *w = weights_new();
	struct sd_error err = {0};
	char path[512], link[512], out[600];
	int nlayers = 0;

	weights_add_file(w, base, NULL);
	snprintf(path, sizeof path, "%s/random.safetensors", tmpdir);
	if (!tap_ok(lora_make_random(w, &sd15, 8, path, &nlayers, &err) == 0, "lora_make_random: %s",
	    err.message[0] ? err.message : "ok")) {
		weights_free(w);
		return;
	}
	struct lora *l = lora_open(path, &err);
	struct lora_report rep = {0};
	struct lora_use use = {l, 0.5f, 0.5f};
	struct lora_merge *mg = l ? lora_merge_apply(w, &sd15, &use, 1, &rep, &err) : NULL;
	/* every layer of the file applied, none unmatched, UNet and text */
	tap_ok(mg != NULL && nlayers > 0 && l->nlayers == nlayers && rep.applied == nlayers &&
	    rep.unmatched == 0 && l->ntext[0] > 0 && l->nunet > 0 && l->min_rank == 8 &&
	    l->max_rank == 8, "a random rank-8 LoRA: %d layers (UNet %d, text %d), all merged: %s",
	    nlayers, l ? l->nunet : 0, l ? l->ntext[0] : 0, mg ? "ok" : err.message);
	if (mg != NULL)
		lora_merge_undo(mg, w);
	lora_free(l);
	weights_free(w);

	/* lora_find */
	const char *dirs[1] = {tmpdir};
	tap_ok(lora_find(dirs, 1, "random", out, sizeof out, &err) == 0 && strcmp(out, path) == 0,
	    "lora_find: NAME.safetensors in its folder");
	tap_ok(lora_find(dirs, 1, "../random", out, sizeof out, &err) < 0 && err.code == SD_EDATA,
	    "lora_find: a name with '/' is refused: %s", err.message);
	snprintf(link, sizeof link, "%s/out.safetensors", tmpdir);
	if (symlink(shared_path("testdata/sd15-tiny/lora/lora_attn_r4.safetensors"), link) == 0) {
		tap_ok(lora_find(dirs, 1, "out", out, sizeof out, &err) < 0 && err.code == SD_EDATA &&
		    strstr(err.message, "symbolic link") != NULL, "lora_find: a link out of the folder: %s",
		    err.message);
		unlink(link);
	}
	snprintf(link, sizeof link, "%s/in.safetensors", tmpdir);
	if (symlink("random.safetensors", link) == 0) {
		tap_ok(lora_find(dirs, 1, "in", out, sizeof out, &err) == 0, "lora_find: a link inside "
		    "the folder is fine");
		unlink(link);
	}
	tap_ok(lora_find(dirs, 1, "nothere", out, sizeof out, &err) < 0 && err.code == SD_ENOINPUT,
	    "lora_find: a missing name: %s", err.message);
	unlink(path);
}

int
main(void)
{
	json_error_t jerr;
	struct st_file *base;
	struct sd_error err = {0};
	const char *tmp = getenv("TMPDIR");

	if (shared_dir() == NULL)
		return tap_skip_all("../shared (testdata) not found");
	manifest = json_load_file(shared_path("testdata/sd15-tiny/manifest.json"), 0, &jerr);
	if (!tap_ok(manifest != NULL, "manifest: %s", manifest ? "ok" : jerr.text))
		return tap_done();
	if (case_find(manifest, "lora_merge_attn_r4") == NULL)
		return tap_skip_all("the sd15-tiny set has no LoRA cases");
	snprintf(tmpdir, sizeof tmpdir, "%s/sdbatch-lora-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (mkdtemp(tmpdir) == NULL)
		return tap_skip_all("no temporary folder");
	base = st_open(shared_path("testdata/sd15-tiny/model.safetensors"), &err);
	if (!tap_ok(base != NULL, "model: %s", base ? "ok" : err.message))
		return tap_done();

	merge_case(base, "lora_merge_attn_r4");
	merge_case(base, "lora_merge_full_r8");
	merge_case(base, "lora_merge_attn_r8_f32");
	f16_merge();
	errors(base);
	peft_format(base);
	random_and_find(base);
	sdxl();

	/* an A1111 short hash: sha256 of the data after the header */
	{
		char h[65];
		tap_ok(lora_file_hash(lora_path("lora/lora_attn_r4.safetensors"), h, &err) == 0 &&
		    strlen(h) == 64, "lora_file_hash: %.12s", h);
	}

	if (getenv("SDBATCH_TEST_QUICK") == NULL) {
		char path[1024];
		snprintf(path, sizeof path, "%s", shared_path("testdata/sd15-tiny/model.safetensors"));
		struct sd_model *m = case_load(path);
		if (m != NULL) {
			run_cases(m);
			/* after the LoRA jobs, a job without: the base model again */
			json_t *c = case_find(manifest, "txt2img_ddim_s8_64x128");
			struct st_file *g = golden_open("txt2img_ddim_s8_64x128");
			struct sd_params p;
			struct sd_image_u8 init;
			if (c != NULL && g != NULL && case_params(json_object_get(c, "params"), &p, &init) == 0)
				case_run(m, "txt2img_ddim_s8_64x128 after the LoRA jobs", &p, g, NULL);
			st_close(g);
			sd_model_free(m);
		}
	}
	st_close(base);
	{
		char cmd[600];
		snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
		if (system(cmd) != 0)
			tap_diag("could not remove %s", tmpdir);
	}
	json_decref(manifest);
	return tap_done();
}
