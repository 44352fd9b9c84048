/* synth.h: deterministic random-weight SD 1.x and 2.x checkpoints.
 *
 * Writes a single-file .safetensors checkpoint in the ORIGINAL layout
 * (model.diffusion_model.*, first_stage_model.*, and
 * cond_stage_model.transformer.text_model.* for SD 1.x or OpenCLIP's
 * cond_stage_model.model.* for SD 2.x) with exactly the names and shapes a
 * real v1-5-pruned-emaonly.safetensors or v2-1_768-ema-pruned.safetensors
 * has, for any widths: the full presets give files that benchmark the real
 * cost without a download, the tiny presets match testdata/sd15-tiny and
 * testdata/sd21-tiny model.safetensors.  The metadata says what the file is
 * (modelspec.architecture, modelspec.prediction_type) and the head sizes
 * no shape tells (sdbatch.unet_heads or sdbatch.unet_head_channels,
 * sdbatch.text_heads), so that the model description reads it right.
 *
 * Values come from a counter-based PRNG seeded by the seed and the tensor
 * name, so a file depends only on its configuration: conv and linear
 * weights and biases ~ uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) (torch's
 * default initialisation), norm weights 1 and biases 0, embeddings
 * ~ uniform with standard deviation 0.02, position_ids 0..N-1 (I64). */
#ifndef SD_SYNTH_H
#define SD_SYNTH_H

#include <stdint.h>

#include "core/error.h"
#include "core/tensor.h"

/* Which parts to write. */
#define SYNTH_UNET	0x1
#define SYNTH_VAE	0x2
#define SYNTH_CLIP	0x4	/* the CLIP text encoder(s) */
#define SYNTH_T5	0x8	/* SD3's T5 encoder */
#define SYNTH_ALL	(SYNTH_UNET | SYNTH_VAE | SYNTH_CLIP | SYNTH_T5)

struct synth_config {
	const char *name;		/* recorded in the file's metadata */
	const char *arch;		/* "sd15", "sd2", "sd2-base", "sd-turbo", "sdxl",
					 * "sdxl-turbo" */
	int parts;			/* SYNTH_* bits */
	/* UNet: 4 levels of 2 resnets, cross-attention in the first 3 (SD 1.x,
	 * 2.x); or SDXL's 3 levels with transformers of several blocks in the
	 * last two and the added embedding. */
	int unet_levels;		/* 0: 4 */
	int unet_depth[4];		/* transformer blocks a level (SDXL; all 0:
					 * 1, 1, 1, 0) */
	int unet_adm;			/* label_emb input width (SDXL), or 0 */
	int unet_channels[4];		/* block_out_channels (multiples of 32) */
	int unet_time_embed;		/* time embedding width (4 x channels[0]) */
	int unet_heads;			/* SD 1.x: attention heads (metadata) */
	int unet_head_channels;		/* SD 2.x: channels a head (metadata) */
	int unet_in_channels;		/* 4; 9 for an inpainting UNet */
	int unet_out_channels;		/* 4 */
	int context_dim;		/* cross-attention width (= clip_width) */
	/* VAE: 4 levels; 2 resnets down, 3 up. */
	int vae_channels[4];		/* block_out_channels (multiples of 32) */
	int latent_channels;		/* 4 */
	/* CLIP text transformer (SD 2.x: OpenCLIP's, clip_layers stored, the
	 * last of them unused by the model; SDXL: CLIP ViT-L, then OpenCLIP
	 * bigG with clip2_*). */
	int clip_width, clip_layers, clip_heads, clip_mlp, clip_vocab, clip_positions;
	int clip2_width, clip2_layers, clip2_heads, clip2_mlp;
	/* SD3: the MMDiT (in place of the UNet; SYNTH_UNET writes it) of
	 * mmdit_depth joint blocks of width mmdit_width, a pos_embed table of
	 * mmdit_pos_max^2 entries, context_dim = the T5 width; CLIP-L and bigG
	 * in transformers' names (clip_* and clip2_*); T5 v1.1 (SYNTH_T5). */
	int mmdit_width, mmdit_depth, mmdit_heads, mmdit_pos_max;
	int t5_width, t5_layers, t5_heads, t5_ff, t5_vocab;
	enum sd_dtype dtype;		/* SD_F16, SD_F32 or SD_BF16 */
	uint64_t seed;
};

/* SD 1.5 as released: UNet 320/640/1280/1280, VAE 128/256/512/512, CLIP
 * ViT-L/14 text (768 wide, 12 layers); F16, ~2.1 GB. */
extern const struct synth_config synth_config_sd15_full;
/* The widths of testdata/sd15-tiny/model.safetensors (README table). */
extern const struct synth_config synth_config_sd15_tiny;
/* SD 2.1 768-v as released: UNet 320/640/1280/1280 with 64-channel heads
 * and linear projections (865 M parameters), OpenCLIP ViT-H/14 text (1024
 * wide, 24 layers stored); F16. */
extern const struct synth_config synth_config_sd2_full;
/* The widths of testdata/sd21-tiny/model.safetensors (README table). */
extern const struct synth_config synth_config_sd2_tiny;
/* SDXL base 1.0: UNet 320/640/1280 with 1, 2, 10 transformer blocks (2.57 G
 * parameters), CLIP ViT-L and OpenCLIP bigG text (32 layers); F16. */
extern const struct synth_config synth_config_sdxl_full;
/* The widths of testdata/sdxl-tiny/model.safetensors (README table). */
extern const struct synth_config synth_config_sdxl_tiny;
/* SD3 Medium: MMDiT 1536 x 24 blocks (2.03 G parameters), CLIP-L, bigG,
 * T5 v1.1 XXL (4.76 G), VAE of 16 latent channels; F16, 15.6 GB. */
extern const struct synth_config synth_config_sd3_full;
/* The widths of testdata/sd3-tiny/model.safetensors (README table). */
extern const struct synth_config synth_config_sd3_tiny;

/* The preset of an architecture ("sd15", "sd2", "sd2-base", "sd-turbo",
 * "sdxl", "sdxl-turbo", "sd3"),
 * full or tiny, into cfg; -1 when the name is unknown. */
int synth_preset(const char *arch, int full, struct synth_config *cfg);

/* What a configuration amounts to (parameters exclude position_ids, as
 * torch counts them). */
struct synth_counts {
	int64_t unet_params, vae_params, clip_params, t5_params;	/* unet: the MMDiT for SD3 */
	int tensors;
	uint64_t file_size;		/* bytes of the .safetensors file */
};

/* Count without writing anything (a "dry run"). */
int synth_count(const struct synth_config *cfg, struct synth_counts *out,
    struct sd_error *err);

/* Write the checkpoint to path, tensor by tensor (memory stays small),
 * through a temporary file in the same folder renamed into place. */
int synth_checkpoint(const char *path, const struct synth_config *cfg,
    struct sd_error *err);

#endif
