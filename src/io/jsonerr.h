/* jsonerr.h: a JSON parse error as words that never quote the input.
 *
 * jansson's error text quotes the bytes near the error ("invalid token
 * near 'root:*:2...'"): a job naming /etc/shadow as a model or config file
 * would get its bytes back in the message, the record and the callback.
 * Errors name the problem and the place, never the bytes. */
#ifndef SD_IO_JSONERR_H
#define SD_IO_JSONERR_H

#include <jansson.h>

/* "invalid JSON syntax", "premature end of input", "invalid UTF-8", ...
 * (a static string). */
const char *sd_json_error_kind(const json_error_t *e);

#endif
