/*
 * libpcow-runtime: map a pcow image (its whole virtual size) into this process with
 * userfaultfd, as QEMU's memory-backend-file needs it for an NVDIMM range.
 *
 * How the range works (see native/runtime/README.md):
 * - The range is an anonymous MAP_PRIVATE|MAP_NORESERVE placeholder, aligned to
 *   max(cluster, 2 MiB), registered with userfaultfd MISSING|WP (kernel-mode faults included).
 * - Active-layer clusters the image already holds are mmap(MAP_SHARED|MAP_FIXED)-ed from the
 *   image (stripe) files over the placeholder, one mapping per file-contiguous extent: once
 *   mapped, accesses never leave the MMU.
 * - A read of a hole is served with a write-protected zero page, a read of lower-layer data
 *   (snapshot or base) with a write-protected copy of that data: nothing is allocated.
 * - The first write to a cluster (a MISSING fault with the write flag, or a WP fault) allocates
 *   it in the active layer: data copied (the COW unit, or the whole cluster) and made durable,
 *   then the entry made durable, then the file range mapped MAP_FIXED and the writer woken.
 * - A fault that cannot be served (image full, I/O error, no VMA left) reaches the faulting
 *   thread as a memory error: UFFDIO_POISON where the kernel has it (SIGBUS in user mode,
 *   EFAULT in kernel mode), else a file page beyond EOF mapped there (the same signals).
 *   The host process is never aborted and the fault never hangs.
 * - Fault handler threads take only the runtime's own locks, never one a faulting thread may
 *   hold (inside QEMU: the BQL).
 *
 * Conventions as in pcow.h: 0 or a negative errno; messages name the image and what is wrong.
 * No global state; any number of images may be mapped in one process.
 */
#ifndef PCOW_RUNTIME_H
#define PCOW_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "pcow.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pcow_runtime pcow_runtime;

struct pcow_runtime_opts {
    uint32_t prealloc_depth;   /* clusters kept reserved (fallocated, zero, durable) ahead; 0 = off */
    uint32_t cow_unit;         /* bytes copied on a copy-on-write: 0 = the cluster size; else a power of
                                  two >= 4 KiB, <= the cluster, a multiple of the image's sub-unit */
    uint32_t handler_threads;  /* fault handler threads; 0 = 1; at most 64 */
    uint64_t align;            /* alignment of the range; 0 = max(cluster, 2 MiB); power of two */
    uint32_t read_fill;        /* bytes populated per read fault of a hole or of lower-layer data:
                                  0 = min(cluster, 64 KiB); a power of two >= 4 KiB, <= cluster */
    uint64_t max_map_count;    /* VMA budget; 0 = read /proc/sys/vm/max_map_count (tests lower it) */
    bool no_poison;            /* report errors with the beyond-EOF fallback even if UFFDIO_POISON exists */
};

/* ---- The user-tunable options: one table, one parser, one check (options.c) ----
 * Every consumer (QEMU's memory-backend-file properties, pcow-bench's flags and its
 * `case --describe` JSON, the harness) reads this table, so an option is added here only.
 * Names are spelled as users write them ("cow-unit"); messages start with that name (a caller
 * that spells it differently, e.g. pcow-bench's "--cow-unit", prefixes its own "--").
 * Every option's default is 0 (a zeroed struct pcow_runtime_opts is the defaults); zero_means
 * says what 0 stands for. align, max_map_count and no_poison are for tests, not in the table. */
enum pcow_runtime_opt_type {
    PCOW_RT_OPT_COUNT, /* a whole number */
    PCOW_RT_OPT_SIZE,  /* bytes; the parser takes K, M, G, T suffixes (powers of 1024) */
};
#define PCOW_RT_OPT_POW2 1u            /* a non-zero value is a power of two */
#define PCOW_RT_OPT_DIVIDES_CLUSTER 2u /* ... divides the image's cluster size (so is <= it) */
#define PCOW_RT_OPT_SUBUNIT 4u         /* ... is a multiple of the image's sub-unit */
#define PCOW_RT_OPT_PAGE 8u            /* ... is at least the page size */

