/* I/O at logical image addresses over the stripe files, append-only allocation, freeing. */
#define _GNU_SOURCE
#include "pcow_internal.h"
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void pcow__addr(const pcow_image *img, uint64_t addr, uint32_t *f, uint64_t *off)
{
    if (img->nfiles <= 1) {
        *f = 0;
        *off = addr;
        return;
    }
    uint64_t u = addr >> img->h.ubits;
    *f = (uint32_t)(u % img->nfiles);
    *off = ((u / img->nfiles) << img->h.ubits) | (addr & (img->unit - 1));
}

void pcow_addr_to_file(const pcow_image *img, uint64_t addr, uint32_t *file, uint64_t *off)
{
    pcow__addr(img, addr, file, off);
}

/* Does [addr, addr+len) lie inside the stripe files as they are now? len <= stripe unit
 * pieces are checked one by one. */
bool pcow__in_file(const pcow_image *img, uint64_t addr, uint64_t len)
{
    while (len) {
        uint32_t f;
        uint64_t off;
        uint64_t n = img->unit - (addr & (img->unit - 1));
        if (n > len)
            n = len;
        pcow__addr(img, addr, &f, &off);
        if (off > img->fsize[f] || img->fsize[f] - off < n)
            return false;
        addr += n;
        len -= n;
    }
    return true;
}

/* File offset in stripe file f of the first byte of f at a logical address >= addr. */
static uint64_t first_off_at(const pcow_image *img, uint32_t f, uint64_t addr)
{
    if (img->nfiles <= 1)
        return addr;
    uint64_t u = addr >> img->h.ubits, round = u / img->nfiles, fu = u % img->nfiles;
    if (f == fu)
        return (round << img->h.ubits) | (addr & (img->unit - 1));
    return (f > fu ? round : round + 1) << img->h.ubits;
}

/* Logical address of offset off in stripe file f. */
uint64_t pcow__logical(const pcow_image *img, uint32_t f, uint64_t off)
{
    if (img->nfiles <= 1)
        return off;
    return (((off >> img->h.ubits) * img->nfiles + f) << img->h.ubits) | (off & (img->unit - 1));
}

bool pcow__data_range(const pcow_image *img, uint64_t addr, uint64_t end, uint64_t *ds, uint64_t *de)
{
    uint64_t best = UINT64_MAX, bd = 0;
    uint32_t bf = 0;
    for (uint32_t f = 0; f < img->nfiles; f++) {
        uint64_t off = first_off_at(img, f, addr);
        if (off >= img->fsize[f] || off > (uint64_t)INT64_MAX)
            continue;
        off_t d = lseek(img->fd[f], (off_t)off, SEEK_DATA);
        if (d < 0 && errno == ENXIO)
            continue;               /* only holes from off to the end of f */
        uint64_t fd_off = d < 0 ? off : (uint64_t)d; /* no SEEK_DATA: all data */
        uint64_t la = pcow__logical(img, f, fd_off);
        if (la < best) {
            best = la;
            bf = f;
            bd = fd_off;
        }
    }
    if (best >= end)
        return false;
    off_t h = lseek(img->fd[bf], (off_t)bd, SEEK_HOLE);
    uint64_t he = h < 0 || (uint64_t)h > img->fsize[bf] ? img->fsize[bf] : (uint64_t)h;
    if (img->nfiles > 1) {
        uint64_t ue = ((bd >> img->h.ubits) + 1) << img->h.ubits; /* the unit continues in the next file */
        if (he > ue)
            he = ue;
    }
    if (he <= bd)
        he = bd + 1;
    *ds = best;
    *de = best + (he - bd) < end ? best + (he - bd) : end;
    return true;
}

