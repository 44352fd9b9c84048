/* unet.c: the SD 1.x/2.x UNet, as diffusers' UNet2DConditionModel computes it.
 *
 * The original layout numbers the blocks the way the network runs:
 *   input_blocks.0       conv_in
 *   input_blocks.1..11   a resblock (+ a transformer), or a downsampler "op"
 *   middle_block.0..2    resblock, transformer, resblock
 *   output_blocks.0..11  a resblock on cat([h, skip]) (+ a transformer)
 *                        (+ an upsampler "conv")
 *   out.0, out.2         GroupNorm + SiLU, conv_out
 * Every input block's output (and conv_in's) is pushed on a skip list that
 * the output blocks pop, last in first out.
 *
 * Memory: the skips stay in the arena until the end; everything else a block
 * needs is released when the block ends (sd_mark/sd_release), and the up
 * path alternates between two buffers, so the peak is the skips plus two
 * activations plus one block's temporaries. */
#include "config.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/unet.h"

#define GN_GROUPS 32
#define RES_GN_EPS 1e-5f	/* resblocks and the final norm */
#define ATTN_GN_EPS 1e-6f	/* SpatialTransformer's norm */
#define LN_EPS 1e-5f
#define FF_ROWS 2048		/* tokens per feed-forward chunk */

/* ResBlock: x -> conv1(SiLU(GN(x))) + emb(SiLU(temb)) -> conv2(SiLU(GN(.)))
 * + skip(x). */
struct resblock {
	int cin, cout;
	const struct sd_tensor *norm1_w, *norm1_b;	/* in_layers.0 */
	const struct sd_tensor *conv1_w, *conv1_b;	/* in_layers.2 */
	const struct sd_tensor *emb_w, *emb_b;		/* emb_layers.1 */
	const struct sd_tensor *norm2_w, *norm2_b;	/* out_layers.0 */
	const struct sd_tensor *conv2_w, *conv2_b;	/* out_layers.3 */
	const struct sd_tensor *skip_w, *skip_b;	/* skip_connection (1x1) or NULL */
};

/* Multi-head attention: to_q, to_k, to_v (no bias), to_out.0. */
struct attention {
	const struct sd_tensor *q, *k, *v, *out_w, *out_b;
	int kv_dim;		/* width of the keys' source: C, or the context's */
	int cross;		/* attends to the context: keys, values cacheable */
	size_t kv_at;		/* cross: its keys in unet_set_context's cache
				 * start at kv_at floats a context token */
};

/* BasicTransformerBlock: self-attention, cross-attention, GEGLU MLP. */
struct transformer_block {
	const struct sd_tensor *norm1_w, *norm1_b;
	struct attention attn1;
	const struct sd_tensor *norm2_w, *norm2_b;
	struct attention attn2;
	const struct sd_tensor *norm3_w, *norm3_b;
	const struct sd_tensor *ff_in_w, *ff_in_b;	/* ff.net.0.proj: C -> 2*inner */
	const struct sd_tensor *ff_out_w, *ff_out_b;	/* ff.net.2: inner -> C */
	int ff_inner;
};

/* SpatialTransformer: GN -> proj_in -> blocks on h*w tokens -> proj_out,
 * + the input. */
struct transformer {
	int ch, depth, heads;
	const struct sd_tensor *norm_w, *norm_b;
	const struct sd_tensor *proj_in_w, *proj_in_b;
	const struct sd_tensor *proj_out_w, *proj_out_b;
	struct transformer_block *block;	/* [depth] */
};

struct unet_block {
	int has_res, has_attn, has_res2;
	struct resblock res;
	struct transformer attn;
	struct resblock res2;				/* middle_block.2 only */
	const struct sd_tensor *down_w, *down_b;	/* 3x3 stride-2 "op", or NULL */
	const struct sd_tensor *up_w, *up_b;		/* nearest 2x + 3x3 "conv", or NULL */
	int cout;		/* channels of the block's output */
};

/* ---- loading ---- */

struct loader {
	const struct sd_weights *w;
	const char *prefix;
	struct sd_error *err;
	struct unet *u;
};

/* "<prefix><block><name>" with the given dims (-1: any; trailing 0s are not
 * dims), or NULL with err naming it. */
static const struct sd_tensor *
need(struct loader *ld, const char *block, const char *name, int64_t d0, int64_t d1,
    int64_t d2, int64_t d3)
{
	int64_t shape[4] = { d0, d1, d2, d3 };
	char p[256];
	int ndim = 0;

	while (ndim < 4 && shape[ndim] != 0)
		ndim++;
	snprintf(p, sizeof p, "%s%s", ld->prefix, block);
	return weights_need(ld->w, ld->err, p, name, ndim, shape);
}

/* True when "<prefix><block><any of names>" exists (names ends with NULL). */
static int
has_any(struct loader *ld, const char *block, const char *const *names)
{
	char full[512];

	for (; *names != NULL; names++) {
		snprintf(full, sizeof full, "%s%s%s", ld->prefix, block, *names);
		if (weights_get(ld->w, full) != NULL)
			return 1;
	}
	return 0;
}

static const char *const resblock_names[] = {
	"in_layers.0.weight", "in_layers.0.bias", "in_layers.2.weight", "in_layers.2.bias",
	"emb_layers.1.weight", "emb_layers.1.bias", "out_layers.0.weight", "out_layers.0.bias",
	"out_layers.3.weight", "out_layers.3.bias", "skip_connection.weight", NULL
};
static const char *const transformer_names[] = {
	"norm.weight", "norm.bias", "proj_in.weight", "proj_in.bias", "proj_out.weight",
	"proj_out.bias", "transformer_blocks.0.norm1.weight", NULL
};
static const char *const down_names[] = { "op.weight", "op.bias", NULL };
static const char *const up_names[] = { "conv.weight", "conv.bias", NULL };

static int
check_groups(struct loader *ld, const char *block, int ch)
{
	if (ch > 0 && ch % GN_GROUPS == 0)
		return 0;
	return sd_fail(ld->err, SD_EDATA, "UNet block \"%s%s\": %d channels is not a multiple "
	    "of the %d GroupNorm groups", ld->prefix, block, ch, GN_GROUPS);
}

