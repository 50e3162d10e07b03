/*
 * uffd_probe: what userfaultfd offers this process, as one JSON object on stdout.
 *
 *  - the userfaultfd(2) syscall without flags (the fd also takes faults raised in kernel mode,
 *    as KVM, vhost and read() into guest memory raise them) and with UFFD_USER_MODE_ONLY;
 *  - /dev/userfaultfd + USERFAULTFD_IOC_NEW (the device node's permissions gate it instead of
 *    vm.unprivileged_userfaultfd / CAP_SYS_PTRACE);
 *  - the UFFDIO_API features the kernel offers;
 *  - one fault resolved end to end: an anonymous page registered MISSING is touched by a second
 *    thread and served with UFFDIO_COPY; then a kernel-mode fault (pread() from a memfd into a
 *    registered page) is served the same way.
 *
 * Exit status: 0 when the JSON was printed (whatever it says), 2 on a usage error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Newer than some installed kernel headers. */
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif
#ifndef UFFD_FEATURE_MINOR_SHMEM
#define UFFD_FEATURE_MINOR_SHMEM (1 << 10)
#endif
#ifndef UFFD_FEATURE_EXACT_ADDRESS
#define UFFD_FEATURE_EXACT_ADDRESS (1 << 11)
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1 << 16)
#endif

#define FAULT_TIMEOUT_MS 5000
#define PATTERN 0x5a

struct attempt {
	bool ok;
	int err; /* errno when !ok */
};

