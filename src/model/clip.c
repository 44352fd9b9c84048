/* clip.c: the CLIP text encoders, as transformers' CLIPTextModel computes
 * them for SD 1.x and (as diffusers converts OpenCLIP's towers) SD 2.x:
 * attention_mask=None, so only the causal mask applies and the padding
 * tokens are attended like any other token. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/clip.h"

#define CLIP_LN_EPS 1e-5f

struct clip_layer {
	const struct sd_tensor *ln1_w, *ln1_b;
	const struct sd_tensor *q_w, *q_b, *k_w, *k_b, *v_w, *v_b, *out_w, *out_b;
	const struct sd_tensor *ln2_w, *ln2_b;
	const struct sd_tensor *fc1_w, *fc1_b, *fc2_w, *fc2_b;
	struct sd_tensor split[6];	/* OpenCLIP: q, k, v weights and biases,
					 * views of in_proj_weight/_bias */
};

/* ---- loading ---- */

/* One tensor "<prefix><name>" of the given shape (-1: any), or NULL. */
static const struct sd_tensor *
need(const struct sd_weights *w, struct sd_error *err, const char *prefix,
    const char *name, int ndim, int64_t d0, int64_t d1)
{
	int64_t shape[2] = { d0, d1 };

	return weights_need(w, err, prefix, name, ndim, shape);
}

static int
load_layer(struct clip_layer *l, const struct sd_weights *w, const char *prefix, int i,
    int d, int mlp, struct sd_error *err)
{
	char p[256];

#define NEED(field, name, nd, d0, d1) \
	if ((l->field = need(w, err, p, name, nd, d0, d1)) == NULL) \
		return -1
	snprintf(p, sizeof p, "%sencoder.layers.%d.", prefix, i);
	NEED(ln1_w, "layer_norm1.weight", 1, d, 0);
	NEED(ln1_b, "layer_norm1.bias", 1, d, 0);
	NEED(q_w, "self_attn.q_proj.weight", 2, d, d);
	NEED(q_b, "self_attn.q_proj.bias", 1, d, 0);
	NEED(k_w, "self_attn.k_proj.weight", 2, d, d);
	NEED(k_b, "self_attn.k_proj.bias", 1, d, 0);
	NEED(v_w, "self_attn.v_proj.weight", 2, d, d);
	NEED(v_b, "self_attn.v_proj.bias", 1, d, 0);
	NEED(out_w, "self_attn.out_proj.weight", 2, d, d);
	NEED(out_b, "self_attn.out_proj.bias", 1, d, 0);
	NEED(ln2_w, "layer_norm2.weight", 1, d, 0);
	NEED(ln2_b, "layer_norm2.bias", 1, d, 0);
	NEED(fc1_w, "mlp.fc1.weight", 2, mlp, d);
	NEED(fc1_b, "mlp.fc1.bias", 1, mlp, 0);
	NEED(fc2_w, "mlp.fc2.weight", 2, d, mlp);
	NEED(fc2_b, "mlp.fc2.bias", 1, d, 0);
	return 0;
}

/* OpenCLIP's resblock i: ln_1, attn.in_proj (q, k, v stacked by rows),
 * attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj. */
static int
load_openclip_layer(struct clip_layer *l, const struct sd_weights *w, const char *prefix,
    int i, int d, int mlp, struct sd_error *err)
{
	const struct sd_tensor *in_w, *in_b;
	char p[256];

	snprintf(p, sizeof p, "%stransformer.resblocks.%d.", prefix, i);
	NEED(ln1_w, "ln_1.weight", 1, d, 0);
	NEED(ln1_b, "ln_1.bias", 1, d, 0);
	if ((in_w = need(w, err, p, "attn.in_proj_weight", 2, 3 * (int64_t)d, d)) == NULL ||
	    (in_b = need(w, err, p, "attn.in_proj_bias", 1, 3 * (int64_t)d, 0)) == NULL)
		return -1;
	l->q_w = sd_tensor_rows(in_w, 0, d, &l->split[0]);
	l->k_w = sd_tensor_rows(in_w, d, d, &l->split[1]);
	l->v_w = sd_tensor_rows(in_w, 2 * (int64_t)d, d, &l->split[2]);
	l->q_b = sd_tensor_rows(in_b, 0, d, &l->split[3]);
	l->k_b = sd_tensor_rows(in_b, d, d, &l->split[4]);
	l->v_b = sd_tensor_rows(in_b, 2 * (int64_t)d, d, &l->split[5]);
	NEED(out_w, "attn.out_proj.weight", 2, d, d);
	NEED(out_b, "attn.out_proj.bias", 1, d, 0);
	NEED(ln2_w, "ln_2.weight", 1, d, 0);
	NEED(ln2_b, "ln_2.bias", 1, d, 0);
	NEED(fc1_w, "mlp.c_fc.weight", 2, mlp, d);
	NEED(fc1_b, "mlp.c_fc.bias", 1, mlp, 0);
	NEED(fc2_w, "mlp.c_proj.weight", 2, d, mlp);
	NEED(fc2_b, "mlp.c_proj.bias", 1, d, 0);
	return 0;
}
#undef NEED

