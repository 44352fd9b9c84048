/* cpu_kernels.c: vectorised inner loops of the CPU backend (see
 * cpu_kernels.h).  The AVX-512 versions use a Cephes-style exp (about
 * 1 ulp) and the erf approximation of Eigen (a rational function, a few
 * ulp), so that results agree with the scalar libm versions to float
 * precision. */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/blas.h"
#include "core/cpu_kernels.h"
#include "core/tensor.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SD_AVX 1
#include <immintrin.h>
#endif

enum { KV_GENERIC, KV_AVX2, KV_AVX512 };
static int kv = -1;

/* ---- portable versions ---- */

static inline float
silu1(float v)
{
	return v / (1.0f + expf(-v));
}

static inline float
gelu1(float v)
{
	return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
}

/* 0.5 v (1 + tanh(u)) = v sigmoid(2u), u = sqrt(2/pi) (v + 0.044715 v^3):
 * no cancellation for negative v. */
static inline float
gelu_tanh1(float v)
{
	float u = 0.79788456080286535588f * (v + 0.044715f * v * v * v);

	return v / (1.0f + expf(-2.0f * u));
}

static void
g_f16(float *dst, const uint16_t *src, size_t n)
{
	for (size_t i = 0; i < n; i++)
		dst[i] = sd_f16_to_f32(src[i]);
}

static void
g_bf16(float *dst, const uint16_t *src, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint32_t b = (uint32_t)src[i] << 16;
		memcpy(dst + i, &b, 4);
	}
}

static float
g_exp_sum(float *x, size_t n, float sub)
{
	float s = 0;

	for (size_t i = 0; i < n; i++) {
		x[i] = expf(x[i] - sub);
		s += x[i];
	}
	return s;
}

static float
g_max(const float *x, size_t n)
{
	float m = -INFINITY;

	for (size_t i = 0; i < n; i++)
		if (x[i] > m)
			m = x[i];
	return m;
}

static void
g_affine(float *y, const float *x, size_t n, float m, float a, float b, int silu)
{
	if (silu) {
		for (size_t i = 0; i < n; i++)
			y[i] = silu1((x[i] - m) * a + b);
	} else {
		for (size_t i = 0; i < n; i++)
			y[i] = (x[i] - m) * a + b;
	}
}

static void
g_silu(float *x, size_t n)
{
	for (size_t i = 0; i < n; i++)
		x[i] = silu1(x[i]);
}

static void
g_quick_gelu(float *x, size_t n)
{
	for (size_t i = 0; i < n; i++)
		x[i] = x[i] / (1.0f + expf(-1.702f * x[i]));
}

static void
g_gelu(float *x, size_t n)
{
	for (size_t i = 0; i < n; i++)
		x[i] = gelu1(x[i]);
}

static void
g_gelu_tanh(float *x, size_t n)
{
	for (size_t i = 0; i < n; i++)
		x[i] = gelu_tanh1(x[i]);
}

static void
g_geglu(float *y, const float *a, const float *g, size_t n)
{
	for (size_t i = 0; i < n; i++)
		y[i] = a[i] * gelu1(g[i]);
}

static double
g_sum(const float *x, size_t n)
{
	double s = 0;

	for (size_t i = 0; i < n; i++)
		s += x[i];
	return s;
}

static double
g_sqdev(const float *x, size_t n, double mean)
{
	double s = 0;

	for (size_t i = 0; i < n; i++) {
		double d = x[i] - mean;
		s += d * d;
	}
	return s;
}

#ifdef SD_AVX
/* ---- AVX2 + F16C: the conversions ---- */

__attribute__((target("avx2,f16c")))
static void
avx2_f16(float *dst, const uint16_t *src, size_t n)
{
	size_t i = 0;

	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
	g_f16(dst + i, src + i, n - i);
}

__attribute__((target("avx2")))
static void
avx2_bf16(float *dst, const uint16_t *src, size_t n)
{
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		__m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(src + i)));
		_mm256_storeu_si256((__m256i *)(dst + i), _mm256_slli_epi32(v, 16));
	}
	g_bf16(dst + i, src + i, n - i);
}

/* ---- AVX-512 ---- */

#define T512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma,f16c,avx2")))

