/* prompt.c: AUTOMATIC1111's prompt syntax (see prompt.h). */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer.h"
#include "sample/pipeline.h"
#include "sample/prompt.h"

/* ---------------------------------------------------------------- parsing */

struct pieces {
	struct prompt_piece *v;
	int n, cap;
};

static int
add_piece(struct pieces *p, const char *text, size_t len, double weight)
{
	if (p->n == p->cap) {
		int nc = p->cap ? 2 * p->cap : 16;
		struct prompt_piece *nv = realloc(p->v, (size_t)nc * sizeof *nv);
		if (nv == NULL)
			return -1;
		p->v = nv;
		p->cap = nc;
	}
	char *s = malloc(len + 1);
	if (s == NULL)
		return -1;
	memcpy(s, text, len);
	s[len] = '\0';
	p->v[p->n].text = s;
	p->v[p->n].weight = weight;
	p->n++;
	return 0;
}

static int
is_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Python's \w, near enough: ASCII letters, digits, '_' and any non-ASCII
 * byte. */
static int
is_word(unsigned char c)
{
	return isalnum(c) || c == '_' || c >= 0x80;
}

/* re.split(r"\s*\bBREAK\b\s*", text): the parts, with ("BREAK", -1) between
 * them. */
static int
add_text(struct pieces *p, const char *s, size_t len)
{
	size_t start = 0, i = 0;

	while (i < len) {
		/* a match starts at i: whitespace, then BREAK on word boundaries */
		size_t j = i;
		while (j < len && is_space((unsigned char)s[j]))
			j++;
		if (j + 5 <= len && memcmp(s + j, "BREAK", 5) == 0 &&
		    (j == 0 || !is_word((unsigned char)s[j - 1])) &&
		    (j + 5 == len || !is_word((unsigned char)s[j + 5]))) {
			size_t k = j + 5;
			while (k < len && is_space((unsigned char)s[k]))
				k++;
			if (add_piece(p, s + start, i - start, 1.0) < 0 || add_piece(p, "BREAK", 5, -1.0) < 0)
				return -1;
			start = i = k;
			continue;
		}
		i = j > i ? j : i + 1;
	}
	return add_piece(p, s + start, len - start, 1.0);
}

static void
multiply_range(struct pieces *p, int from, double m)
{
	for (int i = from; i < p->n; i++)
		p->v[i].weight *= m;
}

void
prompt_pieces_free(struct prompt_piece *pieces, int n)
{
	for (int i = 0; i < n; i++)
		free(pieces[i].text);
	free(pieces);
}

