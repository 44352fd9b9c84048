/* pngvariant.c: write an 8-bit RGB PNG in another PNG form, for the tests
 * of image inputs.  Usage: pngvariant IN.png OUT.png FORM, where FORM is
 * grey (R=G=B is required of the input), palette, rgba, grey-alpha or
 * rgb16 (every value v as 257*v, i.e. the same picture in 16 bits); or,
 * to make such inputs, quantize (RGB with 6 levels a channel: at most 216
 * colours) and desaturate (RGB with R = G = B); jpeg writes a JPEG. */
#include "config.h"

#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/jpeg.h"
#include "io/png.h"

static int
write_png(const char *path, const unsigned char *rows, int w, int h, int depth, int type,
    png_color *pal, int npal, int bpp)
{
	FILE *fp = fopen(path, "wb");
	png_structp png;
	png_infop info;

	if (fp == NULL)
		return -1;
	png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
	info = png ? png_create_info_struct(png) : NULL;
	if (png == NULL || info == NULL || setjmp(png_jmpbuf(png))) {
		fclose(fp);
		return -1;
	}
	png_init_io(png, fp);
	png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, type, PNG_INTERLACE_NONE,
	    PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
	if (type == PNG_COLOR_TYPE_PALETTE)
		png_set_PLTE(png, info, pal, npal);
	png_write_info(png, info);
	for (int y = 0; y < h; y++)
		png_write_row(png, rows + (size_t)y * w * bpp);
	png_write_end(png, NULL);
	png_destroy_write_struct(&png, &info);
	return fclose(fp) == 0 ? 0 : -1;
}

int
main(int argc, char **argv)
{
	struct sd_image_u8 img = {0};
	struct sd_error err = {0};
	int w, h, type, depth = 8, bpp;
	png_color pal[256];
	int npal = 0;

	if (argc != 4) {
		fprintf(stderr, "usage: pngvariant IN.png OUT.png grey|palette|rgba|grey-alpha|rgb16\n");
		return 2;
	}
	if (png_read_rgb(argv[1], &img, &err) < 0) {
		fprintf(stderr, "%s\n", err.message);
		return 1;
	}
	w = img.width;
	h = img.height;
	const char *form = argv[3];
	if (strcmp(form, "quantize") == 0 || strcmp(form, "desaturate") == 0) {
		for (int i = 0; i < w * h; i++) {
			unsigned char *p = img.data + 3 * (size_t)i;
			if (form[0] == 'q') {
				for (int c = 0; c < 3; c++)
					p[c] = (unsigned char)(p[c] / 51 * 51);
			} else {
				p[0] = p[1] = p[2] = (unsigned char)((p[0] * 19595 + p[1] * 38470 +
				    p[2] * 7471 + 0x8000) >> 16);
			}
		}
		if (png_write_rgb(argv[2], img.data, w, h, NULL, 0, &err) < 0) {
			fprintf(stderr, "%s\n", err.message);
			return 1;
		}
		image_free(&img);
		return 0;
	}
	if (strcmp(form, "jpeg") == 0) {
		if (jpeg_write_rgb(argv[2], img.data, w, h, 95, &err) < 0) {
			fprintf(stderr, "%s\n", err.message);
			return 1;
		}
		image_free(&img);
		return 0;
	}
	if (strcmp(form, "grey") == 0) {
		type = PNG_COLOR_TYPE_GRAY;
		bpp = 1;
	} else if (strcmp(form, "grey-alpha") == 0) {
		type = PNG_COLOR_TYPE_GRAY_ALPHA;
		bpp = 2;
	} else if (strcmp(form, "palette") == 0) {
		type = PNG_COLOR_TYPE_PALETTE;
		bpp = 1;
	} else if (strcmp(form, "rgba") == 0) {
		type = PNG_COLOR_TYPE_RGB_ALPHA;
		bpp = 4;
	} else if (strcmp(form, "rgb16") == 0) {
		type = PNG_COLOR_TYPE_RGB;
		depth = 16;
		bpp = 6;
	} else {
		fprintf(stderr, "unknown form %s\n", form);
		return 2;
	}
	unsigned char *rows = malloc((size_t)w * h * bpp);
	for (int i = 0; i < w * h; i++) {
		const unsigned char *p = img.data + 3 * (size_t)i;
		unsigned char *q = rows + (size_t)bpp * i;
		if (type == PNG_COLOR_TYPE_GRAY || type == PNG_COLOR_TYPE_GRAY_ALPHA) {
			if (p[0] != p[1] || p[1] != p[2]) {
				fprintf(stderr, "grey form of a coloured image\n");
				return 1;
			}
			q[0] = p[0];
			if (bpp == 2)
				q[1] = (unsigned char)(i * 7);
		} else if (type == PNG_COLOR_TYPE_PALETTE) {
			int k;
			for (k = 0; k < npal; k++)
				if (pal[k].red == p[0] && pal[k].green == p[1] && pal[k].blue == p[2])
					break;
			if (k == npal) {
				if (npal == 256) {
					fprintf(stderr, "more than 256 colours\n");
					return 1;
				}
				pal[npal].red = p[0];
				pal[npal].green = p[1];
				pal[npal].blue = p[2];
				npal++;
			}
			q[0] = (unsigned char)k;
		} else if (bpp == 4) {
			memcpy(q, p, 3);
			q[3] = (unsigned char)(255 - i % 200);	/* alpha must not matter */
		} else {
			for (int c = 0; c < 3; c++)
				q[2 * c] = q[2 * c + 1] = p[c];	/* 257*v, big-endian */
		}
	}
	if (write_png(argv[2], rows, w, h, depth, type, pal, npal, bpp) < 0) {
		fprintf(stderr, "cannot write %s\n", argv[2]);
		return 1;
	}
	free(rows);
	image_free(&img);
	return 0;
}
