/* conditioner.h: prompt -> the denoiser's conditioning, as the model
 * description says (one CLIP text encoder for SD 1.x and 2.x; the interface
 * carries a pooled vector too, for the architectures that have one).
 *
 * The conditioner owns its tokenizer(s) and text encoder(s); the weights
 * stay in the checkpoint's weights set. */
#ifndef SD_CONDITIONER_H
#define SD_CONDITIONER_H

#include "core/error.h"
#include "core/ops.h"
#include "sample/description.h"

struct sd_tokenizer;

struct conditioner {
	int ntext;
	struct sd_tokenizer *tokenizer[MODEL_MAX_TEXT];
	struct clip_text *encoder[MODEL_MAX_TEXT];
	int ctx_len;		/* tokens of the context: 77 */
	int width;		/* the context's width (the UNet's cross-attention) */
	int pooled_dim;		/* 0: no pooled vector */
};

/* What the denoiser is conditioned on (backend memory). */
struct conditioning {
	const float *context;	/* [b, ctx_len, width] */
	int ctx_len;
	const float *pooled;	/* [b, pooled_dim], or NULL */
};

/* Build the encoders of d from w and the tokenizer of folder tokdir.  Unless
 * tokdir is the model's own tokenizer folder (own_tokenizer), each encoder's
 * tokenizer pads with the description's pad token.  NULL with err. */
struct conditioner *conditioner_load(const struct model_desc *d, const struct sd_weights *w,
    const char *tokdir, int own_tokenizer, struct sd_error *err);
void conditioner_free(struct conditioner *c);

/* Tokenize and encode n prompts (NULL is "") into context [n, ctx_len,
 * width] (backend memory, allocated by the caller); pooled [n, pooled_dim]
 * likewise when the model has one (else untouched, may be NULL).  clip_skip
 * has A1111's meaning (1 = the model's own layer).  The field of an error is
 * the index of the prompt in err->message's prefix. */
int conditioner_encode(struct conditioner *c, struct sd_ctx *ctx, const char *const *prompts,
    int n, int clip_skip, float *context, float *pooled, struct sd_error *err);

#endif
