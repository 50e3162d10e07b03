/* pcow_check (consistency check and leak repair) and pcow_map (extent map). */
#define _GNU_SOURCE
#include "pcow_internal.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void say(struct ckctx *ck, const char *sev, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(struct ckctx *ck, const char *sev, const char *fmt, ...)
{
    if (!ck->msg)
        return;
    char b[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, sizeof b, fmt, ap);
    va_end(ap);
    ck->msg(ck->ctx, sev, b);
}

static bool is_zero(const uint8_t *p, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* Advance *c over clusters whose refmap bit equals `set` (64 at a time where aligned), up to lim. */
static void refmap_run(const pcow_image *img, uint64_t *c, uint64_t lim, bool set)
{
    const uint64_t all = set ? ~0ull : 0;
    while (*c < lim) {
        uint64_t w;
        if (*c % 64 == 0 && *c + 64 <= lim) {
            memcpy(&w, img->refmap + *c / 8, 8);
            if (w == all) {
                *c += 64;
                continue;
            }
        }
        if (!!(img->refmap[*c / 8] & (1u << (*c % 8))) != set)
            return;
        (*c)++;
    }
}

int pcow_check(const char *path, unsigned flags, unsigned repair, struct pcow_check_result *res, pcow_check_msg_fn msg,
               void *ctx, char *err, size_t errlen)
{
    memset(res, 0, sizeof *res);
    struct ckctx ck = {.msg = msg, .ctx = ctx, .res = res};
    unsigned of = flags & (PCOW_OPEN_NO_BASE | PCOW_OPEN_UNSAFE_BASE | PCOW_OPEN_NO_LOCK);
    if (repair)
        of = (of & ~PCOW_OPEN_NO_LOCK) | PCOW_OPEN_RDWR;
    pcow_image *img = NULL;
    int r = pcow__open_chain(path, of, 0, NULL, NULL, &ck, &img, err, errlen);
    if (!img)
        return r;
    if (r < 0) {
        pcow__free(img);
        if (res->corruptions)
            return 0; /* the check found the image unusable and said why */
        return r;
    }
    res->header_ok = img->slot_valid[0] && img->slot_valid[1];
    res->total_clusters = img->nclusters;
    if (img->nlayers)
        res->allocated_clusters = img->layers[img->active].owned;
    if (img->h.flags & HDR_FLAG_DIRTY)
        say(&ck, "info", "%s: image was not closed cleanly (dirty); leaked clusters are possible", path);
    uint64_t last_ref = 0;
    uint8_t *buf = malloc(img->csize);
    if (!buf) {
        pcow__free(img);
        pcow__copyerr(err, errlen, "out of memory");
        return -ENOMEM;
    }
    /* Leak scan by extents: only clusters that hold data in the files (SEEK_DATA/SEEK_HOLE) can
     * be leaks; holes are free space. The cost follows the stored data, not the file size.
     * Clusters named only by structures reported as corrupt (dropped) are not separate leaks;
     * a file that ends inside an unreferenced cluster is a leak (an unaligned tail). */
    uint64_t dropped = 0, tails[PCOW_MAX_STRIPES];
    uint32_t ntails = 0;
    if (ck.dir_ok && img->refmap_n) {
        last_ref = img->ref_last < img->refmap_n ? img->ref_last : img->refmap_n - 1;
        while (last_ref > 0 && !(img->refmap[last_ref / 8] & (1u << (last_ref % 8))))
            last_ref--; /* a reference dropped after it was counted */
        for (uint64_t w = 0; img->dropmap && w < (img->refmap_n + 7) / 8; w++) {
            if (!img->dropmap[w])
                continue;
            for (uint64_t c = w * 8; c < w * 8 + 8 && c < img->refmap_n; c++) {
                if (!(img->dropmap[c / 8] & (1u << (c % 8))) || (img->refmap[c / 8] & (1u << (c % 8))))
                    continue;
                dropped++;
                if (c > last_ref)
                    last_ref = c; /* kept: it may be data once the corruption is understood */
            }
        }
        for (uint32_t f = 0; f < img->nfiles; f++) {
            uint64_t have = img->fsize[f] % img->csize;
            if (!have)
                continue;
            uint64_t c = pcow__logical(img, f, img->fsize[f] - have) / img->csize;
            if (c >= img->refmap_n || (img->refmap[c / 8] & (1u << (c % 8))) ||
                (img->dropmap && (img->dropmap[c / 8] & (1u << (c % 8)))))
                continue; /* a reference into it is reported where it is read */
            tails[ntails++] = c;
            res->leaks++;
            say(&ck, "leak", "%s: leaked cluster at offset 0x%llx (%s ends 0x%llx bytes into it: an unaligned tail)",
                path, (unsigned long long)(c * img->csize), img->fpath[f], (unsigned long long)have);
        }
        uint64_t end = img->refmap_n * img->csize, pos = 0, next = 0, ds, de;
        while (pos < end && pcow__data_range(img, pos, end, &ds, &de)) {
            for (uint64_t c = ds / img->csize > next ? ds / img->csize : next; c * img->csize < de; c++) {
                next = c + 1;
                if (img->refmap[c / 8] & (1u << (c % 8)))
                    continue;
                if (img->dropmap && (img->dropmap[c / 8] & (1u << (c % 8))))
                    continue;
                bool tail = false;
                for (uint32_t t = 0; t < ntails; t++)
                    tail |= tails[t] == c;
                if (tail)
                    continue;
                if (pcow__pread_for(img, buf, img->csize, c * img->csize, "an unreferenced cluster") < 0) {
                    res->check_errors++;
                    say(&ck, "error", "%s", img->err);
                    continue;
                }
                if (!is_zero(buf, img->csize)) {
                    res->leaks++;
                    say(&ck, "leak", "%s: leaked cluster at offset 0x%llx (not referenced, holds data)", path,
                        (unsigned long long)(c * img->csize));
                }
            }
            pos = next * img->csize > de ? next * img->csize : de;
        }
    }
    /* Bitmap clusters: records no entry references are free slots; one that holds bits is a
     * leak (a crash between writing a record and the entry that would point at it, or a
     * record whose zeroing after a structural change did not happen). */
    uint64_t *leak_recs = NULL;
    size_t nleak_recs = 0;
    if (ck.dir_ok && img->nrecs) {
        uint64_t cm = ~(img->csize - 1), per = img->csize / BM_REC_SIZE;
        leak_recs = malloc(64 * sizeof *leak_recs);
        size_t cap = leak_recs ? 64 : 0;
        for (size_t i = 0; i < img->nrecs;) {
            uint64_t c = img->recs[i].addr & cm;
            if (pcow__pread(img, buf, img->csize, c) < 0) {
                res->check_errors++;
                say(&ck, "error", "%s", img->err);
            } else {
                size_t j = i;
                for (uint64_t sl = 0; sl < per; sl++) {
                    uint64_t a = c + sl * BM_REC_SIZE;
                    while (j < img->nrecs && img->recs[j].addr < a)
                        j++;
                    if ((j < img->nrecs && img->recs[j].addr == a) || is_zero(buf + sl * BM_REC_SIZE, BM_REC_SIZE))
                        continue;
                    res->leaks++;
                    say(&ck, "leak", "%s: leaked bitmap record at offset 0x%llx (not referenced, holds bits)", path,
                        (unsigned long long)a);
                    if (nleak_recs == cap) {
                        uint64_t *n = realloc(leak_recs, (cap ? cap * 2 : 64) * sizeof *n);
                        if (!n)
                            continue; /* reported, just not repaired */
                        leak_recs = n;
                        cap = cap ? cap * 2 : 64;
                    }
                    leak_recs[nleak_recs++] = a;
                }
            }
            while (i < img->nrecs && (img->recs[i].addr & cm) == c)
                i++;
        }
    }
    if (dropped)
        say(&ck, "info", "%s: %llu cluster(s) named only by entries or tables reported as corrupt above are not counted as leaks",
            path, (unsigned long long)dropped);
    res->image_end_offset = img->end;
    /* corruptions -r all repairs (damaged header slot, non-zero header cluster tail) do not
     * stop the leak repair of the same run: one run converges */
    uint64_t hdr_bad = (uint64_t)img->slot_damaged[0] + img->slot_damaged[1] + img->hdr_tail_bad;
    uint64_t hdr_fixable = (repair & PCOW_REPAIR_ALL) == PCOW_REPAIR_ALL ? hdr_bad : 0;
    if ((repair & PCOW_REPAIR_LEAKS) && ck.dir_ok && img->refmap_n) {
        if (res->corruptions > hdr_fixable) {
            say(&ck, "info", "%s: not repairing leaks while the image has corruptions (their clusters may be data)", path);
        } else {
            /* every unreferenced run before the last referenced cluster is punched in one call
             * (leaks, zero clusters, and space reserved but never written, which SEEK_DATA may
             * show as a hole); the tail is truncated below. Clusters named by dropped
             * structures count as referenced: never freed. */
            for (uint64_t w = 0; img->dropmap && w < (img->refmap_n + 7) / 8; w++)
                img->refmap[w] |= img->dropmap[w];
            for (uint64_t c = 1; c < last_ref;) {
                uint64_t s0 = c;
                refmap_run(img, &c, last_ref, false);
                if (c > s0)
                    pcow__free_clusters(img, s0 * img->csize, c - s0);
                refmap_run(img, &c, last_ref, true);
            }
            static const uint8_t z[BM_REC_SIZE];
            for (size_t i = 0; i < nleak_recs; i++)
                if (pcow__pwrite(img, z, BM_REC_SIZE, leak_recs[i]) < 0) {
                    res->check_errors++;
                    say(&ck, "error", "%s", img->err);
                }
            uint64_t ne = (last_ref + 1) * img->csize;
            for (uint32_t f = 0; f < img->nfiles; f++) {
                uint64_t fs = pcow__file_size_at(img, ne, f);
                if (fs < img->fsize[f] && ftruncate(img->fd[f], (off_t)fs) < 0) {
                    res->check_errors++;
                    say(&ck, "error", "%s: cannot truncate %s: %s", path, img->fpath[f], strerror(errno));
                } else if (fs < img->fsize[f]) {
                    img->fsize[f] = fs;
                    img->size_changed[f] = true;
                }
                /* a stripe file ending inside a cluster before the end: pad it to the boundary */
                uint64_t up = (img->fsize[f] + img->csize - 1) / img->csize * img->csize;
                if (up != img->fsize[f]) {
                    if (ftruncate(img->fd[f], (off_t)up) < 0) {
                        res->check_errors++;
                        say(&ck, "error", "%s: cannot extend %s to a cluster boundary: %s", path, img->fpath[f], strerror(errno));
                    } else {
                        img->fsize[f] = up;
                        img->size_changed[f] = true;
                    }
                }
            }
            img->end = ne;
            res->image_end_offset = ne;
            res->leaks_fixed = res->leaks;
            res->leaks = 0;
            if (pcow__persist_all(img) < 0) {
                res->check_errors++;
                say(&ck, "error", "%s", img->err);
            }
        }
    }
    bool rewrite = false;
    if (hdr_fixable && res->corruptions == hdr_fixable) {
        rewrite = true;
        if (img->hdr_tail_bad) {
            /* zero the header cluster after the slots (before the slots are rewritten) */
            uint64_t lim = img->csize < img->fsize[0] ? img->csize : img->fsize[0];
            memset(buf, 0, img->csize);
            if (lim > 2 * HDR_SLOT_SIZE && pcow__pwrite(img, buf, lim - 2 * HDR_SLOT_SIZE, 2 * HDR_SLOT_SIZE) < 0) {
                res->check_errors++;
                say(&ck, "error", "%s", img->err);
                rewrite = false;
            }
        }
    }
    if (rewrite) {
        res->corruptions_fixed = hdr_bad;
        res->corruptions = 0;
    }
    if (repair && !res->corruptions && (rewrite || (img->h.flags & HDR_FLAG_DIRTY))) {
        struct hdr nh = img->h;
        nh.flags &= ~HDR_FLAG_DIRTY;
        if (pcow__write_header(img, &nh) < 0) {
            res->check_errors++;
            say(&ck, "error", "%s", img->err);
        }
    }
    free(leak_recs);
    free(buf);
    pcow__free(img);
    return 0;
}

/* ---- map ---- */

struct mapst {
    pcow_map_fn fn;
    void *ctx;
    struct pcow_map_extent cur;
    bool have;
};

static int emit(struct mapst *m, uint64_t start, uint64_t len, int depth, bool data, uint64_t off, const char *file)
{
    struct pcow_map_extent *c = &m->cur;
    if (m->have && c->start + c->length == start && c->depth == depth && c->data == data && c->file == file &&
        (!data || c->offset + c->length == off)) {
        c->length += len;
        return 0;
    }
    if (m->have) {
        int r = m->fn(m->ctx, c);
        if (r)
            return r;
    }
    *c = (struct pcow_map_extent){.start = start, .length = len, .depth = depth, .data = data, .zero = !data,
                                  .offset = data ? off : 0, .file = file};
    m->have = true;
    return 0;
}

static int map_range(pcow_image *img, uint64_t off, uint64_t len, int depth0, uint64_t out, struct mapst *m);

/* A raw base by its own extents: holes (SEEK_HOLE) read as zeros and are mapped as such, so the
 * cost follows the base's data, not its size. Without SEEK_DATA everything is data. */
static int map_raw(pcow_image *img, uint64_t off, uint64_t n, int depth, uint64_t out, struct mapst *m)
{
    uint64_t pos = off, end = off + n;
    int r = 0;
    while (r == 0 && pos < end) {
        off_t d = lseek(img->base_fd, (off_t)pos, SEEK_DATA);
        uint64_t ds = d < 0 ? (errno == ENXIO ? end : pos) : (uint64_t)d, de = end;
        if (ds > end)
            ds = end;
        if (ds > pos)
            r = emit(m, out + (pos - off), ds - pos, depth, false, 0, NULL);
        if (r || ds >= end)
            break;
        off_t h = d < 0 ? -1 : lseek(img->base_fd, (off_t)ds, SEEK_HOLE);
        if (h >= 0 && (uint64_t)h < end && (uint64_t)h > ds)
            de = (uint64_t)h;
        r = emit(m, out + (ds - off), de - ds, depth, true, ds, img->base_resolved);
        pos = de;
    }
    return r;
}

static int map_base(pcow_image *img, uint64_t off, uint64_t len, int depth, uint64_t out, struct mapst *m)
{
    if (!img->h.base_fmt)
        return emit(m, out, len, depth, false, 0, NULL);
    uint64_t n = off < img->base_size ? img->base_size - off : 0;
    if (n > len)
        n = len;
    int r = 0;
    if (n && img->base)
        r = map_range(img->base, off, n, depth, out, m);
    else if (n)
        r = map_raw(img, off, n, depth, out, m);
    if (r == 0 && n < len)
        r = emit(m, out + n, len - n, depth, false, 0, NULL);
    return r;
}

static int map_layer(pcow_image *img, int li, int d, int depth0, uint64_t vc, uint64_t o, uint64_t len, uint64_t out,
                     struct mapst *m)
{
    while (li >= 0) {
        const struct layer *L = &img->layers[li];
        uint64_t w0 = ent_w0(img, L, vc);
        if (w0) {
            uint64_t addr = w0 & ~(img->csize - 1);
            pcow_bitmap bm;
            ent_owned(img, L, vc, w0, &bm);
            for (uint64_t pos = o; pos < o + len;) {
                uint64_t u = pos / img->ssize, e = (u + 1) * img->ssize;
                if (e > o + len)
                    e = o + len;
                int r;
                if (bm_test(&bm, (uint32_t)u)) {
                    uint32_t f;
                    uint64_t fo;
                    pcow__addr(img, addr + pos, &f, &fo);
                    r = emit(m, out + (pos - o), e - pos, depth0 + d, true, fo, img->fpath[f]);
                } else {
                    r = map_layer(img, L->parent, d + 1, depth0, vc, pos, e - pos, out + (pos - o), m);
                }
                if (r)
                    return r;
                pos = e;
            }
            return 0;
        }
        li = L->parent;
        d++;
    }
    return map_base(img, vc * img->csize + o, len, depth0 + d, out, m);
}

/* By L1 entries: a range that no layer of the chain has an L2 table for reads through to the
 * base as a whole (one step per L1 entry and layer, not per cluster); clusters are visited only
 * inside L2 tables that exist. */
static int map_range(pcow_image *img, uint64_t off, uint64_t len, int depth0, uint64_t out, struct mapst *m)
{
    const uint64_t tspan = img->l2n * img->csize; /* virtual bytes per L1 entry */
    while (len) {
        uint64_t t = off / tspan, tn = (t + 1) * tspan - off;
        int d = 0;
        bool tables = false, chunks = false, pages = false;
        for (int li = (int)img->active; li >= 0 && !tables; li = img->layers[li].parent, d++) {
            const struct layer *L = &img->layers[li];
            pages |= __atomic_load_n(&L->l1p[t >> L1P_SHIFT], __ATOMIC_ACQUIRE) != NULL;
            chunks |= l1_chunk(L, t) != NULL;
            tables = l2_tab(L, t) != NULL;
        }
        /* no layer has a table in this whole page / chunk of L1 entries: skip it whole */
        if (!pages)
            tn = (((t >> L1P_SHIFT) + 1) << L1P_SHIFT) * tspan - off;
        else if (!chunks)
            tn = (((t >> L1C_BITS) + 1) << L1C_BITS) * tspan - off;
        if (!tables) {
            if (tn > len)
                tn = len;
            int r = map_base(img, off, tn, depth0 + d, out, m);
            if (r)
                return r;
            off += tn;
            out += tn;
            len -= tn;
            continue;
        }
        uint64_t vc = off / img->csize, o = off % img->csize, n = img->csize - o;
        if (n > len)
            n = len;
        int r = map_layer(img, (int)img->active, 0, depth0, vc, o, n, out, m);
        if (r)
            return r;
        off += n;
        out += n;
        len -= n;
    }
    return 0;
}

int pcow_map(pcow_image *img, pcow_map_fn fn, void *ctx)
{
    if (!img->nlayers)
        return pcow__err(img, EIO, "image has no usable layer directory");
    struct mapst m = {.fn = fn, .ctx = ctx};
    int r = map_range(img, 0, img->h.vsize, 0, 0, &m);
    if (r == 0 && m.have)
        r = fn(ctx, &m.cur);
    return r;
}
