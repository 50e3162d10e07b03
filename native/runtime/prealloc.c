/* Pre-allocation: a thread keeps clusters reserved (zeroed, durable) ahead of expansions, and
 * gives them back when the file system runs full. */
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

/* ---- pre-allocation ---- */
/* fs-dax: the pool hands out clusters whose blocks are written (zeros), not fallocated
 * unwritten extents. The first store through a MAP_SYNC mapping into an unwritten extent
 * converts it, and the fault must commit the journal before it returns (VM_FAULT_NEEDDSYNC):
 * measured in the fs-dax guest, one jbd2 commit per expansion even with every cluster from the
 * pool. Written here, in the background, and made durable by the batch's one fdatasync, such a
 * cluster costs the fault nothing but the page-table entry. In run mode each 2 MiB run is
 * fallocated with one call first: ext4's buddy allocator serves a 2 MiB request 2 MiB-aligned
 * on the device when it can, which a DAX PMD mapping needs (per-cluster calls went wherever
 * the locality group's preallocation put them). */
static int allocate_dax(pcow_runtime *rt, uint64_t addr, uint32_t n, uint32_t *got)
{
    uint32_t step = rt->pool_runs ? (uint32_t)(PCOW_RUN_SIZE / rt->csize) : 1;
    for (*got = 0; *got < n;) {
        uint32_t k = n - *got < step ? n - *got : step, f;
        uint64_t off;
        pcow_addr_to_file(rt->img, addr + (uint64_t)*got * rt->csize, &f, &off);
        if (fallocate(rt->fds[f], 0, (off_t)off, (off_t)(k * rt->csize)) < 0 && errno != EOPNOTSUPP)
            return -errno;
        int r = rt_zero_file(rt, f, off, k * rt->csize);
        if (r < 0)
            return r;
        *got += k;
    }
    return 0;
}

/* Allocate (zero-filled, no ENOSPC later) n clusters claimed at addr that nothing references
 * yet, so no image lock is needed. *got = how many from the first are allocated. A file system
 * without fallocate leaves them sparse, as pcow_reserve does.
 * One call per cluster where that is fast (ext4/xfs: unwritten extents, ~5 us for 2 MiB; a
 * tmpfs with huge pages: one 2 MiB folio), else FALLOC_CHUNK pieces: fallocate holds the
 * file's inode lock for the whole call, and a fault's entry write (a pwrite to the same file)
 * waits for it. Measured on tmpfs without huge pages, 2 MiB clusters: one call took 0.25-1.4 ms
 * and expansion service p50 stayed at that (rwsem_down_write_slowpath); in 64 KiB pieces on
 * ext4 the same cluster took ~440 us instead of ~5 us, hence the choice by measurement. */
static int allocate_clusters(pcow_runtime *rt, uint64_t addr, uint32_t n, uint32_t *got)
{
    if (rt->dax)
        return allocate_dax(rt, addr, n, got);
    for (*got = 0; *got < n; (*got)++) {
        uint32_t f;
        uint64_t off;
        pcow_addr_to_file(rt->img, addr + (uint64_t)*got * rt->csize, &f, &off);
        for (uint64_t c = 0; c < rt->csize;) {
            uint64_t piece = rt->falloc_piece, l = rt->csize - c < piece ? rt->csize - c : piece;
            uint64_t t0 = rt_now_ns();
            if (fallocate(rt->fds[f], 0, (off_t)(off + c), (off_t)l) < 0) {
                if (errno == EOPNOTSUPP)
                    break;
                return -errno;
            }
            if (piece > FALLOC_CHUNK && rt_now_ns() - t0 > FALLOC_SLOW_NS)
                rt->falloc_piece = FALLOC_CHUNK; /* only the pool thread reads or writes it */
            c += l;
        }
    }
    return 0;
}

