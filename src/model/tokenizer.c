/* tokenizer.c: the CLIP byte-level BPE tokenizer, as transformers' slow
 * CLIPTokenizer computes it when ftfy is not installed:
 *
 *   1. the literal strings <|startoftext|> and <|endoftext|> of the raw
 *      prompt are special tokens (the added-tokens split);
 *   2. each piece between them goes through BasicTokenizer(strip_accents=False,
 *      do_split_on_punc=False): control characters and U+FFFD removed,
 *      whitespace to spaces, spaces around CJK ideographs, NFC, split on
 *      whitespace, Python's str.lower() per word;
 *   3. the words, joined by spaces, are cut by the regex
 *      <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
 *      (compiled with IGNORECASE by the "regex" module, which makes 's' also
 *      match U+017F and U+0345 match none of the classes);
 *   4. each match, as UTF-8 bytes mapped to GPT-2's byte characters, is
 *      merged by BPE rank with "</w>" on its last symbol.
 *
 * BPE works on interned symbols (every vocab key, merge part and merge
 * result) with a heap, so that a long run of one character costs
 * O(n log n), not the O(n^2) of the Python loop; the order of merges is the
 * Python one (all occurrences of the lowest-ranked pair, left to right, then
 * the next pair). */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <jansson.h>
#include <utf8proc.h>

#include "io/jsonerr.h"
#include "model/tokenizer.h"

/* transformers reads lines 1 .. 49152 - 256 - 2 of merges.txt (line 0 is
 * the "#version" comment) and ignores the rest. */
#define MAX_MERGES (49152 - 256 - 2)
/* No real merges.txt (~500 KB) or vocab.json (~1 MB) comes near this. */
#define MAX_MERGES_FILE (64u << 20)

#define START_TEXT "<|startoftext|>"
#define END_TEXT "<|endoftext|>"

struct symbol {
	uint32_t off, len;	/* bytes in strings */
	int32_t id;		/* vocab id, -1 when not in vocab.json */
};

struct merge {
	int32_t left, right;	/* symbols */
	int32_t result;		/* the symbol left+right */
	int32_t rank;
};

struct sd_tokenizer {
	char *strings;
	size_t nstrings, strings_cap;
	struct symbol *syms;
	int32_t nsyms, syms_cap;
	int32_t *sym_slots;	/* open addressing; -1 is empty */
	uint32_t sym_mask;
	struct merge *merges;
	int32_t nmerges, merges_cap;
	int32_t *merge_slots;
	uint32_t merge_mask;
	int32_t byte_sym[256];		/* the byte's character, or -1 */
	int32_t byte_end_sym[256];	/* the same with "</w>", or -1 */
	int32_t bos, eos, pad, unk, max_id;
	/* A pad token other than <|endoftext|> (SD 2.x's "!") is an added
	 * special token for transformers: split off wherever it appears. */
	char pad_text[64];
};

/* ---- Unicode helpers ---- */

/* Decode one code point of s[*i..n); -1 on invalid UTF-8 (overlong,
 * surrogate, out of range, truncated). */
static int32_t
utf8_next(const unsigned char *s, size_t n, size_t *i)
{
	size_t k = *i, len;
	uint32_t c = s[k], min;

	if (c < 0x80) {
		*i = k + 1;
		return (int32_t)c;
	}
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
		c &= 0x1f;
		min = 0x80;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		c &= 0x0f;
		min = 0x800;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		c &= 0x07;
		min = 0x10000;
	} else
		return -1;
	if (n - k < len)
		return -1;
	for (size_t j = 1; j < len; j++) {
		if ((s[k + j] & 0xc0) != 0x80)
			return -1;
		c = (c << 6) | (s[k + j] & 0x3f);
	}
	if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return -1;
	*i = k + len;
	return (int32_t)c;
}

/* Encode c into out (4 bytes room); returns the length. */
static size_t
utf8_put(uint32_t c, unsigned char *out)
{
	if (c < 0x80) {
		out[0] = (unsigned char)c;
		return 1;
	}
	if (c < 0x800) {
		out[0] = (unsigned char)(0xc0 | (c >> 6));
		out[1] = (unsigned char)(0x80 | (c & 0x3f));
		return 2;
	}
	if (c < 0x10000) {
		out[0] = (unsigned char)(0xe0 | (c >> 12));
		out[1] = (unsigned char)(0x80 | ((c >> 6) & 0x3f));
		out[2] = (unsigned char)(0x80 | (c & 0x3f));
		return 3;
	}
	out[0] = (unsigned char)(0xf0 | (c >> 18));
	out[1] = (unsigned char)(0x80 | ((c >> 12) & 0x3f));
	out[2] = (unsigned char)(0x80 | ((c >> 6) & 0x3f));
	out[3] = (unsigned char)(0x80 | (c & 0x3f));
	return 4;
}

/* Python's str.isspace() (what str.split() and str.strip() cut on). */
static int
py_isspace(uint32_t c)
{
	return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) ||
	    c == 0x85 || c == 0xa0 || c == 0x1680 ||
	    (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
	    c == 0x202f || c == 0x205f || c == 0x3000;
}

/* The regex module's \s (the White_Space property). */
static int
regex_isspace(uint32_t c)
{
	return (c >= 0x09 && c <= 0x0d) || c == 0x20 || c == 0x85 ||
	    c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200a) ||
	    c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f ||
	    c == 0x3000;
}

static int
is_letter(uint32_t c)
{
	utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);

	return cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO;
}

static int
is_number(uint32_t c)
{
	utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);

	return cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO;
}

/* BasicTokenizer._is_control (and the cp == 0 / U+FFFD test). */
static int
is_removed(uint32_t c)
{
	utf8proc_category_t cat;

	if (c == '\t' || c == '\n' || c == '\r')
		return 0;
	if (c == 0 || c == 0xfffd)
		return 1;
	cat = utf8proc_category((utf8proc_int32_t)c);
	return cat == UTF8PROC_CATEGORY_CN || cat == UTF8PROC_CATEGORY_CC ||
	    cat == UTF8PROC_CATEGORY_CF || cat == UTF8PROC_CATEGORY_CS ||
	    cat == UTF8PROC_CATEGORY_CO;
}

