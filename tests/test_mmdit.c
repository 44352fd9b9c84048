/* test_mmdit.c: SD3's MMDiT against diffusers' SD3Transformer2DModel (every
 * transformer_* case of the sd3-tiny manifest at its tolerance, with every
 * recorded intermediate), from the single file (F32 and F16) and the
 * diffusers folder (under a prefix, which must give the same outputs); the
 * FLOPs it counts; the loader's and the size check's errors. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/ops.h"
#include "model/mmdit.h"
#include "testutil.h"

#define FOLDER_PREFIX "transformer."
#define NINPUTS 4	/* hidden_states, timestep, encoder_hidden_states, pooled_projections */

/* Compares each intermediate the MMDiT shows with the golden of that name. */
struct capture {
	struct sd_ctx *c;
	struct st_file *g;
	const char *label;
	double atol, rtol;
	int compared;
};

static void
capture_fn(void *user, const char *name, const float *data, size_t n)
{
	struct capture *cap = user;
	float *got, *want;
	size_t nwant;
	char what[160];

	if (st_find(cap->g, name) == NULL)
		return;
	snprintf(what, sizeof what, "%s %s", cap->label, name);
	want = golden_f32(cap->g, name, &nwant);
	if (nwant != n) {
		tap_ok(0, "%s: %zu values, want %zu", what, n, nwant);
	} else {
		got = malloc(n * sizeof *got);
		sd_download(cap->c, got, data, n);
		check_close(what, got, want, n, cap->atol, cap->rtol);
		free(got);
	}
	free(want);
	cap->compared++;
}

/* One manifest case's inputs and tolerance. */
struct tcase {
	const char *name;
	double atol, rtol;
	int f16;		/* params.weights == "model-f16" */
};

/* Run case tc on m with every intermediate, then a plain second pass (the
 * same output, no arena growth).  Returns the output (host, malloc'd) or
 * NULL. */
static float *
run_case(struct mmdit *m, struct sd_ctx *c, const struct tcase *tc, const char *label)
{
	struct capture cap = { c, NULL, label, tc->atol, tc->rtol, 0 };
	struct sd_error err = {0};
	const struct sd_tensor *st;
	float *hs, *ts, *ehs, *pooled, *want, *got = NULL, *x, *ctx, *out;
	size_t nh, nt, ne, np, nw, arena, mark = sd_mark(c);
	int b, h, w, len;
	char what[160];

	if ((cap.g = golden_open_in("sd3-tiny", tc->name)) == NULL) {
		tap_ok(0, "golden %s", tc->name);
		return NULL;
	}
	st = st_find(cap.g, "hidden_states");
	b = (int)st->shape[0];
	h = (int)st->shape[2];
	w = (int)st->shape[3];
	hs = golden_f32(cap.g, "hidden_states", &nh);
	ts = golden_f32(cap.g, "timestep", &nt);
	ehs = golden_f32(cap.g, "encoder_hidden_states", &ne);
	pooled = golden_f32(cap.g, "pooled_projections", &np);
	want = golden_f32(cap.g, "out", &nw);
	len = (int)(ne / (size_t)b / (size_t)m->ctx_dim);
	if (!tap_ok(nt == (size_t)b && np == (size_t)b * m->pooled_dim && nw == nh &&
	    ne == (size_t)b * len * m->ctx_dim, "%s: inputs fit the model (batch %d, %dx%d, "
	    "context %d)", label, b, h, w, len))
		goto out;

	x = sd_alloc(c, nh);
	ctx = sd_alloc(c, ne);
	out = sd_alloc(c, nw);
	got = malloc(nw * sizeof *got);
	sd_upload(c, x, hs, nh);
	sd_upload(c, ctx, ehs, ne);
	mmdit_set_debug(m, capture_fn, &cap);
	tap_ok(mmdit_forward(m, c, out, x, b, h, w, ts, ctx, len, pooled, &err) == 0,
	    "%s: forward %s", label, err.message);
	mmdit_set_debug(m, NULL, NULL);
	/* every tensor of the golden but the inputs and the output */
	tap_ok(cap.compared == st_count(cap.g) - NINPUTS - 1, "%s: compared %d intermediates of %d",
	    label, cap.compared, st_count(cap.g) - NINPUTS - 1);
	sd_download(c, got, out, nw);
	snprintf(what, sizeof what, "%s out", label);
	check_close(what, got, want, nw, tc->atol, tc->rtol);

	arena = sd_arena_bytes(c);
	memset(got, 0, nw * sizeof *got);
	tap_ok(mmdit_forward(m, c, out, x, b, h, w, ts, ctx, len, pooled, &err) == 0,
	    "%s: second forward %s", label, err.message);
	sd_download(c, got, out, nw);
	snprintf(what, sizeof what, "%s out, second pass", label);
	check_close(what, got, want, nw, tc->atol, tc->rtol);
	tap_ok(sd_arena_bytes(c) == arena, "%s: a second forward allocates nothing new (%zu bytes)",
	    label, arena);
out:
	sd_release(c, mark);
	st_close(cap.g);
	free(hs); free(ts); free(ehs); free(pooled); free(want);
	return got;
}

