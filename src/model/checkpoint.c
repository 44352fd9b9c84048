/* checkpoint.c: single-file and diffusers-folder checkpoints, mapped to
 * the original names; architecture detection. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "io/safetensors.h"
#include "model/checkpoint.h"

static int
is_dir(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int
is_file(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int
starts(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* ---------------------------------------------------------------- names */

static const char *
unet_resnet_part(const char *rest, char *buf, size_t size)
{
	static const char *map[][2] = {
		{"norm1.", "in_layers.0."}, {"conv1.", "in_layers.2."},
		{"norm2.", "out_layers.0."}, {"conv2.", "out_layers.3."},
		{"time_emb_proj.", "emb_layers.1."}, {"conv_shortcut.", "skip_connection."},
	};
	for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
		if (starts(rest, map[i][0])) {
			snprintf(buf, size, "%s%s", map[i][1], rest + strlen(map[i][0]));
			return buf;
		}
	return NULL;
}

/* up_attn: bit i set when up_blocks.i has attentions (its upsampler then
 * comes after them: output_blocks.N.2 instead of .1). */
static int
unet_name(const char *d, unsigned up_attn, char *out, size_t size)
{
	static const char *fixed[][2] = {
		{"time_embedding.linear_1.", "time_embed.0."}, {"time_embedding.linear_2.", "time_embed.2."},
		{"add_embedding.linear_1.", "label_emb.0.0."}, {"add_embedding.linear_2.", "label_emb.0.2."},
		{"conv_in.", "input_blocks.0.0."}, {"conv_norm_out.", "out.0."}, {"conv_out.", "out.2."},
	};
	char rest[256], tmp[300];
	int i, j, n = 0;

	for (size_t k = 0; k < sizeof fixed / sizeof fixed[0]; k++)
		if (starts(d, fixed[k][0])) {
			snprintf(out, size, SD_PREFIX_UNET "%s%s", fixed[k][1], d + strlen(fixed[k][0]));
			return 0;
		}
	if (sscanf(d, "down_blocks.%d.resnets.%d.%255s%n", &i, &j, rest, &n) == 3 && d[n] == '\0') {
		if (unet_resnet_part(rest, tmp, sizeof tmp) == NULL)
			return -1;
		snprintf(out, size, SD_PREFIX_UNET "input_blocks.%d.0.%s", 3 * i + j + 1, tmp);
		return 0;
	}
	if (sscanf(d, "down_blocks.%d.attentions.%d.%255s%n", &i, &j, rest, &n) == 3 && d[n] == '\0') {
		snprintf(out, size, SD_PREFIX_UNET "input_blocks.%d.1.%s", 3 * i + j + 1, rest);
		return 0;
	}
	if (sscanf(d, "down_blocks.%d.downsamplers.0.conv.%255s%n", &i, rest, &n) == 2 && d[n] == '\0') {
		snprintf(out, size, SD_PREFIX_UNET "input_blocks.%d.0.op.%s", 3 * (i + 1), rest);
		return 0;
	}
	if (sscanf(d, "up_blocks.%d.resnets.%d.%255s%n", &i, &j, rest, &n) == 3 && d[n] == '\0') {
		if (unet_resnet_part(rest, tmp, sizeof tmp) == NULL)
			return -1;
		snprintf(out, size, SD_PREFIX_UNET "output_blocks.%d.0.%s", 3 * i + j, tmp);
		return 0;
	}
	if (sscanf(d, "up_blocks.%d.attentions.%d.%255s%n", &i, &j, rest, &n) == 3 && d[n] == '\0') {
		snprintf(out, size, SD_PREFIX_UNET "output_blocks.%d.1.%s", 3 * i + j, rest);
		return 0;
	}
	if (sscanf(d, "up_blocks.%d.upsamplers.0.%255s%n", &i, rest, &n) == 2 && d[n] == '\0') {
		snprintf(out, size, SD_PREFIX_UNET "output_blocks.%d.%d.%s", 3 * i + 2,
		    i < 32 && (up_attn >> i & 1) ? 2 : 1, rest);
		return 0;
	}
	if (sscanf(d, "mid_block.attentions.0.%255s%n", rest, &n) == 1 && d[n] == '\0') {
		snprintf(out, size, SD_PREFIX_UNET "middle_block.1.%s", rest);
		return 0;
	}
	if (sscanf(d, "mid_block.resnets.%d.%255s%n", &j, rest, &n) == 2 && d[n] == '\0') {
		if (unet_resnet_part(rest, tmp, sizeof tmp) == NULL)
			return -1;
		snprintf(out, size, SD_PREFIX_UNET "middle_block.%d.%s", 2 * j, tmp);
		return 0;
	}
	return -1;
}

