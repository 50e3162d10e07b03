/* libFuzzer target: the input is an image file. Each input is checked (pcow_check), opened
 * (pcow_open: full validation) and, when it opens, read, looked up and mapped. A second pass
 * fixes up the header and directory checksums so that mutations reach the table validation
 * behind them, runs leak/header repair, and, on images that open, snapshot/write (fine COW,
 * bitmap records)/delete/apply operations whose data must read back, followed by a check that
 * must find no corruption. The base chain is never followed (the
 * harness has no base files); stripe files named by an input simply do not exist. */
#define _GNU_SOURCE
#include "pcow.h"
#include <endian.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char path[256]; /* harness state, not the library's */

static char dirpath[256];

static void cleanup(void)
{
    unlink(path);
    rmdir(dirpath);
}

static void setup(void)
{
    if (path[0])
        return;
    /* tmpfs when there is one: repair makes writes durable, and fdatasync is free there */
    char dir[] = "/dev/shm/pcow-fuzz-XXXXXX";
    char dir2[] = "/tmp/pcow-fuzz-XXXXXX";
    char *d = mkdtemp(dir);
    if (!d)
        d = mkdtemp(dir2);
    if (!d)
        abort();
    snprintf(path, sizeof path, "%s/f.img", d);
    snprintf(dirpath, sizeof dirpath, "%s", d);
    atexit(cleanup);
}

static void put(const uint8_t *d, size_t n)
{
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    if (fd < 0)
        abort();
    if (n && write(fd, d, n) != (ssize_t)n)
        abort();
    close(fd);
}

static int count_cb(void *ctx, const struct pcow_map_extent *e)
{
    (void)e;
    return ++*(int *)ctx > 100000; /* bound the work on huge virtual sizes */
}

static void exercise(unsigned repair)
{
    struct pcow_check_result res;
    char err[1024];
    pcow_check(path, PCOW_OPEN_NO_BASE | (repair ? 0 : PCOW_OPEN_NO_LOCK), repair, &res, NULL, NULL, err, sizeof err);
    pcow_image *img;
    if (pcow_open(path, PCOW_OPEN_NO_BASE | PCOW_OPEN_NO_LOCK, &img, err, sizeof err) < 0)
        return;
    struct pcow_info in;
    pcow_get_info(img, &in);
    uint8_t buf[8192];
    uint64_t offs[3] = {0, in.virtual_size / 2, in.virtual_size > sizeof buf ? in.virtual_size - sizeof buf : 0};
    for (int i = 0; i < 3; i++)
        pcow_read(img, buf, in.virtual_size < sizeof buf ? in.virtual_size : sizeof buf, offs[i]);
    for (uint64_t vc = 0; vc < in.clusters && vc < 64; vc++) {
        struct pcow_mapping m;
        pcow_lookup(img, vc, &m);
    }
    struct pcow_extent e;
    for (uint64_t vc = 0, k = 0; k < 64 && pcow_extent_next(img, vc, &e) == 1; k++)
        vc = e.vc + e.count;
    for (uint32_t i = 0; i < pcow_layer_count(img); i++) {
        struct pcow_layer_info L;
        pcow_layer_get(img, i, &L);
    }
    int n = 0;
    pcow_map(img, count_cb, &n);
    pcow_close(img, NULL, 0);
}

static void print_msg(void *ctx, const char *sev, const char *msg)
{
    (void)ctx;
    fprintf(stderr, "  [%s] %s\n", sev, msg);
}

/* An image that passed open's validation must stay consistent through valid operations:
 * any corruption that check finds afterwards is a bug in libpcow (abort = a finding). */
