/* Internals of libpcow-runtime: uffd helpers, histograms, the runtime object. */
#ifndef PCOW_RUNTIME_INTERNAL_H
#define PCOW_RUNTIME_INTERNAL_H

#include "pcow_runtime.h"

#include <linux/userfaultfd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/ioctl.h>

/* Newer than the Debian 12 (6.1) kernel headers. */
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14)
#endif
#ifndef _UFFDIO_POISON
#define _UFFDIO_POISON (0x08)
struct uffdio_poison {
    struct uffdio_range range;
#define UFFDIO_POISON_MODE_DONTWAKE ((__u64)1 << 0)
    __u64 mode;
    __s64 updated;
};
#define UFFDIO_POISON _IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)
#endif

/* ---- latency histogram: 16 log-linear sub-buckets per power of two (<= 3% error) ---- */
#define RT_HIST_BUCKETS 1008
struct rt_hist {
    _Atomic uint64_t count, sum, min, max;
    _Atomic uint64_t b[RT_HIST_BUCKETS];
};
void rt_hist_init(struct rt_hist *h);
void rt_hist_add(struct rt_hist *h, uint64_t ns);
void rt_hist_summary(const struct rt_hist *h, struct pcow_runtime_hist *out);
uint64_t rt_now_ns(void);
void rt_hist_json(FILE *f, const char *name, const struct pcow_runtime_hist *s);

/* ---- userfaultfd ---- */
/* Open a userfaultfd that also takes kernel-mode faults (never UFFD_USER_MODE_ONLY), first via
 * /dev/userfaultfd, then the syscall; negotiate `want` features (those the kernel lacks are
 * dropped; *got says what is on). Returns the fd or -errno with a message in err. */
int rt_uffd_open(uint64_t want, uint64_t *got, char *err, size_t errlen);
int rt_uffd_register(int uffd, void *addr, uint64_t len, uint64_t mode, uint64_t *ioctls);
/* UFFDIO_COPY len bytes; pages already present are skipped (EEXIST). mode: UFFDIO_COPY_MODE_*. */
int rt_uffd_copy(int uffd, void *dst, const void *src, uint64_t len, uint64_t mode, uint64_t page);
int rt_uffd_wake(int uffd, void *addr, uint64_t len);
int rt_uffd_poison(int uffd, void *addr, uint64_t len);


/* ---- the runtime object (runtime.c), shared by fault.c, prealloc.c, swap.c ---- */
#include <stdbool.h>
#include <sys/mman.h>

#ifndef MAP_SHARED_VALIDATE
#define MAP_SHARED_VALIDATE 0x03
#endif
#ifndef MAP_SYNC
#define MAP_SYNC 0x80000
#endif

#define NCLOCK 1024         /* striped per-cluster locks */
#define MAX_THREADS 64
#define DEFAULT_ALIGN (2ull << 20)
#define CFR_MIN (16u << 10) /* COW copies from this size use copy_file_range (see copy_lower) */

#define FALLOC_CHUNK (64u * 1024) /* pre-allocation's fallocate unit where a cluster's is slow, see allocate_clusters */
#define PREFILL_WAIT_MS 2000    /* map waits this long at most for the first pool batch */
#define FALLOC_SLOW_NS 50000ull  /* a whole-cluster fallocate slower than this holds the inode lock too long */

struct rt_thread {
    pcow_runtime *rt;
    pthread_t tid;
    uint8_t *buf; /* one cluster of scratch */
    uint64_t spare; /* a sparse cluster reserved ahead for the next fine-grained COW (0: none),
                       reserved after a wake, off the fault's path; released when the thread ends */
    bool took_sparse; /* the fault just served consumed a sparse cluster: reserve the next one */
    char msg[600]; /* detail of the fault being served when it fails */
};

struct pcow_runtime {
    pcow_image *img;
    bool own_img;
    uint8_t *base;
    uint64_t vsize, len, csize, ssize, unit, fill, nclusters, page;
    pcow_bitmap full_bits;
    uint32_t nsub, nfiles;
    int fds[PCOW_MAX_STRIPES];
    int uffd, evfd, eof_fd;
    uint64_t features;
    bool poison, dax;
    bool dax_fence; /* fs-dax on x86-64: a write that allocates nothing is made durable with a
                       fence, no fdatasync (see persist_dax in runtime.c) */
    bool mem_fs; /* every stripe file is on tmpfs/ramfs: persistence points are no-ops */
    int map_flags;
    uint64_t max_map;

    pthread_rwlock_t img_lock; /* pcow_image: write = any change, read = pcow_read */
    pthread_rwlock_t epoch;    /* read = serving a fault; write = swapping the range */
    pthread_mutex_t switch_lock;
    pthread_mutex_t clocks[NCLOCK];

    pthread_mutex_t defer_lock;
    struct uffd_msg *defer;
    size_t ndefer, capdefer;
    _Atomic size_t ndefer_hint;

