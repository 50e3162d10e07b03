/* Lookup through the layer chain, read/write at virtual offsets, cluster allocation with the
 * durable update protocol (data durable -> entry durable -> visible in memory). */
#define _GNU_SOURCE
#include "pcow_internal.h"
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void p64(uint8_t *p, uint64_t v) { v = htole64(v); memcpy(p, &v, 8); }

static uint64_t cmask(const pcow_image *img) { return ~(img->csize - 1); }

void pcow_get_info(const pcow_image *img, struct pcow_info *o)
{
    memset(o, 0, sizeof *o);
    o->version = PCOW_VERSION;
    o->cluster_size = (uint32_t)img->csize;
    o->subunit_size = (uint32_t)img->ssize;
    o->subunits_per_cluster = img->nsub;
    o->virtual_size = img->h.vsize;
    o->clusters = img->nclusters;
    o->l2_entries = img->l2n;
    o->l1_entries = img->l1n;
    o->incompat_features = img->h.incompat;
    o->compat_features = img->h.compat;
    o->dirty = img->h.flags & HDR_FLAG_DIRTY;
    o->generation = img->h.gen;
    o->image_end = img->end;
    for (uint32_t f = 0; f < img->nfiles; f++) {
        struct stat st;
        if (img->fd[f] >= 0 && fstat(img->fd[f], &st) == 0)
            o->file_size += (uint64_t)st.st_blocks * 512;
    }
    for (uint32_t i = 0; i < img->nlayers; i++)
        o->total_data_clusters += img->layers[i].owned;
    o->allocated_clusters = img->nlayers ? img->layers[img->active].owned : 0;
    o->layer_count = img->nlayers;
    o->active_layer = img->active;
    o->stripe_count = img->nfiles;
    o->stripe_unit = img->unit;
    o->base_format = (int)img->h.base_fmt;
    memcpy(o->base_path, img->h.base, img->h.base_len + 1);
    snprintf(o->base_resolved, sizeof o->base_resolved, "%s", img->base_resolved);
    o->table_bytes_read = img->table_bytes_read;
}

uint32_t pcow_layer_count(const pcow_image *img) { return img->nlayers; }

int pcow_layer_get(const pcow_image *img, uint32_t idx, struct pcow_layer_info *o)
{
    if (idx >= img->nlayers)
        return -EINVAL;
    const struct layer *L = &img->layers[idx];
    memset(o, 0, sizeof *o);
    o->id = L->id;
    o->parent_id = L->parent_id;
    o->active = idx == img->active;
    memcpy(o->name, L->name, sizeof o->name);
    o->ctime_sec = L->ctime_sec;
    o->ctime_nsec = L->ctime_nsec;
    o->clusters = L->owned;
    o->l1_offset = L->l1_off;
    return 0;
}

int pcow_stripe_get(const pcow_image *img, uint32_t i, struct pcow_stripe *o)
{
    if (i >= img->nfiles)
        return -EINVAL;
    o->fd = img->fd[i];
    o->path = img->fpath[i];
    return 0;
}

int pcow_entry_get(const pcow_image *img, uint32_t li, uint64_t vc, struct pcow_entry *o)
{
    if (li >= img->nlayers || vc >= img->nclusters)
        return -EINVAL;
    uint64_t w0 = ent_w0(img, &img->layers[li], vc);
    o->addr = w0 & cmask(img);
    o->partial = w0 & ENTRY_PARTIAL;
    w1_bm(img, w0, o->partial ? ent_w1(img, &img->layers[li], vc) : 0, &o->bitmap);
    return 0;
}

int pcow_lookup(const pcow_image *img, uint64_t vc, struct pcow_mapping *o)
{
    memset(o, 0, sizeof *o);
    o->depth = -1;
    if (vc >= img->nclusters || !img->nlayers)
        return -EINVAL;
    int li = (int)img->active;
    for (int d = 0; li >= 0; d++) {
        const struct layer *L = &img->layers[li];
        uint64_t w0 = ent_w0(img, L, vc);
        if (w0) {
            o->depth = d;
            o->layer_idx = (uint32_t)li;
            o->addr = w0 & cmask(img);
            o->partial = w0 & ENTRY_PARTIAL;
            w1_bm(img, w0, o->partial ? ent_w1(img, L, vc) : 0, &o->bitmap);
            pcow__addr(img, o->addr, &o->file, &o->file_off);
            return 0;
        }
        li = L->parent;
    }
    o->in_base = img->h.base_fmt && vc * img->csize < img->base_size;
    return 0;
}

