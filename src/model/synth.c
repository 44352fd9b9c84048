/* synth.c: deterministic random-weight SD 1.x/2.x/XL/3 checkpoints (see synth.h).
 *
 * First the list of tensors (name, shape, how to fill it) is built from
 * the configuration, exactly as the original LDM code names them; then
 * the header is written and every tensor is generated and written in
 * chunks, so memory stays small even for the 2 GB full model. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "io/fileio.h"
#include "model/synth.h"

const struct synth_config synth_config_sd15_full = {
	.name = "sd15-full",
	.arch = "sd15",
	.parts = SYNTH_ALL,
	.unet_channels = {320, 640, 1280, 1280},
	.unet_time_embed = 1280,
	.unet_heads = 8,
	.unet_in_channels = 4,
	.unet_out_channels = 4,
	.context_dim = 768,
	.vae_channels = {128, 256, 512, 512},
	.latent_channels = 4,
	.clip_width = 768, .clip_layers = 12, .clip_heads = 12, .clip_mlp = 3072,
	.clip_vocab = 49408, .clip_positions = 77,
	.dtype = SD_F16,
	.seed = 0,
};

const struct synth_config synth_config_sd15_tiny = {
	.name = "sd15-tiny",
	.arch = "sd15",
	.parts = SYNTH_ALL,
	.unet_channels = {32, 32, 32, 64},
	.unet_time_embed = 128,
	.unet_heads = 8,
	.unet_in_channels = 4,
	.unet_out_channels = 4,
	.context_dim = 24,
	.vae_channels = {32, 32, 32, 32},
	.latent_channels = 4,
	.clip_width = 24, .clip_layers = 2, .clip_heads = 12, .clip_mlp = 96,
	.clip_vocab = 49408, .clip_positions = 77,
	.dtype = SD_F16,
	.seed = 0,
};

const struct synth_config synth_config_sd2_full = {
	.name = "sd2-full",
	.arch = "sd2",
	.parts = SYNTH_ALL,
	.unet_channels = {320, 640, 1280, 1280},
	.unet_time_embed = 1280,
	.unet_head_channels = 64,
	.unet_in_channels = 4,
	.unet_out_channels = 4,
	.context_dim = 1024,
	.vae_channels = {128, 256, 512, 512},
	.latent_channels = 4,
	.clip_width = 1024, .clip_layers = 24, .clip_heads = 16, .clip_mlp = 4096,
	.clip_vocab = 49408, .clip_positions = 77,
	.dtype = SD_F16,
	.seed = 0,
};

const struct synth_config synth_config_sd2_tiny = {
	.name = "sd2-tiny",
	.arch = "sd2",
	.parts = SYNTH_ALL,
	.unet_channels = {32, 32, 32, 64},
	.unet_time_embed = 128,
	.unet_head_channels = 8,
	.unet_in_channels = 4,
	.unet_out_channels = 4,
	.context_dim = 16,
	.vae_channels = {32, 32, 32, 32},
	.latent_channels = 4,
	.clip_width = 16, .clip_layers = 3, .clip_heads = 2, .clip_mlp = 64,
	.clip_vocab = 49408, .clip_positions = 77,
	.dtype = SD_F16,
	.seed = 0,
};

const struct synth_config synth_config_sdxl_full = {
	.name = "sdxl-full",
	.arch = "sdxl",
	.parts = SYNTH_ALL,
	.unet_levels = 3,
	.unet_depth = {0, 2, 10},
	.unet_adm = 2816,
	.unet_channels = {320, 640, 1280},
	.unet_time_embed = 1280,
	.unet_head_channels = 64,
	.unet_in_channels = 4,
	.unet_out_channels = 4,
	.context_dim = 2048,
	.vae_channels = {128, 256, 512, 512},
	.latent_channels = 4,
	.clip_width = 768, .clip_layers = 12, .clip_heads = 12, .clip_mlp = 3072,
	.clip_vocab = 49408, .clip_positions = 77,
	.clip2_width = 1280, .clip2_layers = 32, .clip2_heads = 20, .clip2_mlp = 5120,
	.dtype = SD_F16,
	.seed = 0,
};

const struct synth_config synth_config_sdxl_tiny = {
	.name = "sdxl-tiny",
	.arch = "sdxl",
	.parts = SYNTH_ALL,
	.unet_levels = 3,
	.unet_depth = {0, 1, 2},
	.unet_adm = 116,
	.unet_channels = {32, 32, 32},
	.unet_time_embed = 128,
	.unet_head_channels = 4,
	.unet_in_channels = 4,
	.unet_out_channels = 4,
	.context_dim = 32,
	.vae_channels = {32, 32, 32, 32},
	.latent_channels = 4,
	.clip_width = 12, .clip_layers = 2, .clip_heads = 3, .clip_mlp = 48,
	.clip_vocab = 49408, .clip_positions = 77,
	.clip2_width = 20, .clip2_layers = 3, .clip2_heads = 5, .clip2_mlp = 80,
	.dtype = SD_F16,
	.seed = 0,
};

const struct synth_config synth_config_sd3_full = {
	.name = "sd3-full",
	.arch = "sd3",
	.parts = SYNTH_ALL,
	.mmdit_width = 1536, .mmdit_depth = 24, .mmdit_heads = 24, .mmdit_pos_max = 192,
	.context_dim = 4096,
	.vae_channels = {128, 256, 512, 512},
	.latent_channels = 16,
	.clip_width = 768, .clip_layers = 12, .clip_heads = 12, .clip_mlp = 3072,
	.clip_vocab = 49408, .clip_positions = 77,
	.clip2_width = 1280, .clip2_layers = 32, .clip2_heads = 20, .clip2_mlp = 5120,
	.t5_width = 4096, .t5_layers = 24, .t5_heads = 64, .t5_ff = 10240, .t5_vocab = 32128,
	.dtype = SD_F16,
	.seed = 0,
};

const struct synth_config synth_config_sd3_tiny = {
	.name = "sd3-tiny",
	.arch = "sd3",
	.parts = SYNTH_ALL,
	.mmdit_width = 32, .mmdit_depth = 3, .mmdit_heads = 4, .mmdit_pos_max = 12,
	.context_dim = 48,
	.vae_channels = {32, 32, 32, 32},
	.latent_channels = 16,
	.clip_width = 12, .clip_layers = 2, .clip_heads = 3, .clip_mlp = 48,
	.clip_vocab = 49408, .clip_positions = 77,
	.clip2_width = 20, .clip2_layers = 3, .clip2_heads = 5, .clip2_mlp = 80,
	.t5_width = 48, .t5_layers = 2, .t5_heads = 6, .t5_ff = 112, .t5_vocab = 1152,
	.dtype = SD_F16,
	.seed = 0,
};

int
synth_preset(const char *arch, int full, struct synth_config *cfg)
{
	if (strcmp(arch, "sd15") == 0)
		*cfg = full ? synth_config_sd15_full : synth_config_sd15_tiny;
	else if (strcmp(arch, "sd2") == 0 || strcmp(arch, "sd2-base") == 0 ||
	    strcmp(arch, "sd-turbo") == 0) {
		*cfg = full ? synth_config_sd2_full : synth_config_sd2_tiny;
		cfg->arch = strcmp(arch, "sd2") == 0 ? "sd2" : strcmp(arch, "sd2-base") == 0 ?
		    "sd2-base" : "sd-turbo";
	} else if (strcmp(arch, "sdxl") == 0 || strcmp(arch, "sdxl-turbo") == 0) {
		*cfg = full ? synth_config_sdxl_full : synth_config_sdxl_tiny;
		cfg->arch = strcmp(arch, "sdxl") == 0 ? "sdxl" : "sdxl-turbo";
	} else if (strcmp(arch, "sd3") == 0)
		*cfg = full ? synth_config_sd3_full : synth_config_sd3_tiny;
	else
		return -1;
	return 0;
}

static int
is_sdxl(const struct synth_config *cfg)
{
	return cfg->arch != NULL && strncmp(cfg->arch, "sdxl", 4) == 0;
}

static int
is_sd3(const struct synth_config *cfg)
{
	return cfg->arch != NULL && strcmp(cfg->arch, "sd3") == 0;
}

/* SD 2.x: OpenCLIP text names, linear projections in the transformers. */
static int
is_sd2(const struct synth_config *cfg)
{
	return cfg->arch != NULL && strcmp(cfg->arch, "sd15") != 0 && !is_sdxl(cfg) && !is_sd3(cfg);
}

