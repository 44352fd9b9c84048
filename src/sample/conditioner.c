/* conditioner.c: the text side of the model description. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "model/clip.h"
#include "model/tokenizer.h"
#include "sample/conditioner.h"
#include "sample/prompt.h"

struct conditioner *
conditioner_load(const struct model_desc *d, const struct sd_weights *w, const char *tokdir,
    int own_tokenizer, struct sd_error *err)
{
	struct conditioner *c = calloc(1, sizeof *c);

	if (c == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		return NULL;
	}
	c->ntext = d->ntext;
	for (int i = 0; i < d->ntext; i++) {
		const struct text_encoder_desc *t = &d->text[i];
		if ((c->tokenizer[i] = tokenizer_load(tokdir, err)) == NULL)
			goto fail;
		if (!own_tokenizer && tokenizer_set_pad(c->tokenizer[i], t->pad_token, err) < 0)
			goto fail;
		if ((c->encoder[i] = clip_text_load(w, t->prefix, &t->clip, err)) == NULL)
			goto fail;
		if (tokenizer_max_id(c->tokenizer[i]) >= c->encoder[i]->vocab) {
			sd_fail(err, SD_EDATA, "the tokenizer in %s has ids up to %d but the text encoder "
			    "knows %d tokens", tokdir, (int)tokenizer_max_id(c->tokenizer[i]),
			    c->encoder[i]->vocab);
			goto fail;
		}
	}
	c->ctx_len = c->encoder[0]->max_len;
	c->width = c->encoder[0]->width;
	c->pooled_dim = 0;
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
	int32_t *ids = malloc((size_t)n * TOKENIZER_MAX_LENGTH * sizeof *ids);
	int rc = -1;

	(void)pooled;
	if (ids == NULL)
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	for (int i = 0; i < n; i++)
		if (tokenizer_encode(c->tokenizer[0], prompts[i] ? prompts[i] : "",
		    ids + (size_t)i * TOKENIZER_MAX_LENGTH, NULL, err) < 0)
			goto out;
	rc = clip_text_forward(c->encoder[0], ctx, ids, n, clip_skip, context, err);
out:
	free(ids);
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

int
conditioner_a1111_chunks(struct conditioner *c, const char *const *prompts, int n,
    struct sd_error *err)
{
	int most = 1;

	if (c->ntext != 1)
		return sd_fail(err, SD_EDATA, "prompt_syntax a1111 is not supported on a model with %d "
		    "text encoders yet", c->ntext);
	for (int i = 0; i < n; i++) {
		struct prompt_chunks pc;
		if (prompt_chunks(c->tokenizer[0], prompts[i] ? prompts[i] : "", &pc, err) < 0)
			return -1;
		if (pc.n > most)
			most = pc.n;
		prompt_chunks_free(&pc);
	}
	return most;
}

int
conditioner_encode_a1111(struct conditioner *c, struct sd_ctx *ctx, const char *const *prompts,
    int n, int chunks, int clip_skip, float *context, struct sd_error *err)
{
	size_t per = (size_t)PROMPT_CHUNK_LEN * c->width, total = (size_t)n * chunks;
	int32_t *ids = malloc(total * PROMPT_CHUNK_LEN * sizeof *ids);
	float *weights = malloc(total * PROMPT_CHUNK_LEN * sizeof *weights);
	float *z = malloc(total * per * sizeof *z);
	int rc = -1;

	if (ids == NULL || weights == NULL || z == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		goto out;
	}
	if (c->ntext != 1 || c->ctx_len != PROMPT_CHUNK_LEN) {
		sd_fail(err, SD_EDATA, "prompt_syntax a1111 needs one text encoder of 77 positions");
		goto out;
	}
	for (int i = 0; i < n; i++) {
		struct prompt_chunks pc;
		if (prompt_chunks(c->tokenizer[0], prompts[i] ? prompts[i] : "", &pc, err) < 0) {
			sd_error_prefix(err, "prompt %d", i);
			goto out;
		}
		if (pc.n > chunks) {
			prompt_chunks_free(&pc);
			sd_fail(err, SD_EINTERNAL, "prompt %d has %d chunks, more than %d", i, pc.n, chunks);
			goto out;
		}
		for (int k = 0; k < chunks; k++) {
			int32_t *di = ids + ((size_t)i * chunks + k) * PROMPT_CHUNK_LEN;
			float *dw = weights + ((size_t)i * chunks + k) * PROMPT_CHUNK_LEN;
			if (k < pc.n) {
				memcpy(di, pc.ids + (size_t)k * PROMPT_CHUNK_LEN, PROMPT_CHUNK_LEN * sizeof *di);
				memcpy(dw, pc.weights + (size_t)k * PROMPT_CHUNK_LEN, PROMPT_CHUNK_LEN * sizeof *dw);
			} else {
				/* padding: the empty prompt's chunk (A1111's pad_cond_uncond) */
				di[0] = tokenizer_bos(c->tokenizer[0]);
				for (int t = 1; t < PROMPT_CHUNK_LEN; t++)
					di[t] = tokenizer_eos(c->tokenizer[0]);
				for (int t = 0; t < PROMPT_CHUNK_LEN; t++)
					dw[t] = 1.0f;
			}
		}
		prompt_chunks_free(&pc);
	}
	/* every chunk on its own: [n*chunks, 77, width] is [n, 77*chunks, width] */
	if (clip_text_forward(c->encoder[0], ctx, ids, (int)total, clip_skip, context, err) < 0)
		goto out;
	sd_download(ctx, z, context, total * per);
	for (size_t k = 0; k < total; k++)
		prompt_emphasis(z + k * per, weights + k * PROMPT_CHUNK_LEN, PROMPT_CHUNK_LEN, c->width);
	sd_upload(ctx, context, z, total * per);
	rc = 0;
out:
	free(ids);
	free(weights);
	free(z);
	return rc;
}
