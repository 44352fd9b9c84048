/* test_prompt.c: AUTOMATIC1111's prompt syntax against A1111's own code
 * (sd15-tiny's a1111_* cases): parsed pieces and weights, 75-token chunks
 * with BREAK and the comma look-back, the conditioning with emphasis and
 * the mean restored, whole runs with chunked prompts; <lora:> tags; the
 * plain syntax's warning for a prompt that is cut. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "core/ops.h"
#include "model/checkpoint.h"
#include "model/tokenizer.h"
#include "sample/conditioner.h"
#include "sample/description.h"
#include "sample/prompt.h"
#include "caserun.h"

static json_t *manifest;

static void
parse_cases(void)
{
	struct sd_error err = {0};
	struct prompt_piece *pc;
	int n;

	/* what the cases do not cover */
	tap_ok(prompt_parse("a:1.5) b", &pc, &n, &err) == 0 && n == 1 && strcmp(pc[0].text, "a:1.5) b") == 0,
	    "a weight without an open ( is text");
	prompt_pieces_free(pc, n);
	tap_ok(prompt_parse("(x:1.2.3)", &pc, &n, &err) < 0 && strstr(err.message, "1.2.3") != NULL,
	    "a weight that is not a number: %s", err.message);
	tap_ok(prompt_parse("a BREAK BREAK b", &pc, &n, &err) == 0 && n == 5 && pc[1].weight == -1 &&
	    pc[3].weight == -1 && strcmp(pc[2].text, "") == 0, "two BREAKs: an empty chunk between");
	prompt_pieces_free(pc, n);
	tap_ok(prompt_parse("(a\\)b)", &pc, &n, &err) == 0 && n == 1 && strcmp(pc[0].text, "a)b") == 0 &&
	    pc[0].weight == 1.1, "an escaped ) inside ( )");
	prompt_pieces_free(pc, n);

	char *s;
	struct prompt_lora *l;
	int rc = prompt_extract_loras("a castle <lora:detail:0.8>, <lora:style> night <lyco:x:0.5:0.25>", &s, &l,
	    &n, &err);
	tap_ok(rc == 0 && n == 3 && strcmp(s, "a castle ,  night ") == 0 &&
	    strcmp(l[0].name, "detail") == 0 && l[0].text_scale == 0.8f && l[0].unet_scale == 0.8f &&
	    strcmp(l[1].name, "style") == 0 && l[1].text_scale == 1.0f &&
	    l[2].text_scale == 0.5f && l[2].unet_scale == 0.25f, "<lora:> tags taken out: \"%s\"",
	    rc == 0 ? s : err.message);
	free(s);
	free(l);
	rc = prompt_extract_loras("x <lora:a:te=0.3:unet=0.7> <notatag y", &s, &l, &n, &err);
	tap_ok(rc == 0 && n == 1 &&
	    l[0].text_scale == 0.3f && l[0].unet_scale == 0.7f && strcmp(s, "x  <notatag y") == 0,
	    "te= and unet=, and text that only looks like a tag");
	free(s);
	free(l);
	tap_ok(prompt_extract_loras("<hypernet:x:1>", &s, &l, &n, &err) < 0 && strstr(err.message, "hypernet"),
	    "another extra network: %s", err.message);
	tap_ok(prompt_extract_loras("<lora:x:abc>", &s, &l, &n, &err) < 0 && strstr(err.message, "abc"),
	    "a scale that is not a number: %s", err.message);
}

/* The tiny CLIP with the final LayerNorm of a1111/final_layer_norm. */
static struct conditioner *
a1111_conditioner(struct st_file *base, struct st_file *ln, struct sd_weights **wout)
{
	struct model_desc d;
	struct sd_error err = {0};
	struct sd_weights *w = weights_new();
	struct conditioner *c;

	weights_add_file(w, base, NULL);
	for (int i = 0; i < st_count(ln); i++)
		weights_put(w, st_tensor(ln, i)->name, st_tensor(ln, i));
	model_describe_arch("sd15", &d);
	const char *tokdir[1] = {shared_path("data/clip-tokenizer")};
	const int own[1] = {0};
	c = conditioner_load(&d, w, tokdir, own, &err);
	if (c == NULL)
		tap_ok(0, "conditioner: %s", err.message);
	*wout = w;
	return c;
}

