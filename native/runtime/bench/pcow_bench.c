/*
 * pcow-bench: micro-benchmarks of the pcow runtime, JSON on stdout.
 *
 * Full suite (one JSON document, every benchmark, the targets the issue sets):
 *   pcow-bench [--json] [--only floor,expansion,cow,steady,open,stripes] [--dir DIR]
 *              [--disk-dir DIR] [--size BYTES[K|M|G]] [--threads N] [--quick]
 *
 * One case (one JSON object; what the harness drives, one matrix cell per call):
 *   pcow-bench case floor     [--variant copy|mmap|both] [--faults N]
 *   pcow-bench case expansion [--cluster-size 64K] [--prealloc N] [--cow-unit U|whole] [--clusters N]
 *   pcow-bench case cow       [--cluster-size 64K] [--prealloc N] [--cow-unit U|whole] [--clusters N]
 *   pcow-bench case steady    [--backend pcow|raw|both] [--rw randread|randwrite|read|write] [--bs 4K]
 *                             [--threads N] [--size 256M] [--seconds S] [--cluster-size 64K]
 *   pcow-bench case open      [--clusters N] [--cluster-size 4K] [--virtual-size SIZE]
 *   pcow-bench case stripes   [--stripes N] [--size 256M] [--threads N] [--seconds S] [--cluster-size 64K]
 *   every case: [--dir DIR] (where images go, default /dev/shm); all but floor: [--keep PATH]
 *   (build the image at PATH and leave it there after unmap, for pcow-img info/check).
 *
 *   floor      the bare userfaultfd round trip: an anonymous page registered MISSING, touched
 *              by this thread, served by a handler thread with UFFDIO_COPY; and the variant
 *              mmap(MAP_FIXED) of a file page + UFFDIO_WAKE. Per-fault latency seen by the
 *              faulting thread.
 *   expansion  first-touch write latency per cluster (pre-allocation on or off).
 *   cow        first write after a snapshot (COW unit vs the whole cluster).
 *   steady     throughput over a fully allocated image vs a raw file mmap of the same size, in
 *              the same run, interleaved.
 *   open       open + map time and VMA count for an image with N allocated clusters.
 *   stripes    sequential bandwidth of an image striped over N files.
 *
 * The latency cases (expansion, cow) also measure the floor in the same process, so the ratio
 * to the floor is a same-run ratio. Latencies are nanoseconds; throughput bytes/s.
 * Exit status: 0 when the JSON was printed (suite: targets may fail), 1 on a setup or
 * measurement error (message on stderr; the suite also lists it in "errors"), 2 on bad
 * arguments (message on stderr, nothing on stdout).
 */
#define _GNU_SOURCE
#include "pcow_runtime.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <sys/eventfd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <sys/vfs.h>
#include <unistd.h>

#define KiB 1024ull
#define MiB (1024ull * KiB)
#define GiB (1024ull * MiB)
#define ERRLEN 1100

/* A first touch is preceded by this much busy time: a guest does work between first touches,
 * and it lets the pre-allocation thread keep up. */
#define PACE_NS 100000ull
/* Faults of the floor measured next to a latency case. */
#define CASE_FLOOR_FAULTS 2000

/* ======================= small helpers ======================= */
static void jstr(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            fprintf(f, "\\u%04x", *s);
        else
            fputc(*s, f);
    }
    fputc('"', f);
}

static void hist_obj(FILE *f, const struct pcow_runtime_hist *s)
{
    fprintf(f,
            "{\"count\":%" PRIu64 ",\"p50_ns\":%" PRIu64 ",\"p90_ns\":%" PRIu64 ",\"p99_ns\":%" PRIu64
            ",\"mean_ns\":%.1f,\"min_ns\":%" PRIu64 ",\"max_ns\":%" PRIu64 "}",
            s->count, s->p50_ns, s->p90_ns, s->p99_ns, s->mean_ns, s->min_ns, s->max_ns);
}

static void path_in(char *o, size_t n, const char *d, const char *name)
{
    snprintf(o, n, "%s/pcow-bench-%d-%s", d, (int)getpid(), name);
}

static void rm_image(const char *p)
{
    unlink(p);
    char s[600];
    for (int i = 1; i < PCOW_MAX_STRIPES; i++) {
        snprintf(s, sizeof s, "%s.s%d", p, i);
        unlink(s);
    }
}

static int noop_persist(void *ctx, int fd, uint64_t off, uint64_t len)
{
    (void)ctx, (void)fd, (void)off, (void)len;
    return 0;
}

/* The runtime's counters as JSON (pcow_runtime_stats_json), captured while mapped. */
static char *runtime_json(pcow_runtime *rt)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    pcow_runtime_stats_json(rt, f);
    fclose(f);
    return buf;
}

/* Unmap; on failure the message goes to err (unless an error is already there). */
static int unmap_rt(pcow_runtime *rt, int prev, char *err, size_t errlen)
{
    char e[ERRLEN];
    int r = pcow_runtime_unmap(rt, e, sizeof e);
    if (r < 0 && prev >= 0) {
        snprintf(err, errlen, "unmap: %.1000s", e);
        return r;
    }
    return prev;
}

/* VMAs that overlap [a, a+len) */
static long vmas_in(const void *a, uint64_t len)
{
    FILE *f = fopen("/proc/self/maps", "re");
    if (!f)
        return -1;
    long n = 0;
    unsigned long s, e;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "%lx-%lx", &s, &e) == 2 && e > (uintptr_t)a && s < (uintptr_t)a + len)
            n++;
    }
    fclose(f);
    return n;
}

/* ======================= floor ======================= */
struct floor_ctx {
    int uffd, evfd, file_fd;
    bool use_mmap;
    uint8_t *base;
    uint8_t page[4096];
};

static void *floor_handler(void *arg)
{
    struct floor_ctx *c = arg;
    for (;;) {
        struct pollfd p[2] = {{.fd = c->uffd, .events = POLLIN}, {.fd = c->evfd, .events = POLLIN}};
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            return NULL;
        if (p[1].revents)
            return NULL;
        struct uffd_msg msg;
        if (read(c->uffd, &msg, sizeof msg) != sizeof msg || msg.event != UFFD_EVENT_PAGEFAULT)
            continue;
        uint64_t a = msg.arg.pagefault.address & ~4095ull;
        if (c->use_mmap) {
            if (mmap((void *)(uintptr_t)a, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, c->file_fd,
                     (off_t)(a - (uintptr_t)c->base)) == MAP_FAILED)
                return NULL;
            rt_uffd_wake(c->uffd, (void *)(uintptr_t)a, 4096);
        } else {
            rt_uffd_copy(c->uffd, (void *)(uintptr_t)a, c->page, 4096, 0, 4096);
        }
    }
}

/* Touches are paced PACE_NS apart, as a guest does work between first touches. The floor is
 * paced the same way as the expansion and COW touches it is compared with: an idle gap lets
 * the handler thread sleep deeper, and a back-to-back floor would be ~20% lower than any
 * paced fault could be. */
static void pace(void)
{
    uint64_t t = rt_now_ns() + PACE_NS;
    while (rt_now_ns() < t) {
    }
}

/* n first touches of pages registered MISSING (the first 16 are warm-up, not recorded),
 * paced like the touches they are compared with. The mmap variant maps pages of a file in tmpdir. */
static int floor_run(const char *tmpdir, bool use_mmap, bool paced, int n, struct rt_hist *h, char *err, size_t errlen)
{
    struct floor_ctx c = {.uffd = -1, .evfd = -1, .file_fd = -1, .use_mmap = use_mmap};
    uint64_t feat, len = (uint64_t)n * 4096;
    int r = -1;
    c.base = MAP_FAILED;
    c.uffd = rt_uffd_open(0, &feat, err, errlen);
    if (c.uffd < 0)
        return -1;
    c.base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (c.base == MAP_FAILED) {
        snprintf(err, errlen, "floor: mmap of %" PRIu64 " bytes: %s", len, strerror(errno));
        goto out;
    }
    madvise(c.base, len, MADV_NOHUGEPAGE);
    if (rt_uffd_register(c.uffd, c.base, len, UFFDIO_REGISTER_MODE_MISSING, NULL) < 0) {
        snprintf(err, errlen, "floor: UFFDIO_REGISTER: %s", strerror(errno));
        goto out;
    }
    if (use_mmap) {
        char p[512];
        path_in(p, sizeof p, tmpdir, "floor.bin");
        c.file_fd = open(p, O_CREAT | O_RDWR | O_TRUNC, 0600);
        unlink(p);
        if (c.file_fd < 0 || fallocate(c.file_fd, 0, 0, (off_t)len) < 0) {
            snprintf(err, errlen, "floor: %s: %s", p, strerror(errno));
            goto out;
        }
    }
    memset(c.page, 0x5a, sizeof c.page);
    c.evfd = eventfd(0, EFD_CLOEXEC);
    pthread_t t;
    if (c.evfd < 0 || pthread_create(&t, NULL, floor_handler, &c) != 0) {
        snprintf(err, errlen, "floor: handler thread: %s", strerror(errno));
        goto out;
    }
    for (int i = 0; i < n; i++) {
        volatile uint8_t *p = c.base + (uint64_t)i * 4096;
        if (paced)
            pace();
        uint64_t t0 = rt_now_ns();
        (void)*p;
        uint64_t dt = rt_now_ns() - t0;
        if (i >= 16) /* skip warm-up */
            rt_hist_add(h, dt);
    }
    uint64_t one = 1;
    r = write(c.evfd, &one, 8) == 8 ? 0 : -1;
    if (r < 0)
        snprintf(err, errlen, "floor: eventfd write: %s", strerror(errno));
    else
        pthread_join(t, NULL);
out:
    if (c.base != MAP_FAILED)
        munmap(c.base, len);
    close(c.uffd);
    if (c.evfd >= 0)
        close(c.evfd);
    if (c.file_fd >= 0)
        close(c.file_fd);
    return r;
}

