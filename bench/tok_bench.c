/* tok_bench.c - tokenizer encode throughput: encodes a text file in chunks (4 KB pieces cut at
 * UTF-8 boundaries, or lines) and reports MB/s of input, best of N runs, single thread. The ids'
 * CRC-32 (zlib's, over little-endian int32s in order) lets bench/tok_bench.sh check that the
 * sentencepiece run it compares against produced the same tokens.
 *
 * Usage: tok_bench TOKENIZER TEXT_FILE [4k|line] [REPEAT] */
#include "common/util.h"
#include "engine/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_CHUNK_BYTES 4096

struct bench_chunk {
    size_t off;
    size_t len;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n)
{
    static uint32_t table[256];
    if (table[1] == 0) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) {
                c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
            }
            table[i] = c;
        }
    }
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    }
    return ~crc;
}

/* 4 KB chunks, each end moved back off UTF-8 continuation bytes; or lines without their '\n'. */
static size_t split_chunks(const char *text, size_t len, bool lines, struct bench_chunk **out)
{
    size_t cap = len / 64 + 16, n = 0;
    struct bench_chunk *c = malloc(cap * sizeof(*c));
    for (size_t off = 0; off < len;) {
        size_t end;
        if (lines) {
            const char *nl = memchr(text + off, '\n', len - off);
            end = nl ? (size_t)(nl - text) : len;
        } else {
            end = off + BENCH_CHUNK_BYTES < len ? off + BENCH_CHUNK_BYTES : len;
            while (end < len && end > off + 1 && ((unsigned char)text[end] & 0xc0) == 0x80) {
                end--;
            }
        }
        if (n == cap) {
            cap *= 2;
            c = realloc(c, cap * sizeof(*c));
        }
        c[n].off = off;
        c[n].len = end - off;
        n++;
        off = lines ? end + 1 : end;
    }
    *out = c;
    return n;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s TOKENIZER TEXT_FILE [4k|line] [REPEAT]\n", argv[0]);
        return 2;
    }
    bool lines = argc > 3 && strcmp(argv[3], "line") == 0;
    int repeat = argc > 4 ? atoi(argv[4]) : 3;
    char errstr[ERRSTR_LEN];
    struct tok *t;
    double t0 = now_s();
    if (tok_load_file(argv[1], &t, errstr, sizeof(errstr)) != 0) {
        fprintf(stderr, "%s\n", errstr);
        return 1;
    }
    double load_s = now_s() - t0;
    char *text;
    size_t len;
    if (file_read_all(argv[2], &text, &len, errstr, sizeof(errstr)) != 0) {
        fprintf(stderr, "%s\n", errstr);
        return 1;
    }
    struct bench_chunk *chunks;
    size_t n_chunks = split_chunks(text, len, lines, &chunks);

    /* Checked pass: token count and CRC of the ids. */
    size_t n_tokens = 0;
    uint32_t crc = 0;
    for (size_t i = 0; i < n_chunks; i++) {
        int32_t *ids;
        size_t n;
        if (tok_encode(t, text + chunks[i].off, chunks[i].len, false, &ids, &n) != 0) {
            fprintf(stderr, "encode failed\n");
            return 1;
        }
        for (size_t k = 0; k < n; k++) {
            uint8_t le[4] = { (uint8_t)ids[k], (uint8_t)(ids[k] >> 8), (uint8_t)(ids[k] >> 16),
                              (uint8_t)(ids[k] >> 24) };
            crc = crc32_update(crc, le, 4);
        }
        n_tokens += n;
        free(ids);
    }

    double best = 1e30;
    for (int r = 0; r < repeat; r++) {
        double start = now_s();
        for (size_t i = 0; i < n_chunks; i++) {
            int32_t *ids;
            size_t n;
            tok_encode(t, text + chunks[i].off, chunks[i].len, false, &ids, &n);
            free(ids);
        }
        double el = now_s() - start;
        best = el < best ? el : best;
    }
    printf("judged mode=%s bytes=%zu chunks=%zu tokens=%zu crc=%08x load_s=%.3f best_s=%.3f "
           "MB/s=%.2f\n",
           lines ? "line" : "4k", len, n_chunks, n_tokens, crc, load_s, best,
           (double)len / 1e6 / best);
    free(chunks);
    free(text);
    tok_destroy(t);
    return 0;
}