int
prompt_parse(const char *text, struct prompt_piece **out, int *nout, struct sd_error *err)
{
	struct pieces p = {0};
	int *round = NULL, *square = NULL, nr = 0, ns = 0;
	size_t len = strlen(text), i = 0;
	const double round_m = 1.1, square_m = 1 / 1.1;

	round = malloc((len + 1) * sizeof *round);
	square = malloc((len + 1) * sizeof *square);
	if (round == NULL || square == NULL)
		goto oom;
	while (i < len) {
		char c = text[i];
		if (c == '\\') {
			if (i + 1 < len && strchr("()[]\\", text[i + 1]) != NULL) {
				if (add_piece(&p, text + i + 1, 1, 1.0) < 0)
					goto oom;
				i += 2;
			} else {
				/* a lone backslash: A1111 keeps nothing of it */
				if (add_piece(&p, "", 0, 1.0) < 0)
					goto oom;
				i++;
			}
		} else if (c == '(') {
			round[nr++] = p.n;
			i++;
		} else if (c == '[') {
			square[ns++] = p.n;
			i++;
		} else if (c == ':') {
			/* :\s*([+-]?[.\d]+)\s*\) */
			size_t j = i + 1, w0, w1;
			while (j < len && is_space((unsigned char)text[j]))
				j++;
			w0 = j;
			if (j < len && (text[j] == '+' || text[j] == '-'))
				j++;
			size_t digits = j;
			while (j < len && (isdigit((unsigned char)text[j]) || text[j] == '.'))
				j++;
			w1 = j;
			while (j < len && is_space((unsigned char)text[j]))
				j++;
			if (w1 > digits && j < len && text[j] == ')') {
				if (nr > 0) {
					char num[64], *end;
					size_t n = w1 - w0 < sizeof num - 1 ? w1 - w0 : sizeof num - 1;
					memcpy(num, text + w0, n);
					num[n] = '\0';
					errno = 0;
					double v = strtod(num, &end);
					if (*end != '\0' || n == 0 || errno != 0 || !isfinite(v)) {
						sd_fail(err, SD_EDATA, "prompt: the weight \"%s\" is not a number", num);
						goto fail;
					}
					multiply_range(&p, round[--nr], v);
				} else if (add_text(&p, text + i, j + 1 - i) < 0) {
					goto oom;
				}
				i = j + 1;
			} else {
				if (add_text(&p, ":", 1) < 0)
					goto oom;
				i++;
			}
		} else if (c == ')' && nr > 0) {
			multiply_range(&p, round[--nr], round_m);
			i++;
		} else if (c == ']' && ns > 0) {
			multiply_range(&p, square[--ns], square_m);
			i++;
		} else if (c == ')' || c == ']') {
			if (add_text(&p, text + i, 1) < 0)
				goto oom;
			i++;
		} else {
			size_t j = i;
			while (j < len && strchr("\\()[]:", text[j]) == NULL)
				j++;
			if (add_text(&p, text + i, j - i) < 0)
				goto oom;
			i = j;
		}
	}
	for (int k = 0; k < nr; k++)
		multiply_range(&p, round[k], round_m);
	for (int k = 0; k < ns; k++)
		multiply_range(&p, square[k], square_m);
	if (p.n == 0 && add_piece(&p, "", 0, 1.0) < 0)
		goto oom;
	/* merge runs of equal weights */
	for (int k = 0; k + 1 < p.n;) {
		if (p.v[k].weight == p.v[k + 1].weight) {
			size_t a = strlen(p.v[k].text), b = strlen(p.v[k + 1].text);
			char *s = realloc(p.v[k].text, a + b + 1);
			if (s == NULL)
				goto oom;
			memcpy(s + a, p.v[k + 1].text, b + 1);
			p.v[k].text = s;
			free(p.v[k + 1].text);
			memmove(&p.v[k + 1], &p.v[k + 2], (size_t)(p.n - k - 2) * sizeof p.v[0]);
			p.n--;
		} else {
			k++;
		}
	}
	free(round);
	free(square);
	*out = p.v;
	*nout = p.n;
	return 0;
oom:
	sd_fail(err, SD_EINTERNAL, "out of memory");
fail:
	free(round);
	free(square);
	prompt_pieces_free(p.v, p.n);
	return -1;
}

/* ---------------------------------------------------------------- <lora:...> */

int
prompt_extract_loras(const char *text, char **stripped, struct prompt_lora **loras, int *n,
    struct sd_error *err)
{
	size_t len = strlen(text), o = 0;
	char *s = malloc(len + 1);
	struct prompt_lora *v = NULL;
	int nv = 0;

