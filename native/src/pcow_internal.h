/* Internal structures of libpcow. On-disk layout: see native/FORMAT.md. */
#ifndef PCOW_INTERNAL_H
#define PCOW_INTERNAL_H

#include "pcow.h"
#include <stdarg.h>
#include <string.h>
#include <sys/types.h>

#define HDR_SLOT_SIZE 2048u
#define HDR_SLOT1_OFF 2048u
#define DIR_REC_SIZE 128u
#define L2_ENTRY_SIZE 16u
#define ENTRY_PARTIAL 0x1ull
#define HDR_FLAG_DIRTY 0x1ull
#define INCOMPAT_STRIPES 0x1ull
#define INCOMPAT_BITMAP_RECORDS 0x2ull /* > 64 sub-units: word 1 of a partial entry addresses a record */
#define INCOMPAT_KNOWN (INCOMPAT_STRIPES | INCOMPAT_BITMAP_RECORDS)
#define BM_REC_SIZE 64u   /* one cache line: 512 bits */
#define BM_WORDS (PCOW_MAX_SUBUNITS / 64)
#define MAX_VIRTUAL_SIZE (1ull << 52) /* 4 PiB */
#define MAX_STRIPE_UNIT_BITS 30
#define MAX_L1_BYTES (64ull << 20) /* per layer */

extern const uint8_t pcow_magic[8];

struct hdr {
    uint64_t gen, incompat, compat, flags;
    uint32_t cbits, sbits;
    uint64_t vsize, dir_off;
    uint32_t dir_count, dir_crc, active_id, next_id, nstripes, ubits, base_fmt;
    uint32_t base_len;
    char base[PCOW_BASE_PATH_MAX + 1];
    char sname[PCOW_MAX_STRIPES][PCOW_STRIPE_NAME_MAX + 1]; /* [0] unused */
};

/* The in-memory L1 of a layer is sparse: a two-level radix tree (directory pages of L1D_N
 * chunks of L1C_N entries), pages and chunks only where the layer has L2 tables, so memory
 * follows the tables that exist, not the declared L1 size (a layer without tables costs 8 bytes
 * per 2^18 L1 entries: <= 256 bytes at the 64 MiB L1 limit). Pages, chunks and tables are
 * published with release stores for lock-free lookups; they are freed only with the layer. */
#define L1C_BITS 9
#define L1C_N (1u << L1C_BITS)
#define L1D_BITS 9
#define L1D_N (1u << L1D_BITS)
#define L1P_SHIFT (L1C_BITS + L1D_BITS) /* L1 entries per directory page: 2^18 */
struct l1chunk {
    uint64_t l1[L1C_N];  /* host-order L2 table addresses (0 = not written yet / none) */
    uint64_t *l2[L1C_N]; /* in-memory L2 tables (2 words per entry), NULL = none */
};
struct l1page {
    struct l1chunk *c[L1D_N];
};

struct layer {
    uint32_t id, parent_id;
    uint64_t l1_off;
    uint64_t ctime_sec;
    uint32_t ctime_nsec;
    char name[PCOW_LAYER_NAME_MAX + 1];
    struct l1page **l1p; /* (l1n >> L1P_SHIFT) + 1 pages, NULL = no table in that range */
    int parent;     /* index in layers[], -1 = bottom */
    uint64_t owned; /* data clusters referenced */
};

/* In-memory bitmap of a partial entry of a BITMAP_RECORDS image: word 1 of the in-memory L2
 * entry holds a pointer to one of these (0 = empty bitmap, no record on disk). Words are only
 * ever OR-ed in place (atomic stores) while lock-free lookups read them. */
struct bmrec {
    uint64_t addr;          /* logical address of the 64-byte record */
    uint64_t w[BM_WORDS];
};

/* A bitmap record reference seen while loading (validation, check, free slots). */
struct recref {
    uint64_t addr, vc;
    uint32_t layer_id;
};

struct ckctx {
    pcow_check_msg_fn msg;
    void *ctx;
    struct pcow_check_result *res;
    bool dir_ok;
};

