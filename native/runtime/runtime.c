/* The pcow runtime: an image's virtual size mapped at an aligned address, served by
 * userfaultfd handler threads (expansion, copy-on-write, zero/lower reads), a pre-allocation
 * thread, snapshot/rollback by an atomic swap of the range, counters and histograms. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

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

#define FALLOC_CHUNK (64u * 1024) /* pre-allocation's fallocate unit, see allocate_clusters */

struct rt_thread {
    pcow_runtime *rt;
    pthread_t tid;
    uint8_t *buf; /* one cluster of scratch */
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
    uint64_t *pool;
    uint32_t pool_n;
    bool pool_stop, pool_running;
    pthread_t pool_tid;

    uint8_t *zero;

    _Atomic uint64_t c_faults, c_read_zero, c_read_lower, c_expansions, c_cows, c_cow_bytes, c_wp, c_stale,
        c_deferred, c_errors, c_pool_hits, c_pool_misses, c_pool_refills, c_populated, c_mmaps;
    struct rt_hist h_fault, h_exp, h_cow, h_read;

    pthread_mutex_t err_lock;
    char err[1024];
    char errcopy[1024];
};

#define INC(x) atomic_fetch_add_explicit(&rt->x, 1, memory_order_relaxed)
#define ADD(x, n) atomic_fetch_add_explicit(&rt->x, (n), memory_order_relaxed)

static int rt_err(pcow_runtime *rt, int e, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int rt_err(pcow_runtime *rt, int e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&rt->err_lock);
    int n = snprintf(rt->err, sizeof rt->err, "%s: ", pcow_path(rt->img));
    if (n < 0 || (size_t)n >= sizeof rt->err)
        n = 0;
    vsnprintf(rt->err + n, sizeof rt->err - (size_t)n, fmt, ap);
    pthread_mutex_unlock(&rt->err_lock);
    va_end(ap);
    return e > 0 ? -e : e;
}

/* rt->err without its "<path>: " prefix (map adds the prefix itself). */
static const char *err_body(pcow_runtime *rt)
{
    size_t n = strlen(pcow_path(rt->img));
    return strlen(rt->err) >= n + 2 ? rt->err + n + 2 : rt->err;
}

const char *pcow_runtime_errmsg(pcow_runtime *rt)
{
    pthread_mutex_lock(&rt->err_lock);
    memcpy(rt->errcopy, rt->err, sizeof rt->err);
    pthread_mutex_unlock(&rt->err_lock);
    return rt->errcopy;
}

void *pcow_runtime_addr(const pcow_runtime *rt) { return rt->base; }
uint64_t pcow_runtime_size(const pcow_runtime *rt) { return rt->vsize; }
uint64_t pcow_runtime_length(const pcow_runtime *rt) { return rt->len; }
pcow_image *pcow_runtime_image(const pcow_runtime *rt) { return rt->img; }

