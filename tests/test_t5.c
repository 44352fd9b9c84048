/* test_t5.c: the T5 v1.1 encoder against transformers' T5EncoderModel (the
 * sd3-tiny text_encoders case: buckets, position bias, every block's
 * output), from the single file (F32 and F16) and the diffusers folder;
 * tokenizer + encoder against the T5 part of encode_prompt; load errors. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/ops.h"
#include "model/spm.h"
#include "model/t5.h"
#include "testutil.h"

#define ATOL 1e-4	/* manifest: text_encoders, encode_prompt */
#define RTOL 1e-4
#define LEN SPM_T5_MAX_LEN
#define CLIP_LEN 77

/* Intermediates captured by the debug hook (host copies). */
struct capture {
	struct sd_ctx *c;
	const char *names[4];
	float *data[4];
	size_t n[4];
};

static void
capture_fn(void *user, const char *name, const float *data, size_t n)
{
	struct capture *cap = user;

	for (int i = 0; i < 4 && cap->names[i] != NULL; i++) {
		if (strcmp(cap->names[i], name) != 0)
			continue;
		free(cap->data[i]);
		cap->data[i] = malloc(n * sizeof(float));
		cap->n[i] = n;
		sd_download(cap->c, cap->data[i], data, n);
	}
}

static void
compare(struct st_file *g, const char *name, const char *label, const float *got, size_t n)
{
	size_t nwant;
	float *want = golden_f32(g, name, &nwant);
	char what[128];

	snprintf(what, sizeof what, "%s %s", label, name);
	if (got == NULL || n != nwant)
		tap_ok(0, "%s: got %zu values, want %zu", what, got ? n : 0, nwant);
	else
		check_close(what, got, want, n, ATOL, RTOL);
	free(want);
}

static void
test_buckets(struct st_file *g, const struct t5_encoder *m)
{
	size_t n, nb;
	float *want = golden_f32(g, "te3.rel_bucket", &n);
	float *bias = golden_f32(g, "te3.position_bias_8x8", &nb);
	float *table = malloc((size_t)m->buckets * m->heads * sizeof *table);
	float got[6 * 8 * 8];
	int bad = 0, first = 0;

	for (int r = -255; r <= 255 && n == 511; r++)
		if (t5_relative_bucket(r, m->buckets, m->max_distance) != (int)want[r + 255]) {
			if (bad++ == 0)
				first = r;
		}
	if (bad)
		tap_diag("offset %d: bucket %d, want %d", first,
		    t5_relative_bucket(first, m->buckets, m->max_distance), (int)want[first + 255]);
	tap_ok(n == 511 && bad == 0, "the bucket of every relative position -255..255 (%d wrong)", bad);

	sd_convert_to_f32(table, m->rel_bias->data, m->rel_bias->dtype, (size_t)m->buckets * m->heads);
	for (int h = 0; h < 6; h++)
		for (int i = 0; i < 8; i++)
			for (int j = 0; j < 8; j++)
				got[(h * 8 + i) * 8 + j] = table[t5_relative_bucket(j - i, m->buckets,
				    m->max_distance) * m->heads + h];
	if (m->heads == 6 && nb == sizeof got / sizeof got[0])
		check_close("T5 position bias 8x8", got, bias, nb, ATOL, RTOL);
	else
		tap_ok(0, "T5 position bias 8x8: %d heads, %zu values", m->heads, nb);
	free(want);
	free(bias);
	free(table);
}

/* Run the encoder on the golden ids; compare what the golden has (all
 * intermediates when full).  Returns the output (host, malloc'd). */
