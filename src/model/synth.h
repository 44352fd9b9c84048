/* synth.h: deterministic random-weight SD 1.5 checkpoints.
 *
 * Writes a single-file .safetensors checkpoint in the ORIGINAL layout
 * (model.diffusion_model.*, first_stage_model.*,
 * cond_stage_model.transformer.text_model.*) with exactly the names and
 * shapes a real v1-5-pruned-emaonly.safetensors has, for any widths: the
 * full SD 1.5 preset gives a file that benchmarks the real cost without a
 * download, the tiny preset matches testdata/sd15-tiny/model.safetensors.
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
#define SYNTH_CLIP	0x4
#define SYNTH_ALL	(SYNTH_UNET | SYNTH_VAE | SYNTH_CLIP)

struct synth_config {
	const char *name;		/* recorded in the file's metadata */
	int parts;			/* SYNTH_* bits */
	/* UNet: 4 levels of 2 resnets, cross-attention in the first 3. */
	int unet_channels[4];		/* block_out_channels (multiples of 32) */
	int unet_time_embed;		/* time embedding width (4 x channels[0]) */
	int unet_heads;			/* attention heads (not in any shape; metadata) */
	int unet_in_channels;		/* 4; 9 for an inpainting UNet */
	int unet_out_channels;		/* 4 */
	int context_dim;		/* cross-attention width (= clip_width) */
	/* VAE: 4 levels; 2 resnets down, 3 up. */
	int vae_channels[4];		/* block_out_channels (multiples of 32) */
	int latent_channels;		/* 4 */
	/* CLIP text transformer. */
	int clip_width, clip_layers, clip_heads, clip_mlp, clip_vocab, clip_positions;
	enum sd_dtype dtype;		/* SD_F16, SD_F32 or SD_BF16 */
	uint64_t seed;
};

/* SD 1.5 as released: UNet 320/640/1280/1280, VAE 128/256/512/512, CLIP
 * ViT-L/14 text (768 wide, 12 layers); F16, ~2.1 GB. */
extern const struct synth_config synth_config_sd15_full;
/* The widths of testdata/sd15-tiny/model.safetensors (README table). */
extern const struct synth_config synth_config_sd15_tiny;

/* What a configuration amounts to (parameters exclude position_ids, as
 * torch counts them). */
struct synth_counts {
	int64_t unet_params, vae_params, clip_params;
	int tensors;
	uint64_t file_size;		/* bytes of the .safetensors file */
};

/* Count without writing anything (a "dry run"). */
int synth_sd15_count(const struct synth_config *cfg, struct synth_counts *out,
    struct sd_error *err);

/* Write the checkpoint to path, tensor by tensor (memory stays small),
 * through a temporary file in the same folder renamed into place. */
int synth_sd15_checkpoint(const char *path, const struct synth_config *cfg,
    struct sd_error *err);

#endif
