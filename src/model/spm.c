/* spm.c: SentencePiece unigram tokenizer (the model file, the normaliser,
 * the Viterbi segmentation) and T5Tokenizer's special-token handling.  The
 * rules are SentencePiece's (normalizer.cc, unigram_model.cc's
 * EncodeOptimized, sentencepiece_processor.cc) and transformers'
 * T5Tokenizer (slow, legacy=True). */
#include "config.h"

#include <errno.h>
#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/spm.h"

/* SentencePiece's piece types. */
enum {
	PIECE_NORMAL = 1, PIECE_UNKNOWN = 2, PIECE_CONTROL = 3, PIECE_USER_DEFINED = 4,
	PIECE_UNUSED = 5, PIECE_BYTE = 6,
};

#define UNK_PENALTY 10.0f
#define SPACE_SYMBOL "\xe2\x96\x81"	/* U+2581 */

struct piece {
	char *str;
	size_t len;
	float score;
	int type;
};

struct spm_model {
	struct piece *piece;
	int n, cap;	/* pieces read, slots allocated */
	int unk_id;
	int byte_fallback;
	int add_dummy_prefix, remove_extra_ws, escape_ws;
	float min_score, max_score;
	size_t max_piece_len;	/* bytes, of the matchable pieces */
	size_t max_user_len;	/* bytes, of the user-defined pieces (0: none) */
	int byte_id[256];	/* <0xXX> pieces, -1 when absent */

	/* hash of every piece string -> id (open addressing) */
	int *slot;
	size_t nslot;

	/* precompiled character map (NULL: identity) */
	uint32_t *trie;
	size_t trie_units;
	char *norm;		/* the replacement strings */
	size_t norm_len;
};

/* ---- the protobuf wire format ---- */

struct pb {
	const uint8_t *p, *end;
};

static int
pb_varint(struct pb *b, uint64_t *v)
{
	uint64_t r = 0;

	for (int shift = 0; shift < 64; shift += 7) {
		if (b->p >= b->end)
			return -1;
		uint8_t c = *b->p++;
		r |= (uint64_t)(c & 0x7f) << shift;
		if (c < 0x80) {
			*v = r;
			return 0;
		}
	}
	return -1;
}

/* One field: its number and wire type, and its value (varint / fixed in
 * *v, a length-delimited field's bytes in *sub).  0, or -1 with err. */
static int
pb_field(struct pb *b, const char *msg, int *field, int *wire, uint64_t *v, struct pb *sub,
    struct sd_error *err)
{
	uint64_t key;

	if (pb_varint(b, &key) < 0)
		return sd_fail(err, SD_EDATA, "spiece.model: truncated field key in %s", msg);
	*field = (int)(key >> 3 > 0x1fffffff ? 0 : key >> 3);
	*wire = (int)(key & 7);
	if (*field == 0)
		return sd_fail(err, SD_EDATA, "spiece.model: bad field number in %s", msg);
	switch (*wire) {
	case 0:
		if (pb_varint(b, v) < 0)
			return sd_fail(err, SD_EDATA, "spiece.model: truncated varint (field %d of %s)",
			    *field, msg);
		return 0;
	case 1:
	case 5: {
		size_t k = *wire == 1 ? 8 : 4;
		if ((size_t)(b->end - b->p) < k)
			return sd_fail(err, SD_EDATA, "spiece.model: truncated fixed%zu (field %d of %s)",
			    k * 8, *field, msg);
		*v = 0;
		for (size_t i = 0; i < k; i++)
			*v |= (uint64_t)b->p[i] << (8 * i);
		b->p += k;
		return 0;
	}
	case 2: {
		uint64_t len;
		if (pb_varint(b, &len) < 0 || len > (uint64_t)(b->end - b->p))
			return sd_fail(err, SD_EDATA, "spiece.model: truncated length-delimited "
			    "field %d of %s", *field, msg);
		sub->p = b->p;
		sub->end = b->p + len;
		b->p += len;
		return 0;
	}
	default:
		return sd_fail(err, SD_EDATA, "spiece.model: unsupported wire type %d (field %d of %s)",
		    *wire, *field, msg);
	}
}

