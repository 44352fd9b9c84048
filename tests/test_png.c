/* test_png.c: PNG reading and writing (text chunks, every colour type,
 * broken files) and the image conversions of io/image.h, against the
 * goldens where they exist and against numbers from PIL 9.4. */
#include "config.h"

#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <png.h>

#include "io/image.h"
#include "io/png.h"
#include "testutil.h"

#define W 13
#define H 9

static char dir[64];

static const char *
tmp_path(const char *name)
{
	static char buf[4][256];
	static int next;
	char *p = buf[next++ % 4];

	snprintf(p, sizeof buf[0], "%s/%s", dir, name);
	return p;
}

/* The test pattern (also used to get PIL's numbers). */
static uint8_t
pattern(int x, int y, int c)
{
	return (uint8_t)((x * 37 + y * 91 + c * 53 + x * y * 7) & 255);
}

static uint32_t
fnv1a(const uint8_t *p, size_t n)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 16777619u;
	return h;
}

static int
count_files(void)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

static void
remove_all(void)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			unlink(tmp_path(e->d_name));
	closedir(d);
	rmdir(dir);
}

static void
write_bytes(const char *path, const void *buf, size_t n)
{
	FILE *f = fopen(path, "wb");

	if (f == NULL || fwrite(buf, 1, n, f) != n)
		abort();
	fclose(f);
}

static uint8_t *
read_bytes(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf;
	long len;

	if (f == NULL)
		return NULL;
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	rewind(f);
	buf = malloc((size_t)len + 1);
	if (buf == NULL || fread(buf, 1, (size_t)len, f) != (size_t)len)
		abort();
	fclose(f);
	*n = (size_t)len;
	return buf;
}

/* Does the file have a chunk of this type whose data starts with key\0
 * and contains needle? */
static int
has_chunk(const char *path, const char *type, const char *key, const char *needle)
{
	size_t n, pos = 8, klen = strlen(key) + 1;
	uint8_t *b = read_bytes(path, &n);
	int found = 0;

	if (b == NULL)
		return 0;
	while (pos + 12 <= n) {
		size_t len = (size_t)b[pos] << 24 | (size_t)b[pos + 1] << 16 |
		    (size_t)b[pos + 2] << 8 | b[pos + 3];
		const uint8_t *data = b + pos + 8;
		if (pos + 12 + len > n)
			break;
		if (memcmp(b + pos + 4, type, 4) == 0 && len >= klen &&
		    memcmp(data, key, klen) == 0) {
			for (size_t i = klen; i + strlen(needle) <= len; i++)
				if (memcmp(data + i, needle, strlen(needle)) == 0)
					found = 1;
		}
		pos += 12 + len;
	}
	free(b);
	return found;
}

/* Write a PNG with libpng directly: any colour type/depth, packed rows. */
struct raw_png {
	int width, height, depth, color, interlace;
	const uint8_t *data;		/* rows of png_get_rowbytes bytes */
	const png_color *palette;
	int npalette;
	const uint8_t *trans;
	int ntrans;
	png_color_16 *trans_color;
	const png_text *texts_before, *texts_after;
	int ntexts_before, ntexts_after;
};

