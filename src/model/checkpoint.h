/* checkpoint.h: finding a model's tensors on disk, whatever the layout.
 *
 * Two layouts are read: the original single file (as in
 * v1-5-pruned-emaonly.safetensors: model.diffusion_model.*,
 * first_stage_model.*, cond_stage_model.transformer.text_model.*) and the
 * diffusers folder (model_index.json, unet/, vae/, text_encoder/, ...).
 * Either way the tensors end up in one struct sd_weights under their
 * original single-file names.  Parts may come from other files (a UNet-only
 * inpainting file, a fine-tuned VAE).  The architecture is detected from
 * tensor names and shapes. */
#ifndef SD_CHECKPOINT_H
#define SD_CHECKPOINT_H

#include "core/error.h"
#include "model/weights.h"

#define SD_PREFIX_UNET "model.diffusion_model."
#define SD_PREFIX_VAE "first_stage_model."
#define SD_PREFIX_CLIP "cond_stage_model.transformer.text_model."
/* SDXL's text encoders: CLIP ViT-L (transformers' names) and OpenCLIP bigG
 * (OpenCLIP's names in a single file; a diffusers folder's transformers'
 * names go under SD_PREFIX_XL_CLIP2_HF). */
#define SD_PREFIX_XL_CLIP1 "conditioner.embedders.0.transformer.text_model."
#define SD_PREFIX_XL_CLIP2 "conditioner.embedders.1.model."
#define SD_PREFIX_XL_CLIP2_HF "conditioner.embedders.1.transformers.text_model."

/* SD3's text encoders (transformers' names under these prefixes; bigG with
 * its text_projection.weight beside text_model.). */
#define SD_PREFIX_SD3_TEXT "text_encoders."
#define SD_PREFIX_SD3_CLIP_L "text_encoders.clip_l.transformer."
#define SD_PREFIX_SD3_CLIP_G "text_encoders.clip_g.transformer."
#define SD_PREFIX_SD3_T5 "text_encoders.t5xxl.transformer."

/* What a file or folder holds. */
struct sd_detect {
	char arch[32];		/* "sd15", "sd15-inpaint", "sd2", "sdxl", "sdxl-refiner", "sd3",
				 * "flux", "unknown" */
	char name[96];		/* human name: "Stable Diffusion 1.x", ... */
	char layout[32];	/* "single-file", "diffusers", "unet-only", "vae-only" */
	int supported;		/* sdbatch can render with it */
	int has_unet, has_vae, has_text_encoder;
	int unet_in_channels;	/* 4, or 9 for inpainting */
	int context_dim;	/* cross-attention width: 768 (SD 1.x), 1024 (SD 2.x) */
	int tensors;
	long long dtype_counts[SD_DTYPE_COUNT];
	unsigned long long bytes;
	long long params;
};

struct sd_checkpoint {
	struct sd_weights *weights;	/* original names */
	struct sd_detect detect;	/* of the main model */
	char *model_path;
	char *scheduler_config;		/* diffusers scheduler/scheduler_config.json, or NULL */
};

/* Load model_path (a file or a diffusers folder); unet_path and vae_path,
 * when not NULL, replace that part.  Fails for architectures that sdbatch
 * does not render yet, naming them. */
int checkpoint_load(struct sd_checkpoint *ck, const char *model_path,
    const char *unet_path, const char *vae_path, struct sd_error *err);
void checkpoint_free(struct sd_checkpoint *ck);

/* SD3: add (or replace) the text encoders from dir, a folder of
 * clip_l.safetensors, clip_g.safetensors and optionally
 * t5xxl_fp16.safetensors (or t5xxl.safetensors), as SD3's repository ships
 * them for files without encoders, or a diffusers SD3 folder
 * (text_encoder{,_2,_3}/).  -1 with err. */
int checkpoint_add_text_encoders(struct sd_checkpoint *ck, const char *dir, struct sd_error *err);

/* Look at a file or folder and say what it is (for `sdbatch info`). */
int checkpoint_detect(const char *path, struct sd_detect *out, struct sd_error *err);

/* The original single-file name of a diffusers tensor name of a part
 * ("unet", "vae", "text_encoder"; SDXL's "text_encoder_xl" and
 * "text_encoder_2"), or -1 when it has no equivalent. */
int checkpoint_diffusers_name(const char *part, const char *name, char *out, size_t size);

#endif