static const char *
vae_part(const char *rest, char *buf, size_t size)
{
	static const char *map[][2] = {
		{"conv_shortcut.", "nin_shortcut."}, {"group_norm.", "norm."},
		{"to_q.", "q."}, {"to_k.", "k."}, {"to_v.", "v."}, {"to_out.0.", "proj_out."},
		{"query.", "q."}, {"key.", "k."}, {"value.", "v."}, {"proj_attn.", "proj_out."},
	};
	for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
		if (starts(rest, map[i][0])) {
			snprintf(buf, size, "%s%s", map[i][1], rest + strlen(map[i][0]));
			return buf;
		}
	snprintf(buf, size, "%s", rest);
	return buf;
}

static int
vae_name(const char *d, char *out, size_t size)
{
	char coder[16], rest[256], tmp[300];
	int i, j, n = 0;

	if (starts(d, "quant_conv.") || starts(d, "post_quant_conv.")) {
		snprintf(out, size, SD_PREFIX_VAE "%s", d);
		return 0;
	}
	if (sscanf(d, "%15[a-z].%255s%n", coder, rest, &n) != 2 || d[n] != '\0' ||
	    (strcmp(coder, "encoder") != 0 && strcmp(coder, "decoder") != 0))
		return -1;
	d += strlen(coder) + 1;
	if (starts(d, "conv_in.") || starts(d, "conv_out.")) {
		snprintf(out, size, SD_PREFIX_VAE "%s.%s", coder, d);
		return 0;
	}
	if (starts(d, "conv_norm_out.")) {
		snprintf(out, size, SD_PREFIX_VAE "%s.norm_out.%s", coder, d + strlen("conv_norm_out."));
		return 0;
	}
	if (sscanf(d, "down_blocks.%d.resnets.%d.%255s%n", &i, &j, rest, &n) == 3 && d[n] == '\0') {
		snprintf(out, size, SD_PREFIX_VAE "%s.down.%d.block.%d.%s", coder, i, j,
		    vae_part(rest, tmp, sizeof tmp));
		return 0;
	}
	if (sscanf(d, "down_blocks.%d.downsamplers.0.%255s%n", &i, rest, &n) == 2 && d[n] == '\0') {
		snprintf(out, size, SD_PREFIX_VAE "%s.down.%d.downsample.%s", coder, i, rest);
		return 0;
	}
	if (sscanf(d, "up_blocks.%d.resnets.%d.%255s%n", &i, &j, rest, &n) == 3 && d[n] == '\0') {
		snprintf(out, size, SD_PREFIX_VAE "%s.up.%d.block.%d.%s", coder, 3 - i, j,
		    vae_part(rest, tmp, sizeof tmp));
		return 0;
	}
	if (sscanf(d, "up_blocks.%d.upsamplers.0.%255s%n", &i, rest, &n) == 2 && d[n] == '\0') {
		snprintf(out, size, SD_PREFIX_VAE "%s.up.%d.upsample.%s", coder, 3 - i, rest);
		return 0;
	}
	if (sscanf(d, "mid_block.resnets.%d.%255s%n", &j, rest, &n) == 2 && d[n] == '\0') {
		snprintf(out, size, SD_PREFIX_VAE "%s.mid.block_%d.%s", coder, j + 1,
		    vae_part(rest, tmp, sizeof tmp));
		return 0;
	}
	if (sscanf(d, "mid_block.attentions.0.%255s%n", rest, &n) == 1 && d[n] == '\0') {
		snprintf(out, size, SD_PREFIX_VAE "%s.mid.attn_1.%s", coder, vae_part(rest, tmp, sizeof tmp));
		return 0;
	}
	return -1;
}

/* SD 1.x/2.x: every up block but the first has attentions. */
#define SD_UP_ATTN (~1u)

/* The up blocks of a diffusers UNet file that have attentions. */
static unsigned
up_attention_mask(const struct st_file *f)
{
	unsigned mask = 0;
	int i, n;

	for (int k = 0; k < st_count(f); k++) {
		const char *name = st_tensor(f, k)->name;
		n = 0;	/* %n is not stored when "attentions." does not match */
		if (sscanf(name, "up_blocks.%d.attentions.%n", &i, &n) == 1 && n > 0 && i >= 0 && i < 32)
			mask |= 1u << i;
	}
	return mask;
}