static int
write_raw_png(const char *path, const struct raw_png *r)
{
	FILE *f = fopen(path, "wb");
	png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
	png_infop info = png_create_info_struct(png);
	size_t stride;
	int passes;

	if (f == NULL || info == NULL)
		abort();
	if (setjmp(png_jmpbuf(png))) {
		png_destroy_write_struct(&png, &info);
		fclose(f);
		return -1;
	}
	png_init_io(png, f);
	png_set_IHDR(png, info, (png_uint_32)r->width, (png_uint_32)r->height, r->depth,
	    r->color, r->interlace, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
	if (r->palette)
		png_set_PLTE(png, info, r->palette, r->npalette);
	if (r->trans || r->trans_color)
		png_set_tRNS(png, info, r->trans, r->ntrans, r->trans_color);
	if (r->ntexts_before)
		png_set_text(png, info, r->texts_before, r->ntexts_before);
	png_write_info(png, info);
	stride = png_get_rowbytes(png, info);
	passes = png_set_interlace_handling(png);
	for (int p = 0; p < passes; p++)
		for (int y = 0; y < r->height; y++)
			png_write_row(png, r->data + (size_t)y * stride);
	if (r->ntexts_after)
		png_set_text(png, info, r->texts_after, r->ntexts_after);
	png_write_end(png, info);
	png_destroy_write_struct(&png, &info);
	fclose(f);
	return 0;
}

static int
grey_of(const uint8_t *rgb)
{
	return (rgb[0] * 19595 + rgb[1] * 38470 + rgb[2] * 7471 + 0x8000) >> 16;
}

/* Read path both ways and compare with the expected RGB (W x H). */
static void
check_variant(const char *what, const char *path, const uint8_t *want_rgb)
{
	struct sd_error err = {0};
	struct sd_image_u8 img;
	uint8_t want_grey[W * H];
	int ok;

	ok = png_read_rgb(path, &img, &err) == 0 && img.width == W && img.height == H &&
	    img.channels == 3 && memcmp(img.data, want_rgb, W * H * 3) == 0;
	tap_ok(ok, "%s reads as the expected RGB%s%s", what, err.message[0] ? ": " : "", err.message);
	image_free(&img);
	for (int i = 0; i < W * H; i++)
		want_grey[i] = (uint8_t)grey_of(want_rgb + 3 * i);
	ok = png_read_grey(path, &img, &err) == 0 && img.width == W && img.height == H &&
	    img.channels == 1 && memcmp(img.data, want_grey, W * H) == 0;
	tap_ok(ok, "%s reads as the expected grey%s%s", what, err.message[0] ? ": " : "", err.message);
	image_free(&img);
}

static void
test_variants(const uint8_t *rgb)
{
	static uint8_t buf[W * H * 8], want[W * H * 3];
	png_color pal[16];
	uint8_t trans[16];
	struct raw_png r;
	int x, y, c;

	/* 8-bit grey: replicated. */
	memset(&r, 0, sizeof r);
	r.width = W, r.height = H, r.depth = 8, r.color = PNG_COLOR_TYPE_GRAY, r.data = buf;
	for (int i = 0; i < W * H; i++) {
		buf[i] = rgb[3 * i + 1];
		memset(want + 3 * i, buf[i], 3);
	}
	write_raw_png(tmp_path("grey8.png"), &r);
	check_variant("8-bit grey", tmp_path("grey8.png"), want);

	/* 1-bit grey: 0 and 255. */
	r.depth = 1;
	memset(buf, 0, sizeof buf);
	for (y = 0; y < H; y++) {
		for (x = 0; x < W; x++) {
			int bit = (x * 3 + y) % 5 < 2;
			buf[y * ((W + 7) / 8) + x / 8] |= (uint8_t)(bit << (7 - x % 8));
			memset(want + 3 * (y * W + x), bit ? 255 : 0, 3);
		}
	}
	write_raw_png(tmp_path("grey1.png"), &r);
	check_variant("1-bit grey", tmp_path("grey1.png"), want);

	/* 4-bit palette with tRNS: expanded, alpha dropped. */
	for (int i = 0; i < 16; i++) {
		pal[i].red = (png_byte)(i * 16);
		pal[i].green = (png_byte)(255 - i * 16);
		pal[i].blue = (png_byte)(i * 7 + 3);
		trans[i] = (uint8_t)(i * 17);
	}
	r.depth = 4, r.color = PNG_COLOR_TYPE_PALETTE, r.palette = pal, r.npalette = 16;
	r.trans = trans, r.ntrans = 16;
	memset(buf, 0, sizeof buf);
	for (y = 0; y < H; y++) {
		for (x = 0; x < W; x++) {
			int idx = (x + 2 * y) % 16;
			buf[y * ((W + 1) / 2) + x / 2] |= (uint8_t)(idx << (x % 2 ? 0 : 4));
			want[3 * (y * W + x)] = pal[idx].red;
			want[3 * (y * W + x) + 1] = pal[idx].green;
			want[3 * (y * W + x) + 2] = pal[idx].blue;
		}
	}
	write_raw_png(tmp_path("pal4.png"), &r);
	check_variant("4-bit palette with tRNS", tmp_path("pal4.png"), want);
	r.palette = NULL, r.npalette = 0, r.trans = NULL, r.ntrans = 0;

	/* RGBA: alpha dropped (PIL's convert("RGB")). */
	r.depth = 8, r.color = PNG_COLOR_TYPE_RGBA;
	for (int i = 0; i < W * H; i++) {
		memcpy(buf + 4 * i, rgb + 3 * i, 3);
		buf[4 * i + 3] = (uint8_t)(i * 5);
	}
	write_raw_png(tmp_path("rgba.png"), &r);
	check_variant("RGBA", tmp_path("rgba.png"), rgb);

	/* Grey + alpha. */
	r.color = PNG_COLOR_TYPE_GRAY_ALPHA;
	for (int i = 0; i < W * H; i++) {
		buf[2 * i] = rgb[3 * i + 2];
		buf[2 * i + 1] = (uint8_t)(255 - i);
		memset(want + 3 * i, rgb[3 * i + 2], 3);
	}
	write_raw_png(tmp_path("ga.png"), &r);
	check_variant("grey+alpha", tmp_path("ga.png"), want);

	/* 16-bit RGB: the high byte (as PIL's "RGB;16B" unpacker). */
	r.depth = 16, r.color = PNG_COLOR_TYPE_RGB;
	for (int i = 0; i < W * H; i++) {
		for (c = 0; c < 3; c++) {
			buf[6 * i + 2 * c] = rgb[3 * i + c];
			buf[6 * i + 2 * c + 1] = (uint8_t)(i * 31 + c * 101);	/* big-endian low byte */
		}
	}
	write_raw_png(tmp_path("rgb16.png"), &r);
	check_variant("16-bit RGB", tmp_path("rgb16.png"), rgb);

	/* 16-bit grey: the high byte too. */
	r.color = PNG_COLOR_TYPE_GRAY;
	for (int i = 0; i < W * H; i++) {
		buf[2 * i] = rgb[3 * i];
		buf[2 * i + 1] = 0xff;
		memset(want + 3 * i, rgb[3 * i], 3);
	}
	write_raw_png(tmp_path("grey16.png"), &r);
	check_variant("16-bit grey", tmp_path("grey16.png"), want);

	/* 16-bit RGBA, interlaced (Adam7). */
	r.color = PNG_COLOR_TYPE_RGBA, r.interlace = PNG_INTERLACE_ADAM7;
	for (int i = 0; i < W * H; i++) {
		for (c = 0; c < 4; c++) {
			buf[8 * i + 2 * c] = c < 3 ? rgb[3 * i + c] : (uint8_t)i;
			buf[8 * i + 2 * c + 1] = 0x80;
		}
	}
	write_raw_png(tmp_path("rgba16i.png"), &r);
	check_variant("16-bit RGBA interlaced", tmp_path("rgba16i.png"), rgb);

	/* 8-bit RGB interlaced. */
	r.depth = 8, r.color = PNG_COLOR_TYPE_RGB;
	memcpy(buf, rgb, W * H * 3);
	write_raw_png(tmp_path("rgbi.png"), &r);
	check_variant("8-bit RGB interlaced", tmp_path("rgbi.png"), rgb);

	/* RGB and 2-bit grey with a tRNS colour: ignored. */
	png_color_16 tc = {0, rgb[0], rgb[1], rgb[2], 0};
	r.interlace = PNG_INTERLACE_NONE, r.trans_color = &tc;
	write_raw_png(tmp_path("rgbt.png"), &r);
	check_variant("RGB with tRNS", tmp_path("rgbt.png"), rgb);
	r.depth = 2, r.color = PNG_COLOR_TYPE_GRAY, tc.gray = 1;
	memset(buf, 0, sizeof buf);
	for (y = 0; y < H; y++) {
		for (x = 0; x < W; x++) {
			int v = (x + y) % 4;
			buf[y * ((W + 3) / 4) + x / 4] |= (uint8_t)(v << (6 - 2 * (x % 4)));
			memset(want + 3 * (y * W + x), v * 85, 3);
		}
	}
	write_raw_png(tmp_path("grey2t.png"), &r);
	check_variant("2-bit grey with tRNS", tmp_path("grey2t.png"), want);
}

static void
expect_read_error(const char *what, const char *path, int code, const char *needle)
{
	struct sd_error err = {0};
	struct sd_image_u8 img;
	int rc = png_read_rgb(path, &img, &err);

	tap_ok(rc < 0 && err.code == code && strstr(err.message, needle) != NULL &&
	    strstr(err.message, path) != NULL && img.data == NULL,
	    "%s: error %d (%s)", what, err.code, err.message);
}

static void
test_errors(const uint8_t *rgb)
{
	struct sd_error err = {0};
	static const char jpeg[] = "\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00";
	struct sd_image_u8 img;
	uint8_t *b;
	size_t n;
	char *v;

	expect_read_error("missing file", tmp_path("nope.png"), SD_ENOINPUT, "No such file");
	expect_read_error("a directory", dir, SD_ENOINPUT, "not a regular file");
	write_bytes(tmp_path("empty.png"), "", 0);
	expect_read_error("empty file", tmp_path("empty.png"), SD_EDATA, "empty");
	write_bytes(tmp_path("garbage.png"), "this is not a PNG file at all", 29);
	expect_read_error("garbage", tmp_path("garbage.png"), SD_EDATA, "not a PNG");
	write_bytes(tmp_path("photo.jpg"), jpeg, sizeof jpeg - 1);
#ifdef HAVE_JPEG
	/* JPEG files are read (test_jpeg); a JPEG signature without an image
	 * is a clear error. */
	expect_read_error("a JPEG with no image", tmp_path("photo.jpg"), SD_EDATA, "bad JPEG");
#else
	expect_read_error("a JPEG", tmp_path("photo.jpg"), SD_EUNAVAILABLE, "JPEG is not supported");
#endif

	if (png_write_rgb(tmp_path("good.png"), rgb, W, H, NULL, 0, &err) < 0)
		abort();
	b = read_bytes(tmp_path("good.png"), &n);
	write_bytes(tmp_path("trunc.png"), b, n / 2);
	expect_read_error("truncated file", tmp_path("trunc.png"), SD_EDATA, "truncated");
	write_bytes(tmp_path("trunc2.png"), b, n - 12);	/* IEND missing */
	expect_read_error("file without IEND", tmp_path("trunc2.png"), SD_EDATA, "truncated");
	write_bytes(tmp_path("sig.png"), b, 8);
	expect_read_error("signature only", tmp_path("sig.png"), SD_EDATA, "truncated");
	b[n - 20] ^= 0x55;	/* inside the IDAT data or its CRC */
	write_bytes(tmp_path("crc.png"), b, n);
	expect_read_error("corrupt image data", tmp_path("crc.png"), SD_EDATA, "bad PNG");
	b[n - 20] ^= 0x55;
	b[16 + 3] = 0;	/* width 0 in IHDR */
	b[16 + 2] = 0;
	b[16 + 1] = 0;
	b[16] = 0;
	write_bytes(tmp_path("ihdr.png"), b, n);
	expect_read_error("zero width", tmp_path("ihdr.png"), SD_EDATA, "bad PNG");
	free(b);

	png_set_max_pixels(100);
	expect_read_error("over the pixel limit", tmp_path("good.png"), SD_EDATA, "limit");
	png_set_max_pixels(0);
	tap_ok(png_read_rgb(tmp_path("good.png"), &img, &err) == 0, "the default limit is back");
	image_free(&img);

	tap_ok(png_read_text(tmp_path("garbage.png"), "parameters", &v, NULL, &err) < 0 &&
	    err.code == SD_EDATA && v == NULL, "png_read_text of garbage fails (%s)", err.message);
	tap_ok(png_read_text(tmp_path("trunc.png"), "parameters", &v, NULL, &err) < 0 &&
	    err.code == SD_EDATA, "png_read_text of a truncated file fails");
	unlink(tmp_path("good.png"));
}

static void
test_write(const uint8_t *rgb)
{
	const char *latin1 = "a caf\xc3\xa9 on mars, \xc2\xbd price\n"
	    "Negative prompt: blurry\n"
	    "Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 13x9";
	const char *json = "{\"prompt\":\"\xe5\xae\x87\xe5\xae\x99 \xf0\x9f\x9a\x80\"}";
	struct png_text texts[] = {
		{"parameters", latin1},
		{"sdbatch", json},
		{"Software", "sdbatch"},
		{"bad utf8", "x\xff" "y"},
	};
	struct sd_error err = {0};
	struct sd_image_u8 img;
	const char *type;
	uint8_t *mem;
	size_t memsize;
	char *v;
	int rc, before = count_files();

	rc = png_write_rgb(tmp_path("out.png"), rgb, W, H, texts, 4, &err);
	tap_ok(rc == 0, "png_write_rgb writes a PNG%s%s", rc ? ": " : "", err.message);
	tap_ok(count_files() == before + 1, "no temporary file is left behind");
	rc = png_read_rgb(tmp_path("out.png"), &img, &err);
	tap_ok(rc == 0 && img.width == W && img.height == H && img.channels == 3 &&
	    memcmp(img.data, rgb, W * H * 3) == 0, "the pixels read back exactly");
	image_free(&img);

	rc = png_read_text(tmp_path("out.png"), "parameters", &v, &type, &err);
	tap_ok(rc == 1 && strcmp(v, latin1) == 0 && strcmp(type, "tEXt") == 0,
	    "a Latin-1 text reads back from tEXt (%s)", type ? type : "none");
	free(v);
	tap_ok(has_chunk(tmp_path("out.png"), "tEXt", "parameters", "caf\xe9 on mars, \xbd price"),
	    "the tEXt chunk holds Latin-1 bytes");
	rc = png_read_text(tmp_path("out.png"), "sdbatch", &v, &type, &err);
	tap_ok(rc == 1 && strcmp(v, json) == 0 && strcmp(type, "iTXt") == 0,
	    "a non-Latin-1 text reads back from iTXt (%s)", type ? type : "none");
	free(v);
	tap_ok(has_chunk(tmp_path("out.png"), "iTXt", "sdbatch", "\xf0\x9f\x9a\x80"),
	    "the iTXt chunk holds UTF-8");
	rc = png_read_text(tmp_path("out.png"), "bad utf8", &v, &type, &err);
	tap_ok(rc == 1 && strcmp(v, "x\xef\xbf\xbdy") == 0 && strcmp(type, "iTXt") == 0,
	    "invalid UTF-8 is written as U+FFFD in iTXt");
	free(v);
	rc = png_read_text(tmp_path("out.png"), "Software", &v, NULL, &err);
	tap_ok(rc == 1 && strcmp(v, "sdbatch") == 0, "a plain ASCII text");
	free(v);
	rc = png_read_text(tmp_path("out.png"), "absent", &v, &type, &err);
	tap_ok(rc == 0 && v == NULL && type == NULL, "an absent key gives 0");
	rc = png_read_text(tmp_path("out.png"), "\xe5\xae\x87", &v, NULL, &err);
	tap_ok(rc == 0 && v == NULL, "a non-Latin-1 key gives 0");

	/* Overwriting an existing file. */
	rc = png_write_rgb(tmp_path("out.png"), rgb + 3, W - 1, H, NULL, 0, &err);
	tap_ok(rc == 0 && png_read_rgb(tmp_path("out.png"), &img, &err) == 0 && img.width == W - 1 &&
	    png_read_text(tmp_path("out.png"), "parameters", &v, NULL, &err) == 0,
	    "png_write_rgb replaces an existing file");
	image_free(&img);
	tap_ok(count_files() == before + 1, "still no temporary file");

	/* Errors: no file and no temporary file left. */
	struct png_text badkeys[][1] = {{{"", "x"}}, {{" lead", "x"}}, {{"two  spaces", "x"}},
	    {{"\xe5\xae\x87", "x"}},
	    {{"0123456789012345678901234567890123456789012345678901234567890123456789012345678x", "x"}}};
	for (size_t i = 0; i < sizeof badkeys / sizeof badkeys[0]; i++) {
		rc = png_write_rgb(tmp_path("bad.png"), rgb, W, H, badkeys[i], 1, &err);
		tap_ok(rc < 0 && err.code == SD_EDATA && strstr(err.message, "keyword") &&
		    access(tmp_path("bad.png"), F_OK) < 0, "bad keyword %zu refused (%s)", i, err.message);
	}
	rc = png_write_rgb(tmp_path("no/such/dir.png"), rgb, W, H, NULL, 0, &err);
	tap_ok(rc < 0 && err.code == SD_EIO && strstr(err.message, "no/such/dir.png"),
	    "a missing folder is an I/O error (%s)", err.message);
	rc = png_write_rgb(tmp_path("zero.png"), rgb, 0, H, NULL, 0, &err);
	tap_ok(rc < 0, "a zero width is refused (%s)", err.message);
	tap_ok(count_files() == before + 1, "nothing left behind by the failures");

	rc = png_encode_rgb(rgb, W, H, texts, 2, &mem, &memsize, &err);
	tap_ok(rc == 0 && memsize > 8 && memcmp(mem, "\x89PNG\r\n\x1a\n", 8) == 0,
	    "png_encode_rgb makes a PNG in memory (%zu bytes)", memsize);
	free(mem);
	unlink(tmp_path("out.png"));

	/* Text after the image data, and compressed zTXt, written by libpng. */
	{
		char k1[] = "parameters", t1[] = "after the IDAT \xe9";
		char k2[] = "Comment", t2[] = "compressed comment, compressed comment, compressed comment";
		png_text after[2];
		struct raw_png r;

		memset(after, 0, sizeof after);
		after[0].compression = PNG_TEXT_COMPRESSION_NONE, after[0].key = k1, after[0].text = t1;
		after[0].text_length = strlen(t1);
		after[1].compression = PNG_TEXT_COMPRESSION_zTXt, after[1].key = k2, after[1].text = t2;
		after[1].text_length = strlen(t2);
		memset(&r, 0, sizeof r);
		r.width = W, r.height = H, r.depth = 8, r.color = PNG_COLOR_TYPE_RGB, r.data = rgb;
		r.texts_after = after, r.ntexts_after = 2;
		write_raw_png(tmp_path("after.png"), &r);
		rc = png_read_text(tmp_path("after.png"), "parameters", &v, &type, &err);
		tap_ok(rc == 1 && strcmp(v, "after the IDAT \xc3\xa9") == 0,
		    "a tEXt chunk after the image data is found, as UTF-8");
		free(v);
		rc = png_read_text(tmp_path("after.png"), "Comment", &v, &type, &err);
		tap_ok(rc == 1 && strcmp(v, t2) == 0 && strcmp(type, "zTXt") == 0, "a zTXt chunk");
		free(v);
	}
}

static void
test_lanczos(const uint8_t *rgb)
{
	/* PIL 9.4: Image.frombytes("RGB", (13, 9), pattern).resize(size, Image.LANCZOS) */
	static const uint8_t pil_5x4[60] = {
		100, 127, 143, 123, 137, 148, 121, 126, 133, 110, 123, 141, 120, 147, 114,
		130, 135, 126, 146, 137, 134, 137, 132, 123, 131, 130, 129, 134, 143, 145,
		109, 156, 123, 129, 127, 109, 148, 137, 128, 125, 131, 102, 142, 106, 132,
		130, 101, 153, 130, 119, 141, 119, 122, 120, 127, 122, 135, 129, 95, 156,
	};
	static const struct { int w, h; uint32_t hash; } pil[] = {
		{29, 20, 0x47c91068}, {13, 4, 0x1b20520a}, {7, 9, 0xe822396b}, {13, 9, 0xf92cd1f4},
	};
	struct sd_image_u8 src = {W, H, 3, (uint8_t *)rgb}, dst, grey, cst;
	struct sd_error err = {0};
	int ok;

	ok = image_resize_lanczos(&src, 5, 4, &dst, &err) == 0 && dst.width == 5 &&
	    dst.height == 4 && dst.channels == 3 && memcmp(dst.data, pil_5x4, 60) == 0;
	tap_ok(ok, "Lanczos 13x9 -> 5x4 equals PIL");
	image_free(&dst);
	for (size_t i = 0; i < sizeof pil / sizeof pil[0]; i++) {
		ok = image_resize_lanczos(&src, pil[i].w, pil[i].h, &dst, &err) == 0 &&
		    fnv1a(dst.data, (size_t)pil[i].w * pil[i].h * 3) == pil[i].hash;
		tap_ok(ok, "Lanczos 13x9 -> %dx%d equals PIL", pil[i].w, pil[i].h);
		image_free(&dst);
	}
	tap_ok(image_resize_lanczos(&src, W, H, &dst, &err) == 0 &&
	    memcmp(dst.data, rgb, W * H * 3) == 0, "Lanczos to the same size is a copy");
	image_free(&dst);

	image_alloc(&grey, W, H, 1, &err);
	for (int y = 0; y < H; y++)
		for (int x = 0; x < W; x++)
			grey.data[y * W + x] = pattern(x, y, 0);
	tap_ok(image_resize_lanczos(&grey, 6, 5, &dst, &err) == 0 &&
	    fnv1a(dst.data, 30) == 0xeefd26f8, "Lanczos of a grey image 13x9 -> 6x5 equals PIL");
	image_free(&dst);
	image_rgb_to_grey(rgb, W * H, grey.data);
	tap_ok(fnv1a(grey.data, W * H) == 0xdbd87ad6, "RGB -> grey equals PIL's convert(\"L\")");
	image_free(&grey);

	image_alloc(&cst, 40, 30, 3, &err);
	for (int i = 0; i < 40 * 30; i++)
		cst.data[3 * i] = 7, cst.data[3 * i + 1] = 128, cst.data[3 * i + 2] = 255;
	static const int sizes[][2] = {{17, 11}, {97, 64}, {40, 7}, {3, 30}, {1, 1}};
	for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
		int w = sizes[s][0], h = sizes[s][1];
		ok = image_resize_lanczos(&cst, w, h, &dst, &err) == 0 && dst.width == w &&
		    dst.height == h;
		for (int i = 0; ok && i < w * h; i++)
			ok = dst.data[3 * i] == 7 && dst.data[3 * i + 1] == 128 && dst.data[3 * i + 2] == 255;
		tap_ok(ok, "a constant image stays constant, 40x30 -> %dx%d", w, h);
		image_free(&dst);
	}
	image_free(&cst);
	tap_ok(image_resize_lanczos(&src, 0, 5, &dst, &err) < 0 && dst.data == NULL,
	    "a zero size is refused");
}

