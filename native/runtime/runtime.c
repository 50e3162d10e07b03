/* The pcow runtime: map / unmap, the range's placeholder and file mappings, persistence,
 * errors, counters. The fault service is in fault.c, pre-allocation in prealloc.c, snapshot /
 * rollback while mapped in swap.c. */
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


int rt_err(pcow_runtime *rt, int e, const char *fmt, ...)
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

int rt_persist_files(pcow_runtime *rt)
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

/* Drain this CPU's non-temporal stores and cache-line write-backs to the persistence domain.
 * A pwrite to a DAX file copies with memcpy_flushcache (non-temporal stores, clwb for the
 * unaligned edges): nothing of it stays in the CPU cache, only the fence is missing. If the
 * thread moved to another CPU since, the old CPU drained its write-combining buffers when it
 * switched (locked instructions do). MAP_SYNC working means the platform needs no more than
 * that (synchronous DAX: no device flush, unlike virtio-pmem, where MAP_SYNC fails). */
static void pmem_drain(void)
{
#if defined(__x86_64__)
    __builtin_ia32_sfence();
#endif
}

int rt_persist_data(pcow_runtime *rt, bool written)
{
    if (rt->dax_fence && written) {
        pmem_drain();
        return 0;
    }
    return rt_persist_files(rt);
}

