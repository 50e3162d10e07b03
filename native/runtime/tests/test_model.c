/* Randomized model-based test of libpcow-runtime: random operations through the mapped range
 * against a plain shadow copy of what the image must read, compared after every step (the
 * touched bytes) and in full after every rollback, snapshot delete and reopen (through the
 * range, through pcow_read, and `pcow_check` / `pcow-img check` clean).
 *
 * Each configuration draws, from its own seed: cluster size 4 KiB..2 MiB; a virtual size that
 * is cluster-, page- or not even page-aligned; no base, a raw base or a pcow base (the image
 * then takes the base's size, as `pcow-img create -b` does); COW unit whole or 4 KiB;
 * pre-allocation on/off; 1..4 handler threads; read_fill default or one page. Operations:
 * stores and loads of random sizes at random offsets (unaligned, page-, cluster-crossing, the
 * last byte); pread()/pwrite() with the range as buffer (kernel-mode faults); O_DIRECT pread()
 * into the range (pinned pages, from a file on /var/tmp); snapshot, rollback, snapshot delete
 * (libpcow or pcow-img while unmapped), unmap/reopen with new runtime options; phases of
 * concurrent writer threads on disjoint parts of the shadow; loads (and, in some
 * configurations, stores) in the tail between the virtual size and pcow_runtime_length().
 *
 * Environment: PCOW_MODEL_SEED=S runs the configuration of seed S (PCOW_MODEL_CONFIGS=N: seeds
 * S..S+N-1); PCOW_MODEL_OPS ops per configuration (default 300); PCOW_MODEL_SECONDS time budget
 * when no seed is given (default 15; the long mode is e.g. PCOW_MODEL_SECONDS=1800);
 * PCOW_MODEL_VERBOSE=1 prints every operation; PCOW_IMG = pcow-img to also use it;
 * PCOW_TEST_DIR (default /dev/shm) for the images, PCOW_MODEL_DIRECT_DIR (default /var/tmp)
 * for the O_DIRECT source file. A failure prints the seed and the last operations. */
#include "rt_testutil.h"

#include "pcow_runtime.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>

#define KiB 1024ull
#define MiB (1024ull * 1024ull)
#define PAGE 4096ull
#define MAX_SNAPS 6
#define MAX_WRITERS 4
#define DIRECT_MAX (256 * KiB)

static char dir[256];
static char direct_dir[256];
static const char *pcow_img_bin;
static int verbose;
static uint64_t cur_seed;

/* ---- rng (splitmix64) ---- */
static uint64_t mix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static uint64_t below(uint64_t *s, uint64_t n) { return n ? mix(s) % n : 0; }
static bool chance(uint64_t *s, unsigned pct) { return below(s, 100) < pct; }
static void rand_bytes(uint64_t *s, uint8_t *p, uint64_t n)
{
    uint64_t v = mix(s);
    for (uint64_t i = 0; i < n; i++) {
        if ((i & 7) == 0 && i)
            v = mix(s);
        p[i] = (uint8_t)(v >> ((i & 7) * 8));
    }
}

/* ---- the last operations, printed when something fails ---- */
#define HIST 24
static char hist[HIST][200];
static unsigned nhist;
static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(hist[nhist % HIST], sizeof hist[0], fmt, ap);
    va_end(ap);
    if (verbose)
        printf("      %s\n", hist[nhist % HIST]);
    nhist++;
}
static void dump_hist(void)
{
    fprintf(stderr, "    seed %" PRIu64 " (reproduce: PCOW_MODEL_SEED=%" PRIu64 "), last operations:\n", cur_seed,
            cur_seed);
    for (unsigned i = nhist > HIST ? nhist - HIST : 0; i < nhist; i++)
        fprintf(stderr, "      %s\n", hist[i % HIST]);
}
#define FAILIF(cond, ...)                                                                            \
    do {                                                                                             \
        if (cond) {                                                                                  \
            fprintf(stderr, "    %s:%d: ", __FILE__, __LINE__);                                      \
            fprintf(stderr, __VA_ARGS__);                                                            \
            fputc('\n', stderr);                                                                     \
            dump_hist();                                                                             \
            _exit(1);                                                                                \
        }                                                                                            \
    } while (0)