T512 static inline __m512
exp512(__m512 x)
{
	const __m512 log2e = _mm512_set1_ps(1.44269504088896341f);
	const __m512 ln2hi = _mm512_set1_ps(0.693359375f), ln2lo = _mm512_set1_ps(-2.12194440e-4f);
	__m512 n, r, p, r2;

	x = _mm512_max_ps(x, _mm512_set1_ps(-104.0f));
	x = _mm512_min_ps(x, _mm512_set1_ps(88.7228391f));
	n = _mm512_roundscale_ps(_mm512_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	r = _mm512_fnmadd_ps(n, ln2hi, x);
	r = _mm512_fnmadd_ps(n, ln2lo, r);
	p = _mm512_set1_ps(1.9875691500e-4f);
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
	r2 = _mm512_mul_ps(r, r);
	p = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
	return _mm512_scalef_ps(p, n);
}

/* erf(x), after Eigen's generic_fast_erf_float. */
T512 static inline __m512
erf512(__m512 x)
{
	__m512 x2, p, q;

	x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(4.0f)), _mm512_set1_ps(-4.0f));
	x2 = _mm512_mul_ps(x, x);
	p = _mm512_set1_ps(-2.72614225801306e-10f);
	p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(2.77068142495902e-08f));
	p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-2.10102402082508e-06f));
	p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-5.69250639462346e-05f));
	p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-7.34990630326855e-04f));
	p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-2.95459980854025e-03f));
	p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-1.60960333262415e-02f));
	p = _mm512_mul_ps(p, x);
	q = _mm512_set1_ps(-1.45660718464996e-05f);
	q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(-2.13374055278905e-04f));
	q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(-1.68282697438203e-03f));
	q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(-7.37332916720468e-03f));
	q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(-1.42647390514189e-02f));
	return _mm512_div_ps(p, q);
}

T512 static inline __m512
silu512(__m512 v)
{
	__m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), v));
	return _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

T512 static inline __m512
gelu512(__m512 v)
{
	__m512 e = erf512(_mm512_mul_ps(v, _mm512_set1_ps(0.70710678118654752f)));
	return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), v),
	    _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

/* The tail of n: a mask of n % 16 lanes. */
T512 static inline __mmask16
tail(size_t rem)
{
	return (__mmask16)((1u << rem) - 1);
}

T512 static void
a512_f16(float *dst, const uint16_t *src, size_t n)
{
	size_t i = 0;

	for (; i + 16 <= n; i += 16)
		_mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + i))));
	avx2_f16(dst + i, src + i, n - i);
}

T512 static void
a512_bf16(float *dst, const uint16_t *src, size_t n)
{
	size_t i = 0;

	for (; i + 16 <= n; i += 16) {
		__m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(src + i)));
		_mm512_storeu_si512(dst + i, _mm512_slli_epi32(v, 16));
	}
	g_bf16(dst + i, src + i, n - i);
}

T512 static float
a512_exp_sum(float *x, size_t n, float sub)
{
	__m512 s = _mm512_setzero_ps(), m = _mm512_set1_ps(sub);
	size_t i = 0;

	for (; i + 16 <= n; i += 16) {
		__m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(x + i), m));
		_mm512_storeu_ps(x + i, e);
		s = _mm512_add_ps(s, e);
	}
	if (i < n) {
		__mmask16 k = tail(n - i);
		__m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), m));
		_mm512_mask_storeu_ps(x + i, k, e);
		s = _mm512_add_ps(s, _mm512_maskz_mov_ps(k, e));
	}
	return _mm512_reduce_add_ps(s);
}

T512 static float
a512_max(const float *x, size_t n)
{
	__m512 m = _mm512_set1_ps(-INFINITY);
	size_t i = 0;

	for (; i + 16 <= n; i += 16)
		m = _mm512_max_ps(m, _mm512_loadu_ps(x + i));
	if (i < n)
		m = _mm512_mask_max_ps(m, tail(n - i), m, _mm512_maskz_loadu_ps(tail(n - i), x + i));
	return _mm512_reduce_max_ps(m);
}

