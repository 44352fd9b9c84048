/* jpeg.c: JPEG input images through libjpeg, with its default decoding
 * (islow DCT, fancy upsampling), which is also what PIL uses. */
#include "config.h"

#include <errno.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/fileio.h"
#include "io/jpeg.h"
#include "io/png.h"

int
jpeg_signature(const unsigned char *buf, size_t n)
{
	return n >= 3 && buf[0] == 0xff && buf[1] == 0xd8 && buf[2] == 0xff;
}

#ifndef HAVE_JPEG

int
jpeg_read(const char *path, int channels, struct sd_image_u8 *out, struct sd_error *err)
{
	(void)channels;
	(void)out;
	return sd_fail(err, SD_EUNAVAILABLE, "%s: JPEG is not supported by this build "
	    "(configured without libjpeg); convert to PNG", path);
}

int
jpeg_write_rgb(const char *path, const uint8_t *rgb, int width, int height, int quality,
    struct sd_error *err)
{
	(void)rgb, (void)width, (void)height, (void)quality;
	return sd_fail(err, SD_EUNAVAILABLE, "%s: built without libjpeg", path);
}

#else

#include <jpeglib.h>
#include <jerror.h>

struct jerr {
	struct jpeg_error_mgr pub;
	jmp_buf jump;
	char msg[JMSG_LENGTH_MAX];
};

static void
on_error(j_common_ptr cinfo)
{
	struct jerr *e = (struct jerr *)cinfo->err;

	(*cinfo->err->format_message)(cinfo, e->msg);
	longjmp(e->jump, 1);
}

static void
on_message(j_common_ptr cinfo)
{
	(void)cinfo;	/* messages are not printed */
}

/* A warning is an error (a truncated file is a warning to libjpeg, which
 * then fills the rest with grey), except extraneous bytes between markers,
 * after which every pixel is still decoded. */
static void
on_emit(j_common_ptr cinfo, int level)
{
	struct jerr *e = (struct jerr *)cinfo->err;

	if (level >= 0 || cinfo->err->msg_code == JWRN_EXTRANEOUS_DATA)
		return;
	(*cinfo->err->format_message)(cinfo, e->msg);
	longjmp(e->jump, 1);
}

/* The decoding proper; pixels into *data (malloc'd). */
static int
decode(FILE *fp, const char *path, int channels, uint8_t **data, int *w, int *h,
    struct sd_error *err)
{
	struct jpeg_decompress_struct cinfo;
	struct jerr jerr;
	uint8_t *volatile pixels = NULL;

	cinfo.err = jpeg_std_error(&jerr.pub);
	jerr.pub.error_exit = on_error;
	jerr.pub.output_message = on_message;
	jerr.pub.emit_message = on_emit;
	if (setjmp(jerr.jump)) {
		jpeg_destroy_decompress(&cinfo);
		free(pixels);
		return sd_fail(err, SD_EDATA, "%s: bad JPEG: %s", path, jerr.msg);
	}
	jpeg_create_decompress(&cinfo);
	jpeg_stdio_src(&cinfo, fp);
	jpeg_read_header(&cinfo, TRUE);
	if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
		jpeg_destroy_decompress(&cinfo);
		return sd_fail(err, SD_EDATA, "%s: CMYK JPEG is not supported; convert to RGB", path);
	}
	/* Before decoding: a 1 KB file may claim 16384x16384 (1.6 GB). */
	if ((uint64_t)cinfo.image_width * cinfo.image_height > png_max_pixels()) {
		jpeg_destroy_decompress(&cinfo);
		return sd_fail(err, SD_EDATA, "%s: %ux%u is over the limit of %llu "
		    "pixels", path, (unsigned)cinfo.image_width,
		    (unsigned)cinfo.image_height, (unsigned long long)png_max_pixels());
	}
	cinfo.out_color_space = JCS_RGB;
	jpeg_start_decompress(&cinfo);
	size_t stride = (size_t)cinfo.output_width * 3;
	pixels = malloc(stride * cinfo.output_height);
	if (pixels == NULL) {
		jpeg_destroy_decompress(&cinfo);
		return sd_fail(err, SD_EINTERNAL, "%s: out of memory", path);
	}
	while (cinfo.output_scanline < cinfo.output_height) {
		JSAMPROW row = pixels + stride * cinfo.output_scanline;
		jpeg_read_scanlines(&cinfo, &row, 1);
	}
	jpeg_finish_decompress(&cinfo);
	*w = (int)cinfo.output_width;
	*h = (int)cinfo.output_height;
	jpeg_destroy_decompress(&cinfo);
	if (channels == 1)
		image_rgb_to_grey(pixels, (size_t)*w * *h, pixels);
	*data = pixels;
	return 0;
}

int
jpeg_read(const char *path, int channels, struct sd_image_u8 *out, struct sd_error *err)
{
	FILE *fp;
	uint8_t *data = NULL;
	int w = 0, h = 0, rc;

	memset(out, 0, sizeof *out);
	{
		/* never blocks on a FIFO */
		int fd = sd_open_regular(path, err);
		if (fd < 0)
			return -1;
		if ((fp = fdopen(fd, "rb")) == NULL) {
			close(fd);
			return sd_fail(err, SD_EINTERNAL, "out of memory");
		}
	}
	rc = decode(fp, path, channels, &data, &w, &h, err);
	fclose(fp);
	if (rc < 0)
		return -1;
	out->width = w;
	out->height = h;
	out->channels = channels;
	out->data = data;
	return 0;
}

int
jpeg_write_rgb(const char *path, const uint8_t *rgb, int width, int height, int quality,
    struct sd_error *err)
{
	struct jpeg_compress_struct cinfo;
	struct jerr jerr;
	FILE *volatile fp = fopen(path, "wb");

	if (fp == NULL)
		return sd_fail(err, SD_EIO, "%s: %s", path, strerror(errno));
	cinfo.err = jpeg_std_error(&jerr.pub);
	jerr.pub.error_exit = on_error;
	if (setjmp(jerr.jump)) {
		jpeg_destroy_compress(&cinfo);
		fclose(fp);
		return sd_fail(err, SD_EIO, "%s: %s", path, jerr.msg);
	}
	jpeg_create_compress(&cinfo);
	jpeg_stdio_dest(&cinfo, fp);
	cinfo.image_width = (JDIMENSION)width;
	cinfo.image_height = (JDIMENSION)height;
	cinfo.input_components = 3;
	cinfo.in_color_space = JCS_RGB;
	jpeg_set_defaults(&cinfo);
	jpeg_set_quality(&cinfo, quality, TRUE);
	jpeg_start_compress(&cinfo, TRUE);
	while (cinfo.next_scanline < cinfo.image_height) {
		JSAMPROW row = (JSAMPROW)(rgb + (size_t)cinfo.next_scanline * width * 3);
		jpeg_write_scanlines(&cinfo, &row, 1);
	}
	jpeg_finish_compress(&cinfo);
	jpeg_destroy_compress(&cinfo);
	if (fclose(fp) != 0)
		return sd_fail(err, SD_EIO, "%s: %s", path, strerror(errno));
	return 0;
}

#endif
