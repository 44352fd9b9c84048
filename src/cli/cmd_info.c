/* cmd_info.c: `sdbatch info MODEL`: what a checkpoint is. */
#include "config.h"

#include <getopt.h>
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
#include "model/hub.h"
#include "sample/pipeline.h"

static void
info_usage(FILE *out)
{
	fputs("Usage: sdbatch info [--json] MODEL\n"
	    "\n"
	    "Say what MODEL is (a single-file .safetensors checkpoint, a part such as a\n"
	    "UNet or VAE file, a diffusers folder, or a Hub id found in the local Hub\n"
	    "cache): the detected architecture, whether sdbatch can render with it, its\n"
	    "parts, dtypes, tensor count and size, and the BLAS sdbatch computes with.\n"
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
	if (checkpoint_detect(path, &d, &err) < 0) {
		fprintf(stderr, "sdbatch info: %s\n", err.message);
		return err.code ? err.code : SD_EDATA;
	}
	if (json) {
		json_t *o = json_object(), *dt = json_object();
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
	printf("parts:        ");
	if (d.has_unet) {
		printf(" unet");
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