static float *
run_case(struct sd_ctx *c, struct st_file *g, struct t5_encoder *m, const char *label, int full)
{
	struct capture cap = { .c = c, .names = { "embeddings", "layer_1", "layer_2", NULL } };
	struct sd_error err = {0};
	size_t nids, n;
	float *fids = golden_f32(g, "input_ids_3", &nids), *out, *host;
	int32_t *ids = malloc(nids * sizeof *ids);
	int b = (int)(nids / LEN);

	for (size_t i = 0; i < nids; i++)
		ids[i] = (int32_t)fids[i];
	n = (size_t)b * LEN * m->d_model;
	host = malloc(n * sizeof *host);
	m->debug = full ? capture_fn : NULL;
	m->debug_user = &cap;
	size_t mark = sd_mark(c);
	out = sd_alloc(c, n);
	if (!tap_ok(t5_forward(m, c, ids, b, LEN, out, &err) == 0, "%s: forward %s", label,
	    err.message)) {
		free(host);
		host = NULL;
	} else {
		sd_download(c, host, out, n);
		if (full) {
			compare(g, "te3.embeddings", label, cap.data[0], cap.n[0]);
			compare(g, "te3.layer_1", label, cap.data[1], cap.n[1]);
			compare(g, "te3.layer_2", label, cap.data[2], cap.n[2]);
		}
		compare(g, "te3.last_hidden_state", label, host, n);
	}
	sd_release(c, mark);
	m->debug = NULL;
	for (int i = 0; i < 3; i++)
		free(cap.data[i]);
	free(fids);
	free(ids);
	return host;
}

/* Tokenizer + encoder against the T5 rows of encode_prompt's context. */
static void
test_encode_prompt(struct sd_ctx *c, struct t5_encoder *m)
{
	const char *path = shared_path("testdata/sd3-tiny/diffusers/tokenizer_3/spiece.model");
	struct st_file *g = golden_open_in("sd3-tiny", "encode_prompt");
	struct sd_error err = {0};
	struct spm_model *tok = path ? spm_load(path, &err) : NULL;
	json_t *params = NULL, *cases;
	json_error_t jerr;
	const char *meta;
	size_t n = (size_t)LEN * m->d_model;
	float *out, *host = malloc(n * sizeof *host);
	int32_t ids[LEN];

	if (!tap_ok(g != NULL && tok != NULL, "encode_prompt golden and spiece.model %s",
	    tok ? "" : err.message))
		goto done;
	if ((meta = st_metadata(g, "params")) != NULL)
		params = json_loads(meta, 0, &jerr);
	cases = params ? json_object_get(params, "cases") : NULL;
	tap_ok(json_array_size(cases) == 3, "3 encode_prompt cases");
	for (size_t i = 0; i < json_array_size(cases); i++)
		for (int neg = 0; neg < 2; neg++) {
			json_t *cs = json_array_get(cases, i);
			const char *p = json_string_value(json_object_get(cs,
			    neg ? "negative_prompt" : "prompt"));
			char name[64], label[160];
			size_t nw;
			float *want;

			if (p == NULL)
				p = "";	/* None means "" */
			snprintf(name, sizeof name, "c%zu.%sprompt_embeds", i, neg ? "negative_" : "");
			want = golden_f32(g, name, &nw);
			snprintf(label, sizeof label, "tokenizer + T5 of \"%.40s\" = %s[77:]", p, name);
			if (spm_t5_encode(tok, p, ids, LEN, &err) < 0 ||
			    nw != (size_t)(CLIP_LEN + LEN) * m->d_model) {
				tap_ok(0, "%s: %s (%zu values)", label, err.message, nw);
				free(want);
				continue;
			}
			size_t mark = sd_mark(c);
			out = sd_alloc(c, n);
			if (t5_forward(m, c, ids, 1, LEN, out, &err) < 0) {
				tap_ok(0, "%s: %s", label, err.message);
			} else {
				sd_download(c, host, out, n);
				check_close(label, host, want + (size_t)CLIP_LEN * m->d_model, n, ATOL, RTOL);
			}
			sd_release(c, mark);
			free(want);
		}
done:
	json_decref(params);
	spm_free(tok);
	if (g != NULL)
		st_close(g);
	free(host);
}

/* F16 weights: the encoder reads them in place; the result must equal a run
 * on the same values widened to F32. */