struct floor_result {
    int faults;
    bool have_copy, have_mmap;
    struct pcow_runtime_hist copy, mmap;
};

static int measure_floor(const char *tmpdir, int n, bool want_copy, bool want_mmap, struct floor_result *o, char *err,
                         size_t errlen)
{
    memset(o, 0, sizeof *o);
    o->faults = n;
    struct rt_hist *h = malloc(sizeof *h);
    if (!h) {
        snprintf(err, errlen, "floor: out of memory");
        return -1;
    }
    int r = 0;
    for (int v = 0; v < 2 && r == 0; v++) {
        if (!(v ? want_mmap : want_copy))
            continue;
        rt_hist_init(h);
        r = floor_run(tmpdir, v == 1, true, n, h, err, errlen);
        rt_hist_summary(h, v ? &o->mmap : &o->copy);
        (v ? &o->have_mmap : &o->have_copy)[0] = r == 0;
    }
    free(h);
    return r;
}

/* ================ first-touch latency: expansion and cow ================ */
struct touch_params {
    uint64_t csize;
    uint32_t cow_unit; /* 0 = whole cluster */
    uint32_t prealloc;
    uint64_t clusters;
};

struct touch_result {
    struct pcow_runtime_hist touch; /* seen by the faulting thread, end to end */
    long vmas_in_range;
    struct pcow_runtime_stats st;
    char *runtime_json;
};


static void touch_all(pcow_runtime *rt, uint64_t csize, uint64_t n, bool random_off, struct rt_hist *h)
{
    uint8_t *m = pcow_runtime_addr(rt);
    uint64_t x = 88172645463325252ull;
    for (uint64_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint64_t off = i * csize + (random_off ? (x % csize) & ~7ull : 0);
        pace();
        uint64_t t0 = rt_now_ns();
        *(volatile uint64_t *)(m + off) = i + 1;
        rt_hist_add(h, rt_now_ns() - t0);
    }
}

/* Map the image at img with the runtime options of p, touch one word of each of the first
 * p->clusters clusters (at a random offset inside it when random_off), record the latencies. */
static int touch_case(const char *img, const struct touch_params *p, bool random_off, struct touch_result *r,
                      char *err, size_t errlen)
{
    struct pcow_runtime_opts o = {.prealloc_depth = p->prealloc, .cow_unit = p->cow_unit};
    pcow_runtime *rt;
    if (pcow_runtime_open(img, 0, &o, &rt, err, errlen) < 0)
        return -1;
    struct rt_hist *h = malloc(sizeof *h);
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return unmap_rt(rt, -1, err, errlen);
    }
    rt_hist_init(h);
    usleep(20000); /* the pool fills */
    touch_all(rt, p->csize, p->clusters, random_off, h);
    rt_hist_summary(h, &r->touch);
    free(h);
    r->vmas_in_range = vmas_in(pcow_runtime_addr(rt), pcow_runtime_length(rt));
    pcow_runtime_get_stats(rt, &r->st);
    r->runtime_json = runtime_json(rt);
    int rc = 0;
    if (r->st.errors) {
        snprintf(err, errlen, "%s: %" PRIu64 " faults failed: %s", img, r->st.errors, pcow_runtime_errmsg(rt));
        rc = -1;
    }
    return unmap_rt(rt, rc, err, errlen);
}

/* First write to each of p->clusters holes. */
static int run_expansion(const char *img, const struct touch_params *p, struct touch_result *r, char *err,
                         size_t errlen)
{
    struct pcow_create_opts co = {.virtual_size = p->clusters * p->csize, .cluster_size = (uint32_t)p->csize};
    if (pcow_create(img, &co, err, errlen) < 0)
        return -1;
    return touch_case(img, p, false, r, err, errlen);
}

/* Fill p->clusters clusters, snapshot them ("base"), then time the first write to each (a
 * copy-on-write of the unit holding a random offset, or of the whole cluster). */
static int run_cow(const char *img, const struct touch_params *p, struct touch_result *r, char *err, size_t errlen)
{
    struct pcow_create_opts co = {.virtual_size = p->clusters * p->csize, .cluster_size = (uint32_t)p->csize};
    pcow_image *im;
    if (pcow_create(img, &co, err, errlen) < 0 || pcow_open(img, PCOW_OPEN_RDWR, &im, err, errlen) < 0)
        return -1;
    uint8_t *buf = malloc(p->csize);
    int rc = buf ? 0 : -1;
    if (!buf)
        snprintf(err, errlen, "out of memory");
    else
        memset(buf, 0x33, p->csize);
    pcow_set_persist(im, noop_persist, NULL); /* setup only: made durable by the snapshot */
    for (uint64_t i = 0; rc == 0 && i < p->clusters; i++)
        if (pcow_write(im, buf, p->csize, i * p->csize) < 0) {
            snprintf(err, errlen, "%s", pcow_errmsg(im));
            rc = -1;
        }
    free(buf);
    pcow_set_persist(im, NULL, NULL);
    if (rc == 0 && pcow_snapshot_create(im, "base") < 0) {
        snprintf(err, errlen, "%s", pcow_errmsg(im));
        rc = -1;
    }
    char e2[ERRLEN];
    if (pcow_close(im, e2, sizeof e2) < 0 && rc == 0) {
        snprintf(err, errlen, "%s", e2);
        rc = -1;
    }
    if (rc < 0)
        return rc;
    return touch_case(img, p, true, r, err, errlen);
}

/* ======================= steady ======================= */
enum rwkind { RW_RANDREAD, RW_RANDWRITE, RW_READ, RW_WRITE };
static const char *const rw_names[] = {"randread", "randwrite", "read", "write"};
#define RW_RANDOM(w) ((w) == RW_RANDREAD || (w) == RW_RANDWRITE)
#define RW_READS(w) ((w) == RW_RANDREAD || (w) == RW_READ)

struct st_arg {
    uint8_t *m;
    uint64_t size, bs;
    enum rwkind w;
    int idx, n;
    double secs;
    uint64_t bytes;
    pthread_barrier_t *bar;
};

static void *st_thread(void *arg)
{
    struct st_arg *a = arg;
    uint64_t bs = a->bs;
    uint8_t *buf = aligned_alloc(4096, bs < 4096 ? 4096 : bs);
    memset(buf, a->idx + 1, bs);
    uint64_t x = 0x9E3779B97F4A7C15ull * (uint64_t)(a->idx + 1), nblk = a->size / bs;
    uint64_t part = nblk / (uint64_t)a->n, pos = part * (uint64_t)a->idx, bytes = 0;
    pthread_barrier_wait(a->bar);
    uint64_t t_end = rt_now_ns() + (uint64_t)(a->secs * 1e9);
    while (rt_now_ns() < t_end) {
        for (int k = 0; k < 64; k++) {
            uint64_t blk;
            if (RW_RANDOM(a->w)) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                blk = x % nblk;
            } else {
                blk = pos++;
                if (pos >= part * (uint64_t)(a->idx + 1))
                    pos = part * (uint64_t)a->idx;
            }
            if (RW_READS(a->w))
                memcpy(buf, a->m + blk * bs, bs);
            else
                memcpy(a->m + blk * bs, buf, bs);
            bytes += bs;
        }
        __asm__ volatile("" ::: "memory");
    }
    a->bytes = bytes;
    free(buf);
    return NULL;
}

/* n threads doing w in blocks of bs over m for secs: bytes per second (all threads). Random
 * accesses cover the whole range; sequential ones a 1/n slice per thread. */
static double run_wl(uint8_t *m, uint64_t size, enum rwkind w, uint64_t bs, int n, double secs)
{
    pthread_t t[64];
    struct st_arg a[64];
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, (unsigned)n);
    for (int i = 0; i < n; i++) {
        a[i] = (struct st_arg){m, size, bs, w, i, n, secs, 0, &bar};
        pthread_create(&t[i], NULL, st_thread, &a[i]);
    }
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(t[i], NULL);
        total += a[i].bytes;
    }
    pthread_barrier_destroy(&bar);
    return (double)total / secs;
}