#define UNET "model.diffusion_model."
#define VAE "first_stage_model."
#define CLIP "cond_stage_model.transformer.text_model."

/* How a tensor is filled. */
enum fill { FILL_UNIFORM, FILL_ONES, FILL_ZEROS, FILL_EMBEDDING, FILL_ARANGE };

struct spec {
	char *name;
	enum fill fill;
	double bound;		/* uniform(-bound, bound) */
	enum sd_dtype dtype;
	int ndim;
	int64_t shape[4];
	int64_t numel;
	uint64_t offset;
};

struct specs {
	struct spec *v;
	int n, cap;
	int part;		/* SYNTH_* of what is being added */
	int oom;
	enum sd_dtype dtype;
	int64_t params[4];	/* UNet (MMDiT), VAE, CLIP, T5 */
};

static void
add(struct specs *s, enum fill fill, int64_t fan_in, int ndim, const int64_t *shape,
    const char *fmt, ...)
{
	struct spec *t;
	va_list ap;
	char name[256];

	if (s->oom)
		return;
	if (s->n == s->cap) {
		int cap = s->cap ? 2 * s->cap : 256;
		struct spec *v = realloc(s->v, (size_t)cap * sizeof *v);
		if (v == NULL) {
			s->oom = 1;
			return;
		}
		s->v = v;
		s->cap = cap;
	}
	va_start(ap, fmt);
	vsnprintf(name, sizeof name, fmt, ap);
	va_end(ap);
	t = &s->v[s->n];
	memset(t, 0, sizeof *t);
	if ((t->name = strdup(name)) == NULL) {
		s->oom = 1;
		return;
	}
	s->n++;
	t->fill = fill;
	t->bound = fan_in > 0 ? 1.0 / sqrt((double)fan_in) : 0.0;
	t->dtype = fill == FILL_ARANGE ? SD_I64 : s->dtype;
	t->ndim = ndim;
	t->numel = 1;
	for (int i = 0; i < ndim; i++) {
		t->shape[i] = shape[i];
		t->numel *= shape[i];
	}
	if (fill != FILL_ARANGE)
		s->params[s->part == SYNTH_UNET ? 0 : s->part == SYNTH_VAE ? 1 :
		    s->part == SYNTH_CLIP ? 2 : 3] += t->numel;
}

/* prefix.weight [cout, cin, k, k] and prefix.bias [cout]. */
static void
conv(struct specs *s, const char *prefix, int64_t cout, int64_t cin, int64_t k)
{
	int64_t w[4] = {cout, cin, k, k}, b[1] = {cout};

	add(s, FILL_UNIFORM, cin * k * k, 4, w, "%s.weight", prefix);
	add(s, FILL_UNIFORM, cin * k * k, 1, b, "%s.bias", prefix);
}

/* prefix.weight [out, in] and, with bias, prefix.bias [out]. */
static void
linear(struct specs *s, const char *prefix, int64_t out, int64_t in, int bias)
{
	int64_t w[2] = {out, in}, b[1] = {out};

	add(s, FILL_UNIFORM, in, 2, w, "%s.weight", prefix);
	if (bias)
		add(s, FILL_UNIFORM, in, 1, b, "%s.bias", prefix);
}

