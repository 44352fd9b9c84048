/* safetensors.c: the safetensors container, read through mmap. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "io/jsonerr.h"
#include "io/fileio.h"
#include "io/safetensors.h"

struct st_file {
	char *path;
	void *map;		/* whole file, when opened from disk */
	size_t map_size;
	const unsigned char *data;	/* start of the data section */
	size_t data_size;
	int count;
	struct sd_tensor *tensors;	/* sorted by name */
	char **names;
	void **copies;		/* aligned copies of misaligned tensors */
	int ncopies;
	int nmeta;
	char **meta_keys, **meta_values;
};

static int
by_name(const void *a, const void *b)
{
	const struct sd_tensor *x = a, *y = b;

	return strcmp(x->name, y->name);
}

struct span {
	uint64_t begin, end;
	int index;
};

static int
by_begin(const void *a, const void *b)
{
	const struct span *x = a, *y = b;

	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	return x->end < y->end ? -1 : x->end > y->end;
}

static int
get_u64(json_t *v, uint64_t *out)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return -1;
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

static int
parse_entry(struct st_file *f, int idx, const char *key, json_t *v,
    struct span *span, struct sd_error *err)
{
	struct sd_tensor *t = &f->tensors[idx];
	json_t *dtype, *shape, *offsets;
	uint64_t numel = 1, begin, end;
	size_t i;

	if (!json_is_object(v))
		return sd_fail(err, SD_EDATA, "tensor \"%s\": header entry is not an object", key);
	dtype = json_object_get(v, "dtype");
	shape = json_object_get(v, "shape");
	offsets = json_object_get(v, "data_offsets");
	if (!json_is_string(dtype) || !json_is_array(shape) || !json_is_array(offsets))
		return sd_fail(err, SD_EDATA, "tensor \"%s\": missing or malformed dtype, shape or data_offsets", key);
	if (sd_dtype_parse(json_string_value(dtype), &t->dtype) < 0)
		return sd_fail(err, SD_EDATA, "tensor \"%s\": unknown dtype \"%.32s\"",
		    key, json_string_value(dtype));
	if (json_array_size(shape) > SD_MAX_DIMS)
		return sd_fail(err, SD_EDATA, "tensor \"%s\": %zu dimensions (at most %d)",
		    key, json_array_size(shape), SD_MAX_DIMS);
	t->ndim = (int)json_array_size(shape);
	for (i = 0; i < json_array_size(shape); i++) {
		uint64_t d;
		if (get_u64(json_array_get(shape, i), &d) < 0 || d > (1ull << 40))
			return sd_fail(err, SD_EDATA, "tensor \"%s\": bad dimension %zu in shape", key, i);
		t->shape[i] = (int64_t)d;
		if (d != 0 && numel > UINT64_MAX / d)
			return sd_fail(err, SD_EDATA, "tensor \"%s\": shape too large", key);
		numel *= d;
	}
	if (json_array_size(offsets) != 2 || get_u64(json_array_get(offsets, 0), &begin) < 0 ||
	    get_u64(json_array_get(offsets, 1), &end) < 0 || begin > end)
		return sd_fail(err, SD_EDATA, "tensor \"%s\": bad data_offsets", key);
	if (end > f->data_size)
		return sd_fail(err, SD_EDATA, "tensor \"%s\": data_offsets [%" PRIu64 ", %" PRIu64
		    "] run past the end of the data (%zu bytes; truncated file?)",
		    key, begin, end, f->data_size);
	if (numel > UINT64_MAX / 8 || end - begin != numel * sd_dtype_size(t->dtype))
		return sd_fail(err, SD_EDATA, "tensor \"%s\": %" PRIu64 " bytes of data for %" PRIu64
		    " elements of %s", key, end - begin, numel, sd_dtype_name(t->dtype));
	f->names[idx] = strdup(key);
	if (f->names[idx] == NULL)
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	t->name = f->names[idx];
	t->data = (void *)(f->data + begin);
	/* Files whose header length is not a multiple of 8, or with odd
	 * offsets, leave data misaligned for its type: read such a tensor
	 * through an aligned copy rather than a misaligned pointer. */
	if ((uintptr_t)t->data % sd_dtype_size(t->dtype) != 0 && end > begin) {
		void *copy = NULL, **copies;
		copies = realloc(f->copies, (size_t)(f->ncopies + 1) * sizeof *copies);
		if (copies == NULL || posix_memalign(&copy, 64, (size_t)(end - begin)) != 0) {
			if (copies != NULL)
				f->copies = copies;
			return sd_fail(err, SD_EINTERNAL, "out of memory copying tensor \"%s\"", key);
		}
		f->copies = copies;
		memcpy(copy, t->data, (size_t)(end - begin));
		f->copies[f->ncopies++] = copy;
		t->data = copy;
	}
	span->begin = begin;
	span->end = end;
	span->index = idx;
	return 0;
}