static int cmp_d(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

/* A fully allocated pcow image mapped by the runtime and/or a raw file mmap, same size. */
struct steady_env {
    uint64_t size, csize;
    pcow_runtime *rt;
    uint8_t *pm, *raw;
    int rfd;
    char rawpath[512];
    uint64_t faults_after_map;
};

static int steady_teardown(struct steady_env *e, char *err, size_t errlen)
{
    int r = 0;
    if (e->rt)
        r = unmap_rt(e->rt, 0, err, errlen);
    e->rt = NULL;
    if (e->raw)
        munmap(e->raw, e->size);
    e->raw = NULL;
    if (e->rfd >= 0) {
        close(e->rfd);
        unlink(e->rawpath);
    }
    e->rfd = -1;
    return r;
}

/* img (NULL: no pcow backend) is created, written whole and mapped; rawpath (NULL: no raw
 * backend) is written whole and mapped MAP_SHARED. Every page of both is touched once so page
 * tables are populated before anything is measured. */
static int steady_setup(struct steady_env *e, const char *img, const char *rawpath, uint64_t size, uint64_t csize,
                        char *err, size_t errlen)
{
    *e = (struct steady_env){.size = size, .csize = csize, .rfd = -1};
    const uint64_t chunk = 16 * MiB;
    uint8_t *buf = malloc(chunk);
    if (!buf) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    memset(buf, 0x11, chunk);
    int r = 0;
    if (img) {
        struct pcow_create_opts co = {.virtual_size = size, .cluster_size = (uint32_t)csize};
        pcow_image *im;
        if (pcow_create(img, &co, err, errlen) < 0 || pcow_open(img, PCOW_OPEN_RDWR, &im, err, errlen) < 0) {
            r = -1;
            goto out;
        }
        for (uint64_t o = 0; r == 0 && o < size; o += chunk)
            if (pcow_write(im, buf, chunk < size - o ? chunk : size - o, o) < 0) {
                snprintf(err, errlen, "%s", pcow_errmsg(im));
                r = -1;
            }
        char e2[ERRLEN];
        if (pcow_close(im, e2, sizeof e2) < 0 && r == 0) {
            snprintf(err, errlen, "%s", e2);
            r = -1;
        }
        if (r < 0)
            goto out;
    }
    if (rawpath) {
        snprintf(e->rawpath, sizeof e->rawpath, "%s", rawpath);
        e->rfd = open(rawpath, O_CREAT | O_TRUNC | O_RDWR, 0600);
        for (uint64_t o = 0; e->rfd >= 0 && o < size; o += chunk) {
            size_t l = (size_t)(chunk < size - o ? chunk : size - o);
            if (pwrite(e->rfd, buf, l, (off_t)o) != (ssize_t)l) {
                snprintf(err, errlen, "%s: write: %s", rawpath, strerror(errno ? errno : ENOSPC));
                r = -1;
                goto out;
            }
        }
        void *m = e->rfd >= 0 ? mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, e->rfd, 0) : MAP_FAILED;
        if (m == MAP_FAILED) {
            snprintf(err, errlen, "%s: %s", rawpath, strerror(errno));
            r = -1;
            goto out;
        }
        e->raw = m;
    }
    if (img) {
        struct pcow_runtime_opts o = {0};
        if (pcow_runtime_open(img, 0, &o, &e->rt, err, errlen) < 0) {
            e->rt = NULL;
            r = -1;
            goto out;
        }
        e->pm = pcow_runtime_addr(e->rt);
    }
    for (uint64_t off = 0; off < size; off += 4096) {
        if (e->raw)
            e->raw[off] = 1;
        if (e->pm)
            e->pm[off] = 1;
    }
    if (e->rt) {
        struct pcow_runtime_stats st;
        pcow_runtime_get_stats(e->rt, &st);
        e->faults_after_map = st.faults;
    }
out:
    free(buf);
    if (r < 0) {
        char e2[ERRLEN];
        steady_teardown(e, e2, sizeof e2);
    }
    return r;
}

/* rounds measurements of secs each per mapped backend; with both, the order alternates
 * (raw first in even rounds) so drift hits both alike. r_raw/r_pcow get bytes/s per round. */
static void steady_rounds(const struct steady_env *e, enum rwkind w, uint64_t bs, int threads, double secs, int rounds,
                          double *r_raw, double *r_pcow)
{
    for (int k = 0; k < rounds; k++) {
        if (k % 2 == 0) {
            if (e->raw)
                r_raw[k] = run_wl(e->raw, e->size, w, bs, threads, secs);
            if (e->pm)
                r_pcow[k] = run_wl(e->pm, e->size, w, bs, threads, secs);
        } else {
            if (e->pm)
                r_pcow[k] = run_wl(e->pm, e->size, w, bs, threads, secs);
            if (e->raw)
                r_raw[k] = run_wl(e->raw, e->size, w, bs, threads, secs);
        }
    }
}

/* ======================= open ======================= */
/* Build an image whose first n clusters are allocated in the order the runtime allocates them
 * (pre-allocation batches of 64, L2 tables appended when first needed); no data is written. */
static int build_allocated(const char *p, uint64_t vsize, uint32_t cs, uint64_t n, double *build_s, char *err,
                           size_t errlen)
{
    double t0 = (double)rt_now_ns();
    struct pcow_create_opts co = {.virtual_size = vsize, .cluster_size = cs};
    pcow_image *img;
    if (pcow_create(p, &co, err, errlen) < 0 || pcow_open(p, PCOW_OPEN_RDWR, &img, err, errlen) < 0)
        return -1;
    pcow_set_persist(img, noop_persist, NULL); /* setup only: one fdatasync at the end */
    int r = 0;
    for (uint64_t vc = 0; r == 0 && vc < n;) {
        uint64_t addr;
        uint32_t b = n - vc < 64 ? (uint32_t)(n - vc) : 64;
        if (pcow_reserve(img, b, &addr) < 0) {
            snprintf(err, errlen, "%s", pcow_errmsg(img));
            r = -1;
            break;
        }
        for (uint32_t i = 0; i < b; i++, vc++)
            if (pcow_map_cluster(img, vc, addr + (uint64_t)i * cs, false, 0) < 0) {
                snprintf(err, errlen, "%s", pcow_errmsg(img));
                r = -1;
                break;
            }
    }
    pcow_set_persist(img, NULL, NULL);
    char e2[ERRLEN];
    if (pcow_close(img, e2, sizeof e2) < 0 && r == 0) {
        snprintf(err, errlen, "%s", e2);
        r = -1;
    }
    *build_s = ((double)rt_now_ns() - t0) / 1e9;
    return r;
}

struct open_result {
    double build_s, open_s, map_s, open_map_s;
    long vmas_in_range;
    struct pcow_runtime_stats st;
    char *runtime_json;
};

/* Build an image of vsize with n allocated clusters at img, then time pcow_open and
 * pcow_runtime_map and count the VMAs of the range. */
static int run_open(const char *img, uint64_t vsize, uint32_t cs, uint64_t n, struct open_result *o, char *err,
                    size_t errlen)
{
    if (build_allocated(img, vsize, cs, n, &o->build_s, err, errlen) < 0)
        return -1;
    uint64_t t0 = rt_now_ns();
    pcow_image *im;
    int r = pcow_open(img, PCOW_OPEN_RDWR, &im, err, errlen);
    uint64_t t1 = rt_now_ns();
    pcow_runtime *rt = NULL;
    if (r == 0 && (r = pcow_runtime_map(im, NULL, &rt, err, errlen)) < 0)
        pcow_close(im, NULL, 0);
    uint64_t t2 = rt_now_ns();
    if (r < 0)
        return -1;
    o->open_s = (double)(t1 - t0) / 1e9;
    o->map_s = (double)(t2 - t1) / 1e9;
    o->open_map_s = (double)(t2 - t0) / 1e9;
    o->vmas_in_range = vmas_in(pcow_runtime_addr(rt), pcow_runtime_length(rt));
    pcow_runtime_get_stats(rt, &o->st);
    o->runtime_json = runtime_json(rt);
    r = unmap_rt(rt, 0, err, errlen);
    char e2[ERRLEN];
    if (pcow_close(im, e2, sizeof e2) < 0 && r == 0) {
        snprintf(err, errlen, "%s", e2);
        r = -1;
    }
    return r;
}

/* ======================= stripes ======================= */
struct stripes_result {
    uint64_t stripe_unit;
    double first_touch_s, seqwrite, seqread;
    long vmas_in_range;
    struct pcow_runtime_stats st;
    char *runtime_json;
};

/* An image of size striped over k files (stripe unit max(2 MiB, cluster): a cluster-sized unit
 * would cost one VMA per cluster); allocate everything by first touch, then sequential write
 * and read bandwidth with threads. */
