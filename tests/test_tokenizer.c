/* test_tokenizer.c: the CLIP tokenizer against transformers' ids, broken
 * vocabulary files, invalid prompts and the search for the files. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "model/tokenizer.h"
#include "testutil.h"

static char tmp[4096];

/* Write text to tmp/rel (creating the folders on the way). */
static void
put(const char *rel, const char *text)
{
	char path[8192];
	FILE *fp;

	snprintf(path, sizeof path, "%s/%s", tmp, rel);
	for (char *p = path + strlen(tmp) + 1; (p = strchr(p, '/')) != NULL; p++) {
		*p = '\0';
		mkdir(path, 0755);
		*p = '/';
	}
	if ((fp = fopen(path, "wb")) == NULL || fputs(text, fp) < 0 || fclose(fp) != 0) {
		tap_diag("cannot write %s: %s", path, strerror(errno));
		exit(tap_done());
	}
}

static void
rm(const char *rel)
{
	char path[8192];

	snprintf(path, sizeof path, "%s/%s", tmp, rel);
	remove(path);
}

static const char *
at(const char *rel)
{
	static char path[2][8192];
	static int next;
	char *p = path[next++ % 2];

	snprintf(p, sizeof path[0], "%s/%s", tmp, rel);
	return p;
}

/* A tiny vocabulary: a, b, ab with and without </w>, and the specials. */
static const char *tiny_vocab =
    "{\"a\": 0, \"b\": 1, \"a</w>\": 2, \"b</w>\": 3, \"ab\": 4, \"ab</w>\": 5,"
    " \"<|startoftext|>\": 6, \"<|endoftext|>\": 7}";
static const char *tiny_merges = "#version: 0.2\na b\na b</w>\n";

static void
expect_load_error(const char *what, int code, const char *needle1, const char *needle2)
{
	struct sd_error err = {0};
	struct sd_tokenizer *t = tokenizer_load(at("bad"), &err);

	tap_ok(t == NULL && err.code == code && strstr(err.message, needle1) != NULL &&
	    (needle2 == NULL || strstr(err.message, needle2) != NULL),
	    "%s is refused (%d: %s)", what, err.code, err.message);
	tokenizer_free(t);
}

static void
test_tiny(void)
{
	struct sd_error err = {0};
	struct sd_tokenizer *t;
	int32_t ids[TOKENIZER_MAX_LENGTH];
	int n = 0, ok;

	put("tiny/vocab.json", tiny_vocab);
	put("tiny/merges.txt", tiny_merges);
	t = tokenizer_load(at("tiny"), &err);
	if (!tap_ok(t != NULL, "loads a tiny vocabulary %s", t ? "" : err.message))
		return;
	ok = tokenizer_encode(t, "AB ab", ids, &n, &err) == 0 && n == 4 &&
	    ids[0] == 6 && ids[1] == 5 && ids[2] == 5 && ids[3] == 7 && ids[76] == 7;
	tap_ok(ok, "tiny: \"AB ab\" -> 6 5 5 7 (n %d)", n);
	ok = tokenizer_encode(t, "abc ba", ids, &n, &err) == 0 && n == 6 &&
	    ids[1] == 4 && ids[2] == 7 && ids[3] == 1 && ids[4] == 2 && ids[5] == 7;
	tap_ok(ok, "tiny: unknown symbols become <|endoftext|>, no merge across symbols");
	tokenizer_free(t);

	put("tiny/special_tokens_map.json", "{\"pad_token\": {\"content\": \"b\"}}");
	t = tokenizer_load(at("tiny"), &err);
	ok = t != NULL && tokenizer_encode(t, "", ids, &n, &err) == 0 && n == 2 &&
	    ids[0] == 6 && ids[1] == 7 && ids[2] == 1 && ids[76] == 1 &&
	    tokenizer_pad(t) == 1 && tokenizer_bos(t) == 6 && tokenizer_eos(t) == 7 &&
	    tokenizer_max_id(t) == 7;
	tap_ok(ok, "tiny: special_tokens_map.json's pad_token pads (as SD 2's \"!\")");
	tokenizer_free(t);
	rm("tiny/special_tokens_map.json");
}

