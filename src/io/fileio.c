/* fileio.c: small file helpers shared by the format writers. */
#include "config.h"

#include <errno.h>
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
		p += w;
		n -= (size_t)w;
	}
	return 0;
}