static int run_stripes(const char *img, uint64_t size, uint32_t cs, uint32_t k, int threads, double secs,
                       struct stripes_result *o, char *err, size_t errlen)
{
    o->stripe_unit = cs > 2 * MiB ? cs : 2 * MiB;
    struct pcow_create_opts co = {.virtual_size = size, .cluster_size = cs, .stripe_count = k,
                                  .stripe_unit = (uint32_t)o->stripe_unit};
    pcow_runtime *rt;
    if (pcow_create(img, &co, err, errlen) < 0 || pcow_runtime_open(img, 0, NULL, &rt, err, errlen) < 0)
        return -1;
    uint8_t *m = pcow_runtime_addr(rt);
    uint64_t t0 = rt_now_ns();
    for (uint64_t off = 0; off < size; off += 4096)
        m[off] = 1; /* allocate everything (first touch) */
    o->first_touch_s = (double)(rt_now_ns() - t0) / 1e9;
    o->seqwrite = run_wl(m, size, RW_WRITE, MiB, threads, secs);
    o->seqread = run_wl(m, size, RW_READ, MiB, threads, secs);
    o->vmas_in_range = vmas_in(m, pcow_runtime_length(rt));
    pcow_runtime_get_stats(rt, &o->st);
    o->runtime_json = runtime_json(rt);
    int r = 0;
    if (o->st.errors) {
        snprintf(err, errlen, "%s: %" PRIu64 " faults failed: %s", img, o->st.errors, pcow_runtime_errmsg(rt));
        r = -1;
    }
    return unmap_rt(rt, r, err, errlen);
}

/* ======================= argument parsing ======================= */
/* "4096", "64K", "2M", "1G" (also KiB/MiB/GiB; k/m/g): bytes. False on anything else. */
static bool parse_size(const char *s, uint64_t *out)
{
    if (!*s || *s < '0' || *s > '9')
        return false;
    char *e;
    errno = 0;
    unsigned long long v = strtoull(s, &e, 10);
    if (errno)
        return false;
    uint64_t m = 1;
    if (*e) {
        switch (*e) {
        case 'K': case 'k': m = KiB; break;
        case 'M': case 'm': m = MiB; break;
        case 'G': case 'g': m = GiB; break;
        case 'T': case 't': m = 1024 * GiB; break;
        default: return false;
        }
        e++;
        if (*e && strcmp(e, "iB") && strcmp(e, "B"))
            return false;
    }
    if (v > UINT64_MAX / m)
        return false;
    *out = v * m;
    return true;
}

static bool parse_uint(const char *s, uint64_t max, uint64_t *out)
{
    if (!*s || *s < '0' || *s > '9')
        return false;
    char *e;
    errno = 0;
    unsigned long long v = strtoull(s, &e, 10);
    if (errno || *e || v > max)
        return false;
    *out = v;
    return true;
}

/* v < lo, as a function: with lo 0 the comparison in a macro trips -Wtype-limits */
static bool below(uint64_t v, uint64_t lo)
{
    return v < lo;
}

static bool pow2(uint64_t v)
{
    return v && !(v & (v - 1));
}