	*loras = NULL;
	*n = 0;
	if (s == NULL)
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	for (size_t i = 0; i < len;) {
		/* <(\w+):([^>]+)> */
		size_t j = i + 1, k;
		if (text[i] != '<') {
			s[o++] = text[i++];
			continue;
		}
		while (j < len && (isalnum((unsigned char)text[j]) || text[j] == '_'))
			j++;
		if (j == i + 1 || j >= len || text[j] != ':') {
			s[o++] = text[i++];
			continue;
		}
		k = j + 1;
		while (k < len && text[k] != '>')
			k++;
		if (k >= len || k == j + 1) {
			s[o++] = text[i++];
			continue;
		}
		size_t tlen = j - i - 1;
		if (!((tlen == 4 && strncmp(text + i + 1, "lora", 4) == 0) ||
		    (tlen == 4 && strncmp(text + i + 1, "lyco", 4) == 0))) {
			sd_fail(err, SD_EDATA, "prompt: <%.*s:...> is an extra network sdbatch does not know "
			    "(only <lora:NAME:SCALE>)", (int)(tlen > 32 ? 32 : tlen), text + i + 1);
			goto fail;
		}
		/* the arguments: NAME[:M[:U]], or te=M / unet=U */
		struct prompt_lora l = {.text_scale = 1.0f, .unet_scale = NAN};
		char args[512];
		size_t alen = k - j - 1;
		if (alen >= sizeof args) {
			sd_fail(err, SD_EDATA, "prompt: a <lora:...> tag longer than %zu characters", sizeof args - 1);
			goto fail;
		}
		memcpy(args, text + j + 1, alen);
		args[alen] = '\0';
		int pos = 0;
		for (char *save = NULL, *a = strtok_r(args, ":", &save); a != NULL; a = strtok_r(NULL, ":", &save)) {
			char *end;
			float *dst = NULL;
			if (pos == 0) {
				if (strlen(a) >= sizeof l.name) {
					sd_fail(err, SD_EDATA, "prompt: a LoRA name longer than %zu characters",
					    sizeof l.name - 1);
					goto fail;
				}
				snprintf(l.name, sizeof l.name, "%s", a);
				pos++;
				continue;
			}
			if (strncmp(a, "te=", 3) == 0)
				dst = &l.text_scale, a += 3;
			else if (strncmp(a, "unet=", 5) == 0)
				dst = &l.unet_scale, a += 5;
			else if (strncmp(a, "dyn=", 4) == 0)
				continue;	/* dynamic rank: no meaning for a merge */
			else if (pos == 1)
				dst = &l.text_scale, pos++;
			else if (pos == 2)
				dst = &l.unet_scale, pos++;
			else {
				sd_fail(err, SD_EDATA, "prompt: <lora:%s:...> has too many arguments", l.name);
				goto fail;
			}
			errno = 0;
			double v = strtod(a, &end);
			if (end == a || *end != '\0' || errno != 0 || !isfinite(v)) {
				sd_fail(err, SD_EDATA, "prompt: <lora:%s:...>: \"%.32s\" is not a number", l.name, a);
				goto fail;
			}
			*dst = (float)v;
		}
		if (l.name[0] == '\0') {
			sd_fail(err, SD_EDATA, "prompt: a <lora:...> tag without a name");
			goto fail;
		}
		if (isnan(l.unet_scale))
			l.unet_scale = l.text_scale;
		struct prompt_lora *nvv = realloc(v, (size_t)(nv + 1) * sizeof *nvv);
		if (nvv == NULL) {
			sd_fail(err, SD_EINTERNAL, "out of memory");
			goto fail;
		}
		v = nvv;
		v[nv++] = l;
		i = k + 1;
	}
	s[o] = '\0';
	*stripped = s;
	*loras = v;
	*n = nv;
	return 0;
fail:
	free(s);
	free(v);
	return -1;
}

/* ---------------------------------------------------------------- chunks */

struct builder {
	struct prompt_chunks *out;
	int cap;
	int32_t cur[PROMPT_CHUNK_LEN];
	float w[PROMPT_CHUNK_LEN];
	int len;		/* tokens in cur */
	int last_comma;
	int32_t bos, eos;
};

static int
next_chunk(struct builder *b, int is_last)
{
	struct prompt_chunks *c = b->out;

	c->token_count += is_last ? b->len : PROMPT_CHUNK;
	if (c->n == b->cap) {
		int nc = b->cap ? 2 * b->cap : 4;
		int32_t *ni = realloc(c->ids, (size_t)nc * PROMPT_CHUNK_LEN * sizeof *ni);
		if (ni == NULL)
			return -1;
		c->ids = ni;
		float *nw = realloc(c->weights, (size_t)nc * PROMPT_CHUNK_LEN * sizeof *nw);
		if (nw == NULL)
			return -1;
		c->weights = nw;
		b->cap = nc;
	}
	int32_t *ids = c->ids + (size_t)c->n * PROMPT_CHUNK_LEN;
	float *w = c->weights + (size_t)c->n * PROMPT_CHUNK_LEN;
	ids[0] = b->bos;
	w[0] = 1.0f;
	for (int i = 0; i < PROMPT_CHUNK; i++) {
		ids[1 + i] = i < b->len ? b->cur[i] : b->eos;
		w[1 + i] = i < b->len ? b->w[i] : 1.0f;
	}
	ids[PROMPT_CHUNK_LEN - 1] = b->eos;
	w[PROMPT_CHUNK_LEN - 1] = 1.0f;
	c->n++;
	b->len = 0;
	b->last_comma = -1;
	return 0;
}

