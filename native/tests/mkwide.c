/* Test helper: build a legal image whose declared table sizes are huge and whose stored data is
 * tiny, to test that open/info/map/check/convert cost follows stored data, not declared sizes.
 *   mkwide OUT VSIZE CLUSTER LAYERS
 * creates OUT (pcow_create), then replaces its directory with LAYERS layers in a chain (ids
 * 1..LAYERS, snapshots "s1".., the last one active), each with its own L1 table in a sparse
 * region of the file (holes: reading them costs nothing but the seek). */
#define _GNU_SOURCE
#include "pcow.h"
#include <endian.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void p32(uint8_t *p, uint32_t v) { v = htole32(v); memcpy(p, &v, 4); }
static void p64(uint8_t *p, uint64_t v) { v = htole64(v); memcpy(p, &v, 8); }

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: mkwide OUT VSIZE CLUSTER LAYERS\n");
        return 2;
    }
    const char *out = argv[1];
    uint64_t vsize = strtoull(argv[2], NULL, 0), cs = strtoull(argv[3], NULL, 0);
    uint32_t n = (uint32_t)strtoul(argv[4], NULL, 0);
    struct pcow_create_opts o = {.virtual_size = vsize, .cluster_size = (uint32_t)cs};
    char err[1024];
    if (pcow_create(out, &o, err, sizeof err) < 0) {
        fprintf(stderr, "mkwide: %s\n", err);
        return 1;
    }
    uint64_t l2n = cs / 16, clusters = (vsize + cs - 1) / cs, l1n = (clusters + l2n - 1) / l2n;
    uint64_t l1_span = (l1n * 8 + cs - 1) / cs * cs;
    uint64_t dir_bytes = (uint64_t)n * 128, dir_span = (dir_bytes + cs - 1) / cs * cs;
    uint64_t dir_off = cs, l1_base = dir_off + dir_span;
    uint8_t *dir = calloc(1, dir_span);
    if (!dir)
        return 1;
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *r = dir + (size_t)i * 128;
        p32(r, i + 1);
        p32(r + 4, i);                       /* parent: the previous layer (0 = bottom) */
        p64(r + 8, l1_base + (uint64_t)i * l1_span);
        p64(r + 16, 1700000000);
        if (i + 1 < n) {
            int nl = snprintf((char *)r + 40, 64, "s%u", i + 1);
            p32(r + 32, (uint32_t)nl);
        }
    }
    int fd = open(out, O_RDWR);
    if (fd < 0) {
        perror(out);
        return 1;
    }
    /* drop the L1 pcow_create wrote (a hole now), then size the file for all L1 tables */
    if (ftruncate(fd, (off_t)cs) < 0 || ftruncate(fd, (off_t)(l1_base + n * l1_span)) < 0 ||
        pwrite(fd, dir, dir_span, (off_t)dir_off) != (ssize_t)dir_span) {
        perror(out);
        return 1;
    }
    uint32_t dcrc = pcow_crc32c(0, dir, dir_bytes);
    for (int s = 0; s < 2; s++) {
        uint8_t h[2048];
        if (pread(fd, h, sizeof h, s * 2048) != (ssize_t)sizeof h) {
            perror(out);
            return 1;
        }
        p64(h + 72, dir_off);
        p32(h + 80, n);
        p32(h + 84, dcrc);
        p32(h + 88, n);      /* active layer id */
        p32(h + 92, n + 1);  /* next layer id */
        p32(h + 16, 0);
        p32(h + 16, pcow_crc32c(0, h, sizeof h));
        if (pwrite(fd, h, sizeof h, s * 2048) != (ssize_t)sizeof h) {
            perror(out);
            return 1;
        }
    }
    free(dir);
    printf("%s: %u layers, L1 %" PRIu64 " bytes each, file %" PRIu64 " bytes (sparse)\n", out, n, l1_span,
           l1_base + n * l1_span);
    return close(fd) < 0;
}