/* BasicTokenizer._is_whitespace. */
static int
is_basic_space(uint32_t c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' ||
	    utf8proc_category((utf8proc_int32_t)c) == UTF8PROC_CATEGORY_ZS;
}

/* BasicTokenizer._is_chinese_char. */
static int
is_cjk(uint32_t c)
{
	return (c >= 0x4e00 && c <= 0x9fff) || (c >= 0x3400 && c <= 0x4dbf) ||
	    (c >= 0x20000 && c <= 0x2a6df) || (c >= 0x2a700 && c <= 0x2b73f) ||
	    (c >= 0x2b740 && c <= 0x2b81f) || (c >= 0x2b820 && c <= 0x2ceaf) ||
	    (c >= 0xf900 && c <= 0xfaff) || (c >= 0x2f800 && c <= 0x2fa1f);
}

/* Unicode's Case_Ignorable: Mn, Me, Cf, Lm, Sk and the Word_Break
 * MidLetter, MidNumLet and Single_Quote characters. */
static int
is_case_ignorable(uint32_t c)
{
	static const uint32_t extra[] = {
		0x27, 0x2e, 0x3a, 0xb7, 0x387, 0x55f, 0x5f4, 0x2018, 0x2019,
		0x2024, 0x2027, 0xfe13, 0xfe52, 0xfe55, 0xff07, 0xff0e, 0xff1a,
	};
	utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);

	if (cat == UTF8PROC_CATEGORY_MN || cat == UTF8PROC_CATEGORY_ME ||
	    cat == UTF8PROC_CATEGORY_CF || cat == UTF8PROC_CATEGORY_LM ||
	    cat == UTF8PROC_CATEGORY_SK)
		return 1;
	for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++)
		if (c == extra[i])
			return 1;
	return 0;
}

/* Unicode's Cased, for characters that are not case-ignorable: Lu, Ll,
 * Lt and the Other_Lowercase / Other_Uppercase ones. */
static int
is_cased(uint32_t c)
{
	utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);

	if (cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL ||
	    cat == UTF8PROC_CATEGORY_LT)
		return 1;
	return c == 0xaa || c == 0xba || (c >= 0x2160 && c <= 0x217f) ||
	    (c >= 0x24b6 && c <= 0x24e9) || (c >= 0x1f130 && c <= 0x1f149) ||
	    (c >= 0x1f150 && c <= 0x1f169) || (c >= 0x1f170 && c <= 0x1f189);
}

/* Python's final-sigma rule for s[i] == U+03A3 (Objects/unicodeobject.c
 * handle_capital_sigma): final when a cased letter precedes (across
 * case-ignorables) and none follows. */
static int
final_sigma(const uint32_t *s, size_t n, size_t i)
{
	size_t j = i;

	while (j > 0 && is_case_ignorable(s[j - 1]))
		j--;
	if (j == 0 || !is_cased(s[j - 1]))
		return 0;
	for (j = i + 1; j < n && is_case_ignorable(s[j]); j++)
		;
	return j == n || !is_cased(s[j]);
}

/* ---- growable arrays ---- */

struct cps {
	uint32_t *v;
	size_t n, cap;
};

static int
cps_push(struct cps *a, uint32_t c)
{
	if (a->n == a->cap) {
		size_t cap = a->cap ? 2 * a->cap : 256;
		uint32_t *v = realloc(a->v, cap * sizeof *v);

		if (v == NULL)
			return -1;
		a->v = v;
		a->cap = cap;
	}
	a->v[a->n++] = c;
	return 0;
}

struct ids {
	int32_t *v;
	size_t n, cap;
};

static int
ids_push(struct ids *a, int32_t id)
{
	if (a->n == a->cap) {
		size_t cap = a->cap ? 2 * a->cap : 128;
		int32_t *v = realloc(a->v, cap * sizeof *v);

		if (v == NULL)
			return -1;
		a->v = v;
		a->cap = cap;
	}
	a->v[a->n++] = id;
	return 0;
}

/* ---- symbols and merges ---- */

static uint32_t
hash_bytes(const char *s, size_t n)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 16777619u;
	}
	return h;
}

static uint32_t
hash_pair(int32_t a, int32_t b)
{
	uint32_t h = (uint32_t)a * 0x9e3779b1u ^ ((uint32_t)b + 0x7f4a7c15u) * 0x85ebca77u;

	h ^= h >> 16;
	h *= 0x7feb352du;
	h ^= h >> 15;
	return h;
}

/* The symbol spelled s[0..n), or -1. */
static int32_t
sym_find(const struct sd_tokenizer *t, const char *s, size_t n)
{
	uint32_t i;

	if (t->sym_slots == NULL)
		return -1;
	for (i = hash_bytes(s, n) & t->sym_mask; t->sym_slots[i] >= 0;
	    i = (i + 1) & t->sym_mask) {
		const struct symbol *y = &t->syms[t->sym_slots[i]];

		if (y->len == n && memcmp(t->strings + y->off, s, n) == 0)
			return t->sym_slots[i];
	}
	return -1;
}

static int
sym_rehash(struct sd_tokenizer *t, uint32_t size)
{
	int32_t *slots = malloc(size * sizeof *slots);

	if (slots == NULL)
		return -1;
	memset(slots, 0xff, size * sizeof *slots);
	for (int32_t k = 0; k < t->nsyms; k++) {
		const struct symbol *y = &t->syms[k];
		uint32_t i = hash_bytes(t->strings + y->off, y->len) & (size - 1);

		while (slots[i] >= 0)
			i = (i + 1) & (size - 1);
		slots[i] = k;
	}
	free(t->sym_slots);
	t->sym_slots = slots;
	t->sym_mask = size - 1;
	return 0;
}

/* The symbol spelled s[0..n), added when new; -1 when out of memory.  s
 * must not point into t->strings. */
