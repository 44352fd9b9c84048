/* test_vae.c: the VAE decoder and encoder against diffusers' tensors
 * (cases vae_decode, vae_decode_8x16, vae_encode of sd15-tiny, sd21-tiny
 * and sdxl-tiny; SD3's 16-channel VAE without quant convs: vae_decode_16x16,
 * vae_decode_8x16, vae_encode_64x64 of sd3-tiny, from the single file and
 * from the diffusers folder's names), and the loader's errors. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "model/checkpoint.h"
#include "model/vae.h"
#include "model/weights.h"
#include "testutil.h"

/* The VAE scale of the SD 1.5 goldens (manifest: scaling_factor). */
static float VAE_SCALING_FACTOR = 0.18215f;	/* sdxl-tiny: 0.13025 */
/* and its shift (SD3: 0.0609; decoder_input = latents / scale + shift) */
static float VAE_SHIFT_FACTOR = 0.0f;

/* The golden set test_decode and test_encode read. */
static const char *vae_set = "sd15-tiny";

#define PREFIX	"first_stage_model."
/* manifest.json: vae_decode, vae_decode_8x16, vae_encode */
#define ATOL	2e-4
#define RTOL	2e-4

/* Compare got [n] with the golden tensor name of g. */
static void
check_golden(struct st_file *g, const char *name, const char *what, const float *got,
    size_t n)
{
	size_t wn;
	float *want = golden_f32(g, name, &wn);

	if (wn == n)
		check_close(what, got, want, n, ATOL, RTOL);
	else
		tap_ok(0, "%s has %zu elements, golden %zu", what, n, wn);
	free(want);
}

/* The debug hook compares the named intermediates with a golden file. */
struct capture {
	struct sd_ctx *c;
	struct st_file *g;
	const char *const *names;
	int count;
	int seen[16];
};

static void
capture_hook(void *user, const char *name, int index, const float *x, int ch, int h, int w)
{
	struct capture *cap = user;
	size_t n = (size_t)ch * (size_t)h * (size_t)w, wn;
	float *got, *want;

	for (int i = 0; i < cap->count; i++) {
		if (strcmp(cap->names[i], name) != 0 || index != 0)
			continue;
		cap->seen[i] = 1;
		want = golden_f32(cap->g, name, &wn);
		if (wn != n) {
			tap_ok(0, "%s has %zu elements ([%d, %d, %d]), golden %zu", name, n,
			    ch, h, w, wn);
			free(want);
			return;
		}
		got = malloc(n * sizeof *got);
		if (got == NULL)
			abort();
		sd_download(cap->c, got, x, n);
		check_close(name, got, want, n, ATOL, RTOL);
		free(got);
		free(want);
	}
}

static void
capture_check_seen(const struct capture *cap, const char *what)
{
	int missing = 0;

	for (int i = 0; i < cap->count; i++) {
		if (!cap->seen[i]) {
			tap_diag("%s: no intermediate %s", what, cap->names[i]);
			missing++;
		}
	}
	tap_ok(missing == 0, "%s: the debug hook saw all %d intermediates", what, cap->count);
}

/* Decode a case's decoder_input; check image, image_01, image_u8 (and the
 * intermediates named). */
static void
test_decode(struct vae *v, struct sd_ctx *c, const char *name,
    const char *const *names, int nnames)
{
	struct st_file *g = golden_open_in(vae_set, name);
	struct capture cap = {c, g, names, nnames, {0}};
	const struct sd_tensor *t;
	size_t zn, in, un, mark;
	float *latents, *zin, *want, *image, *img01, *z, *dimage;
	uint8_t *u8;
	int h, w, big = 0, off1 = 0;

	if (g == NULL) {
		tap_skip("%s: golden file missing", name);
		return;
	}
	tap_diag("%s of %s:", name, vae_set);
	t = st_find(g, "decoder_input");
	if (t == NULL || !sd_tensor_has_shape(t, 4, (int64_t)1,
	    (int64_t)vae_latent_channels(v), (int64_t)-1, (int64_t)-1)) {
		tap_ok(0, "%s: decoder_input [1, %d, h, w] present", name,
		    vae_latent_channels(v));
		st_close(g);
		return;
	}
	h = (int)t->shape[2];
	w = (int)t->shape[3];
	latents = golden_f32(g, "latents", &zn);
	zin = golden_f32(g, "decoder_input", &zn);
	/* the pipeline's division (then the shift), as a check of the
	 * convention */
	z = malloc(zn * sizeof *z);
	for (size_t i = 0; i < zn; i++)
		z[i] = latents[i] / VAE_SCALING_FACTOR + VAE_SHIFT_FACTOR;
	check_close(VAE_SHIFT_FACTOR != 0 ? "latents / scale + shift = decoder_input" :
	    "latents / scale = decoder_input", z, zin, zn, 1e-6, 1e-6);

	in = (size_t)3 * (size_t)(8 * h) * (size_t)(8 * w);
	mark = sd_mark(c);
	float *dz = sd_alloc(c, zn);
	dimage = sd_alloc(c, in);
	sd_upload(c, dz, zin, zn);
	vae_set_debug(v, capture_hook, &cap);
	vae_decode(v, c, dimage, dz, 1, h, w);
	vae_set_debug(v, NULL, NULL);
	image = malloc(in * sizeof *image);
	sd_download(c, image, dimage, in);
	sd_release(c, mark);
	if (nnames > 0)
		capture_check_seen(&cap, name);

	check_golden(g, "image", "image", image, in);
	if (st_find(g, "image_01") == NULL) {
		/* sd3-tiny's VAE cases stop at the decoder output */
		free(image);
		free(z);
		free(zin);
		free(latents);
		st_close(g);
		return;
	}

	img01 = malloc(in * sizeof *img01);
	for (size_t i = 0; i < in; i++)
		img01[i] = fminf(fmaxf(image[i] / 2.0f + 0.5f, 0.0f), 1.0f);
	check_golden(g, "image_01", "image_01", img01, in);

	u8 = malloc(in);
	vae_image_to_rgb8(u8, image, 1, 8 * h, 8 * w);
	want = golden_f32(g, "image_u8", &un);
	/* +-1 only where image_01*255 is near a .5 tie (image's tolerance) */
	for (size_t i = 0; i < un && un == in; i++) {
		size_t p = i / 3, ch = i % 3, hw = (size_t)(8 * h) * (size_t)(8 * w);
		float x = img01[ch * hw + p] * 255.0f;
		int d = abs((int)u8[i] - (int)want[i]);
		if (d == 1 && fabsf(x - floorf(x) - 0.5f) < 255.0f * (float)(ATOL + RTOL))
			off1++;
		else if (d != 0)
			big++;
	}
	tap_ok(un == in && big == 0, "image_u8 (HWC) within +-1 at rounding ties "
	    "(%d off by one, %d more)", off1, big);
	free(want);

	free(u8);
	free(img01);
	free(image);
	free(z);
	free(zin);
	free(latents);
	st_close(g);
}

