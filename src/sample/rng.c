/* rng.c: torch's CPU (MT19937) and CUDA (Philox4x32-10) normal generators.
 *
 * Bit-exactness depends on every float operation being rounded where torch
 * rounds it: this file must be compiled without floating-point contraction
 * (gcc's default in ISO C mode, -std=c11; clang gets the pragma below), and
 * the fused multiply-adds torch's compiled kernels contain are written out
 * as fmaf() calls. */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sample/rng.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#define MT_N 624
#define MT_M 397

struct sd_rng {
	enum sd_rng_kind kind;
	enum sd_rng_math math;
	uint64_t seed;
	/* CPU: at::mt19937 and the cached second normal of the double path */
	uint32_t state[MT_N];
	int left, next;
	int have_cached;
	double cached;
	/* CUDA: Philox offset, advanced by one per randn call */
	uint64_t offset;
};

/* ------------------------------------------------------------ MT19937 */

static void
mt_seed(struct sd_rng *r, uint32_t seed)
{
	r->state[0] = seed;
	for (uint32_t j = 1; j < MT_N; j++)
		r->state[j] = 1812433253u *
		    (r->state[j - 1] ^ (r->state[j - 1] >> 30)) + j;
	r->left = 1;
	r->next = 0;
}

static void
mt_next_state(struct sd_rng *r)
{
	uint32_t *p = r->state, y;
	int j;

	r->left = MT_N;
	r->next = 0;
	for (j = 0; j < MT_N - MT_M; j++) {
		y = (p[j] & 0x80000000u) | (p[j + 1] & 0x7fffffffu);
		p[j] = p[j + MT_M] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
	}
	for (; j < MT_N - 1; j++) {
		y = (p[j] & 0x80000000u) | (p[j + 1] & 0x7fffffffu);
		p[j] = p[j + MT_M - MT_N] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
	}
	y = (p[MT_N - 1] & 0x80000000u) | (p[0] & 0x7fffffffu);
	p[MT_N - 1] = p[MT_M - 1] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
}

static uint32_t
mt_random(struct sd_rng *r)
{
	uint32_t y;

	if (--r->left == 0)
		mt_next_state(r);
	y = r->state[r->next++];
	y ^= y >> 11;
	y ^= (y << 7) & 0x9d2c5680u;
	y ^= (y << 15) & 0xefc60000u;
	y ^= y >> 18;
	return y;
}

/* uniform_real_distribution<float>(0, 1): 24 random bits. */
static float
uniform_float(struct sd_rng *r)
{
	return (float)(mt_random(r) & 0xffffffu) * (1.0f / 16777216.0f);
}

/* uniform_real_distribution<double>(0, 1): 53 bits of random64(). */
static double
uniform_double(struct sd_rng *r)
{
	uint64_t hi = mt_random(r), lo = mt_random(r);
	uint64_t v = (hi << 32) | lo;

	return (double)(v & ((UINT64_C(1) << 53) - 1)) * (1.0 / 9007199254740992.0);
}

/* normal_distribution<double>(0, 1), the path of tensors under 16
 * elements: Box-Muller in double, the sine half cached for the next call. */
static double
normal_double(struct sd_rng *r)
{
	double u1, u2, radius, theta;

	if (r->have_cached) {
		r->have_cached = 0;
		return r->cached;
	}
	u1 = uniform_double(r);
	u2 = uniform_double(r);
	radius = sqrt(-2.0 * log1p(-u2));
	theta = 2.0 * M_PI * u1;
	r->cached = radius * sin(theta);
	r->have_cached = 1;
	return radius * cos(theta);
}

/* --------------------------------------------- torch's AVX2 polynomials */

/*
 * One lane of log256_ps and sincos256_ps from PyTorch's
 * aten/src/ATen/native/cpu/avx_mathfun.h (Giovanni Garberoglio's AVX port
 * of Julien Pommier's sse_mathfun, zlib license, after Cephes), written
 * as scalar C with the same float operations in the same order.  torch's
 * x86-64 builds compile that header with FMA enabled and gcc contracts a
 * multiply into the add or subtract that consumes it; the fmaf() calls
 * below are exactly those contractions.
 */

static float
bits_float(uint32_t u)
{
	float f;

	memcpy(&f, &u, sizeof f);
	return f;
}