struct pcow_runtime_option {
    const char *name;       /* "prealloc-depth", "cow-unit", "handler-threads", "read-fill" */
    const char *field;      /* its member of struct pcow_runtime_opts (a uint32_t) */
    enum pcow_runtime_opt_type type;
    const char *unit;       /* "clusters", "bytes", "threads" */
    uint64_t min, max;      /* range of a non-zero value */
    unsigned flags;         /* PCOW_RT_OPT_* rules for a non-zero value */
    const char *zero_word;  /* a word accepted for 0 ("whole"), or NULL */
    const char *zero_means; /* what 0, the default, means */
    const char *help;
    size_t offset;          /* offsetof(struct pcow_runtime_opts, field) */
};

/* The table (static, read-only) and its length. */
const struct pcow_runtime_option *pcow_runtime_options(size_t *count);
/* The option called name, or NULL. */
const struct pcow_runtime_option *pcow_runtime_option_find(const char *name);
/* Parse a user's value ("64K", "2M", "whole", "16") for option name into *o, checking what can
 * be checked without an image (type, range, power of two). 0, -ENOENT for an unknown name,
 * -EINVAL for a bad value; the message names the option and the rule. */
int pcow_runtime_opt_parse(struct pcow_runtime_opts *o, const char *name, const char *value, char *err,
                           size_t errlen);
/* THE check of a struct pcow_runtime_opts against an image's geometry (pcow_runtime_map calls
 * it): every table rule, the page size, align. On success *resolved (may be NULL) holds the
 * values in effect, every 0 replaced by what it means (cow_unit = cluster size, read_fill =
 * min(cluster, 64K), handler_threads = 1, align = max(cluster, 2M)). 0 or -EINVAL. */
int pcow_runtime_opts_check(const struct pcow_runtime_opts *o, uint64_t cluster_size, uint64_t subunit_size,
                            struct pcow_runtime_opts *resolved, char *err, size_t errlen);
/* "4096", "64K", "2M", "1G", "1T" (also KiB/KB, lower case): bytes. 0, or -EINVAL. */
int pcow_runtime_parse_size(const char *s, uint64_t *out);
/* 65536 -> "64K", 1.5 GiB -> "1.5G", 3000 -> "3000" (for messages). Returns b. */
const char *pcow_runtime_format_size(uint64_t v, char *b, size_t n);

/* Map img (opened PCOW_OPEN_RDWR) at an aligned address. The runtime borrows img until
 * pcow_runtime_unmap(); meanwhile change the image only through pcow_runtime_* calls.
 * opts may be NULL (defaults).
 * First gives back clusters nothing references (pcow_reclaim: e.g. a pre-allocation pool left
 * by a crash), so img must not hold clusters reserved for later mapping. With pre-allocation,
 * returns once the first batch is allocated (at most 2 s); unmap gives the pool back.
 * Fails with -E2BIG and a message naming vm.max_map_count when the mapping would need more
 * VMAs than the budget. */
int pcow_runtime_map(pcow_image *img, const struct pcow_runtime_opts *opts, pcow_runtime **out,
                     char *err, size_t errlen);

/* Open path read-write and map it; pcow_runtime_unmap() then also closes the image. */
int pcow_runtime_open(const char *path, unsigned open_flags, const struct pcow_runtime_opts *opts,
                      pcow_runtime **out, char *err, size_t errlen);

/* Persist point, then stop the handlers, unmap the range and release everything (also on
 * error). Closes the image only if pcow_runtime_open() opened it. No thread may touch the
 * range any more. Returns 0 or the first -errno (message in err). */
int pcow_runtime_unmap(pcow_runtime *rt, char *err, size_t errlen);

void *pcow_runtime_addr(const pcow_runtime *rt);       /* start of the range */
uint64_t pcow_runtime_size(const pcow_runtime *rt);    /* bytes: the virtual size */
/* Bytes reserved: the virtual size rounded up to the cluster. The tail [size, length) never
 * faults with an error: it reads zeros, and stores there are accepted but are not part of the
 * image (pcow_read never returns them; they need not survive a snapshot, rollback or reopen). */
uint64_t pcow_runtime_length(const pcow_runtime *rt);
pcow_image *pcow_runtime_image(const pcow_runtime *rt);
/* Last error of a runtime call or of a fault that failed (never NULL). */
const char *pcow_runtime_errmsg(pcow_runtime *rt);