/* A batch starts at a PCOW_RUN_SIZE boundary of the file, so that a 2 MiB virtual region can
 * take a whole run (pick_cluster): the files are extended sparse up to it (a hole, no blocks;
 * what an unmap cut from a partly used run is skipped, at most 2 MiB of file size per batch).
 * Only in run mode (pool_runs: clusters < 2 MiB, prealloc_depth >= 2 runs, runs in one file):
 * with a smaller pool, batches of part of a run padded to a new run each would scatter
 * sequential expansions (depth 16 at 64 KiB clusters: 162 file runs for 1024 clusters). */
static int pad_to_run(pcow_runtime *rt)
{
    if (!rt->pool_runs)
        return 0;
    struct pcow_info in;
    pcow_get_info(rt->img, &in);
    uint64_t mis = in.image_end % PCOW_RUN_SIZE, a;
    return mis ? pcow_reserve_sparse(rt->img, (uint32_t)((PCOW_RUN_SIZE - mis) / rt->csize), &a) : 0;
}

void *rt_pool_main(void *arg)
{
    pcow_runtime *rt = arg;
    pthread_setname_np(pthread_self(), "pcow-prealloc");
    /* The same weight as the threads that fault (nice 0): the pool does only work that an
     * expansion would otherwise do itself, in the faulting path, and only as fast as clusters
     * are taken. Measured (pcow-bench case expansion, tmpfs, shared 2-core host): at nice 10 it
     * got too little CPU to zero-fill 256 KiB-2 MiB clusters as fast as a touch every 100 us
     * takes them (256 KiB: 29-32% pool hits, p50 6-6.4x the floor; at nice 0: 94-100%, 1.5-1.9x).
     * SCHED_IDLE, tried before, starved outright (70-95% misses even at 64 KiB). */
    uint64_t pend_addr = 0; /* clusters claimed but not allocated yet (an earlier failure) */
    uint32_t pend_n = 0;
    uint32_t per = rt->pool_runs ? (uint32_t)(PCOW_RUN_SIZE / rt->csize) : 1; /* clusters per batch unit */
    pthread_mutex_lock(&rt->pool_lock);
    bool filling = true;
    while (!rt->pool_stop) {
        /* Refill in batches, from the low watermark (half) back to full, in whole runs where
         * the depth allows (pad_to_run): a batch of a few clusters, padded to a new run each
         * time, would offer slots that fit no region (measured: sequential expansions on ext4
         * split into ~300 runs, 30% of clusters not congruent). */
        uint32_t need = rt->depth - rt->pool_n;
        bool low = rt->pool_n <= rt->depth / 2;
        if (need >= per)
            need -= need % per;
        else if (!low)
            need = 0; /* less than a run to top up: wait for the watermark */
        if (need == 0 || (!filling && !low)) {
            filling = false;
            pthread_cond_wait(&rt->pool_cv, &rt->pool_lock);
            continue;
        }
        filling = true;
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
            r = pad_to_run(rt);
            if (r == 0)
                r = pcow_reserve_sparse(rt->img, need, &pend_addr);
            pthread_rwlock_unlock(&rt->img_lock); /* on failure a foreground expansion reports it */
            if (r == 0)
                pend_n = need;
        }
        uint32_t got = 0;
        if (r == 0)
            r = allocate_clusters(rt, pend_addr, pend_n, &got);
        pthread_mutex_unlock(&rt->alloc_lock);
        if (got > 0 && rt_persist_files(rt) < 0) /* reserved space durable before anything points at it */
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
        if (!rt->pool_tried) {
            rt->pool_tried = true;
            pthread_cond_broadcast(&rt->pool_cv); /* pcow_runtime_map waits for the first batch */
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

/* Which pool cluster serves virtual cluster vc (pool_lock held, pool_n > 0): the one that
 * keeps vc's 2 MiB virtual region in one file run at congruent offsets, so the kernel merges
 * the mappings and can map the region with a PMD (large folios, fs-dax). A cluster's slot is
 * its file offset modulo PCOW_RUN_SIZE, its run the aligned 2 MiB of file around it; batches
 * start at run boundaries (pad_to_run). In order of preference:
 *   1. the cluster at the place an allocated cluster of the region implies (its run, vc's slot);
 *   2. a cluster in vc's slot from the run with the most clusters left (a fresh run for a
 *      region that starts now);
 *   3. any (the region is split; nothing is lost but the PMD).
 * Without run mode (pool_runs): 1., else the lowest address (file order follows the order of
 * first writes, as for any append). */
static uint32_t pick_cluster(pcow_runtime *rt, uint64_t vc, const uint64_t *want, int nwant)
{
    for (int w = 0; w < nwant; w++)
        for (uint32_t i = 0; i < rt->pool_n; i++)
            if (rt->pool[i] == want[w])
                return i;
    if (!rt->pool_runs)
        return 0; /* the lowest address: file order follows the order of first writes */
    uint64_t slot = vc * rt->csize % PCOW_RUN_SIZE;
    uint32_t best = 0, best_left = 0;
    for (uint32_t i = 0; i < rt->pool_n; i++) {
        uint32_t f;
        uint64_t off;
        pcow_addr_to_file(rt->img, rt->pool[i], &f, &off);
        if (off % PCOW_RUN_SIZE != slot)
            continue;
        /* the pool is in address order (batches are appended, takes keep the order), so a
         * run's clusters are neighbours in it: O(pool) for the whole pick */
        uint64_t run = rt->pool[i] - slot;
        uint32_t a = i, b = i;
        while (a > 0 && rt->pool[a - 1] >= run && rt->pool[a - 1] < run + PCOW_RUN_SIZE)
            a--;
        while (b + 1 < rt->pool_n && rt->pool[b + 1] >= run && rt->pool[b + 1] < run + PCOW_RUN_SIZE)
            b++;
        uint32_t left = b - a + 1;
        if (left > best_left) {
            best = i;
            best_left = left;
        }
    }
    return best;
}

/* Where allocated clusters of vc's 2 MiB region put vc (their run, vc's slot): up to 2
 * candidates, nearest neighbours first. Memory-only lookups, no lock (pcow_lookup). */
static int region_wants(pcow_runtime *rt, uint64_t vc, uint64_t *want)
{
    uint64_t per = rt->csize < PCOW_RUN_SIZE ? PCOW_RUN_SIZE / rt->csize : 1, v0 = vc - vc % per;
    uint64_t v1 = v0 + per < rt->nclusters ? v0 + per : rt->nclusters;
    int n = 0;
    /* scan outwards from vc; at most 64 lookups (small clusters: the neighbours decide) */
    for (uint64_t d = 1; d <= 64 && n < 2 && (vc >= v0 + d || vc + d < v1); d++) {
        for (int side = 0; side < 2 && n < 2; side++) {
            if (side == 0 ? vc < v0 + d : vc + d >= v1)
                continue;
            uint64_t v = side == 0 ? vc - d : vc + d;
            struct pcow_mapping m;
            if (pcow_lookup(rt->img, v, &m) == 0 && m.depth == 0 && !m.partial)
                want[n++] = side == 0 ? m.addr + d * rt->csize : m.addr - d * rt->csize;
        }
    }
    return n;
}

/* A reserved, zeroed, durable cluster for virtual cluster vc: from the pool (pick_cluster) or
 * reserved now (pcow_reserve_for: congruent when vc starts its region).
 * sparse: the caller writes every byte it maps with pwrite first (fine-grained COW), so the
 * cluster is not fallocated (zero-filled): only the file is extended, and the partial cluster
 * takes the space of the sub-units it owns. */
int rt_take_cluster(pcow_runtime *rt, struct rt_thread *th, uint64_t vc, uint64_t *addr, bool sparse, bool *written)
{
    /* on fs-dax every non-sparse cluster is written (zeros) before it is handed out */
    *written = rt->dax && !sparse;
    /* sparse clusters never come from the pool: a fallocated cluster would hold the whole
     * cluster's space for the few sub-units a partial cluster owns */
    if (rt->depth && !sparse) {
        uint64_t want[2];
        int nwant = region_wants(rt, vc, want);
        pthread_mutex_lock(&rt->pool_lock);
        if (rt->pool_n) {
            uint32_t pick = pick_cluster(rt, vc, want, nwant);
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
    int r = pcow_reserve_for(rt->img, vc, sparse, addr);
    if (r < 0)
        snprintf(th->msg, sizeof th->msg, "%s", pcow_errmsg(rt->img));
    pthread_rwlock_unlock(&rt->img_lock);
    if (r == 0 && rt->dax && !sparse) {
        uint32_t f;
        uint64_t off;
        pcow_addr_to_file(rt->img, *addr, &f, &off);
        r = rt_zero_file(rt, f, off, rt->csize); /* see allocate_dax */
        if (r < 0)
            snprintf(th->msg, sizeof th->msg, "cannot write zeros over a new cluster: %s", strerror(-r));
    }
    if (r == 0 && !sparse)
        r = rt_persist_files(rt); /* sparse: the size change is made durable with the copied data */
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
bool rt_relieve_space(pcow_runtime *rt)
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

/* Unused pool clusters are given back when the mapping ends (pcow_release: holes), and the
 * image's unreferenced tail is cut (pcow_reclaim; the pool's last batch usually is that tail). Without this every map/unmap cycle left
 * up to prealloc_depth fallocated clusters that the next mapping skipped (allocation is
 * append-only): 10 cycles at depth 64 grew a 1-cluster image 4.4 -> 41 MiB.
 * Crash safety: nothing references a pool cluster (it is referenced only once its entry is
 * written, and then it has left the pool), so punching or truncating it loses nothing; a crash
 * in between leaves unreferenced clusters, which the next map gives back the same way (see
 * pcow_runtime_map), as `pcow-img check -r leaks` does. */
int rt_pool_return(pcow_runtime *rt)
{
    int r = 0;
    pthread_rwlock_wrlock(&rt->img_lock);
    pthread_mutex_lock(&rt->pool_lock);
    for (uint32_t i = 0; i < rt->pool_n; i++) {
        /* consecutive clusters in one call */
        uint32_t n = 1;
        while (i + n < rt->pool_n && rt->pool[i + n] == rt->pool[i] + (uint64_t)n * rt->csize)
            n++;
        if (pcow_release(rt->img, rt->pool[i], n) < 0 && r == 0)
            r = rt_err(rt, -EIO, "cannot give back pre-allocated clusters: %s", pcow_errmsg(rt->img));
        i += n - 1;
    }
    rt->pool_n = 0;
    pthread_mutex_unlock(&rt->pool_lock);
    if (pcow_reclaim(rt->img, NULL) < 0 && r == 0)
        r = rt_err(rt, -EIO, "cannot cut the unreferenced end of the image: %s", pcow_errmsg(rt->img));
    pthread_rwlock_unlock(&rt->img_lock);
    return r;
}

/* The first batch is allocated before pcow_runtime_map returns, so the first expansions hit
 * the pool: at 2 MiB clusters on tmpfs a batch of 64 takes 60-90 ms (fallocate ~0.9-1.4 ms per
 * cluster here), longer than a guest (or pcow-bench, 20 ms) waits before its first writes.
 * Bounded: on a slow file system map returns after PREFILL_WAIT_MS and the pool fills on. */
void rt_pool_wait_first(pcow_runtime *rt)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += PREFILL_WAIT_MS / 1000;
    ts.tv_nsec += (long)(PREFILL_WAIT_MS % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&rt->pool_lock);
    while (!rt->pool_tried)
        if (pthread_cond_timedwait(&rt->pool_cv, &rt->pool_lock, &ts) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&rt->pool_lock);
}