/* 65536 → "64K", 1.5 GiB → "1.5G" (for messages). */
static const char *hsize(uint64_t v, char *b, size_t n)
{
    static const char units[] = "KMGT";
    int u = -1;
    uint64_t m = 1;
    while (u < 3 && v >= m * 1024)
        m *= 1024, u++;
    if (u < 0)
        snprintf(b, n, "%" PRIu64, v);
    else if (v % m == 0)
        snprintf(b, n, "%" PRIu64 "%c", (uint64_t)(v / m), units[u]);
    else
        snprintf(b, n, "%.1f%c", (double)v / (double)m, units[u]);
    return b;
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("pcow-bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 2;
}

static const char *fs_name(const char *d)
{
    struct statfs sf;
    if (statfs(d, &sf) != 0)
        return "unknown";
    return sf.f_type == 0x01021994 ? "tmpfs" : sf.f_type == 0xEF53 ? "ext4" : sf.f_type == 0x58465342 ? "xfs" : "other";
}

static void host_json(FILE *f, const char *d)
{
    struct utsname u;
    uname(&u);
    fprintf(f, "{\"kernel\":");
    jstr(f, u.release);
    fprintf(f, ",\"cpus\":%ld,\"dir\":", sysconf(_SC_NPROCESSORS_ONLN));
    jstr(f, d);
    fprintf(f, ",\"dir_fs\":\"%s\"}", fs_name(d));
}

/* ======================= single case ======================= */
enum opt {
    O_CLUSTER_SIZE, O_PREALLOC, O_COW_UNIT, O_CLUSTERS, O_BACKEND, O_RW, O_BS, O_THREADS, O_SIZE, O_SECONDS,
    O_STRIPES, O_VARIANT, O_FAULTS, O_VIRTUAL_SIZE, O_DIR, O_KEEP, N_OPTS
};
static const char *const opt_names[N_OPTS] = {
    "--cluster-size", "--prealloc", "--cow-unit", "--clusters", "--backend", "--rw", "--bs", "--threads", "--size",
    "--seconds", "--stripes", "--variant", "--faults", "--virtual-size", "--dir", "--keep",
};
#define B(o) (1u << (o))
enum bcase { C_FLOOR, C_EXPANSION, C_COW, C_STEADY, C_OPEN, C_STRIPES, N_CASES };
static const char *const case_names[N_CASES] = {"floor", "expansion", "cow", "steady", "open", "stripes"};
static const unsigned case_opts[N_CASES] = {
    [C_FLOOR] = B(O_VARIANT) | B(O_FAULTS) | B(O_DIR),
    [C_EXPANSION] = B(O_CLUSTER_SIZE) | B(O_PREALLOC) | B(O_COW_UNIT) | B(O_CLUSTERS) | B(O_DIR) | B(O_KEEP),
    [C_COW] = B(O_CLUSTER_SIZE) | B(O_PREALLOC) | B(O_COW_UNIT) | B(O_CLUSTERS) | B(O_DIR) | B(O_KEEP),
    [C_STEADY] = B(O_BACKEND) | B(O_RW) | B(O_BS) | B(O_THREADS) | B(O_SIZE) | B(O_SECONDS) | B(O_CLUSTER_SIZE) |
                 B(O_DIR) | B(O_KEEP),
    [C_OPEN] = B(O_CLUSTERS) | B(O_CLUSTER_SIZE) | B(O_VIRTUAL_SIZE) | B(O_DIR) | B(O_KEEP),
    [C_STRIPES] = B(O_STRIPES) | B(O_SIZE) | B(O_THREADS) | B(O_SECONDS) | B(O_CLUSTER_SIZE) | B(O_DIR) | B(O_KEEP),
};

static void case_usage(FILE *f)
{
    fprintf(f,
            "usage: pcow-bench case floor     [--variant copy|mmap|both] [--faults N] [--dir DIR]\n"
            "       pcow-bench case expansion [--cluster-size 64K] [--prealloc N] [--cow-unit SIZE|whole] [--clusters N]\n"
            "       pcow-bench case cow       [--cluster-size 64K] [--prealloc N] [--cow-unit SIZE|whole] [--clusters N]\n"
            "       pcow-bench case steady    [--backend pcow|raw|both] [--rw randread|randwrite|read|write] [--bs 4K]\n"
            "                                 [--threads N] [--size 256M] [--seconds S] [--cluster-size 64K]\n"
            "       pcow-bench case open      [--clusters N] [--cluster-size 4K] [--virtual-size SIZE]\n"
            "       pcow-bench case stripes   [--stripes N] [--size 256M] [--threads N] [--seconds S] [--cluster-size 64K]\n"
            "       every case: [--dir DIR]; all but floor: [--keep PATH] (leave the image at PATH)\n");
}

static void case_opt_list(enum bcase c, char *b, size_t n)
{
    b[0] = 0;
    for (int o = 0; o < N_OPTS; o++)
        if (case_opts[c] & B(o)) {
            size_t l = strlen(b);
            snprintf(b + l, n - l, "%s%s", l ? " " : "", opt_names[o]);
        }
}

struct case_args {
    enum bcase c;
    const char *val[N_OPTS];
    uint64_t csize, clusters, size, bs, vsize, faults;
    uint32_t prealloc, cow_unit, stripes;
    int threads;
    double seconds;
    enum rwkind rw;
    bool be_pcow, be_raw, v_copy, v_mmap;
    const char *dir, *keep;
};

static uint64_t free_bytes(const char *d)
{
    struct statvfs s;
    return statvfs(d, &s) == 0 ? (uint64_t)s.f_bavail * s.f_frsize : UINT64_MAX;
}

/* Parse and check everything; 0, or 2 with the message printed. */
static int parse_case(int argc, char **argv, struct case_args *a)
{
    char b1[32], b2[32], list[400];
    if (argc < 1) {
        case_usage(stderr);
        return usage_error("case: which case? (known: floor, expansion, cow, steady, open, stripes)");
    }
    int c = -1;
    for (int i = 0; i < N_CASES; i++)
        if (!strcmp(argv[0], case_names[i]))
            c = i;
    if (c < 0)
        return usage_error("unknown case '%s' (known: floor, expansion, cow, steady, open, stripes)", argv[0]);
    a->c = (enum bcase)c;
    for (int i = 1; i < argc; i++) {
        int o = -1;
        const char *v = NULL, *arg = argv[i];
        size_t l = strcspn(arg, "=");
        for (int k = 0; k < N_OPTS; k++)
            if (strlen(opt_names[k]) == l && !strncmp(arg, opt_names[k], l))
                o = k;
        if (o < 0) {
            case_usage(stderr);
            return usage_error("case %s: unknown option '%s'", case_names[c], arg);
        }
        if (!(case_opts[c] & B(o))) {
            case_opt_list(a->c, list, sizeof list);
            return usage_error("case %s: %s does not apply to this case (its options: %s)", case_names[c],
                               opt_names[o], list);
        }
        if (arg[l] == '=')
            v = arg + l + 1;
        else if (i + 1 < argc)
            v = argv[++i];
        else
            return usage_error("case %s: %s needs a value", case_names[c], opt_names[o]);
        if (a->val[o])
            return usage_error("case %s: %s given twice", case_names[c], opt_names[o]);
        a->val[o] = v;
    }
    const char *const *val = a->val;
    const char *cn = case_names[c];
#define SIZE_OPT(o, dst, dflt)                                                                            \
    do {                                                                                                  \
        (dst) = (dflt);                                                                                   \
        if (val[o] && !parse_size(val[o], &(dst)))                                                        \
            return usage_error("case %s: %s '%s' is not a size (use e.g. 4096, 64K, 2M, 1G)", cn, opt_names[o], \
                               val[o]);                                                                   \
    } while (0)
#define UINT_OPT(o, dst, dflt, lo, hi)                                                                    \
    do {                                                                                                  \
        uint64_t v_;                                                                                      \
        v_ = (dflt);                                                                                      \
        if (val[o] && (!parse_uint(val[o], (hi), &v_) || below(v_, (lo))))                                      \
            return usage_error("case %s: %s '%s' must be a whole number from %" PRIu64 " to %" PRIu64, cn,  \
                               opt_names[o], val[o], (uint64_t)(lo), (uint64_t)(hi));                     \
        (dst) = v_;                                                                                       \
    } while (0)

    a->dir = val[O_DIR] ? val[O_DIR] : "/dev/shm";
    struct stat st;
    if (stat(a->dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return usage_error("case %s: --dir %s: %s", cn, a->dir, stat(a->dir, &st) ? strerror(errno) : "not a directory");
    a->keep = val[O_KEEP];
    if (a->keep) {
        if (!*a->keep)
            return usage_error("case %s: --keep needs a path", cn);
        if (lstat(a->keep, &st) == 0)
            return usage_error("case %s: --keep %s: already exists (remove it or choose another path)", cn, a->keep);
        char parent[600];
        snprintf(parent, sizeof parent, "%s", a->keep);
        char *sl = strrchr(parent, '/');
        if (sl)
            *(sl == parent ? sl + 1 : sl) = 0;
        else
            snprintf(parent, sizeof parent, ".");
        if (stat(parent, &st) != 0 || !S_ISDIR(st.st_mode))
            return usage_error("case %s: --keep %s: directory %s does not exist", cn, a->keep, parent);
        if (strlen(a->keep) > 500)
            return usage_error("case %s: --keep path is longer than 500 bytes", cn);
    }

    SIZE_OPT(O_CLUSTER_SIZE, a->csize, c == C_OPEN ? 4 * KiB : 64 * KiB);
    if (!pow2(a->csize) || a->csize < 4 * KiB || a->csize > 2 * MiB)
        return usage_error("case %s: --cluster-size %s must be a power of two from 4K to 2M", cn, val[O_CLUSTER_SIZE]);
    uint64_t u;
    UINT_OPT(O_PREALLOC, u, 0, 0, 65536);
    a->prealloc = (uint32_t)u;
    UINT_OPT(O_STRIPES, u, 1, 1, PCOW_MAX_STRIPES);
    a->stripes = (uint32_t)u;
    UINT_OPT(O_THREADS, u, 1, 1, 64);
    a->threads = (int)u;
    UINT_OPT(O_FAULTS, a->faults, 20000, 100, 10000000);
    uint64_t dflt_clusters = c == C_OPEN ? 10000 : c == C_COW ? 1500 : 2000;
    UINT_OPT(O_CLUSTERS, a->clusters, dflt_clusters, 1, 100000000);

    /* COW unit: "whole" (or 0) = the cluster; else a power of two from 4K (the sub-unit of the
     * images this tool creates) that divides the cluster. */
    a->cow_unit = 0;
    if (val[O_COW_UNIT] && strcmp(val[O_COW_UNIT], "whole")) {
        uint64_t cu;
        if (!parse_size(val[O_COW_UNIT], &cu))
            return usage_error("case %s: --cow-unit '%s' is not a size or \"whole\" (use e.g. 4K, 32K, whole)", cn,
                               val[O_COW_UNIT]);
        const uint64_t sub = 4 * KiB;
        if (cu != 0 && (!pow2(cu) || cu > a->csize || a->csize % cu))
            return usage_error("case %s: --cow-unit %s does not divide the cluster size %s (a power of two up to the "
                               "cluster size, or \"whole\")",
                               cn, val[O_COW_UNIT], hsize(a->csize, b1, sizeof b1));
        if (cu != 0 && cu < sub)
            return usage_error("case %s: --cow-unit %s is below the image's sub-unit (%s): the format records "
                               "copies in 4 KiB units",
                               cn, val[O_COW_UNIT], hsize(sub, b2, sizeof b2));
        a->cow_unit = cu == a->csize ? 0 : (uint32_t)cu;
    }

    a->be_pcow = true, a->be_raw = false;
    if (val[O_BACKEND]) {
        if (!strcmp(val[O_BACKEND], "pcow"))
            ;
        else if (!strcmp(val[O_BACKEND], "raw"))
            a->be_pcow = false, a->be_raw = true;
        else if (!strcmp(val[O_BACKEND], "both"))
            a->be_raw = true;
        else
            return usage_error("case %s: --backend '%s' must be pcow, raw or both", cn, val[O_BACKEND]);
    }
    if (a->keep && c == C_STEADY && !a->be_pcow)
        return usage_error("case steady: --keep needs a pcow image (--backend pcow or both), not --backend raw");
    a->v_copy = a->v_mmap = true;
    if (val[O_VARIANT]) {
        if (!strcmp(val[O_VARIANT], "copy"))
            a->v_mmap = false;
        else if (!strcmp(val[O_VARIANT], "mmap"))
            a->v_copy = false;
        else if (strcmp(val[O_VARIANT], "both"))
            return usage_error("case %s: --variant '%s' must be copy, mmap or both", cn, val[O_VARIANT]);
    }
    a->rw = RW_RANDREAD;
    if (val[O_RW]) {
        int w = -1;
        for (int i = 0; i < 4; i++)
            if (!strcmp(val[O_RW], rw_names[i]))
                w = i;
        if (w < 0)
            return usage_error("case %s: --rw '%s' must be randread, randwrite, read or write", cn, val[O_RW]);
        a->rw = (enum rwkind)w;
    }
    SIZE_OPT(O_BS, a->bs, 4 * KiB);
    if (!pow2(a->bs) || a->bs < 512 || a->bs > 64 * MiB)
        return usage_error("case %s: --bs %s must be a power of two from 512 to 64M", cn, val[O_BS]);
    SIZE_OPT(O_SIZE, a->size, 256 * MiB);
    if (c == C_STEADY || c == C_STRIPES) {
        uint64_t unit = c == C_STRIPES ? (a->csize > 2 * MiB ? a->csize : 2 * MiB) : a->csize;
        uint64_t bs = c == C_STRIPES ? MiB : a->bs;
        if (a->size < 16 * MiB || a->size % unit)
            return usage_error("case %s: --size %s must be at least 16M and a multiple of %s", cn,
                               val[O_SIZE] ? val[O_SIZE] : "256M", hsize(unit, b1, sizeof b1));
        if (a->size / bs < (uint64_t)a->threads)
            return usage_error("case %s: --size %s is too small for %d threads of %s blocks", cn,
                               val[O_SIZE] ? val[O_SIZE] : "256M", a->threads, hsize(bs, b1, sizeof b1));
    }
    a->seconds = 1.0;
    if (val[O_SECONDS]) {
        char *e;
        errno = 0;
        a->seconds = strtod(val[O_SECONDS], &e);
        if (errno || *e || e == val[O_SECONDS] || !(a->seconds >= 0.01 && a->seconds <= 3600))
            return usage_error("case %s: --seconds '%s' must be a number of seconds from 0.01 to 3600", cn,
                               val[O_SECONDS]);
    }
    a->vsize = a->clusters * a->csize * 5 / 4; /* just above the allocated part: map_cluster costs O(L1) */
    a->vsize = (a->vsize + a->csize - 1) / a->csize * a->csize;
    if (val[O_VIRTUAL_SIZE]) {
        SIZE_OPT(O_VIRTUAL_SIZE, a->vsize, 0);
        if (a->vsize < a->clusters * a->csize || a->vsize % a->csize)
            return usage_error("case %s: --virtual-size %s must be a multiple of the cluster size and hold the %" PRIu64
                               " clusters",
                               cn, val[O_VIRTUAL_SIZE], a->clusters);
    }
    if (a->clusters > UINT64_MAX / a->csize / 4)
        return usage_error("case %s: --clusters %" PRIu64 " is too large", cn, a->clusters);

    /* Space the case needs in its directory (data only; metadata is small). */
    uint64_t need = 0;
    switch (a->c) {
    case C_EXPANSION: need = (a->clusters + a->prealloc) * a->csize; break;
    case C_COW: need = (2 * a->clusters + a->prealloc) * a->csize; break;
    case C_STEADY: need = (a->be_pcow + a->be_raw) * a->size; break;
    case C_OPEN: need = a->clusters * a->csize; break;
    case C_STRIPES: need = a->size; break;
    default: break;
    }
    uint64_t have = free_bytes(a->dir);
    if (need > have)
        return usage_error("case %s: needs about %s in %s, which has %s free; lower the sizes or use another --dir", cn,
                           hsize(need, b1, sizeof b1), a->dir, hsize(have, b2, sizeof b2));
    return 0;
#undef SIZE_OPT
#undef UINT_OPT
}

static void floor_json(FILE *f, const struct floor_result *fr)
{
    fprintf(f, "{\"faults\":%d,\"pace_ns\":%llu", fr->faults, PACE_NS);
    if (fr->have_copy) {
        fprintf(f, ",\"uffdio_copy\":");
        hist_obj(f, &fr->copy);
    }
    if (fr->have_mmap) {
        fprintf(f, ",\"mmap_fixed_wake\":");
        hist_obj(f, &fr->mmap);
    }
    fputc('}', f);
}

static void ratio_json(FILE *f, const char *name, double num, double den)
{
    fprintf(f, ",\"%s\":", name);
    if (num > 0 && den > 0)
        fprintf(f, "%.4f", num / den);
    else
        fprintf(f, "null");
}

/* Measure one case and print its JSON object; 0, or 1 with the message on stderr. */
static int run_case(struct case_args *a)
{
    char err[ERRLEN] = "", img[600];
    if (a->keep)
        snprintf(img, sizeof img, "%s", a->keep);
    else
        path_in(img, sizeof img, a->dir, "case.img");
    const char *cn = case_names[a->c];
    char *buf = NULL;
    size_t blen = 0;
    FILE *f = open_memstream(&buf, &blen);
    if (!f) {
        fprintf(stderr, "pcow-bench: case %s: out of memory\n", cn);
        return 1;
    }
    int r = 0;
    char *rtjson = NULL;
    bool made_image = false;
    fprintf(f, "{\"tool\":\"pcow-bench\",\"schema\":1,\"mode\":\"case\",\"case\":\"%s\",\"host\":", cn);
    host_json(f, a->dir);
    fprintf(f, ",\"params\":{");
    switch (a->c) {
    case C_FLOOR: {
        fprintf(f, "\"variant\":\"%s\",\"faults\":%" PRIu64 "}", a->v_copy && a->v_mmap ? "both" : a->v_copy ? "copy" : "mmap",
                a->faults);
        struct floor_result fr;
        r = measure_floor(a->dir, (int)a->faults, a->v_copy, a->v_mmap, &fr, err, sizeof err);
        fprintf(f, ",\"result\":");
        floor_json(f, &fr);
        break;
    }
    case C_EXPANSION:
    case C_COW: {
        struct touch_params p = {.csize = a->csize, .cow_unit = a->cow_unit, .prealloc = a->prealloc,
                                 .clusters = a->clusters};
        fprintf(f,
                "\"cluster_size\":%" PRIu64 ",\"prealloc\":%u,\"cow_unit\":%" PRIu64 ",\"clusters\":%" PRIu64
                ",\"pace_ns\":%llu}",
                p.csize, p.prealloc, p.cow_unit ? (uint64_t)p.cow_unit : p.csize, p.clusters, PACE_NS);
        /* the floor first, in this process: the ratio to it is a same-run ratio */
        struct floor_result fr;
        r = measure_floor(a->dir, CASE_FLOOR_FAULTS, true, true, &fr, err, sizeof err);
        fprintf(f, ",\"floor\":");
        floor_json(f, &fr);
        if (r < 0)
            break;
        struct touch_result tr = {0};
        made_image = true;
        r = a->c == C_EXPANSION ? run_expansion(img, &p, &tr, err, sizeof err) : run_cow(img, &p, &tr, err, sizeof err);
        rtjson = tr.runtime_json;
        if (r < 0)
            break;
        fprintf(f, ",\"result\":{\"touch\":");
        hist_obj(f, &tr.touch);
        ratio_json(f, "p50_over_floor", (double)tr.touch.p50_ns, (double)fr.copy.p50_ns);
        ratio_json(f, "p50_over_floor_mmap", (double)tr.touch.p50_ns, (double)fr.mmap.p50_ns);
        fprintf(f, ",\"vmas_in_range\":%ld}", tr.vmas_in_range);
        break;
    }
    case C_STEADY: {
        const char *be = a->be_pcow && a->be_raw ? "both" : a->be_pcow ? "pcow" : "raw";
        int rounds = a->be_pcow && a->be_raw ? 3 : 1;
        double secs = a->seconds / rounds;
        fprintf(f,
                "\"backend\":\"%s\",\"rw\":\"%s\",\"bs\":%" PRIu64 ",\"threads\":%d,\"size\":%" PRIu64
                ",\"seconds\":%.3f,\"cluster_size\":%" PRIu64 ",\"rounds\":%d}",
                be, rw_names[a->rw], a->bs, a->threads, a->size, a->seconds, a->csize, rounds);
        char rawp[600];
        path_in(rawp, sizeof rawp, a->dir, "steady.raw");
        struct steady_env e;
        made_image = a->be_pcow;
        r = steady_setup(&e, a->be_pcow ? img : NULL, a->be_raw ? rawp : NULL, a->size, a->csize, err, sizeof err);
        if (r < 0)
            break;
        double rr[3] = {0}, rp[3] = {0}, rat[3] = {0};
        steady_rounds(&e, a->rw, a->bs, a->threads, secs, rounds, rr, rp);
        fprintf(f, ",\"result\":{\"seconds_per_round\":%.3f", secs);
        for (int b = 0; b < 2; b++) {
            double *v = b ? rp : rr;
            if (!(b ? a->be_pcow : a->be_raw))
                continue;
            double s[3];
            memcpy(s, v, sizeof s);
            qsort(s, (size_t)rounds, sizeof(double), cmp_d);
            fprintf(f, ",\"%s\":{\"bytes_per_s\":%.0f,\"ops_per_s\":%.0f,\"rounds_bytes_per_s\":[", b ? "pcow" : "raw",
                    s[rounds / 2], s[rounds / 2] / (double)a->bs);
            for (int k = 0; k < rounds; k++)
                fprintf(f, "%s%.0f", k ? "," : "", v[k]);
            fprintf(f, "]}");
        }
        if (rounds > 1) {
            for (int k = 0; k < rounds; k++)
                rat[k] = rp[k] / rr[k];
            qsort(rat, (size_t)rounds, sizeof(double), cmp_d);
            fprintf(f, ",\"pcow_over_raw\":%.4f,\"ratio_min\":%.4f,\"ratio_max\":%.4f", rat[rounds / 2], rat[0],
                    rat[rounds - 1]);
        }
        if (e.rt) {
            struct pcow_runtime_stats st;
            pcow_runtime_get_stats(e.rt, &st);
            fprintf(f, ",\"faults_after_map\":%" PRIu64 ",\"faults_during_runs\":%" PRIu64 ",\"vmas_in_range\":%ld",
                    e.faults_after_map, st.faults - e.faults_after_map, vmas_in(e.pm, pcow_runtime_length(e.rt)));
            rtjson = runtime_json(e.rt);
        }
        fputc('}', f);
        r = steady_teardown(&e, err, sizeof err);
        break;
    }
    case C_OPEN: {
        fprintf(f, "\"clusters\":%" PRIu64 ",\"cluster_size\":%" PRIu64 ",\"virtual_size\":%" PRIu64 "}", a->clusters,
                a->csize, a->vsize);
        struct open_result o = {0};
        made_image = true;
        r = run_open(img, a->vsize, (uint32_t)a->csize, a->clusters, &o, err, sizeof err);
        rtjson = o.runtime_json;
        if (r < 0)
            break;
        fprintf(f, ",\"result\":{\"build_s\":%.3f,\"open_s\":%.6f,\"map_s\":%.6f,\"open_map_s\":%.6f,\"vmas_in_range\":%ld}",
                o.build_s, o.open_s, o.map_s, o.open_map_s, o.vmas_in_range);
        break;
    }
    case C_STRIPES: {
        struct stripes_result o = {0};
        made_image = true;
        r = run_stripes(img, a->size, (uint32_t)a->csize, a->stripes, a->threads, a->seconds, &o, err, sizeof err);
        fprintf(f,
                "\"stripes\":%u,\"stripe_unit\":%" PRIu64 ",\"size\":%" PRIu64 ",\"threads\":%d,\"seconds\":%.3f,"
                "\"cluster_size\":%" PRIu64 "}",
                a->stripes, o.stripe_unit, a->size, a->threads, a->seconds, a->csize);
        rtjson = o.runtime_json;
        if (r < 0)
            break;
        fprintf(f,
                ",\"result\":{\"first_touch_s\":%.3f,\"seqwrite_bytes_per_s\":%.0f,\"seqread_bytes_per_s\":%.0f,"
                "\"vmas_in_range\":%ld}",
                o.first_touch_s, o.seqwrite, o.seqread, o.vmas_in_range);
        break;
    }
    default:
        break;
    }
    if (rtjson) {
        fprintf(f, ",\"runtime\":%s", rtjson);
        free(rtjson);
    }
    fprintf(f, ",\"image\":");
    if (a->keep && made_image)
        jstr(f, img);
    else
        fprintf(f, "null");
    fprintf(f, "}\n");
    fclose(f);
    if (made_image && (!a->keep || r < 0))
        rm_image(img);
    if (r < 0) {
        fprintf(stderr, "pcow-bench: case %s: %s\n", cn, err[0] ? err : "failed");
        free(buf);
        return 1;
    }
    fwrite(buf, 1, blen, stdout);
    free(buf);
    return fflush(stdout) == 0 ? 0 : 1;
}

/* ======================= full suite ======================= */
static const char *dir = "/dev/shm";
static const char *disk_dir = "/var/tmp";
static uint64_t steady_size = 256 * MiB;
static int nthreads = 2;
static bool quick;
static FILE *out;
static char errs[8][512];
static int nerrs;
static bool first_section = true;

static void note_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char b[512];
    vsnprintf(b, sizeof b, fmt, ap);
    va_end(ap);
    fprintf(stderr, "pcow-bench: %s\n", b);
    if (nerrs < 8)
        snprintf(errs[nerrs++], sizeof errs[0], "%s", b);
}

static void section(const char *name)
{
    fprintf(out, "%s\n  \"%s\": ", first_section ? "" : ",", name);
    first_section = false;
}

static double floor_p50;
static void bench_floor(void)
{
    char err[ERRLEN];
    struct floor_result fr;
    if (measure_floor(dir, quick ? 2000 : 20000, true, true, &fr, err, sizeof err) < 0)
        note_error("%s", err);
    /* For reference: the same UFFDIO_COPY round trip with faults back to back (the handler
     * never sleeps); the targets compare against the paced floor, the regime of the touches. */
    struct rt_hist *hb = malloc(sizeof *hb);
    struct pcow_runtime_hist b2b = {0};
    if (hb) {
        rt_hist_init(hb);
        if (floor_run(dir, false, false, quick ? 2000 : 20000, hb, err, sizeof err) < 0)
            note_error("%s", err);
        rt_hist_summary(hb, &b2b);
        free(hb);
    }
    section("floor");
    fprintf(out, "{\"faults\":%d,\"pace_ns\":%llu,\"uffdio_copy\":", fr.faults, PACE_NS);
    hist_obj(out, &fr.copy);
    fprintf(out, ",\"mmap_fixed_wake\":");
    hist_obj(out, &fr.mmap);
    fprintf(out, ",\"uffdio_copy_back_to_back\":");
    hist_obj(out, &b2b);
    fputc('}', out);
    floor_p50 = (double)fr.copy.p50_ns;
}

static double exp_on_p50, exp_off_p50;
static void bench_expansion(void)
{
    const uint64_t cs = 64 * KiB, n = quick ? 300 : 2000;
    section("expansion");
    fprintf(out, "{\"cluster_size\":%" PRIu64 ",\"clusters\":%" PRIu64 ",\"pace_ns\":%llu", cs, n, PACE_NS);
    for (int on = 1; on >= 0; on--) {
        char p[512], err[ERRLEN];
        path_in(p, sizeof p, dir, "exp.img");
        struct touch_params tp = {.csize = cs, .prealloc = on ? 64 : 0, .clusters = n};
        struct touch_result tr = {0};
        int r = run_expansion(p, &tp, &tr, err, sizeof err);
        rm_image(p);
        if (r < 0) {
            free(tr.runtime_json);
            note_error("expansion: %s", err);
            break;
        }
        fprintf(out, ",\"prealloc_%s\":{\"touch\":", on ? "on" : "off");
        hist_obj(out, &tr.touch);
        fprintf(out, ",\"runtime\":%s}", tr.runtime_json ? tr.runtime_json : "null");
        free(tr.runtime_json);
        (on ? &exp_on_p50 : &exp_off_p50)[0] = (double)tr.touch.p50_ns;
    }
    fputc('}', out);
}

static double cow4k_p50, cow64k_p50, cow2m_small_p50, cow2m_whole_p50;
static void cow_suite_case(uint64_t cs, uint32_t unit, uint64_t n, double *p50)
{
    char p[512], err[ERRLEN];
    path_in(p, sizeof p, dir, "cow.img");
    struct touch_params tp = {.csize = cs, .cow_unit = unit, .prealloc = 32, .clusters = n};
    struct touch_result tr = {0};
    int r = run_cow(p, &tp, &tr, err, sizeof err);
    rm_image(p);
    if (r < 0) {
        free(tr.runtime_json);
        note_error("cow: %s", err);
        fprintf(out, "null");
        return;
    }
    fprintf(out, "{\"cluster_size\":%" PRIu64 ",\"cow_unit\":%u,\"clusters\":%" PRIu64 ",\"touch\":", cs,
            unit ? unit : (uint32_t)cs, n);
    hist_obj(out, &tr.touch);
    fprintf(out, ",\"runtime\":%s}", tr.runtime_json ? tr.runtime_json : "null");
    free(tr.runtime_json);
    *p50 = (double)tr.touch.p50_ns;
}

static void bench_cow(void)
{
    section("cow");
    fprintf(out, "{\"c64k_unit4k\":");
    cow_suite_case(64 * KiB, 4096, quick ? 300 : 1500, &cow4k_p50);
    fprintf(out, ",\"c64k_whole\":");
    cow_suite_case(64 * KiB, 0, quick ? 300 : 1500, &cow64k_p50);
    fprintf(out, ",\"c2m_unit4k\":");
    cow_suite_case(2 * MiB, 4096, quick ? 24 : 96, &cow2m_small_p50);
    fprintf(out, ",\"c2m_whole\":");
    cow_suite_case(2 * MiB, 0, quick ? 24 : 96, &cow2m_whole_p50);
    fputc('}', out);
}

/* The suite's four workloads. */
static const struct {
    const char *name;
    enum rwkind rw;
    uint64_t bs;
} wls[] = {{"randread4k", RW_RANDREAD, 4096}, {"randwrite4k", RW_RANDWRITE, 4096}, {"seqread1m", RW_READ, MiB},
           {"seqwrite1m", RW_WRITE, MiB}};

static double steady_min_ratio = 1e9, steady_median_ratio;
static void bench_steady(void)
{
    char p[512], rp[512], err[ERRLEN];
    path_in(p, sizeof p, dir, "steady.img");
    path_in(rp, sizeof rp, dir, "steady.raw");
    const uint64_t cs = 64 * KiB, size = steady_size;
    struct steady_env e;
    if (steady_setup(&e, p, rp, size, cs, err, sizeof err) < 0) {
        note_error("steady: %s", err);
        rm_image(p);
        return;
    }
    double secs = quick ? 0.15 : 0.5;
    int reps = quick ? 3 : 5;
    section("steady");
    fprintf(out, "{\"size\":%" PRIu64 ",\"cluster_size\":%" PRIu64 ",\"seconds_per_sample\":%.2f,\"repetitions\":%d,"
                 "\"faults_after_map\":%" PRIu64 ",\"cells\":[",
            size, cs, secs, reps, e.faults_after_map);
    int thr[2] = {1, nthreads};
    double ratios[16];
    int nr = 0;
    for (int ti = 0; ti < 2; ti++) {
        if (ti == 1 && nthreads == 1)
            break;
        for (int w = 0; w < 4; w++) {
            double r_raw[9], r_pcow[9], rat[9];
            steady_rounds(&e, wls[w].rw, wls[w].bs, thr[ti], secs, reps, r_raw, r_pcow);
            for (int k = 0; k < reps; k++)
                rat[k] = r_pcow[k] / r_raw[k];
            qsort(r_raw, (size_t)reps, sizeof(double), cmp_d);
            qsort(r_pcow, (size_t)reps, sizeof(double), cmp_d);
            qsort(rat, (size_t)reps, sizeof(double), cmp_d);
            double ratio = rat[reps / 2]; /* median of paired ratios */
            ratios[nr++] = ratio;
            if (ratio < steady_min_ratio)
                steady_min_ratio = ratio;
            fprintf(out,
                    "%s{\"workload\":\"%s\",\"threads\":%d,\"raw_bytes_per_s\":%.0f,\"pcow_bytes_per_s\":%.0f,"
                    "\"ratio\":%.4f,\"ratio_min\":%.4f,\"ratio_max\":%.4f}",
                    (ti || w) ? "," : "", wls[w].name, thr[ti], r_raw[reps / 2], r_pcow[reps / 2], ratio, rat[0],
                    rat[reps - 1]);
        }
    }
    qsort(ratios, (size_t)nr, sizeof(double), cmp_d);
    steady_median_ratio = ratios[nr / 2];
    struct pcow_runtime_stats st;
    pcow_runtime_get_stats(e.rt, &st);
    fprintf(out, "],\"faults_during_runs\":%" PRIu64 ",\"vmas_process\":%" PRIu64 "}", st.faults - e.faults_after_map,
            st.vmas);
    if (steady_teardown(&e, err, sizeof err) < 0)
        note_error("steady: %s", err);
    rm_image(p);
}

static double open_1e6_s = -1;
static long seq8g_vmas = -1;
static void open_suite_case(const char *label, uint64_t vsize, uint32_t cs, uint64_t n)
{
    char p[512], err[ERRLEN];
    path_in(p, sizeof p, disk_dir, "open.img");
    static bool firstc = true;
    fprintf(out, "%s{\"case\":\"%s\",\"cluster_size\":%u,\"virtual_size\":%" PRIu64 ",\"clusters\":%" PRIu64,
            firstc ? "" : ",", label, cs, vsize, n);
    firstc = false;
    struct open_result o = {0};
    int r = run_open(p, vsize, cs, n, &o, err, sizeof err);
    rm_image(p);
    free(o.runtime_json);
    if (r < 0) {
        note_error("open: %s", err);
        fprintf(out, ",\"error\":");
        jstr(out, err);
        fputc('}', out);
        return;
    }
    fprintf(out, ",\"build_s\":%.2f,\"open_s\":%.4f,\"map_s\":%.4f,\"open_map_s\":%.4f,\"vmas_in_range\":%ld}",
            o.build_s, o.open_s, o.map_s, o.open_map_s, o.vmas_in_range);
    if (n == 1000000)
        open_1e6_s = o.open_map_s;
    if (!strcmp(label, "sequential_8g"))
        seq8g_vmas = o.vmas_in_range;
}

static void bench_open(void)
{
    section("open");
    fprintf(out, "{\"dir\":");
    jstr(out, disk_dir);
    fprintf(out, ",\"cases\":[");
    /* virtual size just above the allocated part: libpcow's map_cluster costs O(L1 size) */
    open_suite_case("1e4", 10000ull * 4096 * 5 / 4, 4096, 10000);
    open_suite_case("1e5", 100000ull * 4096 * 5 / 4, 4096, 100000);
    if (!quick)
        open_suite_case("1e6", 1000000ull * 4096 * 5 / 4, 4096, 1000000);
    open_suite_case("sequential_8g", 8 * GiB, 64 * 1024, quick ? 16384 : 131072);
    fprintf(out, "]}");
}

static void bench_stripes(void)
{
    section("stripes");
    const uint64_t size = quick ? 64 * MiB : 256 * MiB;
    fprintf(out, "{\"size\":%" PRIu64 ",\"threads\":%d,\"cluster_size\":65536,\"stripe_unit\":2097152,\"cells\":[", size,
            nthreads);
    for (uint32_t k = 1; k <= 4; k++) {
        char p[512], err[ERRLEN];
        path_in(p, sizeof p, dir, "stripe.img");
        struct stripes_result o = {0};
        int r = run_stripes(p, size, 64 * 1024, k, nthreads, quick ? 0.2 : 0.5, &o, err, sizeof err);
        rm_image(p);
        free(o.runtime_json);
        if (r < 0) {
            note_error("stripes: %s", err);
            break;
        }
        fprintf(out,
                "%s{\"stripes\":%u,\"first_touch_s\":%.3f,\"seqwrite_bytes_per_s\":%.0f,\"seqread_bytes_per_s\":%.0f,"
                "\"vmas_in_range\":%ld}",
                k > 1 ? "," : "", k, o.first_touch_s, o.seqwrite, o.seqread, o.vmas_in_range);
    }
    fprintf(out, "]}");
}

static void target(bool *firstt, const char *id, double value, const char *op, double limit, bool valid)
{
    fprintf(out, "%s{\"id\":\"%s\",\"value\":", *firstt ? "" : ",", id);
    if (valid && isfinite(value))
        fprintf(out, "%.4f", value);
    else
        fprintf(out, "null");
    bool pass = valid && isfinite(value) && (!strcmp(op, "<=") ? value <= limit : !strcmp(op, ">=") ? value >= limit : value < limit);
    fprintf(out, ",\"op\":\"%s\",\"limit\":%.4f,\"pass\":%s}", op, limit, valid ? (pass ? "true" : "false") : "null");
    *firstt = false;
}

static int suite_usage(void)
{
    fprintf(stderr,
            "usage: pcow-bench [--json] [--quick] [--only floor,expansion,cow,steady,open,stripes] [--dir DIR]\n"
            "                  [--disk-dir DIR] [--size BYTES[K|M|G]] [--threads N]\n"
            "       pcow-bench case NAME [options]   (one case, one JSON object; pcow-bench case --help)\n");
    return 2;
}

static int run_suite(int argc, char **argv)
{
    const char *only = "floor,expansion,cow,steady,open,stripes";
    long np = sysconf(_SC_NPROCESSORS_ONLN);
    nthreads = np > 0 ? (int)np : 2;
    for (int i = 1; i < argc; i++) {
        uint64_t v;
        if (!strcmp(argv[i], "--json"))
            continue;
        else if (!strcmp(argv[i], "--quick"))
            quick = true;
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only = argv[++i];
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--disk-dir") && i + 1 < argc)
            disk_dir = argv[++i];
        else if (!strcmp(argv[i], "--size") && i + 1 < argc) {
            if (!parse_size(argv[++i], &v))
                return usage_error("--size '%s' is not a size (use e.g. 256M)", argv[i]);
            steady_size = v & ~(MiB - 1);
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            if (!parse_uint(argv[++i], 64, &v) || v < 1)
                return usage_error("--threads '%s' must be a whole number from 1 to 64", argv[i]);
            nthreads = (int)v;
        } else
            return suite_usage();
    }
    if (steady_size < 16 * MiB)
        return usage_error("--size must be at least 16M");
    for (const char *s = only; *s;) {
        size_t l = strcspn(s, ",");
        bool ok = false;
        for (int i = 0; i < N_CASES; i++)
            ok |= strlen(case_names[i]) == l && !strncmp(s, case_names[i], l);
        if (!ok)
            return usage_error("unknown benchmark '%.*s' in --only (known: floor,expansion,cow,steady,open,stripes)",
                               (int)l, s);
        s += l + (s[l] == ',');
    }
#define WANT(x) (strstr(only, x) != NULL)
    out = stdout;
    struct utsname u;
    uname(&u);
    fprintf(out, "{\n  \"tool\": \"pcow-bench\",\n  \"schema\": 1,\n  \"host\": {\"kernel\":");
    jstr(out, u.release);
    fprintf(out, ",\"cpus\":%ld,\"dir\":", np);
    jstr(out, dir);
    fprintf(out, ",\"dir_fs\":\"%s\",\"threads\":%d,\"quick\":%s}", fs_name(dir), nthreads, quick ? "true" : "false");
    first_section = false;
    if (WANT("floor") || WANT("expansion") || WANT("cow"))
        bench_floor(); /* the other latencies are compared with it */
    if (WANT("expansion"))
        bench_expansion();
    if (WANT("cow"))
        bench_cow();
    if (WANT("steady"))
        bench_steady();
    if (WANT("open"))
        bench_open();
    if (WANT("stripes"))
        bench_stripes();
    section("targets");
    fputc('[', out);
    bool ft = true;
    if (WANT("steady")) {
        target(&ft, "steady_pcow_over_raw_min", steady_min_ratio, ">=", 0.98, steady_min_ratio < 1e8);
        target(&ft, "steady_pcow_over_raw_median", steady_median_ratio, ">=", 0.98, steady_min_ratio < 1e8);
    }
    if (WANT("expansion")) {
        target(&ft, "expansion_p50_prealloc_on_over_floor", exp_on_p50 / floor_p50, "<=", 2.0, floor_p50 > 0 && exp_on_p50 > 0);
        target(&ft, "expansion_p50_prealloc_on_over_off", exp_on_p50 / exp_off_p50, "<", 1.0, exp_off_p50 > 0 && exp_on_p50 > 0);
    }
    if (WANT("cow")) {
        target(&ft, "cow4k_p50_over_floor", cow4k_p50 / floor_p50, "<=", 2.0, floor_p50 > 0 && cow4k_p50 > 0);
        target(&ft, "cow_whole_over_4k_64k_clusters", cow64k_p50 / cow4k_p50, ">=", 3.0, cow4k_p50 > 0 && cow64k_p50 > 0);
        target(&ft, "cow_whole_over_4k_2m_clusters", cow2m_whole_p50 / cow2m_small_p50, ">=", 3.0,
               cow2m_small_p50 > 0 && cow2m_whole_p50 > 0);
    }
    if (WANT("open")) {
        target(&ft, "seq8g_vmas", (double)seq8g_vmas, "<=", 64, seq8g_vmas >= 0 && !quick);
        target(&ft, "open_map_1e6_clusters_s", open_1e6_s, "<=", 1.0, open_1e6_s >= 0);
    }
    fputc(']', out);
    section("errors");
    fputc('[', out);
    for (int i = 0; i < nerrs; i++) {
        if (i)
            fputc(',', out);
        jstr(out, errs[i]);
    }
    fprintf(out, "]\n}\n");
    return nerrs ? 1 : 0;
#undef WANT
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "case")) {
        if (argc >= 3 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h"))) {
            case_usage(stdout);
            return 0;
        }
        struct case_args a;
        memset(&a, 0, sizeof a);
        int r = parse_case(argc - 2, argv + 2, &a);
        return r ? r : run_case(&a);
    }
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        suite_usage();
        return 0;
    }
    return run_suite(argc, argv);
}
