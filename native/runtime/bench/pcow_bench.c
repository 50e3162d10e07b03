/*
 * pcow-bench: micro-benchmarks of the pcow runtime, one JSON document on stdout.
 *
 *   pcow-bench [--json] [--only floor,expansion,cow,steady,open,stripes] [--dir DIR]
 *              [--disk-dir DIR] [--size BYTES[K|M|G]] [--threads N] [--quick]
 *
 *   floor      the bare userfaultfd round trip: an anonymous page registered MISSING, touched
 *              by this thread, served by a handler thread with UFFDIO_COPY; and the variant
 *              mmap(MAP_FIXED) of a file page + UFFDIO_WAKE. Per-fault latency seen by the
 *              faulting thread.
 *   expansion  first-touch write latency per cluster, pre-allocation on and off.
 *   cow        first write after a snapshot: COW unit 4 KiB vs the whole cluster (64 KiB
 *              clusters), and the smallest unit the format allows vs the whole (2 MiB).
 *   steady     throughput over a fully allocated image vs a raw file mmap of the same size, in
 *              the same run, interleaved: 4 KiB random read/write, 1 MiB sequential read/write,
 *              1 and N threads.
 *   open       open + map time and VMA count for images with 1e4, 1e5, 1e6 allocated clusters
 *              (4 KiB clusters) and for a sequentially written 8 GiB image (64 KiB clusters);
 *              built on --disk-dir (default /var/tmp: allocation there costs no RAM).
 *   stripes    sequential bandwidth of images striped over 1..4 files.
 *
 * Latencies are nanoseconds; throughput bytes/s. "targets" holds the ratios the issue sets,
 * computed from this run. Exit status: 0 when the JSON was printed (targets may fail), 1 on a
 * setup error (message on stderr, and in "errors").
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
#include <sys/utsname.h>
#include <sys/vfs.h>
#include <unistd.h>

#define KiB 1024ull
#define MiB (1024ull * KiB)
#define GiB (1024ull * MiB)

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

static void jstr(const char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fprintf(out, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            fprintf(out, "\\u%04x", *s);
        else
            fputc(*s, out);
    }
    fputc('"', out);
}

static void hist_obj(const struct rt_hist *h)
{
    struct pcow_runtime_hist s;
    rt_hist_summary(h, &s);
    fprintf(out,
            "{\"count\":%" PRIu64 ",\"p50_ns\":%" PRIu64 ",\"p90_ns\":%" PRIu64 ",\"p99_ns\":%" PRIu64
            ",\"mean_ns\":%.1f,\"min_ns\":%" PRIu64 ",\"max_ns\":%" PRIu64 "}",
            s.count, s.p50_ns, s.p90_ns, s.p99_ns, s.mean_ns, s.min_ns, s.max_ns);
}

static double hist_p50(const struct rt_hist *h)
{
    struct pcow_runtime_hist s;
    rt_hist_summary(h, &s);
    return (double)s.p50_ns;
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

static int floor_run(bool use_mmap, int n, struct rt_hist *h)
{
    struct floor_ctx c = {.file_fd = -1, .use_mmap = use_mmap};
    char err[400];
    uint64_t feat;
    c.uffd = rt_uffd_open(0, &feat, err, sizeof err);
    if (c.uffd < 0) {
        note_error("floor: %s", err);
        return -1;
    }
    uint64_t len = (uint64_t)n * 4096;
    c.base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    madvise(c.base, len, MADV_NOHUGEPAGE);
    if (rt_uffd_register(c.uffd, c.base, len, UFFDIO_REGISTER_MODE_MISSING, NULL) < 0) {
        note_error("floor: UFFDIO_REGISTER: %s", strerror(errno));
        return -1;
    }
    if (use_mmap) {
        char p[512];
        path_in(p, sizeof p, dir, "floor.bin");
        c.file_fd = open(p, O_CREAT | O_RDWR | O_TRUNC, 0600);
        unlink(p);
        if (c.file_fd < 0 || fallocate(c.file_fd, 0, 0, (off_t)len) < 0) {
            note_error("floor: %s: %s", p, strerror(errno));
            return -1;
        }
    }
    memset(c.page, 0x5a, sizeof c.page);
    c.evfd = eventfd(0, EFD_CLOEXEC);
    pthread_t t;
    pthread_create(&t, NULL, floor_handler, &c);
    for (int i = 0; i < n; i++) {
        volatile uint8_t *p = c.base + (uint64_t)i * 4096;
        uint64_t t0 = rt_now_ns();
        (void)*p;
        uint64_t dt = rt_now_ns() - t0;
        if (i >= 16) /* skip warm-up */
            rt_hist_add(h, dt);
    }
    uint64_t one = 1;
    if (write(c.evfd, &one, 8) != 8)
        return -1;
    pthread_join(t, NULL);
    munmap(c.base, len);
    close(c.uffd);
    close(c.evfd);
    if (c.file_fd >= 0)
        close(c.file_fd);
    return 0;
}

