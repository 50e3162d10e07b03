/* libpcow tests: real files in a temporary directory, no mocks. Built twice (release and
 * ASan+UBSan) by `make test`. Prints "N passed, N failed". */
#define _GNU_SOURCE
#include "pcow.h"
#include "testutil.h"
#include "wide.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <time.h>

static char tdir[256];
static char pbuf[8][512];
static int pnext;

static const char *P(const char *name)
{
    char *b = pbuf[pnext++ % 8];
    snprintf(b, 512, "%s/%s", tdir, name);
    return b;
}

static void pattern(uint8_t *b, size_t n, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        b[i] = (uint8_t)x;
    }
}

/* A bitmap whose first 64 sub-units are w0. */
static pcow_bitmap bm64(uint64_t w0)
{
    pcow_bitmap b = {{w0}};
    return b;
}

static int mk(const char *name, uint64_t vsize, uint32_t cs, const char *base)
{
    struct pcow_create_opts o = {.virtual_size = vsize, .cluster_size = cs, .base = base};
    char err[512];
    int r = pcow_create(P(name), &o, err, sizeof err);
    if (r < 0)
        fprintf(stderr, "  create %s: %s\n", name, err);
    return r;
}

static pcow_image *op(const char *name, unsigned flags)
{
    pcow_image *img = NULL;
    char err[512];
    if (pcow_open(P(name), flags, &img, err, sizeof err) < 0) {
        fprintf(stderr, "  open %s: %s\n", name, err);
        return NULL;
    }
    return img;
}

static int open_err(const char *name, unsigned flags, char *err, size_t n)
{
    pcow_image *img = NULL;
    int r = pcow_open(P(name), flags, &img, err, n);
    if (r == 0)
        pcow_close(img, NULL, 0);
    return r;
}

static int check_img(const char *name, unsigned flags, unsigned repair, struct pcow_check_result *res)
{
    char err[512];
    int r = pcow_check(P(name), flags, repair, res, NULL, NULL, err, sizeof err);
    if (r < 0)
        fprintf(stderr, "  check %s: %s\n", name, err);
    return r;
}

static void msgcat(void *ctx, const char *sev, const char *msg)
{
    char *b = ctx;
    size_t l = strlen(b);
    snprintf(b + l, 4096 - l, "[%s] %s\n", sev, msg);
}

static int rawio(const char *path, bool wr, void *buf, size_t n, off_t off)
{
    int fd = open(path, wr ? O_RDWR : O_RDONLY);
    if (fd < 0)
        return -1;
    ssize_t r = wr ? pwrite(fd, buf, n, off) : pread(fd, buf, n, off);
    close(fd);
    return r == (ssize_t)n ? 0 : -1;
}

