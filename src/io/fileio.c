/* fileio.c: small file helpers and the one atomic file writer. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "io/fileio.h"

int
sd_write_all(int fd, const void *buf, size_t n)
{
	const char *p = buf;

	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (w == 0) {
			errno = ENOSPC;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int
sd_rename_noreplace(int fromdir, const char *from, int todir, const char *to)
{
#if defined(SYS_renameat2)
	/* RENAME_NOREPLACE is 1; the system call, so that an old C library
	 * without renameat2() does not matter. */
	if (syscall(SYS_renameat2, fromdir, from, todir, to, 1u) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP &&
	    errno != EOPNOTSUPP)
		return -1;
#endif
	/* link(2) never replaces a file. */
	if (linkat(fromdir, from, todir, to, 0) < 0)
		return -1;
	if (unlinkat(fromdir, from, 0) < 0) {
		int e = errno;
		unlinkat(todir, to, 0);
		errno = e;
		return -1;
	}
	return 0;
}

int
sd_open_regular(const char *path, struct sd_error *err)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC), fl;

	if (fd < 0)
		return sd_fail(err, errno == ENOENT || errno == ENOTDIR ||
		    errno == EACCES ? SD_ENOINPUT : SD_EIO, "%s: %s", path,
		    strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		int fifo = S_ISFIFO(st.st_mode), dir = S_ISDIR(st.st_mode);
		close(fd);
		return sd_fail(err, SD_ENOINPUT, "%s: not a regular file%s", path,
		    fifo ? " (a FIFO)" : dir ? " (a folder)" : "");
	}
	if ((fl = fcntl(fd, F_GETFL)) >= 0)
		(void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
	return fd;
}

void
sd_fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd >= 0) {
		(void)fsync(fd);
		close(fd);
	}
}

static void
atomic_free(struct sd_atomic_file *f)
{
	if (f->fd >= 0)
		close(f->fd);
	if (f->owns_dir && f->dirfd >= 0)
		close(f->dirfd);
	free(f->tmp);
	free(f->name);
	free(f->path);
	memset(f, 0, sizeof *f);
	f->fd = f->dirfd = -1;
}

