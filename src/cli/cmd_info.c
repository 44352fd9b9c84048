/* cmd_info.c: `sdbatch info MODEL`: what a checkpoint is. */
#include "config.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "cli/cli.h"
#include "core/blas.h"
#include "core/error.h"
#include "core/tensor.h"
#include "model/checkpoint.h"
#include "model/lora.h"
#include "sample/description.h"
#include "model/hub.h"
#include "sample/pipeline.h"

/* The model description of a whole model (1), or 0 when path is a part or
 * not something sdbatch renders. */
static int
describe(const char *path, const struct sd_detect *d, struct model_desc *desc)
{
	struct sd_checkpoint ck;
	struct sd_error err = {0};
	int ok;

	if (!d->supported || !d->has_unet || !d->has_text_encoder ||
	    checkpoint_load(&ck, path, NULL, NULL, &err) < 0)
		return 0;
	ok = model_describe(&ck, desc, &err) == 0;
	checkpoint_free(&ck);
	return ok;
}

static const char *
prediction_text(const struct model_desc *d)
{
	return d->sched.prediction_type == SCHED_PRED_V ? "v" :
	    d->sched.prediction_type == SCHED_PRED_FLOW ? "flow" : "epsilon";
}

static const char *
spacing_text(const struct model_desc *m)
{
	switch (m->sched.timestep_spacing) {
	case SCHED_SPACING_LEADING: return "leading";
	case SCHED_SPACING_LINSPACE: return "linspace";
	case SCHED_SPACING_TRAILING: return "trailing";
	default: return "the sampler's own";
	}
}

/* Whether the safetensors file at path holds LoRA (or LyCORIS) weights. */
static int
is_lora_file(const char *path)
{
	static const char *const marks[] = {".lora_down.", ".lora_up.", ".lora_A.", ".lora_B.",
	    ".lora.down.", ".lora_linear_layer.", "_lora.down.", ".hada_w1", ".lokr_w1"};
	struct sd_error err = {0};
	struct st_file *f = st_open(path, &err);
	int yes = 0;

	for (int i = 0; f != NULL && !yes && i < st_count(f); i++)
		for (size_t k = 0; k < sizeof marks / sizeof marks[0]; k++)
			if (strstr(st_tensor(f, i)->name, marks[k]) != NULL)
				yes = 1;
	st_close(f);
	return yes;
}

/* The kinds of layers a LoRA changes, as words, in a fixed order. */
static int
lora_targets(const struct lora *l, const char **out)
{
	static const struct { int text; const char *word, *what; } kinds[] = {
		{0, "attn", "UNet attention"}, {0, "proj_", "UNet transformer projections"},
		{0, "ff.net", "UNet feed-forward"}, {0, "resnets", "UNet resnet convolutions"},
		{0, "_layers", "UNet resnet convolutions"}, {0, "samplers", "UNet resampling convolutions"},
		{0, ".op", "UNet resampling convolutions"},
		{1, "attn", "text encoder attention"}, {1, "mlp", "text encoder MLP"},
	};
	int n = 0;

	for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
		int seen = 0, dup = 0;
		for (int i = 0; i < l->nlayers && !seen; i++)
			seen = (l->layers[i].part != LORA_UNET) == kinds[k].text &&
			    strstr(l->layers[i].module, kinds[k].word) != NULL;
		for (int j = 0; j < n; j++)
			dup |= strcmp(out[j], kinds[k].what) == 0;
		if (seen && !dup)
			out[n++] = kinds[k].what;
	}
	return n;
}