/* A GroupNorm or LayerNorm: weight 1, bias 0. */
static void
norm(struct specs *s, const char *prefix, int64_t c)
{
	add(s, FILL_ONES, 0, 1, &c, "%s.weight", prefix);
	add(s, FILL_ZEROS, 0, 1, &c, "%s.bias", prefix);
}

static void
sub(char *buf, size_t size, const char *prefix, const char *fmt, ...)
{
	va_list ap;
	size_t n = (size_t)snprintf(buf, size, "%s", prefix);

	va_start(ap, fmt);
	vsnprintf(buf + n, size - n, fmt, ap);
	va_end(ap);
}

/* ---------------------------------------------------------------- UNet */

static void
unet_resblock(struct specs *s, const char *p, int64_t cin, int64_t cout, int64_t temb)
{
	char n[256];

	sub(n, sizeof n, p, ".in_layers.0"), norm(s, n, cin);
	sub(n, sizeof n, p, ".in_layers.2"), conv(s, n, cout, cin, 3);
	sub(n, sizeof n, p, ".emb_layers.1"), linear(s, n, cout, temb, 1);
	sub(n, sizeof n, p, ".out_layers.0"), norm(s, n, cout);
	sub(n, sizeof n, p, ".out_layers.3"), conv(s, n, cout, cout, 3);
	if (cin != cout)
		sub(n, sizeof n, p, ".skip_connection"), conv(s, n, cout, cin, 1);
}

static void
unet_transformer(struct specs *s, const char *p, int64_t c, int64_t ctx, int lin, int depth)
{
	char n[256], q[200];

	sub(n, sizeof n, p, ".norm"), norm(s, n, c);
	sub(n, sizeof n, p, ".proj_in");
	if (lin)
		linear(s, n, c, c, 1);
	else
		conv(s, n, c, c, 1);
	for (int k = 0; k < depth; k++) {
		snprintf(q, sizeof q, "%s.transformer_blocks.%d", p, k);
		sub(n, sizeof n, q, ".attn1.to_q"), linear(s, n, c, c, 0);
		sub(n, sizeof n, q, ".attn1.to_k"), linear(s, n, c, c, 0);
		sub(n, sizeof n, q, ".attn1.to_v"), linear(s, n, c, c, 0);
		sub(n, sizeof n, q, ".attn1.to_out.0"), linear(s, n, c, c, 1);
		sub(n, sizeof n, q, ".ff.net.0.proj"), linear(s, n, 8 * c, c, 1);
		sub(n, sizeof n, q, ".ff.net.2"), linear(s, n, c, 4 * c, 1);
		sub(n, sizeof n, q, ".attn2.to_q"), linear(s, n, c, c, 0);
		sub(n, sizeof n, q, ".attn2.to_k"), linear(s, n, c, ctx, 0);
		sub(n, sizeof n, q, ".attn2.to_v"), linear(s, n, c, ctx, 0);
		sub(n, sizeof n, q, ".attn2.to_out.0"), linear(s, n, c, c, 1);
		sub(n, sizeof n, q, ".norm1"), norm(s, n, c);
		sub(n, sizeof n, q, ".norm2"), norm(s, n, c);
		sub(n, sizeof n, q, ".norm3"), norm(s, n, c);
	}
	sub(n, sizeof n, p, ".proj_out");
	if (lin)
		linear(s, n, c, c, 1);
	else
		conv(s, n, c, c, 1);
}

/* The openaimodel.py UNetModel of SD 1.5: 2 resnets per level, attention
 * in all levels but the last, 3 resnets per level on the way up. */
static void
unet(struct specs *s, const struct synth_config *cfg)
{
	const int *ch = cfg->unet_channels;
	int64_t temb = cfg->unet_time_embed, ctx = cfg->context_dim;
	int64_t skips[13], c = ch[0];
	int nskip = 0, block = 1, levels = cfg->unet_levels ? cfg->unet_levels : 4;
	int depth[4] = {1, 1, 1, 0}, lin = is_sd2(cfg) || is_sdxl(cfg);
	char p[128];

	if (cfg->unet_levels)
		memcpy(depth, cfg->unet_depth, sizeof depth);
	s->part = SYNTH_UNET;
	linear(s, UNET "time_embed.0", temb, ch[0], 1);
	linear(s, UNET "time_embed.2", temb, temb, 1);
	if (cfg->unet_adm > 0) {
		linear(s, UNET "label_emb.0.0", temb, cfg->unet_adm, 1);
		linear(s, UNET "label_emb.0.2", temb, temb, 1);
	}
	conv(s, UNET "input_blocks.0.0", ch[0], cfg->unet_in_channels, 3);
	skips[nskip++] = ch[0];
	for (int level = 0; level < levels; level++) {
		for (int i = 0; i < 2; i++, block++) {
			snprintf(p, sizeof p, UNET "input_blocks.%d.0", block);
			unet_resblock(s, p, c, ch[level], temb);
			c = ch[level];
			if (depth[level] > 0) {
				snprintf(p, sizeof p, UNET "input_blocks.%d.1", block);
				unet_transformer(s, p, c, ctx, lin, depth[level]);
			}
			skips[nskip++] = c;
		}
		if (level < levels - 1) {
			snprintf(p, sizeof p, UNET "input_blocks.%d.0.op", block++);
			conv(s, p, c, c, 3);
			skips[nskip++] = c;
		}
	}
	unet_resblock(s, UNET "middle_block.0", c, c, temb);
	/* the middle transformer has the deepest level's depth (SDXL: 10) */
	unet_transformer(s, UNET "middle_block.1", c, ctx, lin,
	    depth[levels - 1] > 0 ? depth[levels - 1] : 1);
	unet_resblock(s, UNET "middle_block.2", c, c, temb);
	block = 0;
	for (int level = levels - 1; level >= 0; level--) {
		for (int i = 0; i < 3; i++, block++) {
			int64_t cin = c + skips[--nskip];
			int idx = 1;
			snprintf(p, sizeof p, UNET "output_blocks.%d.0", block);
			unet_resblock(s, p, cin, ch[level], temb);
			c = ch[level];
			if (depth[level] > 0) {
				snprintf(p, sizeof p, UNET "output_blocks.%d.1", block);
				unet_transformer(s, p, c, ctx, lin, depth[level]);
				idx = 2;
			}
			if (level > 0 && i == 2) {
				snprintf(p, sizeof p, UNET "output_blocks.%d.%d.conv", block, idx);
				conv(s, p, c, c, 3);
			}
		}
	}
	norm(s, UNET "out.0", c);
	conv(s, UNET "out.2", cfg->unet_out_channels, c, 3);
}

