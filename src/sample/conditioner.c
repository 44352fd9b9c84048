/* conditioner.c: the text side of the model description. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cpu.h"
#include "model/clip.h"
#include "model/spm.h"
#include "model/t5.h"
#include "model/tokenizer.h"
#include "sample/conditioner.h"
#include "sample/prompt.h"

/* The T5 weights are there: any of the tensors t5_load reads first. */
static int
t5_present(const struct sd_weights *w, const char *prefix)
{
	static const char *const names[] = { "shared.weight", "encoder.embed_tokens.weight",
	    "encoder.final_layer_norm.weight" };
	char name[256];

	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		snprintf(name, sizeof name, "%s%s", prefix, names[i]);
		if (weights_get(w, name) != NULL)
			return 1;
	}
	return 0;
}

/* The T5 encoder i of d and its tokenizer from tokdir/spiece.model. */
static int
load_t5(struct conditioner *c, const struct model_desc *d, const struct sd_weights *w, int i,
    const char *tokdir, struct sd_error *err)
{
	const struct text_encoder_desc *t = &d->text[i];
	char path[4200];

	c->t5_index = i;
	c->t5_len = t->max_len > 0 ? t->max_len : SPM_T5_MAX_LEN;
	c->t5_weights = t5_present(w, t->prefix);
	if (tokdir == NULL || !c->t5_weights)
		return 0;	/* absent: zeros in its place */
	snprintf(path, sizeof path, "%s/spiece.model", tokdir);
	if ((c->spm[i] = spm_load(path, err)) == NULL) {
		sd_error_prefix(err, "the T5 tokenizer");
		return -1;
	}
	if ((c->t5[i] = t5_load(w, t->prefix, &t->t5, err)) == NULL)
		return -1;
	if (spm_size(c->spm[i]) + SPM_T5_EXTRA_IDS > c->t5[i]->vocab) {
		sd_fail(err, SD_EDATA, "the tokenizer %s has ids up to %d but the T5 encoder knows %d "
		    "tokens", path, spm_size(c->spm[i]) + SPM_T5_EXTRA_IDS - 1, c->t5[i]->vocab);
		return -1;
	}
	c->has_t5 = c->t5_on = 1;
	return 0;
}

/* ctx_len from the encoders and whether T5 is on. */
static void
set_ctx_len(struct conditioner *c)
{
	c->ctx_len = c->clip_len;
	if (c->t5_index >= 0)
		c->ctx_len += c->t5_on ? c->t5_len : c->clip_len;
}

struct conditioner *
conditioner_load(const struct model_desc *d, const struct sd_weights *w, const char *const *tokdir,
    const int *own, struct sd_error *err)
{
	struct conditioner *c = calloc(1, sizeof *c);
	int first = -1;

	if (c == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		return NULL;
	}
	c->ntext = d->ntext;
	c->t5_index = -1;
	c->zeros_for_null = d->zeros_for_no_negative;
	for (int i = 0; i < d->ntext; i++) {
		const struct text_encoder_desc *t = &d->text[i];
		if (t->kind == TEXT_T5) {
			if (c->t5_index >= 0) {
				sd_fail(err, SD_EINTERNAL, "the description has two T5 text encoders");
				goto fail;
			}
			if (load_t5(c, d, w, i, tokdir[i], err) < 0)
				goto fail;
			continue;
		}
		if ((c->tokenizer[i] = tokenizer_load(tokdir[i], err)) == NULL)
			goto fail;
		if (!own[i] && tokenizer_set_pad(c->tokenizer[i], t->pad_token, err) < 0)
			goto fail;
		if ((c->encoder[i] = clip_text_load(w, t->prefix, &t->clip, err)) == NULL)
			goto fail;
		if (tokenizer_max_id(c->tokenizer[i]) >= c->encoder[i]->vocab) {
			sd_fail(err, SD_EDATA, "the tokenizer in %s has ids up to %d but the text encoder "
			    "knows %d tokens", tokdir[i], (int)tokenizer_max_id(c->tokenizer[i]),
			    c->encoder[i]->vocab);
			goto fail;
		}
		if (first < 0) {
			first = i;
			c->clip_len = c->encoder[i]->max_len;
		} else if (c->encoder[i]->max_len != c->clip_len) {
			sd_fail(err, SD_EDATA, "the text encoders have %d and %d positions",
			    c->clip_len, c->encoder[i]->max_len);
			goto fail;
		}
		c->clip_width += c->encoder[i]->width;
		if (t->pooled) {
			if (c->encoder[i]->proj_dim == 0) {
				sd_fail(err, SD_EDATA, "text encoder \"%s\" has no text_projection for the "
				    "pooled embedding", t->prefix);
				goto fail;
			}
			c->pooled[i] = 1;
			c->pooled_dim += c->encoder[i]->proj_dim;
		}
	}
	if (first < 0) {
		sd_fail(err, SD_EINTERNAL, "the description has no CLIP text encoder");
		goto fail;
	}
	c->width = d->context_width > 0 ? d->context_width :
	    c->has_t5 ? c->t5[c->t5_index]->d_model : c->clip_width;
	if (c->clip_width > c->width) {
		sd_fail(err, SD_EDATA, "the text encoders are %d wide side by side, more than the "
		    "context's %d", c->clip_width, c->width);
		goto fail;
	}
	if (c->has_t5 && c->t5[c->t5_index]->d_model != c->width) {
		sd_fail(err, SD_EDATA, "the T5 text encoder is %d wide but the context is %d wide "
		    "(parts of different models?)", c->t5[c->t5_index]->d_model, c->width);
		goto fail;
	}
	set_ctx_len(c);
	return c;
fail:
	conditioner_free(c);
	return NULL;
}