static double floor_p50;
static void bench_floor(void)
{
    int n = quick ? 2000 : 20000;
    struct rt_hist *hc = malloc(sizeof *hc), *hm = malloc(sizeof *hm);
    rt_hist_init(hc);
    rt_hist_init(hm);
    floor_run(false, n, hc);
    floor_run(true, n, hm);
    section("floor");
    fprintf(out, "{\"faults\":%d,\"uffdio_copy\":", n);
    hist_obj(hc);
    fprintf(out, ",\"mmap_fixed_wake\":");
    hist_obj(hm);
    fputc('}', out);
    floor_p50 = hist_p50(hc);
    free(hc);
    free(hm);
}

/* ================ first-touch latency helpers ================ */
static void pace(void)
{
    /* a guest does work between first touches; lets the pre-allocation thread keep up */
    uint64_t t = rt_now_ns() + 100000;
    while (rt_now_ns() < t) {
    }
}

static int touch_all(pcow_runtime *rt, uint64_t csize, uint64_t n, bool random_off, struct rt_hist *h)
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
    return 0;
}

static void runtime_stats(pcow_runtime *rt)
{
    pcow_runtime_stats_json(rt, out);
}

/* ======================= expansion ======================= */
static double exp_on_p50, exp_off_p50;
static void bench_expansion(void)
{
    const uint64_t cs = 64 * KiB, n = quick ? 300 : 2000;
    section("expansion");
    fprintf(out, "{\"cluster_size\":%" PRIu64 ",\"clusters\":%" PRIu64 ",\"pace_ns\":100000", cs, n);
    for (int on = 1; on >= 0; on--) {
        char p[512], err[1024];
        path_in(p, sizeof p, dir, "exp.img");
        struct pcow_create_opts co = {.virtual_size = n * cs, .cluster_size = (uint32_t)cs};
        pcow_runtime *rt;
        struct pcow_runtime_opts o = {.prealloc_depth = on ? 64 : 0};
        if (pcow_create(p, &co, err, sizeof err) < 0 || pcow_runtime_open(p, 0, &o, &rt, err, sizeof err) < 0) {
            note_error("expansion: %s", err);
            return;
        }
        struct rt_hist *h = malloc(sizeof *h);
        rt_hist_init(h);
        usleep(20000); /* the pool fills */
        touch_all(rt, cs, n, false, h);
        fprintf(out, ",\"prealloc_%s\":{\"touch\":", on ? "on" : "off");
        hist_obj(h);
        fprintf(out, ",\"runtime\":");
        runtime_stats(rt);
        fputc('}', out);
        (on ? &exp_on_p50 : &exp_off_p50)[0] = hist_p50(h);
        free(h);
        pcow_runtime_unmap(rt, NULL, 0);
        rm_image(p);
    }
    fputc('}', out);
}