static int32_t
sym_intern(struct sd_tokenizer *t, const char *s, size_t n)
{
	int32_t k = sym_find(t, s, n);

	if (k >= 0)
		return k;
	if (n > UINT32_MAX || t->nsyms == INT32_MAX / 4)
		return -1;
	if (t->sym_slots == NULL || (uint32_t)t->nsyms * 2 >= t->sym_mask) {
		if (sym_rehash(t, t->sym_slots == NULL ? 1u << 16 : 2 * (t->sym_mask + 1)) < 0)
			return -1;
	}
	if (t->nsyms == t->syms_cap) {
		int32_t cap = t->syms_cap ? 2 * t->syms_cap : 1 << 15;
		struct symbol *v = realloc(t->syms, (size_t)cap * sizeof *v);

		if (v == NULL)
			return -1;
		t->syms = v;
		t->syms_cap = cap;
	}
	if (t->nstrings + n > t->strings_cap) {
		size_t cap = t->strings_cap ? 2 * t->strings_cap : 1u << 20;
		char *v;

		while (cap < t->nstrings + n)
			cap *= 2;
		if (cap > UINT32_MAX || (v = realloc(t->strings, cap)) == NULL)
			return -1;
		t->strings = v;
		t->strings_cap = cap;
	}
	memcpy(t->strings + t->nstrings, s, n);
	k = t->nsyms++;
	t->syms[k].off = (uint32_t)t->nstrings;
	t->syms[k].len = (uint32_t)n;
	t->syms[k].id = -1;
	t->nstrings += n;

	uint32_t i = hash_bytes(s, n) & t->sym_mask;

	while (t->sym_slots[i] >= 0)
		i = (i + 1) & t->sym_mask;
	t->sym_slots[i] = k;
	return k;
}

/* The merge of the pair (a, b), or NULL. */
static const struct merge *
merge_find(const struct sd_tokenizer *t, int32_t a, int32_t b)
{
	uint32_t i;

	if (t->merge_slots == NULL || a < 0 || b < 0)
		return NULL;
	for (i = hash_pair(a, b) & t->merge_mask; t->merge_slots[i] >= 0;
	    i = (i + 1) & t->merge_mask) {
		const struct merge *m = &t->merges[t->merge_slots[i]];

		if (m->left == a && m->right == b)
			return m;
	}
	return NULL;
}

/* Add the merge a b -> ab of rank; a pair seen before takes the new rank
 * (as Python's dict does). */
static int
merge_add(struct sd_tokenizer *t, int32_t a, int32_t b, int32_t ab, int32_t rank)
{
	uint32_t i;

	if (t->merge_slots == NULL) {
		uint32_t size = 1u << 17;	/* > 2 * MAX_MERGES */

		if ((t->merge_slots = malloc(size * sizeof *t->merge_slots)) == NULL)
			return -1;
		memset(t->merge_slots, 0xff, size * sizeof *t->merge_slots);
		t->merge_mask = size - 1;
		if ((t->merges = malloc(MAX_MERGES * sizeof *t->merges)) == NULL)
			return -1;
		t->merges_cap = MAX_MERGES;
	}
	for (i = hash_pair(a, b) & t->merge_mask; t->merge_slots[i] >= 0;
	    i = (i + 1) & t->merge_mask) {
		struct merge *m = &t->merges[t->merge_slots[i]];

		if (m->left == a && m->right == b) {
			m->rank = rank;
			return 0;
		}
	}
	if (t->nmerges == t->merges_cap)
		return -1;
	t->merges[t->nmerges] = (struct merge){ a, b, ab, rank };
	t->merge_slots[i] = t->nmerges++;
	return 0;
}

/* ---- loading ---- */

/* printf into a path buffer; -1 (and "" in buf) when it does not fit. */
static int __attribute__((format(printf, 3, 4)))
pathf(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vsnprintf(buf, size, fmt, ap);
	va_end(ap);
	if (r < 0 || (size_t)r >= size) {
		buf[0] = '\0';
		return -1;
	}
	return 0;
}