static void
test_encode(struct vae *v, struct sd_ctx *c)
{
	static const char *const names[] = {
		"enc_down1", "enc_down2", "enc_down3", "enc_mid", "enc_conv_out"
	};
	struct st_file *g = golden_open_in(vae_set, "vae_encode");
	struct capture cap = {c, g, names, 5, {0}};
	size_t in, n, mn, ln, mark;
	float *image, *moments, *mean, *logvar, *std, *noise, *sample;
	float *dimage, *dmoments;
	int h, w;
	const struct sd_tensor *t;

	if (g == NULL) {
		tap_skip("vae_encode: golden file missing");
		return;
	}
	t = st_find(g, "image");
	if (t == NULL || t->ndim != 4 || t->shape[1] != 3) {
		tap_ok(0, "vae_encode: image [1, 3, H, W] present");
		st_close(g);
		return;
	}
	h = (int)t->shape[2] / 8;
	w = (int)t->shape[3] / 8;
	image = golden_f32(g, "image", &in);
	mn = (size_t)8 * (size_t)h * (size_t)w;
	ln = mn / 2;

	mark = sd_mark(c);
	dimage = sd_alloc(c, in);
	dmoments = sd_alloc(c, mn);
	sd_upload(c, dimage, image, in);
	vae_set_debug(v, capture_hook, &cap);
	vae_encode(v, c, dmoments, dimage, 1, h, w);
	vae_set_debug(v, NULL, NULL);
	moments = malloc(mn * sizeof *moments);
	sd_download(c, moments, dmoments, mn);
	sd_release(c, mark);
	capture_check_seen(&cap, "vae_encode");

	check_golden(g, "moments", "moments", moments, mn);
	mean = malloc(ln * sizeof *mean);
	logvar = malloc(ln * sizeof *logvar);
	std = malloc(ln * sizeof *std);
	sample = malloc(ln * sizeof *sample);
	vae_latent_stats(v, mean, logvar, std, moments, 1, h, w);
	check_golden(g, "mean", "mean", mean, ln);
	check_golden(g, "logvar", "logvar (clamped)", logvar, ln);
	check_golden(g, "std", "std", std, ln);
	noise = golden_f32(g, "noise", &n);
	if (n != ln) {
		tap_ok(0, "noise has %zu elements, %zu expected", n, ln);
		noise = realloc(noise, ln * sizeof *noise);
		memset(noise, 0, ln * sizeof *noise);
	}
	vae_latent_sample(v, sample, moments, noise, 1, h, w);
	check_golden(g, "sample", "sample (mean + std*noise)", sample, ln);
	for (size_t i = 0; i < ln; i++)
		sample[i] *= VAE_SCALING_FACTOR;
	check_golden(g, "sample_scaled", "sample_scaled", sample, ln);
	vae_latent_sample(v, sample, moments, NULL, 1, h, w);
	tap_ok(memcmp(sample, mean, ln * sizeof *mean) == 0, "the sample without noise is the mean");

	free(noise);
	free(sample);
	free(std);
	free(logvar);
	free(mean);
	free(moments);
	free(image);
	st_close(g);
}

/* Loading fails with a message that names the tensor. */
static void
expect_load_error(struct sd_weights *w, const char *what, const char *tensor)
{
	struct sd_error err = {0};
	struct vae *v = vae_load(w, PREFIX, &err);

	tap_ok(v == NULL && err.code == SD_EDATA && strstr(err.message, tensor) != NULL,
	    "%s: error names %s (%s)", what, tensor, v ? "loaded" : err.message);
	vae_free(v);
}