static void
test_malformed(void)
{
	put("bad/merges.txt", tiny_merges);
	expect_load_error("a folder without vocab.json", SD_ENOINPUT, "vocab.json", "no such file");
	put("bad/vocab.json", "{\"a\": 0,\n \"b\": }");
	expect_load_error("bad JSON in vocab.json", SD_EDATA, "vocab.json", "bad JSON at line 2");
	put("bad/vocab.json", "[1, 2]");
	expect_load_error("a vocab.json that is not an object", SD_EDATA, "vocab.json", "not a JSON object");
	put("bad/vocab.json", "{\"a\": 0, \"b\": \"1\", \"<|startoftext|>\": 2, \"<|endoftext|>\": 3}");
	expect_load_error("a vocab.json with a string id", SD_EDATA, "vocab.json", "token \"b\"");
	put("bad/vocab.json", "{\"a\": 0, \"b\": -1, \"<|startoftext|>\": 2, \"<|endoftext|>\": 3}");
	expect_load_error("a vocab.json with a negative id", SD_EDATA, "vocab.json", "token \"b\"");
	put("bad/vocab.json", "{\"a\": 0, \"b\": 1, \"<|startoftext|>\": 2}");
	expect_load_error("a vocab.json without <|endoftext|>", SD_EDATA, "vocab.json", "<|endoftext|>");
	put("bad/vocab.json", tiny_vocab);
	rm("bad/merges.txt");
	expect_load_error("a folder without merges.txt", SD_ENOINPUT, "merges.txt", "no such file");
	put("bad/merges.txt", "#version: 0.2\na b\na b c\n");
	expect_load_error("a merge line with three symbols", SD_EDATA, "merges.txt: line 3", "a b c");
	put("bad/merges.txt", "#version: 0.2\na b\nab\n");
	expect_load_error("a merge line with one symbol", SD_EDATA, "merges.txt: line 3", "\"ab\"");
	put("bad/merges.txt", " \n\n");
	expect_load_error("an empty merges.txt", SD_EDATA, "merges.txt", "empty");
	put("bad/merges.txt", "#version: 0.2\na \xff\n");
	expect_load_error("a merges.txt that is not UTF-8", SD_EDATA, "merges.txt", "UTF-8");
	put("bad/merges.txt", tiny_merges);
	put("bad/special_tokens_map.json", "{\"pad_token\": \"zz\"}");
	expect_load_error("a pad token missing from the vocabulary", SD_EDATA,
	    "special_tokens_map.json", "\"zz\"");
	put("bad/special_tokens_map.json", "{\"pad_token\": ");
	expect_load_error("bad JSON in special_tokens_map.json", SD_EDATA,
	    "special_tokens_map.json", "bad JSON");
	rm("bad/special_tokens_map.json");
	rm("bad/merges.txt");
	rm("bad/vocab.json");
	rm("bad");
}

static void
test_invalid_utf8(void)
{
	static const char *bad[] = {
		"a \xff b", "over\xc0\xaflong", "surrogate \xed\xa0\x80", "cut \xe2\x82",
		"\x80", "too big \xf4\x90\x80\x80",
	};
	struct sd_error err = {0};
	struct sd_tokenizer *t = tokenizer_load(at("tiny"), &err);
	int32_t ids[TOKENIZER_MAX_LENGTH];
	int n, ok = 1;

	if (t == NULL) {
		tap_ok(0, "tiny tokenizer for the UTF-8 tests: %s", err.message);
		return;
	}
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		sd_error_clear(&err);
		if (tokenizer_encode(t, bad[i], ids, &n, &err) == 0 || err.code != SD_EDATA ||
		    strstr(err.message, "UTF-8") == NULL) {
			tap_diag("prompt %zu: %d %s", i, err.code, err.message);
			ok = 0;
		}
	}
	tap_ok(ok, "invalid UTF-8 prompts are refused (e.g. \"%s\")", err.message);
	tokenizer_free(t);
}

