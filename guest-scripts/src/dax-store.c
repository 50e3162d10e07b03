/*
 * dax-store: store one byte at the start of each of COUNT steps of STEP bytes through a
 * MAP_SHARED mapping of a device-dax character device (/dev/daxX.Y), catching SIGBUS, and
 * report what happened. Runs inside the test guest (guest-scripts/dax-full.sh), built static on
 * the host (guest-scripts/Makefile) and shipped with runGuest's `binaries`.
 *
 *   dax-store DEV STEP COUNT [read-first]
 *
 * A user-space store is the only access the guest kernel can survive a machine check on: a
 * kernel-mode store into pmem (the pmem driver's memcpy_flushcache, ext4-dax zeroing new blocks)
 * has no machine-check fixup and panics. The host answers a store it cannot back (a pcow image
 * whose file system is full) with a memory error; QEMU turns it into a machine check, the guest
 * kernel's memory-failure handling sends this process SIGBUS with BUS_MCEERR_AR. Each store is
 * made once: after a SIGBUS the next step is tried (siglongjmp out of the handler).
 * With read-first, each byte is loaded before it is stored: the load maps the page (a hole
 * reads as zeros), so under TCG the store takes the TLB fast path in generated code instead
 * of the slow path through QEMU's store helper; QEMU must place the machine check right in both.
 *
 * Output, one "KEY VALUE" line each:
 *   stores N            stores attempted (COUNT)
 *   ok N                stores that completed
 *   sigbus N            stores that got SIGBUS
 *   mceerr-ar N         of those, with si_code BUS_MCEERR_AR
 *   first-sigbus OFF    offset of the first store that got SIGBUS (-1: none)
 *   first-code NAME     its si_code (BUS_MCEERR_AR, BUS_MCEERR_AO, BUS_ADRERR, ... or a number)
 *   first-lsb N         its si_addr_lsb (log2 of the poisoned extent)
 *   last-ok OFF         offset of the last store that completed (-1: none)
 *   order ok-then-sigbus | mixed   whether every completed store came before every failed one
 *   readback-bad N      completed stores whose byte does not read back
 * Exit status: 0 when the run completed (whatever the stores did), 2 on bad usage, 1 when the
 * device cannot be opened or mapped (the message names the device and errno).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef BUS_MCEERR_AR
#define BUS_MCEERR_AR 4
#endif
#ifndef BUS_MCEERR_AO
#define BUS_MCEERR_AO 5
#endif

static sigjmp_buf jump;
static volatile sig_atomic_t got_code;
static volatile sig_atomic_t got_lsb;

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    got_code = si->si_code;
#ifdef si_addr_lsb
    got_lsb = si->si_addr_lsb;
#endif
    siglongjmp(jump, 1);
}

static const char *code_name(int code)
{
    static char buf[16];

    switch (code) {
    case BUS_MCEERR_AR: return "BUS_MCEERR_AR";
    case BUS_MCEERR_AO: return "BUS_MCEERR_AO";
    case BUS_ADRERR: return "BUS_ADRERR";
    case BUS_ADRALN: return "BUS_ADRALN";
    case BUS_OBJERR: return "BUS_OBJERR";
    default:
        snprintf(buf, sizeof(buf), "%d", code);
        return buf;
    }
}

static int parse_size(const char *s, const char *what, unsigned long long *out)
{
    char *end;

    errno = 0;
    *out = strtoull(s, &end, 0);
    if (errno || end == s || *end || *out == 0) {
        fprintf(stderr, "dax-store: %s %s is not a positive integer\n", what, s);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    unsigned long long step, count;

    if ((argc != 4 && argc != 5) || (argc == 5 && strcmp(argv[4], "read-first") != 0)) {
        fprintf(stderr, "usage: dax-store DEV STEP COUNT [read-first]\n");
        return 2;
    }
    int read_first = argc == 5;
    if (parse_size(argv[2], "STEP", &step) || parse_size(argv[3], "COUNT", &count))
        return 2;
    if (count > SIZE_MAX / step) {
        fprintf(stderr, "dax-store: STEP %llu x COUNT %llu does not fit in the address space\n", step, count);
        return 2;
    }
    /* A device-dax mapping must be a multiple of the device's alignment (2 MiB by default). */
    size_t len = (size_t)(step * count);
    len = (len + (2u << 20) - 1) & ~(size_t)((2u << 20) - 1);
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) {
        fprintf(stderr, "dax-store: open %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    volatile uint8_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "dax-store: mmap %zu bytes of %s: %s\n", len, argv[1], strerror(errno));
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGBUS, &sa, NULL) != 0) {
        fprintf(stderr, "dax-store: sigaction: %s\n", strerror(errno));
        return 1;
    }

    uint8_t *done = calloc(count, 1); /* 1: stored, 2: SIGBUS */
    if (!done) {
        fprintf(stderr, "dax-store: out of memory\n");
        return 1;
    }
    /* volatile: counters live across the siglongjmp out of the handler */
    volatile unsigned long long ok = 0, bus = 0, ar = 0;
    volatile long long first_bus = -1, last_ok = -1;
    volatile int first_code = 0, first_lsb = 0, mixed = 0;
    for (unsigned long long i = 0; i < count; i++) {
        if (sigsetjmp(jump, 1) == 0) {
            if (read_first && p[i * step] != 0)
                fprintf(stderr, "dax-store: byte %llu reads %u before the store\n", i * step, p[i * step]);
            p[i * step] = (uint8_t)'P';
            done[i] = 1;
            ok++;
            last_ok = (long long)(i * step);
            if (bus)
                mixed = 1;
        } else {
            done[i] = 2;
            if (bus++ == 0) {
                first_bus = (long long)(i * step);
                first_code = got_code;
                first_lsb = got_lsb;
            }
            if (got_code == BUS_MCEERR_AR)
                ar++;
        }
    }
    unsigned long long bad = 0;
    for (unsigned long long i = 0; i < count; i++)
        if (done[i] == 1 && p[i * step] != (uint8_t)'P')
            bad++;
    printf("stores %llu\nok %llu\nsigbus %llu\nmceerr-ar %llu\n", count, ok, bus, ar);
    printf("first-sigbus %lld\nfirst-code %s\nfirst-lsb %d\nlast-ok %lld\n", first_bus,
           bus ? code_name(first_code) : "none", first_lsb, last_ok);
    printf("order %s\nreadback-bad %llu\n", mixed ? "mixed" : "ok-then-sigbus", bad);
    return 0;
}
