/* cpu_kernels.h: the CPU backend's inner loops, vectorised.
 *
 * Each function has a portable C version and, on x86-64, AVX-512 (and for
 * the conversions F16C/AVX2) versions compiled with target attributes and
 * chosen at run time (cpu_kernels_init), so that the default build runs on
 * any x86-64.  None of them threads: callers split the work. */
#ifndef SD_CPU_KERNELS_H
#define SD_CPU_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* Pick the versions for this CPU (idempotent; thread-safe after the first
 * call returns).  "avx512", "avx2" or "generic". */
const char *cpu_kernels_init(void);
/* The versions picked: 0 generic, 1 AVX2 (+FMA, F16C), 2 AVX-512 (calls
 * cpu_kernels_init first), for code that dispatches on its own. */
int cpu_kernels_level(void);

/* dst[i] = f32(src[i]) for IEEE half / bfloat16. */
void k_f16_to_f32(float *dst, const uint16_t *src, size_t n);
void k_bf16_to_f32(float *dst, const uint16_t *src, size_t n);

/* x[i] = exp(x[i] - sub); returns the sum of the new x (float). */
float k_exp_sum(float *x, size_t n, float sub);
/* The largest x[i] (-inf for n 0). */
float k_max(const float *x, size_t n);
/* y[i] = (x[i] - m) * a + b, then SiLU when silu != 0 (y may be x): the
 * mean subtracted first, so that a large a (a group of near-equal values)
 * does not cancel x a against m a. */
void k_affine(float *y, const float *x, size_t n, float m, float a, float b, int silu);
/* x[i] = silu(x[i]) = x / (1 + exp(-x)). */
void k_silu(float *x, size_t n);
/* x[i] = x * sigmoid(1.702 x). */
void k_quick_gelu(float *x, size_t n);
/* x[i] = gelu(x[i]) with the exact erf. */
void k_gelu(float *x, size_t n);
/* x[i] = gelu(x[i]) with the tanh approximation. */
void k_gelu_tanh(float *x, size_t n);
/* y[i] = a[i] * gelu(g[i]). */
void k_geglu(float *y, const float *a, const float *g, size_t n);
/* Sum and sum of squared deviations from mean, in double. */
double k_sum(const float *x, size_t n);
double k_sqdev(const float *x, size_t n, double mean);
/* y[i] += s * x[i]; y[i] *= s. */
void k_axpy(float *y, const float *x, size_t n, float s);
void k_scal(float *y, size_t n, float s);

#endif
