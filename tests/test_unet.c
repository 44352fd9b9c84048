/* test_unet.c: the UNet against diffusers' UNet2DConditionModel (the unet_*
 * cases of the tiny model, every intermediate where they are recorded), the
 * 9-channel inpainting UNet, and the loader's errors. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "model/unet.h"
#include "testutil.h"

/* SD 1.x: 8 heads at every level; the sd21-tiny model: heads of 8 channels
 * (64 in the real SD 2.x). */
static const struct unet_config sd15_cfg = { 8, 0 };
static const struct unet_config sd21_tiny_cfg = { 0, 8 };
/* sdxl-tiny: heads of 4 channels (64 in the real SDXL). */
static const struct unet_config sdxl_tiny_cfg = { 0, 4 };
/* The golden set run_case reads. */
static const char *golden_set = "sd15-tiny";

/* Compares each intermediate the UNet shows with the golden of that name;
 * the one named pin is then replaced by its golden value. */
struct capture {
	struct sd_ctx *c;
	struct st_file *g;
	const char *cname, *pin;
	double atol, rtol;
	int compared, pinned;
};

static void
capture_fn(void *user, const char *name, float *data, size_t n)
{
	struct capture *cap = user;
	const struct sd_tensor *t = st_find(cap->g, name);
	float *got, *want;
	size_t nwant;
	char what[128];

	if (t == NULL)
		return;
	snprintf(what, sizeof what, "%s %s%s%s", cap->cname, name,
	    cap->pinned ? ", given the golden " : "", cap->pinned ? cap->pin : "");
	want = golden_f32(cap->g, name, &nwant);
	if (nwant != n) {
		tap_ok(0, "%s: %zu values, want %zu", what, n, nwant);
	} else {
		got = malloc(n * sizeof *got);
		sd_download(cap->c, got, data, n);
		check_close(what, got, want, n, cap->atol, cap->rtol);
		free(got);
		if (cap->pin != NULL && strcmp(name, cap->pin) == 0) {
			sd_upload(cap->c, data, want, n);
			cap->pinned = 1;
		}
	}
	free(want);
	cap->compared++;
}

/* Run the golden case cname through u: sample, timestep(s), context -> out,
 * at the case's tolerance.  With intermediates, every recorded intermediate
 * is compared too; pin (or NULL) names one whose golden value replaces ours
 * for the rest of that pass.  A second, plain pass checks out again and that
 * the arena does not grow. */
static void
run_case(struct unet *u, struct sd_ctx *c, const char *cname, double tol, int intermediates,
    const char *pin)
{
	struct capture cap = { c, NULL, cname, pin, tol, tol, 0, 0 };
	const struct sd_tensor *st;
	struct sd_error err = {0};
	float *sample, *ts, *context, *want, *got, *t, *x, *ctx, *out;
	size_t ns, nt, nc, nw, arena, mark = sd_mark(c);
	int b, h, w, len;
	char what[128];

	if ((cap.g = golden_open_in(golden_set, cname)) == NULL) {
		tap_ok(0, "golden %s", cname);
		return;
	}
	st = st_find(cap.g, "sample");
	b = (int)st->shape[0];
	h = (int)st->shape[2];
	w = (int)st->shape[3];
	sample = golden_f32(cap.g, "sample", &ns);
	ts = golden_f32(cap.g, "timestep", &nt);
	context = golden_f32(cap.g, "context", &nc);
	want = golden_f32(cap.g, "out", &nw);
	t = malloc((size_t)b * sizeof *t);
	for (int i = 0; i < b; i++)
		t[i] = ts[nt == 1 ? 0 : i];
	/* SDXL: the pooled text and the time ids */
	struct unet_added added = {0}, *add = NULL;
	if (st_find(cap.g, "text_embeds") != NULL) {
		size_t ne, ni;
		added.text_embeds = golden_f32(cap.g, "text_embeds", &ne);
		added.time_ids = golden_f32(cap.g, "time_ids", &ni);
		added.text_dim = (int)(ne / (size_t)b);
		add = &added;
	}
	/* the inputs are not intermediates */
	int inputs = add != NULL ? 6 : 4;
	len = (int)(nc / (size_t)b / (size_t)u->context_dim);

	x = sd_alloc(c, ns);
	ctx = sd_alloc(c, nc);
	out = sd_alloc(c, nw);
	got = malloc(nw * sizeof *got);
	sd_upload(c, x, sample, ns);
	sd_upload(c, ctx, context, nc);
	if (intermediates) {
		u->debug = capture_fn;
		u->debug_user = &cap;
		tap_ok(unet_forward_added(u, c, out, x, b, h, w, t, ctx, len, add, &err) == 0,
		    "%s: forward %s", cname, err.message);
		u->debug = NULL;
		/* Everything but the inputs and the output is an intermediate. */
		tap_ok(cap.compared == st_count(cap.g) - inputs, "%s: compared %d intermediates of %d",
		    cname, cap.compared, st_count(cap.g) - inputs);
		sd_download(c, got, out, nw);
		snprintf(what, sizeof what, "%s out%s%s%s", cname, pin ? " (" : "",
		    pin ? pin : "", pin ? " pinned)" : "");
		check_close(what, got, want, nw, tol, tol);
	}

	arena = sd_arena_bytes(c);
	tap_ok(unet_forward_added(u, c, out, x, b, h, w, t, ctx, len, add, &err) == 0, "%s: forward %s",
	    cname, err.message);
	sd_download(c, got, out, nw);
	check_close(cname, got, want, nw, tol, tol);
	if (intermediates)
		tap_ok(sd_arena_bytes(c) == arena,
		    "%s: a second forward allocates nothing new (%zu bytes)", cname, arena);

	free(got);
	free(t);
	free((float *)added.text_embeds);
	free((float *)added.time_ids);
	free(want);
	free(context);
	free(ts);
	free(sample);
	st_close(cap.g);
	sd_release(c, mark);
}