/* The resblock at block (e.g. "input_blocks.1.0.") taking cin channels. */
static int
load_resblock(struct loader *ld, struct resblock *r, const char *block, int cin)
{
	int temb = ld->u->time_embed_dim;
	int64_t co;

	r->cin = cin;
	if (check_groups(ld, block, cin) < 0)
		return -1;
	if ((r->conv1_w = need(ld, block, "in_layers.2.weight", -1, cin, 3, 3)) == NULL)
		return -1;
	co = r->conv1_w->shape[0];
	r->cout = (int)co;
	if (check_groups(ld, block, r->cout) < 0)
		return -1;
	if ((r->norm1_w = need(ld, block, "in_layers.0.weight", cin, 0, 0, 0)) == NULL ||
	    (r->norm1_b = need(ld, block, "in_layers.0.bias", cin, 0, 0, 0)) == NULL ||
	    (r->conv1_b = need(ld, block, "in_layers.2.bias", co, 0, 0, 0)) == NULL ||
	    (r->emb_w = need(ld, block, "emb_layers.1.weight", co, temb, 0, 0)) == NULL ||
	    (r->emb_b = need(ld, block, "emb_layers.1.bias", co, 0, 0, 0)) == NULL ||
	    (r->norm2_w = need(ld, block, "out_layers.0.weight", co, 0, 0, 0)) == NULL ||
	    (r->norm2_b = need(ld, block, "out_layers.0.bias", co, 0, 0, 0)) == NULL ||
	    (r->conv2_w = need(ld, block, "out_layers.3.weight", co, co, 3, 3)) == NULL ||
	    (r->conv2_b = need(ld, block, "out_layers.3.bias", co, 0, 0, 0)) == NULL)
		return -1;
	/* A 1x1 skip conv when the channel count changes (an identity else). */
	r->skip_w = r->skip_b = NULL;
	if (cin != r->cout || has_any(ld, block, (const char *const[]){
	    "skip_connection.weight", "skip_connection.bias", NULL })) {
		if ((r->skip_w = need(ld, block, "skip_connection.weight", co, cin, 1, 1)) == NULL ||
		    (r->skip_b = need(ld, block, "skip_connection.bias", co, 0, 0, 0)) == NULL)
			return -1;
	}
	return 0;
}

static int
load_attention(struct loader *ld, struct attention *a, const char *block, int ch, int kv_dim)
{
	if ((a->k = need(ld, block, "to_k.weight", ch, kv_dim, 0, 0)) == NULL)
		return -1;
	a->kv_dim = (int)a->k->shape[1];
	if ((a->q = need(ld, block, "to_q.weight", ch, ch, 0, 0)) == NULL ||
	    (a->v = need(ld, block, "to_v.weight", ch, a->kv_dim, 0, 0)) == NULL ||
	    (a->out_w = need(ld, block, "to_out.0.weight", ch, ch, 0, 0)) == NULL ||
	    (a->out_b = need(ld, block, "to_out.0.bias", ch, 0, 0, 0)) == NULL)
		return -1;
	return 0;
}

static int
load_transformer_block(struct loader *ld, struct transformer_block *tb, const char *block,
    int ch)
{
	struct unet *u = ld->u;
	char sub[320];
	int64_t inner2;

	if ((tb->norm1_w = need(ld, block, "norm1.weight", ch, 0, 0, 0)) == NULL ||
	    (tb->norm1_b = need(ld, block, "norm1.bias", ch, 0, 0, 0)) == NULL ||
	    (tb->norm2_w = need(ld, block, "norm2.weight", ch, 0, 0, 0)) == NULL ||
	    (tb->norm2_b = need(ld, block, "norm2.bias", ch, 0, 0, 0)) == NULL ||
	    (tb->norm3_w = need(ld, block, "norm3.weight", ch, 0, 0, 0)) == NULL ||
	    (tb->norm3_b = need(ld, block, "norm3.bias", ch, 0, 0, 0)) == NULL)
		return -1;
	snprintf(sub, sizeof sub, "%sattn1.", block);
	if (load_attention(ld, &tb->attn1, sub, ch, ch) < 0)
		return -1;
	/* The first cross-attention tells the context width; the others agree. */
	snprintf(sub, sizeof sub, "%sattn2.", block);
	if (load_attention(ld, &tb->attn2, sub, ch, u->context_dim ? u->context_dim : -1) < 0)
		return -1;
	u->context_dim = tb->attn2.kv_dim;
	tb->attn2.cross = 1;
	tb->attn2.kv_at = u->kv_width;
	u->kv_width += 2 * (size_t)ch;

	/* GEGLU: proj to 2*inner, a * gelu(gate), back to ch. */
	if ((tb->ff_in_w = need(ld, block, "ff.net.0.proj.weight", -1, ch, 0, 0)) == NULL)
		return -1;
	inner2 = tb->ff_in_w->shape[0];
	if (inner2 < 2 || inner2 % 2 != 0)
		return sd_fail(ld->err, SD_EDATA, "tensor \"%s%sff.net.0.proj.weight\" has %lld "
		    "output features (GEGLU needs an even number)", ld->prefix, block,
		    (long long)inner2);
	tb->ff_inner = (int)(inner2 / 2);
	if ((tb->ff_in_b = need(ld, block, "ff.net.0.proj.bias", inner2, 0, 0, 0)) == NULL ||
	    (tb->ff_out_w = need(ld, block, "ff.net.2.weight", ch, tb->ff_inner, 0, 0)) == NULL ||
	    (tb->ff_out_b = need(ld, block, "ff.net.2.bias", ch, 0, 0, 0)) == NULL)
		return -1;
	return 0;
}