int
checkpoint_diffusers_name(const char *part, const char *name, char *out, size_t size)
{
	if (strcmp(part, "unet") == 0)
		return unet_name(name, SD_UP_ATTN, out, size);
	/* SDXL's two text encoders: transformers' names (text_encoder_2 also
	 * its text_projection) under their own prefixes. */
	if (strcmp(part, "text_encoder_xl") == 0) {
		if (!starts(name, "text_model."))
			return -1;
		snprintf(out, size, SD_PREFIX_XL_CLIP1 "%s", name + strlen("text_model."));
		return 0;
	}
	if (strcmp(part, "text_encoder_2") == 0) {
		if (strcmp(name, "text_projection.weight") == 0) {
			snprintf(out, size, SD_PREFIX_XL_CLIP2_HF "text_projection.weight");
			return 0;
		}
		if (!starts(name, "text_model."))
			return -1;
		snprintf(out, size, SD_PREFIX_XL_CLIP2_HF "%s", name + strlen("text_model."));
		return 0;
	}
	if (strcmp(part, "vae") == 0)
		return vae_name(name, out, size);
	/* SD3: the transformer keeps its diffusers names (model/mmdit.c reads
	 * both layouts); the text encoders are transformers' names under
	 * the single file's prefixes. */
	if (strcmp(part, "transformer") == 0) {
		snprintf(out, size, SD_PREFIX_UNET "%s", name);
		return 0;
	}
	if (strcmp(part, "sd3_text_encoder") == 0 || strcmp(part, "sd3_text_encoder_2") == 0 ||
	    strcmp(part, "sd3_text_encoder_3") == 0) {
		const char *pre = strcmp(part, "sd3_text_encoder") == 0 ? SD_PREFIX_SD3_CLIP_L :
		    strcmp(part, "sd3_text_encoder_2") == 0 ? SD_PREFIX_SD3_CLIP_G : SD_PREFIX_SD3_T5;
		if (starts(name, "text_encoders."))	/* a file with the prefixes already */
			snprintf(out, size, "%s", name);
		else
			snprintf(out, size, "%s%s", pre, name);
		return 0;
	}
	if (strcmp(part, "text_encoder") == 0) {
		if (!starts(name, "text_model."))
			return -1;
		snprintf(out, size, "cond_stage_model.transformer.%s", name);
		return 0;
	}
	return -1;
}

/* ---------------------------------------------------------------- detection */

static void
count_file(struct sd_detect *d, const struct st_file *f)
{
	for (int i = 0; i < st_count(f); i++) {
		const struct sd_tensor *t = st_tensor(f, i);
		d->tensors++;
		d->dtype_counts[t->dtype]++;
		d->params += sd_tensor_numel(t);
	}
	d->bytes += st_data_size(f);
}

static int
any_prefix(const struct st_file *f, const char *prefix)
{
	for (int i = 0; i < st_count(f); i++)
		if (starts(st_tensor(f, i)->name, prefix))
			return 1;
	return 0;
}

static void
set_arch(struct sd_detect *d, const char *arch, const char *name, int supported)
{
	snprintf(d->arch, sizeof d->arch, "%s", arch);
	snprintf(d->name, sizeof d->name, "%s", name);
	d->supported = supported;
}

