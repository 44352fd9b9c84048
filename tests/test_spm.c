/* test_spm.c: the SentencePiece unigram tokenizer and T5Tokenizer's rules
 * against transformers' ids (sd3-tiny's tokenizer case), a hand-made model
 * (byte fallback, identity normalisation, user-defined pieces), and broken
 * or truncated spiece.model files. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "model/spm.h"
#include "testutil.h"

#define T5_LEN SPM_T5_MAX_LEN

static char *
read_file(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long len;

	if (f == NULL)
		return NULL;
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)len + 1);
	if (buf == NULL || fread(buf, 1, (size_t)len, f) != (size_t)len) {
		free(buf);
		fclose(f);
		return NULL;
	}
	fclose(f);
	*n = (size_t)len;
	return buf;
}

/* The piece string of id as transformers names it. */
static const char *
piece_name(const struct spm_model *m, int id, char *buf, size_t size)
{
	if (id >= spm_size(m) && id < spm_size(m) + SPM_T5_EXTRA_IDS) {
		snprintf(buf, size, "<extra_id_%d>", spm_size(m) + SPM_T5_EXTRA_IDS - 1 - id);
		return buf;
	}
	return spm_piece(m, id) ? spm_piece(m, id) : "(none)";
}

static void
test_goldens(const struct spm_model *m)
{
	struct st_file *g = golden_open_in("sd3-tiny", "tokenizer");
	json_t *params = NULL, *prompts, *pieces;
	json_error_t jerr;
	float *want, *want_n;
	size_t nwant, nn, np;
	const char *meta;
	int32_t *ids = malloc(T5_LEN * sizeof *ids), *all = malloc(4096 * sizeof *all);

	if (!tap_ok(g != NULL, "sd3-tiny goldens/tokenizer.safetensors opens"))
		goto out;
	if ((meta = st_metadata(g, "params")) != NULL)
		params = json_loads(meta, 0, &jerr);
	prompts = params ? json_object_get(params, "prompts") : NULL;
	pieces = params ? json_object_get(params, "t5_pieces_untruncated") : NULL;
	want = golden_f32(g, "input_ids_3", &nwant);
	want_n = golden_f32(g, "n_tokens_untruncated_3", &nn);
	np = json_array_size(prompts);
	tap_ok(np == 16 && nwant == np * T5_LEN && nn == np && json_array_size(pieces) == np,
	    "16 prompts with their T5 ids and pieces in the golden file (%zu)", np);
	for (size_t i = 0; i < np && nwant == np * T5_LEN && nn == np; i++) {
		const char *p = json_string_value(json_array_get(prompts, i));
		json_t *wp = json_array_get(pieces, i);
		struct sd_error err = {0};
		int n = spm_t5_encode(m, p, ids, T5_LEN, &err), same = n >= 0, first = -1;
		int nall = spm_t5_encode(m, p, all, 4096, &err), same_pieces;
		char shown[40], buf[32];

		for (int k = 0; same && k < T5_LEN; k++)
			if (ids[k] != (int32_t)want[i * T5_LEN + k]) {
				same = 0;
				first = k;
			}
		if (first >= 0)
			tap_diag("prompt %zu: position %d: got %d, want %d", i, first, ids[first],
			    (int)want[i * T5_LEN + first]);
		snprintf(shown, sizeof shown, "%s", p);
		for (char *q = shown; *q; q++)
			if ((unsigned char)*q < 0x20)
				*q = ' ';	/* one TAP line */
		tap_ok(same && n == (int)want_n[i], "T5 prompt %zu (\"%s\"...): 256 ids exact, "
		    "%d before truncation (want %d)", i, shown, n, (int)want_n[i]);
		same_pieces = nall == (int)json_array_size(wp);
		for (int k = 0; same_pieces && k < nall; k++) {
			const char *w = json_string_value(json_array_get(wp, (size_t)k));
			const char *got = piece_name(m, all[k], buf, sizeof buf);
			if (w == NULL || (strcmp(w, got) != 0 && all[k] != spm_unk_id(m))) {
				tap_diag("prompt %zu: piece %d: got \"%s\", want \"%s\"", i, k, got,
				    w ? w : "?");
				same_pieces = 0;
			}
		}
		tap_ok(same_pieces, "T5 prompt %zu: the untruncated pieces (%d)", i, nall);
	}
	free(want);
	free(want_n);
out:
	json_decref(params);
	if (g != NULL)
		st_close(g);
	free(ids);
	free(all);
}