int
prompt_chunks(const struct sd_tokenizer *t, const char *text, struct prompt_chunks *out,
    struct sd_error *err)
{
	struct prompt_piece *pieces = NULL;
	struct builder *b = calloc(1, sizeof *b);
	int npieces = 0, rc = -1;
	int32_t comma;
	size_t ncomma = 0;
	int32_t *ct;

	memset(out, 0, sizeof *out);
	if (b == NULL)
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	b->out = out;
	b->bos = tokenizer_bos(t);
	b->eos = tokenizer_eos(t);
	b->last_comma = -1;
	if ((ct = tokenizer_tokenize(t, ",", &ncomma, err)) == NULL)
		goto out;
	comma = ncomma == 1 ? ct[0] : -1;
	free(ct);
	if (prompt_parse(text, &pieces, &npieces, err) < 0)
		goto out;
	for (int p = 0; p < npieces; p++) {
		size_t ntok = 0;
		int32_t *tok;
		if (strcmp(pieces[p].text, "BREAK") == 0 && pieces[p].weight == -1.0) {
			if (next_chunk(b, 0) < 0)
				goto oom;
			continue;
		}
		if ((tok = tokenizer_tokenize(t, pieces[p].text, &ntok, err)) == NULL)
			goto out;
		for (size_t i = 0; i < ntok; i++) {
			if (tok[i] == comma) {
				b->last_comma = b->len;
			} else if (b->len == PROMPT_CHUNK && b->last_comma != -1 &&
			    b->len - b->last_comma <= 20) {
				/* the comma look-back: what follows the last comma
				 * starts the next chunk */
				int from = b->last_comma + 1, nmove = b->len - from;
				int32_t mt[PROMPT_CHUNK];
				float mw[PROMPT_CHUNK];
				memcpy(mt, b->cur + from, (size_t)nmove * sizeof *mt);
				memcpy(mw, b->w + from, (size_t)nmove * sizeof *mw);
				b->len = from;
				if (next_chunk(b, 0) < 0) {
					free(tok);
					goto oom;
				}
				memcpy(b->cur, mt, (size_t)nmove * sizeof *mt);
				memcpy(b->w, mw, (size_t)nmove * sizeof *mw);
				b->len = nmove;
				out->comma_moved = 1;
			}
			if (b->len == PROMPT_CHUNK && next_chunk(b, 0) < 0) {
				free(tok);
				goto oom;
			}
			b->cur[b->len] = tok[i];
			b->w[b->len] = (float)pieces[p].weight;
			b->len++;
		}
		free(tok);
	}
	if ((b->len > 0 || out->n == 0) && next_chunk(b, 1) < 0)
		goto oom;
	rc = 0;
	goto out;
oom:
	sd_fail(err, SD_EINTERNAL, "out of memory");
out:
	prompt_pieces_free(pieces, npieces);
	free(b);
	if (rc < 0)
		prompt_chunks_free(out);
	return rc;
}

void
prompt_chunks_free(struct prompt_chunks *c)
{
	free(c->ids);
	free(c->weights);
	memset(c, 0, sizeof *c);
}

void
prompt_emphasis(float *z, const float *weights, int len, int width)
{
	size_t n = (size_t)len * width;
	double before = 0, after = 0;

	for (size_t i = 0; i < n; i++)
		before += z[i];
	for (int t = 0; t < len; t++)
		for (int k = 0; k < width; k++) {
			float *x = &z[(size_t)t * width + k];
			*x = *x * weights[t];
			after += *x;
		}
	/* torch: original_mean / new_mean, both float32 */
	float f = (float)(before / (double)n) / (float)(after / (double)n);
	for (size_t i = 0; i < n; i++)
		z[i] *= f;
}

/* ---------------------------------------------------------------- names */

const char *
sd_prompt_syntax_name(enum sd_prompt_syntax s)
{
	return s == SD_PROMPT_A1111 ? "a1111" : s == SD_PROMPT_PLAIN ? "plain" : "?";
}

int
sd_prompt_syntax_parse(const char *name, enum sd_prompt_syntax *out)
{
	if (strcmp(name, "plain") == 0)
		*out = SD_PROMPT_PLAIN;
	else if (strcmp(name, "a1111") == 0)
		*out = SD_PROMPT_A1111;
	else
		return -1;
	return 0;
}
