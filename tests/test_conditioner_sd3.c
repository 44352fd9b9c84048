/* test_conditioner_sd3.c: SD3's conditioner against sd3-tiny's goldens:
 * its three tokenizers (CLIP-L, bigG, T5's SentencePiece: the tokenizer
 * case), every text encoder's intermediates, the joint context and the
 * pooled vector (text_encoders), encode_prompt with negative prompts and
 * without T5 (noT5), from the single file and from the diffusers folder;
 * T5 absent from the weights, switched off and on; the errors a bad
 * combination gives. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/ops.h"
#include "model/spm.h"
#include "model/t5.h"
#include "model/tokenizer.h"
#include "model/weights.h"
#include "sample/conditioner.h"
#include "testutil.h"

#define ATOL 1e-4	/* manifest: text_encoders, encode_prompt */
#define RTOL 1e-4
#define CLIP_LEN 77
#define T5_LEN 256
#define D3 48		/* the joint context's width (T5's d_model) */
#define POOLED 32	/* 12 (CLIP-L, unprojected) + 20 (bigG, projected) */

#define PREFIX_CLIP_L "text_encoders.clip_l.transformer."
#define PREFIX_CLIP_G "text_encoders.clip_g.transformer."

/* SD3's description as the tiny model needs it (heads from the manifest:
 * CLIP-L 3, bigG 5, T5 6; SD3 Medium has 12, 20 and 64). */
static void
sd3_desc(struct model_desc *d)
{
	memset(d, 0, sizeof *d);
	d->ntext = 3;
	d->context_width = D3;
	d->zeros_for_no_negative = 0;

	d->text[0].kind = TEXT_CLIP;
	snprintf(d->text[0].prefix, sizeof d->text[0].prefix, PREFIX_CLIP_L "text_model.");
	d->text[0].clip = (struct clip_config){ .heads = 3, .act = CLIP_QUICK_GELU,
	    .context_skip = 1, .no_final_norm = 1, .pooled_identity = 1 };
	snprintf(d->text[0].pad_token, sizeof d->text[0].pad_token, "<|endoftext|>");
	d->text[0].pooled = 1;
	snprintf(d->text[0].tokenizer_sub, sizeof d->text[0].tokenizer_sub, "tokenizer");

	d->text[1].kind = TEXT_CLIP;
	snprintf(d->text[1].prefix, sizeof d->text[1].prefix, PREFIX_CLIP_G "text_model.");
	d->text[1].clip = (struct clip_config){ .heads = 5, .act = CLIP_GELU,
	    .context_skip = 1, .no_final_norm = 1 };
	snprintf(d->text[1].pad_token, sizeof d->text[1].pad_token, "!");
	d->text[1].pooled = 1;
	snprintf(d->text[1].tokenizer_sub, sizeof d->text[1].tokenizer_sub, "tokenizer_2");

	d->text[2].kind = TEXT_T5;
	snprintf(d->text[2].prefix, sizeof d->text[2].prefix, T5_SD3_PREFIX);
	d->text[2].t5.heads = 6;
	d->text[2].max_len = T5_LEN;
	snprintf(d->text[2].tokenizer_sub, sizeof d->text[2].tokenizer_sub, "tokenizer_3");
}

/* A model's weights: the single file, or the diffusers folder's three text
 * encoders under the single file's prefixes (the names after them match). */
struct model {
	const char *label;
	struct st_file *f[3];
	struct sd_weights *w;
	char tokdir[3][4096];
	int own[3];
};

static int
open_single(struct model *m, const char *file)
{
	struct sd_error err = {0};

	memset(m, 0, sizeof *m);
	m->label = "single file";
	m->f[0] = st_open(shared_path(file), &err);
	if (!tap_ok(m->f[0] != NULL, "open %s %s", file, err.message))
		return -1;
	m->w = weights_new();
	weights_add_file(m->w, m->f[0], NULL);
	/* the shared CLIP vocabulary, padded as the description says */
	snprintf(m->tokdir[0], sizeof m->tokdir[0], "%s", shared_path("data/clip-tokenizer"));
	snprintf(m->tokdir[1], sizeof m->tokdir[1], "%s", shared_path("data/clip-tokenizer"));
	snprintf(m->tokdir[2], sizeof m->tokdir[2], "%s",
	    shared_path("testdata/sd3-tiny/diffusers/tokenizer_3"));
	return 0;
}

