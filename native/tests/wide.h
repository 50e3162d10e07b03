/* Build a legal image whose declared table sizes are large and whose stored data is tiny (test
 * helper shared by tests/mkwide.c and tests/test_lib.c): pcow_create, then the directory is
 * replaced by `n` layers in a chain (ids 1..n, snapshots "s1".., the last one active), each
 * with its own L1 table in a sparse region of the file (holes). Returns 0 or -1 (message on
 * stderr). */
#ifndef PCOW_TEST_WIDE_H
#define PCOW_TEST_WIDE_H
#include "pcow.h"
#include <endian.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void wide_p32(uint8_t *p, uint32_t v) { v = htole32(v); memcpy(p, &v, 4); }
static void wide_p64(uint8_t *p, uint64_t v) { v = htole64(v); memcpy(p, &v, 8); }

static int make_wide(const char *out, uint64_t vsize, uint64_t cs, uint32_t n, uint64_t *file_size)
{
    struct pcow_create_opts o = {.virtual_size = vsize, .cluster_size = (uint32_t)cs};
    char err[1024];
    if (pcow_create(out, &o, err, sizeof err) < 0) {
        fprintf(stderr, "make_wide: %s\n", err);
        return -1;
    }
    uint64_t l2n = cs / 16, clusters = (vsize + cs - 1) / cs, l1n = (clusters + l2n - 1) / l2n;
    uint64_t l1_span = (l1n * 8 + cs - 1) / cs * cs;
    uint64_t dir_bytes = (uint64_t)n * 128, dir_span = (dir_bytes + cs - 1) / cs * cs;
    uint64_t dir_off = cs, l1_base = dir_off + dir_span;
    uint8_t *dir = calloc(1, dir_span);
    int fd = open(out, O_RDWR);
    if (!dir || fd < 0) {
        perror(out);
        free(dir);
        return -1;
    }
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *r = dir + (size_t)i * 128;
        wide_p32(r, i + 1);
        wide_p32(r + 4, i); /* parent: the previous layer (0 = bottom) */
        wide_p64(r + 8, l1_base + (uint64_t)i * l1_span);
        wide_p64(r + 16, 1700000000);
        if (i + 1 < n) {
            int nl = snprintf((char *)r + 40, 64, "s%u", i + 1);
            wide_p32(r + 32, (uint32_t)nl);
        }
    }
    /* drop the L1 pcow_create wrote (a hole now), then size the file for all L1 tables */
    int rc = 0;
    if (ftruncate(fd, (off_t)cs) < 0 || ftruncate(fd, (off_t)(l1_base + n * l1_span)) < 0 ||
        pwrite(fd, dir, dir_span, (off_t)dir_off) != (ssize_t)dir_span)
        rc = -1;
    uint32_t dcrc = pcow_crc32c(0, dir, dir_bytes);
    for (int s = 0; s < 2 && rc == 0; s++) {
        uint8_t h[2048];
        if (pread(fd, h, sizeof h, s * 2048) != (ssize_t)sizeof h) {
            rc = -1;
            break;
        }
        wide_p64(h + 72, dir_off);
        wide_p32(h + 80, n);
        wide_p32(h + 84, dcrc);
        wide_p32(h + 88, n);     /* active layer id */
        wide_p32(h + 92, n + 1); /* next layer id */
        wide_p32(h + 16, 0);
        wide_p32(h + 16, pcow_crc32c(0, h, sizeof h));
        if (pwrite(fd, h, sizeof h, s * 2048) != (ssize_t)sizeof h)
            rc = -1;
    }
    if (rc < 0)
        perror(out);
    free(dir);
    if (close(fd) < 0)
        rc = -1;
    if (file_size)
        *file_size = l1_base + n * l1_span;
    return rc;
}
#endif