int
sd_atomic_open(struct sd_atomic_file *f, int dirfd, const char *path,
    const char *tag, unsigned mode, struct sd_error *err)
{
	const char *slash = strrchr(path, '/');
	const char *base = slash ? slash + 1 : path;
	int attempt;

	memset(f, 0, sizeof *f);
	f->fd = f->dirfd = -1;
	if (*base == '\0' || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
		return sd_fail(err, SD_EIO, "%s: not a file name", path);
	f->path = strdup(path);
	f->name = strdup(base);
	if (f->path == NULL || f->name == NULL) {
		atomic_free(f);
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	}
	if (slash != NULL) {
		char *dir = strndup(path, (size_t)(slash - path));
		if (dir == NULL) {
			atomic_free(f);
			return sd_fail(err, SD_EINTERNAL, "out of memory");
		}
		f->dirfd = openat(dirfd, *dir ? dir : "/", O_RDONLY | O_DIRECTORY |
		    O_CLOEXEC);
		free(dir);
		if (f->dirfd < 0) {
			int e = errno;
			atomic_free(f);
			return sd_fail(err, SD_EIO, "%s: cannot open its folder: %s",
			    path, strerror(e));
		}
		f->owns_dir = 1;
	} else
		f->dirfd = dirfd;
	for (attempt = 0; attempt < 100; attempt++) {
		struct timespec ts;
		unsigned long long r;

		clock_gettime(CLOCK_REALTIME, &ts);
		r = ((unsigned long long)ts.tv_nsec * 2654435761ull) ^
		    ((unsigned long long)getpid() << 32) ^ (unsigned long long)attempt;
		free(f->tmp);
		if (tag != NULL)
			f->tmp = malloc(strlen(base) + strlen(tag) + 40);
		else
			f->tmp = malloc(strlen(base) + 40);
		if (f->tmp == NULL) {
			atomic_free(f);
			return sd_fail(err, SD_EINTERNAL, "out of memory");
		}
		if (tag != NULL)
			sprintf(f->tmp, ".%.100s.%s.%012llx.tmp", base, tag,
			    r & 0xffffffffffffull);
		else
			sprintf(f->tmp, ".%.100s.%012llx.tmp", base,
			    r & 0xffffffffffffull);
		f->fd = openat(f->dirfd, f->tmp, O_WRONLY | O_CREAT | O_EXCL |
		    O_NOFOLLOW | O_CLOEXEC, (mode_t)mode);
		if (f->fd >= 0 || errno != EEXIST)
			break;
	}
	if (f->fd < 0) {
		int e = errno;
		sd_fail(err, SD_EIO, "%s: cannot create a temporary file: %s", path,
		    strerror(e));
		atomic_free(f);
		return -1;
	}
	return 0;
}

void
sd_atomic_abort(struct sd_atomic_file *f)
{
	if (f->tmp != NULL && f->dirfd >= 0) {
		if (f->fd >= 0)
			close(f->fd);
		f->fd = -1;
		unlinkat(f->dirfd, f->tmp, 0);
	}
	atomic_free(f);
}

int
sd_atomic_write(struct sd_atomic_file *f, const void *buf, size_t n,
    struct sd_error *err)
{
	if (sd_write_all(f->fd, buf, n) < 0) {
		int e = errno;
		sd_fail(err, SD_EIO, "%s: %s", f->path, strerror(e));
		sd_atomic_abort(f);
		return -1;
	}
	return 0;
}

int
sd_atomic_commit(struct sd_atomic_file *f, int noreplace, struct sd_error *err)
{
	int e, r;

	if (fsync(f->fd) < 0) {
		e = errno;
		goto fail;
	}
	r = close(f->fd);
	f->fd = -1;
	if (r < 0) {
		e = errno;
		goto fail;
	}
	if (noreplace)
		r = sd_rename_noreplace(f->dirfd, f->tmp, f->dirfd, f->name);
	else
		r = renameat(f->dirfd, f->tmp, f->dirfd, f->name);
	if (r < 0) {
		e = errno;
		if (e == EEXIST) {
			sd_fail(err, SD_EDATA, "%s exists already", f->path);
			sd_atomic_abort(f);
			errno = EEXIST;
			return -1;
		}
		goto fail;
	}
	(void)fsync(f->dirfd);
	atomic_free(f);
	return 0;
fail:
	sd_fail(err, SD_EIO, "%s: %s", f->path, strerror(e));
	sd_atomic_abort(f);
	errno = e;
	return -1;
}

int
sd_write_file_atomic(int dirfd, const char *path, const void *data,
    size_t len, const char *tag, unsigned mode, int noreplace,
    struct sd_error *err)
{
	struct sd_atomic_file f;

	if (sd_atomic_open(&f, dirfd, path, tag, mode, err) < 0)
		return -1;
	if (sd_atomic_write(&f, data, len, err) < 0)
		return -1;
	return sd_atomic_commit(&f, noreplace, err);
}

int
sd_atomic_is_leftover(const char *name, const char *tag)
{
	size_t n = strlen(name), t = strlen(tag), i;

	/* ".BASE.TAG.XXXXXXXXXXXX.tmp" */
	if (n < 1 + 1 + t + 1 + 12 + 4 || name[0] != '.' ||
	    strcmp(name + n - 4, ".tmp") != 0)
		return 0;
	for (i = n - 16; i < n - 4; i++)
		if (!((name[i] >= '0' && name[i] <= '9') ||
		    (name[i] >= 'a' && name[i] <= 'f')))
			return 0;
	if (name[n - 17] != '.' || name[n - 18 - t] != '.')
		return 0;
	return strncmp(name + n - 17 - t, tag, t) == 0;
}
