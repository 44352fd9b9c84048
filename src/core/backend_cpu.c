/* backend_cpu.c: the CPU backend: CBLAS for the matrix products, OpenMP for
 * everything else.  F16/BF16 weights are widened into a reused scratch
 * buffer per call. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/backend.h"

/* im2col tiles hold at most this many floats (32 MiB). */
#define COL_TILE_FLOATS ((size_t)8 << 20)
/* Query rows per attention block. */
#define ATTN_BLOCK 256

struct cpu_state {
	float *wbuf;		/* widened weights */
	size_t wcap;
	float *col;		/* im2col tile */
	size_t colcap;
	float *scores;		/* attention block scores */
	size_t scorecap;
	char desc[128];
};

static int
cpu_init(struct sd_ctx *c, int device, struct sd_error *err)
{
	struct cpu_state *s = calloc(1, sizeof *s);

	(void)device;
	if (s == NULL)
		return sd_fail(err, SD_EINTERNAL, "out of memory");
#ifdef _OPENMP
	if (c->threads > 0)
		omp_set_num_threads(c->threads);
#endif
#ifdef HAVE_OPENBLAS_SET_NUM_THREADS
	if (c->threads > 0)
		openblas_set_num_threads(c->threads);
#endif
	snprintf(s->desc, sizeof s->desc, "cpu");
	c->state = s;
	return 0;
}

static void
cpu_fini(struct sd_ctx *c)
{
	struct cpu_state *s = c->state;

	if (s == NULL)
		return;
	free(s->wbuf);
	free(s->col);
	free(s->scores);
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

/* Grow *buf to hold n floats. */
static float *
reserve(float **buf, size_t *cap, size_t n)
{
	if (n > *cap) {
		free(*buf);
		*buf = NULL;
		if (posix_memalign((void **)buf, 64, n * sizeof(float)) != 0) {
			fprintf(stderr, "sdbatch: out of memory (%zu MiB scratch)\n", (n * 4) >> 20);
			exit(SD_EINTERNAL);
		}
		*cap = n;
	}
	return *buf;
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
	if (t->dtype == SD_F32)
		return t->data;
	n = (size_t)sd_tensor_numel(t);
	reserve(&s->wbuf, &s->wcap, n);
	sd_convert_to_f32(s->wbuf, t->data, t->dtype, n);
	return s->wbuf;
}

/* A small vector (bias, norm affine) as F32, into a caller's buffer. */
static const float *
vector_f32(const struct sd_tensor *t, float *tmp, size_t cap)
{
	size_t n;

	if (t == NULL)
		return NULL;
	if (t->dtype == SD_F32)
		return t->data;
	n = (size_t)sd_tensor_numel(t);
	if (n > cap)
		n = cap;
	sd_convert_to_f32(tmp, t->data, t->dtype, n);
	return tmp;
}

static void
add_bias_rows(float *y, const float *bias, int rows, size_t cols)
{
	/* y[r, :] += bias[r] */
	#pragma omp parallel for schedule(static)
	for (int r = 0; r < rows; r++) {
		float b = bias[r];
		float *p = y + (size_t)r * cols;
		for (size_t i = 0; i < cols; i++)
			p[i] += b;
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
	float *biasbuf = NULL;
	const float *W = weight_f32(c, weight), *B = NULL;

	if (bias != NULL) {
		biasbuf = malloc((size_t)cout * sizeof *biasbuf);
		B = vector_f32(bias, biasbuf, (size_t)cout);
	}
	for (int b = 0; b < n; b++) {
		const float *xb = x + (size_t)b * cin * h * w;
		float *yb = y + (size_t)b * cout * ohw;

		if (kh == 1 && kw == 1 && stride == 1 && pt == 0 && pl == 0 && pb == 0 && pr == 0) {
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cout, (int)ohw, cin,
			    1.0f, W, cin, xb, (int)ohw, 0.0f, yb, (int)ohw);
		} else {
			/* im2col over tiles of output pixels, one GEMM per tile */
			size_t tile = COL_TILE_FLOATS / K;
			if (tile < 64)
				tile = 64;
			if (tile > ohw)
				tile = ohw;
			float *col = reserve(&s->col, &s->colcap, K * tile);
			for (size_t p0 = 0; p0 < ohw; p0 += tile) {
				size_t np = ohw - p0 < tile ? ohw - p0 : tile;
				#pragma omp parallel for schedule(static)
				for (size_t r = 0; r < K; r++) {
					int ci = (int)(r / (size_t)(kh * kw));
					int ky = (int)(r / (size_t)kw % (size_t)kh), kx = (int)(r % (size_t)kw);
					const float *xc = xb + (size_t)ci * h * w;
					float *dst = col + r * np;
					for (size_t p = 0; p < np; p++) {
						size_t pix = p0 + p;
						int oy = (int)(pix / (size_t)ow), ox = (int)(pix % (size_t)ow);
						int iy = oy * stride - pt + ky, ix = ox * stride - pl + kx;
						dst[p] = (iy >= 0 && iy < h && ix >= 0 && ix < w) ?
						    xc[(size_t)iy * w + ix] : 0.0f;
					}
				}
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cout, (int)np, (int)K,
				    1.0f, W, (int)K, col, (int)np, 0.0f, yb + p0, (int)ohw);
			}
		}
		if (B != NULL)
			add_bias_rows(yb, B, cout, ohw);
	}
	free(biasbuf);
}

