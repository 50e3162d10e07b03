/* floor-variants: what a 4 KiB COW's fault shape costs without any pcow code. pcow-bench's
 * floor.mmap_fixed_wake is a READ fault whose page is mapped next to the previous one (the new
 * file mapping merges with its neighbour: one VMA split). A 4 KiB COW is a WRITE fault at a
 * random place in a cluster (two splits, no merge) of a placeholder that has an anon_vma (its
 * first write fault or UFFDIO_COPY creates one) and is registered MISSING|WP, and it copies
 * the unit (pread + pwrite) before the mmap. Each variant below adds one of those, with the
 * same pacing (100 us between touches) and a bare handler (poll, read, [copy], mmap, wake).
 *
 *   build/floor-variants [touches] [rounds]   prints the median over rounds of each variant's p50
 * Variants run interleaved, round by round (the host is shared and noisy). Files on /dev/shm. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096ull
#define CL (64 * 1024ull)

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

struct variant {
    const char *name;
    bool write, random, anon_vma, wp, copy;
};
static const struct variant variants[] = {
    {"read, next page (= floor.mmap_fixed_wake)", false, false, false, false, false},
    {"read, random page of a cluster (2 splits)", false, true, false, false, false},
    {"write, random page", true, true, false, false, false},
    {"write, random page, anon_vma + MISSING|WP", true, true, true, true, false},
    {"... + 4 KiB pread+pwrite copy (a bare COW)", true, true, true, true, true},
};
#define NV (sizeof variants / sizeof variants[0])

struct ctx {
    int uffd, dst, src;
    uint8_t *base;
    bool copy;
    uint8_t buf[PAGE];
};

static void die(const char *what)
{
    fprintf(stderr, "floor-variants: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void *handler(void *arg)
{
    struct ctx *c = arg;
    for (;;) {
        struct pollfd p = {.fd = c->uffd, .events = POLLIN};
        if (poll(&p, 1, -1) < 0 && errno != EINTR)
            die("poll");
        struct uffd_msg m;
        if (read(c->uffd, &m, sizeof m) != sizeof m || m.event != UFFD_EVENT_PAGEFAULT)
            continue;
        uint64_t a = m.arg.pagefault.address & ~(PAGE - 1), off = a - (uintptr_t)c->base;
        if (off == 0) { /* page 0: stop (resolved with a zero page, which wakes the toucher) */
            struct uffdio_zeropage z = {.range = {a, PAGE}};
            if (ioctl(c->uffd, UFFDIO_ZEROPAGE, &z) < 0)
                die("UFFDIO_ZEROPAGE");
            return NULL;
        }
        if (c->copy && (pread(c->src, c->buf, PAGE, (off_t)off) != PAGE || pwrite(c->dst, c->buf, PAGE, (off_t)off) != PAGE))
            die("copy");
        if (mmap((void *)(uintptr_t)a, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, c->dst, (off_t)off) == MAP_FAILED)
            die("mmap");
        struct uffdio_range r = {a, PAGE};
        if (ioctl(c->uffd, UFFDIO_WAKE, &r) < 0)
            die("UFFDIO_WAKE");
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double run(const struct variant *v, int n)
{
    struct ctx c = {.copy = v->copy};
    c.uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
    if (c.uffd < 0)
        die("userfaultfd");
    struct uffdio_api api = {.api = UFFD_API, .features = v->wp ? UFFD_FEATURE_PAGEFAULT_FLAG_WP : 0};
    if (ioctl(c.uffd, UFFDIO_API, &api) < 0)
        die("UFFDIO_API");
    uint64_t len = (uint64_t)(n + 2) * CL;
    c.base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (c.base == MAP_FAILED)
        die("mmap placeholder");
    madvise(c.base, len, MADV_NOHUGEPAGE);
    struct uffdio_register reg = {.range = {(uintptr_t)c.base, len},
                                  .mode = UFFDIO_REGISTER_MODE_MISSING | (v->wp ? UFFDIO_REGISTER_MODE_WP : 0)};
    if (ioctl(c.uffd, UFFDIO_REGISTER, &reg) < 0)
        die("UFFDIO_REGISTER");
    c.dst = memfd_create("floor-dst", MFD_CLOEXEC); /* tmpfs, like /dev/shm */
    c.src = memfd_create("floor-src", MFD_CLOEXEC);
    if (c.dst < 0 || c.src < 0 || fallocate(c.src, 0, 0, (off_t)len) < 0)
        die("memfd");
    if (v->copy ? ftruncate(c.dst, (off_t)len) < 0 : fallocate(c.dst, 0, 0, (off_t)len) < 0)
        die("memfd size");
    if (v->anon_vma) { /* an anonymous page somewhere in the placeholder, as read fills leave */
        static uint8_t z[PAGE];
        struct uffdio_copy cp = {.dst = (uintptr_t)c.base + len - PAGE, .src = (uintptr_t)z, .len = PAGE};
        if (ioctl(c.uffd, UFFDIO_COPY, &cp) < 0)
            die("UFFDIO_COPY");
    }
    pthread_t t;
    if (pthread_create(&t, NULL, handler, &c) != 0)
        die("pthread_create");
    uint64_t *lat = malloc(sizeof *lat * (size_t)n), x = 88172645463325252ull;
    if (!lat)
        die("malloc");
    for (int i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint64_t off = v->random ? (uint64_t)(i + 1) * CL + (x % CL & ~(PAGE - 1)) : (uint64_t)(i + 1) * PAGE;
        for (uint64_t end = now_ns() + 100000; now_ns() < end;) {
        }
        uint64_t t0 = now_ns();
        if (v->write)
            *(volatile uint64_t *)(c.base + off) = (uint64_t)i;
        else
            (void)*(volatile uint64_t *)(c.base + off);
        lat[i] = now_ns() - t0;
    }
    (void)*(volatile uint8_t *)c.base; /* stop the handler */
    pthread_join(t, NULL);
    qsort(lat + 16, (size_t)n - 16, sizeof *lat, cmp_u64);
    double p50 = (double)lat[16 + (n - 16) / 2] / 1e3;
    free(lat);
    munmap(c.base, len);
    close(c.uffd);
    close(c.dst);
    close(c.src);
    return p50;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 1500, rounds = argc > 2 ? atoi(argv[2]) : 7;
    if (n < 32 || rounds < 1) {
        fprintf(stderr, "usage: floor-variants [touches >= 32] [rounds >= 1]\n");
        return 2;
    }
    double *p = calloc(NV * (size_t)rounds, sizeof *p);
    if (!p)
        die("calloc");
    for (int r = 0; r < rounds; r++)
        for (size_t v = 0; v < NV; v++)
            p[v * (size_t)rounds + (size_t)r] = run(&variants[v], n);
    double floor_med = 0;
    for (size_t v = 0; v < NV; v++) {
        double *q = p + v * (size_t)rounds;
        for (int i = 1; i < rounds; i++) /* insertion sort: a few values */
            for (int j = i; j > 0 && q[j - 1] > q[j]; j--) {
                double tmp = q[j];
                q[j] = q[j - 1];
                q[j - 1] = tmp;
            }
        double med = rounds % 2 ? q[rounds / 2] : (q[rounds / 2 - 1] + q[rounds / 2]) / 2;
        if (v == 0)
            floor_med = med;
        printf("%-46s p50 median %6.1f us  (%.2fx; min %.1f, max %.1f over %d rounds)\n", variants[v].name, med,
               med / floor_med, q[0], q[rounds - 1], rounds);
    }
    free(p);
    return 0;
}
