/* backend_cpu.c: the CPU backend.
 *
 * One thread pool: OpenMP.  The BLAS runs single-threaded (blas_set_threads
 * (1) at init) and every op splits its own work over the OpenMP threads,
 * each thread calling cblas_sgemm on its part, so that OpenMP's and the
 * BLAS's threads never fight over the cores.
 * - conv2d: 3x3, stride 1, pad 1 convolutions that are large enough as
 *   Winograd F(2x2, 3x3), F(3x3, 3x3) or F(4x4, 3x3) (cpu_winograd.c;
 *   weights transformed per call into one reused buffer,
 *   blocks of tiles of the whole batch transformed, alpha^2 GEMMs split
 *   over the threads, summing the input channels in chunks (with AVX-512
 *   in cpu_gemm.c, which reads both operands where they lie, else
 *   sgemm), output tiles transformed back with the bias), chosen per
 *   layer by a cost estimate; the others as im2col of a tile of output
 *   rows into the thread's own buffer, one GEMM per tile (1x1
 *   convolutions read the input directly) onto the bias written first;
 * - small layers (few pixels or rows, where reading the weights costs more
 *   than the flops): the threads split the output channels, each widening
 *   (or Winograd-transforming) its weights in cache-sized blocks that the
 *   GEMMs use at once, so the weights are read from memory once a call;
 *   with AVX-512, maps of 16 to 256 pixels (a multiple of 16) and linear
 *   layers of 16 to 256 rows go through cpu_smallgemm.c instead (the F16
 *   weights read as stored, no packing);
 * - linear: the rows (or, for few rows, the output features) split over the
 *   threads, each sgemm adding onto the bias written first;
 * - attention: with AVX-512 and head dims up to 256, the fused kernel of
 *   cpu_attention.c ((batch, head) tasks, K and V packed once a head, 32
 *   queries across the vector lanes, blocks of 128 keys with an online
 *   softmax, no BLAS); otherwise (batch, head, block of queries) tasks,
 *   keys in blocks through cblas_sgemm with an online softmax; either way
 *   no more than a block x block of scores exists per thread; an
 *   additive bias (T5) always takes the second way;
 * - F16/BF16 weights are widened per call into one reused buffer with the
 *   vector converters of cpu_kernels.c; all scratch grows to its largest
 *   size once and is reused, so a second forward allocates nothing. */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/backend.h"
#include "core/blas.h"
#include "core/cpu.h"
#include "core/cpu_attention.h"
#include "core/cpu_kernels.h"
#include "core/cpu_gemm.h"
#include "core/cpu_smallgemm.h"
#include "core/cpu_winograd.h"

/* im2col tiles hold at most this many floats per thread (16 MiB). */
#define COL_TILE_FLOATS ((size_t)4 << 20)
/* Attention: queries per task, keys per block. */
#define ATTN_QBLOCK 128
#define ATTN_KBLOCK 512
#define MAX_THREADS 256
/* Below this much work an op runs on one thread: a parallel region costs
 * more than it saves (and far more when other processes share the cores). */
#define PAR_MIN_FLOPS 4e6
#define PAR_MIN_ELEMS 65536
/* Winograd: the transformed weights of one layer hold at most this many
 * floats (else the layer runs as im2col, unless it takes the small-image
 * path, which transforms them by blocks); the transformed inputs and
 * products of one block of tiles about this many. */
#define WINO_U_MAX ((size_t)60 << 20)
#define WINO_BLOCK_FLOATS ((size_t)12 << 20)
#define WINO_CACHE_FLOATS ((size_t)2 << 20)
#define WINO_MIN_TILES 256
/* The cost estimate, in GEMM flops: one float written and read again (a
 * transform's output, packed by the BLAS). */
#define WINO_TRAFFIC 48.0
/* The GEMMs of F(3x3) and F(4x4) sum the input channels in chunks of
 * this many (a GEMM call each: 1 to 3 % slower than one call on large
 * layers, 5 to 7 % on the small ones, so F(2x2) does not): in float the
 * error of Winograd grows with the tile and with the length of the sums,
 * which the chunks cut.  On the unit-range data of tests/test_ops (1e-4)
 * at 160 to 640 input channels: F(2x2) 0.17 to 0.34 of it in one sum
 * (0.09 to 0.11 in chunks), F(3x3) 0.55 to 0.96 in one sum, 0.27 to 0.40
 * in chunks of 64; F(4x4) misses it in one sum, reaches 0.45 to 0.56 in
 * chunks of 64 and 0.27 to 0.41 in chunks of 32 (WINO_KCHUNK4; shorter
 * chunks gain nothing more: a simulation in float puts the rest of its
 * error, about twice F(3x3)'s, in the rounding of the transformed
 * weights and inputs to float, which no point set among 0, +-1, +-2,
 * +-1/2 and no wider arithmetic in the transforms improves). */
#define WINO_KCHUNK 64
#define WINO_KCHUNK4 32
/* The largest tile the cost rule picks by itself (F(4x4, 3x3): about
 * 1.5x faster than F(2x2) on the UNet's 16x16 layers, 1280 channels at
 * 512x512 and 640 at 256x256). */
#define WINO_AUTO_MAX_M 4
/* Winograd with at most WINO_SMALL_TILES tiles (the weights, not the
 * flops, are its cost): output channels in blocks whose transformed
 * weights hold about WINO_SMALL_U floats (in cache), each transformed,
 * multiplied and transformed back by one thread. */
#define WINO_SMALL_TILES 32
#define WINO_SMALL_U ((size_t)512 << 10)
/* Small GEMMs: a convolution with at most this many output pixels (all
 * images) or a linear layer with at most this many rows reads its weights
 * once, in blocks of SMALL_MB output channels by SMALL_KC inputs widened
 * into the thread's cache and multiplied at once (the weights, not the
 * flops, are its cost). */
#define SMALL_N 1024
#define SMALL_MB 128
#define SMALL_KC 512
/* Rows for which cpu_smallgemm (linear) beats the paths above (measured on Zen 4:
 * 1.05-1.5x from 16 to 256 rows; fewer rows are bound by reading the
 * weights, more rows read them once a panel too often). */
#define SG_MIN_M 16
#define SG_MAX_M 256

/* A thread's own scratch. */
struct tscratch {
	float *col;		/* im2col tile */
	size_t colcap;
	float *att;		/* attention: scores, accumulators, max, sum */
	size_t attcap;
	float *wc;		/* small GEMMs: a block of widened weights */
	size_t wccap;
	char pad[64];
};

/* The weights a phase touched (a set of data pointers, open addressing),
 * for sd_cpu_release_weights. */
struct touched {
	const void **p;
	size_t *bytes;
	size_t cap, n;
};

struct cpu_state {
	int nthreads;
	struct touched touched;
	float *wbuf;		/* widened weights */
	size_t wcap;
	float *vbuf;		/* widened vectors (bias, norm affine) */
	size_t vcap;
	float *sbuf;		/* small convolutions: im2col of all images */
	size_t scap;
	struct tscratch *ts;	/* [nthreads] */
	int wino;		/* SDBATCH_WINOGRAD: -1 auto, 0 never, 2, 3 or 4 forced */
	float *wu, *wv, *wm;	/* Winograd weights, inputs, products */
	float *sgx;		/* x transposed for cpu_smallgemm */
	size_t sgxcap;
	size_t wucap, wvcap, wmcap;
	char desc[192];
};

static int
thread_id(void)
{
#ifdef _OPENMP
	return omp_get_thread_num();
#else
	return 0;
#endif
}

static int
cpu_init(struct sd_ctx *c, int device, struct sd_error *err)
{
	struct cpu_state *s = calloc(1, sizeof *s);
	const char *env = getenv("OMP_NUM_THREADS");
	int n = c->threads;
	char blas[128];

	(void)device;
	if (s == NULL)
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	if (n <= 0) {
#ifdef _OPENMP
		/* OMP_NUM_THREADS when set, else one thread per physical core */
		n = env != NULL && *env != '\0' ? omp_get_max_threads() : cpu_physical_cores();
#else
		(void)env;
		n = 1;
#endif
	}
#ifndef _OPENMP
	n = 1;
#endif
	if (n > MAX_THREADS)
		n = MAX_THREADS;
	s->nthreads = n;
#ifdef _OPENMP
	omp_set_num_threads(n);
#endif
	blas_set_threads(1);
	/* SDBATCH_WINOGRAD=0 turns Winograd off, 2, 3 or 4 uses F(2x2),
	 * F(3x3) or F(4x4) for every 3x3 convolution it can do (tests). */
	s->wino = -1;
	if ((env = getenv("SDBATCH_WINOGRAD")) != NULL && *env != '\0')
		s->wino = atoi(env);
	s->ts = calloc((size_t)n, sizeof *s->ts);
	if (s->ts == NULL) {
		free(s);
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	}
	snprintf(s->desc, sizeof s->desc, "cpu (%d thread%s, %s kernels, %s)", n, n == 1 ? "" : "s",
	    cpu_kernels_init(), blas_describe(blas, sizeof blas));
	c->threads = n;
	c->state = s;
	return 0;
}