static void
test_f16(struct sd_ctx *c, struct st_file *g)
{
	struct st_file *f = st_open(shared_path("testdata/sd3-tiny/model-f16.safetensors"), NULL);
	struct sd_weights *w16 = NULL, *w32 = NULL;
	struct t5_encoder *m16 = NULL, *m32 = NULL;
	struct sd_tensor *wide = NULL;
	struct sd_error err = {0};
	float *a = NULL, *b = NULL;
	int count = 0;

	if (!tap_ok(f != NULL, "opens model-f16.safetensors"))
		return;
	w16 = weights_subset(f, T5_SD3_PREFIX, NULL, NULL);
	m16 = t5_load(w16, T5_SD3_PREFIX, NULL, &err);
	tap_ok(m16 != NULL && m16->embedding->dtype == SD_F16 && m16->layer != NULL,
	    "F16 single file: T5 loads %s", err.message);
	/* the widened copy */
	w32 = weights_new();
	count = st_count(f);
	wide = calloc((size_t)count, sizeof *wide);
	for (int i = 0; i < count && wide != NULL; i++) {
		const struct sd_tensor *t = st_tensor(f, i);
		if (strncmp(t->name, T5_SD3_PREFIX, strlen(T5_SD3_PREFIX)) != 0)
			continue;
		wide[i] = *t;
		wide[i].dtype = SD_F32;
		wide[i].data = malloc((size_t)sd_tensor_numel(t) * sizeof(float));
		sd_convert_to_f32(wide[i].data, t->data, t->dtype, (size_t)sd_tensor_numel(t));
		weights_put(w32, t->name, &wide[i]);
	}
	m32 = t5_load(w32, T5_SD3_PREFIX, NULL, &err);
	if (m16 != NULL && m32 != NULL) {
		size_t n;
		float *fids = golden_f32(g, "input_ids_3", &n);
		int32_t ids[3 * LEN];
		size_t nout = (size_t)3 * LEN * m16->d_model, mark = sd_mark(c);
		float *out = sd_alloc(c, nout);
		for (size_t i = 0; i < n && i < 3 * LEN; i++)
			ids[i] = (int32_t)fids[i];
		a = malloc(nout * sizeof *a);
		b = malloc(nout * sizeof *b);
		if (n == 3 * LEN && t5_forward(m16, c, ids, 3, LEN, out, &err) == 0) {
			sd_download(c, a, out, nout);
			if (t5_forward(m32, c, ids, 3, LEN, out, &err) == 0) {
				sd_download(c, b, out, nout);
				check_close("T5 on F16 weights = on the same weights widened", a, b, nout,
				    ATOL, RTOL);
			}
		}
		sd_release(c, mark);
		free(fids);
	}
	if (tap_reported() == 0 || m16 == NULL || m32 == NULL)
		tap_ok(0, "F16 test ran (%s)", err.message);
	t5_free(m16);
	t5_free(m32);
	weights_free(w16);
	weights_free(w32);
	for (int i = 0; i < count && wide != NULL; i++)
		free(wide[i].data);
	free(wide);
	free(a);
	free(b);
	st_close(f);
}