/* `sdbatch info LORA`. */
static int
info_lora(const char *path, int json)
{
	struct sd_error err = {0};
	struct lora *l = lora_open(path, &err);
	const char *targets[16];
	char base[160], hash[65] = "";
	int nt;

	if (l == NULL) {
		fprintf(stderr, "sdbatch info: %s\n", err.message);
		return err.code ? err.code : SD_EDATA;
	}
	lora_file_hash(path, hash, NULL);
	nt = lora_targets(l, targets);
	lora_base_guess(l, base, sizeof base);
	if (json) {
		json_t *o = json_object(), *t = json_array();
		json_object_set_new(o, "path", json_string(path));
		json_object_set_new(o, "type", json_string("lora"));
		json_object_set_new(o, "format", json_string(lora_format_name(l->format)));
		json_object_set_new(o, "layers", json_integer(l->nlayers));
		json_object_set_new(o, "unet_layers", json_integer(l->nunet));
		json_object_set_new(o, "text_encoder_layers", json_integer(l->ntext[0]));
		if (l->ntext[1])
			json_object_set_new(o, "text_encoder_2_layers", json_integer(l->ntext[1]));
		json_object_set_new(o, "conv_layers", json_integer(l->nconv));
		json_object_set_new(o, "rank", json_integer(l->max_rank));
		json_object_set_new(o, "rank_min", json_integer(l->min_rank));
		if (isfinite(l->max_alpha)) {
			json_object_set_new(o, "alpha", json_real(l->max_alpha));
			json_object_set_new(o, "alpha_min", json_real(l->min_alpha));
		}
		json_object_set_new(o, "dtype", json_string(sd_dtype_name((enum sd_dtype)l->dtype)));
		for (int i = 0; i < nt; i++)
			json_array_append_new(t, json_string(targets[i]));
		json_object_set_new(o, "targets", t);
		json_object_set_new(o, "base", json_string(base));
		json_object_set_new(o, "hash", json_string(hash));
		char *s = json_dumps(o, JSON_COMPACT);
		puts(s);
		free(s);
		json_decref(o);
	} else {
		printf("LoRA:          %s\n", path);
		printf("format:        %s\n", l->format == LORA_KOHYA ? "kohya / A1111 (lora_unet_, lora_te_ keys)" :
		    l->format == LORA_PEFT ? "diffusers / PEFT (lora_A, lora_B keys)" :
		    "diffusers (lora.down, lora.up keys)");
		printf("layers:        %d (UNet %d, text encoder %d", l->nlayers, l->nunet, l->ntext[0]);
		if (l->ntext[1])
			printf(", second text encoder %d", l->ntext[1]);
		if (l->nconv)
			printf("; %d k x k convolutions", l->nconv);
		printf(")\n");
		if (l->min_rank == l->max_rank)
			printf("rank:          %d\n", l->max_rank);
		else
			printf("rank:          %d to %d\n", l->min_rank, l->max_rank);
		if (!isfinite(l->max_alpha))
			printf("alpha:         none (alpha = rank: factor 1)\n");
		else if (l->min_alpha == l->max_alpha)
			printf("alpha:         %g (alpha/rank %g)\n", (double)l->max_alpha,
			    (double)l->max_alpha / l->max_rank);
		else
			printf("alpha:         %g to %g\n", (double)l->min_alpha, (double)l->max_alpha);
		printf("dtype:         %s\n", sd_dtype_name((enum sd_dtype)l->dtype));
		printf("targets:       ");
		for (int i = 0; i < nt; i++)
			printf("%s%s", i ? ", " : "", targets[i]);
		printf("\n");
		printf("base:          %s\n", base);
		printf("hash:          %.12s (A1111's Lora hashes; sha256 %s)\n", hash, hash);
	}
	lora_free(l);
	return 0;
}

static void
info_usage(FILE *out)
{
	fputs("Usage: sdbatch info [--json] MODEL|LORA\n"
	    "\n"
	    "Say what MODEL is (a single-file .safetensors checkpoint, a part such as a\n"
	    "UNet or VAE file, a diffusers folder, or a Hub id found in the local Hub\n"
	    "cache): the detected architecture, whether sdbatch can render with it, its\n"
	    "parts, dtypes, tensor count and size, and the BLAS sdbatch computes with.\n"
	    "For a LoRA file: its key format, layers, rank, alpha, dtype, what it changes,\n"
	    "the base model it was made for, and A1111's short hash.\n"
	    "\n"
	    "  --json      one JSON object on stdout\n"
	    "  -h, --help  this help\n", out);
}