/* A prompt and transformers' ids between BOS and EOS. */
struct expect {
	const char *prompt;
	int n;
	int32_t ids[80];
};

/* Cases beyond the goldens: ids from transformers' CLIPTokenizer code
 * (BasicTokenizer path, the "regex" module) run under Python 3.11: final
 * sigma, U+0130, the IGNORECASE quirks (U+017F matches 's', U+0345 matches
 * nothing), U+2028/U+2029, removed controls, specials, compatibility
 * characters (no NFKC), NFC of Hangul jamo and combining accents. */
static const struct expect extra[] = {
	{ "\xce\x9f\xce\x94\xce\x9f\xce\xa3 \xce\x9f\xce\x94\xce\x9f\xce\xa3. \xce\xa3\xce\x91 \xce\xa3 a\xce\xa3' \xc4\xb0stanbul",
	    32, { 138, 123, 138, 112, 138, 123, 139, 480, 138, 123, 138, 112, 138, 123, 139, 480, 269, 139, 225, 138, 365, 139, 481, 64, 139, 480, 262, 328, 16384, 11231 } },
	{ "'\xc5\xbf <|\xc5\xbftartoftext|> a\xcd\x85" "b",
	    16, { 6, 129, 379, 27, 91, 129, 123, 2002, 6659, 18169, 91, 285, 320, 321 } },
	{ "line\xe2\x80\xa8" "break\xe2\x80\xa9para\x0bvt\xc2\x85nel\x1ftab",
	    9, { 1148, 2568, 699, 722, 3827, 544, 14724 } },
	{ "<|ENDOFTEXT|>x<|endoftext|><|startoftext|>",
	    6, { 49407, 343, 49407, 49406 } },
	{ "''s 're 'RE 'lL 'x",
	    9, { 8445, 338, 982, 982, 1342, 262, 343 } },
	{ "x\xef\xbf\xbdy\xe2\x80\x8dz\xee\x80\x80w",
	    4, { 20023, 42188 } },
	{ "\xef\xac\x81 \xe2\x91\xa0 \xc2\xbd \xe2\x85\xab \xef\xbc\x92 \xf0\x9f\x98\x80\xf0\x9f\x8f\xbd",
	    17, { 171, 105, 479, 158, 239, 510, 33613, 158, 227, 375, 171, 120, 496, 12832, 6114 } },
	{ "\xe1\x84\x92\xe1\x85\xa1\xe1\x86\xab e\xcc\x81 \xe2\x84\xab",
	    7, { 15197, 506, 4166, 127, 354 } },
	{ "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
	    9, { 30146, 30146, 30146, 30146, 30146, 30146, 5203 } },
};

/* The start of a prompt for a TAP line: whole UTF-8 characters, no
 * control characters. */
static const char *
label_of(const char *p)
{
	static char buf[64];
	size_t n = 0;

	for (; *p != '\0' && n < 24; p++)
		buf[n++] = (unsigned char)*p < 0x20 ? ' ' : *p;
	if (((unsigned char)*p & 0xc0) == 0x80) {
		/* cut inside a character: drop its first bytes */
		while (n > 0 && ((unsigned char)buf[n - 1] & 0xc0) == 0x80)
			n--;
		if (n > 0)
			n--;
	}
	buf[n] = '\0';
	return buf;
}