static void
prompt_cases(struct conditioner *c, struct sd_ctx *ctx)
{
	json_t *cs = case_find(manifest, "a1111_prompts"), *pr;
	struct st_file *g = golden_open("a1111_prompts");
	size_t i;

	if (cs == NULL || g == NULL) {
		tap_ok(0, "a1111_prompts missing");
		return;
	}
	json_array_foreach(json_object_get(json_object_get(cs, "params"), "prompts"), i, pr) {
		const char *key = json_string_value(json_object_get(pr, "key"));
		const char *text = json_string_value(json_object_get(pr, "prompt"));
		json_t *parsed = json_object_get(pr, "parsed"), *pp;
		struct prompt_piece *pc;
		struct prompt_chunks ch;
		struct sd_error err = {0};
		char name[128];
		int n, same;
		size_t k, nw;

		if (prompt_parse(text, &pc, &n, &err) < 0) {
			tap_ok(0, "%s: parse: %s", key, err.message);
			continue;
		}
		same = n == (int)json_array_size(parsed);
		json_array_foreach(parsed, k, pp)
			if (same && (strcmp(pc[k].text, json_string_value(json_array_get(pp, 0))) != 0 ||
			    pc[k].weight != json_number_value(json_array_get(pp, 1))))
				same = 0;
		tap_ok(same, "%s: %d pieces with A1111's texts and weights", key, n);
		prompt_pieces_free(pc, n);

		if (prompt_chunks(c->tokenizer[0], text, &ch, &err) < 0) {
			tap_ok(0, "%s: chunks: %s", key, err.message);
			continue;
		}
		tap_ok(ch.n == json_integer_value(json_object_get(pr, "chunks")) &&
		    ch.token_count == json_integer_value(json_object_get(pr, "token_count")) &&
		    ch.comma_moved == json_is_true(json_object_get(pr, "comma_backtrack_moved_tokens")),
		    "%s: %d chunks, %d tokens, comma look-back %d", key, ch.n, ch.token_count, ch.comma_moved);
		snprintf(name, sizeof name, "%s.ids", key);
		float *ids = golden_f32(g, name, &nw);
		same = nw == (size_t)ch.n * PROMPT_CHUNK_LEN;
		for (k = 0; same && k < nw; k++)
			same = (float)ch.ids[k] == ids[k];
		tap_ok(same, "%s: ids", key);
		free(ids);
		snprintf(name, sizeof name, "%s.multipliers", key);
		float *mult = golden_f32(g, name, &nw);
		same = nw == (size_t)ch.n * PROMPT_CHUNK_LEN;
		for (k = 0; same && k < nw; k++)
			same = ch.weights[k] == mult[k];
		tap_ok(same, "%s: weights (float32 of A1111's)", key);
		free(mult);

		/* the conditioning */
		snprintf(name, sizeof name, "%s.cond", key);
		float *want = golden_f32(g, name, &nw);
		size_t per = (size_t)PROMPT_CHUNK_LEN * ch.n * c->width;
		size_t mark = sd_mark(ctx);
		float *dctx = sd_alloc(ctx, per), *got = malloc(per * sizeof *got);
		const char *prompts[1] = {text};
		if (conditioner_encode_a1111(c, ctx, prompts, 1, ch.n, 1, dctx, NULL, &err) < 0) {
			tap_ok(0, "%s: encode: %s", key, err.message);
		} else {
			sd_download(ctx, got, dctx, per);
			if (nw == per)
				check_close(name, got, want, nw, 1e-5, 1e-5);
			else
				tap_ok(0, "%s: %zu values, %zu expected", name, per, nw);
		}
		sd_release(ctx, mark);
		free(got);
		free(want);
		prompt_chunks_free(&ch);
	}
	st_close(g);
}

/* A copy of model.safetensors with the final LayerNorm of
 * a1111/final_layer_norm.safetensors, in dir. */
