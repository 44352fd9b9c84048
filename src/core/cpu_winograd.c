/* cpu_winograd.c: Winograd F(2x2, 3x3), F(3x3, 3x3) and F(4x4, 3x3)
 * transforms (see cpu_winograd.h).
 *
 * The matrices (Lavin and Gray, "Fast Algorithms for Convolutional Neural
 * Networks", 2015), written out as additions so that no multiplication by
 * 0 or 1 is left to the compiler (which may not drop them in IEEE
 * arithmetic):
 *
 *   F(2, 3):  B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]
 *             G   = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
 *             A^T = [1 1 1 0; 0 1 -1 -1]
 *   F(3, 3) on the points 0, 1, -2, -1/2 (and infinity), the set of
 *   four with the least error in float among 0, +-1, +-2, +-1/2, +-3,
 *   +-1/3, +-3/2, +-2/3 but for 0, -1, 3/2, 2/3 (5 % less, and thirds
 *   in B^T); 0, 1, -1, 1/2 has 8x its error in tests/test_ops (rows of
 *   G and B^T scaled by powers of 2):
 *             B^T = [1 3/2 -3/2 -1 0; 0 1 5/2 1 0; 0 -1/2 -1/2 1 0;
 *                    0 -2 1 1 0; 0 -1 -3/2 3/2 1]
 *             G   = [1 0 0; 2/9 2/9 2/9; -1/9 2/9 -4/9; 8/9 -4/9 2/9;
 *                    0 0 1]
 *             A^T = [1 1 1 1 0; 0 1 -2 -1/2 0; 0 1 4 1/4 1]
 *   F(4, 3) on the points 0, 1, -1, 1/2, -2 (and infinity), which round
 *   about half as much in float as Lavin's 0, +-1, +-2 (Barabasz et al.,
 *   "Error analysis and improving the accuracy of Winograd convolution",
 *   2020; checked here by simulation in float):
 *             B^T = [1 -3/2 -2 3/2 1 0; 0 -1 1/2 5/2 1 0; 0 1 -5/2 1/2 1 0;
 *                    0 -2 -1 2 1 0; 0 1/2 -1 -1/2 1 0; 0 1 -3/2 -2 3/2 1]
 *             G   = [1 0 0; 1/3 1/3 1/3; -1/3 1/3 -1/3;
 *                    -16/15 -8/15 -4/15; 1/15 -2/15 4/15; 0 0 1]
 *             A^T = [1 1 1 1 1 0; 0 1 -1 1/2 -2 0; 0 1 1 1/4 4 0;
 *                    0 1 -1 1/8 -8 1]
 *
 * The code works on GNU C vectors of 16 floats (16 tiles, or 16 input
 * channels for the weights) and is compiled three times: portable, AVX2
 * and AVX-512 (target attributes, picked at run time). */
#include "config.h"

#include <stdint.h>
#include <string.h>

#include "core/cpu_kernels.h"
#include "core/cpu_winograd.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#endif

#define LANES 16
#define INLINE static inline __attribute__((always_inline))

typedef float v16 __attribute__((vector_size(LANES * sizeof(float))));

#define LOADV(v, p) memcpy(&(v), (p), sizeof(v16))
#define STOREV(p, v) memcpy((p), &(v), sizeof(v16))