static void
test_errors(const struct st_file *f, struct sd_ctx *c)
{
	static struct sd_tensor fake[8];
	static const char *const attn[] = {"q", "k", "v", "proj_out"};
	char name[128];
	struct sd_error err = {0};
	struct sd_weights *w;
	struct vae *v;

	w = weights_subset(f, PREFIX, PREFIX "decoder.up.2.block.1.conv2.weight", NULL);
	expect_load_error(w, "a missing decoder tensor", "decoder.up.2.block.1.conv2.weight");
	weights_free(w);

	w = weights_subset(f, PREFIX, PREFIX "encoder.down.1.downsample.conv.bias", NULL);
	expect_load_error(w, "a missing encoder tensor", "encoder.down.1.downsample.conv.bias");
	weights_free(w);

	w = weights_subset(f, PREFIX, PREFIX "post_quant_conv.", NULL);
	expect_load_error(w, "no post_quant_conv", "post_quant_conv.weight");
	weights_free(w);

	w = weights_subset(f, PREFIX, NULL, NULL);
	fake[0] = *weights_get(w, PREFIX "decoder.mid.block_1.conv1.weight");
	fake[0].shape[2] = fake[0].shape[3] = 1;
	weights_put(w, PREFIX "decoder.mid.block_1.conv1.weight", &fake[0]);
	expect_load_error(w, "a 1x1 conv where a 3x3 one belongs",
	    "decoder.mid.block_1.conv1.weight");
	weights_free(w);

	w = weights_subset(f, PREFIX, NULL, NULL);
	fake[1] = *weights_get(w, PREFIX "decoder.up.0.block.0.norm2.bias");
	fake[1].shape[0] = 16;
	weights_put(w, PREFIX "decoder.up.0.block.0.norm2.bias", &fake[1]);
	expect_load_error(w, "a short norm bias", "decoder.up.0.block.0.norm2.bias");
	weights_free(w);

	w = weights_subset(f, PREFIX, NULL, NULL);
	fake[2] = *weights_get(w, PREFIX "encoder.mid.attn_1.k.weight");
	fake[2].ndim = 2;
	fake[2].shape[1] = 16;
	fake[2].shape[0] = 64;
	weights_put(w, PREFIX "encoder.mid.attn_1.k.weight", &fake[2]);
	expect_load_error(w, "a wrong attention shape", "encoder.mid.attn_1.k.weight");
	weights_free(w);

	w = weights_subset(f, PREFIX, NULL, NULL);
	fake[3] = *weights_get(w, PREFIX "decoder.conv_out.bias");
	fake[3].dtype = SD_I32;
	weights_put(w, PREFIX "decoder.conv_out.bias", &fake[3]);
	expect_load_error(w, "an integer tensor", "decoder.conv_out.bias");
	weights_free(w);

	/* a VAE without its encoder still decodes */
	w = weights_subset(f, PREFIX, PREFIX "encoder.", NULL);
	v = vae_load(w, PREFIX, &err);
	tap_ok(v != NULL && !vae_has_encoder(v), "loads a decoder without an encoder (%s)",
	    v ? "ok" : err.message);
	vae_free(v);
	weights_free(w);

	/* diffusers' linear-shaped [C, C] mid attention weights */
	w = weights_subset(f, PREFIX, NULL, NULL);
	for (int i = 0; i < 4; i++) {
		snprintf(name, sizeof name, PREFIX "decoder.mid.attn_1.%s.weight", attn[i]);
		fake[4 + i] = *weights_get(w, name);
		fake[4 + i].ndim = 2;
		weights_put(w, name, &fake[4 + i]);
	}
	v = vae_load(w, PREFIX, &err);
	tap_ok(v != NULL, "loads [C, C] attention weights (%s)", v ? "ok" : err.message);
	if (v != NULL) {
		tap_diag("decode with [C, C] attention weights:");
		test_decode(v, c, "vae_decode", NULL, 0);
	}
	vae_free(v);
	weights_free(w);
}

/* SD3's vae_encode_64x64: no quant_conv, so the moments are the encoder's
 * conv_out; mean, logvar, std and the latents of the mean,
 * (mean - 0.0609) * 1.5305. */
static void
test_encode_sd3(struct vae *v, struct sd_ctx *c)
{
	struct st_file *g = golden_open_in("sd3-tiny", "vae_encode_64x64");
	const struct sd_tensor *t;
	size_t in, mn, ln, mark;
	float *image, *moments, *mean, *logvar, *std, *dimage, *dmoments;
	int h, w, zc = vae_latent_channels(v);

	if (g == NULL) {
		tap_skip("vae_encode_64x64: golden file missing");
		return;
	}
	t = st_find(g, "image");
	if (t == NULL || t->ndim != 4 || t->shape[1] != 3) {
		tap_ok(0, "vae_encode_64x64: image [1, 3, H, W] present");
		st_close(g);
		return;
	}
	h = (int)t->shape[2] / 8;
	w = (int)t->shape[3] / 8;
	image = golden_f32(g, "image", &in);
	ln = (size_t)zc * (size_t)h * (size_t)w;
	mn = 2 * ln;
	mark = sd_mark(c);
	dimage = sd_alloc(c, in);
	dmoments = sd_alloc(c, mn);
	sd_upload(c, dimage, image, in);
	vae_encode(v, c, dmoments, dimage, 1, h, w);
	moments = malloc(mn * sizeof *moments);
	sd_download(c, moments, dmoments, mn);
	sd_release(c, mark);
	mean = malloc(ln * sizeof *mean);
	logvar = malloc(ln * sizeof *logvar);
	std = malloc(ln * sizeof *std);
	vae_latent_stats(v, mean, logvar, std, moments, 1, h, w);
	check_golden(g, "mean", "SD3 encode: mean", mean, ln);
	check_golden(g, "logvar", "SD3 encode: logvar (clamped)", logvar, ln);
	check_golden(g, "std", "SD3 encode: std", std, ln);
	vae_latent_sample(v, mean, moments, NULL, 1, h, w);
	for (size_t i = 0; i < ln; i++)
		mean[i] = (mean[i] - 0.0609f) * 1.5305f;
	check_golden(g, "latents_from_mean", "SD3 encode: (mean - 0.0609) * 1.5305",
	    mean, ln);
	free(std);
	free(logvar);
	free(mean);
	free(moments);
	free(image);
	st_close(g);
}

