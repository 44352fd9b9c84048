/* cpu_attention.c: fused attention for the CPU backend (see
 * cpu_attention.h).
 *
 * A block of QB queries lies along the lanes of QV vectors, so that all a
 * softmax row needs (its running max and sum, the rescaling) is lane-wise,
 * with no horizontal reductions and no transposes in the inner loops:
 * - Q^T of the block, [dh][QB], scaled by scale * log2(e), so that the
 *   scores are in base 2 and the softmax needs exp2 only;
 * - K of the task packed once as groups of KG keys, [group][dh][KG]: the
 *   score kernel broadcasts KG keys against the QV query vectors, S^T
 *   [KG keys][QB queries] in KG x QV accumulators;
 * - S^T of a block of KB keys stays in L1: its max per lane (the causal
 *   mask applied), exp2 in place (P^T), the sum per lane; the output so
 *   far rescaled by exp2(old max - new max) as it is loaded;
 * - O^T [dh][QB] += V^T P^T: a chunk of dc head dims at a time in
 *   dc x QV accumulators, per key one row of P^T (QV vectors) and dc
 *   broadcasts of V (packed once in panels of dc columns, [key][dc]);
 * - out = O^T / sum, transposed back.
 * The exp2 is a degree-6 polynomial on [-1/2, 1/2] (1.4 ulp) scaled by
 * vscalefps.  On a Zen 4 core this runs SD 1.5's 4096 x 4096, dh 40
 * attention at about 87 % of the FMA peak (the BLAS path: 63 %). */
#include "config.h"

#include <math.h>
#include <string.h>

#include "core/cpu_attention.h"
#include "core/cpu_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SD_AVX 1
#include <immintrin.h>
#endif

/* Query vectors (of 16) per block, keys per score kernel, keys per softmax
 * block, the fewest and most head dims per output chunk, the largest head
 * dim (above it Q^T and O^T of a block outgrow L1 and the keys and values
 * of a head L2: the VAE's dh 512 at 4096 tokens took about 1.1x the time
 * of the BLAS path). */
#define QV 2
#define QB CPU_ATTENTION_QUERIES
_Static_assert(QB == 16 * QV, "a block of queries is QV vectors");
#define KG 8
#define KB 128
#define DC_MIN 8
#define DC_MAX 12
#define DH_MAX 256

static size_t
up16(size_t n)
{
	return (n + 15) & ~(size_t)15;
}

size_t
cpu_attention_scratch(int lk, int dh)
{
	size_t groups = ((size_t)lk + KG - 1) / KG;

	return up16(groups * KG * dh) + up16((size_t)lk * dh) + 2 * (size_t)dh * QB +
	    (size_t)KB * QB + 2 * QB;
}

int
cpu_attention_fused_ok(int dh)
{
#ifdef SD_AVX
	return dh >= 1 && dh <= DH_MAX && cpu_kernels_level() >= 2;
#else
	(void)dh;
	return 0;
#endif
}

#ifdef SD_AVX
#define T512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma,avx2,prfchw")))
#define INLINE T512 static inline __attribute__((always_inline))

/* 2^x for finite x (0 below -150, NaN for -inf: callers mask those); clamp
 * first where x may be -inf. */
