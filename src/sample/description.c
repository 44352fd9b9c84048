/* description.c: what each architecture is made of (see description.h).
 *
 * The architectures' constants:
 *
 *   SD 1.x   CLIP ViT-L/14 text (12 heads, every layer, quick-GELU, pads
 *            with <|endoftext|>); UNet with 8 heads at every level; VAE
 *            scale 0.18215; epsilon; 512x512, 20 steps, guidance 7.5, the
 *            folder's scheduler else PNDM.
 *   SD 2.x   OpenCLIP ViT-H/14 text (heads of 64 channels, the penultimate
 *            layer, GELU, pads with "!"); UNet with heads of 64 channels and
 *            linear projections; the same VAE; 768-v: v-prediction, 768x768,
 *            DDIM; 2.x base: epsilon, 512x512, PNDM; SD-Turbo: epsilon,
 *            trailing spacing, 512x512, 1 step, guidance 0, Euler a.
 *   SDXL     CLIP ViT-L (quick-GELU, pads with <|endoftext|>) and OpenCLIP
 *            bigG (GELU, pads with "!") text encoders, each's penultimate
 *            layer without the final norm, concatenated; bigG's pooled,
 *            projected output and the time ids through the UNet's
 *            label_emb; heads of 64 channels everywhere; no negative prompt
 *            = zeros; VAE scale 0.13025; 1024x1024, 20 steps, guidance 5,
 *            Euler with leading spacing; SDXL-Turbo: 512x512, 1 step,
 *            guidance 0, Euler a, trailing.
 *   SD3      CLIP-L (quick-GELU, its pooled output unprojected) and bigG
 *            (GELU, projected) as in SDXL, side by side and zero-padded to
 *            T5's width, then T5 v1.1 XXL's 256 tokens (or 77 of zeros
 *            without T5); the two pooled vectors joined; the MMDiT with
 *            heads of 64 channels; flow matching (Euler, shift 3.0); VAE of
 *            16 channels, scale 1.5305, shift 0.0609; a missing negative
 *            prompt is ""; 1024x1024, 28 steps, guidance 7. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <jansson.h>
#include <yaml.h>

#include "io/safetensors.h"
#include "sample/description.h"

#define SD_VAE_SCALE 0.18215f
#define SDXL_VAE_SCALE 0.13025f
#define SD2_HEAD_CHANNELS 64
#define SD1_UNET_HEADS 8
#define SD1_TEXT_HEADS 12
#define SD3_VAE_SCALE 1.5305f
#define SD3_VAE_SHIFT 0.0609f
#define SD3_T5_TOKENS 256

static int
is_dir(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* ---------------------------------------------------------------- configs */

/* A folder's JSON config file, or NULL when absent; malformed is an error. */
static int
load_json(const char *dir, const char *rel, json_t **out, struct sd_error *err)
{
	char path[4096];
	json_error_t jerr;
	struct stat st;

	*out = NULL;
	snprintf(path, sizeof path, "%s/%s", dir, rel);
	if (stat(path, &st) != 0)
		return 0;
	if ((*out = json_load_file(path, 0, &jerr)) == NULL || !json_is_object(*out)) {
		json_decref(*out);
		*out = NULL;
		return sd_fail(err, SD_EDATA, "%s: not a JSON object (line %d, column %d)", path,
		    jerr.line, jerr.column);
	}
	return 0;
}

static int
json_int(json_t *o, const char *key, int def)
{
	json_t *v = json_object_get(o, key);

	return json_is_integer(v) ? (int)json_integer_value(v) : def;
}

/* The leaf scalars of an LDM config (FILE.yaml beside a single file), as
 * dotted paths ("model.params.parameterization") and values. */
struct ldm_config {
	char (*key)[160];
	char (*value)[64];
	int n, cap;
};

static void
ldm_free(struct ldm_config *y)
{
	free(y->key);
	free(y->value);
	memset(y, 0, sizeof *y);
}

static int
ldm_add(struct ldm_config *y, const char *key, const char *value)
{
	if (y->n == y->cap) {
		int cap = y->cap ? 2 * y->cap : 64;
		void *k = realloc(y->key, (size_t)cap * sizeof *y->key);
		if (k == NULL)
			return -1;
		y->key = k;
		void *v = realloc(y->value, (size_t)cap * sizeof *y->value);
		if (v == NULL)
			return -1;
		y->value = v;
		y->cap = cap;
	}
	snprintf(y->key[y->n], sizeof y->key[0], "%s", key);
	snprintf(y->value[y->n], sizeof y->value[0], "%s", value);
	y->n++;
	return 0;
}