void
conditioner_free(struct conditioner *c)
{
	if (c == NULL)
		return;
	for (int i = 0; i < c->ntext; i++) {
		clip_text_free(c->encoder[i]);
		tokenizer_free(c->tokenizer[i]);
		t5_free(c->t5[i]);
		spm_free(c->spm[i]);
	}
	free(c);
}

int
conditioner_set_t5(struct conditioner *c, int on)
{
	c->t5_on = on && c->has_t5;
	set_ctx_len(c);
	return c->t5_on;
}

/* dst [rows, wa + wb] = the rows of a [rows, wa] and b [rows, wb] side by
 * side; b NULL: zeros. */
static int
join_width(struct sd_ctx *ctx, float *dst, const float *a, int wa, const float *b, int wb,
    int rows, struct sd_error *err)
{
	float *zeros = NULL;

	if (b == NULL) {
		float *host = calloc((size_t)rows * wb, sizeof *host);
		if (host == NULL)
			return sd_fail(err, SD_EINTERNAL, "out of memory");
		zeros = sd_alloc(ctx, (size_t)rows * wb);
		sd_upload(ctx, zeros, host, (size_t)rows * wb);
		free(host);
		b = zeros;
	}
	op_concat(ctx, dst, a, wa, b, wb, rows, 1);
	return 0;
}

