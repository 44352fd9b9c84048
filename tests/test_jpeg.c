/* test_jpeg.c: JPEG input images read as RGB and grey; broken files give
 * clear errors. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/jpeg.h"
#include "io/png.h"
#include "testutil.h"

int
main(void)
{
	char dir[] = "/tmp/sdbatch-jpeg-XXXXXX", path[256], cut[256], cmd[600];
	struct sd_image_u8 img = {0}, grey = {0};
	struct sd_error err = {0};
	int w = 48, h = 40, maxd = 0;
	uint8_t *rgb = malloc((size_t)w * h * 3);

#ifndef HAVE_JPEG
	return tap_skip_all("built without libjpeg");
#endif
	if (mkdtemp(dir) == NULL)
		return tap_skip_all("no temporary folder");
	for (int y = 0; y < h; y++)
		for (int x = 0; x < w; x++) {
			uint8_t *p = rgb + 3 * ((size_t)y * w + x);
			p[0] = (uint8_t)(x * 5);
			p[1] = (uint8_t)(y * 6);
			p[2] = (uint8_t)(128 + x - y);
		}
	snprintf(path, sizeof path, "%s/smooth.jpg", dir);
	tap_ok(jpeg_write_rgb(path, rgb, w, h, 95, &err) == 0, "write a JPEG %s", err.message);
	int rc = png_read_rgb(path, &img, &err);
	tap_ok(rc == 0 && img.width == w && img.height == h && img.channels == 3,
	    "png_read_rgb reads a JPEG by its signature (%dx%d) %s", img.width, img.height, err.message);
	if (img.data != NULL) {
		for (size_t i = 0; i < (size_t)w * h * 3; i++) {
			int d = abs((int)img.data[i] - (int)rgb[i]);
			if (d > maxd)
				maxd = d;
		}
		tap_ok(maxd <= 8, "the pixels are those of the picture, within JPEG's loss (max %d levels)", maxd);
	}
	tap_ok(png_read_grey(path, &grey, &err) == 0 && grey.channels == 1 && grey.width == w,
	    "and reads it as grey for a mask %s", err.message);
	if (grey.data != NULL && img.data != NULL) {
		uint8_t want;
		image_rgb_to_grey(img.data, 1, &want);
		tap_ok(grey.data[0] == want, "grey uses PIL's convert(\"L\") of the decoded RGB");
	}
	snprintf(cut, sizeof cut, "%s/cut.jpg", dir);
	snprintf(cmd, sizeof cmd, "head -c 200 '%s' > '%s'", path, cut);
	image_free(&img);
	if (system(cmd) == 0)
		tap_ok(png_read_rgb(cut, &img, &err) < 0 && err.code == SD_EDATA && strstr(err.message, "cut.jpg"),
		    "a truncated JPEG is an error naming the file (%s)", err.message);
	image_free(&img);
	/* Issue 15: cut in the scan data (libjpeg warns and fills grey). */
	{
		struct stat st;
		long keep = stat(path, &st) == 0 ? (long)st.st_size * 7 / 10 : 0;
		snprintf(cmd, sizeof cmd, "head -c %ld '%s' > '%s'", keep, path, cut);
		if (keep > 0 && system(cmd) == 0)
			tap_ok(png_read_rgb(cut, &img, &err) < 0 && err.code == SD_EDATA,
			    "a JPEG cut in its pixels is an error, not grey (%s)", err.message);
		image_free(&img);
	}
	/* A small file claiming 16384x16384: refused before decoding. */
	{
		char huge[600];
		FILE *f = fopen(path, "rb");
		unsigned char buf[1 << 16];
		size_t n = f ? fread(buf, 1, sizeof buf, f) : 0, i;
		if (f != NULL)
			fclose(f);
		for (i = 2; i + 9 < n; i++)
			if (buf[i] == 0xFF && (buf[i + 1] == 0xC0 || buf[i + 1] == 0xC2)) {
				buf[i + 5] = 0x40, buf[i + 6] = 0x00;	/* height 16384 */
				buf[i + 7] = 0x40, buf[i + 8] = 0x00;	/* width 16384 */
				break;
			}
		snprintf(huge, sizeof huge, "%s/huge.jpg", dir);
		if ((f = fopen(huge, "wb")) != NULL) {
			fwrite(buf, 1, n, f);
			fclose(f);
		}
		png_set_max_pixels((uint64_t)4096 * 4096);
		tap_ok(png_read_rgb(huge, &img, &err) < 0 && err.code == SD_EDATA &&
		    strstr(err.message, "over the limit") != NULL, "a %zu-byte JPEG "
		    "claiming 16384x16384 is refused before decoding (%s)", n, err.message);
		png_set_max_pixels(0);
		image_free(&img);
	}
	/* A FIFO never blocks the reader. */
	{
		char fifo[600];
		snprintf(fifo, sizeof fifo, "%s/fifo.png", dir);
		if (mkfifo(fifo, 0600) == 0) {
			alarm(20);	/* a hang fails the test */
			tap_ok(png_read_rgb(fifo, &img, &err) < 0 &&
			    strstr(err.message, "not a regular file"),
			    "a FIFO as an image: an error at once (%s)", err.message);
			alarm(0);
		}
	}
	image_free(&grey);
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		tap_diag("could not remove %s", dir);
	free(rgb);
	return tap_done();
}