/* Read path (absent: y stays empty).  Sequences are skipped; only nested
 * mappings of scalars matter. */
static int
ldm_load(const char *path, struct ldm_config *y, struct sd_error *err)
{
	yaml_parser_t parser;
	yaml_event_t ev;
	FILE *f;
	char stack[16][64], key[64] = "", full[160];
	int depth = 0, want_key[17] = {1}, seq = 0, done = 0, rc = 0;

	memset(y, 0, sizeof *y);
	if ((f = fopen(path, "rb")) == NULL)
		return 0;
	yaml_parser_initialize(&parser);
	yaml_parser_set_input_file(&parser, f);
	while (!done) {
		if (!yaml_parser_parse(&parser, &ev)) {
			rc = sd_fail(err, SD_EDATA, "%s: not a valid YAML file (line %zu)", path,
			    parser.problem_mark.line + 1);
			break;
		}
		switch (ev.type) {
		case YAML_STREAM_END_EVENT:
			done = 1;
			break;
		case YAML_SEQUENCE_START_EVENT:
			seq++;
			break;
		case YAML_SEQUENCE_END_EVENT:
			seq--;
			if (seq == 0 && depth > 0)
				want_key[depth] = 1;
			break;
		case YAML_MAPPING_START_EVENT:
			if (seq > 0) {
				seq++;		/* inside a sequence: skipped */
				break;
			}
			if (depth > 0 && depth <= 16)
				snprintf(stack[depth - 1], sizeof stack[0], "%s", key);
			if (depth < 16)
				depth++;
			want_key[depth] = 1;
			break;
		case YAML_MAPPING_END_EVENT:
			if (seq > 0) {
				seq--;
				break;
			}
			if (depth > 0)
				depth--;
			want_key[depth] = 1;
			break;
		case YAML_SCALAR_EVENT:
			if (seq > 0)
				break;
			if (want_key[depth]) {
				snprintf(key, sizeof key, "%s", (const char *)ev.data.scalar.value);
				want_key[depth] = 0;
				break;
			}
			full[0] = '\0';
			for (int i = 0; i + 1 < depth; i++) {
				strncat(full, stack[i], sizeof full - strlen(full) - 1);
				strncat(full, ".", sizeof full - strlen(full) - 1);
			}
			strncat(full, key, sizeof full - strlen(full) - 1);
			if (ldm_add(y, full, (const char *)ev.data.scalar.value) < 0)
				rc = sd_fail(err, SD_EINTERNAL, "out of memory");
			want_key[depth] = 1;
			break;
		default:
			break;
		}
		yaml_event_delete(&ev);
		if (rc < 0)
			break;
	}
	yaml_parser_delete(&parser);
	fclose(f);
	if (rc < 0)
		ldm_free(y);
	return rc;
}

/* The value of the first key that ends in suffix and holds within (NULL:
 * any), or NULL. */
static const char *
ldm_get(const struct ldm_config *y, const char *within, const char *suffix)
{
	size_t ls = strlen(suffix);

	for (int i = 0; i < y->n; i++) {
		size_t lk = strlen(y->key[i]);
		if (lk < ls || strcmp(y->key[i] + lk - ls, suffix) != 0 ||
		    (lk > ls && y->key[i][lk - ls - 1] != '.'))
			continue;
		if (within == NULL || strstr(y->key[i], within) != NULL)
			return y->value[i];
	}
	return NULL;
}

/* ---------------------------------------------------------------- families */

static void
describe_sd1(struct model_desc *d, int inpaint)
{
	d->family = MODEL_SD1;
	snprintf(d->arch, sizeof d->arch, "%s", inpaint ? "sd15-inpaint" : "sd15");
	snprintf(d->name, sizeof d->name, "%s", inpaint ? "Stable Diffusion 1.x inpainting" :
	    "Stable Diffusion 1.x");
	d->ntext = 1;
	snprintf(d->text[0].prefix, sizeof d->text[0].prefix, "%s", SD_PREFIX_CLIP);
	d->text[0].clip = (struct clip_config){ .heads = SD1_TEXT_HEADS, .act = CLIP_QUICK_GELU };
	snprintf(d->text[0].pad_token, sizeof d->text[0].pad_token, "<|endoftext|>");
	snprintf(d->unet_prefix, sizeof d->unet_prefix, "%s", SD_PREFIX_UNET);
	d->unet = (struct unet_config){ SD1_UNET_HEADS, 0 };
	snprintf(d->vae_prefix, sizeof d->vae_prefix, "%s", SD_PREFIX_VAE);
	d->vae_scale = SD_VAE_SCALE;
	d->vae_shift = 0;
	sched_config_sd15(&d->sched);
	snprintf(d->prediction_why, sizeof d->prediction_why, "SD 1.x models predict the noise");
	d->default_width = d->default_height = 512;
	d->default_steps = 20;
	d->default_guidance = 7.5f;
	d->default_sampler = SD_SAMPLER_PNDM;
}

