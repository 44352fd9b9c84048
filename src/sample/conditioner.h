/* conditioner.h: prompts -> the denoiser's conditioning, as the model
 * description says: one CLIP text encoder (SD 1.x, 2.x); two whose
 * contexts are joined along the width and whose second also gives a
 * pooled, projected vector (SDXL); or SD3's three: CLIP-L and bigG side by
 * side, zero-padded to the context width, followed along the tokens by the
 * T5 encoder's 256 tokens (or 77 tokens of zeros without T5), with the two
 * CLIPs' pooled vectors joined.
 *
 * The conditioner owns its tokenizers and text encoders; the weights stay
 * in the checkpoint's weights set. */
#ifndef SD_CONDITIONER_H
#define SD_CONDITIONER_H

#include "core/error.h"
#include "core/ops.h"
#include "sample/description.h"

struct sd_tokenizer;
struct spm_model;

struct conditioner {
	int ntext;
	/* per encoder of the description: a CLIP's tokenizer and encoder,
	 * or a T5's (NULL where the kind differs, or the T5 is absent) */
	struct sd_tokenizer *tokenizer[MODEL_MAX_TEXT];
	struct clip_text *encoder[MODEL_MAX_TEXT];
	struct spm_model *spm[MODEL_MAX_TEXT];
	struct t5_encoder *t5[MODEL_MAX_TEXT];
	int pooled[MODEL_MAX_TEXT];	/* its pooled vector is part of the
					 * pooled input */
	int t5_index;		/* the description's T5 encoder, or -1 */
	int t5_len;		/* its tokens: 256 */
	int t5_weights;		/* its weights are in the model (even when no
				 * tokenizer folder was given) */
	int has_t5;		/* its weights and tokenizer are loaded */
	int t5_on;		/* conditioner_encode runs it (conditioner_set_t5) */
	int zeros_for_null;	/* a NULL prompt is zeros (SDXL), not "" */
	int clip_len;		/* the CLIP encoders' tokens: 77 */
	int clip_width;		/* the CLIP contexts side by side */
	int ctx_len;		/* tokens of the context: 77; SD3 77 + 256 with
				 * T5, 77 + 77 without */
	int width;		/* the context's width (the UNet's cross-attention,
				 * SD3's joint_attention_dim) */
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
 * encoder i: for a CLIP one with vocab.json and merges.txt, and unless
 * own[i] (the model folder's own tokenizer, whose pad token stands) it pads
 * with the description's pad token; for a T5 one the folder holding
 * spiece.model (own[i] is not read).  A T5 encoder whose weights are not in
 * w (no "<prefix>shared.weight", "<prefix>encoder.embed_tokens.weight" nor
 * "<prefix>encoder.final_layer_norm.weight"), or whose tokdir[i] is NULL, is
 * absent: has_t5 is 0 and the context gets zeros in its place; with weights
 * and a folder, a missing spiece.model is an error.  T5 starts on when
 * present.  NULL with err. */
struct conditioner *conditioner_load(const struct model_desc *d, const struct sd_weights *w,
    const char *const *tokdir, const int *own, struct sd_error *err);
void conditioner_free(struct conditioner *c);

/* Use the T5 encoder (on) or zeros in its place (off: a job's "t5: false")
 * in the next conditioner_encode calls; ctx_len follows (SD3: 333 or 154
 * tokens): allocate the context after this call.  Returns whether T5 is now
 * used: 0 when off, or when the model has none or it is absent. */
int conditioner_set_t5(struct conditioner *c, int on);

/* Tokenize and encode n prompts into context [n, ctx_len, width] (backend
 * memory, allocated by the caller) and, when the model has one, the pooled
 * vectors pooled [n, pooled_dim] (host memory; may be NULL otherwise).  A
 * NULL prompt is "no prompt": zeros where the description says so (SDXL's
 * unconditional input without a negative prompt), else "" (SD3 too).
 * clip_skip has A1111's meaning (1 = the model's own layer) for the CLIP
 * encoders (SD3 as diffusers' clip_skip - 1: hidden_states[-(clip_skip+1)]);
 * T5 has no skip.  The encoders run one after the other, and on the CPU
 * backend the pages of each one's mmap'd weights are released
 * (sd_cpu_release_weights) once it has run, so that the resident memory
 * holds one encoder at a time (T5-XXL is 9.5 GB in F16). */
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