static int
open_folder(struct model *m)
{
	static const char *const sub[3] = { "text_encoder", "text_encoder_2", "text_encoder_3" };
	static const char *const prefix[3] = { PREFIX_CLIP_L, PREFIX_CLIP_G, T5_SD3_PREFIX };
	static const char *const tok[3] = { "tokenizer", "tokenizer_2", "tokenizer_3" };
	struct sd_error err = {0};
	char path[4096], name[512];

	memset(m, 0, sizeof *m);
	m->label = "diffusers folder";
	m->w = weights_new();
	for (int i = 0; i < 3; i++) {
		snprintf(path, sizeof path, "testdata/sd3-tiny/diffusers/%s/model.safetensors", sub[i]);
		m->f[i] = st_open(shared_path(path), &err);
		if (!tap_ok(m->f[i] != NULL, "open %s %s", path, err.message))
			return -1;
		for (int k = 0; k < st_count(m->f[i]); k++) {
			const struct sd_tensor *t = st_tensor(m->f[i], k);
			snprintf(name, sizeof name, "%s%s", prefix[i], t->name);
			weights_put(m->w, name, t);
		}
		snprintf(path, sizeof path, "testdata/sd3-tiny/diffusers/%s", tok[i]);
		snprintf(m->tokdir[i], sizeof m->tokdir[i], "%s", shared_path(path));
		m->own[i] = 1;	/* the folder's own tokenizers: their pad tokens stand */
	}
	return 0;
}

static void
close_model(struct model *m)
{
	weights_free(m->w);
	for (int i = 0; i < 3; i++)
		if (m->f[i] != NULL)
			st_close(m->f[i]);
}

static struct conditioner *
load(struct model *m, const struct model_desc *d, struct sd_error *err)
{
	const char *dirs[3] = { m->tokdir[0], m->tokdir[1], m->tokdir[2] };

	return conditioner_load(d, m->w, dirs, m->own, err);
}

static void
compare(struct st_file *g, const char *name, const char *label, const float *got, size_t n)
{
	size_t nw;
	float *want = golden_f32(g, name, &nw);
	char what[256];

	snprintf(what, sizeof what, "%s: %s", label, name);
	if (got == NULL || nw != n)
		tap_ok(0, "%s: %zu values, want %zu", what, got ? n : 0, nw);
	else
		check_close(what, got, want, n, ATOL, RTOL);
	free(want);
}

/* The prompts of a case's params. */
static json_t *
case_params(struct st_file *g)
{
	const char *meta = g ? st_metadata(g, "params") : NULL;

	return meta ? json_loads(meta, 0, NULL) : NULL;
}

/* ---- tokenizer ---- */

static int
ids_equal(const char *what, int i, const int32_t *got, const float *want, int len)
{
	for (int k = 0; k < len; k++)
		if (got[k] != (int32_t)want[k]) {
			tap_diag("%s, prompt %d, position %d: id %d, want %d", what, i, k, (int)got[k],
			    (int)want[k]);
			return 0;
		}
	return 1;
}

static void
test_tokenizer(struct model *m, struct conditioner *c)
{
	struct st_file *g = golden_open_in("sd3-tiny", "tokenizer");
	json_t *params = case_params(g), *prompts = json_object_get(params, "prompts");
	size_t np = json_array_size(prompts), n1, n2, n3, nu, nu3;
	float *want1, *want2, *want3, *untr, *untr3;
	struct sd_error err = {0};
	int bad[3] = { 0, 0, 0 }, badlen[2] = { 0, 0 };

	if (!tap_ok(g != NULL && np == 16, "%s: tokenizer case, 16 prompts", m->label)) {
		json_decref(params);
		if (g != NULL)
			st_close(g);
		return;
	}
	want1 = golden_f32(g, "input_ids", &n1);
	want2 = golden_f32(g, "input_ids_2", &n2);
	want3 = golden_f32(g, "input_ids_3", &n3);
	untr = golden_f32(g, "n_tokens_untruncated", &nu);
	untr3 = golden_f32(g, "n_tokens_untruncated_3", &nu3);
	if (tap_ok(n1 == np * CLIP_LEN && n2 == n1 && n3 == np * T5_LEN && nu == np && nu3 == np,
	    "%s: tokenizer golden shapes", m->label)) {
		for (size_t i = 0; i < np; i++) {
			const char *p = json_string_value(json_array_get(prompts, i));
			int32_t ids[T5_LEN];
			int full = 0, len;
			if (tokenizer_encode(c->tokenizer[0], p, ids, &full, &err) < 0 ||
			    !ids_equal("CLIP-L", (int)i, ids, want1 + i * CLIP_LEN, CLIP_LEN))
				bad[0]++;
			if (full != (int)untr[i])
				badlen[0]++;
			if (tokenizer_encode(c->tokenizer[1], p, ids, NULL, &err) < 0 ||
			    !ids_equal("bigG", (int)i, ids, want2 + i * CLIP_LEN, CLIP_LEN))
				bad[1]++;
			len = spm_t5_encode(c->spm[2], p, ids, T5_LEN, &err);
			if (len < 0 || !ids_equal("T5", (int)i, ids, want3 + i * T5_LEN, T5_LEN))
				bad[2]++;
			if (len != (int)untr3[i])
				badlen[1]++;
		}
		tap_ok(bad[0] == 0, "%s: tokenizer (CLIP-L) ids of 16 prompts exact (%d wrong) %s",
		    m->label, bad[0], err.message);
		tap_ok(badlen[0] == 0, "%s: CLIP lengths before truncation (%d wrong)", m->label,
		    badlen[0]);
		tap_ok(bad[1] == 0, "%s: tokenizer_2 (bigG, pads with '!' = 0) ids exact (%d wrong)",
		    m->label, bad[1]);
		tap_ok(bad[2] == 0, "%s: tokenizer_3 (T5, spiece.model) ids exact, 256 each (%d wrong)",
		    m->label, bad[2]);
		tap_ok(badlen[1] == 0, "%s: T5 lengths before truncation (%d wrong)", m->label,
		    badlen[1]);
	}
	free(want1);
	free(want2);
	free(want3);
	free(untr);
	free(untr3);
	json_decref(params);
	st_close(g);
}

