/* model_zip.c - a read-only zip reader over an in-memory image, for torch.save archives.
 *
 * torch.save writes stored (uncompressed) members, a data descriptor after each member (so local
 * headers carry zero sizes), padding in the local extra field to align data to 64 bytes, and a
 * ZIP64 end-of-central-directory record; shards over 4 GB also carry zip64 extra fields in their
 * central entries. The central directory is therefore the only source of sizes and offsets; the
 * local header is read just to find where the data starts. Every offset is bounds-checked. */
#include "common/util.h"
#include "common/xmalloc.h"
#include "engine/model_impl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define ZIP_SIG_LOCAL     0x04034b50u
#define ZIP_SIG_CENTRAL   0x02014b50u
#define ZIP_SIG_EOCD      0x06054b50u
#define ZIP_SIG_EOCD64    0x06064b50u
#define ZIP_SIG_LOCATOR64 0x07064b50u
#define ZIP_LOCAL_LEN     30
#define ZIP_CENTRAL_LEN   46
#define ZIP_EOCD_LEN      22
#define ZIP_EOCD64_LEN    56
#define ZIP_LOCATOR64_LEN 20
#define ZIP_EXTRA_ZIP64   0x0001u
#define ZIP_FLAG_ENCRYPT  0x0001u

uint32_t model_crc32(const uint8_t *p, size_t len)
{
    uint32_t crc = 0xffffffffu;
    for (size_t i = 0; i < len; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) {
            crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
        }
    }
    return ~crc;
}

/* Where the central directory lies, from the (zip64) end records. */
struct zip_dir {
    uint64_t n_entries;
    uint64_t offset;
    uint64_t size;
    uint64_t end; /* the directory must end at or before this offset */
};

/* Finds the end-of-central-directory record: the last signature whose comment reaches exactly
 * to the end of the image. */
static int zip_find_eocd(const uint8_t *buf, size_t size, size_t *pos)
{
    if (size < ZIP_EOCD_LEN) {
        return -EPROTO;
    }
    size_t lowest = size - ZIP_EOCD_LEN > 0xffff ? size - ZIP_EOCD_LEN - 0xffff : 0;
    for (size_t i = size - ZIP_EOCD_LEN + 1; i-- > lowest;) {
        if (load_le32(buf + i) == ZIP_SIG_EOCD &&
            i + ZIP_EOCD_LEN + load_le16(buf + i + 20) == size) {
            *pos = i;
            return 0;
        }
    }
    return -EPROTO;
}

static int zip_read_dir(const uint8_t *buf, size_t size, const char *file, struct zip_dir *dir,
                        char *errstr, size_t errstr_len)
{
    size_t eocd;
    if (zip_find_eocd(buf, size, &eocd) != 0) {
        errstr_set(errstr, errstr_len,
                   "%s: no zip end-of-central-directory record (truncated or not a zip)", file);
        return -EPROTO;
    }
    const uint8_t *e = buf + eocd;
    uint16_t disk = load_le16(e + 4), cd_disk = load_le16(e + 6);
    uint16_t n_disk = load_le16(e + 8), n_total = load_le16(e + 10);
    uint32_t cd_size = load_le32(e + 12), cd_offset = load_le32(e + 16);
    dir->n_entries = n_total;
    dir->size = cd_size;
    dir->offset = cd_offset;
    dir->end = eocd;

    bool has_locator =
        eocd >= ZIP_LOCATOR64_LEN && load_le32(e - ZIP_LOCATOR64_LEN) == ZIP_SIG_LOCATOR64;
    if (!has_locator) {
        if (disk != 0 || cd_disk != 0 || n_disk != n_total) {
            errstr_set(errstr, errstr_len, "%s: multi-disk zip archives are not supported", file);
            return -EPROTO;
        }
        if (n_total == 0xffff || cd_size == 0xffffffffu || cd_offset == 0xffffffffu) {
            errstr_set(errstr, errstr_len,
                       "%s: zip end record needs ZIP64 but the zip64 locator is missing", file);
            return -EPROTO;
        }
        return 0;
    }

    const uint8_t *loc = e - ZIP_LOCATOR64_LEN;
    uint64_t rec = load_le64(loc + 8);
    if (load_le32(loc + 4) != 0 || load_le32(loc + 16) != 1) {
        errstr_set(errstr, errstr_len, "%s: multi-disk zip64 archives are not supported", file);
        return -EPROTO;
    }
    if (rec > eocd - ZIP_LOCATOR64_LEN || eocd - ZIP_LOCATOR64_LEN - rec < ZIP_EOCD64_LEN) {
        errstr_set(errstr, errstr_len, "%s: zip64 end record offset %llu is outside the archive",
                   file, (unsigned long long)rec);
        return -EPROTO;
    }
    const uint8_t *r = buf + rec;
    if (load_le32(r) != ZIP_SIG_EOCD64) {
        errstr_set(errstr, errstr_len, "%s: bad zip64 end record signature at offset %llu", file,
                   (unsigned long long)rec);
        return -EPROTO;
    }
    if (load_le32(r + 16) != 0 || load_le32(r + 20) != 0 ||
        load_le64(r + 24) != load_le64(r + 32)) {
        errstr_set(errstr, errstr_len, "%s: multi-disk zip64 archives are not supported", file);
        return -EPROTO;
    }
    dir->n_entries = load_le64(r + 32);
    dir->size = load_le64(r + 40);
    dir->offset = load_le64(r + 48);
    dir->end = rec;
    return 0;
}

