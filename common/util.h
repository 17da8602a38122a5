/* util.h - error strings, whole-file reads and read-only file maps shared by every module. */
#ifndef COMMON_UTIL_H
#define COMMON_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Size of the error-message buffers that loaders fill: "file: field: what is wrong". */
#define ERRSTR_LEN 512

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Formats a message into errstr (may be NULL or len 0, then nothing is written). Thread-safe. */
void errstr_set(char *errstr, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A read-only view of a whole file: mmap'ed when possible, else read into memory.
 * `data` is NULL for an empty file. Plain data; release with file_map_close. */
struct file_map {
    const uint8_t *data;
    size_t size;
    bool mapped; /* true: munmap on close; false: free on close */
};

/* Maps `path` read-only. Returns 0, -ENOENT/-EACCES/-EISDIR/-EIO with errstr naming the file.
 * Caller owns *m; release with file_map_close. Thread-safe. */
int file_map_open(const char *path, struct file_map *m, char *errstr, size_t errstr_len);

/* Releases a map; safe on a zeroed struct. */
void file_map_close(struct file_map *m);

/* Reads a whole file (or stdin when path is "-") into a NUL-terminated heap buffer.
 * Returns 0 or a negative errno with errstr set. Caller owns *out (free). Thread-safe. */
int file_read_all(const char *path, char **out, size_t *out_len, char *errstr, size_t errstr_len);

/* Reads all of a file descriptor. Returns 0 or a negative errno. Caller owns *out (free). */
int fd_read_all(int fd, char **out, size_t *out_len);

/* Joins a directory and a file name with one '/'. Caller owns the result (free). */
char *path_join(const char *dir, const char *name);

/* True when `path` names an existing regular file. */
bool path_is_file(const char *path);

/* True when `path` names an existing directory. */
bool path_is_dir(const char *path);

/* Little-endian loads from unaligned memory. */
static inline uint64_t load_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

static inline uint32_t load_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint16_t load_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

#endif