INLINE __m512
exp2_512(__m512 x)
{
	__m512 n, r, p;

	n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	r = _mm512_sub_ps(x, n);
	p = _mm512_set1_ps(1.5461444855e-4f);
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3400427997e-3f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(9.6180569381e-3f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.5503271520e-2f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(2.4022650719e-1f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(6.9314718246e-1f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
	return _mm512_scalef_ps(p, n);
}

/* S^T [KG][QB] = the scores of KG keys (Kg: [dh][KG]) with the block's
 * queries (Qt: [dh][QB]); mx = max(mx, the scores) per lane. */
INLINE void
qk_group(float *S, const float *Qt, const float *Kg, int dh, __m512 *mx)
{
	__m512 a[KG][QV];

#pragma GCC unroll 16
	for (int j = 0; j < KG; j++)
#pragma GCC unroll 4
		for (int v = 0; v < QV; v++)
			a[j][v] = _mm512_setzero_ps();
	for (int d = 0; d < dh; d++) {
		__m512 qv[QV];
#pragma GCC unroll 4
		for (int v = 0; v < QV; v++)
			qv[v] = _mm512_load_ps(Qt + (size_t)d * QB + 16 * v);
#pragma GCC unroll 16
		for (int j = 0; j < KG; j++) {
			__m512 b = _mm512_set1_ps(Kg[(size_t)d * KG + j]);
#pragma GCC unroll 4
			for (int v = 0; v < QV; v++)
				a[j][v] = _mm512_fmadd_ps(qv[v], b, a[j][v]);
		}
	}
#pragma GCC unroll 16
	for (int j = 0; j < KG; j++)
#pragma GCC unroll 4
		for (int v = 0; v < QV; v++) {
			_mm512_store_ps(S + (size_t)j * QB + 16 * v, a[j][v]);
			mx[v] = _mm512_max_ps(mx[v], a[j][v]);
		}
}

/* O^T [dc][QB] = O^T * corr + V^T P^T over nk keys (P^T: [nk][QB], V:
 * [nk][dc]); dc a constant once inlined.  The accumulators are named
 * variables (o<dim><vector>) under constant tests, not an array walked by
 * unrolled loops: with the chunk width a template-like constant, clang 14
 * kept such an array in memory (attention at 130 GFLOP/s instead of 200);
 * qk_group's fixed loops it handles. */
_Static_assert(QV == 2 && DC_MAX == 12, "pv_chunk's named accumulators");
#define FOR_DC(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define PV_DECL(c) __m512 o##c##0 = _mm512_setzero_ps(), o##c##1 = _mm512_setzero_ps();
#define PV_LOAD(c) if (c < dc) {						\
	o##c##0 = _mm512_mul_ps(_mm512_load_ps(Ot + (size_t)(c) * QB), corr[0]);	\
	o##c##1 = _mm512_mul_ps(_mm512_load_ps(Ot + (size_t)(c) * QB + 16), corr[1]); \
}
#define PV_FMA(c) if (c < dc) {					\
	__m512 b = _mm512_set1_ps(vr[c]);				\
	o##c##0 = _mm512_fmadd_ps(p0, b, o##c##0);			\
	o##c##1 = _mm512_fmadd_ps(p1, b, o##c##1);			\
}
#define PV_STORE(c) if (c < dc) {					\
	_mm512_store_ps(Ot + (size_t)(c) * QB, o##c##0);		\
	_mm512_store_ps(Ot + (size_t)(c) * QB + 16, o##c##1);		\
}
INLINE void
pv_chunk(float *Ot, const float *Pt, const float *V, int nk, const __m512 *corr, const int dc)
{
	FOR_DC(PV_DECL)

	FOR_DC(PV_LOAD)
	for (int j = 0; j < nk; j++) {
		const float *vr = V + (size_t)j * dc;
		__m512 p0 = _mm512_load_ps(Pt + (size_t)j * QB);
		__m512 p1 = _mm512_load_ps(Pt + (size_t)j * QB + 16);
		FOR_DC(PV_FMA)
	}
	FOR_DC(PV_STORE)
}

/* One case of pv() per chunk width. */
#define PV_CASE(n) case n: pv_chunk(Ot + (size_t)d0 * QB, Pt, \
	Vp + (size_t)d0 * kend + (size_t)k0 * n, nk, corr, n); break;

/* O^T = O^T * corr + V^T P^T for keys [k0, k0 + nk) of the kend that
 * pack_values packed. */
T512 static void
pv(float *Ot, const float *Pt, const float *Vp, int k0, int nk, int kend, int dh, int dc,
    const __m512 *corr)
{
	for (int d0 = 0; d0 < dh; d0 += dc) {
		switch (dh - d0 < dc ? dh - d0 : dc) {
		PV_CASE(1) PV_CASE(2) PV_CASE(3) PV_CASE(4) PV_CASE(5) PV_CASE(6)
		PV_CASE(7) PV_CASE(8) PV_CASE(9) PV_CASE(10) PV_CASE(11) PV_CASE(12)
		}
	}
}

/* The head dims per output chunk: all of them up to DC_MAX, else the
 * largest divisor of dh from DC_MIN to DC_MAX, else DC_MIN and a shorter
 * last chunk. */
static int
chunk_dims(int dh)
{
	if (dh <= DC_MAX)
		return dh;
	for (int c = DC_MAX; c >= DC_MIN; c--)
		if (dh % c == 0)
			return c;
	return DC_MIN;
}

/* Transpose the 16 x 16 matrix r[row][column] in place. */
INLINE void
transpose16(__m512 r[16])
{
	__m512 t[16];

#pragma GCC unroll 8
	for (int i = 0; i < 8; i++) {
		t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
		t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
	}
	/* r[4i + k], 128-bit lane L: column 4L + k, rows 4i to 4i + 3 */
#pragma GCC unroll 4
	for (int i = 0; i < 4; i++) {
		r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
		r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xee);
		r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
		r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xee);
	}