/* ---------------------------------------------------------------- VAE */

static void
vae_resblock(struct specs *s, const char *p, int64_t cin, int64_t cout)
{
	char n[256];

	sub(n, sizeof n, p, ".norm1"), norm(s, n, cin);
	sub(n, sizeof n, p, ".conv1"), conv(s, n, cout, cin, 3);
	sub(n, sizeof n, p, ".norm2"), norm(s, n, cout);
	sub(n, sizeof n, p, ".conv2"), conv(s, n, cout, cout, 3);
	if (cin != cout)
		sub(n, sizeof n, p, ".nin_shortcut"), conv(s, n, cout, cin, 1);
}

static void
vae_mid(struct specs *s, const char *p, int64_t c)
{
	char n[256];

	sub(n, sizeof n, p, ".block_1"), vae_resblock(s, n, c, c);
	sub(n, sizeof n, p, ".attn_1.norm"), norm(s, n, c);
	sub(n, sizeof n, p, ".attn_1.q"), conv(s, n, c, c, 1);
	sub(n, sizeof n, p, ".attn_1.k"), conv(s, n, c, c, 1);
	sub(n, sizeof n, p, ".attn_1.v"), conv(s, n, c, c, 1);
	sub(n, sizeof n, p, ".attn_1.proj_out"), conv(s, n, c, c, 1);
	sub(n, sizeof n, p, ".block_2"), vae_resblock(s, n, c, c);
}

/* The LDM AutoencoderKL: encoder down.0..3 (2 resnets, a downsample but in
 * the last), decoder up.3..0 (3 resnets, an upsample but in up.0; up.N
 * has the widths of level N, so its index is reversed from diffusers'). */
static void
vae(struct specs *s, const struct synth_config *cfg)
{
	const int *ch = cfg->vae_channels;
	int64_t z = cfg->latent_channels, c = ch[0];
	char p[128];

	s->part = SYNTH_VAE;
	conv(s, VAE "encoder.conv_in", ch[0], 3, 3);
	for (int level = 0; level < 4; level++) {
		for (int i = 0; i < 2; i++) {
			snprintf(p, sizeof p, VAE "encoder.down.%d.block.%d", level, i);
			vae_resblock(s, p, c, ch[level]);
			c = ch[level];
		}
		if (level < 3) {
			snprintf(p, sizeof p, VAE "encoder.down.%d.downsample.conv", level);
			conv(s, p, c, c, 3);
		}
	}
	vae_mid(s, VAE "encoder.mid", c);
	norm(s, VAE "encoder.norm_out", c);
	conv(s, VAE "encoder.conv_out", 2 * z, c, 3);
	if (!is_sd3(cfg)) {	/* SD3's VAE has no quant convs */
		conv(s, VAE "quant_conv", 2 * z, 2 * z, 1);
		conv(s, VAE "post_quant_conv", z, z, 1);
	}
	c = ch[3];
	conv(s, VAE "decoder.conv_in", c, z, 3);
	vae_mid(s, VAE "decoder.mid", c);
	for (int level = 3; level >= 0; level--) {
		for (int i = 0; i < 3; i++) {
			snprintf(p, sizeof p, VAE "decoder.up.%d.block.%d", level, i);
			vae_resblock(s, p, c, ch[level]);
			c = ch[level];
		}
		if (level > 0) {
			snprintf(p, sizeof p, VAE "decoder.up.%d.upsample.conv", level);
			conv(s, p, c, c, 3);
		}
	}
	norm(s, VAE "decoder.norm_out", c);
	conv(s, VAE "decoder.conv_out", 3, c, 3);
}

/* ---------------------------------------------------------------- CLIP */

/* transformers' CLIP text model under prefix (SD 1.x's, SDXL's first, SD3's
 * two): width w, layers, MLP width; position_ids unless SD3's file. */
static void
hf_clip(struct specs *s, const char *prefix, int64_t w, int layers, int64_t mlp, int64_t vocab,
    int64_t positions, int position_ids)
{
	int64_t tok[2] = {vocab, w};
	int64_t pos[2] = {positions, w}, ids[2] = {1, positions};
	char p[200], n[256];

	s->part = SYNTH_CLIP;
	sub(n, sizeof n, prefix, "embeddings.token_embedding.weight");
	add(s, FILL_EMBEDDING, 0, 2, tok, "%s", n);
	sub(n, sizeof n, prefix, "embeddings.position_embedding.weight");
	add(s, FILL_EMBEDDING, 0, 2, pos, "%s", n);
	if (position_ids) {
		sub(n, sizeof n, prefix, "embeddings.position_ids");
		add(s, FILL_ARANGE, 0, 2, ids, "%s", n);
	}
	for (int l = 0; l < layers; l++) {
		snprintf(p, sizeof p, "%sencoder.layers.%d", prefix, l);
		sub(n, sizeof n, p, ".self_attn.q_proj"), linear(s, n, w, w, 1);
		sub(n, sizeof n, p, ".self_attn.k_proj"), linear(s, n, w, w, 1);
		sub(n, sizeof n, p, ".self_attn.v_proj"), linear(s, n, w, w, 1);
		sub(n, sizeof n, p, ".self_attn.out_proj"), linear(s, n, w, w, 1);
		sub(n, sizeof n, p, ".layer_norm1"), norm(s, n, w);
		sub(n, sizeof n, p, ".mlp.fc1"), linear(s, n, mlp, w, 1);
		sub(n, sizeof n, p, ".mlp.fc2"), linear(s, n, w, mlp, 1);
		sub(n, sizeof n, p, ".layer_norm2"), norm(s, n, w);
	}
	sub(n, sizeof n, prefix, "final_layer_norm"), norm(s, n, w);
}

