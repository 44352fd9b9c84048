/* test_safetensors.c: reading the test models, and refusing broken files. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"
#include "testutil.h"

static void
expect_reject(const char *what, const char *buf, size_t size, const char *needle)
{
	struct sd_error err = {0};
	struct st_file *f = st_parse(buf, size, "bad.safetensors", &err);

	tap_ok(f == NULL && strstr(err.message, needle) != NULL,
	    "rejects %s (%s)", what, err.message);
	st_close(f);
}

static size_t
mkfile(char *buf, const char *header, size_t datasize)
{
	size_t h = strlen(header);

	for (int i = 0; i < 8; i++)
		buf[i] = (char)((uint64_t)h >> (8 * i));
	memcpy(buf + 8, header, h);
	memset(buf + 8 + h, 0, datasize);
	return 8 + h + datasize;
}

int
main(void)
{
	static char buf[1 << 16];
	struct sd_error err = {0};
	struct st_file *f;
	size_t n;

	n = mkfile(buf, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
	    "\"__metadata__\":{\"k\":\"v\"}}", 16);
	f = st_parse(buf, n, "good", &err);
	tap_ok(f != NULL && st_count(f) == 1 && st_find(f, "a") != NULL &&
	    strcmp(st_metadata(f, "k"), "v") == 0, "parses a small valid file");
	st_close(f);

	/* A header length that is not a multiple of 8 leaves the data
	 * misaligned: it is read through an aligned copy. */
	n = mkfile(buf, "{\"x\":{\"dtype\":\"BF16\",\"shape\":[1,2,2],\"data_offsets\":[0,8]}}", 8);
	for (int i = 0; i < 8; i++)
		buf[n - 8 + i] = (char)(i & 1 ? 0x3f : 0x80);	/* bf16 1.0 = 0x3f80 */
	f = st_parse(buf, n, "misaligned", &err);
	if (f != NULL) {
		const struct sd_tensor *t = st_find(f, "x");
		float v[4] = {0};
		sd_convert_to_f32(v, t->data, t->dtype, 4);
		tap_ok((uintptr_t)t->data % 2 == 0 && v[0] == 1.0f && v[3] == 1.0f,
		    "a misaligned tensor (header of %zu bytes) reads through an aligned copy", n - 16);
	} else {
		tap_ok(0, "a misaligned tensor is accepted: %s", err.message);
	}
	st_close(f);

	expect_reject("a short file", buf, 4, "too short");
	n = mkfile(buf, "{}", 0);
	buf[7] = 0x7f;
	expect_reject("a huge header length", buf, n, "is over");
	n = mkfile(buf, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8);
	expect_reject("a truncated file", buf, n, "past the end");
	n = mkfile(buf, "{\"a\":{\"dtype\":\"Q4\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16);
	expect_reject("an unknown dtype", buf, n, "unknown dtype");
	n = mkfile(buf, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
	    "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 24);
	expect_reject("overlapping tensors", buf, n, "overlap");
	n = mkfile(buf, "{\"a\":{\"dtype\":\"F32\",\"shape\":[5],\"data_offsets\":[0,16]}}", 16);
	expect_reject("a size that disagrees with the shape", buf, n, "bytes of data for");
	n = mkfile(buf, "{\"a\": [1, 2", 16);
	expect_reject("bad JSON", buf, n, "bad JSON");
	/* Issue 15: no message quotes the file's bytes (a model: /etc/shadow
	 * gave "header length 3619251681095544690", its first 8 bytes). */
	{
		static const char shadow[] = "root:*:20000:0:99999:7:::\n"
		    "daemon:*:20000:0:99999:7:::\n";
		struct sd_error err = {0};
		struct st_file *f = st_parse(shadow, sizeof shadow - 1, "x", &err);
		tap_ok(f == NULL && strstr(err.message, "not a safetensors file") &&
		    strstr(err.message, "3619251681095544690") == NULL &&
		    strstr(err.message, "root") == NULL, "a text file: no bytes "
		    "in the message (%s)", err.message);
		st_close(f);
		n = mkfile(buf, "{\"secret-token-xyz\" x}", 8);
		f = st_parse(buf, n, "x", &err);
		tap_ok(f == NULL && strstr(err.message, "secret") == NULL &&
		    strstr(err.message, "bad JSON"), "bad JSON: the message names the "
		    "problem, not the bytes (%s)", err.message);
		st_close(f);
	}
	n = mkfile(buf, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
	    "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8);
	expect_reject("a duplicate tensor name", buf, n, "bad JSON");
	n = mkfile(buf, "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 8);
	expect_reject("a negative dimension", buf, n, "bad dimension");
	n = mkfile(buf, "[1,2,3]", 8);
	expect_reject("a header that is not an object", buf, n, "not a JSON object");

	if (shared_dir() == NULL) {
		tap_skip("../shared is absent: no test model to read");
		return tap_done();
	}
	f = st_open(shared_path("testdata/sd15-tiny/model.safetensors"), &err);
	tap_ok(f != NULL, "opens the tiny single-file model %s", f ? "" : err.message);
	if (f != NULL) {
		const struct sd_tensor *t = st_find(f, "model.diffusion_model.input_blocks.0.0.weight");
		tap_ok(st_count(f) == 684 + 240 + 37, "has 961 tensors (%d)", st_count(f));
		tap_ok(t != NULL && t->dtype == SD_F32 && sd_tensor_has_shape(t, 4,
		    (int64_t)32, (int64_t)4, (int64_t)3, (int64_t)3), "conv_in weight is F32 [32,4,3,3]");
		st_close(f);
	}
	f = st_open(shared_path("testdata/sd15-tiny/model-f16.safetensors"), &err);
	tap_ok(f != NULL && st_find(f, "model.diffusion_model.out.2.bias")->dtype == SD_F16,
	    "opens the F16 model");
	st_close(f);
	f = st_open("/nonexistent/model.safetensors", &err);
	tap_ok(f == NULL && err.code == SD_ENOINPUT && strstr(err.message, "/nonexistent/model.safetensors"),
	    "a missing file names the path (%s)", err.message);
	return tap_done();
}