/* Classify a single file from its names and shapes. */
static void
detect_file(const struct st_file *f, struct sd_detect *d)
{
	const struct sd_tensor *t;

	count_file(d, f);
	set_arch(d, "unknown", "unknown (no Stable Diffusion tensors recognised)", 0);
	snprintf(d->layout, sizeof d->layout, "single-file");
	if (any_prefix(f, SD_PREFIX_UNET "joint_blocks.")) {
		set_arch(d, "sd3", "Stable Diffusion 3 (MMDiT)", 1);
		d->has_unet = 1;
		d->has_vae = st_find(f, SD_PREFIX_VAE "decoder.conv_in.weight") != NULL;
		d->has_text_encoder = any_prefix(f, SD_PREFIX_SD3_TEXT);
		if ((t = st_find(f, SD_PREFIX_UNET "x_embedder.proj.weight")) != NULL && t->ndim == 4)
			d->unet_in_channels = (int)t->shape[1];
		if ((t = st_find(f, SD_PREFIX_UNET "context_embedder.weight")) != NULL && t->ndim == 2)
			d->context_dim = (int)t->shape[1];
		return;
	}
	if (any_prefix(f, "double_blocks.") || any_prefix(f, "model.diffusion_model.double_blocks.")) {
		set_arch(d, "flux", "FLUX", 0);
		d->has_unet = 1;
		return;
	}
	if (any_prefix(f, "conditioner.embedders.")) {
		int base = any_prefix(f, "conditioner.embedders.1.");
		set_arch(d, base ? "sdxl" : "sdxl-refiner", base ? "Stable Diffusion XL" :
		    "Stable Diffusion XL refiner", base);
		d->has_unet = st_find(f, SD_PREFIX_UNET "input_blocks.0.0.weight") != NULL;
		d->has_vae = st_find(f, SD_PREFIX_VAE "decoder.conv_in.weight") != NULL;
		d->has_text_encoder = 1;
		if ((t = st_find(f, SD_PREFIX_UNET "input_blocks.0.0.weight")) != NULL && t->ndim == 4)
			d->unet_in_channels = (int)t->shape[1];
		if ((t = st_find(f, SD_PREFIX_UNET "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight")) != NULL &&
		    t->ndim == 2)
			d->context_dim = (int)t->shape[1];
		return;
	}
	d->has_unet = (t = st_find(f, SD_PREFIX_UNET "input_blocks.0.0.weight")) != NULL;
	if (t != NULL && t->ndim == 4)
		d->unet_in_channels = (int)t->shape[1];
	t = st_find(f, SD_PREFIX_UNET "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight");
	if (t != NULL && t->ndim == 2)
		d->context_dim = (int)t->shape[1];
	d->has_vae = st_find(f, SD_PREFIX_VAE "decoder.conv_in.weight") != NULL;
	d->has_text_encoder = any_prefix(f, "cond_stage_model.");
	if (any_prefix(f, "cond_stage_model.model.transformer.") ||
	    ((t = st_find(f, SD_PREFIX_UNET "input_blocks.1.1.proj_in.weight")) != NULL && t->ndim == 2)) {
		set_arch(d, "sd2", "Stable Diffusion 2.x", 1);
		if (d->has_unet && !d->has_vae && !d->has_text_encoder)
			snprintf(d->layout, sizeof d->layout, "unet-only");
		return;
	}
	if (d->has_unet) {
		if (d->unet_in_channels == 9)
			set_arch(d, "sd15-inpaint", "Stable Diffusion 1.x inpainting", 1);
		else
			set_arch(d, "sd15", "Stable Diffusion 1.x", 1);
		if (!d->has_vae && !d->has_text_encoder)
			snprintf(d->layout, sizeof d->layout, "unet-only");
		return;
	}
	if (d->has_vae) {
		set_arch(d, "vae", "Stable Diffusion VAE", 1);
		snprintf(d->layout, sizeof d->layout, "vae-only");
		return;
	}
	/* Parts saved without a prefix: a VAE file (original or diffusers
	 * names) or a diffusers UNet file. */
	if (st_find(f, "decoder.conv_in.weight") != NULL) {
		set_arch(d, "vae", "Stable Diffusion VAE", 1);
		d->has_vae = 1;
		snprintf(d->layout, sizeof d->layout, "vae-only");
		return;
	}
	if ((t = st_find(f, "conv_in.weight")) != NULL && st_find(f, "time_embedding.linear_1.weight")) {
		d->has_unet = 1;
		d->unet_in_channels = t->ndim == 4 ? (int)t->shape[1] : 0;
		t = st_find(f, "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight");
		d->context_dim = t && t->ndim == 2 ? (int)t->shape[1] : 0;
		snprintf(d->layout, sizeof d->layout, "unet-only");
		t = st_find(f, "down_blocks.0.attentions.0.proj_in.weight");
		if (st_find(f, "add_embedding.linear_1.weight"))
			set_arch(d, "sdxl", "Stable Diffusion XL UNet", 1);
		else if (t != NULL && t->ndim == 2)
			set_arch(d, "sd2", "Stable Diffusion 2.x UNet", 1);
		else
			set_arch(d, d->unet_in_channels == 9 ? "sd15-inpaint" : "sd15",
			    d->unet_in_channels == 9 ? "Stable Diffusion 1.x inpainting UNet" :
			    "Stable Diffusion 1.x UNet", 1);
	}
}

/* ---------------------------------------------------------------- loading */

/* Add every tensor of f, mapped to original names.  mode: "single" (names
 * as they are, plus prefix-less VAE files), or a diffusers part name. */
