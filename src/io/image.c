/* image.c: 8-bit images and diffusers' conversions (see image.h). */
#include "config.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "io/image.h"

/* The largest width or height image_alloc and the resize accept. */
#define IMAGE_MAX_DIMENSION (1 << 20)

int
image_alloc(struct sd_image_u8 *img, int width, int height, int channels,
    struct sd_error *err)
{
	memset(img, 0, sizeof *img);
	if (width < 1 || height < 1 || width > IMAGE_MAX_DIMENSION ||
	    height > IMAGE_MAX_DIMENSION || channels < 1 || channels > 4)
		return sd_fail(err, SD_EINTERNAL, "bad image size %dx%dx%d", width, height, channels);
	img->data = malloc((size_t)width * (size_t)height * (size_t)channels);
	if (img->data == NULL)
		return sd_fail(err, SD_EINTERNAL, "out of memory for a %dx%d image", width, height);
	img->width = width;
	img->height = height;
	img->channels = channels;
	return 0;
}

void
image_free(struct sd_image_u8 *img)
{
	if (img == NULL)
		return;
	free(img->data);
	memset(img, 0, sizeof *img);
}

void
image_u8_to_f32(const uint8_t *rgb, int width, int height, float *out)
{
	size_t plane = (size_t)width * (size_t)height;

	for (size_t i = 0; i < plane; i++) {
		for (int ch = 0; ch < 3; ch++) {
			float v = (float)rgb[3 * i + (size_t)ch] / 255.0f;
			/* 2*v is exact, so this is one rounding with or without FMA. */
			out[(size_t)ch * plane + i] = 2.0f * v - 1.0f;
		}
	}
}

void
image_f32_to_u8(const float *x, int width, int height, uint8_t *rgb)
{
	size_t plane = (size_t)width * (size_t)height;

	for (size_t i = 0; i < plane; i++) {
		for (int ch = 0; ch < 3; ch++) {
			float v = x[(size_t)ch * plane + i] / 2.0f + 0.5f;
			if (!(v >= 0.0f))	/* NaN too */
				v = 0.0f;
			if (v > 1.0f)
				v = 1.0f;
			v = v * 255.0f;
			/* nearbyintf rounds half to even in the default mode. */
			rgb[3 * i + (size_t)ch] = (uint8_t)nearbyintf(v);
		}
	}
}

void
image_mask_binarize(const uint8_t *grey, size_t n, uint8_t *out)
{
	for (size_t i = 0; i < n; i++)
		out[i] = grey[i] >= 128;
}

void
image_mask_binarize_f32(const uint8_t *grey, size_t n, float *out)
{
	for (size_t i = 0; i < n; i++)
		out[i] = grey[i] >= 128 ? 1.0f : 0.0f;
}

/* torch's nearest source index (upsample_nearest: floorf(i*scale)). */
static int
nearest_index(int i, int in, int out)
{
	float scale;
	int s;

	if (in == out)
		return i;
	if (out == 2 * in)
		return i >> 1;
	scale = (float)in / (float)out;
	s = (int)floorf((float)i * scale);
	return s < in - 1 ? s : in - 1;
}

void
image_mask_downsample_nearest(const uint8_t *mask, int width, int height,
    int factor, uint8_t *out)
{
	int ow = width / factor, oh = height / factor;

	for (int i = 0; i < oh; i++) {
		int si = nearest_index(i, height, oh);
		for (int j = 0; j < ow; j++)
			out[(size_t)i * ow + j] = mask[(size_t)si * width + nearest_index(j, width, ow)];
	}
}

