/* image.h: 8-bit images in memory and the conversions the pipelines need.
 *
 * Every conversion is the one diffusers (numpy/PIL) does, to the bit:
 * u8 -> float in [-1, 1], the binary inpainting mask, float -> u8 with
 * round-half-to-even, PIL's convert("L") and PIL's Lanczos resize. */
#ifndef SD_IMAGE_H
#define SD_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

/* An 8-bit image, interleaved (HWC), rows packed (stride = width*channels). */
struct sd_image_u8 {
	int width, height;
	int channels;		/* 1 (grey), 3 (RGB) or 4 */
	uint8_t *data;		/* malloc'd, width*height*channels bytes */
};

/* Allocate img's pixels (uninitialised); -1 on bad size or out of memory. */
int image_alloc(struct sd_image_u8 *img, int width, int height, int channels,
    struct sd_error *err);
/* Free img's pixels and zero it (img may be zeroed already). */
void image_free(struct sd_image_u8 *img);

/* u8 RGB HWC (width*height*3) -> float [3, height, width] (one NCHW batch
 * item) in [-1, 1]: 2.0f*((float)u/255.0f) - 1.0f, bit-exact with diffusers'
 * VaeImageProcessor (numpy float32). */
void image_u8_to_f32(const uint8_t *rgb, int width, int height, float *out);

/* Float [3, height, width] -> u8 RGB HWC: img = clamp(x/2 + 0.5, 0, 1) in
 * float32, u8 = round-half-to-even(img*255) (numpy's np.round); NaN -> 0. */
void image_f32_to_u8(const float *x, int width, int height, uint8_t *rgb);

/* Inpainting mask: grey u8 (n pixels) -> 0/1 as diffusers binarises it
 * (float32(u8)/255 >= 0.5, i.e. u8 >= 128 -> 1 = repaint). */
void image_mask_binarize(const uint8_t *grey, size_t n, uint8_t *out);
/* The same, into floats 0.0f / 1.0f. */
void image_mask_binarize_f32(const uint8_t *grey, size_t n, float *out);
/* Nearest-neighbour downsampling of a binary mask by an integer factor, as
 * torch's F.interpolate(mode="nearest") to (height/factor, width/factor):
 * out[i][j] = mask[factor*i][factor*j] (the top-left pixel of each block). */
void image_mask_downsample_nearest(const uint8_t *mask, int width, int height,
    int factor, uint8_t *out);

/* PIL's convert("L") of an RGB image (n pixels):
 * (R*19595 + G*38470 + B*7471 + 0x8000) >> 16. */
void image_rgb_to_grey(const uint8_t *rgb, size_t n, uint8_t *grey);

/* Resize src to width x height with PIL's Image.resize(..., Image.LANCZOS)
 * (a = 3; the kernel is widened by the scale when downsampling; separable,
 * horizontal pass first, 22-bit fixed-point coefficients, rounding and
 * clipping to u8 as Pillow's Resample.c).  Equal sizes copy.  dst is
 * allocated (free with image_free); any channel count. */
int image_resize_lanczos(const struct sd_image_u8 *src, int width, int height,
    struct sd_image_u8 *dst, struct sd_error *err);

#endif
