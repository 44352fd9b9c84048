/* ops.c: the compute context, its arena, and the op_* entry points that
 * forward to the context's backend. */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/backend.h"
#include "core/ops.h"

#define ARENA_CHUNK ((size_t)64 << 20)	/* bytes */
#define ARENA_ALIGN 64

struct chunk {
	char *base;
	size_t size, used;
};

struct sd_arena {
	struct chunk *chunks;
	int nchunks, current;
	size_t high_water;
};

/* SDBATCH_CPU_PROFILE=1 (CPU backend): each op's wall time goes to a bucket
 * named after the op and its shape; the table, largest first, is printed to
 * stderr when the context ends.  (A GPU context has SDBATCH_CUDA_PROFILE,
 * which waits for the device.) */
#define PROF_BUCKETS 160
struct sd_profile {
	int n;
	struct {
		char name[64];
		double s, flops;
		long calls;
	} b[PROF_BUCKETS];
};

static double
prof_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define PROF_BEGIN(c) double prof_t0 = (c)->prof != NULL ? prof_now() : 0.0, \
	prof_f0 = (c)->flops
#define PROF_END(c, ...) do { if ((c)->prof != NULL) \
	prof_end((c), prof_t0, prof_f0, __VA_ARGS__); } while (0)

static void __attribute__((format(printf, 4, 5)))
prof_end(struct sd_ctx *c, double t0, double f0, const char *fmt, ...)
{
	struct sd_profile *p = c->prof;
	double t = prof_now() - t0;
	char name[64];
	va_list ap;
	int i;

	va_start(ap, fmt);
	vsnprintf(name, sizeof name, fmt, ap);
	va_end(ap);
	for (i = 0; i < p->n; i++)
		if (strcmp(p->b[i].name, name) == 0)
			break;
	if (i == p->n) {
		if (p->n == PROF_BUCKETS) {
			i = PROF_BUCKETS - 1;	/* the last bucket takes the rest */
			snprintf(p->b[i].name, sizeof p->b[i].name, "(other shapes)");
		} else {
			snprintf(p->b[p->n++].name, sizeof p->b[0].name, "%s", name);
		}
	}
	p->b[i].s += t;
	p->b[i].flops += c->flops - f0;
	p->b[i].calls++;
}

static int
prof_cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;	/* each entry's s, first */

	return x < y ? 1 : x > y ? -1 : 0;
}

static void
prof_print(const struct sd_profile *p)
{
	struct { double s; int i; } order[PROF_BUCKETS];
	double total = 0;

	for (int i = 0; i < p->n; i++) {
		order[i].s = p->b[i].s;
		order[i].i = i;
		total += p->b[i].s;
	}
	qsort(order, (size_t)p->n, sizeof order[0], prof_cmp);
	fprintf(stderr, "sdbatch: CPU profile, %.3f s in ops:\n"
	    "  %9s %6s %8s %7s  %s\n", total, "seconds", "share", "calls", "GFLOP/s", "op");
	for (int j = 0; j < p->n; j++) {
		int i = order[j].i;
		char rate[16] = "";
		if (p->b[i].flops > 0 && p->b[i].s > 0)
			snprintf(rate, sizeof rate, "%.1f", p->b[i].flops / p->b[i].s * 1e-9);
		fprintf(stderr, "  %9.3f %5.1f%% %8ld %7s  %s\n", p->b[i].s,
		    total > 0 ? 100 * p->b[i].s / total : 0, p->b[i].calls, rate, p->b[i].name);
	}
}

struct sd_ctx *
sd_ctx_new(const char *device, int threads, struct sd_error *err)
{
	const struct sd_backend *be = &sd_backend_cpu;
	struct sd_ctx *c;
	int index = 0;

	if (device == NULL || *device == '\0' || strcmp(device, "cpu") == 0) {
		be = &sd_backend_cpu;
	} else if (strncmp(device, "cuda", 4) == 0 &&
	    (device[4] == '\0' || device[4] == ':')) {
		if (device[4] == ':') {
			char *end;
			long v = strtol(device + 5, &end, 10);
			if (end == device + 5 || *end != '\0' || v < 0 || v > 255) {
				sd_fail(err, SD_EUSAGE, "bad device \"%s\" (cpu, cuda or cuda:N)", device);
				return NULL;
			}
			index = (int)v;
		}
#ifdef HAVE_CUDA
		be = &sd_backend_cuda;
#else
		sd_fail(err, SD_EUNAVAILABLE, "device \"%s\": this sdbatch was built without CUDA support "
		    "(configure --enable-cuda)", device);
		return NULL;
#endif
	} else {
		sd_fail(err, SD_EUSAGE, "unknown device \"%s\" (cpu, cuda or cuda:N)", device);
		return NULL;
	}
	c = calloc(1, sizeof *c);
	if (c == NULL || (c->arena = calloc(1, sizeof *c->arena)) == NULL) {
		free(c);
		sd_fail(err, SD_EINTERNAL, "out of memory");
		return NULL;
	}
	c->be = be;
	c->threads = threads;
	if (be->init(c, index, err) < 0) {
		free(c->arena);
		free(c);
		return NULL;
	}
	const char *prof = getenv("SDBATCH_CPU_PROFILE");
	if (be == &sd_backend_cpu && prof != NULL && *prof != '\0' && strcmp(prof, "0") != 0)
		c->prof = calloc(1, sizeof *c->prof);
	return c;
}

