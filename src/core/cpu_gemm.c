/* cpu_gemm.c: C = A B for the Winograd convolutions (see cpu_gemm.h).
 *
 * The register tile is R rows of C (up to 3) by NV vectors of 16 columns
 * (up to 4), in two sets of accumulators, one for the even values of k
 * and one for the odd: 24 accumulators, and per two values of k, 2 NV
 * loads of B's rows and 2 R broadcasts of A's columns for 2 R NV fused
 * multiply-adds.  The two sets halve the chain of roundings in each
 * chunk's sum (one set of 6 rows made F(4x4, 3x3) twice as inaccurate as
 * sgemm on 640 channels in tests/test_ops, at the same speed).  The last
 * vector of a row is masked, so that any n works and nothing past it is
 * read or written.  Columns go in blocks of 64 in the outer loop: a
 * block of B's rows is read from L2 for each group of rows of A, which
 * stay in L1. */
#include "config.h"

#include "core/cpu_gemm.h"
#include "core/cpu_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SD_AVX 1
#include <immintrin.h>
#endif

#define MR 3		/* rows of the register tile */
#define NVMAX 4		/* vectors of 16 columns */

int
cg_available(void)
{
#ifdef SD_AVX
	return cpu_kernels_level() >= 2;
#else
	return 0;
#endif
}

#ifdef SD_AVX
#define T512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma")))

/* One register tile of R rows and NV vectors, R and NV constants once
 * inlined.  The accumulators are named variables (e<row><vector> for the
 * even values of k, o.. for the odd), each statement guarded by a
 * constant test, rather than arrays in unrolled loops: clang 14 keeps
 * such arrays in memory (the kernel ran at a third of the speed), gcc
 * does not. */
#define FOR_IJ(X) X(0, 0) X(0, 1) X(0, 2) X(0, 3) X(1, 0) X(1, 1) X(1, 2) X(1, 3) \
	X(2, 0) X(2, 1) X(2, 2) X(2, 3)
#define FOR_I(X) X(0) X(1) X(2)
#define FOR_J(X) X(0) X(1) X(2) X(3)
#define DECL(i, j) __m512 e##i##j = _mm512_setzero_ps(), o##i##j = _mm512_setzero_ps();
#define ZERO(i, j) if (i < R && j < NV) { e##i##j = _mm512_setzero_ps(); o##i##j = e##i##j; }
#define LOADB(j) if (j < NV) b##j = j < NV - 1 ? _mm512_loadu_ps(b + 16 * j) : \
	_mm512_maskz_loadu_ps(last, b + 16 * j);
#define BCAST(i) if (i < R) a##i = _mm512_set1_ps(A[(size_t)i * lda + kk + h]);
#define FMA_E(i, j) if (i < R && j < NV) e##i##j = _mm512_fmadd_ps(a##i, b##j, e##i##j);
#define FMA_O(i, j) if (i < R && j < NV) o##i##j = _mm512_fmadd_ps(a##i, b##j, o##i##j);
#define STORE(i, j) if (i < R && j < NV) {					\
	__mmask16 mk = j < NV - 1 ? (__mmask16)0xffff : last;			\
	float *cp = C + (size_t)i * ldc + 16 * j;				\
	__m512 v = _mm512_add_ps(e##i##j, o##i##j);				\
	if (k0 > 0)								\
		v = _mm512_add_ps(_mm512_maskz_loadu_ps(mk, cp), v);		\
	_mm512_mask_storeu_ps(cp, mk, v);					\
}

T512 static inline __attribute__((always_inline)) void
tile(const int R, const int NV, __mmask16 last, int k, int kc, const float *A, size_t lda,
    const float *B, size_t ldb, float *C, size_t ldc)
{
	FOR_IJ(DECL)

	for (int k0 = 0; k0 < k; k0 += kc) {
		int ke = k - k0 < kc ? k : k0 + kc;
		const float *b = B + (size_t)k0 * ldb;

		FOR_IJ(ZERO)
		for (int kk = k0; kk < ke; kk += 2) {
			__m512 b0 = _mm512_setzero_ps(), b1 = b0, b2 = b0, b3 = b0;
			__m512 a0 = b0, a1 = b0, a2 = b0;
			int h = 0;

			FOR_J(LOADB)
			FOR_I(BCAST)
			FOR_IJ(FMA_E)
			b += ldb;
			if (kk + 1 < ke) {
				h = 1;
				FOR_J(LOADB)
				FOR_I(BCAST)
				FOR_IJ(FMA_O)
				b += ldb;
			}
		}
		FOR_IJ(STORE)
	}
}

/* The tiles of R rows for columns [0, n) of one block of at most 64. */
#define TILE_NV(R)							\
	T512 static void						\
	tile_##R(int nv, __mmask16 last, int k, int kc, const float *A, size_t lda, \
	    const float *B, size_t ldb, float *C, size_t ldc) \
	{								\
		switch (nv) {						\
		case 1: tile(R, 1, last, k, kc, A, lda, B, ldb, C, ldc); break; \
		case 2: tile(R, 2, last, k, kc, A, lda, B, ldb, C, ldc); break; \
		case 3: tile(R, 3, last, k, kc, A, lda, B, ldb, C, ldc); break; \
		default: tile(R, 4, last, k, kc, A, lda, B, ldb, C, ldc); break; \
		}							\
	}
TILE_NV(1)
TILE_NV(2)
TILE_NV(3)

T512 static void
gemm512(int m, int n, int k, int kc, const float *A, size_t lda, const float *B, size_t ldb,
    float *C, size_t ldc)
{
	for (int j0 = 0; j0 < n; j0 += 16 * NVMAX) {
		int nn = n - j0 < 16 * NVMAX ? n - j0 : 16 * NVMAX, nv = (nn + 15) / 16;
		__mmask16 last = (__mmask16)(nn % 16 == 0 ? 0xffff : (1u << (nn % 16)) - 1);
		const float *b = B + j0;

		for (int i0 = 0; i0 < m; i0 += MR) {
			const float *a = A + (size_t)i0 * lda;
			float *c = C + (size_t)i0 * ldc + j0;
			switch (m - i0 < MR ? m - i0 : MR) {
			case 1: tile_1(nv, last, k, kc, a, lda, b, ldb, c, ldc); break;
			case 2: tile_2(nv, last, k, kc, a, lda, b, ldb, c, ldc); break;
			default: tile_3(nv, last, k, kc, a, lda, b, ldb, c, ldc); break;
			}
		}
	}
}
#endif

void
cg_gemm(int m, int n, int k, int kc, const float *A, size_t lda, const float *B, size_t ldb,
    float *C, size_t ldc)
{
	if (kc <= 0)
		kc = k;
#ifdef SD_AVX
	if (k <= 0) {
		for (int i = 0; i < m; i++)
			for (int j = 0; j < n; j++)
				C[(size_t)i * ldc + j] = 0.0f;
		return;
	}
	gemm512(m, n, k, kc, A, lda, B, ldb, C, ldc);
#else
	(void)m; (void)n; (void)k; (void)A; (void)lda; (void)B; (void)ldb; (void)C; (void)ldc;
#endif
}
