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
		if (conditioner_encode_a1111(c, ctx, prompts, 1, ch.n, 1, dctx, &err) < 0) {
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
