/* The runtime's user-tunable options: the table every consumer reads (QEMU properties,
 * pcow-bench's flags and `case --describe`), the parser of a user's value, and the one check
 * against an image's geometry that pcow_runtime_map applies. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KiB 1024ull
#define MiB (1024ull * KiB)

static const struct pcow_runtime_option table[] = {
    {"prealloc-depth", "prealloc_depth", PCOW_RT_OPT_COUNT, "clusters", 1, 65536, 0, NULL, "off",
     "clusters kept allocated (fallocated, zeroed, durable) ahead of first writes by a background thread",
     offsetof(struct pcow_runtime_opts, prealloc_depth)},
    {"cow-unit", "cow_unit", PCOW_RT_OPT_SIZE, "bytes", 4 * KiB, 2 * MiB,
     PCOW_RT_OPT_POW2 | PCOW_RT_OPT_DIVIDES_CLUSTER | PCOW_RT_OPT_SUBUNIT | PCOW_RT_OPT_PAGE, "whole",
     "the cluster size", "bytes copied by a copy-on-write of snapshot or base data",
     offsetof(struct pcow_runtime_opts, cow_unit)},
    {"handler-threads", "handler_threads", PCOW_RT_OPT_COUNT, "threads", 1, MAX_THREADS, 0, NULL, "1",
     "threads serving page faults", offsetof(struct pcow_runtime_opts, handler_threads)},
    {"read-fill", "read_fill", PCOW_RT_OPT_SIZE, "bytes", 4 * KiB, 2 * MiB,
     PCOW_RT_OPT_POW2 | PCOW_RT_OPT_DIVIDES_CLUSTER | PCOW_RT_OPT_PAGE, NULL, "min(cluster size, 64K)",
     "bytes populated by a read fault of a hole or of snapshot or base data",
     offsetof(struct pcow_runtime_opts, read_fill)},
};
#define NOPTS (sizeof table / sizeof table[0])

const struct pcow_runtime_option *pcow_runtime_options(size_t *count)
{
    *count = NOPTS;
    return table;
}

const struct pcow_runtime_option *pcow_runtime_option_find(const char *name)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (!strcmp(table[i].name, name))
            return &table[i];
    return NULL;
}

static uint32_t *field_of(struct pcow_runtime_opts *o, const struct pcow_runtime_option *d)
{
    return (uint32_t *)((char *)o + d->offset);
}

static bool pow2(uint64_t v) { return v && !(v & (v - 1)); }

int pcow_runtime_parse_size(const char *s, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9')
        return -EINVAL;
    char *e;
    errno = 0;
    unsigned long long v = strtoull(s, &e, 10);
    if (errno)
        return -EINVAL;
    uint64_t m = 1;
    if (*e) {
        switch (*e) {
        case 'K': case 'k': m = KiB; break;
        case 'M': case 'm': m = MiB; break;
        case 'G': case 'g': m = 1024 * MiB; break;
        case 'T': case 't': m = 1024 * 1024 * MiB; break;
        default: return -EINVAL;
        }
        e++;
        if (*e && strcmp(e, "iB") && strcmp(e, "B"))
            return -EINVAL;
    }
    if (v > UINT64_MAX / m)
        return -EINVAL;
    *out = v * m;
    return 0;
}

const char *pcow_runtime_format_size(uint64_t v, char *b, size_t n)
{
    static const char units[] = "KMGT";
    int u = -1;
    uint64_t m = 1;
    while (u < 3 && v >= m * 1024)
        m *= 1024, u++;
    if (u < 0)
        snprintf(b, n, "%" PRIu64, v);
    else if (v % m == 0)
        snprintf(b, n, "%" PRIu64 "%c", v / m, units[u]);
    else
        snprintf(b, n, "%.1f%c", (double)v / (double)m, units[u]);
    return b;
}

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

static const char *show(const struct pcow_runtime_option *d, uint64_t v, char *b, size_t n)
{
    if (d->type == PCOW_RT_OPT_SIZE)
        return pcow_runtime_format_size(v, b, n);
    snprintf(b, n, "%" PRIu64, v);
    return b;
}

/* The context-free rules of a non-zero value: range, power of two. */
static int check_range(const struct pcow_runtime_option *d, uint64_t v, char *err, size_t errlen)
{
    if (v == 0)
        return 0;
    if (v >= d->min && v <= d->max && (!(d->flags & PCOW_RT_OPT_POW2) || pow2(v)))
        return 0;
    char b[32], lo[32], hi[32], z[64] = "";
    if (d->zero_word)
        snprintf(z, sizeof z, ", or \"%s\"", d->zero_word);
    else
        snprintf(z, sizeof z, ", or 0 (%s)", d->zero_means);
    return fail(err, errlen, "%s %s must be %s from %s to %s%s", d->name, show(d, v, b, sizeof b),
                d->flags & PCOW_RT_OPT_POW2 ? "a power of two" : "a whole number", show(d, d->min, lo, sizeof lo),
                show(d, d->max, hi, sizeof hi), z);
}

