/* mmdit.h: SD3's MMDiT (the multimodal diffusion transformer of Stable
 * Diffusion 3), written on the ops of core/ops.h, as diffusers'
 * SD3Transformer2DModel computes it.
 *
 * latents [b, 16, h, w] -> 2x2 patches (a stride-2 conv) + the centre crop
 * of the position table -> tokens [b, N, D]; timestep + pooled text ->
 * temb [b, D]; text context [b, T, ctx_dim] -> context_embedder -> [b, T, D];
 * `depth` joint blocks (each stream adaLN-modulated from SiLU(temb), ONE
 * attention over [image tokens, context tokens], gated residuals, GELU-tanh
 * MLPs; the last block's context stream only gives keys and values) ->
 * final adaLN, linear -> unpatchify -> [b, 16, h, w] (the velocity).
 *
 * Both layouts load: the original single file's names under a prefix
 * (MMDIT_SD3_PREFIX: "x_embedder.proj", "pos_embed", "t_embedder.mlp.N",
 * "y_embedder.mlp.N", "context_embedder", "joint_blocks.N.{x_block,
 * context_block}.{adaLN_modulation.1, attn.qkv, attn.proj, mlp.fc1,
 * mlp.fc2}", "final_layer.{adaLN_modulation.1, linear}") and the names of
 * a diffusers transformer/ folder under any prefix ("" or e.g.
 * "transformer.": "pos_embed.proj", "pos_embed.pos_embed",
 * "time_text_embed.{timestep,text}_embedder.linear_N", "context_embedder",
 * "transformer_blocks.N.{norm1.linear, norm1_context.linear, attn.to_q, ...,
 * attn.add_q_proj, ..., attn.to_out.0, attn.to_add_out, ff.net.0.proj,
 * ff.net.2, ff_context.*}", "norm_out.linear", "proj_out").  The layout is
 * detected from the names.  Fused weights (the file's attn.qkv) are used
 * through row views; the weights stay in the mapped files (F32, F16 or
 * BF16) and the ops read them there. */
#ifndef SD_MMDIT_H
#define SD_MMDIT_H

#include <stddef.h>

#include "core/error.h"
#include "core/ops.h"
#include "model/weights.h"

/* The prefix of the MMDiT in SD3's single file. */
#define MMDIT_SD3_PREFIX "model.diffusion_model."

/* What the weights do not say. */
struct mmdit_config {
	int heads;		/* 0: width / 64 (SD3 Medium: 24 heads of 64) */
};

struct mmdit_block;

/* Optional hook that sees intermediate activations (backend memory, n
 * floats), named as the sd3-tiny goldens: "patch_pos_embed" [b, N, D],
 * "time_proj" [b, 256], "timestep_emb", "pooled_emb", "temb" [b, D],
 * "context_embedded" [b, T, D], "blockI.context" (not after the last
 * block), "blockI.x", "norm_out" [b, N, D], "proj_out" [b, N, p*p*out]. */
typedef void (*mmdit_debug_fn)(void *user, const char *name, const float *data, size_t n);

struct mmdit {
	int in_channels;	/* 16 */
	int out_channels;	/* 16 */
	int width;		/* D: 1536 in SD3 Medium */
	int depth;		/* joint blocks: 24 */
	int heads, head_dim;	/* 24 x 64 */
	int patch;		/* 2 */
	int pos_max;		/* M: the position table is M x M patches (192) */
	int ctx_dim;		/* the context's width (joint_attention_dim): 4096 */
	int pooled_dim;		/* the pooled text's width: 2048 */
	int freq_dim;		/* the timestep's sinusoid: 256 */
	int mlp_dim;		/* the MLPs' hidden width: 4 D */
	int diffusers;		/* 1: the diffusers names, 0: the single file's */

	/* The weights, in forward order. */
	const struct sd_tensor *patch_w, *patch_b;	/* [D, in, p, p] conv */
	struct sd_tensor pos_table;			/* [M*M, D] view */
	const struct sd_tensor *t1_w, *t1_b, *t2_w, *t2_b;	/* timestep MLP */
	const struct sd_tensor *y1_w, *y1_b, *y2_w, *y2_b;	/* pooled MLP */
	const struct sd_tensor *context_w, *context_b;	/* context_embedder */
	struct mmdit_block *block;			/* [depth] */
	const struct sd_tensor *final_mod_w, *final_mod_b;	/* [2D, D] */
	int final_shift_at, final_scale_at;	/* 0 or D: the halves' order */
	const struct sd_tensor *final_w, *final_b;	/* [p*p*out, D] */

	mmdit_debug_fn debug;	/* NULL, or called during mmdit_forward */
	void *debug_user;

	/* host scratch of mmdit_forward (grows once, kept) */
	float *host;
	size_t host_cap;
	int *pos_ids;
	size_t pos_cap;
};

/* Resolve every tensor under prefix once (either layout), checking every
 * shape; widths, depth, patch size, position table and the context and
 * pooled widths come from the shapes, the heads from cfg (NULL: the
 * default).  NULL with err naming the missing or misshapen tensor. */
struct mmdit *mmdit_load(const struct sd_weights *w, const char *prefix,
    const struct mmdit_config *cfg, struct sd_error *err);
void mmdit_free(struct mmdit *m);

/* 0 when latents of h x w (latent pixels) fit: positive multiples of the
 * patch size whose patch grid fits the position table (h/2, w/2 <=
 * pos_max); else -1 with err saying what fits. */
int mmdit_check_size(const struct mmdit *m, int h, int w, struct sd_error *err);

/* out [b, out_channels, h, w] (backend) = the MMDiT on x [b, in_channels,
 * h, w] (backend) at timesteps [b] (host; fractional: t = sigma * 1000)
 * with context [b, ctx_len, ctx_dim] (backend) and pooled [b, pooled_dim]
 * (host).  Activations come from the context's arena and are released
 * before returning, so repeated calls at one size allocate nothing new.
 * One call at a time per struct mmdit.  Returns 0, or -1 with err for a
 * size mmdit_check_size refuses or empty inputs. */
int mmdit_forward(struct mmdit *m, struct sd_ctx *c, float *out, const float *x, int b,
    int h, int w, const float *timesteps, const float *context, int ctx_len,
    const float *pooled, struct sd_error *err);

/* Set (or clear, fn NULL) the debug hook. */
void mmdit_set_debug(struct mmdit *m, mmdit_debug_fn fn, void *user);

#endif
