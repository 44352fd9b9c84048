/* png.h: read and write PNG files (libpng), with text chunks.
 *
 * Writing: 8-bit RGB, text chunks as tEXt when the text is Latin-1
 * representable (it is converted from UTF-8), else iTXt (UTF-8,
 * uncompressed) -- what PIL, A1111 and image tools read.  Files are written
 * to a hidden temporary name in the same folder, fsync'd and renamed into
 * place, so no reader ever sees a partial PNG.
 *
 * Reading: any PNG colour type and bit depth as 8-bit RGB or grey, the way
 * PIL's Image.convert("RGB") / convert("L") sees it (see png.c for the
 * details on alpha and 16-bit samples).  A broken, truncated or non-PNG file
 * or one over the pixel limit is an SD_EDATA error naming the file; a
 * missing file is SD_ENOINPUT. */
#ifndef SD_PNG_H
#define SD_PNG_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "io/image.h"

/* One text chunk: key (1-79 Latin-1 characters, no leading, trailing or
 * double spaces) and text, both UTF-8. */
struct png_text {
	const char *key;
	const char *text;
};

/* The default limit on width*height when reading (16384 x 16384). */
#define PNG_DEFAULT_MAX_PIXELS ((uint64_t)16384 * 16384)

/* Encode an 8-bit RGB image (width*height*3 bytes, rows packed) with ntexts
 * text chunks into a malloc'd buffer *out of *size bytes. */
int png_encode_rgb(const uint8_t *rgb, int width, int height,
    const struct png_text *texts, int ntexts, uint8_t **out, size_t *size,
    struct sd_error *err);

/* Write an 8-bit RGB PNG to path atomically (temporary file in the same
 * folder, fsync, rename); the temporary file is removed on any error. */
int png_write_rgb(const char *path, const uint8_t *rgb, int width, int height,
    const struct png_text *texts, int ntexts, struct sd_error *err);

/* Set the largest width*height png_read_* accept (0: the default). */
void png_set_max_pixels(uint64_t max_pixels);
/* The limit now (JPEG inputs are checked against it too, before decoding). */
uint64_t png_max_pixels(void);

/* Read path as 8-bit RGB (out->channels = 3).  Grey is replicated, palettes
 * are expanded, alpha (and tRNS) is dropped, 16-bit samples keep their high
 * byte.  out is allocated; free it with image_free. */
int png_read_rgb(const char *path, struct sd_image_u8 *out, struct sd_error *err);

/* Read path as 8-bit grey (out->channels = 1), e.g. a mask: grey PNGs as
 * they are (alpha dropped), colour ones converted as PIL's convert("L"). */
int png_read_grey(const char *path, struct sd_image_u8 *out, struct sd_error *err);

/* Read path as 8-bit RGB (channels 3) or grey (channels 1). */
int png_read(const char *path, int channels, struct sd_image_u8 *out,
    struct sd_error *err);

/* The text of the first text chunk (tEXt, zTXt or iTXt, before or after
 * the image data) whose keyword is key, as a malloc'd UTF-8 string in
 * *value.  Returns 1 when found, 0 when absent (*value = NULL), -1 on
 * error.  If type is not NULL it gets "tEXt", "zTXt" or "iTXt". */
int png_read_text(const char *path, const char *key, char **value,
    const char **type, struct sd_error *err);

#endif