/* T5Tokenizer's rules beyond the goldens. */
static void
test_t5_rules(const struct spm_model *m)
{
	struct sd_error err = {0};
	int32_t ids[8], ids2[8];
	int n;

	n = spm_t5_encode(m, "", ids, 8, &err);
	tap_ok(n == 1 && ids[0] == 1 && ids[1] == 0 && ids[7] == 0,
	    "the empty prompt is </s> and padding (%d)", n);
	n = spm_t5_encode(m, "a cat</s>", ids, 8, &err);
	spm_t5_encode(m, "a cat", ids2, 8, &err);
	tap_ok(n >= 2 && memcmp(ids, ids2, sizeof ids) == 0,
	    "a prompt ending in </s> gets no second </s> (%d ids)", n);
	n = spm_t5_encode(m, "<extra_id_5><extra_id_07><extra_id_100>", ids, 8, &err);
	tap_ok(n > 2 && ids[0] == 1094 && ids[1] != 1093,
	    "<extra_id_5> is 1094; <extra_id_07> is text (%d %d)", ids[0], ids[1]);
	n = spm_t5_encode(m, "a photo of a cat a photo of a cat", ids, 4, &err);
	tap_ok(n > 4 && ids[3] == 1, "truncation keeps max_len - 1 pieces and </s> (%d)", n);
	n = spm_t5_encode(m, "bad \xff\xfe utf-8 \xe2\x96", ids, 8, &err);
	tap_ok(n > 1, "malformed UTF-8 is encoded, not a crash (%d ids)", n);
}

/* ---- a hand-made model ---- */

struct pbw {
	unsigned char b[16384];
	size_t n;
};