static int
write_a1111_model(struct st_file *base, struct st_file *ln, const char *path)
{
	int n = st_count(base);
	struct sd_tensor *t = malloc((size_t)n * sizeof *t);
	struct sd_error err = {0};
	int rc;

	for (int i = 0; i < n; i++) {
		t[i] = *st_tensor(base, i);
		const struct sd_tensor *r = st_find(ln, t[i].name);
		if (r != NULL)
			t[i] = *r;
	}
	rc = st_write(path, t, n, NULL, NULL, 0, &err);
	if (rc < 0)
		tap_diag("%s", err.message);
	free(t);
	return rc;
}

static void
run_cases(const char *model)
{
	static const char *const cases[] = {"a1111_t2i_emphasis_ddim_s4_64x128",
	    "a1111_t2i_long_break_euler_a_s4_64x128"};
	struct sd_model *m = case_load(model);
	char warnings[4096];

	if (m == NULL)
		return;
	for (int i = 0; i < 2; i++) {
		json_t *c = case_find(manifest, cases[i]);
		struct st_file *g = golden_open(cases[i]);
		struct sd_params p;
		struct sd_image_u8 init;
		if (c == NULL || g == NULL || case_params(json_object_get(c, "params"), &p, &init) < 0) {
			tap_ok(0, "%s: case", cases[i]);
			st_close(g);
			continue;
		}
		p.prompt_syntax = SD_PROMPT_A1111;
		case_run(m, cases[i], &p, g, warnings);
		tap_ok(warnings[0] == '\0', "%s: no warning (%s)", cases[i], warnings);
		/* the plain syntax cuts the long prompt, and says so */
		if (i == 1) {
			struct sd_image img;
			struct sd_error err = {0};
			struct case_capture cap = {0};
			p.prompt_syntax = SD_PROMPT_PLAIN;
			p.steps = 1;
			if (sd_generate(m, &p, 0, &img, NULL, case_on_progress, &cap, &err) == 0) {
				tap_ok(strstr(cap.warnings, "the prompt is ") != NULL &&
				    strstr(cap.warnings, "cut") != NULL, "plain: a long prompt warns: %s", cap.warnings);
				sd_image_free(&img);
			} else {
				tap_ok(0, "plain long prompt: %s", err.message);
			}
			/* a <lora:> tag without lora_dirs is an error naming it */
			p.prompt_syntax = SD_PROMPT_A1111;
			p.prompt = "a cat <lora:nothere:0.5>";
			tap_ok(sd_generate(m, &p, 0, &img, NULL, NULL, NULL, &err) < 0 &&
			    strstr(err.message, "nothere") != NULL, "an unknown <lora:>: %s", err.message);
		}
		st_close(g);
	}
	sd_model_free(m);
}

/* ------------------------------------------------ A1111's syntax on SDXL */

/* No golden exists for SDXL in A1111's syntax: these check it by
 * construction against the plain encoding (itself checked against
 * diffusers in test_conditioner) and A1111's rules. */
#define XL_W0 12	/* sdxl-tiny: CLIP-L 12 wide, OpenCLIP 20 wide */
#define XL_W 32
#define XL_POOLED 20
#define XL_ROW ((size_t)PROMPT_CHUNK_LEN * XL_W)

static struct conditioner *
sdxl_conditioner(struct st_file **fp, struct sd_weights **wp)
{
	struct model_desc d;
	struct sd_error err = {0};
	const char *dirs[2] = {shared_path("data/clip-tokenizer"), NULL};
	int own[2] = {0, 0};
	struct conditioner *c;

	dirs[1] = dirs[0];
	*wp = NULL;
	*fp = NULL;
	if (access(shared_path("testdata/sdxl-tiny/model.safetensors"), R_OK) != 0) {
		tap_skip("no sdxl-tiny model: A1111's syntax on SDXL is not checked");
		return NULL;
	}
	if ((*fp = st_open(shared_path("testdata/sdxl-tiny/model.safetensors"), &err)) == NULL) {
		tap_ok(0, "open sdxl-tiny: %s", err.message);
		return NULL;
	}
	*wp = weights_new();
	weights_add_file(*wp, *fp, NULL);
	model_describe_arch("sdxl", &d);
	d.text[0].clip.head_channels = d.text[1].clip.head_channels = 4;	/* the tiny model's */
	c = conditioner_load(&d, *wp, dirs, own, &err);
	if (!tap_ok(c != NULL && c->width == XL_W && c->pooled_dim == XL_POOLED &&
	    c->encoder[0]->width == XL_W0, "SDXL conditioner %s", c ? "" : err.message)) {
		conditioner_free(c);
		return NULL;
	}
	return c;
}

