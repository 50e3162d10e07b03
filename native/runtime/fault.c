/* Fault service: reads of holes and lower-layer data, expansion, copy-on-write, memory errors,
 * faults parked during a range swap, the handler threads. */
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

/* What the active view reads at virtual offset off, len bytes, into buf. The range reaches to
 * the cluster after the virtual size (pcow_runtime_length): the bytes beyond the virtual size
 * are not part of the image and read as zeros (pcow_read refuses them). */
static int read_view(pcow_runtime *rt, struct rt_thread *th, uint8_t *buf, uint64_t len, uint64_t off)
{
    uint64_t in = off >= rt->vsize ? 0 : rt->vsize - off < len ? rt->vsize - off : len;
    int r = 0;
    if (in) {
        pthread_rwlock_rdlock(&rt->img_lock);
        r = pcow_read(rt->img, buf, in, off);
        if (r < 0)
            snprintf(th->msg, sizeof th->msg, "%s", pcow_errmsg(rt->img));
        pthread_rwlock_unlock(&rt->img_lock);
    }
    if (r == 0 && in < len)
        memset(buf + in, 0, len - in);
    return r;
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
        int r = read_view(rt, th, buf, len, vc * rt->csize + o);
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
            r = read_view(rt, th, th->buf, e - pos, vc * rt->csize + pos);
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
    /* A fine-grained COW takes a sparse cluster (the partial cluster takes the space of the
     * units it owns), except on fs-dax with pre-allocation: there it takes a written pool
     * cluster (the whole cluster's space), so that its copy allocates no block and needs no
     * journal commit (see allocate_dax). */
    bool sparse = lower && rl < rt->csize && !(rt->dax && rt->depth);
    bool written = false; /* the cluster's blocks are written and durable: the copy allocates nothing */
    STEP(s0);
    if (m->depth == 0) {
        addr = m->addr; /* partial entry: add sub-units */
        written = rt->written && (atomic_load(&rt->written[vc / 64]) >> (vc % 64) & 1);
    } else if (sparse && th->spare) {
        addr = th->spare; /* reserved ahead (see reserve_spare) */
        th->spare = 0;
        th->took_sparse = true;
    } else {
        r = rt_take_cluster(rt, th, vc, &addr, sparse, &written);
        th->took_sparse = r == 0 && sparse;
        if (r < 0) {
            fail_fault(rt, th, page, r, what);
            return;
        }
    }
    /* Copy and entry are idempotent until the entry is written: after an ENOSPC they are
     * tried once more if pool clusters could be given back to the file system. */
    STEP(s1);
    STEP(s2);
    for (int attempt = 0;; attempt++) {
        if (lower) {
            FOR_RUNS(need, rt->nsub, s, n, {
                if (r == 0)
                    r = copy_lower(rt, th, m, vc, (uint64_t)s * rt->ssize, (uint64_t)n * rt->ssize, addr);
            });
            if (r == 0)
                r = rt_persist_data(rt, written); /* data durable before the entry */
        }
#ifdef RT_STEP_TIMING
        s2 = rt_now_ns();
#endif
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
        if (r == -ENOSPC && attempt == 0 && rt_relieve_space(rt)) {
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
    if (rt->written && m->depth != 0) {
        uint64_t bit = 1ull << (vc % 64);
        if (written)
            atomic_fetch_or(&rt->written[vc / 64], bit);
        else
            atomic_fetch_and(&rt->written[vc / 64], ~bit);
    }
    pcow_bitmap all = bm_or(*owned, &need);
    if (bm_eq(&all, &rt->full_bits)) {
        rs = 0;
        rl = rt->csize;
    }
    uint8_t *at = rt->base + vc * rt->csize + rs;
    STEP(s3);
    r = rt_map_file(rt, at, rl, addr + rs);
    STEP(s4);
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
    STEP(s5);
    STEP_ADD(0, s1 - s0);
    STEP_ADD(1, s2 - s1);
    STEP_ADD(2, s3 - s2);
    STEP_ADD(3, s4 - s3);
    STEP_ADD(4, s5 - s4);
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
        int r = rt_map_file(rt, at, l, m.addr + (uint64_t)a * rt->ssize);
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

/* A fine-grained COW of a cluster the active layer does not hold yet takes a sparse cluster,
 * and reserving one extends the file (ftruncate, and the image lock held for writing: ~1 us of
 * the handler's 4 KiB COW). After such a COW the handler reserves the next one once the
 * faulting thread is awake, so the next COW finds it ready. Unreferenced, it is a hole past the
 * data (no disk space, nothing for check to report); released at unmap (pcow_release: the file
 * keeps its size, so each mapping session may leave one hole cluster per handler thread). */
static void reserve_spare(pcow_runtime *rt, struct rt_thread *th)
{
    pthread_rwlock_wrlock(&rt->img_lock);
    if (pcow_reserve_sparse(rt->img, 1, &th->spare) < 0)
        th->spare = 0; /* the next COW reserves its own, and reports a failure */
    pthread_rwlock_unlock(&rt->img_lock);
}

static void release_spare(pcow_runtime *rt, struct rt_thread *th)
{
    if (!th->spare)
        return;
    pthread_rwlock_wrlock(&rt->img_lock);
    (void)pcow_release(rt->img, th->spare, 1);
    pthread_rwlock_unlock(&rt->img_lock);
    th->spare = 0;
}

void *rt_handler_main(void *arg)
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
        th->took_sparse = false;
        serve_fault(rt, th, msg.arg.pagefault.address, msg.arg.pagefault.flags, t0);
        if (th->took_sparse && !th->spare)
            reserve_spare(rt, th);
        pthread_rwlock_unlock(&rt->epoch);
    }
    release_spare(rt, th);
    return NULL;
}
