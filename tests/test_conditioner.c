/* test_conditioner.c: prompts -> conditioning on the model description:
 * SDXL's two tokenizers and text encoders (penultimate layers side by side,
 * the pooled projected output of the second), and its zeros for a missing
 * negative prompt (sdxl-tiny's text_encoders and encode_prompt cases). */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/ops.h"
#include "model/weights.h"
#include "sample/conditioner.h"
#include "testutil.h"

#define ATOL 1e-4	/* manifest: text_encoders, encode_prompt */

static struct conditioner *
load_sdxl(struct st_file **fp, struct sd_weights **wp)
{
	struct model_desc d;
	struct sd_error err = {0};
	const char *tok = shared_path("data/clip-tokenizer");
	char tokdir[4096];
	const char *dirs[2] = { tokdir, tokdir };
	int own[2] = { 0, 0 };
	struct conditioner *c;

	snprintf(tokdir, sizeof tokdir, "%s", tok);
	*fp = st_open(shared_path("testdata/sdxl-tiny/model.safetensors"), &err);
	*wp = weights_new();
	if (*fp == NULL) {
		tap_ok(0, "open sdxl-tiny: %s", err.message);
		return NULL;
	}
	weights_add_file(*wp, *fp, NULL);
	model_describe_arch("sdxl", &d);
	/* the tiny model's heads are 4 channels wide (64 in SDXL) */
	d.text[0].clip.head_channels = d.text[1].clip.head_channels = 4;
	c = conditioner_load(&d, *wp, dirs, own, &err);
	tap_ok(c != NULL && c->ntext == 2 && c->width == 32 && c->pooled_dim == 20 &&
	    c->encoder[0]->heads == 3 && c->encoder[1]->heads == 5,
	    "SDXL conditioner: two encoders, context 32 wide, pooled 20 %s", c ? "" : err.message);
	return c;
}

static void
compare(const char *what, struct st_file *g, const char *name, const float *got, size_t n)
{
	size_t nw;
	float *want = golden_f32(g, name, &nw);

	if (nw != n)
		tap_ok(0, "%s: %zu values, want %zu", what, n, nw);
	else
		check_close(what, got, want, n, ATOL, ATOL);
	free(want);
}

static void
test_text_encoders(struct conditioner *c, struct sd_ctx *ctx)
{
	struct st_file *g = golden_open_in("sdxl-tiny", "text_encoders");
	const char *meta = g ? st_metadata(g, "params") : NULL;
	json_t *params = meta ? json_loads(meta, 0, NULL) : NULL, *prompts;
	struct sd_error err = {0};
	const char *p[4];
	size_t n;
	float *ctx_d, *host, pooled[4 * 20];

	prompts = json_object_get(params, "prompts");
	if (!tap_ok(json_array_size(prompts) == 4, "text_encoders: 4 prompts")) {
		json_decref(params);
		st_close(g);
		return;
	}
	for (int i = 0; i < 4; i++)
		p[i] = json_string_value(json_array_get(prompts, i));
	n = (size_t)4 * 77 * 32;
	ctx_d = sd_alloc(ctx, n);
	host = malloc(n * sizeof *host);
	tap_ok(conditioner_encode(c, ctx, p, 4, 1, ctx_d, pooled, &err) == 0, "encode 4 prompts %s",
	    err.message);
	sd_download(ctx, host, ctx_d, n);
	compare("text_encoders prompt_embeds (both penultimate layers, side by side)", g,
	    "prompt_embeds", host, n);
	compare("text_encoders pooled_prompt_embeds (bigG's last layer, eos, projected)", g,
	    "pooled_prompt_embeds", pooled, 4 * 20);
	free(host);
	json_decref(params);
	st_close(g);
}

/* c0: no negative prompt (zeros), c1: "" (encoded), c2: a negative prompt. */
static void
test_encode_prompt(struct conditioner *c, struct sd_ctx *ctx)
{
	static const char *neg[3] = { NULL, "", "blurry, low quality" };
	struct st_file *g = golden_open_in("sdxl-tiny", "encode_prompt");
	struct sd_error err = {0};
	size_t n = (size_t)2 * 77 * 32;
	float *ctx_d = sd_alloc(ctx, n), *host = malloc(n * sizeof *host), pooled[2 * 20];
	char name[64], what[128];

	for (int k = 0; k < 3 && g != NULL; k++) {
		const char *p[2] = { neg[k], "a photo of a cat" };
		tap_ok(conditioner_encode(c, ctx, p, 2, 1, ctx_d, pooled, &err) == 0, "c%d: encode %s",
		    k, err.message);
		sd_download(ctx, host, ctx_d, n);
		snprintf(name, sizeof name, "c%d.negative_prompt_embeds", k);
		snprintf(what, sizeof what, "c%d %s (negative %s)", k, name, neg[k] ? "given" : "none: zeros");
		compare(what, g, name, host, n / 2);
		snprintf(name, sizeof name, "c%d.negative_pooled_prompt_embeds", k);
		compare(name, g, name, pooled, 20);
		snprintf(name, sizeof name, "c%d.prompt_embeds", k);
		compare(name, g, name, host + n / 2, n / 2);
		snprintf(name, sizeof name, "c%d.pooled_prompt_embeds", k);
		compare(name, g, name, pooled + 20, 20);
	}
	free(host);
	st_close(g);
}

int
main(void)
{
	struct st_file *f;
	struct sd_weights *w;
	struct conditioner *c;
	struct sd_ctx *ctx;

	if (shared_dir() == NULL)
		return tap_skip_all("../shared is absent: no test model");
	ctx = test_ctx_new();
	c = load_sdxl(&f, &w);
	if (c != NULL) {
		test_text_encoders(c, ctx);
		test_encode_prompt(c, ctx);
	}
	conditioner_free(c);
	weights_free(w);
	st_close(f);
	sd_ctx_free(ctx);
	return tap_done();
}