T512 static void
a512_affine(float *y, const float *x, size_t n, float m, float a, float b, int silu)
{
	__m512 vm = _mm512_set1_ps(m), va = _mm512_set1_ps(a), vb = _mm512_set1_ps(b);
	size_t i = 0;

	for (; i + 16 <= n; i += 16) {
		__m512 d = _mm512_sub_ps(_mm512_loadu_ps(x + i), vm);
		__m512 v = _mm512_fmadd_ps(d, va, vb);
		_mm512_storeu_ps(y + i, silu ? silu512(v) : v);
	}
	if (i < n) {
		__mmask16 k = tail(n - i);
		__m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), vm);
		__m512 v = _mm512_fmadd_ps(d, va, vb);
		_mm512_mask_storeu_ps(y + i, k, silu ? silu512(v) : v);
	}
}

T512 static void
a512_silu(float *x, size_t n)
{
	size_t i = 0;

	for (; i + 16 <= n; i += 16)
		_mm512_storeu_ps(x + i, silu512(_mm512_loadu_ps(x + i)));
	if (i < n)
		_mm512_mask_storeu_ps(x + i, tail(n - i), silu512(_mm512_maskz_loadu_ps(tail(n - i), x + i)));
}

T512 static inline __m512
qgelu512(__m512 v)
{
	__m512 e = exp512(_mm512_mul_ps(v, _mm512_set1_ps(-1.702f)));
	return _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

T512 static void
a512_quick_gelu(float *x, size_t n)
{
	size_t i = 0;

	for (; i + 16 <= n; i += 16)
		_mm512_storeu_ps(x + i, qgelu512(_mm512_loadu_ps(x + i)));
	if (i < n)
		_mm512_mask_storeu_ps(x + i, tail(n - i), qgelu512(_mm512_maskz_loadu_ps(tail(n - i), x + i)));
}

T512 static void
a512_gelu(float *x, size_t n)
{
	size_t i = 0;

	for (; i + 16 <= n; i += 16)
		_mm512_storeu_ps(x + i, gelu512(_mm512_loadu_ps(x + i)));
	if (i < n)
		_mm512_mask_storeu_ps(x + i, tail(n - i), gelu512(_mm512_maskz_loadu_ps(tail(n - i), x + i)));
}

T512 static inline __m512
gelu_tanh512(__m512 v)
{
	__m512 v3 = _mm512_mul_ps(_mm512_mul_ps(v, v), v);
	__m512 u = _mm512_mul_ps(_mm512_set1_ps(-2.0f * 0.79788456080286535588f),
	    _mm512_fmadd_ps(v3, _mm512_set1_ps(0.044715f), v));
	return _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0f), exp512(u)));
}

T512 static void
a512_gelu_tanh(float *x, size_t n)
{
	size_t i = 0;

	for (; i + 16 <= n; i += 16)
		_mm512_storeu_ps(x + i, gelu_tanh512(_mm512_loadu_ps(x + i)));
	if (i < n)
		_mm512_mask_storeu_ps(x + i, tail(n - i),
		    gelu_tanh512(_mm512_maskz_loadu_ps(tail(n - i), x + i)));
}

T512 static void
a512_geglu(float *y, const float *a, const float *g, size_t n)
{
	size_t i = 0;

	for (; i + 16 <= n; i += 16)
		_mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_loadu_ps(a + i),
		    gelu512(_mm512_loadu_ps(g + i))));
	if (i < n) {
		__mmask16 k = tail(n - i);
		_mm512_mask_storeu_ps(y + i, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, a + i),
		    gelu512(_mm512_maskz_loadu_ps(k, g + i))));
	}
}

T512 static double
a512_sum(const float *x, size_t n)
{
	__m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
	size_t i = 0;

	for (; i + 16 <= n; i += 16) {
		__m512 v = _mm512_loadu_ps(x + i);
		s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
		s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
	}
	return _mm512_reduce_add_pd(_mm512_add_pd(s0, s1)) + g_sum(x + i, n - i);
}

T512 static double
a512_sqdev(const float *x, size_t n, double mean)
{
	__m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd(), m = _mm512_set1_pd(mean);
	size_t i = 0;

	for (; i + 16 <= n; i += 16) {
		__m512 v = _mm512_loadu_ps(x + i);
		__m512d d0 = _mm512_sub_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(v)), m);
		__m512d d1 = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_castpd_ps(
		    _mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))), m);
		s0 = _mm512_fmadd_pd(d0, d0, s0);
		s1 = _mm512_fmadd_pd(d1, d1, s1);
	}
	return _mm512_reduce_add_pd(_mm512_add_pd(s0, s1)) + g_sqdev(x + i, n - i, mean);
}
#endif