static void
test_convert(void)
{
	float x[3 * 4] = {-1, 1, 0, 3, -5, NAN, 0.999f, -0.999f, 0.5f, -0.5f, 1e30f, -1e30f};
	static const uint8_t want[12] = {0, 255, 128, 255, 0, 0, 255, 0, 191, 64, 255, 0};
	uint8_t u[12], back[12], m[4];
	float f[12];
	int ok = 1;

	image_f32_to_u8(x, 4, 1, u);
	for (int p = 0; p < 4; p++)
		for (int c = 0; c < 3; c++)
			ok &= u[3 * p + c] == want[c * 4 + p];
	tap_ok(ok, "float -> u8: clamping, NaN and rounding");
	for (int i = 0; i < 12; i++)
		u[i] = (uint8_t)(i * 23);
	image_u8_to_f32(u, 4, 1, f);
	image_f32_to_u8(f, 4, 1, back);
	tap_ok(memcmp(u, back, 12) == 0 && f[0] == -1.0f, "u8 -> float -> u8 is the identity");
	image_mask_binarize((const uint8_t *)"\x00\x7f\x80\xff", 4, m);
	tap_ok(m[0] == 0 && m[1] == 0 && m[2] == 1 && m[3] == 1, "mask: 127 keeps, 128 repaints");
}