/* One UNet call of the 9-channel inpainting pipeline case (CFG batch
 * [uncond, cond], the recorded 9-channel input twice). */
static void
run_inpaint9(struct unet *u, struct sd_ctx *c, int step)
{
	const char *cname = "inpaint9_ddim_s10_str1";
	const double tol = 1e-3;	/* manifest: inpaint9_ddim_s10_str1 */
	const struct sd_tensor *st;
	struct sd_error err = {0};
	struct st_file *g;
	float *in, *ts, *pos, *neg, *want, *hx, *hctx, *got, *got2, *x, *ctx, *out, t[2];
	size_t nin, nt, np, nn, nw, nx, no;
	int h, w;
	char what[96];
	size_t mark = sd_mark(c);

	if ((g = golden_open(cname)) == NULL) {
		tap_ok(0, "golden %s", cname);
		return;
	}
	st = st_find(g, "unet_in");
	h = (int)st->shape[3];
	w = (int)st->shape[4];
	in = golden_f32(g, "unet_in", &nin);
	ts = golden_f32(g, "unet_t", &nt);
	pos = golden_f32(g, "prompt_embeds", &np);
	neg = golden_f32(g, "negative_prompt_embeds", &nn);
	want = golden_f32(g, "unet_out", &nw);
	nx = (size_t)9 * h * w;
	no = (size_t)2 * 4 * h * w;

	hx = malloc(2 * nx * sizeof *hx);
	hctx = malloc((np + nn) * sizeof *hctx);
	got = malloc(no * sizeof *got);
	memcpy(hx, in + step * nx, nx * sizeof *hx);
	memcpy(hx + nx, in + step * nx, nx * sizeof *hx);
	memcpy(hctx, neg, nn * sizeof *hctx);
	memcpy(hctx + nn, pos, np * sizeof *hctx);
	t[0] = t[1] = ts[step];

	x = sd_alloc(c, 2 * nx);
	ctx = sd_alloc(c, np + nn);
	out = sd_alloc(c, no);
	sd_upload(c, x, hx, 2 * nx);
	sd_upload(c, ctx, hctx, np + nn);
	snprintf(what, sizeof what, "%s unet_out[%d] (t=%g)", cname, step, t[0]);
	tap_ok(unet_forward(u, c, out, x, 2, h, w, t, ctx, (int)(np / (size_t)u->context_dim),
	    &err) == 0, "%s: forward %s", what, err.message);
	sd_download(c, got, out, no);
	check_close(what, got, want + step * no, no, tol, tol);

	/* The cross-attentions' keys and values computed once
	 * (unet_set_context, as sdbatch run does): the same output to the
	 * bit; a forward with another context is not served from the cache. */
	got2 = malloc(no * sizeof *got2);
	unet_set_context(u, c, ctx, 2, (int)(np / (size_t)u->context_dim));
	tap_ok(unet_forward(u, c, out, x, 2, h, w, t, ctx, (int)(np / (size_t)u->context_dim),
	    &err) == 0, "%s: forward with the context cached %s", what, err.message);
	sd_download(c, got2, out, no);
	tap_ok(memcmp(got, got2, no * sizeof *got) == 0,
	    "%s: the same output with the context's keys and values cached", what);
	if (step == 0) {
		/* the prompts swapped, in another buffer: its own keys */
		float *ctx2 = sd_alloc(c, np + nn), *got3 = malloc(no * sizeof *got3);
		memcpy(hctx, pos, np * sizeof *hctx);
		memcpy(hctx + np, neg, nn * sizeof *hctx);
		sd_upload(c, ctx2, hctx, np + nn);
		unet_forward(u, c, out, x, 2, h, w, t, ctx2, (int)(np / (size_t)u->context_dim), &err);
		sd_download(c, got2, out, no);
		unet_clear_context(u);
		unet_forward(u, c, out, x, 2, h, w, t, ctx2, (int)(np / (size_t)u->context_dim), &err);
		sd_download(c, got3, out, no);
		tap_ok(memcmp(got2, got3, no * sizeof *got2) == 0 && memcmp(got, got2, no * sizeof *got) != 0,
		    "%s: another context while one is cached gets its own keys and values", what);
		free(got3);
	}
	unet_clear_context(u);
	free(got2);

	free(got);
	free(hctx);
	free(hx);
	free(want);
	free(neg);
	free(pos);
	free(ts);
	free(in);
	st_close(g);
	sd_release(c, mark);
}

