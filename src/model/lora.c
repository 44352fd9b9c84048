/* lora.c: LoRA files (kohya / A1111, diffusers / PEFT) and their merge into
 * a weights set (see lora.h). */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <openssl/evp.h>

#include "model/checkpoint.h"
#include "model/lora.h"

static int
ends(const char *s, const char *suffix, size_t *stem)
{
	size_t n = strlen(s), k = strlen(suffix);

	if (n < k || strcmp(s + n - k, suffix) != 0)
		return 0;
	*stem = n - k;
	return 1;
}

static int
starts(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* A name from a file, safe to print: at most 120 characters, anything but
 * printable ASCII as '?'. */
static const char *
printable(const char *s, char *buf, size_t size)
{
	size_t i;

	for (i = 0; s[i] != '\0' && i + 4 < size && i < 120; i++)
		buf[i] = isprint((unsigned char)s[i]) ? s[i] : '?';
	if (s[i] != '\0' && i + 4 <= size) {
		memcpy(buf + i, "...", 3);
		i += 3;
	}
	buf[i] = '\0';
	return buf;
}

/* Module names that contain '_' themselves: a kohya name "a_b_c" is split
 * on the '_' that are not inside one of these (longest first). */
static const char *const words[] = {
	"transformer_blocks", "final_layer_norm", "position_embedding", "token_embedding",
	"time_embedding", "skip_connection", "conv_norm_out", "conv_shortcut", "add_embedding",
	"text_projection", "time_emb_proj", "output_blocks", "middle_block", "input_blocks",
	"down_blocks", "layer_norm1", "layer_norm2", "emb_layers", "out_layers", "in_layers",
	"time_embed", "text_model", "label_emb", "up_blocks", "mid_block", "self_attn",
	"proj_out", "conv_out", "out_proj", "linear_1", "linear_2", "proj_in", "conv_in",
	"in_proj", "q_proj", "k_proj", "v_proj", "to_out", "c_proj", "c_fc", "to_q", "to_k",
	"to_v",
};

/* "down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q" ->
 * "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q" */
static void
dotted(const char *s, char *out, size_t size)
{
	size_t o = 0;

	while (*s != '\0' && o + 1 < size) {
		size_t len = 0;
		for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
			size_t k = strlen(words[i]);
			if (k > len && strncmp(s, words[i], k) == 0 && (s[k] == '_' || s[k] == '\0'))
				len = k;
		}
		if (len == 0)
			while (s[len] != '\0' && s[len] != '_')
				len++;
		if (o + len + 1 >= size)
			break;
		memcpy(out + o, s, len);
		o += len;
		s += len;
		if (*s == '_') {
			out[o++] = '.';
			s++;
		}
	}
	out[o] = '\0';
}

const char *
lora_format_name(enum lora_format f)
{
	switch (f) {
	case LORA_KOHYA: return "kohya";
	case LORA_PEFT: return "peft";
	case LORA_DIFFUSERS: return "diffusers";
	}
	return "?";
}

/* The layer with that stem, created when new. */
static struct lora_layer *
layer_of(struct lora *l, const char *stem, size_t len, int *cap)
{
	for (int i = l->nlayers - 1; i >= 0; i--)
		if (strlen(l->layers[i].name) == len && strncmp(l->layers[i].name, stem, len) == 0)
			return &l->layers[i];
	if (len >= sizeof l->layers[0].name)
		return NULL;
	if (l->nlayers == *cap) {
		int nc = *cap ? 2 * *cap : 256;
		struct lora_layer *nl = realloc(l->layers, (size_t)nc * sizeof *nl);
		if (nl == NULL)
			return NULL;
		l->layers = nl;
		*cap = nc;
	}
	struct lora_layer *y = &l->layers[l->nlayers++];
	memset(y, 0, sizeof *y);
	memcpy(y->name, stem, len);
	y->name[len] = '\0';
	return y;
}