static int rw_loop(pcow_image *img, bool wr, void *buf, uint64_t len, uint64_t addr, const char *what, bool inplace)
{
    uint8_t *p = buf;
    while (len) {
        uint32_t f;
        uint64_t off;
        /* one file: one call (large page-cache folios need large writes) */
        uint64_t n = img->nfiles <= 1 ? len : img->unit - (addr & (img->unit - 1));
        if (n > len)
            n = len;
        pcow__addr(img, addr, &f, &off);
        uint64_t done = 0;
        while (done < n) {
            ssize_t r = wr ? pwrite(img->fd[f], p + done, n - done, (off_t)(off + done))
                           : pread(img->fd[f], p + done, n - done, (off_t)(off + done));
            if (r < 0) {
                if (errno == EINTR)
                    continue;
                int e = errno;
                return pcow__err(img, e, "%s at 0x%llx (%s): %s", wr ? "write" : "read",
                                 (unsigned long long)(off + done), img->fpath[f], strerror(e));
            }
            if (r == 0)
                return pcow__err(img, EIO, "short read of %s (%llu bytes at address 0x%llx, offset 0x%llx of %s): "
                                 "the file ends at 0x%llx", what ? what : "data", (unsigned long long)(len + (uint64_t)(p - (uint8_t *)buf)),
                                 (unsigned long long)(addr - (uint64_t)(p - (uint8_t *)buf)), (unsigned long long)off,
                                 img->fpath[f], (unsigned long long)(off + done));
            done += (uint64_t)r;
        }
        if (wr && off + n > img->fsize[f])
            img->fsize[f] = off + n;
        if (wr) {
            if (!inplace)
                img->may_alloc[f] = true;
            if (img->dirty_hi[f] == 0 || off < img->dirty_lo[f])
                img->dirty_lo[f] = off;
            if (off + n > img->dirty_hi[f])
                img->dirty_hi[f] = off + n;
        }
        p += n;
        addr += n;
        len -= n;
    }
    return 0;
}

int pcow__pread(pcow_image *img, void *buf, uint64_t len, uint64_t addr)
{
    return rw_loop(img, false, buf, len, addr, NULL, false);
}

int pcow__pread_for(pcow_image *img, void *buf, uint64_t len, uint64_t addr, const char *what)
{
    return rw_loop(img, false, buf, len, addr, what, false);
}

int pcow__pwrite(pcow_image *img, const void *buf, uint64_t len, uint64_t addr)
{
    return rw_loop(img, true, (void *)buf, len, addr, NULL, false);
}

int pcow__pwrite_inplace(pcow_image *img, const void *buf, uint64_t len, uint64_t addr)
{
    return rw_loop(img, true, (void *)buf, len, addr, NULL, true);
}

static int default_persist(void *ctx, int fd, uint64_t off, uint64_t len)
{
    (void)ctx;
    (void)off;
    (void)len;
    while (fdatasync(fd) < 0) {
        if (errno != EINTR)
            return -errno;
    }
    return 0;
}

void pcow_set_persist(pcow_image *img, pcow_persist_fn fn, void *ctx)
{
    img->persist = fn ? fn : default_persist;
    img->persist_ctx = fn ? ctx : NULL;
}

int pcow__persist_all(pcow_image *img)
{
    if (!img->persist)
        img->persist = default_persist;
    /* Only files written since the last call, with the range written; fallocate-extended
     * sizes are covered because fdatasync flushes the size change with the data. A file that
     * was extended, or written where blocks may have been allocated, gets len 0: only its
     * metadata made durable (fdatasync) covers that (see pcow_persist_fn). */
    for (uint32_t f = 0; f < img->nfiles; f++) {
        if (!img->dirty_hi[f] && !img->size_changed[f])
            continue;
        uint64_t lo = img->dirty_hi[f] ? img->dirty_lo[f] : 0, hi = img->dirty_hi[f] ? img->dirty_hi[f] : 0;
        if (img->size_changed[f] || img->may_alloc[f])
            lo = hi = 0;
        int r = img->persist(img->persist_ctx, img->fd[f], lo, hi - lo);
        if (r < 0)
            return pcow__err(img, r, "cannot make %s durable: %s", img->fpath[f], strerror(-r));
        img->dirty_lo[f] = img->dirty_hi[f] = 0;
        img->size_changed[f] = img->may_alloc[f] = false;
    }
    return 0;
}

/* Append n clusters at the logical end. Unless sparse, the space is allocated (fallocate) so a
 * later write cannot fail with ENOSPC, and reads as zeros. Sparse clusters only extend the
 * files: for clusters whose bytes are all written with pwrite before use (partial data
 * clusters, bitmap clusters), where zero-filling a whole cluster would be wasted work. */