static void
test_goldens_tensor(const char *set, const char *dir, const char *label, const char *pad,
    size_t nprompts, const char *tensor)
{
	struct sd_error err = {0};
	struct sd_tokenizer *t = tokenizer_load(dir, &err);
	struct st_file *g;
	json_t *params = NULL, *prompts;
	json_error_t jerr;
	float *want = NULL, *want_n = NULL;
	size_t nwant = 0, nn = 0, np;
	const char *meta;

	if (!tap_ok(t != NULL, "%s: loads %s %s", label, dir, t ? "" : err.message))
		return;
	if (pad != NULL && !tap_ok(tokenizer_set_pad(t, pad, &err) == 0, "%s: pads with %s %s",
	    label, pad, err.message)) {
		tokenizer_free(t);
		return;
	}
	if ((g = golden_open_in(set, "tokenizer")) == NULL) {
		tap_ok(0, "%s: goldens/tokenizer.safetensors opens", label);
		tokenizer_free(t);
		return;
	}
	meta = st_metadata(g, "params");
	if (meta != NULL)
		params = json_loads(meta, 0, &jerr);
	prompts = params ? json_object_get(params, "prompts") : NULL;
	want = golden_f32(g, tensor, &nwant);
	want_n = golden_f32(g, "n_tokens_untruncated", &nn);
	np = json_array_size(prompts);
	if (!tap_ok(np == nprompts && nwant == np * TOKENIZER_MAX_LENGTH && nn == np,
	    "%s: %zu prompts and their ids in the golden file (%zu)", label, nprompts, np))
		goto out;
	for (size_t i = 0; i < np; i++) {
		const char *p = json_string_value(json_array_get(prompts, i));
		int32_t ids[TOKENIZER_MAX_LENGTH];
		int n = -1, same = 1, first = -1;

		if (p == NULL || tokenizer_encode(t, p, ids, &n, &err) < 0) {
			tap_ok(0, "%s: prompt %zu: %s", label, i, p ? err.message : "not a string");
			continue;
		}
		for (int k = 0; k < TOKENIZER_MAX_LENGTH; k++) {
			if (ids[k] != (int32_t)want[i * TOKENIZER_MAX_LENGTH + k]) {
				if (first < 0)
					first = k;
				same = 0;
			}
		}
		if (!same)
			tap_diag("prompt %zu: position %d: got %d, want %d", i, first,
			    ids[first], (int)want[i * TOKENIZER_MAX_LENGTH + first]);
		tap_ok(same && n == (int)want_n[i], "%s: prompt %zu (%s...): %d ids exact",
		    label, i, label_of(p), n);
	}
out:
	free(want);
	free(want_n);
	json_decref(params);
	st_close(g);
	tokenizer_free(t);
}

static void
test_goldens_in(const char *set, const char *dir, const char *label, const char *pad, size_t nprompts)
{
	test_goldens_tensor(set, dir, label, pad, nprompts, "input_ids");
}

static void
test_goldens(const char *dir, const char *label)
{
	test_goldens_in("sd15-tiny", dir, label, NULL, 16);
}

/* SD 2.x: the tokenizer folder pads with "!" (id 0), split off wherever it
 * appears; the SD 1.5 vocabulary told to pad with "!" gives the same ids,
 * and "<|endoftext|>" padding gives SD 1.5's. */
static void
test_sd2(void)
{
	test_goldens_in("sd21-tiny", shared_path("testdata/sd21-tiny/diffusers/tokenizer"),
	    "sd21-tiny/diffusers/tokenizer", NULL, 18);
	test_goldens_in("sd21-tiny", shared_path("data/clip-tokenizer"),
	    "data/clip-tokenizer padding with !", "!", 18);
	/* SDXL: tokenizer pads with <|endoftext|>, tokenizer_2 with "!" */
	test_goldens_tensor("sdxl-tiny", shared_path("testdata/sdxl-tiny/diffusers/tokenizer"),
	    "sdxl-tiny/diffusers/tokenizer", NULL, 6, "input_ids");
	test_goldens_tensor("sdxl-tiny", shared_path("testdata/sdxl-tiny/diffusers/tokenizer_2"),
	    "sdxl-tiny/diffusers/tokenizer_2", NULL, 6, "input_ids_2");
	test_goldens_tensor("sdxl-tiny", shared_path("data/clip-tokenizer"),
	    "data/clip-tokenizer as SDXL's second", "!", 6, "input_ids_2");
}