/* Reads the zip64 extended-information extra field of a central entry: it holds, in this
 * order, only those of usize, csize and the local header offset whose 32-bit field is all ones. */
static int zip_read_extra(const uint8_t *extra, size_t len, uint64_t *usize, uint64_t *csize,
                          uint64_t *offset, bool need_u, bool need_c, bool need_o)
{
    size_t pos = 0;
    while (pos + 4 <= len) {
        uint16_t id = load_le16(extra + pos), n = load_le16(extra + pos + 2);
        if (n > len - pos - 4) {
            return -EPROTO;
        }
        if (id == ZIP_EXTRA_ZIP64) {
            const uint8_t *f = extra + pos + 4;
            size_t k = 0;
            if (need_u) {
                if (k + 8 > n) {
                    return -EPROTO;
                }
                *usize = load_le64(f + k);
                k += 8;
            }
            if (need_c) {
                if (k + 8 > n) {
                    return -EPROTO;
                }
                *csize = load_le64(f + k);
                k += 8;
            }
            if (need_o) {
                if (k + 8 > n) {
                    return -EPROTO;
                }
                *offset = load_le64(f + k);
            }
            return 0;
        }
        pos += 4 + (size_t)n;
    }
    return need_u || need_c || need_o ? -EPROTO : 0;
}

static int zip_entry_cmp(const void *a, const void *b)
{
    return strcmp(((const struct model_zip_entry *)a)->name,
                  ((const struct model_zip_entry *)b)->name);
}

/* Parses the central entry at buf[pos] and its local header; advances *pos. */
static int zip_read_entry(const uint8_t *buf, const struct zip_dir *dir, uint64_t *pos,
                          const char *file, struct model_zip_entry *ent, char *errstr,
                          size_t errstr_len)
{
    const uint64_t cd_end = dir->offset + dir->size;
    uint64_t at = *pos;
    if (cd_end - at < ZIP_CENTRAL_LEN || load_le32(buf + at) != ZIP_SIG_CENTRAL) {
        errstr_set(errstr, errstr_len, "%s: bad zip central directory entry at offset %llu", file,
                   (unsigned long long)at);
        return -EPROTO;
    }
    const uint8_t *c = buf + at;
    uint16_t flags = load_le16(c + 8), method = load_le16(c + 10);
    uint32_t crc = load_le32(c + 16);
    uint64_t csize = load_le32(c + 20), usize = load_le32(c + 24);
    size_t name_len = load_le16(c + 28), extra_len = load_le16(c + 30);
    size_t comment_len = load_le16(c + 32);
    uint16_t disk_start = load_le16(c + 34);
    uint64_t local = load_le32(c + 42);
    if (cd_end - at - ZIP_CENTRAL_LEN < name_len + extra_len + comment_len) {
        errstr_set(errstr, errstr_len,
                   "%s: zip central directory entry at offset %llu overruns "
                   "the directory",
                   file, (unsigned long long)at);
        return -EPROTO;
    }
    const uint8_t *name = c + ZIP_CENTRAL_LEN;
    if (name_len == 0 || memchr(name, '\0', name_len) != NULL) {
        errstr_set(errstr, errstr_len, "%s: zip entry at offset %llu has an empty or invalid name",
                   file, (unsigned long long)at);
        return -EPROTO;
    }
    ent->name = xstrndup((const char *)name, name_len);
    ent->crc32 = crc;
    *pos = at + ZIP_CENTRAL_LEN + name_len + extra_len + comment_len;

    if (flags & ZIP_FLAG_ENCRYPT) {
        errstr_set(errstr, errstr_len, "%s: zip entry '%s' is encrypted", file, ent->name);
        return -EPROTO;
    }
    if (method != 0) {
        errstr_set(errstr, errstr_len,
                   "%s: zip entry '%s' is compressed (method %u); only stored entries are "
                   "supported",
                   file, ent->name, (unsigned)method);
        return -EPROTO;
    }
    if (zip_read_extra(name + name_len, extra_len, &usize, &csize, &local, usize == 0xffffffffu,
                       csize == 0xffffffffu, local == 0xffffffffu) != 0) {
        errstr_set(errstr, errstr_len, "%s: zip entry '%s': bad or missing zip64 extra field", file,
                   ent->name);
        return -EPROTO;
    }
    if (disk_start != 0 && disk_start != 0xffff) {
        errstr_set(errstr, errstr_len, "%s: zip entry '%s' is on another disk", file, ent->name);
        return -EPROTO;
    }
    if (csize != usize) {
        errstr_set(errstr, errstr_len,
                   "%s: zip entry '%s': stored sizes disagree (%llu compressed, %llu not)", file,
                   ent->name, (unsigned long long)csize, (unsigned long long)usize);
        return -EPROTO;
    }

    /* Local header: its extra field differs from the central one (torch pads it). */
    if (local > dir->offset || dir->offset - local < ZIP_LOCAL_LEN) {
        errstr_set(errstr, errstr_len,
                   "%s: zip entry '%s': local header offset %llu is outside "
                   "the archive",
                   file, ent->name, (unsigned long long)local);
        return -EPROTO;
    }
    const uint8_t *l = buf + local;
    if (load_le32(l) != ZIP_SIG_LOCAL) {
        errstr_set(errstr, errstr_len, "%s: zip entry '%s': bad local header signature at %llu",
                   file, ent->name, (unsigned long long)local);
        return -EPROTO;
    }
    size_t l_name_len = load_le16(l + 26), l_extra_len = load_le16(l + 28);
    uint64_t start = local + ZIP_LOCAL_LEN + l_name_len + l_extra_len;
    if (load_le16(l + 8) != method || l_name_len != name_len || start > dir->offset ||
        memcmp(l + ZIP_LOCAL_LEN, name, name_len) != 0) {
        errstr_set(errstr, errstr_len,
                   "%s: zip entry '%s': local header at %llu disagrees with the central directory",
                   file, ent->name, (unsigned long long)local);
        return -EPROTO;
    }
    if (usize > dir->offset - start) {
        errstr_set(errstr, errstr_len,
                   "%s: zip entry '%s': %llu bytes at offset %llu run past the data area "
                   "(truncated?)",
                   file, ent->name, (unsigned long long)usize, (unsigned long long)start);
        return -EPROTO;
    }
    ent->data = buf + start;
    ent->size = usize;
    return 0;
}

