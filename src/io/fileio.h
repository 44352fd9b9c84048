/* fileio.h: small file helpers shared by the format writers, and the one
 * atomic file writer that every layer uses.
 *
 * The atomic writer (Postfix's way): a hidden temporary file in the same
 * folder as the target (".NAME[.TAG].RANDOM.tmp", created with O_EXCL and
 * mode 0666 less the umask), every byte written, fsync, rename(2) into
 * place, fsync of the folder.  No reader ever sees a partial file, and a
 * crash leaves at most a dotfile that the caller may clean up by its tag. */
#ifndef SD_FILEIO_H
#define SD_FILEIO_H

#include <stddef.h>

#include "core/error.h"

/* Write all n bytes of buf to fd, retrying short writes and EINTR; 0, or -1
 * with errno set. */
int sd_write_all(int fd, const void *buf, size_t n);

/* rename(2) (relative to the folder descriptors, AT_FDCWD for the current
 * folder) that never replaces an existing target: RENAME_NOREPLACE where
 * the file system has it, else link(2) + unlink(2) (atomic over NFS too).
 * 0, or -1 with errno (EEXIST when the target exists). */
int sd_rename_noreplace(int fromdir, const char *from, int todir, const char *to);

/* An atomic write in progress. */
struct sd_atomic_file {
	int fd;			/* the temporary file, write to it */
	int dirfd;		/* the folder (owned when owns_dir) */
	int owns_dir;
	char *tmp;		/* the temporary name, in that folder */
	char *name;		/* the final name, in that folder */
	char *path;		/* the final path, for messages */
};

/* Start writing path (relative to dirfd, AT_FDCWD for a plain path).  tag
 * (NULL for none) goes into the temporary name so that the leftovers of a
 * killed writer can be found (see sd_atomic_is_leftover).  mode: the new
 * file's permissions before the umask (0666 for data files).
 * Errors: SD_EIO. */
int sd_atomic_open(struct sd_atomic_file *f, int dirfd, const char *path,
    const char *tag, unsigned mode, struct sd_error *err);
/* Append n bytes; -1 (SD_EIO, the write aborted) on error. */
int sd_atomic_write(struct sd_atomic_file *f, const void *buf, size_t n,
    struct sd_error *err);
/* fsync, rename into place (with noreplace: never over an existing file,
 * failing with errno EEXIST, code SD_EDATA), fsync the folder.  The write
 * is closed either way. */
int sd_atomic_commit(struct sd_atomic_file *f, int noreplace,
    struct sd_error *err);
/* Give up: remove the temporary file, close. */
void sd_atomic_abort(struct sd_atomic_file *f);

/* One whole buffer, atomically (sd_atomic_open, write, commit). */
int sd_write_file_atomic(int dirfd, const char *path, const void *data,
    size_t len, const char *tag, unsigned mode, int noreplace,
    struct sd_error *err);

/* Is name (a file name in a folder) a temporary file of the atomic writer
 * made with this tag? */
int sd_atomic_is_leftover(const char *name, const char *tag);

/* Open path for reading if it is a regular file: opened with O_NONBLOCK
 * (a FIFO or a device never blocks the caller), checked with fstat, then
 * set blocking again.  The descriptor, or -1 with err: SD_ENOINPUT (no
 * such file, or not a regular file: a FIFO, a device, a folder), SD_EIO. */
int sd_open_regular(const char *path, struct sd_error *err);

/* fsync the folder dir (relative to AT_FDCWD); errors are ignored where
 * the file system does not support it. */
void sd_fsync_dir(const char *dir);

#endif