/* The SD3 VAE from the diffusers folder (vae/diffusion_pytorch_model.
 * safetensors): every name maps to the single file's (the mapping of
 * checkpoint.c), with the same values, and the result decodes. */
static void
test_sd3_folder(struct sd_ctx *c)
{
	struct sd_error err = {0};
	struct st_file *f = st_open(shared_path("testdata/sd3-tiny/diffusers/vae/"
	    "diffusion_pytorch_model.safetensors"), &err);
	struct st_file *single = st_open(shared_path("testdata/sd3-tiny/model.safetensors"),
	    &err);
	struct sd_weights *w;
	struct vae *v;
	char name[512];
	int unmapped = 0, differ = 0, n = 0;

	if (f == NULL || single == NULL) {
		tap_ok(0, "opens the SD3 diffusers VAE and the single file (%s)", err.message);
		st_close(f);
		st_close(single);
		return;
	}
	w = weights_new();
	for (int i = 0; i < st_count(f); i++) {
		const struct sd_tensor *t = st_tensor(f, i), *s;

		if (checkpoint_diffusers_name("vae", t->name, name, sizeof name) < 0) {
			tap_diag("%s: no single-file name", t->name);
			unmapped++;
			continue;
		}
		s = st_find(single, name);
		/* diffusers' mid attention is [C, C], the file's [C, C, 1, 1] */
		if (s == NULL || s->shape[0] != t->shape[0] || s->dtype != t->dtype ||
		    sd_tensor_nbytes(s) != sd_tensor_nbytes(t) ||
		    memcmp(s->data, t->data, sd_tensor_nbytes(s)) != 0) {
			tap_diag("%s -> %s: %s", t->name, name, s ? "differs" : "not in the file");
			differ++;
		}
		weights_put(w, name, t);
		n++;
	}
	tap_ok(unmapped == 0 && differ == 0 && n == 236, "the diffusers folder's %d VAE "
	    "tensors map to the single file's names, bit-identical", n);
	v = vae_load(w, PREFIX, &err);
	tap_ok(v != NULL && vae_latent_channels(v) == 16 && vae_has_encoder(v),
	    "the folder's VAE loads: 16 channels, an encoder (%s)", v ? "ok" : err.message);
	if (v != NULL)
		test_decode(v, c, "vae_decode_8x16", NULL, 0);
	vae_free(v);
	weights_free(w);
	st_close(f);
	st_close(single);
}

/* The quant convs are optional, but not one without the other. */
static void
test_quant_conv_pairs(const struct st_file *sd15, const struct st_file *sd3)
{
	static struct sd_tensor fake[2];
	struct sd_weights *w;

	w = weights_subset(sd15, PREFIX, PREFIX "quant_conv.", NULL);
	expect_load_error(w, "SD 1.5's VAE without its quant_conv", "quant_conv.weight");
	weights_free(w);

	/* SD3's with a post_quant_conv but no quant_conv */
	w = weights_subset(sd3, PREFIX, NULL, NULL);
	fake[0] = *weights_get(w, PREFIX "decoder.mid.attn_1.q.weight");
	fake[0].shape[0] = fake[0].shape[1] = 16;
	weights_put(w, PREFIX "post_quant_conv.weight", &fake[0]);
	fake[1] = *weights_get(w, PREFIX "decoder.conv_in.bias");
	fake[1].shape[0] = 16;
	weights_put(w, PREFIX "post_quant_conv.bias", &fake[1]);
	expect_load_error(w, "a post_quant_conv without a quant_conv", "quant_conv.weight");
	weights_free(w);

	/* a bias alone is not "no post_quant_conv" */
	w = weights_subset(sd3, PREFIX, NULL, NULL);
	weights_put(w, PREFIX "post_quant_conv.bias", &fake[1]);
	expect_load_error(w, "a post_quant_conv bias without its weight",
	    "post_quant_conv.weight");
	weights_free(w);
}

/* ---- a synthetic VAE with changing widths, against a plain C reference ----
 * The tiny model has one width (32) everywhere, so it has no nin_shortcut;
 * real SD 1.5 has four.  This model (block_out_channels 32, 64, 32, 64) has
 * one in most levels, and a batch of 2 non-square items checks the offsets. */

struct synth_tensor {
	struct sd_tensor t;
	char name[128];
};

static struct synth_tensor *synth[512];
static int nsynth;
static uint64_t synth_state = 0x9e3779b97f4a7c15ull;

/* Uniform in [-1, 1). */
static float
synth_rand(void)
{
	synth_state ^= synth_state << 13;
	synth_state ^= synth_state >> 7;
	synth_state ^= synth_state << 17;
	return (float)((double)(synth_state >> 11) / (double)(1ull << 52) - 1.0);
}

/* Add PREFIX<base><suffix> of shape d0..d3 (ndim dims), filled with
 * offset + scale*uniform. */
static void
synth_add(struct sd_weights *w, const char *base, const char *suffix, int ndim,
    int d0, int d1, int d2, int d3, float offset, float scale)
{
	struct synth_tensor *s = calloc(1, sizeof *s);
	const int dims[4] = {d0, d1, d2, d3};
	size_t n = 1;
	float *data;

	if (s == NULL || nsynth == (int)(sizeof synth / sizeof synth[0]))
		abort();
	snprintf(s->name, sizeof s->name, PREFIX "%s%s", base, suffix);
	s->t.name = s->name;
	s->t.dtype = SD_F32;
	s->t.ndim = ndim;
	for (int i = 0; i < ndim; i++) {
		s->t.shape[i] = dims[i];
		n *= (size_t)dims[i];
	}
	data = malloc(n * sizeof *data);
	if (data == NULL)
		abort();
	for (size_t i = 0; i < n; i++)
		data[i] = offset + scale * synth_rand();
	s->t.data = data;
	synth[nsynth++] = s;
	weights_put(w, s->name, &s->t);
}