/* One dimension of B^T (d: the alpha inputs, o: the alpha outputs). */
#define BT4(o0, o1, o2, o3, d0, d1, d2, d3) do {				\
	o0 = (d0) - (d2); o1 = (d1) + (d2); o2 = (d2) - (d1); o3 = (d1) - (d3);	\
} while (0)
#define BT5(o0, o1, o2, o3, o4, d0, d1, d2, d3, d4) do {			\
	o0 = (d0) + 1.5f * ((d1) - (d2)) - (d3);				\
	o1 = (d1) + 2.5f * (d2) + (d3);						\
	o2 = (d3) - 0.5f * ((d1) + (d2));					\
	o3 = (d2) + (d3) - 2.0f * (d1);						\
	o4 = (d4) - (d1) + 1.5f * ((d3) - (d2));				\
} while (0)
#define BT6(o0, o1, o2, o3, o4, o5, d0, d1, d2, d3, d4, d5) do {		\
	o0 = (d0) - 1.5f * (d1) - 2.0f * (d2) + 1.5f * (d3) + (d4);		\
	o1 = 0.5f * (d2) - (d1) + 2.5f * (d3) + (d4);				\
	o2 = (d1) - 2.5f * (d2) + 0.5f * (d3) + (d4);				\
	o3 = 2.0f * ((d3) - (d1)) - (d2) + (d4);				\
	o4 = 0.5f * ((d1) - (d3)) - (d2) + (d4);				\
	o5 = (d1) - 1.5f * (d2) - 2.0f * (d3) + 1.5f * (d4) + (d5);		\
} while (0)
/* One dimension of G (g: 3 inputs, u: alpha outputs). */
#define G4(u0, u1, u2, u3, g0, g1, g2) do {					\
	v16 s_ = (g0) + (g2);							\
	u0 = (g0); u1 = 0.5f * (s_ + (g1)); u2 = 0.5f * (s_ - (g1)); u3 = (g2);	\
} while (0)
#define G5(u0, u1, u2, u3, u4, g0, g1, g2) do {				\
	u0 = (g0); u1 = 2.0f * ((g0) + (g1) + (g2)) / 9.0f;			\
	u2 = (2.0f * (g1) - (g0) - 4.0f * (g2)) / 9.0f;				\
	u3 = 2.0f * (4.0f * (g0) - 2.0f * (g1) + (g2)) / 9.0f; u4 = (g2);	\
} while (0)
#define G6(u0, u1, u2, u3, u4, u5, g0, g1, g2) do {				\
	v16 s_ = (g0) + (g2);							\
	u0 = (g0); u1 = (s_ + (g1)) * (1.0f / 3); u2 = ((g1) - s_) * (1.0f / 3);	\
	u3 = (16.0f * (g0) + 8.0f * (g1) + 4.0f * (g2)) * (-1.0f / 15);		\
	u4 = ((g0) - 2.0f * (g1) + 4.0f * (g2)) * (1.0f / 15); u5 = (g2);		\
} while (0)
/* One dimension of A^T (M: alpha inputs, o: m outputs). */
#define AT4(o0, o1, M0, M1, M2, M3) do {					\
	o0 = (M0) + (M1) + (M2); o1 = (M1) - (M2) - (M3);			\
} while (0)
#define AT5(o0, o1, o2, M0, M1, M2, M3, M4) do {				\
	o0 = (M0) + (M1) + (M2) + (M3); o1 = (M1) - 2.0f * (M2) - 0.5f * (M3);	\
	o2 = (M1) + 4.0f * (M2) + 0.25f * (M3) + (M4);				\
} while (0)
#define AT6(o0, o1, o2, o3, M0, M1, M2, M3, M4, M5) do {			\
	v16 a_ = (M1) + (M2), b_ = (M1) - (M2);					\
	o0 = (M0) + a_ + (M3) + (M4); o1 = b_ + 0.5f * (M3) - 2.0f * (M4);	\
	o2 = a_ + 0.25f * (M3) + 4.0f * (M4); o3 = b_ + 0.125f * (M3) - 8.0f * (M4) + (M5); \
} while (0)

/* The 2-D transforms: in[r * ni + c] -> out[r * no + c] by the 1-D one
 * on the columns, then on the rows. */