const char *
cpu_kernels_init(void)
{
	static const char *names[] = { "generic", "avx2", "avx512" };

	if (kv < 0) {
		struct cpu_features f;
		int v = KV_GENERIC;

		cpu_features_get(&f);
#ifdef SD_AVX
		if (cpu_features_level(&f) >= CPU_LEVEL_AVX512 && f.fma && f.f16c && f.avx2)
			v = KV_AVX512;
		else if (f.avx2 && f.f16c)
			v = KV_AVX2;
#endif
		/* SDBATCH_CPU_KERNELS=generic|avx2 caps the choice (tests). */
		const char *cap = getenv("SDBATCH_CPU_KERNELS");
		if (cap != NULL && strcmp(cap, "generic") == 0)
			v = KV_GENERIC;
		else if (cap != NULL && strcmp(cap, "avx2") == 0 && v > KV_AVX2)
			v = KV_AVX2;
		kv = v;
	}
	return names[kv];
}

int
cpu_kernels_level(void)
{
	cpu_kernels_init();
	return kv == KV_AVX512 ? 2 : kv == KV_AVX2 ? 1 : 0;
}

#ifdef SD_AVX
#define PICK(name, ...) do { \
	if (kv == KV_AVX512) { a512_##name(__VA_ARGS__); return; } \
} while (0)
#define PICKR(name, ...) do { \
	if (kv == KV_AVX512) return a512_##name(__VA_ARGS__); \
} while (0)
#else
#define PICK(name, ...) do { } while (0)
#define PICKR(name, ...) do { } while (0)
#endif

void
k_f16_to_f32(float *dst, const uint16_t *src, size_t n)
{
	PICK(f16, dst, src, n);
#ifdef SD_AVX
	if (kv == KV_AVX2) {
		avx2_f16(dst, src, n);
		return;
	}
#endif
	g_f16(dst, src, n);
}

void
k_bf16_to_f32(float *dst, const uint16_t *src, size_t n)
{
	PICK(bf16, dst, src, n);
#ifdef SD_AVX
	if (kv == KV_AVX2) {
		avx2_bf16(dst, src, n);
		return;
	}
#endif
	g_bf16(dst, src, n);
}

float
k_exp_sum(float *x, size_t n, float sub)
{
	PICKR(exp_sum, x, n, sub);
	return g_exp_sum(x, n, sub);
}

float
k_max(const float *x, size_t n)
{
	PICKR(max, x, n);
	return g_max(x, n);
}

void
k_affine(float *y, const float *x, size_t n, float m, float a, float b, int silu)
{
	PICK(affine, y, x, n, m, a, b, silu);
	g_affine(y, x, n, m, a, b, silu);
}

void
k_silu(float *x, size_t n)
{
	PICK(silu, x, n);
	g_silu(x, n);
}

void
k_quick_gelu(float *x, size_t n)
{
	PICK(quick_gelu, x, n);
	g_quick_gelu(x, n);
}

void
k_gelu(float *x, size_t n)
{
	PICK(gelu, x, n);
	g_gelu(x, n);
}

void
k_gelu_tanh(float *x, size_t n)
{
	PICK(gelu_tanh, x, n);
	g_gelu_tanh(x, n);
}

void
k_geglu(float *y, const float *a, const float *g, size_t n)
{
	PICK(geglu, y, a, g, n);
	g_geglu(y, a, g, n);
}

double
k_sum(const float *x, size_t n)
{
	PICKR(sum, x, n);
	return g_sum(x, n);
}

double
k_sqdev(const float *x, size_t n, double mean)
{
	PICKR(sqdev, x, n, mean);
	return g_sqdev(x, n, mean);
}

void
k_axpy(float *y, const float *x, size_t n, float s)
{
	for (size_t i = 0; i < n; i++)
		y[i] += s * x[i];
}

void
k_scal(float *y, size_t n, float s)
{
	for (size_t i = 0; i < n; i++)
		y[i] *= s;
}