static void on_signal(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    fprintf(stderr, "    signal %d (%s) at %p\n", sig, strsignal(sig), si->si_addr);
    dump_hist();
    _exit(1);
}

/* ---- the configuration ---- */
struct cfg {
    uint64_t seed;
    uint32_t csize;
    uint64_t vsize;
    const char *size_kind;
    int base; /* 0 none, 1 raw, 2 pcow */
    uint32_t base_csize;
    bool tail_stores;
    uint32_t writers;
};

struct model {
    struct cfg c;
    uint64_t rs;  /* rng state */
    char path[512];
    pcow_runtime *rt;
    uint8_t *m;   /* the range */
    uint64_t len; /* pcow_runtime_length */
    uint8_t *shadow;
    struct {
        char name[16];
        uint8_t *data;
    } snaps[MAX_SNAPS];
    unsigned nsnaps, snap_seq;
    int scratch;        /* tmpfs file for pread/pwrite with the range as buffer */
    int direct;         /* O_DIRECT file, or -1 */
    uint8_t *dbuf;      /* aligned buffer for it */
    uint8_t *buf;       /* scratch */
    bool tail_written;
    struct pcow_runtime_opts o;
    uint64_t ops_done, stores, loads, kops, dops, snapshots, rollbacks, deletes, reopens, phases;
};

static char errbuf[2048];

static void pick_opts(struct model *M)
{
    uint64_t *s = &M->rs;
    memset(&M->o, 0, sizeof M->o);
    M->o.cow_unit = M->c.csize > PAGE && chance(s, 50) ? (uint32_t)PAGE : 0;
    M->o.prealloc_depth = chance(s, 40) ? (uint32_t)(1 + below(s, 8)) : 0;
    M->o.handler_threads = (uint32_t)(1 + below(s, 4));
    M->o.read_fill = chance(s, 30) ? (uint32_t)PAGE : 0;
}

static void do_map(struct model *M)
{
    pick_opts(M);
    note("map: cow_unit %u prealloc %u handlers %u read_fill %u", M->o.cow_unit, M->o.prealloc_depth,
         M->o.handler_threads, M->o.read_fill);
    int r = pcow_runtime_open(M->path, 0, &M->o, &M->rt, errbuf, sizeof errbuf);
    FAILIF(r < 0, "map %s: %s", M->path, errbuf);
    M->m = pcow_runtime_addr(M->rt);
    M->len = pcow_runtime_length(M->rt);
    FAILIF(pcow_runtime_size(M->rt) != M->c.vsize, "size %" PRIu64 " != %" PRIu64, pcow_runtime_size(M->rt),
           M->c.vsize);
    FAILIF(M->len < M->c.vsize || M->len % M->c.csize, "length %" PRIu64, M->len);
}

static void do_unmap(struct model *M)
{
    int r = pcow_runtime_unmap(M->rt, errbuf, sizeof errbuf);
    FAILIF(r < 0, "unmap: %s", errbuf);
    M->rt = NULL;
    M->m = NULL;
}

static void compare(struct model *M, uint64_t off, uint64_t len, const char *what)
{
    const uint8_t *p = M->m + off, *q = M->shadow + off;
    if (memcmp(p, q, len) == 0)
        return;
    for (uint64_t i = 0; i < len; i++)
        FAILIF(p[i] != q[i], "%s: byte 0x%" PRIx64 " reads 0x%02x, the model has 0x%02x (checked 0x%" PRIx64 "+0x%" PRIx64
                             ", cluster %" PRIu64 ")",
               what, off + i, p[i], q[i], off, len, (off + i) / M->c.csize);
}

static void compare_all(struct model *M, const char *what)
{
    compare(M, 0, M->c.vsize, what);
    if (!M->tail_written) {
        for (uint64_t i = M->c.vsize; i < M->len; i++)
            FAILIF(M->m[i] != 0, "%s: tail byte 0x%" PRIx64 " (beyond the virtual size) reads 0x%02x, never written",
                   what, i, M->m[i]);
    }
}