/* The part and dotted module path of a layer's stem. */
static int
classify(struct lora *l, struct lora_layer *y)
{
	const char *s = y->name;
	char tmp[192];

	if (l->format == LORA_KOHYA) {
		static const struct { const char *prefix; enum lora_part part; } pre[] = {
			{"lora_unet_", LORA_UNET}, {"lora_te1_", LORA_TEXT1},
			{"lora_te2_", LORA_TEXT2}, {"lora_te_", LORA_TEXT1},
		};
		for (size_t i = 0; i < sizeof pre / sizeof pre[0]; i++)
			if (starts(s, pre[i].prefix)) {
				y->part = pre[i].part;
				dotted(s + strlen(pre[i].prefix), y->module, sizeof y->module);
				return 0;
			}
		return -1;
	}
	if (starts(s, "base_model.model."))
		s += strlen("base_model.model.");
	if (starts(s, "unet.")) {
		y->part = LORA_UNET;
		s += 5;
	} else if (starts(s, "text_encoder_2.")) {
		y->part = LORA_TEXT2;
		s += strlen("text_encoder_2.");
	} else if (starts(s, "text_encoder.")) {
		y->part = LORA_TEXT1;
		s += strlen("text_encoder.");
	} else if (starts(s, "down_blocks.") || starts(s, "up_blocks.") || starts(s, "mid_block.") ||
	    starts(s, "conv_in") || starts(s, "conv_out") || starts(s, "time_embedding.")) {
		y->part = LORA_UNET;
	} else if (starts(s, "text_model.")) {
		y->part = LORA_TEXT1;
	} else {
		return -1;
	}
	snprintf(tmp, sizeof tmp, "%s", s);
	/* the old attention processors: "<block>.processor.to_q" */
	char *p = strstr(tmp, ".processor.");
	if (p != NULL)
		memmove(p, p + strlen(".processor"), strlen(p + strlen(".processor")) + 1);
	size_t n = strlen(tmp);
	if (n >= 7 && strcmp(tmp + n - 7, ".to_out") == 0)
		snprintf(tmp + n, sizeof tmp - n, ".0");
	snprintf(y->module, sizeof y->module, "%s", tmp);
	return 0;
}

static float
scalar(const struct sd_tensor *t)
{
	float v = 0.0f;

	sd_convert_to_f32(&v, t->data, t->dtype, 1);
	return v;
}

static int
is_float(const struct sd_tensor *t)
{
	return t->dtype == SD_F32 || t->dtype == SD_F16 || t->dtype == SD_BF16;
}