/* variant: 'v' (768-v), 'b' (base), 't' (SD-Turbo). */
static void
describe_sd2(struct model_desc *d, int variant)
{
	d->family = MODEL_SD2;
	d->turbo = variant == 't';
	snprintf(d->arch, sizeof d->arch, "%s", variant == 'v' ? "sd2" : variant == 'b' ?
	    "sd2-base" : "sd-turbo");
	snprintf(d->name, sizeof d->name, "%s", variant == 'v' ? "Stable Diffusion 2.x (768-v)" :
	    variant == 'b' ? "Stable Diffusion 2.x base" : "SD-Turbo (Stable Diffusion 2.1 distilled)");
	d->ntext = 1;
	/* The single file's OpenCLIP tower runs all but its last layer. */
	snprintf(d->text[0].prefix, sizeof d->text[0].prefix, "cond_stage_model.model.");
	d->text[0].clip = (struct clip_config){ .layers = -1, .act = CLIP_GELU };
	snprintf(d->text[0].pad_token, sizeof d->text[0].pad_token, "!");
	snprintf(d->unet_prefix, sizeof d->unet_prefix, "%s", SD_PREFIX_UNET);
	d->unet = (struct unet_config){ 0, SD2_HEAD_CHANNELS };
	snprintf(d->vae_prefix, sizeof d->vae_prefix, "%s", SD_PREFIX_VAE);
	d->vae_scale = SD_VAE_SCALE;
	d->vae_shift = 0;
	sched_config_sd15(&d->sched);
	d->sched.prediction_type = variant == 'v' ? SCHED_PRED_V : SCHED_PRED_EPSILON;
	if (variant == 't')
		d->sched.timestep_spacing = SCHED_SPACING_TRAILING;
	d->default_width = d->default_height = variant == 'v' ? 768 : 512;
	d->default_steps = variant == 't' ? 1 : 20;
	d->default_guidance = variant == 't' ? 0.0f : 7.5f;
	d->default_sampler = variant == 'v' ? SD_SAMPLER_DDIM : variant == 'b' ?
	    SD_SAMPLER_PNDM : SD_SAMPLER_EULER_A;
}

static void
describe_sdxl(struct model_desc *d, int turbo)
{
	d->family = MODEL_SDXL;
	d->turbo = turbo;
	snprintf(d->arch, sizeof d->arch, "%s", turbo ? "sdxl-turbo" : "sdxl");
	snprintf(d->name, sizeof d->name, "%s", turbo ? "SDXL-Turbo" : "Stable Diffusion XL");
	d->ntext = 2;
	snprintf(d->text[0].prefix, sizeof d->text[0].prefix, "%s", SD_PREFIX_XL_CLIP1);
	d->text[0].clip = (struct clip_config){ .head_channels = SD2_HEAD_CHANNELS,
	    .act = CLIP_QUICK_GELU, .context_skip = 1, .no_final_norm = 1 };
	snprintf(d->text[0].pad_token, sizeof d->text[0].pad_token, "<|endoftext|>");
	snprintf(d->text[0].tokenizer_sub, sizeof d->text[0].tokenizer_sub, "tokenizer");
	snprintf(d->text[1].prefix, sizeof d->text[1].prefix, "%s", SD_PREFIX_XL_CLIP2);
	d->text[1].clip = (struct clip_config){ .head_channels = SD2_HEAD_CHANNELS,
	    .act = CLIP_GELU, .context_skip = 1, .no_final_norm = 1 };
	snprintf(d->text[1].pad_token, sizeof d->text[1].pad_token, "!");
	snprintf(d->text[1].tokenizer_sub, sizeof d->text[1].tokenizer_sub, "tokenizer_2");
	d->text[1].pooled = 1;
	snprintf(d->unet_prefix, sizeof d->unet_prefix, "%s", SD_PREFIX_UNET);
	d->unet = (struct unet_config){ 0, SD2_HEAD_CHANNELS };
	d->time_ids = 1;
	d->zeros_for_no_negative = 1;
	snprintf(d->vae_prefix, sizeof d->vae_prefix, "%s", SD_PREFIX_VAE);
	d->vae_scale = SDXL_VAE_SCALE;
	sched_config_sd15(&d->sched);
	d->sched.timestep_spacing = turbo ? SCHED_SPACING_TRAILING : SCHED_SPACING_LEADING;
	snprintf(d->prediction_why, sizeof d->prediction_why, "%s predicts the noise", d->name);
	d->default_width = d->default_height = turbo ? 512 : 1024;
	d->default_steps = turbo ? 1 : 20;
	d->default_guidance = turbo ? 0.0f : 5.0f;
	d->default_sampler = turbo ? SD_SAMPLER_EULER_A : SD_SAMPLER_EULER;
}