/* The names of one layout. */
struct clip_names {
	const char *token, *position, *layer_fmt, *fc1, *final_w, *final_b;
};

static const struct clip_names hf_names = {
	"embeddings.token_embedding.weight", "embeddings.position_embedding.weight",
	"%sencoder.layers.%d.layer_norm1.weight", "encoder.layers.0.mlp.fc1.weight",
	"final_layer_norm.weight", "final_layer_norm.bias",
};
static const struct clip_names openclip_names = {
	"token_embedding.weight", "positional_embedding",
	"%stransformer.resblocks.%d.ln_1.weight", "transformer.resblocks.0.mlp.c_fc.weight",
	"ln_final.weight", "ln_final.bias",
};

struct clip_text *
clip_text_load(const struct sd_weights *w, const char *prefix, const struct clip_config *cfg,
    struct sd_error *err)
{
	const struct clip_names *nm;
	struct clip_text *m;
	const struct sd_tensor *t;
	char name[256];
	int n, heads = cfg->heads;

	if (prefix == NULL)
		prefix = "";
	if ((m = calloc(1, sizeof *m)) == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		return NULL;
	}
	snprintf(name, sizeof name, "%s%s", prefix, openclip_names.token);
	m->openclip = weights_get(w, name) != NULL;
	nm = m->openclip ? &openclip_names : &hf_names;
	m->act = cfg->act;

	/* Width, vocabulary and positions from the embeddings. */
	m->token_embedding = need(w, err, prefix, nm->token, 2, -1, -1);
	if (m->token_embedding == NULL)
		goto fail;
	m->vocab = (int)m->token_embedding->shape[0];
	m->width = (int)m->token_embedding->shape[1];
	m->position_embedding = need(w, err, prefix, nm->position, 2, -1, m->width);
	if (m->position_embedding == NULL)
		goto fail;
	m->max_len = (int)m->position_embedding->shape[0];
	if (heads <= 0)
		heads = m->width / (cfg->head_channels > 0 ? cfg->head_channels : 64);
	m->heads = heads;
	if (m->width < 1 || heads < 1 || m->width % heads != 0 || m->vocab < 1 || m->max_len < 1) {
		sd_fail(err, SD_EDATA, "text encoder \"%s\": width %d is not a multiple of %d heads",
		    prefix, m->width, heads);
		goto fail;
	}

	/* Layers: count them; the MLP width from the first one. */
	for (n = 0; ; n++) {
		snprintf(name, sizeof name, nm->layer_fmt, prefix, n);
		if (weights_get(w, name) == NULL)
			break;
	}
	if (n == 0) {
		snprintf(name, sizeof name, nm->layer_fmt, "", 0);
		need(w, err, prefix, name, 1, m->width, 0);
		goto fail;
	}
	m->stored_layers = n;
	m->layers = cfg->layers > 0 ? cfg->layers : n + cfg->layers;
	if (m->layers < 1 || m->layers > n) {
		sd_fail(err, SD_EDATA, "text encoder \"%s\": %d layers stored, the model uses %d",
		    prefix, n, cfg->layers > 0 ? cfg->layers : n + cfg->layers);
		goto fail;
	}
	if ((t = need(w, err, prefix, nm->fc1, 2, -1, m->width)) == NULL)
		goto fail;
	m->mlp_width = (int)t->shape[0];

