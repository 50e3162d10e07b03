/* pcow-bench's measurements: each case as a function both modes call (case_mode.c with one
 * case's parameters, suite.c with its fixed sets), and the helpers they share. */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <sys/vfs.h>
#include <unistd.h>

void jstr(FILE *f, const char *s)
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

void hist_obj(FILE *f, const struct pcow_runtime_hist *s)
{
    fprintf(f,
            "{\"count\":%" PRIu64 ",\"p50_ns\":%" PRIu64 ",\"p90_ns\":%" PRIu64 ",\"p99_ns\":%" PRIu64
            ",\"mean_ns\":%.1f,\"min_ns\":%" PRIu64 ",\"max_ns\":%" PRIu64 "}",
            s->count, s->p50_ns, s->p90_ns, s->p99_ns, s->mean_ns, s->min_ns, s->max_ns);
}

void path_in(char *o, size_t n, const char *d, const char *name)
{
    snprintf(o, n, "%s/pcow-bench-%d-%s", d, (int)getpid(), name);
}

void rm_image(const char *p)
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
char *runtime_json(pcow_runtime *rt)
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
long vmas_in(const void *a, uint64_t len)
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
int floor_run(const char *tmpdir, bool use_mmap, bool paced, int n, struct rt_hist *h, char *err, size_t errlen)
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


int measure_floor(const char *tmpdir, int n, bool want_copy, bool want_mmap, struct floor_result *o, char *err,
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
    pcow_runtime *rt;
    if (pcow_runtime_open(img, 0, &p->rt, &rt, err, errlen) < 0)
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
int run_expansion(const char *img, const struct touch_params *p, struct touch_result *r, char *err,
                         size_t errlen)
{
    struct pcow_create_opts co = {.virtual_size = p->clusters * p->csize, .cluster_size = (uint32_t)p->csize};
    if (pcow_create(img, &co, err, errlen) < 0)
        return -1;
    return touch_case(img, p, false, r, err, errlen);
}

/* Fill p->clusters clusters, snapshot them ("base"), then time the first write to each (a
 * copy-on-write of the unit holding a random offset, or of the whole cluster). */
int run_cow(const char *img, const struct touch_params *p, struct touch_result *r, char *err, size_t errlen)
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
const char *const rw_names[4] = {"randread", "randwrite", "read", "write"};
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
double run_wl(uint8_t *m, uint64_t size, enum rwkind w, uint64_t bs, int n, double secs)
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

int cmp_d(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

/* A fully allocated pcow image mapped by the runtime and/or a raw file mmap, same size. */

int steady_teardown(struct steady_env *e, char *err, size_t errlen)
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
int steady_setup(struct steady_env *e, const char *img, const char *rawpath, uint64_t size, uint64_t csize,
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
        /* 2 MiB aligned, as QEMU maps a memory backend (QEMU_VMALLOC_ALIGN) and as the runtime
         * aligns its range: a kernel-chosen address may forbid PMD-sized mappings of large
         * folios, which would measure the address, not the image format */
        void *m = MAP_FAILED;
        uint8_t *res = e->rfd >= 0 ? mmap(NULL, size + 2 * MiB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
                                   : MAP_FAILED;
        if (res != MAP_FAILED) {
            uint8_t *at = (uint8_t *)(((uintptr_t)res + 2 * MiB - 1) & ~(uintptr_t)(2 * MiB - 1));
            if (at > res)
                munmap(res, (size_t)(at - res));
            if (res + size + 2 * MiB > at + size)
                munmap(at + size, (size_t)(res + size + 2 * MiB - (at + size)));
            m = mmap(at, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, e->rfd, 0);
            if (m == MAP_FAILED)
                munmap(at, size);
        }
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
void steady_rounds(const struct steady_env *e, enum rwkind w, uint64_t bs, int threads, double secs, int rounds,
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


/* Build an image of vsize with n allocated clusters at img, then time pcow_open and
 * pcow_runtime_map and count the VMAs of the range. */
int run_open(const char *img, uint64_t vsize, uint32_t cs, uint64_t n, struct open_result *o, char *err,
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

/* An image of size striped over k files (stripe unit max(2 MiB, cluster): a cluster-sized unit
 * would cost one VMA per cluster); allocate everything by first touch, then sequential write
 * and read bandwidth with threads. */
int run_stripes(const char *img, uint64_t size, uint32_t cs, uint32_t k, int threads, double secs,
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


/* ======================= shared ======================= */
int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("pcow-bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 2;
}

const char *fs_name(const char *d)
{
    struct statfs sf;
    if (statfs(d, &sf) != 0)
        return "unknown";
    return sf.f_type == 0x01021994 ? "tmpfs" : sf.f_type == 0xEF53 ? "ext4" : sf.f_type == 0x58465342 ? "xfs" : "other";
}

void host_json(FILE *f, const char *d)
{
    struct utsname u;
    uname(&u);
    fprintf(f, "{\"kernel\":");
    jstr(f, u.release);
    fprintf(f, ",\"cpus\":%ld,\"dir\":", sysconf(_SC_NPROCESSORS_ONLN));
    jstr(f, d);
    fprintf(f, ",\"dir_fs\":\"%s\"}", fs_name(d));
}

void floor_json(FILE *f, const struct floor_result *fr)
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


/* The distribution-free 95% confidence interval of a median of n values: the k-th smallest and
 * the k-th largest, k the largest rank with P(Binomial(n, 1/2) < k) <= 2.5%. Robust to the
 * heavy tail a shared host gives (a round that lost its core). 0 when n < 6 (no k reaches 95%). */
static int median_ci_rank(int n)
{
    double cdf = 0;
    int k = 0;
    for (int j = 0; j < n; j++) {
        cdf += exp(lgamma(n + 1.0) - lgamma(j + 1.0) - lgamma(n - j + 1.0) - n * log(2.0));
        if (cdf > 0.025)
            break;
        k = j + 1;
    }
    return k;
}

void ratio_stats(const double *pcow, const double *raw, int n, struct ratio_stats *o)
{
    double *r = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1)), sum = 0;
    if (!r) {
        *o = (struct ratio_stats){.n = 0, .median = NAN, .gmean = NAN, .ci95_lo = NAN, .ci95_hi = NAN};
        return;
    }
    for (int k = 0; k < n; k++) {
        r[k] = pcow[k] / raw[k];
        sum += log(r[k]);
    }
    qsort(r, (size_t)n, sizeof(double), cmp_d);
    o->n = n;
    o->median = n ? (n % 2 ? r[n / 2] : (r[n / 2 - 1] + r[n / 2]) / 2) : NAN;
    o->min = n ? r[0] : NAN;
    o->max = n ? r[n - 1] : NAN;
    o->gmean = n ? exp(sum / n) : NAN;
    int k = median_ci_rank(n);
    o->ci95_lo = k ? r[k - 1] : NAN;
    o->ci95_hi = k ? r[n - k] : NAN;
    free(r);
}