static void
cpu_linear(struct sd_ctx *c, float *y, const float *x, int m, int k,
    const struct sd_tensor *weight, const struct sd_tensor *bias)
{
	int nout = (int)weight->shape[0];
	const float *W = weight_f32(c, weight);

	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, nout, k,
	    1.0f, x, k, W, k, 0.0f, y, nout);
	if (bias != NULL) {
		float *tmp = malloc((size_t)nout * sizeof *tmp);
		const float *B = vector_f32(bias, tmp, (size_t)nout);
		#pragma omp parallel for schedule(static)
		for (int i = 0; i < m; i++) {
			float *row = y + (size_t)i * nout;
			for (int j = 0; j < nout; j++)
				row[j] += B[j];
		}
		free(tmp);
	}
}

static inline float
silu(float v)
{
	return v / (1.0f + expf(-v));
}

static void
cpu_group_norm(struct sd_ctx *c, float *y, const float *x, int n, int ch, int hw,
    int groups, float eps, const struct sd_tensor *gamma, const struct sd_tensor *beta, int act)
{
	float *tmp = malloc((size_t)ch * 2 * sizeof *tmp);
	const float *G = vector_f32(gamma, tmp, (size_t)ch);
	const float *Bt = vector_f32(beta, tmp + ch, (size_t)ch);
	int cg = ch / groups;

	(void)c;
	#pragma omp parallel for schedule(dynamic)
	for (int ng = 0; ng < n * groups; ng++) {
		int b = ng / groups, g = ng % groups;
		size_t off = ((size_t)b * ch + (size_t)g * cg) * hw, cnt = (size_t)cg * hw;
		const float *xs = x + off;
		float *ys = y + off;
		double sum = 0, sq = 0, mean, var;
		for (size_t i = 0; i < cnt; i++)
			sum += xs[i];
		mean = sum / (double)cnt;
		for (size_t i = 0; i < cnt; i++) {
			double d = xs[i] - mean;
			sq += d * d;
		}
		var = sq / (double)cnt;
		float inv = (float)(1.0 / sqrt(var + eps)), m = (float)mean;
		for (int ci = 0; ci < cg; ci++) {
			int chn = g * cg + ci;
			float a = G ? G[chn] * inv : inv, bb = Bt ? Bt[chn] : 0.0f;
			const float *xr = xs + (size_t)ci * hw;
			float *yr = ys + (size_t)ci * hw;
			if (act) {
				for (int i = 0; i < hw; i++)
					yr[i] = silu((xr[i] - m) * a + bb);
			} else {
				for (int i = 0; i < hw; i++)
					yr[i] = (xr[i] - m) * a + bb;
			}
		}
	}
	free(tmp);
}

static void
cpu_layer_norm(struct sd_ctx *c, float *y, const float *x, int rows, int dim,
    float eps, const struct sd_tensor *gamma, const struct sd_tensor *beta)
{
	float *tmp = malloc((size_t)dim * 2 * sizeof *tmp);
	const float *G = vector_f32(gamma, tmp, (size_t)dim);
	const float *Bt = vector_f32(beta, tmp + dim, (size_t)dim);

	(void)c;
	#pragma omp parallel for schedule(static)
	for (int r = 0; r < rows; r++) {
		const float *xr = x + (size_t)r * dim;
		float *yr = y + (size_t)r * dim;
		double sum = 0, sq = 0, mean;
		for (int i = 0; i < dim; i++)
			sum += xr[i];
		mean = sum / dim;
		for (int i = 0; i < dim; i++) {
			double d = xr[i] - mean;
			sq += d * d;
		}
		float inv = (float)(1.0 / sqrt(sq / dim + eps)), m = (float)mean;
		for (int i = 0; i < dim; i++)
			yr[i] = (xr[i] - m) * inv * (G ? G[i] : 1.0f) + (Bt ? Bt[i] : 0.0f);
	}
	free(tmp);
}

