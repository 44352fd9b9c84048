/* lora.c: LoRA files (kohya / A1111, diffusers / PEFT) and their merge into
 * a weights set (see lora.h). */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cblas.h>
#include <openssl/evp.h>

#include "core/blas.h"
#include "core/cpu_kernels.h"
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
    char *name, size_t size, int64_t *row0, int *fused)
{
	char tmp[320];
	int li;
	char which[4];

	*row0 = 0;
	*fused = 0;
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
			*fused = 1;
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

/* One merged tensor: a copy of orig (in orig's dtype) in the merge's block. */
struct merged {
	char *name;
	const struct sd_tensor *orig;
	struct sd_tensor t;
	size_t offset, bytes;	/* in the block */
	int first, count;	/* its jobs: jobs[first .. first+count) */
};

/* One LoRA layer to add to a merged tensor's rows. */
struct job {
	const struct lora_layer *layer;
	int target;
	int64_t row0;
	float factor;
	int order;		/* the LoRAs' order, kept for each tensor */
};

struct lora_merge {
	struct merged *items;
	int n;
	void *block;
	size_t bytes;
};

static void
merge_free(struct lora_merge *mg)
{
	if (mg == NULL)
		return;
	for (int i = 0; i < mg->n; i++)
		free(mg->items[i].name);
	free(mg->items);
	if (mg->block != NULL)
		munmap(mg->block, mg->bytes);
	free(mg);
}

/* Read-only file mappings of this process (the mmap'd checkpoints), whose
 * pages can be dropped without losing data. */
struct range {
	uintptr_t lo, hi;
};

static int
file_ranges(struct range **out)
{
	FILE *f = fopen("/proc/self/maps", "r");
	struct range *r = NULL;
	char line[4096];
	int n = 0, cap = 0;

	*out = NULL;
	if (f == NULL)
		return 0;
	while (fgets(line, sizeof line, f) != NULL) {
		unsigned long lo, hi, inode;
		char perms[8], dev[16];
		unsigned long long off;
		if (sscanf(line, "%lx-%lx %7s %llx %15s %lu", &lo, &hi, perms, &off, dev, &inode) != 6 ||
		    inode == 0 || perms[1] == 'w')
			continue;
		if (n == cap) {
			struct range *nr = realloc(r, (size_t)(cap = cap ? 2 * cap : 64) * sizeof *r);
			if (nr == NULL)
				break;
			r = nr;
		}
		r[n].lo = lo;
		r[n].hi = hi;
		n++;
	}
	fclose(f);
	*out = r;
	return n;
}

/* Drop the resident pages of t's data when they belong to a read-only file
 * mapping: the merged copy replaces it, and the file still holds it. */
static void
drop_pages(const struct sd_tensor *t, const struct range *r, int nr)
{
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
	uintptr_t lo = ((uintptr_t)t->data + page - 1) & ~(page - 1);
	uintptr_t hi = ((uintptr_t)t->data + sd_tensor_nbytes(t)) & ~(page - 1);

	if (hi <= lo)
		return;
	for (int i = 0; i < nr; i++)
		if (lo >= r[i].lo && hi <= r[i].hi) {
			madvise((void *)lo, hi - lo, MADV_DONTNEED);
			return;
		}
}

/* Widen the n values of src (dtype) into dst. */
static void
widen(float *dst, const void *src, enum sd_dtype dtype, size_t n)
{
	if (dtype == SD_F16)
		k_f16_to_f32(dst, src, n);
	else if (dtype == SD_BF16)
		k_bf16_to_f32(dst, src, n);
	else
		memcpy(dst, src, n * sizeof *dst);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
__attribute__((target("avx,f16c"))) static void
narrow_f16c(uint16_t *dst, const float *src, size_t n)
{
	size_t i = 0;

	for (; i + 8 <= n; i += 8)
		_mm_storeu_si128((__m128i *)(dst + i),
		    _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
	for (; i < n; i++)
		dst[i] = sd_f32_to_f16(src[i]);
}
#endif

/* Whether the CPU has F16C: set by lora_merge_apply before its threads
 * start. */
static int have_f16c;

/* Round n floats to F16 (nearest even), with F16C where the CPU has it. */
static void
narrow_f16(uint16_t *dst, const float *src, size_t n)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
	if (have_f16c) {
		narrow_f16c(dst, src, n);
		return;
	}
#endif
	for (size_t i = 0; i < n; i++)
		dst[i] = sd_f32_to_f16(src[i]);
}

/* Rows of a tensor merged at once: the block stays in the cache. */
#define MERGE_BLOCK_FLOATS (1 << 16)

/* Merge the jobs of one tensor, a block of rows at a time: the rows
 * widened into scratch (MERGE_BLOCK_FLOATS), += factor * up @ down for each
 * job that changes them, stored back in the tensor's dtype. */
static int
merge_one(struct merged *it, const struct job *jobs, float *scratch)
{
	const struct sd_tensor *o = it->orig;
	int64_t rows = o->shape[0], k = sd_tensor_numel(o) / rows;
	int64_t step = k >= MERGE_BLOCK_FLOATS ? 1 : MERGE_BLOCK_FLOATS / k;
	size_t esz = sd_dtype_size(o->dtype);
	float **up = calloc((size_t)it->count, sizeof *up), **down = calloc((size_t)it->count, sizeof *down);
	int rc = -1;

	if (up == NULL || down == NULL)
		goto out;
	for (int j = 0; j < it->count; j++) {
		const struct lora_layer *y = jobs[it->first + j].layer;
		size_t nu = (size_t)sd_tensor_numel(y->up), nd = (size_t)sd_tensor_numel(y->down);
		if ((up[j] = malloc(nu * sizeof **up)) == NULL || (down[j] = malloc(nd * sizeof **down)) == NULL)
			goto out;
		widen(up[j], y->up->data, y->up->dtype, nu);
		widen(down[j], y->down->data, y->down->dtype, nd);
	}
	for (int64_t r0 = 0; r0 < rows; r0 += step) {
		int64_t r1 = r0 + step < rows ? r0 + step : rows;
		float *w = it->t.dtype == SD_F32 ? (float *)it->t.data + r0 * k : scratch;
		widen(w, (const char *)o->data + (size_t)(r0 * k) * esz, o->dtype, (size_t)((r1 - r0) * k));
		for (int j = 0; j < it->count; j++) {
			const struct job *jb = &jobs[it->first + j];
			int64_t r = jb->layer->rank, out = jb->layer->up->shape[0];
			int64_t lo = r0 > jb->row0 ? r0 : jb->row0;
			int64_t hi = r1 < jb->row0 + out ? r1 : jb->row0 + out;
			if (lo >= hi)
				continue;
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(hi - lo), (int)k, (int)r,
			    jb->factor, up[j] + (lo - jb->row0) * r, (int)r, down[j], (int)k, 1.0f,
			    w + (lo - r0) * k, (int)k);
		}
		if (it->t.dtype == SD_F16) {
			narrow_f16((uint16_t *)it->t.data + r0 * k, w, (size_t)((r1 - r0) * k));
		} else if (it->t.dtype == SD_BF16) {
			uint16_t *h = (uint16_t *)it->t.data + r0 * k;
			for (int64_t i = 0; i < (r1 - r0) * k; i++)
				h[i] = sd_f32_to_bf16(w[i]);
		}
	}
	rc = 0;
out:
	for (int j = 0; up != NULL && j < it->count; j++)
		free(up[j]);
	for (int j = 0; down != NULL && j < it->count; j++)
		free(down[j]);
	free(up);
	free(down);
	return rc;
}

static int
cmp_job(const void *a, const void *b)
{
	const struct job *x = a, *y = b;

	if (x->target != y->target)
		return x->target < y->target ? -1 : 1;
	return x->order < y->order ? -1 : x->order > y->order;
}

struct lora_merge *
lora_merge_apply(struct sd_weights *w, const struct lora_model *mdl, const struct lora_use *uses,
    int n, struct lora_report *report, struct sd_error *err)
{
	struct lora_merge *mg = calloc(1, sizeof *mg);
	struct job *jobs = NULL;
	struct range *ranges = NULL;
	int njobs = 0, cap = 0, nranges = 0, failed = 0;
	size_t maxk = 0;
	char name[320], pbuf[160], gb[128];

	if (mg == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		return NULL;
	}
	for (int u = 0; u < n; u++)
		cap += uses[u].lora->nlayers;
	jobs = calloc((size_t)cap + 1, sizeof *jobs);
	mg->items = calloc((size_t)cap + 1, sizeof *mg->items);
	if (jobs == NULL || mg->items == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		goto fail;
	}
	/* 1: every layer's tensor, checked; nothing is computed yet */
	for (int u = 0; u < n; u++) {
		const struct lora *l = uses[u].lora;
		struct lora_report rep = {0};
		for (int i = 0; i < l->nlayers; i++) {
			const struct lora_layer *y = &l->layers[i];
			int64_t row0;
			int fused;
			if (target_of(w, mdl, y, name, sizeof name, &row0, &fused) < 0) {
				if (rep.unmatched++ == 0)
					snprintf(rep.first_unmatched, sizeof rep.first_unmatched, "%s",
					    printable(y->name, pbuf, sizeof pbuf));
				continue;
			}
			const struct sd_tensor *t = weights_get(w, name);
			int64_t out = y->up->shape[0], k = sd_tensor_numel(y->down) / y->rank;
			/* the rows it changes: all, or one of q, k, v of a fused in_proj */
			int64_t rows = t->ndim >= 2 ? t->shape[0] : 0;
			int64_t block = fused ? rows / 3 : rows;
			if (!is_float(t) || t->ndim < 2 || out != block || sd_tensor_numel(t) / rows != k) {
				char a[96], b[96];
				sd_fail(err, SD_EDATA, "LoRA %s does not fit this model: its layer \"%s\" is "
				    "[%lld x %lld] but %s%s is %s (a LoRA for %s?)", l->path,
				    printable(y->name, pbuf, sizeof pbuf), (long long)out, (long long)k,
				    name, fused ? " (a third of its rows)" : "", sd_shape_str(t, a, sizeof a),
				    lora_base_guess(l, b, sizeof b));
				goto fail;
			}
			int target = -1;
			for (int m = mg->n - 1; m >= 0 && target < 0; m--)
				if (strcmp(mg->items[m].name, name) == 0)
					target = m;
			if (target < 0) {
				struct merged *it = &mg->items[mg->n];
				if ((it->name = strdup(name)) == NULL) {
					sd_fail(err, SD_EINTERNAL, "out of memory");
					goto fail;
				}
				it->orig = t;
				it->t = *t;
				it->t.name = it->name;
				it->bytes = (sd_tensor_nbytes(t) + 63) & ~(size_t)63;
				if ((size_t)k > maxk)
					maxk = (size_t)k;
				target = mg->n++;
			}
			jobs[njobs] = (struct job){y, target, row0,
			    (y->part == LORA_UNET ? uses[u].unet_scale : uses[u].scale) * (y->alpha / (float)y->rank),
			    njobs};
			njobs++;
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
	/* 2: one block for the merged tensors, then each tensor on its own */
	qsort(jobs, (size_t)njobs, sizeof *jobs, cmp_job);
	for (int j = 0; j < njobs; j++) {
		struct merged *it = &mg->items[jobs[j].target];
		if (it->count++ == 0)
			it->first = j;
	}
	for (int i = 0; i < mg->n; i++) {
		mg->items[i].offset = mg->bytes;
		mg->bytes += mg->items[i].bytes;
	}
	mg->block = mmap(NULL, mg->bytes ? mg->bytes : 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mg->block == MAP_FAILED) {
		mg->block = NULL;
		sd_fail(err, SD_EINTERNAL, "out of memory (%zu bytes for the merged LoRA layers)", mg->bytes);
		goto fail;
	}
#ifdef MADV_HUGEPAGE
	madvise(mg->block, mg->bytes, MADV_HUGEPAGE);
#endif
	nranges = file_ranges(&ranges);
	{
		struct cpu_features cf;
		cpu_features_get(&cf);
		have_f16c = cf.f16c;
	}
	#pragma omp parallel reduction(|:failed)
	{
		float *scratch = malloc(MERGE_BLOCK_FLOATS * sizeof *scratch + (maxk > MERGE_BLOCK_FLOATS ?
		    maxk * sizeof *scratch : 0));
		if (scratch == NULL)
			failed = 1;
		#pragma omp for schedule(dynamic, 1)
		for (int i = 0; i < mg->n; i++) {
			struct merged *it = &mg->items[i];
			it->t.data = (char *)mg->block + it->offset;
			if (scratch == NULL || merge_one(it, jobs, scratch) < 0)
				failed = 1;
			drop_pages(it->orig, ranges, nranges);
		}
		free(scratch);
	}
	free(ranges);
	if (failed) {
		sd_fail(err, SD_EINTERNAL, "out of memory merging LoRA layers");
		goto fail;
	}
	for (int i = 0; i < mg->n; i++)
		if (weights_put(w, mg->items[i].name, &mg->items[i].t) < 0) {
			for (int j = 0; j < i; j++)
				weights_put(w, mg->items[j].name, mg->items[j].orig);
			sd_fail(err, SD_EINTERNAL, "out of memory");
			goto fail;
		}
	free(jobs);
	return mg;
fail:
	free(jobs);
	merge_free(mg);
	return NULL;
}

void
lora_merge_undo(struct lora_merge *mg, struct sd_weights *w)
{
	if (mg == NULL)
		return;
	for (int i = 0; i < mg->n; i++)
		weights_put(w, mg->items[i].name, mg->items[i].orig);
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

/* Is path (resolved) inside dir (resolved)? */
static int
inside_dir(const char *path, const char *dir)
{
	size_t n = strlen(dir);

	if (n == 1 && dir[0] == '/')
		return 1;
	return strncmp(path, dir, n) == 0 && path[n] == '/';
}

int
lora_find(const char *const *dirs, int ndirs, const char *name, char *out, size_t size,
    struct sd_error *err)
{
	char looked[512] = "", shown[64];
	size_t off = 0;

	printable(name, shown, sizeof shown);
	if (strchr(name, '/') != NULL || strchr(name, '\\') != NULL || name[0] == '.' ||
	    name[0] == '\0')
		return sd_fail(err, SD_EDATA, "<lora:%s>: a LoRA name may not contain '/' or start "
		    "with '.'", shown);
	for (int i = 0; i < ndirs; i++) {
		static const char *const ext[] = {".safetensors", ""};
		for (int e = 0; e < 2; e++) {
			char real[PATH_MAX], realdir[PATH_MAX];
			struct stat st;
			if ((size_t)snprintf(out, size, "%s/%s%s", dirs[i], name, ext[e]) >= size)
				return sd_fail(err, SD_EDATA, "<lora:%s>: the name is too long", shown);
			if (lstat(out, &st) < 0)
				continue;
			if (S_ISLNK(st.st_mode) && (realpath(out, real) == NULL ||
			    realpath(dirs[i], realdir) == NULL || !inside_dir(real, realdir)))
				return sd_fail(err, SD_EDATA, "<lora:%s>: %s/%s%s is a symbolic link that does "
				    "not lead to a file inside its lora_dir", shown, dirs[i], shown, ext[e]);
			if (stat(out, &st) == 0 && S_ISREG(st.st_mode))
				return 0;
		}
		if (off < sizeof looked)
			off += (size_t)snprintf(looked + off, sizeof looked - off, "%s%s", i ? ", " : "",
			    dirs[i]);
	}
	if (ndirs == 0)
		return sd_fail(err, SD_ENOINPUT, "<lora:%s>: no lora_dirs are configured to look "
		    "for it in", shown);
	return sd_fail(err, SD_ENOINPUT, "<lora:%s>: no %s.safetensors in the lora_dirs (%s)", shown,
	    shown, looked);
}

/* ------------------------------------------------------- random LoRAs */

struct maker {
	struct sd_tensor *t;
	char **names;
	uint16_t *data;
	size_t n, cap, used, size;	/* tensors; F16 values */
	uint64_t seed;
	int rank, layers;
};

/* A tensor of random values in [-scale, scale), or of value when scale
 * is 0. */
static int
maker_tensor(struct maker *mk, const char *name, int ndim, const int64_t *shape, float scale,
    float value)
{
	size_t count = 1;

	if (mk->n + 1 > mk->cap) {
		size_t nc = mk->cap ? 2 * mk->cap : 256;
		struct sd_tensor *t = realloc(mk->t, nc * sizeof *t);
		if (t == NULL)
			return -1;
		mk->t = t;
		char **nm = realloc(mk->names, nc * sizeof *nm);
		if (nm == NULL)
			return -1;
		mk->names = nm;
		mk->cap = nc;
	}
	for (int d = 0; d < ndim; d++)
		count *= (size_t)shape[d];
	if (mk->used + count > mk->size) {
		size_t ns = mk->size ? mk->size : (size_t)1 << 20;
		while (ns < mk->used + count)
			ns *= 2;
		uint16_t *d = realloc(mk->data, ns * sizeof *d);
		if (d == NULL)
			return -1;
		mk->data = d;
		mk->size = ns;
	}
	if ((mk->names[mk->n] = strdup(name)) == NULL)
		return -1;
	struct sd_tensor *t = &mk->t[mk->n++];
	memset(t, 0, sizeof *t);
	t->name = mk->names[mk->n - 1];
	t->dtype = SD_F16;
	t->ndim = ndim;
	for (int d = 0; d < ndim; d++)
		t->shape[d] = shape[d];
	/* offsets for now: the data block may still move */
	t->data = (void *)(uintptr_t)mk->used;
	for (size_t i = 0; i < count; i++) {
		mk->seed ^= mk->seed << 13;
		mk->seed ^= mk->seed >> 7;
		mk->seed ^= mk->seed << 17;
		float x = scale == 0 ? value :
		    ((float)((double)(mk->seed >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f) * scale;
		mk->data[mk->used + i] = sd_f32_to_f16(x);
	}
	mk->used += count;
	return 0;
}

/* One layer on target tensor t (out x in, or out x in x 1 x 1): kohya key
 * base (dots as '_'). */
static int
maker_layer(struct maker *mk, const char *kind, const char *module, const struct sd_tensor *t)
{
	char base[256], key[300];
	int64_t down[4] = {mk->rank, t->shape[1], 1, 1}, up[4] = {t->shape[0], mk->rank, 1, 1};
	int nd = t->ndim == 4 ? 4 : 2;

	snprintf(base, sizeof base, "%s%s", kind, module);
	for (char *c = base; *c; c++)
		if (*c == '.')
			*c = '_';
	snprintf(key, sizeof key, "%s.lora_down.weight", base);
	if (maker_tensor(mk, key, nd, down, 1.0f / sqrtf((float)t->shape[1]), 0) < 0)
		return -1;
	snprintf(key, sizeof key, "%s.lora_up.weight", base);
	if (maker_tensor(mk, key, nd, up, 0.01f, 0) < 0)
		return -1;
	snprintf(key, sizeof key, "%s.alpha", base);
	if (maker_tensor(mk, key, 0, NULL, 0, (float)mk->rank) < 0)
		return -1;
	mk->layers++;
	return 0;
}

/* The UNet's transformers under block (e.g. "input_blocks.1.1"). */
static int
maker_unet_block(struct maker *mk, const struct sd_weights *w, const char *prefix, const char *block)
{
	static const char *const inner[] = {"attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
	    "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2"};
	static const char *const outer[] = {"proj_in", "proj_out"};
	char name[320], module[256];
	const struct sd_tensor *t;

	snprintf(name, sizeof name, "%s%s.proj_in.weight", prefix, block);
	if (weights_get(w, name) == NULL)
		return 0;
	for (int i = 0; i < 2; i++) {
		snprintf(module, sizeof module, "%s.%s", block, outer[i]);
		snprintf(name, sizeof name, "%s%s.weight", prefix, module);
		if ((t = weights_get(w, name)) != NULL && (t->ndim == 2 || t->ndim == 4) &&
		    maker_layer(mk, "lora_unet_", module, t) < 0)
			return -1;
	}
	for (int b = 0; b < 64; b++) {
		snprintf(name, sizeof name, "%s%s.transformer_blocks.%d.attn1.to_q.weight", prefix, block, b);
		if (weights_get(w, name) == NULL)
			break;
		for (size_t i = 0; i < sizeof inner / sizeof *inner; i++) {
			snprintf(module, sizeof module, "%s.transformer_blocks.%d.%s", block, b, inner[i]);
			snprintf(name, sizeof name, "%s%s.weight", prefix, module);
			if ((t = weights_get(w, name)) != NULL && t->ndim == 2 &&
			    maker_layer(mk, "lora_unet_", module, t) < 0)
				return -1;
		}
	}
	return 0;
}

/* A text encoder's layers: Hugging Face names, or OpenCLIP's (fused
 * in_proj: q, k, v a third each). */
static int
maker_text(struct maker *mk, const struct sd_weights *w, const char *prefix, const char *kind)
{
	static const char *const hf[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
	    "self_attn.out_proj", "mlp.fc1", "mlp.fc2"};
	char name[320], module[256];
	const struct sd_tensor *t;

	for (int l = 0; l < 256; l++) {
		int found = 0;
		for (int i = 0; i < 6; i++) {
			struct sd_tensor third;
			snprintf(module, sizeof module, "text_model.encoder.layers.%d.%s", l, hf[i]);
			snprintf(name, sizeof name, "%sencoder.layers.%d.%s.weight", prefix, l, hf[i]);
			t = weights_get(w, name);
			if (t == NULL && i < 3) {
				snprintf(name, sizeof name, "%stransformer.resblocks.%d.attn.in_proj_weight",
				    prefix, l);
				if ((t = weights_get(w, name)) != NULL && t->ndim == 2 && t->shape[0] % 3 == 0) {
					third = *t;
					third.shape[0] /= 3;
					t = &third;
				}
			} else if (t == NULL) {
				static const char *const oc[] = {"attn.out_proj", "mlp.c_fc", "mlp.c_proj"};
				snprintf(name, sizeof name, "%stransformer.resblocks.%d.%s.weight", prefix, l,
				    oc[i - 3]);
				t = weights_get(w, name);
			}
			if (t == NULL || t->ndim != 2)
				continue;
			found = 1;
			if (maker_layer(mk, kind, module, t) < 0)
				return -1;
		}
		if (!found)
			break;
	}
	return 0;
}

int
lora_make_random(const struct sd_weights *w, const struct lora_model *mdl, int rank,
    const char *path, int *nlayers, struct sd_error *err)
{
	struct maker mk = {0};
	char block[64];
	int rc = -1;

	if (rank < 1 || rank > 1024)
		return sd_fail(err, SD_EUSAGE, "a LoRA rank from 1 to 1024, not %d", rank);
	mk.rank = rank;
	mk.seed = 0x9e3779b97f4a7c15ull;
	for (int i = 0; i < 12; i++)
		for (int j = 0; j < 4; j++) {
			snprintf(block, sizeof block, "input_blocks.%d.%d", i, j);
			if (maker_unet_block(&mk, w, mdl->unet_prefix, block) < 0)
				goto full;
			snprintf(block, sizeof block, "output_blocks.%d.%d", i, j);
			if (maker_unet_block(&mk, w, mdl->unet_prefix, block) < 0)
				goto full;
		}
	for (int j = 0; j < 4; j++) {
		snprintf(block, sizeof block, "middle_block.%d", j);
		if (maker_unet_block(&mk, w, mdl->unet_prefix, block) < 0)
			goto full;
	}
	for (int e = 0; e < mdl->ntext && e < 2; e++)
		if (maker_text(&mk, w, mdl->text_prefix[e], mdl->ntext == 1 ? "lora_te_" :
		    e == 0 ? "lora_te1_" : "lora_te2_") < 0)
			goto full;
	if (mk.layers == 0) {
		sd_fail(err, SD_EDATA, "the model has none of the layers a LoRA usually changes");
		goto out;
	}
	for (size_t i = 0; i < mk.n; i++)
		mk.t[i].data = mk.data + (uintptr_t)mk.t[i].data;
	if (st_write(path, mk.t, (int)mk.n, NULL, NULL, 0, err) < 0)
		goto out;
	if (nlayers != NULL)
		*nlayers = mk.layers;
	rc = 0;
	goto out;
full:
	sd_fail(err, SD_EINTERNAL, "out of memory making a random LoRA");
out:
	for (size_t i = 0; i < mk.n; i++)
		free(mk.names[i]);
	free(mk.names);
	free(mk.t);
	free(mk.data);
	return rc;
}