static void
cpu_fini(struct sd_ctx *c)
{
	struct cpu_state *s = c->state;

	if (s == NULL)
		return;
	for (int i = 0; i < s->nthreads; i++) {
		free(s->ts[i].col);
		free(s->ts[i].att);
		free(s->ts[i].wc);
	}
	free(s->ts);
	free(s->touched.p);
	free(s->touched.bytes);
	free(s->wbuf);
	free(s->vbuf);
	free(s->sbuf);
	free(s->wu);
	free(s->sgx);
	free(s->wv);
	free(s->wm);
	free(s);
	c->state = NULL;
}

static const char *
cpu_describe(const struct sd_ctx *c)
{
	return ((const struct cpu_state *)c->state)->desc;
}

static void *
cpu_mem_alloc(struct sd_ctx *c, size_t bytes)
{
	void *p = NULL;

	(void)c;
	if (posix_memalign(&p, 64, bytes) != 0)
		return NULL;
	return p;
}

static void
cpu_mem_free(struct sd_ctx *c, void *p)
{
	(void)c;
	free(p);
}

static void
cpu_copy(struct sd_ctx *c, float *y, const float *x, size_t n)
{
	(void)c;
	if (y != x)
		memmove(y, x, n * sizeof *y);
}

/* The scratch memory a reserve could not get (0: none), kept until the op
 * ends and cpu_take_error makes it the context's status.  Threads of one
 * op may race to set it: any of their sizes will do. */
static _Atomic size_t scratch_failed;

/* Grow *buf to hold n floats (the old contents are lost).  NULL when out
 * of memory (recorded for cpu_take_error): the caller skips its work. */
static float *
reserve(float **buf, size_t *cap, size_t n)
{
	if (n > *cap) {
		free(*buf);
		*buf = NULL;
		*cap = 0;
		if (posix_memalign((void **)buf, 64, n * sizeof(float)) != 0) {
			*buf = NULL;
			scratch_failed = n * sizeof(float);
			return NULL;
		}
		*cap = n;
	}
	return *buf;
}

static void
cpu_take_error(struct sd_ctx *c, struct sd_error *status)
{
	size_t bytes = scratch_failed;

	(void)c;
	if (bytes == 0)
		return;
	scratch_failed = 0;
	if (status->code == 0)
		sd_fail(status, SD_EINTERNAL, "out of memory (%zu MiB of scratch "
		    "memory for an op)", (bytes + ((size_t)1 << 20) - 1) >> 20);
}

static size_t
touched_slot(const struct touched *t, const void *p)
{
	size_t h = ((uintptr_t)p >> 6) * 0x9e3779b97f4a7c15ull;
	size_t i = h & (t->cap - 1);

	while (t->p[i] != NULL && t->p[i] != p)
		i = (i + 1) & (t->cap - 1);
	return i;
}

/* Remember a weight's bytes (big ones: small vectors do not matter). */
static void
touch(struct cpu_state *s, const struct sd_tensor *w)
{
	struct touched *t = &s->touched;
	size_t bytes = sd_tensor_nbytes(w), i;

	if (bytes < 65536)
		return;
	if (2 * (t->n + 1) > t->cap) {
		struct touched big = { 0 };
		big.cap = t->cap ? 2 * t->cap : 1024;
		big.p = calloc(big.cap, sizeof *big.p);
		big.bytes = calloc(big.cap, sizeof *big.bytes);
		if (big.p == NULL || big.bytes == NULL) {
			free(big.p);
			free(big.bytes);
			return;		/* only an optimisation */
		}
		for (size_t j = 0; j < t->cap; j++)
			if (t->p[j] != NULL) {
				i = touched_slot(&big, t->p[j]);
				big.p[i] = t->p[j];
				big.bytes[i] = t->bytes[j];
				big.n++;
			}
		free(t->p);
		free(t->bytes);
		*t = big;
	}
	i = touched_slot(t, w->data);
	if (t->p[i] == NULL) {
		t->p[i] = w->data;
		t->n++;
	}
	t->bytes[i] = bytes;
}

/* Read-only file mappings of this process, from /proc/self/maps. */
struct mapping {
	uintptr_t lo, hi;
};

static int
file_mappings(struct mapping **out)
{
	FILE *f = fopen("/proc/self/maps", "r");
	struct mapping *m = NULL;
	char line[4096];
	int n = 0, cap = 0;

	*out = NULL;
	if (f == NULL)
		return 0;
	while (fgets(line, sizeof line, f) != NULL) {
		unsigned long lo, hi, inode;
		char perms[8], dev[16];
		unsigned long long off;
		if (sscanf(line, "%lx-%lx %7s %llx %15s %lu", &lo, &hi, perms, &off, dev, &inode) != 6)
			continue;
		if (inode == 0 || perms[1] == 'w')
			continue;
		if (n == cap) {
			struct mapping *nm = realloc(m, (size_t)(cap = cap ? 2 * cap : 64) * sizeof *m);
			if (nm == NULL)
				break;
			m = nm;
		}
		m[n].lo = lo;
		m[n].hi = hi;
		n++;
	}
	fclose(f);
	*out = m;
	return n;
}

size_t
sd_cpu_release_weights(struct sd_ctx *c)
{
	struct cpu_state *s;
	struct mapping *maps;
	size_t page = (size_t)sysconf(_SC_PAGESIZE), released = 0;
	int nmaps;

	if (c == NULL || c->be != &sd_backend_cpu || (s = c->state) == NULL || s->touched.n == 0)
		return 0;
	nmaps = file_mappings(&maps);
	for (size_t i = 0; i < s->touched.cap; i++) {
		uintptr_t lo, hi;
		if (s->touched.p[i] == NULL)
			continue;
		lo = ((uintptr_t)s->touched.p[i] + page - 1) & ~(uintptr_t)(page - 1);
		hi = ((uintptr_t)s->touched.p[i] + s->touched.bytes[i]) & ~(uintptr_t)(page - 1);
		s->touched.p[i] = NULL;
		if (hi <= lo)
			continue;
		/* Only pages of a read-only file mapping: dropping them costs a
		 * page-cache lookup when they are needed again, never data. */
		for (int j = 0; j < nmaps; j++)
			if (lo >= maps[j].lo && hi <= maps[j].hi) {
				if (madvise((void *)lo, hi - lo, MADV_DONTNEED) == 0)
					released += hi - lo;
				break;
			}
	}
	s->touched.n = 0;
	free(maps);
	return released;
}

/* Widen n elements in parallel. */
static void
widen(float *dst, const void *src, enum sd_dtype dtype, size_t n)
{
	const size_t chunk = 32768;

	if (dtype == SD_F16 || dtype == SD_BF16) {
		#pragma omp parallel for schedule(static) if (n > 2 * chunk)
		for (size_t i = 0; i < n; i += chunk) {
			size_t m = n - i < chunk ? n - i : chunk;
			if (dtype == SD_F16)
				k_f16_to_f32(dst + i, (const uint16_t *)src + i, m);
			else
				k_bf16_to_f32(dst + i, (const uint16_t *)src + i, m);
		}
	} else {
		sd_convert_to_f32(dst, src, dtype, n);
	}
}

/* The tensor's data as F32: the mmap'd data itself when F32, else widened
 * into the weight scratch buffer (valid until the next call). */
static const float *
weight_f32(struct sd_ctx *c, const struct sd_tensor *t)
{
	struct cpu_state *s = c->state;
	size_t n;

	if (t == NULL)
		return NULL;
	touch(s, t);
	if (t->dtype == SD_F32)
		return t->data;
	n = (size_t)sd_tensor_numel(t);
	if (reserve(&s->wbuf, &s->wcap, n) == NULL)
		return NULL;	/* out of memory: the op does nothing */
	widen(s->wbuf, t->data, t->dtype, n);
	return s->wbuf;
}

/* Up to three small vectors (bias, norm affine) as F32: slot 0, 1, 2 of
 * the vector scratch, each cap floats. */
