/* rng.h: random numbers that match torch bit for bit.
 *
 * `rng: cpu` is torch's CPU generator (MT19937) and its float32 randn, as
 * diffusers draws initial latents and Euler-a noise with
 * torch.Generator("cpu").manual_seed(seed); `rng: cuda` is torch's CUDA
 * generator (Philox4x32-10), as A1111 and stable-diffusion.cpp draw theirs.
 * Neither needs a GPU.  One generator serves a whole image: every draw
 * advances its state exactly as the matching torch.randn call would. */
#ifndef SD_RNG_H
#define SD_RNG_H

#include <stddef.h>
#include <stdint.h>

#include "sample/pipeline.h"

/* Which log/sin/cos torch's CPU randn uses for tensors of 16 elements or
 * more.  SD_RNG_MATH_AVX2 (the default) replicates the polynomials of
 * torch's AVX2 kernels (what diffusers gives on a usual x86-64 machine);
 * SD_RNG_MATH_SCALAR uses libm's logf/cosf/sinf like torch's portable
 * kernels (ATEN_CPU_CAPABILITY=default, or a CPU without AVX2).  The CUDA
 * generator ignores it. */
enum sd_rng_math { SD_RNG_MATH_AVX2, SD_RNG_MATH_SCALAR };

struct sd_rng;

/* A generator seeded like torch's manual_seed(seed) (the CPU one uses the
 * low 32 bits, the CUDA one all 64).  NULL only when out of memory. */
struct sd_rng *sd_rng_new(enum sd_rng_kind kind, uint64_t seed);
/* The same with the CPU generator's math chosen. */
struct sd_rng *sd_rng_new_math(enum sd_rng_kind kind, uint64_t seed,
    enum sd_rng_math math);
void sd_rng_free(struct sd_rng *r);

/* manual_seed(seed) again: a fresh state, the cached normal cleared. */
void sd_rng_seed(struct sd_rng *r, uint64_t seed);
enum sd_rng_kind sd_rng_kind(const struct sd_rng *r);

/* One torch.randn call of n float32 elements (any shape of numel n, a
 * contiguous tensor): n standard normal values into out. */
void sd_rng_randn(struct sd_rng *r, float *out, size_t n);

/* The next raw 32-bit output of the CPU generator's MT19937 engine
 * (torch's generator.random()); 0 for the CUDA generator. */
uint32_t sd_rng_random32(struct sd_rng *r);

#endif