static void
clip(struct specs *s, const struct synth_config *cfg)
{
	hf_clip(s, CLIP, cfg->clip_width, cfg->clip_layers, cfg->clip_mlp, cfg->clip_vocab,
	    cfg->clip_positions, 1);
}

#define OPENCLIP "cond_stage_model.model."

/* OpenCLIP's text tower as SD 2.x files store it: q, k, v fused in
 * in_proj, a text_projection and a 0-dim logit_scale, no position_ids. */
static void
openclip_tower(struct specs *s, const char *prefix, int64_t w, int layers, int64_t mlp,
    int64_t vocab, int64_t positions)
{
	int64_t tok[2] = {vocab, w};
	int64_t pos[2] = {positions, w}, proj[2] = {w, w}, qkv[2] = {3 * w, w};
	int64_t qkvb[1] = {3 * w};
	char p[200], n[256];

	s->part = SYNTH_CLIP;
	add(s, FILL_EMBEDDING, 0, 2, tok, "%stoken_embedding.weight", prefix);
	add(s, FILL_EMBEDDING, 0, 2, pos, "%spositional_embedding", prefix);
	for (int l = 0; l < layers; l++) {
		snprintf(p, sizeof p, "%stransformer.resblocks.%d", prefix, l);
		sub(n, sizeof n, p, ".ln_1"), norm(s, n, w);
		add(s, FILL_UNIFORM, w, 2, qkv, "%s.attn.in_proj_weight", p);
		add(s, FILL_UNIFORM, w, 1, qkvb, "%s.attn.in_proj_bias", p);
		sub(n, sizeof n, p, ".attn.out_proj"), linear(s, n, w, w, 1);
		sub(n, sizeof n, p, ".ln_2"), norm(s, n, w);
		sub(n, sizeof n, p, ".mlp.c_fc"), linear(s, n, mlp, w, 1);
		sub(n, sizeof n, p, ".mlp.c_proj"), linear(s, n, w, mlp, 1);
	}
	sub(n, sizeof n, prefix, "ln_final"), norm(s, n, w);
	add(s, FILL_UNIFORM, w, 2, proj, "%stext_projection", prefix);
	add(s, FILL_ONES, 0, 0, proj, "%slogit_scale", prefix);
}

static void
openclip(struct specs *s, const struct synth_config *cfg)
{
	openclip_tower(s, OPENCLIP, cfg->clip_width, cfg->clip_layers, cfg->clip_mlp,
	    cfg->clip_vocab, cfg->clip_positions);
}

/* SDXL's two text encoders, under conditioner.embedders.{0,1}. */
static void
sdxl_text(struct specs *s, const struct synth_config *cfg)
{
	hf_clip(s, "conditioner.embedders.0.transformer.text_model.", cfg->clip_width, cfg->clip_layers,
	    cfg->clip_mlp, cfg->clip_vocab, cfg->clip_positions, 1);
	openclip_tower(s, "conditioner.embedders.1.model.", cfg->clip2_width, cfg->clip2_layers,
	    cfg->clip2_mlp, cfg->clip_vocab, cfg->clip_positions);
}

/* ---------------------------------------------------------------- SD3 */

#define SD3_CLIP_L "text_encoders.clip_l.transformer."
#define SD3_CLIP_G "text_encoders.clip_g.transformer."
#define SD3_T5 "text_encoders.t5xxl.transformer."

/* SD3's text encoders as sd3_medium_incl_clips*.safetensors stores them:
 * transformers' names, no position_ids, CLIP-L without a projection, bigG
 * with its text_projection. */
static void
sd3_text(struct specs *s, const struct synth_config *cfg)
{
	int64_t proj[2] = {cfg->clip2_width, cfg->clip2_width};

	hf_clip(s, SD3_CLIP_L "text_model.", cfg->clip_width, cfg->clip_layers, cfg->clip_mlp,
	    cfg->clip_vocab, cfg->clip_positions, 0);
	hf_clip(s, SD3_CLIP_G "text_model.", cfg->clip2_width, cfg->clip2_layers, cfg->clip2_mlp,
	    cfg->clip_vocab, cfg->clip_positions, 0);
	add(s, FILL_UNIFORM, cfg->clip2_width, 2, proj, SD3_CLIP_G "text_projection.weight");
}

/* T5 v1.1's encoder: no biases, RMSNorm weights, the relative position
 * table in block 0 only, gated-GELU feed-forward. */
static void
t5(struct specs *s, const struct synth_config *cfg)
{
	int64_t d = cfg->t5_width, ff = cfg->t5_ff, emb[2] = {cfg->t5_vocab, d};
	int64_t rel[2] = {32, cfg->t5_heads};
	char p[200], n[256];

	s->part = SYNTH_T5;
	add(s, FILL_EMBEDDING, 0, 2, emb, SD3_T5 "shared.weight");
	for (int l = 0; l < cfg->t5_layers; l++) {
		snprintf(p, sizeof p, SD3_T5 "encoder.block.%d.layer.", l);
		sub(n, sizeof n, p, "0.SelfAttention.q"), linear(s, n, d, d, 0);
		sub(n, sizeof n, p, "0.SelfAttention.k"), linear(s, n, d, d, 0);
		sub(n, sizeof n, p, "0.SelfAttention.v"), linear(s, n, d, d, 0);
		sub(n, sizeof n, p, "0.SelfAttention.o"), linear(s, n, d, d, 0);
		if (l == 0)
			add(s, FILL_EMBEDDING, 0, 2, rel, "%s0.SelfAttention.relative_attention_bias.weight", p);
		add(s, FILL_ONES, 0, 1, &d, "%s0.layer_norm.weight", p);
		sub(n, sizeof n, p, "1.DenseReluDense.wi_0"), linear(s, n, ff, d, 0);
		sub(n, sizeof n, p, "1.DenseReluDense.wi_1"), linear(s, n, ff, d, 0);
		sub(n, sizeof n, p, "1.DenseReluDense.wo"), linear(s, n, d, ff, 0);
		add(s, FILL_ONES, 0, 1, &d, "%s1.layer_norm.weight", p);
	}
	add(s, FILL_ONES, 0, 1, &d, SD3_T5 "encoder.final_layer_norm.weight");
}

