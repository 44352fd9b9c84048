/* yamltree.c: one YAML document as a tree, from libyaml's events. */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "spool/util.h"
#include "spool/yamltree.h"

void
ytree_limits_default(struct ylimits *l)
{
	l->max_document = 64 * 1024;
	l->max_scalar = 16 * 1024;
	l->max_depth = 16;
	l->max_nodes = 4096;
}

void
ytree_free(struct ynode *n)
{
	size_t i;

	if (n == NULL)
		return;
	if (n->kind == YNODE_MAP) {
		/* A key may wait for its value when parsing failed. */
		for (i = 0; i < n->cap; i++) {
			ytree_free(n->keys[i]);
			ytree_free(n->items[i]);
		}
	} else {
		for (i = 0; i < n->n; i++)
			ytree_free(n->items[i]);
	}
	free(n->keys);
	free(n->items);
	free(n->value);
	free(n);
}

/* libyaml's mark.index counts characters: the byte offset of one, walking
 * forward from a known (character, byte) position of valid UTF-8. */
struct offsets {
	const char *buf;
	size_t len, chars, bytes;
};

struct builder {
	const char *name;
	const struct ylimits *lim;
	struct sd_error *err;
	int *line;
	size_t nodes;
	struct ynode *stack[64];
	int depth;
	struct ynode *root;
	struct offsets off;
	size_t bom;		/* bytes of a byte-order mark skipped */
};