static void
synth_conv(struct sd_weights *w, const char *base, int cout, int cin, int k)
{
	synth_add(w, base, ".weight", 4, cout, cin, k, k, 0, 1.0f / sqrtf((float)(cin * k * k)));
	synth_add(w, base, ".bias", 1, cout, 0, 0, 0, 0, 0.1f);
}

static void
synth_norm(struct sd_weights *w, const char *base, int ch)
{
	synth_add(w, base, ".weight", 1, ch, 0, 0, 0, 1, 0.2f);
	synth_add(w, base, ".bias", 1, ch, 0, 0, 0, 0, 0.2f);
}

static void
synth_resnet(struct sd_weights *w, const char *base, int cin, int cout)
{
	char name[128];

	snprintf(name, sizeof name, "%s.norm1", base);
	synth_norm(w, name, cin);
	snprintf(name, sizeof name, "%s.conv1", base);
	synth_conv(w, name, cout, cin, 3);
	snprintf(name, sizeof name, "%s.norm2", base);
	synth_norm(w, name, cout);
	snprintf(name, sizeof name, "%s.conv2", base);
	synth_conv(w, name, cout, cout, 3);
	if (cin != cout) {
		snprintf(name, sizeof name, "%s.nin_shortcut", base);
		synth_conv(w, name, cout, cin, 1);
	}
}

static void
synth_mid(struct sd_weights *w, const char *base, int ch)
{
	static const char *const proj[] = {"q", "k", "v", "proj_out"};
	char name[128];

	snprintf(name, sizeof name, "%s.block_1", base);
	synth_resnet(w, name, ch, ch);
	snprintf(name, sizeof name, "%s.attn_1.norm", base);
	synth_norm(w, name, ch);
	for (int i = 0; i < 4; i++) {
		snprintf(name, sizeof name, "%s.attn_1.%s", base, proj[i]);
		synth_conv(w, name, ch, ch, 1);
	}
	snprintf(name, sizeof name, "%s.block_2", base);
	synth_resnet(w, name, ch, ch);
}

/* The SD 1.5 layout with block_out_channels bo and 4 latent channels. */
static void
synth_build(struct sd_weights *w, const int bo[4])
{
	char name[128];
	int ch;

	synth_conv(w, "post_quant_conv", 4, 4, 1);
	synth_conv(w, "quant_conv", 8, 8, 1);
	ch = bo[3];
	synth_conv(w, "decoder.conv_in", ch, 4, 3);
	synth_mid(w, "decoder.mid", ch);
	for (int i = 3; i >= 0; i--) {
		for (int j = 0; j < 3; j++) {
			snprintf(name, sizeof name, "decoder.up.%d.block.%d", i, j);
			synth_resnet(w, name, ch, bo[i]);
			ch = bo[i];
		}
		if (i > 0) {
			snprintf(name, sizeof name, "decoder.up.%d.upsample.conv", i);
			synth_conv(w, name, ch, ch, 3);
		}
	}
	synth_norm(w, "decoder.norm_out", ch);
	synth_conv(w, "decoder.conv_out", 3, ch, 3);

	ch = bo[0];
	synth_conv(w, "encoder.conv_in", ch, 3, 3);
	for (int i = 0; i < 4; i++) {
		for (int j = 0; j < 2; j++) {
			snprintf(name, sizeof name, "encoder.down.%d.block.%d", i, j);
			synth_resnet(w, name, ch, bo[i]);
			ch = bo[i];
		}
		if (i < 3) {
			snprintf(name, sizeof name, "encoder.down.%d.downsample.conv", i);
			synth_conv(w, name, ch, ch, 3);
		}
	}
	synth_mid(w, "encoder.mid", ch);
	synth_norm(w, "encoder.norm_out", ch);
	synth_conv(w, "encoder.conv_out", 8, ch, 3);
}

static void
synth_free(void)
{
	for (int i = 0; i < nsynth; i++) {
		free(synth[i]->t.data);
		free(synth[i]);
	}
	nsynth = 0;
}

/* The reference: plain loops, double accumulators, host memory. */

static const float *
ref_param(const struct sd_weights *w, const char *base, const char *suffix)
{
	char name[160];
	const struct sd_tensor *t;

	snprintf(name, sizeof name, PREFIX "%s%s", base, suffix);
	t = weights_get(w, name);
	return t ? t->data : NULL;
}