static int
expect_wire(int wire, int want, int field, const char *msg, struct sd_error *err)
{
	if (wire != want)
		return sd_fail(err, SD_EDATA, "spiece.model: field %d of %s has wire type %d, "
		    "expected %d", field, msg, wire, want);
	return 0;
}

/* ---- loading ---- */

static uint64_t
hash_bytes(const char *s, size_t n)
{
	uint64_t h = 1469598103934665603ull;

	for (size_t i = 0; i < n; i++)
		h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
	return h;
}

/* The id of the piece s[0..n), or -1. */
static int
lookup(const struct spm_model *m, const char *s, size_t n)
{
	size_t i = (size_t)hash_bytes(s, n) & (m->nslot - 1);

	for (;; i = (i + 1) & (m->nslot - 1)) {
		int id = m->slot[i];
		if (id < 0)
			return -1;
		if (m->piece[id].len == n && memcmp(m->piece[id].str, s, n) == 0)
			return id;
	}
}

static int
build_hash(struct spm_model *m, struct sd_error *err)
{
	m->nslot = 16;
	while (m->nslot < (size_t)m->n * 2)
		m->nslot *= 2;
	if ((m->slot = malloc(m->nslot * sizeof *m->slot)) == NULL)
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	for (size_t i = 0; i < m->nslot; i++)
		m->slot[i] = -1;
	for (int id = 0; id < m->n; id++) {
		const struct piece *p = &m->piece[id];
		size_t i = (size_t)hash_bytes(p->str, p->len) & (m->nslot - 1);
		if (lookup(m, p->str, p->len) >= 0)
			return sd_fail(err, SD_EDATA, "spiece.model: piece %d is a duplicate", id);
		while (m->slot[i] >= 0)
			i = (i + 1) & (m->nslot - 1);
		m->slot[i] = id;
	}
	return 0;
}

static int
parse_piece(struct spm_model *m, struct pb b, struct sd_error *err)
{
	struct piece *p = &m->piece[m->n];
	int field, wire, have_str = 0;
	uint64_t v;
	struct pb sub;
	char msg[48];

	snprintf(msg, sizeof msg, "piece %d", m->n);
	p->type = PIECE_NORMAL;
	while (b.p < b.end) {
		if (pb_field(&b, msg, &field, &wire, &v, &sub, err) < 0)
			return -1;
		if (field == 1) {
			if (expect_wire(wire, 2, field, msg, err) < 0)
				return -1;
			p->len = (size_t)(sub.end - sub.p);
			if (p->len == 0 || memchr(sub.p, 0, p->len) != NULL)
				return sd_fail(err, SD_EDATA, "spiece.model: %s has an empty string "
				    "or one with a NUL byte", msg);
			free(p->str);
			if ((p->str = malloc(p->len + 1)) == NULL)
				return sd_fail(err, SD_EINTERNAL, "out of memory");
			memcpy(p->str, sub.p, p->len);
			p->str[p->len] = 0;
			have_str = 1;
		} else if (field == 2) {
			uint32_t u = (uint32_t)v;
			if (expect_wire(wire, 5, field, msg, err) < 0)
				return -1;
			memcpy(&p->score, &u, sizeof p->score);
			if (!(p->score == p->score) || p->score > FLT_MAX || p->score < -FLT_MAX)
				return sd_fail(err, SD_EDATA, "spiece.model: %s has a score that is "
				    "not a finite number", msg);
		} else if (field == 3) {
			if (expect_wire(wire, 0, field, msg, err) < 0)
				return -1;
			if (v < PIECE_NORMAL || v > PIECE_BYTE)
				return sd_fail(err, SD_EDATA, "spiece.model: %s has an unknown type %llu",
				    msg, (unsigned long long)v);
			p->type = (int)v;
		}
	}
	if (!have_str)
		return sd_fail(err, SD_EDATA, "spiece.model: %s has no string", msg);
	m->n++;
	return 0;
}

