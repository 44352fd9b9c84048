/* fuzz_safetensors.c: libFuzzer target for the safetensors header parser.
 *
 * Every input is parsed with st_parse; when it is accepted, every tensor's
 * bytes are touched and the accessors are exercised, so that a header whose
 * offsets or shapes escape the buffer shows up under AddressSanitizer.
 * Build and run with `make fuzz` (FUZZ_SECONDS=60 by default). */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sd_error err = {0};
	struct st_file *f;
	volatile uint8_t sink = 0;
	char shape[256];
	float buf[64];

	f = st_parse(data, size, "fuzz.safetensors", &err);
	if (f == NULL) {
		/* A rejection must say why. */
		if (err.code == 0 || err.message[0] == '\0')
			abort();
		return 0;
	}
	for (int i = 0; i < st_count(f); i++) {
		const struct sd_tensor *t = st_tensor(f, i);
		size_t nb = sd_tensor_nbytes(t);
		int64_t numel = sd_tensor_numel(t);

		if (t == NULL || t->name == NULL || st_find(f, t->name) != t)
			abort();
		sd_shape_str(t, shape, sizeof shape);
		if (nb > 0) {
			const uint8_t *p = t->data;
			sink ^= p[0];
			sink ^= p[nb - 1];
		}
		if (numel > 0 && numel <= 64)
			sd_convert_to_f32(buf, t->data, t->dtype, (size_t)numel);
	}
	(void)st_tensor(f, -1);
	(void)st_tensor(f, st_count(f));
	(void)st_find(f, "");
	(void)st_metadata(f, "format");
	(void)st_data_size(f);
	st_close(f);
	(void)sink;
	return 0;
}