/* One stream of a joint block: attention (fused q, k, v), adaLN-Zero's six
 * chunks and the MLP; the last block's context stream only its q, k, v and
 * two chunks. */
static void
mmdit_stream(struct specs *s, const char *p, int64_t d, int pre_only)
{
	char n[256];

	sub(n, sizeof n, p, ".attn.qkv"), linear(s, n, 3 * d, d, 1);
	sub(n, sizeof n, p, ".adaLN_modulation.1"), linear(s, n, (pre_only ? 2 : 6) * d, d, 1);
	if (pre_only)
		return;
	sub(n, sizeof n, p, ".attn.proj"), linear(s, n, d, d, 1);
	sub(n, sizeof n, p, ".mlp.fc1"), linear(s, n, 4 * d, d, 1);
	sub(n, sizeof n, p, ".mlp.fc2"), linear(s, n, d, 4 * d, 1);
}

/* SD3's MMDiT as the original single file names it. */
static void
mmdit(struct specs *s, const struct synth_config *cfg)
{
	int64_t d = cfg->mmdit_width, m = cfg->mmdit_pos_max, pos[3] = {1, m * m, d};
	int64_t pooled = cfg->clip_width + cfg->clip2_width;
	char p[128];

	s->part = SYNTH_UNET;
	conv(s, UNET "x_embedder.proj", d, cfg->latent_channels, 2);
	add(s, FILL_EMBEDDING, 0, 3, pos, UNET "pos_embed");
	linear(s, UNET "t_embedder.mlp.0", d, 256, 1);
	linear(s, UNET "t_embedder.mlp.2", d, d, 1);
	linear(s, UNET "y_embedder.mlp.0", d, pooled, 1);
	linear(s, UNET "y_embedder.mlp.2", d, d, 1);
	linear(s, UNET "context_embedder", d, cfg->context_dim, 1);
	for (int i = 0; i < cfg->mmdit_depth; i++) {
		snprintf(p, sizeof p, UNET "joint_blocks.%d.x_block", i);
		mmdit_stream(s, p, d, 0);
		snprintf(p, sizeof p, UNET "joint_blocks.%d.context_block", i);
		mmdit_stream(s, p, d, i == cfg->mmdit_depth - 1);
	}
	linear(s, UNET "final_layer.adaLN_modulation.1", 2 * d, d, 1);
	linear(s, UNET "final_layer.linear", 2 * 2 * (int64_t)cfg->latent_channels, d, 1);
}

/* ---------------------------------------------------------------- layout */

static void
specs_free(struct specs *s)
{
	for (int i = 0; i < s->n; i++)
		free(s->v[i].name);
	free(s->v);
	memset(s, 0, sizeof *s);
}

static int
check_config(const struct synth_config *cfg, struct sd_error *err)
{
	if (cfg->dtype != SD_F16 && cfg->dtype != SD_F32 && cfg->dtype != SD_BF16)
		return sd_fail(err, SD_EUSAGE, "synthetic model: dtype must be F16, F32 or BF16");
	if ((cfg->parts & SYNTH_ALL) == 0 || (cfg->parts & ~SYNTH_ALL) != 0)
		return sd_fail(err, SD_EUSAGE, "synthetic model: no parts selected");
	for (int i = 0; i < 4; i++) {
		if ((cfg->parts & SYNTH_UNET) && !is_sd3(cfg) && i < (cfg->unet_levels ? cfg->unet_levels : 4) &&
		    (cfg->unet_channels[i] < 32 ||
		    cfg->unet_channels[i] % 32 != 0 || cfg->unet_channels[i] > 65536))
			return sd_fail(err, SD_EUSAGE, "synthetic model: UNet width %d is not a multiple of 32",
			    cfg->unet_channels[i]);
		if ((cfg->parts & SYNTH_VAE) && (cfg->vae_channels[i] < 32 ||
		    cfg->vae_channels[i] % 32 != 0 || cfg->vae_channels[i] > 65536))
			return sd_fail(err, SD_EUSAGE, "synthetic model: VAE width %d is not a multiple of 32",
			    cfg->vae_channels[i]);
	}
	if ((cfg->parts & SYNTH_UNET) && !is_sd3(cfg) && (cfg->unet_time_embed < 1 ||
	    cfg->unet_in_channels < 1 || cfg->unet_out_channels < 1 || cfg->context_dim < 1 ||
	    (is_sd2(cfg) || is_sdxl(cfg) ? cfg->unet_head_channels < 1 : cfg->unet_heads < 1) ||
	    cfg->unet_time_embed > 65536 || cfg->context_dim > 65536))
		return sd_fail(err, SD_EUSAGE, "synthetic model: bad UNet configuration");
	if (is_sd3(cfg) && ((cfg->parts & SYNTH_UNET) && (cfg->mmdit_width < 1 || cfg->mmdit_depth < 1 ||
	    cfg->mmdit_heads < 1 || cfg->mmdit_width % cfg->mmdit_heads != 0 || cfg->mmdit_pos_max < 1 ||
	    cfg->mmdit_width > 65536 || cfg->mmdit_depth > 1000 || cfg->mmdit_pos_max > 1024 ||
	    cfg->context_dim < 1 || cfg->context_dim > 65536 || cfg->latent_channels < 1 ||
	    cfg->latent_channels > 64)))
		return sd_fail(err, SD_EUSAGE, "synthetic model: bad MMDiT configuration");
	if (is_sd3(cfg) && (cfg->parts & SYNTH_T5) && (cfg->t5_width < 1 || cfg->t5_layers < 1 ||
	    cfg->t5_heads < 1 || cfg->t5_width % cfg->t5_heads != 0 || cfg->t5_ff < 1 || cfg->t5_vocab < 1 ||
	    cfg->t5_width > 65536 || cfg->t5_layers > 1000 || cfg->t5_ff > 1 << 20 || cfg->t5_vocab > 1 << 24))
		return sd_fail(err, SD_EUSAGE, "synthetic model: bad T5 configuration");
	if (is_sd3(cfg) && (cfg->parts & SYNTH_CLIP) && (cfg->clip2_width < 1 || cfg->clip2_layers < 1 ||
	    cfg->clip2_heads < 1 || cfg->clip2_width % cfg->clip2_heads != 0 || cfg->clip2_mlp < 1 ||
	    cfg->clip2_width > 65536 || cfg->clip2_layers > 1000 || cfg->clip2_mlp > 1 << 20))
		return sd_fail(err, SD_EUSAGE, "synthetic model: bad CLIP configuration");
	if ((cfg->parts & SYNTH_VAE) && (cfg->latent_channels < 1 || cfg->latent_channels > 64))
		return sd_fail(err, SD_EUSAGE, "synthetic model: bad latent channel count %d",
		    cfg->latent_channels);
	if ((cfg->parts & SYNTH_CLIP) && (cfg->clip_width < 1 || cfg->clip_layers < 1 ||
	    cfg->clip_heads < 1 || cfg->clip_width % cfg->clip_heads != 0 || cfg->clip_mlp < 1 ||
	    cfg->clip_vocab < 1 || cfg->clip_positions < 1 || cfg->clip_width > 65536 ||
	    cfg->clip_layers > 1000 || cfg->clip_mlp > 1 << 20 || cfg->clip_vocab > 1 << 24 ||
	    cfg->clip_positions > 65536))
		return sd_fail(err, SD_EUSAGE, "synthetic model: bad CLIP configuration");
	return 0;
}