/* The plain encoding of one prompt: context [77, 32] and pooled [20]. */
static int
xl_plain(struct conditioner *c, struct sd_ctx *ctx, const char *text, float *out, float *pooled)
{
	struct sd_error err = {0};
	size_t mark = sd_mark(ctx);
	float *d = sd_alloc(ctx, XL_ROW);
	const char *prompts[1] = {text};
	int rc = conditioner_encode(c, ctx, prompts, 1, 1, d, pooled, &err);

	if (rc == 0)
		sd_download(ctx, out, d, XL_ROW);
	else
		tap_diag("plain %s: %s", text ? text : "(null)", err.message);
	sd_release(ctx, mark);
	return rc;
}

/* n prompts in A1111's syntax: *chunks, context [n, 77*chunks, 32] and
 * pooled [n, 20] (malloc'd). */
static int
xl_a1111(struct conditioner *c, struct sd_ctx *ctx, const char *const *prompts, int n, int *chunks,
    float **out, float *pooled, struct sd_error *err)
{
	size_t mark = sd_mark(ctx), size;
	float *d;
	int rc = -1;

	*out = NULL;
	if ((*chunks = conditioner_a1111_chunks(c, prompts, n, err)) < 0)
		return -1;
	size = (size_t)n * *chunks * XL_ROW;
	d = sd_alloc(ctx, size);
	*out = malloc(size * sizeof **out);
	if (conditioner_encode_a1111(c, ctx, prompts, n, *chunks, 1, d, pooled, err) == 0) {
		sd_download(ctx, *out, d, size);
		rc = 0;
	}
	sd_release(ctx, mark);
	return rc;
}

static double
max_diff(const float *a, const float *b, size_t n)
{
	double m = 0;

	for (size_t i = 0; i < n; i++)
		if (fabs((double)a[i] - b[i]) > m)
			m = fabs((double)a[i] - b[i]);
	return m;
}

static int
all_zero(const float *a, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (a[i] != 0.0f)
			return 0;
	return 1;
}

/* A1111's "Original" emphasis of one encoder's columns [c0, c0+w) of a
 * plain context [77, 32], in double: z *= weight, then the mean restored
 * over that encoder's 77 x w values. */
static void
emphasize(float *z, const double *weight, int c0, int w)
{
	double before = 0, after = 0;

	for (int t = 0; t < PROMPT_CHUNK_LEN; t++)
		for (int k = c0; k < c0 + w; k++) {
			before += z[t * XL_W + k];
			after += z[t * XL_W + k] * weight[t];
		}
	for (int t = 0; t < PROMPT_CHUNK_LEN; t++)
		for (int k = c0; k < c0 + w; k++)
			z[t * XL_W + k] = (float)(z[t * XL_W + k] * weight[t] * (before / after));
}

