/* cpu_smallgemm.c: y = x W^T for few rows, straight from the checkpoint's
 * weights (see cpu_smallgemm.h).
 *
 * The UNet's deepest levels and the time embeddings multiply a few rows of
 * activations (2 to a few hundred) by large weight matrices.  Through sgemm
 * each call widens its F16 weights to F32 in memory and then packs both
 * operands, for little arithmetic per byte.  Here the rows of x are
 * transposed once into panels of P = 16, 32 or 64 rows (k x P floats, P
 * contiguous), and each group of 4 weight rows is widened in chunks of
 * KC values into a buffer that stays in L1; the micro-kernel then loads P
 * values of x per k and broadcasts the 4 weights: 4 P/16 accumulators, one
 * fused multiply-add per vector, the weights read once per panel. */
#include "config.h"

#include <string.h>

#include "core/cpu_kernels.h"
#include "core/cpu_smallgemm.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SD_AVX 1
#include <immintrin.h>
#endif

#define NR 4		/* weight rows per micro-kernel */
#define KC 256		/* weight values widened at a time, per row */

int
sg_available(void)
{
#ifdef SD_AVX
	return cpu_kernels_level() >= 2;
#else
	return 0;
#endif
}

int
sg_panel_rows(int mr)
{
	return mr <= 16 ? 16 : mr <= 32 ? 32 : 64;
}

void
sg_pack(float *xt, const float *x, int k, int mr, int k0, int k1)
{
	int p = sg_panel_rows(mr);

	for (int kk = k0; kk < k1; kk++) {
		float *d = xt + (size_t)kk * p;
		int r;
		for (r = 0; r < mr; r++)
			d[r] = x[(size_t)r * k + kk];
		for (; r < p; r++)
			d[r] = 0.0f;
	}
}

/* Widen rows [n, n + nr) of w, values [k0, k0 + kc), into buf[NR][KC]. */
static void
widen(float *buf, const void *w, enum sd_dtype dt, int k, int n, int nr, int k0, int kc)
{
	for (int j = 0; j < nr; j++) {
		size_t at = (size_t)(n + j) * k + k0;
		float *d = buf + (size_t)j * KC;
		if (dt == SD_F16)
			k_f16_to_f32(d, (const uint16_t *)w + at, (size_t)kc);
		else if (dt == SD_BF16)
			k_bf16_to_f32(d, (const uint16_t *)w + at, (size_t)kc);
		else
			memcpy(d, (const float *)w + at, (size_t)kc * sizeof *d);
	}
	for (int j = nr; j < NR; j++)
		memset(buf + (size_t)j * KC, 0, (size_t)kc * sizeof *buf);
}

#ifdef SD_AVX
#define T512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma,f16c,avx2")))

/* y[i si + (n + j) sn] = out[j * 64 + i] + bias[n + j], i < mr, j < nr;
 * with add, y += out instead (bias ignored).  The inner loop runs along
 * the smaller stride (a linear layer's rows, a convolution's pixels). */
static void
put(float *y, size_t si, size_t sn, const float *out, int mr, int n, int nr, const float *bias,
    int add)
{
	float b[NR];

	for (int j = 0; j < nr; j++)
		b[j] = bias != NULL && !add ? bias[n + j] : 0.0f;
	if (sn < si) {
		for (int i = 0; i < mr; i++) {
			float *yi = y + (size_t)i * si + (size_t)n * sn;
			for (int j = 0; j < nr; j++)
				yi[(size_t)j * sn] = (add ? yi[(size_t)j * sn] : b[j]) + out[j * 64 + i];
		}
	} else {
		for (int j = 0; j < nr; j++) {
			float *yj = y + (size_t)(n + j) * sn;
			for (int i = 0; i < mr; i++)
				yj[(size_t)i * si] = (add ? yj[(size_t)i * si] : b[j]) + out[j * 64 + i];
		}
	}
}

/* Rows [n, n + nr) of y, for the mr rows of a panel of 16, 32 or 64 (1, 2
 * or 4 vectors): the 4 x V accumulators are named variables, so that they
 * stay in registers for the whole of k.  The three variants are written out
 * on purpose: one always-inlined function with a constant V and unrolled
 * loops over an accumulator array keeps them in registers with gcc, but
 * clang 14 then keeps them on the stack in the inner loop. */
