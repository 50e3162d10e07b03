/*
 * libpcow: the pcow image format (see native/FORMAT.md) for virtual persistent memory.
 *
 * Conventions for every function below:
 * - Functions that can fail return 0 (or a count) on success and a negative errno on failure.
 *   Functions that take an image fill that image's error buffer (pcow_errmsg()); functions that
 *   have no image yet take a caller-provided buffer (err, errlen; may be NULL). Messages name
 *   the file and what is wrong, e.g. "x.img: L2 table at 0x30000 lies outside the file (size 0x20000)".
 * - No global state: any number of images may be open in one process.
 * - Thread safety: a pcow_image is single-writer. Calls that change the image must be
 *   serialised by the caller. pcow_lookup, pcow_entry_get and pcow_extent_next read only
 *   in-memory tables, take no lock and do no I/O, so a fault handler may call them
 *   concurrently with ONE thread doing data-path updates (pcow_write, pcow_reserve,
 *   pcow_map_cluster, pcow_set_subunits, pcow_alloc_cluster): entries are published with
 *   release stores after they are durable and read with acquire loads (tested under TSan).
 *   Structural operations (snapshot create/delete/apply, rebase, commit, pcow_close) replace
 *   tables and need the image to themselves: no concurrent call of any kind.
 *   pcow_read may run concurrently with other pcow_read calls and with the lookups.
 * - The library never calls exit() or abort(), and validates every on-disk value before use.
 */
#ifndef PCOW_H
#define PCOW_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PCOW_VERSION 1
#define PCOW_MIN_CLUSTER_BITS 12 /* 4 KiB */
#define PCOW_MAX_CLUSTER_BITS 21 /* 2 MiB */
#define PCOW_MAX_STRIPES 8
#define PCOW_BASE_PATH_MAX 512  /* bytes, without terminating NUL */
#define PCOW_STRIPE_NAME_MAX 127
#define PCOW_LAYER_NAME_MAX 64
#define PCOW_MAX_LAYERS 4096
#define PCOW_MAX_BASE_DEPTH 64
#define PCOW_MAX_SUBUNITS 512   /* sub-units per cluster (4 KiB units in a 2 MiB cluster) */

/* Which sub-units of a cluster a layer owns: bit k (word k/64, bit k%64) = sub-unit k. Bits at
 * or beyond the image's subunits_per_cluster are always 0. */
typedef struct pcow_bitmap {
    uint64_t w[PCOW_MAX_SUBUNITS / 64];
} pcow_bitmap;
static inline bool pcow_bitmap_test(const pcow_bitmap *b, uint32_t k) { return (b->w[k / 64] >> (k % 64)) & 1; }
static inline void pcow_bitmap_set(pcow_bitmap *b, uint32_t k) { b->w[k / 64] |= 1ull << (k % 64); }
/* Set bits [first, first+count). */
static inline void pcow_bitmap_set_range(pcow_bitmap *b, uint32_t first, uint32_t count)
{
    for (uint32_t k = first; k < first + count && k < PCOW_MAX_SUBUNITS; k++)
        pcow_bitmap_set(b, k);
}
static inline bool pcow_bitmap_empty(const pcow_bitmap *b)
{
    uint64_t o = 0;
    for (int i = 0; i < PCOW_MAX_SUBUNITS / 64; i++)
        o |= b->w[i];
    return o == 0;
}

enum pcow_base_format { PCOW_BASE_NONE = 0, PCOW_BASE_RAW = 1, PCOW_BASE_PCOW = 2 };

typedef struct pcow_image pcow_image;

/* Where durability comes from. Called at each ordering point of the update protocol, once per
 * file written (pwrite) or extended (fallocate) since the previous call; [off, off+len) spans
 * the bytes written. len is 0 when the file was extended, or written where a write may have
 * allocated blocks or converted unwritten extents: then only fdatasync (the file's metadata)
 * makes it durable. len > 0 only for overwrites of bytes that were written and made durable
 * before (entries of existing tables): no metadata changed. Everything written before must be
 * durable when it returns. Default: fdatasync(fd). A DAX runtime plugs in a fence for len > 0
 * (a pwrite to a DAX file leaves nothing in the CPU caches) and fdatasync for len 0.
 * Returns 0 or a negative errno. */
