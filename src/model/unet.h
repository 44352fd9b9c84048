/* unet.h: the Stable Diffusion UNet (the original "openaimodel" layout) of
 * SD 1.x and 2.x, written on the ops of core/ops.h.
 *
 * latents [b, 4, h, w] + timestep + text context [b, 77, D] -> predicted
 * noise (or v) [b, 4, h, w].  The structure (which input/output blocks have
 * a resblock, a transformer, a down- or upsampler; every channel count; the
 * transformer depth; 1x1-conv or linear projections in and out of the
 * transformers; the time embedding and context widths; 4 or 9 input
 * channels) is read from the tensors, so the tiny test models and the
 * inpainting UNet load with the same code.  Only the attention heads are
 * not in the shapes: the model description gives them (SD 1.x: 8 heads at
 * every level; SD 2.x: heads of 64 channels). */
#ifndef SD_UNET_H
#define SD_UNET_H

#include <stddef.h>

#include "core/error.h"
#include "core/ops.h"
#include "model/weights.h"

/* The prefix of the UNet in the original single-file layout. */
#define UNET_SD15_PREFIX "model.diffusion_model."

/* How a transformer of C channels splits into heads: a fixed count (SD 1.x:
 * 8), or heads of a fixed width (SD 2.x: 64 channels); one of the two is 0. */
struct unet_config {
	int heads;
	int head_channels;
};

struct unet_block;

/* Optional hook that sees intermediate activations (backend memory, n
 * floats), named like the goldens (diffusers' module names): "time_proj",
 * "time_emb", "conv_in", "down0_resnet0", "down0_attn0_block0_attn1" (and
 * _attn2, _ff: [b, h*w, C] before the residual add), "down0_attn0",
 * "down0".."down3" (each down block's output, after its downsampler),
 * "mid_resnet0", "mid_attn0" (its blocks: "mid_attn_block0_attn1", ...), "mid", "up0_resnet0", "up0_attn0", ...,
 * "up0".."up3" (after the upsampler), "conv_norm_out" (before the SiLU).
 * Each is the live buffer the rest of the pass reads, so the hook may also
 * overwrite it (tests pin a block's input to a reference value that way). */
typedef void (*unet_debug_fn)(void *user, const char *name, float *data, size_t n);

struct unet {
	int in_channels;	/* 4, or 9 for an inpainting UNet */
	int out_channels;	/* 4 */
	int model_channels;	/* conv_in's output: 320 in SD 1.5 */
	int time_embed_dim;	/* 1280 */
	int context_dim;	/* 768: the text encoder's width */
	struct unet_config cfg;	/* the heads */
	int downsamples;	/* 3: h and w must be multiples of 1 << downsamples */

	/* The weights, in forward order. */
	const struct sd_tensor *time_embed0_w, *time_embed0_b;	/* time_embed.0 */
	const struct sd_tensor *time_embed2_w, *time_embed2_b;	/* time_embed.2 */
	const struct sd_tensor *conv_in_w, *conv_in_b;		/* input_blocks.0.0 */
	/* SDXL's added embedding (label_emb: linear, SiLU, linear) of the
	 * pooled text and the time ids, or NULL */
	const struct sd_tensor *label_emb0_w, *label_emb0_b, *label_emb2_w, *label_emb2_b;
	int adm_in;		/* label_emb's input width: pooled + 6 x time-id width */
	int ninput;			/* input_blocks.1 .. ninput */
	struct unet_block *input;
	struct unet_block *middle;	/* middle_block: resblock, transformer, resblock */
	int noutput;			/* output_blocks.0 .. noutput-1 */
	struct unet_block *output;
	const struct sd_tensor *norm_out_w, *norm_out_b;	/* out.0 */
	const struct sd_tensor *conv_out_w, *conv_out_b;	/* out.2 */

	unet_debug_fn debug;	/* NULL, or called during unet_forward */
	void *debug_user;
	const float **skips;	/* the forward pass's skip list (ninput + 1) */
	int *skip_channels;

	/* unet_set_context: the cross-attentions' keys and values */
	size_t kv_width;	/* floats a context token: 2 C a cross-attention */
	float *kv;		/* backend memory, or NULL */
	const float *kv_context;
	int kv_b, kv_len;
};

/* Resolve every tensor of the UNet under prefix (e.g. UNET_SD15_PREFIX)
 * once, checking every shape against the channel flow; NULL with err naming
 * the missing or misshapen tensor. */
struct unet *unet_load(const struct sd_weights *w, const char *prefix,
    const struct unet_config *cfg, struct sd_error *err);
void unet_free(struct unet *u);

/* 0 when latents of h x w can go through the UNet (positive multiples of
 * 1 << u->downsamples, i.e. 64 px for SD 1.5), else -1 with err. */
int unet_check_size(const struct unet *u, int h, int w, struct sd_error *err);

/* out [b, out_channels, h, w] = the UNet on x [b, in_channels, h, w] (both
 * backend memory) at timesteps [b] (host memory; fractional values are
 * fine) with context [b, ctx_len, context_dim] (backend memory).
 * Activations come from the context's arena and are all released before
 * returning, so repeated calls allocate nothing new.  One call at a time per
 * struct unet (it holds the skip list).  Returns 0, or -1 with err when the
 * size fails unet_check_size. */
int unet_forward(struct unet *u, struct sd_ctx *c, float *out, const float *x, int b,
    int h, int w, const float *timesteps, const float *context, int ctx_len,
    struct sd_error *err);

/* SDXL's micro-conditioning (host memory): the pooled text embedding
 * [b, text_dim] and the time ids [b, 6] (original height and width, crop
 * top and left, target height and width).  Each time id gets a sinusoidal
 * embedding of (adm_in - text_dim) / 6 channels, as the timestep does;
 * label_emb maps [text_embeds | time_embeds] to the time embedding's width,
 * and the sum is what every resblock receives. */
struct unet_added {
	const float *text_embeds;
	int text_dim;
	const float *time_ids;
};

/* unet_forward with the added conditioning a UNet with label_emb needs
 * (add NULL for the others; a UNet with label_emb refuses NULL).  Debug
 * names besides unet_forward's: "time_embeds", "aug_emb", "emb". */
int unet_forward_added(struct unet *u, struct sd_ctx *c, float *out, const float *x, int b,
    int h, int w, const float *timesteps, const float *context, int ctx_len,
    const struct unet_added *add, struct sd_error *err);

/* Every cross-attention's keys and values are projections of the context
 * alone, the same at every sampling step: compute them once, from context
 * [b, ctx_len, context_dim] into b ctx_len kv_width floats of the context's
 * arena, for the unet_forward calls that pass this same context pointer, b
 * and ctx_len (others compute their own, as without it).  The results are
 * the same either way.  Call unet_clear_context before the context's
 * contents change or the arena is released below the cache. */
void unet_set_context(struct unet *u, struct sd_ctx *c, const float *context, int b,
    int ctx_len);
void unet_clear_context(struct unet *u);

#endif