T512 static void
block1(float *y, size_t si, size_t sn, const float *xt, size_t ldx, int mr, int k,
    int kb0, int kb1, const void *w, enum sd_dtype dt, int n, int nr, const float *bias)
{
	float wb[NR * KC] __attribute__((aligned(64)));
	float out[NR * 64] __attribute__((aligned(64)));
	__m512 a00 = _mm512_setzero_ps(), a10 = _mm512_setzero_ps(),
	    a20 = _mm512_setzero_ps(), a30 = _mm512_setzero_ps();

	for (int k0 = kb0; k0 < kb1; k0 += KC) {
		int kc = kb1 - k0 < KC ? kb1 - k0 : KC;
		const float *xp = xt + (size_t)k0 * ldx;
		widen(wb, w, dt, k, n, nr, k0, kc);
		for (int kk = 0; kk < kc; kk++, xp += ldx) {
			__m512 x0 = _mm512_loadu_ps(xp + 0);
			__m512 b0 = _mm512_set1_ps(wb[0 * KC + kk]);
			__m512 b1 = _mm512_set1_ps(wb[1 * KC + kk]);
			__m512 b2 = _mm512_set1_ps(wb[2 * KC + kk]);
			__m512 b3 = _mm512_set1_ps(wb[3 * KC + kk]);
			a00 = _mm512_fmadd_ps(x0, b0, a00);
			a10 = _mm512_fmadd_ps(x0, b1, a10);
			a20 = _mm512_fmadd_ps(x0, b2, a20);
			a30 = _mm512_fmadd_ps(x0, b3, a30);
		}
	}
	_mm512_store_ps(out + 0 * 64 + 0, a00);
	_mm512_store_ps(out + 1 * 64 + 0, a10);
	_mm512_store_ps(out + 2 * 64 + 0, a20);
	_mm512_store_ps(out + 3 * 64 + 0, a30);
	put(y, si, sn, out, mr, n, nr, bias, kb0 > 0);
}

T512 static void
block2(float *y, size_t si, size_t sn, const float *xt, size_t ldx, int mr, int k,
    int kb0, int kb1, const void *w, enum sd_dtype dt, int n, int nr, const float *bias)
{
	float wb[NR * KC] __attribute__((aligned(64)));
	float out[NR * 64] __attribute__((aligned(64)));
	__m512 a00 = _mm512_setzero_ps(), a01 = _mm512_setzero_ps(),
	    a10 = _mm512_setzero_ps(), a11 = _mm512_setzero_ps(),
	    a20 = _mm512_setzero_ps(), a21 = _mm512_setzero_ps(),
	    a30 = _mm512_setzero_ps(), a31 = _mm512_setzero_ps();

	for (int k0 = kb0; k0 < kb1; k0 += KC) {
		int kc = kb1 - k0 < KC ? kb1 - k0 : KC;
		const float *xp = xt + (size_t)k0 * ldx;
		widen(wb, w, dt, k, n, nr, k0, kc);
		for (int kk = 0; kk < kc; kk++, xp += ldx) {
			__m512 x0 = _mm512_loadu_ps(xp + 0);
			__m512 x1 = _mm512_loadu_ps(xp + 16);
			__m512 b0 = _mm512_set1_ps(wb[0 * KC + kk]);
			__m512 b1 = _mm512_set1_ps(wb[1 * KC + kk]);
			__m512 b2 = _mm512_set1_ps(wb[2 * KC + kk]);
			__m512 b3 = _mm512_set1_ps(wb[3 * KC + kk]);
			a00 = _mm512_fmadd_ps(x0, b0, a00);
			a01 = _mm512_fmadd_ps(x1, b0, a01);
			a10 = _mm512_fmadd_ps(x0, b1, a10);
			a11 = _mm512_fmadd_ps(x1, b1, a11);
			a20 = _mm512_fmadd_ps(x0, b2, a20);
			a21 = _mm512_fmadd_ps(x1, b2, a21);
			a30 = _mm512_fmadd_ps(x0, b3, a30);
			a31 = _mm512_fmadd_ps(x1, b3, a31);
		}
	}
	_mm512_store_ps(out + 0 * 64 + 0, a00);
	_mm512_store_ps(out + 0 * 64 + 16, a01);
	_mm512_store_ps(out + 1 * 64 + 0, a10);
	_mm512_store_ps(out + 1 * 64 + 16, a11);
	_mm512_store_ps(out + 2 * 64 + 0, a20);
	_mm512_store_ps(out + 2 * 64 + 16, a21);
	_mm512_store_ps(out + 3 * 64 + 0, a30);
	_mm512_store_ps(out + 3 * 64 + 16, a31);
	put(y, si, sn, out, mr, n, nr, bias, kb0 > 0);
}

