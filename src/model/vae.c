/* vae.c: the SD 1.5 AutoencoderKL, decoder and encoder, over core/ops.h.
 * SD 1.x/2.x/SDXL have 4 latent channels and the 1x1 quant_conv and
 * post_quant_conv around them; SD3's VAE has 16 and neither (diffusers'
 * use_quant_conv/use_post_quant_conv false): the latent width comes from
 * the tensors, the quant convs are used when the file has them.
 *
 * The original (CompVis) layout:
 *   decoder: conv_in, mid.{block_1, attn_1, block_2}, up.3 .. up.0 (applied
 *            in that order; each 3 resnets "block.N", up.3 .. up.1 end with
 *            "upsample.conv"), norm_out, conv_out
 *   encoder: conv_in, down.0 .. down.3 (each 2 resnets, down.0 .. down.2 end
 *            with "downsample.conv"), mid, norm_out, conv_out
 * A resnet is norm1, conv1, norm2, conv2 (+ a 1x1 nin_shortcut when its
 * input and output widths differ); no time embedding.
 *
 * Memory: batch items run one at a time.  Each forward takes two ping-pong
 * buffers as large as its largest activation; a resnet adds one temporary
 * the size of its output, the mid attention four latent-sized ones.  SD 1.5
 * at 512x512: 2 x 256 MiB (256 channels at 512x512, the upsample of up.1)
 * + 128 MiB to decode; 2 x 128 MiB + 128 MiB to encode. */
#include "config.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/vae.h"

#define LEVELS		4	/* block_out_channels has 4 entries */
#define ENC_BLOCKS	2	/* layers_per_block */
#define DEC_BLOCKS	3	/* layers_per_block + 1 */
#define GROUPS		32
#define NORM_EPS	1e-6f

struct norm {
	const struct sd_tensor *weight, *bias;
};

struct conv {
	const struct sd_tensor *weight, *bias;
};

struct resnet {
	int cin, cout;
	struct norm norm1, norm2;
	struct conv conv1, conv2;
	struct conv nin_shortcut;	/* weight NULL when cin == cout */
};

struct attention {
	int ch;
	struct norm norm;
	struct conv q, k, v, proj_out;	/* [C, C, 1, 1] or [C, C] */
};

struct mid {
	struct resnet block_1, block_2;
	struct attention attn_1;
};

struct level {
	int nblocks;
	struct resnet block[DEC_BLOCKS];
	struct conv resample;	/* upsample.conv / downsample.conv; NULL weight: none */
};

struct coder {
	int in_ch, out_ch;	/* conv_in input, conv_out output */
	struct conv conv_in;
	struct level level[LEVELS];
	struct mid mid;
	struct norm norm_out;
	struct conv conv_out;
};

struct vae {
	int zc;			/* latent channels */
	int has_encoder;
	struct conv post_quant_conv, quant_conv;
	struct coder decoder, encoder;
	vae_debug_fn debug;
	void *debug_user;
};

/* ---- loading ---- */

struct loader {
	const struct sd_weights *w;
	const char *prefix;
	struct sd_error *err;
	int failed;
};

/* The tensor "<prefix><name>" of exactly ndim dims d0.. (-1: any); NULL and
 * l->failed on any problem (the first error is kept). */
static const struct sd_tensor *
need(struct loader *l, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2,
    int64_t d3)
{
	const int64_t shape[4] = {d0, d1, d2, d3};
	const struct sd_tensor *t;

	if (l->failed)
		return NULL;
	t = weights_need(l->w, l->err, l->prefix, name, ndim, shape);
	if (t == NULL)
		l->failed = 1;
	return t;
}