INLINE void
input_tf(v16 *o, const v16 *d, int m)
{
	v16 t[36];

	if (m == 2) {
		for (int c = 0; c < 4; c++)
			BT4(t[c], t[4 + c], t[8 + c], t[12 + c], d[c], d[4 + c], d[8 + c], d[12 + c]);
		for (int r = 0; r < 4; r++) {
			const v16 *s = t + 4 * r;
			BT4(o[4 * r], o[4 * r + 1], o[4 * r + 2], o[4 * r + 3], s[0], s[1], s[2], s[3]);
		}
	} else if (m == 3) {
		for (int c = 0; c < 5; c++)
			BT5(t[c], t[5 + c], t[10 + c], t[15 + c], t[20 + c],
			    d[c], d[5 + c], d[10 + c], d[15 + c], d[20 + c]);
		for (int r = 0; r < 5; r++) {
			const v16 *s = t + 5 * r;
			v16 *q = o + 5 * r;
			BT5(q[0], q[1], q[2], q[3], q[4], s[0], s[1], s[2], s[3], s[4]);
		}
	} else {
		for (int c = 0; c < 6; c++)
			BT6(t[c], t[6 + c], t[12 + c], t[18 + c], t[24 + c], t[30 + c],
			    d[c], d[6 + c], d[12 + c], d[18 + c], d[24 + c], d[30 + c]);
		for (int r = 0; r < 6; r++) {
			const v16 *s = t + 6 * r;
			v16 *q = o + 6 * r;
			BT6(q[0], q[1], q[2], q[3], q[4], q[5], s[0], s[1], s[2], s[3], s[4], s[5]);
		}
	}
}

INLINE void
weight_tf(v16 *u, const v16 *g, int m)
{
	v16 t[18];

	if (m == 2) {
		for (int c = 0; c < 3; c++)
			G4(t[c], t[3 + c], t[6 + c], t[9 + c], g[c], g[3 + c], g[6 + c]);
		for (int r = 0; r < 4; r++) {
			const v16 *s = t + 3 * r;
			G4(u[4 * r], u[4 * r + 1], u[4 * r + 2], u[4 * r + 3], s[0], s[1], s[2]);
		}
	} else if (m == 3) {
		for (int c = 0; c < 3; c++)
			G5(t[c], t[3 + c], t[6 + c], t[9 + c], t[12 + c], g[c], g[3 + c], g[6 + c]);
		for (int r = 0; r < 5; r++) {
			const v16 *s = t + 3 * r;
			v16 *q = u + 5 * r;
			G5(q[0], q[1], q[2], q[3], q[4], s[0], s[1], s[2]);
		}
	} else {
		for (int c = 0; c < 3; c++)
			G6(t[c], t[3 + c], t[6 + c], t[9 + c], t[12 + c], t[15 + c],
			    g[c], g[3 + c], g[6 + c]);
		for (int r = 0; r < 6; r++) {
			const v16 *s = t + 3 * r;
			v16 *q = u + 6 * r;
			G6(q[0], q[1], q[2], q[3], q[4], q[5], s[0], s[1], s[2]);
		}
	}
}

INLINE void
output_tf(v16 *o, const v16 *M, int m)
{
	v16 t[24];

	if (m == 2) {
		for (int c = 0; c < 4; c++)
			AT4(t[c], t[4 + c], M[c], M[4 + c], M[8 + c], M[12 + c]);
		for (int r = 0; r < 2; r++) {
			const v16 *s = t + 4 * r;
			AT4(o[2 * r], o[2 * r + 1], s[0], s[1], s[2], s[3]);
		}
	} else if (m == 3) {
		for (int c = 0; c < 5; c++)
			AT5(t[c], t[5 + c], t[10 + c], M[c], M[5 + c], M[10 + c], M[15 + c], M[20 + c]);
		for (int r = 0; r < 3; r++) {
			const v16 *s = t + 5 * r;
			v16 *q = o + 3 * r;
			AT5(q[0], q[1], q[2], s[0], s[1], s[2], s[3], s[4]);
		}
	} else {
		for (int c = 0; c < 6; c++)
			AT6(t[c], t[6 + c], t[12 + c], t[18 + c],
			    M[c], M[6 + c], M[12 + c], M[18 + c], M[24 + c], M[30 + c]);
		for (int r = 0; r < 4; r++) {
			const v16 *s = t + 6 * r;
			v16 *q = o + 4 * r;
			AT6(q[0], q[1], q[2], q[3], s[0], s[1], s[2], s[3], s[4], s[5]);
		}
	}
}

