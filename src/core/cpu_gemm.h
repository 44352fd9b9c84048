/* cpu_gemm.h: an F32 matrix product for the CPU backend's Winograd
 * convolutions, C = A B with both operands read where they lie (no packing)
 * and the sum over k taken in chunks, on CPUs with AVX-512.
 *
 * Winograd's alpha^2 products per block of tiles are many small GEMMs
 * (M[xi] = U[xi] V[xi], e.g. 320 x 320 by 320 x 128); through sgemm each
 * one packs V again and pays a call's set-up once per chunk of input
 * channels.  Here a register tile of 3 rows of C by up to 64 columns
 * broadcasts A's values from its rows and loads B's rows as vectors. */
#ifndef SD_CPU_GEMM_H
#define SD_CPU_GEMM_H

#include <stddef.h>

/* Non-zero when this CPU (and build) has the kernel. */
int cg_available(void);

/* C[i * ldc + j] = sum_kk A[i * lda + kk] B[kk * ldb + j] for i < m, j < n,
 * kk < k: the products summed within chunks of kc values of kk (from zero,
 * in registers, the even and the odd kk apart), the chunks' sums added to
 * C in order, the first one stored.  Rows of B and C are read and written
 * only in [0, n).  One thread. */
void cg_gemm(int m, int n, int k, int kc, const float *A, size_t lda, const float *B,
    size_t ldb, float *C, size_t ldc);

#endif