static int
fail(struct loader *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int
fail(struct loader *l, const char *fmt, ...)
{
	char msg[SD_ERROR_MAX];
	va_list ap;

	if (l->failed)
		return -1;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	l->failed = 1;
	return sd_fail(l->err, SD_EDATA, "%s", msg);
}

/* A GroupNorm's weight and bias, [ch] each, ch a multiple of the groups. */
static void
load_norm(struct loader *l, struct norm *n, const char *base, int ch)
{
	char name[256];

	snprintf(name, sizeof name, "%s.weight", base);
	n->weight = need(l, name, 1, ch, 0, 0, 0);
	if (n->weight != NULL && ch % GROUPS != 0)
		fail(l, "tensor \"%s%s\" has %d channels, not a multiple of %d groups",
		    l->prefix, name, ch, GROUPS);
	snprintf(name, sizeof name, "%s.bias", base);
	n->bias = need(l, name, 1, ch, 0, 0, 0);
}

/* A k x k conv from cin channels; returns its output width (cout -1: read
 * it from the weight), or -1. */
static int
load_conv(struct loader *l, struct conv *c, const char *base, int cout, int cin, int k)
{
	char name[256];

	snprintf(name, sizeof name, "%s.weight", base);
	c->weight = need(l, name, 4, cout, cin, k, k);
	if (c->weight == NULL)
		return -1;
	cout = (int)c->weight->shape[0];
	if (cout < 1)
		return fail(l, "tensor \"%s%s\" has no output channels", l->prefix, name);
	snprintf(name, sizeof name, "%s.bias", base);
	c->bias = need(l, name, 1, cout, 0, 0, 0);
	return c->bias ? cout : -1;
}

/* A 1x1 conv [ch, ch, 1, 1] or its linear form [ch, ch] (diffusers' mid
 * attention), with bias [ch]. */
static void
load_proj(struct loader *l, struct conv *c, const char *base, int ch)
{
	char name[256], got[160];
	const struct sd_tensor *t;

	snprintf(name, sizeof name, "%s.weight", base);
	t = need(l, name, 0, 0, 0, 0, 0);
	if (t == NULL)
		return;
	if (!sd_tensor_has_shape(t, 4, (int64_t)ch, (int64_t)ch, (int64_t)1, (int64_t)1) &&
	    !sd_tensor_has_shape(t, 2, (int64_t)ch, (int64_t)ch)) {
		fail(l, "tensor \"%s%s\" has shape %s, expected [%d, %d, 1, 1] or [%d, %d]",
		    l->prefix, name, sd_shape_str(t, got, sizeof got), ch, ch, ch, ch);
		return;
	}
	c->weight = t;
	snprintf(name, sizeof name, "%s.bias", base);
	c->bias = need(l, name, 1, ch, 0, 0, 0);
}

/* A resnet taking cin channels; returns its output width, or -1. */
static int
load_resnet(struct loader *l, struct resnet *r, const char *base, int cin)
{
	char name[256];
	int cout;

	r->cin = cin;
	snprintf(name, sizeof name, "%s.norm1", base);
	load_norm(l, &r->norm1, name, cin);
	snprintf(name, sizeof name, "%s.conv1", base);
	cout = load_conv(l, &r->conv1, name, -1, cin, 3);
	if (cout < 0)
		return -1;
	r->cout = cout;
	snprintf(name, sizeof name, "%s.norm2", base);
	load_norm(l, &r->norm2, name, cout);
	snprintf(name, sizeof name, "%s.conv2", base);
	load_conv(l, &r->conv2, name, cout, cout, 3);
	if (cin != cout) {
		snprintf(name, sizeof name, "%s.nin_shortcut", base);
		load_conv(l, &r->nin_shortcut, name, cout, cin, 1);
	}
	return l->failed ? -1 : cout;
}

/* The mid block at width ch: resnet, attention, resnet. */
static void
load_mid(struct loader *l, struct mid *m, const char *base, int ch)
{
	char name[256];
	struct attention *a = &m->attn_1;

	snprintf(name, sizeof name, "%s.block_1", base);
	if (load_resnet(l, &m->block_1, name, ch) != ch) {
		fail(l, "%s%s changes the width (%d -> %d)", l->prefix, name, ch,
		    m->block_1.cout);
		return;
	}
	a->ch = ch;
	snprintf(name, sizeof name, "%s.attn_1.norm", base);
	load_norm(l, &a->norm, name, ch);
	snprintf(name, sizeof name, "%s.attn_1.q", base);
	load_proj(l, &a->q, name, ch);
	snprintf(name, sizeof name, "%s.attn_1.k", base);
	load_proj(l, &a->k, name, ch);
	snprintf(name, sizeof name, "%s.attn_1.v", base);
	load_proj(l, &a->v, name, ch);
	snprintf(name, sizeof name, "%s.attn_1.proj_out", base);
	load_proj(l, &a->proj_out, name, ch);
	snprintf(name, sizeof name, "%s.block_2", base);
	if (load_resnet(l, &m->block_2, name, ch) != ch)
		fail(l, "%s%s changes the width (%d -> %d)", l->prefix, name, ch,
		    m->block_2.cout);
}

static int
load_decoder(struct loader *l, struct coder *d, int zc)
{
	char name[256];
	int ch;

	d->in_ch = zc;
	ch = load_conv(l, &d->conv_in, "decoder.conv_in", -1, zc, 3);
	if (ch < 0)
		return -1;
	load_mid(l, &d->mid, "decoder.mid", ch);
	for (int i = LEVELS - 1; i >= 0 && !l->failed; i--) {
		struct level *lv = &d->level[i];
		lv->nblocks = DEC_BLOCKS;
		for (int j = 0; j < DEC_BLOCKS && !l->failed; j++) {
			snprintf(name, sizeof name, "decoder.up.%d.block.%d", i, j);
			ch = load_resnet(l, &lv->block[j], name, ch);
		}
		if (i > 0) {
			snprintf(name, sizeof name, "decoder.up.%d.upsample.conv", i);
			load_conv(l, &lv->resample, name, ch, ch, 3);
		}
	}
	load_norm(l, &d->norm_out, "decoder.norm_out", ch);
	d->out_ch = load_conv(l, &d->conv_out, "decoder.conv_out", -1, ch, 3);
	if (!l->failed && d->out_ch != 3)
		fail(l, "tensor \"%sdecoder.conv_out.weight\" makes %d channels, not RGB",
		    l->prefix, d->out_ch);
	return l->failed ? -1 : 0;
}

static int
load_encoder(struct loader *l, struct coder *e, int zc)
{
	char name[256];
	int ch;

	e->in_ch = 3;
	ch = load_conv(l, &e->conv_in, "encoder.conv_in", -1, 3, 3);
	if (ch < 0)
		return -1;
	for (int i = 0; i < LEVELS && !l->failed; i++) {
		struct level *lv = &e->level[i];
		lv->nblocks = ENC_BLOCKS;
		for (int j = 0; j < ENC_BLOCKS && !l->failed; j++) {
			snprintf(name, sizeof name, "encoder.down.%d.block.%d", i, j);
			ch = load_resnet(l, &lv->block[j], name, ch);
		}
		if (i < LEVELS - 1) {
			snprintf(name, sizeof name, "encoder.down.%d.downsample.conv", i);
			load_conv(l, &lv->resample, name, ch, ch, 3);
		}
	}
	load_mid(l, &e->mid, "encoder.mid", ch);
	load_norm(l, &e->norm_out, "encoder.norm_out", ch);
	e->out_ch = load_conv(l, &e->conv_out, "encoder.conv_out", 2 * zc, ch, 3);
	return l->failed ? -1 : 0;
}

/* Whether the weights have "<prefix><base>.weight" or "....bias". */
static int
has_conv(const struct loader *l, const char *base)
{
	char name[256];

	snprintf(name, sizeof name, "%s%s.weight", l->prefix, base);
	if (weights_get(l->w, name) != NULL)
		return 1;
	snprintf(name, sizeof name, "%s%s.bias", l->prefix, base);
	return weights_get(l->w, name) != NULL;
}

struct vae *
vae_load(const struct sd_weights *w, const char *prefix, struct sd_error *err)
{
	struct loader l = {w, prefix ? prefix : "", err, 0};
	const struct sd_tensor *t;
	char name[256];
	struct vae *v;
	int quant;

	v = calloc(1, sizeof *v);
	if (v == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		return NULL;
	}
	quant = has_conv(&l, "post_quant_conv");
	if (quant) {
		v->zc = load_conv(&l, &v->post_quant_conv, "post_quant_conv", -1, -1, 1);
		if (v->zc > 0 && v->post_quant_conv.weight->shape[1] != v->zc)
			fail(&l, "tensor \"%spost_quant_conv.weight\" is not square", l.prefix);
	} else {
		/* no quant convs (SD3): the decoder takes the latents */
		t = need(&l, "decoder.conv_in.weight", 4, -1, -1, 3, 3);
		v->zc = t != NULL ? (int)t->shape[1] : -1;
		if (t != NULL && v->zc < 1)
			fail(&l, "tensor \"%sdecoder.conv_in.weight\" has no input channels",
			    l.prefix);
	}
	if (!l.failed)
		load_decoder(&l, &v->decoder, v->zc);
	snprintf(name, sizeof name, "%sencoder.conv_in.weight", l.prefix);
	if (!l.failed && weights_get(w, name) != NULL) {
		load_encoder(&l, &v->encoder, v->zc);
		/* both quant convs or neither */
		if (!l.failed && has_conv(&l, "quant_conv") != quant)
			fail(&l, "tensor \"%s%s.weight\" is missing (the VAE has a %s)",
			    l.prefix, quant ? "quant_conv" : "post_quant_conv",
			    quant ? "post_quant_conv" : "quant_conv");
		if (quant)
			load_conv(&l, &v->quant_conv, "quant_conv", 2 * v->zc, 2 * v->zc, 1);
		v->has_encoder = !l.failed;
	}
	if (l.failed) {
		free(v);
		return NULL;
	}
	return v;
}

void
vae_free(struct vae *v)
{
	free(v);
}

int
vae_has_encoder(const struct vae *v)
{
	return v->has_encoder;
}

int
vae_latent_channels(const struct vae *v)
{
	return v->zc;
}

void
vae_set_debug(struct vae *v, vae_debug_fn fn, void *user)
{
	v->debug = fn;
	v->debug_user = user;
}

/* ---- forward ---- */

/* One batch item's activations: x is the current one, y the other buffer. */
struct act {
	float *x, *y;
	int ch, h, w;
};

static void
swap(struct act *a)
{
	float *t = a->x;

	a->x = a->y;
	a->y = t;
}

static void
debug_hook(struct vae *v, const char *name, int index, const struct act *a)
{
	if (v->debug != NULL)
		v->debug(v->debug_user, name, index, a->x, a->ch, a->h, a->w);
}

static size_t
max_size(size_t m, int ch, int h, int w)
{
	size_t n = (size_t)ch * (size_t)h * (size_t)w;

	return n > m ? n : m;
}

/* y = x + conv2(silu(norm2(conv1(silu(norm1(x)))))), the x term through
 * nin_shortcut when the width changes; a resnet keeps the spatial size.
 * x is clobbered.  One temporary of the output's size. */
static void
resnet_forward(struct sd_ctx *c, const struct resnet *r, float *y, float *x, int h, int w)
{
	size_t hw = (size_t)h * (size_t)w, n = (size_t)r->cout * hw, mark = sd_mark(c);
	float *t = sd_alloc(c, n);

	if (r->nin_shortcut.weight != NULL) {
		/* shortcut first, then x is free for the norm in place */
		op_conv2d(c, y, x, 1, r->cin, h, w, r->nin_shortcut.weight,
		    r->nin_shortcut.bias, 1, 0);
		op_group_norm(c, x, x, 1, r->cin, (int)hw, GROUPS, NORM_EPS,
		    r->norm1.weight, r->norm1.bias, 1);
		op_conv2d(c, t, x, 1, r->cin, h, w, r->conv1.weight, r->conv1.bias, 1, 1);
		op_group_norm(c, t, t, 1, r->cout, (int)hw, GROUPS, NORM_EPS,
		    r->norm2.weight, r->norm2.bias, 1);
		op_conv2d(c, x, t, 1, r->cout, h, w, r->conv2.weight, r->conv2.bias, 1, 1);
		op_add(c, y, y, x, n);
	} else {
		op_group_norm(c, t, x, 1, r->cin, (int)hw, GROUPS, NORM_EPS,
		    r->norm1.weight, r->norm1.bias, 1);
		op_conv2d(c, y, t, 1, r->cin, h, w, r->conv1.weight, r->conv1.bias, 1, 1);
		op_group_norm(c, y, y, 1, r->cout, (int)hw, GROUPS, NORM_EPS,
		    r->norm2.weight, r->norm2.bias, 1);
		op_conv2d(c, t, y, 1, r->cout, h, w, r->conv2.weight, r->conv2.bias, 1, 1);
		op_add(c, y, x, t, n);
	}
	sd_release(c, mark);
}

/* The mid attention: one head of width C over the h*w positions,
 * y = x + proj_out(attention(q, k, v of GroupNorm(x))). */
static void
attention_forward(struct sd_ctx *c, const struct attention *a, float *y, const float *x,
    int h, int w)
{
	int ch = a->ch, hw = h * w;
	size_t n = (size_t)ch * (size_t)hw, mark = sd_mark(c);
	float *t = sd_alloc(c, n), *q = sd_alloc(c, n), *k = sd_alloc(c, n);
	float *v = sd_alloc(c, n);

	op_group_norm(c, y, x, 1, ch, hw, GROUPS, NORM_EPS, a->norm.weight, a->norm.bias, 0);
	op_transpose(c, t, y, 1, ch, hw);	/* [hw, ch] tokens */
	op_linear(c, q, t, hw, ch, a->q.weight, a->q.bias);
	op_linear(c, k, t, hw, ch, a->k.weight, a->k.bias);
	op_linear(c, v, t, hw, ch, a->v.weight, a->v.bias);
	op_attention(c, t, q, ch, k, ch, v, ch, 1, hw, hw, 1, ch,
	    (float)(1.0 / sqrt((double)ch)), 0);
	op_linear(c, q, t, hw, ch, a->proj_out.weight, a->proj_out.bias);
	op_transpose(c, t, q, 1, hw, ch);	/* back to [ch, hw] */
	op_add(c, y, x, t, n);
	sd_release(c, mark);
}

static void
mid_forward(struct sd_ctx *c, const struct mid *m, struct act *a)
{
	resnet_forward(c, &m->block_1, a->y, a->x, a->h, a->w);
	swap(a);
	attention_forward(c, &m->attn_1, a->y, a->x, a->h, a->w);
	swap(a);
	resnet_forward(c, &m->block_2, a->y, a->x, a->h, a->w);
	swap(a);
}

/* The largest activation of the decoder for h x w latents. */
static size_t
decoder_max(const struct vae *v, int h, int w)
{
	const struct coder *d = &v->decoder;
	size_t m = max_size(0, v->zc, h, w);

	m = max_size(m, d->mid.attn_1.ch, h, w);
	for (int i = LEVELS - 1; i >= 0; i--) {
		const struct level *lv = &d->level[i];
		for (int j = 0; j < lv->nblocks; j++)
			m = max_size(m, lv->block[j].cout, h, w);
		if (lv->resample.weight != NULL) {
			h *= 2;
			w *= 2;
			m = max_size(m, lv->block[lv->nblocks - 1].cout, h, w);
		}
	}
	return m;
}

static void
decode_one(struct vae *v, struct sd_ctx *c, float *image, const float *z, int index,
    int h, int w)
{
	const struct coder *d = &v->decoder;
	size_t mark = sd_mark(c), m = decoder_max(v, h, w);
	struct act a;
	char name[32];

	a.x = sd_alloc(c, m);
	a.y = sd_alloc(c, m);
	a.ch = v->zc;
	a.h = h;
	a.w = w;
	if (v->post_quant_conv.weight != NULL) {
		op_conv2d(c, a.x, z, 1, v->zc, h, w, v->post_quant_conv.weight,
		    v->post_quant_conv.bias, 1, 0);
		debug_hook(v, "post_quant_conv", index, &a);
		op_conv2d(c, a.y, a.x, 1, a.ch, h, w, d->conv_in.weight, d->conv_in.bias,
		    1, 1);
	} else {
		op_conv2d(c, a.y, z, 1, a.ch, h, w, d->conv_in.weight, d->conv_in.bias,
		    1, 1);
	}
	swap(&a);
	a.ch = d->mid.attn_1.ch;
	debug_hook(v, "dec_conv_in", index, &a);
	mid_forward(c, &d->mid, &a);
	debug_hook(v, "dec_mid", index, &a);
	for (int i = LEVELS - 1; i >= 0; i--) {
		const struct level *lv = &d->level[i];
		for (int j = 0; j < lv->nblocks; j++) {
			resnet_forward(c, &lv->block[j], a.y, a.x, a.h, a.w);
			swap(&a);
			a.ch = lv->block[j].cout;
		}
		if (lv->resample.weight != NULL) {
			op_upsample2x(c, a.y, a.x, 1, a.ch, a.h, a.w);
			swap(&a);
			a.h *= 2;
			a.w *= 2;
			op_conv2d(c, a.y, a.x, 1, a.ch, a.h, a.w, lv->resample.weight,
			    lv->resample.bias, 1, 1);
			swap(&a);
		}
		snprintf(name, sizeof name, "dec_up%d", LEVELS - 1 - i);
		debug_hook(v, name, index, &a);
	}
	op_group_norm(c, a.x, a.x, 1, a.ch, a.h * a.w, GROUPS, NORM_EPS,
	    d->norm_out.weight, d->norm_out.bias, 1);
	op_conv2d(c, image, a.x, 1, a.ch, a.h, a.w, d->conv_out.weight, d->conv_out.bias,
	    1, 1);
	sd_release(c, mark);
}

void
vae_decode(struct vae *v, struct sd_ctx *c, float *image, const float *z, int b, int h,
    int w)
{
	size_t zn = (size_t)v->zc * (size_t)h * (size_t)w;
	size_t in = (size_t)v->decoder.out_ch * (size_t)(8 * h) * (size_t)(8 * w);

	for (int i = 0; i < b; i++)
		decode_one(v, c, image + (size_t)i * in, z + (size_t)i * zn, i, h, w);
}

/* The largest activation of the encoder for an H x W image. */
static size_t
encoder_max(const struct vae *v, int h, int w)
{
	const struct coder *e = &v->encoder;
	size_t m = max_size(0, e->level[0].block[0].cin, h, w);

	for (int i = 0; i < LEVELS; i++) {
		const struct level *lv = &e->level[i];
		for (int j = 0; j < lv->nblocks; j++)
			m = max_size(m, lv->block[j].cout, h, w);
		if (lv->resample.weight != NULL) {
			h /= 2;
			w /= 2;
		}
	}
	return max_size(m, e->out_ch, h, w);
}

static void
encode_one(struct vae *v, struct sd_ctx *c, float *moments, const float *image, int index,
    int h, int w)
{
	const struct coder *e = &v->encoder;
	size_t mark = sd_mark(c), m = encoder_max(v, h, w);
	struct act a;
	char name[32];

	a.x = sd_alloc(c, m);
	a.y = sd_alloc(c, m);
	a.ch = e->level[0].block[0].cin;
	a.h = h;
	a.w = w;
	op_conv2d(c, a.x, image, 1, e->in_ch, h, w, e->conv_in.weight, e->conv_in.bias, 1, 1);
	debug_hook(v, "enc_conv_in", index, &a);
	for (int i = 0; i < LEVELS; i++) {
		const struct level *lv = &e->level[i];
		for (int j = 0; j < lv->nblocks; j++) {
			resnet_forward(c, &lv->block[j], a.y, a.x, a.h, a.w);
			swap(&a);
			a.ch = lv->block[j].cout;
		}
		if (lv->resample.weight != NULL) {
			/* pad right and bottom by one, 3x3 stride 2 */
			op_conv2d_pad(c, a.y, a.x, 1, a.ch, a.h, a.w, lv->resample.weight,
			    lv->resample.bias, 2, 0, 0, 1, 1);
			swap(&a);
			a.h = (a.h + 1 - 3) / 2 + 1;
			a.w = (a.w + 1 - 3) / 2 + 1;
		}
		snprintf(name, sizeof name, "enc_down%d", i);
		debug_hook(v, name, index, &a);
	}
	mid_forward(c, &e->mid, &a);
	debug_hook(v, "enc_mid", index, &a);
	op_group_norm(c, a.x, a.x, 1, a.ch, a.h * a.w, GROUPS, NORM_EPS,
	    e->norm_out.weight, e->norm_out.bias, 1);
	if (v->quant_conv.weight == NULL) {
		/* no quant_conv (SD3): conv_out makes the moments */
		op_conv2d(c, moments, a.x, 1, a.ch, a.h, a.w, e->conv_out.weight,
		    e->conv_out.bias, 1, 1);
		a.x = moments;
		a.ch = e->out_ch;
		debug_hook(v, "enc_conv_out", index, &a);
		sd_release(c, mark);
		return;
	}
	op_conv2d(c, a.y, a.x, 1, a.ch, a.h, a.w, e->conv_out.weight, e->conv_out.bias, 1, 1);
	swap(&a);
	a.ch = e->out_ch;
	debug_hook(v, "enc_conv_out", index, &a);
	op_conv2d(c, moments, a.x, 1, a.ch, a.h, a.w, v->quant_conv.weight,
	    v->quant_conv.bias, 1, 0);
	sd_release(c, mark);
}

void
vae_encode(struct vae *v, struct sd_ctx *c, float *moments, const float *image, int b,
    int h, int w)
{
	size_t mn = (size_t)(2 * v->zc) * (size_t)h * (size_t)w;
	size_t in = (size_t)3 * (size_t)(8 * h) * (size_t)(8 * w);

	if (!v->has_encoder)
		return;
	for (int i = 0; i < b; i++)
		encode_one(v, c, moments + (size_t)i * mn, image + (size_t)i * in, i,
		    8 * h, 8 * w);
}

/* ---- host helpers ---- */

void
vae_latent_stats(const struct vae *v, float *mean, float *logvar, float *std,
    const float *moments, int b, int h, int w)
{
	size_t hw = (size_t)h * (size_t)w, n = (size_t)v->zc * hw;

	for (int i = 0; i < b; i++) {
		const float *mu = moments + (size_t)i * 2 * n, *lv = mu + n;
		for (size_t j = 0; j < n; j++) {
			float l = fminf(fmaxf(lv[j], -30.0f), 20.0f);
			if (mean != NULL)
				mean[(size_t)i * n + j] = mu[j];
			if (logvar != NULL)
				logvar[(size_t)i * n + j] = l;
			if (std != NULL)
				std[(size_t)i * n + j] = expf(0.5f * l);
		}
	}
}

void
vae_latent_sample(const struct vae *v, float *sample, const float *moments,
    const float *noise, int b, int h, int w)
{
	size_t hw = (size_t)h * (size_t)w, n = (size_t)v->zc * hw;

	for (int i = 0; i < b; i++) {
		const float *mu = moments + (size_t)i * 2 * n, *lv = mu + n;
		for (size_t j = 0; j < n; j++) {
			float l = fminf(fmaxf(lv[j], -30.0f), 20.0f);
			float s = mu[j];
			if (noise != NULL)
				s = mu[j] + expf(0.5f * l) * noise[(size_t)i * n + j];
			sample[(size_t)i * n + j] = s;
		}
	}
}

void
vae_image_to_rgb8(uint8_t *rgb, const float *image, int b, int height, int width)
{
	size_t hw = (size_t)height * (size_t)width;

	for (int i = 0; i < b; i++) {
		const float *img = image + (size_t)i * 3 * hw;
		uint8_t *out = rgb + (size_t)i * 3 * hw;
		for (size_t p = 0; p < hw; p++) {
			for (int ch = 0; ch < 3; ch++) {
				float x = img[(size_t)ch * hw + p] / 2.0f + 0.5f;
				x = x > 0.0f ? (x < 1.0f ? x : 1.0f) : 0.0f; /* NaN -> 0 */
				/* nearbyintf: round half to even in the default mode */
				out[p * 3 + (size_t)ch] = (uint8_t)nearbyintf(x * 255.0f);
			}
		}
	}
}