/* Where the 16 tiles of a lane group are. */
struct lanes {
	int n;			/* valid lanes */
	size_t img[LANES];	/* offset of the tile's image (batch index * channels * plane) */
	int y0[LANES], x0[LANES];	/* patch corner (output corner - 1 for inputs) */
	int inside[LANES];	/* the whole alpha x alpha patch is in the image */
};

static void
lanes_setup(struct lanes *L, int ch, int h, int w, int m, long t0, int nt, int g)
{
	int th = (h + m - 1) / m, tw = (w + m - 1) / m, a = m + 2;
	long per = (long)th * tw;

	L->n = nt - g < LANES ? nt - g : LANES;
	for (int l = 0; l < L->n; l++) {
		long t = t0 + g + l, r = t % per;
		L->img[l] = (size_t)(t / per) * ch * h * w;
		L->y0[l] = (int)(r / tw) * m - 1;
		L->x0[l] = (int)(r % tw) * m - 1;
		L->inside[l] = L->y0[l] >= 0 && L->x0[l] >= 0 && L->y0[l] + a <= h && L->x0[l] + a <= w;
	}
}

INLINE void
input_body(float *V, size_t ldv, const float *x, int cin, int h, int w, int m,
    long t0, int nt, int ci0, int ci1)
{
	int a = m + 2, aa = a * a;
	size_t plane = (size_t)h * w;
	struct lanes L;

	for (int g = 0; g < nt; g += LANES) {
		lanes_setup(&L, cin, h, w, m, t0, nt, g);
		for (int ci = ci0; ci < ci1; ci++) {
			float d[36][LANES] __attribute__((aligned(64)));
			v16 D[36], T[36];

			for (int l = 0; l < LANES; l++) {
				if (l >= L.n) {
					for (int k = 0; k < aa; k++)
						d[k][l] = 0.0f;
					continue;
				}
				const float *src = x + L.img[l] + (size_t)ci * plane;
				int y0 = L.y0[l], x0 = L.x0[l];
				if (L.inside[l]) {
					const float *p = src + (size_t)y0 * w + x0;
					for (int r = 0; r < a; r++, p += w)
						for (int c = 0; c < a; c++)
							d[r * a + c][l] = p[c];
				} else {
					for (int r = 0; r < a; r++) {
						int iy = y0 + r;
						for (int c = 0; c < a; c++) {
							int ix = x0 + c;
							d[r * a + c][l] = iy >= 0 && iy < h && ix >= 0 && ix < w ?
							    src[(size_t)iy * w + ix] : 0.0f;
						}
					}
				}
			}
			for (int k = 0; k < aa; k++)
				LOADV(D[k], d[k]);
			input_tf(T, D, m);
			for (int k = 0; k < aa; k++)
				STOREV(V + ((size_t)k * cin + ci) * ldv + g, T[k]);
		}
	}
}

INLINE void
output_body(float *y, const float *M, size_t ldm, const float *bias, int cout, int h, int w,
    int m, long t0, int nt, int co0, int co1)
{
	int aa = (m + 2) * (m + 2), mm = m * m;
	size_t plane = (size_t)h * w;
	struct lanes L;

	for (int g = 0; g < nt; g += LANES) {
		lanes_setup(&L, cout, h, w, m, t0, nt, g);
		for (int co = co0; co < co1; co++) {
			float o[16][LANES] __attribute__((aligned(64)));
			v16 D[36], O[16];

			for (int k = 0; k < aa; k++)
				LOADV(D[k], M + ((size_t)k * cout + co) * ldm + g);
			output_tf(O, D, m);
			if (bias != NULL)
				for (int k = 0; k < mm; k++)
					O[k] += bias[co];
			for (int k = 0; k < mm; k++)
				STOREV(o[k], O[k]);
			for (int l = 0; l < L.n; l++) {
				int oy = L.y0[l] + 1, ox = L.x0[l] + 1;
				int rows = h - oy < m ? h - oy : m, cols = w - ox < m ? w - ox : m;
				float *dst = y + L.img[l] + (size_t)co * plane + (size_t)oy * w + ox;
				for (int r = 0; r < rows; r++, dst += w)
					for (int c = 0; c < cols; c++)
						dst[c] = o[r * m + c][l];
			}
		}
	}
}