#pragma GCC unroll 4
	for (int k = 0; k < 4; k++) {
		t[k] = _mm512_shuffle_f32x4(r[k], r[4 + k], 0x88);
		t[4 + k] = _mm512_shuffle_f32x4(r[k], r[4 + k], 0xdd);
		t[8 + k] = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0x88);
		t[12 + k] = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0xdd);
	}
#pragma GCC unroll 4
	for (int k = 0; k < 4; k++) {
		r[k] = _mm512_shuffle_f32x4(t[k], t[8 + k], 0x88);
		r[8 + k] = _mm512_shuffle_f32x4(t[k], t[8 + k], 0xdd);
		r[4 + k] = _mm512_shuffle_f32x4(t[4 + k], t[12 + k], 0x88);
		r[12 + k] = _mm512_shuffle_f32x4(t[4 + k], t[12 + k], 0xdd);
	}
}

/* The first n of 16 lanes. */
INLINE __mmask16
first_lanes(int n)
{
	return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
}

/* Qt [dh][QB] = the nb rows of q (ldq apart) times qscale, transposed;
 * zero for the queries from nb on. */
T512 static void
pack_queries(float *Qt, const float *q, int ldq, int nb, int dh, float qscale)
{
	__m512 qs = _mm512_set1_ps(qscale);

	for (int v = 0; v < QV; v++)
		for (int d0 = 0; d0 < dh; d0 += 16) {
			__mmask16 cols = first_lanes(dh - d0);
			__m512 r[16];

#pragma GCC unroll 16
			for (int l = 0; l < 16; l++)
				r[l] = 16 * v + l < nb ? _mm512_mul_ps(qs, _mm512_maskz_loadu_ps(cols,
				    q + (size_t)(16 * v + l) * ldq + d0)) : _mm512_setzero_ps();
			transpose16(r);
			for (int c = 0; c < 16 && d0 + c < dh; c++)
				_mm512_store_ps(Qt + (size_t)(d0 + c) * QB + 16 * v, r[c]);
		}
}

/* Kp [group][dh][KG] = the n rows of k (ldk apart) in groups of KG keys,
 * zero for the keys from n on. */
T512 static void
pack_keys(float *Kp, const float *k, int ldk, int n, int dh)
{
	_Static_assert(KG <= 16, "a group of keys is at most 16 rows");
	for (int g = 0; g * KG < n; g++)
		for (int d0 = 0; d0 < dh; d0 += 16) {
			__mmask16 cols = first_lanes(dh - d0);
			float *dst = Kp + (size_t)g * KG * dh + (size_t)d0 * KG;
			__m512 r[16];

#pragma GCC unroll 16
			for (int j = 0; j < 16; j++)
				r[j] = j < KG && g * KG + j < n ? _mm512_maskz_loadu_ps(cols,
				    k + (size_t)(g * KG + j) * ldk + d0) : _mm512_setzero_ps();
			transpose16(r);
			for (int c = 0; c < 16 && d0 + c < dh; c++)
				_mm512_mask_storeu_ps(dst + (size_t)c * KG, first_lanes(KG), r[c]);
		}
}

/* V in panels of dc columns (the last may be narrower), [key][width] each,
 * the panel of column d0 at Vp + d0 * n, so that pv reads each panel in
 * order (rows dh apart would map to few cache sets). */