static void
vectors_f32(struct sd_ctx *c, size_t cap, const struct sd_tensor *a, const float **pa,
    const struct sd_tensor *b, const float **pb)
{
	struct cpu_state *s = c->state;
	const struct sd_tensor *t[2] = { a, b };
	const float **out[2] = { pa, pb };

	int ok = reserve(&s->vbuf, &s->vcap, 2 * cap) != NULL;

	for (int i = 0; i < 2; i++) {
		if (out[i] == NULL)
			continue;
		if (t[i] == NULL || (!ok && t[i]->dtype != SD_F32)) {
			/* (out of memory: a wrong result that is never used) */
			*out[i] = NULL;
		} else if (t[i]->dtype == SD_F32) {
			*out[i] = t[i]->data;
		} else {
			size_t n = (size_t)sd_tensor_numel(t[i]);
			if (n > cap)
				n = cap;
			widen(s->vbuf + i * cap, t[i]->data, t[i]->dtype, n);
			*out[i] = s->vbuf + i * cap;
		}
	}
}

/* im2col of output rows [oy0, oy0 + rows) of one image: col[K, rows*ow]. */
static void
im2col_rows(float *col, const float *x, int cin, int h, int w, int kh, int kw, int stride,
    int pt, int pl, int ow, int oy0, int rows)
{
	size_t np = (size_t)rows * ow;

	for (int ci = 0; ci < cin; ci++) {
		const float *xc = x + (size_t)ci * h * w;
		for (int ky = 0; ky < kh; ky++) {
			for (int kx = 0; kx < kw; kx++) {
				float *dst = col + ((size_t)(ci * kh + ky) * kw + kx) * np;
				/* the output columns whose input column is inside */
				int lo = 0, hi = ow;	/* ox in [lo, hi) */
				while (lo < ow && lo * stride - pl + kx < 0)
					lo++;
				while (hi > lo && (hi - 1) * stride - pl + kx >= w)
					hi--;
				for (int r = 0; r < rows; r++) {
					int iy = (oy0 + r) * stride - pt + ky;
					float *d = dst + (size_t)r * ow;
					if (iy < 0 || iy >= h) {
						memset(d, 0, (size_t)ow * sizeof *d);
						continue;
					}
					const float *xr = xc + (size_t)iy * w - pl + kx;
					for (int ox = 0; ox < lo; ox++)
						d[ox] = 0.0f;
					if (stride == 1) {
						memcpy(d + lo, xr + lo, (size_t)(hi - lo) * sizeof *d);
					} else {
						for (int ox = lo; ox < hi; ox++)
							d[ox] = xr[(size_t)ox * stride];
					}
					for (int ox = hi; ox < ow; ox++)
						d[ox] = 0.0f;
				}
			}
		}
	}
}

/* Tiles per Winograd block: few enough that the block's transformed
 * inputs and products (alpha^2 (cin + cout) floats a tile) stay in the
 * cache (WINO_CACHE_FLOATS), but at least WINO_MIN_TILES (the BLAS packs
 * the weights once a block) unless that needs more than
 * WINO_BLOCK_FLOATS; whole groups of 16, the blocks evened out. */
static long
wino_block(long tiles, int aa, int cin, int cout)
{
	size_t per = (size_t)aa * (cin + cout);
	long tb = (long)(WINO_CACHE_FLOATS / per), nb;

	if (tb < WINO_MIN_TILES)
		tb = (long)(WINO_BLOCK_FLOATS / per) < WINO_MIN_TILES ?
		    (long)(WINO_BLOCK_FLOATS / per) : WINO_MIN_TILES;
	tb &= ~15L;
	if (tb < 16)
		tb = 16;
	if (tb >= tiles)
		return tiles;
	nb = (tiles + tb - 1) / tb;
	return ((tiles + nb - 1) / nb + 15) & ~15L;
}

/* Whether F(m x m, 3 x 3) can run this convolution: the small-image path
 * of conv_winograd (*small set to 1) transforms the weights by blocks, the
 * others into one buffer of at most WINO_U_MAX floats. */
static int
wino_fits(int n, int cin, int h, int w, int cout, int m, int *small)
{
	int aa = (m + 2) * (m + 2);
	long tiles = (long)n * ((h + m - 1) / m) * ((w + m - 1) / m);
	int sm = tiles <= WINO_SMALL_TILES && wino_block(tiles, aa, cin, cout) >= tiles;

	if (small != NULL)
		*small = sm;
	return sm || (size_t)aa * cin * cout <= WINO_U_MAX;
}

/* The Winograd tile size m (2, 3 or 4) for this convolution, or 0 for
 * im2col: an estimate of each one's cost in GEMM flops, the GEMMs plus
 * the floats written and read again (weights repacked per tile or block,
 * im2col columns or transformed tiles); Winograd only where its
 * transformed weights fit WINO_U_MAX. */
static int
wino_pick(const struct cpu_state *s, int n, int cin, int h, int w, int cout, int k,
    int stride, int pt, int pl, int pb, int pr)
{
	double pairs = (double)cin * cout, px = (double)n * h * w, best, cost;
	int rows, pick = 0;

	if (s->wino == 0 || k != 3 || stride != 1 || pt != 1 || pl != 1 || pb != 1 || pr != 1)
		return 0;
	if (wino_supported(s->wino))
		return wino_fits(n, cin, h, w, cout, s->wino, NULL) ? s->wino : 0;
	/* maps of 16 pixels or fewer: im2col through cpu_smallgemm is faster
	 * (1280 channels at 4x4 on Zen 4: 6.3 ms against Winograd's 10.6 ms;
	 * at 8x8 Winograd still wins, 15.7 ms against 20.5) */
	if (h * w == 16 && sg_available())
		return 0;
	/* im2col: tiles of rows as cpu_conv2d makes them */
	rows = (int)(COL_TILE_FLOATS / ((size_t)9 * cin) / (size_t)w);
	rows = rows < 1 ? 1 : rows > h ? h : rows;
	best = 18 * pairs * px + WINO_TRAFFIC * (9 * pairs * n * ((h + rows - 1) / rows) + 9.0 * cin * px);
	for (int m = 2; m <= WINO_AUTO_MAX_M; m++) {
		int aa = (m + 2) * (m + 2), small;
		long tiles = (long)n * ((h + m - 1) / m) * ((w + m - 1) / m);
		long tb = wino_block(tiles, aa, cin, cout), nb = (tiles + tb - 1) / tb;
		if (!wino_fits(n, cin, h, w, cout, m, &small))
			continue;
		/* the small-image path transforms the weights into the
		 * cache, read once by the GEMMs; the others write them to
		 * memory, read again by each block's GEMMs */
		cost = 2.0 * aa * pairs * tiles + WINO_TRAFFIC * (aa * pairs * (small ? 1 : nb + 1) +
		    (double)aa * (cin + cout) * tiles);
		if (cost < best) {
			best = cost;
			pick = m;
		}
	}
	return pick;
}

/* M (mn x nb, ldm) = U (mn x k, ldu) V (k x nb, ldv), the input channels
 * in chunks of kc summed in that order: cpu_gemm (with AVX-512) or the
 * BLAS accumulates each chunk afresh in its registers, which rounds less
 * than one long sum. */
static void
wino_gemm(int mn, int nb, int k, int kc, const float *U, int ldu, const float *V, int ldv,
    float *M, int ldm)
{
	if (cg_available()) {
		cg_gemm(mn, nb, k, kc, U, (size_t)ldu, V, (size_t)ldv, M, (size_t)ldm);
		return;
	}
	for (int k0 = 0; k0 < k; k0 += kc)
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, mn, nb,
		    k - k0 < kc ? k - k0 : kc, 1.0f, U + k0, ldu, V + (size_t)k0 * ldv, ldv,
		    k0 == 0 ? 0.0f : 1.0f, M, ldm);
}