static void print_json_string(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

static void print_attempt(const char *name, struct attempt a, bool comma)
{
	printf("\"%s\":{\"ok\":%s,\"errno\":%d,\"error\":", name, a.ok ? "true" : "false", a.ok ? 0 : a.err);
	print_json_string(a.ok ? "" : strerror(a.err));
	printf("}%s", comma ? "," : "");
}

static int uffd_syscall(int flags, struct attempt *a)
{
	int fd = (int)syscall(SYS_userfaultfd, flags);
	a->ok = fd >= 0;
	a->err = fd >= 0 ? 0 : errno;
	return fd;
}

static int uffd_devnode(bool *present, struct attempt *a)
{
	int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	*present = dev >= 0 || errno != ENOENT;
	if (dev < 0) {
		a->ok = false;
		a->err = errno;
		return -1;
	}
	int fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
	a->ok = fd >= 0;
	a->err = fd >= 0 ? 0 : errno;
	close(dev);
	return fd;
}

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

enum toucher_kind { TOUCH_LOAD, TOUCH_PREAD };

struct toucher {
	enum toucher_kind kind;
	volatile unsigned char *page;
	int memfd;
	long page_size;
	int result; /* byte read, or -errno */
	atomic_bool done;
};

static void *toucher_main(void *arg)
{
	struct toucher *t = arg;
	if (t->kind == TOUCH_LOAD) {
		t->result = t->page[1];
	} else {
		/* The kernel copies into the registered page: a kernel-mode fault. */
		ssize_t n = pread(t->memfd, (void *)t->page, (size_t)t->page_size, 0);
		t->result = n == t->page_size ? t->page[1] : (n < 0 ? -errno : -EIO);
	}
	atomic_store(&t->done, true);
	return NULL;
}

struct fault_result {
	bool ok;
	double us; /* fault raised → served */
	char error[160];
};

/* Register one anonymous page MISSING, let a thread touch it, serve it with UFFDIO_COPY. */
static struct fault_result resolve_one(int uffd, enum toucher_kind kind, long page_size)
{
	struct fault_result r = { .ok = false, .us = 0, .error = "" };
	unsigned char *src = NULL;
	int memfd = -1;
	void *page = mmap(NULL, (size_t)page_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (page == MAP_FAILED) {
		snprintf(r.error, sizeof r.error, "mmap: %s", strerror(errno));
		return r;
	}
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)page, .len = (uint64_t)page_size },
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};
	if (ioctl(uffd, UFFDIO_REGISTER, &reg) != 0) {
		snprintf(r.error, sizeof r.error, "UFFDIO_REGISTER: %s", strerror(errno));
		goto out;
	}
	if (!(reg.ioctls & ((uint64_t)1 << _UFFDIO_COPY))) {
		snprintf(r.error, sizeof r.error, "UFFDIO_COPY not offered on the registered range");
		goto out;
	}
	src = malloc((size_t)page_size);
	if (!src) {
		snprintf(r.error, sizeof r.error, "malloc failed");
		goto out;
	}
	memset(src, PATTERN, (size_t)page_size);
	if (kind == TOUCH_PREAD) {
		memfd = memfd_create("uffd-probe", MFD_CLOEXEC);
		if (memfd < 0 || pwrite(memfd, src, (size_t)page_size, 0) != page_size) {
			snprintf(r.error, sizeof r.error, "memfd: %s", strerror(errno));
			goto out;
		}
		/* The page must hold what pread copied, not the pattern UFFDIO_COPY put there. */
		memset(src, 0, (size_t)page_size);
	}
	struct toucher t = { .kind = kind, .page = page, .memfd = memfd, .page_size = page_size, .result = -1 };
	atomic_init(&t.done, false);
	pthread_t th;
	double t0 = now_us();
	int perr = pthread_create(&th, NULL, toucher_main, &t);
	if (perr != 0) {
		snprintf(r.error, sizeof r.error, "pthread_create: %s", strerror(perr));
		goto out;
	}
	/* Wait for the fault in short slices: a toucher that fails without faulting (pread() on a
	 * UFFD_USER_MODE_ONLY fd gets EFAULT) ends the wait early. */
	struct pollfd pfd = { .fd = uffd, .events = POLLIN };
	int pr = 0;
	for (int waited = 0; waited < FAULT_TIMEOUT_MS && pr == 0; waited += 50) {
		pr = poll(&pfd, 1, 50);
		if (pr == 0 && atomic_load(&t.done))
			break;
	}
	if (pr <= 0) {
		if (pr < 0)
			snprintf(r.error, sizeof r.error, "poll: %s", strerror(errno));
		else if (!atomic_load(&t.done))
			snprintf(r.error, sizeof r.error, "no fault event within %d ms", FAULT_TIMEOUT_MS);
		/* Unblock a toucher still waiting so it can be joined: a zero page ends its wait. */
		struct uffdio_zeropage zp = { .range = { .start = (uintptr_t)page, .len = (uint64_t)page_size } };
		(void)ioctl(uffd, UFFDIO_ZEROPAGE, &zp);
		pthread_join(th, NULL);
		if (pr == 0 && r.error[0] == '\0')
			snprintf(r.error, sizeof r.error, "the %s raised no fault event: %s%s",
				 kind == TOUCH_PREAD ? "pread()" : "load", t.result < 0 ? "it failed with " : "",
				 t.result < 0 ? strerror(-t.result) : "it completed without one");
		goto out;
	}
	struct uffd_msg msg;
	ssize_t n = read(uffd, &msg, sizeof msg);
	bool good_event = n == (ssize_t)sizeof msg && msg.event == UFFD_EVENT_PAGEFAULT &&
			  (msg.arg.pagefault.address & ~((uint64_t)page_size - 1)) == (uintptr_t)page;
	struct uffdio_copy copy = {
		.dst = (uintptr_t)page,
		.src = (uintptr_t)src,
		.len = (uint64_t)page_size,
		.mode = 0,
	};
	int cr = ioctl(uffd, UFFDIO_COPY, &copy);
	int cerr = errno;
	const double t2 = now_us();
	pthread_join(th, NULL);
	/* Load: the page holds the UFFDIO_COPY pattern. pread: the copy came from the memfd. */
	const int want = PATTERN;
	if (!good_event) {
		snprintf(r.error, sizeof r.error, "unexpected uffd message (read %zd bytes, event 0x%x)", n,
			 n > 0 ? (unsigned)msg.event : 0u);
	} else if (cr != 0) {
		snprintf(r.error, sizeof r.error, "UFFDIO_COPY: %s", strerror(cerr));
	} else if (t.result != want) {
		if (t.result < 0)
			snprintf(r.error, sizeof r.error, "the faulting %s failed: %s",
				 kind == TOUCH_PREAD ? "pread()" : "load", strerror(-t.result));
		else
			snprintf(r.error, sizeof r.error, "the faulting thread read 0x%02x, expected 0x%02x", t.result, want);
	} else {
		r.ok = true;
		/* From the toucher's start to the served copy (thread start-up included). */
		r.us = t2 - t0;
	}
out:
	if (memfd >= 0)
		close(memfd);
	free(src);
	struct uffdio_range unreg = { .start = (uintptr_t)page, .len = (uint64_t)page_size };
	(void)ioctl(uffd, UFFDIO_UNREGISTER, &unreg);
	munmap(page, (size_t)page_size);
	return r;
}