static int
parse_metadata(struct st_file *f, json_t *meta, struct sd_error *err)
{
	const char *k;
	json_t *v;
	int i = 0;

	if (!json_is_object(meta))
		return sd_fail(err, SD_EDATA, "__metadata__ is not an object");
	f->nmeta = (int)json_object_size(meta);
	f->meta_keys = calloc((size_t)f->nmeta + 1, sizeof(char *));
	f->meta_values = calloc((size_t)f->nmeta + 1, sizeof(char *));
	if (f->meta_keys == NULL || f->meta_values == NULL)
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	json_object_foreach(meta, k, v) {
		if (!json_is_string(v))
			return sd_fail(err, SD_EDATA, "__metadata__ value of \"%s\" is not a string", k);
		f->meta_keys[i] = strdup(k);
		f->meta_values[i] = strdup(json_string_value(v));
		if (f->meta_keys[i] == NULL || f->meta_values[i] == NULL)
			return sd_fail(err, SD_EINTERNAL, "out of memory");
		i++;
	}
	return 0;
}

static int
parse_header(struct st_file *f, const unsigned char *buf, size_t size, struct sd_error *err)
{
	uint64_t hlen = 0;
	json_t *root, *v;
	json_error_t jerr;
	struct span *spans = NULL;
	const char *key;
	int n = 0, rc = -1;

	if (size < 8)
		return sd_fail(err, SD_EDATA, "file too short for a safetensors header (%zu bytes)", size);
	for (int i = 7; i >= 0; i--)
		hlen = (hlen << 8) | buf[i];
	if (hlen > ST_MAX_HEADER)
		/* (the length field's value is the file's first bytes: never
		 * in a message) */
		return sd_fail(err, SD_EDATA, "not a safetensors file (its header "
		    "length is over %u bytes)", ST_MAX_HEADER);
	if (hlen > size - 8)
		return sd_fail(err, SD_EDATA, "not a safetensors file, or a truncated "
		    "one (its header runs past the end of the file, %zu bytes)", size);
	if (hlen < 2 || buf[8] != '{')
		return sd_fail(err, SD_EDATA, "not a safetensors file (the header is not a JSON object)");
	f->data = buf + 8 + hlen;
	f->data_size = size - 8 - hlen;
	root = json_loadb((const char *)buf + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL)
		return sd_fail(err, SD_EDATA, "bad JSON in the header at byte %d: %s",
		    jerr.position, sd_json_error_kind(&jerr));
	if (!json_is_object(root)) {
		sd_fail(err, SD_EDATA, "the header is not a JSON object");
		goto out;
	}
	f->count = (int)json_object_size(root) - (json_object_get(root, "__metadata__") != NULL);
	f->tensors = calloc((size_t)f->count + 1, sizeof *f->tensors);
	f->names = calloc((size_t)f->count + 1, sizeof *f->names);
	spans = calloc((size_t)f->count + 1, sizeof *spans);
	if (f->tensors == NULL || f->names == NULL || spans == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		goto out;
	}
	json_object_foreach(root, key, v) {
		if (strcmp(key, "__metadata__") == 0) {
			if (parse_metadata(f, v, err) < 0)
				goto out;
			continue;
		}
		if (parse_entry(f, n, key, v, &spans[n], err) < 0)
			goto out;
		n++;
	}
	/* Overlapping tensors would let one write through another. */
	qsort(spans, (size_t)n, sizeof *spans, by_begin);
	for (int i = 1; i < n; i++) {
		if (spans[i].begin < spans[i - 1].end && spans[i].end > spans[i].begin) {
			sd_fail(err, SD_EDATA, "tensors \"%s\" and \"%s\" overlap in the data section",
			    f->tensors[spans[i - 1].index].name, f->tensors[spans[i].index].name);
			goto out;
		}
	}
	qsort(f->tensors, (size_t)n, sizeof *f->tensors, by_name);
	rc = 0;
out:
	free(spans);
	json_decref(root);
	return rc;
}

struct st_file *
st_parse(const void *buf, size_t size, const char *name, struct sd_error *err)
{
	struct st_file *f = calloc(1, sizeof *f);

	if (f == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		return NULL;
	}
	f->path = strdup(name ? name : "(memory)");
	if (f->path == NULL || parse_header(f, buf, size, err) < 0) {
		if (f->path != NULL)
			sd_error_prefix(err, "%s", f->path);
		st_close(f);
		return NULL;
	}
	return f;
}

