/* test_clip.c: the CLIP text encoder against transformers' CLIPTextModel
 * (the text_encoder case of the tiny model), and its loader's errors. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "model/clip.h"
#include "testutil.h"

#define ATOL 1e-4	/* manifest: text_encoder */
#define RTOL 1e-4

/* ViT-L/14's 12 heads (2 channels each in the tiny model), every layer. */
static const struct clip_config sd15_cfg = { .heads = 12, .act = CLIP_QUICK_GELU };

/* Intermediates captured by the debug hook (host copies). */
struct capture {
	struct sd_ctx *c;
	const char *names[4];
	float *data[4];
	size_t n[4];
};

static void
capture_fn(void *user, const char *name, const float *data, size_t n)
{
	struct capture *cap = user;

	for (int i = 0; i < 4 && cap->names[i] != NULL; i++) {
		if (strcmp(cap->names[i], name) != 0)
			continue;
		free(cap->data[i]);
		cap->data[i] = malloc(n * sizeof(float));
		cap->n[i] = n;
		sd_download(cap->c, cap->data[i], data, n);
	}
}

static const char *set_label = "";

static void
compare(struct st_file *g, const char *name, const float *got, size_t n)
{
	size_t nwant;
	float *want = golden_f32(g, name, &nwant);
	char what[96];

	snprintf(what, sizeof what, "%stext_encoder %s", set_label, name);
	if (got == NULL || n != nwant)
		tap_ok(0, "%s: got %zu values, want %zu", what, got ? n : 0, nwant);
	else
		check_close(what, got, want, n, ATOL, RTOL);
	free(want);
}

static void
test_load_errors(const struct st_file *f)
{
	const char *missing = CLIP_SD15_PREFIX "encoder.layers.1.mlp.fc2.bias";
	const char *bad = CLIP_SD15_PREFIX "encoder.layers.0.self_attn.q_proj.weight";
	struct sd_error err = {0};
	struct sd_weights *w;
	struct clip_text *m;
	struct sd_tensor wrong;

	w = weights_subset(f, CLIP_SD15_PREFIX, missing, NULL);
	m = clip_text_load(w, CLIP_SD15_PREFIX, &sd15_cfg, &err);
	tap_ok(m == NULL && err.code == SD_EDATA && strstr(err.message, missing) != NULL,
	    "a missing tensor is named (%s)", err.message);
	clip_text_free(m);
	weights_free(w);

	wrong = *st_find(f, bad);
	wrong.shape[1] = 12;
	sd_error_clear(&err);
	w = weights_subset(f, CLIP_SD15_PREFIX, bad, &wrong);
	m = clip_text_load(w, CLIP_SD15_PREFIX, &sd15_cfg, &err);
	tap_ok(m == NULL && err.code == SD_EDATA && strstr(err.message, bad) != NULL &&
	    strstr(err.message, "[24, 12]") != NULL,
	    "a misshapen tensor is named with its shape (%s)", err.message);
	clip_text_free(m);
	weights_free(w);

	sd_error_clear(&err);
	w = weights_new();
	m = clip_text_load(w, CLIP_SD15_PREFIX, &sd15_cfg, &err);
	tap_ok(m == NULL && strstr(err.message, "token_embedding") != NULL,
	    "an empty weights set is refused (%s)", err.message);
	weights_free(w);
}

/* SD 2.x's OpenCLIP tower (sd21-tiny): from the single file (OpenCLIP names,
 * fused in_proj, 3 layers stored and the last skipped) and from the
 * diffusers folder (transformers' names, 2 layers), GELU, 2 heads of 8. */
static void
test_sd2(const char *file, const char *prefix, int layers, const char *label)
{
	struct capture cap = { .names = { "embeddings", "layer_1", "layer_2", NULL } };
	struct clip_config cfg = { .heads = 2, .layers = layers, .act = CLIP_GELU };
	struct sd_error err = {0};
	struct st_file *f, *g;
	struct sd_weights *w;
	struct clip_text *m;
	struct sd_ctx *c;
	int32_t *ids;
	float *fids, *host, *out;
	size_t nids, n;
	int b;

	set_label = label;
	f = st_open(shared_path(file), &err);
	if (!tap_ok(f != NULL, "%sopen %s %s", label, file, err.message))
		return;
	w = weights_new();
	weights_add_file(w, f, prefix);
	m = clip_text_load(w, prefix, &cfg, &err);
	tap_ok(m != NULL && m->width == 16 && m->layers == 2 && m->heads == 2 &&
	    m->mlp_width == 64 && m->openclip == (layers < 0),
	    "%sloads the OpenCLIP text tower: width %d, %d of %d layers, MLP %d %s", label,
	    m ? m->width : 0, m ? m->layers : 0, m ? m->stored_layers : 0, m ? m->mlp_width : 0,
	    m ? "" : err.message);
	if (m == NULL || (g = golden_open_in("sd21-tiny", "text_encoder")) == NULL) {
		weights_free(w);
		st_close(f);
		return;
	}
	c = test_ctx_new();
	cap.c = c;
	fids = golden_f32(g, "input_ids", &nids);
	b = (int)(nids / 77);
	ids = malloc(nids * sizeof *ids);
	for (size_t i = 0; i < nids; i++)
		ids[i] = (int32_t)fids[i];
	n = (size_t)b * 77 * 16;
	host = malloc(n * sizeof *host);
	m->debug = capture_fn;
	m->debug_user = &cap;
	out = sd_alloc(c, n);
	tap_ok(clip_text_forward(m, c, ids, b, 1, out, &err) == 0, "%sforward %s", label, err.message);
	for (int i = 0; i < 3; i++)
		compare(g, cap.names[i], cap.data[i], cap.n[i]);
	sd_download(c, host, out, n);
	compare(g, "last_hidden_state", host, n);
	m->debug = NULL;
	tap_ok(clip_text_forward(m, c, ids, b, 2, out, &err) == 0, "%sforward, clip skip 2 %s",
	    label, err.message);
	sd_download(c, host, out, n);
	compare(g, "clip_skip1", host, n);
	for (int i = 0; i < 3; i++)
		free(cap.data[i]);
	free(host);
	free(ids);
	free(fids);
	st_close(g);
	sd_ctx_free(c);
	clip_text_free(m);
	weights_free(w);
	st_close(f);
	set_label = "";
}