/* ---- text_encoders ---- */

/* Intermediates seen by the debug hooks (host copies). */
#define NCAP 8
struct capture {
	struct sd_ctx *ctx;
	const char *prefix;	/* "te1.", "te2.", "te3." */
	char name[NCAP][32];
	float *data[NCAP];
	size_t n[NCAP];
	int count;
};

static void
capture_fn(void *user, const char *name, const float *data, size_t n)
{
	struct capture *cap = user;
	int i;

	for (i = 0; i < cap->count; i++)
		if (strcmp(cap->name[i] + strlen(cap->prefix), name) == 0)
			break;
	if (i == cap->count) {
		if (cap->count == NCAP)
			return;
		snprintf(cap->name[i], sizeof cap->name[i], "%s%s", cap->prefix, name);
		cap->count++;
	}
	free(cap->data[i]);
	cap->data[i] = malloc(n * sizeof(float));
	cap->n[i] = n;
	sd_download(cap->ctx, cap->data[i], data, n);
}

static const float *
captured(const struct capture *cap, const char *name, size_t *n)
{
	for (int i = 0; i < cap->count; i++)
		if (strcmp(cap->name[i], name) == 0) {
			*n = cap->n[i];
			return cap->data[i];
		}
	*n = 0;
	return NULL;
}

/* The CLIP encoder e's last_hidden_state (every layer, final LayerNorm) and
 * its state at the eos, with a model of its own (the conditioner's stops at
 * the penultimate layer, without the final LayerNorm). */
static void
check_last_hidden(struct model *m, const struct model_desc *d, int e, struct sd_ctx *ctx,
    struct st_file *g, const int32_t *ids, int b)
{
	struct clip_config cfg = d->text[e].clip;
	struct sd_error err = {0};
	struct clip_text *full;
	char name[64], label[128];

	cfg.context_skip = 0;
	cfg.no_final_norm = 0;
	snprintf(label, sizeof label, "%s, CLIP %d on its own", m->label, e + 1);
	full = clip_text_load(m->w, d->text[e].prefix, &cfg, &err);
	if (!tap_ok(full != NULL, "%s: loads %s", label, err.message))
		return;
	size_t mark = sd_mark(ctx), n = (size_t)b * CLIP_LEN * full->width;
	float *out = sd_alloc(ctx, n), *host = malloc(n * sizeof *host);
	float *pool = malloc((size_t)b * full->width * sizeof *pool);
	if (tap_ok(clip_text_forward(full, ctx, ids, b, 1, out, &err) == 0, "%s: forward %s", label,
	    err.message)) {
		sd_download(ctx, host, out, n);
		snprintf(name, sizeof name, "te%d.last_hidden_state", e + 1);
		compare(g, name, label, host, n);
		/* pooled (before the projection): at the first largest id */
		for (int i = 0; i < b; i++) {
			int at = 0;
			for (int k = 1; k < CLIP_LEN; k++)
				if (ids[i * CLIP_LEN + k] > ids[i * CLIP_LEN + at])
					at = k;
			memcpy(pool + (size_t)i * full->width,
			    host + ((size_t)i * CLIP_LEN + at) * full->width, full->width * sizeof *pool);
		}
		snprintf(name, sizeof name, "te%d.pooled", e + 1);
		compare(g, name, label, pool, (size_t)b * full->width);
	}
	free(host);
	free(pool);
	sd_release(ctx, mark);
	clip_text_free(full);
}