int rt_zero_file(pcow_runtime *rt, uint32_t f, uint64_t off, uint64_t len)
{
    for (uint64_t done = 0; done < len;) {
        uint64_t l = len - done < rt->fill ? len - done : rt->fill;
        ssize_t n = pwrite(rt->fds[f], rt->zero, l, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EIO;
        done += (uint64_t)n;
    }
    return 0;
}

/* libpcow's persist hook on fs-dax (dax_fence): len 0 means the file was extended or written
 * where blocks may have been allocated (new tables, records): fdatasync commits that metadata.
 * len > 0 is an overwrite of durable, written bytes (an entry of an existing L2 table): the
 * fence makes the pwrite durable, and nothing else changed. Before, every entry write paid an
 * fdatasync, which on fs-dax also writes back and write-protects every page the process
 * dirtied through its MAP_SYNC mappings since the previous one. */
static int persist_dax(void *ctx, int fd, uint64_t off, uint64_t len)
{
    (void)ctx;
    (void)off;
    if (len == 0) {
        while (fdatasync(fd) < 0) {
            if (errno != EINTR)
                return -errno;
        }
        return 0;
    }
    pmem_drain();
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
int rt_map_file(pcow_runtime *rt, uint8_t *at, uint64_t len, uint64_t addr)
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
int rt_map_extents(pcow_runtime *rt)
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
                    r = rt_map_file(rt, rt->base + e.vc * rt->csize + (uint64_t)s * rt->ssize, (uint64_t)n * rt->ssize,
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
int rt_new_placeholder(pcow_runtime *rt, uint64_t align, uint8_t **out)
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

/* ---- map / unmap ---- */

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
    free((void *)rt->written);
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
    struct pcow_runtime_opts o;
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
    /* the options' one check (options.c); o then holds the values in effect */
    char oerr[300];
    if (pcow_runtime_opts_check(opts, csize, ssize, &o, oerr, sizeof oerr) < 0)
        FAIL(EINVAL, "%s", oerr);
    uint64_t unit = o.cow_unit, fill = o.read_fill, align = o.align;
    uint32_t nth = o.handler_threads;
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
#ifdef RT_STEP_TIMING
    for (int i = 0; i < 5; i++)
        rt_hist_init(&rt->st[i]);
#endif
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
    /* Clusters reserved and never referenced (a crash with a full pre-allocation pool, a COW
     * cut short) are given back before anything new is reserved: repeated crashes must not
     * grow the image without bound. Safe: nothing references them (see rt_pool_return), and
     * nobody else holds reserved clusters of an image we are given. */
    if (pcow_reclaim(img, NULL) < 0)
        BAIL(EIO, "cannot cut the unreferenced end of the image: %s", pcow_errmsg(img));
    rt->falloc_piece = csize;
    /* runs need whole runs per refill (from the watermark: depth/2 clusters) and one file per run */
    rt->pool_runs = csize < PCOW_RUN_SIZE && rt->depth >= 2 * (PCOW_RUN_SIZE / csize) &&
                    (rt->nfiles == 1 || info.stripe_unit >= PCOW_RUN_SIZE);
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
#if defined(__x86_64__)
    rt->dax_fence = rt->dax;
#endif
    if (rt->dax_fence)
        pcow_set_persist(img, persist_dax, NULL);
    if (rt->dax_fence && rt->depth && !(rt->written = calloc((rt->nclusters + 63) / 64, sizeof *rt->written)))
        BAIL(ENOMEM, "out of memory");

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
    r = rt_new_placeholder(rt, align, &rt->base);
    if (r < 0) {
        snprintf(msg, sizeof msg, "%s", err_body(rt));
        goto fail;
    }
    r = rt_map_extents(rt);
    if (r < 0) {
        snprintf(msg, sizeof msg, "%s", err_body(rt));
        munmap(rt->base, rt->len);
        goto fail;
    }
    uint32_t started = 0;
    for (; started < nth; started++) {
        rt->th[started].rt = rt;
        rt->th[started].buf = malloc(csize);
        if (!rt->th[started].buf || pthread_create(&rt->th[started].tid, NULL, rt_handler_main, &rt->th[started]) != 0) {
            free(rt->th[started].buf);
            rt->th[started].buf = NULL;
            stop_threads(rt, started, false);
            munmap(rt->base, rt->len);
            BAIL(EAGAIN, "cannot start fault handler thread %u", started);
        }
    }
    rt->nthreads = nth;
    if (rt->depth) {
        if (pthread_create(&rt->pool_tid, NULL, rt_pool_main, rt) != 0) {
            stop_threads(rt, nth, false);
            munmap(rt->base, rt->len);
            BAIL(EAGAIN, "cannot start the pre-allocation thread");
        }
        rt->pool_running = true;
        rt_pool_wait_first(rt);
    }
    rt->err[0] = 0;
    *out = rt;
    return 0;
fail:
    if (rt->mem_fs || rt->dax_fence)
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
    int r = rt_persist_files(rt);
    if (r < 0)
        return rt_err(rt, r, "cannot make the image durable: %s", strerror(-r));
    return 0;
}

int pcow_runtime_unmap(pcow_runtime *rt, char *err, size_t errlen)
{
#ifdef RT_STEP_TIMING
    if (atomic_load(&rt->st[0].count)) {
        static const char *const names[5] = {"take", "copy", "entry", "mmap", "wake"};
        fprintf(stderr, "pcow-runtime steps of %" PRIu64 " expansions/COWs, p50/mean us:",
                (uint64_t)atomic_load(&rt->st[0].count));
        for (int i = 0; i < 5; i++) {
            struct pcow_runtime_hist h;
            rt_hist_summary(&rt->st[i], &h);
            fprintf(stderr, " %s %.1f/%.1f", names[i], h.p50_ns / 1e3, h.mean_ns / 1e3);
        }
        fputc('\n', stderr);
    }
#endif
    int r = pcow_runtime_sync(rt);
    if (r < 0 && err && errlen)
        snprintf(err, errlen, "%s", rt->err);
    stop_threads(rt, rt->nthreads, rt->pool_running);
    munmap(rt->base, rt->len);
    {
        int p = rt_pool_return(rt);
        if (p < 0 && r == 0) {
            r = p;
            if (err && errlen)
                snprintf(err, errlen, "%s", rt->err);
        }
    }
    if (rt->mem_fs || rt->dax_fence)
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
            rt->dax_fence ? "map_sync+fence" : s.dax ? "map_sync+fdatasync" : s.persist_noop ? "none (tmpfs/ramfs)" : "fdatasync", rt->csize, rt->unit, rt->depth,
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