/* The FLOPs of the matrix ops of one forward, counted by hand: patch conv,
 * embedders, per block the adaLN linears, q/k/v, attention, projections
 * and MLPs (the last block's context stream: adaLN and q/k/v only), the
 * final adaLN and linear. */
static double
expected_flops(const struct mmdit *m, int b, int h, int w, int t)
{
	double d = m->width, n = (double)(h / m->patch) * (w / m->patch), len = n + t;
	double f = 2.0 * b * n * d * m->in_channels * m->patch * m->patch;

	f += 2.0 * b * d * (m->freq_dim + d + m->pooled_dim + d);
	f += 2.0 * b * t * m->ctx_dim * d;
	for (int i = 0; i < m->depth; i++) {
		int last = i == m->depth - 1;
		f += 2.0 * b * d * 6 * d + 2.0 * b * d * (last ? 2 : 6) * d;
		f += 3 * 2.0 * b * len * d * d;				/* q, k, v */
		f += 4.0 * b * len * len * d;				/* attention */
		f += 2.0 * b * (last ? n : len) * d * d;		/* proj */
		f += 2 * 2.0 * b * (last ? n : len) * d * m->mlp_dim;	/* fc1, fc2 */
	}
	f += 2.0 * b * d * 2 * d + 2.0 * b * n * d * m->patch * m->patch * m->out_channels;
	return f;
}

static void
test_flops(struct mmdit *m, struct sd_ctx *c)
{
	int b = 2, h = 8, w = 12, t = 7;
	size_t mark = sd_mark(c), nx = (size_t)b * m->in_channels * h * w;
	size_t nc = (size_t)b * t * m->ctx_dim;
	float *hx = calloc(nx, sizeof *hx), *hc = calloc(nc, sizeof *hc);
	float *pooled = calloc((size_t)b * m->pooled_dim, sizeof *pooled), ts[2] = { 500, 20 };
	float *x = sd_alloc(c, nx), *ctx = sd_alloc(c, nc), *out = sd_alloc(c, nx);
	struct sd_error err = {0};
	double before, got, want = expected_flops(m, b, h, w, t);

	sd_upload(c, x, hx, nx);
	sd_upload(c, ctx, hc, nc);
	before = sd_ctx_flops(c);
	tap_ok(mmdit_forward(m, c, out, x, b, h, w, ts, ctx, t, pooled, &err) == 0, "flops: forward %s",
	    err.message);
	got = sd_ctx_flops(c) - before;
	tap_ok(fabs(got - want) <= 1e-9 * want, "a forward counts its FLOPs (%.0f, by hand %.0f)",
	    got, want);
	sd_release(c, mark);
	free(hx); free(hc); free(pooled);
}

/* The diffusers transformer folder's tensors under FOLDER_PREFIX, less the
 * one named skip (without the prefix; NULL: none). */
static struct sd_weights *
folder_weights(const struct st_file *f, const char *skip)
{
	struct sd_weights *w = weights_new();
	char name[512];

	for (int i = 0; i < st_count(f); i++) {
		const struct sd_tensor *t = st_tensor(f, i);
		if (skip != NULL && strcmp(t->name, skip) == 0)
			continue;
		snprintf(name, sizeof name, FOLDER_PREFIX "%s", t->name);
		weights_put(w, name, t);
	}
	return w;
}

static void
check_shape(const struct mmdit *m, const char *label, int heads)
{
	tap_ok(m->in_channels == 16 && m->out_channels == 16 && m->width == 32 && m->depth == 3 &&
	    m->heads == heads && m->head_dim == 32 / heads && m->patch == 2 && m->pos_max == 12 &&
	    m->ctx_dim == 48 && m->pooled_dim == 32 && m->freq_dim == 256 && m->mlp_dim == 128,
	    "%s: in %d, out %d, width %d, %d blocks, %d heads of %d, patch %d, positions %dx%d, "
	    "context %d, pooled %d, sinusoid %d, MLP %d", label, m->in_channels, m->out_channels,
	    m->width, m->depth, m->heads, m->head_dim, m->patch, m->pos_max, m->pos_max, m->ctx_dim,
	    m->pooled_dim, m->freq_dim, m->mlp_dim);
}