static int
parse_trainer(struct spm_model *m, struct pb b, struct sd_error *err)
{
	int field, wire;
	uint64_t v;
	struct pb sub;

	while (b.p < b.end) {
		if (pb_field(&b, "trainer_spec", &field, &wire, &v, &sub, err) < 0)
			return -1;
		if (wire != 0)
			continue;
		if (field == 3 && v != 1)	/* model_type: UNIGRAM = 1 */
			return sd_fail(err, SD_EDATA, "spiece.model: model type %llu is not supported "
			    "(only the unigram model, type 1)", (unsigned long long)v);
		if (field == 24 && v != 0)
			return sd_fail(err, SD_EDATA, "spiece.model: treat_whitespace_as_suffix is "
			    "not supported");
		if (field == 35)
			m->byte_fallback = v != 0;
	}
	return 0;
}

/* The precompiled character map: a uint32 trie size in bytes, the
 * Darts-clone double array (uint32 units), then the NUL-terminated
 * replacement strings. */
static int
parse_charsmap(struct spm_model *m, struct pb b, struct sd_error *err)
{
	size_t n = (size_t)(b.end - b.p), size;

	if (n == 0)
		return 0;
	if (n < 4)
		return sd_fail(err, SD_EDATA, "spiece.model: truncated precompiled_charsmap");
	size = (size_t)b.p[0] | (size_t)b.p[1] << 8 | (size_t)b.p[2] << 16 | (size_t)b.p[3] << 24;
	if (size > n - 4 || size % 4 != 0 || size == 0)
		return sd_fail(err, SD_EDATA, "spiece.model: precompiled_charsmap's trie size %zu "
		    "does not fit its %zu bytes", size, n);
	m->trie_units = size / 4;
	m->norm_len = n - 4 - size;
	m->trie = malloc(size);
	m->norm = malloc(m->norm_len + 1);
	if (m->trie == NULL || m->norm == NULL)
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	for (size_t i = 0; i < m->trie_units; i++) {
		const uint8_t *u = b.p + 4 + 4 * i;
		m->trie[i] = (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 |
		    (uint32_t)u[3] << 24;
	}
	memcpy(m->norm, b.p + 4 + size, m->norm_len);
	m->norm[m->norm_len] = 0;
	return 0;
}

static int
parse_normalizer(struct spm_model *m, struct pb b, struct sd_error *err)
{
	int field, wire;
	uint64_t v;
	struct pb sub;

	while (b.p < b.end) {
		if (pb_field(&b, "normalizer_spec", &field, &wire, &v, &sub, err) < 0)
			return -1;
		if (field == 2) {
			if (expect_wire(wire, 2, field, "normalizer_spec", err) < 0 ||
			    parse_charsmap(m, sub, err) < 0)
				return -1;
		} else if (field >= 3 && field <= 5) {
			if (expect_wire(wire, 0, field, "normalizer_spec", err) < 0)
				return -1;
			if (field == 3)
				m->add_dummy_prefix = v != 0;
			else if (field == 4)
				m->remove_extra_ws = v != 0;
			else
				m->escape_ws = v != 0;
		}
	}
	return 0;
}

struct spm_model *
spm_load_mem(const void *data, size_t n, struct sd_error *err)
{
	struct spm_model *m = calloc(1, sizeof *m);
	struct pb b = { data, (const uint8_t *)data + n }, sub;
	int field, wire, npieces = 0;
	uint64_t v;

	if (m == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		return NULL;
	}
	m->add_dummy_prefix = m->remove_extra_ws = m->escape_ws = 1;
	/* count the pieces first */
	while (b.p < b.end) {
		if (pb_field(&b, "the model", &field, &wire, &v, &sub, err) < 0)
			goto fail;
		if (field == 1) {
			if (expect_wire(wire, 2, field, "the model", err) < 0)
				goto fail;
			npieces++;
		}
	}
	if (npieces == 0) {
		sd_fail(err, SD_EDATA, "spiece.model: no pieces (not a SentencePiece model?)");
		goto fail;
	}
	m->cap = npieces;
	if ((m->piece = calloc((size_t)npieces, sizeof *m->piece)) == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		goto fail;
	}
	b.p = data;
	while (b.p < b.end) {
		if (pb_field(&b, "the model", &field, &wire, &v, &sub, err) < 0)
			goto fail;
		if (field == 1 && parse_piece(m, sub, err) < 0)
			goto fail;
		if (field == 2 && (expect_wire(wire, 2, field, "the model", err) < 0 ||
		    parse_trainer(m, sub, err) < 0))
			goto fail;
		if (field == 3 && (expect_wire(wire, 2, field, "the model", err) < 0 ||
		    parse_normalizer(m, sub, err) < 0))
			goto fail;
	}
	if (build_hash(m, err) < 0)
		goto fail;

	m->unk_id = -1;
	m->min_score = FLT_MAX;
	m->max_score = -FLT_MAX;
	for (int i = 0; i < 256; i++)
		m->byte_id[i] = -1;
	for (int id = 0; id < m->n; id++) {
		const struct piece *p = &m->piece[id];
		if (p->type == PIECE_UNKNOWN) {
			if (m->unk_id >= 0) {
				sd_fail(err, SD_EDATA, "spiece.model: two unknown pieces (%d and %d)",
				    m->unk_id, id);
				goto fail;
			}
			m->unk_id = id;
		}
		if (p->type == PIECE_NORMAL) {
			if (p->score < m->min_score)
				m->min_score = p->score;
			if (p->score > m->max_score)
				m->max_score = p->score;
		}
		if (p->type == PIECE_NORMAL || p->type == PIECE_USER_DEFINED)
			if (p->len > m->max_piece_len)
				m->max_piece_len = p->len;
		if (p->type == PIECE_USER_DEFINED && p->len > m->max_user_len)
			m->max_user_len = p->len;
		if (p->type == PIECE_BYTE) {
			unsigned x;
			char tail;
			if (p->len == 6 && sscanf(p->str, "<0x%2X%c", &x, &tail) == 2 && tail == '>')
				m->byte_id[x & 0xff] = id;
		}
	}
	if (m->unk_id < 0) {
		sd_fail(err, SD_EDATA, "spiece.model: no unknown piece (type UNKNOWN)");
		goto fail;
	}
	if (m->min_score > m->max_score)
		m->min_score = m->max_score = 0;
	if (m->byte_fallback)
		for (int i = 0; i < 256; i++)
			if (m->byte_id[i] < 0) {
				sd_fail(err, SD_EDATA, "spiece.model: byte_fallback without the piece "
				    "<0x%02X>", i);
				goto fail;
			}
	return m;
fail:
	spm_free(m);
	return NULL;
}

struct spm_model *
spm_load(const char *path, struct sd_error *err)
{
	FILE *f = fopen(path, "rb");
	struct spm_model *m = NULL;
	char *buf = NULL;
	size_t n = 0, cap = 0, got;

	if (f == NULL) {
		sd_fail(err, SD_ENOINPUT, "%s: %s", path, strerror(errno));
		return NULL;
	}
	for (;;) {
		if (n == cap) {
			char *nb;
			cap = cap ? cap * 2 : 1 << 20;
			if (cap > (size_t)1 << 30 || (nb = realloc(buf, cap)) == NULL) {
				sd_fail(err, SD_EDATA, "%s: too large for a SentencePiece model", path);
				goto out;
			}
			buf = nb;
		}
		got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (got == 0)
			break;
	}
	if (ferror(f)) {
		sd_fail(err, SD_EIO, "%s: read error", path);
		goto out;
	}
	if ((m = spm_load_mem(buf, n, err)) == NULL)
		sd_error_prefix(err, "%s", path);
out:
	free(buf);
	fclose(f);
	return m;
}

void
spm_free(struct spm_model *m)
{
	if (m == NULL)
		return;
	if (m->piece != NULL)
		for (int i = 0; i < m->cap; i++)
			free(m->piece[i].str);
	free(m->piece);
	free(m->slot);
	free(m->trie);
	free(m->norm);
	free(m);
}

int
spm_size(const struct spm_model *m)
{
	return m->n;
}

const char *
spm_piece(const struct spm_model *m, int id)
{
	return id >= 0 && id < m->n ? m->piece[id].str : NULL;
}

int
spm_piece_id(const struct spm_model *m, const char *piece)
{
	return lookup(m, piece, strlen(piece));
}

int
spm_unk_id(const struct spm_model *m)
{
	return m->unk_id;
}

/* ---- normalisation ---- */

/* SentencePiece's length of the UTF-8 sequence led by c (1 for a stray
 * continuation byte). */
static size_t
char_len(uint8_t c)
{
	return (size_t)"\1\1\1\1\1\1\1\1\1\1\1\1\2\2\3\4"[c >> 4];
}

/* The length of the valid UTF-8 character at s[0..n), or 0 if invalid. */
static size_t
utf8_valid(const uint8_t *s, size_t n)
{
	uint8_t c = s[0];
	size_t len;
	uint8_t lo = 0x80, hi = 0xbf;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		len = 2;
	else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
	} else
		return 0;
	if (n < len || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return len;
}

/* Darts-clone: the value of the longest key in the trie that is a prefix of
 * s[0..n), and its length in *len (0: none). */
static uint32_t
trie_longest(const struct spm_model *m, const uint8_t *s, size_t n, size_t *len)
{
	const uint32_t *a = m->trie;
	uint32_t unit = a[0], value = 0;
	size_t id = 0;

	*len = 0;
#define OFFSET(u) (((u) >> 10) << (((u) & (1u << 9)) >> 6))
#define LABEL(u) ((u) & ((1u << 31) | 0xffu))
#define HAS_LEAF(u) (((u) >> 8) & 1)
#define VALUE(u) ((u) & ((1u << 31) - 1))
	id ^= OFFSET(unit);
	for (size_t i = 0; i < n; i++) {
		id ^= s[i];
		if (id >= m->trie_units)
			break;
		unit = a[id];
		if (LABEL(unit) != s[i])
			break;
		id ^= OFFSET(unit);
		if (id >= m->trie_units)
			break;
		if (HAS_LEAF(unit)) {
			value = VALUE(a[id]);
			*len = i + 1;
		}
	}
#undef OFFSET
#undef LABEL
#undef HAS_LEAF
#undef VALUE
	return value;
}

/* The normalised form of the prefix of s[0..n): *out (*out_len bytes) and
 * the bytes consumed. */
static size_t
normalize_prefix(const struct spm_model *m, const uint8_t *s, size_t n, const char **out,
    size_t *out_len)
{
	size_t len = 0;

	/* a user-defined piece passes unnormalised (the longest one) */
	for (len = m->max_user_len < n ? m->max_user_len : n; len > 0; len--) {
		int id = lookup(m, (const char *)s, len);
		if (id >= 0 && m->piece[id].type == PIECE_USER_DEFINED) {
			*out = (const char *)s;
			*out_len = len;
			return len;
		}
	}
	if (m->trie != NULL) {
		uint32_t v = trie_longest(m, s, n, &len);
		if (len > 0 && v < m->norm_len) {
			*out = m->norm + v;
			*out_len = strlen(*out);	/* norm[norm_len] is 0 */
			return len;
		}
	}
	if ((len = utf8_valid(s, n)) == 0) {
		*out = "\xef\xbf\xbd";	/* U+FFFD for a malformed byte */
		*out_len = 3;
		return 1;
	}
	*out = (const char *)s;
	*out_len = len;
	return len;
}

/* A growable byte string. */
struct buf {
	char *p;
	size_t n, cap;
	int oom;
};

static void
buf_add(struct buf *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (b->n + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 64;
		char *np;
		while (cap < b->n + n + 1)
			cap *= 2;
		if ((np = realloc(b->p, cap)) == NULL) {
			b->oom = 1;
			return;
		}
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = 0;
}

/* SentencePiece's Normalizer::Normalize. */
static void
normalize(const struct spm_model *m, const uint8_t *s, size_t n, struct buf *out)
{
	const char *sp;
	size_t sp_len, used;
	int prev_space;
	const char *ws = m->escape_ws ? SPACE_SYMBOL : " ";
	size_t ws_len = strlen(ws);

	/* leading whitespace (after normalisation) */
	if (m->remove_extra_ws)
		while (n > 0) {
			used = normalize_prefix(m, s, n, &sp, &sp_len);
			if (sp_len != 1 || sp[0] != ' ')
				break;
			s += used;
			n -= used;
		}
	if (n == 0)
		return;
	if (m->add_dummy_prefix)
		buf_add(out, ws, ws_len);
	prev_space = m->remove_extra_ws;
	while (n > 0) {
		used = normalize_prefix(m, s, n, &sp, &sp_len);
		while (prev_space && sp_len > 0 && sp[0] == ' ') {
			sp++;
			sp_len--;
		}
		if (sp_len > 0) {
			for (size_t i = 0; i < sp_len; i++)
				if (m->escape_ws && sp[i] == ' ')
					buf_add(out, ws, ws_len);
				else
					buf_add(out, sp + i, 1);
			prev_space = sp[sp_len - 1] == ' ';
		}
		s += used;
		n -= used;
		prev_space = prev_space && m->remove_extra_ws;
	}
	/* trailing whitespace */
	if (m->remove_extra_ws)
		while (out->n >= ws_len && memcmp(out->p + out->n - ws_len, ws, ws_len) == 0)
			out->n -= ws_len;
}

/* ---- the unigram segmentation ---- */

struct node {
	float score;	/* of the best path ending here */
	int start;	/* where its last piece starts (-1: unreached) */
	int id;		/* its last piece */
};

static void
emit(int32_t *ids, int cap, int *count, int id)
{
	if (*count < cap)
		ids[*count] = id;
	(*count)++;
}

int
spm_encode(const struct spm_model *m, const char *text, size_t len, int32_t *ids, int cap,
    struct sd_error *err)
{
	struct buf norm = {0};
	struct node *best = NULL;
	int *path = NULL, npath = 0, count = 0;
	const float unk_score = m->min_score - UNK_PENALTY;
	size_t n;

	normalize(m, (const uint8_t *)text, len, &norm);
	if (norm.oom)
		goto oom;
	n = norm.n;
	if (n == 0) {
		free(norm.p);
		return 0;
	}
	if (n > (size_t)1 << 30)
		goto oom;
	best = malloc((n + 1) * sizeof *best);
	path = malloc((n + 1) * sizeof *path);
	if (best == NULL || path == NULL)
		goto oom;
	for (size_t i = 0; i <= n; i++)
		best[i] = (struct node){ 0, -1, -1 };
	best[0].start = 0;

	for (size_t pos = 0; pos < n; ) {
		size_t mblen = char_len((uint8_t)norm.p[pos]);
		int single = 0;
		float base = best[pos].score;
		if (mblen > n - pos)
			mblen = n - pos;
		for (size_t l = 1; l <= m->max_piece_len && l <= n - pos; l++) {
			int id = lookup(m, norm.p + pos, l);
			const struct piece *p;
			float s;
			if (id < 0)
				continue;
			p = &m->piece[id];
			if (p->type == PIECE_NORMAL)
				s = base + p->score;
			else if (p->type == PIECE_USER_DEFINED)
				s = base + ((float)l * m->max_score - 0.1f);
			else
				continue;	/* control, unknown, unused, byte */
			if (best[pos + l].start < 0 || s > best[pos + l].score)
				best[pos + l] = (struct node){ s, (int)pos, id };
			if (l == mblen)
				single = 1;
		}
		if (!single) {
			float s = base + unk_score;
			if (best[pos + mblen].start < 0 || s > best[pos + mblen].score)
				best[pos + mblen] = (struct node){ s, (int)pos, m->unk_id };
		}
		pos += mblen;
	}

	/* backtrack: the path's end positions, last first */
	for (size_t end = n; end > 0; end = (size_t)best[end].start)
		path[npath++] = (int)end;
	for (int k = npath - 1; k >= 0; k--) {
		const struct node *nd = &best[path[k]];
		if (nd->id != m->unk_id) {
			emit(ids, cap, &count, nd->id);
		} else if (m->byte_fallback) {
			for (int i = nd->start; i < path[k]; i++)
				emit(ids, cap, &count, m->byte_id[(uint8_t)norm.p[i]]);
		} else if (k == npath - 1 || best[path[k + 1]].id != m->unk_id) {
			emit(ids, cap, &count, m->unk_id);	/* consecutive ones fused */
		}
	}
	free(norm.p);
	free(best);
	free(path);
	return count;
oom:
	free(norm.p);
	free(best);
	free(path);
	return sd_fail(err, SD_EINTERNAL, "out of memory encoding a prompt of %zu bytes", len);
}

/* ---- T5Tokenizer ---- */

/* The id of the special string at s (and its length), or -1. */
static int
t5_special(const struct spm_model *m, const char *s, size_t *len)
{
	static const char *const names[] = { "</s>", "<pad>", "<unk>" };

	for (int i = 0; i < 3; i++) {
		size_t l = strlen(names[i]);
		if (strncmp(s, names[i], l) == 0) {
			int id = lookup(m, names[i], l);
			if (id >= 0) {
				*len = l;
				return id;
			}
		}
	}
	if (strncmp(s, "<extra_id_", 10) == 0) {
		const char *p = s + 10;
		int v = 0, digits = 0;
		while (*p >= '0' && *p <= '9' && digits < 3) {
			v = v * 10 + (*p++ - '0');
			digits++;
		}
		/* "<extra_id_07>" is no token: the numbers are written plainly */
		if (digits > 0 && *p == '>' && v < SPM_T5_EXTRA_IDS &&
		    !(digits > 1 && s[10] == '0')) {
			*len = (size_t)(p + 1 - s);
			return m->n + SPM_T5_EXTRA_IDS - 1 - v;
		}
	}
	return -1;
}

int
spm_t5_encode(const struct spm_model *m, const char *text, int32_t *ids, int max_len,
    struct sd_error *err)
{
	int eos = lookup(m, "</s>", 4), pad = lookup(m, "<pad>", 5);
	int32_t *all = NULL;
	int n = 0, cap = 0, keep;
	const char *chunk = text, *p = text;

	if (eos < 0 || pad < 0)
		return sd_fail(err, SD_EDATA, "the SentencePiece model has no %s piece for T5",
		    eos < 0 ? "</s>" : "<pad>");
	if (max_len < 1)
		return sd_fail(err, SD_EINTERNAL, "T5 sequence length %d", max_len);
	for (;;) {
		size_t slen = 0;
		int sid = *p ? t5_special(m, p, &slen) : -1;
		if (*p == 0 || sid >= 0) {
			/* the text before: its pieces, then the special id */
			int need = spm_encode(m, chunk, (size_t)(p - chunk), NULL, 0, err);
			if (need < 0)
				goto fail;
			if (n + need + 2 > cap) {
				int32_t *na;
				cap = (n + need + 2) * 2;
				if ((na = realloc(all, (size_t)cap * sizeof *all)) == NULL) {
					sd_fail(err, SD_EINTERNAL, "out of memory");
					goto fail;
				}
				all = na;
			}
			n += spm_encode(m, chunk, (size_t)(p - chunk), all + n, need, err);
			if (*p == 0)
				break;
			all[n++] = sid;
			p += slen;
			chunk = p;
		} else {
			p++;
		}
	}
	/* truncation leaves room for the </s> (T5 adds one special token)... */
	keep = n < max_len - 1 ? n : max_len - 1;
	for (int i = 0; i < keep; i++)
		ids[i] = all[i];
	/* ...which is not added again after one the text ended with */
	if (keep == 0 || ids[keep - 1] != eos)
		ids[keep++] = eos;
	if (n == 0 || all[n - 1] != eos)
		n++;
	for (int i = keep; i < max_len; i++)
		ids[i] = pad;
	free(all);
	return n;
fail:
	free(all);
	return -1;
}
