/* tap.h: a tiny TAP producer for the test programs (automake's tap-driver
 * counts every "ok"/"not ok" line; "# SKIP" marks a skipped one). */
#ifndef SD_TAP_H
#define SD_TAP_H

/* Report one result; returns cond. */
int tap_ok(int cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Report one skipped test. */
void tap_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A diagnostic line ("# ..."), shown in the test's log. */
void tap_diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Print the plan; returns the exit status for main(). */
int tap_done(void);
/* Skip the whole program (prints "1..0 # SKIP reason"); returns 0 for main(). */
int tap_skip_all(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* How many results were reported so far. */
int tap_reported(void);

#endif