/* A random range inside [lo, hi): unaligned, page- and cluster-crossing, first and last byte. */
static void pick_range(uint64_t *s, uint64_t csize, uint64_t lo, uint64_t hi, uint64_t maxlen, uint64_t *off,
                       uint64_t *len)
{
    uint64_t span = hi - lo, o;
    switch (below(s, 6)) {
    case 0: /* near a cluster boundary */
        o = lo + (below(s, span / csize + 1) * csize) + below(s, 129) - 64;
        break;
    case 1: /* near a page boundary */
        o = lo + (below(s, span / PAGE + 1) * PAGE) + below(s, 17) - 8;
        break;
    case 2: /* up to the last byte */
        o = hi - 1 - below(s, below(s, 2) ? 16 : 3 * PAGE);
        break;
    case 3:
        o = lo + below(s, 16);
        break;
    default:
        o = lo + below(s, span);
    }
    if ((int64_t)o < (int64_t)lo || o >= hi)
        o = lo + below(s, span);
    uint64_t l;
    switch (below(s, 5)) {
    case 0: l = 1 + below(s, 8); break;
    case 1: l = 1 + below(s, 2 * PAGE); break;
    case 2: l = 1 + below(s, csize + PAGE); break;
    case 3: l = PAGE * (1 + below(s, 4)); o = lo + (o - lo) / PAGE * PAGE; break;
    default: l = hi - o; /* to the end */
    }
    if (l > maxlen)
        l = maxlen;
    if (o + l > hi)
        l = hi - o;
    if (l == 0)
        l = 1;
    *off = o;
    *len = l;
}

static uint64_t max_len(const struct model *M) { return M->c.csize * 2 > 512 * KiB ? 512 * KiB : M->c.csize * 2; }

static void op_store(struct model *M)
{
    uint64_t off, len;
    pick_range(&M->rs, M->c.csize, 0, M->c.vsize, max_len(M), &off, &len);
    note("store 0x%" PRIx64 "+0x%" PRIx64, off, len);
    rand_bytes(&M->rs, M->buf, len);
    memcpy(M->m + off, M->buf, len);
    memcpy(M->shadow + off, M->buf, len);
    compare(M, off, len, "store read back");
    M->stores++;
}

static void op_load(struct model *M)
{
    uint64_t off, len;
    pick_range(&M->rs, M->c.csize, 0, M->c.vsize, max_len(M), &off, &len);
    note("load 0x%" PRIx64 "+0x%" PRIx64, off, len);
    compare(M, off, len, "load");
    M->loads++;
}

/* The tail [vsize, length): a load never faults; it reads zeros until something is stored
 * there (stores there are accepted and not part of the image). */
static void op_tail(struct model *M)
{
    if (M->len == M->c.vsize)
        return op_load(M);
    uint64_t off = M->c.vsize + below(&M->rs, M->len - M->c.vsize);
    uint64_t len = 1 + below(&M->rs, M->len - off);
    if (len > 3 * PAGE)
        len = 3 * PAGE;
    if (M->c.tail_stores && chance(&M->rs, 50)) {
        note("tail store 0x%" PRIx64 "+0x%" PRIx64, off, len);
        memset(M->m + off, 0xA5, len);
        M->tail_written = true;
        return;
    }
    note("tail load 0x%" PRIx64 "+0x%" PRIx64, off, len);
    for (uint64_t i = 0; i < len; i++)
        FAILIF(!M->tail_written && M->m[off + i] != 0, "tail byte 0x%" PRIx64 " reads 0x%02x, never written", off + i,
               M->m[off + i]);
}

static void xfer(int fd, bool rd, uint8_t *p, uint64_t len, uint64_t foff, const char *what)
{
    uint64_t done = 0;
    while (done < len) {
        ssize_t n = rd ? pread(fd, p + done, len - done, (off_t)(foff + done))
                       : pwrite(fd, p + done, len - done, (off_t)(foff + done));
        if (n < 0 && errno == EINTR)
            continue;
        FAILIF(n <= 0, "%s of 0x%" PRIx64 " bytes at +0x%" PRIx64 ": %s", what, len - done, done,
               n < 0 ? strerror(errno) : "short");
        done += (uint64_t)n;
    }
}