    _Atomic bool stop;
    uint32_t nthreads;
    struct rt_thread th[MAX_THREADS];

    /* pre-allocation */
    uint32_t depth;
    pthread_mutex_t pool_lock;
    pthread_cond_t pool_cv;
    pthread_mutex_t alloc_lock; /* held by the pool thread while it allocates, by relieve_space */
    _Atomic bool pool_paused;   /* the file system ran full: no pre-allocation until an expansion
                                   finds space again */
    uint64_t *pool;             /* reserved clusters, in runs of PCOW_RUN_SIZE (see rt_take_cluster) */
    uint32_t pool_n;
    uint64_t falloc_piece;      /* bytes per fallocate call of a refill (see allocate_clusters) */
    bool pool_runs;             /* the pool hands out 2 MiB runs (see pick_cluster); set at map */
    bool pool_stop, pool_running;
    bool pool_tried;            /* the pool thread finished its first refill (filled or failed) */
    pthread_t pool_tid;

    uint8_t *zero;
    /* fs-dax with a fence and pre-allocation: bit vc is set while vc's active-layer cluster is
     * one this mapping took written (a pool cluster): more units copied into it later allocate
     * nothing, so a fence makes them durable (else fdatasync). Cleared at every range swap. */
    _Atomic uint64_t *written;

    _Atomic uint64_t c_faults, c_read_zero, c_read_lower, c_expansions, c_cows, c_cow_bytes, c_wp, c_stale,
        c_deferred, c_errors, c_pool_hits, c_pool_misses, c_pool_refills, c_populated, c_mmaps;
    struct rt_hist h_fault, h_exp, h_cow, h_read;
#ifdef RT_STEP_TIMING
    /* `make STEP_TIMING=1`: time spent per step of expansions and COWs (ns), printed at unmap
     * (p50 and mean): take, copy (+ its persist), entry, mmap, wake */
    struct rt_hist st[5];
#endif

    pthread_mutex_t err_lock;
    char err[1024];
    char errcopy[1024];
};

#define INC(x) atomic_fetch_add_explicit(&rt->x, 1, memory_order_relaxed)
#define ADD(x, n) atomic_fetch_add_explicit(&rt->x, (n), memory_order_relaxed)

#ifdef RT_STEP_TIMING
#define STEP(t) uint64_t t = rt_now_ns()
#define STEP_ADD(i, d) rt_hist_add(&rt->st[i], (d))
#else
#define STEP(t) (void)0
#define STEP_ADD(i, d) (void)0
#endif

/* runtime.c */
int rt_err(pcow_runtime *rt, int e, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int rt_persist_files(pcow_runtime *rt);
/* Make data just written into a data cluster durable: written says the cluster's blocks were
 * written and made durable before (a zeroed pool cluster on fs-dax), so the copy allocated
 * nothing and, on fs-dax, a fence is enough; else fdatasync (rt_persist_files). */
int rt_persist_data(pcow_runtime *rt, bool written);
/* fs-dax: write zeros over [off, off+len) of stripe file f (allocated or unwritten blocks become
 * written ones; see rt_take_cluster). 0 or -errno. */
int rt_zero_file(pcow_runtime *rt, uint32_t f, uint64_t off, uint64_t len);
/* Map [at, at+len) of the range from the image at logical address addr (inside one stripe unit). */
int rt_map_file(pcow_runtime *rt, uint8_t *at, uint64_t len, uint64_t addr);
int rt_map_extents(pcow_runtime *rt);
int rt_new_placeholder(pcow_runtime *rt, uint64_t align, uint8_t **out);
/* fault.c */
void *rt_handler_main(void *arg);
/* prealloc.c */
void *rt_pool_main(void *arg);
int rt_take_cluster(pcow_runtime *rt, struct rt_thread *th, uint64_t vc, uint64_t *addr, bool sparse, bool *written);
bool rt_relieve_space(pcow_runtime *rt);
/* Wait (at most PREFILL_WAIT_MS) until the pool thread's first refill is done. */
void rt_pool_wait_first(pcow_runtime *rt);
/* After the pool thread stopped: give the pool's clusters back and the image's unreferenced
 * clusters (pcow_reclaim). Returns 0 or -errno (message in rt->err). */
int rt_pool_return(pcow_runtime *rt);

/* Runs of set bits of the image's sub-unit bitmap, called as fn(first, count). */
#define FOR_RUNS(bits, nsub, first, cnt, body)                                                      \
    for (uint32_t first = 0; first < (nsub); first++) {                                              \
        if (!pcow_bitmap_test(&(bits), first))                                                       \
            continue;                                                                                \
        uint32_t cnt = 1;                                                                            \
        while (first + cnt < (nsub) && pcow_bitmap_test(&(bits), first + cnt))                       \
            cnt++;                                                                                   \
        body;                                                                                        \
        first += cnt;                                                                                \
    }


#endif