static void
describe_sd3(struct model_desc *d)
{
	d->family = MODEL_SD3;
	snprintf(d->arch, sizeof d->arch, "sd3");
	snprintf(d->name, sizeof d->name, "Stable Diffusion 3 Medium");
	d->ntext = 3;
	snprintf(d->text[0].prefix, sizeof d->text[0].prefix, "%stext_model.", SD_PREFIX_SD3_CLIP_L);
	d->text[0].clip = (struct clip_config){ .head_channels = SD2_HEAD_CHANNELS,
	    .act = CLIP_QUICK_GELU, .context_skip = 1, .no_final_norm = 1, .pooled_identity = 1 };
	snprintf(d->text[0].pad_token, sizeof d->text[0].pad_token, "<|endoftext|>");
	snprintf(d->text[0].tokenizer_sub, sizeof d->text[0].tokenizer_sub, "tokenizer");
	d->text[0].pooled = 1;
	snprintf(d->text[1].prefix, sizeof d->text[1].prefix, "%stext_model.", SD_PREFIX_SD3_CLIP_G);
	d->text[1].clip = (struct clip_config){ .head_channels = SD2_HEAD_CHANNELS,
	    .act = CLIP_GELU, .context_skip = 1, .no_final_norm = 1 };
	snprintf(d->text[1].pad_token, sizeof d->text[1].pad_token, "!");
	snprintf(d->text[1].tokenizer_sub, sizeof d->text[1].tokenizer_sub, "tokenizer_2");
	d->text[1].pooled = 1;
	d->text[2].kind = TEXT_T5;
	snprintf(d->text[2].prefix, sizeof d->text[2].prefix, "%s", SD_PREFIX_SD3_T5);
	d->text[2].max_len = SD3_T5_TOKENS;
	snprintf(d->text[2].tokenizer_sub, sizeof d->text[2].tokenizer_sub, "tokenizer_3");
	d->context_width = 4096;	/* T5-XXL's; model_describe reads the file's */
	snprintf(d->unet_prefix, sizeof d->unet_prefix, "%s", SD_PREFIX_UNET);
	d->mmdit_heads = 0;		/* heads of 64 channels */
	snprintf(d->vae_prefix, sizeof d->vae_prefix, "%s", SD_PREFIX_VAE);
	d->vae_scale = SD3_VAE_SCALE;
	d->vae_shift = SD3_VAE_SHIFT;
	sched_config_sd3(&d->sched);
	snprintf(d->prediction_why, sizeof d->prediction_why, "SD3 is a flow-matching model "
	    "(it predicts the velocity)");
	d->default_width = d->default_height = 1024;
	d->default_steps = 28;
	d->default_guidance = 7.0f;
	d->default_sampler = SD_SAMPLER_EULER;
}

/* Heads of w channels everywhere (SDXL: the UNet and both text encoders). */
static void
set_head_channels(struct model_desc *d, int w)
{
	d->unet = (struct unet_config){ 0, w };
	if (d->family == MODEL_SDXL)
		for (int i = 0; i < d->ntext; i++) {
			d->text[i].clip.heads = 0;
			d->text[i].clip.head_channels = w;
		}
}