typedef int (*pcow_persist_fn)(void *ctx, int fd, uint64_t off, uint64_t len);

struct pcow_create_opts {
    uint64_t virtual_size;      /* bytes, > 0 */
    uint32_t cluster_size;      /* power of two, 4 KiB .. 2 MiB; 0 = 64 KiB */
    uint32_t subunit_size;      /* fine-grained COW unit: power of two, 4 KiB .. cluster; 0 = 4 KiB.
                                   More than 64 sub-units per cluster (clusters > 256 KiB) sets the
                                   BITMAP_RECORDS incompatible feature (FORMAT.md) */
    const char *base;           /* base image path as stored (relative to the new image's dir) or NULL */
    int base_format;            /* PCOW_BASE_RAW / PCOW_BASE_PCOW; 0 with base = probe the file */
    uint32_t stripe_count;      /* 0 or 1 = no striping; up to PCOW_MAX_STRIPES */
    uint32_t stripe_unit;       /* bytes, power of two >= cluster size; 0 = cluster size */
    bool allow_unsafe_base;     /* accept an absolute base path or one with ".." */
    bool no_base_check;         /* do not open the base at create (virtual_size must be given) */
    bool bitmap_records;        /* keep bitmaps in records even with <= 64 sub-units (implied above) */
};

/* Create (or truncate) an image. If virtual_size is 0 and a base is given, the base's size is
 * used. Stripe files are named "<image file name>.s1" ... in the image's directory. The file
 * is OFD-locked while being created. Returns 0 or -errno (err filled). */
int pcow_create(const char *path, const struct pcow_create_opts *opts, char *err, size_t errlen);

/* open flags */
#define PCOW_OPEN_RDWR        0x01u /* read-write; takes an exclusive OFD lock (else shared) */
#define PCOW_OPEN_NO_BASE     0x02u /* do not open the base chain (reads of unallocated data fail) */
#define PCOW_OPEN_NO_LOCK     0x04u /* take no lock (like qemu-img -U); read-only opens only */
#define PCOW_OPEN_UNSAFE_BASE 0x08u /* allow absolute base paths and "..", and stripe files that are
                                       symlinks leading out of the image's directory (default:
                                       refuse; pcow_check with repair refuses the latter anyway) */
#define PCOW_OPEN_FINE_COW    0x10u /* pcow_write copies only the touched sub-units on COW */

/* Open an image and (unless NO_BASE) its base chain, validating header, layer directory, every
 * table entry (range, alignment, overlap) and the base chain (loops, depth, path policy).
 * The image, its stripe files and its bases must be regular files (-EINVAL naming the file
 * otherwise; opened O_NONBLOCK and checked before any read, so a FIFO never blocks); stripe
 * files and bases are resolved beneath the image's directory (-EPERM naming the option that
 * allows it). A current header slot of a newer format version: -ENOTSUP with the reason.
 * A second read-write open of an image locked by another open file description fails with
 * -EAGAIN and "x.img: image is locked by another process (...)".
 * On success *out owns the image; release it with pcow_close(). */
int pcow_open(const char *path, unsigned flags, pcow_image **out, char *err, size_t errlen);

/* Close: clears the dirty flag of a read-write image, then frees everything (also on error).
 * Returns 0 or -errno of the final header write (message in err if given). */
int pcow_close(pcow_image *img, char *err, size_t errlen);

/* Last error message of this image (never NULL; empty if none). Valid until the next call. */
const char *pcow_errmsg(const pcow_image *img);

/* Replace the durability primitive (NULL restores fdatasync). Not thread-safe. */
void pcow_set_persist(pcow_image *img, pcow_persist_fn fn, void *ctx);

