/* main.c: the sdbatch command line: global options and subcommand dispatch. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "core/blas.h"
#include "core/error.h"

/* Commands written in their own files by others: until a file is listed
 * in src/cli/local.mk the weak reference stays NULL and the command says
 * that it is not built in. */
int cmd_info(int argc, char **argv) __attribute__((weak));
int cmd_bench(int argc, char **argv) __attribute__((weak));
int cmd_pull(int argc, char **argv) __attribute__((weak));

struct command {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *summary;
};

static const struct command commands[] = {
	{ "run", cmd_run, "run one job now; print the paths of the PNGs" },
	{ "watch", cmd_watch, "claim and run the jobs of a spool folder" },
	{ "submit", cmd_submit, "enqueue a job file into a spool; print its id" },
	{ "status", cmd_status, "list a spool's jobs: queued, running, done, failed" },
	{ "cancel", cmd_cancel, "cancel a queued or running job" },
	{ "retry", cmd_retry, "run a failed job again under its id" },
	{ "info", NULL, "say what a model file or folder is" },
	{ "pull", NULL, "download a model from the Hugging Face Hub into its cache" },
	{ "serve", cmd_serve, "HTTP API, live progress and a gallery over a spool" },
	{ "gallery", cmd_gallery, "write a spool's gallery page as static files" },
	{ "bench", NULL, "measure speed and memory" },
	{ "make-model", cmd_make_model,
	    "write a random-weight SD 1.5 checkpoint (tests, benchmarks)" },
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static int (*command_fn(const struct command *c))(int, char **);

static void
usage(FILE *out)
{
	size_t i;

	fprintf(out,
	    "Usage: sdbatch [--help] [--version] COMMAND [OPTIONS] [ARGS]\n"
	    "\n"
	    "Render Stable Diffusion images from text prompts, one job at a time or as\n"
	    "a batch worker on a spool folder of YAML job files.\n"
	    "\n"
	    "Commands:\n");
	for (i = 0; i < NCOMMANDS; i++)
		if (command_fn(&commands[i]) != NULL)
			fprintf(out, "  %-11s %s\n", commands[i].name,
			    commands[i].summary);
	fprintf(out,
	    "\n"
	    "`sdbatch COMMAND --help` describes a command; sdbatch(1), sdbatch-job(5)\n"
	    "and sdbatch.yaml(5) describe it all.\n"
	    "\n"
	    "  -h, --help     this help\n"
	    "  -V, --version  version and build options\n"
	    "\n"
	    "Exit status: 0 ok, 64 usage, 65 bad job data, 66 missing input,\n"
	    "69 unavailable, 70 internal error, 74 I/O error, 75 interrupted and\n"
	    "requeued, 78 bad configuration.\n"
	    "\n"
	    "Report bugs to: %s\n", PACKAGE_BUGREPORT);
}

static void
version(void)
{
	printf("sdbatch %s\n", PACKAGE_VERSION);
#ifdef HAVE_CUDA
	printf("CUDA support: built in\n");
#else
	printf("CUDA support: not built in (CPU only)\n");
#endif
#ifdef HAVE_MICROHTTPD
	printf("HTTP server (serve): built in (libmicrohttpd)\n");
#else
	printf("HTTP server (serve): not built in\n");
#endif
#ifdef HAVE_JPEG
	printf("JPEG input: yes (libjpeg)\n");
#else
	printf("JPEG input: no (PNG only)\n");
#endif
	{
		char buf[256];
		const char *note = blas_kernel_note();
		printf("BLAS: %s\n", blas_describe(buf, sizeof buf));
		if (note != NULL)
			printf("  (%s)\n", note);
	}
}

static int (*command_fn(const struct command *c))(int, char **)
{
	if (strcmp(c->name, "info") == 0)
		return cmd_info;
	if (strcmp(c->name, "bench") == 0)
		return cmd_bench;
	if (strcmp(c->name, "pull") == 0)
		return cmd_pull;
	return c->fn;
}

int
main(int argc, char **argv)
{
	const char *name;
	size_t i;
	int verbose = 0;

	/* A weak OpenBLAS kernel on this CPU: re-execute with a better one
	 * (returns at once when there is nothing to do). */
	for (i = 1; i < (size_t)argc; i++)
		if (strcmp(argv[i], "-v") == 0 || strcmp(argv[i], "--verbose") == 0)
			verbose = 1;
	blas_ensure_kernel(argc, argv, verbose);
	if (argc < 2) {
		usage(stderr);
		return SD_EUSAGE;
	}
	name = argv[1];
	if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(name, "--version") == 0 || strcmp(name, "-V") == 0) {
		version();
		return 0;
	}
	if (strcmp(name, "help") == 0) {
		if (argc < 3) {
			usage(stdout);
			return 0;
		}
		/* `sdbatch help run` = `sdbatch run --help` */
		char prog[64], *args[3] = { prog, "--help", NULL };
		snprintf(prog, sizeof prog, "sdbatch %.50s", argv[2]);
		for (i = 0; i < NCOMMANDS; i++)
			if (strcmp(argv[2], commands[i].name) == 0 &&
			    command_fn(&commands[i]) != NULL)
				return command_fn(&commands[i])(2, args);
		fprintf(stderr, "sdbatch: unknown command '%s'; try 'sdbatch --help'\n",
		    argv[2]);
		return SD_EUSAGE;
	}
	for (i = 0; i < NCOMMANDS; i++) {
		int (*fn)(int, char **);
		if (strcmp(name, commands[i].name) != 0)
			continue;
		if ((fn = command_fn(&commands[i])) == NULL) {
			fprintf(stderr, "sdbatch: '%s' is not built into this sdbatch\n", name);
			return SD_EUNAVAILABLE;
		}
		/* getopt's own messages start with argv[0]: "sdbatch run:" */
		char prog[64];
		snprintf(prog, sizeof prog, "sdbatch %s", commands[i].name);
		argv[1] = prog;
		return fn(argc - 1, argv + 1);
	}
	if (name[0] == '-')
		fprintf(stderr, "sdbatch: unknown option '%s'; try 'sdbatch --help'\n", name);
	else
		fprintf(stderr, "sdbatch: unknown command '%s'; try 'sdbatch --help'\n", name);
	return SD_EUSAGE;
}