/* Data order: the widest dtype first (I64 position_ids), then by name, so
 * that every tensor is aligned to its element size. */
static int
by_layout(const void *a, const void *b)
{
	const struct spec *x = a, *y = b;
	size_t sx = sd_dtype_size(x->dtype), sy = sd_dtype_size(y->dtype);

	if (sx != sy)
		return sx > sy ? -1 : 1;
	return strcmp(x->name, y->name);
}

/* Build the tensor list and the header (padded with spaces to a multiple
 * of 8 bytes, so that the data section is 8-aligned). */
static int
layout(const struct synth_config *cfg, struct specs *s, char **header, size_t *hlen,
    struct sd_error *err)
{
	json_t *root = NULL, *meta;
	uint64_t offset = 0;
	char seed[32], *h;
	size_t n;

	memset(s, 0, sizeof *s);
	*header = NULL;
	if (check_config(cfg, err) < 0)
		return -1;
	s->dtype = cfg->dtype;
	if (cfg->parts & SYNTH_UNET)
		(is_sd3(cfg) ? mmdit : unet)(s, cfg);
	if (cfg->parts & SYNTH_VAE)
		vae(s, cfg);
	if (cfg->parts & SYNTH_CLIP)
		(is_sd3(cfg) ? sd3_text : is_sdxl(cfg) ? sdxl_text : is_sd2(cfg) ? openclip : clip)(s, cfg);
	if ((cfg->parts & SYNTH_T5) && is_sd3(cfg))
		t5(s, cfg);
	if (s->oom)
		goto oom;
	qsort(s->v, (size_t)s->n, sizeof *s->v, by_layout);
	if ((root = json_object()) == NULL || (meta = json_object()) == NULL)
		goto oom;
	snprintf(seed, sizeof seed, "%" PRIu64, cfg->seed);
	json_object_set_new(meta, "format", json_string("pt"));
	json_object_set_new(meta, "generator", json_string("sdbatch make-model"));
	json_object_set_new(meta, "preset", json_string(cfg->name ? cfg->name : "custom"));
	{
		const char *arch = cfg->arch ? cfg->arch : "sd15";
		char num[32];
		json_object_set_new(meta, "modelspec.architecture", json_string(
		    strcmp(arch, "sd3") == 0 ? "stable-diffusion-v3-medium" :
		    strcmp(arch, "sdxl") == 0 ? "stable-diffusion-xl-v1-base" :
		    strcmp(arch, "sdxl-turbo") == 0 ? "stable-diffusion-xl-turbo" :
		    strcmp(arch, "sd2") == 0 ? "stable-diffusion-v2-768-v" :
		    strcmp(arch, "sd2-base") == 0 ? "stable-diffusion-v2-512" :
		    strcmp(arch, "sd-turbo") == 0 ? "stable-diffusion-v2-turbo" : "stable-diffusion-v1"));
		json_object_set_new(meta, "modelspec.prediction_type",
		    json_string(strcmp(arch, "sd2") == 0 ? "v" : is_sd3(cfg) ? "flow" : "epsilon"));
		if (is_sd3(cfg)) {
			/* widths of heads that are not 64 (the tiny model's) */
			snprintf(num, sizeof num, "%d", cfg->mmdit_heads);
			json_object_set_new(meta, "sdbatch.mmdit_heads", json_string(num));
			snprintf(num, sizeof num, "%d,%d", cfg->clip_heads, cfg->clip2_heads);
			json_object_set_new(meta, "sdbatch.text_heads", json_string(num));
		} else {
			if (is_sd2(cfg) || is_sdxl(cfg)) {
				snprintf(num, sizeof num, "%d", cfg->unet_head_channels);
				json_object_set_new(meta, "sdbatch.unet_head_channels", json_string(num));
			} else {
				snprintf(num, sizeof num, "%d", cfg->unet_heads);
				json_object_set_new(meta, "sdbatch.unet_heads", json_string(num));
			}
			snprintf(num, sizeof num, "%d", cfg->clip_heads);
			json_object_set_new(meta, "sdbatch.text_heads", json_string(num));
		}
	}
	json_object_set_new(meta, "seed", json_string(seed));
	json_object_set_new(root, "__metadata__", meta);
	for (int i = 0; i < s->n; i++) {
		struct spec *t = &s->v[i];
		json_t *e = json_object(), *shape = json_array();
		uint64_t nb = (uint64_t)t->numel * sd_dtype_size(t->dtype);
		if (e == NULL || shape == NULL) {
			json_decref(e);
			json_decref(shape);
			goto oom;
		}
		for (int d = 0; d < t->ndim; d++)
			json_array_append_new(shape, json_integer(t->shape[d]));
		t->offset = offset;
		json_object_set_new(e, "dtype", json_string(sd_dtype_name(t->dtype)));
		json_object_set_new(e, "shape", shape);
		json_object_set_new(e, "data_offsets",
		    json_pack("[II]", (json_int_t)offset, (json_int_t)(offset + nb)));
		if (json_object_set_new(root, t->name, e) < 0)
			goto oom;
		offset += nb;
	}
	h = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(root);
	root = NULL;
	if (h == NULL)
		goto oom;
	n = strlen(h);
	*hlen = (n + 7) & ~(size_t)7;
	if ((*header = malloc(*hlen + 1)) == NULL) {
		free(h);
		goto oom;
	}
	memcpy(*header, h, n);
	memset(*header + n, ' ', *hlen - n);
	(*header)[*hlen] = '\0';
	free(h);
	return 0;
oom:
	json_decref(root);
	specs_free(s);
	return sd_fail(err, SD_EINTERNAL, "out of memory");
}