static void
sdxl_cases(struct sd_ctx *ctx)
{
	struct st_file *f;
	struct sd_weights *w;
	struct sd_error err = {0};
	struct conditioner *c = sdxl_conditioner(&f, &w);
	float plain[XL_ROW], plain2[XL_ROW], want[XL_ROW], pp[XL_POOLED], pp2[XL_POOLED];
	float pooled[3 * XL_POOLED], *got = NULL;
	int chunks;

	if (c == NULL) {
		weights_free(w);
		st_close(f);
		return;
	}
	/* 1. no weights, no BREAK, under 75 tokens: the plain encoding */
	const char *simple[1] = {"a red robot, oil painting"};
	if (xl_plain(c, ctx, simple[0], plain, pp) == 0 &&
	    xl_a1111(c, ctx, simple, 1, &chunks, &got, pooled, &err) == 0)
		tap_ok(chunks == 1 && max_diff(got, plain, XL_ROW) <= 1e-6 &&
		    max_diff(pooled, pp, XL_POOLED) <= 1e-6,
		    "SDXL a1111 without weights = plain: 1 chunk, context within %.1g, pooled within %.1g",
		    max_diff(got, plain, XL_ROW), max_diff(pooled, pp, XL_POOLED));
	else
		tap_ok(0, "SDXL a1111 without weights: %s", err.message);
	free(got);

	/* 2. weights: each token's state scaled, the mean restored per
	 * encoder (A1111 wraps each encoder on its own); pooled untouched */
	const char *weighted[1] = {"a (red robot:1.5), [oil] painting"};
	double wt[PROMPT_CHUNK_LEN];
	for (int t = 0; t < PROMPT_CHUNK_LEN; t++)
		wt[t] = 1.0;
	wt[2] = wt[3] = 1.5;	/* BOS a red robot , oil painting EOS */
	wt[5] = 1 / 1.1;
	if (xl_plain(c, ctx, simple[0], plain, pp) == 0 &&
	    xl_a1111(c, ctx, weighted, 1, &chunks, &got, pooled, &err) == 0) {
		memcpy(want, plain, sizeof want);
		emphasize(want, wt, 0, XL_W0);
		emphasize(want, wt, XL_W0, XL_W - XL_W0);
		tap_ok(chunks == 1 && max_diff(got, want, XL_ROW) <= 1e-5,
		    "SDXL a1111 weights: scaled, mean restored per encoder (within %.1g)",
		    max_diff(got, want, XL_ROW));
		/* the same weights with one mean over both encoders differ */
		memcpy(want, plain, sizeof want);
		emphasize(want, wt, 0, XL_W);
		tap_ok(max_diff(got, want, XL_ROW) > 1e-4,
		    "  (one mean over the whole width would differ by %.2g)", max_diff(got, want, XL_ROW));
		tap_ok(max_diff(pooled, pp, XL_POOLED) <= 1e-6, "SDXL a1111 weights: the pooled vector "
		    "is the plain one (within %.1g)", max_diff(pooled, pp, XL_POOLED));
	} else {
		tap_ok(0, "SDXL a1111 weights: %s", err.message);
	}
	free(got);

	/* 3. BREAK: two chunks, each the plain encoding of its text, joined
	 * along the tokens; the pooled vector from the FIRST chunk */
	const char *brk[1] = {"a red robot BREAK oil painting"};
	if (xl_plain(c, ctx, "a red robot", plain, pp) == 0 &&
	    xl_plain(c, ctx, "oil painting", plain2, pp2) == 0 &&
	    xl_a1111(c, ctx, brk, 1, &chunks, &got, pooled, &err) == 0) {
		tap_ok(chunks == 2 && max_diff(got, plain, XL_ROW) <= 1e-6 &&
		    max_diff(got + XL_ROW, plain2, XL_ROW) <= 1e-6,
		    "SDXL a1111 BREAK: 2 chunks, each the encoding of its text (within %.1g, %.1g)",
		    max_diff(got, plain, XL_ROW), chunks == 2 ? max_diff(got + XL_ROW, plain2, XL_ROW) : 0);
		tap_ok(max_diff(pooled, pp, XL_POOLED) <= 1e-6 && max_diff(pooled, pp2, XL_POOLED) > 1e-4,
		    "SDXL a1111 BREAK: the pooled vector is the first chunk's");
	} else {
		tap_ok(0, "SDXL a1111 BREAK: %s", err.message);
	}
	free(got);

	/* 4. a missing negative prompt beside a 2-chunk prompt: zeros in
	 * every chunk and in the pooled vector (force_zeros_for_empty_prompt);
	 * "" given is encoded, and padded with the empty prompt's chunk */
	const char *pair[3] = {NULL, "", brk[0]};
	float empty[XL_ROW], pe[XL_POOLED];
	if (xl_plain(c, ctx, "", empty, pe) == 0 &&
	    xl_a1111(c, ctx, pair, 3, &chunks, &got, pooled, &err) == 0) {
		tap_ok(chunks == 2 && all_zero(got, 2 * XL_ROW) && all_zero(pooled, XL_POOLED),
		    "SDXL a1111: no negative prompt is zeros in both chunks and the pooled vector");
		tap_ok(max_diff(got + 2 * XL_ROW, empty, XL_ROW) <= 1e-5 &&
		    max_diff(got + 3 * XL_ROW, empty, XL_ROW) <= 1e-5 &&
		    max_diff(pooled + XL_POOLED, pe, XL_POOLED) <= 1e-5,
		    "SDXL a1111: \"\" is encoded, its second chunk the empty prompt's");
		/* (a batch of 6 chunks rounds a little differently from 1) */
		tap_ok(max_diff(got + 4 * XL_ROW, plain, XL_ROW) <= 1e-5 &&
		    max_diff(pooled + 2 * XL_POOLED, pp, XL_POOLED) <= 1e-5,
		    "SDXL a1111: the prompt beside them is encoded as alone (within %.1g, %.1g)",
		    max_diff(got + 4 * XL_ROW, plain, XL_ROW), max_diff(pooled + 2 * XL_POOLED, pp, XL_POOLED));
	} else {
		tap_ok(0, "SDXL a1111 with a missing negative: %s", err.message);
	}
	free(got);

	/* 5. a long prompt without commas: two chunks from both tokenizers;
	 * the first is the plain encoding (cut at 75 tokens), so is the pooled */
	const char *longp[1] = {"a very highly detailed oil painting of an old stone lighthouse "
	    "standing on a rocky cliff above a stormy sea at dusk with dramatic clouds and crashing "
	    "waves and seagulls circling the lantern room and warm glowing windows and wet rocks "
	    "reflecting the light and a small wooden boat struggling against the swell with spray in "
	    "the air in cinematic light with fog over the water and a pale moon rising over the hills "
	    "far behind the old town"};
	if (xl_plain(c, ctx, longp[0], plain, pp) == 0 &&
	    xl_a1111(c, ctx, longp, 1, &chunks, &got, pooled, &err) == 0) {
		tap_ok(chunks == 2 && max_diff(got, plain, XL_ROW) <= 1e-6 &&
		    max_diff(pooled, pp, XL_POOLED) <= 1e-6,
		    "SDXL a1111 long prompt: %d chunks, the first and the pooled vector as plain's cut "
		    "prompt", chunks);
	} else {
		tap_ok(0, "SDXL a1111 long prompt: %s", err.message);
	}
	free(got);
	conditioner_free(c);
	weights_free(w);
	st_close(f);
}