int
conditioner_encode(struct conditioner *c, struct sd_ctx *ctx, const char *const *prompts,
    int n, int clip_skip, float *context, float *pooled, struct sd_error *err)
{
	size_t mark = sd_mark(ctx), tokens = (size_t)n * c->clip_len;
	int tail = c->ctx_len - c->clip_len;	/* the T5 tokens (or zeros) after the CLIPs' */
	int32_t *ids = malloc((size_t)n * (c->ctx_len > c->clip_len ? c->ctx_len : c->clip_len) *
	    sizeof *ids);
	float *hpooled = NULL, *zeros = NULL, *acc = NULL, *clipctx;
	int rc = -1, accw = 0, off = 0, nclip = 0, last = -1;

	if (ids == NULL)
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	if (pooled == NULL && c->pooled_dim > 0)
		hpooled = pooled = malloc((size_t)n * c->pooled_dim * sizeof *pooled);
	if (c->pooled_dim > 0 && pooled == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		goto out;
	}
	for (int e = 0; e < c->ntext; e++)
		if (c->encoder[e] != NULL) {
			nclip++;
			last = e;
		}
	/* the CLIP contexts side by side [n*77, width]: into context itself
	 * when they are all of it */
	clipctx = tail == 0 ? context : sd_alloc(ctx, tokens * c->width);
	for (int e = 0; e < c->ntext; e++) {
		struct clip_text *enc = c->encoder[e];
		float *part, *dpooled = NULL;
		if (enc == NULL)
			continue;
		/* the only CLIP and nothing beside it: straight into place */
		if (nclip == 1 && enc->width == c->width)
			part = clipctx;
		else
			part = sd_alloc(ctx, tokens * enc->width);
		if (c->pooled[e])
			dpooled = sd_alloc(ctx, (size_t)n * enc->proj_dim);
		for (int i = 0; i < n; i++)
			if (tokenizer_encode(c->tokenizer[e], prompts[i] ? prompts[i] : "",
			    ids + (size_t)i * c->clip_len, NULL, err) < 0)
				goto out;
		if (clip_text_forward_pooled(enc, ctx, ids, n, clip_skip, part, dpooled, err) < 0)
			goto out;
		sd_cpu_release_weights(ctx);	/* one encoder resident at a time */
		if (dpooled != NULL) {
			float *h = malloc((size_t)n * enc->proj_dim * sizeof *h);
			if (h == NULL) {
				sd_fail(err, SD_EINTERNAL, "out of memory");
				goto out;
			}
			sd_download(ctx, h, dpooled, (size_t)n * enc->proj_dim);
			for (int i = 0; i < n; i++)
				memcpy(pooled + (size_t)i * c->pooled_dim + off, h + (size_t)i * enc->proj_dim,
				    (size_t)enc->proj_dim * sizeof *h);
			free(h);
			off += enc->proj_dim;
		}
		if (part == clipctx) {
			acc = clipctx;
			accw = c->width;
			continue;
		}
		if (acc == NULL) {
			acc = part;
			accw = enc->width;
		} else {
			/* SDXL, SD3: [n*77, D1 | D2] */
			int w = accw + enc->width;
			float *dst = e == last && w == c->width ? clipctx : sd_alloc(ctx, tokens * w);
			op_concat(ctx, dst, acc, accw, part, enc->width, (int)tokens, 1);
			acc = dst;
			accw = w;
		}
	}
	/* SD3: zeros up to the context's width */
	if (acc != clipctx && join_width(ctx, clipctx, acc, accw, NULL, c->width - accw, (int)tokens,
	    err) < 0)
		goto out;
	if (tail > 0) {
		/* SD3: the T5 tokens, or zeros, after each prompt's CLIP tokens */
		struct t5_encoder *t5 = c->t5_on ? c->t5[c->t5_index] : NULL;
		float *t5ctx = NULL;
		if (t5 != NULL) {
			t5ctx = sd_alloc(ctx, (size_t)n * tail * c->width);
			for (int i = 0; i < n; i++)
				if (spm_t5_encode(c->spm[c->t5_index], prompts[i] ? prompts[i] : "",
				    ids + (size_t)i * tail, tail, err) < 0)
					goto out;
			if (t5_forward(t5, ctx, ids, n, tail, t5ctx, err) < 0)
				goto out;
			sd_cpu_release_weights(ctx);
		}
		if (join_width(ctx, context, clipctx, c->clip_len * c->width, t5ctx, tail * c->width, n,
		    err) < 0)
			goto out;
	}
	/* No prompt: zeros (force_zeros_for_empty_prompt) */
	for (int i = 0; i < n; i++) {
		if (prompts[i] != NULL || !c->zeros_for_null)
			continue;
		if (zeros == NULL && (zeros = calloc((size_t)c->ctx_len * c->width, sizeof *zeros)) == NULL) {
			sd_fail(err, SD_EINTERNAL, "out of memory");
			goto out;
		}
		sd_upload(ctx, context + (size_t)i * c->ctx_len * c->width, zeros,
		    (size_t)c->ctx_len * c->width);
		for (int k = 0; k < c->pooled_dim; k++)
			pooled[(size_t)i * c->pooled_dim + k] = 0.0f;
	}
	rc = 0;
out:
	free(ids);
	free(zeros);
	free(hpooled);
	/* context and pooled were allocated by the caller, below the mark */
	sd_release(ctx, mark);
	return rc;
}

int
conditioner_reload(struct conditioner *c, const struct model_desc *d, const struct sd_weights *w,
    struct sd_error *err)
{
	for (int i = 0; i < c->ntext; i++) {
		if (c->encoder[i] != NULL) {
			struct clip_text *e = clip_text_load(w, d->text[i].prefix, &d->text[i].clip, err);
			if (e == NULL)
				return -1;
			clip_text_free(c->encoder[i]);
			c->encoder[i] = e;
		} else if (c->t5[i] != NULL) {
			struct t5_encoder *e = t5_load(w, d->text[i].prefix, &d->text[i].t5, err);
			if (e == NULL)
				return -1;
			t5_free(c->t5[i]);
			c->t5[i] = e;
		}
	}
	return 0;
}

/* The chunks of prompt i for encoder e (A1111 wraps each encoder on its
 * own: the same chunking, each with its tokenizer). */
