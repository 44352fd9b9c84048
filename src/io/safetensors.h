/* safetensors.h: read (mmap, zero-copy) and write safetensors files.
 *
 * The header is validated completely before any tensor is used: a
 * truncated file, a huge or malformed header, unknown dtypes, offsets out
 * of range or overlapping, sizes that disagree with shapes all give an
 * error naming the file (and the tensor), never a crash. */
#ifndef SD_SAFETENSORS_H
#define SD_SAFETENSORS_H

#include "core/error.h"
#include "core/tensor.h"

/* The largest header we accept (real checkpoints have < 1 MiB). */
#define ST_MAX_HEADER (100u << 20)

struct st_file;

/* Open and validate path; the data stay mmap'd until st_close. */
struct st_file *st_open(const char *path, struct sd_error *err);
/* Validate an in-memory image (used by st_open and the fuzz target); the
 * buffer must outlive the result.  name is used in messages. */
struct st_file *st_parse(const void *buf, size_t size, const char *name,
    struct sd_error *err);
void st_close(struct st_file *f);

const char *st_path(const struct st_file *f);
int st_count(const struct st_file *f);
/* Tensors in name order. */
const struct sd_tensor *st_tensor(const struct st_file *f, int i);
/* NULL when there is no such tensor. */
const struct sd_tensor *st_find(const struct st_file *f, const char *name);
/* A __metadata__ value, or NULL. */
const char *st_metadata(const struct st_file *f, const char *key);
/* Total bytes of tensor data. */
size_t st_data_size(const struct st_file *f);

/* Write n tensors (and optional metadata key/value pairs, nmeta of them) to
 * path, atomically (a temporary file renamed into place). */
int st_write(const char *path, const struct sd_tensor *tensors, int n,
    const char *const *meta_keys, const char *const *meta_values, int nmeta,
    struct sd_error *err);

#endif
