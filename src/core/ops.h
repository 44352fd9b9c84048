/* ops.h: the numerical operations the models are written in.
 *
 * The models (CLIP, UNet, VAE) call these functions and nothing else for
 * their arithmetic, so that a backend (CPU: OpenMP + CBLAS; CUDA: cuBLAS +
 * kernels) can be chosen at run time without touching the models.
 *
 * Conventions:
 * - Activations are F32 and live in the backend's memory (host memory for
 *   the CPU backend, device memory for CUDA); get them with sd_alloc() from
 *   the context's arena, move data in and out with sd_upload/sd_download.
 * - Images are NCHW, contiguous.  Token sequences are [B, L, C] contiguous.
 * - Weights are struct sd_tensor views of the checkpoint (mmap'd, F32, F16
 *   or BF16); the backend widens or uploads them as it needs.
 * - y may not alias x unless a function says so ("in place"). */
#ifndef SD_OPS_H
#define SD_OPS_H

#include <stddef.h>

#include "core/error.h"
#include "core/tensor.h"

struct sd_backend;

/* The compute context a model runs in. */
struct sd_ctx {
	const struct sd_backend *be;
	void *state;		/* the backend's own (scratch buffers, handles) */
	struct sd_arena *arena;	/* activations */
	int threads;
	double flops;		/* multiply-adds x 2 of conv2d, linear, attention */
	struct sd_profile *prof;	/* SDBATCH_CPU_PROFILE on the CPU, else NULL */
	/* Sticky: the first error of an op (out of memory, a device error).
	 * Once set, every op, sd_upload and sd_download does nothing and
	 * sd_alloc returns memory no op touches, until cleared; callers check
	 * it with sd_ctx_status after each network call. */
	struct sd_error status;
};

/* 0 when every op so far succeeded, else -1 with the first error in err
 * (code SD_EINTERNAL for out of memory, SD_EUNAVAILABLE for a device
 * error). */