struct pcow_image {
    char *path;
    char *dirpath;
    int dirfd;
    unsigned flags;
    bool rw;
    bool broken;
    uint32_t nfiles;
    int fd[PCOW_MAX_STRIPES];
    char *fpath[PCOW_MAX_STRIPES];
    uint64_t fsize[PCOW_MAX_STRIPES];
    uint64_t dirty_lo[PCOW_MAX_STRIPES], dirty_hi[PCOW_MAX_STRIPES]; /* written since the last persist */
    bool size_changed[PCOW_MAX_STRIPES];  /* fallocate since the last persist */
    bool may_alloc[PCOW_MAX_STRIPES];     /* written since the last persist where the write may have
                                             allocated blocks or converted unwritten extents (any
                                             write but pcow__pwrite_inplace) */
    struct hdr h;
    int cur_slot;           /* slot the header was loaded from */
    bool slot_valid[2];
    bool slot_newer[2];     /* checksum right, newer format version (not damaged) */
    bool slot_damaged[2];
    bool hdr_tail_bad;      /* check: non-zero bytes in the header cluster after the slots */
    uint8_t *dropmap;       /* check: clusters referenced only by dropped (invalid) structures */
    uint64_t csize, ssize, unit;
    uint32_t nsub;
    bool ext;               /* BITMAP_RECORDS: bitmaps live in 64-byte records */
    uint64_t *bm_free;      /* free record slots in referenced bitmap clusters (found at open) */
    size_t bm_nfree, bm_capfree;
    uint64_t bm_next, bm_lim; /* unused records of the bitmap cluster appended last */
    struct recref *recs;    /* while loading (kept for check) */
    size_t nrecs, caprecs;
    uint64_t nclusters, l2n, l1n, l1_span, l2_mask;
    uint64_t end;           /* logical end, cluster aligned */
    struct layer *layers;
    uint32_t nlayers, active;
    /* base chain */
    pcow_image *base;       /* pcow base */
    int base_fd;            /* raw base, -1 if none */
    uint64_t base_size;     /* bytes readable from the base (virtual size / raw file size) */
    char base_resolved[4096];
    pcow_persist_fn persist;
    void *persist_ctx;
    struct ckctx *ck;       /* non-NULL while pcow_check loads the image */
    uint8_t *refmap;        /* one bit per cluster of [0, end) while loading */
    uint64_t refmap_n;
    uint64_t ref_last;      /* highest cluster ever marked in refmap */
    uint64_t table_bytes_read; /* L1/L2 bytes read while loading (tests: cost follows stored tables) */
    char err[1024];
};