/* A 3x3, stride 1, pad 1 convolution as Winograd F(m x m, 3 x 3). */
static void
conv_winograd(struct cpu_state *s, float *y, const float *x, int n, int cin, int h, int w,
    const struct sd_tensor *weight, const float *B, int m, double flops)
{
	int cout = (int)weight->shape[0], aa = (m + 2) * (m + 2), nt = s->nthreads;
	long tiles = (long)n * ((h + m - 1) / m) * ((w + m - 1) / m);
	long tb = wino_block(tiles, aa, cin, cout);
	size_t ld = ((size_t)tb + 15) & ~(size_t)15;
	float *U = NULL;
	float *V = reserve(&s->wv, &s->wvcap, (size_t)aa * cin * ld);
	float *M = reserve(&s->wm, &s->wmcap, (size_t)aa * cout * ld);

	if (V == NULL || M == NULL)
		return;		/* out of memory (see cpu_take_error) */
	/* the GEMMs: alpha^2 of them, split by output channels too when
	 * there are not two a thread */
	int msplit = (2 * nt + aa - 1) / aa, mblock;
	const int cchunk = 16, kc = m == 2 ? cin : m == 3 ? WINO_KCHUNK : WINO_KCHUNK4;

	mblock = (((cout + msplit - 1) / msplit) + 15) & ~15;
	msplit = (cout + mblock - 1) / mblock;
	if (tiles >= 2 * nt * tb && nt > 1) {
		/* Many blocks: each thread does whole blocks on its own (no
		 * barriers, which cost much when other processes share the
		 * cores), its transformed tiles in its own buffers. */
		long nblk = (tiles + tb - 1) / tb;
		if ((U = reserve(&s->wu, &s->wucap, (size_t)aa * cout * cin)) == NULL)
			return;
		#pragma omp parallel num_threads(nt)
		{
			#pragma omp for schedule(dynamic, 1) nowait
			for (int co = 0; co < cout; co += 8) {
				struct tscratch *ts = &s->ts[thread_id()];
				float *tmp = weight->dtype == SD_F32 ? NULL :
				    reserve(&ts->col, &ts->colcap, (size_t)9 * cin);
				if (weight->dtype != SD_F32 && tmp == NULL)
					continue;
				wino_weights(U, weight->data, weight->dtype, cout, cin, co,
				    cout - co < 8 ? cout : co + 8, m, tmp);
			}
			#pragma omp barrier
			#pragma omp for schedule(dynamic, 1)
			for (long bi = 0; bi < nblk; bi++) {
				struct tscratch *ts = &s->ts[thread_id()];
				long t0 = bi * tb;
				int nb = (int)(tiles - t0 < tb ? tiles - t0 : tb);
				float *tv = reserve(&ts->col, &ts->colcap, (size_t)aa * (cin + cout) * ld);
				float *tm;
				if (tv == NULL)
					continue;
				tm = tv + (size_t)aa * cin * ld;
				for (int g = 0; g < nb; g += 16)
					wino_input(tv + g, ld, x, cin, h, w, m, t0 + g,
					    nb - g < 16 ? nb - g : 16, 0, cin);
				for (int xi = 0; xi < aa; xi++)
					wino_gemm(cout, nb, cin, kc, U + (size_t)xi * cout * cin, cin,
					    tv + (size_t)xi * cin * ld, (int)ld,
					    tm + (size_t)xi * cout * ld, (int)ld);
				for (int g = 0; g < nb; g += 16)
					wino_output(y, tm + g, ld, B, cout, h, w, m, t0 + g,
					    nb - g < 16 ? nb - g : 16, 0, cout);
			}
		}
		return;
	}
	if (tb >= tiles && tiles <= WINO_SMALL_TILES) {
		/* Few tiles (small images): the inputs transformed,
		 * then blocks of output channels each with its weights
		 * transformed into the thread's cache, never to memory. */
		int nb = (int)tiles, ng = (nb + 15) / 16, nck = (cin + cchunk - 1) / cchunk;
		int ob = (int)(WINO_SMALL_U / ((size_t)aa * cin)), nob;
		size_t esz = sd_dtype_size(weight->dtype);

		ob -= ob % 3;	/* whole register tiles of cpu_gemm (3 rows) */
		if (ob < 3)
			ob = 3;
		if (ob > cout)
			ob = cout;
		nob = (cout + ob - 1) / ob;
		#pragma omp parallel num_threads(nt) if (nt > 1 && flops >= PAR_MIN_FLOPS)
		{
			struct tscratch *ts = &s->ts[thread_id()];
			float *tmp = weight->dtype == SD_F32 ? NULL :
			    reserve(&ts->col, &ts->colcap, (size_t)9 * cin);
			float *Ub = reserve(&ts->wc, &ts->wccap, (size_t)aa * ob * cin);

			#pragma omp for schedule(static)
			for (int task = 0; task < ng * nck; task++) {
				int g = task / nck, c0 = task % nck * cchunk;
				wino_input(V + (size_t)g * 16, ld, x, cin, h, w, m, g * 16,
				    nb - g * 16 < 16 ? nb - g * 16 : 16, c0,
				    cin - c0 < cchunk ? cin : c0 + cchunk);
			}
			#pragma omp for schedule(dynamic, 1)
			for (int bi = 0; bi < nob; bi++) {
				int co0 = bi * ob, cn = cout - co0 < ob ? cout - co0 : ob;
				if (Ub == NULL || (weight->dtype != SD_F32 && tmp == NULL))
					continue;
				wino_weights(Ub, (const char *)weight->data + (size_t)co0 * cin * 9 * esz,
				    weight->dtype, ob, cin, 0, cn, m, tmp);
				for (int xi = 0; xi < aa; xi++)
					wino_gemm(cn, nb, cin, kc, Ub + (size_t)xi * ob * cin, cin,
					    V + (size_t)xi * cin * ld, (int)ld,
					    M + ((size_t)xi * cout + co0) * ld, (int)ld);
				wino_output(y, M, ld, B, cout, h, w, m, 0, nb, co0, co0 + cn);
			}
		}
		return;
	}
	if ((U = reserve(&s->wu, &s->wucap, (size_t)aa * cout * cin)) == NULL)
		return;
	#pragma omp parallel num_threads(nt) if (nt > 1 && flops >= PAR_MIN_FLOPS)
	{
		struct tscratch *ts = &s->ts[thread_id()];
		float *tmp = NULL;
		int nck = (cin + cchunk - 1) / cchunk, nok = (cout + cchunk - 1) / cchunk;

		if (weight->dtype != SD_F32)
			tmp = reserve(&ts->col, &ts->colcap, (size_t)9 * cin);
		#pragma omp for schedule(dynamic, 1)
		for (int co = 0; co < cout; co += 8)
			if (weight->dtype == SD_F32 || tmp != NULL)
				wino_weights(U, weight->data, weight->dtype, cout, cin, co,
				    cout - co < 8 ? cout : co + 8, m, tmp);
		for (long t0 = 0; t0 < tiles; t0 += tb) {
			int nb = (int)(tiles - t0 < tb ? tiles - t0 : tb), ng = (nb + 15) / 16;

			#pragma omp for schedule(static)
			for (int task = 0; task < ng * nck; task++) {
				int g = task / nck, c0 = task % nck * cchunk;
				wino_input(V + (size_t)g * 16, ld, x, cin, h, w, m, t0 + g * 16,
				    nb - g * 16 < 16 ? nb - g * 16 : 16, c0,
				    cin - c0 < cchunk ? cin : c0 + cchunk);
			}
			#pragma omp for schedule(dynamic, 1)
			for (int task = 0; task < aa * msplit; task++) {
				int xi = task / msplit, m0 = task % msplit * mblock;
				int mn = cout - m0 < mblock ? cout - m0 : mblock;
				wino_gemm(mn, nb, cin, kc, U + ((size_t)xi * cout + m0) * cin, cin,
				    V + (size_t)xi * cin * ld, (int)ld,
				    M + ((size_t)xi * cout + m0) * ld, (int)ld);
			}
			#pragma omp for schedule(static)
			for (int task = 0; task < ng * nok; task++) {
				int g = task / nok, c0 = task % nok * cchunk;
				wino_output(y, M + (size_t)g * 16, ld, B, cout, h, w, m, t0 + g * 16,
				    nb - g * 16 < 16 ? nb - g * 16 : 16, c0,
				    cout - c0 < cchunk ? cout : c0 + cchunk);
			}
		}
	}
}

/* Rows [m0, m0 + mn), columns [k0, k0 + kc) of a weight matrix of rows
 * of k elements as F32: the data itself when F32 (*ld = k), else widened
 * into the thread's block buffer (*ld = kc). */
static const float *
weight_block(struct tscratch *ts, const struct sd_tensor *t, size_t k, int m0, int mn,
    size_t k0, int kc, int *ld)
{
	size_t esz = sd_dtype_size(t->dtype);
	float *dst;

	if (t->dtype == SD_F32) {
		*ld = (int)k;
		return (const float *)t->data + (size_t)m0 * k + k0;
	}
	if ((dst = reserve(&ts->wc, &ts->wccap, (size_t)mn * kc)) == NULL)
		return NULL;
	for (int r = 0; r < mn; r++) {
		const void *src = (const char *)t->data + ((size_t)(m0 + r) * k + k0) * esz;
		float *d = dst + (size_t)r * kc;
		if (t->dtype == SD_F16)
			k_f16_to_f32(d, src, (size_t)kc);
		else if (t->dtype == SD_BF16)
			k_bf16_to_f32(d, src, (size_t)kc);
		else
			sd_convert_to_f32(d, src, t->dtype, (size_t)kc);
	}
	*ld = kc;
	return dst;
}