int
model_describe_arch(const char *arch, struct model_desc *d)
{
	memset(d, 0, sizeof *d);
	if (strcmp(arch, "sd15") == 0 || strcmp(arch, "sd15-inpaint") == 0)
		describe_sd1(d, strcmp(arch, "sd15-inpaint") == 0);
	else if (strcmp(arch, "sd2") == 0)
		describe_sd2(d, 'v');
	else if (strcmp(arch, "sd2-base") == 0)
		describe_sd2(d, 'b');
	else if (strcmp(arch, "sd-turbo") == 0)
		describe_sd2(d, 't');
	else if (strcmp(arch, "sdxl") == 0 || strcmp(arch, "sdxl-turbo") == 0) {
		describe_sdxl(d, strcmp(arch, "sdxl-turbo") == 0);
		return 0;
	} else if (strcmp(arch, "sd3") == 0) {
		describe_sd3(d);
		return 0;
	} else
		return -1;
	if (strcmp(arch, "sd2") != 0 && d->family == MODEL_SD2)
		snprintf(d->prediction_why, sizeof d->prediction_why, "%s predicts the noise", d->name);
	else if (d->family == MODEL_SD2)
		snprintf(d->prediction_why, sizeof d->prediction_why, "the 768-v model predicts v");
	return 0;
}

/* ---------------------------------------------------------------- folders */

/* The scheduler class of a folder's config as the default sampler. */
static int
sampler_of_class(const char *cls, enum sd_sampler *out)
{
	static const struct { const char *cls; enum sd_sampler s; } map[] = {
		{"PNDMScheduler", SD_SAMPLER_PNDM}, {"DDIMScheduler", SD_SAMPLER_DDIM},
		{"EulerDiscreteScheduler", SD_SAMPLER_EULER},
		{"EulerAncestralDiscreteScheduler", SD_SAMPLER_EULER_A},
		{"LMSDiscreteScheduler", SD_SAMPLER_LMS},
		{"DPMSolverMultistepScheduler", SD_SAMPLER_DPMPP_2M},
	};
	for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
		if (strcmp(cls, map[i].cls) == 0) {
			*out = map[i].s;
			return 0;
		}
	return -1;
}

/* unet/config.json's heads: attention_head_dim (or num_attention_heads)
 * holds head COUNTS, an int for every level or one per level.  A constant
 * count is a fixed head count (SD 1.x); counts in proportion to the
 * channels are heads of a fixed width (SD 2.x). */
static int
folder_unet_heads(json_t *cfg, const char *path, struct unet_config *out, struct sd_error *err)
{
	json_t *heads = json_object_get(cfg, "num_attention_heads"), *ch;
	int fixed = 1, width = -1;

	if (heads == NULL || json_is_null(heads))
		heads = json_object_get(cfg, "attention_head_dim");
	if (json_is_integer(heads)) {
		*out = (struct unet_config){ (int)json_integer_value(heads), 0 };
		return out->heads > 0 ? 0 : sd_fail(err, SD_EDATA, "%s: attention_head_dim must be positive", path);
	}
	ch = json_object_get(cfg, "block_out_channels");
	if (!json_is_array(heads) || !json_is_array(ch) || json_array_size(heads) != json_array_size(ch) ||
	    json_array_size(ch) == 0)
		return 0;	/* keep the architecture's */
	for (size_t i = 0; i < json_array_size(ch); i++) {
		json_t *h = json_array_get(heads, i), *c = json_array_get(ch, i);
		if (!json_is_integer(h) || !json_is_integer(c) || json_integer_value(h) < 1)
			return sd_fail(err, SD_EDATA, "%s: attention_head_dim and block_out_channels "
			    "must be lists of positive integers", path);
		if (json_integer_value(h) != json_integer_value(json_array_get(heads, 0)))
			fixed = 0;
		if (json_integer_value(c) % json_integer_value(h) != 0)
			width = 0;
		else if (width < 0)
			width = (int)(json_integer_value(c) / json_integer_value(h));
		else if (width != json_integer_value(c) / json_integer_value(h))
			width = 0;
	}
	if (fixed)
		*out = (struct unet_config){ (int)json_integer_value(json_array_get(heads, 0)), 0 };
	else if (width > 0)
		*out = (struct unet_config){ 0, width };
	else
		return sd_fail(err, SD_EDATA, "%s: head counts that are neither constant nor in "
		    "proportion to the channels are not supported", path);
	return 0;
}