static int
is_file(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int
load_vocab(struct sd_tokenizer *t, const char *path, struct sd_error *err)
{
	json_error_t jerr;
	json_t *root, *value;
	const char *key;
	int rc = -1;

	if (!is_file(path))
		return sd_fail(err, SD_ENOINPUT, "%s: no such file", path);
	root = json_load_file(path, 0, &jerr);
	if (root == NULL)
		return sd_fail(err, SD_EDATA, "%s: bad JSON at line %d, column %d: %s",
		    path, jerr.line, jerr.column, sd_json_error_kind(&jerr));
	if (!json_is_object(root) || json_object_size(root) == 0) {
		sd_fail(err, SD_EDATA, "%s: not a JSON object of token -> id", path);
		goto out;
	}
	json_object_foreach(root, key, value) {
		json_int_t id;
		int32_t k;

		if (!json_is_integer(value) || (id = json_integer_value(value)) < 0 ||
		    id > INT32_MAX) {
			sd_fail(err, SD_EDATA, "%s: token \"%.64s\": the id is not an integer in 0..2^31-1",
			    path, key);
			goto out;
		}
		if ((k = sym_intern(t, key, strlen(key))) < 0) {
			sd_fail(err, SD_EINTERNAL, "%s: out of memory", path);
			goto out;
		}
		t->syms[k].id = (int32_t)id;
		if (id > t->max_id)
			t->max_id = (int32_t)id;
	}
	rc = 0;
out:
	json_decref(root);
	return rc;
}

static int
read_file(const char *path, unsigned char **data, size_t *size, struct sd_error *err)
{
	FILE *fp;
	struct stat st;
	unsigned char *buf;

	if (!is_file(path))
		return sd_fail(err, SD_ENOINPUT, "%s: no such file", path);
	if ((fp = fopen(path, "rb")) == NULL)
		return sd_fail(err, SD_EIO, "%s: %s", path, strerror(errno));
	if (fstat(fileno(fp), &st) < 0 || st.st_size < 0 ||
	    (uint64_t)st.st_size > MAX_MERGES_FILE) {
		fclose(fp);
		return sd_fail(err, SD_EDATA, "%s: not a merges file (larger than %u MiB)",
		    path, MAX_MERGES_FILE >> 20);
	}
	if ((buf = malloc((size_t)st.st_size + 1)) == NULL) {
		fclose(fp);
		return sd_fail(err, SD_EINTERNAL, "%s: out of memory", path);
	}
	*size = fread(buf, 1, (size_t)st.st_size, fp);
	if (ferror(fp)) {
		fclose(fp);
		free(buf);
		return sd_fail(err, SD_EIO, "%s: read error", path);
	}
	fclose(fp);
	*data = buf;
	return 0;
}

/* merges.txt, read as transformers does: the file stripped of surrounding
 * whitespace, split on "\n", line 0 skipped, lines 1..MAX_MERGES split on
 * whitespace into a pair (a blank line is skipped but takes a rank). */
static int
load_merges(struct sd_tokenizer *t, const char *path, struct sd_error *err)
{
	unsigned char *data = NULL;
	char *cat = NULL;
	size_t size = 0, i, start, end, lineno_base = 1;
	int32_t rank = 0, line = 0;
	int rc = -1;

	if (read_file(path, &data, &size, err) < 0)
		return -1;
	for (i = 0; i < size;) {
		size_t at = i;

		if (utf8_next(data, size, &i) < 0) {
			sd_fail(err, SD_EDATA, "%s: not UTF-8 (bad byte at offset %zu)", path, at);
			goto out;
		}
	}
	/* strip(): whitespace at both ends */
	for (start = 0; start < size;) {
		size_t j = start;
		int32_t c = utf8_next(data, size, &j);

		if (!py_isspace((uint32_t)c))
			break;
		if (c == '\n')
			lineno_base++;
		start = j;
	}
	for (end = size; end > start;) {
		size_t j = end - 1;

		while (j > start && (data[j] & 0xc0) == 0x80)
			j--;
		size_t k = j;
		if (!py_isspace((uint32_t)utf8_next(data, size, &k)))
			break;
		end = j;
	}
	if (start == end) {
		sd_fail(err, SD_EDATA, "%s: empty (expected \"#version\" and then one merge a line)", path);
		goto out;
	}
	if ((cat = malloc(end - start + 1)) == NULL) {
		sd_fail(err, SD_EINTERNAL, "%s: out of memory", path);
		goto out;
	}
	for (i = start; i < end && rank < MAX_MERGES; line++) {
		size_t eol = i, f[4][2];
		int nf = 0;

		while (eol < end && data[eol] != '\n')
			eol++;
		if (line > 0) {
			/* split(): fields between whitespace */
			for (size_t j = i; j < eol;) {
				size_t k = j;
				int32_t c = utf8_next(data, eol, &k);

				if (py_isspace((uint32_t)c)) {
					j = k;
					continue;
				}
				size_t b = j;
				while (j < eol) {
					k = j;
					c = utf8_next(data, eol, &k);
					if (py_isspace((uint32_t)c))
						break;
					j = k;
				}
				if (nf < 4) {
					f[nf][0] = b;
					f[nf][1] = j;
				}
				nf++;
			}
			if (nf != 0 && nf != 2) {
				size_t show = eol - i > 60 ? 60 : eol - i;

				while (show > 0 && i + show < eol && (data[i + show] & 0xc0) == 0x80)
					show--;		/* whole characters */
				sd_fail(err, SD_EDATA, "%s: line %zu: expected two symbols separated by a space, got \"%.*s\"",
				    path, lineno_base + (size_t)line, (int)show, (const char *)data + i);
				goto out;
			}
			if (nf == 2) {
				size_t la = f[0][1] - f[0][0], lb = f[1][1] - f[1][0];
				int32_t a, b, ab;

				memcpy(cat, data + f[0][0], la);
				memcpy(cat + la, data + f[1][0], lb);
				if ((a = sym_intern(t, cat, la)) < 0 ||
				    (b = sym_intern(t, (const char *)data + f[1][0], lb)) < 0 ||
				    (ab = sym_intern(t, cat, la + lb)) < 0 ||
				    merge_add(t, a, b, ab, rank) < 0) {
					sd_fail(err, SD_EINTERNAL, "%s: out of memory", path);
					goto out;
				}
			}
			rank++;
		}
		i = eol + 1;
	}
	rc = 0;
out:
	free(cat);
	free(data);
	return rc;
}

/* The pad token named by a special_tokens_map.json / tokenizer_config.json
 * ("pad_token": "..." or {"content": "..."}): 1 and *pad set when found, 0
 * when the file or the key is absent, -1 on error. */
static int
load_pad(struct sd_tokenizer *t, const char *path, int32_t *pad, struct sd_error *err)
{
	json_error_t jerr;
	json_t *root, *v;
	const char *name;
	int32_t k;
	int rc = 0;

	if (!is_file(path))
		return 0;
	if ((root = json_load_file(path, 0, &jerr)) == NULL)
		return sd_fail(err, SD_EDATA, "%s: bad JSON at line %d, column %d: %s",
		    path, jerr.line, jerr.column, sd_json_error_kind(&jerr));
	v = json_is_object(root) ? json_object_get(root, "pad_token") : NULL;
	if (json_is_object(v))
		v = json_object_get(v, "content");
	if (v == NULL || json_is_null(v))
		goto out;
	if (!json_is_string(v)) {
		rc = sd_fail(err, SD_EDATA, "%s: \"pad_token\" is not a string", path);
		goto out;
	}
	name = json_string_value(v);
	k = sym_find(t, name, strlen(name));
	if (k < 0 || t->syms[k].id < 0 || strlen(name) >= sizeof t->pad_text) {
		rc = sd_fail(err, SD_EDATA, "%s: the pad token \"%.64s\" is not in vocab.json", path, name);
		goto out;
	}
	*pad = t->syms[k].id;
	snprintf(t->pad_text, sizeof t->pad_text, "%s", name);
	rc = 1;
out:
	json_decref(root);
	return rc;
}

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves,
 * the others for 256, 257, ... in byte order. */
static void
byte_chars(uint32_t map[256])
{
	uint32_t next = 256;

	for (uint32_t b = 0; b < 256; b++) {
		if ((b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || b >= 0xae)
			map[b] = b;
		else
			map[b] = next++;
	}
}

static int32_t
vocab_id(const struct sd_tokenizer *t, const char *s)
{
	int32_t k = sym_find(t, s, strlen(s));

	return k < 0 ? -1 : t->syms[k].id;
}

struct sd_tokenizer *
tokenizer_load(const char *dir, struct sd_error *err)
{
	struct sd_tokenizer *t;
	char path[4096];
	uint32_t map[256];
	int32_t pad;
	int r;

	if (dir == NULL || *dir == '\0') {
		sd_fail(err, SD_EUSAGE, "no tokenizer folder given");
		return NULL;
	}
	if ((t = calloc(1, sizeof *t)) == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		return NULL;
	}
	t->max_id = -1;
	if (pathf(path, sizeof path, "%s/vocab.json", dir) < 0) {
		sd_fail(err, SD_EUSAGE, "tokenizer folder name too long");
		goto fail;
	}
	if (load_vocab(t, path, err) < 0)
		goto fail;
	pathf(path, sizeof path, "%s/merges.txt", dir);
	if (load_merges(t, path, err) < 0)
		goto fail;
	pathf(path, sizeof path, "%s/vocab.json", dir);
	if ((t->bos = vocab_id(t, START_TEXT)) < 0 || (t->eos = vocab_id(t, END_TEXT)) < 0) {
		sd_fail(err, SD_EDATA, "%s: no \"%s\" token", path,
		    t->bos < 0 ? START_TEXT : END_TEXT);
		goto fail;
	}
	t->unk = t->eos;
	t->pad = t->eos;
	pathf(path, sizeof path, "%s/special_tokens_map.json", dir);
	if ((r = load_pad(t, path, &pad, err)) == 0) {
		pathf(path, sizeof path, "%s/tokenizer_config.json", dir);
		r = load_pad(t, path, &pad, err);
	}
	if (r < 0)
		goto fail;
	if (r > 0)
		t->pad = pad;
	if (t->pad == t->eos || t->pad == t->bos)
		t->pad_text[0] = '\0';

	byte_chars(map);
	for (int b = 0; b < 256; b++) {
		char s[8];
		size_t n = utf8_put(map[b], (unsigned char *)s);

		t->byte_sym[b] = sym_find(t, s, n);
		memcpy(s + n, "</w>", 4);
		t->byte_end_sym[b] = sym_find(t, s, n + 4);
	}
	return t;
fail:
	tokenizer_free(t);
	return NULL;
}

void
tokenizer_free(struct sd_tokenizer *t)
{
	if (t == NULL)
		return;
	free(t->strings);
	free(t->syms);
	free(t->sym_slots);
	free(t->merges);
	free(t->merge_slots);
	free(t);
}

int32_t
tokenizer_bos(const struct sd_tokenizer *t)
{
	return t->bos;
}

int32_t
tokenizer_eos(const struct sd_tokenizer *t)
{
	return t->eos;
}

int
tokenizer_set_pad(struct sd_tokenizer *t, const char *token, struct sd_error *err)
{
	int32_t id = vocab_id(t, token);

	if (id < 0 || strlen(token) >= sizeof t->pad_text)
		return sd_fail(err, SD_EDATA, "the pad token \"%.64s\" is not in the vocabulary", token);
	t->pad = id;
	if (id == t->eos || id == t->bos)
		t->pad_text[0] = '\0';
	else
		snprintf(t->pad_text, sizeof t->pad_text, "%s", token);
	return 0;
}

int32_t
tokenizer_pad(const struct sd_tokenizer *t)
{
	return t->pad;
}

int32_t
tokenizer_max_id(const struct sd_tokenizer *t)
{
	return t->max_id;
}

/* ---- BPE ---- */

struct heap_entry {
	int32_t rank, pos, merge;
};

/* Scratch space of one tokenize call, grown to the longest word. */
struct work {
	int32_t *sym, *next, *prev;
	struct heap_entry *heap, *batch;
	int32_t *changed;
	size_t cap;		/* symbols */
	size_t nheap;
	unsigned char *bytes;
	size_t bytes_cap;
};

static int
work_reserve(struct work *w, size_t n)
{
	if (n <= w->cap)
		return 0;
	free(w->sym);
	free(w->next);
	free(w->prev);
	free(w->heap);
	free(w->batch);
	free(w->changed);
	w->sym = malloc(n * sizeof *w->sym);
	w->next = malloc(n * sizeof *w->next);
	w->prev = malloc(n * sizeof *w->prev);
	w->heap = malloc(3 * n * sizeof *w->heap);
	w->batch = malloc(3 * n * sizeof *w->batch);
	w->changed = malloc(n * sizeof *w->changed);
	w->cap = n;
	if (w->sym == NULL || w->next == NULL || w->prev == NULL ||
	    w->heap == NULL || w->batch == NULL || w->changed == NULL) {
		w->cap = 0;
		return -1;
	}
	return 0;
}

static void
work_free(struct work *w)
{
	free(w->sym);
	free(w->next);
	free(w->prev);
	free(w->heap);
	free(w->batch);
	free(w->changed);
	free(w->bytes);
}

static int
heap_less(const struct heap_entry *a, const struct heap_entry *b)
{
	return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void
heap_push(struct work *w, struct heap_entry e)
{
	size_t i = w->nheap++;

	while (i > 0) {
		size_t p = (i - 1) / 2;

		if (!heap_less(&e, &w->heap[p]))
			break;
		w->heap[i] = w->heap[p];
		i = p;
	}
	w->heap[i] = e;
}

static struct heap_entry
heap_pop(struct work *w)
{
	struct heap_entry top = w->heap[0], last = w->heap[--w->nheap];
	size_t i = 0, n = w->nheap;

	for (;;) {
		size_t c = 2 * i + 1;

		if (c >= n)
			break;
		if (c + 1 < n && heap_less(&w->heap[c + 1], &w->heap[c]))
			c++;
		if (!heap_less(&w->heap[c], &last))
			break;
		w->heap[i] = w->heap[c];
		i = c;
	}
	if (n > 0)
		w->heap[i] = last;
	return top;
}

/* Queue the pair starting at node pos, when it has a merge. */
static void
push_pair(const struct sd_tokenizer *t, struct work *w, int32_t pos)
{
	const struct merge *m;

	if (pos < 0 || w->next[pos] < 0)
		return;
	m = merge_find(t, w->sym[pos], w->sym[w->next[pos]]);
	if (m != NULL)
		heap_push(w, (struct heap_entry){ m->rank, pos, (int32_t)(m - t->merges) });
}

/* The ids of one regex match (its UTF-8 bytes), appended to out. */
static int
bpe_word(const struct sd_tokenizer *t, struct work *w, const unsigned char *s,
    size_t n, struct ids *out)
{
	size_t nbatch, nchanged;

	/* transformers' cache holds the two special strings as themselves */
	if (n == strlen(START_TEXT) && memcmp(s, START_TEXT, n) == 0)
		return ids_push(out, t->bos);
	if (n == strlen(END_TEXT) && memcmp(s, END_TEXT, n) == 0)
		return ids_push(out, t->eos);
	if (work_reserve(w, n) < 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		w->sym[i] = i + 1 < n ? t->byte_sym[s[i]] : t->byte_end_sym[s[i]];
		w->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
		w->prev[i] = (int32_t)i - 1;
	}
	w->nheap = 0;
	for (size_t i = 0; i + 1 < n; i++)
		push_pair(t, w, (int32_t)i);
	while (w->nheap > 0) {
		int32_t rank = w->heap[0].rank;

		nbatch = 0;
		while (w->nheap > 0 && w->heap[0].rank == rank)
			w->batch[nbatch++] = heap_pop(w);
		nchanged = 0;
		for (size_t k = 0; k < nbatch; k++) {
			const struct merge *m = &t->merges[w->batch[k].merge];
			int32_t p = w->batch[k].pos, q = w->next[p];

			/* stale: p was merged away (its symbol is -2) or a
			 * symbol of the pair has changed since */
			if (w->sym[p] != m->left || q < 0 || w->sym[q] != m->right)
				continue;
			w->sym[p] = m->result;
			w->next[p] = w->next[q];
			if (w->next[q] >= 0)
				w->prev[w->next[q]] = p;
			w->sym[q] = -2;		/* dead */
			w->changed[nchanged++] = p;
		}
		for (size_t k = 0; k < nchanged; k++) {
			int32_t p = w->changed[k];

			push_pair(t, w, w->prev[p]);
			push_pair(t, w, p);
		}
	}
	for (int32_t p = 0; p >= 0; p = w->next[p]) {
		int32_t k = w->sym[p];
		int32_t id = k >= 0 ? t->syms[k].id : -1;

		if (ids_push(out, id >= 0 ? id : t->unk) < 0)
			return -1;
	}
	return 0;
}

/* ---- the text pipeline ---- */

/* Does the special string lit start at s[0..n)?  ("s" also matches U+017F:
 * the regex is compiled with IGNORECASE.) */
static size_t
match_literal(const uint32_t *s, size_t n, const char *lit)
{
	size_t len = strlen(lit);

	if (n < len)
		return 0;
	for (size_t i = 0; i < len; i++)
		if (s[i] != (unsigned char)lit[i] && !(lit[i] == 's' && s[i] == 0x17f))
			return 0;
	return len;
}

/* The regex's contraction alternatives 's|'t|'re|'ve|'m|'ll|'d at s[0] == '\''. */
static size_t
match_contraction(const uint32_t *s, size_t n)
{
	uint32_t a = n > 1 ? s[1] : 0, b = n > 2 ? s[2] : 0;

	if (a == 's' || a == 0x17f || a == 't' || a == 'm' || a == 'd')
		return 2;
	if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
		return 3;
	return 0;
}

/* Neither \s nor \p{L} nor \p{N}; U+0345 (which case-folds to a letter)
 * matches no class at all under IGNORECASE. */
static int
is_other(uint32_t c)
{
	return !regex_isspace(c) && !is_letter(c) && !is_number(c) && c != 0x345;
}

/* Tokenize one piece of the prompt that holds no special string. */
static int
tokenize_piece(const struct sd_tokenizer *t, const unsigned char *s, size_t n,
    struct work *w, struct ids *out, struct sd_error *err)
{
	struct cps clean = {0}, norm = {0}, low = {0};
	unsigned char *buf = NULL;
	utf8proc_uint8_t *nfc = NULL;
	utf8proc_ssize_t nfclen;
	size_t i, len;
	int rc = -1;

	/* _clean_text and _tokenize_chinese_chars */
	for (i = 0; i < n;) {
		uint32_t c = (uint32_t)utf8_next(s, n, &i);

		if (is_removed(c))
			continue;
		if (is_basic_space(c))
			c = ' ';
		if (is_cjk(c)) {
			if (cps_push(&clean, ' ') < 0 || cps_push(&clean, c) < 0 ||
			    cps_push(&clean, ' ') < 0)
				goto oom;
		} else if (cps_push(&clean, c) < 0)
			goto oom;
	}
	/* NFC */
	if ((buf = malloc(4 * clean.n + 1)) == NULL)
		goto oom;
	for (i = 0, len = 0; i < clean.n; i++)
		len += utf8_put(clean.v[i], buf + len);
	nfclen = utf8proc_map(buf, (utf8proc_ssize_t)len, &nfc,
	    UTF8PROC_STABLE | UTF8PROC_COMPOSE);
	if (nfclen < 0) {
		nfc = NULL;
		sd_fail(err, nfclen == UTF8PROC_ERROR_NOMEM ? SD_EINTERNAL : SD_EDATA,
		    "prompt: Unicode normalisation failed: %s", utf8proc_errmsg(nfclen));
		goto out;
	}
	for (i = 0; i < (size_t)nfclen;) {
		int32_t c = utf8_next(nfc, (size_t)nfclen, &i);

		if (c < 0) {
			sd_fail(err, SD_EINTERNAL, "prompt: bad UTF-8 after normalisation");
			goto out;
		}
		if (cps_push(&norm, (uint32_t)c) < 0)
			goto oom;
	}
	/* whitespace_tokenize, then str.lower() per word, joined by spaces */
	for (i = 0; i < norm.n;) {
		size_t b;

		while (i < norm.n && py_isspace(norm.v[i]))
			i++;
		if (i == norm.n)
			break;
		for (b = i; i < norm.n && !py_isspace(norm.v[i]); i++)
			;
		if (low.n > 0 && cps_push(&low, ' ') < 0)
			goto oom;
		for (size_t j = b; j < i; j++) {
			uint32_t c = norm.v[j];

			if (c == 0x130) {	/* SpecialCasing: i + combining dot */
				if (cps_push(&low, 'i') < 0 || cps_push(&low, 0x307) < 0)
					goto oom;
				continue;
			}
			if (c == 0x3a3)
				c = final_sigma(norm.v + b, i - b, j - b) ? 0x3c2 : 0x3c3;
			else
				c = (uint32_t)utf8proc_tolower((utf8proc_int32_t)c);
			if (cps_push(&low, c) < 0)
				goto oom;
		}
	}
	/* the regex, then BPE on each match's bytes */
	if (low.n > 0 && w->bytes_cap < 4 * low.n) {
		free(w->bytes);
		w->bytes_cap = 0;
		if ((w->bytes = malloc(4 * low.n)) == NULL)
			goto oom;
		w->bytes_cap = 4 * low.n;
	}
	for (i = 0; i < low.n;) {
		const uint32_t *p = low.v + i;
		size_t m = low.n - i, k;

		if ((k = match_literal(p, m, START_TEXT)) == 0 &&
		    (k = match_literal(p, m, END_TEXT)) == 0 &&
		    (p[0] != '\'' || (k = match_contraction(p, m)) == 0)) {
			if (is_letter(p[0])) {
				for (k = 1; k < m && is_letter(p[k]); k++)
					;
			} else if (is_number(p[0]))
				k = 1;
			else if (is_other(p[0])) {
				for (k = 1; k < m && is_other(p[k]); k++)
					;
			} else {
				i++;
				continue;
			}
		}
		for (len = 0; k > 0; k--, i++)
			len += utf8_put(low.v[i], w->bytes + len);
		if (bpe_word(t, w, w->bytes, len, out) < 0)
			goto oom;
	}
	rc = 0;
	goto out;
oom:
	sd_fail(err, SD_EINTERNAL, "prompt: out of memory");
out:
	free(clean.v);
	free(norm.v);
	free(low.v);
	free(buf);
	free(nfc);
	return rc;
}

int32_t *
tokenizer_tokenize(const struct sd_tokenizer *t, const char *utf8, size_t *n,
    struct sd_error *err)
{
	const unsigned char *s = (const unsigned char *)(utf8 ? utf8 : "");
	size_t len = strlen((const char *)s), i, piece;
	struct ids out = {0};
	struct work w = {0};

	*n = 0;
	for (i = 0; i < len;) {
		size_t at = i;

		if (utf8_next(s, len, &i) < 0) {
			sd_fail(err, SD_EDATA, "prompt: not valid UTF-8 (bad byte 0x%02x at offset %zu)",
			    s[at], at);
			return NULL;
		}
	}
	/* the added-tokens split on the literal special strings */
	for (i = piece = 0; i <= len; i++) {
		int32_t special = -1;
		size_t sl = 0;

		if (i < len && s[i] == '<') {
			if (strncmp((const char *)s + i, START_TEXT, strlen(START_TEXT)) == 0) {
				special = t->bos;
				sl = strlen(START_TEXT);
			} else if (strncmp((const char *)s + i, END_TEXT, strlen(END_TEXT)) == 0) {
				special = t->eos;
				sl = strlen(END_TEXT);
			}
		}
		if (special < 0 && i < len && t->pad_text[0] != '\0' &&
		    strncmp((const char *)s + i, t->pad_text, strlen(t->pad_text)) == 0) {
			special = t->pad;
			sl = strlen(t->pad_text);
		}
		if (special < 0 && i < len)
			continue;
		if (i > piece && tokenize_piece(t, s + piece, i - piece, &w, &out, err) < 0)
			goto fail;
		if (special >= 0 && ids_push(&out, special) < 0) {
			sd_fail(err, SD_EINTERNAL, "prompt: out of memory");
			goto fail;
		}
		piece = i + sl;
		if (sl > 0)
			i += sl - 1;
	}
	work_free(&w);
	if (out.v == NULL && (out.v = malloc(sizeof *out.v)) == NULL) {
		sd_fail(err, SD_EINTERNAL, "prompt: out of memory");
		return NULL;
	}
	*n = out.n;
	return out.v;
fail:
	work_free(&w);
	free(out.v);
	return NULL;
}

int
tokenizer_encode(const struct sd_tokenizer *t, const char *utf8,
    int32_t ids[TOKENIZER_MAX_LENGTH], int *n_untruncated, struct sd_error *err)
{
	size_t n, keep, i;
	int32_t *tokens = tokenizer_tokenize(t, utf8, &n, err);

	if (tokens == NULL)
		return -1;
	keep = n < TOKENIZER_MAX_LENGTH - 2 ? n : TOKENIZER_MAX_LENGTH - 2;
	ids[0] = t->bos;
	memcpy(ids + 1, tokens, keep * sizeof *ids);
	ids[keep + 1] = t->eos;
	for (i = keep + 2; i < TOKENIZER_MAX_LENGTH; i++)
		ids[i] = t->pad;
	if (n_untruncated != NULL)
		*n_untruncated = n + 2 > INT32_MAX ? INT32_MAX : (int)(n + 2);
	free(tokens);
	return 0;
}

/* ---- finding the files ---- */

#define HUB_REPO "models--openai--clip-vit-large-patch14"

#ifndef SDBATCH_PKGDATADIR
#define SDBATCH_PKGDATADIR "/usr/local/share/sdbatch"
#endif

struct looked {
	char text[SD_ERROR_MAX];
	size_t n;
};

static void
looked_add(struct looked *l, const char *where, const char *why)
{
	int r;

	if (l->n >= sizeof l->text)
		return;
	r = snprintf(l->text + l->n, sizeof l->text - l->n, "%s%s (%s)",
	    l->n > 0 ? "; " : "", where, why);
	if (r > 0)
		l->n += (size_t)r;
	if (l->n > sizeof l->text)
		l->n = sizeof l->text;
}

/* NULL when dir holds vocab.json and merges.txt, else why not. */
static const char *
check_dir(const char *dir)
{
	char path[4096];
	struct stat st;

	if (stat(dir, &st) < 0)
		return "no such folder";
	if (!S_ISDIR(st.st_mode))
		return "not a folder";
	if (pathf(path, sizeof path, "%s/vocab.json", dir) < 0)
		return "name too long";
	if (!is_file(path))
		return "no vocab.json";
	pathf(path, sizeof path, "%s/merges.txt", dir);
	if (!is_file(path))
		return "no merges.txt";
	return NULL;
}

static int
found(const char *dir, char *out, size_t outsize, struct sd_error *err)
{
	if (strlen(dir) >= outsize)
		return sd_fail(err, SD_EINTERNAL, "tokenizer folder name too long: %s", dir);
	memcpy(out, dir, strlen(dir) + 1);
	return 0;
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The snapshot folder of the Hub cache at hub, or "" with l filled. */
static void
find_in_hub(const char *hub, char *dir, size_t dirsize, struct looked *l)
{
	char repo[4096], path[4096], commit[256];
	const char *why;
	FILE *fp;
	DIR *d;
	struct dirent *e;
	char **names = NULL;
	size_t nnames = 0, cap = 0;

	dir[0] = '\0';
	if (pathf(repo, sizeof repo, "%s/" HUB_REPO, hub) < 0) {
		looked_add(l, hub, "name too long");
		return;
	}
	if (stat(repo, &(struct stat){0}) < 0) {
		looked_add(l, repo, "no such folder");
		return;
	}
	pathf(path, sizeof path, "%s/refs/main", repo);
	if ((fp = fopen(path, "r")) != NULL) {
		size_t n = fread(commit, 1, sizeof commit - 1, fp);

		fclose(fp);
		commit[n] = '\0';
		commit[strcspn(commit, " \t\r\n")] = '\0';
		if (commit[0] == '\0' || commit[0] == '.' || strchr(commit, '/') != NULL)
			looked_add(l, path, "not a commit id");
		else {
			pathf(path, sizeof path, "%s/snapshots/%s", repo, commit);
			if ((why = check_dir(path)) == NULL) {
				pathf(dir, dirsize, "%s", path);
				return;
			}
			looked_add(l, path, why);
		}
	} else
		looked_add(l, path, "no such file");
	/* any complete snapshot, in name order */
	pathf(path, sizeof path, "%s/snapshots", repo);
	if ((d = opendir(path)) == NULL) {
		looked_add(l, path, "no such folder");
		return;
	}
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		if (nnames == cap) {
			char **v = realloc(names, (cap = cap ? 2 * cap : 16) * sizeof *v);

			if (v == NULL)
				break;
			names = v;
		}
		if ((names[nnames] = strdup(e->d_name)) == NULL)
			break;
		nnames++;
	}
	closedir(d);
	if (nnames > 0)
		qsort(names, nnames, sizeof *names, cmp_str);
	for (size_t i = 0; i < nnames; i++) {
		pathf(path, sizeof path, "%s/snapshots/%s", repo, names[i]);
		if (dir[0] == '\0' && check_dir(path) == NULL)
			pathf(dir, dirsize, "%s", path);
		free(names[i]);
	}
	free(names);
	if (dir[0] == '\0') {
		pathf(path, sizeof path, "%s/snapshots", repo);
		looked_add(l, path, nnames > 0 ? "no complete snapshot" : "empty");
	}
}

static const char *
env(const char *name)
{
	const char *v = getenv(name);

	return v != NULL && *v != '\0' ? v : NULL;
}

int
tokenizer_find(const char *model_path, const char *configured_dir,
    char *out, size_t outsize, struct sd_error *err)
{
	return tokenizer_find_in(model_path, configured_dir, NULL, out, outsize,
	    err);
}

int
tokenizer_find_in(const char *model_path, const char *configured_dir,
    const char *hub_cache, char *out, size_t outsize, struct sd_error *err)
{
	struct looked l = { .n = 0 };
	char dir[4096], hub[4096];
	const char *why, *v;
	struct stat st;

	l.text[0] = '\0';
	if (configured_dir != NULL && *configured_dir != '\0') {
		if ((why = check_dir(configured_dir)) != NULL)
			return sd_fail(err, SD_ENOINPUT, "tokenizer folder %s: %s",
			    configured_dir, why);
		return found(configured_dir, out, outsize, err);
	}
	if ((v = env("SDBATCH_TOKENIZER")) != NULL) {
		if ((why = check_dir(v)) != NULL)
			return sd_fail(err, SD_ENOINPUT, "tokenizer folder %s (from $SDBATCH_TOKENIZER): %s",
			    v, why);
		return found(v, out, outsize, err);
	}
	if (model_path != NULL && *model_path != '\0' && stat(model_path, &st) == 0) {
		if (S_ISDIR(st.st_mode))
			pathf(dir, sizeof dir, "%s/tokenizer", model_path);
		else {
			const char *slash = strrchr(model_path, '/');

			if (slash == NULL)
				pathf(dir, sizeof dir, "tokenizer");
			else
				pathf(dir, sizeof dir, "%.*s/tokenizer",
				    (int)(slash - model_path), model_path);
		}
		if ((why = check_dir(dir)) == NULL)
			return found(dir, out, outsize, err);
		looked_add(&l, dir, why);
	} else if (model_path != NULL && *model_path != '\0')
		looked_add(&l, model_path, "the model path does not exist");
	if (hub_cache != NULL && *hub_cache != '\0')
		pathf(hub, sizeof hub, "%s", hub_cache);
	else if ((v = env("HF_HUB_CACHE")) != NULL ||
	    (v = env("HUGGINGFACE_HUB_CACHE")) != NULL)
		pathf(hub, sizeof hub, "%s", v);
	else if ((v = env("HF_HOME")) != NULL)
		pathf(hub, sizeof hub, "%s/hub", v);
	else if ((v = env("XDG_CACHE_HOME")) != NULL)
		pathf(hub, sizeof hub, "%s/huggingface/hub", v);
	else if ((v = env("HOME")) != NULL)
		pathf(hub, sizeof hub, "%s/.cache/huggingface/hub", v);
	else
		hub[0] = '\0';
	if (hub[0] != '\0') {
		find_in_hub(hub, dir, sizeof dir, &l);
		if (dir[0] != '\0')
			return found(dir, out, outsize, err);
	} else
		looked_add(&l, "the Hugging Face Hub cache", "$HOME is not set");
	/* the one `make install` installs (./configure --with-tokenizer=DIR) */
	pathf(dir, sizeof dir, "%s/clip-tokenizer", SDBATCH_PKGDATADIR);
	if ((why = check_dir(dir)) == NULL)
		return found(dir, out, outsize, err);
	looked_add(&l, dir, why);
	return sd_fail(err, SD_ENOINPUT,
	    "no CLIP tokenizer found (a folder with vocab.json and merges.txt); looked at: %s; "
	    "fetch one into the Hub cache with `sdbatch pull openai/clip-vit-large-patch14`, "
	    "or name a folder with --tokenizer DIR (tokenizer: in the configuration)", l.text);
}