static int
fail_at(struct builder *b, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
fail_at(struct builder *b, int line, const char *fmt, ...)
{
	char msg[SD_ERROR_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (b->line != NULL)
		*b->line = line;
	if (line > 0)
		return sd_fail(b->err, SD_EDATA, "%s:%d: %s", b->name, line, msg);
	return sd_fail(b->err, SD_EDATA, "%s: %s", b->name, msg);
}

/* Attach a new node to the current container (as key or value). */
static int
attach(struct builder *b, struct ynode *n)
{
	struct ynode *top;
	size_t *cap;

	if (++b->nodes > b->lim->max_nodes) {
		int line = n->line;
		ytree_free(n);
		return fail_at(b, line, "too many YAML nodes (the limit is %zu)",
		    b->lim->max_nodes);
	}
	if (b->depth == 0) {
		b->root = n;
		return 0;
	}
	top = b->stack[b->depth - 1];
	cap = &top->cap;
	if (top->kind == YNODE_SEQ) {
		if (top->n == *cap) {
			size_t nc = *cap ? *cap * 2 : 8;
			struct ynode **ni = realloc(top->items, nc * sizeof *ni);
			if (ni == NULL)
				goto oom;
			top->items = ni;
			*cap = nc;
		}
		top->items[top->n++] = n;
		return 0;
	}
	/* A mapping: keys[n] waits for its value (items[n]) when set. */
	if (top->keys != NULL && top->n < *cap && top->keys[top->n] != NULL) {
		top->items[top->n++] = n;
		return 0;
	}
	if (n->kind != YNODE_SCALAR) {
		int line = n->line, map = n->kind == YNODE_MAP;
		ytree_free(n);
		return fail_at(b, line, "a mapping key must be a string, not %s",
		    map ? "a mapping" : "a list");
	}
	for (size_t i = 0; i < top->n; i++) {
		if (strcmp(top->keys[i]->value, n->value) == 0) {
			int line = n->line, first = top->keys[i]->line;
			char key[80];
			snprintf(key, sizeof key, "%.60s", n->value);
			ytree_free(n);
			return fail_at(b, line, "%s: duplicate key (first given on line %d)",
			    key, first);
		}
	}
	if (top->n == *cap || top->keys == NULL) {
		size_t nc = *cap ? *cap * 2 : 8;
		struct ynode **nk = realloc(top->keys, nc * sizeof *nk);
		if (nk == NULL)
			goto oom;
		top->keys = nk;
		struct ynode **ni = realloc(top->items, nc * sizeof *ni);
		if (ni == NULL)
			goto oom;
		top->items = ni;
		for (size_t i = *cap; i < nc; i++)
			nk[i] = ni[i] = NULL;
		*cap = nc;
	}
	top->keys[top->n] = n;
	return 0;
oom:
	ytree_free(n);
	return sd_fail(b->err, SD_EINTERNAL, "%s: out of memory", b->name);
}

static struct ynode *
new_node(enum ynode_kind kind, const yaml_mark_t *m)
{
	struct ynode *n = calloc(1, sizeof *n);

	if (n != NULL) {
		n->kind = kind;
		n->line = (int)m->line + 1;
		n->column = (int)m->column + 1;
	}
	return n;
}

static size_t
byte_offset(struct offsets *o, size_t chars)
{
	if (chars < o->chars) {
		o->chars = 0;
		o->bytes = 0;
	}
	while (o->chars < chars && o->bytes < o->len) {
		o->bytes++;
		while (o->bytes < o->len && ((unsigned char)o->buf[o->bytes] & 0xc0) == 0x80)
			o->bytes++;
		o->chars++;
	}
	return o->bytes;
}

static int
check_anchor_tag(struct builder *b, const yaml_mark_t *m,
    const yaml_char_t *anchor, const yaml_char_t *tag, int implicit)
{
	if (anchor != NULL)
		return fail_at(b, (int)m->line + 1,
		    "YAML anchors (&%.40s) are not allowed", (const char *)anchor);
	if (tag != NULL && !implicit)
		return fail_at(b, (int)m->line + 1,
		    "YAML tags (%.60s) are not allowed", (const char *)tag);
	return 0;
}

static int
handle(struct builder *b, yaml_event_t *ev, int *documents)
{
	struct ynode *n;

	switch (ev->type) {
	case YAML_DOCUMENT_START_EVENT:
		if (++*documents > 1)
			return fail_at(b, (int)ev->start_mark.line + 1,
			    "more than one YAML document (a job file holds exactly one)");
		return 0;
	case YAML_ALIAS_EVENT:
		return fail_at(b, (int)ev->start_mark.line + 1,
		    "YAML aliases (*%.40s) are not allowed",
		    (const char *)ev->data.alias.anchor);
	case YAML_SCALAR_EVENT:
		if (check_anchor_tag(b, &ev->start_mark, ev->data.scalar.anchor,
		    ev->data.scalar.tag, ev->data.scalar.plain_implicit ||
		    ev->data.scalar.quoted_implicit) < 0)
			return -1;
		if (ev->data.scalar.length > b->lim->max_scalar)
			return fail_at(b, (int)ev->start_mark.line + 1,
			    "a string of %zu bytes is over the limit of %zu",
			    ev->data.scalar.length, b->lim->max_scalar);
		if (memchr(ev->data.scalar.value, '\0', ev->data.scalar.length))
			return fail_at(b, (int)ev->start_mark.line + 1,
			    "a string holds a NUL character");
		if ((n = new_node(YNODE_SCALAR, &ev->start_mark)) == NULL)
			return sd_fail(b->err, SD_EINTERNAL, "out of memory");
		n->value = malloc(ev->data.scalar.length + 1);
		if (n->value == NULL) {
			free(n);
			return sd_fail(b->err, SD_EINTERNAL, "out of memory");
		}
		memcpy(n->value, ev->data.scalar.value, ev->data.scalar.length);
		n->value[ev->data.scalar.length] = '\0';
		n->len = ev->data.scalar.length;
		n->quoted = ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
		n->start = byte_offset(&b->off, ev->start_mark.index) + b->bom;
		n->end = byte_offset(&b->off, ev->end_mark.index) + b->bom;
		return attach(b, n);
	case YAML_SEQUENCE_START_EVENT:
	case YAML_MAPPING_START_EVENT: {
		int seq = ev->type == YAML_SEQUENCE_START_EVENT;
		if (check_anchor_tag(b, &ev->start_mark,
		    seq ? ev->data.sequence_start.anchor : ev->data.mapping_start.anchor,
		    seq ? ev->data.sequence_start.tag : ev->data.mapping_start.tag,
		    seq ? ev->data.sequence_start.implicit : ev->data.mapping_start.implicit) < 0)
			return -1;
		if (b->depth >= b->lim->max_depth || b->depth >= 64)
			return fail_at(b, (int)ev->start_mark.line + 1,
			    "nested too deeply (the limit is %d levels)", b->lim->max_depth);
		n = new_node(seq ? YNODE_SEQ : YNODE_MAP, &ev->start_mark);
		if (n == NULL)
			return sd_fail(b->err, SD_EINTERNAL, "out of memory");
		if (attach(b, n) < 0)
			return -1;
		b->stack[b->depth++] = n;
		return 0;
	}
	case YAML_SEQUENCE_END_EVENT:
	case YAML_MAPPING_END_EVENT:
		if (b->depth > 0)
			b->depth--;
		return 0;
	default:
		return 0;
	}
}

struct ynode *
ytree_parse(const char *buf, size_t len, const char *name,
    const struct ylimits *lim, struct sd_error *err, int *line)
{
	struct builder b;
	struct ylimits deflim;
	yaml_parser_t parser;
	yaml_event_t ev;
	int documents = 0, done = 0;
	size_t bad, bom = 0;

	memset(&b, 0, sizeof b);
	if (lim == NULL) {
		ytree_limits_default(&deflim);
		lim = &deflim;
	}
	b.name = name;
	b.lim = lim;
	b.err = err;
	b.line = line;
	if (line != NULL)
		*line = 0;
	if (len > lim->max_document) {
		fail_at(&b, 0, "the document is %zu bytes, over the limit of %zu",
		    len, lim->max_document);
		return NULL;
	}
	if (!util_utf8_valid(buf, len, &bad)) {
		int l = 1;
		for (size_t i = 0; i < bad; i++)
			l += buf[i] == '\n';
		fail_at(&b, l, "invalid UTF-8 (byte 0x%02x at offset %zu)",
		    (unsigned char)buf[bad], bad);
		return NULL;
	}
	if (!yaml_parser_initialize(&parser)) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		return NULL;
	}
	/* A UTF-8 byte-order mark is allowed (and not part of the text);
	 * libyaml keeps it when told the encoding. */
	if (len >= 3 && memcmp(buf, "\xef\xbb\xbf", 3) == 0)
		bom = 3;
	b.off.buf = buf + bom;
	b.off.len = len - bom;
	b.bom = bom;
	yaml_parser_set_encoding(&parser, YAML_UTF8_ENCODING);
	yaml_parser_set_input_string(&parser, (const unsigned char *)buf + bom,
	    len - bom);
	while (!done) {
		if (!yaml_parser_parse(&parser, &ev)) {
			int l = (int)parser.problem_mark.line + 1;
			if (parser.context != NULL)
				fail_at(&b, l, "YAML syntax error: %s %s (line %d)",
				    parser.problem ? parser.problem : "error",
				    parser.context, (int)parser.context_mark.line + 1);
			else
				fail_at(&b, l, "YAML syntax error: %s",
				    parser.problem ? parser.problem : "error");
			goto fail;
		}
		done = ev.type == YAML_STREAM_END_EVENT;
		if (handle(&b, &ev, &documents) < 0) {
			yaml_event_delete(&ev);
			goto fail;
		}
		yaml_event_delete(&ev);
	}
	yaml_parser_delete(&parser);
	if (b.root == NULL) {
		fail_at(&b, 0, "empty document");
		return NULL;
	}
	return b.root;
fail:
	yaml_parser_delete(&parser);
	ytree_free(b.root);
	return NULL;
}

struct ynode *
ytree_get(const struct ynode *map, const char *key)
{
	size_t i;

	if (map == NULL || map->kind != YNODE_MAP)
		return NULL;
	for (i = 0; i < map->n; i++)
		if (strcmp(map->keys[i]->value, key) == 0)
			return map->items[i];
	return NULL;
}

int
ytree_is_null(const struct ynode *n)
{
	if (n == NULL)
		return 1;
	if (n->kind != YNODE_SCALAR || n->quoted)
		return 0;
	return n->value[0] == '\0' || strcmp(n->value, "~") == 0 ||
	    strcmp(n->value, "null") == 0 || strcmp(n->value, "Null") == 0 ||
	    strcmp(n->value, "NULL") == 0;
}

int
ytree_bool(const struct ynode *n)
{
	static const char *t[] = { "true", "True", "TRUE" };
	static const char *f[] = { "false", "False", "FALSE" };

	if (n == NULL || n->kind != YNODE_SCALAR || n->quoted)
		return -1;
	for (int i = 0; i < 3; i++) {
		if (strcmp(n->value, t[i]) == 0)
			return 1;
		if (strcmp(n->value, f[i]) == 0)
			return 0;
	}
	return -1;
}

int
ytree_int(const struct ynode *n, int64_t *out)
{
	const char *s;
	char *end;
	long long v;
	int base = 10;

	if (n == NULL || n->kind != YNODE_SCALAR || n->quoted)
		return -1;
	s = n->value;
	if (s[0] == '\0')
		return -1;
	const char *d = s + (s[0] == '-' || s[0] == '+');
	if (d[0] == '0' && (d[1] == 'x' || d[1] == 'X'))
		base = 16;
	else
		for (const char *p = d; *p; p++)
			if (*p < '0' || *p > '9')
				return -1;
	if (*d == '\0')
		return -1;
	errno = 0;
	v = strtoll(s, &end, base);
	if (errno != 0 || *end != '\0' || end == s)
		return -1;
	*out = v;
	return 0;
}

int
ytree_number(const struct ynode *n, double *out)
{
	const char *s;
	char *end;
	double v;

	if (n == NULL || n->kind != YNODE_SCALAR || n->quoted)
		return -1;
	s = n->value;
	if (s[0] == '\0')
		return -1;
	/* Only decimal notation: no hex floats, inf or nan. */
	for (const char *p = s; *p; p++)
		if (!strchr("0123456789+-.eE", *p))
			return -1;
	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || *end != '\0' || !isfinite(v))
		return -1;
	*out = v;
	return 0;
}