static int
describe_folder(const char *dir, struct model_desc *d, struct sd_error *err)
{
	json_t *unet = NULL, *text = NULL, *vae = NULL, *sched = NULL, *v;
	int rc = -1;

	json_t *text2 = NULL, *transformer = NULL;

	if (load_json(dir, "transformer/config.json", &transformer, err) < 0 ||
	    load_json(dir, "unet/config.json", &unet, err) < 0 ||
	    load_json(dir, "text_encoder/config.json", &text, err) < 0 ||
	    load_json(dir, "text_encoder_2/config.json", &text2, err) < 0 ||
	    load_json(dir, "vae/config.json", &vae, err) < 0 ||
	    load_json(dir, "scheduler/scheduler_config.json", &sched, err) < 0)
		goto out;
	if (unet != NULL) {
		int size = json_int(unet, "sample_size", 0);
		if (folder_unet_heads(unet, "unet/config.json", &d->unet, err) < 0)
			goto out;
		if (size > 0 && size <= 1024)
			d->default_width = d->default_height = 8 * size;
	}
	if (transformer != NULL && d->family == MODEL_SD3) {
		int size = json_int(transformer, "sample_size", 0);
		d->mmdit_heads = json_int(transformer, "num_attention_heads", 0);
		if (size > 0 && size <= 128)
			d->default_width = d->default_height = 8 * size;
	}
	/* diffusers' text encoders: transformers' names, num_hidden_layers of
	 * them (SD 2.x folders store the penultimate layer's model). */
	int penultimate = d->family == MODEL_SDXL || d->family == MODEL_SD3;
	if (d->family == MODEL_SDXL)
		snprintf(d->text[1].prefix, sizeof d->text[1].prefix, "%s", SD_PREFIX_XL_CLIP2_HF);
	else if (d->family != MODEL_SD3)
		snprintf(d->text[0].prefix, sizeof d->text[0].prefix, "%s", SD_PREFIX_CLIP);
	for (int i = 0; i < d->ntext; i++) {
		json_t *t = i == 0 ? text : i == 1 ? text2 : NULL;
		if (d->text[i].kind != TEXT_CLIP)
			continue;	/* T5: its heads come from its tensors */
		if (!penultimate)
			d->text[i].clip.layers = 0;
		if (t == NULL)
			continue;
		if (json_int(t, "num_attention_heads", 0) > 0) {
			d->text[i].clip.heads = json_int(t, "num_attention_heads", 0);
			d->text[i].clip.head_channels = 0;
		}
		if (!penultimate)
			d->text[i].clip.layers = json_int(t, "num_hidden_layers", 0);
		v = json_object_get(t, "hidden_act");
		if (json_is_string(v)) {
			if (strcmp(json_string_value(v), "quick_gelu") == 0)
				d->text[i].clip.act = CLIP_QUICK_GELU;
			else if (strcmp(json_string_value(v), "gelu") == 0)
				d->text[i].clip.act = CLIP_GELU;
			else {
				sd_fail(err, SD_EDATA, "%s/text_encoder%s/config.json: hidden_act \"%.32s\" is "
				    "not supported (quick_gelu or gelu)", dir, i ? "_2" : "",
				    json_string_value(v));
				goto out;
			}
		}
	}
	v = vae ? json_object_get(vae, "scaling_factor") : NULL;
	if (json_is_number(v) && json_number_value(v) > 0)
		d->vae_scale = (float)json_number_value(v);
	v = vae ? json_object_get(vae, "shift_factor") : NULL;
	if (json_is_number(v))
		d->vae_shift = (float)json_number_value(v);
	if (sched != NULL) {
		char path[4096];
		enum sd_sampler s;
		snprintf(path, sizeof path, "%s/scheduler/scheduler_config.json", dir);
		if (sched_config_load(path, &d->sched, err) < 0)
			goto out;
		v = json_object_get(sched, "_class_name");
		if (json_is_string(v) && sampler_of_class(json_string_value(v), &s) == 0)
			d->default_sampler = s;
		snprintf(d->prediction_why, sizeof d->prediction_why,
		    "the folder's scheduler config says %s",
		    d->sched.prediction_type == SCHED_PRED_V ? "v_prediction" :
		    d->sched.prediction_type == SCHED_PRED_FLOW ? "flow matching" : "epsilon");
		if (d->family == MODEL_SD2) {
			int v_model = d->sched.prediction_type == SCHED_PRED_V;
			int trailing = d->sched.timestep_spacing == SCHED_SPACING_TRAILING;
			struct model_desc tmp;
			model_describe_arch(v_model ? "sd2" : trailing ? "sd-turbo" : "sd2-base", &tmp);
			snprintf(d->arch, sizeof d->arch, "%s", tmp.arch);
			snprintf(d->name, sizeof d->name, "%s", tmp.name);
			d->turbo = tmp.turbo;
			d->default_steps = tmp.default_steps;
			d->default_guidance = tmp.default_guidance;
		}
		if (d->family == MODEL_SDXL && d->sched.timestep_spacing == SCHED_SPACING_TRAILING) {
			struct model_desc tmp;
			model_describe_arch("sdxl-turbo", &tmp);
			snprintf(d->arch, sizeof d->arch, "%s", tmp.arch);
			snprintf(d->name, sizeof d->name, "%s", tmp.name);
			d->turbo = 1;
			d->default_steps = tmp.default_steps;
			d->default_guidance = tmp.default_guidance;
		}
	}
	rc = 0;
out:
	json_decref(transformer);
	json_decref(unet);
	json_decref(text);
	json_decref(text2);
	json_decref(vae);
	json_decref(sched);
	return rc;
}