void
image_rgb_to_grey(const uint8_t *rgb, size_t n, uint8_t *grey)
{
	/* In place (grey == rgb) is fine: pixel i is read before byte i is written. */
	for (size_t i = 0; i < n; i++) {
		uint32_t r = rgb[3 * i], g = rgb[3 * i + 1], b = rgb[3 * i + 2];
		grey[i] = (uint8_t)((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16);
	}
}

/* ---------------------------------------------------------------- Lanczos
 * Pillow's libImaging/Resample.c, for 8-bit channels: double-precision
 * filter weights normalised per output pixel, converted to fixed point with
 * PRECISION_BITS fraction bits (rounded away from zero), accumulated in a
 * 32-bit int starting at one half, then shifted and clipped to 0..255. */

#define PRECISION_BITS (32 - 8 - 2)
#define LANCZOS_SUPPORT 3.0
#define PI 3.14159265358979323846

static double
sinc_filter(double x)
{
	if (x == 0.0)
		return 1.0;
	x = x * PI;
	return sin(x) / x;
}

static double
lanczos_filter(double x)
{
	if (-3.0 <= x && x < 3.0)
		return sinc_filter(x) * sinc_filter(x / 3);
	return 0.0;
}

/* Pillow's precompute_coeffs + normalize_coeffs_8bpc for in_size -> out_size
 * over the box [0, in_size).  Returns ksize (coefficients per output
 * pixel), or -1 when out of memory. */
static int
precompute_coeffs(int in_size, int out_size, int **boundsp, int32_t **kkp)
{
	double support, scale, filterscale, center, ww, ss;
	double *kk, *k;
	int32_t *ikk;
	int *bounds, ksize, xmin, xmax;

	filterscale = scale = (double)in_size / out_size;
	if (filterscale < 1.0)
		filterscale = 1.0;
	support = LANCZOS_SUPPORT * filterscale;
	ksize = (int)ceil(support) * 2 + 1;
	kk = malloc((size_t)out_size * (size_t)ksize * sizeof *kk);
	ikk = malloc((size_t)out_size * (size_t)ksize * sizeof *ikk);
	bounds = malloc((size_t)out_size * 2 * sizeof *bounds);
	if (kk == NULL || ikk == NULL || bounds == NULL) {
		free(kk);
		free(ikk);
		free(bounds);
		return -1;
	}
	for (int xx = 0; xx < out_size; xx++) {
		int x;

		center = (xx + 0.5) * scale;
		ww = 0.0;
		ss = 1.0 / filterscale;
		xmin = (int)(center - support + 0.5);
		if (xmin < 0)
			xmin = 0;
		xmax = (int)(center + support + 0.5);
		if (xmax > in_size)
			xmax = in_size;
		xmax -= xmin;
		k = &kk[(size_t)xx * ksize];
		for (x = 0; x < xmax; x++) {
			double w = lanczos_filter((x + xmin - center + 0.5) * ss);
			k[x] = w;
			ww += w;
		}
		for (x = 0; x < xmax; x++)
			if (ww != 0.0)
				k[x] /= ww;
		for (; x < ksize; x++)
			k[x] = 0;
		bounds[xx * 2 + 0] = xmin;
		bounds[xx * 2 + 1] = xmax;
	}
	for (size_t i = 0; i < (size_t)out_size * (size_t)ksize; i++) {
		if (kk[i] < 0)
			ikk[i] = (int32_t)(-0.5 + kk[i] * (1 << PRECISION_BITS));
		else
			ikk[i] = (int32_t)(0.5 + kk[i] * (1 << PRECISION_BITS));
	}
	free(kk);
	*boundsp = bounds;
	*kkp = ikk;
	return ksize;
}

static uint8_t
clip8(int32_t in)
{
	if (in >= (1 << PRECISION_BITS << 8))
		return 255;
	if (in <= 0)
		return 0;
	return (uint8_t)(in >> PRECISION_BITS);
}

/* Horizontal pass: rows [row0, row0 + out_h) of in (width in_w) into out. */
static void
resample_horizontal(uint8_t *out, int out_w, int out_h, const uint8_t *in,
    int in_w, int row0, int c, int ksize, const int *bounds, const int32_t *kk)
{
	for (int yy = 0; yy < out_h; yy++) {
		const uint8_t *src = in + (size_t)(yy + row0) * in_w * c;
		uint8_t *dst = out + (size_t)yy * out_w * c;
		for (int xx = 0; xx < out_w; xx++) {
			int xmin = bounds[xx * 2], xmax = bounds[xx * 2 + 1];
			const int32_t *k = &kk[(size_t)xx * ksize];
			for (int ch = 0; ch < c; ch++) {
				int32_t ss = 1 << (PRECISION_BITS - 1);
				for (int x = 0; x < xmax; x++)
					ss += src[(size_t)(x + xmin) * c + ch] * k[x];
				dst[(size_t)xx * c + ch] = clip8(ss);
			}
		}
	}
}

/* Vertical pass: in (width w) into out (out_h rows); bounds relative to in. */
static void
resample_vertical(uint8_t *out, int w, int out_h, const uint8_t *in, int c,
    int ksize, const int *bounds, const int32_t *kk)
{
	size_t row = (size_t)w * c;

	for (int yy = 0; yy < out_h; yy++) {
		int ymin = bounds[yy * 2], ymax = bounds[yy * 2 + 1];
		const int32_t *k = &kk[(size_t)yy * ksize];
		uint8_t *dst = out + (size_t)yy * row;
		for (size_t i = 0; i < row; i++) {
			int32_t ss = 1 << (PRECISION_BITS - 1);
			for (int y = 0; y < ymax; y++)
				ss += in[(size_t)(y + ymin) * row + i] * k[y];
			dst[i] = clip8(ss);
		}
	}
}

int
image_resize_lanczos(const struct sd_image_u8 *src, int width, int height,
    struct sd_image_u8 *dst, struct sd_error *err)
{
	int *bh = NULL, *bv = NULL, kh, kv, c = src->channels, y_first, y_last;
	int32_t *kkh = NULL, *kkv = NULL;
	int need_h = width != src->width, need_v = height != src->height;
	uint8_t *tmp = NULL;
	const uint8_t *in = src->data;
	int in_w = src->width, rc = -1;

	memset(dst, 0, sizeof *dst);
	if (src->data == NULL || src->width < 1 || src->height < 1 ||
	    c < 1 || c > 4)
		return sd_fail(err, SD_EINTERNAL, "resize: bad source image");
	if (image_alloc(dst, width, height, c, err) < 0)
		return -1;
	if (!need_h && !need_v) {
		memcpy(dst->data, src->data, (size_t)width * height * c);
		return 0;
	}
	kh = precompute_coeffs(src->width, width, &bh, &kkh);
	kv = precompute_coeffs(src->height, height, &bv, &kkv);
	if (kh < 0 || kv < 0)
		goto oom;
	/* The source rows the vertical pass uses. */
	y_first = bv[0];
	y_last = bv[height * 2 - 2] + bv[height * 2 - 1];
	if (need_h) {
		for (int i = 0; i < height; i++)
			bv[i * 2] -= y_first;
		if (need_v && (tmp = malloc((size_t)width * (size_t)(y_last - y_first) * c)) == NULL)
			goto oom;
		resample_horizontal(need_v ? tmp : dst->data, width, y_last - y_first,
		    src->data, src->width, y_first, c, kh, bh, kkh);
		in = tmp;
		in_w = width;
	}
	if (need_v)
		resample_vertical(dst->data, in_w, height, in, c, kv, bv, kkv);
	rc = 0;
	goto out;
oom:
	sd_fail(err, SD_EINTERNAL, "out of memory resizing a %dx%d image to %dx%d",
	    src->width, src->height, width, height);
	image_free(dst);
out:
	free(tmp);
	free(bh);
	free(bv);
	free(kkh);
	free(kkv);
	return rc;
}