struct lora *
lora_open(const char *path, struct sd_error *err)
{
	static const char *const unsupported[][2] = {
		{"hada_w1", "LyCORIS LoHa"}, {"lokr_w1", "LyCORIS LoKr"}, {"dora_scale", "DoRA"},
		{"oft_blocks", "OFT"}, {".on_input", "IA3"}, {"lora_mid", "LoCon with a mid (Tucker) weight"},
		{"lora_magnitude_vector", "DoRA"},
	};
	struct lora *l = calloc(1, sizeof *l);
	char pbuf[160];
	int cap = 0, kinds[3] = {0};

	if (l == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		return NULL;
	}
	l->path = strdup(path);
	if (l->path == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		goto fail;
	}
	if ((l->file = st_open(path, err)) == NULL)
		goto fail_noprefix;
	for (int i = 0; i < st_count(l->file); i++) {
		const struct sd_tensor *t = st_tensor(l->file, i);
		const char *k = t->name;
		size_t stem;
		int role;		/* 0 down, 1 up, 2 alpha */
		enum lora_format fmt;

		for (size_t u = 0; u < sizeof unsupported / sizeof unsupported[0]; u++)
			if (strstr(k, unsupported[u][0]) != NULL) {
				sd_fail(err, SD_EDATA, "this is a %s file (key \"%s\"); sdbatch merges plain "
				    "LoRA (down/up pairs) only", unsupported[u][1], printable(k, pbuf, sizeof pbuf));
				goto fail;
			}
		if (ends(k, ".lora_down.weight", &stem))
			role = 0, fmt = LORA_KOHYA;
		else if (ends(k, ".lora_up.weight", &stem))
			role = 1, fmt = LORA_KOHYA;
		else if (ends(k, ".alpha", &stem))
			role = 2, fmt = starts(k, "lora_") ? LORA_KOHYA : LORA_PEFT;
		else if (ends(k, ".lora_A.weight", &stem))
			role = 0, fmt = LORA_PEFT;
		else if (ends(k, ".lora_B.weight", &stem))
			role = 1, fmt = LORA_PEFT;
		else if (ends(k, ".lora_linear_layer.down.weight", &stem) || ends(k, ".lora.down.weight", &stem))
			role = 0, fmt = LORA_DIFFUSERS;
		else if (ends(k, ".lora_linear_layer.up.weight", &stem) || ends(k, ".lora.up.weight", &stem))
			role = 1, fmt = LORA_DIFFUSERS;
		else if (ends(k, "_lora.down.weight", &stem))
			role = 0, fmt = LORA_DIFFUSERS;
		else if (ends(k, "_lora.up.weight", &stem))
			role = 1, fmt = LORA_DIFFUSERS;
		else {
			sd_fail(err, SD_EDATA, "tensor \"%s\" is not a LoRA weight (expected "
			    "<layer>.lora_down.weight / .lora_up.weight / .alpha, or lora_A / lora_B)",
			    printable(k, pbuf, sizeof pbuf));
			goto fail;
		}
		if (!is_float(t)) {
			sd_fail(err, SD_EDATA, "tensor \"%s\" has dtype %s (F32, F16 or BF16 expected)",
			    printable(k, pbuf, sizeof pbuf), sd_dtype_name(t->dtype));
			goto fail;
		}
		if (fmt != LORA_PEFT || role != 2)
			kinds[fmt]++;
		struct lora_layer *y = layer_of(l, k, stem, &cap);
		if (y == NULL) {
			sd_fail(err, SD_EDATA, "tensor \"%s\": name too long or out of memory",
			    printable(k, pbuf, sizeof pbuf));
			goto fail;
		}
		if (role == 0)
			y->down = t;
		else if (role == 1)
			y->up = t;
		else {
			if (sd_tensor_numel(t) != 1) {
				sd_fail(err, SD_EDATA, "tensor \"%s\" should hold one number",
				    printable(k, pbuf, sizeof pbuf));
				goto fail;
			}
			y->alpha = scalar(t);
			y->has_alpha = 1;
		}
	}
	if (l->nlayers == 0) {
		sd_fail(err, SD_EDATA, "no LoRA layers in this file");
		goto fail;
	}
	if ((kinds[LORA_KOHYA] != 0) + (kinds[LORA_PEFT] != 0) + (kinds[LORA_DIFFUSERS] != 0) > 1) {
		sd_fail(err, SD_EDATA, "the file mixes the kohya, PEFT and diffusers key formats");
		goto fail;
	}
	l->format = kinds[LORA_PEFT] ? LORA_PEFT : kinds[LORA_DIFFUSERS] ? LORA_DIFFUSERS : LORA_KOHYA;
	l->min_rank = 1 << 30;
	l->min_alpha = INFINITY;
	l->max_alpha = -INFINITY;
	for (int i = 0; i < l->nlayers; i++) {
		struct lora_layer *y = &l->layers[i];
		const struct sd_tensor *d = y->down, *u = y->up;
		if (d == NULL || u == NULL) {
			sd_fail(err, SD_EDATA, "layer \"%s\" has no %s weight", printable(y->name, pbuf, sizeof pbuf),
			    d == NULL ? "down (lora_down / lora_A)" : "up (lora_up / lora_B)");
			goto fail;
		}
		if (classify(l, y) < 0) {
			sd_fail(err, SD_EDATA, "layer \"%s\" belongs to no UNet or text encoder sdbatch knows",
			    printable(y->name, pbuf, sizeof pbuf));
			goto fail;
		}
		int ok = (d->ndim == 2 || d->ndim == 4) && (u->ndim == 2 || u->ndim == 4) &&
		    d->shape[0] >= 1 && u->shape[1] == d->shape[0] &&
		    (u->ndim == 2 || (u->shape[2] == 1 && u->shape[3] == 1));
		if (!ok) {
			char a[96], b[96];
			sd_fail(err, SD_EDATA, "layer \"%s\": down %s and up %s do not make a LoRA pair",
			    printable(y->name, pbuf, sizeof pbuf), sd_shape_str(d, a, sizeof a),
			    sd_shape_str(u, b, sizeof b));
			goto fail;
		}
		y->rank = (int)d->shape[0];
		if (!y->has_alpha)
			y->alpha = (float)y->rank;
		else {
			if (y->alpha < l->min_alpha)
				l->min_alpha = y->alpha;
			if (y->alpha > l->max_alpha)
				l->max_alpha = y->alpha;
		}
		if (!isfinite(y->alpha)) {
			sd_fail(err, SD_EDATA, "layer \"%s\": alpha is not a finite number",
			    printable(y->name, pbuf, sizeof pbuf));
			goto fail;
		}
		if (y->rank < l->min_rank)
			l->min_rank = y->rank;
		if (y->rank > l->max_rank)
			l->max_rank = y->rank;
		if (d->ndim == 4 && (d->shape[2] > 1 || d->shape[3] > 1))
			l->nconv++;
		if (y->part == LORA_UNET)
			l->nunet++;
		else
			l->ntext[y->part == LORA_TEXT2]++;
	}
	l->dtype = l->layers[0].down->dtype;
	return l;
fail:
	sd_error_prefix(err, "LoRA %s", path);
fail_noprefix:
	lora_free(l);
	return NULL;
}