static void mutate(void)
{
    pcow_image *img;
    char err[1024];
    if (pcow_open(path, PCOW_OPEN_RDWR | PCOW_OPEN_NO_BASE | PCOW_OPEN_FINE_COW, &img, err, sizeof err) < 0)
        return;
    struct pcow_info in;
    pcow_get_info(img, &in);
    if (in.l1_entries * 8 > (1u << 20)) { /* keep each run small */
        pcow_close(img, NULL, 0);
        return;
    }
    uint8_t buf[5000], got[5000];
    memset(buf, 0x5a, sizeof buf);
    uint64_t n1 = in.virtual_size < sizeof buf ? in.virtual_size : sizeof buf;
    bool wrote = !in.base_format && pcow_write(img, buf, n1, 0) == 0;
    bool snap = pcow_snapshot_create(img, "fz") == 0;
    if (!in.base_format) {
        /* fine-grained COW over the snapshot: partial entries (bitmap records when the image
         * has them), here and in the next cluster; what was written must read back */
        uint8_t b2[100];
        memset(b2, 0xa5, sizeof b2);
        uint64_t offs[2] = {0, in.cluster_size + (uint64_t)in.subunit_size + 7};
        for (int i = 0; i < 2; i++) {
            if (offs[i] + sizeof b2 > in.virtual_size)
                continue;
            if (pcow_write(img, b2, sizeof b2, offs[i]) == 0 &&
                (pcow_read(img, got, sizeof b2, offs[i]) < 0 || memcmp(got, b2, sizeof b2))) {
                fprintf(stderr, "a fine write at %llu did not read back\n", (unsigned long long)offs[i]);
                abort();
            }
        }
    }
    struct pcow_layer_info L;
    if (pcow_layer_count(img) > 2 && pcow_layer_get(img, 0, &L) == 0 && !L.active) {
        char id[16];
        snprintf(id, sizeof id, "%u", L.id);
        pcow_snapshot_delete(img, id);
    }
    /* rolling back to "fz" shows what was written before it */
    bool applied = pcow_snapshot_apply(img, "fz") == 0 && wrote && snap;
    if (applied && (pcow_read(img, got, n1, 0) < 0 || memcmp(got, buf, n1))) {
        fprintf(stderr, "rollback did not restore the snapshot's data\n");
        abort();
    }
    pcow_snapshot_delete(img, "fz");
    if (applied && (pcow_read(img, got, n1, 0) < 0 || memcmp(got, buf, n1))) {
        fprintf(stderr, "deleting a snapshot changed the active layer's data\n");
        abort();
    }
    pcow_close(img, NULL, 0);
    struct pcow_check_result res;
    if (pcow_check(path, PCOW_OPEN_NO_BASE, 0, &res, NULL, NULL, err, sizeof err) == 0 && res.corruptions) {
        fprintf(stderr, "image became corrupt after valid operations:\n");
        pcow_check(path, PCOW_OPEN_NO_BASE, 0, &res, print_msg, NULL, err, sizeof err);
        abort();
    }
}

static uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return le32toh(v); }
static uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return le64toh(v); }
static void wr32(uint8_t *p, uint32_t v) { v = htole32(v); memcpy(p, &v, 4); }

/* Recompute the directory CRC (as read through slot 0's fields, unstriped) and both slots' CRCs. */
static int fix_crcs(uint8_t *d, size_t n)
{
    if (n < 4096)
        return 0;
    uint64_t dir = rd64(d + 72);
    uint64_t cnt = rd32(d + 80);
    if (cnt && cnt <= 4096 && dir < n && cnt * 128 <= n - dir) {
        uint32_t c = pcow_crc32c(0, d + dir, cnt * 128);
        wr32(d + 84, c);
        wr32(d + 2048 + 84, c);
    }
    for (int s = 0; s < 2; s++) {
        uint8_t *h = d + s * 2048;
        wr32(h + 16, 0);
        wr32(h + 16, pcow_crc32c(0, h, 2048));
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    put(data, size);
    exercise(0);
    if (size >= 4096) {
        uint8_t *c = malloc(size);
        if (!c)
            return 0;
        memcpy(c, data, size);
        if (fix_crcs(c, size) && memcmp(c, data, size)) {
            put(c, size);
            exercise(0);
        }
        put(c, size);
        exercise(PCOW_REPAIR_ALL);
        mutate();
        free(c);
    }
    return 0;
}