static struct unet *
load_unet_cfg(const char *rel, const struct unet_config *cfg, struct st_file **fp,
    struct sd_weights **wp)
{
	struct sd_error err = {0};
	struct unet *u;

	*fp = st_open(shared_path(rel), &err);
	*wp = weights_new();
	if (*fp == NULL) {
		tap_ok(0, "open %s: %s", rel, err.message);
		return NULL;
	}
	weights_add_file(*wp, *fp, UNET_SD15_PREFIX);
	u = unet_load(*wp, UNET_SD15_PREFIX, cfg, &err);
	tap_ok(u != NULL, "loads the UNet of %s %s", rel, u ? "" : err.message);
	return u;
}

static struct unet *
load_unet(const char *rel, struct st_file **fp, struct sd_weights **wp)
{
	return load_unet_cfg(rel, &sd15_cfg, fp, wp);
}

/* SD 2.x (sd21-tiny): linear projections, heads of 8 channels. */
static void
test_sd2(struct sd_ctx *c)
{
	struct sd_weights *w;
	struct st_file *f;
	struct unet *u;
	struct sd_error err = {0};

	golden_set = "sd21-tiny";
	u = load_unet_cfg("testdata/sd21-tiny/model.safetensors", &sd21_tiny_cfg, &f, &w);
	if (u != NULL) {
		tap_ok(u->in_channels == 4 && u->model_channels == 32 && u->context_dim == 16 &&
		    u->downsamples == 3, "sd21: reads base %d, context %d, %d downsamplers",
		    u->model_channels, u->context_dim, u->downsamples);
		run_case(u, c, "unet_b2_t981_16x16", 2e-4, 1, NULL);
		run_case(u, c, "unet_b1_t1_8x16", 2e-4, 1, NULL);
		run_case(u, c, "unet_b2_tvec_16x8", 2e-4, 0, NULL);
	}
	unet_free(u);
	weights_free(w);
	st_close(f);
	u = load_unet_cfg("testdata/sd21-tiny/model-f16.safetensors", &sd21_tiny_cfg, &f, &w);
	if (u != NULL)
		run_case(u, c, "unet_b2_t981_16x16_f16w", 2e-4, 0, NULL);
	unet_free(u);
	weights_free(w);
	st_close(f);
	/* 64-channel heads (the real SD 2.x) do not fit 32-channel levels. */
	f = st_open(shared_path("testdata/sd21-tiny/model.safetensors"), &err);
	w = weights_new();
	if (f != NULL)
		weights_add_file(w, f, UNET_SD15_PREFIX);
	u = unet_load(w, UNET_SD15_PREFIX, &(struct unet_config){ 0, 64 }, &err);
	tap_ok(u == NULL && strstr(err.message, "heads of 64") != NULL,
	    "sd21: heads that do not divide the channels are refused (%s)", err.message);
	unet_free(u);
	weights_free(w);
	st_close(f);
	golden_set = "sd15-tiny";
}

static void
expect_load_error(const struct st_file *f, const char *name, const struct sd_tensor *replace,
    const char *needle, const char *what)
{
	struct sd_weights *w = weights_subset(f, UNET_SD15_PREFIX, name, replace);
	struct sd_error err = {0};
	struct unet *u = unet_load(w, UNET_SD15_PREFIX, &sd15_cfg, &err);

	tap_ok(u == NULL && err.code == SD_EDATA && strstr(err.message, name) != NULL &&
	    (needle == NULL || strstr(err.message, needle) != NULL), "%s (%s)", what, err.message);
	unet_free(u);
	weights_free(w);
}