static uint32_t
float_bits(float f)
{
	uint32_t u;

	memcpy(&u, &f, sizeof u);
	return u;
}

static float
cephes_logf(float x)
{
	const float min_norm_pos = bits_float(0x00800000u);
	float e, y, z, tmp;
	uint32_t u;
	int invalid = !(x > 0.0f);	/* NaN for x <= 0 (and for NaN) */
	int32_t imm0;

	if (x < min_norm_pos)		/* _mm256_max_ps(x, min_norm_pos) */
		x = min_norm_pos;
	u = float_bits(x);
	imm0 = (int32_t)(u >> 23) - 0x7f;
	/* keep the mantissa, with the exponent of 0.5: x in [0.5, 1) */
	x = bits_float((u & ~0x7f800000u) | float_bits(0.5f));
	e = (float)imm0;
	e = e + 1.0f;
	if (x < 0.707106781186547524f) {
		tmp = x;
		x = x - 1.0f;
		e = e - 1.0f;
		x = x + tmp;
	} else {
		x = x - 1.0f;
		x = x + 0.0f;
		e = e - 0.0f;
	}
	z = x * x;
	y = fmaf(7.0376836292E-2f, x, -1.1514610310E-1f);
	y = fmaf(y, x, 1.1676998740E-1f);
	y = fmaf(y, x, -1.2420140846E-1f);
	y = fmaf(y, x, +1.4249322787E-1f);
	y = fmaf(y, x, -1.6668057665E-1f);
	y = fmaf(y, x, +2.0000714765E-1f);
	y = fmaf(y, x, -2.4999993993E-1f);
	y = fmaf(y, x, +3.3333331174E-1f);
	y = y * x;
	y = fmaf(y, z, e * -2.12194440e-4f);
	y = fmaf(-z, 0.5f, y);
	x = x + y;
	x = fmaf(e, 0.693359375f, x);
	if (invalid)
		x = bits_float(float_bits(x) | 0xffffffffu);
	return x;
}

static void
cephes_sincosf(float x, float *s, float *c)
{
	uint32_t sign_sin = float_bits(x) & 0x80000000u, sign_cos;
	float y, z, ycos, ysin, rsin, rcos;
	int32_t j;
	int poly;

	x = bits_float(float_bits(x) & 0x7fffffffu);
	y = x * 1.27323954473516f;		/* 4/pi */
	j = (int32_t)y;				/* truncation, like cvttps */
	j = (j + 1) & ~1;
	y = (float)j;
	sign_sin ^= (uint32_t)(j & 4) << 29;
	poly = (j & 2) == 0;
	sign_cos = (uint32_t)(~(j - 2) & 4) << 29;

	/* extended precision modular arithmetic: x - y*pi/4 in three parts */
	x = fmaf(y, -0.78515625f, x);
	x = fmaf(y, -2.4187564849853515625e-4f, x);
	x = fmaf(y, -3.77489497744594108e-8f, x);

	z = x * x;
	ycos = fmaf(2.443315711809948E-005f, z, -1.388731625493765E-003f);
	ycos = fmaf(ycos, z, 4.166664568298827E-002f);
	ycos = ycos * z;
	ycos = fmaf(ycos, z, -(z * 0.5f));
	ycos = ycos + 1.0f;

	ysin = fmaf(-1.9515295891E-4f, z, 8.3321608736E-3f);
	ysin = fmaf(ysin, z, -1.6666654611E-1f);
	ysin = ysin * z;
	ysin = fmaf(ysin, x, x);

	/* the header's blend: the chosen polynomial plus a zero */
	if (poly) {
		rsin = ysin + 0.0f;
		rcos = ycos + 0.0f;
	} else {
		rsin = ycos + 0.0f;
		rcos = ysin + 0.0f;
	}
	*s = bits_float(float_bits(rsin) ^ sign_sin);
	*c = bits_float(float_bits(rcos) ^ sign_cos);
}

/* normal_fill_16_AVX2 (and normal_fill_16 for the scalar kernels): the
 * Box-Muller transform of 16 uniforms in place, pairs (j, j + 8). */