/* The SpatialTransformer at block (e.g. "input_blocks.1.1.") on ch channels. */
static int
load_transformer(struct loader *ld, struct transformer *t, const char *block, int ch)
{
	char sub[256];
	int depth;

	const struct unet_config *cfg = &ld->u->cfg;
	const struct sd_tensor *p;
	char full[320];
	int linear;

	t->ch = ch;
	if (check_groups(ld, block, ch) < 0)
		return -1;
	t->heads = cfg->heads > 0 ? cfg->heads : cfg->head_channels > 0 ? ch / cfg->head_channels : 0;
	if (t->heads < 1 || ch % t->heads != 0)
		return sd_fail(ld->err, SD_EDATA, "UNet block \"%s%s\": %d channels do not split "
		    "into heads of %d", ld->prefix, block, ch,
		    cfg->heads > 0 ? ch / cfg->heads : cfg->head_channels);
	/* proj_in/proj_out: 1x1 convolutions (SD 1.x) or linear layers (SD 2.x,
	 * use_linear_projection), the same product on the tokens. */
	snprintf(full, sizeof full, "%s%sproj_in.weight", ld->prefix, block);
	p = weights_get(ld->w, full);
	linear = p != NULL && p->ndim == 2;
	if ((t->norm_w = need(ld, block, "norm.weight", ch, 0, 0, 0)) == NULL ||
	    (t->norm_b = need(ld, block, "norm.bias", ch, 0, 0, 0)) == NULL ||
	    (t->proj_in_w = need(ld, block, "proj_in.weight", ch, ch, linear ? 0 : 1, linear ? 0 : 1)) == NULL ||
	    (t->proj_in_b = need(ld, block, "proj_in.bias", ch, 0, 0, 0)) == NULL ||
	    (t->proj_out_w = need(ld, block, "proj_out.weight", ch, ch, linear ? 0 : 1, linear ? 0 : 1)) == NULL ||
	    (t->proj_out_b = need(ld, block, "proj_out.bias", ch, 0, 0, 0)) == NULL)
		return -1;
	for (depth = 0; ; depth++) {
		snprintf(sub, sizeof sub, "%stransformer_blocks.%d.", block, depth);
		if (!has_any(ld, sub, (const char *const[]){ "norm1.weight",
		    "attn1.to_q.weight", "attn2.to_k.weight", "ff.net.2.weight", NULL }))
			break;
	}
	if (depth == 0) {	/* names the first missing tensor */
		snprintf(sub, sizeof sub, "%stransformer_blocks.0.", block);
		need(ld, sub, "norm1.weight", ch, 0, 0, 0);
		return -1;
	}
	t->depth = depth;
	if ((t->block = calloc((size_t)depth, sizeof *t->block)) == NULL)
		return sd_fail(ld->err, SD_EINTERNAL, "out of memory");
	for (int i = 0; i < depth; i++) {
		snprintf(sub, sizeof sub, "%stransformer_blocks.%d.", block, i);
		if (load_transformer_block(ld, &t->block[i], sub, ch) < 0)
			return -1;
	}
	return 0;
}

/* A 3x3 conv ch -> ch: the downsampler "op" or the upsampler's "conv". */
static int
load_resample(struct loader *ld, const char *block, int ch, int down,
    const struct sd_tensor **wt, const struct sd_tensor **bias)
{
	if ((*wt = need(ld, block, down ? "op.weight" : "conv.weight", ch, ch, 3, 3)) == NULL ||
	    (*bias = need(ld, block, down ? "op.bias" : "conv.bias", ch, 0, 0, 0)) == NULL)
		return -1;
	return 0;
}

/* How many blocks "<kind>.N." there are from N = first on (a block counts
 * when any tensor we know is there, so that a missing one is reported by
 * name rather than ending the count). */
static int
count_blocks(struct loader *ld, const char *kind, int first)
{
	char sub[160];
	int n, found;

	for (n = first; ; n++) {
		found = 0;
		for (int j = 0; j < 3 && !found; j++) {
			snprintf(sub, sizeof sub, "%s.%d.%d.", kind, n, j);
			found = has_any(ld, sub, resblock_names) ||
			    has_any(ld, sub, transformer_names) ||
			    has_any(ld, sub, down_names) || has_any(ld, sub, up_names);
		}
		if (!found)
			return n - first;
	}
}

/* input_blocks.i: a downsampler, or a resblock (+ a transformer). */
static int
load_input_block(struct loader *ld, struct unet_block *blk, int i, int *ch)
{
	char block[128];

	snprintf(block, sizeof block, "input_blocks.%d.0.", i);
	if (has_any(ld, block, down_names)) {
		if (load_resample(ld, block, *ch, 1, &blk->down_w, &blk->down_b) < 0)
			return -1;
	} else {
		blk->has_res = 1;
		if (load_resblock(ld, &blk->res, block, *ch) < 0)
			return -1;
		*ch = blk->res.cout;
		snprintf(block, sizeof block, "input_blocks.%d.1.", i);
		if (has_any(ld, block, transformer_names)) {
			blk->has_attn = 1;
			if (load_transformer(ld, &blk->attn, block, *ch) < 0)
				return -1;
		}
	}
	blk->cout = *ch;
	return 0;
}

/* output_blocks.i: a resblock on ch + skip_ch channels (+ a transformer)
 * (+ an upsampler). */
static int
load_output_block(struct loader *ld, struct unet_block *blk, int i, int *ch, int skip_ch)
{
	char block[128];
	int next = 1;

	snprintf(block, sizeof block, "output_blocks.%d.0.", i);
	blk->has_res = 1;
	if (load_resblock(ld, &blk->res, block, *ch + skip_ch) < 0)
		return -1;
	*ch = blk->res.cout;
	snprintf(block, sizeof block, "output_blocks.%d.1.", i);
	if (has_any(ld, block, transformer_names)) {
		blk->has_attn = 1;
		if (load_transformer(ld, &blk->attn, block, *ch) < 0)
			return -1;
		next = 2;
	}
	snprintf(block, sizeof block, "output_blocks.%d.%d.", i, next);
	if (has_any(ld, block, up_names) &&
	    load_resample(ld, block, *ch, 0, &blk->up_w, &blk->up_b) < 0)
		return -1;
	blk->cout = *ch;
	return 0;
}