/* Blocks of output channels for a small GEMM: about SMALL_MB each, whole
 * groups of 16, a multiple of the threads in number. */
static int
small_blocks(int rows, int nt, int *mb)
{
	int nb = (rows + SMALL_MB - 1) / SMALL_MB;

	nb = (nb + nt - 1) / nt * nt;
	*mb = (((rows + nb - 1) / nb) + 15) & ~15;
	return (rows + *mb - 1) / *mb;
}

/* A convolution with few output pixels: the im2col of all images at once
 * (none for 1x1), then blocks of output channels, each reading its
 * weights once in cache-sized blocks for every image. */
static void
conv_small(struct cpu_state *s, float *y, const float *x, int n, int cin, int h, int w,
    const struct sd_tensor *weight, const float *B, int stride, int pt, int pl,
    int oh, int ow, int direct, double flops)
{
	int cout = (int)weight->shape[0], kh = (int)weight->shape[2], kw = (int)weight->shape[3];
	size_t ohw = (size_t)oh * ow, K = (size_t)cin * kh * kw;
	int nt = s->nthreads, mb, nblk = small_blocks(cout, nt, &mb), ncc = (cin + 63) / 64;
	float *col = direct ? NULL : reserve(&s->sbuf, &s->scap, (size_t)n * K * ohw);
	/* cpu_smallgemm takes whole panels of 16, 32 or 64 pixels */
	int sg = ohw % 16 == 0 && ohw <= SG_MAX_M && sg_available();

	if (!direct && col == NULL)
		return;		/* out of memory (see cpu_take_error) */

	touch(s, weight);
	#pragma omp parallel num_threads(nt) if (nt > 1 && flops >= PAR_MIN_FLOPS)
	{
		struct tscratch *ts = &s->ts[thread_id()];

		if (!direct) {
			#pragma omp for schedule(static)
			for (int t = 0; t < n * ncc; t++) {
				int b = t / ncc, c0 = t % ncc * 64, cn = cin - c0 < 64 ? cin - c0 : 64;
				im2col_rows(col + (size_t)b * K * ohw + (size_t)c0 * kh * kw * ohw,
				    x + ((size_t)b * cin + c0) * h * w, cn, h, w, kh, kw, stride,
				    pt, pl, ow, 0, oh);
			}
		}
		if (sg) {
			/* each image's im2col rows (or x) are a panel of
			 * pixels as cpu_smallgemm takes them */
			int nnb = (cout + 63) / 64;
			for (int kb = 0; kb < (int)K; kb += SG_KBLOCK) {
				int ke = (int)K - kb < SG_KBLOCK ? (int)K : kb + SG_KBLOCK;
				#pragma omp for schedule(dynamic, 1)
				for (int nb = 0; nb < nnb; nb++) {
					int n1 = cout < (nb + 1) * 64 ? cout : (nb + 1) * 64;
					for (int b = 0; b < n; b++) {
						const float *xb = direct ? x + (size_t)b * cin * ohw :
						    col + (size_t)b * K * ohw;
						for (size_t p0 = 0; p0 < ohw;) {
							size_t left = ohw - p0;
							int pr = left >= 64 ? 64 : left >= 32 ? 32 : 16;
							sg_kernel(y + (size_t)b * cout * ohw + p0, 1,
							    ohw, xb + p0, ohw, pr, (int)K, kb, ke,
							    weight->data, weight->dtype, nb * 64, n1,
							    B);
							p0 += (size_t)pr;
						}
					}
				}
			}
		} else {
		#pragma omp for schedule(static)
		for (int bi = 0; bi < nblk; bi++) {
			int m0 = bi * mb, mn = cout - m0 < mb ? cout - m0 : mb, ldw;
			for (size_t k0 = 0; k0 < K; k0 += SMALL_KC) {
				int kc = (int)(K - k0 < SMALL_KC ? K - k0 : SMALL_KC);
				const float *Wc = weight_block(ts, weight, K, m0, mn, k0, kc, &ldw);
				if (Wc == NULL)
					break;
				for (int b = 0; b < n; b++) {
					const float *Bm = direct ? x + (size_t)b * cin * ohw :
					    col + (size_t)b * K * ohw;
					cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, mn,
					    (int)ohw, kc, 1.0f, Wc, ldw, Bm + k0 * ohw, (int)ohw,
					    k0 == 0 ? 0.0f : 1.0f,
					    y + ((size_t)b * cout + m0) * ohw, (int)ohw);
				}
			}
			if (B != NULL)
				for (int b = 0; b < n; b++)
					for (int r = 0; r < mn; r++) {
						float bv = B[m0 + r];
						float *yr = y + ((size_t)b * cout + m0 + r) * ohw;
						for (size_t i = 0; i < ohw; i++)
							yr[i] += bv;
					}
		}
		}
	}
}

static void
cpu_conv2d(struct sd_ctx *c, float *y, const float *x, int n, int cin, int h, int w,
    const struct sd_tensor *weight, const struct sd_tensor *bias, int stride,
    int pt, int pl, int pb, int pr)
{
	struct cpu_state *s = c->state;
	int cout = (int)weight->shape[0], kh = (int)weight->shape[2], kw = (int)weight->shape[3];
	int oh = (h + pt + pb - kh) / stride + 1, ow = (w + pl + pr - kw) / stride + 1;
	size_t ohw = (size_t)oh * ow, K = (size_t)cin * kh * kw;
	int direct = kh == 1 && kw == 1 && stride == 1 && pt == 0 && pl == 0 && pb == 0 && pr == 0;
	int rows, ntile, tasks, msplit, mblock;
	double flops = 2.0 * n * cout * (double)K * ohw;
	const float *W, *B = NULL;
	int wm = kh == kw ? wino_pick(s, n, cin, h, w, cout, kh, stride, pt, pl, pb, pr) : 0;

	vectors_f32(c, (size_t)cout, bias, &B, NULL, NULL);
	if (wm != 0) {
		touch(s, weight);
		conv_winograd(s, y, x, n, cin, h, w, weight, B, wm, flops);
		return;
	}
	if ((size_t)n * ohw <= (size_t)SMALL_N && (direct || (size_t)n * K * ohw <= COL_TILE_FLOATS)) {
		conv_small(s, y, x, n, cin, h, w, weight, B, stride, pt, pl, oh, ow, direct, flops);
		return;
	}
	if ((W = weight_f32(c, weight)) == NULL)
		return;		/* out of memory (see cpu_take_error) */
	/* Tiles of whole output rows, each at most COL_TILE_FLOATS of im2col
	 * (and about 1024 pixels for 1x1: enough for the GEMM). */
	if (direct)
		rows = 1024 / ow;
	else
		rows = (int)(COL_TILE_FLOATS / K / (size_t)ow);
	if (rows < 1)
		rows = 1;
	if (rows > oh)
		rows = oh;
	ntile = (oh + rows - 1) / rows;
	/* Even out the tiles. */
	rows = (oh + ntile - 1) / ntile;
	tasks = n * ntile;
	/* Few tiles (small images): split the output channels too. */
	msplit = 1;
	if (tasks < s->nthreads && flops >= PAR_MIN_FLOPS)
		msplit = (s->nthreads + tasks - 1) / tasks;
	mblock = (cout + msplit - 1) / msplit;
	mblock = (mblock + 15) & ~15;
	msplit = (cout + mblock - 1) / mblock;

	#pragma omp parallel for schedule(dynamic, 1) num_threads(s->nthreads) \
	    if (tasks * msplit > 1 && flops >= PAR_MIN_FLOPS)
	for (int t = 0; t < tasks * msplit; t++) {
		struct tscratch *ts = &s->ts[thread_id()];
		int mt = t % msplit, tile = t / msplit % ntile, b = t / msplit / ntile;
		int oy0 = tile * rows, nr = oh - oy0 < rows ? oh - oy0 : rows;
		int m0 = mt * mblock, mn = cout - m0 < mblock ? cout - m0 : mblock;
		size_t np = (size_t)nr * ow, p0 = (size_t)oy0 * ow;
		const float *xb = x + (size_t)b * cin * h * w;
		float *yb = y + (size_t)b * cout * ohw + (size_t)m0 * ohw + p0;
		const float *Bm;
		int ldb;

		if (direct) {
			Bm = xb + p0;
			ldb = (int)ohw;
		} else {
			float *col = reserve(&ts->col, &ts->colcap, K * np);
			if (col == NULL)
				continue;
			im2col_rows(col, xb, cin, h, w, kh, kw, stride, pt, pl, ow, oy0, nr);
			Bm = col;
			ldb = (int)np;
		}
		if (B != NULL)	/* the bias first (see cpu_linear) */
			for (int r = 0; r < mn; r++) {
				float bv = B[m0 + r], *yr = yb + (size_t)r * ohw;
				for (size_t i = 0; i < np; i++)
					yr[i] = bv;
			}
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, mn, (int)np, (int)K,
		    1.0f, W + (size_t)m0 * K, (int)K, Bm, ldb, B != NULL ? 1.0f : 0.0f, yb, (int)ohw);
	}
}