T512 static void
pack_values(float *Vp, const float *v, int ldv, int n, int dh, int dc)
{
	for (int d0 = 0; d0 < dh; d0 += dc) {
		int w = dh - d0 < dc ? dh - d0 : dc;
		float *dst = Vp + (size_t)d0 * n;

		__mmask16 cols = first_lanes(w);

		_Static_assert(DC_MAX <= 16, "a panel row is one vector");
		for (int key = 0; key < n; key++)
			_mm512_mask_storeu_ps(dst + (size_t)key * w, cols,
			    _mm512_maskz_loadu_ps(cols, v + (size_t)key * ldv + d0));
	}
}

/* The nb rows of out (ldo apart) = O^T [dh][QB] transposed, each query
 * times inv[query]. */
T512 static void
unpack_output(float *out, int ldo, const float *Ot, const float *inv, int nb, int dh)
{
	for (int v = 0; v * 16 < nb; v++)
		for (int d0 = 0; d0 < dh; d0 += 16) {
			__mmask16 cols = first_lanes(dh - d0);
			__m512 r[16];

#pragma GCC unroll 16
			for (int c = 0; c < 16; c++)
				r[c] = d0 + c < dh ? _mm512_load_ps(Ot + (size_t)(d0 + c) * QB + 16 * v) :
				    _mm512_setzero_ps();
			transpose16(r);
			for (int l = 0; l < 16 && 16 * v + l < nb; l++)
				_mm512_mask_storeu_ps(out + (size_t)(16 * v + l) * ldo + d0, cols,
				    _mm512_mul_ps(r[l], _mm512_set1_ps(inv[16 * v + l])));
		}
}

/* Lanes of query vector v of the block at b0 that may see key kj. */
INLINE __mmask16
causal_lanes(int v, int b0, int kj)
{
	const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);

	return _mm512_cmpge_epi32_mask(_mm512_add_epi32(lane, _mm512_set1_epi32(16 * v)),
	    _mm512_set1_epi32(kj - b0));
}

