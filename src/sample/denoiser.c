/* denoiser.c: the UNet (SD 1.x, 2.x, XL) and the MMDiT (SD3) behind the
 * denoiser interface. */
#include "config.h"

#include <stdlib.h>

#include "model/mmdit.h"
#include "model/unet.h"
#include "sample/denoiser.h"

/* ---------------------------------------------------------------- UNet */

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

/* ---------------------------------------------------------------- MMDiT */

static int
mmdit_check(void *impl, int h, int w, struct sd_error *err)
{
	return mmdit_check_size(impl, h, w, err);
}

static int
mmdit_run(void *impl, struct sd_ctx *c, float *out, const float *x, int b, int h, int w,
    const float *timesteps, const struct conditioning *cond, struct sd_error *err)
{
	struct mmdit *m = impl;

	if (cond->pooled == NULL || cond->pooled_dim != m->pooled_dim)
		return sd_fail(err, SD_EDATA, "the MMDiT needs a pooled text vector of %d values "
		    "(got %d: text encoders of another model?)", m->pooled_dim,
		    cond->pooled ? cond->pooled_dim : 0);
	return mmdit_forward(m, c, out, x, b, h, w, timesteps, cond->context, cond->ctx_len,
	    cond->pooled, err);
}

/* The MMDiT's context goes through its joint blocks with the image: there
 * is nothing to compute once for all steps. */
static void
mmdit_set(void *impl, struct sd_ctx *c, const struct conditioning *cond, int b)
{
	(void)impl, (void)c, (void)cond, (void)b;
}

static void
mmdit_clear(void *impl)
{
	(void)impl;
}

static void
mmdit_release(void *impl)
{
	mmdit_free(impl);
}

struct denoiser *
denoiser_load(const struct model_desc *d, const struct sd_weights *w, struct sd_error *err)
{
	struct denoiser *dn = calloc(1, sizeof *dn);

	if (dn == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		return NULL;
	}
	if (d->family == MODEL_SD3) {
		struct mmdit_config cfg = { d->mmdit_heads };
		struct mmdit *m = mmdit_load(w, d->unet_prefix, &cfg, err);
		if (m == NULL) {
			free(dn);
			return NULL;
		}
		dn->impl = m;
		dn->in_channels = m->in_channels;
		dn->out_channels = m->out_channels;
		dn->context_dim = m->ctx_dim;
		dn->check_size = mmdit_check;
		dn->forward = mmdit_run;
		dn->set_conditioning = mmdit_set;
		dn->clear_conditioning = mmdit_clear;
		dn->free = mmdit_release;
		return dn;
	}
	struct unet *u = unet_load(w, d->unet_prefix, &d->unet, err);
	if (u == NULL) {
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