static void
test_text_encoders(struct model *m, const struct model_desc *d, struct conditioner *c,
    struct sd_ctx *ctx)
{
	static const char *const prefix[3] = { "te1.", "te2.", "te3." };
	static const char *const clip_names[] = { "embeddings", "layer_1", "layer_2", "layer_3" };
	struct st_file *g = golden_open_in("sd3-tiny", "text_encoders");
	json_t *params = case_params(g), *prompts = json_object_get(params, "prompts");
	struct capture cap[3];
	struct sd_error err = {0};
	const char *p[3];
	int32_t ids[3 * T5_LEN];
	float *ctx_d, *host, pooled[3 * POOLED], part[3 * 20];
	size_t n;
	char name[64];

	if (!tap_ok(g != NULL && json_array_size(prompts) == 3, "%s: text_encoders, 3 prompts",
	    m->label)) {
		json_decref(params);
		if (g != NULL)
			st_close(g);
		return;
	}
	for (int i = 0; i < 3; i++)
		p[i] = json_string_value(json_array_get(prompts, i));
	memset(cap, 0, sizeof cap);
	for (int e = 0; e < 3; e++) {
		cap[e].ctx = ctx;
		cap[e].prefix = prefix[e];
	}
	c->encoder[0]->debug = c->encoder[1]->debug = capture_fn;
	c->encoder[0]->debug_user = &cap[0];
	c->encoder[1]->debug_user = &cap[1];
	c->t5[2]->debug = capture_fn;
	c->t5[2]->debug_user = &cap[2];

	n = (size_t)3 * (CLIP_LEN + T5_LEN) * D3;
	size_t mark = sd_mark(ctx);
	ctx_d = sd_alloc(ctx, n);
	host = malloc(n * sizeof *host);
	tap_ok(c->ctx_len == CLIP_LEN + T5_LEN && c->width == D3 && c->pooled_dim == POOLED,
	    "%s: context [333, 48], pooled 32 (got [%d, %d], %d)", m->label, c->ctx_len, c->width,
	    c->pooled_dim);
	if (tap_ok(conditioner_encode(c, ctx, p, 3, 1, ctx_d, pooled, &err) == 0,
	    "%s: encode 3 prompts %s", m->label, err.message)) {
		sd_download(ctx, host, ctx_d, n);
		/* every intermediate of the three encoders */
		for (int e = 0; e < 2; e++)
			for (int k = 0; k <= c->encoder[e]->layers; k++) {
				const float *got;
				size_t ng;
				snprintf(name, sizeof name, "%s%s", prefix[e], clip_names[k]);
				got = captured(&cap[e], name, &ng);
				compare(g, name, m->label, got, ng);
			}
		for (int k = 0; k < 3; k++) {
			static const char *const t5_names[] = { "te3.embeddings", "te3.layer_1",
			    "te3.layer_2" };
			const float *got;
			size_t ng;
			got = captured(&cap[2], t5_names[k], &ng);
			compare(g, t5_names[k], m->label, got, ng);
		}
		{
			const float *got;
			size_t ng;
			got = captured(&cap[2], "te3.final_layer_norm", &ng);
			compare(g, "te3.last_hidden_state", m->label, got, ng);
		}
		/* the pooled vectors: CLIP-L's unprojected, bigG's projected */
		for (int i = 0; i < 3; i++)
			memcpy(part + i * 12, pooled + i * POOLED, 12 * sizeof *part);
		compare(g, "te1.text_embeds", m->label, part, 3 * 12);
		for (int i = 0; i < 3; i++)
			memcpy(part + i * 20, pooled + i * POOLED + 12, 20 * sizeof *part);
		compare(g, "te2.text_embeds", m->label, part, 3 * 20);
		compare(g, "prompt_embeds", m->label, host, n);
		compare(g, "pooled_prompt_embeds", m->label, pooled, 3 * POOLED);
	}
	c->encoder[0]->debug = c->encoder[1]->debug = NULL;
	c->t5[2]->debug = NULL;
	sd_release(ctx, mark);

	/* the ids, and each CLIP's final layer on its own */
	for (int e = 0; e < 2; e++) {
		size_t nw;
		float *want = golden_f32(g, e == 0 ? "input_ids" : "input_ids_2", &nw);
		int bad = nw != 3 * CLIP_LEN;
		for (int i = 0; i < 3 && !bad; i++)
			if (tokenizer_encode(c->tokenizer[e], p[i], ids + i * CLIP_LEN, NULL, &err) < 0 ||
			    !ids_equal(prefix[e], i, ids + i * CLIP_LEN, want + i * CLIP_LEN, CLIP_LEN))
				bad = 1;
		tap_ok(!bad, "%s: text_encoders %s exact", m->label, e == 0 ? "input_ids" : "input_ids_2");
		free(want);
		if (!bad)
			check_last_hidden(m, d, e, ctx, g, ids, 3);
	}
	{
		size_t nw;
		float *want = golden_f32(g, "input_ids_3", &nw);
		int bad = nw != 3 * T5_LEN;
		for (int i = 0; i < 3 && !bad; i++)
			if (spm_t5_encode(c->spm[2], p[i], ids + i * T5_LEN, T5_LEN, &err) < 0 ||
			    !ids_equal("T5", i, ids + i * T5_LEN, want + i * T5_LEN, T5_LEN))
				bad = 1;
		tap_ok(!bad, "%s: text_encoders input_ids_3 exact", m->label);
		free(want);
	}
	for (int e = 0; e < 3; e++)
		for (int i = 0; i < cap[e].count; i++)
			free(cap[e].data[i]);
	free(host);
	json_decref(params);
	st_close(g);
}