static int
add_tensors(struct sd_weights *w, const struct st_file *f, const char *part,
    const char *only, const char *skip1, const char *skip2, struct sd_error *err)
{
	char name[512];
	int is_bare_vae = st_find(f, "decoder.conv_in.weight") != NULL &&
	    st_find(f, SD_PREFIX_VAE "decoder.conv_in.weight") == NULL;
	int is_diffusers_vae = is_bare_vae && st_find(f, "decoder.up_blocks.0.resnets.0.conv1.weight") != NULL;
	int is_diffusers_unet = st_find(f, "time_embedding.linear_1.weight") != NULL;
	unsigned up_attn = is_diffusers_unet ? up_attention_mask(f) : SD_UP_ATTN;

	for (int i = 0; i < st_count(f); i++) {
		const struct sd_tensor *t = st_tensor(f, i);
		const char *use = t->name;

		if (strcmp(part, "single") == 0) {
			if (is_diffusers_unet || is_diffusers_vae) {
				if ((is_diffusers_unet ? unet_name(t->name, up_attn, name, sizeof name) :
				    checkpoint_diffusers_name("vae", t->name, name, sizeof name)) < 0)
					continue;	/* extra keys are ignored */
				use = name;
			} else if (is_bare_vae) {
				snprintf(name, sizeof name, SD_PREFIX_VAE "%s", t->name);
				use = name;
			} else if (starts(t->name, "cond_stage_model.transformer.") &&
			    !starts(t->name, SD_PREFIX_CLIP)) {
				/* older SD 1.x files: no "text_model." level */
				snprintf(name, sizeof name, SD_PREFIX_CLIP "%s",
				    t->name + strlen("cond_stage_model.transformer."));
				use = name;
			}
		} else {
			if ((strcmp(part, "unet") == 0 ? unet_name(t->name, up_attn, name, sizeof name) :
			    checkpoint_diffusers_name(part, t->name, name, sizeof name)) < 0)
				continue;
			use = name;
		}
		if ((only && !starts(use, only)) || (skip1 && starts(use, skip1)) ||
		    (skip2 && starts(use, skip2)))
			continue;
		if (weights_put(w, use, t) < 0)
			return sd_fail(err, SD_EINTERNAL, "out of memory");
	}
	return 0;
}

/* The safetensors file of a diffusers part: DIR/PART/BASE.safetensors, or
 * its fp16 variant. */
static int
find_part_file(const char *dir, const char *part, const char *base, char *out, size_t size,
    struct sd_error *err)
{
	snprintf(out, size, "%s/%s/%s.safetensors", dir, part, base);
	if (is_file(out))
		return 0;
	snprintf(out, size, "%s/%s/%s.fp16.safetensors", dir, part, base);
	if (is_file(out))
		return 0;
	snprintf(out, size, "%s/%s/%s.bin", dir, part, base);
	if (is_file(out))
		return sd_fail(err, SD_EDATA, "%s: PyTorch .bin weights are not supported "
		    "(only .safetensors); convert them or use the single-file checkpoint", out);
	snprintf(out, size, "%s/%s/%s.safetensors.index.json", dir, part, base);
	if (is_file(out))
		return sd_fail(err, SD_EDATA, "%s: sharded weights are not supported yet", out);
	return sd_fail(err, SD_ENOINPUT, "%s/%s: no %s.safetensors (or .fp16.safetensors)", dir, part, base);
}

static struct st_file *
open_into(struct sd_weights *w, const char *path, const char *part,
    const char *only, const char *skip1, const char *skip2, struct sd_error *err)
{
	struct st_file *f = st_open(path, err);

	if (f == NULL)
		return NULL;
	weights_own_file(w, f);
	if (add_tensors(w, f, part, only, skip1, skip2, err) < 0)
		return NULL;
	return f;
}

/* A diffusers part into w as `as` maps it: DIR/PART/BASE.safetensors (or
 * its fp16 variant), else the shards that BASE.safetensors.index.json (or
 * .index.fp16.json) lists in its weight_map, each a file of that folder. */
