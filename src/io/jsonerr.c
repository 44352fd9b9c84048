/* jsonerr.c: JSON parse errors without the input's bytes. */
#include "config.h"

#include "io/jsonerr.h"

const char *
sd_json_error_kind(const json_error_t *e)
{
#if JANSSON_VERSION_HEX >= 0x020b00
	switch (json_error_code(e)) {
	case json_error_out_of_memory:
		return "out of memory";
	case json_error_stack_overflow:
		return "nested too deeply";
	case json_error_cannot_open_file:
		return "cannot open the file";
	case json_error_invalid_argument:
		return "invalid argument";
	case json_error_invalid_utf8:
		return "invalid UTF-8";
	case json_error_premature_end_of_input:
		return "premature end of input";
	case json_error_end_of_input_expected:
		return "unexpected data after the JSON value";
	case json_error_invalid_syntax:
		return "invalid JSON syntax";
	case json_error_invalid_format:
		return "invalid JSON format";
	case json_error_wrong_type:
		return "wrong JSON type";
	case json_error_null_character:
		return "a NUL character";
	case json_error_null_value:
		return "a null value";
	case json_error_null_byte_in_key:
		return "a NUL byte in a key";
	case json_error_duplicate_key:
		return "a duplicate key";
	case json_error_numeric_overflow:
		return "a number out of range";
	case json_error_item_not_found:
		return "an item not found";
	case json_error_index_out_of_range:
		return "an index out of range";
	default:
		break;
	}
#else
	(void)e;
#endif
	return "not valid JSON";
}