/* ---- encode_prompt ---- */

/* Encode [negative, prompt] and compare with the golden's <pre>.*. */
static void
check_pair(struct conditioner *c, struct sd_ctx *ctx, struct st_file *g, const char *label,
    const char *pre, const char *neg, const char *pos, int with_pooled_neg)
{
	const char *p[2] = { neg, pos };
	struct sd_error err = {0};
	size_t per = (size_t)c->ctx_len * c->width, mark = sd_mark(ctx);
	float *ctx_d = sd_alloc(ctx, 2 * per), *host = malloc(2 * per * sizeof *host);
	float pooled[2 * POOLED];
	char name[96], what[160];

	snprintf(what, sizeof what, "%s: %s (negative %s%s%s)", label, pre, neg ? "\"" : "",
	    neg ? neg : "None, encoded as \"\"", neg ? "\"" : "");
	if (tap_ok(conditioner_encode(c, ctx, p, 2, 1, ctx_d, pooled, &err) == 0, "%s: encode %s",
	    what, err.message)) {
		sd_download(ctx, host, ctx_d, 2 * per);
		snprintf(name, sizeof name, "%s.negative_prompt_embeds", pre);
		compare(g, name, what, host, per);
		if (with_pooled_neg) {
			snprintf(name, sizeof name, "%s.negative_pooled_prompt_embeds", pre);
			compare(g, name, what, pooled, POOLED);
		}
		snprintf(name, sizeof name, "%s.prompt_embeds", pre);
		compare(g, name, what, host + per, per);
		snprintf(name, sizeof name, "%s.pooled_prompt_embeds", pre);
		compare(g, name, what, pooled + POOLED, POOLED);
	}
	free(host);
	sd_release(ctx, mark);
}

static void
test_encode_prompt(struct model *m, struct conditioner *c, struct sd_ctx *ctx)
{
	struct st_file *g = golden_open_in("sd3-tiny", "encode_prompt");
	json_t *params = case_params(g), *cases = json_object_get(params, "cases");
	const char *not5 = json_string_value(json_object_get(params, "noT5_prompt"));
	char pre[8];
	int on;

	if (!tap_ok(g != NULL && json_array_size(cases) == 3 && not5 != NULL,
	    "%s: encode_prompt, 3 cases and noT5", m->label)) {
		json_decref(params);
		if (g != NULL)
			st_close(g);
		return;
	}
	for (int k = 0; k < 3; k++) {
		json_t *cs = json_array_get(cases, (size_t)k);
		snprintf(pre, sizeof pre, "c%d", k);
		check_pair(c, ctx, g, m->label, pre,
		    json_string_value(json_object_get(cs, "negative_prompt")),
		    json_string_value(json_object_get(cs, "prompt")), 1);
	}
	/* a job's "t5: false": zeros [77, D3] in place of T5's tokens */
	on = conditioner_set_t5(c, 0);
	tap_ok(on == 0 && c->ctx_len == 2 * CLIP_LEN, "%s: T5 off: 154 tokens (%d)", m->label,
	    c->ctx_len);
	check_pair(c, ctx, g, m->label, "noT5", NULL, not5, 0);
	on = conditioner_set_t5(c, 1);
	tap_ok(on == 1 && c->ctx_len == CLIP_LEN + T5_LEN, "%s: T5 on again: 333 tokens (%d)",
	    m->label, c->ctx_len);
	check_pair(c, ctx, g, m->label, "c0", NULL,
	    json_string_value(json_object_get(json_array_get(cases, 0), "prompt")), 1);
	json_decref(params);
	st_close(g);
}

/* ---- without T5, and errors ---- */