static int
open_part(struct sd_weights *w, const char *dir, const char *part, const char *base,
    const char *as, struct sd_error *err)
{
	static const char *const index_names[] = {"%s/%s/%s.safetensors.index.json",
	    "%s/%s/%s.safetensors.index.fp16.json"};
	char file[4096];
	struct sd_error first = {0};
	json_t *root = NULL, *map, *v;
	const char *key;
	int rc = -1;

	if (find_part_file(dir, part, base, file, sizeof file, &first) == 0)
		return open_into(w, file, as, NULL, NULL, NULL, err) == NULL ? -1 : 0;
	for (size_t i = 0; i < 2 && root == NULL; i++) {
		json_error_t je;
		snprintf(file, sizeof file, index_names[i], dir, part, base);
		if (!is_file(file))
			continue;
		if ((root = json_load_file(file, 0, &je)) == NULL)
			return sd_fail(err, SD_EDATA, "%s: not a valid JSON index of shards (line %d)", file,
			    je.line);
	}
	if (root == NULL) {
		*err = first;
		return -1;
	}
	map = json_object_get(root, "weight_map");
	if (!json_is_object(map) || json_object_size(map) == 0) {
		sd_fail(err, SD_EDATA, "%s: no weight_map in this index of shards", file);
		goto out;
	}
	{
		/* each shard once, in the order the map names them */
		const char **seen = calloc(json_object_size(map), sizeof *seen);
		size_t nseen = 0;
		if (seen == NULL) {
			sd_fail(err, SD_EINTERNAL, "out of memory");
			goto out;
		}
		json_object_foreach(map, key, v) {
			const char *shard = json_string_value(v);
			char path[4096];
			size_t k;
			if (shard == NULL || strchr(shard, '/') != NULL || shard[0] == '.' ||
			    strlen(shard) < 13 || strcmp(shard + strlen(shard) - 12, ".safetensors") != 0) {
				sd_fail(err, SD_EDATA, "%s: the shard of tensor \"%.64s\" is not a .safetensors "
				    "file of the same folder", file, key);
				free(seen);
				goto out;
			}
			for (k = 0; k < nseen && strcmp(seen[k], shard) != 0; k++)
				;
			if (k < nseen)
				continue;
			seen[nseen++] = shard;
			snprintf(path, sizeof path, "%s/%s/%s", dir, part, shard);
			if (open_into(w, path, as, NULL, NULL, NULL, err) == NULL) {
				free(seen);
				goto out;
			}
		}
		free(seen);
	}
	rc = 0;
out:
	json_decref(root);
	return rc;
}

static int
read_json_int(const char *path, const char *key, int def)
{
	json_t *root = json_load_file(path, 0, NULL), *v;
	int out = def;

	if (root == NULL)
		return def;
	v = json_object_get(root, key);
	if (json_is_integer(v))
		out = (int)json_integer_value(v);
	json_decref(root);
	return out;
}

static int
detect_diffusers(const char *dir, struct sd_detect *d, struct sd_error *err)
{
	char path[4096];
	json_t *root, *cls;
	const char *name;

	snprintf(path, sizeof path, "%s/model_index.json", dir);
	snprintf(d->layout, sizeof d->layout, "diffusers");
	root = json_load_file(path, 0, NULL);
	if (root == NULL) {
		snprintf(path, sizeof path, "%s/unet", dir);
		if (!is_dir(path))
			return sd_fail(err, SD_EDATA, "%s: a folder without model_index.json or unet/: "
			    "not a diffusers model folder", dir);
		name = "StableDiffusionPipeline";
	} else {
		cls = json_object_get(root, "_class_name");
		name = json_is_string(cls) ? json_string_value(cls) : "?";
	}
	if (strstr(name, "XL")) {
		snprintf(path, sizeof path, "%s/text_encoder", dir);
		if (is_dir(path))
			set_arch(d, "sdxl", "Stable Diffusion XL", 1);
		else
			set_arch(d, "sdxl-refiner", "Stable Diffusion XL refiner", 0);
	}
	else if (strstr(name, "StableDiffusion3")) {
		set_arch(d, "sd3", "Stable Diffusion 3 (MMDiT)", 1);
		snprintf(path, sizeof path, "%s/transformer/config.json", dir);
		d->context_dim = read_json_int(path, "joint_attention_dim", 4096);
		d->unet_in_channels = read_json_int(path, "in_channels", 16);
	}
	else if (strstr(name, "Flux"))
		set_arch(d, "flux", "FLUX", 0);
	else if (strncmp(name, "StableDiffusion", 15) == 0) {
		snprintf(path, sizeof path, "%s/unet/config.json", dir);
		d->context_dim = read_json_int(path, "cross_attention_dim", 768);
		d->unet_in_channels = read_json_int(path, "in_channels", 4);
		json_t *cfg = json_load_file(path, 0, NULL);
		int linear = cfg && json_is_true(json_object_get(cfg, "use_linear_projection"));
		json_decref(cfg);
		if (linear || d->context_dim == 1024)
			set_arch(d, "sd2", "Stable Diffusion 2.x", 1);
		else if (d->unet_in_channels == 9)
			set_arch(d, "sd15-inpaint", "Stable Diffusion 1.x inpainting", 1);
		else
			set_arch(d, "sd15", "Stable Diffusion 1.x", 1);
	} else {
		set_arch(d, "unknown", name, 0);
	}
	json_decref(root);
	return 0;
}