static int
a1111_prompt_chunks(struct conditioner *c, int e, const char *prompt, struct prompt_chunks *pc,
    struct sd_error *err)
{
	return prompt_chunks(c->tokenizer[e], prompt ? prompt : "", pc, err);
}

int
conditioner_a1111_chunks(struct conditioner *c, const char *const *prompts, int n,
    struct sd_error *err)
{
	int most = 1;

	if (c->t5_index >= 0)
		return sd_fail(err, SD_EDATA, "prompt_syntax a1111 is not supported on SD3 (its T5 text "
		    "encoder reads the prompt as it is): use prompt_syntax plain");
	if (c->ntext < 1 || c->ntext > 2 || c->ctx_len != PROMPT_CHUNK_LEN)
		return sd_fail(err, SD_EDATA, "prompt_syntax a1111 needs one or two CLIP text encoders of "
		    "%d positions", PROMPT_CHUNK_LEN);
	for (int i = 0; i < n; i++) {
		int first = 0;
		for (int e = 0; e < c->ntext; e++) {
			struct prompt_chunks pc;
			int got;
			if (a1111_prompt_chunks(c, e, prompts[i], &pc, err) < 0)
				return -1;
			got = pc.n;
			prompt_chunks_free(&pc);
			if (e > 0 && got != first)
				return sd_fail(err, SD_EDATA, "the two tokenizers split prompt %d into %d and %d "
				    "chunks; prompt_syntax a1111 needs the same chunks for both text encoders",
				    i, first, got);
			first = got;
			if (got > most)
				most = got;
		}
	}
	return most;
}

/* ids and weights [n*chunks, 77] of encoder e: each prompt's chunks, then
 * the empty prompt's chunk up to chunks (A1111's empty_chunk); past each
 * chunk's first EOS the tokenizer's pad id (A1111's process_tokens: 0 for
 * OpenCLIP, SD 2.x and SDXL's second encoder; EOS for CLIP-L, a no-op). */
static int
a1111_ids(struct conditioner *c, int e, const char *const *prompts, int n, int chunks, int32_t *ids,
    float *weights, struct sd_error *err)
{
	const struct sd_tokenizer *t = c->tokenizer[e];
	int32_t bos = tokenizer_bos(t), eos = tokenizer_eos(t), pad = tokenizer_pad(t);

	for (int i = 0; i < n; i++) {
		struct prompt_chunks pc;
		if (a1111_prompt_chunks(c, e, prompts[i], &pc, err) < 0)
			return sd_error_prefix(err, "prompt %d", i);
		if (pc.n > chunks) {
			prompt_chunks_free(&pc);
			return sd_fail(err, SD_EINTERNAL, "prompt %d has %d chunks, more than %d", i, pc.n,
			    chunks);
		}
		for (int k = 0; k < chunks; k++) {
			int32_t *di = ids + ((size_t)i * chunks + k) * PROMPT_CHUNK_LEN;
			float *dw = weights + ((size_t)i * chunks + k) * PROMPT_CHUNK_LEN;
			if (k < pc.n) {
				memcpy(di, pc.ids + (size_t)k * PROMPT_CHUNK_LEN, PROMPT_CHUNK_LEN * sizeof *di);
				memcpy(dw, pc.weights + (size_t)k * PROMPT_CHUNK_LEN, PROMPT_CHUNK_LEN * sizeof *dw);
			} else {
				/* padding: the empty prompt's chunk (A1111's pad_cond_uncond) */
				di[0] = bos;
				for (int t = 1; t < PROMPT_CHUNK_LEN; t++)
					di[t] = eos;
				for (int t = 0; t < PROMPT_CHUNK_LEN; t++)
					dw[t] = 1.0f;
			}
			int end = 1;
			while (end < PROMPT_CHUNK_LEN && di[end] != eos)
				end++;
			for (int t = end + 1; t < PROMPT_CHUNK_LEN; t++)
				di[t] = pad;
		}
		prompt_chunks_free(&pc);
	}
	return 0;
}