	if ((m->layer = calloc((size_t)m->layers, sizeof *m->layer)) == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		goto fail;
	}
	for (int i = 0; i < m->layers; i++)
		if ((m->openclip ? load_openclip_layer : load_layer)(&m->layer[i], w, prefix, i,
		    m->width, m->mlp_width, err) < 0)
			goto fail;
	m->final_norm_w = need(w, err, prefix, nm->final_w, 1, m->width, 0);
	m->final_norm_b = need(w, err, prefix, nm->final_b, 1, m->width, 0);
	if (m->final_norm_w == NULL || m->final_norm_b == NULL)
		goto fail;
	m->context_skip = cfg->context_skip;
	m->final_norm = !cfg->no_final_norm;
	if (m->context_skip < 0 || m->context_skip >= m->layers) {
		sd_fail(err, SD_EDATA, "text encoder \"%s\": a context %d layers before the last of %d",
		    prefix, m->context_skip, m->layers);
		goto fail;
	}
	/* The projection of the pooled output: OpenCLIP stores [width, proj]
	 * (pooled @ text_projection), transformers a linear weight [proj,
	 * width]. */
	snprintf(name, sizeof name, "%stext_projection%s", prefix, m->openclip ? "" : ".weight");
	t = weights_get(w, name);
	/* CLIPTextModelWithProjection's own names: "X.text_model.*" beside
	 * "X.text_projection.weight" (SD3's single file) */
	if (t == NULL && !m->openclip) {
		size_t plen = strlen(prefix), sub = strlen("text_model.");
		if (plen >= sub && strcmp(prefix + plen - sub, "text_model.") == 0) {
			snprintf(name, sizeof name, "%.*stext_projection.weight", (int)(plen - sub), prefix);
			t = weights_get(w, name);
		}
	}
	if (t != NULL) {
		if (t->ndim != 2 || t->shape[m->openclip ? 0 : 1] != m->width) {
			sd_fail(err, SD_EDATA, "tensor \"%s\" is not a 2-D projection of the %d-wide "
			    "text model", name, m->width);
			goto fail;
		}
		m->proj_dim = (int)t->shape[m->openclip ? 1 : 0];
		if (!m->openclip) {
			m->text_projection = t;
		} else {
			float *src = malloc((size_t)m->width * m->proj_dim * sizeof *src);
			float *dst = malloc((size_t)m->width * m->proj_dim * sizeof *dst);
			if (src == NULL || dst == NULL) {
				free(src);
				free(dst);
				sd_fail(err, SD_EINTERNAL, "out of memory");
				goto fail;
			}
			sd_convert_to_f32(src, t->data, t->dtype, (size_t)m->width * m->proj_dim);
			for (int i = 0; i < m->width; i++)
				for (int j = 0; j < m->proj_dim; j++)
					dst[(size_t)j * m->width + i] = src[(size_t)i * m->proj_dim + j];
			free(src);
			m->projection_t = (struct sd_tensor){ .name = "text_projection^T", .dtype = SD_F32,
			    .ndim = 2, .shape = { m->proj_dim, m->width }, .data = dst };
			m->text_projection = &m->projection_t;
		}
	} else if (cfg->pooled_identity) {
		m->proj_dim = m->width;
	}
	return m;
fail:
	clip_text_free(m);
	return NULL;
}

void
clip_text_free(struct clip_text *m)
{
	if (m == NULL)
		return;
	free(m->projection_t.data);
	free(m->layer);
	free(m);
}

/* ---- the forward pass ---- */

static void
debug(struct clip_text *m, const char *name, const float *x, size_t n)
{
	if (m->debug != NULL)
		m->debug(m->debug_user, name, x, n);
}

/* One pre-LayerNorm encoder layer on the residual stream x [b*len, d]:
 *   x += out_proj(causal_attention(layer_norm1(x)))
 *   x += fc2(act(fc1(layer_norm2(x))))  (quick_gelu or gelu) */