int
cmd_info(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct sd_detect d;
	struct sd_error err = {0};
	int json = 0, ch;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'j':
			json = 1;
			break;
		case 'h':
			info_usage(stdout);
			return 0;
		default:
			info_usage(stderr);
			return SD_EUSAGE;
		}
	}
	if (optind != argc - 1) {
		info_usage(stderr);
		return SD_EUSAGE;
	}
	/* A Hub id is looked up in the local cache (info never downloads). */
	const char *path = argv[optind];
	char local[4096];
	struct hub_options ho;
	hub_options_init(&ho);
	if (access(path, F_OK) != 0 && hub_is_id(path)) {
		if (hub_resolve_model(path, &ho, local, sizeof local, &err) < 0) {
			fprintf(stderr, "sdbatch info: %s\n", err.message);
			return err.code ? err.code : SD_ENOINPUT;
		}
		path = local;
	}
	if (is_lora_file(path))
		return info_lora(path, json);
	if (checkpoint_detect(path, &d, &err) < 0) {
		fprintf(stderr, "sdbatch info: %s\n", err.message);
		return err.code ? err.code : SD_EDATA;
	}
	struct model_desc desc;
	int described = describe(path, &d, &desc);
	if (json) {
		json_t *o = json_object(), *dt = json_object();
		if (described) {
			json_t *def = json_object();
			json_object_set_new(o, "model", json_string(desc.arch));
			json_object_set_new(o, "model_name", json_string(desc.name));
			json_object_set_new(o, "prediction", json_string(prediction_text(&desc)));
			if (desc.sched.prediction_type == SCHED_PRED_FLOW)
				json_object_set_new(def, "shift", json_real(desc.sched.shift));
			json_object_set_new(o, "prediction_why", json_string(desc.prediction_why));
			json_object_set_new(def, "width", json_integer(desc.default_width));
			json_object_set_new(def, "height", json_integer(desc.default_height));
			json_object_set_new(def, "steps", json_integer(desc.default_steps));
			json_object_set_new(def, "guidance_scale", json_real(desc.default_guidance));
			json_object_set_new(def, "sampler", json_string(sd_sampler_name(desc.default_sampler)));
			json_object_set_new(def, "spacing", json_string(spacing_text(&desc)));
			json_object_set_new(o, "defaults", def);
		}
		for (int i = 0; i < SD_DTYPE_COUNT; i++)
			if (d.dtype_counts[i])
				json_object_set_new(dt, sd_dtype_name((enum sd_dtype)i), json_integer(d.dtype_counts[i]));
		json_object_set_new(o, "path", json_string(path));
		if (path != argv[optind])
			json_object_set_new(o, "name", json_string(argv[optind]));
		json_object_set_new(o, "arch", json_string(d.arch));
		json_object_set_new(o, "arch_name", json_string(d.name));
		json_object_set_new(o, "layout", json_string(d.layout));
		json_object_set_new(o, "supported", json_boolean(d.supported));
		json_object_set_new(o, "unet", json_boolean(d.has_unet));
		json_object_set_new(o, "vae", json_boolean(d.has_vae));
		json_object_set_new(o, "text_encoder", json_boolean(d.has_text_encoder));
		if (d.unet_in_channels)
			json_object_set_new(o, "unet_in_channels", json_integer(d.unet_in_channels));
		if (d.context_dim)
			json_object_set_new(o, "context_dim", json_integer(d.context_dim));
		json_object_set_new(o, "tensors", json_integer(d.tensors));
		json_object_set_new(o, "dtypes", dt);
		json_object_set_new(o, "parameters", json_integer(d.params));
		json_object_set_new(o, "bytes", json_integer((json_int_t)d.bytes));
		char blas[256];
		json_object_set_new(o, "blas", json_string(blas_describe(blas, sizeof blas)));
		/* the samplers a job can name (sdbatch run --list-samplers) */
		json_t *smp = json_array();
		for (int i = 0; i < SD_SAMPLER_COUNT; i++) {
			json_t *e = json_object();
			json_object_set_new(e, "name", json_string(sd_sampler_name(i)));
			json_object_set_new(e, "a1111", json_string(sd_sampler_a1111_name(i)));
			json_object_set_new(e, "karras", json_boolean(sd_sampler_karras_ok(i)));
			json_object_set_new(e, "unet_calls_per_step",
			    json_integer(sd_sampler_model_calls(i, 10) >= 19 ? 2 : 1));
			json_object_set_new(e, "diffusers", json_string(sd_sampler_diffusers_class(i)));
			json_array_append_new(smp, e);
		}
		json_object_set_new(o, "samplers", smp);
		char *s = json_dumps(o, JSON_COMPACT);
		puts(s);
		free(s);
		json_decref(o);
		return 0;
	}
	printf("model:         %s\n", argv[optind]);
	if (path != argv[optind])
		printf("local path:    %s\n", path);
	printf("layout:        %s\n", d.layout);
	printf("architecture:  %s (%s)%s\n", d.name, d.arch,
	    d.supported ? "" : " -- not supported yet");
	if (described) {
		printf("variant:       %s (%s)\n", desc.name, desc.arch);
		printf("prediction:    %s: %s\n", prediction_text(&desc), desc.prediction_why);
		printf("defaults:      %dx%d, %d step%s, guidance %g, %s, %s spacing\n",
		    desc.default_width, desc.default_height, desc.default_steps, desc.default_steps == 1 ? "" : "s",
		    (double)desc.default_guidance, sd_sampler_name(desc.default_sampler),
		    spacing_text(&desc));
		if (desc.sched.prediction_type == SCHED_PRED_FLOW)
			printf("flow matching: shift %g\n", desc.sched.shift);
	}
	printf("parts:        ");
	if (d.has_unet) {
		printf(strcmp(d.arch, "sd3") == 0 ? " transformer (MMDiT)" : " unet");
		if (d.unet_in_channels)
			printf(" (%d input channels%s)", d.unet_in_channels,
			    d.unet_in_channels == 9 ? ", inpainting" : "");
	}
	if (d.has_vae)
		printf(" vae");
	if (d.has_text_encoder)
		printf(" text-encoder");
	printf("\n");
	if (d.context_dim)
		printf("context width: %d\n", d.context_dim);
	printf("tensors:       %d (", d.tensors);
	for (int i = 0, first = 1; i < SD_DTYPE_COUNT; i++)
		if (d.dtype_counts[i]) {
			printf("%s%s %lld", first ? "" : ", ", sd_dtype_name((enum sd_dtype)i), d.dtype_counts[i]);
			first = 0;
		}
	printf(")\n");
	printf("parameters:    %lld (%.1f M)\n", d.params, (double)d.params / 1e6);
	printf("size:          %llu bytes (%.2f GiB)\n", d.bytes, (double)d.bytes / (1 << 30));
	char blas[256];
	printf("BLAS:          %s\n", blas_describe(blas, sizeof blas));
	return 0;
}