/* pwrite() from the range (kernel-mode read faults) and pread() into it (kernel-mode write faults). */
static void op_kernel(struct model *M)
{
    uint64_t off, len;
    pick_range(&M->rs, M->c.csize, 0, M->c.vsize, max_len(M), &off, &len);
    if (chance(&M->rs, 50)) {
        note("kernel read (pwrite from the range) 0x%" PRIx64 "+0x%" PRIx64, off, len);
        xfer(M->scratch, false, M->m + off, len, 0, "pwrite from the range");
        xfer(M->scratch, true, M->buf, len, 0, "pread of the scratch file");
        FAILIF(memcmp(M->buf, M->shadow + off, len) != 0, "pwrite from the range 0x%" PRIx64 "+0x%" PRIx64
               " wrote other bytes than the model has", off, len);
    } else {
        note("kernel write (pread into the range) 0x%" PRIx64 "+0x%" PRIx64, off, len);
        rand_bytes(&M->rs, M->buf, len);
        xfer(M->scratch, false, M->buf, len, 0, "pwrite of the scratch file");
        xfer(M->scratch, true, M->m + off, len, 0, "pread into the range");
        memcpy(M->shadow + off, M->buf, len);
        compare(M, off, len, "pread into the range");
    }
    M->kops++;
}

/* O_DIRECT pread into the range: the pages are pinned (GUP) and written by the device. */
static void op_direct(struct model *M)
{
    if (M->direct < 0 || M->c.vsize < PAGE)
        return op_kernel(M);
    uint64_t pages = M->c.vsize / PAGE;
    uint64_t n = 1 + below(&M->rs, DIRECT_MAX / PAGE);
    uint64_t first = below(&M->rs, pages);
    if (first + n > pages)
        n = pages - first;
    uint64_t off = first * PAGE, len = n * PAGE;
    note("O_DIRECT pread into the range 0x%" PRIx64 "+0x%" PRIx64, off, len);
    rand_bytes(&M->rs, M->dbuf, len);
    xfer(M->direct, false, M->dbuf, len, 0, "O_DIRECT pwrite of the source file");
    xfer(M->direct, true, M->m + off, len, 0, "O_DIRECT pread into the range");
    memcpy(M->shadow + off, M->dbuf, len);
    compare(M, off, len, "O_DIRECT pread into the range");
    M->dops++;
}

static void op_snapshot(struct model *M)
{
    if (M->nsnaps == MAX_SNAPS)
        return;
    unsigned i = M->nsnaps;
    snprintf(M->snaps[i].name, sizeof M->snaps[i].name, "s%u", M->snap_seq++);
    note("snapshot %s", M->snaps[i].name);
    int r = pcow_runtime_snapshot(M->rt, M->snaps[i].name);
    FAILIF(r < 0, "snapshot %s: %s", M->snaps[i].name, pcow_runtime_errmsg(M->rt));
    M->snaps[i].data = malloc(M->c.vsize);
    FAILIF(!M->snaps[i].data, "out of memory");
    memcpy(M->snaps[i].data, M->shadow, M->c.vsize);
    M->nsnaps++;
    M->snapshots++;
}

static void op_rollback(struct model *M)
{
    if (!M->nsnaps)
        return op_snapshot(M);
    unsigned i = (unsigned)below(&M->rs, M->nsnaps);
    note("rollback %s", M->snaps[i].name);
    int r = pcow_runtime_rollback(M->rt, M->snaps[i].name);
    FAILIF(r < 0, "rollback %s: %s", M->snaps[i].name, pcow_runtime_errmsg(M->rt));
    memcpy(M->shadow, M->snaps[i].data, M->c.vsize);
    /* the tail of the new active layer: whatever the lower layers held there */
    compare_all(M, "after rollback");
    M->rollbacks++;
}

