/* png.c: PNG files through libpng.
 *
 * libpng reports errors by longjmp'ing back to the setjmp in the caller:
 * everything allocated after setjmp is held in volatile pointers so that
 * the error path can free it.
 *
 * What reading returns, and why (users expect what PIL, hence diffusers,
 * A1111 and ComfyUI, make of the same file):
 *   - alpha is DROPPED, not composited: PIL's Image.convert("RGB") of an
 *     RGBA or LA image ignores the alpha channel, and so does diffusers'
 *     image loading.  A palette's tRNS is ignored for the same reason.
 *   - 16-bit samples keep their high byte (png_set_strip_16, i.e. v >> 8):
 *     PIL opens 16-bit RGB, RGBA and LA PNGs with the "RGB;16B"-style
 *     unpackers that do exactly that.  (For 16-bit grey PIL makes an "I;16"
 *     image whose convert("L") clips every value over 255 to white; nobody
 *     wants that, so grey gets the same high-byte rule as colour.)
 *   - grey of 1, 2 or 4 bits is scaled to 0..255, as PIL does;
 *   - gamma (gAMA, sRGB, iCCP) is ignored, as PIL does.
 *   - grey for masks: grey PNGs as they are; colour (and palette) ones are
 *     read as RGB then converted with PIL's convert("L") formula. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <png.h>

#include "io/fileio.h"
#include "io/jpeg.h"
#include "io/png.h"

/* libpng's own limit on each dimension (our real limit is the pixels). */
#define PNG_MAX_DIMENSION (1u << 24)

static uint64_t max_pixels = PNG_DEFAULT_MAX_PIXELS;

struct png_ctx {
	FILE *fp;		/* reading */
	uint8_t *buf;		/* writing to memory */
	size_t size, cap;
	int code;		/* the sd_status of the error */
	char msg[256];
};

static void
on_error(png_structp png, png_const_charp msg)
{
	struct png_ctx *c = png_get_error_ptr(png);

	if (c->code == 0)
		c->code = strstr(msg, "memory") != NULL ? SD_EINTERNAL : SD_EDATA;
	if (c->msg[0] == '\0')
		snprintf(c->msg, sizeof c->msg, "%s", msg);
	png_longjmp(png, 1);
}

static void
on_warning(png_structp png, png_const_charp msg)
{
	(void)png;
	(void)msg;
}

/* ---------------------------------------------------------------- text */

/* Decode one UTF-8 sequence at s (n bytes left); returns its length and
 * the code point in *cp, or 0 when it is not valid UTF-8 (overlong forms,
 * surrogates and values over U+10FFFF included). */
static size_t
utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
	uint32_t c = s[0], min;
	size_t len, i;

	if (c < 0x80) {
		*cp = c;
		return 1;
	} else if ((c & 0xe0) == 0xc0) {
		len = 2, c &= 0x1f, min = 0x80;
	} else if ((c & 0xf0) == 0xe0) {
		len = 3, c &= 0x0f, min = 0x800;
	} else if ((c & 0xf8) == 0xf0) {
		len = 4, c &= 0x07, min = 0x10000;
	} else
		return 0;
	if (n < len)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = (c << 6) | (s[i] & 0x3f);
	}
	if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return 0;
	*cp = c;
	return len;
}

/* s as Latin-1 (malloc'd), or NULL when s is not valid UTF-8 or has a
 * character over U+00FF (*oom set when out of memory). */
static char *
utf8_to_latin1(const char *s, int *oom)
{
	size_t n = strlen(s), i = 0, o = 0;
	char *out = malloc(n + 1);
	uint32_t cp;

	*oom = out == NULL;
	if (out == NULL)
		return NULL;
	while (i < n) {
		size_t len = utf8_decode((const unsigned char *)s + i, n - i, &cp);
		if (len == 0 || cp > 0xff) {
			free(out);
			return NULL;
		}
		out[o++] = (char)cp;
		i += len;
	}
	out[o] = '\0';
	return out;
}

