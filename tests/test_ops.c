/* test_ops.c: every op of the backend against a plain reference loop, on
 * random inputs and odd sizes (the CPU backend here; the CUDA backend is
 * checked against the same references when it is built and a GPU is there). */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/ops.h"
#include "testutil.h"

/* GEMM tolerance: the CUDA backend's default fp16 mode rounds the GEMM
 * inputs to F16 (11-bit mantissa), which the F32 references cannot match
 * to 1e-4; its fp32 mode must. */
static double gemm_atol = 1e-4, gemm_rtol = 1e-4;
static double att_atol = 1e-5, att_rtol = 1e-4;

static uint64_t rng_state = 88172645463325252ull;

static float
frand(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (float)((rng_state >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static float *
randv(size_t n)
{
	float *v = malloc(n * sizeof *v);
	for (size_t i = 0; i < n; i++)
		v[i] = frand();
	return v;
}

/* A weight tensor in dtype dt holding the values of f (rounded for F16). */
static struct sd_tensor
mkweight(enum sd_dtype dt, float *f, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3)
{
	struct sd_tensor t = {.dtype = dt, .ndim = ndim, .shape = {d0, d1, d2, d3}};
	size_t n = (size_t)sd_tensor_numel(&t);

	if (dt == SD_F32) {
		t.data = f;
	} else {
		uint16_t *h = malloc(n * 2);
		for (size_t i = 0; i < n; i++) {
			h[i] = dt == SD_F16 ? sd_f32_to_f16(f[i]) : sd_f32_to_bf16(f[i]);
			f[i] = dt == SD_F16 ? sd_f16_to_f32(h[i]) : sd_bf16_to_f32(h[i]);
		}
		t.data = h;
	}
	return t;
}

static float *
to_dev(struct sd_ctx *c, const float *h, size_t n)
{
	float *d = sd_alloc(c, n);
	sd_upload(c, d, h, n);
	return d;
}

static float *
from_dev(struct sd_ctx *c, const float *d, size_t n)
{
	float *h = malloc(n * sizeof *h);
	sd_download(c, h, d, n);
	return h;
}

static void
test_conv(struct sd_ctx *c, enum sd_dtype dt, int n, int cin, int h, int w, int cout, int k,
    int stride, int pt, int pl, int pb, int pr)
{
	float *x = randv((size_t)n * cin * h * w), *wf = randv((size_t)cout * cin * k * k);
	float *bf = randv((size_t)cout);
	struct sd_tensor W = mkweight(dt, wf, 4, cout, cin, k, k), B = mkweight(SD_F32, bf, 1, cout, 0, 0, 0);
	int oh = (h + pt + pb - k) / stride + 1, ow = (w + pl + pr - k) / stride + 1;
	size_t ny = (size_t)n * cout * oh * ow;
	float *ref = calloc(ny, sizeof *ref);
	size_t mark = sd_mark(c);

	for (int b = 0; b < n; b++)
		for (int co = 0; co < cout; co++)
			for (int oy = 0; oy < oh; oy++)
				for (int ox = 0; ox < ow; ox++) {
					double acc = bf[co];
					for (int ci = 0; ci < cin; ci++)
						for (int ky = 0; ky < k; ky++)
							for (int kx = 0; kx < k; kx++) {
								int iy = oy * stride - pt + ky, ix = ox * stride - pl + kx;
								if (iy < 0 || iy >= h || ix < 0 || ix >= w)
									continue;
								acc += (double)wf[((co * cin + ci) * k + ky) * k + kx] *
								    x[((size_t)(b * cin + ci) * h + iy) * w + ix];
							}
					ref[((size_t)(b * cout + co) * oh + oy) * ow + ox] = (float)acc;
				}
	float *dx = to_dev(c, x, (size_t)n * cin * h * w), *dy = sd_alloc(c, ny);
	op_conv2d_pad(c, dy, dx, n, cin, h, w, &W, &B, stride, pt, pl, pb, pr);
	float *got = from_dev(c, dy, ny);
	char what[160];
	snprintf(what, sizeof what, "conv2d %s n%d cin%d %dx%d cout%d k%d s%d pad %d,%d,%d,%d",
	    sd_dtype_name(dt), n, cin, h, w, cout, k, stride, pt, pl, pb, pr);
	check_close(what, got, ref, ny, gemm_atol, gemm_rtol);
	sd_release(c, mark);
	if (dt != SD_F32)
		free(W.data);
	free(x); free(wf); free(bf); free(ref); free(got);
}

/* The 3x3 stride 1 pad 1 convolutions once more with Winograd forced
 * (SDBATCH_WINOGRAD=2, 3 and 4, read by a new context; the cost rule of the
 * default context picks im2col for some of these small shapes): sizes that
 * are no multiple of the tile and smaller than one, odd channel counts,
 * more channels than a lane group, a batch of 2 whose tiles share a block,
 * F16 and BF16 weights, blocks of tiles (many tiles), several threads,
 * the channel counts of the UNet (320, 640: the error of Winograd grows
 * with the tile and the channels; F(4x4) stays near half of the 1e-4 only
 * because the backend sums the channels in chunks). */
static void
test_winograd(struct sd_ctx *dflt)
{
	static const char *modes[] = { "2", "3", "4" };
	const char *old = getenv("SDBATCH_WINOGRAD");
	char *saved = old != NULL ? strdup(old) : NULL;
	struct sd_error err = {0};

	if (strncmp(sd_ctx_describe(dflt), "cpu", 3) != 0) {
		for (int k = 0; k < 3 * 11 + 3; k++)
			tap_skip("Winograd is the CPU backend's");
		free(saved);
		return;
	}
	for (int i = 0; i < 3; i++) {
		struct sd_ctx *c;
		setenv("SDBATCH_WINOGRAD", modes[i], 1);
		c = sd_ctx_new("cpu", 0, &err);
		if (c == NULL) {
			tap_ok(0, "context with SDBATCH_WINOGRAD=%s: %s", modes[i], err.message);
			continue;
		}
		tap_diag("Winograd F(%sx%s, 3x3) forced", modes[i], modes[i]);
		test_conv(c, SD_F32, 1, 1, 1, 1, 1, 3, 1, 1, 1, 1, 1);
		test_conv(c, SD_F32, 2, 3, 9, 7, 5, 3, 1, 1, 1, 1, 1);
		test_conv(c, SD_F32, 1, 17, 5, 11, 19, 3, 1, 1, 1, 1, 1);
		test_conv(c, SD_F16, 2, 20, 13, 6, 33, 3, 1, 1, 1, 1, 1);
		test_conv(c, SD_BF16, 1, 7, 3, 2, 4, 3, 1, 1, 1, 1, 1);
		test_conv(c, SD_F32, 2, 64, 16, 16, 48, 3, 1, 1, 1, 1, 1);
		test_conv(c, SD_F16, 1, 160, 30, 34, 37, 3, 1, 1, 1, 1, 1);
		test_conv(c, SD_F16, 1, 320, 16, 16, 24, 3, 1, 1, 1, 1, 1);
		test_conv(c, SD_F16, 1, 640, 8, 10, 24, 3, 1, 1, 1, 1, 1);
		test_conv(c, SD_F32, 1, 8, 130, 67, 8, 3, 1, 1, 1, 1, 1);
		/* not a Winograd shape: im2col as before */
		test_conv(c, SD_F32, 1, 5, 9, 10, 3, 3, 2, 0, 0, 1, 1);
		sd_ctx_free(c);
	}
	/* Winograd off: the smallest maps' 3x3 convolutions by im2col, in
	 * panels of 16, 32 and 64 pixels */
	setenv("SDBATCH_WINOGRAD", "0", 1);
	struct sd_ctx *c0 = sd_ctx_new("cpu", 0, &err);
	if (c0 == NULL) {
		tap_ok(0, "context with SDBATCH_WINOGRAD=0: %s", err.message);
	} else {
		test_conv(c0, SD_F16, 2, 64, 4, 4, 70, 3, 1, 1, 1, 1, 1);
		test_conv(c0, SD_F16, 1, 40, 8, 8, 9, 3, 1, 1, 1, 1, 1);
		test_conv(c0, SD_BF16, 2, 24, 16, 12, 5, 3, 1, 1, 1, 1, 1);
		sd_ctx_free(c0);
	}
	if (saved != NULL)
		setenv("SDBATCH_WINOGRAD", saved, 1);
	else
		unsetenv("SDBATCH_WINOGRAD");
	free(saved);
}

static void
test_linear(struct sd_ctx *c, enum sd_dtype dt, int m, int k, int nout, int bias)
{
	float *x = randv((size_t)m * k), *wf = randv((size_t)nout * k), *bf = randv((size_t)nout);
	struct sd_tensor W = mkweight(dt, wf, 2, nout, k, 0, 0), B = mkweight(dt, bf, 1, nout, 0, 0, 0);
	float *ref = malloc((size_t)m * nout * sizeof *ref);
	size_t mark = sd_mark(c);

	for (int i = 0; i < m; i++)
		for (int j = 0; j < nout; j++) {
			double acc = bias ? bf[j] : 0;
			for (int l = 0; l < k; l++)
				acc += (double)x[(size_t)i * k + l] * wf[(size_t)j * k + l];
			ref[(size_t)i * nout + j] = (float)acc;
		}
	float *dx = to_dev(c, x, (size_t)m * k), *dy = sd_alloc(c, (size_t)m * nout);
	op_linear(c, dy, dx, m, k, &W, bias ? &B : NULL);
	float *got = from_dev(c, dy, (size_t)m * nout);
	char what[128];
	snprintf(what, sizeof what, "linear %s %dx%d -> %d%s", sd_dtype_name(dt), m, k, nout, bias ? " +bias" : "");
	check_close(what, got, ref, (size_t)m * nout, gemm_atol, gemm_rtol);
	sd_release(c, mark);
	if (dt != SD_F32) {
		free(W.data);
		free(B.data);
	}
	free(x); free(wf); free(bf); free(ref); free(got);
}

static void
test_group_norm(struct sd_ctx *c, int n, int ch, int hw, int groups, int silu)
{
	size_t total = (size_t)n * ch * hw;
	float *x = randv(total), *g = randv((size_t)ch), *bt = randv((size_t)ch);
	float *ref = malloc(total * sizeof *ref);
	struct sd_tensor G = mkweight(SD_F32, g, 1, ch, 0, 0, 0), Bt = mkweight(SD_F32, bt, 1, ch, 0, 0, 0);
	int cg = ch / groups;
	size_t mark = sd_mark(c);

	for (size_t i = 0; i < total / 7; i++)
		x[i] += 3.0f;	/* an offset mean, as real activations have */
	for (int b = 0; b < n; b++)
		for (int gi = 0; gi < groups; gi++) {
			double s = 0, sq = 0;
			size_t off = ((size_t)b * ch + (size_t)gi * cg) * hw, cnt = (size_t)cg * hw;
			for (size_t i = 0; i < cnt; i++)
				s += x[off + i];
			double mean = s / cnt;
			for (size_t i = 0; i < cnt; i++)
				sq += (x[off + i] - mean) * (x[off + i] - mean);
			double inv = 1.0 / sqrt(sq / cnt + 1e-5);
			for (size_t i = 0; i < cnt; i++) {
				int chn = gi * cg + (int)(i / hw);
				double v = (x[off + i] - mean) * inv * g[chn] + bt[chn];
				if (silu)
					v = v / (1 + exp(-v));
				ref[off + i] = (float)v;
			}
		}
	float *dx = to_dev(c, x, total);
	op_group_norm(c, dx, dx, n, ch, hw, groups, 1e-5f, &G, &Bt, silu);
	float *got = from_dev(c, dx, total);
	char what[128];
	snprintf(what, sizeof what, "group_norm n%d ch%d hw%d groups%d%s (in place)", n, ch, hw, groups,
	    silu ? " +silu" : "");
	check_close(what, got, ref, total, 1e-5, 1e-5);
	sd_release(c, mark);
	free(x); free(g); free(bt); free(ref); free(got);
}

static void
test_layer_norm(struct sd_ctx *c, int rows, int dim)
{
	size_t total = (size_t)rows * dim;
	float *x = randv(total), *g = randv((size_t)dim), *bt = randv((size_t)dim);
	float *ref = malloc(total * sizeof *ref);
	struct sd_tensor G = mkweight(SD_F32, g, 1, dim, 0, 0, 0), Bt = mkweight(SD_F32, bt, 1, dim, 0, 0, 0);
	size_t mark = sd_mark(c);

	for (int r = 0; r < rows; r++) {
		double s = 0, sq = 0;
		for (int i = 0; i < dim; i++)
			s += x[(size_t)r * dim + i];
		double mean = s / dim;
		for (int i = 0; i < dim; i++)
			sq += (x[(size_t)r * dim + i] - mean) * (x[(size_t)r * dim + i] - mean);
		double inv = 1.0 / sqrt(sq / dim + 1e-5);
		for (int i = 0; i < dim; i++)
			ref[(size_t)r * dim + i] = (float)((x[(size_t)r * dim + i] - mean) * inv * g[i] + bt[i]);
	}
	float *dx = to_dev(c, x, total), *dy = sd_alloc(c, total);
	op_layer_norm(c, dy, dx, rows, dim, 1e-5f, &G, &Bt);
	float *got = from_dev(c, dy, total);
	char what[64];
	snprintf(what, sizeof what, "layer_norm %dx%d", rows, dim);
	check_close(what, got, ref, total, 1e-5, 1e-5);
	sd_release(c, mark);
	free(x); free(g); free(bt); free(ref); free(got);
}

static void
test_attention(struct sd_ctx *c, int b, int lq, int lk, int heads, int dh, int causal, int kvpad)
{
	int width = heads * dh, ldk = width + kvpad;
	size_t nq = (size_t)b * lq * width, nk = (size_t)b * lk * ldk;
	float *q = randv(nq), *k = randv(nk), *v = randv(nk);
	float *ref = malloc(nq * sizeof *ref), *sc = malloc((size_t)lk * sizeof *sc);
	float scale = 1.0f / sqrtf((float)dh);
	size_t mark = sd_mark(c);

	for (int bi = 0; bi < b; bi++)
		for (int h = 0; h < heads; h++)
			for (int i = 0; i < lq; i++) {
				double mx = -1e30, sum = 0;
				int valid = causal ? i + 1 : lk;
				for (int j = 0; j < valid; j++) {
					double s = 0;
					for (int d = 0; d < dh; d++)
						s += (double)q[((size_t)bi * lq + i) * width + h * dh + d] *
						    k[((size_t)bi * lk + j) * ldk + h * dh + d];
					sc[j] = (float)(s * scale);
					if (sc[j] > mx)
						mx = sc[j];
				}
				for (int j = 0; j < valid; j++)
					sum += exp(sc[j] - mx);
				for (int d = 0; d < dh; d++) {
					double o = 0;
					for (int j = 0; j < valid; j++)
						o += exp(sc[j] - mx) / sum * v[((size_t)bi * lk + j) * ldk + h * dh + d];
					ref[((size_t)bi * lq + i) * width + h * dh + d] = (float)o;
				}
			}
	float *dq = to_dev(c, q, nq), *dk = to_dev(c, k, nk), *dv = to_dev(c, v, nk), *dout = sd_alloc(c, nq);
	op_attention(c, dout, dq, width, dk, ldk, dv, ldk, b, lq, lk, heads, dh, scale, causal);
	float *got = from_dev(c, dout, nq);
	char what[128];
	snprintf(what, sizeof what, "attention b%d lq%d lk%d heads%d dh%d%s%s", b, lq, lk, heads, dh,
	    causal ? " causal" : "", kvpad ? " strided k/v" : "");
	check_close(what, got, ref, nq, att_atol, att_rtol);
	sd_release(c, mark);
	free(q); free(k); free(v); free(ref); free(sc); free(got);
}

/* op_attention_bias: scores q.k * scale + bias[head, i, j] (the same bias
 * for every batch item), against the plain loop. */
static void
test_attention_bias(struct sd_ctx *c, int b, int lq, int lk, int heads, int dh, float scale)
{
	int width = heads * dh;
	size_t nq = (size_t)b * lq * width, nk = (size_t)b * lk * width;
	size_t nb = (size_t)heads * lq * lk;
	float *q = randv(nq), *k = randv(nk), *v = randv(nk), *bias = randv(nb);
	float *ref = malloc(nq * sizeof *ref);
	double *sc = malloc((size_t)lk * sizeof *sc);
	size_t mark = sd_mark(c);

	for (size_t i = 0; i < nb; i++)
		bias[i] *= 4.0f;	/* T5's biases move the softmax a lot */
	for (int bi = 0; bi < b; bi++)
		for (int h = 0; h < heads; h++)
			for (int i = 0; i < lq; i++) {
				double mx = -1e30, sum = 0;
				for (int j = 0; j < lk; j++) {
					double s = 0;
					for (int d = 0; d < dh; d++)
						s += (double)q[((size_t)bi * lq + i) * width + h * dh + d] *
						    k[((size_t)bi * lk + j) * width + h * dh + d];
					sc[j] = s * scale + bias[((size_t)h * lq + i) * lk + j];
					if (sc[j] > mx)
						mx = sc[j];
				}
				for (int j = 0; j < lk; j++)
					sum += exp(sc[j] - mx);
				for (int d = 0; d < dh; d++) {
					double o = 0;
					for (int j = 0; j < lk; j++)
						o += exp(sc[j] - mx) / sum * v[((size_t)bi * lk + j) * width + h * dh + d];
					ref[((size_t)bi * lq + i) * width + h * dh + d] = (float)o;
				}
			}
	float *dq = to_dev(c, q, nq), *dk = to_dev(c, k, nk), *dv = to_dev(c, v, nk);
	float *db = to_dev(c, bias, nb), *dout = sd_alloc(c, nq);
	op_attention_bias(c, dout, dq, width, dk, width, dv, width, b, lq, lk, heads, dh, scale, db);
	float *got = from_dev(c, dout, nq);
	char what[128];
	snprintf(what, sizeof what, "attention + bias b%d lq%d lk%d heads%d dh%d scale %g", b, lq, lk,
	    heads, dh, scale);
	check_close(what, got, ref, nq, att_atol, att_rtol);
	sd_release(c, mark);
	free(q); free(k); free(v); free(bias); free(ref); free(sc); free(got);
}

/* op_rms_norm (with and without a weight, F16 weight too), in place. */
static void
test_rms_norm(struct sd_ctx *c, enum sd_dtype dt, int rows, int dim, int weighted)
{
	size_t total = (size_t)rows * dim;
	float *x = randv(total), *g = randv((size_t)dim), *ref = malloc(total * sizeof *ref);
	struct sd_tensor G = mkweight(dt, g, 1, dim, 0, 0, 0);
	size_t mark = sd_mark(c);

	for (size_t i = 0; i < total / 5; i++)
		x[i] *= 30.0f;	/* rows of very different scales */
	for (int r = 0; r < rows; r++) {
		double ss = 0;
		for (int i = 0; i < dim; i++)
			ss += (double)x[(size_t)r * dim + i] * x[(size_t)r * dim + i];
		double inv = 1.0 / sqrt(ss / dim + 1e-6);
		for (int i = 0; i < dim; i++)
			ref[(size_t)r * dim + i] = (float)(x[(size_t)r * dim + i] * inv *
			    (weighted ? g[i] : 1.0));
	}
	float *dx = to_dev(c, x, total);
	op_rms_norm(c, dx, dx, rows, dim, 1e-6f, weighted ? &G : NULL);
	float *got = from_dev(c, dx, total);
	char what[96];
	snprintf(what, sizeof what, "rms_norm %dx%d%s%s (in place)", rows, dim,
	    weighted ? " weight " : "", weighted ? sd_dtype_name(dt) : "");
	check_close(what, got, ref, total, 1e-5, 1e-5);
	sd_release(c, mark);
	if (dt != SD_F32)
		free(G.data);
	free(x); free(g); free(ref); free(got);
}

/* op_layer_norm_modulate and op_gated_add: the modulation vectors are
 * slices of one [b, 6 * dim] buffer (shift at 0, scale at dim, gate at
 * 2 dim), as SD3's adaLN-Zero gives them. */
static void
test_modulate(struct sd_ctx *c, int b, int tokens, int dim)
{
	size_t total = (size_t)b * tokens * dim, nm = (size_t)b * 6 * dim;
	float *x = randv(total), *y = randv(total), *mod = randv(nm);
	float *ref = malloc(total * sizeof *ref), *got;
	int ldm = 6 * dim;
	size_t mark = sd_mark(c);

	for (size_t i = 0; i < total / 3; i++)
		x[i] = x[i] * 5.0f + 2.0f;	/* an offset mean */
	for (int r = 0; r < b * tokens; r++) {
		const float *xr = x + (size_t)r * dim, *m = mod + (size_t)(r / tokens) * ldm;
		double s = 0, sq = 0;
		for (int i = 0; i < dim; i++)
			s += xr[i];
		double mean = s / dim;
		for (int i = 0; i < dim; i++)
			sq += (xr[i] - mean) * (xr[i] - mean);
		double inv = 1.0 / sqrt(sq / dim + 1e-6);
		for (int i = 0; i < dim; i++)
			ref[(size_t)r * dim + i] = (float)((xr[i] - mean) * inv * (1.0 + m[dim + i]) + m[i]);
	}
	float *dx = to_dev(c, x, total), *dy = to_dev(c, y, total), *dm = to_dev(c, mod, nm);
	float *dn = sd_alloc(c, total);
	op_layer_norm_modulate(c, dn, dx, b, tokens, dim, 1e-6f, dm, dm + dim, ldm);
	got = from_dev(c, dn, total);
	char what[96];
	snprintf(what, sizeof what, "layer_norm_modulate b%d tokens%d dim%d", b, tokens, dim);
	check_close(what, got, ref, total, 1e-5, 1e-5);
	free(got);
	/* in place */
	op_layer_norm_modulate(c, dx, dx, b, tokens, dim, 1e-6f, dm, dm + dim, ldm);
	got = from_dev(c, dx, total);
	snprintf(what, sizeof what, "layer_norm_modulate b%d tokens%d dim%d in place", b, tokens, dim);
	check_close(what, got, ref, total, 1e-5, 1e-5);
	free(got);
	/* x += gate * y, gate the third slice */
	sd_upload(c, dx, x, total);
	for (size_t i = 0; i < total; i++)
		ref[i] = x[i] + mod[(i / dim / tokens) * ldm + 2 * dim + i % dim] * y[i];
	op_gated_add(c, dx, dm + 2 * dim, ldm, dy, b, tokens, dim);
	got = from_dev(c, dx, total);
	snprintf(what, sizeof what, "gated_add b%d tokens%d dim%d", b, tokens, dim);
	check_close(what, got, ref, total, 1e-6, 1e-6);
	free(got);
	sd_release(c, mark);
	free(x); free(y); free(mod); free(ref);
}

static void
test_elementwise(struct sd_ctx *c)
{
	size_t n = 1001;
	float *x = randv(n), *y = randv(n), *ref = malloc(2 * n * sizeof *ref);
	size_t mark = sd_mark(c);
	float *dx = to_dev(c, x, n), *dy = to_dev(c, y, n), *d2 = sd_alloc(c, 2 * n), *got;

	for (size_t i = 0; i < n; i++)
		ref[i] = x[i] / (1.0f + expf(-x[i]));
	op_copy(c, d2, dx, n);
	op_silu(c, d2, n);
	got = from_dev(c, d2, n);
	check_close("silu", got, ref, n, 1e-6, 1e-6);
	free(got);
	for (size_t i = 0; i < n; i++)
		ref[i] = (float)(0.5 * x[i] * (1 + erf(x[i] / sqrt(2.0))));
	op_copy(c, d2, dx, n);
	op_gelu(c, d2, n);
	got = from_dev(c, d2, n);
	check_close("gelu (erf)", got, ref, n, 1e-6, 1e-6);
	free(got);
	for (size_t i = 0; i < n; i++)
		ref[i] = (float)(x[i] / (1 + exp(-1.702 * x[i])));
	op_copy(c, d2, dx, n);
	op_quick_gelu(c, d2, n);
	got = from_dev(c, d2, n);
	check_close("quick_gelu", got, ref, n, 1e-6, 1e-6);
	free(got);
	/* gelu_tanh over a wide range (the tails of the tanh) */
	float *wide = malloc(n * sizeof *wide);
	for (size_t i = 0; i < n; i++) {
		wide[i] = x[i] * 12.0f;
		double v = wide[i];
		ref[i] = (float)(0.5 * v * (1 + tanh(0.79788456080286535588 * (v + 0.044715 * v * v * v))));
	}
	sd_upload(c, d2, wide, n);
	op_gelu_tanh(c, d2, n);
	got = from_dev(c, d2, n);
	check_close("gelu_tanh", got, ref, n, 1e-6, 1e-6);
	free(got);
	free(wide);
	for (size_t i = 0; i < n; i++)
		ref[i] = x[i] * y[i];
	op_mul(c, d2, dx, dy, n);
	got = from_dev(c, d2, n);
	check_close("mul", got, ref, n, 0, 0);
	free(got);
	for (size_t i = 0; i < n; i++)
		ref[i] = x[i] + 2.5f * (y[i] - x[i]);
	op_lerp(c, d2, dx, dy, 2.5f, n);
	got = from_dev(c, d2, n);
	check_close("lerp", got, ref, n, 1e-6, 1e-6);
	free(got);
	for (size_t i = 0; i < n; i++)
		ref[i] = (x[i] + y[i]) * 0.5f;
	op_add(c, d2, dx, dy, n);
	op_scale(c, d2, 0.5f, n);
	got = from_dev(c, d2, n);
	check_close("add, scale", got, ref, n, 1e-6, 1e-6);
	free(got);
	/* geglu over rows of 2*d */
	int rows = 7, d = 143;
	float *p = randv((size_t)rows * 2 * d);
	for (int r = 0; r < rows; r++)
		for (int i = 0; i < d; i++) {
			double g = p[(size_t)r * 2 * d + d + i];
			ref[(size_t)r * d + i] = (float)(p[(size_t)r * 2 * d + i] * 0.5 * g * (1 + erf(g / sqrt(2.0))));
		}
	float *dp = to_dev(c, p, (size_t)rows * 2 * d);
	op_geglu(c, d2, dp, rows, d);
	got = from_dev(c, d2, (size_t)rows * d);
	check_close("geglu", got, ref, (size_t)rows * d, 1e-6, 1e-6);
	free(got);
	free(p);
	sd_release(c, mark);
	free(x); free(y); free(ref);
}

static void
test_layout(struct sd_ctx *c)
{
	int n = 2, ch = 3, h = 5, w = 7, cb = 2;
	size_t nx = (size_t)n * ch * h * w;
	float *x = randv(nx), *v = randv((size_t)n * ch), *bb = randv((size_t)n * cb * h * w);
	float *ref = malloc(nx * 4 * sizeof *ref), *got;
	size_t mark = sd_mark(c);
	float *dx = to_dev(c, x, nx), *dv = to_dev(c, v, (size_t)n * ch), *db = to_dev(c, bb, (size_t)n * cb * h * w);
	float *dy = sd_alloc(c, nx * 4);

	for (int b = 0; b < n; b++)
		for (int ci = 0; ci < ch; ci++)
			for (int i = 0; i < 2 * h; i++)
				for (int j = 0; j < 2 * w; j++)
					ref[(((size_t)b * ch + ci) * 2 * h + i) * 2 * w + j] =
					    x[(((size_t)b * ch + ci) * h + i / 2) * w + j / 2];
	op_upsample2x(c, dy, dx, n, ch, h, w);
	got = from_dev(c, dy, nx * 4);
	check_close("upsample2x nearest", got, ref, nx * 4, 0, 0);
	free(got);
	for (int b = 0; b < n; b++)
		for (int i = 0; i < h * w; i++)
			for (int ci = 0; ci < ch; ci++)
				ref[((size_t)b * h * w + i) * ch + ci] = x[((size_t)b * ch + ci) * h * w + i];
	op_transpose(c, dy, dx, n, ch, h * w);
	got = from_dev(c, dy, nx);
	check_close("transpose [n, c, hw] -> [n, hw, c]", got, ref, nx, 0, 0);
	free(got);
	for (int b = 0; b < n; b++) {
		memcpy(ref + (size_t)b * (ch + cb) * h * w, x + (size_t)b * ch * h * w, (size_t)ch * h * w * 4);
		memcpy(ref + ((size_t)b * (ch + cb) + ch) * h * w, bb + (size_t)b * cb * h * w, (size_t)cb * h * w * 4);
	}
	op_concat(c, dy, dx, ch, db, cb, n, h * w);
	got = from_dev(c, dy, (size_t)n * (ch + cb) * h * w);
	check_close("concat channels", got, ref, (size_t)n * (ch + cb) * h * w, 0, 0);
	free(got);
	for (size_t i = 0; i < nx; i++)
		ref[i] = x[i] + v[i / ((size_t)h * w)];
	op_add_channel(c, dx, dv, n, ch, h * w);
	got = from_dev(c, dx, nx);
	check_close("add_channel", got, ref, nx, 0, 0);
	free(got);
	sd_release(c, mark);
	free(x); free(v); free(bb); free(ref);

	/* unpatchify: patches of 2 (SD3) and 3, non-square, batch of 2 */
	for (int p = 2; p <= 3; p++) {
		int uh = 3 * p, uw = 5 * p, uc = 4;
		size_t nu = (size_t)n * uc * uh * uw;
		float *tok = randv(nu), *want = malloc(nu * sizeof *want);
		mark = sd_mark(c);
		for (int b = 0; b < n; b++)
			for (int i = 0; i < uh / p; i++)
				for (int j = 0; j < uw / p; j++)
					for (int u = 0; u < p; u++)
						for (int q = 0; q < p; q++)
							for (int ci = 0; ci < uc; ci++)
								want[(((size_t)b * uc + ci) * uh + p * i + u) * uw + p * j + q] =
								    tok[(((size_t)b * (uh / p) + i) * (uw / p) + j) * p * p * uc +
								    (size_t)(u * p + q) * uc + ci];
		float *dt = to_dev(c, tok, nu), *du = sd_alloc(c, nu);
		op_unpatchify(c, du, dt, n, uc, uh, uw, p);
		got = from_dev(c, du, nu);
		char what[64];
		snprintf(what, sizeof what, "unpatchify p%d %dx%d", p, uh, uw);
		check_close(what, got, want, nu, 0, 0);
		free(got);
		sd_release(c, mark);
		free(tok);
		free(want);
	}
}

/* SDBATCH_CPU_PROFILE=1: the table a CPU context prints on stderr when it
 * ends names each op by its shape, with its calls. */
static void
test_profile(struct sd_ctx *dflt)
{
	static float wd[4 * 5], xd[3 * 5];
	struct sd_tensor W = {.dtype = SD_F32, .ndim = 2, .shape = {4, 5}, .data = wd};
	struct sd_error err = {0};
	char line[256];
	long calls = -1, adds = -1;
	int header = 0, saved;
	struct sd_ctx *c;
	FILE *tmp;

	if (strncmp(sd_ctx_describe(dflt), "cpu", 3) != 0) {
		tap_skip("SDBATCH_CPU_PROFILE is the CPU backend's");
		return;
	}
	setenv("SDBATCH_CPU_PROFILE", "1", 1);
	c = sd_ctx_new("cpu", 0, &err);
	unsetenv("SDBATCH_CPU_PROFILE");
	if (c == NULL || (tmp = tmpfile()) == NULL) {
		tap_ok(0, "context with SDBATCH_CPU_PROFILE=1: %s", err.message);
		sd_ctx_free(c);
		return;
	}
	float *x = sd_alloc(c, 15), *y = sd_alloc(c, 12);
	sd_upload(c, x, xd, 15);
	op_linear(c, y, x, 3, 5, &W, NULL);
	op_linear(c, y, x, 3, 5, &W, NULL);
	op_add(c, y, y, y, 12);
	fflush(stderr);
	saved = dup(2);
	dup2(fileno(tmp), 2);
	sd_ctx_free(c);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	rewind(tmp);
	while (fgets(line, sizeof line, tmp) != NULL) {
		double sec, share;
		long n;
		header |= strstr(line, "CPU profile") != NULL;
		if (sscanf(line, "%lf %lf%% %ld", &sec, &share, &n) != 3)
			continue;
		if (strstr(line, "linear m 3 k 5 n 4") != NULL)
			calls = n;
		else if (strstr(line, "add") != NULL)
			adds = n;
	}
	fclose(tmp);
	tap_ok(header && calls == 2 && adds == 1,
	    "SDBATCH_CPU_PROFILE: a table of the ops by shape when the context ends "
	    "(linear m 3 k 5 n 4: %ld calls, add: %ld)", calls, adds);
}

int
main(void)
{
	struct sd_ctx *c = test_ctx_new();	/* skips the test without the device */
	const char *dev = test_device();

	if (strncmp(dev, "cuda", 4) == 0) {
		const char *prec = getenv("SDBATCH_CUDA_PRECISION");
		if (prec == NULL || strcmp(prec, "fp32") != 0) {
			gemm_atol = 2e-2;
			gemm_rtol = 1e-2;
			att_atol = 1e-2;	/* Q, K, V and P rounded to F16 */
			att_rtol = 1e-2;
			tap_diag("CUDA fp16 GEMMs: conv2d/linear checked at atol 2e-2, rtol 1e-2");
		}
	}
	test_conv(c, SD_F32, 2, 3, 9, 7, 5, 3, 1, 1, 1, 1, 1);
	test_conv(c, SD_F16, 1, 4, 8, 8, 6, 3, 2, 1, 1, 1, 1);
	test_conv(c, SD_BF16, 1, 5, 9, 10, 3, 3, 2, 0, 0, 1, 1);
	test_conv(c, SD_F32, 2, 7, 6, 5, 4, 1, 1, 0, 0, 0, 0);
	test_conv(c, SD_F32, 1, 33, 40, 37, 9, 3, 1, 1, 1, 1, 1);
	/* the smallest maps (panels of 16, 32, 64 pixels a image) */
	test_conv(c, SD_F16, 2, 64, 4, 4, 70, 3, 1, 1, 1, 1, 1);
	test_conv(c, SD_F16, 1, 40, 8, 8, 9, 3, 1, 1, 1, 1, 1);
	test_conv(c, SD_BF16, 2, 24, 16, 12, 5, 3, 1, 1, 1, 1, 1);
	test_conv(c, SD_F16, 2, 48, 4, 8, 20, 1, 1, 0, 0, 0, 0);
	test_linear(c, SD_F32, 13, 17, 19, 1);
	test_linear(c, SD_F16, 5, 64, 33, 1);
	test_linear(c, SD_BF16, 3, 8, 4, 0);
	/* few rows: panels of 16/32/64 rows, k not a multiple of the weight
	 * chunk, output features not a multiple of the kernel's 4 */
	test_linear(c, SD_F16, 70, 300, 37, 1);
	test_linear(c, SD_BF16, 17, 520, 130, 1);
	test_linear(c, SD_F32, 33, 257, 5, 0);
	test_linear(c, SD_F16, 2, 1280, 320, 1);
	test_group_norm(c, 2, 64, 49, 32, 0);
	test_group_norm(c, 1, 32, 1, 32, 1);
	test_group_norm(c, 2, 96, 300, 32, 1);
	/* groups big enough to be split into slices on a GPU */
	test_group_norm(c, 1, 64, 4099, 32, 1);
	test_group_norm(c, 2, 128, 130 * 128, 32, 0);
	test_layer_norm(c, 77, 24);
	test_layer_norm(c, 3, 1000);
	test_attention(c, 2, 64, 77, 8, 4, 0, 0);
	test_attention(c, 1, 300, 300, 2, 16, 0, 0);
	test_attention(c, 2, 77, 77, 12, 2, 1, 0);
	test_attention(c, 1, 33, 20, 3, 5, 0, 7);
	/* the head dims of SD 1.5 (40, 80, 160), CLIP's (64, causal), odd sizes */
	test_attention(c, 1, 200, 77, 2, 40, 0, 0);
	test_attention(c, 2, 130, 130, 1, 80, 0, 0);
	test_attention(c, 1, 70, 100, 1, 160, 0, 8);
	test_attention(c, 1, 77, 77, 2, 64, 1, 0);
	test_attention(c, 1, 96, 150, 2, 24, 0, 3);
	/* causal beyond the first blocks of 128 keys, and lq != lk */
	test_attention(c, 1, 300, 300, 2, 64, 1, 0);
	test_attention(c, 1, 1, 1, 3, 13, 0, 0);
	/* T5: unscaled scores plus the position bias; more keys than a block */
	test_attention_bias(c, 2, 20, 20, 6, 8, 1.0f);
	test_attention_bias(c, 1, 77, 600, 3, 16, 0.25f);
	test_attention_bias(c, 3, 256, 256, 2, 64, 1.0f / 8);
	test_rms_norm(c, SD_F32, 7, 48, 1);
	test_rms_norm(c, SD_F16, 300, 1000, 1);
	test_rms_norm(c, SD_F32, 5, 33, 0);
	/* SD3's adaLN: few and many tokens, odd widths */
	test_modulate(c, 2, 5, 32);
	test_modulate(c, 1, 333, 47);
	test_modulate(c, 2, 700, 160);
	test_elementwise(c);
	test_layout(c);
	test_winograd(c);
	test_profile(c);
	tap_ok(sd_arena_bytes(c) > 0, "the arena kept its memory (%zu bytes)", sd_arena_bytes(c));
	sd_ctx_free(c);
	return tap_done();
}
