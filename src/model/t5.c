/* t5.c: the T5 v1.1 encoder, on the backend's ops: RMSNorm, attention with
 * the additive position bias (unscaled scores), the gated GELU (tanh
 * approximation, transformers' gelu_new).  The position bias is computed on
 * the host once a call and uploaded; the activations never leave the
 * backend. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/t5.h"

struct t5_layer {
	const struct sd_tensor *ln0, *q, *k, *v, *o;
	const struct sd_tensor *ln1, *wi0, *wi1, *wo;
};

/* ---- loading ---- */

static const struct sd_tensor *
need(const struct sd_weights *w, struct sd_error *err, const char *prefix, const char *name,
    int ndim, int64_t d0, int64_t d1)
{
	int64_t shape[2] = { d0, d1 };

	return weights_need(w, err, prefix, name, ndim, shape);
}

static int
load_layer(struct t5_encoder *m, struct t5_layer *l, const struct sd_weights *w,
    const char *prefix, int i, struct sd_error *err)
{
	int d = m->d_model, inner = m->heads * m->d_kv;
	char p[320];

#define NEED(field, name, nd, d0, d1) \
	if ((l->field = need(w, err, p, name, nd, d0, d1)) == NULL) \
		return -1
	snprintf(p, sizeof p, "%sencoder.block.%d.layer.0.", prefix, i);
	NEED(ln0, "layer_norm.weight", 1, d, 0);
	NEED(q, "SelfAttention.q.weight", 2, inner, d);
	NEED(k, "SelfAttention.k.weight", 2, inner, d);
	NEED(v, "SelfAttention.v.weight", 2, inner, d);
	NEED(o, "SelfAttention.o.weight", 2, d, inner);
	snprintf(p, sizeof p, "%sencoder.block.%d.layer.1.", prefix, i);
	NEED(ln1, "layer_norm.weight", 1, d, 0);
	NEED(wi0, "DenseReluDense.wi_0.weight", 2, m->d_ff, d);
	NEED(wi1, "DenseReluDense.wi_1.weight", 2, m->d_ff, d);
	NEED(wo, "DenseReluDense.wo.weight", 2, d, m->d_ff);
#undef NEED
	return 0;
}

struct t5_encoder *
t5_load(const struct sd_weights *w, const char *prefix, const struct t5_config *cfg,
    struct sd_error *err)
{
	static const struct t5_config defaults = {0};
	struct t5_encoder *m;
	const struct sd_tensor *t;
	char name[320];
	int n;

	if (prefix == NULL)
		prefix = "";
	if (cfg == NULL)
		cfg = &defaults;
	if ((m = calloc(1, sizeof *m)) == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		return NULL;
	}
	/* the embedding: "shared" (tied with encoder.embed_tokens) */
	snprintf(name, sizeof name, "%sshared.weight", prefix);
	if (weights_get(w, name) != NULL)
		m->embedding = need(w, err, prefix, "shared.weight", 2, -1, -1);
	else
		m->embedding = need(w, err, prefix, "encoder.embed_tokens.weight", 2, -1, -1);
	if (m->embedding == NULL) {
		if (weights_get(w, name) == NULL)
			sd_fail(err, SD_EDATA, "missing tensor \"%sshared.weight\"", prefix);
		goto fail;
	}
	m->vocab = (int)m->embedding->shape[0];
	m->d_model = (int)m->embedding->shape[1];

	/* heads and buckets from block 0's relative position table */
	m->rel_bias = need(w, err, prefix,
	    "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", 2, -1,
	    cfg->heads > 0 ? cfg->heads : -1);
	if (m->rel_bias == NULL)
		goto fail;
	m->buckets = (int)m->rel_bias->shape[0];
	m->heads = (int)m->rel_bias->shape[1];
	if ((t = need(w, err, prefix, "encoder.block.0.layer.0.SelfAttention.q.weight", 2, -1,
	    m->d_model)) == NULL)
		goto fail;
	if (m->heads < 1 || t->shape[0] % m->heads != 0 || t->shape[0] < 1 || m->buckets < 2 ||
	    m->vocab < 1 || m->d_model < 1) {
		sd_fail(err, SD_EDATA, "T5 encoder \"%s\": %lld attention channels are not a multiple "
		    "of %d heads (or an empty table)", prefix, (long long)t->shape[0], m->heads);
		goto fail;
	}
	m->d_kv = (int)(t->shape[0] / m->heads);
	if ((t = need(w, err, prefix, "encoder.block.0.layer.1.DenseReluDense.wi_0.weight", 2, -1,
	    m->d_model)) == NULL)
		goto fail;
	m->d_ff = (int)t->shape[0];
	m->max_distance = cfg->max_distance > 0 ? cfg->max_distance : 128;
	m->eps = cfg->eps > 0 ? cfg->eps : 1e-6f;

	for (n = 0; ; n++) {
		snprintf(name, sizeof name, "%sencoder.block.%d.layer.0.layer_norm.weight", prefix, n);
		if (weights_get(w, name) == NULL)
			break;
	}
	if (n == 0) {
		need(w, err, prefix, "encoder.block.0.layer.0.layer_norm.weight", 1, m->d_model, 0);
		goto fail;
	}
	m->layers = n;
	if ((m->layer = calloc((size_t)n, sizeof *m->layer)) == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		goto fail;
	}
	for (int i = 0; i < n; i++)
		if (load_layer(m, &m->layer[i], w, prefix, i, err) < 0)
			goto fail;
	if ((m->final_norm = need(w, err, prefix, "encoder.final_layer_norm.weight", 1,
	    m->d_model, 0)) == NULL)
		goto fail;
	return m;
fail:
	t5_free(m);
	return NULL;
}

