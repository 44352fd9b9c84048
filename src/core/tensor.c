/* tensor.c: dtype facts and element conversions. */
#include "config.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/tensor.h"

static const struct {
	const char *name;
	size_t size;
} dtypes[SD_DTYPE_COUNT] = {
	[SD_F32] = {"F32", 4}, [SD_F16] = {"F16", 2}, [SD_BF16] = {"BF16", 2},
	[SD_F64] = {"F64", 8}, [SD_I64] = {"I64", 8}, [SD_I32] = {"I32", 4},
	[SD_I16] = {"I16", 2}, [SD_I8] = {"I8", 1}, [SD_U8] = {"U8", 1},
	[SD_BOOL] = {"BOOL", 1},
};

size_t
sd_dtype_size(enum sd_dtype dtype)
{
	return (unsigned)dtype < SD_DTYPE_COUNT ? dtypes[dtype].size : 0;
}

const char *
sd_dtype_name(enum sd_dtype dtype)
{
	return (unsigned)dtype < SD_DTYPE_COUNT ? dtypes[dtype].name : "?";
}

int
sd_dtype_parse(const char *name, enum sd_dtype *out)
{
	for (int i = 0; i < SD_DTYPE_COUNT; i++) {
		if (strcmp(name, dtypes[i].name) == 0) {
			*out = (enum sd_dtype)i;
			return 0;
		}
	}
	return -1;
}

const struct sd_tensor *
sd_tensor_rows(const struct sd_tensor *t, int64_t first, int64_t n, struct sd_tensor *view)
{
	size_t row = (size_t)sd_tensor_numel(t) / (size_t)t->shape[0] * sd_dtype_size(t->dtype);

	*view = *t;
	view->shape[0] = n;
	view->data = (char *)t->data + (size_t)first * row;
	return view;
}

int64_t
sd_tensor_numel(const struct sd_tensor *t)
{
	int64_t n = 1;

	for (int i = 0; i < t->ndim; i++)
		n *= t->shape[i];
	return n;
}

size_t
sd_tensor_nbytes(const struct sd_tensor *t)
{
	return (size_t)sd_tensor_numel(t) * sd_dtype_size(t->dtype);
}

char *
sd_shape_str(const struct sd_tensor *t, char *buf, size_t size)
{
	size_t off = 0;

	off += (size_t)snprintf(buf, size, "[");
	for (int i = 0; i < t->ndim && off < size; i++)
		off += (size_t)snprintf(buf + off, size - off, "%s%lld",
		    i ? ", " : "", (long long)t->shape[i]);
	if (off < size)
		snprintf(buf + off, size - off, "]");
	return buf;
}

int
sd_tensor_has_shape(const struct sd_tensor *t, int ndim, ...)
{
	va_list ap;
	int ok = t->ndim == ndim;

	va_start(ap, ndim);
	for (int i = 0; i < ndim; i++) {
		int64_t d = va_arg(ap, int64_t);
		if (ok && d != -1 && t->shape[i] != d)
			ok = 0;
	}
	va_end(ap);
	return ok;
}

float
sd_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16;
	uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
	float f;

	if (exp == 0) {
		/* zero or subnormal: mant * 2^-24 */
		f = (float)mant * 5.9604644775390625e-8f;
		return sign ? -f : f;
	}
	if (exp == 31)
		bits = sign | 0x7f800000u | (mant << 13);
	else
		bits = sign | ((exp + 112) << 23) | (mant << 13);
	memcpy(&f, &bits, 4);
	return f;
}

uint16_t
sd_f32_to_f16(float f)
{
	uint32_t x, sign, mant;
	int32_t exp;

	memcpy(&x, &f, 4);
	sign = (x >> 16) & 0x8000;
	exp = (int32_t)((x >> 23) & 0xff);
	mant = x & 0x7fffff;
	if (exp == 0xff)	/* inf or nan */
		return (uint16_t)(sign | 0x7c00 | (mant ? 0x200 : 0));
	exp = exp - 127 + 15;
	if (exp >= 31)
		return (uint16_t)(sign | 0x7c00);
	if (exp <= 0) {
		/* subnormal half (or zero): shift the full mantissa */
		if (exp < -10)
			return (uint16_t)sign;
		mant |= 0x800000;
		int shift = 14 - exp;
		uint32_t half = mant >> shift;
		uint32_t rem = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
		if (rem > mid || (rem == mid && (half & 1)))
			half++;
		return (uint16_t)(sign | half);
	}
	uint32_t half = sign | ((uint32_t)exp << 10) | (mant >> 13);
	uint32_t rem = mant & 0x1fff;
	if (rem > 0x1000 || (rem == 0x1000 && (half & 1)))
		half++;		/* may carry into the exponent: still right */
	return (uint16_t)half;
}

float
sd_bf16_to_f32(uint16_t h)
{
	uint32_t bits = (uint32_t)h << 16;
	float f;

	memcpy(&f, &bits, 4);
	return f;
}

uint16_t
sd_f32_to_bf16(float f)
{
	uint32_t x;

	memcpy(&x, &f, 4);
	if ((x & 0x7fffffff) > 0x7f800000)
		return (uint16_t)((x >> 16) | 0x40);	/* quiet nan */
	x += 0x7fff + ((x >> 16) & 1);
	return (uint16_t)(x >> 16);
}

int
sd_convert_to_f32(float *dst, const void *src, enum sd_dtype dtype, size_t n)
{
	switch (dtype) {
	case SD_F32:
		memcpy(dst, src, n * 4);
		return 0;
	case SD_F16: {
		const uint16_t *s = src;
		#pragma omp parallel for if (n > 65536) schedule(static)
		for (size_t i = 0; i < n; i++)
			dst[i] = sd_f16_to_f32(s[i]);
		return 0;
	}
	case SD_BF16: {
		const uint16_t *s = src;
		#pragma omp parallel for if (n > 65536) schedule(static)
		for (size_t i = 0; i < n; i++)
			dst[i] = sd_bf16_to_f32(s[i]);
		return 0;
	}
	case SD_F64: {
		const double *s = src;
		for (size_t i = 0; i < n; i++)
			dst[i] = (float)s[i];
		return 0;
	}
	default:
		return -1;
	}
}
