/* conditioner.c: the text side of the model description. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "model/clip.h"
#include "model/tokenizer.h"
#include "sample/conditioner.h"
#include "sample/prompt.h"

struct conditioner *
conditioner_load(const struct model_desc *d, const struct sd_weights *w, const char *const *tokdir,
    const int *own, struct sd_error *err)
{
	struct conditioner *c = calloc(1, sizeof *c);

	if (c == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		return NULL;
	}
	c->ntext = d->ntext;
	c->pooled_from = -1;
	c->zeros_for_null = d->zeros_for_no_negative;
	for (int i = 0; i < d->ntext; i++) {
		const struct text_encoder_desc *t = &d->text[i];
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
		if (i > 0 && c->encoder[i]->max_len != c->encoder[0]->max_len) {
			sd_fail(err, SD_EDATA, "the text encoders have %d and %d positions",
			    c->encoder[0]->max_len, c->encoder[i]->max_len);
			goto fail;
		}
		c->width += c->encoder[i]->width;
		if (t->pooled) {
			if (c->encoder[i]->proj_dim == 0) {
				sd_fail(err, SD_EDATA, "text encoder \"%s\" has no text_projection for the "
				    "pooled embedding", t->prefix);
				goto fail;
			}
			c->pooled_from = i;
			c->pooled_dim = c->encoder[i]->proj_dim;
		}
	}
	c->ctx_len = c->encoder[0]->max_len;
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
	}
	free(c);
}

int
conditioner_encode(struct conditioner *c, struct sd_ctx *ctx, const char *const *prompts,
    int n, int clip_skip, float *context, float *pooled, struct sd_error *err)
{
	size_t mark = sd_mark(ctx), tokens = (size_t)n * c->ctx_len;
	int32_t *ids = malloc(tokens * sizeof *ids);
	float *part[MODEL_MAX_TEXT] = {0}, *dpooled = NULL, *zeros = NULL;
	int rc = -1;

	if (ids == NULL)
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	if (c->pooled_from >= 0)
		dpooled = sd_alloc(ctx, (size_t)n * c->pooled_dim);
	for (int e = 0; e < c->ntext; e++) {
		struct clip_text *enc = c->encoder[e];
		part[e] = c->ntext == 1 ? context : sd_alloc(ctx, tokens * enc->width);
		for (int i = 0; i < n; i++)
			if (tokenizer_encode(c->tokenizer[e], prompts[i] ? prompts[i] : "",
			    ids + (size_t)i * c->ctx_len, NULL, err) < 0)
				goto out;
		if (clip_text_forward_pooled(enc, ctx, ids, n, clip_skip, part[e],
		    e == c->pooled_from ? dpooled : NULL, err) < 0)
			goto out;
	}
	/* SDXL: the encoders' contexts side by side, [n*77, D1 | D2] */
	if (c->ntext == 2)
		op_concat(ctx, context, part[0], c->encoder[0]->width, part[1], c->encoder[1]->width,
		    (int)tokens, 1);
	if (dpooled != NULL && pooled != NULL)
		sd_download(ctx, pooled, dpooled, (size_t)n * c->pooled_dim);
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
		if (pooled != NULL)
			for (int k = 0; k < c->pooled_dim; k++)
				pooled[(size_t)i * c->pooled_dim + k] = 0.0f;
	}
	rc = 0;
out:
	free(ids);
	free(zeros);
	/* context and pooled were allocated by the caller, below the mark */
	sd_release(ctx, mark);
	return rc;
}

int
conditioner_reload(struct conditioner *c, const struct model_desc *d, const struct sd_weights *w,
    struct sd_error *err)
{
	for (int i = 0; i < c->ntext; i++) {
		struct clip_text *e = clip_text_load(w, d->text[i].prefix, &d->text[i].clip, err);
		if (e == NULL)
			return -1;
		clip_text_free(c->encoder[i]);
		c->encoder[i] = e;
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
	int rc = -1;

	if (ids == NULL || weights == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		goto out;
	}
	if (c->ntext < 1 || c->ntext > 2 || c->ctx_len != PROMPT_CHUNK_LEN) {
		sd_fail(err, SD_EDATA, "prompt_syntax a1111 needs one or two CLIP text encoders of %d "
		    "positions", PROMPT_CHUNK_LEN);
		goto out;
	}
	if (c->pooled_from >= 0 && pooled != NULL) {
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
		    e == c->pooled_from ? dpooled : NULL, err) < 0)
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
