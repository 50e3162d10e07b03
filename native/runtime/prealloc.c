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

void *rt_pool_main(void *arg)
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
int rt_take_cluster(pcow_runtime *rt, struct rt_thread *th, uint64_t vc, uint64_t *addr, bool sparse)
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