static void
test_extra(const char *dir)
{
	struct sd_error err = {0};
	struct sd_tokenizer *t = tokenizer_load(dir, &err);
	int32_t ids[TOKENIZER_MAX_LENGTH];
	size_t nlong = 100000, ntok;
	char *longp;
	int32_t *all;

	if (!tap_ok(t != NULL, "loads %s %s", dir, t ? "" : err.message))
		return;
	for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) {
		const struct expect *e = &extra[i];
		int n = -1, same;

		same = tokenizer_encode(t, e->prompt, ids, &n, &err) == 0 && n == e->n &&
		    ids[0] == 49406 && ids[n - 1] == 49407;
		for (int k = 1; same && k < n - 1; k++)
			same = ids[k] == e->ids[k - 1];
		if (!same)
			for (int k = 0; k < n && k < TOKENIZER_MAX_LENGTH; k++)
				tap_diag("  %d: %d", k, ids[k]);
		tap_ok(same, "edge case %zu: %d ids as transformers (n %d)", i, e->n, n);
	}
	/* one 100000-letter word: BPE must not be quadratic */
	if ((longp = malloc(nlong + 1)) == NULL)
		abort();
	memset(longp, 'a', nlong);
	longp[nlong] = '\0';
	all = tokenizer_tokenize(t, longp, &ntok, &err);
	tap_ok(all != NULL && ntok > 1000 && ntok < nlong, "a 100000-letter word gives %zu tokens", ntok);
	free(all);
	free(longp);
	tokenizer_free(t);
}

static void
test_find(void)
{
	struct sd_error err = {0};
	char out[4096];
	const char *diffusers = shared_path("testdata/sd15-tiny/diffusers");
	int r;

	unsetenv("SDBATCH_TOKENIZER");
	unsetenv("HUGGINGFACE_HUB_CACHE");
	setenv("HF_HUB_CACHE", at("hub"), 1);

	if (diffusers != NULL) {
		r = tokenizer_find(diffusers, NULL, out, sizeof out, &err);
		tap_ok(r == 0 && strcmp(out + strlen(out) - strlen("diffusers/tokenizer"),
		    "diffusers/tokenizer") == 0, "finds a diffusers folder's tokenizer (%s)",
		    r == 0 ? out : err.message);
	} else
		tap_skip("../shared is absent: no diffusers folder");

	put("model/tokenizer/vocab.json", tiny_vocab);
	put("model/tokenizer/merges.txt", tiny_merges);
	put("model/m.safetensors", "");
	r = tokenizer_find(at("model/m.safetensors"), NULL, out, sizeof out, &err);
	tap_ok(r == 0 && strcmp(out, at("model/tokenizer")) == 0,
	    "finds tokenizer/ beside a single-file model (%s)", r == 0 ? out : err.message);

	r = tokenizer_find(at("model/m.safetensors"), at("tiny"), out, sizeof out, &err);
	tap_ok(r == 0 && strcmp(out, at("tiny")) == 0, "a configured folder comes first");
	r = tokenizer_find(at("model/m.safetensors"), at("nowhere"), out, sizeof out, &err);
	tap_ok(r < 0 && err.code == SD_ENOINPUT && strstr(err.message, "nowhere") != NULL,
	    "a configured folder without the files is an error (%s)", err.message);
	setenv("SDBATCH_TOKENIZER", at("tiny"), 1);
	r = tokenizer_find(at("model/m.safetensors"), NULL, out, sizeof out, &err);
	tap_ok(r == 0 && strcmp(out, at("tiny")) == 0, "$SDBATCH_TOKENIZER comes before the model");
	unsetenv("SDBATCH_TOKENIZER");

	/* a Hub cache: refs/main names the snapshot; files as in a real cache */
	put("hub/models--openai--clip-vit-large-patch14/refs/main", "0123abcd\n");
	put("hub/models--openai--clip-vit-large-patch14/snapshots/0123abcd/vocab.json", tiny_vocab);
	put("hub/models--openai--clip-vit-large-patch14/snapshots/0123abcd/merges.txt", tiny_merges);
	put("hub/models--openai--clip-vit-large-patch14/snapshots/0000old/vocab.json", tiny_vocab);
	put("hub/models--openai--clip-vit-large-patch14/snapshots/0000old/merges.txt", tiny_merges);
	put("bare/m.safetensors", "");
	r = tokenizer_find(at("bare/m.safetensors"), NULL, out, sizeof out, &err);
	tap_ok(r == 0 && strcmp(out, at("hub/models--openai--clip-vit-large-patch14/snapshots/0123abcd")) == 0,
	    "finds the Hub cache snapshot of refs/main (%s)", r == 0 ? out : err.message);
	rm("hub/models--openai--clip-vit-large-patch14/refs/main");
	r = tokenizer_find(at("bare/m.safetensors"), NULL, out, sizeof out, &err);
	tap_ok(r == 0 && strstr(out, "snapshots/0000old") != NULL,
	    "without refs/main, any complete snapshot (%s)", r == 0 ? out : err.message);
	/* the configuration's hub.cache, not the environment's */
	setenv("HF_HUB_CACHE", at("elsewhere"), 1);
	r = tokenizer_find_in(at("bare/m.safetensors"), NULL, at("hub"), out,
	    sizeof out, &err);
	tap_ok(r == 0 && strstr(out, at("hub/models--openai")) == out,
	    "tokenizer_find_in: the Hub cache given, not $HF_HUB_CACHE (%s)",
	    r == 0 ? out : err.message);
	r = tokenizer_find(at("bare/m.safetensors"), NULL, out, sizeof out, &err);
	tap_ok(r < 0 && strstr(err.message, at("elsewhere")) != NULL,
	    "tokenizer_find: the environment's Hub cache (%s)", err.message);
	setenv("HF_HUB_CACHE", at("hub"), 1);
	rm("hub/models--openai--clip-vit-large-patch14/snapshots/0000old/merges.txt");
	rm("hub/models--openai--clip-vit-large-patch14/snapshots/0123abcd/merges.txt");

	r = tokenizer_find(at("bare/m.safetensors"), NULL, out, sizeof out, &err);
	tap_ok(r < 0 && err.code == SD_ENOINPUT && strstr(err.message, at("bare/tokenizer")) &&
	    strstr(err.message, "snapshots") && strstr(err.message, "--tokenizer"),
	    "nothing found: the message lists the places looked at (%s)", err.message);
	unsetenv("HF_HUB_CACHE");
}