/* gk[k][l] = tap k of the filter of input channel ci + l (l < nl; the
 * lanes past nl zero) from row co of the weights, at element `at` = (co
 * cin + ci) 9: the 16 filters side by side, transposed.  The scalar loop
 * of weights_body costs as much as the GEMMs on the smallest maps, and
 * gathers are slow on Zen 4: F16 and BF16 weights are read as 16-bit
 * words into 5 vectors and each tap's 16 values picked out by permutes. */
typedef void (*taps_fn)(float gk[9][LANES], const void *w, enum sd_dtype dtype, size_t at,
    int nl);

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("avx512f,avx512bw,avx512vl,f16c"))) static void
taps_avx512(float gk[9][LANES], const void *w, enum sd_dtype dtype, size_t at, int nl)
{
	const __m512i nine = _mm512_setr_epi32(0, 9, 18, 27, 36, 45, 54, 63, 72, 81, 90, 99,
	    108, 117, 126, 135);
	__m512i R[5], base16;
	int nw = nl * 9;

	if (dtype == SD_F32) {
		const float *p = (const float *)w + at;
		__mmask16 ml = (__mmask16)(nl >= LANES ? 0xffff : (1u << nl) - 1);
		for (int k = 0; k < 9; k++)
			_mm512_store_ps(gk[k], _mm512_mask_i32gather_ps(_mm512_setzero_ps(), ml,
			    nine, p + k, 4));
		return;
	}
	/* the 16-bit word index 9 l of lane l, in lanes 0..15 (16..31 unused) */
	base16 = _mm512_castsi256_si512(_mm512_cvtepi32_epi16(nine));
	for (int j = 0; j < 5; j++)	/* the filters 4 groups on */
		_mm_prefetch((const char *)((const uint16_t *)w + at + 4 * 144) + 64 * j, _MM_HINT_T0);
	for (int j = 0; j < 5; j++) {
		int left = nw - 32 * j;
		__mmask32 mk = left >= 32 ? 0xffffffffu : left <= 0 ? 0 : (1u << left) - 1;
		R[j] = _mm512_maskz_loadu_epi16(mk, (const uint16_t *)w + at + 32 * j);
	}
	for (int k = 0; k < 9; k++) {
		__m512i idx = _mm512_add_epi16(base16, _mm512_set1_epi16((short)k));
		__m512i a = _mm512_permutex2var_epi16(R[0], idx, R[1]);
		__m512i b = _mm512_permutex2var_epi16(R[2],
		    _mm512_sub_epi16(idx, _mm512_set1_epi16(64)), R[3]);
		__m512i c = _mm512_permutexvar_epi16(
		    _mm512_sub_epi16(idx, _mm512_set1_epi16(128)), R[4]);
		__mmask32 mb = _mm512_cmpge_epi16_mask(idx, _mm512_set1_epi16(64));
		__mmask32 mc = _mm512_cmpge_epi16_mask(idx, _mm512_set1_epi16(128));
		__m256i v = _mm512_castsi512_si256(_mm512_mask_blend_epi16(mc,
		    _mm512_mask_blend_epi16(mb, a, b), c));
		__m512 f = dtype == SD_F16 ? _mm512_cvtph_ps(v) :
		    _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
		_mm512_store_ps(gk[k], f);
	}
}
#endif