void
sd_ctx_free(struct sd_ctx *c)
{
	if (c == NULL)
		return;
	if (c->prof != NULL) {
		prof_print(c->prof);
		free(c->prof);
	}
	for (int i = 0; i < c->arena->nchunks; i++)
		c->be->mem_free(c, c->arena->chunks[i].base);
	free(c->arena->chunks);
	free(c->arena);
	c->be->fini(c);
	free(c);
}

const char *
sd_ctx_describe(const struct sd_ctx *c)
{
	return c->be->describe(c);
}

double
sd_ctx_flops(const struct sd_ctx *c)
{
	return c->flops;
}

/* What conv2d costs, for sd_ctx_flops. */
static void
count_conv(struct sd_ctx *c, int n, int cin, int h, int w, const struct sd_tensor *weight,
    int stride, int pt, int pl, int pb, int pr)
{
	int64_t cout = weight->shape[0], kh = weight->shape[2], kw = weight->shape[3];
	int64_t oh = (h + pt + pb - kh) / stride + 1, ow = (w + pl + pr - kw) / stride + 1;

	if (oh > 0 && ow > 0)
		c->flops += 2.0 * n * (double)cout * cin * kh * kw * oh * ow;
}

int
sd_ctx_device_memory(const struct sd_ctx *c, size_t *peak, size_t *base)
{
	if (c->be->device_memory == NULL)
		return -1;
	c->be->device_memory(c, peak, base);
	return 0;
}

static size_t
arena_total(const struct sd_arena *a)
{
	size_t total = 0;

	for (int i = 0; i < a->nchunks; i++)
		total += a->chunks[i].size;
	return total;
}

/* What sd_alloc returns after a failure (not NULL, so that the models'
 * pointer arithmetic stays defined; no op reads or writes it). */
static float oom_dummy[16] __attribute__((aligned(64)));

void
sd_ctx_fail(struct sd_ctx *c, int code, const char *fmt, ...)
{
	va_list ap;

	if (c->status.code != 0)
		return;		/* the first error is the one to report */
	c->status.code = code;
	va_start(ap, fmt);
	vsnprintf(c->status.message, sizeof c->status.message, fmt, ap);
	va_end(ap);
}

int
sd_ctx_status(const struct sd_ctx *c, struct sd_error *err)
{
	if (c->status.code == 0)
		return 0;
	if (err != NULL)
		*err = c->status;
	return -1;
}

void
sd_ctx_clear_status(struct sd_ctx *c)
{
	sd_error_clear(&c->status);
}

/* An error the backend met inside an op (out of scratch memory, a device
 * error) becomes the context's status. */
static void
backend_check(struct sd_ctx *c)
{
	if (c->be->take_error != NULL)
		c->be->take_error(c, &c->status);
}