int sd_ctx_status(const struct sd_ctx *c, struct sd_error *err);
/* Set the status (the first error wins): for backends and tests. */
void sd_ctx_fail(struct sd_ctx *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Forget a failure, to run again (the arena is as it was). */
void sd_ctx_clear_status(struct sd_ctx *c);

/* Make a context for "cpu", "cuda" or "cuda:N" (threads 0 = default). */
struct sd_ctx *sd_ctx_new(const char *device, int threads, struct sd_error *err);
void sd_ctx_free(struct sd_ctx *c);
/* "cpu" or "cuda:0 (NVIDIA H100 ...)". */
const char *sd_ctx_describe(const struct sd_ctx *c);
/* Device memory of a GPU context in bytes: *peak the most in use on the
 * device at any time since the context was made (the CUDA context and
 * cuBLAS included), *base what was in use once the context was set up.
 * Returns 0, or -1 for backends without device memory (the CPU). */
/* Floating-point operations of the matrix ops (conv2d, linear, attention)
 * issued on c so far, on any backend (for benchmarks). */
double sd_ctx_flops(const struct sd_ctx *c);
int sd_ctx_device_memory(const struct sd_ctx *c, size_t *peak, size_t *base);

/* ---- memory: a bump arena of backend memory ---- */
/* n floats from the arena (never NULL: out of memory sets the context's
 * status, with a message naming the size, and returns memory that no op
 * touches; the arena grows in chunks and keeps them, so a second forward
 * at the same size allocates nothing new). */
float *sd_alloc(struct sd_ctx *c, size_t n);
/* Remember the arena's top, and free everything allocated since. */
size_t sd_mark(struct sd_ctx *c);
void sd_release(struct sd_ctx *c, size_t mark);
void sd_upload(struct sd_ctx *c, float *dst, const float *host, size_t n);
void sd_download(struct sd_ctx *c, float *host, const float *src, size_t n);
/* Bytes the arena holds (its high-water mark). */
size_t sd_arena_bytes(const struct sd_ctx *c);

/* ---- the ops ---- */

/* y[n, cout, oh, ow] = conv2d(x[n, cin, h, w]) with weight [cout, cin, kh, kw]
 * and bias [cout] (may be NULL); zero padding pad on all sides;
 * oh = (h + 2*pad - kh)/stride + 1 (likewise ow). */
void op_conv2d(struct sd_ctx *c, float *y, const float *x, int n, int cin, int h, int w,
    const struct sd_tensor *weight, const struct sd_tensor *bias, int stride, int pad);
/* The same with separate padding per side (the VAE encoder's downsample pads
 * right and bottom by one, nothing else). */
void op_conv2d_pad(struct sd_ctx *c, float *y, const float *x, int n, int cin, int h, int w,
    const struct sd_tensor *weight, const struct sd_tensor *bias, int stride,
    int pad_top, int pad_left, int pad_bottom, int pad_right);

/* y[m, nout] = x[m, k] @ weight[nout, k]^T + bias[nout] (bias may be NULL).
 * A 1x1 conv weight [nout, k, 1, 1] is accepted too. */
void op_linear(struct sd_ctx *c, float *y, const float *x, int m, int k,
    const struct sd_tensor *weight, const struct sd_tensor *bias);

/* GroupNorm over x[n, ch, hw] with `groups` groups, eps, per-channel affine
 * gamma/beta [ch]; then SiLU when silu != 0.  In place allowed (y == x). */
void op_group_norm(struct sd_ctx *c, float *y, const float *x, int n, int ch, int hw,
    int groups, float eps, const struct sd_tensor *gamma, const struct sd_tensor *beta,
    int silu);

/* LayerNorm over the last dim of x[rows, dim]; in place allowed. */
void op_layer_norm(struct sd_ctx *c, float *y, const float *x, int rows, int dim,
    float eps, const struct sd_tensor *gamma, const struct sd_tensor *beta);

/* Multi-head attention: q [b, lq, heads*dh], k and v [b, lk, heads*dh] (k and
 * v rows may have their own strides: ldk/ldv floats between rows, so that
 * slices of a fused kv buffer work; ldq likewise; out is contiguous
 * [b, lq, heads*dh]).  scores = q.k * scale, softmax over the keys (causal:
 * key j > query i is masked), out = softmax . v.  Computed in blocks; the
 * whole lq x lk score matrix is never held. */
void op_attention(struct sd_ctx *c, float *out, const float *q, int ldq,
    const float *k, int ldk, const float *v, int ldv,
    int b, int lq, int lk, int heads, int dh, float scale, int causal);

/* op_attention with an additive bias on the scores (T5's relative
 * positions): scores = q.k * scale + bias[head, i, j] before the softmax;
 * bias [heads, lq, lk] (backend memory) is the same for every batch item.
 * No causal mask.  Computed in blocks of queries and keys like
 * op_attention. */
void op_attention_bias(struct sd_ctx *c, float *out, const float *q, int ldq,
    const float *k, int ldk, const float *v, int ldv,
    int b, int lq, int lk, int heads, int dh, float scale, const float *bias);

/* RMSNorm over the last dim of x[rows, dim]: y = x / sqrt(mean(x^2) + eps)
 * * weight (weight [dim]; NULL: no weight).  In place allowed. */
void op_rms_norm(struct sd_ctx *c, float *y, const float *x, int rows, int dim,
    float eps, const struct sd_tensor *weight);

/* LayerNorm without affine over the last dim of x[b, tokens, dim], then
 * adaLN modulation per batch item i:
 *   y[i, t, :] = LN(x[i, t, :]) * (1 + scale[i, :]) + shift[i, :]
 * shift and scale are backend memory whose rows (one per batch item) are
 * ldm floats apart, so that they can be slices of one fused modulation
 * buffer [b, k * dim].  In place allowed. */
void op_layer_norm_modulate(struct sd_ctx *c, float *y, const float *x, int b, int tokens,
    int dim, float eps, const float *shift, const float *scale, int ldm);

/* Gated residual: x[i, t, :] += gate[i, :] * y[i, t, :] for x and y
 * [b, tokens, dim]; the gate's rows are ldg floats apart (as in
 * op_layer_norm_modulate). */
void op_gated_add(struct sd_ctx *c, float *x, const float *gate, int ldg, const float *y,
    int b, int tokens, int dim);

/* y[b, ch, h, w] = the image of the patch tokens x[b, (h/p)*(w/p), p*p*ch]:
 * token (i, j) (row-major over the h/p x w/p grid) holds its features in
 * [p][p][ch] order, y[c, p*i + u, p*j + v] = x[i*(w/p) + j, (u*p + v)*ch + c]
 * (the output of a patch transformer; h and w multiples of p). */
void op_unpatchify(struct sd_ctx *c, float *y, const float *x, int b, int ch, int h, int w,
    int p);

/* Elementwise, in place: x = silu(x), gelu(x) (exact erf), quick_gelu(x),
 * gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (GELU's
 * tanh approximation: T5's gelu_new, SD3's MLPs). */
void op_silu(struct sd_ctx *c, float *x, size_t n);
void op_gelu(struct sd_ctx *c, float *x, size_t n);
void op_quick_gelu(struct sd_ctx *c, float *x, size_t n);
void op_gelu_tanh(struct sd_ctx *c, float *x, size_t n);
/* y = a * b elementwise (y may alias a or b). */
void op_mul(struct sd_ctx *c, float *y, const float *a, const float *b, size_t n);
/* GEGLU: p[rows, 2*d] -> y[rows, d] = p[:, :d] * gelu(p[:, d:]). */
void op_geglu(struct sd_ctx *c, float *y, const float *p, int rows, int d);
/* y = a + b (y may alias a or b). */
void op_add(struct sd_ctx *c, float *y, const float *a, const float *b, size_t n);
/* y = a + s*(b - a): classifier-free guidance and other blends. */
void op_lerp(struct sd_ctx *c, float *y, const float *a, const float *b, float s, size_t n);
/* x = x * s. */
void op_scale(struct sd_ctx *c, float *x, float s, size_t n);
/* x[n, ch, hw] += v[n, ch] broadcast over hw (the UNet's time embedding). */
void op_add_channel(struct sd_ctx *c, float *x, const float *v, int n, int ch, int hw);
/* y[n, ch, 2h, 2w] = nearest-neighbour 2x upsampling of x[n, ch, h, w]. */
void op_upsample2x(struct sd_ctx *c, float *y, const float *x, int n, int ch, int h, int w);
/* y[n, ca+cb, hw] = concat(a[n, ca, hw], b[n, cb, hw]) along channels. */
void op_concat(struct sd_ctx *c, float *y, const float *a, int ca, const float *b, int cb,
    int n, int hw);
/* y[n, hw, ch] = transpose of x[n, ch, hw] (and back with the dims swapped). */
void op_transpose(struct sd_ctx *c, float *y, const float *x, int n, int rows, int cols);
/* y[i, :] = table[ids[i], :] + (pos ? pos[i % npos, :] : 0): token plus
 * position embeddings (ids are host memory). */
void op_embed(struct sd_ctx *c, float *y, const int *ids, int count,
    const struct sd_tensor *table, const struct sd_tensor *pos, int npos);
/* Copy n floats (backend memory to backend memory). */
void op_copy(struct sd_ctx *c, float *y, const float *x, size_t n);

#endif