void
lora_free(struct lora *l)
{
	if (l == NULL)
		return;
	st_close(l->file);
	free(l->layers);
	free(l->path);
	free(l);
}

/* The input width of a layer whose module path ends with end, or 0. */
static int64_t
in_width(const struct lora *l, enum lora_part part, const char *end)
{
	for (int i = 0; i < l->nlayers; i++) {
		size_t n = strlen(l->layers[i].module), k = strlen(end);
		if (l->layers[i].part == part && n >= k && strcmp(l->layers[i].module + n - k, end) == 0)
			return l->layers[i].down->shape[1];
	}
	return 0;
}

const char *
lora_base_guess(const struct lora *l, char *buf, size_t size)
{
	int64_t ctx = in_width(l, LORA_UNET, "attn2.to_k"), te = in_width(l, LORA_TEXT1, "q_proj");
	const char *meta = st_metadata(l->file, "ss_base_model_version");

	if (l->ntext[1] > 0 || ctx == 2048)
		snprintf(buf, size, "SDXL");
	else if (ctx == 768 || te == 768)
		snprintf(buf, size, "SD 1.x");
	else if (ctx == 1024 || te == 1024)
		snprintf(buf, size, "SD 2.x");
	else if (ctx > 0 || te > 0)
		snprintf(buf, size, "unknown (a %lld-wide text context)", (long long)(ctx ? ctx : te));
	else
		snprintf(buf, size, "unknown");
	if (meta != NULL) {
		char mb[64];
		size_t n = strlen(buf);
		snprintf(buf + n, size - n, "; metadata ss_base_model_version: %s", printable(meta, mb, sizeof mb));
	}
	return buf;
}

/* ---------------------------------------------------------------- mapping */

/* The tensor a layer changes: its name in w, and the rows it changes (an
 * OpenCLIP in_proj holds q, k, v as three row blocks).  0 found, -1 none. */
static int
target_of(const struct sd_weights *w, const struct lora_model *mdl, const struct lora_layer *y,
    char *name, size_t size, int64_t *row0)
{
	char tmp[320];
	int li;
	char which[4];

	*row0 = 0;
	if (y->part == LORA_UNET) {
		snprintf(tmp, sizeof tmp, "%s.weight", y->module);
		if (checkpoint_diffusers_name("unet", tmp, name, size) == 0 && weights_get(w, name) != NULL)
			return 0;
		snprintf(name, size, "%s%s.weight", mdl->unet_prefix, y->module);
		return weights_get(w, name) != NULL ? 0 : -1;
	}
	int ti = y->part == LORA_TEXT2;
	if (ti >= mdl->ntext)
		return -1;
	const char *prefix = mdl->text_prefix[ti], *m = y->module;
	if (starts(m, "text_model."))
		m += strlen("text_model.");
	snprintf(name, size, "%s%s.weight", prefix, m);
	if (weights_get(w, name) != NULL)
		return 0;
	/* OpenCLIP names (SD 2.x single files, SDXL's second encoder) */
	int n = 0;
	if (sscanf(m, "encoder.layers.%d.self_attn.%3[a-z]_proj%n", &li, which, &n) == 2 && m[n] == '\0' &&
	    (strcmp(which, "out") == 0 || which[1] == '\0')) {
		if (which[0] == 'o')
			snprintf(name, size, "%stransformer.resblocks.%d.attn.out_proj.weight", prefix, li);
		else if (which[0] == 'q' || which[0] == 'k' || which[0] == 'v') {
			snprintf(name, size, "%stransformer.resblocks.%d.attn.in_proj_weight", prefix, li);
			const struct sd_tensor *t = weights_get(w, name);
			if (t == NULL || t->ndim != 2 || t->shape[0] % 3 != 0)
				return -1;
			*row0 = (which[0] == 'q' ? 0 : which[0] == 'k' ? 1 : 2) * (t->shape[0] / 3);
		} else
			return -1;
		return weights_get(w, name) != NULL ? 0 : -1;
	}
	int fc = 0;
	n = 0;
	if (sscanf(m, "encoder.layers.%d.mlp.fc%d%n", &li, &fc, &n) == 2 && m[n] == '\0' &&
	    (fc == 1 || fc == 2)) {
		snprintf(name, size, "%stransformer.resblocks.%d.mlp.%s.weight", prefix, li,
		    fc == 1 ? "c_fc" : "c_proj");
		return weights_get(w, name) != NULL ? 0 : -1;
	}
	return -1;
}