static void
test_without_t5(const struct model_desc *d, struct sd_ctx *ctx)
{
	struct st_file *f = st_open(shared_path("testdata/sd3-tiny/model.safetensors"), NULL);
	struct st_file *g = golden_open_in("sd3-tiny", "encode_prompt");
	json_t *params = case_params(g);
	const char *not5 = json_string_value(json_object_get(params, "noT5_prompt"));
	struct sd_error err = {0};
	struct model m = { .label = "single file without T5" };
	struct conditioner *c;

	if (!tap_ok(f != NULL && g != NULL && not5 != NULL, "model and encode_prompt golden"))
		goto done;
	/* the file without text_encoders.t5xxl.* (SD3 files come both ways) */
	m.w = weights_subset(f, "", T5_SD3_PREFIX, NULL);
	snprintf(m.tokdir[0], sizeof m.tokdir[0], "%s", shared_path("testdata/sd3-tiny/diffusers/tokenizer"));
	snprintf(m.tokdir[1], sizeof m.tokdir[1], "%s", shared_path("testdata/sd3-tiny/diffusers/tokenizer_2"));
	snprintf(m.tokdir[2], sizeof m.tokdir[2], "%s", shared_path("testdata/sd3-tiny/diffusers/tokenizer_3"));
	m.own[0] = m.own[1] = 1;
	c = load(&m, d, &err);
	if (tap_ok(c != NULL && !c->has_t5 && !c->t5_weights && c->ctx_len == 2 * CLIP_LEN &&
	    c->width == D3,
	    "no T5 weights: T5 absent, 154 tokens of 48 %s", err.message)) {
		tap_ok(conditioner_set_t5(c, 1) == 0 && c->ctx_len == 2 * CLIP_LEN,
		    "T5 cannot be switched on when absent");
		check_pair(c, ctx, g, m.label, "noT5", NULL, not5, 0);
	}
	conditioner_free(c);
	weights_free(m.w);

	/* T5 weights, but no tokenizer folder given: absent too */
	{
		const char *dirs[3] = { m.tokdir[0], m.tokdir[1], NULL };
		struct sd_weights *w = weights_new();
		weights_add_file(w, f, NULL);
		c = conditioner_load(d, w, dirs, m.own, &err);
		tap_ok(c != NULL && !c->has_t5 && c->t5_weights && c->ctx_len == 2 * CLIP_LEN,
		    "T5 weights without a tokenizer folder: T5 absent, its weights seen %s", err.message);
		conditioner_free(c);

		/* a folder without spiece.model: an error naming it */
		dirs[2] = m.tokdir[0];
		memset(&err, 0, sizeof err);
		c = conditioner_load(d, w, dirs, m.own, &err);
		tap_ok(c == NULL && strstr(err.message, "spiece.model") != NULL,
		    "T5 tokenizer folder without spiece.model: \"%s\"", err.message);
		conditioner_free(c);

		/* a context width that is not T5's */
		struct model_desc bad = *d;
		bad.context_width = 40;
		dirs[2] = m.tokdir[2];
		memset(&err, 0, sizeof err);
		c = conditioner_load(&bad, w, dirs, m.own, &err);
		tap_ok(c == NULL && strstr(err.message, "T5") != NULL && strstr(err.message, "48"),
		    "context width 40 against T5's 48: \"%s\"", err.message);
		conditioner_free(c);
		bad.context_width = 24;	/* narrower than CLIP-L + bigG = 32 */
		memset(&err, 0, sizeof err);
		c = conditioner_load(&bad, w, dirs, m.own, &err);
		tap_ok(c == NULL && strstr(err.message, "32") != NULL,
		    "context width 24 under the CLIPs' 32: \"%s\"", err.message);
		conditioner_free(c);

		/* A1111's syntax: a clear error, not a wrong context */
		c = conditioner_load(d, w, dirs, m.own, &err);
		if (c != NULL) {
			const char *p[1] = { "a (cat:1.2)" };
			memset(&err, 0, sizeof err);
			tap_ok(conditioner_a1111_chunks(c, p, 1, &err) < 0 &&
			    strstr(err.message, "a1111") != NULL,
			    "prompt_syntax a1111 on SD3: \"%s\"", err.message);
			/* a prompt that is not UTF-8: a clear error */
			{
				const char *bad_p[1] = { "a \xff\xfe cat" };
				size_t mk = sd_mark(ctx);
				float *o = sd_alloc(ctx, (size_t)c->ctx_len * c->width), pl[POOLED];
				memset(&err, 0, sizeof err);
				tap_ok(conditioner_encode(c, ctx, bad_p, 1, 1, o, pl, &err) < 0 &&
				    err.code == SD_EDATA && strstr(err.message, "UTF-8") != NULL,
				    "a prompt that is not UTF-8: \"%s\"", err.message);
				sd_release(ctx, mk);
			}
			/* a very long prompt: CLIP reads 77 tokens, T5 256, nothing else moves */
			{
				size_t len = 60000, mk = sd_mark(ctx);
				char *longp = malloc(len + 1);
				const char *lp[1] = { longp };
				size_t per = (size_t)c->ctx_len * c->width;
				float *o = sd_alloc(ctx, per), pl[POOLED], *h = malloc(per * sizeof *h);
				int finite = 1;
				for (size_t k = 0; k < len; k++)
					longp[k] = "a lighthouse on a cliff, "[k % 25];
				longp[len] = '\0';
				memset(&err, 0, sizeof err);
				if (tap_ok(conditioner_encode(c, ctx, lp, 1, 1, o, pl, &err) == 0,
				    "a 60000-byte prompt encodes %s", err.message)) {
					sd_download(ctx, h, o, per);
					for (size_t k = 0; k < per; k++)
						if (!(h[k] == h[k]) || h[k] > 1e30f || h[k] < -1e30f)
							finite = 0;
					tap_ok(finite && c->ctx_len == CLIP_LEN + T5_LEN,
					    "its context is [333, 48] of finite values");
				}
				free(h);
				free(longp);
				sd_release(ctx, mk);
			}
			/* clip_skip beyond CLIP-L's 2 layers (1 before the penultimate) */
			size_t mark = sd_mark(ctx);
			float *out = sd_alloc(ctx, (size_t)c->ctx_len * c->width), pooled[POOLED];
			memset(&err, 0, sizeof err);
			tap_ok(conditioner_encode(c, ctx, p, 1, 2, out, pooled, &err) < 0 &&
			    strstr(err.message, "clip_skip") != NULL,
			    "clip_skip 2 on a 2-layer CLIP-L: \"%s\"", err.message);
			sd_release(ctx, mark);
		} else {
			tap_ok(0, "reload: %s", err.message);
		}
		conditioner_free(c);
		weights_free(w);
	}
done:
	json_decref(params);
	if (g != NULL)
		st_close(g);
	if (f != NULL)
		st_close(f);
}