/* A load that must fail with a message containing each of want[] (NULL
 * ends). */
static void
load_fails(struct sd_weights *w, const char *prefix, const struct mmdit_config *cfg,
    const char *what, const char *const *want)
{
	struct sd_error err = {0};
	struct mmdit *m = mmdit_load(w, prefix, cfg, &err);
	int ok = m == NULL && err.code == SD_EDATA;

	for (; ok && *want != NULL; want++)
		ok = strstr(err.message, *want) != NULL;
	tap_ok(ok, "%s (%s)", what, err.message);
	mmdit_free(m);
	weights_free(w);
}

static void
test_load_errors(const struct st_file *f, const struct st_file *fd, int heads)
{
	const struct mmdit_config cfg = { heads }, five = { 5 };
	const char *missing = MMDIT_SD3_PREFIX "joint_blocks.1.context_block.mlp.fc2.weight";
	const char *qkv = MMDIT_SD3_PREFIX "joint_blocks.0.x_block.attn.qkv.weight";
	const char *fmissing = "transformer_blocks.2.attn.add_v_proj.bias";
	struct sd_tensor wrong;

	load_fails(weights_subset(f, MMDIT_SD3_PREFIX, missing, NULL), MMDIT_SD3_PREFIX, &cfg,
	    "single file: a missing tensor is named", (const char *[]){ "missing", missing, NULL });
	wrong = *st_find(f, qkv);
	wrong.shape[0] = 95;
	load_fails(weights_subset(f, MMDIT_SD3_PREFIX, qkv, &wrong), MMDIT_SD3_PREFIX, &cfg,
	    "single file: a misshapen tensor is named with its shape",
	    (const char *[]){ qkv, "[95, 32]", "[96, 32]", NULL });
	load_fails(folder_weights(fd, fmissing), FOLDER_PREFIX, &cfg,
	    "diffusers folder: a missing tensor is named",
	    (const char *[]){ "missing", FOLDER_PREFIX "transformer_blocks.2.attn.add_v_proj.bias",
	    NULL });
	load_fails(weights_subset(f, MMDIT_SD3_PREFIX, NULL, NULL), "model.", &cfg,
	    "a prefix with no transformer names what was looked for",
	    (const char *[]){ "model.x_embedder.proj.weight", "model.pos_embed.proj.weight", NULL });
	load_fails(weights_subset(f, MMDIT_SD3_PREFIX, NULL, NULL), MMDIT_SD3_PREFIX, &five,
	    "a head count that does not divide the width is refused",
	    (const char *[]){ "32", "5 heads", NULL });
}

static void
test_size_errors(struct mmdit *m, struct sd_ctx *c)
{
	struct sd_error err = {0};
	size_t mark = sd_mark(c);
	float *x = sd_alloc(c, (size_t)16 * 26 * 26), *out = sd_alloc(c, (size_t)16 * 26 * 26);
	float *ctx = sd_alloc(c, (size_t)4 * m->ctx_dim), t = 10, pooled[32] = {0};

	tap_ok(mmdit_check_size(m, 24, 24, &err) == 0 && mmdit_check_size(m, 2, 24, &err) == 0,
	    "24x24 and 2x24 latents fit the 12x12 position table");
	tap_ok(mmdit_check_size(m, 24, 26, &err) < 0 && err.code == SD_EDATA &&
	    strstr(err.message, "24x26") != NULL && strstr(err.message, "at most 24x24") != NULL,
	    "a size past the position table is refused (%s)", err.message);
	sd_error_clear(&err);
	tap_ok(mmdit_check_size(m, 15, 16, &err) < 0 && strstr(err.message, "15x16") != NULL &&
	    strstr(err.message, "multiples of 2") != NULL, "an odd size is refused (%s)", err.message);
	sd_error_clear(&err);
	tap_ok(mmdit_check_size(m, 0, 16, &err) < 0, "an empty size is refused (%s)", err.message);
	sd_error_clear(&err);
	tap_ok(mmdit_forward(m, c, out, x, 1, 26, 26, &t, ctx, 4, pooled, &err) < 0 &&
	    strstr(err.message, "26x26") != NULL && sd_ctx_status(c, NULL) == 0,
	    "mmdit_forward refuses 26x26 before running anything (%s)", err.message);
	sd_release(c, mark);
}

