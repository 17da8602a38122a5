/* util.c - error strings, file reads and read-only maps (see util.h). */
#include "util.h"

#include "xmalloc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

void errstr_set(char *errstr, size_t len, const char *fmt, ...)
{
    if (!errstr || len == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errstr, len, fmt, ap);
    va_end(ap);
}

int fd_read_all(int fd, char **out, size_t *out_len)
{
    size_t cap = 1 << 16, len = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        if (len + 1 >= cap) {
            cap *= 2;
            buf = xrealloc(buf, cap);
        }
        ssize_t n = read(fd, buf + len, cap - len - 1);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            int err = -errno;
            free(buf);
            return err;
        }
        if (n == 0) {
            break;
        }
        len += (size_t)n;
    }
    buf[len] = '\0';
    *out = buf;
    *out_len = len;
    return 0;
}

int file_read_all(const char *path, char **out, size_t *out_len, char *errstr, size_t errstr_len)
{
    if (strcmp(path, "-") == 0) {
        int err = fd_read_all(STDIN_FILENO, out, out_len);
        if (err) {
            errstr_set(errstr, errstr_len, "stdin: read failed: %s", strerror(-err));
        }
        return err;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int err = -errno;
        errstr_set(errstr, errstr_len, "%s: cannot open: %s", path, strerror(errno));
        return err;
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        close(fd);
        errstr_set(errstr, errstr_len, "%s: is a directory, expected a file", path);
        return -EISDIR;
    }
    int err = fd_read_all(fd, out, out_len);
    close(fd);
    if (err) {
        errstr_set(errstr, errstr_len, "%s: read failed: %s", path, strerror(-err));
    }
    return err;
}

int file_map_open(const char *path, struct file_map *m, char *errstr, size_t errstr_len)
{
    memset(m, 0, sizeof(*m));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int err = -errno;
        errstr_set(errstr, errstr_len, "%s: cannot open: %s", path, strerror(errno));
        return err;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int err = -errno;
        errstr_set(errstr, errstr_len, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return err;
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        errstr_set(errstr, errstr_len, "%s: is a directory, expected a file", path);
        return -EISDIR;
    }
    if (S_ISREG(st.st_mode)) {
        if (st.st_size == 0) {
            close(fd);
            return 0;
        }
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p != MAP_FAILED) {
            close(fd);
            m->data = p;
            m->size = (size_t)st.st_size;
            m->mapped = true;
            return 0;
        }
    }
    /* Not mappable (a pipe, a special file): read it instead. */
    char *buf;
    size_t len;
    int err = fd_read_all(fd, &buf, &len);
    close(fd);
    if (err) {
        errstr_set(errstr, errstr_len, "%s: read failed: %s", path, strerror(-err));
        return err;
    }
    m->data = (const uint8_t *)buf;
    m->size = len;
    m->mapped = false;
    return 0;
}

void file_map_close(struct file_map *m)
{
    if (!m) {
        return;
    }
    if (m->data) {
        if (m->mapped) {
            munmap((void *)m->data, m->size);
        } else {
            free((void *)m->data);
        }
    }
    m->data = NULL;
    m->size = 0;
    m->mapped = false;
}

char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir);
    if (n > 0 && dir[n - 1] == '/') {
        return xasprintf("%s%s", dir, name);
    }
    return xasprintf("%s/%s", dir, name);
}

bool path_is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

bool path_is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}
