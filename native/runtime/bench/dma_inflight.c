/* dma-inflight (on demand): why pcow_runtime.h asks the caller to drain DMA into the range
 * before a snapshot. An O_DIRECT pread() of 8 MiB into the range is started, a snapshot is
 * taken while it is in flight, then every cluster of the read's target is written (COW). The
 * device keeps writing the pages it pinned before the snapshot: file pages of clusters the
 * snapshot now owns. Printed per round: whether the read had completed before the snapshot,
 * the bytes missing from the active layer, and the read's bytes found in the snapshot (which
 * changed after it was taken).
 *
 *   build/dma-inflight [rounds] [dir for the O_DIRECT source, default /var/tmp]
 * The image is on /dev/shm. The drained case is the test "O_DIRECT reads drained before a
 * snapshot are in it" (tests/test_runtime.c). */
#define _GNU_SOURCE
#include "pcow_runtime.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MiB (1024ull * 1024ull)
#define LEN (8 * MiB)
#define VS (32 * MiB)

struct reader {
    uint8_t *dst;
    int fd;
    _Atomic int done;
};

static void *read_main(void *arg)
{
    struct reader *r = arg;
    ssize_t n = pread(r->fd, r->dst, LEN, 0);
    if (n != (ssize_t)LEN)
        fprintf(stderr, "dma-inflight: O_DIRECT pread returned %zd (%s)\n", n, strerror(errno));
    atomic_store(&r->done, 1);
    return NULL;
}

static int fail(const char *what, const char *msg)
{
    fprintf(stderr, "dma-inflight: %s: %s\n", what, msg);
    return 1;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 5;
    const char *dd = argc > 2 ? argv[2] : "/var/tmp";
    char src[512], img[] = "/dev/shm/pcow-dma-inflight.img", err[1024];
    snprintf(src, sizeof src, "%s/pcow-dma-inflight-XXXXXX", dd);
    int t = mkstemp(src);
    if (t < 0)
        return fail(src, strerror(errno));
    close(t);
    int fd = open(src, O_RDWR | O_DIRECT);
    unlink(src);
    uint8_t *buf = aligned_alloc(4096, LEN);
    if (fd < 0 || !buf)
        return fail("O_DIRECT source", strerror(errno));
    memset(buf, 0xD5, LEN);
    if (pwrite(fd, buf, LEN, 0) != (ssize_t)LEN)
        return fail("write of the source", strerror(errno));
    for (int it = 0; it < rounds; it++) {
        struct pcow_create_opts co = {.virtual_size = VS, .cluster_size = 64 * 1024};
        pcow_runtime *rt;
        if (pcow_create(img, &co, err, sizeof err) < 0 || pcow_runtime_open(img, 0, NULL, &rt, err, sizeof err) < 0)
            return fail(img, err);
        uint8_t *m = pcow_runtime_addr(rt);
        memset(m, 0x11, VS); /* every cluster allocated: the read pins file pages */
        uint64_t off = (uint64_t)(it % 8) * 2 * MiB;
        struct reader r = {m + off, fd, 0};
        pthread_t th;
        if (pthread_create(&th, NULL, read_main, &r) != 0)
            return fail("thread", strerror(errno));
        usleep(200); /* the read is submitted: its pages are pinned */
        int done_before = atomic_load(&r.done);
        if (pcow_runtime_snapshot(rt, "s1") < 0)
            return fail("snapshot", pcow_runtime_errmsg(rt));
        for (uint64_t i = 0; i < LEN; i += 64 * 1024)
            m[off + i] = 0x99; /* COW every cluster of the read's target */
        pthread_join(th, NULL);
        uint64_t missing = 0, in_snap = 0;
        for (uint64_t i = 0; i < LEN; i++)
            missing += m[off + i] != 0xD5 && m[off + i] != 0x99;
        if (pcow_runtime_rollback(rt, "s1") < 0)
            return fail("rollback", pcow_runtime_errmsg(rt));
        for (uint64_t i = 0; i < LEN; i++)
            in_snap += m[off + i] == 0xD5;
        printf("round %d: read completed before the snapshot: %s; bytes of the read missing from the active layer: "
               "%" PRIu64 " of %llu; found in the snapshot: %" PRIu64 "\n",
               it, done_before ? "yes" : "no", missing, (unsigned long long)LEN, in_snap);
        if (pcow_runtime_unmap(rt, err, sizeof err) < 0)
            return fail("unmap", err);
    }
    unlink(img);
    free(buf);
    close(fd);
    return 0;
}