static void
test_goldens(void)
{
	static const char *cases[] = {
		"img2img_ddim_s10_str075", "img2img_euler_a_s8_str03_64x128",
		"inpaint4_ddim_s10_str1", "inpaint4_euler_a_s10_str08_64x128",
		"inpaint9_ddim_s10_str08_64x128",
	};
	static const char *decoded[][2] = {
		{"vae_decode", "image"}, {"vae_decode_8x16", "image"},
		{"txt2img_ddim_s4", "image_decoded"}, {"img2img_ddim_s10_str075", "image_decoded"},
	};
	struct sd_error err = {0};
	char rel[256];

	if (shared_dir() == NULL) {
		tap_skip("golden PNGs and conversions: shared/ not found");
		return;
	}
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct st_file *g = golden_open(cases[i]);
		const struct sd_tensor *t;
		struct sd_image_u8 img;
		size_t n;
		float *want, *got;

		if (g == NULL) {
			tap_ok(0, "golden %s", cases[i]);
			continue;
		}
		t = st_find(g, "image_in");
		snprintf(rel, sizeof rel, "testdata/sd15-tiny/goldens/%s_init.png", cases[i]);
		if (png_read_rgb(shared_path(rel), &img, &err) < 0 || t == NULL ||
		    t->shape[2] != img.height || t->shape[3] != img.width) {
			tap_ok(0, "%s: init image read (%s)", cases[i], err.message);
			image_free(&img);
			st_close(g);
			continue;
		}
		want = golden_f32(g, "image_in", &n);
		got = malloc(n * sizeof *got);
		image_u8_to_f32(img.data, img.width, img.height, got);
		check_close(cases[i], got, want, n, 0, 0);
		free(want);
		free(got);
		if (strncmp(cases[i], "inpaint", 7) == 0) {
			struct sd_image_u8 mask;
			uint8_t *bin, *lat;
			float *fb, *fl;
			size_t nl;

			snprintf(rel, sizeof rel, "testdata/sd15-tiny/goldens/%s_mask.png", cases[i]);
			if (png_read_grey(shared_path(rel), &mask, &err) < 0 ||
			    mask.width != img.width || mask.height != img.height) {
				tap_ok(0, "%s: mask read (%s)", cases[i], err.message);
			} else {
				want = golden_f32(g, "mask_in", &n);
				bin = malloc(n);
				fb = malloc(n * sizeof *fb);
				image_mask_binarize(mask.data, n, bin);
				for (size_t k = 0; k < n; k++)
					fb[k] = bin[k];
				check_close("mask_in", fb, want, n, 0, 0);
				free(want);
				want = golden_f32(g, "mask_latent", &nl);
				lat = malloc(nl);
				fl = malloc(nl * sizeof *fl);
				image_mask_downsample_nearest(bin, mask.width, mask.height, 8, lat);
				for (size_t k = 0; k < nl; k++)
					fl[k] = lat[k];
				check_close("mask_latent", fl, want, nl, 0, 0);
				free(want);
				free(bin);
				free(fb);
				free(lat);
				free(fl);
			}
			image_free(&mask);
		}
		image_free(&img);
		st_close(g);
	}
	for (size_t i = 0; i < sizeof decoded / sizeof decoded[0]; i++) {
		struct st_file *g = golden_open(decoded[i][0]);
		const struct sd_tensor *t;
		float *x, *want, *got;
		uint8_t *u;
		size_t n, nu;
		int w, h;

		if (g == NULL || (t = st_find(g, decoded[i][1])) == NULL || t->ndim != 4) {
			tap_ok(0, "golden %s.%s", decoded[i][0], decoded[i][1]);
			st_close(g);
			continue;
		}
		h = (int)t->shape[2], w = (int)t->shape[3];
		x = golden_f32(g, decoded[i][1], &n);
		want = golden_f32(g, "image_u8", &nu);
		u = malloc(nu);
		got = malloc(nu * sizeof *got);
		for (int b = 0; b < (int)t->shape[0]; b++)
			image_f32_to_u8(x + (size_t)b * 3 * w * h, w, h, u + (size_t)b * 3 * w * h);
		for (size_t k = 0; k < nu; k++)
			got[k] = u[k];
		snprintf(rel, sizeof rel, "%s: %s -> image_u8 (round half to even)",
		    decoded[i][0], decoded[i][1]);
		check_close(rel, got, want, nu, 0, 0);
		free(x);
		free(want);
		free(u);
		free(got);
		st_close(g);
	}
}

int
main(void)
{
	static uint8_t rgb[W * H * 3];

	snprintf(dir, sizeof dir, "/tmp/test_png.XXXXXX");
	if (mkdtemp(dir) == NULL)
		return tap_skip_all("cannot make a temporary folder");
	for (int y = 0; y < H; y++)
		for (int x = 0; x < W; x++)
			for (int c = 0; c < 3; c++)
				rgb[(y * W + x) * 3 + c] = pattern(x, y, c);
	test_write(rgb);
	test_variants(rgb);
	test_errors(rgb);
	test_convert();
	test_lanczos(rgb);
	test_goldens();
	remove_all();
	return tap_done();
}
