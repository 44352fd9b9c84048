/* streplace.c: streplace OUT BASE REPLACEMENTS: write BASE's tensors to OUT
 * with those that REPLACEMENTS also has taken from it (run-lora.sh: the
 * tiny model with the final LayerNorm of the a1111 cases). */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

#include "io/safetensors.h"

int
main(int argc, char **argv)
{
	struct sd_error err = {0};
	struct st_file *base, *repl;
	struct sd_tensor *t;
	int n, rc;

	if (argc != 4) {
		fprintf(stderr, "usage: streplace OUT BASE REPLACEMENTS\n");
		return 64;
	}
	if ((base = st_open(argv[2], &err)) == NULL || (repl = st_open(argv[3], &err)) == NULL) {
		fprintf(stderr, "streplace: %s\n", err.message);
		return 66;
	}
	n = st_count(base);
	if ((t = malloc((size_t)n * sizeof *t)) == NULL)
		return 70;
	for (int i = 0; i < n; i++) {
		const struct sd_tensor *r = st_find(repl, st_tensor(base, i)->name);
		t[i] = r != NULL ? *r : *st_tensor(base, i);
	}
	rc = st_write(argv[1], t, n, NULL, NULL, 0, &err);
	if (rc < 0)
		fprintf(stderr, "streplace: %s\n", err.message);
	free(t);
	st_close(repl);
	st_close(base);
	return rc < 0 ? 74 : 0;
}