/* Persist point: everything written through the range before the call is durable when it
 * returns (fdatasync of every stripe file; on fs-dax the dirty cache lines are flushed; on
 * tmpfs/ramfs, decided at map time, nothing: there is no medium behind the page cache). */
int pcow_runtime_sync(pcow_runtime *rt);

/* Snapshot / rollback while mapped. Accessors may keep running: the range is swapped
 * atomically (mremap) for a fresh registered placeholder, so an access during the switch
 * waits in its fault until the new state is served. A write that completes before the call
 * starts is in the snapshot; a CPU write racing with it (user mode, or a kernel copy such as
 * read() into the range) lands either in the snapshot or after it.
 *
 * DMA contract: the caller drains I/O that writes into the range through pinned pages
 * (O_DIRECT reads, io_uring, vhost, AIO) before calling snapshot or rollback; QEMU's live
 * snapshot drains block I/O anyway. Such I/O pins the page that was mapped when it started:
 * a file page of a cluster of the current active layer. A snapshot freezes that cluster, so a
 * transfer still in flight lands in the snapshot after it was taken, and is missing from the
 * active layer if the guest wrote that cluster meanwhile (the COW copied it before the device
 * wrote); after a rollback it lands in the discarded layer. The runtime cannot see pins to
 * wait for them. A transfer that completed before the call is in the snapshot (tested
 * repeatedly with neighbour stores COWing the same cluster). Long-term pins (VFIO device
 * assignment) never drain: do not combine them with snapshot/rollback. */
int pcow_runtime_snapshot(pcow_runtime *rt, const char *name);
int pcow_runtime_rollback(pcow_runtime *rt, const char *name_or_id);

/* Latency histogram summary (nanoseconds). */
struct pcow_runtime_hist {
    uint64_t count;
    uint64_t min_ns, max_ns;
    uint64_t p50_ns, p90_ns, p99_ns;  /* bucket midpoints: relative error <= 3% */
    double mean_ns;
};

struct pcow_runtime_stats {
    uint64_t faults;             /* fault messages read */
    uint64_t read_zero;          /* reads of holes served with write-protected zeros */
    uint64_t read_lower;         /* reads served with write-protected lower-layer data */
    uint64_t expansions;         /* first writes to holes: clusters allocated */
    uint64_t cows;               /* copy-on-writes of lower-layer data */
    uint64_t cow_bytes;          /* bytes copied by them */
    uint64_t wp_faults;          /* write-protect faults */
    uint64_t stale;              /* faults found already served (raced with another) */
    uint64_t deferred;           /* faults parked during a snapshot/rollback switch */
    uint64_t errors;             /* faults answered with a memory error */
    uint64_t pool_hits, pool_misses, pool_refills;
    uint64_t pool_ready;         /* clusters reserved ahead right now */
    uint64_t populated_bytes;    /* bytes placed with UFFDIO_COPY */
    uint64_t mmaps;              /* mmap(MAP_FIXED) calls of file ranges */
    uint64_t vmas;               /* VMAs of the whole process when stats were taken */
    bool poison_supported;       /* UFFDIO_POISON in use (else the beyond-EOF fallback) */
    bool dax;                    /* file mappings use MAP_SYNC (fs-dax) */
    bool persist_noop;           /* files on tmpfs/ramfs: persist points skipped (nothing to make durable) */
    struct pcow_runtime_hist fault_service; /* message read -> wake, every fault */
    struct pcow_runtime_hist expansion;     /* service time of expansions */
    struct pcow_runtime_hist cow;           /* service time of copy-on-writes */
    struct pcow_runtime_hist read_fill;     /* service time of read faults */
};
/* Readable while mapped (counters are atomics; a snapshot of them, not a consistent cut). */
void pcow_runtime_get_stats(pcow_runtime *rt, struct pcow_runtime_stats *out);
/* Write the stats as one JSON object (no trailing newline). Returns 0 or -errno. */
int pcow_runtime_stats_json(pcow_runtime *rt, FILE *f);

/* VMAs the current process has (lines of /proc/self/maps), or -errno. */
long pcow_runtime_count_vmas(void);

#ifdef __cplusplus
}
#endif
#endif
