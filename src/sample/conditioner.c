/* conditioner.c: the text side of the model description. */
#include "config.h"

#include <stdlib.h>

#include "model/clip.h"
#include "model/tokenizer.h"
#include "sample/conditioner.h"

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
