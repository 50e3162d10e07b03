/* Tiny test harness for the runtime tests: every test runs in a forked child under alarm()
 * and a parent watchdog, so a fault-handler bug that hangs fails the test after a bound. */
#ifndef RT_TESTUTIL_H
#define RT_TESTUTIL_H

#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHECK(cond, ...)                                                                             \
    do {                                                                                             \
        if (!(cond)) {                                                                               \
            fprintf(stderr, "    %s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);             \
            fprintf(stderr, __VA_ARGS__);                                                            \
            fputc('\n', stderr);                                                                     \
            _exit(1);                                                                                \
        }                                                                                            \
    } while (0)

#define CHECK_OK(expr, ...)                                                                          \
    do {                                                                                             \
        long r_ = (long)(expr);                                                                      \
        if (r_ < 0) {                                                                                \
            fprintf(stderr, "    %s:%d: %s returned %ld (%s): ", __FILE__, __LINE__, #expr, r_,      \
                    strerror((int)-r_));                                                             \
            fprintf(stderr, __VA_ARGS__);                                                            \
            fputc('\n', stderr);                                                                     \
            _exit(1);                                                                                \
        }                                                                                            \
    } while (0)

static double tu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Run fn in a child; returns 0 if it exited 0. */
static int tu_run(const char *name, void (*fn)(void), unsigned timeout_s)
{
    double t0 = tu_now();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        alarm(timeout_s);
        fn();
        fflush(NULL);
        _exit(0);
    }
    int st = 0;
    for (;;) {
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid)
            break;
        if (tu_now() - t0 > timeout_s + 10.0) {
            kill(pid, SIGKILL); /* alarm did not end it: the child is stuck */
            waitpid(pid, &st, 0);
            printf("FAIL %s: hung (killed after %u s)\n", name, timeout_s + 10);
            return 1;
        }
        usleep(5000);
    }
    double dt = tu_now() - t0;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
        printf("ok   %s (%.2f s)\n", name, dt);
        return 0;
    }
    if (WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM)
        printf("FAIL %s: hung (no result after %u s)\n", name, timeout_s);
    else if (WIFSIGNALED(st))
        printf("FAIL %s: killed by signal %d (%s)\n", name, WTERMSIG(st), strsignal(WTERMSIG(st)));
    else
        printf("FAIL %s: exit status %d\n", name, WEXITSTATUS(st));
    return 1;
}

#endif