static void
normal_fill_16(float *d, enum sd_rng_math math)
{
	for (int j = 0; j < 8; j++) {
		float u1 = 1.0f - d[j], u2 = d[j + 8];
		float radius, theta, s, c;

		if (math == SD_RNG_MATH_AVX2) {
			radius = sqrtf(-2.0f * cephes_logf(u1));
			theta = 6.2831855f * u2;	/* (float)(2*pi) */
			cephes_sincosf(theta, &s, &c);
		} else {
			radius = sqrtf(-2.0f * logf(u1));
			theta = (float)(2.0 * M_PI * (double)u2);
			s = sinf(theta);
			c = cosf(theta);
		}
		d[j] = radius * c;
		d[j + 8] = radius * s;
	}
}

static void
cpu_randn(struct sd_rng *r, float *out, size_t n)
{
	if (n < 16) {
		for (size_t i = 0; i < n; i++)
			out[i] = (float)normal_double(r);
		return;
	}
	for (size_t i = 0; i < n; i++)
		out[i] = uniform_float(r);
	for (size_t i = 0; i + 16 <= n; i += 16)
		normal_fill_16(out + i, r->math);
	if (n % 16 != 0) {
		/* torch redraws the last 16 (overlapping the previous block) */
		float *tail = out + n - 16;

		for (int i = 0; i < 16; i++)
			tail[i] = uniform_float(r);
		normal_fill_16(tail, r->math);
	}
}

/* ------------------------------------------------------------- Philox */

static void
philox_round(uint32_t c[4], const uint32_t k[2])
{
	uint64_t p0 = (uint64_t)0xD2511F53u * c[0];
	uint64_t p1 = (uint64_t)0xCD9E8D57u * c[2];
	uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
	uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;

	c[0] = hi1 ^ c[1] ^ k[0];
	c[1] = lo1;
	c[2] = hi0 ^ c[3] ^ k[1];
	c[3] = lo0;
}

static void
philox4x32_10(uint32_t c[4], uint64_t seed)
{
	uint32_t k[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};

	for (int i = 0; i < 9; i++) {
		philox_round(c, k);
		k[0] += 0x9E3779B9u;
		k[1] += 0xBB67AE85u;
	}
	philox_round(c, k);
}

static void
cuda_randn(struct sd_rng *r, float *out, size_t n)
{
	const float two_pow32_inv = 2.3283064e-10f;
	const float two_pow32_inv_2pi = 2.3283064e-10f * 6.2831855f;

	for (size_t i = 0; i < n; i++) {
		uint32_t c[4] = {(uint32_t)r->offset, 0, (uint32_t)i, 0};
		float u, v;

		philox4x32_10(c, r->seed);
		u = (float)c[0] * two_pow32_inv + two_pow32_inv / 2.0f;
		v = (float)c[1] * two_pow32_inv_2pi + two_pow32_inv_2pi / 2.0f;
		out[i] = sqrtf(-2.0f * logf(u)) * sinf(v);
	}
	r->offset++;
}

/* ---------------------------------------------------------------- API */

struct sd_rng *
sd_rng_new_math(enum sd_rng_kind kind, uint64_t seed, enum sd_rng_math math)
{
	struct sd_rng *r = calloc(1, sizeof *r);

	if (r == NULL)
		return NULL;
	r->kind = kind;
	r->math = math;
	sd_rng_seed(r, seed);
	return r;
}

struct sd_rng *
sd_rng_new(enum sd_rng_kind kind, uint64_t seed)
{
	return sd_rng_new_math(kind, seed, SD_RNG_MATH_AVX2);
}

void
sd_rng_free(struct sd_rng *r)
{
	free(r);
}

void
sd_rng_seed(struct sd_rng *r, uint64_t seed)
{
	r->seed = seed;
	r->offset = 0;
	r->have_cached = 0;
	r->cached = 0;
	mt_seed(r, (uint32_t)seed);
}

enum sd_rng_kind
sd_rng_kind(const struct sd_rng *r)
{
	return r->kind;
}

void
sd_rng_randn(struct sd_rng *r, float *out, size_t n)
{
	if (r->kind == SD_RNG_CUDA)
		cuda_randn(r, out, n);
	else
		cpu_randn(r, out, n);
}

uint32_t
sd_rng_random32(struct sd_rng *r)
{
	return r->kind == SD_RNG_CUDA ? 0 : mt_random(r);
}