int
checkpoint_detect(const char *path, struct sd_detect *out, struct sd_error *err)
{
	struct st_file *f;
	static const char *parts[][2] = {
		{"unet", "diffusion_pytorch_model"}, {"transformer", "diffusion_pytorch_model"},
		{"vae", "diffusion_pytorch_model"},
		{"text_encoder", "model"}, {"text_encoder_2", "model"}, {"text_encoder_3", "model"},
	};

	memset(out, 0, sizeof *out);
	if (is_dir(path)) {
		if (detect_diffusers(path, out, err) < 0)
			return -1;
		for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
			char file[4096];
			struct sd_error e2 = {0};
			if (find_part_file(path, parts[i][0], parts[i][1], file, sizeof file, &e2) < 0)
				continue;	/* absent, or sharded: not counted */
			f = st_open(file, err);
			if (f == NULL)
				return -1;
			count_file(out, f);
			st_close(f);
			if (i <= 1) out->has_unet = 1;
			if (i == 2) out->has_vae = 1;
			if (i >= 3) out->has_text_encoder = 1;
		}
		return 0;
	}
	f = st_open(path, err);
	if (f == NULL)
		return -1;
	detect_file(f, out);
	st_close(f);
	return 0;
}

static int
unsupported(const struct sd_detect *d, const char *path, struct sd_error *err)
{
	return sd_fail(err, SD_EDATA, "%s: %s checkpoints are not supported yet "
	    "(sdbatch renders Stable Diffusion 1.x, 2.x, XL and 3)", path, d->name);
}

int
checkpoint_load(struct sd_checkpoint *ck, const char *model_path,
    const char *unet_path, const char *vae_path, struct sd_error *err)
{
	char file[4096];
	struct sd_detect part;

	memset(ck, 0, sizeof *ck);
	ck->weights = weights_new();
	ck->model_path = strdup(model_path);
	if (ck->weights == NULL || ck->model_path == NULL)
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	if (checkpoint_detect(model_path, &ck->detect, err) < 0)
		goto fail;
	if (!ck->detect.supported) {
		unsupported(&ck->detect, model_path, err);
		goto fail;
	}
	if (!ck->detect.has_unet && unet_path == NULL) {
		sd_fail(err, SD_EDATA, "%s: holds no UNet (a %s file); give a full checkpoint as the model",
		    model_path, ck->detect.name);
		goto fail;
	}
	if (is_dir(model_path)) {
		/* each part: its folder, its file's base name, how its names map */
		static const char *parts[][3] = {
			{"unet", "diffusion_pytorch_model", "unet"}, {"vae", "diffusion_pytorch_model", "vae"},
			{"text_encoder", "model", "text_encoder"}, {"text_encoder_2", "model", "text_encoder_2"},
		};
		static const char *sd3_parts[][3] = {
			{"transformer", "diffusion_pytorch_model", "transformer"},
			{"vae", "diffusion_pytorch_model", "vae"},
			{"text_encoder", "model", "sd3_text_encoder"},
			{"text_encoder_2", "model", "sd3_text_encoder_2"},
			{"text_encoder_3", "model", "sd3_text_encoder_3"},
		};
		int xl = strcmp(ck->detect.arch, "sdxl") == 0, sd3 = strcmp(ck->detect.arch, "sd3") == 0;
		int nparts = sd3 ? 5 : xl ? 4 : 3;
		for (int i = 0; i < nparts; i++) {
			const char *const *pt = sd3 ? sd3_parts[i] : parts[i];
			/* SDXL's text encoders go under their single-file prefixes */
			const char *as = xl && i == 2 ? "text_encoder_xl" : pt[2];
			char sub[4096];
			if (i == 0 && unet_path != NULL)
				continue;
			if (i == 1 && vae_path != NULL)
				continue;
			/* SD3 without T5: a folder saved with text_encoder_3=None */
			snprintf(sub, sizeof sub, "%s/%s", model_path, pt[0]);
			if (sd3 && i == 4 && !is_dir(sub))
				continue;
			if (open_part(ck->weights, model_path, pt[0], pt[1], as, err) < 0)
				goto fail;
		}
		snprintf(file, sizeof file, "%s/scheduler/scheduler_config.json", model_path);
		if (is_file(file) && (ck->scheduler_config = strdup(file)) == NULL)
			goto oom;
	} else {
		if (open_into(ck->weights, model_path, "single", NULL,
		    unet_path ? SD_PREFIX_UNET : NULL, vae_path ? SD_PREFIX_VAE : NULL, err) == NULL)
			goto fail;
	}
	/* Parts from other files replace the model's. */
	const char *extra[2] = {unet_path, vae_path};
	for (int i = 0; i < 2; i++) {
		const char *p = extra[i];
		if (p == NULL)
			continue;
		if (checkpoint_detect(p, &part, err) < 0)
			goto fail;
		if (i == 0 && !part.has_unet) {
			sd_fail(err, SD_EDATA, "%s: no UNet found in this file", p);
			goto fail;
		}
		if (i == 1 && !part.has_vae) {
			sd_fail(err, SD_EDATA, "%s: no VAE found in this file", p);
			goto fail;
		}
		if (i == 0 && !part.supported) {
			unsupported(&part, p, err);
			goto fail;
		}
		if (is_dir(p)) {
			const char *sub = i == 0 ? "unet" : "vae";
			if (find_part_file(p, sub, "diffusion_pytorch_model", file, sizeof file, err) < 0 ||
			    open_into(ck->weights, file, sub, NULL, NULL, NULL, err) == NULL)
				goto fail;
		} else if (open_into(ck->weights, p, "single", i == 0 ? SD_PREFIX_UNET : SD_PREFIX_VAE,
		    NULL, NULL, err) == NULL) {
			goto fail;
		}
		if (i == 0) {
			ck->detect.unet_in_channels = part.unet_in_channels;
			if (part.unet_in_channels == 9)
				snprintf(ck->detect.arch, sizeof ck->detect.arch, "sd15-inpaint");
		}
	}
	return 0;
oom:
	sd_fail(err, SD_EINTERNAL, "out of memory");
fail:
	checkpoint_free(ck);
	return -1;
}

