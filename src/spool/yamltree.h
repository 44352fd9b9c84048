/* yamltree.h: a small, hostile-input-safe YAML document tree (libyaml).
 *
 * Job files and the configuration are one YAML document: a tree of
 * mappings, sequences and scalars, each node with its line.  The loader is
 * strict on purpose: anchors, aliases and explicit tags are refused (no
 * "billion laughs"), duplicate keys are refused, mapping keys must be
 * scalars, the input must be UTF-8, and the document, every scalar, the
 * nesting depth and the number of nodes are capped. */
#ifndef SD_SPOOL_YAMLTREE_H
#define SD_SPOOL_YAMLTREE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "core/error.h"

enum ynode_kind { YNODE_SCALAR, YNODE_MAP, YNODE_SEQ };

struct ynode {
	enum ynode_kind kind;
	int line, column;	/* 1-based */
	size_t start, end;	/* byte offsets of the node's text in the input */
	/* scalars */
	char *value;		/* NUL-terminated (YAML may hold \0: see len) */
	size_t len;
	int quoted;		/* not a plain scalar: always a string */
	/* mappings (keys[i] are scalars) and sequences (items) */
	struct ynode **keys, **items;
	size_t n;
	size_t cap;		/* internal: allocated keys/items */
};

struct ylimits {
	size_t max_document;	/* bytes */
	size_t max_scalar;	/* bytes */
	int max_depth;
	size_t max_nodes;
};

/* Sensible defaults for the limits (64 KiB, 16 KiB, 16, 4096). */
void ytree_limits_default(struct ylimits *l);

/* Parse one YAML document from buf.  name is used in messages
 * ("NAME:LINE: ...").  An empty stream gives an SD_EDATA error; so does a
 * second document.  *line (when not NULL) gets the line of the error. */
struct ynode *ytree_parse(const char *buf, size_t len, const char *name,
    const struct ylimits *lim, struct sd_error *err, int *line);
void ytree_free(struct ynode *n);

/* The value of key in mapping map, or NULL. */
struct ynode *ytree_get(const struct ynode *map, const char *key);

/* Scalar typing, YAML core schema for plain scalars (quoted ones are always
 * strings): null is "", "~", "null"/"Null"/"NULL". */
int ytree_is_null(const struct ynode *n);
/* Plain true/false (any of true, True, TRUE, false, ...): 0/1, else -1. */
int ytree_bool(const struct ynode *n);
/* A plain decimal integer (optional sign, or 0x hex): 0 and *out, else -1
 * (also on overflow). */
int ytree_int(const struct ynode *n, int64_t *out);
/* A plain finite number (integer or float): 0 and *out, else -1. */
int ytree_number(const struct ynode *n, double *out);

/* The node as JSON: mappings -> objects, sequences -> arrays, plain
 * scalars typed by the core schema, quoted scalars -> strings. */
json_t *ytree_to_json(const struct ynode *n);

/* A short name of the node's kind for messages ("a mapping", ...). */
const char *ytree_kind_name(const struct ynode *n);

/* Typed access to fields, with messages "NAME:LINE: FIELD: problem" filled
 * into err with the given code (SD_EDATA for jobs, SD_ECONFIG for the
 * configuration), err->field set to the field and *line to its line. */
struct yctx {
	const char *name;	/* file name for messages */
	int code;
	struct sd_error *err;
	int *line;		/* may be NULL */
};

/* Fail about field (node v, may be NULL) with a printf-style message. */
int yfail(struct yctx *c, const struct ynode *v, const char *field,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* An integer in [lo, hi]. */
int yget_int(struct yctx *c, const struct ynode *v, const char *field,
    int64_t lo, int64_t hi, int64_t *out);
/* A number in [lo, hi]. */
int yget_number(struct yctx *c, const struct ynode *v, const char *field,
    double lo, double hi, double *out);
/* true or false. */
int yget_bool(struct yctx *c, const struct ynode *v, const char *field, int *out);
/* A scalar that is not null, as a malloc'd string (replacing *out, which is
 * freed).  Numbers are taken as their text. */
int yget_string(struct yctx *c, const struct ynode *v, const char *field,
    char **out);
/* v must be a mapping (else an error naming what it is instead). */
int yget_map(struct yctx *c, const struct ynode *v, const char *field);

#endif