void
t5_free(struct t5_encoder *m)
{
	if (m == NULL)
		return;
	free(m->layer);
	free(m);
}

/* ---- the host-side pieces ---- */

int
t5_relative_bucket(int rel, int buckets, int max_distance)
{
	int half = buckets / 2, max_exact = half / 2, bucket = 0, n;

	if (rel > 0)
		bucket = half;
	n = rel < 0 ? -rel : rel;
	if (n < max_exact)
		return bucket + n;
	/* float32 arithmetic, as torch does it */
	float f = logf((float)n / (float)max_exact) / (float)log((double)max_distance / max_exact) *
	    (float)(half - max_exact);
	int large = max_exact + (int)f;
	return bucket + (large < half - 1 ? large : half - 1);
}

static void
debug(struct t5_encoder *m, const char *name, const float *x, size_t n)
{
	if (m->debug != NULL)
		m->debug(m->debug_user, name, x, n);
}

/* ---- the forward pass ---- */

/* bias[h, i, j] = table[bucket(j - i), h] for len x len positions (host),
 * from block 0's relative position table (F32, F16 or BF16). */
static int
position_bias(const struct t5_encoder *m, float *bias, int len)
{
	float *table = malloc((size_t)m->buckets * m->heads * sizeof *table);

	if (table == NULL)
		return -1;
	sd_convert_to_f32(table, m->rel_bias->data, m->rel_bias->dtype,
	    (size_t)m->buckets * m->heads);
	for (int i = 0; i < len; i++)
		for (int j = 0; j < len; j++) {
			int bucket = t5_relative_bucket(j - i, m->buckets, m->max_distance);
			for (int hh = 0; hh < m->heads; hh++)
				bias[((size_t)hh * len + i) * len + j] = table[(size_t)bucket * m->heads + hh];
		}
	free(table);
	return 0;
}

int
t5_forward(struct t5_encoder *m, struct sd_ctx *c, const int32_t *ids, int b, int len,
    float *out, struct sd_error *err)
{
	int d = m->d_model, inner = m->heads * m->d_kv, rows = b * len, ff = m->d_ff;
	size_t n = (size_t)rows * d, nbias = (size_t)m->heads * len * len, mark;
	float *x, *h, *q, *k, *v, *a, *g, *u, *bias, *host;
	char name[32];

	if (b < 1 || len < 1)
		return sd_fail(err, SD_EINTERNAL, "T5: %d sequences of %d tokens", b, len);
	for (int i = 0; i < rows; i++)
		if (ids[i] < 0 || ids[i] >= m->vocab)
			return sd_fail(err, SD_EDATA, "token id %d at position %d is outside the T5 "
			    "vocabulary (0 to %d)", (int)ids[i], i, m->vocab - 1);

	mark = sd_mark(c);
	/* the relative position bias [heads, len, len], computed once (block
	 * 0's table) and shared by every block */
	bias = sd_alloc(c, nbias);
	if ((host = malloc(nbias * sizeof *host)) == NULL || position_bias(m, host, len) < 0) {
		free(host);
		sd_release(c, mark);
		return sd_fail(err, SD_EINTERNAL, "out of memory for T5's position bias (%d tokens)",
		    len);
	}
	sd_upload(c, bias, host, nbias);
	free(host);

	x = sd_alloc(c, n);
	h = sd_alloc(c, n);
	q = sd_alloc(c, (size_t)rows * inner);
	k = sd_alloc(c, (size_t)rows * inner);
	v = sd_alloc(c, (size_t)rows * inner);
	a = sd_alloc(c, (size_t)rows * inner);
	g = sd_alloc(c, (size_t)rows * ff);
	u = sd_alloc(c, (size_t)rows * ff);

	op_embed(c, x, ids, rows, m->embedding, NULL, 0);
	debug(m, "embeddings", x, n);
	for (int i = 0; i < m->layers; i++) {
		const struct t5_layer *l = &m->layer[i];

		/* x += o(attention(RMSNorm(x))): scores q.k unscaled + bias */
		op_rms_norm(c, h, x, rows, d, m->eps, l->ln0);
		op_linear(c, q, h, rows, d, l->q, NULL);
		op_linear(c, k, h, rows, d, l->k, NULL);
		op_linear(c, v, h, rows, d, l->v, NULL);
		op_attention_bias(c, a, q, inner, k, inner, v, inner, b, len, len, m->heads, m->d_kv,
		    1.0f, bias);
		op_linear(c, h, a, rows, inner, l->o, NULL);
		op_add(c, x, x, h, n);

		/* x += wo(gelu_tanh(wi_0(n)) * wi_1(n)), n = RMSNorm(x) */
		op_rms_norm(c, h, x, rows, d, m->eps, l->ln1);
		op_linear(c, g, h, rows, d, l->wi0, NULL);
		op_linear(c, u, h, rows, d, l->wi1, NULL);
		op_gelu_tanh(c, g, (size_t)rows * ff);
		op_mul(c, g, g, u, (size_t)rows * ff);
		op_linear(c, h, g, rows, ff, l->wo, NULL);
		op_add(c, x, x, h, n);

		if (m->debug != NULL) {
			snprintf(name, sizeof name, "layer_%d", i + 1);
			debug(m, name, x, n);
		}
	}
	op_rms_norm(c, out, x, rows, d, m->eps, m->final_norm);
	debug(m, "final_layer_norm", out, n);
	sd_release(c, mark);
	return 0;
}
