/* t5.h: the T5 v1.1 encoder (SD3's third text encoder, T5-XXL), written on
 * the ops of core/ops.h, as transformers' T5EncoderModel computes it with
 * attention_mask=None (the padding is attended).
 *
 * token ids [b, len] -> shared embedding (no scaling, no positions) -> N
 * blocks of { x += o(attention(RMSNorm(x)) with the relative position
 * bias), x += wo(gelu_tanh(wi_0(n)) * wi_1(n)) with n = RMSNorm(x) } ->
 * final RMSNorm -> [b, len, d_model].  The attention scores are q.k
 * unscaled, plus bias[head, bucket(key - query)] from block 0's table,
 * shared by every block.  No biases anywhere.
 *
 * Names: transformers' T5 names under a prefix: "<prefix>shared.weight" (or
 * "<prefix>encoder.embed_tokens.weight"), "<prefix>encoder.block.N.layer.0.
 * SelfAttention.{q,k,v,o}.weight", "...layer.0.layer_norm.weight",
 * "...layer.1.DenseReluDense.{wi_0,wi_1,wo}.weight", "...layer.1.layer_norm.
 * weight", "<prefix>encoder.final_layer_norm.weight": the prefix is
 * T5_SD3_PREFIX in SD3's single file, "" in a diffusers text_encoder_3/.
 * The weights stay in the mapped file (F32, F16 or BF16); the linear layers
 * read them directly. */
#ifndef SD_T5_H
#define SD_T5_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "core/ops.h"
#include "model/weights.h"

/* The prefix of T5 in SD3's single file. */
#define T5_SD3_PREFIX "text_encoders.t5xxl.transformer."

/* What the weights do not say. */
struct t5_config {
	int heads;		/* 0: the relative_attention_bias table's columns */
	int max_distance;	/* relative_attention_max_distance (0: 128) */
	float eps;		/* layer_norm_epsilon (0: 1e-6) */
};

struct t5_layer;

/* Optional hook that sees intermediate activations (backend memory, n
 * floats): "embeddings", "layer_1" .. "layer_N" (the output of each block)
 * and "final_layer_norm". */
typedef void (*t5_debug_fn)(void *user, const char *name, const float *data, size_t n);

struct t5_encoder {
	int d_model;		/* 4096 in T5-XXL */
	int heads, d_kv;	/* 64 x 64 */
	int d_ff;		/* 10240 */
	int layers;		/* 24 */
	int vocab;		/* embedding rows: 32128 */
	int buckets;		/* 32 */
	int max_distance;	/* 128 */
	float eps;

	const struct sd_tensor *embedding;	/* [vocab, d_model] */
	const struct sd_tensor *rel_bias;	/* [buckets, heads] */
	const struct sd_tensor *final_norm;	/* [d_model] */
	struct t5_layer *layer;

	t5_debug_fn debug;	/* NULL, or called during t5_forward */
	void *debug_user;
};

/* Resolve every tensor under prefix once, checking the shapes; widths,
 * layers, vocabulary and buckets come from the shapes, the rest from cfg
 * (NULL: the defaults).  NULL with err naming the missing or misshapen
 * tensor. */
struct t5_encoder *t5_load(const struct sd_weights *w, const char *prefix,
    const struct t5_config *cfg, struct sd_error *err);
void t5_free(struct t5_encoder *m);

/* The bucket of a relative position (key - query) as T5's bidirectional
 * _relative_position_bucket computes it (in float32, like torch). */
int t5_relative_bucket(int rel, int buckets, int max_distance);

/* Encode b sequences of len token ids (host memory) into out (backend
 * memory, [b, len, d_model]).  Activations come from the context's arena
 * and are released before returning.  Returns 0, or -1 with err for an id
 * outside the embedding table. */
int t5_forward(struct t5_encoder *m, struct sd_ctx *c, const int32_t *ids, int b, int len,
    float *out, struct sd_error *err);

#endif
