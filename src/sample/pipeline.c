/* pipeline.c: Stable Diffusion text-to-image, img2img and inpainting, step
 * for step as diffusers' StableDiffusion{,Img2Img,Inpaint}Pipeline, on the
 * model description (sample/description.h):
 *
 *   prompt ──conditioner──▶ context [uncond, cond]
 *   seed ──rng──▶ noise ──scheduler──▶ latents ◀── (VAE encode of the init image)
 *   for each timestep: denoiser(scaled latents, t, context) ─guidance─▶ scheduler step
 *   latents / scale + shift ──VAE decode──▶ image ──▶ 8-bit RGB
 *
 * Latents live in host memory (the scheduler's arithmetic is tiny); the
 * networks run on the context's backend. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

#include "core/cpu.h"
#include "core/ops.h"
#include "io/image.h"
#include "model/checkpoint.h"
#include "model/hub.h"
#include "model/lora.h"
#include "model/spm.h"
#include "model/tokenizer.h"
#include "model/vae.h"
#include "sample/conditioner.h"
#include "sample/denoiser.h"
#include "sample/description.h"
#include "sample/pipeline.h"
#include "sample/prompt.h"
#include "sample/rng.h"
#include "sample/scheduler.h"

/* The float arithmetic below must round like torch's: no fused multiply-add. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

struct sd_model {
	struct sd_checkpoint ck;
	struct model_desc desc;
	struct sd_ctx *ctx;
	struct conditioner *cond;
	struct denoiser *unet;
	struct vae *vae;
	int latent_channels;	/* the VAE's: 4, SD3 16 */
	/* SD3 whose T5 weights are there but no spiece.model was found: why
	 * (a job with t5 on fails with it); "" otherwise */
	char t5_missing[512];
	sd_debug_fn debug;
	void *debug_user;
	/* the LoRAs merged into ck.weights (NULL: none), what they were
	 * (files, sizes, times, scales: the next job with the same key
	 * keeps them) and what they were called */
	struct lora_merge *merge;
	char *merge_key;
	struct sd_lora_used *used;
	int nused;
};

void
sd_model_set_debug(struct sd_model *m, sd_debug_fn fn, void *user)
{
	m->debug = fn;
	m->debug_user = user;
}

#define DEBUG(m, name, step, data, n) \
	do { if ((m)->debug) (m)->debug((m)->debug_user, name, step, data, n); } while (0)

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Is tokdir the model folder's own tokenizer/ (or tokenizer_2/: sub),
 * whose pad token then stands? */
static int
own_tokenizer(const char *model, const char *sub, const char *tokdir)
{
	char own[4096], *a, *b;
	int same;

	snprintf(own, sizeof own, "%s/%s", model, sub);
	a = realpath(own, NULL);
	b = realpath(tokdir, NULL);
	same = a != NULL && b != NULL && strcmp(a, b) == 0;
	free(a);
	free(b);
	return same;
}

static int
has_spiece(const char *dir)
{
	char file[4200];

	snprintf(file, sizeof file, "%s/spiece.model", dir);
	return access(file, R_OK) == 0;
}

/* The folder of SD3's T5 tokenizer (spiece.model): the model folder's
 * tokenizer_3/, --tokenizer DIR (or DIR/tokenizer_3/), tokenizer_3/ beside
 * a single file, then the Hub cache's SD3 repository.  -1 when none. */
static int
find_spiece(const struct sd_model_spec *spec, const char *given, int split, char *out, size_t size)
{
	struct hub_options ho;
	struct sd_error e = {0};
	char snap[4096];
	const char *slash;

	if (given[0] != '\0') {
		snprintf(out, size, "%s/tokenizer_3", given);
		if (has_spiece(out))
			return 0;
		snprintf(out, size, "%s", given);
		if (!split && has_spiece(out))
			return 0;
	}
	snprintf(out, size, "%s/tokenizer_3", spec->model);
	if (has_spiece(out))
		return 0;
	if ((slash = strrchr(spec->model, '/')) != NULL) {
		snprintf(out, size, "%.*s/tokenizer_3", (int)(slash - spec->model), spec->model);
		if (has_spiece(out))
			return 0;
	}
	hub_options_init(&ho);
	ho.cache = spec->hub_cache;
	if (hub_cached(&ho, "stabilityai/stable-diffusion-3-medium-diffusers", snap, sizeof snap, &e) == 0) {
		if ((size_t)snprintf(out, size, "%s/tokenizer_3", snap) < size && has_spiece(out))
			return 0;
	}
	return -1;
}