/* ---------------------------------------------------------------- merge */

struct merged {
	char *name;
	const struct sd_tensor *orig;
	struct sd_tensor t;	/* F32, data = malloc'd */
};

struct lora_merge {
	struct merged **items;
	int n, cap;
	size_t bytes;
};

static void
merge_free(struct lora_merge *mg)
{
	if (mg == NULL)
		return;
	for (int i = 0; i < mg->n; i++) {
		free(mg->items[i]->t.data);
		free(mg->items[i]->name);
		free(mg->items[i]);
	}
	free(mg->items);
	free(mg);
}

static struct merged *
merged_of(struct lora_merge *mg, const char *name, const struct sd_tensor *orig)
{
	for (int i = mg->n - 1; i >= 0; i--)
		if (strcmp(mg->items[i]->name, name) == 0)
			return mg->items[i];
	if (mg->n == mg->cap) {
		int nc = mg->cap ? 2 * mg->cap : 64;
		struct merged **ni = realloc(mg->items, (size_t)nc * sizeof *ni);
		if (ni == NULL)
			return NULL;
		mg->items = ni;
		mg->cap = nc;
	}
	struct merged *it = calloc(1, sizeof *it);
	size_t numel = (size_t)sd_tensor_numel(orig);
	if (it == NULL)
		return NULL;
	it->name = strdup(name);
	it->t = *orig;
	it->t.dtype = SD_F32;
	it->t.data = malloc(numel * sizeof(float));
	if (it->name == NULL || it->t.data == NULL ||
	    sd_convert_to_f32(it->t.data, orig->data, orig->dtype, numel) < 0) {
		free(it->name);
		free(it->t.data);
		free(it);
		return NULL;
	}
	it->t.name = it->name;
	it->orig = orig;
	mg->items[mg->n++] = it;
	mg->bytes += numel * sizeof(float);
	return it;
}

/* W[row0 .. row0+out) += factor * up @ down */
static int
merge_layer(struct merged *it, int64_t row0, const struct lora_layer *y, float factor)
{
	int64_t r = y->rank, out = y->up->shape[0], k = sd_tensor_numel(y->down) / r;
	float *up = malloc((size_t)(out * r) * sizeof *up), *down = malloc((size_t)(r * k) * sizeof *down);

	if (up == NULL || down == NULL) {
		free(up);
		free(down);
		return -1;
	}
	sd_convert_to_f32(up, y->up->data, y->up->dtype, (size_t)(out * r));
	sd_convert_to_f32(down, y->down->data, y->down->dtype, (size_t)(r * k));
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)out, (int)k, (int)r, factor,
	    up, (int)r, down, (int)k, 1.0f, (float *)it->t.data + row0 * k, (int)k);
	free(up);
	free(down);
	return 0;
}