/* ======================= cow ======================= */
static double cow4k_p50, cow64k_p50, cow2m_small_p50, cow2m_whole_p50;
static int cow_case(uint64_t cs, uint32_t unit, uint64_t n, double *p50)
{
    char p[512], err[1024];
    path_in(p, sizeof p, dir, "cow.img");
    struct pcow_create_opts co = {.virtual_size = n * cs, .cluster_size = (uint32_t)cs};
    pcow_image *img;
    if (pcow_create(p, &co, err, sizeof err) < 0 || pcow_open(p, PCOW_OPEN_RDWR, &img, err, sizeof err) < 0) {
        note_error("cow: %s", err);
        return -1;
    }
    uint8_t *buf = malloc(cs);
    memset(buf, 0x33, cs);
    pcow_set_persist(img, noop_persist, NULL); /* setup only */
    for (uint64_t i = 0; i < n; i++)
        if (pcow_write(img, buf, cs, i * cs) < 0) {
            note_error("cow: %s", pcow_errmsg(img));
            return -1;
        }
    free(buf);
    pcow_set_persist(img, NULL, NULL);
    if (pcow_snapshot_create(img, "base") < 0) {
        note_error("cow: %s", pcow_errmsg(img));
        return -1;
    }
    pcow_close(img, NULL, 0);
    struct pcow_runtime_opts o = {.prealloc_depth = 32, .cow_unit = unit};
    pcow_runtime *rt;
    if (pcow_runtime_open(p, 0, &o, &rt, err, sizeof err) < 0) {
        note_error("cow: %s", err);
        return -1;
    }
    struct rt_hist *h = malloc(sizeof *h);
    rt_hist_init(h);
    usleep(20000);
    touch_all(rt, cs, n, true, h);
    fprintf(out, "{\"cluster_size\":%" PRIu64 ",\"cow_unit\":%u,\"clusters\":%" PRIu64 ",\"touch\":", cs,
            unit ? unit : (uint32_t)cs, n);
    hist_obj(h);
    fprintf(out, ",\"runtime\":");
    runtime_stats(rt);
    fputc('}', out);
    *p50 = hist_p50(h);
    free(h);
    pcow_runtime_unmap(rt, NULL, 0);
    rm_image(p);
    return 0;
}

static void bench_cow(void)
{
    section("cow");
    fprintf(out, "{\"c64k_unit4k\":");
    cow_case(64 * KiB, 4096, quick ? 300 : 1500, &cow4k_p50);
    fprintf(out, ",\"c64k_whole\":");
    cow_case(64 * KiB, 0, quick ? 300 : 1500, &cow64k_p50);
    /* 2 MiB clusters: the format's sub-unit is cluster/64 = 32 KiB (see README: the 4 KiB unit
     * needs a 512-bit sub-unit record) */
    fprintf(out, ",\"c2m_unit32k\":");
    cow_case(2 * MiB, 32 * 1024, quick ? 24 : 96, &cow2m_small_p50);
    fprintf(out, ",\"c2m_whole\":");
    cow_case(2 * MiB, 0, quick ? 24 : 96, &cow2m_whole_p50);
    fputc('}', out);
}

/* ======================= steady ======================= */
enum wl { RANDREAD4K, RANDWRITE4K, SEQREAD1M, SEQWRITE1M };
static const char *wl_name[] = {"randread4k", "randwrite4k", "seqread1m", "seqwrite1m"};
struct st_arg {
    uint8_t *m;
    uint64_t size;
    enum wl w;
    int idx, n;
    double secs;
    uint64_t bytes;
    pthread_barrier_t *bar;
};