int model_zip_open(const uint8_t *buf, size_t size, const char *file, struct model_zip *z,
                   char *errstr, size_t errstr_len)
{
    memset(z, 0, sizeof(*z));
    struct zip_dir dir;
    int err = zip_read_dir(buf, size, file, &dir, errstr, errstr_len);
    if (err) {
        return err;
    }
    if (dir.offset > dir.end || dir.size > dir.end - dir.offset) {
        errstr_set(errstr, errstr_len,
                   "%s: zip central directory [%llu, +%llu] is outside the archive", file,
                   (unsigned long long)dir.offset, (unsigned long long)dir.size);
        return -EPROTO;
    }
    if (dir.n_entries > dir.size / ZIP_CENTRAL_LEN) {
        errstr_set(errstr, errstr_len, "%s: zip directory claims %llu entries in %llu bytes", file,
                   (unsigned long long)dir.n_entries, (unsigned long long)dir.size);
        return -EPROTO;
    }
    z->entries = xcalloc((size_t)dir.n_entries + 1, sizeof(*z->entries));
    uint64_t pos = dir.offset;
    for (uint64_t i = 0; i < dir.n_entries; i++) {
        z->n_entries++;
        err = zip_read_entry(buf, &dir, &pos, file, &z->entries[i], errstr, errstr_len);
        if (err) {
            goto fail;
        }
    }
    qsort(z->entries, z->n_entries, sizeof(*z->entries), zip_entry_cmp);
    for (size_t i = 1; i < z->n_entries; i++) {
        if (strcmp(z->entries[i].name, z->entries[i - 1].name) == 0) {
            errstr_set(errstr, errstr_len, "%s: zip entry '%s' appears twice", file,
                       z->entries[i].name);
            err = -EPROTO;
            goto fail;
        }
    }
    return 0;

fail:
    model_zip_deinit(z);
    return err;
}

void model_zip_deinit(struct model_zip *z)
{
    if (!z) {
        return;
    }
    for (size_t i = 0; i < z->n_entries; i++) {
        free(z->entries[i].name);
    }
    free(z->entries);
    z->entries = NULL;
    z->n_entries = 0;
}

const struct model_zip_entry *model_zip_find(const struct model_zip *z, const char *name)
{
    size_t lo = 0, hi = z->n_entries;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, z->entries[mid].name);
        if (c == 0) {
            return &z->entries[mid];
        }
        if (c < 0) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return NULL;
}