float *
sd_alloc(struct sd_ctx *c, size_t n)
{
	if (c->status.code != 0)
		return oom_dummy;
	struct sd_arena *a = c->arena;
	size_t bytes = (n * sizeof(float) + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);

	if (bytes == 0)
		bytes = ARENA_ALIGN;
	for (;;) {
		if (a->current < a->nchunks) {
			struct chunk *ch = &a->chunks[a->current];
			if (ch->size - ch->used >= bytes) {
				void *p = ch->base + ch->used;
				ch->used += bytes;
				return p;
			}
			/* Move on to the next chunk, if there is one big enough. */
			if (a->current + 1 < a->nchunks && a->chunks[a->current + 1].size >= bytes) {
				a->current++;
				a->chunks[a->current].used = 0;
				continue;
			}
		}
		/* Insert a new chunk after the current one. */
		size_t size = bytes > ARENA_CHUNK ? bytes : ARENA_CHUNK;
		struct chunk *chunks = realloc(a->chunks, (size_t)(a->nchunks + 1) * sizeof *chunks);
		if (chunks == NULL)
			goto oom;
		a->chunks = chunks;
		int at = a->current < a->nchunks ? a->current + 1 : a->nchunks;
		memmove(&a->chunks[at + 1], &a->chunks[at], (size_t)(a->nchunks - at) * sizeof *chunks);
		a->chunks[at].base = c->be->mem_alloc(c, size);
		if (a->chunks[at].base == NULL) {
			memmove(&a->chunks[at], &a->chunks[at + 1], (size_t)(a->nchunks - at) * sizeof *chunks);
			goto oom;
		}
		a->chunks[at].size = size;
		a->chunks[at].used = 0;
		a->nchunks++;
		a->current = at;
		if (arena_total(a) > a->high_water)
			a->high_water = arena_total(a);
	}
oom:
	sd_ctx_fail(c, SD_EINTERNAL, "out of %s memory allocating %zu MiB of "
	    "activations", c->be->name, bytes >> 20);
	/* Never touched: every op is skipped once the status is set. */
	return oom_dummy;
}

size_t
sd_mark(struct sd_ctx *c)
{
	struct sd_arena *a = c->arena;

	if (a->current >= a->nchunks)
		return 0;
	return ((size_t)a->current << 40) | a->chunks[a->current].used;
}

void
sd_release(struct sd_ctx *c, size_t mark)
{
	struct sd_arena *a = c->arena;
	int idx = (int)(mark >> 40);

	if (a->nchunks == 0)
		return;
	a->current = idx;
	a->chunks[idx].used = mark & (((size_t)1 << 40) - 1);
	for (int i = idx + 1; i < a->nchunks; i++)
		a->chunks[i].used = 0;
}

size_t
sd_arena_bytes(const struct sd_ctx *c)
{
	return c->arena->high_water;
}

void
sd_upload(struct sd_ctx *c, float *dst, const float *host, size_t n)
{
	if (c->status.code != 0)
		return;	/* a failed op: the rest are skipped */
	c->be->upload(c, dst, host, n);
	backend_check(c);
}

void
sd_download(struct sd_ctx *c, float *host, const float *src, size_t n)
{
	if (c->status.code != 0)
		return;	/* a failed op: the rest are skipped */
	c->be->download(c, host, src, n);
	backend_check(c);
}

void
op_conv2d(struct sd_ctx *c, float *y, const float *x, int n, int cin, int h, int w,
    const struct sd_tensor *weight, const struct sd_tensor *bias, int stride, int pad)
{
	if (c->status.code != 0)
		return;	/* a failed op: the rest are skipped */
	PROF_BEGIN(c);
	count_conv(c, n, cin, h, w, weight, stride, pad, pad, pad, pad);
	c->be->conv2d(c, y, x, n, cin, h, w, weight, bias, stride, pad, pad, pad, pad);
	backend_check(c);
	PROF_END(c, "conv2d %dx%d%s n %d %dx%d cin %d cout %d", (int)weight->shape[2],
	    (int)weight->shape[3], stride > 1 ? " s2" : "", n, h, w, cin, (int)weight->shape[0]);
}

void
op_conv2d_pad(struct sd_ctx *c, float *y, const float *x, int n, int cin, int h, int w,
    const struct sd_tensor *weight, const struct sd_tensor *bias, int stride,
    int pad_top, int pad_left, int pad_bottom, int pad_right)
{
	if (c->status.code != 0)
		return;	/* a failed op: the rest are skipped */
	PROF_BEGIN(c);
	count_conv(c, n, cin, h, w, weight, stride, pad_top, pad_left, pad_bottom, pad_right);
	c->be->conv2d(c, y, x, n, cin, h, w, weight, bias, stride,
	    pad_top, pad_left, pad_bottom, pad_right);
	backend_check(c);
	PROF_END(c, "conv2d %dx%d%s n %d %dx%d cin %d cout %d", (int)weight->shape[2],
	    (int)weight->shape[3], stride > 1 ? " s2" : "", n, h, w, cin, (int)weight->shape[0]);
}

void
op_linear(struct sd_ctx *c, float *y, const float *x, int m, int k,
    const struct sd_tensor *weight, const struct sd_tensor *bias)
{
	if (c->status.code != 0)
		return;	/* a failed op: the rest are skipped */
	PROF_BEGIN(c);
	c->flops += 2.0 * m * (double)k * (double)weight->shape[0];
	c->be->linear(c, y, x, m, k, weight, bias);
	backend_check(c);
	PROF_END(c, "linear m %d k %d n %d", m, k, (int)weight->shape[0]);
}

