/* jpeg.h: JPEG input images (libjpeg), decoded as PIL decodes them. */
#ifndef SD_JPEG_H
#define SD_JPEG_H

#include <stddef.h>

#include "core/error.h"
#include "io/image.h"

/* True when buf starts like a JPEG file. */
int jpeg_signature(const unsigned char *buf, size_t n);

/* Read a JPEG (baseline or progressive; grey, YCbCr or RGB) as 8-bit RGB
 * (channels 3) or grey (channels 1, PIL's convert("L") of the RGB for a
 * colour file).  CMYK files are refused.  SD_EUNAVAILABLE when sdbatch was
 * built without libjpeg. */
int jpeg_read(const char *path, int channels, struct sd_image_u8 *out, struct sd_error *err);

/* Write 8-bit RGB as a JPEG of the given quality (tests). */
int jpeg_write_rgb(const char *path, const uint8_t *rgb, int width, int height, int quality,
    struct sd_error *err);

#endif
