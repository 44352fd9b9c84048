/* cpu_smallgemm.h: y[m, n] = x[m, k] W[n, k]^T for a few rows of x, with W
 * read as stored (F32, F16 or BF16) and never packed: the CPU backend's
 * linear op for m <= 1024 on CPUs with AVX-512.  The caller transposes x
 * into panels of at most 64 rows (sg_pack) and splits the output features
 * between threads (sg_kernel on disjoint ranges). */
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
/* y[i, n] = sum_kk xt[kk * P + i] w[n, kk] (+ bias[n]) for i < mr and n in
 * [n0, n1); y has row stride ldy; w is [n, k] of dtype dt. */
void sg_kernel(float *y, int ldy, const float *xt, int mr, int k, const void *w,
    enum sd_dtype dt, int n0, int n1, const float *bias);

#endif
