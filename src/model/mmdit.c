/* mmdit.c: SD3's MMDiT, as diffusers' SD3Transformer2DModel computes it
 * (see mmdit.h for the structure and the two layouts' names).
 *
 * One joint block, per stream s (image x: N tokens, context: T tokens):
 *   shift1, scale1, gate1, shift2, scale2, gate2 = adaLN_s(SiLU(temb))
 *   n_s = LN(s) * (1 + scale1) + shift1
 *   q, k, v = per stream; attention over the L = N + T tokens [x, context]
 *   s += gate1 * proj_s(attention's rows of s)
 *   s += gate2 * fc2_s(gelu_tanh(fc1_s(LN(s) * (1 + scale2) + shift2)))
 * The last block's context stream has a 2-way adaLN (shift, scale: its
 * q, k, v only) and no output.
 *
 * Memory: the image and context tokens and the modulation input live for
 * the whole pass; each block's temporaries (modulations, normed tokens,
 * q/k/v and the attention's output, then the MLP's hidden layer) are
 * released when the block (or its half) ends, so the peak is the tokens
 * plus one attention's q, k, v, output, or one MLP's hidden layer. */
#include "config.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/mmdit.h"

#define LN_EPS 1e-6f
#define HEAD_WIDTH 64		/* the default head width */

/* One stream of a joint block. */
struct mmdit_stream {
	const struct sd_tensor *mod_w, *mod_b;		/* adaLN: [chunks * D, D] */
	int chunks;					/* 6, or 2 (pre-only) */
	int shift_at, scale_at;				/* 2-way: 0 or D each */
	const struct sd_tensor *q_w, *q_b, *k_w, *k_b, *v_w, *v_b;
	const struct sd_tensor *proj_w, *proj_b;	/* NULL when pre-only */
	const struct sd_tensor *fc1_w, *fc1_b, *fc2_w, *fc2_b;	/* likewise */
	struct sd_tensor split[6];	/* views of the fused qkv weight and bias */
};

struct mmdit_block {
	struct mmdit_stream x, context;
	int pre_only;		/* the context stream gives keys and values only */
};

/* ---- loading ---- */

/* The module names of one layout (".weight" and ".bias" are appended);
 * per stream [0] image, [1] context.  qkv is the fused projection, or NULL
 * when q, k and v are separate. */
struct layout {
	const char *patch, *pos, *t1, *t2, *y1, *y2, *context, *final_mod, *final_linear;
	const char *block_fmt;
	const char *mod[2], *qkv[2], *q[2], *k[2], *v[2], *proj[2], *fc1[2], *fc2[2];
	int swapped;		/* 2-way adaLN chunks stored as (scale, shift) */
};

static const struct layout original_layout = {
	"x_embedder.proj", "pos_embed", "t_embedder.mlp.0", "t_embedder.mlp.2",
	"y_embedder.mlp.0", "y_embedder.mlp.2", "context_embedder",
	"final_layer.adaLN_modulation.1", "final_layer.linear",
	"joint_blocks.%d.",
	{ "x_block.adaLN_modulation.1", "context_block.adaLN_modulation.1" },
	{ "x_block.attn.qkv", "context_block.attn.qkv" },
	{ NULL, NULL }, { NULL, NULL }, { NULL, NULL },
	{ "x_block.attn.proj", "context_block.attn.proj" },
	{ "x_block.mlp.fc1", "context_block.mlp.fc1" },
	{ "x_block.mlp.fc2", "context_block.mlp.fc2" },
	0,
};

static const struct layout diffusers_layout = {
	"pos_embed.proj", "pos_embed.pos_embed",
	"time_text_embed.timestep_embedder.linear_1", "time_text_embed.timestep_embedder.linear_2",
	"time_text_embed.text_embedder.linear_1", "time_text_embed.text_embedder.linear_2",
	"context_embedder", "norm_out.linear", "proj_out",
	"transformer_blocks.%d.",
	{ "norm1.linear", "norm1_context.linear" },
	{ NULL, NULL },
	{ "attn.to_q", "attn.add_q_proj" }, { "attn.to_k", "attn.add_k_proj" },
	{ "attn.to_v", "attn.add_v_proj" },
	{ "attn.to_out.0", "attn.to_add_out" },
	{ "ff.net.0.proj", "ff_context.net.0.proj" },
	{ "ff.net.2", "ff_context.net.2" },
	1,
};