/* s with every byte that is not part of valid UTF-8 replaced by U+FFFD. */
static char *
utf8_sanitize(const char *s)
{
	size_t n = strlen(s), i = 0, o = 0;
	char *out = malloc(3 * n + 1);
	uint32_t cp;

	if (out == NULL)
		return NULL;
	while (i < n) {
		size_t len = utf8_decode((const unsigned char *)s + i, n - i, &cp);
		if (len == 0) {
			memcpy(out + o, "\xef\xbf\xbd", 3);
			o += 3;
			i++;
		} else {
			memcpy(out + o, s + i, len);
			o += len;
			i += len;
		}
	}
	out[o] = '\0';
	return out;
}

/* Latin-1 (n bytes) to malloc'd UTF-8. */
static char *
latin1_to_utf8(const char *s, size_t n)
{
	char *out = malloc(2 * n + 1);
	size_t o = 0;

	if (out == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x80)
			out[o++] = (char)c;
		else {
			out[o++] = (char)(0xc0 | (c >> 6));
			out[o++] = (char)(0x80 | (c & 0x3f));
		}
	}
	out[o] = '\0';
	return out;
}

/* A PNG keyword: 1-79 printable Latin-1 characters, no leading, trailing
 * or consecutive spaces. */
static int
valid_keyword(const char *k)
{
	size_t n = strlen(k);

	if (n < 1 || n > 79 || k[0] == ' ' || k[n - 1] == ' ')
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)k[i];
		if (c < 32 || (c > 126 && c < 161))
			return 0;
		if (c == ' ' && k[i + 1] == ' ')
			return 0;
	}
	return 1;
}

/* ---------------------------------------------------------------- writing */

static void
mem_write(png_structp png, png_bytep data, size_t len)
{
	struct png_ctx *c = png_get_io_ptr(png);

	if (len > c->cap - c->size) {
		size_t cap = c->cap ? c->cap : 65536;
		uint8_t *p;
		while (len > cap - c->size)
			cap *= 2;
		p = realloc(c->buf, cap);
		if (p == NULL)
			png_error(png, "out of memory");
		c->buf = p;
		c->cap = cap;
	}
	memcpy(c->buf + c->size, data, len);
	c->size += len;
}

static void
mem_flush(png_structp png)
{
	(void)png;
}

static void
free_texts(png_text *pt, int n)
{
	if (pt == NULL)
		return;
	for (int i = 0; i < n; i++) {
		free(pt[i].key);
		free(pt[i].text);
	}
	free(pt);
}

/* The libpng text records for texts: tEXt when Latin-1, else iTXt. */
static png_text *
make_texts(const struct png_text *texts, int n, struct sd_error *err)
{
	png_text *pt = calloc((size_t)n + 1, sizeof *pt);
	int oom;

	if (pt == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		return NULL;
	}
	for (int i = 0; i < n; i++) {
		const char *text = texts[i].text ? texts[i].text : "";
		if (texts[i].key == NULL ||
		    (pt[i].key = utf8_to_latin1(texts[i].key, &oom)) == NULL ||
		    !valid_keyword(pt[i].key)) {
			sd_fail(err, SD_EDATA, "bad PNG text keyword \"%s\" (1-79 Latin-1 characters)",
			    texts[i].key ? texts[i].key : "(null)");
			goto fail;
		}
		pt[i].text = utf8_to_latin1(text, &oom);
		if (pt[i].text != NULL) {
			pt[i].compression = PNG_TEXT_COMPRESSION_NONE;
			pt[i].text_length = strlen(pt[i].text);
		} else if (!oom && (pt[i].text = utf8_sanitize(text)) != NULL) {
			pt[i].compression = PNG_ITXT_COMPRESSION_NONE;
			pt[i].itxt_length = strlen(pt[i].text);
			pt[i].lang = NULL;
			pt[i].lang_key = NULL;
		} else {
			sd_fail(err, SD_EINTERNAL, "out of memory");
			goto fail;
		}
	}
	return pt;
fail:
	free_texts(pt, n);
	return NULL;
}