/* y[cout, oh, ow] = conv(x[cin, h, w]) with per-side zero padding. */
static float *
ref_conv(const struct sd_weights *sw, const char *base, const float *x, int cin, int h,
    int w, int stride, int pt, int pl, int pb, int pr, int *cout, int *oh, int *ow)
{
	char name[160];
	const struct sd_tensor *t;
	const float *k, *bias = ref_param(sw, base, ".bias");
	int co, ks, hh, ww;
	float *y;

	snprintf(name, sizeof name, PREFIX "%s.weight", base);
	t = weights_get(sw, name);
	k = t->data;
	co = (int)t->shape[0];
	ks = (int)t->shape[2];
	hh = (h + pt + pb - ks) / stride + 1;
	ww = (w + pl + pr - ks) / stride + 1;
	y = malloc((size_t)co * (size_t)hh * (size_t)ww * sizeof *y);
	for (int o = 0; o < co; o++)
	for (int i = 0; i < hh; i++)
	for (int j = 0; j < ww; j++) {
		double s = bias[o];
		for (int c = 0; c < cin; c++)
		for (int a = 0; a < ks; a++)
		for (int b = 0; b < ks; b++) {
			int yi = i * stride + a - pt, xj = j * stride + b - pl;
			if (yi < 0 || yi >= h || xj < 0 || xj >= w)
				continue;
			s += (double)k[((o * cin + c) * ks + a) * ks + b] *
			    x[((size_t)c * h + yi) * w + xj];
		}
		y[((size_t)o * hh + i) * ww + j] = (float)s;
	}
	*cout = co;
	if (oh != NULL)
		*oh = hh;
	if (ow != NULL)
		*ow = ww;
	return y;
}

/* In place: GroupNorm(32, eps 1e-6) of x[ch, hw], then SiLU if silu. */
static void
ref_norm(const struct sd_weights *sw, const char *base, float *x, int ch, int hw, int silu)
{
	const float *g = ref_param(sw, base, ".weight"), *b = ref_param(sw, base, ".bias");
	int per = ch / 32;

	for (int grp = 0; grp < 32; grp++) {
		double sum = 0, sq = 0, n = (double)per * hw, mean, inv;
		float *p = x + (size_t)grp * per * hw;
		for (size_t i = 0; i < (size_t)per * hw; i++)
			sum += p[i];
		mean = sum / n;
		for (size_t i = 0; i < (size_t)per * hw; i++)
			sq += (p[i] - mean) * (p[i] - mean);
		inv = 1.0 / sqrt(sq / n + 1e-6);
		for (int c = 0; c < per; c++) {
			int cc = grp * per + c;
			for (int i = 0; i < hw; i++) {
				double v = (p[(size_t)c * hw + i] - mean) * inv * g[cc] + b[cc];
				if (silu)
					v = v / (1.0 + exp(-v));
				p[(size_t)c * hw + i] = (float)v;
			}
		}
	}
}

static float *
ref_resnet(const struct sd_weights *sw, const char *base, const float *x, int cin, int h,
    int w, int *cout)
{
	char name[160];
	size_t hw = (size_t)h * w;
	float *t = malloc((size_t)cin * hw * sizeof *t), *a, *y, *s;
	int co;

	memcpy(t, x, (size_t)cin * hw * sizeof *t);
	snprintf(name, sizeof name, "%s.norm1", base);
	ref_norm(sw, name, t, cin, (int)hw, 1);
	snprintf(name, sizeof name, "%s.conv1", base);
	a = ref_conv(sw, name, t, cin, h, w, 1, 1, 1, 1, 1, &co, NULL, NULL);
	snprintf(name, sizeof name, "%s.norm2", base);
	ref_norm(sw, name, a, co, (int)hw, 1);
	snprintf(name, sizeof name, "%s.conv2", base);
	y = ref_conv(sw, name, a, co, h, w, 1, 1, 1, 1, 1, &co, NULL, NULL);
	if (cin != co) {
		snprintf(name, sizeof name, "%s.nin_shortcut", base);
		s = ref_conv(sw, name, x, cin, h, w, 1, 0, 0, 0, 0, &co, NULL, NULL);
	} else {
		s = malloc((size_t)co * hw * sizeof *s);
		memcpy(s, x, (size_t)co * hw * sizeof *s);
	}
	for (size_t i = 0; i < (size_t)co * hw; i++)
		y[i] += s[i];
	free(s);
	free(a);
	free(t);
	*cout = co;
	return y;
}

/* The mid block, in place on x[ch, h, w]. */
static void
ref_mid(const struct sd_weights *sw, const char *base, float **x, int ch, int h, int w)
{
	char name[160];
	int hw = h * w, co;
	float *y, *hn, *q, *k, *v, *o, *p;

	snprintf(name, sizeof name, "%s.block_1", base);
	y = ref_resnet(sw, name, *x, ch, h, w, &co);
	free(*x);
	*x = y;

	hn = malloc((size_t)ch * hw * sizeof *hn);
	memcpy(hn, *x, (size_t)ch * hw * sizeof *hn);
	snprintf(name, sizeof name, "%s.attn_1.norm", base);
	ref_norm(sw, name, hn, ch, hw, 0);
	/* 1x1 convs on [ch, hw] are the linears on tokens */
	snprintf(name, sizeof name, "%s.attn_1.q", base);
	q = ref_conv(sw, name, hn, ch, h, w, 1, 0, 0, 0, 0, &co, NULL, NULL);
	snprintf(name, sizeof name, "%s.attn_1.k", base);
	k = ref_conv(sw, name, hn, ch, h, w, 1, 0, 0, 0, 0, &co, NULL, NULL);
	snprintf(name, sizeof name, "%s.attn_1.v", base);
	v = ref_conv(sw, name, hn, ch, h, w, 1, 0, 0, 0, 0, &co, NULL, NULL);
	o = calloc((size_t)ch * hw, sizeof *o);
	for (int i = 0; i < hw; i++) {
		double *sc = malloc((size_t)hw * sizeof *sc), mx = -1e300, sum = 0;
		for (int j = 0; j < hw; j++) {
			double s = 0;
			for (int c = 0; c < ch; c++)
				s += (double)q[(size_t)c * hw + i] * k[(size_t)c * hw + j];
			sc[j] = s / sqrt((double)ch);
			if (sc[j] > mx)
				mx = sc[j];
		}
		for (int j = 0; j < hw; j++)
			sum += sc[j] = exp(sc[j] - mx);
		for (int c = 0; c < ch; c++) {
			double s = 0;
			for (int j = 0; j < hw; j++)
				s += sc[j] * v[(size_t)c * hw + j];
			o[(size_t)c * hw + i] = (float)(s / sum);
		}
		free(sc);
	}
	snprintf(name, sizeof name, "%s.attn_1.proj_out", base);
	p = ref_conv(sw, name, o, ch, h, w, 1, 0, 0, 0, 0, &co, NULL, NULL);
	for (size_t i = 0; i < (size_t)ch * hw; i++)
		(*x)[i] += p[i];
	free(p);
	free(o);
	free(v);
	free(k);
	free(q);
	free(hn);

	snprintf(name, sizeof name, "%s.block_2", base);
	y = ref_resnet(sw, name, *x, ch, h, w, &co);
	free(*x);
	*x = y;
}