static int reserve_clusters(pcow_image *img, uint64_t n, uint64_t *addr, bool sparse)
{
    if (!img->rw)
        return pcow__err(img, EROFS, "image is open read-only");
    uint64_t a = img->end;
    for (uint64_t i = 0; i < n; i++) {
        uint32_t f;
        uint64_t off;
        pcow__addr(img, a + i * img->csize, &f, &off);
        bool grows = off + img->csize > img->fsize[f];
        if (sparse && !grows)
            continue;
        if (!sparse && fallocate(img->fd[f], 0, (off_t)off, (off_t)img->csize) < 0) {
            int e = errno;
            if (e != EOPNOTSUPP)
                return pcow__err(img, e, "cannot allocate a cluster at 0x%llx in %s: %s",
                                 (unsigned long long)off, img->fpath[f], strerror(e));
            if (grows && ftruncate(img->fd[f], (off_t)(off + img->csize)) < 0) {
                e = errno;
                return pcow__err(img, e, "cannot extend %s: %s", img->fpath[f], strerror(e));
            }
        } else if (sparse && ftruncate(img->fd[f], (off_t)(off + img->csize)) < 0) {
            int e = errno;
            return pcow__err(img, e, "cannot extend %s: %s", img->fpath[f], strerror(e));
        }
        if (grows)
            img->fsize[f] = off + img->csize;
        img->size_changed[f] = true;
    }
    img->end = a + n * img->csize;
    *addr = a;
    return 0;
}

/* Large folios and fs-dax PMD faults map 2 MiB of a file at once only where the file offset is
 * congruent with the virtual address modulo 2 MiB (and the 2 MiB lie in one file run). A raw
 * file has that for free; pcow keeps it for data clusters where it is cheap: a cluster that
 * starts a 2 MiB virtual region is placed at a congruent file offset (the files are extended
 * sparse to get there: the padding is a hole, free space that costs no blocks), and the next
 * clusters of the region, written in order, follow it. Run size in bytes, or 0 when nothing
 * is to be done (clusters of >= 2 MiB are aligned already; stripe units < 2 MiB interleave). */
static uint64_t run_bytes(const pcow_image *img)
{
    if (img->csize >= PCOW_RUN_SIZE || (img->nfiles > 1 && img->unit < PCOW_RUN_SIZE))
        return 0;
    return PCOW_RUN_SIZE;
}

int pcow__alloc_runs(pcow_image *img, uint64_t addr, uint64_t len)
{
    uint64_t run = run_bytes(img);
    if (!run)
        return 0;
    for (uint64_t a = (addr + run - 1) & ~(run - 1); a + run <= addr + len; a += run) {
        uint32_t f;
        uint64_t off;
        pcow__addr(img, a, &f, &off);
        if (fallocate(img->fd[f], 0, (off_t)off, (off_t)run) < 0 && errno != EOPNOTSUPP) {
            int e = errno;
            return pcow__err(img, e, "cannot allocate 0x%llx bytes at 0x%llx in %s: %s", (unsigned long long)run,
                             (unsigned long long)off, img->fpath[f], strerror(e));
        }
    }
    return 0;
}

/* Extend the end with sparse clusters (holes) until it is congruent with want modulo run. */
static int pad_end(pcow_image *img, uint64_t run, uint64_t want)
{
    uint64_t k = ((want - img->end % run) & (run - 1)) / img->csize, a;
    return k ? reserve_clusters(img, k, &a, true) : 0;
}

/* Is vc worth a padding hole to stay congruent: its 2 MiB region holds nothing in the active
 * layer yet (a new run), or vc continues the cluster before it (written in order; something
 * else, e.g. an L2 table, was appended in between)? Random order inside a used region is
 * appended as it comes: a hole per cluster would grow the files' size without bound. */
static bool worth_padding(const pcow_image *img, uint64_t vc, uint64_t run)
{
    if (!img->nlayers)
        return true;
    const struct layer *L = &img->layers[img->active];
    uint64_t per = run / img->csize, v0 = vc - vc % per;
    if (vc > v0 && ent_w0(img, L, vc - 1))
        return true;
    for (uint64_t v = v0; v < v0 + per && v < img->nclusters; v++)
        if (v != vc && ent_w0(img, L, v))
            return false;
    return true;
}

int pcow__reserve_for(pcow_image *img, uint64_t vc, bool sparse, uint64_t *addr)
{
    uint64_t run = run_bytes(img);
    if (run && img->rw && img->end % run != vc * img->csize % run && worth_padding(img, vc, run)) {
        int r = pad_end(img, run, vc * img->csize % run);
        if (r < 0)
            return r;
    }
    return reserve_clusters(img, 1, addr, sparse);
}