T512 static void
fused512(float *ws, float *out, int ldo, const float *q, int ldq, const float *k, int ldk,
    const float *v, int ldv, int q0, int nq, int lk, int dh, float scale, int causal, int first)
{
	int kend = causal && q0 + nq < lk ? q0 + nq : lk;
	int groups = (kend + KG - 1) / KG, dc = chunk_dims(dh);
	float *Kp = ws, *Vp = Kp + up16((size_t)groups * KG * dh);
	float *Qt = Vp + up16((size_t)kend * dh), *Ot = Qt + (size_t)dh * QB;
	float *St = Ot + (size_t)dh * QB, *inv = St + (size_t)KB * QB;
	float qscale = scale * 1.44269504088896341f;

	pack_keys(Kp, k, ldk, kend, dh);
	pack_values(Vp, v, ldv, kend, dh, dc);

	int nblocks = (nq + QB - 1) / QB;

	first %= nblocks;
	for (int bi = 0; bi < nblocks; bi++) {
		int b0 = q0 + (first + bi) % nblocks * QB, next = q0 + (first + bi + 1) % nblocks * QB;
		int nb = q0 + nq - b0 < QB ? q0 + nq - b0 : QB;
		int kstop = causal && b0 + nb < kend ? b0 + nb : kend;
		__m512 m[QV], s[QV], corr[QV];

		pack_queries(Qt, q + (size_t)b0 * ldq, ldq, nb, dh, qscale);
		/* the next block's rows of q and out from memory meanwhile */
		for (int l = 0; bi + 1 < nblocks && l < QB && next + l < q0 + nq; l++) {
			const char *qr = (const char *)(q + (size_t)(next + l) * ldq);
			char *orow = (char *)(out + (size_t)(next + l) * ldo);
			for (int off = 0; off < dh * 4; off += 64) {
				_mm_prefetch(qr + off, _MM_HINT_T1);
				__builtin_prefetch(orow + off, 1, 3);
			}
			_mm_prefetch(qr + dh * 4 - 4, _MM_HINT_T1);
			__builtin_prefetch(orow + dh * 4 - 4, 1, 3);
		}
		memset(Ot, 0, (size_t)dh * QB * sizeof *Ot);
#pragma GCC unroll 4
		for (int i = 0; i < QV; i++) {
			m[i] = _mm512_set1_ps(-INFINITY);
			s[i] = _mm512_setzero_ps();
		}
		for (int k0 = 0; k0 < kstop; k0 += KB) {
			int nk = kstop - k0 < KB ? kstop - k0 : KB;
			/* rows from jm on hold keys that some queries may not see */
			int jm = causal ? b0 - k0 + 1 : nk;
			__m512 bm[QV];

			if (jm > nk)
				jm = nk;
			if (jm < 0)
				jm = 0;
#pragma GCC unroll 4
			for (int i = 0; i < QV; i++)
				bm[i] = m[i];
			/* whole groups of keys that all queries see: the max in
			 * registers; the others (the last, the causal diagonal)
			 * after the mask */
			int full = jm / KG * KG;
			for (int g = 0; g * KG < nk; g++) {
				__m512 dummy[QV] = { _mm512_setzero_ps() };
				qk_group(St + (size_t)g * KG * QB, Qt,
				    Kp + (size_t)(k0 / KG + g) * KG * dh, dh,
				    g * KG < full ? bm : dummy);
			}
			for (int j = full; j < nk; j++)
#pragma GCC unroll 4
				for (int i = 0; i < QV; i++) {
					float *p = St + (size_t)j * QB + 16 * i;
					__m512 x = _mm512_load_ps(p);
					if (j >= jm) {
						x = _mm512_mask_mov_ps(_mm512_set1_ps(-INFINITY),
						    causal_lanes(i, b0, k0 + j), x);
						_mm512_store_ps(p, x);
					}
					bm[i] = _mm512_max_ps(bm[i], x);
				}
#pragma GCC unroll 4
			for (int i = 0; i < QV; i++) {
				/* the first block: m = -inf, corr 0 */
				corr[i] = exp2_512(_mm512_max_ps(_mm512_sub_ps(m[i], bm[i]),
				    _mm512_set1_ps(-200.0f)));
				s[i] = _mm512_mul_ps(s[i], corr[i]);
				m[i] = bm[i];
			}
			for (int j = 0; j < jm; j++)
#pragma GCC unroll 4
				for (int i = 0; i < QV; i++) {
					float *p = St + (size_t)j * QB + 16 * i;
					__m512 e = exp2_512(_mm512_sub_ps(_mm512_load_ps(p), m[i]));
					_mm512_store_ps(p, e);
					s[i] = _mm512_add_ps(s[i], e);
				}
			for (int j = jm; j < nk; j++)
#pragma GCC unroll 4
				for (int i = 0; i < QV; i++) {
					float *p = St + (size_t)j * QB + 16 * i;
					__m512 e = exp2_512(_mm512_sub_ps(_mm512_load_ps(p), m[i]));
					e = _mm512_maskz_mov_ps(causal_lanes(i, b0, k0 + j), e);
					_mm512_store_ps(p, e);
					s[i] = _mm512_add_ps(s[i], e);
				}
			pv(Ot, St, Vp, k0, nk, kend, dh, dc, corr);
		}
#pragma GCC unroll 4
		for (int i = 0; i < QV; i++)
			_mm512_store_ps(inv + 16 * i, _mm512_div_ps(_mm512_set1_ps(1.0f), s[i]));
		unpack_output(out + (size_t)b0 * ldo, ldo, Ot, inv, nb, dh);
	}
}
#endif

void
cpu_attention_fused(float *scratch, float *out, int ldo, const float *q, int ldq,
    const float *k, int ldk, const float *v, int ldv, int q0, int nq, int lk, int dh,
    float scale, int causal, int first)
{
#ifdef SD_AVX
	if (nq > 0)
		fused512(scratch, out, ldo, q, ldq, k, ldk, v, ldv, q0, nq, lk, dh, scale, causal,
		    first < 0 ? 0 : first);
#else
	(void)scratch; (void)out; (void)ldo; (void)q; (void)ldq; (void)k; (void)ldk;
	(void)v; (void)ldv; (void)q0; (void)nq; (void)lk; (void)dh; (void)scale; (void)causal;
	(void)first;
#endif
}