struct loader {
	const struct sd_weights *w;
	const char *prefix;
	struct sd_error *err;
	const struct layout *l;
	struct mmdit *m;
};

/* "<prefix><block><module>.<suffix>" with the given dims (-1: any; trailing
 * 0s are not dims), or NULL with err naming it. */
static const struct sd_tensor *
need(struct loader *ld, const char *block, const char *module, const char *suffix,
    int64_t d0, int64_t d1, int64_t d2, int64_t d3)
{
	int64_t shape[4] = { d0, d1, d2, d3 };
	char p[320], name[160];
	int ndim = 0;

	while (ndim < 4 && shape[ndim] != 0)
		ndim++;
	snprintf(p, sizeof p, "%s%s", ld->prefix, block);
	snprintf(name, sizeof name, "%s%s%s", module, *suffix ? "." : "", suffix);
	return weights_need(ld->w, ld->err, p, name, ndim, shape);
}

/* A linear layer's weight [nout, nin] and bias [nout]; -1 with err. */
static int
need_linear(struct loader *ld, const char *block, const char *module, int64_t nout,
    int64_t nin, const struct sd_tensor **w, const struct sd_tensor **b)
{
	if ((*w = need(ld, block, module, "weight", nout, nin, 0, 0)) == NULL ||
	    (*b = need(ld, block, module, "bias", (*w)->shape[0], 0, 0, 0)) == NULL)
		return -1;
	return 0;
}

/* True when "<prefix><block><module>.weight" exists. */
static int
has(struct loader *ld, const char *block, const char *module)
{
	char full[512];

	snprintf(full, sizeof full, "%s%s%s.weight", ld->prefix, block, module);
	return weights_get(ld->w, full) != NULL;
}

/* Stream s (0 image, 1 context) of the block at `block`. */
static int
load_stream(struct loader *ld, struct mmdit_stream *st, const char *block, int s, int last)
{
	const struct layout *l = ld->l;
	int64_t d = ld->m->width;

	/* the adaLN: 6 chunks, or 2 for the last block's context stream */
	if ((st->mod_w = need(ld, block, l->mod[s], "weight", -1, d, 0, 0)) == NULL)
		return -1;
	st->chunks = (int)(st->mod_w->shape[0] / d);
	if (st->mod_w->shape[0] % d != 0 || (st->chunks != 6 && !(s == 1 && st->chunks == 2))) {
		return sd_fail(ld->err, SD_EDATA, "MMDiT tensor \"%s%s%s.weight\" has %lld rows: "
		    "not %s x the width %lld", ld->prefix, block, l->mod[s],
		    (long long)st->mod_w->shape[0], s == 1 ? "6 (or 2 in the last block)" : "6",
		    (long long)d);
	}
	if (st->chunks == 2 && !last)
		return sd_fail(ld->err, SD_EDATA, "MMDiT block \"%s%s\": a context stream without "
		    "outputs (2-way adaLN) before the last block", ld->prefix, block);
	if ((st->mod_b = need(ld, block, l->mod[s], "bias", st->mod_w->shape[0], 0, 0, 0)) == NULL)
		return -1;
	/* 6-way: shift, scale, gate, ... in both layouts; 2-way: (shift,
	 * scale) in the file, swapped in diffusers */
	st->shift_at = st->chunks == 2 && l->swapped ? (int)d : 0;
	st->scale_at = st->chunks == 2 && l->swapped ? 0 : (int)d;

	/* q, k, v: row views of the fused projection, or three layers */
	if (l->qkv[s] != NULL) {
		const struct sd_tensor *qkv_w, *qkv_b;
		if (need_linear(ld, block, l->qkv[s], 3 * d, d, &qkv_w, &qkv_b) < 0)
			return -1;
		st->q_w = sd_tensor_rows(qkv_w, 0, d, &st->split[0]);
		st->k_w = sd_tensor_rows(qkv_w, d, d, &st->split[1]);
		st->v_w = sd_tensor_rows(qkv_w, 2 * d, d, &st->split[2]);
		st->q_b = sd_tensor_rows(qkv_b, 0, d, &st->split[3]);
		st->k_b = sd_tensor_rows(qkv_b, d, d, &st->split[4]);
		st->v_b = sd_tensor_rows(qkv_b, 2 * d, d, &st->split[5]);
	} else if (need_linear(ld, block, l->q[s], d, d, &st->q_w, &st->q_b) < 0 ||
	    need_linear(ld, block, l->k[s], d, d, &st->k_w, &st->k_b) < 0 ||
	    need_linear(ld, block, l->v[s], d, d, &st->v_w, &st->v_b) < 0) {
		return -1;
	}
	if (st->chunks == 2)
		return 0;	/* pre-only: no projection, no MLP */

	if (need_linear(ld, block, l->proj[s], d, d, &st->proj_w, &st->proj_b) < 0 ||
	    need_linear(ld, block, l->fc1[s], ld->m->mlp_dim, d, &st->fc1_w, &st->fc1_b) < 0 ||
	    need_linear(ld, block, l->fc2[s], d, ld->m->mlp_dim, &st->fc2_w, &st->fc2_b) < 0)
		return -1;
	return 0;
}