int
main(void)
{
	struct capture cap = { .names = { "embeddings", "layer_1", "layer_2", NULL } };
	struct sd_error err = {0};
	struct st_file *f, *g;
	struct sd_weights *w;
	struct clip_text *m;
	struct sd_ctx *c;
	int32_t *ids;
	float *fids, *host, *out;
	size_t nids, n, arena;
	int b;

	if (shared_dir() == NULL)
		return tap_skip_all("../shared is absent: no test model");
	f = st_open(shared_path("testdata/sd15-tiny/model.safetensors"), &err);
	if (f == NULL) {
		tap_ok(0, "open the tiny model: %s", err.message);
		return tap_done();
	}
	test_load_errors(f);

	w = weights_new();
	weights_add_file(w, f, CLIP_SD15_PREFIX);
	m = clip_text_load(w, CLIP_SD15_PREFIX, &sd15_cfg, &err);
	tap_ok(m != NULL, "loads the text encoder %s", m ? "" : err.message);
	if (m == NULL)
		return tap_done();
	tap_ok(m->width == 24 && m->layers == 2 && m->heads == 12 && m->mlp_width == 96 &&
	    m->vocab == 49408 && m->max_len == 77,
	    "reads width %d, %d layers, %d heads, MLP %d, vocab %d, %d positions",
	    m->width, m->layers, m->heads, m->mlp_width, m->vocab, m->max_len);

	c = test_ctx_new();
	cap.c = c;
	g = golden_open("text_encoder");
	if (g == NULL) {
		tap_ok(0, "golden text_encoder");
		return tap_done();
	}
	fids = golden_f32(g, "input_ids", &nids);
	b = (int)(nids / 77);
	ids = malloc(nids * sizeof *ids);
	for (size_t i = 0; i < nids; i++)
		ids[i] = (int32_t)fids[i];
	n = (size_t)b * 77 * 24;
	host = malloc(n * sizeof *host);

	/* The last layer (clip_skip 1) with every intermediate. */
	m->debug = capture_fn;
	m->debug_user = &cap;
	out = sd_alloc(c, n);
	tap_ok(clip_text_forward(m, c, ids, b, 1, out, &err) == 0, "forward %s", err.message);
	for (int i = 0; i < 3; i++)
		compare(g, cap.names[i], cap.data[i], cap.n[i]);
	sd_download(c, host, out, n);
	compare(g, "last_hidden_state", host, n);

	/* A1111's clip skip 2 = diffusers' clip_skip=1; the arena does not grow. */
	m->debug = NULL;
	arena = sd_arena_bytes(c);
	tap_ok(clip_text_forward(m, c, ids, b, 2, out, &err) == 0, "forward, clip skip 2 %s",
	    err.message);
	sd_download(c, host, out, n);
	compare(g, "clip_skip1", host, n);
	tap_ok(sd_arena_bytes(c) == arena, "a second forward allocates nothing new (%zu bytes)",
	    arena);

	/* Bad input is refused, not computed. */
	tap_ok(clip_text_forward(m, c, ids, b, 3, out, &err) < 0 &&
	    strstr(err.message, "clip_skip 3") != NULL, "clip skip 3 of 2 layers is refused (%s)",
	    err.message);
	ids[5] = 49408;
	tap_ok(clip_text_forward(m, c, ids, 1, 1, out, &err) < 0 &&
	    strstr(err.message, "49408") != NULL, "an id outside the vocabulary is refused (%s)",
	    err.message);

	for (int i = 0; i < 3; i++)
		free(cap.data[i]);
	free(host);
	free(ids);
	free(fids);
	st_close(g);
	sd_ctx_free(c);
	clip_text_free(m);
	weights_free(w);
	st_close(f);

	test_sd2("testdata/sd21-tiny/model.safetensors", "cond_stage_model.model.", -1, "sd21 file: ");
	test_sd2("testdata/sd21-tiny/diffusers/text_encoder/model.safetensors", "text_model.", 0,
	    "sd21 folder: ");
	return tap_done();
}