static float *
ref_decode(const struct sd_weights *sw, const float *z, int h, int w)
{
	char name[160];
	float *x, *y;
	int ch;

	x = ref_conv(sw, "post_quant_conv", z, 4, h, w, 1, 0, 0, 0, 0, &ch, NULL, NULL);
	y = ref_conv(sw, "decoder.conv_in", x, 4, h, w, 1, 1, 1, 1, 1, &ch, NULL, NULL);
	free(x);
	x = y;
	ref_mid(sw, "decoder.mid", &x, ch, h, w);
	for (int i = 3; i >= 0; i--) {
		for (int j = 0; j < 3; j++) {
			snprintf(name, sizeof name, "decoder.up.%d.block.%d", i, j);
			y = ref_resnet(sw, name, x, ch, h, w, &ch);
			free(x);
			x = y;
		}
		if (i > 0) {
			y = malloc((size_t)ch * 4 * h * w * sizeof *y);
			for (int c = 0; c < ch; c++)
			for (int a = 0; a < 2 * h; a++)
			for (int b = 0; b < 2 * w; b++)
				y[((size_t)c * 2 * h + a) * 2 * w + b] =
				    x[((size_t)c * h + a / 2) * w + b / 2];
			free(x);
			h *= 2;
			w *= 2;
			snprintf(name, sizeof name, "decoder.up.%d.upsample.conv", i);
			x = ref_conv(sw, name, y, ch, h, w, 1, 1, 1, 1, 1, &ch, NULL, NULL);
			free(y);
		}
	}
	ref_norm(sw, "decoder.norm_out", x, ch, h * w, 1);
	y = ref_conv(sw, "decoder.conv_out", x, ch, h, w, 1, 1, 1, 1, 1, &ch, NULL, NULL);
	free(x);
	return y;
}

static float *
ref_encode(const struct sd_weights *sw, const float *image, int h, int w)
{
	char name[160];
	float *x, *y;
	int ch;

	x = ref_conv(sw, "encoder.conv_in", image, 3, h, w, 1, 1, 1, 1, 1, &ch, NULL, NULL);
	for (int i = 0; i < 4; i++) {
		for (int j = 0; j < 2; j++) {
			snprintf(name, sizeof name, "encoder.down.%d.block.%d", i, j);
			y = ref_resnet(sw, name, x, ch, h, w, &ch);
			free(x);
			x = y;
		}
		if (i < 3) {
			snprintf(name, sizeof name, "encoder.down.%d.downsample.conv", i);
			y = ref_conv(sw, name, x, ch, h, w, 2, 0, 0, 1, 1, &ch, &h, &w);
			free(x);
			x = y;
		}
	}
	ref_mid(sw, "encoder.mid", &x, ch, h, w);
	ref_norm(sw, "encoder.norm_out", x, ch, h * w, 1);
	y = ref_conv(sw, "encoder.conv_out", x, ch, h, w, 1, 1, 1, 1, 1, &ch, NULL, NULL);
	free(x);
	x = ref_conv(sw, "quant_conv", y, 8, h, w, 1, 0, 0, 0, 0, &ch, NULL, NULL);
	free(y);
	return x;
}

static void
test_synthetic(struct sd_ctx *c)
{
	static const int bo[4] = {32, 64, 32, 64};
	enum { B = 2, H = 3, W = 2 };	/* latents; images are 24 x 16 */
	const size_t zn = 4 * H * W, in = 3 * 64 * H * W, mn = 8 * H * W;
	struct sd_weights *w = weights_new();
	struct sd_error err = {0};
	float z[B * 4 * H * W], image[B * 3 * 64 * H * W], moments[B * 8 * H * W];
	float want_image[B * 3 * 64 * H * W], want_moments[B * 8 * H * W];
	float got[B * 3 * 64 * H * W];
	float *dz, *dimage, *dmoments, *r;
	struct vae *v;
	size_t mark, top, bytes;

	synth_build(w, bo);
	v = vae_load(w, PREFIX, &err);
	tap_ok(v != NULL, "loads a synthetic VAE with widths 32, 64, 32, 64 (%s)",
	    v ? "ok" : err.message);
	if (v == NULL) {
		weights_free(w);
		synth_free();
		return;
	}
	for (size_t i = 0; i < B * zn; i++)
		z[i] = 2.0f * synth_rand();
	for (size_t i = 0; i < B * in; i++)
		image[i] = synth_rand();
	for (int i = 0; i < B; i++) {
		r = ref_decode(w, z + i * zn, H, W);
		memcpy(want_image + i * in, r, in * sizeof *r);
		free(r);
		r = ref_encode(w, image + i * in, 8 * H, 8 * W);
		memcpy(want_moments + i * mn, r, mn * sizeof *r);
		free(r);
	}

	mark = sd_mark(c);
	dz = sd_alloc(c, B * zn);
	dimage = sd_alloc(c, B * in);
	dmoments = sd_alloc(c, B * mn);
	sd_upload(c, dz, z, B * zn);
	top = sd_mark(c);
	vae_decode(v, c, dimage, dz, B, H, W);
	bytes = sd_arena_bytes(c);
	tap_ok(sd_mark(c) == top, "vae_decode releases its temporaries");
	vae_decode(v, c, dimage, dz, B, H, W);
	tap_ok(sd_arena_bytes(c) == bytes, "a second decode does not grow the arena (%zu KiB)",
	    bytes >> 10);
	sd_download(c, got, dimage, B * in);
	check_close("synthetic decode, batch 2, 3x2 latents", got, want_image, B * in,
	    1e-4, 1e-4);
	sd_upload(c, dimage, image, B * in);
	vae_encode(v, c, dmoments, dimage, B, H, W);
	tap_ok(sd_mark(c) == top, "vae_encode releases its temporaries");
	sd_download(c, moments, dmoments, B * mn);
	check_close("synthetic encode, batch 2, 24x16 images", moments, want_moments, B * mn,
	    1e-4, 1e-4);
	sd_release(c, mark);

	vae_free(v);
	weights_free(w);
	synth_free();
}