int
main(void)
{
	const char *model = shared_path("testdata/sd3-tiny/model.safetensors");
	struct st_file *f = NULL, *f16 = NULL, *fd = NULL;
	struct sd_weights *w = NULL, *w16 = NULL, *wd = NULL;
	struct mmdit *m = NULL, *m16 = NULL, *md = NULL;
	struct mmdit_config cfg = {0};
	struct sd_error err = {0};
	json_t *manifest, *cases, *jc;
	json_error_t jerr;
	struct sd_ctx *c;
	size_t i;

	if (model == NULL)
		return tap_skip_all("no shared/ folder");
	c = test_ctx_new();
	manifest = json_load_file(shared_path("testdata/sd3-tiny/manifest.json"), 0, &jerr);
	if (!tap_ok(manifest != NULL, "sd3-tiny manifest %s", manifest ? "" : jerr.text))
		return tap_done();
	cfg.heads = (int)json_integer_value(json_object_get(json_object_get(json_object_get(
	    manifest, "model"), "transformer"), "num_attention_heads"));
	tap_ok(cfg.heads > 0, "the manifest gives the heads (%d)", cfg.heads);

	f = st_open(model, NULL);
	f16 = st_open(shared_path("testdata/sd3-tiny/model-f16.safetensors"), NULL);
	fd = st_open(shared_path("testdata/sd3-tiny/diffusers/transformer/"
	    "diffusion_pytorch_model.safetensors"), NULL);
	if (!tap_ok(f != NULL && f16 != NULL && fd != NULL, "opens the single files and the folder's "
	    "transformer"))
		return tap_done();
	w = weights_subset(f, MMDIT_SD3_PREFIX, NULL, NULL);
	m = mmdit_load(w, MMDIT_SD3_PREFIX, &cfg, &err);
	if (!tap_ok(m != NULL && !m->diffusers, "single file: the MMDiT loads %s", err.message))
		return tap_done();
	check_shape(m, "single file", cfg.heads);
	w16 = weights_subset(f16, MMDIT_SD3_PREFIX, NULL, NULL);
	m16 = mmdit_load(w16, MMDIT_SD3_PREFIX, &cfg, &err);
	tap_ok(m16 != NULL && m16->block != NULL && m16->patch_w->dtype == SD_F16,
	    "F16 single file: the MMDiT loads, weights in place %s", err.message);
	wd = folder_weights(fd, NULL);
	md = mmdit_load(wd, FOLDER_PREFIX, &cfg, &err);
	if (tap_ok(md != NULL && md->diffusers, "diffusers folder under \"" FOLDER_PREFIX
	    "\": the MMDiT loads %s", err.message))
		check_shape(md, "diffusers folder", cfg.heads);

	cases = json_object_get(manifest, "cases");
	json_array_foreach(cases, i, jc) {
		const char *name = json_string_value(json_object_get(jc, "name"));
		json_t *tol = json_object_get(jc, "tolerance"), *params = json_object_get(jc, "params");
		const char *weights = json_string_value(json_object_get(params, "weights"));
		struct tcase tc = { name, json_number_value(json_object_get(tol, "atol")),
		    json_number_value(json_object_get(tol, "rtol")), 0 };
		float *a, *b;
		char label[160];

		if (name == NULL || strncmp(name, "transformer_", 12) != 0)
			continue;
		tc.f16 = weights != NULL && strcmp(weights, "model-f16") == 0;
		tap_ok(tc.atol > 0 && tc.rtol > 0 && (weights == NULL || tc.f16),
		    "%s: tolerance atol %g rtol %g, weights %s", name, tc.atol, tc.rtol,
		    weights ? weights : "model");
		if (tc.f16) {
			snprintf(label, sizeof label, "%s (F16 file)", name);
			if (m16 != NULL)
				free(run_case(m16, c, &tc, label));
			continue;
		}
		snprintf(label, sizeof label, "%s (single file)", name);
		a = run_case(m, c, &tc, label);
		if (md == NULL)
			continue;
		snprintf(label, sizeof label, "%s (diffusers folder)", name);
		b = run_case(md, c, &tc, label);
		if (a != NULL && b != NULL) {
			const struct sd_tensor *t;
			struct st_file *g = golden_open_in("sd3-tiny", name);
			size_t n = (t = st_find(g, "out")) ? (size_t)sd_tensor_numel(t) : 0;
			snprintf(label, sizeof label, "%s: the folder gives the single file's output", name);
			check_close(label, b, a, n, 0, 0);
			st_close(g);
		}
		free(a);
		free(b);
	}
	test_flops(m, c);
	test_size_errors(m, c);
	test_load_errors(f, fd, cfg.heads);

	mmdit_free(m);
	mmdit_free(m16);
	mmdit_free(md);
	weights_free(w);
	weights_free(w16);
	weights_free(wd);
	st_close(f);
	st_close(f16);
	st_close(fd);
	json_decref(manifest);
	sd_ctx_free(c);
	return tap_done();
}