int
synth_count(const struct synth_config *cfg, struct synth_counts *out,
    struct sd_error *err)
{
	struct specs s;
	char *header;
	size_t hlen;

	memset(out, 0, sizeof *out);
	if (layout(cfg, &s, &header, &hlen, err) < 0)
		return -1;
	out->unet_params = s.params[0];
	out->vae_params = s.params[1];
	out->clip_params = s.params[2];
	out->t5_params = s.params[3];
	out->tensors = s.n;
	out->file_size = 8 + hlen;
	for (int i = 0; i < s.n; i++)
		out->file_size += (uint64_t)s.v[i].numel * sd_dtype_size(s.v[i].dtype);
	free(header);
	specs_free(&s);
	return 0;
}

/* ---------------------------------------------------------------- values */

static uint64_t
splitmix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static uint64_t
tensor_seed(uint64_t seed, const char *name)
{
	uint64_t h = 1469598103934665603ull;

	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 1099511628211ull;
	return splitmix64(h ^ splitmix64(seed));
}

/* Elements [start, start + n) of t into out (t's dtype).  Element i is
 * a function of (seed, i) alone: any chunking gives the same file. */
static void
fill_chunk(const struct spec *t, uint64_t seed, int64_t start, int64_t n, void *out)
{
	/* Uniform(-b, b) has standard deviation b/sqrt(3). */
	double bound = t->fill == FILL_EMBEDDING ? 0.02 * sqrt(3.0) : t->bound;

	if (t->fill == FILL_ARANGE) {
		int64_t *o = out;
		for (int64_t i = 0; i < n; i++)
			o[i] = start + i;
		return;
	}
	#pragma omp parallel for if (n > 65536) schedule(static)
	for (int64_t i = 0; i < n; i++) {
		float v;
		if (t->fill == FILL_ONES)
			v = 1.0f;
		else if (t->fill == FILL_ZEROS)
			v = 0.0f;
		else {
			uint64_t r = splitmix64(seed + (uint64_t)(start + i) * 0x9e3779b97f4a7c15ull);
			double u = (double)(r >> 11) * 0x1.0p-53;	/* [0, 1) */
			v = (float)((2.0 * u - 1.0) * bound);
		}
		switch (t->dtype) {
		case SD_F32:
			((float *)out)[i] = v;
			break;
		case SD_BF16:
			((uint16_t *)out)[i] = sd_f32_to_bf16(v);
			break;
		default:
			((uint16_t *)out)[i] = sd_f32_to_f16(v);
			break;
		}
	}
}

#define CHUNK (1 << 20)		/* elements generated at a time */

int
synth_checkpoint(const char *path, const struct synth_config *cfg,
    struct sd_error *err)
{
	struct specs s;
	struct sd_atomic_file af;
	char *header;
	unsigned char lenbuf[8];
	void *buf = NULL;
	size_t hlen;
	int rc = -1;

	if (layout(cfg, &s, &header, &hlen, err) < 0)
		return sd_error_prefix(err, "%s", path);
	buf = malloc((size_t)CHUNK * 8);
	if (buf == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		goto out;
	}
	if (sd_atomic_open(&af, AT_FDCWD, path, NULL, 0666, err) < 0)
		goto out;
	for (int i = 0; i < 8; i++)
		lenbuf[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
	if (sd_atomic_write(&af, lenbuf, 8, err) < 0 ||
	    sd_atomic_write(&af, header, hlen, err) < 0)
		goto out;
	for (int i = 0; i < s.n; i++) {
		const struct spec *t = &s.v[i];
		uint64_t seed = tensor_seed(cfg->seed, t->name);
		for (int64_t start = 0; start < t->numel; start += CHUNK) {
			int64_t n = t->numel - start < CHUNK ? t->numel - start : CHUNK;
			fill_chunk(t, seed, start, n, buf);
			if (sd_atomic_write(&af, buf, (size_t)n * sd_dtype_size(t->dtype),
			    err) < 0)
				goto out;
		}
	}
	if (sd_atomic_commit(&af, 0, err) < 0)
		goto out;
	rc = 0;
out:
	free(buf);
	free(header);
	specs_free(&s);
	return rc;
}
