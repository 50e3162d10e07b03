/* Log-linear latency histograms (lock-free, readable while being filled) and their JSON. */
#define _GNU_SOURCE
#include "internal.h"

#include <inttypes.h>
#include <string.h>
#include <time.h>

uint64_t rt_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void rt_hist_init(struct rt_hist *h)
{
    memset(h, 0, sizeof *h);
    atomic_store(&h->min, UINT64_MAX);
}

static unsigned bucket_of(uint64_t v)
{
    if (v < 16)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    return 16u + (msb - 4u) * 16u + (unsigned)((v >> (msb - 4u)) & 15u);
}

/* Midpoint of bucket i. */
static uint64_t bucket_mid(unsigned i)
{
    if (i < 16)
        return i;
    unsigned msb = (i - 16u) / 16u + 4u, sub = (i - 16u) % 16u;
    uint64_t lo = (16ull + sub) << (msb - 4u), w = 1ull << (msb - 4u);
    return lo + w / 2;
}

void rt_hist_add(struct rt_hist *h, uint64_t ns)
{
    atomic_fetch_add_explicit(&h->b[bucket_of(ns)], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum, ns, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    uint64_t m = atomic_load_explicit(&h->min, memory_order_relaxed);
    while (ns < m && !atomic_compare_exchange_weak(&h->min, &m, ns)) {
    }
    m = atomic_load_explicit(&h->max, memory_order_relaxed);
    while (ns > m && !atomic_compare_exchange_weak(&h->max, &m, ns)) {
    }
}

void rt_hist_summary(const struct rt_hist *h, struct pcow_runtime_hist *o)
{
    memset(o, 0, sizeof *o);
    uint64_t b[RT_HIST_BUCKETS], n = 0;
    for (unsigned i = 0; i < RT_HIST_BUCKETS; i++) {
        b[i] = atomic_load_explicit(&h->b[i], memory_order_relaxed);
        n += b[i];
    }
    if (!n)
        return;
    o->count = n;
    o->min_ns = atomic_load(&h->min);
    o->max_ns = atomic_load(&h->max);
    o->mean_ns = (double)atomic_load(&h->sum) / (double)atomic_load(&h->count);
    const double q[3] = {0.50, 0.90, 0.99};
    uint64_t *dst[3] = {&o->p50_ns, &o->p90_ns, &o->p99_ns};
    for (int k = 0; k < 3; k++) {
        uint64_t rank = (uint64_t)(q[k] * (double)n + 0.5), acc = 0;
        if (rank < 1)
            rank = 1;
        for (unsigned i = 0; i < RT_HIST_BUCKETS; i++) {
            acc += b[i];
            if (acc >= rank) {
                *dst[k] = bucket_mid(i);
                break;
            }
        }
    }
}

void rt_hist_json(FILE *f, const char *name, const struct pcow_runtime_hist *s)
{
    fprintf(f,
            "\"%s\":{\"count\":%" PRIu64 ",\"min_ns\":%" PRIu64 ",\"p50_ns\":%" PRIu64 ",\"p90_ns\":%" PRIu64
            ",\"p99_ns\":%" PRIu64 ",\"max_ns\":%" PRIu64 ",\"mean_ns\":%.1f}",
            name, s->count, s->min_ns, s->p50_ns, s->p90_ns, s->p99_ns, s->max_ns, s->mean_ns);
}