/* clip_skip 2 (A1111's: one layer before the model's own) = diffusers'
 * clip_skip=1, hidden_states[-3]: bigG (3 layers) gives its first layer's
 * output; CLIP-L (2 layers) has none to spare with its penultimate layer,
 * so here it is told to use its last one (context_skip 0), and skip 2 then
 * gives its first layer's output too.  The pooled vectors do not move. */
static void
test_clip_skip(struct model *m, const struct model_desc *d, struct sd_ctx *ctx)
{
	struct st_file *g = golden_open_in("sd3-tiny", "text_encoders");
	json_t *params = case_params(g), *prompts = json_object_get(params, "prompts");
	struct model_desc d2 = *d;
	struct sd_error err = {0};
	struct conditioner *c = NULL;
	const char *p[1];

	if (!tap_ok(g != NULL && json_array_size(prompts) == 3, "clip_skip: golden"))
		goto done;
	p[0] = json_string_value(json_array_get(prompts, 0));
	d2.text[0].clip.context_skip = 0;
	c = load(m, &d2, &err);
	if (tap_ok(c != NULL, "clip_skip: loads %s", err.message)) {
		size_t mark = sd_mark(ctx), per = (size_t)c->ctx_len * c->width, n1, n2, np;
		float *out = sd_alloc(ctx, per), *host = malloc(per * sizeof *host), pooled[POOLED];
		float *want1 = golden_f32(g, "te1.layer_1", &n1), *want2 = golden_f32(g, "te2.layer_1", &n2);
		float *wantp = golden_f32(g, "pooled_prompt_embeds", &np);
		float *got = malloc((size_t)CLIP_LEN * 20 * sizeof *got);
		if (tap_ok(conditioner_encode(c, ctx, p, 1, 2, out, pooled, &err) == 0,
		    "clip_skip 2: encode %s", err.message)) {
			sd_download(ctx, host, out, per);
			for (int t = 0; t < CLIP_LEN; t++)
				memcpy(got + t * 12, host + (size_t)t * D3, 12 * sizeof *got);
			check_close("clip_skip 2: CLIP-L's part is its layer_1", got, want1,
			    (size_t)CLIP_LEN * 12, ATOL, RTOL);
			for (int t = 0; t < CLIP_LEN; t++)
				memcpy(got + t * 20, host + (size_t)t * D3 + 12, 20 * sizeof *got);
			check_close("clip_skip 2: bigG's part is its layer_1 (diffusers' hidden_states[-3])",
			    got, want2, (size_t)CLIP_LEN * 20, ATOL, RTOL);
			check_close("clip_skip 2: the pooled vector is unchanged", pooled, wantp, POOLED,
			    ATOL, RTOL);
		}
		free(want1);
		free(want2);
		free(wantp);
		free(got);
		free(host);
		sd_release(ctx, mark);
	}
done:
	conditioner_free(c);
	json_decref(params);
	if (g != NULL)
		st_close(g);
}

