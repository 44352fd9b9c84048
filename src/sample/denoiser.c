/* denoiser.c: the UNet behind the denoiser interface. */
#include "config.h"

#include <stdlib.h>

#include "model/unet.h"
#include "sample/denoiser.h"

static int
unet_check(void *impl, int h, int w, struct sd_error *err)
{
	return unet_check_size(impl, h, w, err);
}

static int
unet_run(void *impl, struct sd_ctx *c, float *out, const float *x, int b, int h, int w,
    const float *timesteps, const struct conditioning *cond, struct sd_error *err)
{
	struct unet_added add = { cond->pooled, cond->pooled_dim, cond->time_ids };

	return unet_forward_added(impl, c, out, x, b, h, w, timesteps, cond->context, cond->ctx_len,
	    cond->pooled != NULL ? &add : NULL, err);
}

static void
unet_set(void *impl, struct sd_ctx *c, const struct conditioning *cond, int b)
{
	unet_set_context(impl, c, cond->context, b, cond->ctx_len);
}

static void
unet_clear(void *impl)
{
	unet_clear_context(impl);
}

static void
unet_release(void *impl)
{
	unet_free(impl);
}

struct denoiser *
denoiser_load(const struct model_desc *d, const struct sd_weights *w, struct sd_error *err)
{
	struct denoiser *dn = calloc(1, sizeof *dn);
	struct unet *u;

	if (dn == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		return NULL;
	}
	if ((u = unet_load(w, d->unet_prefix, &d->unet, err)) == NULL) {
		free(dn);
		return NULL;
	}
	dn->impl = u;
	dn->in_channels = u->in_channels;
	dn->out_channels = u->out_channels;
	dn->context_dim = u->context_dim;
	dn->check_size = unet_check;
	dn->forward = unet_run;
	dn->set_conditioning = unet_set;
	dn->clear_conditioning = unet_clear;
	dn->free = unet_release;
	return dn;
}

void
denoiser_free(struct denoiser *dn)
{
	if (dn == NULL)
		return;
	dn->free(dn->impl);
	free(dn);
}
