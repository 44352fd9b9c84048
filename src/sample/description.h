/* description.h: the model description, the one place that knows what an
 * architecture is made of.
 *
 * A loaded checkpoint (model/checkpoint.h) holds tensors; the description
 * says what to build from them and how to sample with it: the text
 * conditioner(s) (where their weights are, heads, layers, activation, pad
 * token), the denoiser (where the UNet is, how its transformers split into
 * heads), the VAE (where it is, scale, shift), the prediction type and why,
 * the scheduler configuration, and the defaults a job gets (size, steps,
 * guidance, sampler).  The pipeline, `info`, `bench` and `make-model` read
 * it; the architecture constants (SD 1.x's 8 heads, SD 2.x's 64-channel heads
 * and penultimate text layer, the VAE's 0.18215, ...) live here and nowhere
 * else.
 *
 * A new architecture is a new family here plus its own modules (a
 * conditioner or denoiser kind), not edits across the tree. */
#ifndef SD_DESCRIPTION_H
#define SD_DESCRIPTION_H

#include "core/error.h"
#include "model/checkpoint.h"
#include "model/clip.h"
#include "model/t5.h"
#include "model/unet.h"
#include "sample/pipeline.h"
#include "sample/scheduler.h"

enum model_family {
	MODEL_SD1,		/* SD 1.x (and its 9-channel inpainting UNet) */
	MODEL_SD2,		/* SD 2.x 768-v, 2.x base, SD-Turbo */
	MODEL_SDXL,		/* SDXL base 1.0 and fine-tunes, SDXL-Turbo */
	MODEL_SD3,		/* SD3 Medium (an MMDiT, flow matching) */
};

/* The most text encoders a model conditions on (SDXL: 2, SD3: 3). */
#define MODEL_MAX_TEXT 3

/* What a text encoder is. */
enum text_encoder_kind {
	TEXT_CLIP,		/* a CLIP text model (model/clip.h), BPE tokenizer
				 * (vocab.json, merges.txt), 77 tokens */
	TEXT_T5,		/* a T5 encoder (model/t5.h), SentencePiece tokenizer
				 * (spiece.model), max_len tokens (SD3's third) */
};

/* One text encoder and its tokenizer. */
struct text_encoder_desc {
	enum text_encoder_kind kind;	/* TEXT_CLIP (0) unless set */
	char prefix[64];		/* its weights' names start with this */
	struct clip_config clip;	/* TEXT_CLIP: heads, layers used, activation */
	struct t5_config t5;		/* TEXT_T5: heads, max distance, eps */
	int max_len;			/* TEXT_T5: tokens (0: SPM_T5_MAX_LEN, 256) */
	char pad_token[16];		/* TEXT_CLIP: "<|endoftext|>" or "!" */
	int pooled;			/* its pooled, projected output conditions
					 * the denoiser too (SDXL's second, SD3's
					 * two CLIPs: joined in encoder order) */
	char tokenizer_sub[16];		/* its tokenizer's folder in a diffusers
					 * model: "tokenizer", "tokenizer_2",
					 * "tokenizer_3" */
};

struct model_desc {
	enum model_family family;
	char arch[32];			/* "sd15", "sd15-inpaint", "sd2", "sd2-base",
					 * "sd-turbo", "sdxl", "sdxl-turbo", "sd3" */
	char name[96];			/* "Stable Diffusion 2.x (768-v)" */
	int turbo;			/* distilled for 1-4 steps without guidance */

	int ntext;
	struct text_encoder_desc text[MODEL_MAX_TEXT];
	/* SD3: the width of the joint context (joint_attention_dim = T5's
	 * d_model): the CLIP contexts side by side are zero-padded to it and
	 * the T5 tokens follow them.  0: the CLIP widths side by side. */
	int context_width;

	char unet_prefix[64];		/* the denoiser's: UNet or MMDiT */
	struct unet_config unet;
	int mmdit_heads;		/* SD3: the MMDiT's heads (0: of 64 channels) */
	/* SDXL's micro-conditioning: the time ids (original size, crop,
	 * target size) and the pooled text go through the UNet's label_emb. */
	int time_ids;
	/* SDXL: a job without a negative prompt gets zeros as its
	 * unconditional context (force_zeros_for_empty_prompt), not the
	 * encoding of "". */
	int zeros_for_no_negative;

	char vae_prefix[64];
	float vae_scale;		/* latents = scale * (z - shift) */
	float vae_shift;

	/* Sampling: the scheduler config (the folder's, else the
	 * architecture's) with the prediction type in it, and why. */
	struct sched_config sched;
	char prediction_why[160];

	/* A job's defaults on this model. */
	int default_width, default_height, default_steps;
	float default_guidance;
	enum sd_sampler default_sampler;
};

/* Describe the checkpoint ck, loaded from ck->model_path.  Besides the
 * tensors it reads, where they exist: a diffusers folder's config files
 * (unet/config.json, text_encoder/config.json, vae/config.json,
 * scheduler/scheduler_config.json); for a single file its metadata
 * (modelspec.prediction_type, modelspec.architecture), then an LDM config
 * beside it (FILE.yaml: parameterization, num_head_channels / num_heads,
 * scale_factor, and sdbatch's cond_stage_config.params.heads; for SD3
 * network_config num_heads, clip_l / clip_g heads, shift_factor), then its
 * name (SD 2.x: "turbo" -> SD-Turbo, which the metadata or name alone
 * decide; "512" -> 2.x base).  Returns 0, or -1
 * with err when the architecture is not one sdbatch renders or a config
 * file is malformed. */
int model_describe(const struct sd_checkpoint *ck, struct model_desc *d, struct sd_error *err);

/* The architecture's own description, for a checkpoint sdbatch writes
 * itself (make-model, bench): "sd15", "sd15-inpaint", "sd2", "sd2-base",
 * "sd-turbo", "sdxl", "sdxl-turbo", "sd3".  -1 when the name is unknown. */
int model_describe_arch(const char *arch, struct model_desc *d);

#endif