json_t *
ytree_to_json(const struct ynode *n)
{
	json_t *j;
	int64_t i;
	double d;
	int b;
	size_t k;

	switch (n->kind) {
	case YNODE_MAP:
		j = json_object();
		for (k = 0; j != NULL && k < n->n; k++)
			json_object_set_new(j, n->keys[k]->value,
			    ytree_to_json(n->items[k]));
		return j;
	case YNODE_SEQ:
		j = json_array();
		for (k = 0; j != NULL && k < n->n; k++)
			json_array_append_new(j, ytree_to_json(n->items[k]));
		return j;
	default:
		if (n->quoted)
			return json_stringn(n->value, n->len);
		if (ytree_is_null(n))
			return json_null();
		if ((b = ytree_bool(n)) >= 0)
			return json_boolean(b);
		if (ytree_int(n, &i) == 0)
			return json_integer(i);
		if (ytree_number(n, &d) == 0)
			return json_real(d);
		return json_stringn(n->value, n->len);
	}
}

const char *
ytree_kind_name(const struct ynode *n)
{
	if (n == NULL)
		return "nothing";
	switch (n->kind) {
	case YNODE_MAP:
		return "a mapping";
	case YNODE_SEQ:
		return "a list";
	default:
		return ytree_is_null(n) ? "null" : "a scalar";
	}
}