static uint64_t fsize(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* ---------------------------------------------------------------- */

static void test_create_128g(void)
{
    CHECK(mk("big.img", 128ull << 30, 64 << 10, NULL) == 0);
    CHECK(fsize(P("big.img")) < (1 << 20));
    pcow_image *img = op("big.img", 0);
    CHECK(img);
    struct pcow_info in;
    pcow_get_info(img, &in);
    CHECK(in.virtual_size == 128ull << 30);
    CHECK(in.cluster_size == 65536);
    CHECK(in.allocated_clusters == 0);
    CHECK(in.layer_count == 1);
    CHECK(!in.dirty);
    uint8_t b[4096];
    memset(b, 0xaa, sizeof b);
    CHECKR(pcow_read(img, b, sizeof b, (128ull << 30) - 4096), img);
    for (int i = 0; i < 4096; i++)
        CHECK(b[i] == 0);
    CHECK(pcow_read(img, b, 4096, (128ull << 30) - 100) == -EINVAL);
    CHECK_CONTAINS(pcow_errmsg(img), "outside the virtual size");
    CHECK(pcow_write(img, b, 1, 0) == -EROFS);
    pcow_close(img, NULL, 0);
}

static void test_bad_create_opts(void)
{
    struct pcow_create_opts o = {.virtual_size = 1 << 20, .cluster_size = 3000};
    char err[512];
    CHECK(pcow_create(P("bad.img"), &o, err, sizeof err) == -EINVAL);
    CHECK_CONTAINS(err, "cluster size 3000");
    o.cluster_size = 4 << 20;
    CHECK(pcow_create(P("bad.img"), &o, err, sizeof err) == -EINVAL);
    o.cluster_size = 0;
    o.virtual_size = 0;
    CHECK(pcow_create(P("bad.img"), &o, err, sizeof err) == -EINVAL);
    CHECK_CONTAINS(err, "virtual size");
    o.virtual_size = 1 << 20;
    o.base = "missing-base.img";
    CHECK(pcow_create(P("bad.img"), &o, err, sizeof err) == -ENOENT);
    CHECK_CONTAINS(err, "does not exist");
    CHECK(access(P("missing-base.img"), F_OK) != 0); /* never created */
}

static void test_rw_roundtrip(void)
{
    CHECK(mk("rw.img", 10 << 20, 4096, NULL) == 0);
    pcow_image *img = op("rw.img", PCOW_OPEN_RDWR);
    CHECK(img);
    static uint8_t w[300000], r[300000];
    pattern(w, sizeof w, 1);
    CHECKR(pcow_write(img, w, sizeof w, 12345), img);
    CHECKR(pcow_write(img, w, 5000, 9 << 20), img);
    CHECKR(pcow_read(img, r, sizeof r, 12345), img);
    CHECK(!memcmp(w, r, sizeof w));
    struct pcow_info in;
    pcow_get_info(img, &in);
    CHECK(in.dirty);
    CHECK(in.allocated_clusters == (12345 + 300000 + 4095) / 4096 - 12345 / 4096 + 2);
    CHECK(pcow_write(img, w, 10, (10 << 20) - 5) == -EINVAL);
    CHECKR(pcow_close(img, NULL, 0), (pcow_image *)NULL);
    img = op("rw.img", 0);
    CHECK(img);
    pcow_get_info(img, &in);
    CHECK(!in.dirty);
    memset(r, 0, sizeof r);
    CHECKR(pcow_read(img, r, sizeof r, 12345), img);
    CHECK(!memcmp(w, r, sizeof w));
    CHECKR(pcow_read(img, r, 100, 12345 - 100), img);
    for (int i = 0; i < 100; i++)
        CHECK(r[i] == 0);
    /* extents: sequential allocation is file-contiguous */
    struct pcow_extent e;
    CHECK(pcow_extent_next(img, 0, &e) == 1);
    CHECK(!e.allocated && e.count == 3);
    CHECK(pcow_extent_next(img, 3, &e) == 1);
    CHECK(e.allocated && e.count == 74 && !e.partial);
    struct pcow_mapping m;
    CHECKR(pcow_lookup(img, 4, &m), img);
    CHECK(m.depth == 0 && m.file == 0 && m.file_off == e.file_off + 4096 && m.file_off % 4096 == 0);
    CHECKR(pcow_lookup(img, 2, &m), img);
    CHECK(m.depth == -1 && !m.in_base);
    pcow_close(img, NULL, 0);
    struct pcow_check_result res;
    CHECK(check_img("rw.img", 0, 0, &res) == 0);
    CHECK(res.corruptions == 0 && res.leaks == 0 && res.check_errors == 0);
}

static void test_lock(void)
{
    CHECK(mk("lock.img", 1 << 20, 4096, NULL) == 0);
    pcow_image *a = op("lock.img", PCOW_OPEN_RDWR);
    CHECK(a);
    char err[512];
    CHECK(open_err("lock.img", PCOW_OPEN_RDWR, err, sizeof err) == -EAGAIN);
    CHECK_CONTAINS(err, "locked by another process");
    CHECK(open_err("lock.img", 0, err, sizeof err) == -EAGAIN);
    CHECK(open_err("lock.img", PCOW_OPEN_NO_LOCK, err, sizeof err) == 0);
    struct pcow_create_opts o = {.virtual_size = 1 << 20};
    CHECK(pcow_create(P("lock.img"), &o, err, sizeof err) == -EAGAIN);
    pcow_close(a, NULL, 0);
    CHECK(open_err("lock.img", PCOW_OPEN_RDWR, err, sizeof err) == 0);
}

static int read_eq(pcow_image *img, uint64_t off, const uint8_t *want, size_t n)
{
    uint8_t *b = malloc(n ? n : 1);
    int ok = b && pcow_read(img, b, n, off) == 0 && !memcmp(b, want, n);
    free(b);
    return ok;
}

static void snapshots(bool fine)
{
    const char *name = fine ? "snapf.img" : "snap.img";
    CHECK(mk(name, 4 << 20, 65536, NULL) == 0);
    pcow_image *img = op(name, PCOW_OPEN_RDWR | (fine ? PCOW_OPEN_FINE_COW : 0));
    CHECK(img);
    static uint8_t A[200000], B[200000], C[5000], Z[200000];
    pattern(A, sizeof A, 11);
    pattern(B, sizeof B, 12);
    pattern(C, sizeof C, 13);
    CHECKR(pcow_write(img, A, sizeof A, 0), img);
    CHECKR(pcow_snapshot_create(img, "s1"), img);
    CHECK(pcow_snapshot_create(img, "s1") == -EEXIST);
    CHECK(read_eq(img, 0, A, sizeof A));
    CHECKR(pcow_write(img, C, sizeof C, 70000), img); /* COW inside cluster 1 */
    struct pcow_mapping m;
    CHECKR(pcow_lookup(img, 1, &m), img);
    CHECK(m.depth == 0);
    CHECK(m.partial == fine);
    if (fine)
        CHECK(m.bitmap.w[0] == 0x6); /* 70000..75000 is 4464..9464 in cluster 1: sub-units 1 and 2 */
    CHECKR(pcow_lookup(img, 0, &m), img);
    CHECK(m.depth == 1);
    uint8_t AC[200000];
    memcpy(AC, A, sizeof A);
    memcpy(AC + 70000, C, sizeof C);
    CHECK(read_eq(img, 0, AC, sizeof AC));
    CHECKR(pcow_snapshot_create(img, "s2"), img);
    CHECKR(pcow_write(img, B, sizeof B, 100000), img);
    uint8_t ACB[300000];
    memcpy(ACB, AC, sizeof AC);
    memcpy(ACB + 100000, B, sizeof B);
    CHECK(read_eq(img, 0, ACB, sizeof ACB));
    /* rollback to s1: state A; s2 stays available */
    CHECKR(pcow_snapshot_apply(img, "s1"), img);
    CHECK(read_eq(img, 0, A, sizeof A));
    CHECK(read_eq(img, sizeof A, Z, 100000));
    CHECKR(pcow_snapshot_apply(img, "s2"), img);
    CHECK(read_eq(img, 0, AC, sizeof AC));
    CHECK(pcow_snapshot_apply(img, "nope") == -ENOENT);
    CHECK_CONTAINS(pcow_errmsg(img), "no snapshot named 'nope'");
    CHECKR(pcow_write(img, B, sizeof B, 100000), img);
    /* delete s1 (merged into s2), then s2 (merged into the active layer) */
    CHECKR(pcow_snapshot_delete(img, "s1"), img);
    CHECK(read_eq(img, 0, ACB, sizeof ACB));
    CHECKR(pcow_close(img, NULL, 0), (pcow_image *)NULL);
    img = op(name, PCOW_OPEN_RDWR);
    CHECK(img);
    CHECK(pcow_layer_count(img) == 2);
    CHECK(read_eq(img, 0, ACB, sizeof ACB));
    CHECKR(pcow_snapshot_apply(img, "s2"), img);
    CHECK(read_eq(img, 0, AC, sizeof AC));
    CHECKR(pcow_write(img, B, sizeof B, 100000), img);
    CHECKR(pcow_snapshot_delete(img, "s2"), img);
    CHECK(pcow_layer_count(img) == 1);
    CHECK(read_eq(img, 0, ACB, sizeof ACB));
    pcow_close(img, NULL, 0);
    struct pcow_check_result res;
    CHECK(check_img(name, 0, 0, &res) == 0);
    CHECK(res.corruptions == 0 && res.leaks == 0);
    img = op(name, 0);
    CHECK(img);
    CHECK(read_eq(img, 0, ACB, sizeof ACB));
    pcow_close(img, NULL, 0);
}

static void test_snapshots_full(void) { snapshots(false); }
static void test_snapshots_fine(void) { snapshots(true); }

static void test_snapshot_branches(void)
{
    /* a snapshot with two children (after a rollback) is copied into one and moved into the other */
    CHECK(mk("br.img", 1 << 20, 4096, NULL) == 0);
    pcow_image *img = op("br.img", PCOW_OPEN_RDWR | PCOW_OPEN_FINE_COW);
    CHECK(img);
    static uint8_t A[20000], B[3000], C[3000];
    pattern(A, sizeof A, 21);
    pattern(B, sizeof B, 22);
    pattern(C, sizeof C, 23);
    CHECKR(pcow_write(img, A, sizeof A, 0), img);
    CHECKR(pcow_snapshot_create(img, "base"), img);
    CHECKR(pcow_write(img, B, sizeof B, 100), img);
    CHECKR(pcow_snapshot_create(img, "b1"), img);
    CHECKR(pcow_snapshot_apply(img, "base"), img);
    CHECKR(pcow_write(img, C, sizeof C, 9000), img);
    CHECKR(pcow_snapshot_delete(img, "base"), img);
    uint8_t want[20000];
    memcpy(want, A, sizeof A);
    memcpy(want + 9000, C, sizeof C);
    CHECK(read_eq(img, 0, want, sizeof want));
    CHECKR(pcow_snapshot_apply(img, "b1"), img);
    memcpy(want, A, sizeof A);
    memcpy(want + 100, B, sizeof B);
    CHECK(read_eq(img, 0, want, sizeof want));
    pcow_close(img, NULL, 0);
    struct pcow_check_result res;
    CHECK(check_img("br.img", 0, 0, &res) == 0);
    CHECK(res.corruptions == 0 && res.leaks == 0);
}

static void test_fine_cow_api(void)
{
    CHECK(mk("fine.img", 1 << 20, 65536, NULL) == 0);
    pcow_image *img = op("fine.img", PCOW_OPEN_RDWR);
    CHECK(img);
    static uint8_t A[65536], X[4096];
    pattern(A, sizeof A, 31);
    pattern(X, sizeof X, 32);
    CHECKR(pcow_write(img, A, sizeof A, 65536), img);
    CHECKR(pcow_snapshot_create(img, "s"), img);
    /* the runtime's path: reserve, write own data, persist, map partial, add sub-units */
    uint64_t addr;
    CHECKR(pcow_reserve(img, 1, &addr), img);
    struct pcow_stripe s;
    CHECK(pcow_stripe_get(img, 0, &s) == 0);
    uint32_t f;
    uint64_t off;
    pcow_addr_to_file(img, addr, &f, &off);
    CHECK(f == 0 && off % 65536 == 0);
    CHECK(pwrite(s.fd, X, sizeof X, (off_t)(off + 3 * 4096)) == 4096);
    CHECK(fdatasync(s.fd) == 0);
    pcow_bitmap b3 = bm64(1u << 3), b5 = bm64(1u << 5), b16 = bm64(1ull << 16), b1 = bm64(1);
    CHECKR(pcow_map_cluster(img, 1, addr, true, &b3), img);
    CHECK(pcow_map_cluster(img, 1, addr, true, &b3) == -EEXIST);
    uint8_t want[65536];
    memcpy(want, A, sizeof A);
    memcpy(want + 3 * 4096, X, sizeof X);
    CHECK(read_eq(img, 65536, want, sizeof want));
    CHECK(pwrite(s.fd, X, sizeof X, (off_t)(off + 5 * 4096)) == 4096);
    CHECKR(pcow_set_subunits(img, 1, &b5), img);
    memcpy(want + 5 * 4096, X, sizeof X);
    CHECK(pcow_set_subunits(img, 1, &b16) == -EINVAL);
    pcow_close(img, NULL, 0);
    img = op("fine.img", PCOW_OPEN_RDWR);
    CHECK(img);
    struct pcow_entry e;
    CHECK(pcow_entry_get(img, 1, 1, &e) == 0);
    CHECK(e.partial && e.bitmap.w[0] == ((1u << 3) | (1u << 5)) && e.addr == addr);
    CHECK(read_eq(img, 65536, want, sizeof want));
    CHECKR(pcow_alloc_cluster(img, 1, false, NULL), img); /* fill the rest from below */
    CHECK(pcow_entry_get(img, 1, 1, &e) == 0);
    CHECK(e.bitmap.w[0] == 0xffff);
    CHECK(read_eq(img, 65536, want, sizeof want));
    CHECKR(pcow_alloc_cluster(img, 5, true, &b1), img);
    CHECK(pcow_entry_get(img, 1, 5, &e) == 0);
    CHECK(e.partial && e.bitmap.w[0] == 1);
    pcow_close(img, NULL, 0);
    struct pcow_check_result res;
    CHECK(check_img("fine.img", 0, 0, &res) == 0);
    CHECK(res.corruptions == 0 && res.leaks == 0);
}

static void test_base_chain(void)
{
    /* raw <- b1 <- b2 <- top, each layer writes its own region */
    static uint8_t R[1 << 20], X[50000], Y[50000], Z[50000], want[1 << 20], got[1 << 20];
    pattern(R, sizeof R, 41);
    pattern(X, sizeof X, 42);
    pattern(Y, sizeof Y, 43);
    pattern(Z, sizeof Z, 44);
    CHECK(rawio(P("chain-raw.img"), false, NULL, 0, 0) != 0 || 1);
    int fd = open(P("chain-raw.img"), O_CREAT | O_RDWR | O_TRUNC, 0644);
    CHECK(fd >= 0);
    CHECK(write(fd, R, sizeof R) == (ssize_t)sizeof R);
    close(fd);
    CHECK(mk("chain-b1.img", 0, 4096, "chain-raw.img") == 0);
    CHECK(mk("chain-b2.img", 0, 16384, "chain-b1.img") == 0);
    CHECK(mk("chain-top.img", 0, 65536, "chain-b2.img") == 0);
    pcow_image *img = op("chain-b1.img", PCOW_OPEN_RDWR);
    CHECK(img);
    CHECKR(pcow_write(img, X, sizeof X, 1000), img);
    pcow_close(img, NULL, 0);
    img = op("chain-b2.img", PCOW_OPEN_RDWR);
    CHECK(img);
    CHECKR(pcow_write(img, Y, sizeof Y, 200000), img);
    pcow_close(img, NULL, 0);
    img = op("chain-top.img", PCOW_OPEN_RDWR);
    CHECK(img);
    CHECKR(pcow_write(img, Z, sizeof Z, 600000), img);
    memcpy(want, R, sizeof R);
    memcpy(want + 1000, X, sizeof X);
    memcpy(want + 200000, Y, sizeof Y);
    memcpy(want + 600000, Z, sizeof Z);
    CHECKR(pcow_read(img, got, sizeof got, 0), img);
    CHECK(!memcmp(got, want, sizeof want));
    struct pcow_info in;
    pcow_get_info(img, &in);
    CHECK(in.virtual_size == sizeof R);
    CHECK(in.base_format == PCOW_BASE_PCOW);
    CHECK(strstr(in.base_resolved, "/chain-b2.img"));
    CHECK(pcow_base_image(img) && pcow_base_image(pcow_base_image(img)));
    /* map: depth 0 for own data, deeper for the chain */
    /* safe rebase onto b1 (drops b2): Y must be copied into top */
    CHECKR(pcow_rebase(img, "chain-b1.img", 0, false), img);
    CHECKR(pcow_read(img, got, sizeof got, 0), img);
    CHECK(!memcmp(got, want, sizeof want));
    pcow_close(img, NULL, 0);
    img = op("chain-top.img", PCOW_OPEN_RDWR);
    CHECK(img);
    CHECKR(pcow_read(img, got, sizeof got, 0), img);
    CHECK(!memcmp(got, want, sizeof want));
    /* rebase onto itself or into a loop fails clearly */
    CHECK(pcow_rebase(img, "chain-top.img", 0, true) == -ELOOP);
    CHECK_CONTAINS(pcow_errmsg(img), "loop");
    /* commit top into b1: b1 now holds Y and Z, top is empty */
    CHECKR(pcow_commit(img), img);
    pcow_get_info(img, &in);
    CHECK(in.allocated_clusters == 0);
    CHECKR(pcow_read(img, got, sizeof got, 0), img);
    CHECK(!memcmp(got, want, sizeof want));
    pcow_close(img, NULL, 0);
    img = op("chain-b1.img", 0);
    CHECK(img);
    CHECKR(pcow_read(img, got, sizeof got, 0), img);
    CHECK(!memcmp(got, want, sizeof want));
    pcow_close(img, NULL, 0);
    /* unsafe rebase: only the reference changes, so top now shows the raw file directly */
    img = op("chain-top.img", PCOW_OPEN_RDWR);
    CHECK(img);
    CHECKR(pcow_rebase(img, "chain-raw.img", PCOW_BASE_RAW, true), img);
    CHECKR(pcow_read(img, got, sizeof got, 0), img);
    CHECK(!memcmp(got, R, sizeof R));
    /* commit with snapshots is refused */
    CHECKR(pcow_snapshot_create(img, "s"), img);
    CHECK(pcow_commit(img) == -EBUSY);
    CHECK_CONTAINS(pcow_errmsg(img), "snapshot");
    pcow_close(img, NULL, 0);
    struct pcow_check_result res;
    CHECK(check_img("chain-top.img", 0, 0, &res) == 0);
    CHECK(res.corruptions == 0 && res.leaks == 0 && res.check_errors == 0);
}

static void test_commit_into_raw(void)
{
    static uint8_t R[300000], X[70000], got[300000];
    pattern(R, sizeof R, 51);
    pattern(X, sizeof X, 52);
    int fd = open(P("cr-raw.img"), O_CREAT | O_RDWR | O_TRUNC, 0644);
    CHECK(fd >= 0);
    CHECK(write(fd, R, sizeof R) == (ssize_t)sizeof R);
    close(fd);
    CHECK(mk("cr.img", 0, 4096, "cr-raw.img") == 0);
    pcow_image *img = op("cr.img", PCOW_OPEN_RDWR | PCOW_OPEN_FINE_COW);
    CHECK(img);
    CHECKR(pcow_write(img, X, sizeof X, 5), img);
    CHECKR(pcow_commit(img), img);
    pcow_close(img, NULL, 0);
    memcpy(R + 5, X, sizeof X);
    CHECK(rawio(P("cr-raw.img"), false, got, sizeof got, 0) == 0);
    CHECK(!memcmp(got, R, sizeof R));
}

static void test_base_paths(void)
{
    char err[512];
    mkdir(P("sub"), 0755);
    int fd = open(P("outside.raw"), O_CREAT | O_RDWR | O_TRUNC, 0644);
    CHECK(fd >= 0);
    CHECK(ftruncate(fd, 1 << 20) == 0);
    close(fd);
    struct pcow_create_opts o = {.virtual_size = 1 << 20, .base = "../outside.raw"};
    CHECK(pcow_create(P("sub/esc.img"), &o, err, sizeof err) == -EPERM);
    CHECK_CONTAINS(err, "escapes the image's directory");
    o.allow_unsafe_base = true;
    CHECK(pcow_create(P("sub/esc.img"), &o, err, sizeof err) == 0);
    CHECK(open_err("sub/esc.img", 0, err, sizeof err) == -EPERM);
    CHECK_CONTAINS(err, "'..'");
    CHECK(open_err("sub/esc.img", PCOW_OPEN_UNSAFE_BASE, err, sizeof err) == 0);
    o.base = P("outside.raw"); /* absolute */
    o.allow_unsafe_base = false;
    CHECK(pcow_create(P("sub/abs.img"), &o, err, sizeof err) == -EPERM);
    CHECK_CONTAINS(err, "absolute");
    o.allow_unsafe_base = true;
    CHECK(pcow_create(P("sub/abs.img"), &o, err, sizeof err) == 0);
    CHECK(open_err("sub/abs.img", 0, err, sizeof err) == -EPERM);
    CHECK(open_err("sub/abs.img", PCOW_OPEN_UNSAFE_BASE, err, sizeof err) == 0);
    /* a symlink inside the directory that leads out of it */
    unlink(P("sub/link.raw"));
    CHECK(symlink("../outside.raw", P("sub/link.raw")) == 0);
    o.base = "link.raw";
    o.allow_unsafe_base = false;
    o.no_base_check = true;
    o.base_format = PCOW_BASE_RAW;
    CHECK(pcow_create(P("sub/sym.img"), &o, err, sizeof err) == 0);
    CHECK(open_err("sub/sym.img", 0, err, sizeof err) == -EPERM);
    CHECK_CONTAINS(err, "symlink");
    /* a base that goes missing is reported, never created */
    o.base = "gone.raw";
    CHECK(pcow_create(P("sub/gone.img"), &o, err, sizeof err) == 0);
    CHECK(open_err("sub/gone.img", 0, err, sizeof err) == -ENOENT);
    CHECK_CONTAINS(err, "gone.raw");
    CHECK(access(P("sub/gone.raw"), F_OK) != 0);
    /* over-long base path */
    char longp[700];
    memset(longp, 'a', sizeof longp - 1);
    longp[sizeof longp - 1] = 0;
    o.base = longp;
    CHECK(pcow_create(P("sub/long.img"), &o, err, sizeof err) == -ENAMETOOLONG);
}

static void test_base_loop(void)
{
    char err[512];
    CHECK(mk("loop-a.img", 1 << 20, 4096, NULL) == 0);
    CHECK(mk("loop-b.img", 0, 4096, "loop-a.img") == 0);
    struct pcow_create_opts o = {.virtual_size = 1 << 20, .base = "loop-b.img", .no_base_check = true,
                                 .base_format = PCOW_BASE_PCOW};
    CHECK(pcow_create(P("loop-a.img"), &o, err, sizeof err) == 0);
    CHECK(open_err("loop-a.img", 0, err, sizeof err) == -ELOOP);
    CHECK_CONTAINS(err, "loop");
    struct pcow_check_result res;
    char msgs[4096] = "";
    CHECK(pcow_check(P("loop-a.img"), 0, 0, &res, msgcat, msgs, err, sizeof err) == 0);
    CHECK(res.corruptions == 1);
    CHECK_CONTAINS(msgs, "loop");
    /* self reference */
    o.base = "self.img";
    CHECK(pcow_create(P("self.img"), &o, err, sizeof err) == 0);
    CHECK(open_err("self.img", 0, err, sizeof err) == -ELOOP);
    /* opening without the base still works (inspection) */
    CHECK(open_err("self.img", PCOW_OPEN_NO_BASE, err, sizeof err) == 0);
}

/* helpers to damage images */
static uint64_t l2_addr(const char *name, uint64_t idx)
{
    pcow_image *img = op(name, PCOW_OPEN_NO_BASE);
    if (!img)
        return 0;
    struct pcow_layer_info L;
    uint32_t n = pcow_layer_count(img);
    pcow_layer_get(img, n - 1, &L);
    pcow_close(img, NULL, 0);
    uint64_t a = 0;
    rawio(P(name), false, &a, 8, (off_t)(L.l1_offset + idx * 8));
    return a;
}

static void test_corrupt_truncated(void)
{
    char err[512];
    CHECK(mk("trunc.img", 1 << 20, 4096, NULL) == 0);
    pcow_image *img = op("trunc.img", PCOW_OPEN_RDWR);
    CHECK(img);
    static uint8_t A[40000];
    pattern(A, sizeof A, 61);
    CHECKR(pcow_write(img, A, sizeof A, 0), img);
    pcow_close(img, NULL, 0);
    uint64_t sz = fsize(P("trunc.img"));
    CHECK(truncate(P("trunc.img"), (off_t)(sz - 3 * 4096)) == 0);
    CHECK(open_err("trunc.img", 0, err, sizeof err) == -EUCLEAN);
    CHECK_CONTAINS(err, "lies outside the file");
    struct pcow_check_result res;
    CHECK(check_img("trunc.img", 0, PCOW_REPAIR_LEAKS, &res) == 0);
    CHECK(res.corruptions >= 1 && res.leaks_fixed == 0);
    CHECK(truncate(P("trunc.img"), 3000) == 0);
    CHECK(open_err("trunc.img", 0, err, sizeof err) < 0);
    CHECK_CONTAINS(err, "trunc.img");
    CHECK(truncate(P("trunc.img"), 0) == 0);
    CHECK(open_err("trunc.img", 0, err, sizeof err) == -EUCLEAN);
    CHECK_CONTAINS(err, "not a pcow image");
}

static void test_corrupt_header(void)
{
    char err[512];
    CHECK(mk("hdr.img", 1 << 20, 4096, NULL) == 0);
    uint8_t b;
    CHECK(rawio(P("hdr.img"), false, &b, 1, 64) == 0); /* virtual size byte, slot 0 */
    b ^= 0x10;
    CHECK(rawio(P("hdr.img"), true, &b, 1, 64) == 0);
    CHECK(open_err("hdr.img", 0, err, sizeof err) == 0); /* slot 1 is used */
    struct pcow_check_result res;
    char msgs[4096] = "";
    CHECK(pcow_check(P("hdr.img"), 0, 0, &res, msgcat, msgs, err, sizeof err) == 0);
    CHECK(res.corruptions == 1);
    CHECK_CONTAINS(msgs, "header slot 0 is damaged (header checksum mismatch");
    CHECK(check_img("hdr.img", 0, PCOW_REPAIR_ALL, &res) == 0);
    CHECK(res.corruptions == 0 && res.corruptions_fixed == 1);
    CHECK(check_img("hdr.img", 0, 0, &res) == 0);
    CHECK(res.corruptions == 0);
    /* both slots damaged */
    CHECK(rawio(P("hdr.img"), false, &b, 1, 64) == 0);
    b ^= 0x10;
    CHECK(rawio(P("hdr.img"), true, &b, 1, 64) == 0);
    CHECK(rawio(P("hdr.img"), true, &b, 1, 2048 + 64) == 0);
    CHECK(open_err("hdr.img", 0, err, sizeof err) == -EUCLEAN);
    CHECK_CONTAINS(err, "no valid header");
    CHECK(pcow_check(P("hdr.img"), 0, 0, &res, NULL, NULL, err, sizeof err) == 0);
    CHECK(res.corruptions == 1);
    /* a version changed without its checksum is damage, not a newer version (test_header_versions) */
    CHECK(mk("ver.img", 1 << 20, 4096, NULL) == 0);
    uint32_t v = 7;
    CHECK(rawio(P("ver.img"), true, &v, 4, 8) == 0);
    CHECK(rawio(P("ver.img"), true, &v, 4, 2048 + 8) == 0);
    CHECK(open_err("ver.img", 0, err, sizeof err) == -EUCLEAN);
    CHECK_CONTAINS(err, "checksum mismatch");
    /* a well-formed header with a bad value: recompute the checksum after changing the
     * cluster bits to 30 */
    CHECK(mk("cb.img", 1 << 20, 4096, NULL) == 0);
    for (int s = 0; s < 2; s++) {
        uint8_t h[2048];
        CHECK(rawio(P("cb.img"), false, h, sizeof h, s * 2048) == 0);
        uint32_t cb = 30, z = 0;
        memcpy(h + 56, &cb, 4);
        memcpy(h + 16, &z, 4);
        uint32_t c = pcow_crc32c(0, h, sizeof h);
        memcpy(h + 16, &c, 4);
        CHECK(rawio(P("cb.img"), true, h, sizeof h, s * 2048) == 0);
    }
    CHECK(open_err("cb.img", 0, err, sizeof err) == -EUCLEAN);
    CHECK_CONTAINS(err, "cluster bits 30");
    /* directory checksum */
    CHECK(mk("dir.img", 1 << 20, 4096, NULL) == 0);
    b = 0x55;
    CHECK(rawio(P("dir.img"), true, &b, 1, 4096 + 20) == 0);
    CHECK(open_err("dir.img", 0, err, sizeof err) == -EUCLEAN);
    CHECK_CONTAINS(err, "layer directory");
}

/* Rewrite a u32 header field in both slots with valid checksums. */
static int set_hdr32(const char *name, int off, uint32_t val)
{
    for (int s = 0; s < 2; s++) {
        uint8_t h[2048];
        if (rawio(P(name), false, h, sizeof h, s * 2048))
            return -1;
        uint32_t z = 0;
        memcpy(h + off, &val, 4);
        memcpy(h + 16, &z, 4);
        uint32_t c = pcow_crc32c(0, h, sizeof h);
        memcpy(h + 16, &c, 4);
        if (rawio(P(name), true, h, sizeof h, s * 2048))
            return -1;
    }
    return 0;
}

static void test_layer_id_exhausted(void)
{
    /* found by the fuzzer: ids must not wrap to 0 */
    CHECK(mk("ids.img", 1 << 20, 4096, NULL) == 0);
    CHECK(set_hdr32("ids.img", 92, UINT32_MAX) == 0);
    pcow_image *img = op("ids.img", PCOW_OPEN_RDWR);
    CHECK(img);
    CHECK(pcow_snapshot_create(img, "s") == -ENOSPC);
    CHECK_CONTAINS(pcow_errmsg(img), "layer ids are exhausted");
    pcow_close(img, NULL, 0);
    CHECK(set_hdr32("ids.img", 92, UINT32_MAX - 1) == 0);
    img = op("ids.img", PCOW_OPEN_RDWR);
    CHECK(img);
    CHECKR(pcow_snapshot_create(img, "s"), img);
    CHECK(pcow_snapshot_apply(img, "s") == -ENOSPC);
    pcow_close(img, NULL, 0);
    struct pcow_check_result res;
    CHECK(check_img("ids.img", 0, 0, &res) == 0);
    CHECK(res.corruptions == 0);
}

static void test_corrupt_tables(void)
{
    char err[512];
    static uint8_t A[3 * 4096];
    pattern(A, sizeof A, 71);
    const char *names[] = {"tb-out.img", "tb-ovl.img", "tb-meta.img", "tb-bits.img", "tb-l1.img"};
    for (int i = 0; i < 5; i++) {
        CHECK(mk(names[i], 1 << 20, 4096, NULL) == 0);
        pcow_image *img = op(names[i], PCOW_OPEN_RDWR);
        CHECK(img);
        CHECKR(pcow_write(img, A, sizeof A, 0), img);
        pcow_close(img, NULL, 0);
    }
    uint64_t l2 = l2_addr("tb-out.img", 0), v;
    CHECK(l2);
    v = 0x40000000; /* far outside */
    CHECK(rawio(P("tb-out.img"), true, &v, 8, (off_t)l2) == 0);
    CHECK(open_err("tb-out.img", 0, err, sizeof err) == -EUCLEAN);
    CHECK_CONTAINS(err, "lies outside the file");
    CHECK_CONTAINS(err, "tb-out.img");
    l2 = l2_addr("tb-ovl.img", 0);
    CHECK(rawio(P("tb-ovl.img"), false, &v, 8, (off_t)l2) == 0); /* entry 0's cluster */
    CHECK(rawio(P("tb-ovl.img"), true, &v, 8, (off_t)(l2 + 16)) == 0);
    CHECK(open_err("tb-ovl.img", 0, err, sizeof err) == -EUCLEAN);
    CHECK_CONTAINS(err, "overlaps");
    l2 = l2_addr("tb-meta.img", 0);
    CHECK(rawio(P("tb-meta.img"), true, &l2, 8, (off_t)l2) == 0); /* data = the L2 table itself */
    CHECK(open_err("tb-meta.img", 0, err, sizeof err) == -EUCLEAN);
    CHECK_CONTAINS(err, "overlaps");
    l2 = l2_addr("tb-bits.img", 0);
    CHECK(rawio(P("tb-bits.img"), false, &v, 8, (off_t)l2) == 0);
    v |= 0x6;
    CHECK(rawio(P("tb-bits.img"), true, &v, 8, (off_t)l2) == 0);
    CHECK(open_err("tb-bits.img", 0, err, sizeof err) == -EUCLEAN);
    CHECK_CONTAINS(err, "reserved bits");
    pcow_image *img = op("tb-l1.img", 0);
    CHECK(img);
    struct pcow_layer_info L;
    pcow_layer_get(img, 0, &L);
    pcow_close(img, NULL, 0);
    v = 4096 * 1000 + 7;
    CHECK(rawio(P("tb-l1.img"), true, &v, 8, (off_t)L.l1_offset) == 0);
    CHECK(open_err("tb-l1.img", 0, err, sizeof err) == -EUCLEAN);
    CHECK_CONTAINS(err, "L2 table 0 of layer 1");
    /* check counts instead of failing, and does not repair leaks over corruption */
    struct pcow_check_result res;
    char msgs[4096] = "";
    CHECK(pcow_check(P("tb-ovl.img"), 0, PCOW_REPAIR_LEAKS, &res, msgcat, msgs, err, sizeof err) == 0);
    CHECK(res.corruptions == 1 && res.leaks_fixed == 0);
    CHECK_CONTAINS(msgs, "not repairing leaks");
}

/* 4 KiB sub-units at 2 MiB clusters: 512 per cluster, bitmaps in 64-byte records */
static void test_fine_2m(void)
{
    const uint64_t C = 2 << 20;
    CHECK(mk("f2m.img", 8 * C, (uint32_t)C, NULL) == 0);
    pcow_image *img = op("f2m.img", PCOW_OPEN_RDWR);
    CHECK(img);
    struct pcow_info in;
    pcow_get_info(img, &in);
    CHECK(in.subunit_size == 4096 && in.subunits_per_cluster == 512 && in.incompat_features == 2);
    static uint8_t A[4 << 20], X[4096 * 3], got[2 << 20];
    pattern(A, sizeof A, 81);
    pattern(X, sizeof X, 82);
    CHECKR(pcow_write(img, A, sizeof A, 0), img);
    CHECKR(pcow_snapshot_create(img, "s"), img);
    pcow_close(img, NULL, 0);
    img = op("f2m.img", PCOW_OPEN_RDWR | PCOW_OPEN_FINE_COW);
    CHECK(img);
    /* sub-units 63..66 of cluster 0 (across a bitmap word) and the last one of cluster 1 */
    CHECKR(pcow_write(img, X, sizeof X, 63 * 4096 + 100), img);
    CHECKR(pcow_write(img, X, 4096, 2 * C - 4096), img);
    static uint8_t want[4 << 20];
    memcpy(want, A, sizeof A);
    memcpy(want + 63 * 4096 + 100, X, sizeof X);
    memcpy(want + 2 * C - 4096, X, 4096);
    struct pcow_mapping m;
    CHECKR(pcow_lookup(img, 0, &m), img);
    CHECK(m.depth == 0 && m.partial && m.bitmap.w[0] == 1ull << 63 && m.bitmap.w[1] == 0x7 && !m.bitmap.w[7]);
    CHECKR(pcow_lookup(img, 1, &m), img);
    CHECK(m.partial && m.bitmap.w[7] == 1ull << 63 && !m.bitmap.w[0]);
    CHECK(read_eq(img, 0, want, sizeof want));
    /* the runtime's calls: map a partial cluster, then add sub-units in another word */
    uint64_t addr;
    CHECKR(pcow_reserve(img, 1, &addr), img);
    struct pcow_stripe st;
    CHECK(pcow_stripe_get(img, 0, &st) == 0);
    CHECK(pwrite(st.fd, X, 4096, (off_t)(addr + 200 * 4096)) == 4096);
    CHECK(fdatasync(st.fd) == 0);
    pcow_bitmap b = {{0}};
    pcow_bitmap_set(&b, 200);
    CHECKR(pcow_map_cluster(img, 5, addr, true, &b), img);
    CHECK(pwrite(st.fd, X + 4096, 4096, (off_t)(addr + 511 * 4096)) == 4096);
    CHECK(fdatasync(st.fd) == 0);
    pcow_bitmap b2 = {{0}};
    pcow_bitmap_set(&b2, 511);
    CHECKR(pcow_set_subunits(img, 5, &b2), img);
    pcow_bitmap bad = {{0}};
    bad.w[7] = 1; /* fine: bit 448 */
    CHECKR(pcow_set_subunits(img, 5, &bad), img);
    pcow_close(img, NULL, 0);
    struct pcow_check_result res;
    CHECK(check_img("f2m.img", 0, 0, &res) == 0);
    CHECK(res.corruptions == 0 && res.leaks == 0);
    img = op("f2m.img", PCOW_OPEN_RDWR | PCOW_OPEN_FINE_COW);
    CHECK(img);
    CHECK(read_eq(img, 0, want, sizeof want));
    struct pcow_entry e;
    CHECK(pcow_entry_get(img, 1, 5, &e) == 0);
    CHECK(e.partial && e.addr == addr && e.bitmap.w[3] == 1ull << 8 && e.bitmap.w[7] == (1ull << 63 | 1));
    CHECKR(pcow_read(img, got, 4096, 5 * C + 200 * 4096), img);
    CHECK(!memcmp(got, X, 4096));
    CHECKR(pcow_read(img, got, 4096, 5 * C + 511 * 4096), img);
    CHECK(!memcmp(got, X + 4096, 4096));
    /* more sub-units after reopen: the record is updated in place */
    CHECKR(pcow_write(img, X, 4096, 300 * 4096), img);
    memcpy(want + 300 * 4096, X, 4096);
    CHECKR(pcow_alloc_cluster(img, 1, false, NULL), img); /* fill cluster 1 from below */
    CHECKR(pcow_lookup(img, 1, &m), img);
    CHECK(m.partial && m.bitmap.w[0] == ~0ull && m.bitmap.w[7] == ~0ull);
    CHECK(read_eq(img, 0, want, sizeof want));
    /* snapshot delete merges the snapshot into the active layer (records shadow-written) */
    CHECKR(pcow_snapshot_delete(img, "s"), img);
    CHECK(read_eq(img, 0, want, sizeof want));
    pcow_close(img, NULL, 0);
    CHECK(check_img("f2m.img", 0, 0, &res) == 0);
    CHECK(res.corruptions == 0 && res.leaks == 0);
    img = op("f2m.img", PCOW_OPEN_RDWR | PCOW_OPEN_FINE_COW);
    CHECK(img);
    CHECK(read_eq(img, 0, want, sizeof want));
    /* a snapshot, a partial write, a rollback: the dropped record is freed and zeroed */
    CHECKR(pcow_snapshot_create(img, "t"), img);
    CHECKR(pcow_write(img, X, 4096, 3 * C + 70 * 4096), img);
    CHECKR(pcow_snapshot_apply(img, "t"), img);
    CHECK(read_eq(img, 0, want, sizeof want));
    pcow_close(img, NULL, 0);
    CHECK(check_img("f2m.img", 0, 0, &res) == 0);
    CHECK(res.corruptions == 0 && res.leaks == 0);
}

/* Damaged bitmap records: each gets an error naming the record and what is wrong. */
static void test_corrupt_bitmap_records(void)
{
    char err[512];
    static uint8_t X[8192];
    pattern(X, sizeof X, 91);
    const char *names[] = {"br-align.img", "br-out.img", "br-bits.img", "br-twice.img", "br-data.img", "br-leak.img", "br-feat.img"};
    for (int i = 0; i < 7; i++) {
        /* 1 MiB clusters, 4 KiB sub-units: 256 per cluster (bits 256..511 must be 0) */
        CHECK(mk(names[i], 8 << 20, 1 << 20, NULL) == 0);
        pcow_image *img = op(names[i], PCOW_OPEN_RDWR);
        CHECK(img);
        CHECKR(pcow_write(img, X, sizeof X, 0), img);
        CHECKR(pcow_write(img, X, sizeof X, 1 << 20), img);
        CHECKR(pcow_snapshot_create(img, "s"), img);
        pcow_close(img, NULL, 0);
        img = op(names[i], PCOW_OPEN_RDWR | PCOW_OPEN_FINE_COW);
        CHECK(img);
        CHECKR(pcow_write(img, X, 100, 4096), img);
        CHECKR(pcow_write(img, X, 100, (1 << 20) + 4096), img);
        pcow_close(img, NULL, 0);
    }
    uint64_t l2 = l2_addr("br-align.img", 0), w1;
    CHECK(l2);
    CHECK(rawio(P("br-align.img"), false, &w1, 8, (off_t)(l2 + 8)) == 0);
    CHECK(w1 % 64 == 0 && w1 >= (1 << 20));
    uint64_t v = w1 + 8;
    CHECK(rawio(P("br-align.img"), true, &v, 8, (off_t)(l2 + 8)) == 0);
    CHECK(open_err("br-align.img", 0, err, sizeof err) == -EUCLEAN);
    CHECK_CONTAINS(err, "bitmap record of cluster 0");
    CHECK_CONTAINS(err, "64-byte aligned");
    l2 = l2_addr("br-out.img", 0);
    v = 1ull << 40;
    CHECK(rawio(P("br-out.img"), true, &v, 8, (off_t)(l2 + 8)) == 0);
    CHECK(open_err("br-out.img", 0, err, sizeof err) == -EUCLEAN);
    CHECK_CONTAINS(err, "inside the file");
    l2 = l2_addr("br-bits.img", 0);
    CHECK(rawio(P("br-bits.img"), false, &w1, 8, (off_t)(l2 + 8)) == 0);
    v = 1; /* bit 320 */
    CHECK(rawio(P("br-bits.img"), true, &v, 8, (off_t)(w1 + 40)) == 0);
    CHECK(open_err("br-bits.img", 0, err, sizeof err) == -EUCLEAN);
    CHECK_CONTAINS(err, "bits beyond 256 sub-units");
    l2 = l2_addr("br-twice.img", 0);
    CHECK(rawio(P("br-twice.img"), false, &w1, 8, (off_t)(l2 + 8)) == 0);
    CHECK(rawio(P("br-twice.img"), true, &w1, 8, (off_t)(l2 + 16 + 8)) == 0); /* cluster 1 uses cluster 0's record */
    CHECK(open_err("br-twice.img", 0, err, sizeof err) == -EUCLEAN);
    CHECK_CONTAINS(err, "referenced twice");
    l2 = l2_addr("br-data.img", 0);
    uint64_t w0;
    CHECK(rawio(P("br-data.img"), false, &w0, 8, (off_t)l2) == 0);
    v = w0 & ~1ull; /* the record inside the entry's own data cluster */
    CHECK(rawio(P("br-data.img"), true, &v, 8, (off_t)(l2 + 8)) == 0);
    CHECK(open_err("br-data.img", 0, err, sizeof err) == -EUCLEAN);
    CHECK_CONTAINS(err, "bitmap cluster");
    CHECK_CONTAINS(err, "already in use");
    /* a leaked record: bits in a slot nothing references; check finds it, repair zeroes it */
    l2 = l2_addr("br-leak.img", 0);
    CHECK(rawio(P("br-leak.img"), false, &w1, 8, (off_t)(l2 + 8)) == 0);
    v = 0xff;
    CHECK(rawio(P("br-leak.img"), true, &v, 8, (off_t)(w1 + 64 * 10)) == 0);
    struct pcow_check_result res;
    char msgs[4096] = "";
    CHECK(pcow_check(P("br-leak.img"), 0, 0, &res, msgcat, msgs, err, sizeof err) == 0);
    CHECK(res.corruptions == 0 && res.leaks == 1);
    CHECK_CONTAINS(msgs, "leaked bitmap record");
    CHECK(pcow_check(P("br-leak.img"), 0, PCOW_REPAIR_LEAKS, &res, NULL, NULL, err, sizeof err) == 0);
    CHECK(res.leaks_fixed == 1 && res.leaks == 0);
    CHECK(check_img("br-leak.img", 0, 0, &res) == 0);
    CHECK(res.corruptions == 0 && res.leaks == 0);
    /* 256 sub-units without the BITMAP_RECORDS feature bit: refused (both header slots) */
    pcow_image *img = op("br-feat.img", 0);
    CHECK(img);
    pcow_close(img, NULL, 0);
    for (int slot = 0; slot < 2; slot++) {
        uint8_t h[2048];
        CHECK(rawio(P("br-feat.img"), false, h, sizeof h, slot * 2048) == 0);
        h[32] &= (uint8_t)~2;
        memset(h + 16, 0, 4);
        uint32_t crc = pcow_crc32c(0, h, sizeof h);
        memcpy(h + 16, &crc, 4);
        CHECK(rawio(P("br-feat.img"), true, h, sizeof h, slot * 2048) == 0);
    }
    CHECK(open_err("br-feat.img", 0, err, sizeof err) < 0);
    CHECK_CONTAINS(err, "BITMAP_RECORDS");
}

/* A failed L2-table reservation writes nothing: the image stays usable (not "broken"). */
static void test_enospc_l2(void)
{
    CHECK(mk("l2f.img", 512 << 20, 65536, NULL) == 0); /* one L2 table spans 256 MiB */
    pcow_image *img = op("l2f.img", PCOW_OPEN_RDWR);
    CHECK(img);
    static uint8_t X[4096];
    pattern(X, sizeof X, 95);
    CHECKR(pcow_write(img, X, sizeof X, 0), img);
    uint64_t addr;
    CHECKR(pcow_reserve(img, 1, &addr), img);
    struct pcow_stripe st;
    CHECK(pcow_stripe_get(img, 0, &st) == 0);
    CHECK(pwrite(st.fd, X, sizeof X, (off_t)addr) == (ssize_t)sizeof X);
    CHECK(fdatasync(st.fd) == 0);
    struct stat sb;
    CHECK(fstat(st.fd, &sb) == 0);
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit old, rl;
    CHECK(getrlimit(RLIMIT_FSIZE, &old) == 0);
    rl = old;
    rl.rlim_cur = (rlim_t)sb.st_size;
    CHECK(setrlimit(RLIMIT_FSIZE, &rl) == 0);
    uint64_t vc = 300 * 16; /* 300 MiB: in the second L2 table */
    int r = pcow_map_cluster(img, vc, addr, false, NULL);
    CHECK(setrlimit(RLIMIT_FSIZE, &old) == 0);
    CHECK(r == -EFBIG);
    CHECK_CONTAINS(pcow_errmsg(img), "cannot allocate a cluster");
    CHECKR(pcow_map_cluster(img, vc, addr, false, NULL), img); /* space again: works */
    CHECKR(pcow_write(img, X, 100, 400ull << 20), img);
    CHECK(read_eq(img, vc * 65536, X, sizeof X));
    pcow_close(img, NULL, 0);
    struct pcow_check_result res;
    CHECK(check_img("l2f.img", 0, 0, &res) == 0);
    CHECK(res.corruptions == 0 && res.leaks == 0);
}

/* pcow_release gives a reserved, unreferenced cluster back (a hole: not a leak for check) and
 * refuses anything that is not a reserved cluster range, naming it. */
static void test_release(void)
{
    CHECK(mk("rel.img", 1 << 20, 4096, NULL) == 0);
    pcow_image *img = op("rel.img", PCOW_OPEN_RDWR);
    CHECK(img);
    static uint8_t A[4096];
    pattern(A, sizeof A, 7);
    uint64_t a;
    CHECKR(pcow_reserve(img, 2, &a), img);
    struct pcow_stripe s;
    pcow_stripe_get(img, 0, &s);
    CHECK(pwrite(s.fd, A, 4096, (off_t)a) == 4096); /* would be a leak */
    CHECK(pcow_release(img, a + 1, 1) == -EINVAL);
    CHECK(strstr(pcow_errmsg(img), "not reserved clusters"));
    CHECK(pcow_release(img, a, 3) == -EINVAL); /* beyond the image end */
    CHECKR(pcow_release(img, a, 2), img);
    CHECKR(pcow_write(img, A, 4096, 0), img); /* still usable */
    pcow_close(img, NULL, 0);
    struct pcow_check_result res;
    CHECK(check_img("rel.img", 0, 0, &res) == 0);
    CHECK(res.leaks == 0 && res.corruptions == 0);
}

/* ---- hostile images: file types, paths, verdicts, keys, messages (issue 8) ---- */

/* Rewrite header slot s of name through fn, then fix its checksum. */
static int edit_slot(const char *name, int s, void (*fn)(uint8_t *h, void *ctx), void *ctx)
{
    uint8_t h[2048];
    if (rawio(P(name), false, h, sizeof h, s * 2048))
        return -1;
    fn(h, ctx);
    uint32_t z = 0;
    memcpy(h + 16, &z, 4);
    uint32_t c = pcow_crc32c(0, h, sizeof h);
    memcpy(h + 16, &c, 4);
    return rawio(P(name), true, h, sizeof h, s * 2048);
}
struct hset {
    int off, len;
    uint64_t v;
};
static void hset_fn(uint8_t *h, void *ctx)
{
    const struct hset *x = ctx;
    memcpy(h + x->off, &x->v, (size_t)x->len); /* little-endian host (x86/arm64) */
}
static int set_slot(const char *name, int s, int off, int len, uint64_t v)
{
    struct hset x = {off, len, v};
    return edit_slot(name, s, hset_fn, &x);
}
static uint64_t get_slot(const char *name, int s, int off, int len)
{
    uint64_t v = 0;
    if (rawio(P(name), false, &v, (size_t)len, s * 2048 + off))
        return ~0ull;
    return v;
}

/* A FIFO, a directory or a device as the image, its base or a stripe file: a clear error, and
 * never a blocking open (alarm() turns a hang into a failure). */
static void test_file_types(void)
{
    char err[1024];
    alarm(20);
    CHECK(mkfifo(P("fifo.img"), 0644) == 0);
    CHECK(open_err("fifo.img", 0, err, sizeof err) == -EINVAL);
    CHECK_CONTAINS(err, "is a FIFO, not a regular file");
    CHECK(open_err("fifo.img", PCOW_OPEN_RDWR, err, sizeof err) == -EINVAL);
    struct pcow_check_result res;
    CHECK(pcow_check(P("fifo.img"), 0, 0, &res, NULL, NULL, err, sizeof err) < 0);
    CHECK(pcow_probe_format(P("fifo.img")) < 0);
    CHECK(mkdir(P("adir.img"), 0755) == 0);
    CHECK(open_err("adir.img", 0, err, sizeof err) < 0);
    CHECK_CONTAINS(err, "directory");
    /* base: a FIFO at create and after */
    CHECK(mkfifo(P("fifo.raw"), 0644) == 0);
    struct pcow_create_opts o = {.virtual_size = 1 << 20, .cluster_size = 4096, .base = "fifo.raw", .base_format = PCOW_BASE_RAW};
    CHECK(pcow_create(P("over-fifo.img"), &o, err, sizeof err) == -EINVAL);
    CHECK_CONTAINS(err, "base image 'fifo.raw': is a FIFO");
    o.no_base_check = true;
    CHECK(pcow_create(P("over-fifo.img"), &o, err, sizeof err) == 0);
    CHECK(open_err("over-fifo.img", 0, err, sizeof err) == -EINVAL);
    CHECK_CONTAINS(err, "is a FIFO");
    /* stripe file: a FIFO, and a symlink to a character device (outside the directory) */
    struct pcow_create_opts so = {.virtual_size = 1 << 20, .cluster_size = 4096, .stripe_count = 2};
    CHECK(pcow_create(P("fst.img"), &so, err, sizeof err) == 0);
    CHECK(unlink(P("fst.img.s1")) == 0 && mkfifo(P("fst.img.s1"), 0644) == 0);
    CHECK(open_err("fst.img", 0, err, sizeof err) == -EINVAL);
    CHECK_CONTAINS(err, "stripe file 1 'fst.img.s1'");
    CHECK_CONTAINS(err, "is a FIFO");
    CHECK(open_err("fst.img", PCOW_OPEN_RDWR, err, sizeof err) == -EINVAL);
    CHECK(unlink(P("fst.img.s1")) == 0 && symlink("/dev/null", P("fst.img.s1")) == 0);
    CHECK(open_err("fst.img", 0, err, sizeof err) == -EPERM);
    CHECK_CONTAINS(err, "--unsafe-base-paths");
    CHECK(open_err("fst.img", PCOW_OPEN_UNSAFE_BASE, err, sizeof err) == -EINVAL);
    CHECK_CONTAINS(err, "is a character device");
    /* create never follows a planted stripe symlink */
    CHECK(pcow_create(P("fst.img"), &so, err, sizeof err) == -ELOOP);
    CHECK_CONTAINS(err, "symlink");
    alarm(0);
}

/* A stripe file that is a symlink to a file outside the image's directory is not served, and a
 * repair never touches it, even with the unsafe option. */
static void test_stripe_outside(void)
{
    char err[1024];
    CHECK(mkdir(P("in"), 0755) == 0 && mkdir(P("out"), 0755) == 0);
    struct pcow_create_opts so = {.virtual_size = 1 << 20, .cluster_size = 4096, .stripe_count = 2};
    CHECK(pcow_create(P("in/s.img"), &so, err, sizeof err) == 0);
    pcow_image *img = op("in/s.img", PCOW_OPEN_RDWR);
    CHECK(img);
    static uint8_t A[65536];
    pattern(A, sizeof A, 7);
    CHECKR(pcow_write(img, A, sizeof A, 0), img);
    pcow_close(img, NULL, 0);
    /* move the stripe file out, add a leaked tail, link it back */
    CHECK(rename(P("in/s.img.s1"), P("out/victim")) == 0);
    int fd = open(P("out/victim"), O_WRONLY | O_APPEND);
    CHECK(fd >= 0);
    CHECK(write(fd, A, 12288) == 12288);
    close(fd);
    CHECK(symlink("../out/victim", P("in/s.img.s1")) == 0);
    uint64_t before = fsize(P("out/victim"));
    static uint8_t orig[1 << 20];
    CHECK(before < sizeof orig && rawio(P("out/victim"), false, orig, before, 0) == 0);
    CHECK(open_err("in/s.img", 0, err, sizeof err) == -EPERM);
    CHECK_CONTAINS(err, "leads out of the image's directory");
    CHECK(open_err("in/s.img", PCOW_OPEN_RDWR | PCOW_OPEN_UNSAFE_BASE, err, sizeof err) == 0); /* explicit trust */
    struct pcow_check_result res;
    CHECK(pcow_check(P("in/s.img"), 0, PCOW_REPAIR_LEAKS, &res, NULL, NULL, err, sizeof err) == -EPERM);
    CHECK(pcow_check(P("in/s.img"), PCOW_OPEN_UNSAFE_BASE, PCOW_REPAIR_ALL, &res, NULL, NULL, err, sizeof err) == -EPERM);
    CHECK_CONTAINS(err, "never while repairing");
    static uint8_t now[1 << 20];
    CHECK(fsize(P("out/victim")) == before && rawio(P("out/victim"), false, now, before, 0) == 0);
    CHECK(!memcmp(orig, now, before));
    /* read-only check with the unsafe option reports the leak without repairing */
    CHECK(pcow_check(P("in/s.img"), PCOW_OPEN_UNSAFE_BASE, 0, &res, NULL, NULL, err, sizeof err) == 0);
    CHECK(res.leaks > 0 && res.corruptions == 0);
}

/* A file that does not end on a cluster boundary is a leak (not an internal error), repaired
 * by -r leaks without an error; and -r all converges in one run. */
static void test_unaligned_tail(void)
{
    CHECK(mk("ut.img", 1 << 20, 4096, NULL) == 0);
    pcow_image *img = op("ut.img", PCOW_OPEN_RDWR);
    CHECK(img);
    static uint8_t A[8192], T[8192 + 300];
    pattern(A, sizeof A, 11);
    pattern(T, sizeof T, 12);
    CHECKR(pcow_write(img, A, sizeof A, 0), img);
    pcow_close(img, NULL, 0);
    uint64_t sz = fsize(P("ut.img"));
    int fd = open(P("ut.img"), O_WRONLY | O_APPEND);
    CHECK(fd >= 0 && write(fd, A, 100) == 100);
    close(fd);
    struct pcow_check_result res;
    char msgs[4096] = "", err[1024];
    CHECK(pcow_check(P("ut.img"), 0, 0, &res, msgcat, msgs, err, sizeof err) == 0);
    CHECK(res.check_errors == 0 && res.corruptions == 0 && res.leaks == 1);
    CHECK_CONTAINS(msgs, "unaligned tail");
    CHECK(check_img("ut.img", 0, PCOW_REPAIR_LEAKS, &res) == 0);
    CHECK(res.check_errors == 0 && res.leaks == 0 && res.leaks_fixed == 1);
    CHECK(fsize(P("ut.img")) == sz);
    CHECK(check_img("ut.img", 0, 0, &res) == 0);
    CHECK(res.check_errors == 0 && res.corruptions == 0 && res.leaks == 0);
    /* a zero-filled unaligned tail (a crash-left extension) too */
    CHECK(truncate(P("ut.img"), (off_t)sz + 512) == 0);
    CHECK(check_img("ut.img", 0, 0, &res) == 0);
    CHECK(res.check_errors == 0 && res.leaks == 1);
    /* -r all, one run: damaged slot 0 + leaked clusters + an unaligned tail + dirty flag */
    CHECK(set_slot("ut.img", 0, 48, 8, 1) == 0 && set_slot("ut.img", 1, 48, 8, 1) == 0); /* DIRTY */
    uint8_t b = 0xff;
    CHECK(rawio(P("ut.img"), true, &b, 1, 70) == 0);
    CHECK(truncate(P("ut.img"), (off_t)sz) == 0);
    fd = open(P("ut.img"), O_WRONLY | O_APPEND);
    CHECK(fd >= 0 && write(fd, T, sizeof T) == (ssize_t)sizeof T);
    close(fd);
    CHECK(check_img("ut.img", 0, 0, &res) == 0);
    CHECK(res.corruptions == 1 && res.leaks == 3);
    CHECK(check_img("ut.img", 0, PCOW_REPAIR_ALL, &res) == 0);
    CHECK(res.check_errors == 0 && res.corruptions == 0 && res.leaks == 0);
    CHECK(res.corruptions_fixed == 1 && res.leaks_fixed == 3);
    CHECK(check_img("ut.img", 0, 0, &res) == 0);
    CHECK(res.check_errors == 0 && res.corruptions == 0 && res.leaks == 0);
    CHECK(fsize(P("ut.img")) == sz);
    img = op("ut.img", 0);
    CHECK(img);
    CHECK(read_eq(img, 0, A, sizeof A));
    struct pcow_info in;
    pcow_get_info(img, &in);
    CHECK(!in.dirty);
    pcow_close(img, NULL, 0);
}

static void flip_vsize(uint8_t *h, void *ctx)
{
    (void)ctx;
    h[64] ^= 0x10;
}

/* Header verdicts: magic + zeros, equal generations with different contents, non-zero bytes in
 * the header cluster, a newer format version. */
static void test_header_verdicts(void)
{
    char err[1024], msgs[4096];
    struct pcow_check_result res;
    /* magic followed by zeros: damaged (corruption), not "unsupported version 0" */
    uint8_t z[8192] = {0x89, 'P', 'C', 'O', 'W', '\r', '\n', 0x1a};
    int fd = open(P("mz.img"), O_CREAT | O_TRUNC | O_WRONLY, 0644);
    CHECK(fd >= 0 && write(fd, z, sizeof z) == (ssize_t)sizeof z);
    close(fd);
    CHECK(open_err("mz.img", 0, err, sizeof err) == -EUCLEAN);
    CHECK_CONTAINS(err, "the slot holds the magic and nothing else");
    CHECK(!strstr(err, "unsupported version"));
    CHECK(pcow_check(P("mz.img"), 0, 0, &res, NULL, NULL, err, sizeof err) == 0);
    CHECK(res.corruptions >= 1);
    /* same generation, different contents */
    CHECK(mk("eg.img", 1 << 20, 4096, NULL) == 0);
    CHECK(edit_slot("eg.img", 1, flip_vsize, NULL) == 0);
    CHECK(open_err("eg.img", 0, err, sizeof err) == -EUCLEAN);
    CHECK_CONTAINS(err, "both have generation");
    CHECK_CONTAINS(err, "field virtual_size");
    msgs[0] = 0;
    CHECK(pcow_check(P("eg.img"), 0, 0, &res, msgcat, msgs, err, sizeof err) == 0);
    CHECK(res.corruptions == 1);
    CHECK_CONTAINS(msgs, "cannot tell which is current");
    /* header cluster tail (64 KiB clusters: bytes 4096..65535 must be zero) */
    CHECK(mk("ht.img", 1 << 20, 65536, NULL) == 0);
    uint8_t b = 1;
    CHECK(rawio(P("ht.img"), true, &b, 1, 40000) == 0);
    CHECK(open_err("ht.img", 0, err, sizeof err) == 0); /* never used: opens */
    msgs[0] = 0;
    CHECK(pcow_check(P("ht.img"), 0, 0, &res, msgcat, msgs, err, sizeof err) == 0);
    CHECK(res.corruptions == 1);
    CHECK_CONTAINS(msgs, "byte 0x9c40 after the two header slots is not zero");
    CHECK(check_img("ht.img", 0, PCOW_REPAIR_ALL, &res) == 0);
    CHECK(res.corruptions == 0 && res.corruptions_fixed == 1);
    CHECK(check_img("ht.img", 0, 0, &res) == 0);
    CHECK(res.corruptions == 0 && res.leaks == 0 && res.check_errors == 0);
    /* a newer version with a valid checksum and a higher generation: never overwritten */
    CHECK(mk("nv.img", 1 << 20, 4096, NULL) == 0);
    uint64_t g = get_slot("nv.img", 0, 24, 8);
    CHECK(set_slot("nv.img", 1, 8, 4, 2) == 0 && set_slot("nv.img", 1, 24, 8, g + 1) == 0);
    uint8_t before[4096], after[4096];
    CHECK(rawio(P("nv.img"), false, before, sizeof before, 0) == 0);
    CHECK(open_err("nv.img", PCOW_OPEN_RDWR, err, sizeof err) == -ENOTSUP);
    CHECK_CONTAINS(err, "header slot 1: unsupported version 2");
    CHECK_CONTAINS(err, "a write would overwrite it");
    CHECK(open_err("nv.img", 0, err, sizeof err) == -ENOTSUP);
    CHECK(pcow_check(P("nv.img"), 0, PCOW_REPAIR_ALL, &res, NULL, NULL, err, sizeof err) == -ENOTSUP);
    CHECK(rawio(P("nv.img"), false, after, sizeof after, 0) == 0);
    CHECK(!memcmp(before, after, sizeof before));
    /* ... with a lower generation it is the stale slot: the v1 slot is used, nothing is corrupt */
    CHECK(set_slot("nv.img", 0, 24, 8, g + 5) == 0);
    CHECK(open_err("nv.img", 0, err, sizeof err) == 0);
    msgs[0] = 0;
    CHECK(pcow_check(P("nv.img"), 0, 0, &res, msgcat, msgs, err, sizeof err) == 0);
    CHECK(res.corruptions == 0);
    CHECK_CONTAINS(msgs, "older header of a newer format version");
    /* both slots newer: unsupported, not corrupt */
    CHECK(set_slot("nv.img", 0, 8, 4, 3) == 0);
    CHECK(open_err("nv.img", 0, err, sizeof err) == -ENOTSUP);
    CHECK_CONTAINS(err, "unsupported version");
}

/* Clusters named by a dropped entry or table are reported with that corruption, not again as
 * leaks. */
static void test_dropped_not_leaks(void)
{
    CHECK(mk("dr.img", 1 << 20, 4096, NULL) == 0);
    pcow_image *img = op("dr.img", PCOW_OPEN_RDWR);
    CHECK(img);
    static uint8_t A[4096 * 6];
    pattern(A, sizeof A, 5);
    CHECKR(pcow_write(img, A, sizeof A, 0), img);
    struct pcow_layer_info L;
    CHECKR(pcow_layer_get(img, 0, &L), img);
    pcow_close(img, NULL, 0);
    uint64_t l2;
    CHECK(rawio(P("dr.img"), false, &l2, 8, (off_t)L.l1_offset) == 0);
    /* an entry with reserved bits: dropped, its data cluster is not a leak */
    uint64_t w0;
    CHECK(rawio(P("dr.img"), false, &w0, 8, (off_t)l2 + 16) == 0);
    uint64_t bad = w0 | 4;
    CHECK(rawio(P("dr.img"), true, &bad, 8, (off_t)l2 + 16) == 0);
    struct pcow_check_result res;
    char msgs[4096] = "", err[1024];
    CHECK(pcow_check(P("dr.img"), 0, 0, &res, msgcat, msgs, err, sizeof err) == 0);
    CHECK(res.corruptions == 1 && res.leaks == 0);
    CHECK_CONTAINS(msgs, "not counted as leaks");
    CHECK(rawio(P("dr.img"), true, &w0, 8, (off_t)l2 + 16) == 0);
    /* a misaligned L1 entry: the table it points into and its 6 data clusters are not leaks */
    uint64_t mis = l2 | 8;
    CHECK(rawio(P("dr.img"), true, &mis, 8, (off_t)L.l1_offset) == 0);
    msgs[0] = 0;
    CHECK(pcow_check(P("dr.img"), 0, 0, &res, msgcat, msgs, err, sizeof err) == 0);
    CHECK(res.corruptions == 1 && res.leaks == 0);
    CHECK_CONTAINS(msgs, "7 cluster(s) named only by entries or tables reported as corrupt");
    /* and no repair frees them */
    uint64_t sz = fsize(P("dr.img"));
    CHECK(check_img("dr.img", 0, PCOW_REPAIR_ALL, &res) == 0);
    CHECK(fsize(P("dr.img")) == sz);
    CHECK(rawio(P("dr.img"), true, &l2, 8, (off_t)L.l1_offset) == 0);
    img = op("dr.img", 0);
    CHECK(img);
    CHECK(read_eq(img, 0, A, sizeof A));
    pcow_close(img, NULL, 0);
}

/* Patch directory record `rec` of name (name field) and fix the directory checksum. */
static int rename_record(const char *name, uint32_t rec, const char *nm)
{
    uint64_t doff = get_slot(name, 0, 72, 8), cnt = get_slot(name, 0, 80, 4);
    if (rec >= cnt)
        return -1;
    uint8_t *d = calloc(cnt, 128);
    if (!d || rawio(P(name), false, d, cnt * 128, (off_t)doff)) {
        free(d);
        return -1;
    }
    uint8_t *p = d + rec * 128;
    memset(p + 40, 0, 64);
    uint32_t l = (uint32_t)strlen(nm);
    memcpy(p + 32, &l, 4);
    memcpy(p + 40, nm, l);
    uint32_t crc = pcow_crc32c(0, d, cnt * 128);
    int r = rawio(P(name), true, d, cnt * 128, (off_t)doff);
    free(d);
    if (r == 0)
        r = set_slot(name, 0, 84, 4, crc);
    if (r == 0)
        r = set_slot(name, 1, 84, 4, crc);
    return r;
}

/* A key made only of digits is an id, anything else a name: "-d 2" never deletes the layer
 * named "2" when id 2 is another layer, and all-digit names cannot be created. */
static void test_snapshot_keys(void)
{
    CHECK(mk("keys.img", 1 << 20, 4096, NULL) == 0);
    pcow_image *img = op("keys.img", PCOW_OPEN_RDWR);
    CHECK(img);
    static uint8_t A[4096];
    pattern(A, sizeof A, 3);
    CHECKR(pcow_snapshot_create(img, "a"), img); /* id 1 */
    CHECKR(pcow_write(img, A, sizeof A, 0), img);
    CHECKR(pcow_snapshot_create(img, "b"), img); /* id 2 */
    CHECK(pcow_snapshot_create(img, "2") == -EINVAL);
    CHECK_CONTAINS(pcow_errmsg(img), "all digits");
    CHECK(pcow_snapshot_create(img, "007") == -EINVAL);
    CHECK(pcow_snapshot_delete(img, "3") == -EINVAL); /* the active layer */
    CHECK(pcow_snapshot_delete(img, "9") == -ENOENT);
    CHECK_CONTAINS(pcow_errmsg(img), "no snapshot with id 9");
    pcow_close(img, NULL, 0);
    /* a hostile image names layer 1 "2" */
    CHECK(rename_record("keys.img", 0, "2") == 0);
    img = op("keys.img", PCOW_OPEN_RDWR);
    CHECK(img);
    CHECKR(pcow_snapshot_delete(img, "2"), img); /* id 2 ("b"), not the layer named "2" */
    CHECK(pcow_layer_count(img) == 2);
    struct pcow_layer_info L;
    CHECKR(pcow_layer_get(img, 0, &L), img);
    CHECK(L.id == 1 && !strcmp(L.name, "2"));
    CHECK(read_eq(img, 0, A, sizeof A)); /* b's data merged into the active layer */
    CHECKR(pcow_snapshot_apply(img, "1"), img);
    pcow_close(img, NULL, 0);
}

static void set_dirflags(uint8_t *d, void *ctx)
{
    (void)ctx;
    d[28] = 1;
}

/* Messages: the directory field that is wrong is named; a deep chain keeps the reason; a short
 * read says what was read. */
static void test_messages(void)
{
    char err[1024];
    CHECK(mk("fld.img", 1 << 20, 4096, NULL) == 0);
    uint64_t doff = get_slot("fld.img", 0, 72, 8);
    uint8_t d[128];
    CHECK(rawio(P("fld.img"), false, d, sizeof d, (off_t)doff) == 0);
    set_dirflags(d, NULL);
    CHECK(rawio(P("fld.img"), true, d, sizeof d, (off_t)doff) == 0);
    uint32_t crc = pcow_crc32c(0, d, sizeof d);
    CHECK(set_slot("fld.img", 0, 84, 4, crc) == 0 && set_slot("fld.img", 1, 84, 4, crc) == 0);
    CHECK(open_err("fld.img", 0, err, sizeof err) == -EUCLEAN);
    CHECK_CONTAINS(err, "has an invalid field: flags 0x1 are not 0");
    /* a chain of 30 images with long names whose bottom base is missing */
    char names[31][200];
    for (int i = 0; i <= 30; i++)
        snprintf(names[i], sizeof names[i], "chain-%02d-%0150d.img", i, 0);
    for (int i = 29; i >= 0; i--) {
        struct pcow_create_opts o = {.virtual_size = 1 << 20, .cluster_size = 4096, .base = names[i + 1],
                                     .base_format = i == 29 ? PCOW_BASE_RAW : PCOW_BASE_PCOW, .no_base_check = true};
        CHECK(pcow_create(P(names[i]), &o, err, sizeof err) == 0);
    }
    CHECK(open_err(names[0], 0, err, sizeof err) == -ENOENT);
    CHECK(strlen(err) < sizeof err);
    CHECK_CONTAINS(err, names[0]);
    CHECK_CONTAINS(err, "[...]");
    CHECK_CONTAINS(err, "chain-30-");
    CHECK_CONTAINS(err, "does not exist");
    /* short read: the file shrinks under an open image */
    CHECK(mk("sr.img", 1 << 20, 4096, NULL) == 0);
    pcow_image *img = op("sr.img", PCOW_OPEN_RDWR);
    CHECK(img);
    static uint8_t A[8192], got[8192];
    pattern(A, sizeof A, 9);
    CHECKR(pcow_write(img, A, sizeof A, 0), img);
    struct pcow_mapping m;
    CHECKR(pcow_lookup(img, 1, &m), img);
    CHECK(truncate(P("sr.img"), (off_t)(m.file_off + 2048)) == 0);
    CHECK(pcow_read(img, got, sizeof got, 0) == -EIO);
    CHECK_CONTAINS(pcow_errmsg(img), "short read of data (");
    CHECK_CONTAINS(pcow_errmsg(img), "the file ends at 0x");
    pcow_close(img, NULL, 0);
}

/* Who holds the image: the OFD lock has no owner PID, the library finds it in /proc. */
static void test_in_use_pid(void)
{
    CHECK(mk("use.img", 1 << 20, 4096, NULL) == 0);
    int tochild[2], toparent[2];
    CHECK(pipe(tochild) == 0 && pipe(toparent) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        pcow_image *c = NULL;
        char e[512], x;
        if (pcow_open(P("use.img"), PCOW_OPEN_RDWR, &c, e, sizeof e) < 0)
            _exit(1);
        if (write(toparent[1], "r", 1) != 1)
            _exit(1);
        if (read(tochild[0], &x, 1) < 0)
            _exit(1);
        pcow_close(c, NULL, 0);
        _exit(0);
    }
    char x;
    CHECK(read(toparent[0], &x, 1) == 1);
    pcow_image *img = op("use.img", PCOW_OPEN_NO_LOCK);
    int who = 0, r = img ? pcow_in_use(img, &who) : -1;
    char err[1024], want[64];
    snprintf(want, sizeof want, "in use by PID %d", (int)pid);
    int r2 = open_err("use.img", PCOW_OPEN_RDWR, err, sizeof err);
    CHECK(write(tochild[1], "x", 1) == 1);
    int st;
    waitpid(pid, &st, 0);
    CHECK(img);
    CHECK(r == 1 && who == pid);
    CHECK(r2 == -EAGAIN);
    CHECK_CONTAINS(err, want);
    pcow_close(img, NULL, 0);
    img = op("use.img", PCOW_OPEN_NO_LOCK);
    CHECK(img);
    CHECK(pcow_in_use(img, &who) == 0);
    pcow_close(img, NULL, 0);
}

static void test_leaks_and_repair(void)
{
    CHECK(mk("leak.img", 1 << 20, 4096, NULL) == 0);
    pcow_image *img = op("leak.img", PCOW_OPEN_RDWR);
    CHECK(img);
    static uint8_t A[8192];
    pattern(A, sizeof A, 81);
    CHECKR(pcow_write(img, A, 4096, 0), img);
    /* a crash between "data durable" and "entry durable" leaves this: */
    uint64_t a1, a2;
    CHECKR(pcow_reserve(img, 1, &a1), img);
    struct pcow_stripe s;
    pcow_stripe_get(img, 0, &s);
    CHECK(pwrite(s.fd, A, 4096, (off_t)a1) == 4096);
    CHECKR(pcow_write(img, A, 4096, 4096), img);
    CHECKR(pcow_reserve(img, 1, &a2), img);
    CHECK(pwrite(s.fd, A, 4096, (off_t)a2) == 4096);
    pcow_close(img, NULL, 0);
    struct pcow_check_result res;
    CHECK(check_img("leak.img", 0, 0, &res) == 0);
    CHECK(res.leaks == 2 && res.corruptions == 0);
    uint64_t before = fsize(P("leak.img"));
    CHECK(check_img("leak.img", 0, PCOW_REPAIR_LEAKS, &res) == 0);
    CHECK(res.leaks == 0 && res.leaks_fixed == 2);
    CHECK(fsize(P("leak.img")) == before - 4096); /* trailing leak truncated */
    CHECK(check_img("leak.img", 0, 0, &res) == 0);
    CHECK(res.leaks == 0 && res.corruptions == 0);
    img = op("leak.img", 0);
    CHECK(img);
    CHECK(read_eq(img, 0, A, 4096) && read_eq(img, 4096, A, 4096));
    pcow_close(img, NULL, 0);
}

static void test_striping(void)
{
    struct pcow_create_opts o = {.virtual_size = 8 << 20, .cluster_size = 4096, .stripe_count = 3, .stripe_unit = 8192};
    char err[512];
    CHECK(pcow_create(P("str.img"), &o, err, sizeof err) == 0);
    CHECK(access(P("str.img.s1"), F_OK) == 0 && access(P("str.img.s2"), F_OK) == 0);
    pcow_image *img = op("str.img", PCOW_OPEN_RDWR);
    CHECK(img);
    static uint8_t A[1 << 20], got[1 << 20];
    pattern(A, sizeof A, 91);
    CHECKR(pcow_write(img, A, sizeof A, 4 << 20), img);
    CHECKR(pcow_snapshot_create(img, "s"), img);
    CHECKR(pcow_write(img, A, 5000, 100), img);
    struct pcow_info in;
    pcow_get_info(img, &in);
    CHECK(in.stripe_count == 3 && in.stripe_unit == 8192 && (in.incompat_features & 1));
    bool seen[3] = {0};
    for (uint64_t vc = 1024; vc < 1024 + 256; vc++) {
        struct pcow_mapping m;
        CHECKR(pcow_lookup(img, vc, &m), img);
        CHECK(m.depth == 1 && m.file < 3);
        seen[m.file] = true;
    }
    CHECK(seen[0] && seen[1] && seen[2]);
    pcow_close(img, NULL, 0);
    img = op("str.img", 0);
    CHECK(img);
    CHECKR(pcow_read(img, got, sizeof got, 4 << 20), img);
    CHECK(!memcmp(got, A, sizeof A));
    CHECK(read_eq(img, 100, A, 5000));
    pcow_close(img, NULL, 0);
    struct pcow_check_result res;
    CHECK(check_img("str.img", 0, 0, &res) == 0);
    CHECK(res.corruptions == 0 && res.leaks == 0);
    CHECK(unlink(P("str.img.s2")) == 0);
    CHECK(open_err("str.img", 0, err, sizeof err) == -ENOENT);
    CHECK_CONTAINS(err, "stripe file 2");
}

struct mapacc {
    uint64_t total;
    int n, own;
};
static int map_cb(void *ctx, const struct pcow_map_extent *e)
{
    struct mapacc *m = ctx;
    m->total += e->length;
    m->n++;
    if (e->data && e->depth == 0)
        m->own++;
    return 0;
}

static void test_map(void)
{
    CHECK(mk("map.img", 1 << 20, 4096, NULL) == 0);
    pcow_image *img = op("map.img", PCOW_OPEN_RDWR);
    CHECK(img);
    static uint8_t A[40960];
    pattern(A, sizeof A, 101);
    CHECKR(pcow_write(img, A, sizeof A, 8192), img);
    struct mapacc m = {0};
    CHECKR(pcow_map(img, map_cb, &m), img);
    CHECK(m.total == 1 << 20);
    CHECK(m.n == 3 && m.own == 1); /* hole, one contiguous data run, hole */
    pcow_close(img, NULL, 0);
}

/* Crash consistency: record the file content at every durability point of a sequence of
 * operations; each recorded state must open, check without corruption (leaks are allowed),
 * and show either the old or the new data. */
struct crashrec {
    int n;
    const char *src;
};
static int record_persist(void *ctx, int fd, uint64_t off, uint64_t len)
{
    (void)off;
    (void)len;
    struct crashrec *c = ctx;
    char dst[600];
    snprintf(dst, sizeof dst, "%s/crash-%03d.img", tdir, c->n++);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    uint8_t *b = malloc((size_t)st.st_size + 1);
    if (!b)
        return -ENOMEM;
    ssize_t r = pread(fd, b, (size_t)st.st_size, 0);
    int o = open(dst, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    if (o >= 0) {
        if (r > 0 && write(o, b, (size_t)r) != r)
            r = -1;
        close(o);
    }
    free(b);
    return fdatasync(fd) < 0 ? -errno : 0;
}

static void test_crash_states(void)
{
    CHECK(mk("crash.img", 1 << 20, 4096, NULL) == 0);
    static uint8_t A[12288], B[12288];
    pattern(A, sizeof A, 111);
    pattern(B, sizeof B, 112);
    pcow_image *img = op("crash.img", PCOW_OPEN_RDWR | PCOW_OPEN_FINE_COW);
    CHECK(img);
    CHECKR(pcow_write(img, A, sizeof A, 0), img);
    struct crashrec c = {0, NULL};
    pcow_set_persist(img, record_persist, &c);
    CHECKR(pcow_snapshot_create(img, "s1"), img);
    CHECKR(pcow_write(img, B, 5000, 3000), img);
    CHECKR(pcow_write(img, B, sizeof B, 100000), img);
    CHECKR(pcow_snapshot_create(img, "s2"), img);
    CHECKR(pcow_snapshot_delete(img, "s1"), img);
    CHECKR(pcow_snapshot_apply(img, "s2"), img);
    pcow_close(img, NULL, 0);
    CHECK(c.n > 10);
    uint8_t AB[12288];
    memcpy(AB, A, sizeof A);
    memcpy(AB + 3000, B, 5000);
    for (int i = 0; i < c.n; i++) {
        char name[64];
        snprintf(name, sizeof name, "crash-%03d.img", i);
        struct pcow_check_result res;
        CHECK(check_img(name, PCOW_OPEN_NO_LOCK, 0, &res) == 0);
        if (res.corruptions)
            fprintf(stderr, "  state %d: %llu corruptions\n", i, (unsigned long long)res.corruptions);
        CHECK(res.corruptions == 0);
        pcow_image *s = op(name, 0);
        CHECK(s);
        CHECK(read_eq(s, 0, A, sizeof A) || read_eq(s, 0, AB, sizeof AB));
        pcow_close(s, NULL, 0);
    }
}

/* The persist hook's contract (pcow_persist_fn): len > 0 only when nothing was allocated or
 * extended since the previous call, so a DAX hook may make it durable with a fence instead of
 * fdatasync (the runtime's persist_dax). Checked by the file's size and allocated blocks. */
struct lenrec {
    int zero, ranged, bad;
    struct stat last;
};
static int len_persist(void *ctx, int fd, uint64_t off, uint64_t len)
{
    (void)off;
    struct lenrec *c = ctx;
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (len == 0) {
        c->zero++;
    } else {
        c->ranged++;
        if (st.st_size != c->last.st_size || st.st_blocks != c->last.st_blocks) {
            fprintf(stderr, "  persist len %llu after the file changed: size %lld -> %lld, blocks %lld -> %lld\n",
                    (unsigned long long)len, (long long)c->last.st_size, (long long)st.st_size,
                    (long long)c->last.st_blocks, (long long)st.st_blocks);
            c->bad++;
        }
    }
    if (fdatasync(fd) < 0)
        return -errno;
    c->last = st;
    return 0;
}

static void test_persist_len_contract(void)
{
    CHECK(mk("plen.img", 64 << 20, 65536, NULL) == 0);
    pcow_image *img = op("plen.img", PCOW_OPEN_RDWR);
    CHECK(img);
    struct lenrec c = {0};
    pcow_set_persist(img, len_persist, &c);
    static uint8_t b[65536];
    pattern(b, sizeof b, 7);
    /* new clusters (the first with a new L2 table), partial and whole, then overwrites */
    CHECKR(pcow_write(img, b, sizeof b, 0), img);
    CHECKR(pcow_write(img, b, 100, 3 * 65536 + 5), img);
    CHECKR(pcow_write(img, b, sizeof b, 7 * 65536), img);
    uint64_t a;
    CHECKR(pcow_reserve(img, 2, &a), img);
    CHECKR(pcow_map_cluster(img, 9, a, false, NULL), img); /* the file grew: len 0 */
    int before = c.ranged;
    CHECKR(pcow_map_cluster(img, 10, a + 65536, false, NULL), img); /* only an entry in an existing table */
    CHECK(c.ranged == before + 1);
    CHECKR(pcow_write(img, b, 1000, 500), img);
    CHECKR(pcow_write(img, b, sizeof b, 40 << 20), img); /* a second L2 table */
    CHECK(c.zero > 0);
    CHECK(c.ranged > 0);
    CHECK(c.bad == 0);
    pcow_set_persist(img, NULL, NULL);
    pcow_close(img, NULL, 0);
}

static void test_many_images(void)
{
    /* no global state: several images open at once, independently */
    pcow_image *imgs[6];
    for (int i = 0; i < 6; i++) {
        char n[32];
        snprintf(n, sizeof n, "multi%d.img", i);
        CHECK(mk(n, 1 << 20, 4096, NULL) == 0);
        imgs[i] = op(n, PCOW_OPEN_RDWR);
        CHECK(imgs[i]);
        uint8_t b = (uint8_t)i;
        CHECKR(pcow_write(imgs[i], &b, 1, 777), imgs[i]);
    }
    for (int i = 0; i < 6; i++) {
        uint8_t b = 0xff;
        CHECKR(pcow_read(imgs[i], &b, 1, 777), imgs[i]);
        CHECK(b == i);
        pcow_close(imgs[i], NULL, 0);
    }
}

/* A fault handler's view: lookups from another thread while one writer allocates. Every
 * mapping a lookup returns must already hold its data (data durable -> entry -> visible). */
struct conc {
    pcow_image *img;
    int fd;
    volatile int done;
    int bad, seen;
    uint64_t nvc;    /* clusters the reader looks up */
    uint32_t units;  /* > 1: check each owned sub-unit of partial entries (stride 4 KiB) only */
};
/* Lock-free lookups while one thread writes: every cluster (or owned sub-unit) a lookup sees
 * must already hold its data, byte vc + 1. */
static void *conc_reader(void *arg)
{
    struct conc *c = arg;
    while (!__atomic_load_n(&c->done, __ATOMIC_ACQUIRE)) {
        for (uint64_t vc = 0; vc < c->nvc; vc++) {
            struct pcow_mapping m;
            if (pcow_lookup(c->img, vc, &m) < 0) {
                c->bad++;
                continue;
            }
            if (m.depth != 0)
                continue;
            for (uint32_t k = 0; k < c->units; k++) {
                if (c->units > 1 && (!m.partial || !pcow_bitmap_test(&m.bitmap, k)))
                    continue;
                uint8_t b = 0;
                if (pread(c->fd, &b, 1, (off_t)(m.file_off + k * 4096)) != 1 || b != (uint8_t)(vc + 1))
                    c->bad++;
                c->seen++;
            }
        }
    }
    return NULL;
}

/* Start the reader on c->img's first stripe file. */
static void conc_start(struct conc *c, pthread_t *th)
{
    struct pcow_stripe s;
    CHECK(pcow_stripe_get(c->img, 0, &s) == 0);
    c->fd = s.fd;
    CHECK(pthread_create(th, NULL, conc_reader, c) == 0);
}

/* Stop the reader, close the image, and require no write error and no bad read. */
static void conc_finish(struct conc *c, pthread_t th, int werr)
{
    __atomic_store_n(&c->done, 1, __ATOMIC_RELEASE);
    pthread_join(th, NULL);
    pcow_close(c->img, NULL, 0);
    CHECK(werr == 0);
    CHECK(c->bad == 0);
}

static void test_concurrent_lookup(void)
{
    CHECK(mk("conc.img", 1 << 20, 4096, NULL) == 0);
    struct conc c = {.nvc = 256, .units = 1};
    c.img = op("conc.img", PCOW_OPEN_RDWR);
    CHECK(c.img);
    pthread_t th;
    conc_start(&c, &th);
    uint8_t buf[4096];
    int werr = 0;
    for (uint64_t vc = 0; vc < 256; vc++) {
        memset(buf, (int)(vc + 1), sizeof buf);
        if (pcow_write(c.img, buf, sizeof buf, vc * 4096) < 0)
            werr++;
    }
    conc_finish(&c, th, werr);
}

/* Lock-free lookups of partial entries whose bitmaps live in records, while one writer adds
 * partial entries (new records) and then more sub-units (records updated in place): every
 * sub-unit a lookup sees as owned must already hold the written data. */
static void test_concurrent_lookup_records(void)
{
    struct pcow_create_opts o = {.virtual_size = 1 << 20, .cluster_size = 8192, .subunit_size = 4096, .bitmap_records = true};
    char err[512];
    CHECK(pcow_create(P("concr.img"), &o, err, sizeof err) == 0);
    struct conc c = {.nvc = 128, .units = 2};
    c.img = op("concr.img", PCOW_OPEN_RDWR | PCOW_OPEN_FINE_COW);
    CHECK(c.img);
    static uint8_t base[128 * 8192];
    memset(base, 0xee, sizeof base);
    CHECKR(pcow_write(c.img, base, sizeof base, 0), c.img);
    CHECKR(pcow_snapshot_create(c.img, "s"), c.img);
    pthread_t th;
    conc_start(&c, &th);
    uint8_t buf[4096];
    int werr = 0;
    for (int k = 1; k >= 0; k--) {
        for (uint64_t vc = 0; vc < 128; vc++) {
            memset(buf, (int)(vc + 1), sizeof buf);
            if (pcow_write(c.img, buf, sizeof buf, vc * 8192 + (uint64_t)k * 4096) < 0)
                werr++;
        }
    }
    conc_finish(&c, th, werr);
}

/* ---- cost follows stored data, not declared sizes ---- */

/* The per-cluster map (the straightforward logic pcow_map had before it went by L1 entries),
 * written against the public API: the reference for the randomized comparison. */
struct xext {
    uint64_t start, length, offset;
    int depth;
    bool data;
    char file[256];
};
struct xlist {
    struct xext *e;
    size_t n, cap;
    bool oom;
};
static const char *base_name(const char *p)
{
    const char *s = p ? strrchr(p, '/') : NULL;
    return s ? s + 1 : p ? p : "";
}
static void xadd(struct xlist *l, uint64_t start, uint64_t len, int depth, bool data, uint64_t off, const char *file)
{
    struct xext *c = l->n ? &l->e[l->n - 1] : NULL;
    const char *fb = data ? base_name(file) : "";
    if (c && c->start + c->length == start && c->depth == depth && c->data == data && !strcmp(c->file, fb) &&
        (!data || c->offset + c->length == off)) {
        c->length += len;
        return;
    }
    if (l->n == l->cap) {
        struct xext *ne = realloc(l->e, (l->cap ? l->cap * 2 : 64) * sizeof *ne);
        if (!ne) {
            l->oom = true;
            return;
        }
        l->e = ne;
        l->cap = l->cap ? l->cap * 2 : 64;
    }
    struct xext x = {.start = start, .length = len, .offset = data ? off : 0, .depth = depth, .data = data};
    snprintf(x.file, sizeof x.file, "%s", fb);
    l->e[l->n++] = x;
}
static int xmap_cb(void *ctx, const struct pcow_map_extent *e)
{
    xadd(ctx, e->start, e->length, e->depth, e->data, e->offset, e->file);
    return 0;
}
static int ref_parent(const pcow_image *img, uint32_t li)
{
    struct pcow_layer_info L, P2;
    pcow_layer_get(img, li, &L);
    for (uint32_t j = 0; L.parent_id && j < pcow_layer_count(img); j++)
        if (pcow_layer_get(img, j, &P2) == 0 && P2.id == L.parent_id)
            return (int)j;
    return -1;
}
static void ref_range(pcow_image *img, uint64_t off, uint64_t len, int depth0, uint64_t out, struct xlist *l);
static void ref_base(pcow_image *img, uint64_t off, uint64_t len, int depth, uint64_t out, struct xlist *l)
{
    struct pcow_info in;
    pcow_get_info(img, &in);
    if (!in.base_format) {
        xadd(l, out, len, depth, false, 0, NULL);
        return;
    }
    uint64_t bsize = 0;
    pcow_image *b = NULL;
    if (in.base_format == PCOW_BASE_PCOW) {
        char err[256];
        if (pcow_open(in.base_resolved, PCOW_OPEN_NO_LOCK, &b, err, sizeof err) < 0) {
            l->oom = true;
            return;
        }
        struct pcow_info bi;
        pcow_get_info(b, &bi);
        bsize = bi.virtual_size;
    } else {
        struct stat st;
        if (stat(in.base_resolved, &st) == 0)
            bsize = (uint64_t)st.st_size;
    }
    uint64_t n = off < bsize ? bsize - off : 0;
    if (n > len)
        n = len;
    if (n && b)
        ref_range(b, off, n, depth, out, l);
    else if (n)
        xadd(l, out, n, depth, true, off, in.base_resolved);
    if (n < len)
        xadd(l, out + n, len - n, depth, false, 0, NULL);
    if (b)
        pcow_close(b, NULL, 0);
}
static void ref_layer(pcow_image *img, int li, int d, int depth0, uint64_t vc, uint64_t o, uint64_t len, uint64_t out,
                      struct xlist *l)
{
    struct pcow_info in;
    pcow_get_info(img, &in);
    for (; li >= 0; li = ref_parent(img, (uint32_t)li), d++) {
        struct pcow_entry e;
        pcow_entry_get(img, (uint32_t)li, vc, &e);
        if (!e.addr)
            continue;
        for (uint64_t pos = o; pos < o + len;) {
            uint64_t u = pos / in.subunit_size, end = (u + 1) * in.subunit_size;
            if (end > o + len)
                end = o + len;
            if (!e.partial || ((e.bitmap.w[u / 64] >> (u % 64)) & 1)) {
                uint32_t f;
                uint64_t fo;
                struct pcow_stripe st;
                pcow_addr_to_file(img, e.addr + pos, &f, &fo);
                pcow_stripe_get(img, f, &st);
                xadd(l, out + (pos - o), end - pos, depth0 + d, true, fo, st.path);
            } else {
                ref_layer(img, ref_parent(img, (uint32_t)li), d + 1, depth0, vc, pos, end - pos, out + (pos - o), l);
            }
            pos = end;
        }
        return;
    }
    ref_base(img, vc * in.cluster_size + o, len, depth0 + d, out, l);
}
static void ref_range(pcow_image *img, uint64_t off, uint64_t len, int depth0, uint64_t out, struct xlist *l)
{
    struct pcow_info in;
    pcow_get_info(img, &in);
    while (len && !l->oom) {
        uint64_t vc = off / in.cluster_size, o = off % in.cluster_size, n = in.cluster_size - o;
        if (n > len)
            n = len;
        ref_layer(img, (int)in.active_layer, 0, depth0, vc, o, n, out, l);
        off += n;
        out += n;
        len -= n;
    }
}

/* 4096 layers x 64 MiB L1 (the format's limits; 256 GiB of declared L1, all holes) with three
 * data clusters: open reads only the L1 blocks and L2 tables that exist (before: every L1 in
 * full, > 5 min, ~0.5 GB per 256 layers of memory); memory follows the tables (sparse in-memory
 * L1), so map, check and a snapshot on such an image stay cheap. */
static void test_cost_open_tables(void)
{
    CHECK(make_wide(P("wide.img"), 1ull << 51, 65536, 4096, NULL) == 0);
    pcow_image *img = op("wide.img", PCOW_OPEN_RDWR);
    CHECK(img);
    struct pcow_info in;
    pcow_get_info(img, &in);
    CHECK(in.layer_count == 4096 && in.l1_entries == (8u << 20) && in.table_bytes_read == 0);
    static uint8_t A[3][8192];
    const uint64_t offs[3] = {0, (1ull << 50) + 12345, (1ull << 51) - sizeof A[0]};
    for (int i = 0; i < 3; i++) {
        pattern(A[i], sizeof A[i], 700 + (uint32_t)i);
        CHECKR(pcow_write(img, A[i], sizeof A[i], offs[i]), img);
    }
    CHECK(pcow_snapshot_create(img, "one-too-many") == -ENOSPC); /* 4096 layers is the limit */
    CHECKR(pcow_close(img, NULL, 0), (pcow_image *)NULL);
    img = op("wide.img", 0);
    CHECK(img);
    pcow_get_info(img, &in);
    fprintf(stderr, "  4096 x 64 MiB L1, 3 data clusters: %llu table bytes read at open\n",
            (unsigned long long)in.table_bytes_read);
    /* 3 L2 tables and the file system blocks of L1 that hold their entries (208896 bytes on
     * ext4), not 256 GiB */
    CHECK(in.table_bytes_read >= 3 * 65536 && in.table_bytes_read < (1u << 20));
    CHECK(in.allocated_clusters == 3);
    for (int i = 0; i < 3; i++)
        CHECK(read_eq(img, offs[i], A[i], sizeof A[i]));
    struct xlist got = {0};
    CHECKR(pcow_map(img, xmap_cb, &got), img);
    uint64_t total = 0, data = 0;
    for (size_t i = 0; i < got.n; i++) {
        total += got.e[i].length;
        data += got.e[i].data ? got.e[i].length : 0;
    }
    CHECK(total == 1ull << 51 && data == 3 * 65536);
    free(got.e);
    pcow_close(img, NULL, 0);
    struct pcow_check_result res;
    CHECK(check_img("wide.img", 0, 0, &res) == 0);
    CHECK(res.corruptions == 0 && res.leaks == 0 && res.check_errors == 0);
    /* snapshot, write, delete on a wide image of 16 layers: shadow-written tables keep the
     * L1 sparse (only chunks that hold entries are written) */
    CHECK(make_wide(P("wide16.img"), 1ull << 51, 65536, 16, NULL) == 0);
    img = op("wide16.img", PCOW_OPEN_RDWR);
    CHECK(img);
    CHECKR(pcow_write(img, A[0], sizeof A[0], offs[1]), img);
    CHECKR(pcow_snapshot_create(img, "x"), img);
    CHECKR(pcow_write(img, A[1], sizeof A[1], offs[1]), img);
    CHECKR(pcow_snapshot_delete(img, "s3"), img);
    CHECKR(pcow_snapshot_delete(img, "x"), img);
    CHECK(read_eq(img, offs[1], A[1], sizeof A[1]));
    CHECKR(pcow_close(img, NULL, 0), (pcow_image *)NULL);
    img = op("wide16.img", 0);
    CHECK(img);
    pcow_get_info(img, &in);
    CHECK(in.layer_count == 15 && in.table_bytes_read < (1u << 20));
    CHECK(read_eq(img, offs[1], A[1], sizeof A[1]));
    pcow_close(img, NULL, 0);
    CHECK(check_img("wide16.img", 0, 0, &res) == 0);
    CHECK(res.corruptions == 0 && res.leaks == 0 && res.check_errors == 0);
}

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Random writes (some of zeros, some at the unaligned end), snapshots and deletes on img;
 * shadow holds the expected contents. */
static int random_ops(pcow_image *img, uint8_t *shadow, uint64_t vsize, uint64_t *seed, int nops, int *nsnaps)
{
    static uint8_t buf[300000];
    int snaps = *nsnaps;
    for (int op = 0; op < nops; op++) {
        uint64_t k = rnd(seed) % 10;
        if (k < 7) {
            uint64_t len = 1 + rnd(seed) % (rnd(seed) % 4 ? 9000 : sizeof buf - 1);
            uint64_t off = rnd(seed) % vsize;
            if (rnd(seed) % 8 == 0)
                off = vsize - 1 - rnd(seed) % (vsize < 100 ? vsize : 100); /* near the (unaligned) end */
            if (off + len > vsize)
                len = vsize - off;
            pattern(buf, len, (uint32_t)rnd(seed));
            if (rnd(seed) % 5 == 0)
                memset(buf, 0, len);
            if (pcow_write(img, buf, len, off) < 0) {
                fprintf(stderr, "  write: %s\n", pcow_errmsg(img));
                return -1;
            }
            memcpy(shadow + off, buf, len);
        } else if (k < 9) {
            char name[32];
            snprintf(name, sizeof name, "r%d", snaps++);
            if (pcow_snapshot_create(img, name) < 0) {
                fprintf(stderr, "  snapshot: %s\n", pcow_errmsg(img));
                return -1;
            }
        } else if (snaps) {
            char name[32];
            snprintf(name, sizeof name, "r%d", (int)(rnd(seed) % (uint64_t)snaps));
            int r = pcow_snapshot_delete(img, name);
            if (r < 0 && r != -ENOENT) {
                fprintf(stderr, "  delete: %s\n", pcow_errmsg(img));
                return -1;
            }
        }
    }
    *nsnaps = snaps;
    return 0;
}

/* Randomized: pcow_map (by L1 entries, raw base by its extents) against the per-cluster reference,
 * and zero extents against the shadow contents, on small random images with random bases. */
static void test_cost_map_random(void)
{
    uint64_t seed0 = getenv("PCOW_SEED") ? strtoull(getenv("PCOW_SEED"), NULL, 0) : (uint64_t)time(NULL);
    fprintf(stderr, "  seed %llu (PCOW_SEED=%llu to repeat)\n", (unsigned long long)seed0, (unsigned long long)seed0);
    for (int round = 0; round < 12; round++) {
        uint64_t seed = seed0 * 1000003 + (uint64_t)round + 1;
        uint32_t cs = rnd(&seed) % 2 ? 4096 : 65536;
        /* several L1 entries (1 MiB of virtual space each at 4 KiB clusters), unaligned end */
        uint64_t vsize = (cs == 4096 ? (1 + rnd(&seed) % 6) << 20 : (1 + rnd(&seed) % 3) << 20) + rnd(&seed) % 70000 + 1;
        int base = (int)(rnd(&seed) % 3); /* none, raw, pcow */
        char bname[64], iname[64];
        snprintf(bname, sizeof bname, "mr%d.base", round);
        snprintf(iname, sizeof iname, "mr%d.img", round);
        uint8_t *shadow = calloc(1, vsize);
        CHECK(shadow);
        uint64_t bsize = base ? 1 + rnd(&seed) % (vsize + vsize / 4) : 0;
        if (base == 1) {
            /* dense raw base (the reference maps a raw base as one data extent) */
            uint8_t *b = malloc(bsize);
            CHECK(b);
            pattern(b, bsize, (uint32_t)rnd(&seed));
            int fd = open(P(bname), O_CREAT | O_TRUNC | O_WRONLY, 0644);
            CHECK(fd >= 0 && write(fd, b, bsize) == (ssize_t)bsize);
            close(fd);
            memcpy(shadow, b, bsize < vsize ? bsize : vsize);
            free(b);
        } else if (base == 2) {
            CHECK(mk(bname, bsize, cs, NULL) == 0);
            pcow_image *bi = op(bname, PCOW_OPEN_RDWR | (rnd(&seed) % 2 ? PCOW_OPEN_FINE_COW : 0));
            CHECK(bi);
            uint8_t *bs = calloc(1, bsize);
            CHECK(bs);
            int ns = 0;
            CHECK(random_ops(bi, bs, bsize, &seed, 20, &ns) == 0);
            memcpy(shadow, bs, bsize < vsize ? bsize : vsize);
            free(bs);
            pcow_close(bi, NULL, 0);
        }
        struct pcow_create_opts o = {.virtual_size = vsize, .cluster_size = cs, .base = base ? bname : NULL,
                                     .base_format = base == 1 ? PCOW_BASE_RAW : base == 2 ? PCOW_BASE_PCOW : 0};
        char err[512];
        CHECK(pcow_create(P(iname), &o, err, sizeof err) == 0);
        pcow_image *img = op(iname, PCOW_OPEN_RDWR | (rnd(&seed) % 2 ? PCOW_OPEN_FINE_COW : 0));
        CHECK(img);
        int ns = 0;
        CHECK(random_ops(img, shadow, vsize, &seed, 40, &ns) == 0);
        struct xlist got = {0}, want = {0};
        CHECKR(pcow_map(img, xmap_cb, &got), img);
        ref_range(img, 0, vsize, 0, 0, &want);
        CHECK(!got.oom && !want.oom);
        bool same = got.n == want.n;
        for (size_t i = 0; same && i < got.n; i++)
            same = got.e[i].start == want.e[i].start && got.e[i].length == want.e[i].length &&
                   got.e[i].offset == want.e[i].offset && got.e[i].depth == want.e[i].depth &&
                   got.e[i].data == want.e[i].data && !strcmp(got.e[i].file, want.e[i].file);
        if (!same)
            fprintf(stderr, "  round %d (cs %u, vsize %llu, base %d): map has %zu extents, reference %zu\n", round, cs,
                    (unsigned long long)vsize, base, got.n, want.n);
        CHECK(same);
        CHECK(read_eq(img, 0, shadow, vsize));
        uint64_t covered = 0;
        for (size_t i = 0; i < got.n; i++) {
            CHECK(got.e[i].start == covered);
            covered += got.e[i].length;
            for (uint64_t b = 0; !got.e[i].data && b < got.e[i].length; b++)
                CHECK(shadow[got.e[i].start + b] == 0); /* zero extents read as zeros */
        }
        CHECK(covered == vsize);
        free(got.e);
        free(want.e);
        pcow_close(img, NULL, 0);
        /* snapshot deletes freed exactly what nothing references any more (freeing by runs) */
        struct pcow_check_result res;
        CHECK(check_img(iname, 0, 0, &res) == 0);
        CHECK(res.corruptions == 0 && res.leaks == 0 && res.check_errors == 0);
        img = op(iname, 0);
        CHECK(img);
        CHECK(read_eq(img, 0, shadow, vsize));
        pcow_close(img, NULL, 0);
        free(shadow);
    }
}

/* A raw base is mapped by its own extents: its holes are zero extents, its data data extents. */
static void test_cost_map_raw_base_holes(void)
{
    int fd = open(P("holes.raw"), O_CREAT | O_TRUNC | O_RDWR, 0644);
    CHECK(fd >= 0);
    static uint8_t A[65536];
    pattern(A, sizeof A, 77);
    CHECK(ftruncate(fd, 64 << 20) == 0);
    CHECK(pwrite(fd, A, sizeof A, 32 << 20) == (ssize_t)sizeof A);
    close(fd);
    struct pcow_create_opts o = {.virtual_size = 64 << 20, .base = "holes.raw", .base_format = PCOW_BASE_RAW};
    char err[512];
    CHECK(pcow_create(P("holes.img"), &o, err, sizeof err) == 0);
    pcow_image *img = op("holes.img", 0);
    CHECK(img);
    struct xlist got = {0};
    CHECKR(pcow_map(img, xmap_cb, &got), img);
    int ndata = 0;
    uint64_t dbytes = 0;
    for (size_t i = 0; i < got.n; i++)
        if (got.e[i].data) {
            ndata++;
            dbytes += got.e[i].length;
            CHECK(got.e[i].depth == 1 && got.e[i].offset <= (32u << 20) &&
                  got.e[i].offset + got.e[i].length >= (32u << 20) + sizeof A);
        }
    CHECK(ndata == 1 && dbytes < (4u << 20)); /* the 64 MiB of holes are not data */
    free(got.e);
    uint8_t b[4096];
    CHECKR(pcow_read(img, b, sizeof b, (32u << 20) + 4096), img);
    CHECK(!memcmp(b, A + 4096, sizeof b));
    pcow_close(img, NULL, 0);
}

struct leakmsgs {
    int leaks;
    uint64_t last;
};
static void leak_msg(void *ctx, const char *sev, const char *msg)
{
    struct leakmsgs *m = ctx;
    if (!strcmp(sev, "leak")) {
        m->leaks++;
        const char *p = strstr(msg, "offset 0x");
        if (p)
            m->last = strtoull(p + 7, NULL, 16);
    }
}

/* Randomized leak scan by extents: leaks injected between data extents (in holes left by
 * sparse gaps), and in the last cluster of a sparse tail; written zero clusters and holes are
 * not leaks. The expected count is computed independently (per injected cluster); repair
 * removes them all and keeps the contents. Also a large sparse file: the scan follows the data. */
static void test_cost_leak_scan_random(void)
{
    uint64_t seed0 = getenv("PCOW_SEED") ? strtoull(getenv("PCOW_SEED"), NULL, 0) : (uint64_t)time(NULL) + 17;
    fprintf(stderr, "  seed %llu (PCOW_SEED=%llu to repeat)\n", (unsigned long long)seed0, (unsigned long long)seed0);
    static uint8_t buf[65536];
    for (int round = 0; round < 10; round++) {
        uint64_t seed = seed0 * 7919 + (uint64_t)round + 1;
        const uint32_t cs = 4096;
        uint64_t vsize = (4 << 20) + rnd(&seed) % 5000;
        char name[64];
        snprintf(name, sizeof name, "lk%d.img", round);
        CHECK(mk(name, vsize, cs, NULL) == 0);
        uint8_t *shadow = calloc(1, vsize);
        CHECK(shadow);
        int expect = 0, ns = 0;
        for (int step = 0; step < 6; step++) {
            pcow_image *img = op(name, PCOW_OPEN_RDWR);
            CHECK(img);
            CHECK(random_ops(img, shadow, vsize, &seed, 6, &ns) == 0);
            pcow_close(img, NULL, 0);
            /* a gap after the current end: holes, some clusters of leaked data, some of zeros;
             * the image appends its next clusters after it */
            int fd = open(P(name), O_RDWR);
            CHECK(fd >= 0);
            struct stat st;
            CHECK(fstat(fd, &st) == 0);
            uint64_t gap = 1 + rnd(&seed) % 40, at = (uint64_t)st.st_size;
            CHECK(ftruncate(fd, (off_t)(at + gap * cs)) == 0);
            for (uint64_t c = 0; c < gap; c++) {
                uint64_t k = rnd(&seed) % 4;
                if (k == 0) {
                    pattern(buf, cs, (uint32_t)rnd(&seed));
                    buf[rnd(&seed) % cs] |= 1; /* certainly non-zero */
                    expect++;
                } else if (k == 1) {
                    memset(buf, 0, cs); /* written zeros: not a leak */
                } else {
                    continue; /* hole */
                }
                CHECK(pwrite(fd, buf, cs, (off_t)(at + c * cs)) == (ssize_t)cs);
            }
            close(fd);
        }
        /* a sparse tail whose last cluster is leaked */
        int fd = open(P(name), O_RDWR);
        CHECK(fd >= 0);
        struct stat st;
        CHECK(fstat(fd, &st) == 0);
        uint64_t tail_at = (uint64_t)st.st_size + (1 + rnd(&seed) % 1000) * cs;
        pattern(buf, cs, 9);
        CHECK(pwrite(fd, buf, cs, (off_t)tail_at) == (ssize_t)cs);
        expect++;
        close(fd);
        struct pcow_check_result res;
        struct leakmsgs lm = {0};
        char err[512];
        CHECK(pcow_check(P(name), 0, 0, &res, leak_msg, &lm, err, sizeof err) == 0);
        if ((int)res.leaks != expect)
            fprintf(stderr, "  round %d: %llu leaks found, %d injected\n", round, (unsigned long long)res.leaks, expect);
        CHECK((int)res.leaks == expect && lm.leaks == expect && res.corruptions == 0 && res.check_errors == 0);
        CHECK(lm.last == tail_at); /* the last cluster of the file */
        CHECK(pcow_check(P(name), 0, PCOW_REPAIR_LEAKS, &res, NULL, NULL, err, sizeof err) == 0);
        CHECK((int)res.leaks_fixed == expect && res.leaks == 0);
        CHECK(check_img(name, 0, 0, &res) == 0);
        CHECK(res.leaks == 0 && res.corruptions == 0);
        CHECK(stat(P(name), &st) == 0 && (uint64_t)st.st_size < tail_at);
        pcow_image *img = op(name, 0);
        CHECK(img);
        CHECK(read_eq(img, 0, shadow, vsize));
        pcow_close(img, NULL, 0);
        free(shadow);
    }
    /* space reserved but never written (a crash between pcow_reserve and the entry) is neither
     * data nor a leak, but repair still gives it back */
    {
        CHECK(mk("lkres.img", 4 << 20, 4096, NULL) == 0);
        pcow_image *img = op("lkres.img", PCOW_OPEN_RDWR);
        CHECK(img);
        uint64_t ra;
        CHECKR(pcow_reserve(img, 256, &ra), img);
        pattern(buf, 8192, 3);
        CHECKR(pcow_write(img, buf, 8192, 4096), img); /* allocated after the reserved clusters */
        pcow_close(img, NULL, 0);
        struct stat s0, s1;
        struct pcow_check_result res;
        CHECK(stat(P("lkres.img"), &s0) == 0);
        CHECK(check_img("lkres.img", 0, PCOW_REPAIR_LEAKS, &res) == 0);
        CHECK(res.corruptions == 0 && res.check_errors == 0);
        CHECK(stat(P("lkres.img"), &s1) == 0);
        CHECK(s0.st_blocks - s1.st_blocks >= 256 * 4096 / 512); /* the 1 MiB reserved is punched */
        img = op("lkres.img", 0);
        CHECK(img);
        CHECK(read_eq(img, 4096, buf, 8192));
        pcow_close(img, NULL, 0);
    }
    /* 64 GiB sparse file at 4 KiB clusters (16M clusters; one lseek each took ~15 s): the one
     * leaked cluster at the very end is found, and the scan follows the data */
    CHECK(mk("lkbig.img", 1 << 30, 4096, NULL) == 0);
    int fd = open(P("lkbig.img"), O_RDWR);
    CHECK(fd >= 0);
    pattern(buf, 4096, 5);
    CHECK(pwrite(fd, buf, 4096, (64ll << 30) - 4096) == 4096);
    close(fd);
    struct pcow_check_result res;
    struct leakmsgs lm = {0};
    char err[512];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK(pcow_check(P("lkbig.img"), 0, 0, &res, leak_msg, &lm, err, sizeof err) == 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double sec = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    fprintf(stderr, "  leak scan of a 64 GiB sparse file: %.3f s\n", sec);
    CHECK(res.leaks == 1 && lm.last == (64ull << 30) - 4096);
    CHECK(sec < 5); /* ~0.001 s now, ~15 s before; generous for sanitizer builds on a loaded host */
}

struct test {
    const char *name;
    void (*fn)(void);
};
static const struct test tests[] = {
    {"create_128g", test_create_128g},
    {"bad_create_opts", test_bad_create_opts},
    {"rw_roundtrip", test_rw_roundtrip},
    {"lock", test_lock},
    {"snapshots_full", test_snapshots_full},
    {"snapshots_fine", test_snapshots_fine},
    {"snapshot_branches", test_snapshot_branches},
    {"fine_cow_api", test_fine_cow_api},
    {"base_chain", test_base_chain},
    {"commit_into_raw", test_commit_into_raw},
    {"base_paths", test_base_paths},
    {"base_loop", test_base_loop},
    {"corrupt_truncated", test_corrupt_truncated},
    {"corrupt_header", test_corrupt_header},
    {"corrupt_tables", test_corrupt_tables},
    {"layer_id_exhausted", test_layer_id_exhausted},
    {"fine_2m", test_fine_2m},
    {"corrupt_bitmap_records", test_corrupt_bitmap_records},
    {"enospc_l2", test_enospc_l2},
    {"leaks_and_repair", test_leaks_and_repair},
    {"release", test_release},
    {"striping", test_striping},
    {"map", test_map},
    {"crash_states", test_crash_states},
    {"persist_len_contract", test_persist_len_contract},
    {"many_images", test_many_images},
    {"file_types", test_file_types},
    {"stripe_outside", test_stripe_outside},
    {"unaligned_tail", test_unaligned_tail},
    {"header_verdicts", test_header_verdicts},
    {"dropped_not_leaks", test_dropped_not_leaks},
    {"snapshot_keys", test_snapshot_keys},
    {"messages", test_messages},
    {"in_use_pid", test_in_use_pid},
    {"concurrent_lookup", test_concurrent_lookup},
    {"concurrent_lookup_records", test_concurrent_lookup_records},
    {"cost_open_tables", test_cost_open_tables},
    {"cost_map_random", test_cost_map_random},
    {"cost_map_raw_base_holes", test_cost_map_raw_base_holes},
    {"cost_leak_scan_random", test_cost_leak_scan_random},
};

int main(int argc, char **argv)
{
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(tdir, sizeof tdir, "%s/pcow-test-XXXXXX", base);
    if (!mkdtemp(tdir)) {
        perror("mkdtemp");
        return 1;
    }
    int pass = 0, fail = 0;
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        if (argc > 1 && !strstr(tests[i].name, argv[1]))
            continue;
        t_failed = 0;
        tests[i].fn();
        printf("%s %s\n", t_failed ? "FAIL" : "ok  ", tests[i].name);
        if (t_failed)
            fail++;
        else
            pass++;
    }
    printf("%d passed, %d failed\n", pass, fail);
    if (!fail) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tdir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", tdir);
    } else {
        fprintf(stderr, "test files kept in %s\n", tdir);
    }
    return fail ? 1 : 0;
}