int
checkpoint_add_text_encoders(struct sd_checkpoint *ck, const char *dir, struct sd_error *err)
{
	static const char *const t5_files[] = {"t5xxl_fp16.safetensors", "t5xxl.safetensors",
	    "t5xxl_fp32.safetensors"};
	char path[4096];
	int found = 0;

	if (strcmp(ck->detect.arch, "sd3") != 0)
		return sd_fail(err, SD_EUSAGE, "%s: text encoders from another folder are for SD3 models "
		    "(this is %s)", dir, ck->detect.name);
	if (!is_dir(dir))
		return sd_fail(err, SD_ENOINPUT, "%s: not a folder (the text encoders' folder holds "
		    "clip_l.safetensors, clip_g.safetensors and t5xxl_fp16.safetensors, or is a diffusers "
		    "SD3 folder)", dir);
	snprintf(path, sizeof path, "%s/text_encoder", dir);
	if (is_dir(path)) {
		/* a diffusers SD3 folder: its text_encoder{,_2,_3}/ */
		if (open_part(ck->weights, dir, "text_encoder", "model", "sd3_text_encoder", err) < 0 ||
		    open_part(ck->weights, dir, "text_encoder_2", "model", "sd3_text_encoder_2", err) < 0)
			return sd_error_prefix(err, "text encoders");
		snprintf(path, sizeof path, "%s/text_encoder_3", dir);
		if (is_dir(path) &&
		    open_part(ck->weights, dir, "text_encoder_3", "model", "sd3_text_encoder_3", err) < 0)
			return sd_error_prefix(err, "text encoders");
		ck->detect.has_text_encoder = 1;
		return 0;
	}
	/* the files of SD3's repository's text_encoders/ (ComfyUI's names) */
	snprintf(path, sizeof path, "%s/clip_l.safetensors", dir);
	if (is_file(path)) {
		if (open_into(ck->weights, path, "sd3_text_encoder", NULL, NULL, NULL, err) == NULL)
			return -1;
		found++;
	}
	snprintf(path, sizeof path, "%s/clip_g.safetensors", dir);
	if (is_file(path)) {
		if (open_into(ck->weights, path, "sd3_text_encoder_2", NULL, NULL, NULL, err) == NULL)
			return -1;
		found++;
	}
	if (found < 2)
		return sd_fail(err, SD_ENOINPUT, "%s: no clip_l.safetensors and clip_g.safetensors here "
		    "(SD3 needs both CLIP encoders; T5 is optional)", dir);
	ck->detect.has_text_encoder = 1;
	for (size_t i = 0; i < sizeof t5_files / sizeof t5_files[0]; i++) {
		snprintf(path, sizeof path, "%s/%s", dir, t5_files[i]);
		if (is_file(path))
			return open_into(ck->weights, path, "sd3_text_encoder_3", NULL, NULL, NULL, err) == NULL ?
			    -1 : 0;
	}
	ck->detect.has_text_encoder = 1;
	return 0;
}

void
checkpoint_free(struct sd_checkpoint *ck)
{
	weights_free(ck->weights);
	free(ck->model_path);
	free(ck->scheduler_config);
	memset(ck, 0, sizeof *ck);
}