static void
test_load_errors(const struct st_file *f)
{
	const char *p = UNET_SD15_PREFIX;
	char name[256];
	struct sd_tensor wrong;

	snprintf(name, sizeof name, "%sinput_blocks.4.1.transformer_blocks.0.attn1.to_q.weight", p);
	expect_load_error(f, name, NULL, "missing", "a missing attention weight is named");
	snprintf(name, sizeof name, "%sinput_blocks.4.0.in_layers.0.weight", p);
	expect_load_error(f, name, NULL, "missing", "a missing resblock norm is named");
	snprintf(name, sizeof name, "%soutput_blocks.5.0.skip_connection.weight", p);
	expect_load_error(f, name, NULL, "missing", "a missing skip connection is named");
	snprintf(name, sizeof name, "%sout.2.bias", p);
	expect_load_error(f, name, NULL, "missing", "a missing conv_out bias is named");

	snprintf(name, sizeof name, "%soutput_blocks.7.1.transformer_blocks.0.ff.net.2.weight", p);
	wrong = *st_find(f, name);
	wrong.shape[1] = 64;
	expect_load_error(f, name, &wrong, "[32, 64]", "a misshapen tensor is named with its shape");
	snprintf(name, sizeof name, "%smiddle_block.0.in_layers.2.weight", p);
	wrong = *st_find(f, name);
	wrong.shape[1] = 32;
	expect_load_error(f, name, &wrong, "[64, 32, 3, 3]",
	    "a conv that breaks the channel flow is named");
}

/* sdxl-tiny's add_time_ids case: three (original size, crop, target size)
 * triples and pooled embeddings -> time_embeds and aug_emb, seen through a
 * forward pass's debug hook. */
static void
run_time_ids(struct unet *u, struct sd_ctx *c)
{
	struct capture cap = { c, NULL, "add_time_ids", NULL, 1e-4, 1e-4, 0, 0 };
	struct unet_added add;
	struct sd_error err = {0};
	size_t ne, ni, mark = sd_mark(c);
	float *te, *ids, t[3] = { 999, 500, 1 };
	float *x = sd_alloc(c, 3 * 4 * 8 * 8), *ctx = sd_alloc(c, 3 * 77 * 32);
	float *out = sd_alloc(c, 3 * 4 * 8 * 8), *zeros = calloc(3 * 77 * 32, sizeof *zeros);

	if ((cap.g = golden_open_in("sdxl-tiny", "add_time_ids")) == NULL) {
		free(zeros);
		return;
	}
	te = golden_f32(cap.g, "text_embeds", &ne);
	ids = golden_f32(cap.g, "time_ids", &ni);
	add = (struct unet_added){ te, (int)(ne / 3), ids };
	sd_upload(c, x, zeros, 3 * 4 * 8 * 8);
	sd_upload(c, ctx, zeros, 3 * 77 * 32);
	u->debug = capture_fn;
	u->debug_user = &cap;
	tap_ok(unet_forward_added(u, c, out, x, 3, 8, 8, t, ctx, 77, &add, &err) == 0,
	    "add_time_ids: forward %s", err.message);
	u->debug = NULL;
	tap_ok(cap.compared == 2, "add_time_ids: time_embeds and aug_emb compared (%d)", cap.compared);
	free(te);
	free(ids);
	free(zeros);
	st_close(cap.g);
	sd_release(c, mark);
}

/* SDXL (sdxl-tiny): no attention at the first level, transformer depth per
 * level, the added embedding of the pooled text and the time ids. */
static void
test_sdxl(struct sd_ctx *c)
{
	struct sd_weights *w;
	struct st_file *f;
	struct unet *u;
	struct sd_error err = {0};

	golden_set = "sdxl-tiny";
	u = load_unet_cfg("testdata/sdxl-tiny/model.safetensors", &sdxl_tiny_cfg, &f, &w);
	if (u != NULL) {
		tap_ok(u->context_dim == 32 && u->downsamples == 2 && u->adm_in == 116 &&
		    u->ninput == 8 && u->noutput == 9, "sdxl: context %d, %d downsamplers, label_emb of %d, "
		    "%d+%d blocks", u->context_dim, u->downsamples, u->adm_in, u->ninput, u->noutput);
		run_case(u, c, "unet_b2_t999_16x16", 2e-4, 1, NULL);
		run_case(u, c, "unet_b1_t1_8x16", 2e-4, 1, NULL);
		run_case(u, c, "unet_b2_tvec_8x8", 2e-4, 0, NULL);
		/* without the added conditioning it refuses, not guesses */
		float *x = sd_alloc(c, 4 * 64), *ctx = sd_alloc(c, 77 * 32), *out = sd_alloc(c, 4 * 64);
		float t0 = 1;
		tap_ok(unet_forward(u, c, out, x, 1, 8, 8, &t0, ctx, 77, &err) < 0 &&
		    strstr(err.message, "time ids") != NULL, "sdxl: a forward without time ids is refused (%s)",
		    err.message);
	}
	if (u != NULL)
		run_time_ids(u, c);
	unet_free(u);
	weights_free(w);
	st_close(f);
	u = load_unet_cfg("testdata/sdxl-tiny/model-f16.safetensors", &sdxl_tiny_cfg, &f, &w);
	if (u != NULL)
		run_case(u, c, "unet_b2_t999_16x16_f16w", 2e-4, 0, NULL);
	unet_free(u);
	weights_free(w);
	st_close(f);
	golden_set = "sd15-tiny";
}

