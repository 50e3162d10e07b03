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
static uint64_t logical_of(const pcow_image *img, uint32_t f, uint64_t off)
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
        uint64_t la = logical_of(img, f, fd_off);
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

static int rw_loop(pcow_image *img, bool wr, void *buf, uint64_t len, uint64_t addr)
{
    uint8_t *p = buf;
    while (len) {
        uint32_t f;
        uint64_t off;
        uint64_t n = img->unit - (addr & (img->unit - 1));
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
                return pcow__err(img, EIO, "short read at 0x%llx: %s ends at 0x%llx",
                                 (unsigned long long)(off + done), img->fpath[f],
                                 (unsigned long long)(off + done));
            done += (uint64_t)r;
        }
        if (wr && off + n > img->fsize[f])
            img->fsize[f] = off + n;
        if (wr) {
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
    return rw_loop(img, false, buf, len, addr);
}

int pcow__pwrite(pcow_image *img, const void *buf, uint64_t len, uint64_t addr)
{
    return rw_loop(img, true, (void *)buf, len, addr);
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
     * sizes are covered because fdatasync flushes the size change with the data. */
    for (uint32_t f = 0; f < img->nfiles; f++) {
        if (!img->dirty_hi[f] && !img->size_changed[f])
            continue;
        uint64_t lo = img->dirty_hi[f] ? img->dirty_lo[f] : 0, hi = img->dirty_hi[f] ? img->dirty_hi[f] : 0;
        int r = img->persist(img->persist_ctx, img->fd[f], lo, hi - lo);
        if (r < 0)
            return pcow__err(img, r, "cannot make %s durable: %s", img->fpath[f], strerror(-r));
        img->dirty_lo[f] = img->dirty_hi[f] = 0;
        img->size_changed[f] = false;
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