static int
load_middle_block(struct loader *ld, struct unet_block *blk, int *ch)
{
	blk->has_res = blk->has_attn = blk->has_res2 = 1;
	if (load_resblock(ld, &blk->res, "middle_block.0.", *ch) < 0)
		return -1;
	*ch = blk->res.cout;
	if (load_transformer(ld, &blk->attn, "middle_block.1.", *ch) < 0 ||
	    load_resblock(ld, &blk->res2, "middle_block.2.", *ch) < 0)
		return -1;
	*ch = blk->res2.cout;
	blk->cout = *ch;
	return 0;
}

static void
free_blocks(struct unet_block *blk, int n)
{
	if (blk == NULL)
		return;
	for (int i = 0; i < n; i++)
		free(blk[i].attn.block);
	free(blk);
}

/* The keys and values of the cross-attentions of the blocks [0, n). */
static void
cache_blocks(struct unet *u, struct sd_ctx *c, const struct unet_block *blk, int n)
{
	size_t tokens = (size_t)u->kv_b * u->kv_len;

	for (int i = 0; i < n; i++) {
		if (!blk[i].has_attn)
			continue;
		for (int d = 0; d < blk[i].attn.depth; d++) {
			const struct attention *a = &blk[i].attn.block[d].attn2;
			float *k = u->kv + a->kv_at * tokens, *v = k + tokens * blk[i].attn.ch;
			op_linear(c, k, u->kv_context, (int)tokens, a->kv_dim, a->k, NULL);
			op_linear(c, v, u->kv_context, (int)tokens, a->kv_dim, a->v, NULL);
		}
	}
}

void
unet_set_context(struct unet *u, struct sd_ctx *c, const float *context, int b, int ctx_len)
{
	u->kv_context = context;
	u->kv_b = b;
	u->kv_len = ctx_len;
	u->kv = sd_alloc(c, u->kv_width * (size_t)b * ctx_len);
	cache_blocks(u, c, u->input, u->ninput);
	cache_blocks(u, c, u->middle, 1);
	cache_blocks(u, c, u->output, u->noutput);
}

void
unet_clear_context(struct unet *u)
{
	u->kv = NULL;
	u->kv_context = NULL;
}

void
unet_free(struct unet *u)
{
	if (u == NULL)
		return;
	free_blocks(u->input, u->ninput);
	free_blocks(u->middle, 1);
	free_blocks(u->output, u->noutput);
	free(u->skips);
	free(u->skip_channels);
	free(u);
}

struct unet *
unet_load(const struct sd_weights *w, const char *prefix, const struct unet_config *cfg,
    struct sd_error *err)
{
	struct loader ld = { w, prefix != NULL ? prefix : "", err, NULL };
	struct unet *u;
	int *skip_level = NULL;
	int ch, nskip = 0, level = 0, t;

	if ((u = calloc(1, sizeof *u)) == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		return NULL;
	}
	ld.u = u;
	u->cfg = *cfg;
	if ((cfg->heads > 0) == (cfg->head_channels > 0)) {
		sd_fail(err, SD_EINTERNAL, "unet_load: give either heads or head channels");
		goto fail;
	}

	/* conv_in gives the input and base channel counts, time_embed.0 the
	 * time embedding width. */
	if ((u->conv_in_w = need(&ld, "", "input_blocks.0.0.weight", -1, -1, 3, 3)) == NULL)
		goto fail;
	u->model_channels = (int)u->conv_in_w->shape[0];
	u->in_channels = (int)u->conv_in_w->shape[1];
	if (check_groups(&ld, "input_blocks.0.0.", u->model_channels) < 0)
		goto fail;
	if ((u->conv_in_b = need(&ld, "", "input_blocks.0.0.bias", u->model_channels, 0, 0, 0)) == NULL ||
	    (u->time_embed0_w = need(&ld, "", "time_embed.0.weight", -1, u->model_channels, 0, 0)) == NULL)
		goto fail;
	t = u->time_embed_dim = (int)u->time_embed0_w->shape[0];
	if ((u->time_embed0_b = need(&ld, "", "time_embed.0.bias", t, 0, 0, 0)) == NULL ||
	    (u->time_embed2_w = need(&ld, "", "time_embed.2.weight", t, t, 0, 0)) == NULL ||
	    (u->time_embed2_b = need(&ld, "", "time_embed.2.bias", t, 0, 0, 0)) == NULL)
		goto fail;
	/* SDXL: the added ("text_time") embedding. */
	if (has_any(&ld, "", (const char *const[]){ "label_emb.0.0.weight", "label_emb.0.2.weight", NULL })) {
		if ((u->label_emb0_w = need(&ld, "", "label_emb.0.0.weight", t, -1, 0, 0)) == NULL)
			goto fail;
		u->adm_in = (int)u->label_emb0_w->shape[1];
		if ((u->label_emb0_b = need(&ld, "", "label_emb.0.0.bias", t, 0, 0, 0)) == NULL ||
		    (u->label_emb2_w = need(&ld, "", "label_emb.0.2.weight", t, t, 0, 0)) == NULL ||
		    (u->label_emb2_b = need(&ld, "", "label_emb.0.2.bias", t, 0, 0, 0)) == NULL)
			goto fail;
	}

	/* The block lists. */
	u->ninput = count_blocks(&ld, "input_blocks", 1);
	u->noutput = count_blocks(&ld, "output_blocks", 0);
	if (u->ninput == 0) {
		need(&ld, "input_blocks.1.0.", "in_layers.2.weight", -1, -1, 3, 3);
		goto fail;
	}
	u->input = calloc((size_t)u->ninput, sizeof *u->input);
	u->middle = calloc(1, sizeof *u->middle);
	u->output = calloc((size_t)(u->noutput ? u->noutput : 1), sizeof *u->output);
	u->skips = calloc((size_t)u->ninput + 1, sizeof *u->skips);
	u->skip_channels = calloc((size_t)u->ninput + 1, sizeof *u->skip_channels);
	skip_level = calloc((size_t)u->ninput + 1, sizeof *skip_level);
	if (u->input == NULL || u->middle == NULL || u->output == NULL || u->skips == NULL ||
	    u->skip_channels == NULL || skip_level == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		goto fail;
	}