/* ---------------------------------------------------------------- single files */

/* An SD 2.x single file's variant: its metadata, its LDM config, its name. */
static int
sd2_variant(const char *path, const struct ldm_config *y, char *why, size_t size)
{
	struct sd_error e = {0};
	struct st_file *f = st_open(path, &e);
	const char *pt = f ? st_metadata(f, "modelspec.prediction_type") : NULL;
	const char *ar = f ? st_metadata(f, "modelspec.architecture") : NULL;
	const char *base = strrchr(path, '/');
	int variant = 0;

	base = base ? base + 1 : path;
	/* Turbo: the metadata's architecture, else the file's name. */
	if (ar != NULL && strstr(ar, "turbo") != NULL) {
		variant = 't';
		snprintf(why, size, "the file's metadata names a Turbo model (%.40s): SD-Turbo predicts the noise", ar);
	} else if (strcasestr(base, "turbo") != NULL) {
		variant = 't';
		snprintf(why, size, "the file name says SD-Turbo, which predicts the noise");
	} else if (pt != NULL && (strcmp(pt, "v") == 0 || strcmp(pt, "v_prediction") == 0)) {
		variant = 'v';
		snprintf(why, size, "the file's metadata says modelspec.prediction_type %.16s", pt);
	} else if (pt != NULL && strcmp(pt, "epsilon") == 0) {
		variant = 'b';
		snprintf(why, size, "the file's metadata says modelspec.prediction_type epsilon");
	}
	st_close(f);
	if (variant == 0 && y->n > 0) {
		const char *p = ldm_get(y, NULL, "parameterization");
		variant = p != NULL && strcmp(p, "v") == 0 ? 'v' : 'b';
		snprintf(why, size, "its LDM config says parameterization %s", p ? p : "eps (by omission)");
	}
	if (variant == 0 && strstr(base, "512") != NULL) {
		variant = 'b';
		snprintf(why, size, "the file name says 512 (a 2.x base model, which predicts the noise)");
	} else if (variant == 0) {
		variant = 'v';
		snprintf(why, size, "the SD 2.x default (768-v) for a file without metadata or LDM config");
	}
	return variant;
}

/* The head sizes a file written by sdbatch make-model records. */
static void
sdbatch_metadata(const char *path, struct model_desc *d)
{
	struct sd_error e = {0};
	struct st_file *f = st_open(path, &e);
	const char *v;

	if (f == NULL)
		return;
	if (d->family == MODEL_SD3) {
		/* "sdbatch.text_heads": CLIP-L's and bigG's, "3,5" */
		if ((v = st_metadata(f, "sdbatch.mmdit_heads")) != NULL && atoi(v) > 0)
			d->mmdit_heads = atoi(v);
		if ((v = st_metadata(f, "sdbatch.text_heads")) != NULL) {
			char *end;
			for (int i = 0; i < 2; i++) {
				long h = strtol(v, &end, 10);
				if (end == v || h <= 0 || h > 1024)
					break;
				d->text[i].clip.heads = (int)h;
				d->text[i].clip.head_channels = 0;
				if (*end != ',')
					break;
				v = end + 1;
			}
		}
		st_close(f);
		return;
	}
	if ((v = st_metadata(f, "sdbatch.unet_head_channels")) != NULL && atoi(v) > 0)
		set_head_channels(d, atoi(v));
	else if ((v = st_metadata(f, "sdbatch.unet_heads")) != NULL && atoi(v) > 0)
		d->unet = (struct unet_config){ atoi(v), 0 };
	if (d->family != MODEL_SDXL && (v = st_metadata(f, "sdbatch.text_heads")) != NULL && atoi(v) > 0)
		d->text[0].clip.heads = atoi(v);
	st_close(f);
}

