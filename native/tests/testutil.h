/* Minimal test harness: TEST(name) functions registered in a table; CHECK fails the test. */
#ifndef TESTUTIL_H
#define TESTUTIL_H
#include <stdio.h>
#include <string.h>

static int t_failed;
#define CHECK(c)                                                                  \
    do {                                                                          \
        if (!(c)) {                                                               \
            fprintf(stderr, "  FAIL %s:%d: %s\n", __FILE__, __LINE__, #c);        \
            t_failed = 1;                                                         \
            return;                                                               \
        }                                                                         \
    } while (0)
#define CHECKR(call, img)                                                         \
    do {                                                                          \
        int r_ = (call);                                                          \
        if (r_ < 0) {                                                             \
            fprintf(stderr, "  FAIL %s:%d: %s = %d (%s)\n", __FILE__, __LINE__,   \
                    #call, r_, (img) ? pcow_errmsg(img) : "");                    \
            t_failed = 1;                                                         \
            return;                                                               \
        }                                                                         \
    } while (0)
#define CHECK_CONTAINS(s, sub)                                                    \
    do {                                                                          \
        if (!strstr((s), (sub))) {                                                \
            fprintf(stderr, "  FAIL %s:%d: '%s' does not contain '%s'\n",         \
                    __FILE__, __LINE__, (s), (sub));                              \
            t_failed = 1;                                                         \
            return;                                                               \
        }                                                                         \
    } while (0)
#endif