static void
cpu_linear(struct sd_ctx *c, float *y, const float *x, int m, int k,
    const struct sd_tensor *weight, const struct sd_tensor *bias)
{
	struct cpu_state *s = c->state;
	int nout = (int)weight->shape[0], nt = s->nthreads, byrows, parts, blk;
	const float *W, *B = NULL;

	double flops = 2.0 * m * (double)k * nout;

	vectors_f32(c, (size_t)nout, bias, &B, NULL, NULL);
	if (flops < PAR_MIN_FLOPS)
		nt = 1;
	if (m >= SG_MIN_M && m <= SG_MAX_M && sg_available()) {
		/* few rows: panels of x transposed once, the weights read as
		 * stored (no widening pass, no packing) once per panel */
		touch(s, weight);
		for (int i0 = 0; i0 < m; i0 += 64) {
			int mr = m - i0 < 64 ? m - i0 : 64;
			const float *xi = x + (size_t)i0 * k;
			float *xt = reserve(&s->sgx, &s->sgxcap,
			    (size_t)k * sg_panel_rows(mr));
			int nkb = (k + 255) / 256, nnb = (nout + 63) / 64;

			if (xt == NULL)
				return;	/* out of memory (see cpu_take_error) */
			#pragma omp parallel num_threads(nt) if (nt > 1)
			{
				#pragma omp for schedule(static)
				for (int kb = 0; kb < nkb; kb++)
					sg_pack(xt, xi, k, mr, kb * 256,
					    k < (kb + 1) * 256 ? k : (kb + 1) * 256);
				for (int kb = 0; kb < k; kb += SG_KBLOCK) {
					int ke = k - kb < SG_KBLOCK ? k : kb + SG_KBLOCK;
					#pragma omp for schedule(dynamic, 1)
					for (int nb = 0; nb < nnb; nb++)
						sg_kernel(y + (size_t)i0 * nout, (size_t)nout, 1,
						    xt, (size_t)sg_panel_rows(mr), mr, k, kb, ke,
						    weight->data, weight->dtype, nb * 64,
						    nout < (nb + 1) * 64 ? nout : (nb + 1) * 64, B);
				}
			}
		}
		return;
	}
	if (m <= SMALL_N && (m <= SG_MAX_M || nout > 4 * m)) {
		/* few rows: blocks of output features, the weights read once
		 * (past cpu_smallgemm's rows only for wide layers: 512 rows
		 * of 640 -> 640 took 2.19 ms this way, 1.98 ms split by rows;
		 * 1280 -> 10240 66.9 ms against 68.7 ms) */
		int nblk = small_blocks(nout, nt, &blk);
		touch(s, weight);
		#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
		for (int bi = 0; bi < nblk; bi++) {
			struct tscratch *ts = &s->ts[thread_id()];
			int n0 = bi * blk, nn = nout - n0 < blk ? nout - n0 : blk, ldw;
			for (int k0 = 0; k0 < k; k0 += SMALL_KC) {
				int kc = k - k0 < SMALL_KC ? k - k0 : SMALL_KC;
				const float *Wc = weight_block(ts, weight, (size_t)k, n0, nn,
				    (size_t)k0, kc, &ldw);
				if (Wc == NULL)
					break;
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, nn, kc,
				    1.0f, x + k0, k, Wc, ldw, k0 == 0 ? 0.0f : 1.0f, y + n0, nout);
			}
			if (B != NULL)
				for (int i = 0; i < m; i++) {
					float *row = y + (size_t)i * nout + n0;
					for (int j = 0; j < nn; j++)
						row[j] += B[n0 + j];
				}
		}
		return;
	}
	if ((W = weight_f32(c, weight)) == NULL)
		return;		/* out of memory (see cpu_take_error) */
	/* Split the rows when there are enough, else the output features. */
	byrows = m >= 32 * nt;
	if (byrows) {
		/* blocks of up to 1024 rows, at least one a thread (on Zen 4
		 * with OpenBLAS's Haswell kernel 3-5% faster than 256, two
		 * a thread: each sgemm packs the weights once for more rows) */
		blk = 1024;
		if ((m + blk - 1) / blk < nt)
			blk = ((m + nt - 1) / nt + 7) & ~7;
		parts = (m + blk - 1) / blk;
	} else {
		parts = nt;
		blk = ((nout + parts - 1) / parts + 15) & ~15;
		parts = (nout + blk - 1) / blk;
	}
	#pragma omp parallel for schedule(dynamic, 1) if (parts > 1 && nt > 1)
	for (int p = 0; p < parts; p++) {
		int r0 = 0, rn = m, n0 = 0, nn = nout;
		if (byrows) {
			r0 = p * blk;
			rn = m - r0 < blk ? m - r0 : blk;
		} else {
			n0 = p * blk;
			nn = nout - n0 < blk ? nout - n0 : blk;
		}
		float *yp = y + (size_t)r0 * nout + n0;
		/* the bias first, then y += x W^T: sgemm with beta 0 would
		 * clear y in a pass of its own, and a bias added after it
		 * would read and write y once more */
		if (B != NULL)
			for (int i = 0; i < rn; i++)
				memcpy(yp + (size_t)i * nout, B + n0, (size_t)nn * sizeof *yp);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rn, nn, k,
		    1.0f, x + (size_t)r0 * k, k, W + (size_t)n0 * k, k, B != NULL ? 1.0f : 0.0f,
		    yp, nout);
	}
}

static void
cpu_group_norm(struct sd_ctx *c, float *y, const float *x, int n, int ch, int hw,
    int groups, float eps, const struct sd_tensor *gamma, const struct sd_tensor *beta, int act)
{
	const float *G, *Bt;
	int cg = ch / groups;

	vectors_f32(c, (size_t)ch, gamma, &G, beta, &Bt);
	#pragma omp parallel for schedule(dynamic) if ((size_t)n * ch * hw >= PAR_MIN_ELEMS)
	for (int ng = 0; ng < n * groups; ng++) {
		int b = ng / groups, g = ng % groups;
		size_t off = ((size_t)b * ch + (size_t)g * cg) * hw, cnt = (size_t)cg * hw;
		const float *xs = x + off;
		float *ys = y + off;
		double mean, var;

		mean = k_sum(xs, cnt) / (double)cnt;
		var = k_sqdev(xs, cnt, mean) / (double)cnt;
		float inv = (float)(1.0 / sqrt(var + eps)), m = (float)mean;
		for (int ci = 0; ci < cg; ci++) {
			int chn = g * cg + ci;
			float a = G ? G[chn] * inv : inv, bb = Bt ? Bt[chn] : 0.0f;
			k_affine(ys + (size_t)ci * hw, xs + (size_t)ci * hw, (size_t)hw, m, a, bb, act);
		}
	}
}

static void
cpu_layer_norm(struct sd_ctx *c, float *y, const float *x, int rows, int dim,
    float eps, const struct sd_tensor *gamma, const struct sd_tensor *beta)
{
	const float *G, *Bt;

	vectors_f32(c, (size_t)dim, gamma, &G, beta, &Bt);
	#pragma omp parallel for schedule(static) if ((size_t)rows * dim >= PAR_MIN_ELEMS)
	for (int r = 0; r < rows; r++) {
		const float *xr = x + (size_t)r * dim;
		float *yr = y + (size_t)r * dim;
		double mean = k_sum(xr, (size_t)dim) / dim;
		double sq = k_sqdev(xr, (size_t)dim, mean);
		float inv = (float)(1.0 / sqrt(sq / dim + eps)), m = (float)mean;
		if (G != NULL && Bt != NULL) {
			for (int i = 0; i < dim; i++)
				yr[i] = (xr[i] - m) * inv * G[i] + Bt[i];
		} else {
			for (int i = 0; i < dim; i++)
				yr[i] = (xr[i] - m) * inv * (G ? G[i] : 1.0f) + (Bt ? Bt[i] : 0.0f);
		}
	}
}