void
op_group_norm(struct sd_ctx *c, float *y, const float *x, int n, int ch, int hw,
    int groups, float eps, const struct sd_tensor *gamma, const struct sd_tensor *beta, int silu)
{
	if (c->status.code != 0)
		return;	/* a failed op: the rest are skipped */
	PROF_BEGIN(c);
	c->be->group_norm(c, y, x, n, ch, hw, groups, eps, gamma, beta, silu);
	backend_check(c);
	PROF_END(c, "group_norm%s ch %d hw %d", silu ? "+silu" : "", ch, hw);
}

void
op_layer_norm(struct sd_ctx *c, float *y, const float *x, int rows, int dim,
    float eps, const struct sd_tensor *gamma, const struct sd_tensor *beta)
{
	if (c->status.code != 0)
		return;	/* a failed op: the rest are skipped */
	PROF_BEGIN(c);
	c->be->layer_norm(c, y, x, rows, dim, eps, gamma, beta);
	backend_check(c);
	PROF_END(c, "layer_norm rows %d dim %d", rows, dim);
}

void
op_attention(struct sd_ctx *c, float *out, const float *q, int ldq,
    const float *k, int ldk, const float *v, int ldv,
    int b, int lq, int lk, int heads, int dh, float scale, int causal)
{
	if (c->status.code != 0)
		return;	/* a failed op: the rest are skipped */
	PROF_BEGIN(c);
	c->flops += 4.0 * b * heads * (double)lq * lk * dh;
	c->be->attention(c, out, q, ldq, k, ldk, v, ldv, b, lq, lk, heads, dh, scale, causal, NULL);
	backend_check(c);
	PROF_END(c, "attention lq %d lk %d dh %d%s", lq, lk, dh, causal ? " causal" : "");
}

void
op_attention_bias(struct sd_ctx *c, float *out, const float *q, int ldq,
    const float *k, int ldk, const float *v, int ldv,
    int b, int lq, int lk, int heads, int dh, float scale, const float *bias)
{
	if (c->status.code != 0)
		return;	/* a failed op: the rest are skipped */
	PROF_BEGIN(c);
	c->flops += 4.0 * b * heads * (double)lq * lk * dh;
	c->be->attention(c, out, q, ldq, k, ldk, v, ldv, b, lq, lk, heads, dh, scale, 0, bias);
	backend_check(c);
	PROF_END(c, "attention+bias lq %d lk %d dh %d", lq, lk, dh);
}

void
op_rms_norm(struct sd_ctx *c, float *y, const float *x, int rows, int dim,
    float eps, const struct sd_tensor *weight)
{
	if (c->status.code != 0)
		return;	/* a failed op: the rest are skipped */
	PROF_BEGIN(c);
	c->be->rms_norm(c, y, x, rows, dim, eps, weight);
	backend_check(c);
	PROF_END(c, "rms_norm rows %d dim %d", rows, dim);
}

void
op_layer_norm_modulate(struct sd_ctx *c, float *y, const float *x, int b, int tokens,
    int dim, float eps, const float *shift, const float *scale, int ldm)
{
	if (c->status.code != 0)
		return;	/* a failed op: the rest are skipped */
	PROF_BEGIN(c);
	c->be->layer_norm_modulate(c, y, x, b, tokens, dim, eps, shift, scale, ldm);
	backend_check(c);
	PROF_END(c, "layer_norm_modulate tokens %d dim %d", tokens, dim);
}

void
op_gated_add(struct sd_ctx *c, float *x, const float *gate, int ldg, const float *y,
    int b, int tokens, int dim)
{
	if (c->status.code != 0)
		return;	/* a failed op: the rest are skipped */
	PROF_BEGIN(c);
	c->be->gated_add(c, x, gate, ldg, y, b, tokens, dim);
	backend_check(c);
	PROF_END(c, "gated_add");
}

void
op_unpatchify(struct sd_ctx *c, float *y, const float *x, int b, int ch, int h, int w, int p)
{
	if (c->status.code != 0)
		return;	/* a failed op: the rest are skipped */
	PROF_BEGIN(c);
	c->be->unpatchify(c, y, x, b, ch, h, w, p);
	backend_check(c);
	PROF_END(c, "unpatchify");
}

void
op_mul(struct sd_ctx *c, float *y, const float *a, const float *b, size_t n)
{
	if (c->status.code != 0)
		return;	/* a failed op: the rest are skipped */
	PROF_BEGIN(c);
	c->be->mul(c, y, a, b, n);
	backend_check(c);
	PROF_END(c, "mul");
}