int pcow_runtime_opt_parse(struct pcow_runtime_opts *o, const char *name, const char *value, char *err,
                           size_t errlen)
{
    const struct pcow_runtime_option *d = pcow_runtime_option_find(name);
    if (!d) {
        char known[160] = "";
        for (size_t i = 0; i < NOPTS; i++) /* from the table: a new option is named here too */
            snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", i ? ", " : "", table[i].name);
        fail(err, errlen, "unknown runtime option '%s' (known: %s)", name, known);
        return -ENOENT;
    }
    uint64_t v;
    if (d->zero_word && !strcmp(value, d->zero_word))
        v = 0;
    else if (d->type == PCOW_RT_OPT_SIZE) {
        if (pcow_runtime_parse_size(value, &v) < 0)
            return fail(err, errlen, "%s '%s' is not a size%s%s%s (use e.g. 4K, 64K, 2M)", name, value,
                        d->zero_word ? " or \"" : "", d->zero_word ? d->zero_word : "", d->zero_word ? "\"" : "");
    } else {
        char *e;
        errno = 0;
        unsigned long long x = value[0] >= '0' && value[0] <= '9' ? strtoull(value, &e, 10) : 0;
        if (value[0] < '0' || value[0] > '9' || errno || *e || x > d->max)
            return fail(err, errlen, "%s '%s' must be a whole number from 0 (%s) to %" PRIu64, name, value,
                        d->zero_means, d->max);
        v = x;
    }
    int r = check_range(d, v, err, errlen);
    if (r < 0)
        return r;
    *field_of(o, d) = (uint32_t)v;
    return 0;
}

int pcow_runtime_opts_check(const struct pcow_runtime_opts *in, uint64_t csize, uint64_t ssize,
                            struct pcow_runtime_opts *resolved, char *err, size_t errlen)
{
    struct pcow_runtime_opts o = in ? *in : (struct pcow_runtime_opts){0};
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    char b1[32], b2[32];
    for (size_t i = 0; i < NOPTS; i++) {
        const struct pcow_runtime_option *d = &table[i];
        uint64_t v = *field_of(&o, d);
        int r = check_range(d, v, err, errlen);
        if (r < 0)
            return r;
        if (v == 0)
            continue;
        if ((d->flags & PCOW_RT_OPT_PAGE) && v < page)
            return fail(err, errlen, "%s %s is below the page size %s", d->name, show(d, v, b1, sizeof b1),
                        pcow_runtime_format_size(page, b2, sizeof b2));
        if ((d->flags & PCOW_RT_OPT_DIVIDES_CLUSTER) && (v > csize || csize % v))
            return fail(err, errlen, "%s %s does not divide the cluster size %s (a power of two up to the cluster size%s%s%s)",
                        d->name, show(d, v, b1, sizeof b1), pcow_runtime_format_size(csize, b2, sizeof b2),
                        d->zero_word ? ", or \"" : "", d->zero_word ? d->zero_word : "", d->zero_word ? "\"" : "");
        if ((d->flags & PCOW_RT_OPT_SUBUNIT) && ssize && v % ssize)
            return fail(err, errlen, "%s %s is below the image's sub-unit %s (cluster %s / %" PRIu64
                        " sub-units; the format records copies in sub-units: create the image with a smaller sub-unit)",
                        d->name, show(d, v, b1, sizeof b1), pcow_runtime_format_size(ssize, b2, sizeof b2),
                        pcow_runtime_format_size(csize, (char[32]){0}, 32), csize / ssize);
    }
    if (o.align && (!pow2(o.align) || o.align < csize))
        return fail(err, errlen, "align %" PRIu64 " must be a power of two >= the cluster size %" PRIu64, o.align, csize);
    if (resolved) {
        if (!o.cow_unit)
            o.cow_unit = (uint32_t)csize;
        if (!o.read_fill)
            o.read_fill = (uint32_t)(csize < 64 * KiB ? csize : 64 * KiB);
        if (!o.handler_threads)
            o.handler_threads = 1;
        if (!o.align)
            o.align = csize > DEFAULT_ALIGN ? csize : DEFAULT_ALIGN;
        *resolved = o;
    }
    return 0;
}