static void
test_load_errors(struct sd_ctx *c, const struct st_file *f)
{
	const char *missing = T5_SD3_PREFIX "encoder.block.1.layer.1.DenseReluDense.wo.weight";
	const char *bad = T5_SD3_PREFIX "encoder.block.0.layer.0.SelfAttention.k.weight";
	struct sd_error err = {0};
	struct sd_weights *w;
	struct t5_encoder *m;
	struct sd_tensor wrong;
	struct t5_config cfg = { .heads = 5 };
	int32_t ids[4] = { 0, 1, 1152, 0 };

	w = weights_subset(f, T5_SD3_PREFIX, missing, NULL);
	m = t5_load(w, T5_SD3_PREFIX, NULL, &err);
	tap_ok(m == NULL && err.code == SD_EDATA && strstr(err.message, missing) != NULL,
	    "a missing tensor is named (%s)", err.message);
	t5_free(m);
	weights_free(w);

	wrong = *st_find(f, bad);
	wrong.shape[0] = 40;
	sd_error_clear(&err);
	w = weights_subset(f, T5_SD3_PREFIX, bad, &wrong);
	m = t5_load(w, T5_SD3_PREFIX, NULL, &err);
	tap_ok(m == NULL && err.code == SD_EDATA && strstr(err.message, bad) != NULL &&
	    strstr(err.message, "[40, 48]") != NULL, "a misshapen tensor is named (%s)", err.message);
	t5_free(m);
	weights_free(w);

	sd_error_clear(&err);
	w = weights_subset(f, T5_SD3_PREFIX, NULL, NULL);
	m = t5_load(w, "text_encoders.t5xxl.", NULL, &err);
	tap_ok(m == NULL && strstr(err.message, "text_encoders.t5xxl.shared.weight") != NULL,
	    "a wrong prefix names the embedding it looked for (%s)", err.message);
	t5_free(m);
	sd_error_clear(&err);
	m = t5_load(w, T5_SD3_PREFIX, &cfg, &err);
	tap_ok(m == NULL && strstr(err.message, "relative_attention_bias") != NULL,
	    "a head count the bias table does not have is refused (%s)", err.message);
	t5_free(m);
	sd_error_clear(&err);
	m = t5_load(w, T5_SD3_PREFIX, NULL, &err);
	if (m != NULL) {
		size_t mark = sd_mark(c);
		float *out = sd_alloc(c, (size_t)4 * m->d_model);
		tap_ok(t5_forward(m, c, ids, 1, 4, out, &err) < 0 && strstr(err.message, "1152") != NULL,
		    "an id outside the embedding table is refused (%s)", err.message);
		sd_release(c, mark);
	} else {
		tap_ok(0, "loads for the id check: %s", err.message);
	}
	t5_free(m);
	weights_free(w);
}

int
main(void)
{
	const char *model = shared_path("testdata/sd3-tiny/model.safetensors");
	struct st_file *f, *fd, *g;
	struct sd_weights *w, *wd;
	struct sd_error err = {0};
	struct t5_encoder *m, *md;
	struct sd_ctx *c;
	float *a, *b;

	if (model == NULL)
		return tap_skip_all("no shared/ folder");
	c = test_ctx_new();
	f = st_open(model, NULL);
	g = golden_open_in("sd3-tiny", "text_encoders");
	if (!tap_ok(f != NULL && g != NULL, "opens model.safetensors and the text_encoders golden"))
		return tap_done();
	w = weights_subset(f, T5_SD3_PREFIX, NULL, NULL);
	m = t5_load(w, T5_SD3_PREFIX, NULL, &err);
	if (!tap_ok(m != NULL, "single file: T5 loads %s", err.message))
		return tap_done();
	tap_ok(m->d_model == 48 && m->heads == 6 && m->d_kv == 8 && m->d_ff == 112 &&
	    m->layers == 2 && m->vocab == 1152 && m->buckets == 32 && m->max_distance == 128,
	    "its shape: d_model %d, %d heads x %d, d_ff %d, %d blocks, %d rows, %d buckets",
	    m->d_model, m->heads, m->d_kv, m->d_ff, m->layers, m->vocab, m->buckets);
	test_buckets(g, m);
	a = run_case(c, g, m, "single file", 1);

	fd = st_open(shared_path("testdata/sd3-tiny/diffusers/text_encoder_3/model.safetensors"), NULL);
	wd = fd ? weights_subset(fd, "", NULL, NULL) : NULL;
	md = wd ? t5_load(wd, "", NULL, &err) : NULL;
	if (tap_ok(md != NULL, "diffusers text_encoder_3/: T5 loads %s", err.message)) {
		b = run_case(c, g, md, "diffusers folder", 0);
		free(b);
	}
	t5_free(md);
	weights_free(wd);
	if (fd != NULL)
		st_close(fd);

	test_encode_prompt(c, m);
	test_f16(c, g);
	test_load_errors(c, f);
	free(a);
	t5_free(m);
	weights_free(w);
	st_close(f);
	st_close(g);
	sd_ctx_free(c);
	return tap_done();
}
