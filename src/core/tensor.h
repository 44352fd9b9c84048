/* tensor.h: dtypes and the tensor descriptor shared by every layer.
 *
 * A tensor is a view: it names a dtype, a shape (row-major, C-contiguous)
 * and a pointer to data that someone else owns (an mmap'd file, an arena,
 * a backend's device memory). */
#ifndef SD_TENSOR_H
#define SD_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#define SD_MAX_DIMS 8

enum sd_dtype {
	SD_F32, SD_F16, SD_BF16, SD_F64,
	SD_I64, SD_I32, SD_I16, SD_I8, SD_U8, SD_BOOL,
	SD_DTYPE_COUNT
};

struct sd_tensor {
	const char *name;	/* may be NULL */
	enum sd_dtype dtype;
	int ndim;
	int64_t shape[SD_MAX_DIMS];
	void *data;
};

/* Bytes of one element of dtype. */
size_t sd_dtype_size(enum sd_dtype dtype);
/* The safetensors name of a dtype ("F32", "F16", ...). */
const char *sd_dtype_name(enum sd_dtype dtype);
/* Parse a safetensors dtype name; returns -1 when unknown. */
int sd_dtype_parse(const char *name, enum sd_dtype *out);

/* Number of elements (1 for a scalar), and bytes. */
int64_t sd_tensor_numel(const struct sd_tensor *t);
/* The rows [first, first + n) of t along its first dimension, as a view
 * into t's data written to *view (fused q/k/v weights, adaLN chunks);
 * returns view. */
const struct sd_tensor *sd_tensor_rows(const struct sd_tensor *t, int64_t first, int64_t n,
    struct sd_tensor *view);
size_t sd_tensor_nbytes(const struct sd_tensor *t);

/* "[2, 4, 8, 8]" into buf; returns buf. */
char *sd_shape_str(const struct sd_tensor *t, char *buf, size_t size);

/* True when t has exactly the ndim dims given (a -1 dim matches anything). */
int sd_tensor_has_shape(const struct sd_tensor *t, int ndim, ...);

/* Half-precision conversions (round to nearest even). */
float sd_f16_to_f32(uint16_t h);
uint16_t sd_f32_to_f16(float f);
float sd_bf16_to_f32(uint16_t h);
uint16_t sd_f32_to_bf16(float f);

/* Widen n elements of a floating tensor's data (F32, F16, BF16, F64) into
 * dst; returns -1 for other dtypes. */
int sd_convert_to_f32(float *dst, const void *src, enum sd_dtype dtype, size_t n);

#endif