static void
pb_varint(struct pbw *w, unsigned long long v)
{
	do {
		w->b[w->n++] = (unsigned char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
		v >>= 7;
	} while (v);
}

static void
pb_bytes(struct pbw *w, int field, const void *p, size_t n)
{
	pb_varint(w, (unsigned long long)field << 3 | 2);
	pb_varint(w, n);
	memcpy(w->b + w->n, p, n);
	w->n += n;
}

static void
pb_piece(struct pbw *w, const char *s, float score, int type)
{
	struct pbw p = { .n = 0 };
	unsigned u;

	pb_bytes(&p, 1, s, strlen(s));
	memcpy(&u, &score, 4);
	pb_varint(&p, 2 << 3 | 5);
	for (int i = 0; i < 4; i++)
		p.b[p.n++] = (unsigned char)(u >> (8 * i));
	if (type != 1) {
		pb_varint(&p, 3 << 3);
		pb_varint(&p, (unsigned)type);
	}
	pb_bytes(w, 1, p.b, p.n);
}

static void
test_handmade(void)
{
	struct pbw w = { .n = 0 }, t = { .n = 0 }, ns = { .n = 0 };
	struct sd_error err = {0};
	struct spm_model *m;
	int32_t ids[32];
	char bytepiece[8];
	int n, ok;

	pb_piece(&w, "<unk>", 0, 2);
	pb_piece(&w, "<s>", 0, 3);
	pb_piece(&w, "</s>", 0, 3);
	pb_piece(&w, "\xe2\x96\x81", -2, 1);	/* 3: "▁" */
	pb_piece(&w, "a", -3, 1);		/* 4 */
	pb_piece(&w, "b", -3, 1);		/* 5 */
	pb_piece(&w, "ab", -5, 1);		/* 6: beats a + b (-6) */
	pb_piece(&w, "\xe2\x96\x81" "ab", -9, 1);	/* 7: loses to ▁ + ab (-7) */
	pb_piece(&w, "<x>", 0, 4);		/* 8: user-defined */
	pb_piece(&w, "zz", -1, 5);		/* 9: unused, never matched */
	for (int i = 0; i < 256; i++) {
		snprintf(bytepiece, sizeof bytepiece, "<0x%02X>", i);
		pb_piece(&w, bytepiece, 0, 6);	/* 10 + i */
	}
	pb_varint(&t, 3 << 3);
	pb_varint(&t, 1);	/* unigram */
	pb_varint(&t, 35 << 3);
	pb_varint(&t, 1);	/* byte_fallback */
	pb_bytes(&w, 2, t.b, t.n);
	pb_bytes(&ns, 1, "identity", 8);
	pb_varint(&ns, 3 << 3);
	pb_varint(&ns, 1);	/* add_dummy_prefix */
	pb_bytes(&w, 3, ns.b, ns.n);

	m = spm_load_mem(w.b, w.n, &err);
	if (!tap_ok(m != NULL, "a hand-made model loads (%s)", m ? "" : err.message))
		return;
	tap_ok(spm_size(m) == 266 && spm_unk_id(m) == 0 && spm_piece_id(m, "ab") == 6,
	    "its pieces are read");
	n = spm_encode(m, "  ab  ab ", 9, ids, 32, &err);
	tap_ok(n == 4 && ids[0] == 3 && ids[1] == 6 && ids[2] == 3 && ids[3] == 6,
	    "Viterbi takes the best sum of scores; spaces collapsed (%d ids)", n);
	n = spm_encode(m, "a\xc3\xa9zz", 5, ids, 32, &err);
	ok = n == 6 && ids[0] == 3 && ids[1] == 4 && ids[2] == 10 + 0xc3 && ids[3] == 10 + 0xa9 &&
	    ids[4] == 10 + 'z' && ids[5] == 10 + 'z';
	for (int i = 0; !ok && i < n && i < 32; i++)
		tap_diag("id %d: %d", i, ids[i]);
	tap_ok(ok, "byte fallback: unknown characters as "
	    "<0xXX> pieces, unused pieces never matched (%d ids)", n);
	n = spm_encode(m, "<x>a", 4, ids, 32, &err);
	tap_ok(n == 3 && ids[1] == 8 && ids[2] == 4, "a user-defined piece is matched (%d ids)", n);
	n = spm_encode(m, "ab\tab", 5, ids, 32, &err);
	tap_ok(n == 4 && ids[2] == 10 + '\t',
	    "identity normalisation keeps a tab (no character map) (%d ids)", n);
	n = spm_t5_encode(m, "ab", ids, 8, &err);
	tap_ok(n < 0 && strstr(err.message, "<pad>") != NULL,
	    "T5 needs a <pad> piece (%s)", err.message);
	spm_free(m);

	/* model types and fields it cannot take */
	t.n = 0;
	pb_varint(&t, 3 << 3);
	pb_varint(&t, 2);	/* BPE */
	w.n = 0;
	pb_piece(&w, "<unk>", 0, 2);
	pb_bytes(&w, 2, t.b, t.n);
	m = spm_load_mem(w.b, w.n, &err);
	tap_ok(m == NULL && err.code == SD_EDATA && strstr(err.message, "model type 2") != NULL,
	    "a BPE model is refused (%s)", err.message);
	spm_free(m);
	w.n = 0;
	pb_piece(&w, "a", 0, 1);
	m = spm_load_mem(w.b, w.n, &err);
	tap_ok(m == NULL && strstr(err.message, "no unknown piece") != NULL,
	    "a model without <unk> is refused (%s)", err.message);
	spm_free(m);
	w.n = 0;
	pb_piece(&w, "<unk>", 0, 2);
	pb_piece(&w, "a", 0, 9);
	m = spm_load_mem(w.b, w.n, &err);
	tap_ok(m == NULL && strstr(err.message, "unknown type 9") != NULL,
	    "an unknown piece type is refused (%s)", err.message);
	spm_free(m);
}

/* Does msg hold only printable ASCII (no bytes of the file echoed)? */
static int
printable(const char *msg)
{
	for (const unsigned char *p = (const unsigned char *)msg; *p; p++)
		if (*p < 0x20 || *p > 0x7e)
			return 0;
	return 1;
}

static void
test_broken(const char *path)
{
	struct sd_error err = {0};
	struct spm_model *m;
	size_t n, cuts[] = { 1, 2, 3, 7, 20, 100, 1001, 5000, 16000, 0, 0, 0, 0 };
	char *data = read_file(path, &n), *copy;
	int32_t ids[T5_LEN];
	int all_ok = 1, loaded = 0;
	unsigned seed = 12345;

	m = spm_load("/nonexistent/spiece.model", &err);
	tap_ok(m == NULL && err.code == SD_ENOINPUT && strstr(err.message, "/nonexistent") != NULL,
	    "a missing file is named (%s)", err.message);
	m = spm_load_mem("", 0, &err);
	tap_ok(m == NULL && err.code == SD_EDATA && strstr(err.message, "no pieces") != NULL,
	    "an empty file is refused (%s)", err.message);
	m = spm_load_mem("{\"not\": \"protobuf\"}", 19, &err);
	tap_ok(m == NULL && err.code == SD_EDATA && printable(err.message),
	    "a JSON file is refused (%s)", err.message);
	spm_free(m);
	if (!tap_ok(data != NULL, "reads %s", path))
		return;
	cuts[9] = n / 2;
	cuts[10] = n - 1;
	cuts[11] = n - 100;
	cuts[12] = n - 200000;
	for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
		sd_error_clear(&err);
		m = spm_load_mem(data, cuts[i], &err);
		if (m != NULL) {
			/* a cut at a field boundary is a valid, smaller model */
			spm_t5_encode(m, "a photo of a cat \xef\xac\x81 \xe2\x91\xa0", ids, T5_LEN, &err);
			loaded++;
		} else if (err.code != SD_EDATA || strncmp(err.message, "spiece.model:", 13) != 0 ||
		    !printable(err.message)) {
			tap_diag("cut at %zu: %d %s", cuts[i], err.code, err.message);
			all_ok = 0;
		}
		spm_free(m);
	}
	sd_error_clear(&err);
	m = spm_load_mem(data, n - 1, &err);
	tap_ok(all_ok && m == NULL && strstr(err.message, "truncated") != NULL,
	    "truncated files: a named error or a smaller model, never a crash (%d loaded; %s)",
	    loaded, err.message);
	spm_free(m);

	/* random byte corruption, in the pieces and in the character map */
	copy = malloc(n);
	all_ok = 1;
	loaded = 0;
	for (int trial = 0; trial < 40 && copy != NULL; trial++) {
		memcpy(copy, data, n);
		for (int k = 0; k < 8; k++) {
			seed = seed * 1103515245u + 12345u;
			size_t at = trial % 2 ? n - 1 - (seed >> 8) % 240000 : (seed >> 8) % 16000;
			seed = seed * 1103515245u + 12345u;
			copy[at] = (char)(seed >> 16);
		}
		sd_error_clear(&err);
		m = spm_load_mem(copy, n, &err);
		if (m != NULL) {
			loaded++;
			spm_t5_encode(m, "a photo of a cat \xef\xac\x81 \xef\xbc\xa1 \xe2\x91\xa0 "
			    "\xc2\xbd \xe6\x97\xa5\xe6\x9c\xac", ids, T5_LEN, &err);
		} else if (!printable(err.message)) {
			all_ok = 0;
		}
		spm_free(m);
	}
	tap_ok(all_ok, "corrupted files load or fail cleanly (%d of 40 loaded)", loaded);
	free(copy);
	free(data);
}

int
main(void)
{
	const char *path = shared_path("testdata/sd3-tiny/diffusers/tokenizer_3/spiece.model");
	struct sd_error err = {0};
	struct spm_model *m;

	if (path == NULL)
		return tap_skip_all("no shared/ folder");
	m = spm_load(path, &err);
	if (!tap_ok(m != NULL, "loads %s %s", path, m ? "" : err.message))
		return tap_done();
	tap_ok(spm_size(m) == 1000 && spm_unk_id(m) == 2 && spm_piece_id(m, "</s>") == 1 &&
	    spm_piece_id(m, "<pad>") == 0, "1000 pieces; <pad> 0, </s> 1, <unk> 2");
	test_goldens(m);
	test_t5_rules(m);
	spm_free(m);
	test_handmade();
	test_broken(path);
	return tap_done();
}