int
main(void)
{
	json_error_t jerr;
	struct sd_error err = {0};
	struct st_file *base, *ln;
	struct sd_weights *w = NULL;
	struct conditioner *c;
	struct sd_ctx *ctx;

	parse_cases();
	if (shared_dir() == NULL)
		return tap_done();
	manifest = json_load_file(shared_path("testdata/sd15-tiny/manifest.json"), 0, &jerr);
	if (!tap_ok(manifest != NULL, "manifest: %s", manifest ? "ok" : jerr.text))
		return tap_done();
	if (case_find(manifest, "a1111_prompts") == NULL) {
		tap_skip("the sd15-tiny set has no a1111 cases");
		return tap_done();
	}
	base = st_open(shared_path("testdata/sd15-tiny/model.safetensors"), &err);
	ln = st_open(shared_path("testdata/sd15-tiny/a1111/final_layer_norm.safetensors"), &err);
	if (!tap_ok(base != NULL && ln != NULL, "model files: %s", base && ln ? "ok" : err.message))
		return tap_done();
	ctx = test_ctx_new();
	sdxl_cases(ctx);
	c = a1111_conditioner(base, ln, &w);
	if (c != NULL)
		prompt_cases(c, ctx);
	conditioner_free(c);
	weights_free(w);
	sd_ctx_free(ctx);

	if (getenv("SDBATCH_TEST_QUICK") == NULL) {
		const char *tmp = getenv("TMPDIR");
		char dir[256], path[512];
		snprintf(dir, sizeof dir, "%s/sdbatch-prompt-XXXXXX", tmp && *tmp ? tmp : "/tmp");
		if (mkdtemp(dir) != NULL) {
			snprintf(path, sizeof path, "%s/a1111.safetensors", dir);
			if (write_a1111_model(base, ln, path) == 0)
				run_cases(path);
			unlink(path);
			rmdir(dir);
		}
	}
	st_close(base);
	st_close(ln);
	json_decref(manifest);
	return tap_done();
}
