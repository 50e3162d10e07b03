/* Thin userfaultfd helpers: open with feature negotiation, register, copy, wake, poison. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static int open_raw(char *err, size_t errlen)
{
    int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
    int e1 = 0;
    if (dev >= 0) {
        int fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
        e1 = errno;
        close(dev);
        if (fd >= 0)
            return fd;
    } else {
        e1 = errno;
    }
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (fd >= 0)
        return fd;
    int e2 = errno;
    snprintf(err, errlen,
             "userfaultfd is not available: /dev/userfaultfd: %s; userfaultfd(2): %s (needs root or "
             "CAP_SYS_PTRACE, access to /dev/userfaultfd, or sysctl vm.unprivileged_userfaultfd=1)",
             strerror(e1), strerror(e2));
    return -e2;
}

int rt_uffd_open(uint64_t want, uint64_t *got, char *err, size_t errlen)
{
    /* UFFDIO_API may be issued once per fd: ask a throw-away fd what the kernel offers. */
    int probe = open_raw(err, errlen);
    if (probe < 0)
        return probe;
    struct uffdio_api api = {.api = UFFD_API, .features = 0};
    if (ioctl(probe, UFFDIO_API, &api) < 0) {
        int e = errno;
        close(probe);
        snprintf(err, errlen, "UFFDIO_API failed: %s", strerror(e));
        return -e;
    }
    close(probe);
    int fd = open_raw(err, errlen);
    if (fd < 0)
        return fd;
    struct uffdio_api api2 = {.api = UFFD_API, .features = want & api.features};
    if (ioctl(fd, UFFDIO_API, &api2) < 0) {
        int e = errno;
        close(fd);
        snprintf(err, errlen, "UFFDIO_API with features 0x%llx failed: %s",
                 (unsigned long long)(want & api.features), strerror(e));
        return -e;
    }
    *got = want & api.features;
    return fd;
}

int rt_uffd_register(int uffd, void *addr, uint64_t len, uint64_t mode, uint64_t *ioctls)
{
    struct uffdio_register reg = {.range = {.start = (uintptr_t)addr, .len = len}, .mode = mode};
    if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0)
        return -errno;
    if (ioctls)
        *ioctls = reg.ioctls;
    return 0;
}

int rt_uffd_copy(int uffd, void *dst, const void *src, uint64_t len, uint64_t mode, uint64_t page)
{
    uint64_t done = 0;
    while (done < len) {
        struct uffdio_copy c = {.dst = (uintptr_t)dst + done, .src = (uintptr_t)src + done,
                                .len = len - done, .mode = mode, .copy = 0};
        if (ioctl(uffd, UFFDIO_COPY, &c) == 0) {
            done += (uint64_t)c.copy;
            continue;
        }
        int e = errno;
        if (c.copy > 0)
            done += (uint64_t)c.copy;
        if (e == EEXIST || c.copy == -EEXIST) {
            done += page; /* a page another thread placed: keep it */
            continue;
        }
        if (e == EAGAIN || c.copy == -EAGAIN)
            continue; /* the address space is changing (remap event pending) */
        return -e;
    }
    return 0;
}

int rt_uffd_wake(int uffd, void *addr, uint64_t len)
{
    struct uffdio_range r = {.start = (uintptr_t)addr, .len = len};
    if (ioctl(uffd, UFFDIO_WAKE, &r) < 0)
        return -errno;
    return 0;
}

int rt_uffd_poison(int uffd, void *addr, uint64_t len)
{
    for (;;) {
        struct uffdio_poison p = {.range = {.start = (uintptr_t)addr, .len = len}, .mode = 0};
        if (ioctl(uffd, UFFDIO_POISON, &p) == 0)
            return 0;
        if (errno != EAGAIN)
            return -errno;
    }
}
