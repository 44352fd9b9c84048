/* conditioner.h: prompts -> the denoiser's conditioning, as the model
 * description says: one CLIP text encoder (SD 1.x, 2.x), or two whose
 * contexts are joined along the width and whose second also gives a
 * pooled, projected vector (SDXL).
 *
 * The conditioner owns its tokenizers and text encoders; the weights stay
 * in the checkpoint's weights set. */
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
	int pooled_from;	/* the encoder of the pooled vector, or -1 */
	int zeros_for_null;	/* a NULL prompt is zeros (SDXL), not "" */
	int ctx_len;		/* tokens of the context: 77 */
	int width;		/* the context's width (the UNet's cross-attention) */
	int pooled_dim;		/* 0: no pooled vector */
};

/* What the denoiser is conditioned on. */
struct conditioning {
	const float *context;	/* backend [b, ctx_len, width] */
	int ctx_len;
	const float *pooled;	/* host [b, pooled_dim], or NULL */
	int pooled_dim;
	const float *time_ids;	/* host [b, 6] (SDXL), or NULL */
};

/* Build the encoders of d from w.  tokdir[i] is the tokenizer folder of
 * encoder i; unless own[i] (the model folder's own tokenizer, whose pad
 * token stands) it pads with the description's pad token.  NULL with err. */
struct conditioner *conditioner_load(const struct model_desc *d, const struct sd_weights *w,
    const char *const *tokdir, const int *own, struct sd_error *err);
void conditioner_free(struct conditioner *c);

/* Tokenize and encode n prompts into context [n, ctx_len, width] (backend
 * memory, allocated by the caller) and, when the model has one, the pooled
 * vectors pooled [n, pooled_dim] (host memory; may be NULL otherwise).  A
 * NULL prompt is "no prompt": zeros where the description says so (SDXL's
 * unconditional input without a negative prompt), else "".  clip_skip has
 * A1111's meaning (1 = the model's own layer). */
int conditioner_encode(struct conditioner *c, struct sd_ctx *ctx, const char *const *prompts,
    int n, int clip_skip, float *context, float *pooled, struct sd_error *err);

/* Rebuild the text encoders from w (after LoRA weights were put into it or
 * taken out).  -1 with err. */
int conditioner_reload(struct conditioner *c, const struct model_desc *d, const struct sd_weights *w,
    struct sd_error *err);

/* AUTOMATIC1111's prompt syntax (sample/prompt.h): the most 77-token chunks
 * any of the n prompts needs (at least 1), or -1 with err (also when the
 * two tokenizers of SDXL split a prompt into different numbers of chunks). */
int conditioner_a1111_chunks(struct conditioner *c, const char *const *prompts, int n,
    struct sd_error *err);
/* Encode n prompts in A1111's syntax into context [n, 77*chunks, width]
 * (backend memory, allocated by the caller; chunks from
 * conditioner_a1111_chunks) and, when the model has one and pooled is not
 * NULL, the pooled vectors pooled [n, pooled_dim] (host memory).  Each text
 * encoder on its own (as A1111 wraps each of SDXL's): each chunk encoded
 * alone, its pad id after the first EOS, emphasis with the mean restored
 * per chunk and encoder; SDXL's two contexts side by side along the width,
 * chunks joined along the tokens, the pooled vector that of the FIRST
 * chunk (A1111's zs[0].pooled).  A prompt with fewer chunks is padded with
 * the empty prompt's chunk (A1111's "pad prompt / negative prompt to the
 * same length"); a NULL prompt is zeros in every chunk and pooled where
 * the description says so (SDXL), else "".  -1 with err. */
int conditioner_encode_a1111(struct conditioner *c, struct sd_ctx *ctx, const char *const *prompts,
    int n, int chunks, int clip_skip, float *context, float *pooled, struct sd_error *err);

#endif
