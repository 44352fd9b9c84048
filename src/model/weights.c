/* weights.c: an open-addressing hash table from names to tensor views. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/weights.h"

struct slot {
	char *name;
	const struct sd_tensor *t;
};

struct sd_weights {
	struct slot *slots;
	size_t cap, count;
	struct st_file **files;
	int nfiles;
};

static size_t
hash(const char *s)
{
	size_t h = 1469598103934665603ull;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ull;
	return h;
}

struct sd_weights *
weights_new(void)
{
	struct sd_weights *w = calloc(1, sizeof *w);

	if (w == NULL)
		return NULL;
	w->cap = 1024;
	w->slots = calloc(w->cap, sizeof *w->slots);
	if (w->slots == NULL) {
		free(w);
		return NULL;
	}
	return w;
}

void
weights_free(struct sd_weights *w)
{
	if (w == NULL)
		return;
	for (size_t i = 0; i < w->cap; i++)
		free(w->slots[i].name);
	free(w->slots);
	for (int i = 0; i < w->nfiles; i++)
		st_close(w->files[i]);
	free(w->files);
	free(w);
}

static struct slot *
find_slot(struct slot *slots, size_t cap, const char *name)
{
	size_t i = hash(name) & (cap - 1);

	while (slots[i].name != NULL && strcmp(slots[i].name, name) != 0)
		i = (i + 1) & (cap - 1);
	return &slots[i];
}

static int
grow(struct sd_weights *w)
{
	size_t cap = w->cap * 2;
	struct slot *slots = calloc(cap, sizeof *slots);

	if (slots == NULL)
		return -1;
	for (size_t i = 0; i < w->cap; i++)
		if (w->slots[i].name != NULL)
			*find_slot(slots, cap, w->slots[i].name) = w->slots[i];
	free(w->slots);
	w->slots = slots;
	w->cap = cap;
	return 0;
}

int
weights_put(struct sd_weights *w, const char *name, const struct sd_tensor *t)
{
	struct slot *s;

	if ((w->count + 1) * 2 > w->cap && grow(w) < 0)
		return -1;
	s = find_slot(w->slots, w->cap, name);
	if (s->name == NULL) {
		s->name = strdup(name);
		if (s->name == NULL)
			return -1;
		w->count++;
	}
	s->t = t;
	return 0;
}

int
weights_add_file(struct sd_weights *w, const struct st_file *f, const char *prefix)
{
	size_t plen = prefix ? strlen(prefix) : 0;

	for (int i = 0; i < st_count(f); i++) {
		const struct sd_tensor *t = st_tensor(f, i);
		if (plen && strncmp(t->name, prefix, plen) != 0)
			continue;
		if (weights_put(w, t->name, t) < 0)
			return -1;
	}
	return 0;
}

void
weights_own_file(struct sd_weights *w, struct st_file *f)
{
	struct st_file **files = realloc(w->files, (size_t)(w->nfiles + 1) * sizeof *files);

	if (files == NULL)
		return;
	w->files = files;
	w->files[w->nfiles++] = f;
}

const struct sd_tensor *
weights_get(const struct sd_weights *w, const char *name)
{
	const struct slot *s = find_slot(w->slots, w->cap, name);

	return s->name ? s->t : NULL;
}

int
weights_count(const struct sd_weights *w)
{
	return (int)w->count;
}

const struct sd_tensor *
weights_need(const struct sd_weights *w, struct sd_error *err,
    const char *prefix, const char *name, int ndim, const int64_t *shape)
{
	char full[512], want[160], got[160];
	const struct sd_tensor *t;
	int ok;

	snprintf(full, sizeof full, "%s%s", prefix ? prefix : "", name);
	t = weights_get(w, full);
	if (t == NULL) {
		sd_fail(err, SD_EDATA, "missing tensor \"%s\"", full);
		return NULL;
	}
	if (t->dtype != SD_F32 && t->dtype != SD_F16 && t->dtype != SD_BF16) {
		sd_fail(err, SD_EDATA, "tensor \"%s\" has dtype %s (F32, F16 or BF16 expected)",
		    full, sd_dtype_name(t->dtype));
		return NULL;
	}
	if (ndim == 0)
		return t;
	ok = t->ndim == ndim;
	for (int i = 0; ok && i < ndim; i++)
		if (shape[i] != -1 && shape[i] != t->shape[i])
			ok = 0;
	if (!ok) {
		size_t off = (size_t)snprintf(want, sizeof want, "[");
		for (int i = 0; i < ndim && off < sizeof want; i++) {
			if (shape[i] == -1)
				off += (size_t)snprintf(want + off, sizeof want - off, "%s?", i ? ", " : "");
			else
				off += (size_t)snprintf(want + off, sizeof want - off, "%s%lld", i ? ", " : "",
				    (long long)shape[i]);
		}
		if (off < sizeof want)
			snprintf(want + off, sizeof want - off, "]");
		sd_fail(err, SD_EDATA, "tensor \"%s\" has shape %s, expected %s", full,
		    sd_shape_str(t, got, sizeof got), want);
		return NULL;
	}
	return t;
}