/* -1 with err when a layer's input width (from the tensor module.weight)
 * is 0. */
static int
empty(struct loader *ld, const char *module, int width)
{
	if (width >= 1)
		return 0;
	return sd_fail(ld->err, SD_EDATA, "MMDiT tensor \"%s%s.weight\" is empty (an input "
	    "width of 0)", ld->prefix, module);
}

struct mmdit *
mmdit_load(const struct sd_weights *w, const char *prefix, const struct mmdit_config *cfg,
    struct sd_error *err)
{
	struct loader ld = { w, prefix != NULL ? prefix : "", err, NULL, NULL };
	const struct sd_tensor *t;
	struct mmdit *m;
	char block[64];
	int64_t d, grid;

	if ((m = ld.m = calloc(1, sizeof *m)) == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		return NULL;
	}
	/* the layout: the patch embedding's name says which */
	ld.l = &original_layout;
	if (!has(&ld, "", original_layout.patch)) {
		ld.l = &diffusers_layout;
		if (!has(&ld, "", diffusers_layout.patch)) {
			sd_fail(err, SD_EDATA, "no SD3 transformer (MMDiT) under \"%s\": neither "
			    "\"%s%s.weight\" (single file) nor \"%s%s.weight\" (diffusers) is there",
			    ld.prefix, ld.prefix, original_layout.patch, ld.prefix,
			    diffusers_layout.patch);
			goto fail;
		}
	}
	m->diffusers = ld.l == &diffusers_layout;

	/* the widths from the patch embedding, a square p x p conv */
	if ((m->patch_w = need(&ld, "", ld.l->patch, "weight", -1, -1, -1, -1)) == NULL)
		goto fail;
	d = m->patch_w->shape[0];
	m->width = (int)d;
	m->in_channels = (int)m->patch_w->shape[1];
	m->patch = (int)m->patch_w->shape[2];
	if (m->patch_w->shape[3] != m->patch || m->patch < 1 || d < 1 || m->in_channels < 1) {
		sd_fail(err, SD_EDATA, "MMDiT tensor \"%s%s.weight\": a patch embedding of %lldx%lld "
		    "is not square", ld.prefix, ld.l->patch, (long long)m->patch_w->shape[2],
		    (long long)m->patch_w->shape[3]);
		goto fail;
	}
	if ((m->patch_b = need(&ld, "", ld.l->patch, "bias", d, 0, 0, 0)) == NULL)
		goto fail;
	m->heads = cfg != NULL && cfg->heads > 0 ? cfg->heads : (int)(d / HEAD_WIDTH);
	if (m->heads < 1 || d % m->heads != 0) {
		sd_fail(err, SD_EDATA, "MMDiT under \"%s\": a width of %lld does not split into %d "
		    "heads", ld.prefix, (long long)d, m->heads);
		goto fail;
	}
	m->head_dim = (int)(d / m->heads);