/* One attention task: queries [q0, q0 + nq) of one (batch, head), all
 * keys in blocks with an online softmax. */
static void
attention_block(struct tscratch *ts, float *out, int ldo, const float *qh, int ldq,
    const float *kh, int ldk, const float *vh, int ldv, int q0, int nq, int lk, int dh,
    float scale, int causal, const float *bias)
{
	int kb = lk <= 2 * ATTN_KBLOCK ? lk : ATTN_KBLOCK;
	size_t need = (size_t)nq * kb + (size_t)nq * dh + 2 * (size_t)nq;
	float *S = reserve(&ts->att, &ts->attcap, need);
	float *O, *mx, *sum;
	int kend = causal ? (q0 + nq < lk ? q0 + nq : lk) : lk;

	if (S == NULL)
		return;		/* out of memory (see cpu_take_error) */
	O = S + (size_t)nq * kb;
	mx = O + (size_t)nq * dh;
	sum = mx + nq;

	for (int i = 0; i < nq; i++) {
		mx[i] = -INFINITY;
		sum[i] = 0.0f;
	}
	for (int k0 = 0; k0 < kend; k0 += kb) {
		int nk = kend - k0 < kb ? kend - k0 : kb;
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, dh,
		    scale, qh + (size_t)q0 * ldq, ldq, kh + (size_t)k0 * ldk, ldk, 0.0f, S, nk);
		for (int i = 0; i < nq; i++) {
			float *row = S + (size_t)i * nk, *o = O + (size_t)i * dh;
			if (bias != NULL) {
				const float *br = bias + (size_t)(q0 + i) * lk + k0;
				for (int j = 0; j < nk; j++)
					row[j] += br[j];
			}
			int valid = nk;
			if (causal && q0 + i + 1 - k0 < valid)
				valid = q0 + i + 1 - k0;
			if (valid <= 0) {
				memset(row, 0, (size_t)nk * sizeof *row);
				continue;
			}
			float bm = k_max(row, (size_t)valid), mnew = bm > mx[i] ? bm : mx[i];
			float rs = k_exp_sum(row, (size_t)valid, mnew);
			if (valid < nk)
				memset(row + valid, 0, (size_t)(nk - valid) * sizeof *row);
			if (k0 == 0) {
				sum[i] = rs;
			} else {
				float corr = expf(mx[i] - mnew);
				sum[i] = sum[i] * corr + rs;
				if (corr != 1.0f)
					k_scal(o, (size_t)dh, corr);
			}
			mx[i] = mnew;
		}
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, dh, nk,
		    1.0f, S, nk, vh + (size_t)k0 * ldv, ldv, k0 == 0 ? 0.0f : 1.0f, O, dh);
	}
	for (int i = 0; i < nq; i++) {
		const float *o = O + (size_t)i * dh;
		float *d = out + (size_t)(q0 + i) * ldo, inv = 1.0f / sum[i];
		for (int j = 0; j < dh; j++)
			d[j] = o[j] * inv;
	}
}

static void
cpu_attention(struct sd_ctx *c, float *out, const float *q, int ldq,
    const float *k, int ldk, const float *v, int ldv,
    int b, int lq, int lk, int heads, int dh, float scale, int causal, const float *bias)
{
	struct cpu_state *s = c->state;
	/* a bias (T5's, a few hundred tokens) takes the BLAS path, whose
	 * blocks of scores are row-major like the bias */
	int fused = lk > 0 && bias == NULL && cpu_attention_fused_ok(dh);
	int width = heads * dh, qb, nqb, tasks;
	double flops = 4.0 * b * heads * (double)lq * lk * dh;
	size_t need = fused ? cpu_attention_scratch(lk, dh) : 0;
	const int unit = CPU_ATTENTION_QUERIES;

	/* enough tasks for every thread; the fused kernel packs the keys and
	 * values of its head per task, so it splits the heads no more than
	 * that needs, in whole blocks of queries */
	if (fused) {
		qb = (lq + unit - 1) / unit * unit;
		while (qb > unit && b * heads * ((lq + qb - 1) / qb) < 4 * s->nthreads)
			qb = (qb / 2 + unit - 1) / unit * unit;
	} else {
		qb = ATTN_QBLOCK;
		while (qb > 16 && b * heads * ((lq + qb - 1) / qb) < 4 * s->nthreads)
			qb /= 2;
	}
	nqb = (lq + qb - 1) / qb;
	tasks = b * heads * nqb;
	#pragma omp parallel for schedule(dynamic, 1) num_threads(s->nthreads) \
	    if (tasks > 1 && flops >= PAR_MIN_FLOPS)
	for (int t = 0; t < tasks; t++) {
		int qi = t % nqb, hd = t / nqb % heads, bi = t / nqb / heads;
		int q0 = qi * qb, nq = lq - q0 < qb ? lq - q0 : qb;
		struct tscratch *ts = &s->ts[thread_id()];
		float *ob = out + (size_t)bi * lq * width + (size_t)hd * dh;
		const float *qh = q + (size_t)bi * lq * ldq + (size_t)hd * dh;
		const float *kh = k + (size_t)bi * lk * ldk + (size_t)hd * dh;
		const float *vh = v + (size_t)bi * lk * ldv + (size_t)hd * dh;

		/* heads that run at once start on rows far apart */
		float *att = fused ? reserve(&ts->att, &ts->attcap, need) : NULL;

		if (fused && att == NULL)
			continue;	/* out of memory (see cpu_take_error) */
		if (fused)
			cpu_attention_fused(att, ob, width,
			    qh, ldq, kh, ldk, vh, ldv, q0, nq, lk, dh, scale, causal,
			    (int)((long)hd * ((nq + unit - 1) / unit) / heads));
		else
			attention_block(ts, ob, width, qh, ldq, kh, ldk, vh, ldv,
			    q0, nq, lk, dh, scale, causal,
			    bias != NULL ? bias + (size_t)hd * lq * lk : NULL);
	}
}

static void
cpu_rms_norm(struct sd_ctx *c, float *y, const float *x, int rows, int dim,
    float eps, const struct sd_tensor *weight)
{
	const float *W;

	vectors_f32(c, (size_t)dim, weight, &W, NULL, NULL);
	#pragma omp parallel for schedule(static) if ((size_t)rows * dim >= PAR_MIN_ELEMS)
	for (int r = 0; r < rows; r++) {
		const float *xr = x + (size_t)r * dim;
		float *yr = y + (size_t)r * dim;
		float inv = (float)(1.0 / sqrt(k_sqdev(xr, (size_t)dim, 0.0) / dim + eps));
		if (W != NULL) {
			for (int i = 0; i < dim; i++)
				yr[i] = W[i] * (xr[i] * inv);
		} else {
			for (int i = 0; i < dim; i++)
				yr[i] = xr[i] * inv;
		}
	}
}

static void
cpu_layer_norm_modulate(struct sd_ctx *c, float *y, const float *x, int b, int tokens,
    int dim, float eps, const float *shift, const float *scale, int ldm)
{
	int rows = b * tokens;

	(void)c;
	#pragma omp parallel for schedule(static) if ((size_t)rows * dim >= PAR_MIN_ELEMS)
	for (int r = 0; r < rows; r++) {
		const float *xr = x + (size_t)r * dim;
		const float *sh = shift + (size_t)(r / tokens) * ldm;
		const float *sc = scale + (size_t)(r / tokens) * ldm;
		float *yr = y + (size_t)r * dim;
		double mean = k_sum(xr, (size_t)dim) / dim;
		double sq = k_sqdev(xr, (size_t)dim, mean);
		float inv = (float)(1.0 / sqrt(sq / dim + eps)), m = (float)mean;
		for (int i = 0; i < dim; i++)
			yr[i] = (xr[i] - m) * inv * (1.0f + sc[i]) + sh[i];
	}
}

static void
cpu_gated_add(struct sd_ctx *c, float *x, const float *gate, int ldg, const float *y,
    int b, int tokens, int dim)
{
	int rows = b * tokens;

	(void)c;
	#pragma omp parallel for schedule(static) if ((size_t)rows * dim >= PAR_MIN_ELEMS)
	for (int r = 0; r < rows; r++) {
		const float *g = gate + (size_t)(r / tokens) * ldg, *yr = y + (size_t)r * dim;
		float *xr = x + (size_t)r * dim;
		for (int i = 0; i < dim; i++)
			xr[i] += g[i] * yr[i];
	}
}