struct lora_merge *
lora_merge_apply(struct sd_weights *w, const struct lora_model *mdl, const struct lora_use *uses,
    int n, struct lora_report *report, struct sd_error *err)
{
	struct lora_merge *mg = calloc(1, sizeof *mg);
	char name[320], pbuf[160], gb[128];

	if (mg == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		return NULL;
	}
	for (int u = 0; u < n; u++) {
		const struct lora *l = uses[u].lora;
		struct lora_report rep = {0};
		for (int i = 0; i < l->nlayers; i++) {
			const struct lora_layer *y = &l->layers[i];
			int64_t row0;
			if (target_of(w, mdl, y, name, sizeof name, &row0) < 0) {
				if (rep.unmatched++ == 0)
					snprintf(rep.first_unmatched, sizeof rep.first_unmatched, "%s",
					    printable(y->name, pbuf, sizeof pbuf));
				continue;
			}
			const struct sd_tensor *t = weights_get(w, name);
			int64_t out = y->up->shape[0], k = sd_tensor_numel(y->down) / y->rank;
			int64_t rows = t->ndim >= 1 ? t->shape[0] : 0;
			if (!is_float(t) || t->ndim < 2 || rows < row0 + out || sd_tensor_numel(t) / rows != k ||
			    (row0 == 0 && rows != out)) {
				char a[96], b[96];
				sd_fail(err, SD_EDATA, "LoRA %s does not fit this model: its layer \"%s\" is "
				    "[%lld x %lld] but %s is %s (a LoRA for %s?)", l->path,
				    printable(y->name, pbuf, sizeof pbuf), (long long)out, (long long)k,
				    name, sd_shape_str(t, a, sizeof a), lora_base_guess(l, b, sizeof b));
				goto fail;
			}
			struct merged *it = merged_of(mg, name, t);
			if (it == NULL || merge_layer(it, row0, y,
			    (y->part == LORA_UNET ? uses[u].unet_scale : uses[u].scale) * (y->alpha / (float)y->rank)) < 0) {
				sd_fail(err, SD_EINTERNAL, "out of memory merging LoRA %s", l->path);
				goto fail;
			}
			rep.applied++;
		}
		if (rep.applied == 0) {
			sd_fail(err, SD_EDATA, "LoRA %s: none of its %d layers matches a layer of this model "
			    "(made for %s?)", l->path, l->nlayers, lora_base_guess(l, gb, sizeof gb));
			goto fail;
		}
		if (report != NULL)
			report[u] = rep;
	}
	for (int i = 0; i < mg->n; i++)
		if (weights_put(w, mg->items[i]->name, &mg->items[i]->t) < 0) {
			for (int j = 0; j < i; j++)
				weights_put(w, mg->items[j]->name, mg->items[j]->orig);
			sd_fail(err, SD_EINTERNAL, "out of memory");
			goto fail;
		}
	return mg;
fail:
	merge_free(mg);
	return NULL;
}

void
lora_merge_undo(struct lora_merge *mg, struct sd_weights *w)
{
	if (mg == NULL)
		return;
	for (int i = 0; i < mg->n; i++)
		weights_put(w, mg->items[i]->name, mg->items[i]->orig);
	merge_free(mg);
}

int
lora_merge_tensors(const struct lora_merge *mg)
{
	return mg ? mg->n : 0;
}

size_t
lora_merge_bytes(const struct lora_merge *mg)
{
	return mg ? mg->bytes : 0;
}

/* ---------------------------------------------------------------- hash */

int
lora_file_hash(const char *path, char out[65], struct sd_error *err)
{
	static const char hex[] = "0123456789abcdef";
	FILE *f = fopen(path, "rb");
	unsigned char len8[8], md[32], *buf = NULL;
	unsigned int mdlen = 0;
	uint64_t hlen = 0;
	EVP_MD_CTX *ctx = NULL;
	size_t got;
	int rc = -1;

	if (f == NULL)
		return sd_fail(err, SD_ENOINPUT, "%s: %s", path, strerror(errno));
	if (fread(len8, 1, 8, f) != 8) {
		sd_fail(err, SD_EDATA, "%s: not a safetensors file (shorter than 8 bytes)", path);
		goto out;
	}
	for (int i = 7; i >= 0; i--)
		hlen = hlen << 8 | len8[i];
	if (hlen > ST_MAX_HEADER || fseeko(f, (off_t)(8 + hlen), SEEK_SET) != 0) {
		sd_fail(err, SD_EDATA, "%s: not a safetensors file (bad header length)", path);
		goto out;
	}
	buf = malloc(1 << 20);
	ctx = EVP_MD_CTX_new();
	if (buf == NULL || ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		goto out;
	}
	while ((got = fread(buf, 1, 1 << 20, f)) > 0)
		EVP_DigestUpdate(ctx, buf, got);
	if (ferror(f)) {
		sd_fail(err, SD_EIO, "%s: read error", path);
		goto out;
	}
	EVP_DigestFinal_ex(ctx, md, &mdlen);
	for (int i = 0; i < 32; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 15];
	}
	out[64] = '\0';
	rc = 0;
out:
	EVP_MD_CTX_free(ctx);
	free(buf);
	fclose(f);
	return rc;
}