/* F16 weights (model-f16.safetensors): the encoders read them in place; the
 * context and pooled vector must equal those of the same values widened to
 * F32 (the goldens are of the F32 model, so this is the F16 check). */
static void
test_f16(const struct model_desc *d, struct sd_ctx *ctx)
{
	struct model m16, m32 = { .label = "F16 widened" };
	struct sd_tensor *wide = NULL;
	struct conditioner *c16 = NULL, *c32 = NULL;
	struct sd_error err = {0};
	int count = 0;

	if (open_single(&m16, "testdata/sd3-tiny/model-f16.safetensors") < 0)
		goto done;
	m16.label = "F16 single file";
	m32.w = weights_new();
	count = st_count(m16.f[0]);
	wide = calloc((size_t)count, sizeof *wide);
	for (int i = 0; i < count && wide != NULL; i++) {
		const struct sd_tensor *t = st_tensor(m16.f[0], i);
		if (strncmp(t->name, "text_encoders.", strlen("text_encoders.")) != 0)
			continue;
		wide[i] = *t;
		wide[i].dtype = SD_F32;
		wide[i].data = malloc((size_t)sd_tensor_numel(t) * sizeof(float));
		sd_convert_to_f32(wide[i].data, t->data, t->dtype, (size_t)sd_tensor_numel(t));
		weights_put(m32.w, t->name, &wide[i]);
	}
	memcpy(m32.tokdir, m16.tokdir, sizeof m32.tokdir);
	c16 = load(&m16, d, &err);
	if (c16 != NULL)
		c32 = load(&m32, d, &err);
	if (tap_ok(c16 != NULL && c32 != NULL && c16->has_t5 &&
	    c16->encoder[0]->token_embedding->dtype == SD_F16 && c16->t5[2]->embedding->dtype == SD_F16,
	    "F16 single file: the three encoders load on F16 weights %s", err.message)) {
		const char *p[2] = { NULL, "a photo of an astronaut riding a horse on mars" };
		size_t n = (size_t)2 * c16->ctx_len * c16->width, mark = sd_mark(ctx);
		float *out = sd_alloc(ctx, n), *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
		float pa[2 * POOLED], pb[2 * POOLED];
		if (tap_ok(conditioner_encode(c16, ctx, p, 2, 1, out, pa, &err) == 0,
		    "F16: encode %s", err.message)) {
			sd_download(ctx, a, out, n);
			if (tap_ok(conditioner_encode(c32, ctx, p, 2, 1, out, pb, &err) == 0,
			    "F16 widened: encode %s", err.message)) {
				sd_download(ctx, b, out, n);
				check_close("F16 weights: context = on the same weights widened", a, b, n,
				    ATOL, RTOL);
				check_close("F16 weights: pooled = on the same weights widened", pa, pb,
				    2 * POOLED, ATOL, RTOL);
			}
		}
		free(a);
		free(b);
		sd_release(ctx, mark);
	}
done:
	conditioner_free(c16);
	conditioner_free(c32);
	weights_free(m32.w);
	close_model(&m16);
	for (int i = 0; i < count && wide != NULL; i++)
		free(wide[i].data);
	free(wide);
}

static void
run_model(struct model *m, const struct model_desc *d, struct sd_ctx *ctx)
{
	struct sd_error err = {0};
	struct conditioner *c = load(m, d, &err);

	if (!tap_ok(c != NULL && c->ntext == 3 && c->has_t5 && c->t5_on && c->t5_index == 2 &&
	    c->encoder[0]->heads == 3 && c->encoder[1]->heads == 5 && c->t5[2]->heads == 6,
	    "%s: SD3 conditioner: CLIP-L (3 heads), bigG (5), T5 (6) %s", m->label,
	    c ? "" : err.message)) {
		conditioner_free(c);
		return;
	}
	test_tokenizer(m, c);
	test_text_encoders(m, d, c, ctx);
	test_encode_prompt(m, c, ctx);
	conditioner_free(c);
}

int
main(void)
{
	struct model_desc d;
	struct model m;
	struct sd_ctx *ctx;

	if (shared_dir() == NULL)
		return tap_skip_all("../shared is absent: no test model");
	ctx = test_ctx_new();
	sd3_desc(&d);
	if (open_single(&m, "testdata/sd3-tiny/model.safetensors") == 0) {
		run_model(&m, &d, ctx);
		test_clip_skip(&m, &d, ctx);
	}
	close_model(&m);
	if (open_folder(&m) == 0)
		run_model(&m, &d, ctx);
	close_model(&m);
	test_without_t5(&d, ctx);
	test_f16(&d, ctx);
	sd_ctx_free(ctx);
	return tap_done();
}