int
yfail(struct yctx *c, const struct ynode *v, const char *field,
    const char *fmt, ...)
{
	char msg[SD_ERROR_MAX];
	va_list ap;
	int line = v != NULL ? v->line : 0;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (c->line != NULL)
		*c->line = line;
	if (line > 0)
		sd_fail(c->err, c->code, "%s:%d: %s: %s", c->name, line, field, msg);
	else
		sd_fail(c->err, c->code, "%s: %s: %s", c->name, field, msg);
	if (c->err != NULL)
		snprintf(c->err->field, sizeof c->err->field, "%s", field);
	return -1;
}

/* A short quotation of a scalar for messages. */
static const char *
quote(const struct ynode *v, char *buf, size_t size)
{
	if (v == NULL)
		return "nothing";
	if (v->kind != YNODE_SCALAR)
		return ytree_kind_name(v);
	if (ytree_is_null(v))
		return "null";
	if (v->len > 40)
		snprintf(buf, size, "\"%.40s...\"", v->value);
	else
		snprintf(buf, size, "\"%s\"", v->value);
	return buf;
}

/* A plain scalar of digits (with a sign) that ytree_int could not hold. */
static int
is_big_integer(const struct ynode *v)
{
	const char *d;

	if (v == NULL || v->kind != YNODE_SCALAR || v->quoted)
		return 0;
	d = v->value + (v->value[0] == '-' || v->value[0] == '+');
	return *d != '\0' && strspn(d, "0123456789") == strlen(d);
}