T512 static void
block4(float *y, size_t si, size_t sn, const float *xt, size_t ldx, int mr, int k,
    int kb0, int kb1, const void *w, enum sd_dtype dt, int n, int nr, const float *bias)
{
	float wb[NR * KC] __attribute__((aligned(64)));
	float out[NR * 64] __attribute__((aligned(64)));
	__m512 a00 = _mm512_setzero_ps(), a01 = _mm512_setzero_ps(),
	    a02 = _mm512_setzero_ps(), a03 = _mm512_setzero_ps(),
	    a10 = _mm512_setzero_ps(), a11 = _mm512_setzero_ps(),
	    a12 = _mm512_setzero_ps(), a13 = _mm512_setzero_ps(),
	    a20 = _mm512_setzero_ps(), a21 = _mm512_setzero_ps(),
	    a22 = _mm512_setzero_ps(), a23 = _mm512_setzero_ps(),
	    a30 = _mm512_setzero_ps(), a31 = _mm512_setzero_ps(),
	    a32 = _mm512_setzero_ps(), a33 = _mm512_setzero_ps();

	for (int k0 = kb0; k0 < kb1; k0 += KC) {
		int kc = kb1 - k0 < KC ? kb1 - k0 : KC;
		const float *xp = xt + (size_t)k0 * ldx;
		widen(wb, w, dt, k, n, nr, k0, kc);
		for (int kk = 0; kk < kc; kk++, xp += ldx) {
			__m512 x0 = _mm512_loadu_ps(xp + 0);
			__m512 x1 = _mm512_loadu_ps(xp + 16);
			__m512 x2 = _mm512_loadu_ps(xp + 32);
			__m512 x3 = _mm512_loadu_ps(xp + 48);
			__m512 b0 = _mm512_set1_ps(wb[0 * KC + kk]);
			__m512 b1 = _mm512_set1_ps(wb[1 * KC + kk]);
			__m512 b2 = _mm512_set1_ps(wb[2 * KC + kk]);
			__m512 b3 = _mm512_set1_ps(wb[3 * KC + kk]);
			a00 = _mm512_fmadd_ps(x0, b0, a00);
			a01 = _mm512_fmadd_ps(x1, b0, a01);
			a02 = _mm512_fmadd_ps(x2, b0, a02);
			a03 = _mm512_fmadd_ps(x3, b0, a03);
			a10 = _mm512_fmadd_ps(x0, b1, a10);
			a11 = _mm512_fmadd_ps(x1, b1, a11);
			a12 = _mm512_fmadd_ps(x2, b1, a12);
			a13 = _mm512_fmadd_ps(x3, b1, a13);
			a20 = _mm512_fmadd_ps(x0, b2, a20);
			a21 = _mm512_fmadd_ps(x1, b2, a21);
			a22 = _mm512_fmadd_ps(x2, b2, a22);
			a23 = _mm512_fmadd_ps(x3, b2, a23);
			a30 = _mm512_fmadd_ps(x0, b3, a30);
			a31 = _mm512_fmadd_ps(x1, b3, a31);
			a32 = _mm512_fmadd_ps(x2, b3, a32);
			a33 = _mm512_fmadd_ps(x3, b3, a33);
		}
	}
	_mm512_store_ps(out + 0 * 64 + 0, a00);
	_mm512_store_ps(out + 0 * 64 + 16, a01);
	_mm512_store_ps(out + 0 * 64 + 32, a02);
	_mm512_store_ps(out + 0 * 64 + 48, a03);
	_mm512_store_ps(out + 1 * 64 + 0, a10);
	_mm512_store_ps(out + 1 * 64 + 16, a11);
	_mm512_store_ps(out + 1 * 64 + 32, a12);
	_mm512_store_ps(out + 1 * 64 + 48, a13);
	_mm512_store_ps(out + 2 * 64 + 0, a20);
	_mm512_store_ps(out + 2 * 64 + 16, a21);
	_mm512_store_ps(out + 2 * 64 + 32, a22);
	_mm512_store_ps(out + 2 * 64 + 48, a23);
	_mm512_store_ps(out + 3 * 64 + 0, a30);
	_mm512_store_ps(out + 3 * 64 + 16, a31);
	_mm512_store_ps(out + 3 * 64 + 32, a32);
	_mm512_store_ps(out + 3 * 64 + 48, a33);
	put(y, si, sn, out, mr, n, nr, bias, kb0 > 0);
}

T512 static void
kernel512(float *y, size_t si, size_t sn, const float *xt, size_t ldx, int mr, int k,
    int kb0, int kb1, const void *w, enum sd_dtype dt, int n0, int n1, const float *bias)
{
	int p = sg_panel_rows(mr);

	for (int n = n0; n < n1; n += NR) {
		int nr = n1 - n < NR ? n1 - n : NR;
		if (p == 16)
			block1(y, si, sn, xt, ldx, mr, k, kb0, kb1, w, dt, n, nr, bias);
		else if (p == 32)
			block2(y, si, sn, xt, ldx, mr, k, kb0, kb1, w, dt, n, nr, bias);
		else
			block4(y, si, sn, xt, ldx, mr, k, kb0, kb1, w, dt, n, nr, bias);
	}
}
#endif

void
sg_kernel(float *y, size_t si, size_t sn, const float *xt, size_t ldx, int mr, int k,
    int kb0, int kb1, const void *w, enum sd_dtype dt, int n0, int n1, const float *bias)
{
#ifdef SD_AVX
	kernel512(y, si, sn, xt, ldx, mr, k, kb0, kb1, w, dt, n0, n1, bias);
#else
	(void)y; (void)si; (void)sn; (void)xt; (void)ldx; (void)mr; (void)k; (void)kb0;
	(void)kb1; (void)w; (void)dt; (void)n0; (void)n1; (void)bias;
#endif
}