	/* Down: every input block's output becomes a skip connection. */
	ch = u->model_channels;
	u->skip_channels[nskip++] = ch;
	for (int i = 0; i < u->ninput; i++) {
		if (load_input_block(&ld, &u->input[i], i + 1, &ch) < 0)
			goto fail;
		if (u->input[i].down_w != NULL)
			level++;
		skip_level[nskip] = level;
		u->skip_channels[nskip++] = ch;
	}
	u->downsamples = level;

	if (load_middle_block(&ld, u->middle, &ch) < 0)
		goto fail;

	/* Up: one output block per skip, each at its skip's resolution. */
	if (u->noutput != nskip) {
		sd_fail(err, SD_EDATA, "UNet \"%s\": %d output blocks for %d skip connections "
		    "(input_blocks.0..%d)", ld.prefix, u->noutput, nskip, u->ninput);
		goto fail;
	}
	for (int i = 0; i < u->noutput; i++) {
		nskip--;
		if (skip_level[nskip] != level) {
			sd_fail(err, SD_EDATA, "UNet \"%soutput_blocks.%d\": its skip connection "
			    "comes from another resolution (up- and downsamplers do not match)",
			    ld.prefix, i);
			goto fail;
		}
		if (load_output_block(&ld, &u->output[i], i, &ch, u->skip_channels[nskip]) < 0)
			goto fail;
		if (u->output[i].up_w != NULL)
			level--;
	}
	if (level != 0) {
		sd_fail(err, SD_EDATA, "UNet \"%s\": %d downsamplers but %d upsamplers",
		    ld.prefix, u->downsamples, u->downsamples - level);
		goto fail;
	}

	if (check_groups(&ld, "out.0.", ch) < 0 ||
	    (u->norm_out_w = need(&ld, "", "out.0.weight", ch, 0, 0, 0)) == NULL ||
	    (u->norm_out_b = need(&ld, "", "out.0.bias", ch, 0, 0, 0)) == NULL ||
	    (u->conv_out_w = need(&ld, "", "out.2.weight", -1, ch, 3, 3)) == NULL)
		goto fail;
	u->out_channels = (int)u->conv_out_w->shape[0];
	if ((u->conv_out_b = need(&ld, "", "out.2.bias", u->out_channels, 0, 0, 0)) == NULL)
		goto fail;
	free(skip_level);
	return u;
fail:
	free(skip_level);
	unet_free(u);
	return NULL;
}

/* The most skips a forward pass keeps sizes for (SD has 13, SDXL 10). */
#define MAX_SKIPS 64

int
unet_check_size(const struct unet *u, int h, int w, struct sd_error *err)
{
	/* any size: each downsampler pads to ceil(n/2), each upsampler
	 * follows the size of the skip connection it meets (diffusers'
	 * forward_upsample_size) */
	if (h < 1 || w < 1 || h > 65536 / 8 || w > 65536 / 8)
		return sd_fail(err, SD_EDATA, "latents of %dx%d cannot go through the UNet: "
		    "height and width must be 1 to %d (8 to 65536 pixels)", h, w, 65536 / 8);
	if (u->ninput + 1 > MAX_SKIPS)
		return sd_fail(err, SD_EDATA, "a UNet with %d input blocks is not supported",
		    u->ninput);
	return 0;
}

/* y[p, 0:r2, 0:c2] = x[p, 0:r, 0:c] for np planes of r x c (r2 <= r,
 * c2 <= c): the crop of a nearest upsampling to an odd size, by
 * transposes (each backend has them), through tmp (np*r*c floats). */
static void
crop_planes(struct sd_ctx *c, float *y, float *x, float *tmp, int np, int r, int cc,
    int r2, int c2)
{
	if (c2 < cc) {
		/* columns become rows; the planes' first c2*r values are the
		 * first c2*r rows of the [r*c, np] transpose */
		op_transpose(c, tmp, x, np, r, cc);		/* [np][cc][r] */
		op_transpose(c, x, tmp, 1, np, cc * r);		/* [cc*r][np] */
		op_transpose(c, tmp, x, 1, c2 * r, np);		/* [np][c2*r] */
		op_transpose(c, x, tmp, np, c2, r);		/* [np][r][c2] */
		cc = c2;
	}
	if (r2 < r) {
		op_transpose(c, tmp, x, 1, np, r * cc);		/* [r*cc][np] */
		op_transpose(c, x, tmp, 1, r2 * cc, np);	/* [np][r2*cc] */
		r = r2;
	}
	if (y != x)
		op_copy(c, y, x, (size_t)np * r * cc);
}

/* ---- the forward pass ---- */