int
yget_int(struct yctx *c, const struct ynode *v, const char *field,
    int64_t lo, int64_t hi, int64_t *out)
{
	char q[64];
	int64_t x;
	double d;

	if (ytree_int(v, &x) < 0) {
		/* 512.0 is fine; 512.5, "512" and 1e99 are not. */
		if (ytree_number(v, &d) == 0 && fabs(d) < 9e15 &&
		    d == (double)(int64_t)d)
			x = (int64_t)d;
		else if (is_big_integer(v))
			return yfail(c, v, field, "%s is out of range (%" PRId64
			    "..%" PRId64 ")", quote(v, q, sizeof q), lo, hi);
		else
			return yfail(c, v, field, "expected an integer, got %s%s",
			    v != NULL && v->quoted ? "the string " : "",
			    quote(v, q, sizeof q));
	}
	if (x < lo || x > hi)
		return yfail(c, v, field, "%" PRId64 " is out of range (%" PRId64
		    "..%" PRId64 ")", x, lo, hi);
	*out = x;
	return 0;
}

int
yget_number(struct yctx *c, const struct ynode *v, const char *field,
    double lo, double hi, double *out)
{
	char q[64];
	double x;

	if (ytree_number(v, &x) < 0) {
		int64_t i;
		if (ytree_int(v, &i) == 0)
			x = (double)i;
		else
			return yfail(c, v, field, "expected a number, got %s%s",
			    v != NULL && v->quoted ? "the string " : "",
			    quote(v, q, sizeof q));
	}
	if (!(x >= lo && x <= hi))
		return yfail(c, v, field, "%g is out of range (%g..%g)", x, lo, hi);
	*out = x;
	return 0;
}

int
yget_bool(struct yctx *c, const struct ynode *v, const char *field, int *out)
{
	char q[64];
	int b = ytree_bool(v);

	if (b < 0)
		return yfail(c, v, field, "expected true or false, got %s",
		    quote(v, q, sizeof q));
	*out = b;
	return 0;
}

int
yget_string(struct yctx *c, const struct ynode *v, const char *field,
    char **out)
{
	char *s;

	if (v == NULL || v->kind != YNODE_SCALAR || ytree_is_null(v))
		return yfail(c, v, field, "expected a string, got %s",
		    ytree_kind_name(v));
	if ((s = strdup(v->value)) == NULL)
		return sd_fail(c->err, SD_EINTERNAL, "out of memory");
	free(*out);
	*out = s;
	return 0;
}

int
yget_map(struct yctx *c, const struct ynode *v, const char *field)
{
	if (v == NULL || v->kind != YNODE_MAP)
		return yfail(c, v, field, "expected a mapping (key: value lines), got %s",
		    ytree_kind_name(v));
	return 0;
}