int
png_encode_rgb(const uint8_t *rgb, int width, int height,
    const struct png_text *texts, int ntexts, uint8_t **out, size_t *size,
    struct sd_error *err)
{
	struct png_ctx c;
	png_structp png;
	png_infop info;
	png_text *pt;

	*out = NULL;
	*size = 0;
	if (rgb == NULL || width < 1 || height < 1 || width > (int)PNG_MAX_DIMENSION ||
	    height > (int)PNG_MAX_DIMENSION || ntexts < 0 || (ntexts > 0 && texts == NULL))
		return sd_fail(err, SD_EINTERNAL, "png_encode_rgb: bad arguments (%dx%d, %d texts)",
		    width, height, ntexts);
	if ((pt = make_texts(texts, ntexts, err)) == NULL)
		return -1;
	memset(&c, 0, sizeof c);
	png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &c, on_error, on_warning);
	info = png != NULL ? png_create_info_struct(png) : NULL;
	if (info == NULL) {
		png_destroy_write_struct(&png, NULL);
		free_texts(pt, ntexts);
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	}
	if (setjmp(png_jmpbuf(png))) {
		png_destroy_write_struct(&png, &info);
		free_texts(pt, ntexts);
		free(c.buf);
		return sd_fail(err, c.code ? c.code : SD_EINTERNAL, "PNG encoder: %s", c.msg);
	}
	png_set_user_limits(png, PNG_MAX_DIMENSION, PNG_MAX_DIMENSION);
	png_set_write_fn(png, &c, mem_write, mem_flush);
	png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8,
	    PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
	    PNG_FILTER_TYPE_DEFAULT);
	if (ntexts > 0)
		png_set_text(png, info, pt, ntexts);
	png_write_info(png, info);
	for (int y = 0; y < height; y++)
		png_write_row(png, rgb + (size_t)y * (size_t)width * 3);
	png_write_end(png, NULL);
	png_destroy_write_struct(&png, &info);
	free_texts(pt, ntexts);
	*out = c.buf;
	*size = c.size;
	return 0;
}


int
png_write_rgb(const char *path, const uint8_t *rgb, int width, int height,
    const struct png_text *texts, int ntexts, struct sd_error *err)
{
	uint8_t *buf;
	size_t size;
	int rc;

	if (png_encode_rgb(rgb, width, height, texts, ntexts, &buf, &size, err) < 0)
		return sd_error_prefix(err, "%s", path);
	rc = sd_write_file_atomic(AT_FDCWD, path, buf, size, NULL, 0666, 0, err);
	free(buf);
	return rc;
}

/* ---------------------------------------------------------------- reading */

void
png_set_max_pixels(uint64_t n)
{
	max_pixels = n ? n : PNG_DEFAULT_MAX_PIXELS;
}

uint64_t
png_max_pixels(void)
{
	return max_pixels;
}

static void
file_read(png_structp png, png_bytep data, size_t len)
{
	struct png_ctx *c = png_get_io_ptr(png);

	if (fread(data, 1, len, c->fp) != len) {
		if (ferror(c->fp)) {
			c->code = SD_EIO;
			snprintf(c->msg, sizeof c->msg, "read error: %s", strerror(errno));
		} else
			snprintf(c->msg, sizeof c->msg, "unexpected end of file (truncated PNG?)");
		png_error(png, c->msg);
	}
}

/* What a file that is not a PNG looks like, for the message. */
static const char *
not_png_reason(const unsigned char *sig, size_t n)
{
	if (n >= 4 && memcmp(sig, "GIF8", 4) == 0)
		return "GIF is not supported; convert to PNG";
	if (n >= 4 && memcmp(sig, "RIFF", 4) == 0)
		return "WebP is not supported; convert to PNG";
	if (n >= 2 && memcmp(sig, "BM", 2) == 0)
		return "BMP is not supported; convert to PNG";
	if (n == 0)
		return "empty file, not a PNG";
	return "not a PNG file";
}