struct pcow_info {
    uint32_t version;
    uint32_t cluster_size;
    uint32_t subunit_size;
    uint32_t subunits_per_cluster;  /* <= PCOW_MAX_SUBUNITS */
    uint64_t virtual_size;
    uint64_t clusters;              /* virtual clusters */
    uint64_t l2_entries;            /* entries per L2 table (cluster_size / 16) */
    uint64_t l1_entries;            /* per layer */
    uint64_t incompat_features, compat_features;
    bool dirty;                     /* was open read-write and not closed cleanly */
    uint64_t generation;
    uint64_t image_end;             /* logical end of allocated space (bytes) */
    uint64_t file_size;             /* sum of st_blocks*512 over all files (actual size) */
    uint64_t allocated_clusters;    /* data clusters referenced by the active layer */
    uint64_t total_data_clusters;   /* data clusters referenced by any layer */
    uint32_t layer_count;           /* snapshots + 1 active */
    uint32_t active_layer;          /* index into pcow_layer_info */
    uint32_t stripe_count;
    uint64_t stripe_unit;
    int base_format;                /* enum pcow_base_format */
    char base_path[PCOW_BASE_PATH_MAX + 1];     /* as stored */
    char base_resolved[4096];       /* absolute path it resolves to ("" if none) */
    uint64_t table_bytes_read;      /* L1/L2 table bytes read at open (holes of L1 tables are skipped) */
};
/* Fill *out. Cannot fail. */
void pcow_get_info(const pcow_image *img, struct pcow_info *out);

/* Is the image open read-write by another open file description (its exclusive OFD lock)?
 * Useful after a PCOW_OPEN_NO_LOCK open, where the DIRTY flag alone cannot tell a running
 * writer from an unclean close. Returns 1 (in use; *pid = the holder's PID, or -1 when it
 * cannot be found, e.g. without permission to read /proc/PID/fdinfo), 0 (not) or -errno. */
int pcow_in_use(const pcow_image *img, int *pid);

struct pcow_layer_info {
    uint32_t id;
    uint32_t parent_id;             /* 0 = bottom layer (reads fall through to the base) */
    bool active;
    char name[PCOW_LAYER_NAME_MAX + 1];
    uint64_t ctime_sec;
    uint32_t ctime_nsec;
    uint64_t clusters;              /* data clusters this layer owns */
    uint64_t l1_offset;             /* logical address of its L1 table */
};
/* Number of layers (snapshots + the active one). */
uint32_t pcow_layer_count(const pcow_image *img);
/* Describe layer idx (0 .. count-1, directory order). Returns 0 or -EINVAL. */
int pcow_layer_get(const pcow_image *img, uint32_t idx, struct pcow_layer_info *out);

struct pcow_stripe {
    int fd;                          /* owned by the image; do not close */
    const char *path;                /* owned by the image */
};
/* Stripe file i (0 = the image file itself). Returns 0 or -EINVAL. Addresses map to files as
 * FORMAT.md "Striping" says; use pcow_addr_to_file(). */
int pcow_stripe_get(const pcow_image *img, uint32_t i, struct pcow_stripe *out);
/* Translate a logical image address to (stripe file index, offset in that file). */
void pcow_addr_to_file(const pcow_image *img, uint64_t addr, uint32_t *file, uint64_t *off);

/* One table entry of one layer. */
struct pcow_entry {
    uint64_t addr;       /* logical address of the data cluster, 0 = not allocated */
    bool partial;        /* fine-grained: only sub-units in bitmap hold their own data */
    pcow_bitmap bitmap;  /* valid when partial (all zero otherwise) */
};
/* Entry of layer idx for virtual cluster vc, from memory (no I/O, no lock). -EINVAL if out of range. */
int pcow_entry_get(const pcow_image *img, uint32_t layer_idx, uint64_t vc, struct pcow_entry *out);

/* Result of resolving a virtual cluster through the layer chain of the active layer. */
struct pcow_mapping {
    int depth;           /* 0 = active layer, 1 = its parent, ...; -1 = not in this image */
    uint32_t layer_idx;  /* valid when depth >= 0 */
    uint64_t addr;       /* logical data address (0 if depth < 0) */
    uint32_t file;       /* stripe file of addr */
    uint64_t file_off;   /* offset in that file (cluster-aligned) */
    bool partial;
    pcow_bitmap bitmap;  /* partial: sub-units owned by that layer; the rest read further down */
    bool in_base;        /* depth < 0 and the base chain has data for this cluster range */
};
/* Resolve virtual cluster vc: the topmost layer that has an entry (partial or full). O(depth),
 * memory only, no lock. -EINVAL if vc is out of range. */