struct st_file *
st_open(const char *path, struct sd_error *err)
{
	struct st_file *f;
	struct stat st;
	void *map;
	int fd;

	/* never blocks on a FIFO (a job's model: could name one) */
	if ((fd = sd_open_regular(path, err)) < 0)
		return NULL;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		sd_fail(err, SD_ENOINPUT, "%s: not a regular file", path);
		close(fd);
		return NULL;
	}
	if (st.st_size < 8) {
		sd_fail(err, SD_EDATA, "%s: file too short for a safetensors header (%lld bytes)",
		    path, (long long)st.st_size);
		close(fd);
		return NULL;
	}
	map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (map == MAP_FAILED) {
		sd_fail(err, SD_EIO, "%s: mmap: %s", path, strerror(errno));
		return NULL;
	}
	f = st_parse(map, (size_t)st.st_size, path, err);
	if (f == NULL) {
		munmap(map, (size_t)st.st_size);
		return NULL;
	}
	f->map = map;
	f->map_size = (size_t)st.st_size;
	return f;
}

void
st_close(struct st_file *f)
{
	if (f == NULL)
		return;
	if (f->names != NULL)
		for (int i = 0; i < f->count; i++)
			free(f->names[i]);
	for (int i = 0; i < f->nmeta; i++) {
		if (f->meta_keys) free(f->meta_keys[i]);
		if (f->meta_values) free(f->meta_values[i]);
	}
	free(f->meta_keys);
	free(f->meta_values);
	for (int i = 0; i < f->ncopies; i++)
		free(f->copies[i]);
	free(f->copies);
	free(f->names);
	free(f->tensors);
	if (f->map != NULL)
		munmap(f->map, f->map_size);
	free(f->path);
	free(f);
}

const char *st_path(const struct st_file *f) { return f->path; }
int st_count(const struct st_file *f) { return f->count; }
size_t st_data_size(const struct st_file *f) { return f->data_size; }

const struct sd_tensor *
st_tensor(const struct st_file *f, int i)
{
	return i >= 0 && i < f->count ? &f->tensors[i] : NULL;
}

const struct sd_tensor *
st_find(const struct st_file *f, const char *name)
{
	struct sd_tensor key = {.name = name};

	return bsearch(&key, f->tensors, (size_t)f->count, sizeof key, by_name);
}

const char *
st_metadata(const struct st_file *f, const char *key)
{
	for (int i = 0; i < f->nmeta; i++)
		if (strcmp(f->meta_keys[i], key) == 0)
			return f->meta_values[i];
	return NULL;
}

int
st_write(const char *path, const struct sd_tensor *tensors, int n,
    const char *const *meta_keys, const char *const *meta_values, int nmeta,
    struct sd_error *err)
{
	json_t *root = json_object(), *meta;
	struct sd_atomic_file af;
	char *header = NULL;
	size_t hlen, padded, offset = 0;
	unsigned char lenbuf[8];
	int rc = -1;

	if (root == NULL)
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	if (nmeta > 0) {
		meta = json_object();
		for (int i = 0; i < nmeta; i++)
			json_object_set_new(meta, meta_keys[i], json_string(meta_values[i]));
		json_object_set_new(root, "__metadata__", meta);
	}
	for (int i = 0; i < n; i++) {
		json_t *e = json_object(), *shape = json_array();
		size_t nb = sd_tensor_nbytes(&tensors[i]);
		for (int d = 0; d < tensors[i].ndim; d++)
			json_array_append_new(shape, json_integer(tensors[i].shape[d]));
		json_object_set_new(e, "dtype", json_string(sd_dtype_name(tensors[i].dtype)));
		json_object_set_new(e, "shape", shape);
		json_object_set_new(e, "data_offsets",
		    json_pack("[II]", (json_int_t)offset, (json_int_t)(offset + nb)));
		json_object_set_new(root, tensors[i].name, e);
		offset += nb;
	}
	header = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(root);
	if (header == NULL)
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	hlen = strlen(header);
	padded = (hlen + 7) & ~(size_t)7;
	for (int i = 0; i < 8; i++)
		lenbuf[i] = (unsigned char)((uint64_t)padded >> (8 * i));
	if (sd_atomic_open(&af, AT_FDCWD, path, NULL, 0666, err) < 0)
		goto out;
	if (sd_atomic_write(&af, lenbuf, 8, err) < 0 ||
	    sd_atomic_write(&af, header, hlen, err) < 0 ||
	    sd_atomic_write(&af, "        ", padded - hlen, err) < 0)
		goto out;
	for (int i = 0; i < n; i++)
		if (sd_atomic_write(&af, tensors[i].data,
		    sd_tensor_nbytes(&tensors[i]), err) < 0)
			goto out;
	if (sd_atomic_commit(&af, 0, err) < 0)
		goto out;
	rc = 0;
out:
	free(header);
	return rc;
}