/* The text of chunk t as malloc'd UTF-8 (tEXt and zTXt are Latin-1). */
static char *
text_utf8(const png_text *t)
{
	if (t->compression == PNG_TEXT_COMPRESSION_NONE ||
	    t->compression == PNG_TEXT_COMPRESSION_zTXt)
		return latin1_to_utf8(t->text ? t->text : "", t->text ? t->text_length : 0);
	return strdup(t->text ? t->text : "");
}

static const char *
text_type(const png_text *t)
{
	switch (t->compression) {
	case PNG_TEXT_COMPRESSION_NONE:
		return "tEXt";
	case PNG_TEXT_COMPRESSION_zTXt:
		return "zTXt";
	default:
		return "iTXt";
	}
}

/* Look key (Latin-1) up in info's text chunks; -1 out of memory, 0 no, 1 yes. */
static int
find_text(png_structp png, png_infop info, const char *key, char **value,
    const char **type)
{
	png_textp t;
	int n;

	if (info == NULL || png_get_text(png, info, &t, &n) <= 0)
		return 0;
	for (int i = 0; i < n; i++) {
		if (strcmp(t[i].key, key) != 0)
			continue;
		if ((*value = text_utf8(&t[i])) == NULL)
			return -1;
		if (type != NULL)
			*type = text_type(&t[i]);
		return 1;
	}
	return 0;
}

/* Read path: channels 3 (RGB), 1 (grey) or 0 (decode and discard the
 * pixels, for the text chunks after them); when key is not NULL, look the
 * text chunk key (Latin-1) up: *found = 1 and *value when present. */
static int
read_png(const char *path, int channels, struct sd_image_u8 *out,
    const char *key, char **value, const char **type, int *found,
    struct sd_error *err)
{
	struct png_ctx c;
	png_structp png;
	png_infop info, end_info;
	unsigned char sig[8];
	uint8_t *volatile data = NULL;
	char *volatile text = NULL;
	const char *volatile ttype = NULL;
	volatile int nfound = 0;
	png_uint_32 width, height;
	int depth, color, passes, chan;
	size_t n, stride;
	struct stat st;