struct sd_model *
sd_model_load(const struct sd_model_spec *spec, struct sd_error *err)
{
	struct sd_model *m = calloc(1, sizeof *m);
	char tokdir[4096];

	if (m == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		return NULL;
	}
	if (spec->model == NULL || *spec->model == '\0') {
		sd_fail(err, SD_EUSAGE, "no model given (--model, the job's model: field, or the configuration)");
		goto fail;
	}
	m->ctx = sd_ctx_new(spec->device, spec->threads, err);
	if (m->ctx == NULL)
		goto fail;
	if (checkpoint_load(&m->ck, spec->model, spec->unet, spec->vae, err) < 0)
		goto fail;
	if (spec->text_encoders != NULL && *spec->text_encoders != '\0' &&
	    checkpoint_add_text_encoders(&m->ck, spec->text_encoders, err) < 0)
		goto fail;
	if (model_describe(&m->ck, &m->desc, err) < 0)
		goto fail;
	if (strcmp(m->ck.detect.arch, "sd15-inpaint") == 0 && m->desc.family == MODEL_SD1)
		snprintf(m->desc.arch, sizeof m->desc.arch, "sd15-inpaint");
	if (m->desc.family == MODEL_SD3 && !m->ck.detect.has_text_encoder) {
		sd_fail(err, SD_ENOINPUT, "this SD3 file holds no text encoders (as sd3_medium.safetensors): "
		    "give them with --text-encoders DIR (a folder of clip_l.safetensors, clip_g.safetensors "
		    "and t5xxl_fp16.safetensors, or a diffusers SD3 folder), or use a file that includes them");
		goto prefix;
	}
	{
		/* each encoder's tokenizer: the folder's own (tokenizer/,
		 * tokenizer_2/, tokenizer_3/) where the model has one, else the
		 * one found; --tokenizer DIR may hold those folders too */
		char dirs[MODEL_MAX_TEXT][4096], given[4096] = "", probe[4200];
		const char *dp[MODEL_MAX_TEXT];
		const char *clip_given = spec->tokenizer;
		int own[MODEL_MAX_TEXT], split = 0;
		if (spec->tokenizer != NULL && *spec->tokenizer != '\0') {
			snprintf(given, sizeof given, "%s", spec->tokenizer);
			snprintf(probe, sizeof probe, "%s/tokenizer/vocab.json", given);
			if (access(probe, R_OK) == 0) {
				split = 1;
				snprintf(probe, sizeof probe, "%s/tokenizer", given);
				clip_given = probe;
			}
		}
		if (tokenizer_find_in(spec->model, clip_given, spec->hub_cache, tokdir,
		    sizeof tokdir, err) < 0)
			goto fail;
		for (int i = 0; i < m->desc.ntext; i++) {
			const char *sub = m->desc.text[i].tokenizer_sub[0] ? m->desc.text[i].tokenizer_sub :
			    "tokenizer";
			char sub_dir[4096], file[4200];
			dp[i] = dirs[i];
			own[i] = 0;
			if (m->desc.text[i].kind == TEXT_T5) {
				char probe_t5[128];
				snprintf(probe_t5, sizeof probe_t5, "%sencoder.final_layer_norm.weight",
				    m->desc.text[i].prefix);
				if (weights_get(m->ck.weights, probe_t5) == NULL) {
					dp[i] = NULL;	/* no T5 in this model: zeros */
					continue;
				}
				if (find_spiece(spec, given, split, dirs[i], sizeof dirs[i]) < 0) {
					dp[i] = NULL;	/* absent: zeros, or the job fails */
					snprintf(m->t5_missing, sizeof m->t5_missing, "this model's T5 encoder "
					    "needs its SentencePiece tokenizer (spiece.model) and none was found "
					    "(looked in the model folder's tokenizer_3/, beside the file, in "
					    "--tokenizer DIR and DIR/tokenizer_3/, and in the Hub cache's "
					    "stabilityai/stable-diffusion-3-medium-diffusers); give one, or "
					    "render without T5 (t5: false, --no-t5)");
				}
				continue;
			}
			snprintf(dirs[i], sizeof dirs[i], "%s", tokdir);
			if (i > 0 && split) {
				snprintf(sub_dir, sizeof sub_dir, "%s/%s", given, sub);
				snprintf(file, sizeof file, "%s/vocab.json", sub_dir);
				if (access(file, R_OK) == 0)
					snprintf(dirs[i], sizeof dirs[i], "%s", sub_dir);
			} else if (i > 0 && (spec->tokenizer == NULL || *spec->tokenizer == '\0')) {
				snprintf(sub_dir, sizeof sub_dir, "%s/%s", spec->model, sub);
				snprintf(file, sizeof file, "%s/vocab.json", sub_dir);
				if (access(file, R_OK) == 0)
					snprintf(dirs[i], sizeof dirs[i], "%s", sub_dir);
			}
			own[i] = own_tokenizer(spec->model, sub, dirs[i]);
		}
		m->cond = conditioner_load(&m->desc, m->ck.weights, dp, own, err);
	}
	if (m->cond == NULL)
		goto prefix;
	if (m->cond->has_t5 || m->cond->t5_index < 0)
		m->t5_missing[0] = '\0';	/* no T5 weights: nothing is missing */
	m->unet = denoiser_load(&m->desc, m->ck.weights, err);
	if (m->unet == NULL)
		goto prefix;
	if (m->unet->context_dim != m->cond->width) {
		sd_fail(err, SD_EDATA, "the UNet expects a %d-wide text context but the text encoder is %d wide "
		    "(parts of different models?)", m->unet->context_dim, m->cond->width);
		goto prefix;
	}
	m->vae = vae_load(m->ck.weights, m->desc.vae_prefix, err);
	if (m->vae == NULL)
		goto prefix;
	m->latent_channels = vae_latent_channels(m->vae);
	if (m->unet->out_channels != m->latent_channels) {
		sd_fail(err, SD_EDATA, "the denoiser gives %d channels but the VAE's latents have %d "
		    "(parts of different models?)", m->unet->out_channels, m->latent_channels);
		goto prefix;
	}
	return m;
prefix:
	sd_error_prefix(err, "%s", spec->model);
fail:
	sd_model_free(m);
	return NULL;
}

