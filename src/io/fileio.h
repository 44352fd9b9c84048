/* fileio.h: small file helpers shared by the format writers. */
#ifndef SD_FILEIO_H
#define SD_FILEIO_H

#include <stddef.h>

/* Write all n bytes of buf to fd, retrying short writes and EINTR; 0, or -1
 * with errno set. */
int sd_write_all(int fd, const void *buf, size_t n);

#endif