int
main(void)
{
	struct sd_error err = {0};
	struct sd_weights *w, *w16, *w9;
	struct st_file *f, *f16, *f9;
	struct unet *u, *u16, *u9;
	struct sd_ctx *c;

	if (shared_dir() == NULL)
		return tap_skip_all("../shared is absent: no test model");
	c = test_ctx_new();

	u = load_unet("testdata/sd15-tiny/model.safetensors", &f, &w);
	if (u != NULL) {
		tap_ok(u->in_channels == 4 && u->out_channels == 4 && u->model_channels == 32 &&
		    u->time_embed_dim == 128 && u->context_dim == 24 && u->downsamples == 3 &&
		    u->ninput == 11 && u->noutput == 12,
		    "reads in %d, out %d, base %d, time %d, context %d, %d downsamplers, "
		    "%d+%d blocks", u->in_channels, u->out_channels, u->model_channels,
		    u->time_embed_dim, u->context_dim, u->downsamples, u->ninput, u->noutput);
		tap_ok(unet_check_size(u, 9, 13, &err) == 0 && unet_check_size(u, 1, 1, &err) == 0,
		    "any latent size goes through (9x13, 1x1) %s", err.message);
		tap_ok(unet_check_size(u, 0, 12, &err) < 0 && strstr(err.message, "0x12"),
		    "an empty size is refused (%s)", err.message);
		/* Tolerances of the manifest.  unet_b2_t981's 8x8 latents make
		 * 1x1 maps at the bottom, where GroupNorm normalises 1 or 2
		 * values: "mid" then moves by ~1e-5 when "down2" moves by half
		 * an ulp, and even a float64 evaluation from the golden "down2"
		 * misses the golden "mid" by 1.3e-3.  So that pass pins "down3"
		 * (itself compared first) to the golden value and checks every
		 * block after it given torch's input; the plain pass that
		 * follows checks the output at the same tolerance. */
		run_case(u, c, "unet_b2_t981", 5e-4, 1, "down3");
		run_case(u, c, "unet_b1_t1_8x16", 2e-4, 1, NULL);
		run_case(u, c, "unet_b2_tvec", 2e-4, 0, NULL);
		run_case(u, c, "unet_b1_t500_16x16", 2e-4, 0, NULL);
		/* sizes that are not multiples of 8: odd levels (9x13 -> 5x7 ->
		 * 3x4 -> 2x2, 15x11 -> 8x6 -> 4x3 -> 2x2) */
		run_case(u, c, "unet_b1_t500_9x13", 2e-4, 1, NULL);
		run_case(u, c, "unet_b2_t800_15x11", 2e-4, 0, NULL);
		test_load_errors(f);
	}
	unet_free(u);
	weights_free(w);
	st_close(f);

	u16 = load_unet("testdata/sd15-tiny/model-f16.safetensors", &f16, &w16);
	if (u16 != NULL)
		run_case(u16, c, "unet_b2_t981_f16w", 5e-4, 0, NULL);
	unet_free(u16);
	weights_free(w16);
	st_close(f16);

	u9 = load_unet("testdata/sd15-tiny/model-inpaint.safetensors", &f9, &w9);
	if (u9 != NULL)
		tap_ok(u9->in_channels == 9 && u9->out_channels == 4,
		    "the inpainting UNet has %d input channels", u9->in_channels);
	if (u9 != NULL) {
		run_inpaint9(u9, c, 0);
		run_inpaint9(u9, c, 9);
	}
	unet_free(u9);
	weights_free(w9);
	st_close(f9);

	test_sd2(c);
	test_sdxl(c);
	sd_ctx_free(c);
	return tap_done();
}