	/* the position table [1, M*M, D], a square of M x M patches */
	if ((t = need(&ld, "", ld.l->pos, "", 1, -1, d, 0)) == NULL)
		goto fail;
	grid = (int64_t)llround(sqrt((double)t->shape[1]));
	if (grid < 1 || grid * grid != t->shape[1]) {
		sd_fail(err, SD_EDATA, "MMDiT tensor \"%s%s\": %lld positions are not a square grid",
		    ld.prefix, ld.l->pos, (long long)t->shape[1]);
		goto fail;
	}
	m->pos_max = (int)grid;
	m->pos_table = *t;
	m->pos_table.ndim = 2;
	m->pos_table.shape[0] = grid * grid;
	m->pos_table.shape[1] = d;
	m->pos_table.shape[2] = 0;

	/* timestep and pooled-text embedders, context embedder */
	if ((m->t1_w = need(&ld, "", ld.l->t1, "weight", d, -1, 0, 0)) == NULL)
		goto fail;
	m->freq_dim = (int)m->t1_w->shape[1];
	if ((m->y1_w = need(&ld, "", ld.l->y1, "weight", d, -1, 0, 0)) == NULL)
		goto fail;
	m->pooled_dim = (int)m->y1_w->shape[1];
	if ((m->context_w = need(&ld, "", ld.l->context, "weight", d, -1, 0, 0)) == NULL)
		goto fail;
	m->ctx_dim = (int)m->context_w->shape[1];
	if (empty(&ld, ld.l->y1, m->pooled_dim) < 0 || empty(&ld, ld.l->context, m->ctx_dim) < 0)
		goto fail;
	if (m->freq_dim < 2 || m->freq_dim % 2 != 0) {
		sd_fail(err, SD_EDATA, "MMDiT tensor \"%s%s.weight\": a timestep embedding of %d "
		    "channels (an even count is needed)", ld.prefix, ld.l->t1, m->freq_dim);
		goto fail;
	}
	if (need_linear(&ld, "", ld.l->t1, d, m->freq_dim, &m->t1_w, &m->t1_b) < 0 ||
	    need_linear(&ld, "", ld.l->t2, d, d, &m->t2_w, &m->t2_b) < 0 ||
	    need_linear(&ld, "", ld.l->y1, d, m->pooled_dim, &m->y1_w, &m->y1_b) < 0 ||
	    need_linear(&ld, "", ld.l->y2, d, d, &m->y2_w, &m->y2_b) < 0 ||
	    need_linear(&ld, "", ld.l->context, d, m->ctx_dim, &m->context_w, &m->context_b) < 0)
		goto fail;

	/* the joint blocks: as many as there are image-stream adaLNs */
	for (m->depth = 0; ; m->depth++) {
		snprintf(block, sizeof block, ld.l->block_fmt, m->depth);
		if (!has(&ld, block, ld.l->mod[0]))
			break;
	}
	if (m->depth == 0) {
		snprintf(block, sizeof block, ld.l->block_fmt, 0);
		need(&ld, block, ld.l->mod[0], "weight", 6 * d, d, 0, 0);
		goto fail;
	}
	snprintf(block, sizeof block, ld.l->block_fmt, 0);
	if ((t = need(&ld, block, ld.l->fc1[0], "weight", -1, d, 0, 0)) == NULL)
		goto fail;
	m->mlp_dim = (int)t->shape[0];
	if (m->mlp_dim < 1) {
		sd_fail(err, SD_EDATA, "MMDiT tensor \"%s%s%s.weight\" is empty", ld.prefix, block,
		    ld.l->fc1[0]);
		goto fail;
	}
	if ((m->block = calloc((size_t)m->depth, sizeof *m->block)) == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		goto fail;
	}
	for (int i = 0; i < m->depth; i++) {
		struct mmdit_block *blk = &m->block[i];
		snprintf(block, sizeof block, ld.l->block_fmt, i);
		if (load_stream(&ld, &blk->x, block, 0, i == m->depth - 1) < 0 ||
		    load_stream(&ld, &blk->context, block, 1, i == m->depth - 1) < 0)
			goto fail;
		blk->pre_only = blk->context.chunks == 2;
	}