int pcow_lookup(const pcow_image *img, uint64_t vc, struct pcow_mapping *out);

/* A run of virtual clusters of the active layer [vc, vc+count) that are all full (not partial),
 * allocated and file-contiguous in one stripe file, or all unallocated in the active layer.
 * allocated tells which. Returns 1 and fills *out, or 0 when vc >= clusters. Memory only. */
struct pcow_extent {
    uint64_t vc, count;
    bool allocated;
    bool partial;        /* a single partial cluster (count 1) */
    uint32_t file;
    uint64_t file_off;
};
int pcow_extent_next(const pcow_image *img, uint64_t vc, struct pcow_extent *out);

/* Append n clusters at the end of the image (fallocate), not referenced by anything yet: a
 * crash leaves them as leaks. *addr = logical address of the first. Returns 0 or -errno. */
int pcow_reserve(pcow_image *img, uint32_t n, uint64_t *addr);
/* Like pcow_reserve, but only extends the files (no fallocate): the clusters' blocks are
 * allocated by the writes into them, which can then fail with ENOSPC. For clusters whose every
 * used byte is written with pwrite before anything maps it, e.g. a partial (fine-grained COW)
 * cluster: copying 4 KiB into a 2 MiB cluster need not zero-fill the other 2044 KiB. */
int pcow_reserve_sparse(pcow_image *img, uint32_t n, uint64_t *addr);
/* Data clusters are placed so that their file offsets are congruent with their virtual
 * offsets modulo PCOW_RUN_SIZE where that is cheap (large folios and fs-dax PMD mappings need
 * it; see pcow_reserve_for). */
#define PCOW_RUN_SIZE (2u << 20)
/* Reserve one cluster (as pcow_reserve, or as pcow_reserve_sparse if sparse) for virtual
 * cluster vc of the active layer: if vc starts a 2 MiB virtual region in which the active
 * layer holds nothing yet, or continues the cluster before it, the files are first extended
 * sparse (a hole: no blocks) so that the cluster's file offset is congruent with vc's virtual
 * offset modulo PCOW_RUN_SIZE. */
int pcow_reserve_for(pcow_image *img, uint64_t vc, bool sparse, uint64_t *addr);
/* Give back every cluster nothing references (header, directory, tables, data, bitmap
 * records): reserved clusters never mapped, e.g. a pre-allocation pool or a COW cut short by a
 * crash. Those at the end are cut (truncate); below it, single-file images get holes punched
 * where blocks are allocated. Safe only while nothing else holds clusters reserved and not yet
 * mapped. *freed (may be NULL) = bytes given back (logical). Returns 0 or -errno. */
int pcow_reclaim(pcow_image *img, uint64_t *freed);
/* Give n reserved clusters at addr that nothing references back to the file system (holes
 * punched; zeroed where punching is unsupported). The image does not shrink: allocation stays
 * append-only. Returns 0 or -errno (addr not a reserved cluster range). */
int pcow_release(pcow_image *img, uint64_t addr, uint32_t n);

/* Make virtual cluster vc of the active layer point at the reserved cluster addr (whose data
 * the caller has already made durable). partial/bitmap as in pcow_entry (bitmap may be NULL
 * when !partial). Writes the entry (and a new L2 table, and with BITMAP_RECORDS the bitmap
 * record, when needed) durably, then publishes it in memory. -EEXIST if vc is already
 * allocated in the active layer. */
int pcow_map_cluster(pcow_image *img, uint64_t vc, uint64_t addr, bool partial, const pcow_bitmap *bitmap);

/* Add sub-units to a partial active-layer entry (their data must already be durable).
 * Sub-units are cluster_size/subunits_per_cluster bytes. */
int pcow_set_subunits(pcow_image *img, uint64_t vc, const pcow_bitmap *add);

/* Allocate virtual cluster vc in the active layer filled from what it reads now (zeros or the
 * lower layers' data): reserve + copy + persist + map. If fine, only the sub-units in
 * fine_bitmap are copied and the entry is partial. No-op returning 0 if already full. */
int pcow_alloc_cluster(pcow_image *img, uint64_t vc, bool fine, const pcow_bitmap *fine_bitmap);