static void
debug(struct unet *u, float *x, size_t n, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void
debug(struct unet *u, float *x, size_t n, const char *fmt, ...)
{
	char name[96];
	va_list ap;

	if (u->debug == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(name, sizeof name, fmt, ap);
	va_end(ap);
	u->debug(u->debug_user, name, x, n);
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

/* The sinusoidal embedding of each timestep [b, C0], then time_embed:
 * linear -> SiLU -> linear (+ SDXL's added embedding).  Returns SiLU(temb)
 * [b, T], the only form the resblocks use. */
static float *
time_embedding(struct unet *u, struct sd_ctx *c, const float *timesteps, int b, float *host,
    const struct unet_added *add)
{
	int t = u->time_embed_dim;
	float *proj = sd_alloc(c, (size_t)b * u->model_channels);
	float *hidden = sd_alloc(c, (size_t)b * t);
	float *temb = sd_alloc(c, (size_t)b * t);

	for (int n = 0; n < b; n++)
		sinusoid(host + (size_t)n * u->model_channels, timesteps[n], u->model_channels);
	sd_upload(c, proj, host, (size_t)b * u->model_channels);
	debug(u, proj, (size_t)b * u->model_channels, "time_proj");

	op_linear(c, hidden, proj, b, u->model_channels, u->time_embed0_w, u->time_embed0_b);
	op_silu(c, hidden, (size_t)b * t);
	op_linear(c, temb, hidden, b, t, u->time_embed2_w, u->time_embed2_b);
	debug(u, temb, (size_t)b * t, "time_emb");
	if (add != NULL && u->label_emb0_w != NULL) {
		/* [text_embeds | 6 sinusoids of the time ids] -> label_emb */
		int a = (u->adm_in - add->text_dim) / 6;
		size_t n = (size_t)b * u->adm_in;
		float *y = malloc(n * sizeof *y), *dy = sd_alloc(c, n), *te;
		float *aug = sd_alloc(c, (size_t)b * t);
		if (y != NULL) {
			for (int i = 0; i < b; i++) {
				float *row = y + (size_t)i * u->adm_in;
				memcpy(row, add->text_embeds + (size_t)i * add->text_dim,
				    (size_t)add->text_dim * sizeof *row);
				for (int k = 0; k < 6; k++)
					sinusoid(row + add->text_dim + k * a, add->time_ids[i * 6 + k], a);
			}
			sd_upload(c, dy, y, n);
			if (u->debug != NULL) {	/* the time ids' embeddings alone */
				te = sd_alloc(c, (size_t)b * 6 * a);
				for (int i = 0; i < b; i++)
					sd_upload(c, te + (size_t)i * 6 * a, y + (size_t)i * u->adm_in + add->text_dim,
					    (size_t)6 * a);
				debug(u, te, (size_t)b * 6 * a, "time_embeds");
			}
			free(y);
		}
		op_linear(c, hidden, dy, b, u->adm_in, u->label_emb0_w, u->label_emb0_b);
		op_silu(c, hidden, (size_t)b * t);
		op_linear(c, aug, hidden, b, t, u->label_emb2_w, u->label_emb2_b);
		debug(u, aug, (size_t)b * t, "aug_emb");
		op_add(c, temb, temb, aug, (size_t)b * t);
		debug(u, temb, (size_t)b * t, "emb");
	}
	op_silu(c, temb, (size_t)b * t);
	return temb;
}

/* out [b, cout, h, w] = resblock(x [b, cin, h, w]) with the time embedding
 * temb_silu [b, T] (already through SiLU). */
static void
resblock_forward(struct unet *u, struct sd_ctx *c, const struct resblock *r, float *out,
    const float *x, int b, int h, int w, const float *temb_silu)
{
	size_t mark = sd_mark(c), n = (size_t)b * r->cout * h * w;
	float *in = sd_alloc(c, (size_t)b * r->cin * h * w);
	float *mid = sd_alloc(c, n);
	float *emb = sd_alloc(c, (size_t)b * r->cout);

	/* in_layers: GN -> SiLU -> conv 3x3 */
	op_group_norm(c, in, x, b, r->cin, h * w, GN_GROUPS, RES_GN_EPS, r->norm1_w, r->norm1_b, 1);
	op_conv2d(c, mid, in, b, r->cin, h, w, r->conv1_w, r->conv1_b, 1, 1);
	/* + emb_layers(SiLU(temb)), one value per channel */
	op_linear(c, emb, temb_silu, b, u->time_embed_dim, r->emb_w, r->emb_b);
	op_add_channel(c, mid, emb, b, r->cout, h * w);
	/* out_layers: GN -> SiLU -> (dropout) -> conv 3x3 */
	op_group_norm(c, mid, mid, b, r->cout, h * w, GN_GROUPS, RES_GN_EPS, r->norm2_w, r->norm2_b, 1);
	op_conv2d(c, out, mid, b, r->cout, h, w, r->conv2_w, r->conv2_b, 1, 1);
	/* + the input, through a 1x1 conv when the channel count changes */
	if (r->skip_w != NULL) {
		op_conv2d(c, mid, x, b, r->cin, h, w, r->skip_w, r->skip_b, 1, 0);
		op_add(c, out, out, mid, n);
	} else {
		op_add(c, out, out, x, n);
	}
	sd_release(c, mark);
}

/* out [b, lq, C] = to_out(attention(to_q(x), to_k(kv), to_v(kv))) for
 * x [b, lq, C] and kv [b, lk, kv_dim]; heads of C/heads, no mask. */
static void
attention_forward(struct unet *u, struct sd_ctx *c, const struct attention *a, float *out,
    const float *x, int b, int lq, int ch, int heads, const float *kv, int lk)
{
	size_t mark = sd_mark(c);
	int dh = ch / heads;
	float *q = sd_alloc(c, (size_t)b * lq * ch);
	float *o = sd_alloc(c, (size_t)b * lq * ch);
	const float *k, *v;

	op_linear(c, q, x, b * lq, ch, a->q, NULL);
	if (a->cross && u->kv != NULL && kv == u->kv_context && b == u->kv_b && lk == u->kv_len) {
		k = u->kv + a->kv_at * (size_t)b * lk;
		v = k + (size_t)b * lk * ch;
	} else {
		float *nk = sd_alloc(c, (size_t)b * lk * ch), *nv = sd_alloc(c, (size_t)b * lk * ch);
		op_linear(c, nk, kv, b * lk, a->kv_dim, a->k, NULL);
		op_linear(c, nv, kv, b * lk, a->kv_dim, a->v, NULL);
		k = nk;
		v = nv;
	}
	op_attention(c, o, q, ch, k, ch, v, ch, b, lq, lk, heads, dh,
	    (float)(1.0 / sqrt((double)dh)), 0);
	op_linear(c, out, o, b * lq, ch, a->out_w, a->out_b);
	sd_release(c, mark);
}

/* One BasicTransformerBlock on the tokens x [b, hw, C], in place:
 *   x += attn1(LN1(x));  x += attn2(LN2(x), context);  x += ff(LN3(x))
 * with ff = Linear(GEGLU(Linear(.))). */
static void
transformer_block_forward(struct unet *u, struct sd_ctx *c, const struct transformer_block *tb,
    float *x, int b, int hw, int ch, int heads, const float *context, int ctx_len,
    const char *name)
{
	size_t mark = sd_mark(c), rows = (size_t)b * hw, n = rows * ch, chunk;
	float *norm = sd_alloc(c, n);
	float *delta = sd_alloc(c, n);
	float *proj, *gated;

	op_layer_norm(c, norm, x, (int)rows, ch, LN_EPS, tb->norm1_w, tb->norm1_b);
	attention_forward(u, c, &tb->attn1, delta, norm, b, hw, ch, heads, norm, hw);
	debug(u, delta, n, "%s_attn1", name);
	op_add(c, x, x, delta, n);

	op_layer_norm(c, norm, x, (int)rows, ch, LN_EPS, tb->norm2_w, tb->norm2_b);
	attention_forward(u, c, &tb->attn2, delta, norm, b, hw, ch, heads, context, ctx_len);
	debug(u, delta, n, "%s_attn2", name);
	op_add(c, x, x, delta, n);

	/* The feed-forward is 8C wide: run it FF_ROWS tokens at a time. */
	chunk = rows < FF_ROWS ? rows : FF_ROWS;
	proj = sd_alloc(c, chunk * 2 * tb->ff_inner);
	gated = sd_alloc(c, chunk * tb->ff_inner);
	op_layer_norm(c, norm, x, (int)rows, ch, LN_EPS, tb->norm3_w, tb->norm3_b);
	for (size_t r = 0; r < rows; r += chunk) {
		int nr = (int)(rows - r < chunk ? rows - r : chunk);
		op_linear(c, proj, norm + r * ch, nr, ch, tb->ff_in_w, tb->ff_in_b);
		op_geglu(c, gated, proj, nr, tb->ff_inner);
		op_linear(c, delta + r * ch, gated, nr, tb->ff_inner, tb->ff_out_w, tb->ff_out_b);
	}
	debug(u, delta, n, "%s_ff", name);
	op_add(c, x, x, delta, n);
	sd_release(c, mark);
}

/* The SpatialTransformer on x [b, C, h*w], in place:
 *   x += proj_out(blocks(proj_in(GN(x)) as h*w tokens of C)) */
static void
transformer_forward(struct unet *u, struct sd_ctx *c, const struct transformer *t, float *x,
    int b, int hw, const float *context, int ctx_len, const char *name)
{
	size_t mark = sd_mark(c), n = (size_t)b * t->ch * hw;
	float *a = sd_alloc(c, n);
	float *tokens = sd_alloc(c, n);
	char sub[96];

	op_group_norm(c, a, x, b, t->ch, hw, GN_GROUPS, ATTN_GN_EPS, t->norm_w, t->norm_b, 0);
	/* proj_in is a 1x1 conv: the same as a linear on the tokens. */
	op_transpose(c, tokens, a, b, t->ch, hw);
	op_linear(c, a, tokens, b * hw, t->ch, t->proj_in_w, t->proj_in_b);
	debug(u, a, n, "%s_proj_in", name);
	for (int i = 0; i < t->depth; i++) {
		snprintf(sub, sizeof sub, "%s_block%d", name, i);
		transformer_block_forward(u, c, &t->block[i], a, b, hw, t->ch, t->heads, context,
		    ctx_len, sub);
	}
	op_linear(c, tokens, a, b * hw, t->ch, t->proj_out_w, t->proj_out_b);
	op_transpose(c, a, tokens, b, hw, t->ch);
	op_add(c, x, x, a, n);
	sd_release(c, mark);
}

/* The most floats one up-path block outputs, for the two buffers the up
 * path alternates between (the input of the up path is h x w). */
static size_t
up_path_max(const struct unet *u, int b, int h, int w)
{
	size_t max = 0, n;

	for (int i = 0; i < u->noutput; i++) {
		if (u->output[i].up_w != NULL) {
			h *= 2;
			w *= 2;
		}
		n = (size_t)b * u->output[i].cout * h * w;
		if (n > max)
			max = n;
	}
	return max;
}

int
unet_forward(struct unet *u, struct sd_ctx *c, float *out, const float *x, int b,
    int h, int w, const float *timesteps, const float *context, int ctx_len,
    struct sd_error *err)
{
	return unet_forward_added(u, c, out, x, b, h, w, timesteps, context, ctx_len, NULL, err);
}

int
unet_forward_added(struct unet *u, struct sd_ctx *c, float *out, const float *x, int b,
    int h, int w, const float *timesteps, const float *context, int ctx_len,
    const struct unet_added *add, struct sd_error *err)
{
	size_t mark = sd_mark(c), m, m2, up_max;
	const struct unet_block *blk;
	float *cur, *next, *temb, *host, *buf[2], *cat, *t;
	int ch, nskip = 0, level, j, which = 0;
	int skip_h[MAX_SKIPS], skip_w[MAX_SKIPS];

	if (unet_check_size(u, h, w, err) < 0)
		return -1;
	if (b < 1 || ctx_len < 1)
		return sd_fail(err, SD_EINTERNAL, "unet_forward: batch %d, context length %d",
		    b, ctx_len);
	if (u->label_emb0_w != NULL && (add == NULL || add->text_embeds == NULL ||
	    add->time_ids == NULL || add->text_dim < 0 || (u->adm_in - add->text_dim) < 12 ||
	    (u->adm_in - add->text_dim) % 12 != 0))
		return sd_fail(err, SD_EDATA, "this UNet (label_emb of %d inputs) needs a pooled text "
		    "embedding and time ids that fit it (pooled width %d)", u->adm_in,
		    add ? add->text_dim : 0);
	if ((host = malloc((size_t)b * u->model_channels * sizeof *host)) == NULL)
		return sd_fail(err, SD_EINTERNAL, "out of memory");

	/* 1. The time embedding, shared by every resblock. */
	temb = time_embedding(u, c, timesteps, b, host, add);
	free(host);

	/* 2. conv_in; its output is the first skip connection. */
	ch = u->model_channels;
	cur = sd_alloc(c, (size_t)b * ch * h * w);
	op_conv2d(c, cur, x, b, u->in_channels, h, w, u->conv_in_w, u->conv_in_b, 1, 1);
	debug(u, cur, (size_t)b * ch * h * w, "conv_in");
	skip_h[nskip] = h;
	skip_w[nskip] = w;
	u->skips[nskip++] = cur;

	/* 3. Down: resblocks (+ transformers), and a downsampler ending each
	 * level but the last.  Every block's output is kept as a skip. */
	level = j = 0;
	for (int i = 0; i < u->ninput; i++) {
		blk = &u->input[i];
		if (blk->down_w != NULL) {
			/* 3x3, stride 2, padding 1: ceil(n/2) */
			next = sd_alloc(c, (size_t)b * ch * ((h + 1) / 2) * ((w + 1) / 2));
			op_conv2d(c, next, cur, b, ch, h, w, blk->down_w, blk->down_b, 2, 1);
			h = (h + 1) / 2;
			w = (w + 1) / 2;
		} else {
			next = sd_alloc(c, (size_t)b * blk->cout * h * w);
			resblock_forward(u, c, &blk->res, next, cur, b, h, w, temb);
			ch = blk->cout;
			debug(u, next, (size_t)b * ch * h * w, "down%d_resnet%d", level, j);
			if (blk->has_attn) {
				char name[32];
				snprintf(name, sizeof name, "down%d_attn%d", level, j);
				transformer_forward(u, c, &blk->attn, next, b, h * w, context, ctx_len, name);
				debug(u, next, (size_t)b * ch * h * w, "%s", name);
			}
			j++;
		}
		cur = next;
		skip_h[nskip] = h;
		skip_w[nskip] = w;
		u->skips[nskip++] = cur;
		if (blk->down_w != NULL || i == u->ninput - 1)
			debug(u, cur, (size_t)b * ch * h * w, "down%d", level);
		if (blk->down_w != NULL) {
			level++;
			j = 0;
		}
	}

	/* 4. Middle: resblock, transformer, resblock at the lowest resolution. */
	blk = u->middle;
	next = sd_alloc(c, (size_t)b * blk->cout * h * w);
	m = sd_mark(c);
	t = sd_alloc(c, (size_t)b * blk->res.cout * h * w);
	resblock_forward(u, c, &blk->res, t, cur, b, h, w, temb);
	debug(u, t, (size_t)b * blk->res.cout * h * w, "mid_resnet0");
	transformer_forward(u, c, &blk->attn, t, b, h * w, context, ctx_len, "mid_attn");
	debug(u, t, (size_t)b * blk->res.cout * h * w, "mid_attn0");
	resblock_forward(u, c, &blk->res2, next, t, b, h, w, temb);
	sd_release(c, m);
	cur = next;
	ch = blk->cout;
	debug(u, cur, (size_t)b * ch * h * w, "mid");

	/* 5. Up: each block takes cat([h, skip]) (skips last in, first out);
	 * an upsampler (nearest 2x, conv 3x3) ends each level but the last.
	 * The outputs alternate between two buffers. */
	up_max = up_path_max(u, b, h, w);
	buf[0] = sd_alloc(c, up_max);
	buf[1] = sd_alloc(c, up_max);
	level = j = 0;
	for (int i = 0; i < u->noutput; i++) {
		const float *skip = u->skips[--nskip];
		int skip_ch = u->skip_channels[nskip];
		float *res_out;

		blk = &u->output[i];
		next = buf[which];
		which ^= 1;
		m = sd_mark(c);
		res_out = blk->up_w != NULL ? sd_alloc(c, (size_t)b * blk->cout * h * w) : next;
		m2 = sd_mark(c);
		cat = sd_alloc(c, (size_t)b * (ch + skip_ch) * h * w);
		op_concat(c, cat, cur, ch, skip, skip_ch, b, h * w);
		resblock_forward(u, c, &blk->res, res_out, cat, b, h, w, temb);
		sd_release(c, m2);
		ch = blk->cout;
		debug(u, res_out, (size_t)b * ch * h * w, "up%d_resnet%d", level, j);
		if (blk->has_attn) {
			char name[32];
			snprintf(name, sizeof name, "up%d_attn%d", level, j);
			transformer_forward(u, c, &blk->attn, res_out, b, h * w, context, ctx_len, name);
			debug(u, res_out, (size_t)b * ch * h * w, "%s", name);
		}
		j++;
		if (blk->up_w != NULL) {
			/* nearest to the size of the next skip: 2n, or 2n - 1
			 * (the last row or column dropped) after an odd size */
			float *big = sd_alloc(c, (size_t)b * ch * h * w * 4);
			int th = nskip > 0 ? skip_h[nskip - 1] : 2 * h;
			int tw = nskip > 0 ? skip_w[nskip - 1] : 2 * w;

			if (th > 2 * h || th < 2 * h - 1 || tw > 2 * w || tw < 2 * w - 1) {
				sd_release(c, mark);
				return sd_fail(err, SD_EINTERNAL, "UNet: an upsampler from "
				    "%dx%d meets a skip of %dx%d", h, w, th, tw);
			}

			op_upsample2x(c, big, res_out, b, ch, h, w);
			if (th < 2 * h || tw < 2 * w) {
				float *tmp = sd_alloc(c, (size_t)b * ch * h * w * 4);

				crop_planes(c, big, big, tmp, b * ch, 2 * h, 2 * w, th, tw);
			}
			h = th;
			w = tw;
			op_conv2d(c, next, big, b, ch, h, w, blk->up_w, blk->up_b, 1, 1);
		}
		sd_release(c, m);
		cur = next;
		if (blk->up_w != NULL || i == u->noutput - 1)
			debug(u, cur, (size_t)b * ch * h * w, "up%d", level);
		if (blk->up_w != NULL) {
			level++;
			j = 0;
		}
	}

	/* 6. out: GN -> SiLU -> conv 3x3 to the predicted noise. */
	t = sd_alloc(c, (size_t)b * ch * h * w);
	op_group_norm(c, t, cur, b, ch, h * w, GN_GROUPS, RES_GN_EPS, u->norm_out_w, u->norm_out_b, 0);
	debug(u, t, (size_t)b * ch * h * w, "conv_norm_out");
	op_silu(c, t, (size_t)b * ch * h * w);
	op_conv2d(c, out, t, b, ch, h, w, u->conv_out_w, u->conv_out_b, 1, 1);

	sd_release(c, mark);
	return 0;
}
