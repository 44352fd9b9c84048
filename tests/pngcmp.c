/* pngcmp.c: compare a PNG that sdbatch wrote with a reference 8-bit image
 * tensor of a golden file.  Usage: pngcmp FILE.png CASE TENSOR [INDEX]
 * (INDEX picks one image of a [N,H,W,3] tensor).  Exit 0 when every value
 * is within 1 level, 1 otherwise; prints a one-line summary.
 * pngcmp --same A.png B.png: exit 0 when the two PNGs have the same pixels. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/png.h"
#include "testutil.h"

int
main(int argc, char **argv)
{
	struct sd_image_u8 img = {0};
	struct sd_error err = {0};
	const struct sd_tensor *t;
	struct st_file *g;
	size_t n, off1 = 0, big = 0, index;

	if (argc == 4 && strcmp(argv[1], "--same") == 0) {
		struct sd_image_u8 b = {0};
		if (png_read_rgb(argv[2], &img, &err) < 0 || png_read_rgb(argv[3], &b, &err) < 0) {
			printf("%s\n", err.message);
			return 1;
		}
		int same = img.width == b.width && img.height == b.height &&
		    memcmp(img.data, b.data, (size_t)img.width * img.height * 3) == 0;
		printf("%s\n", same ? "same pixels" : "different pixels");
		image_free(&img);
		image_free(&b);
		return same ? 0 : 1;
	}
	if (argc < 4) {
		fprintf(stderr, "usage: pngcmp FILE.png CASE TENSOR [INDEX]\n");
		return 2;
	}
	index = argc > 4 ? (size_t)atoi(argv[4]) : 0;
	if (png_read_rgb(argv[1], &img, &err) < 0) {
		printf("%s\n", err.message);
		return 1;
	}
	/* CASE may name its set: "sd21-tiny/txt2img_v_ddim_s4" */
	{
		const char *slash = strchr(argv[2], '/');
		char setname[64];
		if (slash != NULL && (size_t)(slash - argv[2]) < sizeof setname) {
			snprintf(setname, sizeof setname, "%.*s", (int)(slash - argv[2]), argv[2]);
			g = golden_open_in(setname, slash + 1);
		} else {
			g = golden_open(argv[2]);
		}
	}
	if (g == NULL || (t = st_find(g, argv[3])) == NULL || t->dtype != SD_U8) {
		printf("no U8 tensor %s in case %s\n", argv[3], argv[2]);
		return 1;
	}
	n = (size_t)img.width * img.height * 3;
	if ((size_t)sd_tensor_numel(t) < (index + 1) * n) {
		printf("size: the PNG is %dx%d, the reference has %lld values\n", img.width, img.height,
		    (long long)sd_tensor_numel(t));
		return 1;
	}
	const uint8_t *want = (const uint8_t *)t->data + index * n;
	for (size_t i = 0; i < n; i++) {
		int d = abs((int)img.data[i] - (int)want[i]);
		off1 += d == 1;
		big += d > 1;
	}
	printf("%dx%d: %zu values off by one, %zu by more\n", img.width, img.height, off1, big);
	image_free(&img);
	st_close(g);
	return big ? 1 : 0;
}
