/* clip.h: the CLIP text encoder (the transformer of OpenAI's ViT-L/14 that
 * SD 1.5 conditions on), written on the ops of core/ops.h.
 *
 * token ids [b, 77] -> token + position embeddings -> N pre-LayerNorm
 * transformer layers (causal self-attention, quick-GELU MLP) -> final
 * LayerNorm -> the UNet's context [b, 77, width]. */
#ifndef SD_CLIP_H
#define SD_CLIP_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "core/ops.h"
#include "model/weights.h"

/* The prefix of the text model in the original single-file layout. */
#define CLIP_SD15_PREFIX "cond_stage_model.transformer.text_model."
/* Attention heads of SD 1.5's text encoder (ViT-L/14: 768 wide, 12 heads of
 * 64).  The head count cannot be read from the weights: the tiny test model
 * has 12 heads of width 2, so width/64 would be wrong. */
#define CLIP_SD15_HEADS 12

struct clip_layer;

/* Optional hook that sees intermediate activations (backend memory, n
 * floats): "embeddings", "layer_1" .. "layer_N" (the output of each encoder
 * layer = transformers' hidden_states[i]) and "final_layer_norm". */
typedef void (*clip_debug_fn)(void *user, const char *name, const float *data, size_t n);

struct clip_text {
	int width;		/* hidden size: 768 in SD 1.5 */
	int layers;		/* 12 */
	int heads;		/* 12 */
	int mlp_width;		/* 3072 */
	int vocab;		/* 49408 */
	int max_len;		/* positions: 77 */

	const struct sd_tensor *token_embedding;	/* [vocab, width] */
	const struct sd_tensor *position_embedding;	/* [max_len, width] */
	const struct sd_tensor *final_norm_w, *final_norm_b;
	struct clip_layer *layer;	/* [layers] */

	clip_debug_fn debug;	/* NULL, or called during clip_text_forward */
	void *debug_user;
};

/* Resolve every tensor of the text model under prefix (e.g.
 * CLIP_SD15_PREFIX) once, checking the shapes; the width, layer count, MLP
 * width, vocabulary and positions come from the shapes.  heads <= 0 means
 * CLIP_SD15_HEADS.  NULL with err naming the missing or misshapen tensor. */
struct clip_text *clip_text_load(const struct sd_weights *w, const char *prefix, int heads,
    struct sd_error *err);
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

#endif