void
sd_model_free(struct sd_model *m)
{
	if (m == NULL)
		return;
	if (m->ck.weights != NULL)
		lora_merge_undo(m->merge, m->ck.weights);
	free(m->merge_key);
	free(m->used);
	vae_free(m->vae);
	denoiser_free(m->unet);
	conditioner_free(m->cond);
	if (m->ck.weights != NULL)
		checkpoint_free(&m->ck);
	sd_ctx_free(m->ctx);
	free(m);
}

const char *
sd_model_arch(const struct sd_model *m)
{
	return m->desc.arch;
}

const struct model_desc *
sd_model_description(const struct sd_model *m)
{
	return &m->desc;
}

void
sd_image_free(struct sd_image *img)
{
	if (img == NULL)
		return;
	free(img->rgb);
	img->rgb = NULL;
}

/* Everything one image needs, freed by run_free. */
struct run {
	struct sd_model *m;
	const struct sd_params *p;
	int h, w, cfg, batch;
	size_t nlat;		/* latent channels * h * w */
	struct sd_rng *rng;
	struct sd_scheduler *sched;
	float *context;		/* backend [batch, 77, width] */
	struct conditioning conditioning;	/* of the context */
	float *pooled;		/* host [batch, pooled_dim] (SDXL) */
	float time_ids[12];	/* host [batch, 6] (SDXL) */
	struct sched_config sched_cfg;	/* the model's, with the job's prediction
					 * and spacing */
	float *latents;		/* host [latent channels, h, w] */
	float *noise;		/* host: the noise added to the image latents */
	float *image_latents;	/* host: img2img / inpainting, x 0.18215 */
	float *masked_latents;	/* host: inpainting, x 0.18215 */
	float *mask_latent;	/* host [h, w], 1 = repaint */
	double t0;
	sd_progress_fn progress;
	void *user;
};

static void
run_free(struct run *r)
{
	sd_scheduler_free(r->sched);
	sd_rng_free(r->rng);
	free(r->pooled);
	free(r->latents);
	free(r->noise);
	free(r->image_latents);
	free(r->masked_latents);
	free(r->mask_latent);
}

static int
report(struct run *r, const char *event, int step, int steps)
{
	struct sd_progress pr = {.event = event, .step = step, .steps = steps, .eta_s = -1};

	if (r->progress == NULL)
		return 0;
	pr.elapsed_s = now() - r->t0;
	if (step > 0 && steps > 0)
		pr.eta_s = pr.elapsed_s / step * (steps - step);
	return r->progress(r->user, &pr);
}