	/* the final layer: 2-way adaLN, linear to p*p*out per token */
	if (need_linear(&ld, "", ld.l->final_mod, 2 * d, d, &m->final_mod_w, &m->final_mod_b) < 0 ||
	    need_linear(&ld, "", ld.l->final_linear, -1, d, &m->final_w, &m->final_b) < 0)
		goto fail;
	m->final_shift_at = ld.l->swapped ? (int)d : 0;
	m->final_scale_at = ld.l->swapped ? 0 : (int)d;
	if (m->final_w->shape[0] < 1 || m->final_w->shape[0] % ((int64_t)m->patch * m->patch) != 0) {
		sd_fail(err, SD_EDATA, "MMDiT tensor \"%s%s.weight\": %lld outputs are not a whole "
		    "number of channels of %dx%d patches", ld.prefix, ld.l->final_linear,
		    (long long)m->final_w->shape[0], m->patch, m->patch);
		goto fail;
	}
	m->out_channels = (int)(m->final_w->shape[0] / ((int64_t)m->patch * m->patch));
	return m;
fail:
	mmdit_free(m);
	return NULL;
}

void
mmdit_free(struct mmdit *m)
{
	if (m == NULL)
		return;
	free(m->block);
	free(m->host);
	free(m->pos_ids);
	free(m);
}

void
mmdit_set_debug(struct mmdit *m, mmdit_debug_fn fn, void *user)
{
	m->debug = fn;
	m->debug_user = user;
}

int
mmdit_check_size(const struct mmdit *m, int h, int w, struct sd_error *err)
{
	int p = m->patch, most = m->pos_max * p;

	if (h < p || w < p || h % p != 0 || w % p != 0)
		return sd_fail(err, SD_EDATA, "SD3: latents of %dx%d cannot be cut into %dx%d patches "
		    "(positive multiples of %d needed)", h, w, p, p, p);
	if (h / p > m->pos_max || w / p > m->pos_max)
		return sd_fail(err, SD_EDATA, "SD3: latents of %dx%d are larger than the transformer's "
		    "position table covers (%d x %d patches of %d: at most %dx%d latent pixels)",
		    h, w, m->pos_max, m->pos_max, p, most, most);
	return 0;
}

/* ---- the forward pass ---- */