/* Read/write at a virtual offset through the layer chain and base. Out-of-range -> -EINVAL.
 * Writes go to the active layer (copy-on-write from lower layers; whole clusters unless the
 * image was opened with PCOW_OPEN_FINE_COW) and are durable when the call returns. */
int pcow_read(pcow_image *img, void *buf, uint64_t len, uint64_t off);
int pcow_write(pcow_image *img, const void *buf, uint64_t len, uint64_t off);

/* Snapshots. Names are 1..64 bytes, no NUL, unique, and not made only of ASCII digits (such
 * keys select by id). A snapshot freezes the active layer and starts a new empty active layer
 * on top (O(1)). */
int pcow_snapshot_create(pcow_image *img, const char *name);
/* name_or_id below: a key made only of ASCII digits is a layer id, any other key a name, so a
 * key never matches two layers; the active layer is never selected.
 * Delete a snapshot: its clusters are merged into the layers that read through it, the rest
 * freed (holes punched). */
int pcow_snapshot_delete(pcow_image *img, const char *name_or_id);
/* Rollback (apply): discard the active layer and start a new empty one on top of the snapshot. */
int pcow_snapshot_apply(pcow_image *img, const char *name_or_id);

/* Rebase onto new_base (NULL or "" = no base). Safe mode (unsafe=false): every cluster where
 * the old and new base differ and that the bottom layers do not fully own gets the old data
 * copied into those layers first, so no layer's contents change. Unsafe: rewrite the reference
 * only. format 0 = probe. */
int pcow_rebase(pcow_image *img, const char *new_base, int format, bool unsafe);

/* Commit: write the active layer's data into the base image (opened read-write), then empty
 * the active layer. Refused when the image has snapshots (their contents would change). */
int pcow_commit(pcow_image *img);

/* Check */
struct pcow_check_result {
    uint64_t corruptions;
    uint64_t leaks;              /* unreferenced clusters that hold non-zero data */
    uint64_t check_errors;       /* could not complete part of the check (I/O, missing base) */
    uint64_t corruptions_fixed, leaks_fixed;
    uint64_t image_end_offset;   /* logical end after repair */
    uint64_t allocated_clusters, total_clusters;
    bool header_ok;
};
typedef void (*pcow_check_msg_fn)(void *ctx, const char *severity, const char *msg);
#define PCOW_REPAIR_LEAKS 0x1u   /* punch leaked clusters, truncate trailing ones */
#define PCOW_REPAIR_ALL   0x3u   /* also rewrite a damaged header slot */
/* Check the image at path without trusting it: every problem is reported through msg (may be
 * NULL) and counted. flags: PCOW_OPEN_NO_BASE / PCOW_OPEN_UNSAFE_BASE / PCOW_OPEN_NO_LOCK.
 * Returns 0 if the check ran (see res), or -errno if it could not start (err filled). */
int pcow_check(const char *path, unsigned flags, unsigned repair, struct pcow_check_result *res,
               pcow_check_msg_fn msg, void *ctx, char *err, size_t errlen);

/* Extent map of the active view: runs of [start, start+length) bytes with the same source.
 * depth: 0.. = layer depth in this image, then image-depth + base depth; -1 = hole (zeros). */
struct pcow_map_extent {
    uint64_t start, length;
    int depth;
    bool data, zero;
    uint64_t offset;          /* file offset when data comes from a pcow/raw file, else 0 */
    const char *file;         /* path of the file holding it (owned by the image), or NULL */
};
/* Call fn for each extent in order. Stops and returns fn's nonzero value, or 0. */
typedef int (*pcow_map_fn)(void *ctx, const struct pcow_map_extent *ext);
int pcow_map(pcow_image *img, pcow_map_fn fn, void *ctx);

/* Base chain access: the opened base pcow image (NULL if none/raw/not opened). */
pcow_image *pcow_base_image(const pcow_image *img);
/* Path the image was opened with. */
const char *pcow_path(const pcow_image *img);

/* Helpers */
int pcow_probe_format(const char *path);  /* PCOW_BASE_PCOW, PCOW_BASE_RAW or -errno */
uint32_t pcow_crc32c(uint32_t crc, const void *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