static void print_fault(const char *name, struct fault_result f, bool tried, bool comma)
{
	printf("\"%s\":{\"tried\":%s,\"ok\":%s,\"us\":%.1f,\"error\":", name, tried ? "true" : "false",
	       f.ok ? "true" : "false", f.us);
	print_json_string(f.error);
	printf("}%s", comma ? "," : "");
}

int main(int argc, char **argv)
{
	(void)argv;
	if (argc != 1) {
		fprintf(stderr, "usage: uffd_probe (no arguments; prints one JSON object)\n");
		return 2;
	}
	long page_size = sysconf(_SC_PAGESIZE);

	struct attempt sys_full, sys_user, dev;
	int fd_full = uffd_syscall(O_CLOEXEC | O_NONBLOCK, &sys_full);
	int fd_user = uffd_syscall(O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY, &sys_user);
	bool dev_present = false;
	int fd_dev = uffd_devnode(&dev_present, &dev);

	/* Prefer an fd that takes kernel-mode faults: that is the one pcow needs. */
	int uffd = fd_full >= 0 ? fd_full : fd_dev >= 0 ? fd_dev : fd_user;
	const char *via = fd_full >= 0 ? "syscall" : fd_dev >= 0 ? "devnode" : fd_user >= 0 ? "syscall-user-mode-only" : "none";

	struct attempt api = { .ok = false, .err = ENOTSUP };
	uint64_t features = 0, ioctls = 0;
	if (uffd >= 0) {
		/* features = 0 asks for nothing; the kernel answers with all it supports. */
		struct uffdio_api a = { .api = UFFD_API, .features = 0 };
		if (ioctl(uffd, UFFDIO_API, &a) == 0) {
			api.ok = true;
			features = a.features;
			ioctls = a.ioctls;
		} else {
			api.err = errno;
		}
	}

	struct fault_result user = { .ok = false, .us = 0, .error = "" };
	struct fault_result kern = { .ok = false, .us = 0, .error = "" };
	bool tried = api.ok;
	if (tried) {
		user = resolve_one(uffd, TOUCH_LOAD, page_size);
		kern = resolve_one(uffd, TOUCH_PREAD, page_size);
	}

	printf("{");
	print_attempt("syscall", sys_full, true);
	print_attempt("syscallUserModeOnly", sys_user, true);
	printf("\"devNodePresent\":%s,", dev_present ? "true" : "false");
	print_attempt("devNode", dev, true);
	printf("\"via\":\"%s\",", via);
	print_attempt("api", api, true);
	printf("\"features\":\"0x%" PRIx64 "\",\"ioctls\":\"0x%" PRIx64 "\",", features, ioctls);
	printf("\"offered\":{\"missing\":%s,\"wp\":%s,\"wpUnpopulated\":%s,\"wpAsync\":%s,\"minorShmem\":%s,"
	       "\"minorHugetlbfs\":%s,\"sigbus\":%s,\"poison\":%s,\"move\":%s,\"exactAddress\":%s},",
	       (ioctls & ((uint64_t)1 << _UFFDIO_REGISTER)) ? "true" : "false",
	       (features & UFFD_FEATURE_PAGEFAULT_FLAG_WP) ? "true" : "false",
	       (features & UFFD_FEATURE_WP_UNPOPULATED) ? "true" : "false",
	       (features & UFFD_FEATURE_WP_ASYNC) ? "true" : "false",
	       (features & UFFD_FEATURE_MINOR_SHMEM) ? "true" : "false",
	       (features & UFFD_FEATURE_MINOR_HUGETLBFS) ? "true" : "false",
	       (features & UFFD_FEATURE_SIGBUS) ? "true" : "false", (features & UFFD_FEATURE_POISON) ? "true" : "false",
	       (features & UFFD_FEATURE_MOVE) ? "true" : "false",
	       (features & UFFD_FEATURE_EXACT_ADDRESS) ? "true" : "false");
	print_fault("userFault", user, tried, true);
	print_fault("kernelFault", kern, tried, false);
	printf("}\n");

	if (fd_full >= 0)
		close(fd_full);
	if (fd_user >= 0)
		close(fd_user);
	if (fd_dev >= 0)
		close(fd_dev);
	return 0;
}
