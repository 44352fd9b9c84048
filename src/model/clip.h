/* clip.h: the CLIP text encoders, written on the ops of core/ops.h: OpenAI's
 * ViT-L/14 text transformer (SD 1.x; SDXL's first encoder) and OpenCLIP's
 * ViT-H/14 and bigG text towers (SD 2.x; SDXL's second encoder).
 *
 * token ids [b, 77] -> token + position embeddings -> N pre-LayerNorm
 * transformer layers (causal self-attention, quick-GELU or GELU MLP) ->
 * final LayerNorm -> the UNet's context [b, 77, width].
 *
 * Two weight layouts are read: transformers' names under
 * "<prefix>embeddings.token_embedding.weight", "<prefix>encoder.layers.N.",
 * "<prefix>final_layer_norm." (SD 1.x files, every diffusers folder), and
 * OpenCLIP's under "<prefix>token_embedding.weight", "<prefix>positional_
 * embedding", "<prefix>transformer.resblocks.N." with the q, k and v
 * projections fused in attn.in_proj_weight, "<prefix>ln_final." (SD 2.x and
 * SDXL single files).  Which one is found from the names. */
#ifndef SD_CLIP_H
#define SD_CLIP_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "core/ops.h"
#include "model/weights.h"

/* The prefix of the text model in the original single-file layout. */
#define CLIP_SD15_PREFIX "cond_stage_model.transformer.text_model."
/* The activation of the MLP. */
enum clip_activation {
	CLIP_QUICK_GELU,	/* x * sigmoid(1.702 x): OpenAI's CLIP */
	CLIP_GELU,		/* the exact erf GELU: OpenCLIP */
};

/* What the weights do not say.  The head count cannot be read from the
 * shapes (the tiny test models have heads of 2 or 8 channels), nor which
 * layers the model was trained to use. */
struct clip_config {
	int heads;		/* attention heads: 12 for ViT-L/14; 0: width /
				 * head_channels (OpenCLIP's towers) */
	int head_channels;	/* with heads 0: channels a head (0: 64) */
	int layers;		/* layers to run (transformers' num_hidden_layers):
				 * > 0 that many, 0 every stored layer, < 0 every
				 * stored layer but the last -layers (SD 2.x uses
				 * the penultimate layer: -1) */
	enum clip_activation act;
	int context_skip;	/* the context is the output of the last run
				 * layer (0), or of one before it (SDXL: 1) */
	int no_final_norm;	/* the context without the final LayerNorm
				 * (SDXL) */
	int pooled_identity;	/* weights without a text_projection: the
				 * pooled output is unprojected (SD3's CLIP-L,
				 * where diffusers puts an identity) */
};

struct clip_layer;

/* Optional hook that sees intermediate activations (backend memory, n
 * floats): "embeddings", "layer_1" .. "layer_N" (the output of each encoder
 * layer = transformers' hidden_states[i]) and "final_layer_norm". */
typedef void (*clip_debug_fn)(void *user, const char *name, const float *data, size_t n);

struct clip_text {
	int width;		/* hidden size: 768 in SD 1.5 */
	int layers;		/* the layers run: 12 */
	int stored_layers;	/* the layers in the file (SD 2.x: one more) */
	int heads;		/* 12 */
	enum clip_activation act;
	int context_skip, final_norm;	/* from the clip_config */
	int openclip;		/* OpenCLIP names (the layers hold views of
				 * in_proj) */
	int mlp_width;		/* 3072 */
	int vocab;		/* 49408 */
	int max_len;		/* positions: 77 */

	const struct sd_tensor *token_embedding;	/* [vocab, width] */
	const struct sd_tensor *position_embedding;	/* [max_len, width] */
	const struct sd_tensor *final_norm_w, *final_norm_b;
	const struct sd_tensor *text_projection;	/* [proj, width] (a linear
							 * weight) or NULL */
	struct sd_tensor projection_t;		/* OpenCLIP's [width, proj]
						 * transposed (owned data) */
	int proj_dim;				/* 0 without a projection (the
						 * width with pooled_identity) */
	struct clip_layer *layer;	/* [layers] */

	clip_debug_fn debug;	/* NULL, or called during clip_text_forward */
	void *debug_user;
};

/* Resolve every tensor of the text model under prefix (e.g.
 * CLIP_SD15_PREFIX) once, checking the shapes; the width, layer count, MLP
 * width, vocabulary and positions come from the shapes, the rest from cfg.
 * NULL with err naming the missing or misshapen tensor. */
struct clip_text *clip_text_load(const struct sd_weights *w, const char *prefix,
    const struct clip_config *cfg, struct sd_error *err);
void clip_text_free(struct clip_text *m);

/* Encode b sequences of m->max_len token ids (host memory) into out
 * (backend memory, [b, max_len, width]).  clip_skip has A1111's meaning:
 * 1 = the last layer, 2 = the second-to-last one (diffusers' clip_skip=1),
 * and so on; the final LayerNorm is applied in every case.  Activations come
 * from the context's arena and are released before returning.  Returns 0,
 * or -1 with err for an id outside the vocabulary or a clip_skip outside
 * 1..layers. */
int clip_text_forward(struct clip_text *m, struct sd_ctx *c, const int32_t *ids, int b,
    int clip_skip, float *out, struct sd_error *err);

/* The same, and when pooled is not NULL the pooled, projected embedding
 * pooled [b, proj_dim] (backend memory): the final LayerNorm of the LAST
 * layer's output at each sequence's first <|endoftext|> (eos; the position
 * of the largest id, as transformers takes it), times text_projection
 * (or not, with cfg's pooled_identity and no text_projection stored).
 * The context follows cfg's context_skip and final norm, and clip_skip
 * counts from there.  Fails when pooled is asked of an encoder without a
 * projection. */
int clip_text_forward_pooled(struct clip_text *m, struct sd_ctx *c, const int32_t *ids, int b,
    int clip_skip, float *out, float *pooled, struct sd_error *err);

#endif