int pcow_extent_next(const pcow_image *img, uint64_t vc, struct pcow_extent *o)
{
    memset(o, 0, sizeof *o);
    if (vc >= img->nclusters || !img->nlayers)
        return 0;
    const struct layer *L = &img->layers[img->active];
    uint64_t w0 = ent_w0(img, L, vc);
    o->vc = vc;
    o->count = 1;
    if (!w0) {
        while (vc + o->count < img->nclusters && !ent_w0(img, L, vc + o->count))
            o->count++;
        return 1;
    }
    o->allocated = true;
    pcow__addr(img, w0 & cmask(img), &o->file, &o->file_off);
    if (w0 & ENTRY_PARTIAL) {
        o->partial = true;
        return 1;
    }
    for (;;) {
        uint64_t n = vc + o->count;
        if (n >= img->nclusters)
            break;
        uint64_t w = ent_w0(img, L, n);
        if (!w || (w & ENTRY_PARTIAL))
            break;
        uint32_t f;
        uint64_t off;
        pcow__addr(img, w & cmask(img), &f, &off);
        if (f != o->file || off != o->file_off + o->count * img->csize)
            break;
        o->count++;
    }
    return 1;
}

int pcow__read_base(pcow_image *img, uint64_t off, uint64_t len, uint8_t *buf)
{
    if (!img->h.base_fmt) {
        memset(buf, 0, len);
        return 0;
    }
    if (!img->base && img->base_fd < 0)
        return pcow__err(img, ENXIO, "base image '%s' is not open; cannot read unallocated data", img->h.base);
    uint64_t n = off < img->base_size ? img->base_size - off : 0;
    if (n > len)
        n = len;
    memset(buf + n, 0, len - n);
    if (!n)
        return 0;
    if (img->base) {
        int r = pcow_read(img->base, buf, n, off);
        if (r < 0)
            return pcow__err(img, r, "%s", pcow_errmsg(img->base));
        return 0;
    }
    uint64_t done = 0;
    while (done < n) {
        ssize_t r = pread(img->base_fd, buf + done, n - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return pcow__err(img, errno, "read of base '%s' failed: %s", img->h.base, strerror(errno));
        if (r == 0) {
            memset(buf + done, 0, n - done); /* raw base shrank: reads as zeros */
            break;
        }
        done += (uint64_t)r;
    }
    return 0;
}

/* Read [o, o+len) of virtual cluster vc as seen from layer li (-1 = base only). */
int pcow__read_layer(pcow_image *img, int li, uint64_t vc, uint64_t o, uint64_t len, uint8_t *buf)
{
    while (li >= 0) {
        const struct layer *L = &img->layers[li];
        uint64_t w0 = ent_w0(img, L, vc);
        if (w0) {
            uint64_t addr = w0 & cmask(img);
            if (!(w0 & ENTRY_PARTIAL))
                return pcow__pread(img, buf, len, addr + o);
            pcow_bitmap bm;
            w1_bm(img, w0, ent_w1(img, L, vc), &bm);
            uint64_t pos = o, endp = o + len;
            while (pos < endp) {
                uint64_t u = pos / img->ssize;
                bool own = bm_test(&bm, (uint32_t)u);
                uint64_t e = (u + 1) * img->ssize;
                while (e < endp && bm_test(&bm, (uint32_t)(e / img->ssize)) == own)
                    e += img->ssize;
                if (e > endp)
                    e = endp;
                int r = own ? pcow__pread(img, buf + (pos - o), e - pos, addr + pos)
                            : pcow__read_layer(img, L->parent, vc, pos, e - pos, buf + (pos - o));
                if (r < 0)
                    return r;
                pos = e;
            }
            return 0;
        }
        li = L->parent;
    }
    return pcow__read_base(img, vc * img->csize + o, len, buf);
}

static int check_range(pcow_image *img, uint64_t len, uint64_t off)
{
    int rc = pcow__check_usable(img);
    if (rc < 0)
        return rc;
    if (!img->nlayers)
        return pcow__err(img, EIO, "image has no usable layer directory");
    if (off > img->h.vsize || len > img->h.vsize - off)
        return pcow__err(img, EINVAL, "range 0x%llx+0x%llx is outside the virtual size 0x%llx",
                         (unsigned long long)off, (unsigned long long)len, (unsigned long long)img->h.vsize);
    return 0;
}

int pcow_read(pcow_image *img, void *buf, uint64_t len, uint64_t off)
{
    int r = check_range(img, len, off);
    uint8_t *p = buf;
    while (r == 0 && len) {
        uint64_t vc = off / img->csize, o = off % img->csize;
        uint64_t n = img->csize - o;
        if (n > len)
            n = len;
        r = pcow__read_layer(img, (int)img->active, vc, o, n, p);
        p += n;
        off += n;
        len -= n;
    }
    return r;
}

struct pend {
    uint64_t vc, w0;
    pcow_bitmap bm;   /* the whole new bitmap when w0 is partial */
    uint64_t w1;      /* on-disk word 1, filled by apply_entries */
    struct bmrec *rec; /* new in-memory record (BITMAP_RECORDS), or the entry's existing one */
    bool rec_new, rec_inplace;
};

/* New L2 tables of one apply_entries call: a short list (O(tables touched), not O(L1)). */
struct newtab {
    uint64_t t, addr;
    uint64_t *tab;
};

static void enc_rec(uint8_t *b, const pcow_bitmap *bm)
{
    for (int i = 0; i < BM_WORDS; i++)
        p64(b + 8 * i, bm->w[i]);
}

/* Make entries of layer li durable and visible. Their data must already be durable.
 * Order: bitmap records (new ones in free slots, or more bits in an entry's own record) and new
 * L2 tables (in fresh clusters) → durable → entries written in place into existing L2 tables →
 * durable → L1 entries of the new tables → durable → publish in memory.
 * A failure before the first in-place write leaves the disk as it was (fresh clusters leak at
 * worst) and the image usable; after it, the image is marked broken (memory and disk may
 * disagree until it is reopened). */
static int apply_entries(pcow_image *img, uint32_t li, struct pend *pd, size_t n)
{
    struct layer *L = &img->layers[li];
    struct newtab *nt = NULL;
    size_t nnt = 0;
    uint8_t *b = NULL;
    int r = 0;
    bool inplace = false, recs = false;
    /* 1. bitmap records */
    for (size_t i = 0; i < n && r == 0; i++) {
        struct pend *p = &pd[i];
        p->w1 = 0;
        p->rec = NULL;
        p->rec_new = p->rec_inplace = false;
        if (!(p->w0 & ENTRY_PARTIAL))
            continue;
        if (!img->ext) {
            p->w1 = p->bm.w[0];
            continue;
        }
        uint64_t cw0 = ent_w0(img, L, p->vc);
        struct bmrec *cur = cw0 == p->w0 ? (struct bmrec *)(uintptr_t)ent_w1(img, L, p->vc) : NULL;
        uint8_t rb[BM_REC_SIZE];
        enc_rec(rb, &p->bm);
        recs = true;
        if (cur) {
            /* only bits are added, each after its data is durable: any torn subset is valid */
            p->rec = cur;
            p->rec_inplace = true;
            p->w1 = cur->addr;
            r = pcow__pwrite(img, rb, BM_REC_SIZE, cur->addr);
            continue;
        }
        p->rec = malloc(sizeof *p->rec);
        if (!p->rec) {
            r = pcow__err(img, ENOMEM, "out of memory");
            break;
        }
        p->rec_new = true;
        memcpy(p->rec->w, p->bm.w, sizeof p->rec->w);
        r = pcow__bm_write_rec(img, &p->bm, &p->rec->addr);
        p->w1 = p->rec->addr;
    }
    /* 2. new L2 tables, built whole in fresh clusters */
    for (size_t i = 0; i < n && r == 0; i++) {
        uint64_t t = pd[i].vc / img->l2n, k = pd[i].vc % img->l2n;
        if (l2_tab(L, t))
            continue;
        /* its L1 chunk now, so that publishing the table below cannot fail */
        if ((r = pcow__l1_chunk(img, L, t)) < 0)
            break;
        size_t j = nnt;
        while (j > 0 && nt[j - 1].t != t)
            j--;
        if (j == 0) {
            struct newtab *x = realloc(nt, (nnt + 1) * sizeof *nt);
            if (!x) {
                r = pcow__err(img, ENOMEM, "out of memory");
                break;
            }
            nt = x;
            nt[nnt] = (struct newtab){t, 0, calloc(1, img->csize)};
            if (!nt[nnt++].tab) {
                r = pcow__err(img, ENOMEM, "out of memory");
                break;
            }
            j = nnt;
        }
        /* in memory a BITMAP_RECORDS entry holds the record pointer; on disk its address */
        nt[j - 1].tab[2 * k] = pd[i].w0;
        nt[j - 1].tab[2 * k + 1] = img->ext ? (uint64_t)(uintptr_t)pd[i].rec : pd[i].w1;
    }
    if (r == 0 && nnt && !(b = malloc(img->csize)))
        r = pcow__err(img, ENOMEM, "out of memory");
    for (size_t j = 0; j < nnt && r == 0; j++) {
        for (uint64_t k = 0; k < img->l2n; k++) {
            uint64_t w0 = nt[j].tab[2 * k], w1 = nt[j].tab[2 * k + 1];
            if (img->ext && w1)
                w1 = ((struct bmrec *)(uintptr_t)w1)->addr;
            p64(b + k * 16, w0);
            p64(b + k * 16 + 8, w1);
        }
        r = pcow__reserve(img, 1, &nt[j].addr);
        if (r == 0)
            r = pcow__pwrite(img, b, img->csize, nt[j].addr);
    }
    if (r == 0 && (recs || nnt))
        r = pcow__persist_all(img);
    /* 3. entries in existing tables (word 1 before word 0 in the same 16 bytes) */
    bool any_old = false;
    for (size_t i = 0; i < n && r == 0; i++) {
        uint64_t t = pd[i].vc / img->l2n, k = pd[i].vc % img->l2n;
        if (!l2_tab(L, t) || (pd[i].rec_inplace && ent_w0(img, L, pd[i].vc) == pd[i].w0))
            continue;
        uint8_t e[16];
        p64(e, pd[i].w0);
        p64(e + 8, pd[i].w1);
        inplace = true;
        any_old = true;
        r = pcow__pwrite_inplace(img, e, 16, l1_addr(L, t) + k * 16); /* tables are written whole at creation */
    }
    if (r == 0 && any_old)
        r = pcow__persist_all(img);
    /* 4. L1 entries of the new tables */
    for (size_t j = 0; j < nnt && r == 0; j++) {
        uint8_t e[8];
        p64(e, nt[j].addr);
        inplace = true;
        r = pcow__pwrite(img, e, 8, L->l1_off + nt[j].t * 8);
    }
    if (r == 0 && nnt)
        r = pcow__persist_all(img);
    if (r < 0) {
        if (inplace)
            img->broken = true;
        for (size_t i = 0; i < n; i++) {
            if (pd[i].rec_new) {
                free(pd[i].rec);
                pd[i].rec = NULL;
            }
        }
        goto out;
    }
    /* 5. publish: bitmap before address so a concurrent lookup never sees a partial entry with
     * a stale bitmap */
    for (size_t i = 0; i < n; i++) {
        uint64_t t = pd[i].vc / img->l2n, k = pd[i].vc % img->l2n;
        bool in_new = false;
        for (size_t j = 0; j < nnt && !in_new; j++)
            in_new = nt[j].t == t;
        if (in_new)
            continue;
        uint64_t *tab = l2_tab(L, t);
        if (!tab[2 * k] && pd[i].w0)
            L->owned++;
        if (pd[i].rec_inplace) {
            for (int w = 0; w < BM_WORDS; w++)
                __atomic_store_n(&pd[i].rec->w[w], pd[i].bm.w[w], __ATOMIC_RELEASE);
            continue;
        }
        uint64_t m1 = img->ext ? (uint64_t)(uintptr_t)pd[i].rec : pd[i].w1;
        uint64_t ow0 = tab[2 * k], ow1 = tab[2 * k + 1];
        __atomic_store_n(&tab[2 * k + 1], m1, __ATOMIC_RELEASE);
        __atomic_store_n(&tab[2 * k], pd[i].w0, __ATOMIC_RELEASE);
        /* an empty-bitmap entry (word 1 was 0) that got its first record; nothing else is
         * replaced in the data path */
        if (img->ext && ow1 && ow1 != m1)
            pcow__bm_free_rec(img, ow0, ow1);
    }
    for (size_t j = 0; j < nnt; j++) {
        for (uint64_t k = 0; k < img->l2n; k++)
            L->owned += nt[j].tab[2 * k] != 0;
        l1_set(L, nt[j].t, nt[j].addr, nt[j].tab);
        nt[j].tab = NULL;
    }
out:
    for (size_t j = 0; j < nnt; j++)
        free(nt[j].tab);
    free(nt);
    free(b);
    return r;
}

int pcow__set_entry(pcow_image *img, uint32_t li, uint64_t vc, uint64_t w0, const pcow_bitmap *bm)
{
    struct pend p = {.vc = vc, .w0 = w0};
    if (bm && (w0 & ENTRY_PARTIAL))
        p.bm = *bm;
    return apply_entries(img, li, &p, 1);
}

static bool has_lower(const pcow_image *img, int li, uint64_t vc)
{
    for (; li >= 0; li = img->layers[li].parent)
        if (ent_w0(img, &img->layers[li], vc))
            return true;
    return img->h.base_fmt && vc * img->csize < img->base_size;
}

/* Sub-units covering [o, o+len) of a cluster. */
static void unit_mask(const pcow_image *img, uint64_t o, uint64_t len, pcow_bitmap *m)
{
    memset(m, 0, sizeof *m);
    uint64_t u0 = o / img->ssize, u1 = (o + len - 1) / img->ssize;
    pcow_bitmap_set_range(m, (uint32_t)u0, (uint32_t)(u1 - u0 + 1));
}

/* Write data into sub-units `units` of the cluster at addr: for each unit, bytes from src
 * where [o, o+len) covers them, the rest from the lower layers (parent of li). Runs of
 * adjacent units are read and written together (tmp holds a cluster). */
static int fill_units(pcow_image *img, int parent, uint64_t vc, uint64_t addr, const pcow_bitmap *units,
                      const uint8_t *src, uint64_t o, uint64_t len, uint8_t *tmp)
{
    for (uint32_t u = 0; u < img->nsub; u++) {
        if (!bm_test(units, u))
            continue;
        uint32_t cnt = 1;
        while (u + cnt < img->nsub && bm_test(units, u + cnt))
            cnt++;
        uint64_t us = u * img->ssize, ue = us + (uint64_t)cnt * img->ssize;
        u += cnt - 1;
        bool covered = src && o <= us && o + len >= ue;
        if (covered) {
            int r = pcow__pwrite(img, src + (us - o), ue - us, addr + us);
            if (r < 0)
                return r;
            continue;
        }
        int r = pcow__read_layer(img, parent, vc, us, ue - us, tmp);
        if (r < 0)
            return r;
        if (src) {
            uint64_t s = o > us ? o : us, e = o + len < ue ? o + len : ue;
            if (s < e)
                memcpy(tmp + (s - us), src + (s - o), e - s);
        }
        r = pcow__pwrite(img, tmp, ue - us, addr + us);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Write new, file-contiguous clusters reserved sparse (pcow_write): the whole 2 MiB runs in
 * them are allocated first with one fallocate each, the rest by the pwrite. A 2 MiB request
 * at a run boundary is what ext4 places 2 MiB-aligned on the device (measured on fs-dax: every
 * run congruent; a 16 MiB pwrite's blocks followed the header's unaligned blocks instead). */
static int write_new(pcow_image *img, const uint8_t *p, uint64_t len, uint64_t addr)
{
    int r = pcow__alloc_runs(img, addr, len);
    return r < 0 ? r : pcow__pwrite(img, p, len, addr);
}

int pcow_write(pcow_image *img, const void *buf, uint64_t len, uint64_t off)
{
    int r = check_range(img, len, off);
    if (r < 0)
        return r;
    if (!img->rw)
        return pcow__err(img, EROFS, "image is open read-only");
    if (img->h.base_fmt && !img->base && img->base_fd < 0)
        return pcow__err(img, ENXIO, "base image '%s' is not open; writing could hide its data", img->h.base);
    if (!len)
        return 0;
    const uint8_t *p = buf;
    uint64_t first = off / img->csize, last = (off + len - 1) / img->csize;
    struct pend *pd = calloc(last - first + 1, sizeof *pd);
    uint8_t *tmp = malloc(img->csize);
    size_t np = 0;
    if (!pd || !tmp) {
        free(pd);
        free(tmp);
        return pcow__err(img, ENOMEM, "out of memory");
    }
    struct layer *A = &img->layers[img->active];
    bool fine = img->flags & PCOW_OPEN_FINE_COW;
    /* New clusters that follow each other in the file and in buf are written with one pwrite:
     * the page cache then holds large folios as for a raw file written the same way, which the
     * kernel can map with PMDs (the clusters are congruent, see pcow_reserve_for). */
    const uint8_t *wp = NULL;
    uint64_t wa = 0, wl = 0;
    while (len && r == 0) {
        uint64_t vc = off / img->csize, o = off % img->csize;
        uint64_t n = img->csize - o;
        if (n > len)
            n = len;
        uint64_t w0 = ent_w0(img, A, vc);
        uint64_t addr = w0 & cmask(img);
        if (w0 && !(w0 & ENTRY_PARTIAL)) {
            r = pcow__pwrite(img, p, n, addr + o);
        } else if (w0) {
            pcow_bitmap bm, tm, need;
            w1_bm(img, w0, ent_w1(img, A, vc), &bm);
            unit_mask(img, o, n, &tm);
            /* owned units: write in place; others: compose with lower data first */
            need = tm;
            bm_andnot(&need, &bm);
            for (uint32_t u = 0; u < img->nsub && r == 0; u++) {
                if (!bm_test(&tm, u) || bm_test(&need, u))
                    continue;
                uint64_t us = u * img->ssize, s = o > us ? o : us, e = o + n < us + img->ssize ? o + n : us + img->ssize;
                r = pcow__pwrite(img, p + (s - o), e - s, addr + s);
            }
            if (r == 0 && !pcow_bitmap_empty(&need)) {
                r = fill_units(img, A->parent, vc, addr, &need, p, o, n, tmp);
                bm_or(&bm, &need);
                pd[np++] = (struct pend){.vc = vc, .w0 = w0, .bm = bm};
            }
        } else {
            /* A cluster this write covers whole, with nothing below it, is reserved sparse: the
             * pwrite allocates its blocks, with those of its file-contiguous neighbours in one
             * request, as for a raw file written the same way (ext4 placed per-cluster
             * fallocates wherever they came, not 2 MiB-aligned on the device, so no DAX PMD
             * could map them). ENOSPC then comes from the pwrite, before any entry. */
            bool lower = has_lower(img, A->parent, vc);
            r = pcow__reserve_for(img, vc, n == img->csize && !lower, &addr);
            if (r == 0 && !lower) {
                /* the rest reads as zeros */
                if (wl && wa + wl == addr + o && wp + wl == p) {
                    wl += n;
                } else {
                    if (wl)
                        r = write_new(img, wp, wl, wa);
                    wp = p, wa = addr + o, wl = n;
                }
                pd[np++] = (struct pend){.vc = vc, .w0 = addr};
            } else if (r == 0 && fine) {
                pcow_bitmap tm;
                unit_mask(img, o, n, &tm);
                r = fill_units(img, A->parent, vc, addr, &tm, p, o, n, tmp);
                pd[np++] = (struct pend){.vc = vc, .w0 = addr | ENTRY_PARTIAL, .bm = tm};
            } else if (r == 0) {
                r = pcow__read_layer(img, A->parent, vc, 0, img->csize, tmp);
                if (r == 0) {
                    memcpy(tmp + o, p, n);
                    r = pcow__pwrite(img, tmp, img->csize, addr);
                }
                pd[np++] = (struct pend){.vc = vc, .w0 = addr};
            }
        }
        p += n;
        off += n;
        len -= n;
    }
    if (r == 0 && wl)
        r = write_new(img, wp, wl, wa);
    if (r == 0)
        r = pcow__persist_all(img); /* data durable before any entry */
    if (r == 0 && np)
        r = apply_entries(img, img->active, pd, np);
    free(pd);
    free(tmp);
    return r;
}

static int bad_bits(pcow_image *img, const pcow_bitmap *bm)
{
    return pcow__err(img, EINVAL, "bitmap has bits beyond the %u sub-units of a cluster (word %d: 0x%llx)", img->nsub,
                     img->nsub / 64, (unsigned long long)bm->w[img->nsub / 64 < BM_WORDS ? img->nsub / 64 : 0]);
}

int pcow_map_cluster(pcow_image *img, uint64_t vc, uint64_t addr, bool partial, const pcow_bitmap *bitmap)
{
    int rc = pcow__check_writable_vc(img, vc);
    if (rc < 0)
        return rc;
    if (addr % img->csize || addr < img->csize || addr >= img->end)
        return pcow__err(img, EINVAL, "address 0x%llx is not a reserved cluster", (unsigned long long)addr);
    if (partial && !bitmap)
        return pcow__err(img, EINVAL, "a partial entry needs a bitmap");
    if (partial && bm_beyond(img, bitmap))
        return bad_bits(img, bitmap);
    if (ent_w0(img, &img->layers[img->active], vc))
        return pcow__err(img, EEXIST, "virtual cluster %llu is already allocated in the active layer", (unsigned long long)vc);
    return pcow__set_entry(img, img->active, vc, addr | (partial ? ENTRY_PARTIAL : 0), partial ? bitmap : NULL);
}

int pcow_set_subunits(pcow_image *img, uint64_t vc, const pcow_bitmap *add)
{
    int rc = pcow__check_writable_vc(img, vc);
    if (rc < 0)
        return rc;
    struct layer *A = &img->layers[img->active];
    uint64_t w0 = ent_w0(img, A, vc);
    if (!(w0 & ENTRY_PARTIAL))
        return pcow__err(img, EINVAL, "virtual cluster %llu has no partial entry in the active layer", (unsigned long long)vc);
    if (!add)
        return pcow__err(img, EINVAL, "no bitmap given");
    if (bm_beyond(img, add))
        return bad_bits(img, add);
    pcow_bitmap bm;
    w1_bm(img, w0, ent_w1(img, A, vc), &bm);
    pcow_bitmap nb = bm;
    bm_or(&nb, add);
    if (bm_eq(&nb, &bm))
        return 0;
    return pcow__set_entry(img, img->active, vc, w0, &nb);
}

int pcow_alloc_cluster(pcow_image *img, uint64_t vc, bool fine, const pcow_bitmap *fbm)
{
    int rc = pcow__check_writable_vc(img, vc);
    if (rc < 0)
        return rc;
    if (img->h.base_fmt && !img->base && img->base_fd < 0)
        return pcow__err(img, ENXIO, "base image '%s' is not open; cannot copy from it", img->h.base);
    if (fine && !fbm)
        return pcow__err(img, EINVAL, "fine allocation needs a bitmap");
    struct layer *A = &img->layers[img->active];
    pcow_bitmap want;
    if (fine) {
        if (bm_beyond(img, fbm))
            return bad_bits(img, fbm);
        want = *fbm;
    } else {
        pcow__full_bm(img, &want);
    }
    uint64_t w0 = ent_w0(img, A, vc);
    if (w0 && !(w0 & ENTRY_PARTIAL))
        return 0;
    uint8_t *tmp = malloc(img->csize);
    if (!tmp)
        return pcow__err(img, ENOMEM, "out of memory");
    int r = 0;
    if (w0) {
        pcow_bitmap bm, need = want;
        w1_bm(img, w0, ent_w1(img, A, vc), &bm);
        bm_andnot(&need, &bm);
        if (!pcow_bitmap_empty(&need)) {
            r = fill_units(img, A->parent, vc, w0 & cmask(img), &need, NULL, 0, 0, tmp);
            if (r == 0)
                r = pcow__persist_all(img);
            bm_or(&bm, &need);
            if (r == 0)
                r = pcow__set_entry(img, img->active, vc, w0, &bm);
        }
    } else {
        uint64_t addr;
        r = pcow__reserve_for(img, vc, false, &addr);
        bool lower = has_lower(img, A->parent, vc);
        if (r == 0 && lower)
            r = fill_units(img, A->parent, vc, addr, &want, NULL, 0, 0, tmp);
        if (r == 0)
            r = pcow__persist_all(img);
        if (r == 0)
            r = pcow__set_entry(img, img->active, vc, addr | (fine ? ENTRY_PARTIAL : 0), fine ? &want : NULL);
    }
    free(tmp);
    return r;
}
