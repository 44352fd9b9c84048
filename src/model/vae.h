/* vae.h: the Stable Diffusion VAE (AutoencoderKL), decoder and encoder.
 *
 * Latents <-> images, written in the ops of core/ops.h.  The weights keep
 * the original single-file names ("first_stage_model.decoder.up.3.block.0.
 * conv1.weight", ...); every width is read from the tensors' shapes, the
 * latent channels too (4 for SD 1.x/2.x/SDXL, 16 for SD3), the layout (4
 * levels, 2 resnets a level in the encoder, 3 in the decoder, one mid block
 * with a single-head attention) is SD 1.5's.
 *
 * Conventions (diffusers' AutoencoderKL): GroupNorm 32 groups, eps 1e-6;
 * decode = post_quant_conv -> decoder; encode = encoder -> quant_conv =
 * moments [b, 2*zc, h, w] (mean, then logvar); SD3's VAE has no quant convs
 * (use_quant_conv false): decode = decoder, moments = the encoder's output.
 * The pipeline scales latents by the model description's VAE scale (and
 * shift) around them: SD3 decodes latents / 1.5305 + 0.0609 and encodes
 * to (sample - 0.0609) * 1.5305. */
#ifndef SD_VAE_H
#define SD_VAE_H

#include <stdint.h>

#include "core/error.h"
#include "core/ops.h"
#include "model/weights.h"

struct vae;

/* Called by vae_decode/vae_encode with an intermediate activation (backend
 * memory, [ch, h, w] of batch item `index`), named like the test goldens:
 * "post_quant_conv" (when the VAE has one), "dec_conv_in", "dec_mid", "dec_up0".."dec_up3" (in the
 * order applied: dec_up0 is the original decoder.up.3), "enc_conv_in",
 * "enc_down0".."enc_down3", "enc_mid", "enc_conv_out". */
typedef void (*vae_debug_fn)(void *user, const char *name, int index, const float *x,
    int ch, int h, int w);

/* Resolve every tensor "<prefix>decoder.*", "<prefix>post_quant_conv.*" and,
 * when the checkpoint has an encoder, "<prefix>encoder.*" and
 * "<prefix>quant_conv.*" (prefix "first_stage_model." for a checkpoint), with
 * shape checks.  The quant convs are optional (SD3 has none) but go
 * together: a VAE with one of them needs the other.  NULL with err naming
 * the tensor at fault.  w must outlive the result. */
struct vae *vae_load(const struct sd_weights *w, const char *prefix, struct sd_error *err);
void vae_free(struct vae *v);

/* Whether the weights had an encoder (vae_encode needs one). */
int vae_has_encoder(const struct vae *v);
/* Latent channels (4 for SD 1.5, 16 for SD3). */
int vae_latent_channels(const struct vae *v);
/* Install (or remove, fn NULL) the debug hook. */
void vae_set_debug(struct vae *v, vae_debug_fn fn, void *user);

/* image [b, 3, 8h, 8w] (backend memory, NOT clamped, nominally [-1, 1]) =
 * decode of z [b, zc, h, w] (backend memory, latents already divided by
 * the VAE scale).  Batch items are decoded one after another; the
 * temporaries come from c's arena and are released before returning. */
void vae_decode(struct vae *v, struct sd_ctx *c, float *image, const float *z,
    int b, int h, int w);

/* moments [b, 2*zc, h, w] (backend memory: the quant_conv output, or the
 * encoder's without one; mean then logvar) = encode of image [b, 3, 8h, 8w] (backend memory, in [-1, 1]).
 * The VAE must have an encoder (vae_has_encoder; without one, moments are
 * left untouched). */
void vae_encode(struct vae *v, struct sd_ctx *c, float *moments, const float *image,
    int b, int h, int w);

/* Host memory: the latent distribution of moments [b, 2*zc, h, w] as
 * [b, zc, h, w] tensors (any may be NULL): mean = moments[:, :zc],
 * logvar = clamp(moments[:, zc:], -30, 20), std = exp(0.5*logvar). */
void vae_latent_stats(const struct vae *v, float *mean, float *logvar, float *std,
    const float *moments, int b, int h, int w);
/* Host memory: sample [b, zc, h, w] = mean + std*noise (noise NULL: the
 * mean), diffusers' latent_dist.sample() given its noise; NOT yet multiplied
 * by the VAE scale. */
void vae_latent_sample(const struct vae *v, float *sample, const float *moments,
    const float *noise, int b, int h, int w);

/* Host memory: image [b, 3, H, W] (a decoder output) to 8-bit RGB
 * [b, H, W, 3] as diffusers saves it: round-half-even of
 * clamp(x/2 + 0.5, 0, 1)*255 in float32. */
void vae_image_to_rgb8(uint8_t *rgb, const float *image, int b, int height, int width);

#endif