int pcow__reserve(pcow_image *img, uint64_t n, uint64_t *addr)
{
    return reserve_clusters(img, n, addr, false);
}

int pcow__reserve_sparse(pcow_image *img, uint64_t n, uint64_t *addr)
{
    return reserve_clusters(img, n, addr, true);
}

int pcow__check_usable(pcow_image *img)
{
    if (img->broken)
        return pcow__err(img, EIO, "image state is unknown after an earlier failure; reopen it");
    return 0;
}

int pcow__check_writable_vc(pcow_image *img, uint64_t vc)
{
    int r = pcow__check_usable(img);
    if (r < 0)
        return r;
    if (!img->rw)
        return pcow__err(img, EROFS, "image is open read-only");
    if (vc >= img->nclusters)
        return pcow__err(img, EINVAL, "virtual cluster %llu is beyond %llu", (unsigned long long)vc,
                         (unsigned long long)img->nclusters);
    return 0;
}

static int reserve_public(pcow_image *img, uint32_t n, uint64_t *addr, bool sparse)
{
    int r = pcow__check_usable(img);
    if (r < 0)
        return r;
    if (n == 0)
        return pcow__err(img, EINVAL, "cannot reserve 0 clusters");
    return reserve_clusters(img, n, addr, sparse);
}

int pcow_reserve_sparse(pcow_image *img, uint32_t n, uint64_t *addr)
{
    return reserve_public(img, n, addr, true);
}

int pcow_reserve(pcow_image *img, uint32_t n, uint64_t *addr)
{
    return reserve_public(img, n, addr, false);
}

int pcow_reserve_for(pcow_image *img, uint64_t vc, bool sparse, uint64_t *addr)
{
    int r = pcow__check_writable_vc(img, vc);
    return r < 0 ? r : pcow__reserve_for(img, vc, sparse, addr);
}

uint64_t pcow__file_size_at(const pcow_image *img, uint64_t e, uint32_t f)
{
    if (img->nfiles == 1)
        return e;
    uint64_t units = e >> img->h.ubits, rounds = units / img->nfiles, rem = units % img->nfiles;
    uint64_t part = e & (img->unit - 1);
    return (rounds << img->h.ubits) + (f < rem ? img->unit : f == rem ? part : 0);
}

static void mark(uint8_t *bits, uint64_t nbits, uint64_t cs, uint64_t addr, uint64_t len)
{
    for (uint64_t c = addr / cs; c < (addr + len + cs - 1) / cs && c < nbits; c++)
        bits[c / 8] |= (uint8_t)(1u << (c % 8));
}

