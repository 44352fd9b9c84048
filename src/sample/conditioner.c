/* conditioner.c: the text side of the model description. */
#include "config.h"

#include <stdlib.h>

#include "model/clip.h"
#include "model/tokenizer.h"
#include "sample/conditioner.h"

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
