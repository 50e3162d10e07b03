/* Snapshot / rollback while mapped: the range is swapped atomically for a fresh placeholder. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

/* Swap the range for a fresh registered placeholder (atomic for every accessor: mremap
 * replaces the old mappings under the mmap lock), change the image, map its active layer. */
static int switch_range(pcow_runtime *rt, int (*op)(pcow_image *, const char *), const char *arg, const char *what)
{
    pthread_mutex_lock(&rt->switch_lock);
    pthread_rwlock_wrlock(&rt->epoch);
    uint8_t *p2 = NULL;
    int r = rt_new_placeholder(rt, rt->page, &p2);
    if (r == 0) {
        void *m = mremap(p2, rt->len, rt->len, MREMAP_MAYMOVE | MREMAP_FIXED, rt->base);
        if (m == MAP_FAILED) {
            r = rt_err(rt, errno, "%s: cannot swap the range: %s", what, strerror(errno));
            munmap(p2, rt->len);
        }
    }
    if (r == 0) {
        /* the old placeholder pages are gone; pool clusters stay reserved */
        r = rt_persist_files(rt);
        if (r < 0)
            rt_err(rt, r, "%s: cannot make the image durable: %s", what, strerror(-r));
        pthread_rwlock_wrlock(&rt->img_lock);
        if (r == 0) {
            r = op(rt->img, arg);
            if (r < 0)
                rt_err(rt, r, "%s: %s", what, pcow_errmsg(rt->img));
        }
        pthread_rwlock_unlock(&rt->img_lock);
        if (rt->written) /* a new active layer: none of its clusters was taken by this mapping */
            memset((void *)rt->written, 0, (rt->nclusters + 63) / 64 * sizeof *rt->written);
        int m = rt_map_extents(rt); /* the active layer as it is now (unchanged if op failed) */
        if (r == 0)
            r = m;
    }
    pthread_rwlock_unlock(&rt->epoch);
    pthread_mutex_unlock(&rt->switch_lock);
    return r;
}

int pcow_runtime_snapshot(pcow_runtime *rt, const char *name)
{
    return switch_range(rt, pcow_snapshot_create, name, "snapshot");
}

int pcow_runtime_rollback(pcow_runtime *rt, const char *name_or_id)
{
    return switch_range(rt, pcow_snapshot_apply, name_or_id, "rollback");
}