int pcow_reclaim(pcow_image *img, uint64_t *freed)
{
    if (freed)
        *freed = 0;
    int r = pcow__check_usable(img);
    if (r < 0)
        return r;
    if (!img->rw)
        return pcow__err(img, EROFS, "image is open read-only");
    /* Everything referenced, from the in-memory copies of the (validated, durable) tables:
     * header, layer directory, L1 and L2 tables, data clusters, bitmap clusters, and the record
     * allocator's clusters (records it may still hand out). */
    uint64_t cs = img->csize, cm = ~(cs - 1), nb = img->end / cs;
    uint8_t *bits = calloc(nb / 8 + 1, 1);
    if (!bits)
        return pcow__err(img, ENOMEM, "out of memory");
    mark(bits, nb, cs, 0, cs);
    if (img->h.dir_count)
        mark(bits, nb, cs, img->h.dir_off, (uint64_t)img->h.dir_count * DIR_REC_SIZE);
    for (uint32_t li = 0; li < img->nlayers; li++) {
        const struct layer *L = &img->layers[li];
        if (L->l1_off)
            mark(bits, nb, cs, L->l1_off, img->l1_span);
        for (uint64_t i = L->l1p ? l1_next(img, L, 0) : img->l1n; i < img->l1n; i = l1_next(img, L, i + 1)) {
            if (l1_addr(L, i))
                mark(bits, nb, cs, l1_addr(L, i), cs);
            const uint64_t *t = l2_tab(L, i);
            for (uint64_t k = 0; t && k < img->l2n; k++) {
                uint64_t w0 = t[2 * k];
                if (!w0)
                    continue;
                mark(bits, nb, cs, w0 & cm, cs);
                if (img->ext && (w0 & ENTRY_PARTIAL) && t[2 * k + 1])
                    mark(bits, nb, cs, ((const struct bmrec *)(uintptr_t)t[2 * k + 1])->addr & cm, cs);
            }
        }
    }
    if (img->bm_lim)
        mark(bits, nb, cs, img->bm_lim - cs, cs);
    for (size_t i = 0; i < img->bm_nfree; i++)
        mark(bits, nb, cs, img->bm_free[i] & cm, cs);
    uint64_t hi = nb;
    while (hi > 1 && !(bits[(hi - 1) / 8] & (1u << ((hi - 1) % 8))))
        hi--;
    /* Below the last referenced cluster: punch the unreferenced ones, one call per run of
     * them (cheap where they are holes already). Not SEEK_DATA: tmpfs reports fallocated pages
     * never written as a hole, yet they hold memory. One file only: a stripe file's offsets
     * interleave (its tail is still cut below). */
    uint64_t cut = 0;
    for (uint64_t c = 1; img->nfiles == 1 && c < hi;) {
        if (bits[c / 8] & (1u << (c % 8))) {
            c++;
            continue;
        }
        uint64_t e = c;
        while (e < hi && !(bits[e / 8] & (1u << (e % 8))))
            e++;
        if (fallocate(img->fd[0], FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)(c * cs), (off_t)((e - c) * cs)) < 0)
            break; /* left as they are: free space or leaks for check, never corruption */
        cut += (e - c) * cs;
        c = e;
    }
    free(bits);
    hi *= cs;
    if (hi < img->end) {
        for (uint32_t f = 0; f < img->nfiles; f++) {
            uint64_t fs = pcow__file_size_at(img, hi, f);
            if (fs >= img->fsize[f])
                continue;
            if (ftruncate(img->fd[f], (off_t)fs) < 0) {
                int e = errno;
                return pcow__err(img, e, "cannot truncate %s to 0x%llx: %s", img->fpath[f], (unsigned long long)fs,
                                 strerror(e));
            }
            img->fsize[f] = fs;
            img->size_changed[f] = true;
        }
        cut += img->end - hi;
        img->end = hi;
    }
    if (freed)
        *freed = cut;
    return 0;
}

int pcow_release(pcow_image *img, uint64_t addr, uint32_t n)
{
    int r = pcow__check_usable(img);
    if (r < 0)
        return r;
    if (!img->rw)
        return pcow__err(img, EROFS, "image is open read-only");
    if (addr % img->csize || addr + (uint64_t)n * img->csize > img->end || addr + (uint64_t)n * img->csize < addr)
        return pcow__err(img, EINVAL, "cannot release %u clusters at 0x%llx: not reserved clusters of this image", n,
                         (unsigned long long)addr);
    pcow__free_clusters(img, addr, n);
    return 0;
}

/* Release clusters nothing references any more: punch holes (the file keeps its size, so
 * allocation stays append-only). Where punching is unsupported, zero them so that check
 * does not count them as leaks. Best effort: failures leave leaks, never corruption. */
void pcow__free_clusters(pcow_image *img, uint64_t addr, uint64_t n)
{
    /* one punch per piece that is contiguous in one file: the whole range with one file, a
     * stripe unit's part of it with stripes (a freed L1 table of 64 MiB is one call) */
    for (uint64_t a = addr, end = addr + n * img->csize; a < end;) {
        uint64_t len = end - a;
        if (img->nfiles > 1 && len > img->unit - (a & (img->unit - 1)))
            len = img->unit - (a & (img->unit - 1));
        uint32_t f;
        uint64_t off;
        pcow__addr(img, a, &f, &off);
        a += len;
        if (off >= img->fsize[f])
            continue;
        if (len > img->fsize[f] - off)
            len = img->fsize[f] - off;
        if (fallocate(img->fd[f], FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) < 0) {
            uint8_t *z = calloc(1, img->csize);
            for (uint64_t k = 0; z && k < len; k += img->csize) {
                if (pwrite(img->fd[f], z, len - k < img->csize ? len - k : img->csize, (off_t)(off + k)) < 0) {
                    /* left as a leak; check reports it */
                }
            }
            free(z);
        }
    }
}
