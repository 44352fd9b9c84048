/* util.h: small file, time and encoding helpers of the spool layer.
 *
 * Everything that writes a file the rest of the world may read does it the
 * Postfix way: a temporary name in the same (or a staging) folder, fsync,
 * rename(2) into place, so that no reader ever sees a partial file. */
#ifndef SD_SPOOL_UTIL_H
#define SD_SPOOL_UTIL_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/error.h"

/* jansson flags for files (indented) and for one-line JSON; numbers with
 * 15 significant digits (0.807, not 0.80700000000000005). */
#define SD_JSON_FILE (JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15))
#define SD_JSON_LINE (JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15))

/* Read a whole regular file (not following a final symlink when nofollow),
 * at most max bytes; *len gets the size.  A NUL is appended (not counted).
 * Errors: SD_ENOINPUT (missing), SD_EDATA (too big, not a regular file),
 * SD_EIO. */
char *util_read_file(const char *path, size_t max, int nofollow, size_t *len,
    struct sd_error *err);

/* Write len bytes to path atomically: tmpdir/.name.XXXXXX (tmpdir NULL: the
 * folder of path), fsync, rename.  mode is the new file's permission. */
int util_write_atomic(const char *path, const char *tmpdir, const void *data,
    size_t len, mode_t mode, struct sd_error *err);

/* fsync a folder (after a rename into it); errors are ignored where the file
 * system does not support it. */
void util_fsync_dir(const char *dir);

/* mkdir -p with mode 0777 (less umask). */
int util_mkdirs(const char *path, struct sd_error *err);

/* Seconds since an arbitrary start (CLOCK_MONOTONIC). */
double util_now_mono(void);
/* Seconds since the epoch (CLOCK_REALTIME). */
double util_now(void);
/* RFC 3339 UTC with milliseconds: "2024-05-01T12:00:00.123Z". buf >= 32. */
void util_rfc3339(double t, char *buf, size_t size);

/* n random bytes from getrandom(2) (falls back to /dev/urandom). */
int util_random(void *buf, size_t n);
/* A random 64-bit number. */
uint64_t util_random_u64(void);
/* 2*n lowercase hex digits of n random bytes; buf >= 2n+1. */
void util_random_hex(char *buf, size_t n);

/* This host's name (gethostname, never empty). */
const char *util_hostname(void);

/* This boot's id (/proc/sys/kernel/random/boot_id; "unknown" when there
 * is none) and this process's PID namespace ("pid:[4026531836]").  A pid
 * means the same process only where host, boot id and PID namespace all
 * match.  Computed on the first call (make it before starting threads). */
const char *util_boot_id(void);
const char *util_pid_ns(void);

/* Lowercase hex SHA-256 of data; out >= 65 bytes. */
void util_sha256_hex(const void *data, size_t len, char out[65]);

/* Standard base64 (with padding) of data, malloc'd and NUL-terminated. */
char *util_base64_encode(const void *data, size_t len);
/* Decode standard base64 (padding optional, no whitespace); malloc'd.
 * Returns NULL on invalid input. */
unsigned char *util_base64_decode(const char *text, size_t *len);

/* Does text hold valid UTF-8 (no overlongs, surrogates or > U+10FFFF)?
 * Returns 1, or 0 with *bad the offset of the first bad byte. */
int util_utf8_valid(const char *text, size_t len, size_t *bad);
/* Number of code points of valid UTF-8 text. */
size_t util_utf8_length(const char *text, size_t len);

/* text with every control character escaped for a terminal: C0 controls
 * and DEL as \n, \t, \e or \xNN, C1 controls (U+0080..U+009F, and
 * bytes that are not UTF-8) as \xNN; a backslash stays.  Job values and
 * file names in messages can then never move the cursor, change colours
 * or set a window title.  Returns out (always NUL-terminated). */
char *util_escape_controls(const char *text, char *out, size_t size);

/* Is this a valid job id: [A-Za-z0-9][A-Za-z0-9._-]{0,127}? */
int util_valid_id(const char *id);

/* Join dir and name with one '/' into a malloc'd string. */
char *util_join(const char *dir, const char *name);
/* malloc'd printf; NULL when out of memory. */
char *util_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A byte count as people read it ("512 B", "6.7 MB", "2.13 GB"), decimal
 * units; unknown (e.g. "?") when n < 0. */
void util_bytes_text(long long n, const char *unknown, char *buf, size_t size);
/* malloc'd folder part of path ("." when none). */
char *util_dirname(const char *path);

/* Is the process pid alive on this host? */
int util_pid_alive(pid_t pid);
/* The start time of process pid in clock ticks since boot (field 22 of
 * /proc/PID/stat), or 0 when unknown. */
unsigned long long util_pid_start(pid_t pid);

/* Sleep for seconds, returning early (1) when *stop becomes nonzero or the
 * file descriptor wake_fd (if >= 0) becomes readable. */
int util_sleep(double seconds, const volatile sig_atomic_t *stop, int wake_fd);

#endif