int
conditioner_encode_a1111(struct conditioner *c, struct sd_ctx *ctx, const char *const *prompts,
    int n, int chunks, int clip_skip, float *context, float *pooled, struct sd_error *err)
{
	size_t total = (size_t)n * chunks, tokens = total * PROMPT_CHUNK_LEN;
	size_t mark = sd_mark(ctx);
	int32_t *ids = malloc(tokens * sizeof *ids);
	float *weights = malloc(tokens * sizeof *weights);
	float *z = NULL, *zeros = NULL, *part[MODEL_MAX_TEXT] = {0}, *dpooled = NULL;
	float *hpooled = NULL;
	int rc = -1, pooled_from = -1;

	if (ids == NULL || weights == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		goto out;
	}
	if (c->ntext < 1 || c->ntext > 2 || c->ctx_len != PROMPT_CHUNK_LEN) {
		sd_fail(err, SD_EDATA, "prompt_syntax a1111 needs one or two CLIP text encoders of %d "
		    "positions", PROMPT_CHUNK_LEN);
		goto out;
	}
	/* SDXL: the one encoder whose pooled vector conditions the UNet */
	for (int e = 0; e < c->ntext; e++)
		if (c->pooled[e])
			pooled_from = e;
	if (pooled_from >= 0 && pooled != NULL) {
		dpooled = sd_alloc(ctx, total * c->pooled_dim);
		if ((hpooled = malloc(total * c->pooled_dim * sizeof *hpooled)) == NULL) {
			sd_fail(err, SD_EINTERNAL, "out of memory");
			goto out;
		}
	}
	/* Each encoder on its own, as A1111 wraps each of SDXL's embedders:
	 * every chunk encoded alone ([n*chunks, 77, width] is [n, 77*chunks,
	 * width]), emphasis with the mean restored per chunk and per encoder;
	 * the pooled vector is its first chunk's (A1111: zs[0].pooled). */
	for (int e = 0; e < c->ntext; e++) {
		struct clip_text *enc = c->encoder[e];
		size_t per = (size_t)PROMPT_CHUNK_LEN * enc->width;
		float *zz;
		part[e] = c->ntext == 1 ? context : sd_alloc(ctx, tokens * enc->width);
		if (a1111_ids(c, e, prompts, n, chunks, ids, weights, err) < 0)
			goto out;
		if (clip_text_forward_pooled(enc, ctx, ids, (int)total, clip_skip, part[e],
		    e == pooled_from ? dpooled : NULL, err) < 0)
			goto out;
		if ((zz = realloc(z, total * per * sizeof *z)) == NULL) {
			sd_fail(err, SD_EINTERNAL, "out of memory");
			goto out;
		}
		z = zz;
		sd_download(ctx, z, part[e], total * per);
		for (size_t k = 0; k < total; k++)
			prompt_emphasis(z + k * per, weights + k * PROMPT_CHUNK_LEN, PROMPT_CHUNK_LEN,
			    enc->width);
		sd_upload(ctx, part[e], z, total * per);
	}
	/* SDXL: the encoders' contexts side by side, [n*chunks*77, D1 | D2];
	 * token by token, so chunk by chunk along the width */
	if (c->ntext == 2)
		op_concat(ctx, context, part[0], c->encoder[0]->width, part[1], c->encoder[1]->width,
		    (int)tokens, 1);
	if (hpooled != NULL) {
		sd_download(ctx, hpooled, dpooled, total * c->pooled_dim);
		for (int i = 0; i < n; i++)
			memcpy(pooled + (size_t)i * c->pooled_dim, hpooled + (size_t)i * chunks * c->pooled_dim,
			    (size_t)c->pooled_dim * sizeof *pooled);
	}
	/* No prompt: zeros in every chunk (force_zeros_for_empty_prompt; as
	 * A1111 zeroes an empty negative prompt of SDXL and, without padding,
	 * runs it at its own length: zeros padded with zeros attend alike) */
	for (int i = 0; i < n; i++) {
		size_t row = (size_t)chunks * PROMPT_CHUNK_LEN * c->width;
		if (prompts[i] != NULL || !c->zeros_for_null)
			continue;
		if (zeros == NULL && (zeros = calloc(row, sizeof *zeros)) == NULL) {
			sd_fail(err, SD_EINTERNAL, "out of memory");
			goto out;
		}
		sd_upload(ctx, context + (size_t)i * row, zeros, row);
		if (pooled != NULL)
			memset(pooled + (size_t)i * c->pooled_dim, 0, (size_t)c->pooled_dim * sizeof *pooled);
	}
	rc = 0;
out:
	free(ids);
	free(weights);
	free(z);
	free(zeros);
	free(hpooled);
	/* context and pooled were allocated by the caller, below the mark */
	sd_release(ctx, mark);
	return rc;
}