long pcow_runtime_count_vmas(void)
{
    FILE *f = fopen("/proc/self/maps", "re");
    if (!f)
        return -errno;
    long n = 0;
    int c;
    while ((c = getc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

static uint64_t read_max_map_count(void)
{
    FILE *f = fopen("/proc/sys/vm/max_map_count", "re");
    unsigned long long v = 65530;
    if (f) {
        if (fscanf(f, "%llu", &v) != 1)
            v = 65530;
        fclose(f);
    }
    return v;
}

static int persist_files(pcow_runtime *rt)
{
    if (rt->mem_fs)
        return 0; /* tmpfs/ramfs: no medium behind the page cache; fdatasync would be a no-op syscall */
    for (uint32_t i = 0; i < rt->nfiles; i++) {
        while (fdatasync(rt->fds[i]) < 0) {
            if (errno != EINTR)
                return -errno;
        }
    }
    return 0;
}

/* libpcow's persist hook on a memory file system: nothing can be made more durable. */
static int persist_noop(void *ctx, int fd, uint64_t off, uint64_t len)
{
    (void)ctx;
    (void)fd;
    (void)off;
    (void)len;
    return 0;
}

/* Are all stripe files on a memory-only file system (tmpfs, ramfs)? Decided once at map time. */
static bool files_on_mem_fs(pcow_runtime *rt)
{
    for (uint32_t i = 0; i < rt->nfiles; i++) {
        struct statfs sf;
        if (fstatfs(rt->fds[i], &sf) < 0 || (sf.f_type != TMPFS_MAGIC && sf.f_type != RAMFS_MAGIC))
            return false;
    }
    return true;
}

/* Map [at, at+len) of the range from the image at logical address addr (inside one stripe
 * unit, so in one file). */
static int map_file(pcow_runtime *rt, uint8_t *at, uint64_t len, uint64_t addr)
{
    uint32_t f;
    uint64_t off;
    pcow_addr_to_file(rt->img, addr, &f, &off);
    /* no MAP_POPULATE: measured, populating a 64 KiB cluster here costs ~3x the later fault */
    void *p = mmap(at, len, PROT_READ | PROT_WRITE, rt->map_flags | MAP_FIXED, rt->fds[f], (off_t)off);
    if (p == MAP_FAILED)
        return -errno;
    INC(c_mmaps);
    return 0;
}

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

/* VMAs the active layer's data needs in the range: file pieces plus placeholder pieces. */
static uint64_t count_pieces(pcow_runtime *rt)
{
    uint64_t pieces = 0, vc = 0;
    bool last_file = false;
    struct pcow_extent e;
    while (pcow_extent_next(rt->img, vc, &e) == 1) {
        if (!e.allocated) {
            pieces += last_file || vc == 0;
            last_file = false;
        } else if (!e.partial) {
            pieces++;
            last_file = true;
        } else {
            struct pcow_mapping m;
            pcow_lookup(rt->img, e.vc, &m);
            /* owned runs alternate with placeholder runs */
            uint32_t runs = 0;
            FOR_RUNS(m.bitmap, rt->nsub, s, n, runs++);
            pieces += 2 * runs + 1;
            last_file = false;
        }
        vc = e.vc + e.count;
    }
    return pieces ? pieces : 1;
}

/* Map every active-layer extent over the placeholder. */
static int map_extents(pcow_runtime *rt)
{
    uint64_t vc = 0;
    struct pcow_extent e;
    while (pcow_extent_next(rt->img, vc, &e) == 1) {
        if (e.allocated && !e.partial) {
            /* one mmap per extent: extents are file-contiguous in one stripe file */
            uint8_t *at = rt->base + e.vc * rt->csize;
            void *p = mmap(at, e.count * rt->csize, PROT_READ | PROT_WRITE, rt->map_flags | MAP_FIXED,
                           rt->fds[e.file], (off_t)e.file_off);
            if (p == MAP_FAILED)
                return rt_err(rt, errno, "cannot map clusters %" PRIu64 "..%" PRIu64 ": %s", e.vc,
                              e.vc + e.count - 1, strerror(errno));
            INC(c_mmaps);
        } else if (e.allocated) {
            struct pcow_mapping m;
            pcow_lookup(rt->img, e.vc, &m);
            int r = 0;
            FOR_RUNS(m.bitmap, rt->nsub, s, n, {
                if (r == 0)
                    r = map_file(rt, rt->base + e.vc * rt->csize + (uint64_t)s * rt->ssize, (uint64_t)n * rt->ssize,
                                 m.addr + (uint64_t)s * rt->ssize);
            });
            if (r < 0)
                return rt_err(rt, r, "cannot map cluster %" PRIu64 ": %s", e.vc, strerror(-r));
        }
        vc = e.vc + e.count;
    }
    return 0;
}

/* A fresh placeholder (anonymous, registered MISSING|WP) of len bytes at a kernel-chosen
 * address, or at `at` with MAP_FIXED_NOREPLACE semantics left to the caller. */
static int new_placeholder(pcow_runtime *rt, uint64_t align, uint8_t **out)
{
    uint64_t span = rt->len + align;
    uint8_t *p = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return rt_err(rt, errno, "cannot reserve %" PRIu64 " bytes of address space: %s", span, strerror(errno));
    uintptr_t a = ((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1);
    if (a > (uintptr_t)p)
        munmap(p, a - (uintptr_t)p);
    uintptr_t end = (uintptr_t)p + span, want_end = a + rt->len;
    if (end > want_end)
        munmap((void *)want_end, end - want_end);
    /* THP would fault whole huge pages; uffd serves 4 KiB pages */
    (void)madvise((void *)a, rt->len, MADV_NOHUGEPAGE);
    uint64_t ioctls = 0;
    int r = rt_uffd_register(rt->uffd, (void *)a, rt->len, UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP,
                             &ioctls);
    if (r < 0) {
        munmap((void *)a, rt->len);
        return rt_err(rt, r, "cannot register the range with userfaultfd (MISSING|WP): %s", strerror(-r));
    }
    if (!(ioctls & (1ull << _UFFDIO_COPY)) || !(ioctls & (1ull << _UFFDIO_WRITEPROTECT))) {
        munmap((void *)a, rt->len);
        return rt_err(rt, EOPNOTSUPP, "userfaultfd offers no UFFDIO_COPY/UFFDIO_WRITEPROTECT on anonymous memory");
    }
    if (rt->poison && !(ioctls & (1ull << _UFFDIO_POISON)))
        rt->poison = false;
    *out = (uint8_t *)a;
    return 0;
}

/* ---- errors reach the faulting thread as a memory error ---- */
static void fail_fault(pcow_runtime *rt, struct rt_thread *th, uint8_t *page, int e, const char *what)
{
    INC(c_errors);
    rt_err(rt, e, "cannot serve a fault at range offset 0x%" PRIx64 " (%s): %s; the access gets a memory error",
           (uint64_t)(page - rt->base), what, th->msg[0] ? th->msg : strerror(e < 0 ? -e : e));
    if (rt->poison) {
        int r = rt_uffd_poison(rt->uffd, page, rt->page);
        if (r == -EEXIST) {
            /* a write-protected page is present: drop it (we hold its cluster lock, so nobody
             * places it again before the poison) */
            (void)madvise(page, rt->page, MADV_DONTNEED);
            r = rt_uffd_poison(rt->uffd, page, rt->page);
        }
        if (r == 0)
            return;
    }
    /* Fallback: a shared page beyond the end of an empty memfd raises SIGBUS in user mode and
     * EFAULT in kernel mode, like a poisoned page. */
    if (mmap(page, rt->page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, rt->eof_fd, 0) == MAP_FAILED) {
        /* Last resort: inaccessible (SIGSEGV / EFAULT), still never a hang */
        (void)mmap(page, rt->page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    }
    rt_uffd_wake(rt->uffd, page, rt->page);
}

/* ---- pre-allocation ---- */
/* Allocate (zero-filled, no ENOSPC later) n clusters claimed at addr that nothing references
 * yet, so no image lock is needed. *got = how many from the first are allocated. A file system
 * without fallocate leaves them sparse, as pcow_reserve does. */
static int allocate_clusters(pcow_runtime *rt, uint64_t addr, uint32_t n, uint32_t *got)
{
    for (*got = 0; *got < n; (*got)++) {
        uint32_t f;
        uint64_t off;
        pcow_addr_to_file(rt->img, addr + (uint64_t)*got * rt->csize, &f, &off);
        /* In FALLOC_CHUNK pieces: fallocate holds the file's inode lock for the whole call,
         * and a fault's entry write (a pwrite to the same file) waits for it. Measured at
         * 2 MiB clusters (tmpfs): one fallocate per cluster held it ~250 us, and expansion
         * service p50 with pre-allocation on stayed at that (rwsem_down_write_slowpath). */
        for (uint64_t c = 0; c < rt->csize; c += FALLOC_CHUNK) {
            uint64_t l = rt->csize - c < FALLOC_CHUNK ? rt->csize - c : FALLOC_CHUNK;
            if (fallocate(rt->fds[f], 0, (off_t)(off + c), (off_t)l) < 0) {
                if (errno == EOPNOTSUPP)
                    break;
                return -errno;
            }
        }
    }
    return 0;
}

static void *pool_main(void *arg)
{
    pcow_runtime *rt = arg;
    pthread_setname_np(pthread_self(), "pcow-prealloc");
    /* Background work at a low weight (nice 10), not SCHED_IDLE: measured here, an idle-class
     * thread starved as soon as any other process was runnable (70-95% pool misses under the
     * load of a shared 2-core host), and each miss costs a foreground fallocate + persist. At
     * nice 10 it gets ~10% of a CPU against one nice-0 thread, far more than a refill needs. */
    (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10);
    uint64_t pend_addr = 0; /* clusters claimed but not allocated yet (an earlier failure) */
    uint32_t pend_n = 0;
    pthread_mutex_lock(&rt->pool_lock);
    bool filling = true;
    while (!rt->pool_stop) {
        /* refill in batches: from the low watermark (half) back to full */
        if (rt->pool_n >= rt->depth || (!filling && rt->pool_n > rt->depth / 2)) {
            filling = false;
            pthread_cond_wait(&rt->pool_cv, &rt->pool_lock);
            continue;
        }
        filling = true;
        uint32_t need = rt->depth - rt->pool_n;
        pthread_mutex_unlock(&rt->pool_lock);
        int r = 0;
        pthread_mutex_lock(&rt->alloc_lock);
        if (atomic_load(&rt->pool_paused)) {
            r = -ENOSPC; /* what is claimed and not allocated stays a hole, read as zeros */
            pend_n = 0;
        } else if (pend_n == 0) {
            /* Claim the clusters under the image lock (a file extension: cheap), allocate them
             * outside it. Holding the lock across the fallocate of a whole batch made every
             * fault that arrived during a refill wait for it: expansion p99 240-320 us with
             * 100% pool hits, vs ~50 us with pre-allocation off. */
            pthread_rwlock_wrlock(&rt->img_lock);
            r = pcow_reserve_sparse(rt->img, need, &pend_addr);
            pthread_rwlock_unlock(&rt->img_lock); /* on failure a foreground expansion reports it */
            if (r == 0)
                pend_n = need;
        }
        uint32_t got = 0;
        if (r == 0)
            r = allocate_clusters(rt, pend_addr, pend_n, &got);
        pthread_mutex_unlock(&rt->alloc_lock);
        if (got > 0 && persist_files(rt) < 0) /* reserved space durable before anything points at it */
            got = 0;
        uint64_t addr = pend_addr;
        /* what could not be allocated (ENOSPC, ...) is retried next time, not claimed anew:
         * a full disk must not grow the file by a batch per attempt */
        pend_addr += (uint64_t)got * rt->csize;
        pend_n -= got;
        pthread_mutex_lock(&rt->pool_lock);
        if (got > 0) {
            INC(c_pool_refills);
            for (uint32_t i = 0; i < got; i++)
                rt->pool[rt->pool_n++] = addr + (uint64_t)i * rt->csize;
        }
        if (r < 0 || pend_n > 0) {
            /* back off, then try again */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 50 * 1000 * 1000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&rt->pool_cv, &rt->pool_lock, &ts);
        }
    }
    pthread_mutex_unlock(&rt->pool_lock);
    return NULL;
}

/* A reserved, zeroed, durable cluster for virtual cluster vc: from the pool (the one that
 * continues a neighbour's file run, so the kernel merges the mappings) or reserved now.
 * sparse: the caller writes every byte it maps with pwrite first (fine-grained COW), so the
 * cluster is not fallocated (zero-filled): only the file is extended, and the partial cluster
 * takes the space of the sub-units it owns. */
static int take_cluster(pcow_runtime *rt, struct rt_thread *th, uint64_t vc, uint64_t *addr, bool sparse)
{
    /* sparse clusters never come from the pool: a fallocated cluster would hold the whole
     * cluster's space for the few sub-units a partial cluster owns */
    if (rt->depth && !sparse) {
        uint64_t want[2] = {0, 0};
        struct pcow_mapping m;
        if (vc > 0 && pcow_lookup(rt->img, vc - 1, &m) == 0 && m.depth == 0 && !m.partial)
            want[0] = m.addr + rt->csize;
        if (vc + 1 < rt->nclusters && pcow_lookup(rt->img, vc + 1, &m) == 0 && m.depth == 0 && !m.partial)
            want[1] = m.addr - rt->csize;
        pthread_mutex_lock(&rt->pool_lock);
        if (rt->pool_n) {
            uint32_t pick = 0;
            for (uint32_t i = 0; i < rt->pool_n; i++)
                if (rt->pool[i] == want[0] || rt->pool[i] == want[1]) {
                    pick = i;
                    break;
                }
            *addr = rt->pool[pick];
            memmove(&rt->pool[pick], &rt->pool[pick + 1], (rt->pool_n - pick - 1) * sizeof *rt->pool);
            rt->pool_n--;
            if (rt->pool_n <= rt->depth / 2) /* the refill starts at the low watermark: no futex call before */
                pthread_cond_signal(&rt->pool_cv);
            pthread_mutex_unlock(&rt->pool_lock);
            INC(c_pool_hits);
            return 0;
        }
        pthread_cond_signal(&rt->pool_cv);
        pthread_mutex_unlock(&rt->pool_lock);
        INC(c_pool_misses);
    }
    pthread_rwlock_wrlock(&rt->img_lock);
    int r = sparse ? pcow_reserve_sparse(rt->img, 1, addr) : pcow_reserve(rt->img, 1, addr);
    if (r < 0)
        snprintf(th->msg, sizeof th->msg, "%s", pcow_errmsg(rt->img));
    pthread_rwlock_unlock(&rt->img_lock);
    if (r == 0 && !sparse)
        r = persist_files(rt); /* sparse: the size change is made durable with the copied data */
    if (r == 0 && !sparse && atomic_load(&rt->pool_paused)) {
        /* space again: pre-allocation resumes */
        atomic_store(&rt->pool_paused, false);
        pthread_mutex_lock(&rt->pool_lock);
        pthread_cond_signal(&rt->pool_cv);
        pthread_mutex_unlock(&rt->pool_lock);
    }
    return r;
}

/* The file system is full while the pool holds clusters: an expansion or COW must not fail
 * with ENOSPC (its L2 table, bitmap record or copied data finding no space) because
 * pre-allocation took the space. Pause pre-allocation and give up to RELIEF pool clusters back
 * to the file system (pcow_release: unreferenced holes, free space for check). True if any. */
#define RELIEF 2
static bool relieve_space(pcow_runtime *rt)
{
    if (!rt->depth)
        return false;
    pthread_mutex_lock(&rt->alloc_lock); /* no pool allocation in flight takes the space back */
    atomic_store(&rt->pool_paused, true);
    uint64_t give[RELIEF];
    uint32_t n = 0;
    pthread_mutex_lock(&rt->pool_lock);
    while (n < RELIEF && rt->pool_n > 0)
        give[n++] = rt->pool[--rt->pool_n];
    pthread_mutex_unlock(&rt->pool_lock);
    uint32_t freed = 0;
    pthread_rwlock_wrlock(&rt->img_lock);
    for (uint32_t i = 0; i < n; i++)
        freed += pcow_release(rt->img, give[i], 1) == 0;
    pthread_rwlock_unlock(&rt->img_lock);
    pthread_mutex_unlock(&rt->alloc_lock);
    return freed > 0;
}

/* Sub-unit bitmap covering [o, o+len) of a cluster. */
static pcow_bitmap sub_mask(const pcow_runtime *rt, uint64_t o, uint64_t len)
{
    pcow_bitmap m = {{0}};
    uint64_t u0 = o / rt->ssize, u1 = (o + len + rt->ssize - 1) / rt->ssize;
    pcow_bitmap_set_range(&m, (uint32_t)u0, (uint32_t)(u1 - u0));
    return m;
}

static bool bm_eq(const pcow_bitmap *a, const pcow_bitmap *b) { return !memcmp(a, b, sizeof *a); }
static pcow_bitmap bm_or(pcow_bitmap a, const pcow_bitmap *b)
{
    for (int i = 0; i < PCOW_MAX_SUBUNITS / 64; i++)
        a.w[i] |= b->w[i];
    return a;
}
static pcow_bitmap bm_andnot(pcow_bitmap a, const pcow_bitmap *b)
{
    for (int i = 0; i < PCOW_MAX_SUBUNITS / 64; i++)
        a.w[i] &= ~b->w[i];
    return a;
}

static bool bm_covers(const pcow_bitmap *have, pcow_bitmap want)
{
    for (int i = 0; i < PCOW_MAX_SUBUNITS / 64; i++)
        if (want.w[i] & ~have->w[i])
            return false;
    return true;
}

/* Copy what the active view shows now for [vc*C + o, +len) (lower layers / base: the active
 * layer does not own it) into the reserved cluster at addr, at the same offset. */
static int copy_lower(pcow_runtime *rt, struct rt_thread *th, const struct pcow_mapping *m, uint64_t vc, uint64_t o,
                      uint64_t len, uint64_t addr)
{
    uint32_t f;
    uint64_t off;
    pcow_addr_to_file(rt->img, addr + o, &f, &off);
    /* The range lies whole in one lower layer's cluster (m: the topmost entry, below the active
     * layer, full or owning these sub-units), so its file range is known without pcow_read.
     * From CFR_MIN bytes copy file to file in the kernel (one syscall, no user buffer; on a
     * reflink file system the blocks are shared). Measured in place on tmpfs (copy step mean,
     * 64 KiB clusters): 4 KiB 4.0 us pread+pwrite vs 4.5 copy_file_range, 8 KiB equal, 16 KiB
     * and 64 KiB faster with copy_file_range (64 KiB: 30 -> 23 us). Lower layers do not change
     * while a fault is served (structural changes wait for the epoch lock). */
    bool direct = m->depth > 0 && (!m->partial || bm_covers(&m->bitmap, sub_mask(rt, o, len)));
    if (direct && len >= CFR_MIN) {
        loff_t src = (loff_t)(m->file_off + o), dst = (loff_t)off;
        uint64_t done = 0;
        while (done < len) {
            ssize_t n = copy_file_range(rt->fds[m->file], &src, rt->fds[f], &dst, len - done, 0);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            done += (uint64_t)n;
        }
        if (done == len) {
            ADD(c_cow_bytes, len);
            return 0;
        }
        /* not supported here (EXDEV, EOPNOTSUPP, ...) or short: copy the rest through a buffer */
        o += done;
        off += done;
        len -= done;
    }
    uint8_t *buf = th->buf;
    if (direct) {
        uint64_t got = 0;
        while (got < len) {
            ssize_t n = pread(rt->fds[m->file], buf + got, len - got, (off_t)(m->file_off + o + got));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                int e = n < 0 ? errno : EIO;
                snprintf(th->msg, sizeof th->msg, "read of lower-layer data at file offset 0x%" PRIx64 " failed: %s",
                         m->file_off + o + got, n < 0 ? strerror(e) : "unexpected end of file");
                return -e;
            }
            got += (uint64_t)n;
        }
    } else {
        pthread_rwlock_rdlock(&rt->img_lock);
        int r = pcow_read(rt->img, buf, len, vc * rt->csize + o);
        if (r < 0)
            snprintf(th->msg, sizeof th->msg, "%s", pcow_errmsg(rt->img));
        pthread_rwlock_unlock(&rt->img_lock);
        if (r < 0)
            return r;
    }
    uint64_t done = 0;
    while (done < len) {
        ssize_t n = pwrite(rt->fds[f], buf + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EIO;
        done += (uint64_t)n;
    }
    ADD(c_cow_bytes, len);
    return 0;
}

static void serve_read(pcow_runtime *rt, struct rt_thread *th, uint8_t *page, uint64_t vc, uint64_t co,
                       const struct pcow_mapping *m, const pcow_bitmap *owned)
{
    uint64_t ws = co / rt->fill * rt->fill, we = ws + rt->fill;
    if (we > rt->csize)
        we = rt->csize;
    bool hole = m->depth < 0 && !m->in_base;
    uint8_t *cbase = rt->base + vc * rt->csize;
    int r = 0;
    /* runs of sub-units the active layer does not own (file-mapped ones are skipped) */
    uint64_t pos = ws;
    while (pos < we && r == 0) {
        if (pcow_bitmap_test(owned, (uint32_t)(pos / rt->ssize))) {
            pos = (pos / rt->ssize + 1) * rt->ssize;
            continue;
        }
        uint64_t e = pos;
        while (e < we && !pcow_bitmap_test(owned, (uint32_t)(e / rt->ssize)))
            e = (e / rt->ssize + 1) * rt->ssize;
        if (e > we)
            e = we;
        const uint8_t *src = rt->zero;
        if (!hole) {
            pthread_rwlock_rdlock(&rt->img_lock);
            r = pcow_read(rt->img, th->buf, e - pos, vc * rt->csize + pos);
            if (r < 0)
                snprintf(th->msg, sizeof th->msg, "%s", pcow_errmsg(rt->img));
            pthread_rwlock_unlock(&rt->img_lock);
            src = th->buf;
        }
        if (r == 0)
            r = rt_uffd_copy(rt->uffd, cbase + pos, src, e - pos, UFFDIO_COPY_MODE_WP | UFFDIO_COPY_MODE_DONTWAKE,
                             rt->page);
        if (r == 0)
            ADD(c_populated, e - pos);
        pos = e;
    }
    if (r < 0) {
        fail_fault(rt, th, page, r, "read");
        return;
    }
    if (hole)
        INC(c_read_zero);
    else
        INC(c_read_lower);
    rt_uffd_wake(rt->uffd, cbase + ws, we - ws);
}

static void serve_write(pcow_runtime *rt, struct rt_thread *th, uint8_t *page, uint64_t vc, uint64_t co,
                        const struct pcow_mapping *m, const pcow_bitmap *owned, uint64_t t0)
{
    bool lower = !(m->depth < 0 && !m->in_base);
    uint64_t rs = 0, rl = rt->csize;
    if (lower && rt->unit < rt->csize) {
        rs = co / rt->unit * rt->unit;
        rl = rt->unit;
    }
    pcow_bitmap need = bm_andnot(sub_mask(rt, rs, rl), owned);
    uint64_t addr;
    int r = 0;
    const char *what = lower ? "copy-on-write" : "expansion";
    if (m->depth == 0) {
        addr = m->addr; /* partial entry: add sub-units */
    } else {
        r = take_cluster(rt, th, vc, &addr, lower && rl < rt->csize);
        if (r < 0) {
            fail_fault(rt, th, page, r, what);
            return;
        }
    }
    /* Copy and entry are idempotent until the entry is written: after an ENOSPC they are
     * tried once more if pool clusters could be given back to the file system. */
    for (int attempt = 0;; attempt++) {
        if (lower) {
            FOR_RUNS(need, rt->nsub, s, n, {
                if (r == 0)
                    r = copy_lower(rt, th, m, vc, (uint64_t)s * rt->ssize, (uint64_t)n * rt->ssize, addr);
            });
            if (r == 0)
                r = persist_files(rt); /* data durable before the entry */
        }
        if (r == 0) {
            pthread_rwlock_wrlock(&rt->img_lock);
            if (m->depth == 0)
                r = pcow_set_subunits(rt->img, vc, &need);
            else if (bm_eq(&need, &rt->full_bits))
                r = pcow_map_cluster(rt->img, vc, addr, false, NULL);
            else
                r = pcow_map_cluster(rt->img, vc, addr, true, &need);
            if (r < 0)
                snprintf(th->msg, sizeof th->msg, "%s", pcow_errmsg(rt->img));
            pthread_rwlock_unlock(&rt->img_lock);
        }
        if (r == -ENOSPC && attempt == 0 && relieve_space(rt)) {
            r = 0;
            th->msg[0] = 0;
            continue;
        }
        break;
    }
    if (r < 0) {
        fail_fault(rt, th, page, r, what); /* a reserved cluster may leak; never a bad entry */
        return;
    }
    pcow_bitmap all = bm_or(*owned, &need);
    if (bm_eq(&all, &rt->full_bits)) {
        rs = 0;
        rl = rt->csize;
    }
    uint8_t *at = rt->base + vc * rt->csize + rs;
    r = map_file(rt, at, rl, addr + rs);
    if (r < 0) {
        /* the entry is durable: a later fault on this cluster maps it again */
        fail_fault(rt, th, page, r, r == -ENOMEM ? "mmap: out of VMAs, raise vm.max_map_count" : "mmap");
        return;
    }
    /* counters before the wake: the woken thread may read them at once */
    uint64_t dt = rt_now_ns() - t0;
    if (lower) {
        INC(c_cows);
        rt_hist_add(&rt->h_cow, dt);
    } else {
        INC(c_expansions);
        rt_hist_add(&rt->h_exp, dt);
    }
    rt_uffd_wake(rt->uffd, at, rl);
}

static void serve_fault(pcow_runtime *rt, struct rt_thread *th, uint64_t address, uint64_t flags, uint64_t t0)
{
    uint8_t *page = (uint8_t *)(uintptr_t)(address & ~(rt->page - 1));
    if (page < rt->base || page >= rt->base + rt->len) {
        rt_uffd_wake(rt->uffd, page, rt->page);
        return;
    }
    uint64_t off = (uint64_t)(page - rt->base), vc = off / rt->csize, co = off % rt->csize;
    bool write = flags & (UFFD_PAGEFAULT_FLAG_WRITE | UFFD_PAGEFAULT_FLAG_WP);
    th->msg[0] = 0;
    if (flags & UFFD_PAGEFAULT_FLAG_WP)
        INC(c_wp);
    pthread_mutex_t *lk = &rt->clocks[vc % NCLOCK];
    pthread_mutex_lock(lk);
    struct pcow_mapping m;
    pcow_lookup(rt->img, vc, &m);
    pcow_bitmap owned = {{0}};
    if (m.depth == 0)
        owned = m.partial ? m.bitmap : rt->full_bits;
    uint32_t s = (uint32_t)(co / rt->ssize);
    if (pcow_bitmap_test(&owned, s)) {
        /* Served already (a racing fault), or an earlier mmap failed: (re)map the owned run
         * and wake. Remapping an identical file range is harmless. */
        uint32_t a = s, b = s;
        while (a > 0 && pcow_bitmap_test(&owned, a - 1))
            a--;
        while (b + 1 < rt->nsub && pcow_bitmap_test(&owned, b + 1))
            b++;
        uint8_t *at = rt->base + vc * rt->csize + (uint64_t)a * rt->ssize;
        uint64_t l = (uint64_t)(b - a + 1) * rt->ssize;
        INC(c_stale);
        int r = map_file(rt, at, l, m.addr + (uint64_t)a * rt->ssize);
        if (r < 0)
            fail_fault(rt, th, page, r, "mmap");
        else
            rt_uffd_wake(rt->uffd, at, l);
    } else if (!write) {
        serve_read(rt, th, page, vc, co, &m, &owned);
        rt_hist_add(&rt->h_read, rt_now_ns() - t0);
    } else {
        serve_write(rt, th, page, vc, co, &m, &owned, t0);
    }
    pthread_mutex_unlock(lk);
    rt_hist_add(&rt->h_fault, rt_now_ns() - t0);
}

static void defer_msg(pcow_runtime *rt, const struct uffd_msg *msg)
{
    pthread_mutex_lock(&rt->defer_lock);
    if (rt->ndefer == rt->capdefer) {
        size_t nc = rt->capdefer ? rt->capdefer * 2 : 64;
        struct uffd_msg *n = realloc(rt->defer, nc * sizeof *n);
        if (!n) {
            /* cannot park it: the fault is re-raised when its thread is woken */
            pthread_mutex_unlock(&rt->defer_lock);
            rt_uffd_wake(rt->uffd, (void *)(uintptr_t)(msg->arg.pagefault.address & ~(rt->page - 1)), rt->page);
            return;
        }
        rt->defer = n;
        rt->capdefer = nc;
    }
    rt->defer[rt->ndefer++] = *msg;
    atomic_store(&rt->ndefer_hint, rt->ndefer);
    pthread_mutex_unlock(&rt->defer_lock);
    INC(c_deferred);
}

/* Serve parked faults once no swap is in progress. */
static void drain_deferred(pcow_runtime *rt, struct rt_thread *th)
{
    if (!atomic_load(&rt->ndefer_hint))
        return;
    if (pthread_rwlock_tryrdlock(&rt->epoch) != 0)
        return;
    for (;;) {
        pthread_mutex_lock(&rt->defer_lock);
        if (!rt->ndefer) {
            atomic_store(&rt->ndefer_hint, 0);
            pthread_mutex_unlock(&rt->defer_lock);
            break;
        }
        struct uffd_msg msg = rt->defer[--rt->ndefer];
        pthread_mutex_unlock(&rt->defer_lock);
        serve_fault(rt, th, msg.arg.pagefault.address, msg.arg.pagefault.flags, rt_now_ns());
    }
    pthread_rwlock_unlock(&rt->epoch);
}

static void *handler_main(void *arg)
{
    struct rt_thread *th = arg;
    pcow_runtime *rt = th->rt;
    pthread_setname_np(pthread_self(), "pcow-fault"); /* visible in top/perf inside QEMU */
    while (!atomic_load(&rt->stop)) {
        drain_deferred(rt, th);
        struct pollfd p[2] = {{.fd = rt->uffd, .events = POLLIN}, {.fd = rt->evfd, .events = POLLIN}};
        int n = poll(p, 2, atomic_load(&rt->ndefer_hint) ? 1 : -1);
        if (n < 0 && errno != EINTR)
            break;
        if (atomic_load(&rt->stop))
            break;
        if (n <= 0 || !(p[0].revents & POLLIN))
            continue;
        struct uffd_msg msg;
        ssize_t got = read(rt->uffd, &msg, sizeof msg);
        if (got != (ssize_t)sizeof msg)
            continue; /* EAGAIN: another handler took it */
        if (msg.event != UFFD_EVENT_PAGEFAULT)
            continue; /* UFFD_EVENT_REMAP from our own range swap: nothing to do */
        uint64_t t0 = rt_now_ns();
        INC(c_faults);
        /* Never block here: a range swap waits for its remap event to be read by us. */
        if (pthread_rwlock_tryrdlock(&rt->epoch) != 0) {
            defer_msg(rt, &msg);
            continue;
        }
        serve_fault(rt, th, msg.arg.pagefault.address, msg.arg.pagefault.flags, t0);
        pthread_rwlock_unlock(&rt->epoch);
    }
    return NULL;
}

/* ---- map / unmap ---- */
static bool pow2(uint64_t v) { return v && !(v & (v - 1)); }

static void rt_free(pcow_runtime *rt)
{
    if (rt->uffd >= 0)
        close(rt->uffd);
    if (rt->evfd >= 0)
        close(rt->evfd);
    if (rt->eof_fd >= 0)
        close(rt->eof_fd);
    for (uint32_t i = 0; i < rt->nthreads; i++)
        free(rt->th[i].buf);
    free(rt->pool);
    free(rt->defer);
    free(rt->zero);
    pthread_rwlock_destroy(&rt->img_lock);
    pthread_rwlock_destroy(&rt->epoch);
    pthread_mutex_destroy(&rt->switch_lock);
    pthread_mutex_destroy(&rt->defer_lock);
    pthread_mutex_destroy(&rt->pool_lock);
    pthread_mutex_destroy(&rt->alloc_lock);
    pthread_mutex_destroy(&rt->err_lock);
    pthread_cond_destroy(&rt->pool_cv);
    for (int i = 0; i < NCLOCK; i++)
        pthread_mutex_destroy(&rt->clocks[i]);
    free(rt);
}

static void stop_threads(pcow_runtime *rt, uint32_t started, bool pool)
{
    atomic_store(&rt->stop, true);
    uint64_t one = 1;
    if (write(rt->evfd, &one, sizeof one) < 0) {
        /* eventfd write cannot fail short of overflow; poll also sees stop on its next wake */
    }
    for (uint32_t i = 0; i < started; i++)
        pthread_join(rt->th[i].tid, NULL);
    if (pool) {
        pthread_mutex_lock(&rt->pool_lock);
        rt->pool_stop = true;
        pthread_cond_broadcast(&rt->pool_cv);
        pthread_mutex_unlock(&rt->pool_lock);
        pthread_join(rt->pool_tid, NULL);
    }
}

int pcow_runtime_map(pcow_image *img, const struct pcow_runtime_opts *opts, pcow_runtime **out, char *err,
                     size_t errlen)
{
    struct pcow_runtime_opts o = {0};
    if (opts)
        o = *opts;
    *out = NULL;
    struct pcow_info info;
    pcow_get_info(img, &info);
    const char *path = pcow_path(img);
#define FAIL(e, ...)                                                                                 \
    do {                                                                                             \
        if (err && errlen) {                                                                         \
            int n_ = snprintf(err, errlen, "%s: ", path);                                            \
            if (n_ > 0 && (size_t)n_ < errlen)                                                       \
                snprintf(err + n_, errlen - (size_t)n_, __VA_ARGS__);                                \
        }                                                                                            \
        return -(e);                                                                                 \
    } while (0)
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    uint64_t csize = info.cluster_size, ssize = info.subunit_size;
    if (csize < page)
        FAIL(EINVAL, "cluster size %" PRIu64 " is smaller than the page size %" PRIu64, csize, page);
    uint64_t unit = o.cow_unit ? o.cow_unit : csize;
    if (!pow2(unit) || unit < page || unit > csize)
        FAIL(EINVAL, "COW unit %" PRIu64 " must be a power of two between the page size %" PRIu64
                     " and the cluster size %" PRIu64, unit, page, csize);
    if (unit % ssize)
        FAIL(EINVAL, "COW unit %" PRIu64 " is smaller than the image's sub-unit %" PRIu64
                     " (cluster %" PRIu64 " / %u sub-units; create the image with a smaller sub-unit)",
             unit, ssize, csize, info.subunits_per_cluster);
    uint64_t fill = o.read_fill ? o.read_fill : (csize < 65536 ? csize : 65536);
    if (!pow2(fill) || fill < page || fill > csize)
        FAIL(EINVAL, "read fill %" PRIu64 " must be a power of two between %" PRIu64 " and %" PRIu64, fill, page,
             csize);
    uint64_t align = o.align ? o.align : (csize > DEFAULT_ALIGN ? csize : DEFAULT_ALIGN);
    if (!pow2(align) || align < csize)
        FAIL(EINVAL, "alignment %" PRIu64 " must be a power of two >= the cluster size %" PRIu64, align, csize);
    uint32_t nth = o.handler_threads ? o.handler_threads : 1;
    if (nth > MAX_THREADS)
        FAIL(EINVAL, "%u handler threads requested; at most %d", nth, MAX_THREADS);
    if (info.layer_count == 0)
        FAIL(EIO, "image has no usable layer");

    pcow_runtime *rt = calloc(1, sizeof *rt);
    if (!rt)
        FAIL(ENOMEM, "out of memory");
    rt->img = img;
    rt->uffd = rt->evfd = rt->eof_fd = -1;
    rt->page = page;
    rt->csize = csize;
    rt->ssize = ssize;
    rt->nsub = info.subunits_per_cluster;
    pcow_bitmap_set_range(&rt->full_bits, 0, rt->nsub);
    rt->unit = unit;
    rt->fill = fill;
    rt->vsize = info.virtual_size;
    rt->nclusters = info.clusters;
    rt->len = info.clusters * csize;
    rt->depth = o.prealloc_depth;
    rt->nfiles = info.stripe_count ? info.stripe_count : 1;
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&rt->img_lock, &ra);
    pthread_rwlock_init(&rt->epoch, &ra);
    pthread_rwlockattr_destroy(&ra);
    pthread_mutex_init(&rt->switch_lock, NULL);
    pthread_mutex_init(&rt->defer_lock, NULL);
    pthread_mutex_init(&rt->pool_lock, NULL);
    pthread_mutex_init(&rt->alloc_lock, NULL);
    pthread_mutex_init(&rt->err_lock, NULL);
    pthread_cond_init(&rt->pool_cv, NULL);
    for (int i = 0; i < NCLOCK; i++)
        pthread_mutex_init(&rt->clocks[i], NULL);
    rt_hist_init(&rt->h_fault);
    rt_hist_init(&rt->h_exp);
    rt_hist_init(&rt->h_cow);
    rt_hist_init(&rt->h_read);
    int r = 0;
    char msg[1100] = "";
#define BAIL(e, ...)                                                                                 \
    do {                                                                                             \
        r = -(e);                                                                                    \
        snprintf(msg, sizeof msg, __VA_ARGS__);                                                      \
        goto fail;                                                                                   \
    } while (0)
    for (uint32_t i = 0; i < rt->nfiles; i++) {
        struct pcow_stripe st;
        if (pcow_stripe_get(img, i, &st) < 0)
            BAIL(EIO, "stripe file %u is not open", i);
        rt->fds[i] = st.fd;
        if (fcntl(st.fd, F_GETFL) >= 0 && (fcntl(st.fd, F_GETFL) & O_ACCMODE) != O_RDWR)
            BAIL(EROFS, "the image is open read-only; map it opened with PCOW_OPEN_RDWR");
    }
    rt->zero = calloc(1, fill);
    rt->pool = rt->depth ? calloc(rt->depth, sizeof *rt->pool) : NULL;
    if (!rt->zero || (rt->depth && !rt->pool))
        BAIL(ENOMEM, "out of memory");
    rt->eof_fd = memfd_create("pcow-eof", MFD_CLOEXEC);
    rt->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (rt->eof_fd < 0 || rt->evfd < 0)
        BAIL(errno, "memfd/eventfd: %s", strerror(errno));

    /* fs-dax: MAP_SYNC makes the file metadata of a written page durable at fault time */
    rt->map_flags = MAP_SHARED;
    {
        void *t = mmap(NULL, csize, PROT_READ | PROT_WRITE, MAP_SHARED_VALIDATE | MAP_SYNC, rt->fds[0], 0);
        if (t != MAP_FAILED) {
            munmap(t, csize);
            rt->map_flags = MAP_SHARED_VALIDATE | MAP_SYNC;
            rt->dax = true;
        }
    }

    /* Persistence per file system, decided here: on tmpfs/ramfs every persist point (ours and
     * libpcow's) is a no-op, since nothing outlives the page cache there; elsewhere fdatasync
     * (plus MAP_SYNC on fs-dax). The order of the writes is unchanged. */
    rt->mem_fs = !rt->dax && files_on_mem_fs(rt);
    if (rt->mem_fs)
        pcow_set_persist(img, persist_noop, NULL);

    /* VMA budget */
    rt->max_map = o.max_map_count ? o.max_map_count : read_max_map_count();
    {
        long cur = pcow_runtime_count_vmas();
        uint64_t need = count_pieces(rt);
        if (cur < 0)
            cur = 0;
        /* + handler/pool thread stacks (2 VMAs each) and a margin for faults */
        uint64_t total = (uint64_t)cur + need + 2ull * (nth + 1) + 16;
        if (total > rt->max_map)
            BAIL(E2BIG,
                 "mapping needs %" PRIu64 " memory mappings (VMAs) for its %" PRIu64
                 " allocated clusters, the process has %ld already, and vm.max_map_count is %" PRIu64
                 "; raise it (sysctl -w vm.max_map_count=%" PRIu64 " or more)",
                 need, info.allocated_clusters, cur, rt->max_map, total * 2);
    }

    char uerr[400] = "";
    uint64_t want = UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_EVENT_REMAP | (o.no_poison ? 0 : UFFD_FEATURE_POISON);
    rt->uffd = rt_uffd_open(want, &rt->features, uerr, sizeof uerr);
    if (rt->uffd < 0) {
        r = rt->uffd;
        rt->uffd = -1;
        snprintf(msg, sizeof msg, "%s", uerr);
        goto fail;
    }
    if (!(rt->features & UFFD_FEATURE_PAGEFAULT_FLAG_WP))
        BAIL(EOPNOTSUPP, "this kernel's userfaultfd has no write-protect faults (needs Linux >= 5.7)");
    if (!(rt->features & UFFD_FEATURE_EVENT_REMAP))
        BAIL(EOPNOTSUPP, "this kernel's userfaultfd has no remap events");
    rt->poison = rt->features & UFFD_FEATURE_POISON;
    r = new_placeholder(rt, align, &rt->base);
    if (r < 0) {
        snprintf(msg, sizeof msg, "%s", err_body(rt));
        goto fail;
    }
    r = map_extents(rt);
    if (r < 0) {
        snprintf(msg, sizeof msg, "%s", err_body(rt));
        munmap(rt->base, rt->len);
        goto fail;
    }
    uint32_t started = 0;
    for (; started < nth; started++) {
        rt->th[started].rt = rt;
        rt->th[started].buf = malloc(csize);
        if (!rt->th[started].buf || pthread_create(&rt->th[started].tid, NULL, handler_main, &rt->th[started]) != 0) {
            free(rt->th[started].buf);
            rt->th[started].buf = NULL;
            stop_threads(rt, started, false);
            munmap(rt->base, rt->len);
            BAIL(EAGAIN, "cannot start fault handler thread %u", started);
        }
    }
    rt->nthreads = nth;
    if (rt->depth) {
        if (pthread_create(&rt->pool_tid, NULL, pool_main, rt) != 0) {
            stop_threads(rt, nth, false);
            munmap(rt->base, rt->len);
            BAIL(EAGAIN, "cannot start the pre-allocation thread");
        }
        rt->pool_running = true;
    }
    rt->err[0] = 0;
    *out = rt;
    return 0;
fail:
    if (rt->mem_fs)
        pcow_set_persist(img, NULL, NULL);
    rt_free(rt);
    FAIL(-r, "%s", msg);
#undef BAIL
#undef FAIL
}

int pcow_runtime_open(const char *path, unsigned open_flags, const struct pcow_runtime_opts *opts,
                      pcow_runtime **out, char *err, size_t errlen)
{
    pcow_image *img;
    *out = NULL;
    int r = pcow_open(path, open_flags | PCOW_OPEN_RDWR, &img, err, errlen);
    if (r < 0)
        return r;
    r = pcow_runtime_map(img, opts, out, err, errlen);
    if (r < 0) {
        pcow_close(img, NULL, 0);
        return r;
    }
    (*out)->own_img = true;
    return 0;
}

int pcow_runtime_sync(pcow_runtime *rt)
{
    int r = persist_files(rt);
    if (r < 0)
        return rt_err(rt, r, "cannot make the image durable: %s", strerror(-r));
    return 0;
}

int pcow_runtime_unmap(pcow_runtime *rt, char *err, size_t errlen)
{
    int r = pcow_runtime_sync(rt);
    if (r < 0 && err && errlen)
        snprintf(err, errlen, "%s", rt->err);
    stop_threads(rt, rt->nthreads, rt->pool_running);
    munmap(rt->base, rt->len);
    if (rt->mem_fs)
        pcow_set_persist(rt->img, NULL, NULL);
    if (rt->own_img) {
        char cerr[512];
        int c = pcow_close(rt->img, cerr, sizeof cerr);
        if (c < 0 && r == 0) {
            r = c;
            if (err && errlen)
                snprintf(err, errlen, "%s", cerr);
        }
    }
    rt_free(rt);
    return r;
}

/* Swap the range for a fresh registered placeholder (atomic for every accessor: mremap
 * replaces the old mappings under the mmap lock), change the image, map its active layer. */
static int switch_range(pcow_runtime *rt, int (*op)(pcow_image *, const char *), const char *arg, const char *what)
{
    pthread_mutex_lock(&rt->switch_lock);
    pthread_rwlock_wrlock(&rt->epoch);
    uint8_t *p2 = NULL;
    int r = new_placeholder(rt, rt->page, &p2);
    if (r == 0) {
        void *m = mremap(p2, rt->len, rt->len, MREMAP_MAYMOVE | MREMAP_FIXED, rt->base);
        if (m == MAP_FAILED) {
            r = rt_err(rt, errno, "%s: cannot swap the range: %s", what, strerror(errno));
            munmap(p2, rt->len);
        }
    }
    if (r == 0) {
        /* the old placeholder pages are gone; pool clusters stay reserved */
        r = persist_files(rt);
        if (r < 0)
            rt_err(rt, r, "%s: cannot make the image durable: %s", what, strerror(-r));
        pthread_rwlock_wrlock(&rt->img_lock);
        if (r == 0) {
            r = op(rt->img, arg);
            if (r < 0)
                rt_err(rt, r, "%s: %s", what, pcow_errmsg(rt->img));
        }
        pthread_rwlock_unlock(&rt->img_lock);
        int m = map_extents(rt); /* the active layer as it is now (unchanged if op failed) */
        if (r == 0)
            r = m;
    }
    pthread_rwlock_unlock(&rt->epoch);
    pthread_mutex_unlock(&rt->switch_lock);
    return r;
}

int pcow_runtime_snapshot(pcow_runtime *rt, const char *name)
{
    return switch_range(rt, pcow_snapshot_create, name, "snapshot");
}

int pcow_runtime_rollback(pcow_runtime *rt, const char *name_or_id)
{
    return switch_range(rt, pcow_snapshot_apply, name_or_id, "rollback");
}

void pcow_runtime_get_stats(pcow_runtime *rt, struct pcow_runtime_stats *o)
{
    memset(o, 0, sizeof *o);
#define LD(x) atomic_load_explicit(&rt->x, memory_order_relaxed)
    o->faults = LD(c_faults);
    o->read_zero = LD(c_read_zero);
    o->read_lower = LD(c_read_lower);
    o->expansions = LD(c_expansions);
    o->cows = LD(c_cows);
    o->cow_bytes = LD(c_cow_bytes);
    o->wp_faults = LD(c_wp);
    o->stale = LD(c_stale);
    o->deferred = LD(c_deferred);
    o->errors = LD(c_errors);
    o->pool_hits = LD(c_pool_hits);
    o->pool_misses = LD(c_pool_misses);
    o->pool_refills = LD(c_pool_refills);
    pthread_mutex_lock(&rt->pool_lock);
    o->pool_ready = rt->pool_n;
    pthread_mutex_unlock(&rt->pool_lock);
    o->populated_bytes = LD(c_populated);
    o->mmaps = LD(c_mmaps);
#undef LD
    long v = pcow_runtime_count_vmas();
    o->vmas = v > 0 ? (uint64_t)v : 0;
    o->poison_supported = rt->poison;
    o->dax = rt->dax;
    o->persist_noop = rt->mem_fs;
    rt_hist_summary(&rt->h_fault, &o->fault_service);
    rt_hist_summary(&rt->h_exp, &o->expansion);
    rt_hist_summary(&rt->h_cow, &o->cow);
    rt_hist_summary(&rt->h_read, &o->read_fill);
}

int pcow_runtime_stats_json(pcow_runtime *rt, FILE *f)
{
    struct pcow_runtime_stats s;
    pcow_runtime_get_stats(rt, &s);
    fprintf(f,
            "{\"faults\":%" PRIu64 ",\"read_zero\":%" PRIu64 ",\"read_lower\":%" PRIu64 ",\"expansions\":%" PRIu64
            ",\"cows\":%" PRIu64 ",\"cow_bytes\":%" PRIu64 ",\"wp_faults\":%" PRIu64 ",\"stale\":%" PRIu64
            ",\"deferred\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"pool_hits\":%" PRIu64 ",\"pool_misses\":%" PRIu64
            ",\"pool_refills\":%" PRIu64 ",\"pool_ready\":%" PRIu64 ",\"populated_bytes\":%" PRIu64 ",\"mmaps\":%" PRIu64 ",\"vmas\":%" PRIu64
            ",\"poison_supported\":%s,\"dax\":%s,\"persist\":\"%s\",\"cluster_size\":%" PRIu64 ",\"cow_unit\":%" PRIu64
            ",\"prealloc_depth\":%u,\"handler_threads\":%u,",
            s.faults, s.read_zero, s.read_lower, s.expansions, s.cows, s.cow_bytes, s.wp_faults, s.stale, s.deferred,
            s.errors, s.pool_hits, s.pool_misses, s.pool_refills, s.pool_ready, s.populated_bytes, s.mmaps, s.vmas,
            s.poison_supported ? "true" : "false", s.dax ? "true" : "false",
            s.dax ? "map_sync+fdatasync" : s.persist_noop ? "none (tmpfs/ramfs)" : "fdatasync", rt->csize, rt->unit, rt->depth,
            rt->nthreads);
    rt_hist_json(f, "fault_service", &s.fault_service);
    fputc(',', f);
    rt_hist_json(f, "expansion", &s.expansion);
    fputc(',', f);
    rt_hist_json(f, "cow", &s.cow);
    fputc(',', f);
    rt_hist_json(f, "read_fill", &s.read_fill);
    fputc('}', f);
    return ferror(f) ? -EIO : 0;
}