static void
encoder_layer(struct clip_text *m, struct sd_ctx *c, const struct clip_layer *l,
    float *x, int b, int len)
{
	int d = m->width, rows = b * len, dh = d / m->heads;
	size_t mark = sd_mark(c);
	float *h = sd_alloc(c, (size_t)rows * d);
	float *q = sd_alloc(c, (size_t)rows * d);
	float *k = sd_alloc(c, (size_t)rows * d);
	float *v = sd_alloc(c, (size_t)rows * d);
	float *a = sd_alloc(c, (size_t)rows * d);
	float *mlp = sd_alloc(c, (size_t)rows * m->mlp_width);

	/* Self-attention: q is scaled by head_dim^-0.5 (inside op_attention),
	 * key j > query i is masked. */
	op_layer_norm(c, h, x, rows, d, CLIP_LN_EPS, l->ln1_w, l->ln1_b);
	op_linear(c, q, h, rows, d, l->q_w, l->q_b);
	op_linear(c, k, h, rows, d, l->k_w, l->k_b);
	op_linear(c, v, h, rows, d, l->v_w, l->v_b);
	op_attention(c, a, q, d, k, d, v, d, b, len, len, m->heads, dh,
	    1.0f / sqrtf((float)dh), 1);
	op_linear(c, h, a, rows, d, l->out_w, l->out_b);
	op_add(c, x, x, h, (size_t)rows * d);

	/* MLP with quick_gelu(x) = x * sigmoid(1.702 x), or the exact GELU. */
	op_layer_norm(c, h, x, rows, d, CLIP_LN_EPS, l->ln2_w, l->ln2_b);
	op_linear(c, mlp, h, rows, d, l->fc1_w, l->fc1_b);
	if (m->act == CLIP_GELU)
		op_gelu(c, mlp, (size_t)rows * m->mlp_width);
	else
		op_quick_gelu(c, mlp, (size_t)rows * m->mlp_width);
	op_linear(c, h, mlp, rows, m->mlp_width, l->fc2_w, l->fc2_b);
	op_add(c, x, x, h, (size_t)rows * d);

	sd_release(c, mark);
}

int
clip_text_forward(struct clip_text *m, struct sd_ctx *c, const int32_t *ids, int b,
    int clip_skip, float *out, struct sd_error *err)
{
	return clip_text_forward_pooled(m, c, ids, b, clip_skip, out, NULL, err);
}

int
clip_text_forward_pooled(struct clip_text *m, struct sd_ctx *c, const int32_t *ids, int b,
    int clip_skip, float *out, float *pooled, struct sd_error *err)
{
	int len = m->max_len, rows = b * len, ctx_layers, run;
	size_t n = (size_t)rows * m->width, mark = sd_mark(c);
	float *x;
	char name[32];

	ctx_layers = m->layers - m->context_skip - (clip_skip - 1);
	if (clip_skip < 1 || ctx_layers < 1)
		return sd_fail(err, SD_EDATA, "clip_skip %d is out of range (1 to %d)",
		    clip_skip, m->layers - m->context_skip);
	if (pooled != NULL && m->proj_dim == 0)
		return sd_fail(err, SD_EDATA, "this text encoder has no text_projection for a pooled output");
	for (int i = 0; i < rows; i++)
		if (ids[i] < 0 || ids[i] >= m->vocab)
			return sd_fail(err, SD_EDATA, "token id %d at position %d is outside the "
			    "vocabulary (0 to %d)", (int)ids[i], i, m->vocab - 1);

	/* The residual stream: token + position embeddings... */
	x = pooled != NULL ? sd_alloc(c, n) : out;
	op_embed(c, x, ids, rows, m->token_embedding, m->position_embedding, len);
	debug(m, "embeddings", x, n);

	/* ...then the layers: up to the context's, or all for the pooled output... */
	run = pooled != NULL ? m->layers : ctx_layers;
	for (int i = 0; i < run; i++) {
		encoder_layer(m, c, &m->layer[i], x, b, len);
		if (m->debug != NULL) {
			snprintf(name, sizeof name, "layer_%d", i + 1);
			debug(m, name, x, n);
		}
		if (pooled != NULL && i + 1 == ctx_layers)
			op_copy(c, out, x, n);
	}

	/* ...and the final LayerNorm of the context, whichever layer it is. */
	if (m->final_norm) {
		op_layer_norm(c, out, out, rows, m->width, CLIP_LN_EPS, m->final_norm_w, m->final_norm_b);
		debug(m, "final_layer_norm", out, n);
	}
	if (pooled != NULL) {
		/* the last layer's state at the first largest id (the eos) */
		float *h = sd_alloc(c, (size_t)m->width);
		for (int i = 0; i < b; i++) {
			int at = 0;
			for (int k = 1; k < len; k++)
				if (ids[i * len + k] > ids[i * len + at])
					at = k;
			op_layer_norm(c, h, x + ((size_t)i * len + at) * m->width, 1, m->width,
			    CLIP_LN_EPS, m->final_norm_w, m->final_norm_b);
			if (m->text_projection != NULL)
				op_linear(c, pooled + (size_t)i * m->proj_dim, h, 1, m->width,
				    m->text_projection, NULL);
			else	/* pooled_identity */
				op_copy(c, pooled + (size_t)i * m->proj_dim, h, (size_t)m->width);
		}
	}
	sd_release(c, mark);
	return 0;
}