static void *st_thread(void *arg)
{
    struct st_arg *a = arg;
    uint64_t bs = (a->w == RANDREAD4K || a->w == RANDWRITE4K) ? 4096 : MiB;
    uint8_t *buf = aligned_alloc(4096, bs);
    memset(buf, a->idx + 1, bs);
    uint64_t x = 0x9E3779B97F4A7C15ull * (uint64_t)(a->idx + 1), nblk = a->size / bs;
    uint64_t part = nblk / (uint64_t)a->n, pos = part * (uint64_t)a->idx, bytes = 0;
    pthread_barrier_wait(a->bar);
    uint64_t t_end = rt_now_ns() + (uint64_t)(a->secs * 1e9);
    while (rt_now_ns() < t_end) {
        for (int k = 0; k < 64; k++) {
            uint64_t blk;
            if (a->w == RANDREAD4K || a->w == RANDWRITE4K) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                blk = x % nblk;
            } else {
                blk = pos++;
                if (pos >= part * (uint64_t)(a->idx + 1))
                    pos = part * (uint64_t)a->idx;
            }
            if (a->w == RANDREAD4K || a->w == SEQREAD1M)
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

static double run_wl(uint8_t *m, uint64_t size, enum wl w, int n, double secs)
{
    pthread_t t[64];
    struct st_arg a[64];
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, (unsigned)n);
    for (int i = 0; i < n; i++) {
        a[i] = (struct st_arg){m, size, w, i, n, secs, 0, &bar};
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

static double steady_min_ratio = 1e9, steady_median_ratio;
static void bench_steady(void)
{
    char p[512], rp[512], err[1024];
    path_in(p, sizeof p, dir, "steady.img");
    path_in(rp, sizeof rp, dir, "steady.raw");
    const uint64_t cs = 64 * KiB, size = steady_size;
    struct pcow_create_opts co = {.virtual_size = size, .cluster_size = (uint32_t)cs};
    pcow_image *img;
    if (pcow_create(p, &co, err, sizeof err) < 0 || pcow_open(p, PCOW_OPEN_RDWR, &img, err, sizeof err) < 0) {
        note_error("steady: %s", err);
        return;
    }
    uint8_t *buf = calloc(1, 16 * MiB);
    memset(buf, 0x11, 16 * MiB);
    for (uint64_t o = 0; o < size; o += 16 * MiB)
        if (pcow_write(img, buf, 16 * MiB < size - o ? 16 * MiB : size - o, o) < 0) {
            note_error("steady: %s", pcow_errmsg(img));
            return;
        }
    pcow_close(img, NULL, 0);
    int rfd = open(rp, O_CREAT | O_TRUNC | O_RDWR, 0600);
    for (uint64_t o = 0; rfd >= 0 && o < size; o += 16 * MiB)
        if (pwrite(rfd, buf, 16 * MiB, (off_t)o) != (ssize_t)(16 * MiB)) {
            note_error("steady: %s: %s", rp, strerror(errno));
            return;
        }
    free(buf);
    uint8_t *raw = rfd >= 0 ? mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, rfd, 0) : MAP_FAILED;
    struct pcow_runtime_opts o = {0};
    pcow_runtime *rt;
    if (raw == MAP_FAILED || pcow_runtime_open(p, 0, &o, &rt, err, sizeof err) < 0) {
        note_error("steady: %s", raw == MAP_FAILED ? strerror(errno) : err);
        return;
    }
    uint8_t *pm = pcow_runtime_addr(rt);
    /* populate page tables of both */
    for (uint64_t off = 0; off < size; off += 4096) {
        raw[off] = 1;
        pm[off] = 1;
    }
    struct pcow_runtime_stats st0;
    pcow_runtime_get_stats(rt, &st0);
    double secs = quick ? 0.15 : 0.5;
    int reps = quick ? 3 : 5;
    section("steady");
    fprintf(out, "{\"size\":%" PRIu64 ",\"cluster_size\":%" PRIu64 ",\"seconds_per_sample\":%.2f,\"repetitions\":%d,"
                 "\"faults_after_map\":%" PRIu64 ",\"cells\":[",
            size, cs, secs, reps, st0.faults);
    int thr[2] = {1, nthreads};
    double ratios[16];
    int nr = 0;
    for (int ti = 0; ti < 2; ti++) {
        if (ti == 1 && nthreads == 1)
            break;
        for (int w = 0; w < 4; w++) {
            double r_raw[9], r_pcow[9], rat[9];
            for (int k = 0; k < reps; k++) {
                /* alternate which goes first */
                if (k % 2 == 0) {
                    r_raw[k] = run_wl(raw, size, (enum wl)w, thr[ti], secs);
                    r_pcow[k] = run_wl(pm, size, (enum wl)w, thr[ti], secs);
                } else {
                    r_pcow[k] = run_wl(pm, size, (enum wl)w, thr[ti], secs);
                    r_raw[k] = run_wl(raw, size, (enum wl)w, thr[ti], secs);
                }
                rat[k] = r_pcow[k] / r_raw[k];
            }
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
                    (ti || w) ? "," : "", wl_name[w], thr[ti], r_raw[reps / 2], r_pcow[reps / 2], ratio, rat[0],
                    rat[reps - 1]);
        }
    }
    qsort(ratios, (size_t)nr, sizeof(double), cmp_d);
    steady_median_ratio = ratios[nr / 2];
    struct pcow_runtime_stats st;
    pcow_runtime_get_stats(rt, &st);
    fprintf(out, "],\"faults_during_runs\":%" PRIu64 ",\"vmas_process\":%" PRIu64 "}", st.faults - st0.faults, st.vmas);
    pcow_runtime_unmap(rt, NULL, 0);
    munmap(raw, size);
    close(rfd);
    unlink(rp);
    rm_image(p);
}

/* ======================= open ======================= */
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

/* Build an image whose first n clusters are allocated in the order the runtime allocates them
 * (pre-allocation batches of 64, L2 tables appended when first needed); no data is written. */
static int build_allocated(const char *p, uint64_t vsize, uint32_t cs, uint64_t n, double *build_s)
{
    char err[1024];
    double t0 = (double)rt_now_ns();
    struct pcow_create_opts co = {.virtual_size = vsize, .cluster_size = cs};
    pcow_image *img;
    if (pcow_create(p, &co, err, sizeof err) < 0 || pcow_open(p, PCOW_OPEN_RDWR, &img, err, sizeof err) < 0) {
        note_error("open: %s", err);
        return -1;
    }
    pcow_set_persist(img, noop_persist, NULL); /* setup only: one fdatasync at the end */
    for (uint64_t vc = 0; vc < n;) {
        uint64_t addr;
        uint32_t b = n - vc < 64 ? (uint32_t)(n - vc) : 64;
        if (pcow_reserve(img, b, &addr) < 0) {
            note_error("open: %s", pcow_errmsg(img));
            pcow_close(img, NULL, 0);
            return -1;
        }
        for (uint32_t i = 0; i < b; i++, vc++)
            if (pcow_map_cluster(img, vc, addr + (uint64_t)i * cs, false, 0) < 0) {
                note_error("open: %s", pcow_errmsg(img));
                pcow_close(img, NULL, 0);
                return -1;
            }
    }
    pcow_set_persist(img, NULL, NULL);
    pcow_close(img, NULL, 0);
    *build_s = ((double)rt_now_ns() - t0) / 1e9;
    return 0;
}

static double open_1e6_s = -1;
static long seq8g_vmas = -1;
static void open_case(const char *label, uint64_t vsize, uint32_t cs, uint64_t n)
{
    char p[512], err[1024];
    path_in(p, sizeof p, disk_dir, "open.img");
    double build_s = 0;
    static bool firstc = true;
    fprintf(out, "%s{\"case\":\"%s\",\"cluster_size\":%u,\"virtual_size\":%" PRIu64 ",\"clusters\":%" PRIu64,
            firstc ? "" : ",", label, cs, vsize, n);
    firstc = false;
    if (build_allocated(p, vsize, cs, n, &build_s) < 0) {
        fprintf(out, ",\"error\":");
        jstr(errs[nerrs - 1]);
        fputc('}', out);
        rm_image(p);
        return;
    }
    uint64_t t0 = rt_now_ns();
    pcow_image *img;
    int r = pcow_open(p, PCOW_OPEN_RDWR, &img, err, sizeof err);
    uint64_t t1 = rt_now_ns();
    pcow_runtime *rt = NULL;
    if (r == 0 && (r = pcow_runtime_map(img, NULL, &rt, err, sizeof err)) < 0)
        pcow_close(img, NULL, 0);
    uint64_t t2 = rt_now_ns();
    if (r < 0) {
        fprintf(out, ",\"error\":");
        jstr(err);
        fputc('}', out);
        rm_image(p);
        return;
    }
    long v = vmas_in(pcow_runtime_addr(rt), pcow_runtime_length(rt));
    fprintf(out, ",\"build_s\":%.2f,\"open_s\":%.4f,\"map_s\":%.4f,\"open_map_s\":%.4f,\"vmas_in_range\":%ld}",
            build_s, (double)(t1 - t0) / 1e9, (double)(t2 - t1) / 1e9, (double)(t2 - t0) / 1e9, v);
    if (n == 1000000)
        open_1e6_s = (double)(t2 - t0) / 1e9;
    if (!strcmp(label, "sequential_8g"))
        seq8g_vmas = v;
    uint64_t t3 = rt_now_ns();
    pcow_runtime_unmap(rt, NULL, 0);
    pcow_close(img, NULL, 0);
    (void)t3;
    rm_image(p);
}

static void bench_open(void)
{
    section("open");
    fprintf(out, "{\"dir\":");
    jstr(disk_dir);
    fprintf(out, ",\"cases\":[");
    /* virtual size just above the allocated part: libpcow's map_cluster costs O(L1 size) */
    open_case("1e4", 10000ull * 4096 * 5 / 4, 4096, 10000);
    open_case("1e5", 100000ull * 4096 * 5 / 4, 4096, 100000);
    if (!quick)
        open_case("1e6", 1000000ull * 4096 * 5 / 4, 4096, 1000000);
    open_case("sequential_8g", 8 * GiB, 64 * 1024, quick ? 16384 : 131072);
    fprintf(out, "]}");
}

/* ======================= stripes ======================= */
static void bench_stripes(void)
{
    section("stripes");
    const uint64_t size = quick ? 64 * MiB : 256 * MiB;
    fprintf(out, "{\"size\":%" PRIu64 ",\"threads\":%d,\"cluster_size\":65536,\"stripe_unit\":2097152,\"cells\":[", size,
            nthreads);
    for (uint32_t k = 1; k <= 4; k++) {
        char p[512], err[1024];
        path_in(p, sizeof p, dir, "stripe.img");
        /* 2 MiB stripe unit: a 64 KiB-cluster stripe unit would cost one VMA per cluster */
        struct pcow_create_opts co = {.virtual_size = size, .cluster_size = 64 * 1024, .stripe_count = k,
                                      .stripe_unit = 2 * 1024 * 1024};
        pcow_runtime *rt;
        if (pcow_create(p, &co, err, sizeof err) < 0 || pcow_runtime_open(p, 0, NULL, &rt, err, sizeof err) < 0) {
            note_error("stripes: %s", err);
            break;
        }
        uint8_t *m = pcow_runtime_addr(rt);
        uint64_t t0 = rt_now_ns();
        for (uint64_t o = 0; o < size; o += 4096)
            m[o] = 1; /* allocate everything (first touch) */
        double alloc_s = (double)(rt_now_ns() - t0) / 1e9;
        double secs = quick ? 0.2 : 0.5;
        double w = run_wl(m, size, SEQWRITE1M, nthreads, secs);
        double r = run_wl(m, size, SEQREAD1M, nthreads, secs);
        fprintf(out,
                "%s{\"stripes\":%u,\"first_touch_s\":%.3f,\"seqwrite_bytes_per_s\":%.0f,\"seqread_bytes_per_s\":%.0f,"
                "\"vmas_in_range\":%ld}",
                k > 1 ? "," : "", k, alloc_s, w, r, vmas_in(m, pcow_runtime_length(rt)));
        pcow_runtime_unmap(rt, NULL, 0);
        rm_image(p);
    }
    fprintf(out, "]}");
}

/* ======================= main ======================= */
static uint64_t parse_size(const char *s)
{
    char *e;
    double v = strtod(s, &e);
    uint64_t m = 1;
    if (*e == 'K' || *e == 'k')
        m = KiB;
    else if (*e == 'M' || *e == 'm')
        m = MiB;
    else if (*e == 'G' || *e == 'g')
        m = GiB;
    else if (*e) {
        fprintf(stderr, "pcow-bench: bad size '%s' (use e.g. 256M)\n", s);
        exit(2);
    }
    return (uint64_t)(v * (double)m);
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

int main(int argc, char **argv)
{
    const char *only = "floor,expansion,cow,steady,open,stripes";
    long np = sysconf(_SC_NPROCESSORS_ONLN);
    nthreads = np > 0 ? (int)np : 2;
    for (int i = 1; i < argc; i++) {
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
        else if (!strcmp(argv[i], "--size") && i + 1 < argc)
            steady_size = parse_size(argv[++i]) & ~(MiB - 1);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            nthreads = atoi(argv[++i]);
        else {
            fprintf(stderr,
                    "usage: pcow-bench [--json] [--quick] [--only floor,expansion,cow,steady,open,stripes] [--dir DIR]\n"
                    "                  [--disk-dir DIR] [--size BYTES[K|M|G]] [--threads N]\n");
            return 2;
        }
    }
    if (nthreads < 1 || nthreads > 64 || steady_size < 16 * MiB) {
        fprintf(stderr, "pcow-bench: --threads must be 1..64 and --size at least 16M\n");
        return 2;
    }
    const char *names[] = {"floor", "expansion", "cow", "steady", "open", "stripes"};
    for (const char *s = only; *s;) {
        size_t l = strcspn(s, ",");
        bool ok = false;
        for (int i = 0; i < 6; i++)
            ok |= strlen(names[i]) == l && !strncmp(s, names[i], l);
        if (!ok) {
            fprintf(stderr, "pcow-bench: unknown benchmark '%.*s' in --only (known: floor,expansion,cow,steady,open,stripes)\n",
                    (int)l, s);
            return 2;
        }
        s += l + (s[l] == ',');
    }
#define WANT(x) (strstr(only, x) != NULL)
    out = stdout;
    struct utsname u;
    uname(&u);
    struct statfs sf;
    const char *fs = statfs(dir, &sf) == 0 ? (sf.f_type == 0x01021994 ? "tmpfs" : sf.f_type == 0xEF53 ? "ext4" : "other") : "unknown";
    fprintf(out, "{\n  \"tool\": \"pcow-bench\",\n  \"schema\": 1,\n  \"host\": {\"kernel\":");
    jstr(u.release);
    fprintf(out, ",\"cpus\":%ld,\"dir\":", np);
    jstr(dir);
    fprintf(out, ",\"dir_fs\":\"%s\",\"threads\":%d,\"quick\":%s}", fs, nthreads, quick ? "true" : "false");
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
        target(&ft, "cow_whole_over_32k_2m_clusters", cow2m_whole_p50 / cow2m_small_p50, ">=", 3.0,
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
        jstr(errs[i]);
    }
    fprintf(out, "]\n}\n");
    return nerrs ? 1 : 0;
}