static int
describe_file(const char *path, struct model_desc *d, struct sd_error *err)
{
	struct ldm_config y;
	char yaml[4096], why[160];
	const char *v;
	size_t n = strlen(path);

	if (n > 12 && strcmp(path + n - 12, ".safetensors") == 0)
		snprintf(yaml, sizeof yaml, "%.*s.yaml", (int)(n - 12), path);
	else
		snprintf(yaml, sizeof yaml, "%s.yaml", path);
	if (ldm_load(yaml, &y, err) < 0)
		return -1;
	if (d->family == MODEL_SDXL) {
		struct sd_error e = {0};
		struct st_file *f = st_open(path, &e);
		const char *ar = f ? st_metadata(f, "modelspec.architecture") : NULL;
		const char *base = strrchr(path, '/');
		base = base ? base + 1 : path;
		if ((ar != NULL && strstr(ar, "turbo") != NULL) || strcasestr(base, "turbo") != NULL) {
			describe_sdxl(d, 1);
			snprintf(d->prediction_why, sizeof d->prediction_why, "the file's %s says SDXL-Turbo, "
			    "which predicts the noise", ar != NULL && strstr(ar, "turbo") ? "metadata" : "name");
		}
		st_close(f);
	}
	if (d->family == MODEL_SD2) {
		int variant = sd2_variant(path, &y, why, sizeof why);
		model_describe_arch(variant == 'v' ? "sd2" : variant == 'b' ? "sd2-base" : "sd-turbo", d);
		snprintf(d->prediction_why, sizeof d->prediction_why, "%s", why);
	}
	sdbatch_metadata(path, d);
	if (d->family == MODEL_SD3) {
		/* sdbatch's own keys for heads that are not of 64 channels:
		 * network_config num_heads, clip_l / clip_g heads */
		if ((v = ldm_get(&y, "network_config", "num_heads")) != NULL && atoi(v) > 0)
			d->mmdit_heads = atoi(v);
		for (int i = 0; i < 2; i++)
			if ((v = ldm_get(&y, i ? "clip_g" : "clip_l", "heads")) != NULL && atoi(v) > 0) {
				d->text[i].clip.heads = atoi(v);
				d->text[i].clip.head_channels = 0;
			}
		if ((v = ldm_get(&y, NULL, "scale_factor")) != NULL && atof(v) > 0)
			d->vae_scale = (float)atof(v);
		if ((v = ldm_get(&y, NULL, "shift_factor")) != NULL)
			d->vae_shift = (float)atof(v);
		ldm_free(&y);
		return 0;
	}
	/* The LDM config's numbers, where it has them. */
	if (((v = ldm_get(&y, "unet_config", "num_head_channels")) != NULL ||
	    (v = ldm_get(&y, "network_config", "num_head_channels")) != NULL) && atoi(v) > 0)
		set_head_channels(d, atoi(v));
	else if ((v = ldm_get(&y, "unet_config", "num_heads")) != NULL && atoi(v) > 0)
		d->unet = (struct unet_config){ atoi(v), 0 };
	if ((v = ldm_get(&y, "cond_stage_config", "heads")) != NULL && atoi(v) > 0)
		d->text[0].clip.heads = atoi(v);
	if ((v = ldm_get(&y, NULL, "scale_factor")) != NULL && atof(v) > 0)
		d->vae_scale = (float)atof(v);
	ldm_free(&y);
	return 0;
}

int
model_describe(const struct sd_checkpoint *ck, struct model_desc *d, struct sd_error *err)
{
	const char *arch = ck->detect.arch;

	memset(d, 0, sizeof *d);
	if (strcmp(arch, "sd15") == 0 || strcmp(arch, "sd15-inpaint") == 0)
		describe_sd1(d, strcmp(arch, "sd15-inpaint") == 0);
	else if (strcmp(arch, "sd2") == 0)
		describe_sd2(d, 'v');
	else if (strcmp(arch, "sdxl") == 0)
		describe_sdxl(d, 0);
	else if (strcmp(arch, "sd3") == 0) {
		describe_sd3(d);
		if (ck->detect.context_dim > 0)
			d->context_width = ck->detect.context_dim;
	} else
		return sd_fail(err, SD_EDATA, "%s: %s checkpoints are not supported yet "
		    "(sdbatch renders Stable Diffusion 1.x, 2.x, XL and 3)", ck->model_path, ck->detect.name);
	if (is_dir(ck->model_path))
		return describe_folder(ck->model_path, d, err);
	return describe_file(ck->model_path, d, err);
}