static void
debug(struct mmdit *m, const float *x, size_t n, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void
debug(struct mmdit *m, const float *x, size_t n, const char *fmt, ...)
{
	char name[64];
	va_list ap;

	if (m->debug == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(name, sizeof name, fmt, ap);
	va_end(ap);
	m->debug(m->debug_user, name, x, n);
}

/* out[0..dim) = [cos(v f) | sin(v f)] with f[i] = exp(-ln(10000) i / half),
 * half = dim/2, in float32 as torch computes it (diffusers' Timesteps with
 * flip_sin_to_cos, no shift). */
static void
sinusoid(float *out, float v, int dim)
{
	int half = dim / 2;

	for (int i = 0; i < half; i++) {
		float exponent = (float)-log(10000.0) * (float)i / (float)half;
		float arg = v * expf(exponent);
		out[i] = (float)cos((double)arg);
		out[half + i] = (float)sin((double)arg);
	}
}

/* Grow the host scratch; -1 when out of memory. */
static int
host_scratch(struct mmdit *m, size_t floats, size_t ids)
{
	if (floats > m->host_cap) {
		float *p = realloc(m->host, floats * sizeof *p);
		if (p == NULL)
			return -1;
		m->host = p;
		m->host_cap = floats;
	}
	if (ids > m->pos_cap) {
		int *p = realloc(m->pos_ids, ids * sizeof *p);
		if (p == NULL)
			return -1;
		m->pos_ids = p;
		m->pos_cap = ids;
	}
	return 0;
}

/* tokens [b, N, D] = the patch embedding of x [b, in, h, w] plus the centre
 * crop of the position table (rows top.., columns left..). */
static void
embed_patches(struct mmdit *m, struct sd_ctx *c, float *tokens, const float *x, int b,
    int h, int w)
{
	int p = m->patch, gh = h / p, gw = w / p, n = gh * gw, d = m->width;
	int top = (m->pos_max - gh) / 2, left = (m->pos_max - gw) / 2;
	size_t mark = sd_mark(c);
	float *conv = sd_alloc(c, (size_t)b * d * n);
	float *pos = sd_alloc(c, (size_t)n * d);

	op_conv2d(c, conv, x, b, m->in_channels, h, w, m->patch_w, m->patch_b, p, 0);
	op_transpose(c, tokens, conv, b, d, n);		/* [b, D, N] -> [b, N, D] */
	for (int i = 0; i < gh; i++)
		for (int j = 0; j < gw; j++)
			m->pos_ids[i * gw + j] = (top + i) * m->pos_max + left + j;
	op_embed(c, pos, m->pos_ids, n, &m->pos_table, NULL, 0);
	for (int i = 0; i < b; i++)
		op_add(c, tokens + (size_t)i * n * d, tokens + (size_t)i * n * d, pos, (size_t)n * d);
	sd_release(c, mark);
}

/* temb [b, D] = timestep MLP(sinusoid(t)) + pooled MLP(pooled); both
 * linear -> SiLU -> linear. */
static void
time_text_embedding(struct mmdit *m, struct sd_ctx *c, float *temb, const float *timesteps,
    const float *pooled, int b)
{
	int d = m->width;
	size_t mark = sd_mark(c);
	float *proj = sd_alloc(c, (size_t)b * m->freq_dim);
	float *hidden = sd_alloc(c, (size_t)b * d);
	float *text = sd_alloc(c, (size_t)b * m->pooled_dim);
	float *pooled_emb = sd_alloc(c, (size_t)b * d);

	for (int i = 0; i < b; i++)
		sinusoid(m->host + (size_t)i * m->freq_dim, timesteps[i], m->freq_dim);
	sd_upload(c, proj, m->host, (size_t)b * m->freq_dim);
	debug(m, proj, (size_t)b * m->freq_dim, "time_proj");
	op_linear(c, hidden, proj, b, m->freq_dim, m->t1_w, m->t1_b);
	op_silu(c, hidden, (size_t)b * d);
	op_linear(c, temb, hidden, b, d, m->t2_w, m->t2_b);
	debug(m, temb, (size_t)b * d, "timestep_emb");

	sd_upload(c, text, pooled, (size_t)b * m->pooled_dim);
	op_linear(c, hidden, text, b, m->pooled_dim, m->y1_w, m->y1_b);
	op_silu(c, hidden, (size_t)b * d);
	op_linear(c, pooled_emb, hidden, b, d, m->y2_w, m->y2_b);
	debug(m, pooled_emb, (size_t)b * d, "pooled_emb");

	op_add(c, temb, temb, pooled_emb, (size_t)b * d);
	debug(m, temb, (size_t)b * d, "temb");
	sd_release(c, mark);
}

/* s [b, n, D] += gate2 * MLP(LN(s) * (1 + scale2) + shift2), the MLP
 * fc2(gelu_tanh(fc1(.))); mod [b, 6D] is the stream's modulation. */
static void
mlp_forward(struct mmdit *m, struct sd_ctx *c, const struct mmdit_stream *st, float *s,
    const float *mod, int b, int n)
{
	int d = m->width;
	size_t mark = sd_mark(c), rows = (size_t)b * n;
	float *norm = sd_alloc(c, rows * d);
	float *hidden = sd_alloc(c, rows * m->mlp_dim);

	op_layer_norm_modulate(c, norm, s, b, n, d, LN_EPS, mod + 3 * d, mod + 4 * d, 6 * d);
	op_linear(c, hidden, norm, (int)rows, d, st->fc1_w, st->fc1_b);
	op_gelu_tanh(c, hidden, rows * m->mlp_dim);
	op_linear(c, norm, hidden, (int)rows, m->mlp_dim, st->fc2_w, st->fc2_b);
	op_gated_add(c, s, mod + 5 * d, 6 * d, norm, b, n, d);
	sd_release(c, mark);
}

/* q, k and v of one stream's n tokens (normed [b, n, D]) into rows
 * [at, at + n) of each batch item's L rows of q, k, v [b, L, D]. */
static void
project_qkv(struct sd_ctx *c, const struct mmdit_stream *st, float *q, float *k, float *v,
    const float *normed, int b, int n, int at, int len, int d)
{
	for (int i = 0; i < b; i++) {
		const float *src = normed + (size_t)i * n * d;
		size_t row = ((size_t)i * len + at) * d;
		op_linear(c, q + row, src, n, d, st->q_w, st->q_b);
		op_linear(c, k + row, src, n, d, st->k_w, st->k_b);
		op_linear(c, v + row, src, n, d, st->v_w, st->v_b);
	}
}

/* s [b, n, D] += gate1 * proj(rows [at, at + n) of each batch item's L
 * rows of the attention's output att [b, L, D]). */
static void
attention_out(struct sd_ctx *c, const struct mmdit_stream *st, float *s, const float *mod,
    const float *att, float *tmp, int b, int n, int at, int len, int d)
{
	for (int i = 0; i < b; i++)
		op_linear(c, tmp + (size_t)i * n * d, att + ((size_t)i * len + at) * d, n, d,
		    st->proj_w, st->proj_b);
	op_gated_add(c, s, mod + 2 * d, 6 * d, tmp, b, n, d);
}

/* One joint block on the image tokens x [b, N, D] and the context tokens
 * ctx [b, T, D], in place; cond = SiLU(temb) [b, D]. */
static void
joint_block_forward(struct mmdit *m, struct sd_ctx *c, const struct mmdit_block *blk,
    float *x, float *ctx, const float *cond, int b, int n, int t)
{
	int d = m->width, len = n + t, cd = blk->context.chunks * d;
	size_t mark = sd_mark(c), all = (size_t)b * len * d;
	float *mod_x = sd_alloc(c, (size_t)b * 6 * d);
	float *mod_c = sd_alloc(c, (size_t)b * cd);
	size_t attn_mark = sd_mark(c);
	float *norm_x = sd_alloc(c, (size_t)b * n * d);
	float *norm_c = sd_alloc(c, (size_t)b * t * d);
	float *q = sd_alloc(c, all), *k = sd_alloc(c, all), *v = sd_alloc(c, all);
	float *att = sd_alloc(c, all);

	/* adaLN modulations of both streams */
	op_linear(c, mod_x, cond, b, d, blk->x.mod_w, blk->x.mod_b);
	op_linear(c, mod_c, cond, b, d, blk->context.mod_w, blk->context.mod_b);

	/* one attention over [image tokens, context tokens] */
	op_layer_norm_modulate(c, norm_x, x, b, n, d, LN_EPS, mod_x, mod_x + d, 6 * d);
	op_layer_norm_modulate(c, norm_c, ctx, b, t, d, LN_EPS, mod_c + blk->context.shift_at,
	    mod_c + blk->context.scale_at, cd);
	project_qkv(c, &blk->x, q, k, v, norm_x, b, n, 0, len, d);
	project_qkv(c, &blk->context, q, k, v, norm_c, b, t, n, len, d);
	op_attention(c, att, q, d, k, d, v, d, b, len, len, m->heads, m->head_dim,
	    (float)(1.0 / sqrt((double)m->head_dim)), 0);

	/* each stream: gated attention output, then the gated MLP */
	attention_out(c, &blk->x, x, mod_x, att, norm_x, b, n, 0, len, d);
	if (!blk->pre_only)
		attention_out(c, &blk->context, ctx, mod_c, att, norm_c, b, t, n, len, d);
	sd_release(c, attn_mark);
	mlp_forward(m, c, &blk->x, x, mod_x, b, n);
	if (!blk->pre_only)
		mlp_forward(m, c, &blk->context, ctx, mod_c, b, t);
	sd_release(c, mark);
}

int
mmdit_forward(struct mmdit *m, struct sd_ctx *c, float *out, const float *x, int b,
    int h, int w, const float *timesteps, const float *context, int ctx_len,
    const float *pooled, struct sd_error *err)
{
	int p = m->patch, n = (h / p) * (w / p), d = m->width, feat = p * p * m->out_channels;
	size_t mark;
	float *tokens, *ctx, *cond, *norm, *mod, *proj;

	if (mmdit_check_size(m, h, w, err) < 0)
		return -1;
	if (b < 1 || ctx_len < 1 || timesteps == NULL || pooled == NULL || context == NULL)
		return sd_fail(err, SD_EINTERNAL, "mmdit_forward: batch %d, context of %d tokens%s",
		    b, ctx_len, timesteps == NULL || pooled == NULL ? ", no timesteps or pooled text" : "");
	if (host_scratch(m, (size_t)b * (m->freq_dim > m->pooled_dim ? m->freq_dim : m->pooled_dim),
	    (size_t)n) < 0)
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	mark = sd_mark(c);

	/* 1. image patches + positions; the conditioning vector; the context */
	tokens = sd_alloc(c, (size_t)b * n * d);
	embed_patches(m, c, tokens, x, b, h, w);
	debug(m, tokens, (size_t)b * n * d, "patch_pos_embed");
	cond = sd_alloc(c, (size_t)b * d);
	time_text_embedding(m, c, cond, timesteps, pooled, b);
	op_silu(c, cond, (size_t)b * d);	/* every adaLN takes SiLU(temb) */
	ctx = sd_alloc(c, (size_t)b * ctx_len * d);
	op_linear(c, ctx, context, b * ctx_len, m->ctx_dim, m->context_w, m->context_b);
	debug(m, ctx, (size_t)b * ctx_len * d, "context_embedded");

	/* 2. the joint blocks */
	for (int i = 0; i < m->depth; i++) {
		joint_block_forward(m, c, &m->block[i], tokens, ctx, cond, b, n, ctx_len);
		if (!m->block[i].pre_only)
			debug(m, ctx, (size_t)b * ctx_len * d, "block%d.context", i);
		debug(m, tokens, (size_t)b * n * d, "block%d.x", i);
	}

	/* 3. final adaLN (shift, scale), linear, patches back to an image */
	mod = sd_alloc(c, (size_t)b * 2 * d);
	norm = sd_alloc(c, (size_t)b * n * d);
	proj = sd_alloc(c, (size_t)b * n * feat);
	op_linear(c, mod, cond, b, d, m->final_mod_w, m->final_mod_b);
	op_layer_norm_modulate(c, norm, tokens, b, n, d, LN_EPS, mod + m->final_shift_at,
	    mod + m->final_scale_at, 2 * d);
	debug(m, norm, (size_t)b * n * d, "norm_out");
	op_linear(c, proj, norm, b * n, d, m->final_w, m->final_b);
	debug(m, proj, (size_t)b * n * feat, "proj_out");
	op_unpatchify(c, out, proj, b, m->out_channels, h, w, p);
	sd_release(c, mark);
	return 0;
}