static void
cleanup(void)
{
	static const char *files[] = {
		"tiny/vocab.json", "tiny/merges.txt", "tiny",
		"model/tokenizer/vocab.json", "model/tokenizer/merges.txt", "model/tokenizer",
		"model/m.safetensors", "model", "bare/m.safetensors", "bare",
		"hub/models--openai--clip-vit-large-patch14/snapshots/0123abcd/vocab.json",
		"hub/models--openai--clip-vit-large-patch14/snapshots/0123abcd",
		"hub/models--openai--clip-vit-large-patch14/snapshots/0000old/vocab.json",
		"hub/models--openai--clip-vit-large-patch14/snapshots/0000old",
		"hub/models--openai--clip-vit-large-patch14/snapshots",
		"hub/models--openai--clip-vit-large-patch14/refs",
		"hub/models--openai--clip-vit-large-patch14", "hub", "",
	};

	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
		rm(files[i]);
}

int
main(void)
{
	const char *base = getenv("TMPDIR");

	snprintf(tmp, sizeof tmp, "%s/sdbatch-tok-XXXXXX", base && *base ? base : "/tmp");
	if (mkdtemp(tmp) == NULL)
		return tap_skip_all("cannot make a temporary folder: %s", strerror(errno));

	test_tiny();
	test_malformed();
	test_invalid_utf8();
	test_find();
	if (shared_dir() == NULL) {
		tap_skip("../shared is absent: no CLIP vocabulary or goldens");
	} else {
		test_goldens(shared_path("data/clip-tokenizer"), "data/clip-tokenizer");
		test_goldens(shared_path("testdata/sd15-tiny/diffusers/tokenizer"), "diffusers/tokenizer");
		test_extra(shared_path("data/clip-tokenizer"));
		test_sd2();
	}
	cleanup();
	return tap_done();
}