static void
cpu_unpatchify(struct sd_ctx *c, float *y, const float *x, int b, int ch, int h, int w, int p)
{
	int gw = w / p, feat = p * p * ch;

	(void)c;
	#pragma omp parallel for schedule(static) collapse(2) \
	    if ((size_t)b * ch * h * w >= PAR_MIN_ELEMS)
	for (int n = 0; n < b; n++)
		for (int ci = 0; ci < ch; ci++)
			for (int yy = 0; yy < h; yy++) {
				float *row = y + (((size_t)n * ch + ci) * h + yy) * w;
				const float *tok = x + ((size_t)n * (h / p) * gw + (size_t)(yy / p) * gw) * feat +
				    (size_t)(yy % p) * p * ch + ci;
				for (int xx = 0; xx < w; xx++)
					row[xx] = tok[(size_t)(xx / p) * feat + (size_t)(xx % p) * ch];
			}
}

static void
cpu_mul(struct sd_ctx *c, float *y, const float *a, const float *b, size_t n)
{
	(void)c;
	#pragma omp parallel for schedule(static) if (n >= PAR_MIN_ELEMS)
	for (size_t i = 0; i < n; i++)
		y[i] = a[i] * b[i];
}

static void
cpu_unary(struct sd_ctx *c, float *x, size_t n, int kind)
{
	const size_t chunk = 16384;

	(void)c;
	#pragma omp parallel for schedule(static) if (n > 2 * chunk)
	for (size_t i = 0; i < n; i += chunk) {
		size_t m = n - i < chunk ? n - i : chunk;
		switch (kind) {
		case SD_UNARY_SILU:
			k_silu(x + i, m);
			break;
		case SD_UNARY_GELU:
			k_gelu(x + i, m);
			break;
		case SD_UNARY_QUICK_GELU:
			k_quick_gelu(x + i, m);
			break;
		case SD_UNARY_GELU_TANH:
			k_gelu_tanh(x + i, m);
			break;
		}
	}
}

static void
cpu_geglu(struct sd_ctx *c, float *y, const float *p, int rows, int d)
{
	(void)c;
	#pragma omp parallel for schedule(static) if ((size_t)rows * d >= PAR_MIN_ELEMS)
	for (int r = 0; r < rows; r++) {
		const float *a = p + (size_t)r * 2 * d;
		k_geglu(y + (size_t)r * d, a, a + d, (size_t)d);
	}
}

static void
cpu_add(struct sd_ctx *c, float *y, const float *a, const float *b, size_t n)
{
	(void)c;
	#pragma omp parallel for schedule(static) if (n >= PAR_MIN_ELEMS)
	for (size_t i = 0; i < n; i++)
		y[i] = a[i] + b[i];
}

static void
cpu_lerp(struct sd_ctx *c, float *y, const float *a, const float *b, float s, size_t n)
{
	(void)c;
	#pragma omp parallel for schedule(static) if (n >= PAR_MIN_ELEMS)
	for (size_t i = 0; i < n; i++)
		y[i] = a[i] + s * (b[i] - a[i]);
}

static void
cpu_scale(struct sd_ctx *c, float *x, float s, size_t n)
{
	(void)c;
	#pragma omp parallel for schedule(static) if (n >= PAR_MIN_ELEMS)
	for (size_t i = 0; i < n; i++)
		x[i] *= s;
}

static void
cpu_add_channel(struct sd_ctx *c, float *x, const float *v, int n, int ch, int hw)
{
	(void)c;
	#pragma omp parallel for schedule(static) if ((size_t)n * ch * hw >= PAR_MIN_ELEMS)
	for (int r = 0; r < n * ch; r++) {
		float add = v[r];
		float *p = x + (size_t)r * hw;
		for (int i = 0; i < hw; i++)
			p[i] += add;
	}
}

static void
cpu_upsample2x(struct sd_ctx *c, float *y, const float *x, int n, int ch, int h, int w)
{
	(void)c;
	#pragma omp parallel for schedule(static) if ((size_t)n * ch * h * w >= PAR_MIN_ELEMS)
	for (int r = 0; r < n * ch; r++) {
		const float *xs = x + (size_t)r * h * w;
		float *ys = y + (size_t)r * 4 * h * w;
		for (int i = 0; i < 2 * h; i++) {
			const float *xr = xs + (size_t)(i / 2) * w;
			float *yr = ys + (size_t)i * 2 * w;
			for (int j = 0; j < 2 * w; j++)
				yr[j] = xr[j / 2];
		}
	}
}

static void
cpu_concat(struct sd_ctx *c, float *y, const float *a, int ca, const float *b, int cb, int n, int hw)
{
	(void)c;
	for (int i = 0; i < n; i++) {
		memcpy(y + (size_t)i * (ca + cb) * hw, a + (size_t)i * ca * hw, (size_t)ca * hw * sizeof *y);
		memcpy(y + ((size_t)i * (ca + cb) + ca) * hw, b + (size_t)i * cb * hw,
		    (size_t)cb * hw * sizeof *y);
	}
}

static void
cpu_transpose(struct sd_ctx *c, float *y, const float *x, int n, int rows, int cols)
{
	(void)c;
	for (int b = 0; b < n; b++) {
		const float *xs = x + (size_t)b * rows * cols;
		float *ys = y + (size_t)b * rows * cols;
		#pragma omp parallel for schedule(static) if ((size_t)rows * cols >= PAR_MIN_ELEMS)
		for (int j0 = 0; j0 < cols; j0 += 32)
			for (int i0 = 0; i0 < rows; i0 += 32)
				for (int i = i0; i < rows && i < i0 + 32; i++)
					for (int j = j0; j < cols && j < j0 + 32; j++)
						ys[(size_t)j * rows + i] = xs[(size_t)i * cols + j];
	}
}

static void
cpu_embed(struct sd_ctx *c, float *y, const int *ids, int count,
    const struct sd_tensor *table, const struct sd_tensor *pos, int npos)
{
	int dim = (int)table->shape[1];
	size_t esz = sd_dtype_size(table->dtype), psz = pos ? sd_dtype_size(pos->dtype) : 0;
	float *tmp = malloc((size_t)dim * sizeof *tmp);

	touch(c->state, table);
	if (pos != NULL)
		touch(c->state, pos);
	for (int i = 0; i < count; i++) {
		int id = ids[i];
		if (id < 0 || id >= table->shape[0])
			id = 0;	/* callers validate ids; never read out of bounds */
		sd_convert_to_f32(y + (size_t)i * dim, (const char *)table->data + (size_t)id * dim * esz,
		    table->dtype, (size_t)dim);
		if (pos != NULL) {
			sd_convert_to_f32(tmp, (const char *)pos->data + (size_t)(i % npos) * dim * psz,
			    pos->dtype, (size_t)dim);
			for (int j = 0; j < dim; j++)
				y[(size_t)i * dim + j] += tmp[j];
		}
	}
	free(tmp);
}

static void
cpu_upload(struct sd_ctx *c, float *dst, const float *host, size_t n)
{
	cpu_copy(c, dst, host, n);
}

const struct sd_backend sd_backend_cpu = {
	.name = "cpu",
	.init = cpu_init,
	.fini = cpu_fini,
	.describe = cpu_describe,
	.take_error = cpu_take_error,
	.mem_alloc = cpu_mem_alloc,
	.mem_free = cpu_mem_free,
	.upload = cpu_upload,
	.download = cpu_upload,
	.conv2d = cpu_conv2d,
	.linear = cpu_linear,
	.group_norm = cpu_group_norm,
	.layer_norm = cpu_layer_norm,
	.attention = cpu_attention,
	.rms_norm = cpu_rms_norm,
	.layer_norm_modulate = cpu_layer_norm_modulate,
	.gated_add = cpu_gated_add,
	.unpatchify = cpu_unpatchify,
	.mul = cpu_mul,
	.unary = cpu_unary,
	.geglu = cpu_geglu,
	.add = cpu_add,
	.lerp = cpu_lerp,
	.scale = cpu_scale,
	.add_channel = cpu_add_channel,
	.upsample2x = cpu_upsample2x,
	.concat = cpu_concat,
	.transpose = cpu_transpose,
	.embed = cpu_embed,
	.copy = cpu_copy,
};
