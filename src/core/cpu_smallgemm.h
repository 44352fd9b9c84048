/* cpu_smallgemm.h: y[m, n] = x[m, k] W[n, k]^T for a few rows of x, with W
 * read as stored (F32, F16 or BF16) and never packed: the CPU backend's
 * linear op for 16 to 256 rows, and the 3x3 convolutions of the smallest
 * maps, on CPUs with AVX-512.  The caller transposes x into panels of at
 * most 64 rows (sg_pack; an im2col buffer already is one) and splits the
 * output features between threads (sg_kernel on disjoint ranges). */
#ifndef SD_CPU_SMALLGEMM_H
#define SD_CPU_SMALLGEMM_H

#include "core/tensor.h"

/* Non-zero when this CPU (and build) has the AVX-512 kernel. */
int sg_available(void);
/* The rows of a panel holding mr (1..64) rows of x: 16, 32 or 64. */
int sg_panel_rows(int mr);
/* Transpose rows 0..mr-1 of x (k values a row), values [k0, k1) of each,
 * into xt: xt[kk * P + r] = x[r * k + kk], the P - mr extra rows zero
 * (P = sg_panel_rows(mr); xt holds k * P floats). */
void sg_pack(float *xt, const float *x, int k, int mr, int k0, int k1);
/* y[i si + n sn] = sum_kk xt[kk ldx + i] w[n, kk] (+ bias[n]) for i < mr,
 * n in [n0, n1) and kk in [kb0, kb1); when kb0 > 0 the sum is added to y
 * instead (no bias), so that a caller can go through k in blocks whose
 * rows of xt stay in cache.  w is [n, k] of dtype dt; xt has k rows of ldx
 * floats, of which the first P = sg_panel_rows(mr) are read (those past mr
 * may hold anything but must be readable).  A linear layer's y is [i, n]
 * (si = the row length, sn = 1); a convolution's is [n, i] (si = 1, sn =
 * the pixels). */
void sg_kernel(float *y, size_t si, size_t sn, const float *xt, size_t ldx, int mr, int k,
    int kb0, int kb1, const void *w, enum sd_dtype dt, int n0, int n1, const float *bias);
/* The rows of k a call of sg_kernel should take at a time, so that x's
 * rows of them stay in L2 (measured on Zen 4: 2048 best for the 3x3
 * convolutions of 1280 and 2560 channels at 4x4, as good as no blocking for
 * the linear layers). */
#define SG_KBLOCK 2048

#endif