INLINE void
weights_body(float *U, const void *w, enum sd_dtype dtype, int cout, int cin, int co0, int co1,
    int m, float *tmp, taps_fn taps)
{
	int aa = (m + 2) * (m + 2);

	for (int co = co0; co < co1; co++) {
		const float *p = NULL;
		size_t row = (size_t)co * cin * 9;

		if (taps != NULL) {
			/* read in place below */
		} else if (dtype == SD_F32) {
			p = (const float *)w + row;
		} else {
			if (dtype == SD_F16)
				k_f16_to_f32(tmp, (const uint16_t *)w + row, (size_t)cin * 9);
			else
				k_bf16_to_f32(tmp, (const uint16_t *)w + row, (size_t)cin * 9);
			p = tmp;
		}
		for (int ci = 0; ci < cin; ci += LANES) {
			int nl = cin - ci < LANES ? cin - ci : LANES;
			float gk[9][LANES] __attribute__((aligned(64)));
			float u[36][LANES] __attribute__((aligned(64)));
			v16 G[9], Uv[36];

			if (taps != NULL)
				taps(gk, w, dtype, row + (size_t)ci * 9, nl);
			else
				for (int l = 0; l < LANES; l++)
					for (int k = 0; k < 9; k++)
						gk[k][l] = l < nl ? p[(size_t)(ci + l) * 9 + k] : 0.0f;
			for (int k = 0; k < 9; k++)
				LOADV(G[k], gk[k]);
			weight_tf(Uv, G, m);
			for (int k = 0; k < aa; k++) {
				float *dst = U + ((size_t)k * cout + co) * cin + ci;
				if (nl == LANES) {
					STOREV(dst, Uv[k]);
				} else {
					STOREV(u[k], Uv[k]);
					memcpy(dst, u[k], (size_t)nl * sizeof *dst);
				}
			}
		}
	}
}

#define WINO_ARGS_IN float *V, size_t ldv, const float *x, int cin, int h, int w, int m, \
    long t0, int nt, int ci0, int ci1
#define WINO_ARGS_OUT float *y, const float *M, size_t ldm, const float *bias, int cout, int h, \
    int w, int m, long t0, int nt, int co0, int co1
#define WINO_ARGS_W float *U, const void *w, enum sd_dtype dtype, int cout, int cin, \
    int co0, int co1, int m, float *tmp

#define WINO_VERSION(suffix, attr, taps)					\
attr static void								\
input_##suffix(WINO_ARGS_IN)							\
{										\
	input_body(V, ldv, x, cin, h, w, m, t0, nt, ci0, ci1);			\
}										\
attr static void								\
output_##suffix(WINO_ARGS_OUT)							\
{										\
	output_body(y, M, ldm, bias, cout, h, w, m, t0, nt, co0, co1);		\
}										\
attr static void								\
weights_##suffix(WINO_ARGS_W)							\
{										\
	weights_body(U, w, dtype, cout, cin, co0, co1, m, tmp, taps);	\
}

WINO_VERSION(generic, , NULL)
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SD_WINO_X86 1
WINO_VERSION(avx2, __attribute__((target("avx2"))), NULL)
WINO_VERSION(avx512, __attribute__((target("avx512f"))), taps_avx512)
#endif

int
wino_supported(int m)
{
	return m == 2 || m == 3 || m == 4;
}

void
wino_weights(WINO_ARGS_W)
{
#ifdef SD_WINO_X86
	switch (cpu_kernels_level()) {
	case 2:
		weights_avx512(U, w, dtype, cout, cin, co0, co1, m, tmp);
		return;
	case 1:
		weights_avx2(U, w, dtype, cout, cin, co0, co1, m, tmp);
		return;
	}
#endif
	weights_generic(U, w, dtype, cout, cin, co0, co1, m, tmp);
}

void
wino_input(WINO_ARGS_IN)
{
#ifdef SD_WINO_X86
	switch (cpu_kernels_level()) {
	case 2:
		input_avx512(V, ldv, x, cin, h, w, m, t0, nt, ci0, ci1);
		return;
	case 1:
		input_avx2(V, ldv, x, cin, h, w, m, t0, nt, ci0, ci1);
		return;
	}
#endif
	input_generic(V, ldv, x, cin, h, w, m, t0, nt, ci0, ci1);
}

void
wino_output(WINO_ARGS_OUT)
{
#ifdef SD_WINO_X86
	switch (cpu_kernels_level()) {
	case 2:
		output_avx512(y, M, ldm, bias, cout, h, w, m, t0, nt, co0, co1);
		return;
	case 1:
		output_avx2(y, M, ldm, bias, cout, h, w, m, t0, nt, co0, co1);
		return;
	}
#endif
	output_generic(y, M, ldm, bias, cout, h, w, m, t0, nt, co0, co1);
}