/* errors */
int pcow__err(pcow_image *img, int e, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void pcow__copyerr(char *dst, size_t n, const char *src);
int pcow__corrupt(pcow_image *img, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* header / directory encoding */
void pcow__hdr_encode(const struct hdr *h, int slot, uint8_t *buf);
int pcow__hdr_decode(const uint8_t *buf, int slot, struct hdr *h, char *why, size_t whylen);
int pcow__write_header(pcow_image *img, const struct hdr *nh);
const char *pcow__hdr_field(size_t off);

/* io at logical addresses */
void pcow__addr(const pcow_image *img, uint64_t addr, uint32_t *f, uint64_t *off);
int pcow__pread(pcow_image *img, void *buf, uint64_t len, uint64_t addr);
/* what names the structure read, for a short-read message ("the layer directory"). */
int pcow__pread_for(pcow_image *img, void *buf, uint64_t len, uint64_t addr, const char *what);
int pcow__pwrite(pcow_image *img, const void *buf, uint64_t len, uint64_t addr);
int pcow__persist_all(pcow_image *img);
/* A write over bytes that were written (not just reserved) and made durable before, e.g. an entry
 * of an L2 table (tables are written whole when created): it allocates nothing, so a persist hook
 * may make it durable without the file's metadata (see pcow_persist_fn). */
/* fallocate the whole PCOW_RUN_SIZE runs inside [addr, addr+len) of reserved clusters, one call
 * per run (placement on the device, see write_new in data.c); nothing when runs do not apply. */
int pcow__alloc_runs(pcow_image *img, uint64_t addr, uint64_t len);
int pcow__pwrite_inplace(pcow_image *img, const void *buf, uint64_t len, uint64_t addr);
int pcow__reserve(pcow_image *img, uint64_t n, uint64_t *addr);
/* Preconditions shared by the public calls: the image is usable (not broken after a failed
 * in-place write); and, for calls that change virtual cluster vc, also writable with vc in range.
 * Return 0 or a negative errno with the image's message set. */
int pcow__check_usable(pcow_image *img);
int pcow__check_writable_vc(pcow_image *img, uint64_t vc);
int pcow__reserve_sparse(pcow_image *img, uint64_t n, uint64_t *addr);
/* One cluster for virtual cluster vc, congruent modulo PCOW_RUN_SIZE when it starts a run. */
int pcow__reserve_for(pcow_image *img, uint64_t vc, bool sparse, uint64_t *addr);
void pcow__free_clusters(pcow_image *img, uint64_t addr, uint64_t n);
bool pcow__in_file(const pcow_image *img, uint64_t addr, uint64_t len);
/* The first run [*ds, *de) of logical addresses in [addr, end) that holds data in the files
 * (SEEK_DATA/SEEK_HOLE; a file system without them reports everything as data); false when
 * the rest is holes. Runs are cut at stripe units. Cost: one lseek per stripe file + one. */
bool pcow__data_range(const pcow_image *img, uint64_t addr, uint64_t end, uint64_t *ds, uint64_t *de);
/* Size stripe file f must have for the logical image to end at e (cluster aligned). */
uint64_t pcow__file_size_at(const pcow_image *img, uint64_t e, uint32_t f);
/* Logical address of offset off in stripe file f (the inverse of pcow__addr). */
uint64_t pcow__logical(const pcow_image *img, uint32_t f, uint64_t off);

/* tables */
/* The chunk holding L1 entry t of L, or NULL. */
static inline struct l1chunk *l1_chunk(const struct layer *L, uint64_t t)
{
    struct l1page *p = __atomic_load_n(&L->l1p[t >> L1P_SHIFT], __ATOMIC_ACQUIRE);
    return p ? __atomic_load_n(&p->c[(t >> L1C_BITS) & (L1D_N - 1)], __ATOMIC_ACQUIRE) : NULL;
}
/* In-memory L2 table of L1 entry t of L, or NULL. */
static inline uint64_t *l2_tab(const struct layer *L, uint64_t t)
{
    struct l1chunk *c = l1_chunk(L, t);
    return c ? __atomic_load_n(&c->l2[t & (L1C_N - 1)], __ATOMIC_ACQUIRE) : NULL;
}
/* Address of the L2 table of L1 entry t on disk (0 = none, or not written yet). */
static inline uint64_t l1_addr(const struct layer *L, uint64_t t)
{
    const struct l1chunk *c = l1_chunk(L, t);
    return c ? c->l1[t & (L1C_N - 1)] : 0;
}
/* The first L1 entry >= t of L that has an in-memory L2 table, or l1n: iterate the tables that
 * exist, skipping empty pages and chunks whole. Writer side (no concurrent table insertion). */
static inline uint64_t l1_next(const pcow_image *img, const struct layer *L, uint64_t t)
{
    while (t < img->l1n) {
        const struct l1chunk *c;
        if (!L->l1p[t >> L1P_SHIFT])
            t = ((t >> L1P_SHIFT) + 1) << L1P_SHIFT;
        else if (!(c = l1_chunk(L, t)))
            t = ((t >> L1C_BITS) + 1) << L1C_BITS;
        else if (c->l2[t & (L1C_N - 1)])
            return t;
        else
            t++;
    }
    return img->l1n;
}
/* L's (empty) top-level directory. */
int pcow__l1_alloc(pcow_image *img, struct layer *L);
/* Make sure the page and chunk holding L1 entry t exist (so that a later l1_set cannot fail). */
int pcow__l1_chunk(pcow_image *img, struct layer *L, uint64_t t);
/* Set L1 entry t: disk address a and in-memory table tab (published with a release store).
 * The chunk must exist (pcow__l1_chunk). */
static inline void l1_set(struct layer *L, uint64_t t, uint64_t a, uint64_t *tab)
{
    struct l1chunk *c = l1_chunk(L, t);
    c->l1[t & (L1C_N - 1)] = a;
    __atomic_store_n(&c->l2[t & (L1C_N - 1)], tab, __ATOMIC_RELEASE);
}
static inline uint64_t ent_w0(const pcow_image *img, const struct layer *L, uint64_t vc)
{
    uint64_t *t = l2_tab(L, vc / img->l2n);
    return t ? __atomic_load_n(&t[2 * (vc % img->l2n)], __ATOMIC_ACQUIRE) : 0;
}
static inline uint64_t ent_w1(const pcow_image *img, const struct layer *L, uint64_t vc)
{
    uint64_t *t = l2_tab(L, vc / img->l2n);
    return t ? __atomic_load_n(&t[2 * (vc % img->l2n) + 1], __ATOMIC_ACQUIRE) : 0;
}
int pcow__set_entry(pcow_image *img, uint32_t li, uint64_t vc, uint64_t w0, const pcow_bitmap *bm);
void pcow__full_bm(const pcow_image *img, pcow_bitmap *out);
/* The bitmap of a partial entry whose in-memory word 1 is w1 (any entry: zeros if not partial). */
static inline void w1_bm(const pcow_image *img, uint64_t w0, uint64_t w1, pcow_bitmap *o)
{
    memset(o, 0, sizeof *o);
    if (!(w0 & ENTRY_PARTIAL))
        return;
    if (!img->ext) {
        o->w[0] = w1;
        return;
    }
    const struct bmrec *p = (const struct bmrec *)(uintptr_t)w1;
    if (p)
        for (int i = 0; i < BM_WORDS; i++)
            o->w[i] = __atomic_load_n(&p->w[i], __ATOMIC_ACQUIRE);
}
/* Sub-units layer L owns for vc: none (no entry), all (full entry) or the partial bitmap. */
static inline void ent_owned(const pcow_image *img, const struct layer *L, uint64_t vc, uint64_t w0, pcow_bitmap *o)
{
    if (!w0)
        memset(o, 0, sizeof *o);
    else if (!(w0 & ENTRY_PARTIAL))
        pcow__full_bm(img, o);
    else
        w1_bm(img, w0, ent_w1(img, L, vc), o);
}
static inline bool bm_test(const pcow_bitmap *b, uint32_t k) { return (b->w[k / 64] >> (k % 64)) & 1; }
static inline bool bm_eq(const pcow_bitmap *a, const pcow_bitmap *b) { return !memcmp(a, b, sizeof *a); }
static inline void bm_or(pcow_bitmap *a, const pcow_bitmap *b)
{
    for (int i = 0; i < BM_WORDS; i++)
        a->w[i] |= b->w[i];
}
static inline void bm_andnot(pcow_bitmap *a, const pcow_bitmap *b)
{
    for (int i = 0; i < BM_WORDS; i++)
        a->w[i] &= ~b->w[i];
}
/* Does b have bits at or beyond the image's sub-unit count? */
static inline bool bm_beyond(const pcow_image *img, const pcow_bitmap *b)
{
    pcow_bitmap f = *b, full;
    pcow__full_bm(img, &full);
    bm_andnot(&f, &full);
    return !pcow_bitmap_empty(&f);
}
void pcow__bm_free_rec(pcow_image *img, uint64_t w0, uint64_t w1);
int pcow__bm_clone(const pcow_image *img, uint64_t w0, uint64_t *w1);
int pcow__bm_write_rec(pcow_image *img, const pcow_bitmap *bm, uint64_t *addr);
int pcow__read_layer(pcow_image *img, int li, uint64_t vc, uint64_t o, uint64_t len, uint8_t *buf);
int pcow__read_base(pcow_image *img, uint64_t off, uint64_t len, uint8_t *buf);
int pcow__open_chain(const char *path, unsigned flags, int depth, dev_t *devs, ino_t *inos,
                     struct ckctx *ck, pcow_image **out, char *err, size_t errlen);
void pcow__free(pcow_image *img);
void pcow__free_layer(pcow_image *img, struct layer *L);
int pcow__write_dir(pcow_image *img, struct layer *layers, uint32_t n, uint32_t active_id,
                    uint32_t next_id, const struct hdr *base_hdr);
int pcow__new_l1(pcow_image *img, struct layer *L);
int pcow__write_tables(pcow_image *img, struct layer *L);
int pcow__resolve_base(pcow_image *img, const char *stored, int fmt, unsigned flags,
                       pcow_image **bimg, int *bfd, uint64_t *bsize, char *resolved, size_t rlen,
                       int depth, dev_t *devs, ino_t *inos);
int pcow__check_base_path(const char *p, bool allow_unsafe, char *why, size_t whylen);
int pcow__collect_refs(pcow_image *img, uint64_t **out, size_t *n);
void pcow__free_unreferenced(pcow_image *img, uint64_t *old, size_t nold);
void pcow__relink(pcow_image *img);

#endif