static void
cpu_attention(struct sd_ctx *c, float *out, const float *q, int ldq,
    const float *k, int ldk, const float *v, int ldv,
    int b, int lq, int lk, int heads, int dh, float scale, int causal)
{
	struct cpu_state *s = c->state;
	int width = heads * dh;
	int block = lq < ATTN_BLOCK ? lq : ATTN_BLOCK;
	float *S = reserve(&s->scores, &s->scorecap, (size_t)block * lk);

	for (int bi = 0; bi < b; bi++) {
		for (int hd = 0; hd < heads; hd++) {
			const float *qh = q + (size_t)bi * lq * ldq + (size_t)hd * dh;
			const float *kh = k + (size_t)bi * lk * ldk + (size_t)hd * dh;
			const float *vh = v + (size_t)bi * lk * ldv + (size_t)hd * dh;
			float *oh = out + (size_t)bi * lq * width + (size_t)hd * dh;
			for (int q0 = 0; q0 < lq; q0 += block) {
				int nq = lq - q0 < block ? lq - q0 : block;
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, lk, dh,
				    scale, qh + (size_t)q0 * ldq, ldq, kh, ldk, 0.0f, S, lk);
				#pragma omp parallel for schedule(static) if (nq * lk > 4096)
				for (int i = 0; i < nq; i++) {
					float *row = S + (size_t)i * lk;
					int valid = causal ? q0 + i + 1 : lk;
					float mx = -INFINITY;
					double sum = 0;
					for (int j = 0; j < valid; j++)
						if (row[j] > mx)
							mx = row[j];
					for (int j = 0; j < valid; j++) {
						row[j] = expf(row[j] - mx);
						sum += row[j];
					}
					float inv = (float)(1.0 / sum);
					for (int j = 0; j < valid; j++)
						row[j] *= inv;
					for (int j = valid; j < lk; j++)
						row[j] = 0.0f;
				}
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, dh, lk,
				    1.0f, S, lk, vh, ldv, 0.0f, oh + (size_t)q0 * width, width);
			}
		}
	}
}

static void
cpu_unary(struct sd_ctx *c, float *x, size_t n, int kind)
{
	(void)c;
	switch (kind) {
	case SD_UNARY_SILU:
		#pragma omp parallel for schedule(static)
		for (size_t i = 0; i < n; i++)
			x[i] = silu(x[i]);
		break;
	case SD_UNARY_GELU:
		#pragma omp parallel for schedule(static)
		for (size_t i = 0; i < n; i++)
			x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
		break;
	case SD_UNARY_QUICK_GELU:
		#pragma omp parallel for schedule(static)
		for (size_t i = 0; i < n; i++)
			x[i] = x[i] / (1.0f + expf(-1.702f * x[i]));
		break;
	}
}

static void
cpu_geglu(struct sd_ctx *c, float *y, const float *p, int rows, int d)
{
	(void)c;
	#pragma omp parallel for schedule(static)
	for (int r = 0; r < rows; r++) {
		const float *a = p + (size_t)r * 2 * d, *g = a + d;
		float *yr = y + (size_t)r * d;
		for (int i = 0; i < d; i++)
			yr[i] = a[i] * (0.5f * g[i] * (1.0f + erff(g[i] * 0.70710678118654752f)));
	}
}

static void
cpu_add(struct sd_ctx *c, float *y, const float *a, const float *b, size_t n)
{
	(void)c;
	#pragma omp parallel for schedule(static) if (n > 16384)
	for (size_t i = 0; i < n; i++)
		y[i] = a[i] + b[i];
}

static void
cpu_lerp(struct sd_ctx *c, float *y, const float *a, const float *b, float s, size_t n)
{
	(void)c;
	#pragma omp parallel for schedule(static) if (n > 16384)
	for (size_t i = 0; i < n; i++)
		y[i] = a[i] + s * (b[i] - a[i]);
}

static void
cpu_scale(struct sd_ctx *c, float *x, float s, size_t n)
{
	(void)c;
	#pragma omp parallel for schedule(static) if (n > 16384)
	for (size_t i = 0; i < n; i++)
		x[i] *= s;
}

static void
cpu_add_channel(struct sd_ctx *c, float *x, const float *v, int n, int ch, int hw)
{
	(void)c;
	#pragma omp parallel for schedule(static)
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
	#pragma omp parallel for schedule(static)
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
		#pragma omp parallel for schedule(static)
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

	(void)c;
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
	.mem_alloc = cpu_mem_alloc,
	.mem_free = cpu_mem_free,
	.upload = cpu_upload,
	.download = cpu_upload,
	.conv2d = cpu_conv2d,
	.linear = cpu_linear,
	.group_norm = cpu_group_norm,
	.layer_norm = cpu_layer_norm,
	.attention = cpu_attention,
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