static int
warn(struct run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int
warn(struct run *r, const char *fmt, ...)
{
	struct sd_progress pr = {.event = "warning", .eta_s = -1};
	char msg[1024];
	va_list ap;

	if (r->progress == NULL)
		return 0;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	pr.message = msg;
	pr.elapsed_s = now() - r->t0;
	return r->progress(r->user, &pr);
}

/* Text to the UNet's context: [negative, prompt] under guidance, else
 * [prompt] (prompt and negative without their <lora:> tags).  With A1111's
 * syntax the context is 77 tokens per chunk of the longer prompt. */
static int
encode_text(struct run *r, const char *prompt, const char *negative, struct sd_error *err)
{
	struct sd_model *m = r->m;
	const char *prompts[2];
	int n = 0, len = m->cond->ctx_len;

	/* no negative prompt (NULL): "" (SD 1.x/2.x), or zeros (SDXL) */
	if (r->cfg)
		prompts[n++] = negative;
	prompts[n++] = prompt;
	if (r->p->prompt_syntax == SD_PROMPT_A1111) {
		int chunks = conditioner_a1111_chunks(m->cond, prompts, n, err);
		if (chunks < 0)
			return -1;
		len = PROMPT_CHUNK_LEN * chunks;
	} else {
		for (int i = 0; i < n; i++) {
			int32_t ids[TOKENIZER_MAX_LENGTH];
			int full = 0;
			if (tokenizer_encode(m->cond->tokenizer[0], prompts[i] ? prompts[i] : "", ids, &full,
			    err) < 0)
				return -1;
			if (full > TOKENIZER_MAX_LENGTH)
				warn(r, "the %s is %d tokens long: the text encoder reads the first %d, the rest "
				    "is cut (%s)", i + 1 < n ? "negative prompt" : "prompt", full - 2,
				    TOKENIZER_MAX_LENGTH - 2, m->cond->t5_index >= 0 ?
				    "SD3's T5 encoder reads up to 255 pieces of it" :
				    "prompt_syntax a1111 reads long prompts in chunks");
			/* SD3's T5 reads 256 tokens (255 pieces and </s>) */
			int t = m->cond->t5_index;
			if (t >= 0 && m->cond->has_t5 && m->cond->t5_on && m->cond->spm[t] != NULL) {
				int32_t t5ids[SPM_T5_MAX_LEN];
				int len5 = spm_t5_encode(m->cond->spm[t], prompts[i] ? prompts[i] : "", t5ids,
				    m->cond->t5_len > 0 && m->cond->t5_len <= SPM_T5_MAX_LEN ? m->cond->t5_len :
				    SPM_T5_MAX_LEN, err);
				if (len5 < 0)
					return -1;
				if (len5 > m->cond->t5_len)
					warn(r, "the %s is %d T5 tokens long: the T5 encoder reads the first %d, "
					    "the rest is cut", i + 1 < n ? "negative prompt" : "prompt", len5 - 1,
					    m->cond->t5_len - 1);
			}
		}
	}
	r->context = sd_alloc(m->ctx, (size_t)n * len * m->cond->width);
	r->conditioning.context = r->context;
	r->conditioning.ctx_len = len;
	r->conditioning.pooled = NULL;
	r->conditioning.pooled_dim = m->cond->pooled_dim;
	if (m->cond->pooled_dim > 0) {
		if ((r->pooled = malloc((size_t)n * m->cond->pooled_dim * sizeof *r->pooled)) == NULL)
			return sd_fail(err, SD_EINTERNAL, "out of memory");
		r->conditioning.pooled = r->pooled;
	}
	/* SDXL's time ids: original size = target size = the image's, no
	 * crop; the same for both rows */
	if (m->desc.time_ids) {
		for (int i = 0; i < n; i++) {
			float *t = r->time_ids + 6 * i;
			t[0] = (float)(8 * r->h);
			t[1] = (float)(8 * r->w);
			t[2] = t[3] = 0.0f;
			t[4] = (float)(8 * r->h);
			t[5] = (float)(8 * r->w);
		}
		r->conditioning.time_ids = r->time_ids;
	}
	if (r->p->prompt_syntax == SD_PROMPT_A1111) {
		if (conditioner_encode_a1111(m->cond, m->ctx, prompts, n, len / PROMPT_CHUNK_LEN,
		    r->p->clip_skip, r->context, r->pooled, err) < 0)
			return -1;
	} else if (conditioner_encode(m->cond, m->ctx, prompts, n, r->p->clip_skip, r->context,
	    r->pooled, err) < 0) {
		return -1;
	}
	return sd_ctx_status(m->ctx, err);	/* issue 15: an op failed */
}

/* sd_fail, blaming a job field. */
static int
fail_field(struct sd_error *err, int code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int
fail_field(struct sd_error *err, int code, const char *field, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	sd_fail(err, code, "%s", msg);
	if (err != NULL)
		snprintf(err->field, sizeof err->field, "%s", field);
	return -1;
}

/* ---------------------------------------------------------------- LoRAs */

const struct sd_lora_used *
sd_model_loras(const struct sd_model *m, int *n)
{
	*n = m->nused;
	return m->used;
}

/* Rebuild the networks that read the weights (after a merge or its undo). */
static int
reload_networks(struct sd_model *m, struct sd_error *err)
{
	struct denoiser *dn;

	if (conditioner_reload(m->cond, &m->desc, m->ck.weights, err) < 0)
		return -1;
	if ((dn = denoiser_load(&m->desc, m->ck.weights, err)) == NULL)
		return -1;
	denoiser_free(m->unet);
	m->unet = dn;
	return 0;
}

/* The file of a <lora:NAME> tag: NAME.safetensors, else NAME, in the first
 * of dirs that has it (model/lora.h: lora_find). */
static int
find_lora(const struct sd_params *p, const char *name, char *out, size_t size, struct sd_error *err)
{
	return lora_find(p->lora_dirs, p->nlora_dirs, name, out, size, err);
}

/* Merge the job's LoRAs (p->loras, then the tags) into m's weights, unless
 * that set is merged already. */
static int
apply_loras(struct run *r, const struct prompt_lora *tags, int ntags, struct sd_error *err)
{
	struct sd_model *m = r->m;
	const struct sd_params *p = r->p;
	int n = p->nloras + ntags, rc = -1;
	struct sd_lora_used *used = calloc((size_t)n + 1, sizeof *used);
	struct lora **files = calloc((size_t)n + 1, sizeof *files);
	struct lora_use *uses = calloc((size_t)n + 1, sizeof *uses);
	struct lora_report *rep = calloc((size_t)n + 1, sizeof *rep);
	char *key = NULL;
	size_t klen = 0;
	FILE *kf = NULL;

	if (used == NULL || files == NULL || uses == NULL || rep == NULL ||
	    (kf = open_memstream(&key, &klen)) == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		goto out;
	}
	for (int i = 0; i < n; i++) {
		struct sd_lora_used *u = &used[i];
		struct stat st;
		char *real;
		if (i < p->nloras) {
			const char *base = strrchr(p->loras[i].path, '/');
			snprintf(u->path, sizeof u->path, "%s", p->loras[i].path);
			snprintf(u->name, sizeof u->name, "%s", base ? base + 1 : p->loras[i].path);
			size_t nl = strlen(u->name);
			if (nl > 12 && strcmp(u->name + nl - 12, ".safetensors") == 0)
				u->name[nl - 12] = '\0';
			u->scale = u->unet_scale = p->loras[i].scale;
		} else {
			const struct prompt_lora *t = &tags[i - p->nloras];
			if (find_lora(p, t->name, u->path, sizeof u->path, err) < 0)
				goto out;
			snprintf(u->name, sizeof u->name, "%s", t->name);
			u->scale = t->text_scale;
			u->unet_scale = t->unet_scale;
		}
		if (stat(u->path, &st) < 0 || (real = realpath(u->path, NULL)) == NULL) {
			sd_fail(err, SD_ENOINPUT, "LoRA %s: %s", u->path, strerror(errno));
			goto out;
		}
		fprintf(kf, "%s\t%lld\t%lld.%09ld\t%a\t%a\n", real, (long long)st.st_size,
		    (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec, u->scale, u->unet_scale);
		free(real);
	}
	fclose(kf);
	kf = NULL;
	if (m->merge_key != NULL ? strcmp(m->merge_key, key) == 0 : n == 0) {
		/* the same set: keep the merge; the names may differ */
		if (n > 0)
			for (int i = 0; i < n; i++)
				snprintf(used[i].hash, sizeof used[i].hash, "%s", m->used[i].hash);
		free(m->used);
		m->used = used;
		m->nused = n;
		used = NULL;
		rc = 0;
		goto out;
	}
	/* another set: back to the base weights, then merge the new one */
	lora_merge_undo(m->merge, m->ck.weights);
	m->merge = NULL;
	free(m->merge_key);
	m->merge_key = NULL;
	free(m->used);
	m->used = NULL;
	m->nused = 0;
	if (n > 0) {
		struct lora_model lm = {.unet_prefix = m->desc.unet_prefix, .ntext = m->desc.ntext};
		char hash[65];
		for (int i = 0; i < m->desc.ntext && i < 2; i++)
			lm.text_prefix[i] = m->desc.text[i].prefix;
		for (int i = 0; i < n; i++) {
			if ((files[i] = lora_open(used[i].path, err)) == NULL)
				goto base;
			if (lora_file_hash(used[i].path, hash, err) < 0)
				goto base;
			snprintf(used[i].hash, sizeof used[i].hash, "%.12s", hash);
			uses[i].lora = files[i];
			uses[i].scale = used[i].scale;
			uses[i].unet_scale = used[i].unet_scale;
		}
		if ((m->merge = lora_merge_apply(m->ck.weights, &lm, uses, n, rep, err)) == NULL)
			goto base;
		for (int i = 0; i < n; i++)
			if (rep[i].unmatched > 0)
				warn(r, "LoRA %s: %d of its %d layers match no layer of this model (the first: %s)",
				    used[i].path, rep[i].unmatched, rep[i].unmatched + rep[i].applied,
				    rep[i].first_unmatched);
	}
	if (reload_networks(m, err) < 0)
		goto out;
	m->merge_key = key;
	key = NULL;
	m->used = used;
	m->nused = n;
	used = NULL;
	rc = 0;
	goto out;
base:
	/* the base weights are in place again: the networks must read them */
	reload_networks(m, NULL);
out:
	if (rc < 0 && err != NULL && err->field[0] == '\0' && err->code != SD_EINTERNAL)
		snprintf(err->field, sizeof err->field, "loras");
	if (kf != NULL)
		fclose(kf);
	for (int i = 0; i < n; i++)
		lora_free(files[i]);
	free(files);
	free(uses);
	free(rep);
	free(used);
	free(key);
	return rc;
}

/* scale * (mean + std*noise - shift) of the VAE encoding of image [3, 8h, 8w]
 * (host, [-1, 1]); the noise is the generator's next draw. */
static int
encode_image(struct run *r, const float *image, float *out, struct sd_error *err)
{
	struct sd_ctx *c = r->m->ctx;
	size_t mark = sd_mark(c), npix = (size_t)3 * 64 * r->h * r->w;
	float *dimg = sd_alloc(c, npix), *dmom = sd_alloc(c, 2 * r->nlat);
	float *moments = malloc(2 * r->nlat * sizeof *moments), *eps = malloc(r->nlat * sizeof *eps);

	if (moments == NULL || eps == NULL) {
		free(moments);
		free(eps);
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	}
	if (!vae_has_encoder(r->m->vae)) {
		free(moments);
		free(eps);
		return sd_fail(err, SD_EDATA, "the VAE of this model has no encoder: img2img and inpainting need one");
	}
	sd_upload(c, dimg, image, npix);
	vae_encode(r->m->vae, c, dmom, dimg, 1, r->h, r->w);
	sd_download(c, moments, dmom, 2 * r->nlat);
	sd_release(c, mark);
	if (sd_ctx_status(c, err) < 0) {	/* issue 15: an op failed */
		free(moments);
		free(eps);
		return -1;
	}
	sd_rng_randn(r->rng, eps, r->nlat);
	vae_latent_sample(r->m->vae, out, moments, eps, 1, r->h, r->w);
	for (size_t i = 0; i < r->nlat; i++)
		out[i] = r->m->desc.vae_scale * (out[i] - r->m->desc.vae_shift);
	free(moments);
	free(eps);
	return 0;
}

/* latents = a*x0 + b*noise at scheduler call i (diffusers' add_noise). */
static void
add_noise(struct run *r, int i, float *dst, const float *x0, const float *noise)
{
	sd_scheduler_add_noise(r->sched, i, x0, noise, dst, r->nlat);
}

/* The starting latents, drawing from the generator in diffusers' order. */
static int
prepare_latents(struct run *r, struct sd_error *err)
{
	const struct sd_params *p = r->p;
	int inpaint = p->mask_grey != NULL, nine = r->m->unet->in_channels == 9;
	size_t npix = (size_t)64 * r->h * r->w;
	float *image = NULL;

	r->latents = malloc(r->nlat * sizeof *r->latents);
	r->noise = malloc(r->nlat * sizeof *r->noise);
	if (r->latents == NULL || r->noise == NULL)
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	if (p->init_rgb == NULL) {
		/* txt2img: one randn draw, scaled by the initial sigma */
		sd_rng_randn(r->rng, r->noise, r->nlat);
		float s = sd_scheduler_init_noise_sigma(r->sched);
		for (size_t k = 0; k < r->nlat; k++)
			r->latents[k] = r->noise[k] * s;
		DEBUG(r->m, "latents_0", -1, r->latents, r->nlat);
		return 0;
	}
	image = malloc(3 * npix * sizeof *image);
	r->image_latents = malloc(r->nlat * sizeof *r->image_latents);
	if (image == NULL || r->image_latents == NULL) {
		free(image);
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	}
	image_u8_to_f32(p->init_rgb, 8 * r->w, 8 * r->h, image);
	int full = p->strength == 1.0;
	/* The image latents: always for img2img and the 4-channel inpainting
	 * (its blending needs them); for the 9-channel UNet only when the
	 * image is the start (strength < 1). */
	if (!inpaint || !nine || !full) {
		if (encode_image(r, image, r->image_latents, err) < 0)
			goto fail;
	}
	sd_rng_randn(r->rng, r->noise, r->nlat);
	if (inpaint) {
		/* the masked image: repaint area set to 0, its own draw */
		uint8_t *bin = malloc(npix);
		r->masked_latents = malloc(r->nlat * sizeof *r->masked_latents);
		r->mask_latent = malloc((size_t)r->h * r->w * sizeof *r->mask_latent);
		if (bin == NULL || r->masked_latents == NULL || r->mask_latent == NULL) {
			free(bin);
			sd_fail(err, SD_EINTERNAL, "out of memory");
			goto fail;
		}
		image_mask_binarize(p->mask_grey, npix, bin);
		for (size_t k = 0; k < npix; k++)
			if (bin[k])
				image[k] = image[npix + k] = image[2 * npix + k] = 0.0f;
		/* nearest downsampling: the top-left pixel of each 8x8 block */
		for (int i = 0; i < r->h; i++)
			for (int j = 0; j < r->w; j++)
				r->mask_latent[(size_t)i * r->w + j] = bin[(size_t)8 * i * 8 * r->w + 8 * j];
		free(bin);
		if (encode_image(r, image, r->masked_latents, err) < 0)
			goto fail;
	}
	if (inpaint && full) {
		float s = sd_scheduler_init_noise_sigma(r->sched);
		for (size_t k = 0; k < r->nlat; k++)
			r->latents[k] = r->noise[k] * s;
	} else {
		add_noise(r, 0, r->latents, r->image_latents, r->noise);
	}
	free(image);
	DEBUG(r->m, "latents_0", -1, r->latents, r->nlat);
	return 0;
fail:
	free(image);
	return -1;
}

static int
denoise(struct run *r, struct sd_error *err)
{
	struct sd_model *m = r->m;
	struct sd_ctx *c = m->ctx;
	const struct sd_params *p = r->p;
	int calls = sd_scheduler_calls(r->sched), cin = m->unet->in_channels;
	size_t hw = (size_t)r->h * r->w, nin = (size_t)cin * hw;
	float *host_in = malloc((size_t)r->batch * nin * sizeof *host_in);
	float *eps = malloc((size_t)r->batch * r->nlat * sizeof *eps);
	float *guided = malloc(r->nlat * sizeof *guided);
	float *din = sd_alloc(c, (size_t)r->batch * nin), *dout = sd_alloc(c, (size_t)r->batch * r->nlat);
	float t[2];
	int rc = -1;

	if (host_in == NULL || eps == NULL || guided == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		goto out;
	}
	for (int i = 0; i < calls; i++) {
		for (int b = 0; b < r->batch; b++) {
			float *x = host_in + (size_t)b * nin;
			sd_scheduler_scale_model_input(r->sched, i, r->latents, x, r->nlat);
			if (cin == 9) {
				memcpy(x + r->nlat, r->mask_latent, hw * sizeof *x);
				memcpy(x + r->nlat + hw, r->masked_latents, r->nlat * sizeof *x);
			}
			t[b] = sd_scheduler_timestep(r->sched, i);
		}
		sd_upload(c, din, host_in, (size_t)r->batch * nin);
		if (m->unet->forward(m->unet->impl, c, dout, din, r->batch, r->h, r->w, t,
		    &r->conditioning, err) < 0)
			goto out;
		sd_download(c, eps, dout, (size_t)r->batch * r->nlat);
		if (sd_ctx_status(c, err) < 0)	/* issue 15: an op failed */
			goto out;
		DEBUG(m, "unet_out", i, eps, (size_t)r->batch * r->nlat);
		if (r->cfg) {
			for (size_t k = 0; k < r->nlat; k++)
				guided[k] = eps[k] + p->guidance_scale * (eps[r->nlat + k] - eps[k]);
		} else {
			memcpy(guided, eps, r->nlat * sizeof *guided);
		}
		if (sd_scheduler_step(r->sched, i, guided, r->latents, r->nlat, r->rng, err) < 0)
			goto out;
		if (p->mask_grey != NULL && cin == 4) {
			/* keep the known region: the image latents noised to the
			 * next timestep (the plain image latents at the end) */
			float *proper = guided;
			if (i < calls - 1)
				add_noise(r, i + 1, proper, r->image_latents, r->noise);
			else
				memcpy(proper, r->image_latents, r->nlat * sizeof *proper);
			for (int ch = 0; ch < m->latent_channels; ch++)
				for (size_t k = 0; k < hw; k++) {
					float mk = r->mask_latent[k];
					size_t at = (size_t)ch * hw + k;
					r->latents[at] = (1.0f - mk) * proper[at] + mk * r->latents[at];
				}
		}
		DEBUG(m, "latents", i, r->latents, r->nlat);
		if (report(r, "step", i + 1, calls) != 0) {
			sd_fail(err, SD_EREQUEUED, "interrupted at step %d of %d", i + 1, calls);
			goto out;
		}
	}
	rc = 0;
out:
	free(host_in);
	free(eps);
	free(guided);
	return rc;
}

static int
decode(struct run *r, struct sd_image *out, struct sd_error *err)
{
	struct sd_ctx *c = r->m->ctx;
	size_t npix = (size_t)3 * 64 * r->h * r->w, mark = sd_mark(c);
	float *z = malloc(r->nlat * sizeof *z), *img = malloc(npix * sizeof *img);
	float *dz = sd_alloc(c, r->nlat), *dimg = sd_alloc(c, npix);

	out->rgb = malloc(npix);
	if (z == NULL || img == NULL || out->rgb == NULL) {
		free(z);
		free(img);
		free(out->rgb);
		out->rgb = NULL;
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	}
	for (size_t k = 0; k < r->nlat; k++)
		z[k] = r->latents[k] / r->m->desc.vae_scale + r->m->desc.vae_shift;
	sd_upload(c, dz, z, r->nlat);
	vae_decode(r->m->vae, c, dimg, dz, 1, r->h, r->w);
	sd_download(c, img, dimg, npix);
	sd_release(c, mark);
	if (sd_ctx_status(c, err) < 0) {	/* issue 15: an op failed */
		free(z);
		free(img);
		free(out->rgb);
		out->rgb = NULL;
		return -1;
	}
	DEBUG(r->m, "image_decoded", -1, img, npix);
	vae_image_to_rgb8(out->rgb, img, 1, 8 * r->h, 8 * r->w);
	out->width = 8 * r->w;
	out->height = 8 * r->h;
	free(z);
	free(img);
	return 0;
}

int
sd_params_resolve(const struct sd_model *m, struct sd_params *p, struct sd_error *err)
{
	const struct model_desc *d = &m->desc;

	if (p->width <= 0)
		p->width = d->default_width;
	if (p->height <= 0)
		p->height = d->default_height;
	if (p->steps <= 0)
		p->steps = d->default_steps;
	if (p->guidance_scale < 0)
		p->guidance_scale = d->default_guidance;
	if (p->sampler == SD_SAMPLER_AUTO)
		p->sampler = d->default_sampler;
	if (d->sched.prediction_type == SCHED_PRED_SAMPLE && p->prediction == SD_PREDICTION_AUTO)
		return sd_fail(err, SD_EDATA, "the model's scheduler config predicts the sample, "
		    "which sdbatch does not support");
	if (d->sched.prediction_type == SCHED_PRED_FLOW) {
		if (p->prediction != SD_PREDICTION_AUTO && p->prediction != SD_PREDICTION_FLOW)
			return fail_field(err, SD_EDATA, "prediction", "%s is a flow-matching model: "
			    "prediction must be auto or flow, not %s", d->name,
			    sd_prediction_name(p->prediction));
		p->prediction = SD_PREDICTION_FLOW;
		if (!(p->shift > 0))
			p->shift = d->sched.shift;
	} else if (p->prediction == SD_PREDICTION_FLOW) {
		return fail_field(err, SD_EDATA, "prediction", "%s is not a flow-matching model: "
		    "prediction flow is for SD3", d->name);
	} else if (p->shift > 0) {
		return fail_field(err, SD_EDATA, "shift", "%s is not a flow-matching model: shift is "
		    "for SD3 (leave it auto)", d->name);
	}
	/* SD3 without T5 weights: T5 is off (the record and PNG say so) */
	if (m->cond != NULL && m->cond->t5_index >= 0 && !m->cond->t5_weights)
		p->t5 = 0;
	if (p->prediction == SD_PREDICTION_AUTO)
		p->prediction = d->sched.prediction_type == SCHED_PRED_V ? SD_PREDICTION_V :
		    SD_PREDICTION_EPSILON;
	if (p->spacing == SD_SPACING_AUTO) {
		switch (d->sched.timestep_spacing) {
		case SCHED_SPACING_LEADING: p->spacing = SD_SPACING_LEADING; break;
		case SCHED_SPACING_LINSPACE: p->spacing = SD_SPACING_LINSPACE; break;
		case SCHED_SPACING_TRAILING: p->spacing = SD_SPACING_TRAILING; break;
		default:	/* the sampler class's own */
			p->spacing = p->sampler == SD_SAMPLER_DDIM || p->sampler == SD_SAMPLER_PNDM ?
			    SD_SPACING_LEADING : SD_SPACING_LINSPACE;
		}
	}
	return 0;
}

int
sd_generate(struct sd_model *m, const struct sd_params *params, int index,
    struct sd_image *out, struct sd_timings *timings,
    sd_progress_fn progress, void *user, struct sd_error *err)
{
	struct sd_params resolved = *params, *p = &resolved;
	struct run r = {.m = m, .p = p, .progress = progress, .user = user};
	struct sd_timings tm = {0};
	size_t mark = sd_mark(m->ctx);
	double t;
	int rc = -1, ntags = 0, nneg = 0;
	char *prompt = NULL, *negative = NULL;
	struct prompt_lora *tags = NULL, *ntags_neg = NULL;

	memset(out, 0, sizeof *out);
	if (sd_params_resolve(m, p, err) < 0)
		return -1;
	r.t0 = now();
	if (p->width <= 0 || p->height <= 0 || p->width % 8 || p->height % 8)
		return sd_fail(err, SD_EDATA, "width and height must be positive multiples of 8 (got %dx%d)",
		    p->width, p->height);
	r.h = p->height / 8;
	r.w = p->width / 8;
	if (m->unet->check_size(m->unet->impl, r.h, r.w, err) < 0)
		return -1;
	if (p->steps < 1)
		return sd_fail(err, SD_EDATA, "steps must be at least 1");
	if (p->mask_grey != NULL && p->init_rgb == NULL)
		return sd_fail(err, SD_EDATA, "a mask needs an init image");
	if (m->unet->in_channels == 9 && p->mask_grey == NULL)
		return sd_fail(err, SD_EDATA, "this is an inpainting model (9-channel UNet): it needs an init image and a mask");
	if (m->unet->in_channels != m->latent_channels && !(m->unet->in_channels == 9 && m->latent_channels == 4))
		return sd_fail(err, SD_EDATA, "a denoiser with %d input channels is not supported with "
		    "%d-channel latents", m->unet->in_channels, m->latent_channels);
	if (p->mask_grey != NULL && m->desc.family == MODEL_SD3)
		return fail_field(err, SD_EDATA, "mask", "inpainting is not supported on %s", m->desc.name);
	if (m->desc.family == MODEL_SD3 && p->t5 && m->t5_missing[0] != '\0')
		return fail_field(err, SD_ENOINPUT, "t5", "%s", m->t5_missing);
	if (p->init_rgb != NULL && !(p->strength > 0.0 && p->strength <= 1.0))
		return sd_fail(err, SD_EDATA, "strength must be in (0, 1] (got %g)", p->strength);
	r.nlat = (size_t)m->latent_channels * r.h * r.w;
	r.cfg = p->guidance_scale > 1.0f;
	r.batch = r.cfg ? 2 : 1;
	out->seed = p->seed + (uint64_t)index;
	r.rng = sd_rng_new(p->rng, out->seed);
	r.sched_cfg = m->desc.sched;
	r.sched_cfg.prediction_type = p->prediction == SD_PREDICTION_V ? SCHED_PRED_V :
	    p->prediction == SD_PREDICTION_EPSILON ? SCHED_PRED_EPSILON :
	    p->prediction == SD_PREDICTION_FLOW ? SCHED_PRED_FLOW : m->desc.sched.prediction_type;
	if (r.sched_cfg.prediction_type == SCHED_PRED_FLOW && p->shift > 0)
		r.sched_cfg.shift = p->shift;
	if (p->spacing != SD_SPACING_AUTO)
		r.sched_cfg.timestep_spacing = p->spacing == SD_SPACING_LEADING ? SCHED_SPACING_LEADING :
		    p->spacing == SD_SPACING_LINSPACE ? SCHED_SPACING_LINSPACE : SCHED_SPACING_TRAILING;
	r.sched = sd_scheduler_new(p->sampler, p->schedule, &r.sched_cfg, p->steps, err);
	if (r.rng == NULL || r.sched == NULL) {
		if (r.rng == NULL)
			sd_fail(err, SD_EINTERNAL, "out of memory");
		goto out;
	}
	if (p->init_rgb != NULL && sd_scheduler_set_strength(r.sched, p->strength, err) < 0)
		goto out;
	if (report(&r, "encoding", 0, sd_scheduler_calls(r.sched)) != 0) {
		sd_fail(err, SD_EREQUEUED, "interrupted");
		goto out;
	}
	t = now();
	if (p->prompt_syntax == SD_PROMPT_A1111) {
		if (prompt_extract_loras(p->prompt ? p->prompt : "", &prompt, &tags, &ntags, err) < 0 ||
		    (p->negative_prompt != NULL && prompt_extract_loras(p->negative_prompt, &negative,
		    &ntags_neg, &nneg, err) < 0))
			goto out;
		if (nneg > 0) {
			struct prompt_lora *all = realloc(tags, (size_t)(ntags + nneg) * sizeof *all);
			if (all == NULL) {
				sd_fail(err, SD_EINTERNAL, "out of memory");
				goto out;
			}
			memcpy(all + ntags, ntags_neg, (size_t)nneg * sizeof *all);
			tags = all;
			ntags += nneg;
		}
	}
	if (apply_loras(&r, tags, ntags, err) < 0)
		goto out;
	conditioner_set_t5(m->cond, p->t5);
	if (encode_text(&r, prompt ? prompt : p->prompt, negative ? negative : p->negative_prompt, err) < 0 ||
	    prepare_latents(&r, err) < 0 ||
	    sd_scheduler_prepare(r.sched, r.nlat, err) < 0)	/* no allocation in the loop */
		goto out;
	tm.encode_s = now() - t;
	/* Each phase keeps only its own weights resident (CPU backend). */
	sd_cpu_release_weights(m->ctx);
	t = now();
	/* the cross-attentions' keys and values, once for all steps */
	m->unet->set_conditioning(m->unet->impl, m->ctx, &r.conditioning, r.batch);
	if (denoise(&r, err) < 0)
		goto out;
	tm.sample_s = now() - t;
	sd_cpu_release_weights(m->ctx);
	report(&r, "decoding", sd_scheduler_calls(r.sched), sd_scheduler_calls(r.sched));
	t = now();
	if (decode(&r, out, err) < 0)
		goto out;
	tm.decode_s = now() - t;
	rc = 0;
out:
	m->unet->clear_conditioning(m->unet->impl);
	sd_release(m->ctx, mark);
	run_free(&r);
	free(prompt);
	free(negative);
	free(tags);
	free(ntags_neg);
	if (timings != NULL)
		*timings = tm;
	return rc;
}