/* The decode and encode cases of a set whose VAE has SD 1.5's layout,
 * from its single file. */
static void
sd_vae_cases(struct sd_ctx *c, const char *set, const char *what)
{
	struct sd_error err = {0};
	char rel[128];
	struct st_file *f;
	struct sd_weights *w = weights_new();
	struct vae *v;

	vae_set = set;
	snprintf(rel, sizeof rel, "testdata/%s/model.safetensors", set);
	f = st_open(shared_path(rel), &err);
	if (f != NULL)
		weights_add_file(w, f, PREFIX);
	v = vae_load(w, PREFIX, &err);
	tap_ok(v != NULL, "loads the %s tiny model's VAE (%s)", what, v ? "ok" : err.message);
	if (v != NULL) {
		test_decode(v, c, "vae_decode", NULL, 0);
		test_decode(v, c, "vae_decode_8x16", NULL, 0);
		test_encode(v, c);
	}
	vae_free(v);
	weights_free(w);
	st_close(f);
}

int
main(void)
{
	static const char *const dec_names[] = {
		"post_quant_conv", "dec_conv_in", "dec_mid", "dec_up0"
	};
	struct sd_error err = {0};
	struct st_file *f;
	struct sd_weights *w;
	struct sd_ctx *c;
	struct vae *v;

	c = test_ctx_new();
	test_synthetic(c);
	if (shared_dir() == NULL) {
		tap_skip("../shared is absent: no tiny model, no goldens");
		sd_ctx_free(c);
		return tap_done();
	}
	f = st_open(shared_path("testdata/sd15-tiny/model.safetensors"), &err);
	if (f == NULL) {
		tap_ok(0, "opens the tiny model: %s", err.message);
		sd_ctx_free(c);
		return tap_done();
	}
	w = weights_new();
	weights_add_file(w, f, PREFIX);
	v = vae_load(w, PREFIX, &err);
	tap_ok(v != NULL, "loads the tiny model's VAE (%s)", v ? "ok" : err.message);
	if (v != NULL) {
		tap_ok(vae_has_encoder(v) && vae_latent_channels(v) == 4,
		    "it has an encoder and 4 latent channels");
		test_decode(v, c, "vae_decode", dec_names, 4);
		test_decode(v, c, "vae_decode_8x16", NULL, 0);
		test_encode(v, c);
	}
	test_errors(f, c);
	vae_free(v);
	weights_free(w);
	st_close(f);

	/* SD 2.x's VAE is SD 1.5's, read from the SD 2.x file. */
	sd_vae_cases(c, "sd21-tiny", "SD 2.x");
	/* SDXL's VAE is SD 1.5's with the scale 0.13025. */
	VAE_SCALING_FACTOR = 0.13025f;
	sd_vae_cases(c, "sdxl-tiny", "SDXL");

	/* SD3's: 16 latent channels, no quant convs, scale 1.5305 and shift
	 * 0.0609, from the single file and from the folder */
	vae_set = "sd3-tiny";
	VAE_SCALING_FACTOR = 1.5305f;
	VAE_SHIFT_FACTOR = 0.0609f;
	f = st_open(shared_path("testdata/sd3-tiny/model.safetensors"), &err);
	w = weights_new();
	if (f != NULL)
		weights_add_file(w, f, PREFIX);
	v = vae_load(w, PREFIX, &err);
	tap_ok(v != NULL, "loads the SD3 tiny model's VAE (%s)", v ? "ok" : err.message);
	if (v != NULL) {
		tap_ok(vae_has_encoder(v) && vae_latent_channels(v) == 16,
		    "it has an encoder and 16 latent channels");
		test_decode(v, c, "vae_decode_16x16", NULL, 0);
		test_decode(v, c, "vae_decode_8x16", NULL, 0);
		test_encode_sd3(v, c);
	}
	vae_free(v);
	weights_free(w);
	test_sd3_folder(c);
	{
		struct st_file *sd15 = st_open(shared_path("testdata/sd15-tiny/"
		    "model.safetensors"), &err);

		if (sd15 != NULL && f != NULL)
			test_quant_conv_pairs(sd15, f);
		st_close(sd15);
	}
	sd_ctx_free(c);
	st_close(f);
	return tap_done();
}