	memset(&c, 0, sizeof c);
	{
		/* never blocks on a FIFO */
		int fd = sd_open_regular(path, err);
		if (fd < 0)
			return -1;
		if ((c.fp = fdopen(fd, "rb")) == NULL) {
			close(fd);
			return sd_fail(err, SD_EINTERNAL, "out of memory");
		}
	}
	(void)st;
	n = fread(sig, 1, sizeof sig, c.fp);
	if (channels > 0 && jpeg_signature(sig, n)) {
		fclose(c.fp);
		return jpeg_read(path, channels, out, err);
	}
	if (n < sizeof sig || png_sig_cmp(sig, 0, sizeof sig) != 0) {
		fclose(c.fp);
		return sd_fail(err, SD_EDATA, "%s: %s", path, not_png_reason(sig, n));
	}
	png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &c, on_error, on_warning);
	info = png != NULL ? png_create_info_struct(png) : NULL;
	end_info = info != NULL ? png_create_info_struct(png) : NULL;
	if (end_info == NULL) {
		png_destroy_read_struct(&png, &info, NULL);
		fclose(c.fp);
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	}
	if (setjmp(png_jmpbuf(png))) {
		png_destroy_read_struct(&png, &info, &end_info);
		fclose(c.fp);
		free(data);
		free(text);
		return sd_fail(err, c.code ? c.code : SD_EDATA, "%s: bad PNG: %s", path, c.msg);
	}
	png_set_read_fn(png, &c, file_read);
	png_set_sig_bytes(png, sizeof sig);
	png_set_user_limits(png, PNG_MAX_DIMENSION, PNG_MAX_DIMENSION);
	png_read_info(png, info);
	png_get_IHDR(png, info, &width, &height, &depth, &color, NULL, NULL, NULL);
	if ((uint64_t)width * height > max_pixels) {
		snprintf(c.msg, sizeof c.msg, "%ux%u is over the limit of %llu pixels",
		    (unsigned)width, (unsigned)height, (unsigned long long)max_pixels);
		png_error(png, c.msg);
	}
	chan = channels;
	if (channels > 0) {
		if (depth == 16)
			png_set_strip_16(png);
		if (color == PNG_COLOR_TYPE_PALETTE)
			png_set_palette_to_rgb(png);
		if (color == PNG_COLOR_TYPE_GRAY && depth < 8)
			png_set_expand_gray_1_2_4_to_8(png);
		/* png_set_palette_to_rgb expands tRNS to alpha too. */
		if ((color & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, info, PNG_INFO_tRNS))
			png_set_strip_alpha(png);
		if (channels == 3 && !(color & PNG_COLOR_MASK_COLOR))
			png_set_gray_to_rgb(png);
		/* Colour to grey after reading, with PIL's formula. */
		if (channels == 1 && (color & PNG_COLOR_MASK_COLOR))
			chan = 3;
	}
	passes = png_set_interlace_handling(png);
	png_read_update_info(png, info);
	stride = png_get_rowbytes(png, info);
	if (channels > 0 && stride != (size_t)width * (size_t)chan) {
		snprintf(c.msg, sizeof c.msg, "unexpected row size %zu", stride);
		png_error(png, c.msg);
	}
	/* For text only, one row is decoded over and over. */
	data = malloc(channels > 0 ? stride * height : stride);
	if (data == NULL)
		png_error(png, "out of memory for the image");
	for (int p = 0; p < passes; p++)
		for (png_uint_32 y = 0; y < height; y++)
			png_read_row(png, data + (channels > 0 ? y * stride : 0), NULL);
	png_read_end(png, end_info);
	if (key != NULL) {
		char *v = NULL;
		const char *tt = NULL;
		int r = find_text(png, info, key, &v, &tt);
		if (r == 0)
			r = find_text(png, end_info, key, &v, &tt);
		if (r < 0)
			png_error(png, "out of memory");
		text = v;
		ttype = tt;
		nfound = r;
	}
	png_destroy_read_struct(&png, &info, &end_info);
	fclose(c.fp);
	if (channels == 1 && chan == 3) {
		image_rgb_to_grey(data, (size_t)width * height, data);
	}
	if (out != NULL && channels > 0) {
		out->width = (int)width;
		out->height = (int)height;
		out->channels = channels;
		out->data = data;
	} else
		free(data);
	if (key != NULL) {
		*value = text;
		if (type != NULL)
			*type = ttype;
		*found = nfound;
	}
	return 0;
}

int
png_read(const char *path, int channels, struct sd_image_u8 *out, struct sd_error *err)
{
	memset(out, 0, sizeof *out);
	if (channels != 1 && channels != 3)
		return sd_fail(err, SD_EINTERNAL, "png_read: %d channels", channels);
	return read_png(path, channels, out, NULL, NULL, NULL, NULL, err);
}

int
png_read_rgb(const char *path, struct sd_image_u8 *out, struct sd_error *err)
{
	return png_read(path, 3, out, err);
}

int
png_read_grey(const char *path, struct sd_image_u8 *out, struct sd_error *err)
{
	return png_read(path, 1, out, err);
}

int
png_read_text(const char *path, const char *key, char **value,
    const char **type, struct sd_error *err)
{
	char *k;
	int oom, found = 0;

	*value = NULL;
	if (type != NULL)
		*type = NULL;
	if ((k = utf8_to_latin1(key, &oom)) == NULL) {
		if (oom)
			return sd_fail(err, SD_EINTERNAL, "out of memory");
		/* Not a possible keyword: check the file all the same. */
		if (read_png(path, 0, NULL, NULL, NULL, NULL, NULL, err) < 0)
			return -1;
		return 0;
	}
	if (read_png(path, 0, NULL, k, value, type, &found, err) < 0) {
		free(k);
		return -1;
	}
	free(k);
	return found;
}