static void
unary(struct sd_ctx *c, float *x, size_t n, int kind)
{
	if (c->status.code != 0)
		return;	/* a failed op: the rest are skipped */
	PROF_BEGIN(c);
	c->be->unary(c, x, n, kind);
	backend_check(c);
	PROF_END(c, "%s", kind == SD_UNARY_SILU ? "silu" : kind == SD_UNARY_GELU ? "gelu" :
	    kind == SD_UNARY_GELU_TANH ? "gelu_tanh" : "quick_gelu");
}

void op_silu(struct sd_ctx *c, float *x, size_t n) { unary(c, x, n, SD_UNARY_SILU); }
void op_gelu(struct sd_ctx *c, float *x, size_t n) { unary(c, x, n, SD_UNARY_GELU); }
void op_quick_gelu(struct sd_ctx *c, float *x, size_t n) { unary(c, x, n, SD_UNARY_QUICK_GELU); }
void op_gelu_tanh(struct sd_ctx *c, float *x, size_t n) { unary(c, x, n, SD_UNARY_GELU_TANH); }

void
op_geglu(struct sd_ctx *c, float *y, const float *p, int rows, int d)
{
	if (c->status.code != 0)
		return;	/* a failed op: the rest are skipped */
	PROF_BEGIN(c);
	c->be->geglu(c, y, p, rows, d);
	backend_check(c);
	PROF_END(c, "geglu");
}

void
op_add(struct sd_ctx *c, float *y, const float *a, const float *b, size_t n)
{
	if (c->status.code != 0)
		return;	/* a failed op: the rest are skipped */
	PROF_BEGIN(c);
	c->be->add(c, y, a, b, n);
	backend_check(c);
	PROF_END(c, "add");
}

void
op_lerp(struct sd_ctx *c, float *y, const float *a, const float *b, float s, size_t n)
{
	if (c->status.code != 0)
		return;	/* a failed op: the rest are skipped */
	PROF_BEGIN(c);
	c->be->lerp(c, y, a, b, s, n);
	backend_check(c);
	PROF_END(c, "lerp");
}

void
op_scale(struct sd_ctx *c, float *x, float s, size_t n)
{
	if (c->status.code != 0)
		return;	/* a failed op: the rest are skipped */
	PROF_BEGIN(c);
	c->be->scale(c, x, s, n);
	backend_check(c);
	PROF_END(c, "scale");
}

void
op_add_channel(struct sd_ctx *c, float *x, const float *v, int n, int ch, int hw)
{
	if (c->status.code != 0)
		return;	/* a failed op: the rest are skipped */
	PROF_BEGIN(c);
	c->be->add_channel(c, x, v, n, ch, hw);
	backend_check(c);
	PROF_END(c, "add_channel");
}

void
op_upsample2x(struct sd_ctx *c, float *y, const float *x, int n, int ch, int h, int w)
{
	if (c->status.code != 0)
		return;	/* a failed op: the rest are skipped */
	PROF_BEGIN(c);
	c->be->upsample2x(c, y, x, n, ch, h, w);
	backend_check(c);
	PROF_END(c, "upsample2x");
}

void
op_concat(struct sd_ctx *c, float *y, const float *a, int ca, const float *b, int cb, int n, int hw)
{
	if (c->status.code != 0)
		return;	/* a failed op: the rest are skipped */
	PROF_BEGIN(c);
	c->be->concat(c, y, a, ca, b, cb, n, hw);
	backend_check(c);
	PROF_END(c, "concat");
}

void
op_transpose(struct sd_ctx *c, float *y, const float *x, int n, int rows, int cols)
{
	if (c->status.code != 0)
		return;	/* a failed op: the rest are skipped */
	PROF_BEGIN(c);
	c->be->transpose(c, y, x, n, rows, cols);
	backend_check(c);
	PROF_END(c, "transpose");
}

void
op_embed(struct sd_ctx *c, float *y, const int *ids, int count,
    const struct sd_tensor *table, const struct sd_tensor *pos, int npos)
{
	if (c->status.code != 0)
		return;	/* a failed op: the rest are skipped */
	PROF_BEGIN(c);
	c->be->embed(c, y, ids, count, table, pos, npos);
	backend_check(c);
	PROF_END(c, "embed");
}

void
op_copy(struct sd_ctx *c, float *y, const float *x, size_t n)
{
	if (c->status.code != 0)
		return;	/* a failed op: the rest are skipped */
	PROF_BEGIN(c);
	c->be->copy(c, y, x, n);
	backend_check(c);
	PROF_END(c, "copy");
}