static void run_check(struct model *M, const char *when)
{
    struct pcow_check_result res;
    memset(&res, 0, sizeof res);
    int r = pcow_check(M->path, 0, 0, &res, NULL, NULL, errbuf, sizeof errbuf);
    FAILIF(r < 0, "check %s: %s", when, errbuf);
    FAILIF(res.corruptions || res.check_errors || res.leaks,
           "check %s: %" PRIu64 " corruptions, %" PRIu64 " leaks, %" PRIu64 " check errors", when, res.corruptions,
           res.leaks, res.check_errors);
    if (pcow_img_bin && chance(&M->rs, 30)) {
        char cmd[1200];
        snprintf(cmd, sizeof cmd, "'%s' check '%s' > /dev/null 2>&1", pcow_img_bin, M->path);
        int st = system(cmd);
        FAILIF(st != 0, "pcow-img check %s: exit status %d", when, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    }
}

/* Read the whole image with pcow_read (its own code path) and compare. */
static void compare_pcow_read(struct model *M)
{
    pcow_image *img;
    int r = pcow_open(M->path, 0, &img, errbuf, sizeof errbuf);
    FAILIF(r < 0, "open %s: %s", M->path, errbuf);
    for (uint64_t off = 0; off < M->c.vsize; off += 512 * KiB) {
        uint64_t l = M->c.vsize - off < 512 * KiB ? M->c.vsize - off : 512 * KiB;
        r = pcow_read(img, M->buf, l, off);
        FAILIF(r < 0, "pcow_read 0x%" PRIx64 "+0x%" PRIx64 ": %s", off, l, pcow_errmsg(img));
        for (uint64_t i = 0; i < l; i++)
            FAILIF(M->buf[i] != M->shadow[off + i], "pcow_read: byte 0x%" PRIx64 " is 0x%02x, the model has 0x%02x",
                   off + i, M->buf[i], M->shadow[off + i]);
    }
    pcow_close(img, NULL, 0);
}

static void op_reopen(struct model *M)
{
    note("unmap, check, pcow_read, reopen");
    do_unmap(M);
    run_check(M, "after unmap");
    compare_pcow_read(M);
    do_map(M);
    compare_all(M, "after reopen");
    M->reopens++;
}

static void op_delete(struct model *M)
{
    if (!M->nsnaps)
        return op_snapshot(M);
    unsigned i = (unsigned)below(&M->rs, M->nsnaps);
    bool tool = pcow_img_bin && chance(&M->rs, 50);
    note("unmap, delete snapshot %s (%s), reopen", M->snaps[i].name, tool ? "pcow-img" : "libpcow");
    do_unmap(M);
    if (tool) {
        char cmd[1200];
        snprintf(cmd, sizeof cmd, "'%s' snapshot -d '%s' '%s' > /dev/null", pcow_img_bin, M->snaps[i].name, M->path);
        int st = system(cmd);
        FAILIF(st != 0, "pcow-img snapshot -d %s: exit status %d", M->snaps[i].name,
               WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    } else {
        pcow_image *img;
        int r = pcow_open(M->path, PCOW_OPEN_RDWR, &img, errbuf, sizeof errbuf);
        FAILIF(r < 0, "open %s: %s", M->path, errbuf);
        r = pcow_snapshot_delete(img, M->snaps[i].name);
        FAILIF(r < 0, "delete %s: %s", M->snaps[i].name, pcow_errmsg(img));
        r = pcow_close(img, errbuf, sizeof errbuf);
        FAILIF(r < 0, "close: %s", errbuf);
    }
    free(M->snaps[i].data);
    M->snaps[i] = M->snaps[--M->nsnaps];
    run_check(M, "after snapshot delete");
    do_map(M);
    compare_all(M, "after snapshot delete");
    M->deletes++;
}

/* ---- concurrent writers, each on its own part of the shadow ---- */
struct writer {
    struct model *M;
    uint64_t lo, hi, seed, ops;
    uint8_t *buf;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    struct model *M = w->M;
    uint64_t s = w->seed;
    for (uint64_t k = 0; k < w->ops; k++) {
        uint64_t off, len, ml = max_len(M);
        pick_range(&s, M->c.csize, w->lo, w->hi, ml, &off, &len);
        if (chance(&s, 60)) {
            rand_bytes(&s, w->buf, len);
            memcpy(M->m + off, w->buf, len);
            memcpy(M->shadow + off, w->buf, len);
        }
        FAILIF(memcmp(M->m + off, M->shadow + off, len) != 0,
               "writer [0x%" PRIx64 ", 0x%" PRIx64 ") op %" PRIu64 ": 0x%" PRIx64 "+0x%" PRIx64 " differs from the model",
               w->lo, w->hi, k, off, len);
    }
    return NULL;
}

static void op_phase(struct model *M)
{
    uint32_t n = M->c.writers;
    uint64_t cut[MAX_WRITERS + 1];
    cut[0] = 0;
    cut[n] = M->c.vsize;
    for (uint32_t i = 1; i < n; i++) /* unaligned cut points: neighbours share clusters and pages */
        cut[i] = M->c.vsize * i / n + below(&M->rs, 64) - 32;
    struct writer w[MAX_WRITERS];
    pthread_t t[MAX_WRITERS];
    uint64_t ops = 20 + below(&M->rs, 60);
    note("phase: %u writers x %" PRIu64 " ops, cuts at 0x%" PRIx64 "...", n, ops, n > 1 ? cut[1] : cut[0]);
    for (uint32_t i = 0; i < n; i++) {
        w[i] = (struct writer){M, cut[i], cut[i + 1], mix(&M->rs), ops, malloc(max_len(M))};
        FAILIF(!w[i].buf || pthread_create(&t[i], NULL, writer_main, &w[i]) != 0, "cannot start a writer");
    }
    for (uint32_t i = 0; i < n; i++) {
        pthread_join(t[i], NULL);
        free(w[i].buf);
    }
    M->phases++;
}

/* ---- images ---- */
static void write_file(const char *p, const uint8_t *data, uint64_t len)
{
    int fd = open(p, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    FAILIF(fd < 0, "create %s: %s", p, strerror(errno));
    xfer(fd, false, (uint8_t *)data, len, 0, "write of the raw base");
    close(fd);
}

/* The base image holds random data in random ranges (the rest zeros / holes). */
static void make_base(struct model *M, const char *bp)
{
    uint64_t vs = M->c.vsize;
    uint8_t *b = M->shadow; /* the overlay reads the base: it is the initial model */
    memset(b, 0, vs);
    unsigned spots = 2 + (unsigned)below(&M->rs, 10);
    for (unsigned i = 0; i < spots; i++) {
        uint64_t off, len;
        pick_range(&M->rs, M->c.base_csize, 0, vs, 4 * M->c.base_csize, &off, &len);
        rand_bytes(&M->rs, b + off, len);
    }
    if (M->c.base == 1) {
        write_file(bp, b, vs);
        return;
    }
    struct pcow_create_opts co = {.virtual_size = vs, .cluster_size = M->c.base_csize};
    int r = pcow_create(bp, &co, errbuf, sizeof errbuf);
    FAILIF(r < 0, "create base %s: %s", bp, errbuf);
    pcow_image *img;
    r = pcow_open(bp, PCOW_OPEN_RDWR, &img, errbuf, sizeof errbuf);
    FAILIF(r < 0, "open base %s: %s", bp, errbuf);
    /* write only non-zero clusters' pieces, and the last byte's cluster, so holes stay */
    for (uint64_t off = 0; off < vs; off += M->c.base_csize) {
        uint64_t l = vs - off < M->c.base_csize ? vs - off : M->c.base_csize;
        bool nz = false;
        for (uint64_t i = 0; i < l && !nz; i++)
            nz = b[off + i] != 0;
        if (nz || off + l == vs) {
            r = pcow_write(img, b + off, l, off);
            FAILIF(r < 0, "write base 0x%" PRIx64 ": %s", off, pcow_errmsg(img));
        }
    }
    r = pcow_close(img, errbuf, sizeof errbuf);
    FAILIF(r < 0, "close base: %s", errbuf);
}

static void draw_cfg(struct cfg *c, uint64_t seed)
{
    uint64_t s = seed;
    memset(c, 0, sizeof *c);
    c->seed = seed;
    static const uint32_t cs[] = {4 * KiB, 16 * KiB, 64 * KiB, 64 * KiB, 256 * KiB, 2 * MiB};
    c->csize = cs[below(&s, sizeof cs / sizeof cs[0])];
    uint64_t maxcl = (8 * MiB) / c->csize;
    if (maxcl > 256)
        maxcl = 256;
    if (maxcl < 3)
        maxcl = 3;
    uint64_t ncl = 2 + below(&s, maxcl - 1);
    uint64_t vs = ncl * c->csize;
    unsigned kind = (unsigned)below(&s, 3);
    if (kind == 1 && c->csize > PAGE) {
        vs -= PAGE * (1 + below(&s, c->csize / PAGE - 1));
        c->size_kind = "page-aligned";
    } else if (kind >= 1) {
        vs -= 1 + below(&s, c->csize - 1);
        if (vs % PAGE == 0)
            vs--;
        c->size_kind = "not page-aligned";
    } else {
        c->size_kind = "cluster-aligned";
    }
    c->vsize = vs;
    c->base = (int)below(&s, 3);
    c->base_csize = cs[below(&s, 4)];
    c->tail_stores = chance(&s, 50);
    c->writers = (uint32_t)(1 + below(&s, MAX_WRITERS));
}

static void run_model(void)
{
    struct model M0;
    struct model *M = &M0;
    memset(M, 0, sizeof *M);
    draw_cfg(&M->c, cur_seed);
    M->rs = cur_seed ^ 0x5DEECE66Dull;
    mix(&M->rs);
    struct sigaction sa = {.sa_sigaction = on_signal, .sa_flags = SA_SIGINFO};
    sigaction(SIGBUS, &sa, NULL);
    sigaction(SIGSEGV, &sa, NULL);
    const char *e = getenv("PCOW_MODEL_OPS");
    uint64_t nops = e ? strtoull(e, NULL, 0) : 300;

    snprintf(M->path, sizeof M->path, "%s/m%" PRIu64 ".img", dir, cur_seed);
    M->shadow = calloc(1, M->c.vsize);
    M->buf = malloc(2 * MiB);
    FAILIF(!M->shadow || !M->buf, "out of memory");
    char bname[64] = "";
    if (M->c.base) {
        char bp[600];
        snprintf(bname, sizeof bname, "b%" PRIu64 ".%s", cur_seed, M->c.base == 1 ? "raw" : "img");
        snprintf(bp, sizeof bp, "%s/%s", dir, bname);
        make_base(M, bp);
    }
    struct pcow_create_opts co = {.virtual_size = M->c.base ? 0 : M->c.vsize, .cluster_size = M->c.csize,
                                  .base = M->c.base ? bname : NULL};
    int r = pcow_create(M->path, &co, errbuf, sizeof errbuf);
    FAILIF(r < 0, "create %s: %s", M->path, errbuf);

    char sp[600];
    snprintf(sp, sizeof sp, "%s/scratch-%" PRIu64, dir, cur_seed);
    M->scratch = open(sp, O_CREAT | O_RDWR | O_TRUNC, 0600);
    FAILIF(M->scratch < 0, "%s: %s", sp, strerror(errno));
    unlink(sp);
    snprintf(sp, sizeof sp, "%s/pcow-model-direct-%d-%" PRIu64, direct_dir, (int)getpid(), cur_seed);
    M->direct = open(sp, O_CREAT | O_RDWR | O_TRUNC | O_DIRECT, 0600);
    if (M->direct >= 0)
        unlink(sp);
    M->dbuf = aligned_alloc(PAGE, DIRECT_MAX);
    FAILIF(!M->dbuf, "out of memory");

    note("config seed %" PRIu64 ": cluster %u, size 0x%" PRIx64 " (%s), base %s (cluster %u), writers %u, tail stores %d",
         cur_seed, M->c.csize, M->c.vsize, M->c.size_kind, M->c.base == 0 ? "none" : M->c.base == 1 ? "raw" : "pcow",
         M->c.base_csize, M->c.writers, M->c.tail_stores);
    printf("     seed %" PRIu64 ": cluster %uK, size 0x%" PRIx64 " (%s), base %s, %u writer%s\n", cur_seed,
           M->c.csize / 1024, M->c.vsize, M->c.size_kind, M->c.base == 0 ? "none" : M->c.base == 1 ? "raw" : "pcow",
           M->c.writers, M->c.writers > 1 ? "s" : "");
    fflush(stdout);
    do_map(M);
    for (uint64_t k = 0; k < nops; k++) {
        uint64_t w = below(&M->rs, 100);
        if (w < 34)
            op_store(M);
        else if (w < 54)
            op_load(M);
        else if (w < 62)
            op_kernel(M);
        else if (w < 70)
            op_direct(M);
        else if (w < 74)
            op_tail(M);
        else if (w < 80)
            op_snapshot(M);
        else if (w < 84)
            op_rollback(M);
        else if (w < 86)
            op_delete(M);
        else if (w < 89)
            op_reopen(M);
        else if (w < 93)
            op_phase(M);
        else
            op_load(M);
        M->ops_done++;
    }
    op_reopen(M);
    do_unmap(M);
    run_check(M, "at the end");
    printf("     seed %" PRIu64 ": %" PRIu64 " ops: %" PRIu64 " stores, %" PRIu64 " loads, %" PRIu64
           " pread/pwrite, %" PRIu64 " O_DIRECT, %" PRIu64 " snapshots, %" PRIu64 " rollbacks, %" PRIu64
           " deletes, %" PRIu64 " reopens, %" PRIu64 " writer phases\n",
           cur_seed, M->ops_done, M->stores, M->loads, M->kops, M->dops, M->snapshots, M->rollbacks, M->deletes,
           M->reopens, M->phases);
    if (M->direct < 0)
        printf("     (no O_DIRECT file in %s: those ops ran as buffered pread)\n", direct_dir);
}

int main(void)
{
    const char *d = getenv("PCOW_TEST_DIR");
    snprintf(dir, sizeof dir, "%s/pcow-rt-model-XXXXXX", d ? d : "/dev/shm");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    d = getenv("PCOW_MODEL_DIRECT_DIR");
    snprintf(direct_dir, sizeof direct_dir, "%s", d ? d : "/var/tmp");
    pcow_img_bin = getenv("PCOW_IMG");
    verbose = getenv("PCOW_MODEL_VERBOSE") != NULL;
    const char *se = getenv("PCOW_MODEL_SEED"), *ne = getenv("PCOW_MODEL_CONFIGS"), *te = getenv("PCOW_MODEL_SECONDS");
    double budget = te ? atof(te) : 15.0;
    uint64_t first, count;
    if (se) {
        first = strtoull(se, NULL, 0);
        count = ne ? strtoull(ne, NULL, 0) : 1;
        budget = 1e9;
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        first = ((uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 20) ^ (uint64_t)ts.tv_sec) % 1000000000ull;
        count = ne ? strtoull(ne, NULL, 0) : UINT64_MAX;
    }
    printf("model test: seeds from %" PRIu64 " (PCOW_MODEL_SEED=N reproduces one), budget %.0f s\n", first, budget);
    double t0 = tu_now();
    int fails = 0;
    uint64_t ran = 0;
    for (uint64_t i = 0; i < count && tu_now() - t0 < budget; i++) {
        cur_seed = first + i;
        char name[80];
        snprintf(name, sizeof name, "model seed %" PRIu64, cur_seed);
        fails += tu_run(name, run_model, 300);
        ran++;
    }
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    printf("%" PRIu64 "/%" PRIu64 " model configurations passed\n", ran - (uint64_t)fails, ran);
    return fails ? 1 : 0;
}
