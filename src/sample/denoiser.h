/* denoiser.h: (latents, timestep, conditioning) -> the model's prediction
 * (noise, v, ...), whatever network computes it.
 *
 * SD 1.x, 2.x and XL denoise with the UNet (model/unet.h), SD3 with the
 * MMDiT (model/mmdit.h): both implement the same five operations.  The
 * samplers and the pipeline see only this interface. */
#ifndef SD_DENOISER_H
#define SD_DENOISER_H

#include "core/error.h"
#include "core/ops.h"
#include "sample/conditioner.h"
#include "sample/description.h"

struct denoiser {
	int in_channels;	/* latent channels (+ mask and masked image: 9) */
	int out_channels;
	int context_dim;	/* the width of the conditioning's context */
	void *impl;
	/* 0 when latents of h x w fit, else -1 with err */
	int (*check_size)(void *impl, int h, int w, struct sd_error *err);
	/* out [b, out_channels, h, w] for x [b, in_channels, h, w] at
	 * timesteps [b] (host) */
	int (*forward)(void *impl, struct sd_ctx *c, float *out, const float *x, int b, int h,
	    int w, const float *timesteps, const struct conditioning *cond, struct sd_error *err);
	/* the conditioning stays the same for the calls that follow (caches
	 * what depends on it alone); clear before it changes */
	void (*set_conditioning)(void *impl, struct sd_ctx *c, const struct conditioning *cond, int b);
	void (*clear_conditioning)(void *impl);
	void (*free)(void *impl);
};

/* The denoiser of description d from the weights w; NULL with err. */
struct denoiser *denoiser_load(const struct model_desc *d, const struct sd_weights *w,
    struct sd_error *err);
void denoiser_free(struct denoiser *dn);

#endif
