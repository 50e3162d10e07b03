/* Internals of libpcow-runtime: uffd helpers, histograms, the runtime object. */
#ifndef PCOW_RUNTIME_INTERNAL_H
#define PCOW_RUNTIME_INTERNAL_H

#include "pcow_runtime.h"

#include <linux/userfaultfd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/ioctl.h>

/* Newer than the Debian 12 (6.1) kernel headers. */
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14)
#endif
#ifndef _UFFDIO_POISON
#define _UFFDIO_POISON (0x08)
struct uffdio_poison {
    struct uffdio_range range;
#define UFFDIO_POISON_MODE_DONTWAKE ((__u64)1 << 0)
    __u64 mode;
    __s64 updated;
};
#define UFFDIO_POISON _IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)
#endif

/* ---- latency histogram: 16 log-linear sub-buckets per power of two (<= 3% error) ---- */
#define RT_HIST_BUCKETS 1008
struct rt_hist {
    _Atomic uint64_t count, sum, min, max;
    _Atomic uint64_t b[RT_HIST_BUCKETS];
};
void rt_hist_init(struct rt_hist *h);
void rt_hist_add(struct rt_hist *h, uint64_t ns);
void rt_hist_summary(const struct rt_hist *h, struct pcow_runtime_hist *out);
uint64_t rt_now_ns(void);
void rt_hist_json(FILE *f, const char *name, const struct pcow_runtime_hist *s);

/* ---- userfaultfd ---- */
/* Open a userfaultfd that also takes kernel-mode faults (never UFFD_USER_MODE_ONLY), first via
 * /dev/userfaultfd, then the syscall; negotiate `want` features (those the kernel lacks are
 * dropped; *got says what is on). Returns the fd or -errno with a message in err. */
int rt_uffd_open(uint64_t want, uint64_t *got, char *err, size_t errlen);
int rt_uffd_register(int uffd, void *addr, uint64_t len, uint64_t mode, uint64_t *ioctls);
/* UFFDIO_COPY len bytes; pages already present are skipped (EEXIST). mode: UFFDIO_COPY_MODE_*. */
int rt_uffd_copy(int uffd, void *dst, const void *src, uint64_t len, uint64_t mode, uint64_t page);
int rt_uffd_wake(int uffd, void *addr, uint64_t len);
int rt_uffd_poison(int uffd, void *addr, uint64_t len);

#endif
