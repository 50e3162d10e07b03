/* Snapshots, rollback, rebase, commit. Every operation that changes the layer structure builds
 * the new tables in fresh clusters, switches the header to them in one durable step, and only
 * then frees what the old state alone referenced: a crash leaves leaks, never a mixed state. */
#define _GNU_SOURCE
#include "pcow_internal.h"
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int ready_rw(pcow_image *img)
{
    int r = pcow__check_usable(img);
    if (r < 0)
        return r;
    if (!img->rw)
        return pcow__err(img, EROFS, "image is open read-only");
    if (!img->nlayers)
        return pcow__err(img, EIO, "image has no usable layer directory");
    return 0;
}

/* Layer ids are never reused; refuse to wrap around. */
static int check_ids(pcow_image *img)
{
    if (img->h.next_id >= UINT32_MAX)
        return pcow__err(img, ENOSPC, "layer ids are exhausted (next id %u)", img->h.next_id);
    return 0;
}

/* Is s a non-empty run of ASCII digits? Such keys are layer ids, never names. */
static bool all_digits(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

/* A key made only of digits selects the snapshot with that id, any other key the snapshot
 * with that name (qemu-img's ID vs TAG, made unambiguous: names cannot be all digits, so a key
 * never matches an id and a name at once). The active layer is never selected. */
static int find_snapshot(pcow_image *img, const char *key)
{
    if (!key || !*key)
        return pcow__err(img, EINVAL, "no snapshot name given");
    if (all_digits(key)) {
        errno = 0;
        char *end;
        unsigned long long id = strtoull(key, &end, 10);
        for (uint32_t i = 0; errno == 0 && id <= UINT32_MAX && i < img->nlayers; i++)
            if (i != img->active && img->layers[i].id == id)
                return (int)i;
        if (errno == 0 && id == img->h.active_id)
            return pcow__err(img, EINVAL, "layer id %s is the active layer, not a snapshot", key);
        return pcow__err(img, ENOENT, "no snapshot with id %s (a key made only of digits is an id; names are never all digits)", key);
    }
    for (uint32_t i = 0; i < img->nlayers; i++)
        if (i != img->active && !strcmp(img->layers[i].name, key))
            return (int)i;
    return pcow__err(img, ENOENT, "no snapshot named '%s'", key);
}

static void now(uint64_t *s, uint32_t *ns)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    *s = (uint64_t)ts.tv_sec;
    *ns = (uint32_t)ts.tv_nsec;
}

/* Replace the in-memory layer array after a successful durable switch. */
static void install(pcow_image *img, struct layer *nl, uint32_t n)
{
    free(img->layers);
    img->layers = nl;
    img->nlayers = n;
    pcow__relink(img);
}

int pcow_snapshot_create(pcow_image *img, const char *name)
{
    int r = ready_rw(img);
    if (r < 0)
        return r;
    size_t nl = name ? strlen(name) : 0;
    if (nl == 0 || nl > PCOW_LAYER_NAME_MAX)
        return pcow__err(img, EINVAL, "snapshot name must be 1..%d bytes", PCOW_LAYER_NAME_MAX);
    if (all_digits(name))
        return pcow__err(img, EINVAL, "snapshot name '%s' is all digits (such keys select snapshots by id)", name);
    for (uint32_t i = 0; i < img->nlayers; i++)
        if (!strcmp(img->layers[i].name, name))
            return pcow__err(img, EEXIST, "a snapshot named '%s' already exists", name);
    if (img->nlayers >= PCOW_MAX_LAYERS)
        return pcow__err(img, ENOSPC, "too many layers (%u)", img->nlayers);
    if ((r = check_ids(img)) < 0)
        return r;
    struct layer *nlr = calloc(img->nlayers + 1, sizeof *nlr);
    if (!nlr)
        return pcow__err(img, ENOMEM, "out of memory");
    memcpy(nlr, img->layers, img->nlayers * sizeof *nlr);
    struct layer *old = &nlr[img->active], *A = &nlr[img->nlayers];
    memcpy(old->name, name, nl + 1);
    now(&old->ctime_sec, &old->ctime_nsec);
    A->id = img->h.next_id;
    A->parent_id = old->id;
    now(&A->ctime_sec, &A->ctime_nsec);
    uint64_t *oldrefs;
    size_t nold;
    r = pcow__collect_refs(img, &oldrefs, &nold);
    if (r == 0) {
        r = pcow__new_l1(img, A);
        if (r == 0)
            r = pcow__write_dir(img, nlr, img->nlayers + 1, A->id, A->id + 1, NULL);
        if (r < 0) {
            pcow__free_layer(img, A);
            free(oldrefs);
            free(nlr);
            return r;
        }
        install(img, nlr, img->nlayers + 1);
        pcow__free_unreferenced(img, oldrefs, nold);
        free(oldrefs);
    } else {
        free(nlr);
    }
    return r;
}

int pcow_snapshot_apply(pcow_image *img, const char *key)
{
    int r = ready_rw(img);
    if (r < 0)
        return r;
    int s = find_snapshot(img, key);
    if (s < 0)
        return s;
    if ((r = check_ids(img)) < 0)
        return r;
    uint64_t *oldrefs;
    size_t nold;
    r = pcow__collect_refs(img, &oldrefs, &nold);
    if (r < 0)
        return r;
    struct layer *nlr = calloc(img->nlayers, sizeof *nlr);
    if (!nlr) {
        free(oldrefs);
        return pcow__err(img, ENOMEM, "out of memory");
    }
    memcpy(nlr, img->layers, img->nlayers * sizeof *nlr);
    struct layer *A = &nlr[img->active];
    struct layer dropped = *A;
    memset(A, 0, sizeof *A);
    A->id = img->h.next_id;
    A->parent_id = img->layers[s].id;
    now(&A->ctime_sec, &A->ctime_nsec);
    r = pcow__new_l1(img, A);
    if (r == 0)
        r = pcow__write_dir(img, nlr, img->nlayers, A->id, A->id + 1, NULL);
    if (r < 0) {
        pcow__free_layer(img, A);
        free(nlr);
        free(oldrefs);
        return r;
    }
    install(img, nlr, img->nlayers);
    pcow__free_layer(img, &dropped);
    pcow__free_unreferenced(img, oldrefs, nold);
    free(oldrefs);
    return 0;
}

/* Copy the sub-units `units` of S's cluster src into cluster dst. */
static int copy_units(pcow_image *img, uint64_t src, uint64_t dst, const pcow_bitmap *units, uint8_t *tmp)
{
    for (uint32_t u = 0; u < img->nsub; u++) {
        if (!bm_test(units, u))
            continue;
        int r = pcow__pread(img, tmp, img->ssize, src + u * img->ssize);
        if (r == 0)
            r = pcow__pwrite(img, tmp, img->ssize, dst + u * img->ssize);
        if (r < 0)
            return r;
    }
    return 0;
}

static int ensure_l2(pcow_image *img, struct layer *L, uint64_t t)
{
    if (l2_tab(L, t))
        return 0;
    uint64_t *tab = calloc(1, img->csize);
    if (!tab || pcow__l1_chunk(img, L, t) < 0) {
        free(tab);
        return pcow__err(img, ENOMEM, "out of memory");
    }
    l1_set(L, t, 0, tab);
    return 0;
}

/* Merge snapshot layer S into child C in memory (C's tables are then shadow-written by the
 * caller). Sub-units C does not own are filled from S; clusters C lacks are moved (move=true,
 * the last child) or copied into new clusters. Data written here is only ever in clusters or
 * sub-units the old state does not read, so the old state stays intact until the switch. */
static int merge_into(pcow_image *img, struct layer *S, struct layer *C, bool move, uint8_t *tmp)
{
    uint64_t cm = ~(img->csize - 1);
    for (uint64_t t = l1_next(img, S, 0); t < img->l1n; t = l1_next(img, S, t + 1)) {
        uint64_t *st = l2_tab(S, t);
        for (uint64_t k = 0; k < img->l2n; k++) {
            uint64_t sw0 = st[2 * k];
            if (!sw0)
                continue;
            pcow_bitmap sbm;
            ent_owned(img, S, t * img->l2n + k, sw0, &sbm);
            uint64_t *ct = l2_tab(C, t);
            uint64_t cw0 = ct ? ct[2 * k] : 0;
            int r;
            if (!cw0) {
                if ((r = ensure_l2(img, C, t)) < 0)
                    return r;
                ct = l2_tab(C, t);
                if (move) {
                    ct[2 * k] = sw0;
                    ct[2 * k + 1] = st[2 * k + 1];
                    st[2 * k] = 0; /* now owned by C (with its record, if any) */
                    st[2 * k + 1] = 0;
                } else {
                    uint64_t a, w1 = st[2 * k + 1];
                    r = pcow__reserve(img, 1, &a);
                    if (r == 0)
                        r = copy_units(img, sw0 & cm, a, &sbm, tmp);
                    if (r == 0 && pcow__bm_clone(img, sw0, &w1) < 0)
                        r = pcow__err(img, ENOMEM, "out of memory");
                    if (r < 0)
                        return r;
                    ct[2 * k] = a | (sw0 & ENTRY_PARTIAL);
                    ct[2 * k + 1] = (sw0 & ENTRY_PARTIAL) ? w1 : 0;
                }
                continue;
            }
            if (!(cw0 & ENTRY_PARTIAL))
                continue;
            pcow_bitmap cbm, need = sbm;
            w1_bm(img, cw0, ct[2 * k + 1], &cbm);
            bm_andnot(&need, &cbm);
            if (pcow_bitmap_empty(&need))
                continue;
            r = copy_units(img, sw0 & cm, cw0 & cm, &need, tmp);
            if (r < 0)
                return r;
            bm_or(&cbm, &need);
            if (!img->ext) {
                ct[2 * k + 1] = cbm.w[0];
            } else if (ct[2 * k + 1]) {
                memcpy(((struct bmrec *)(uintptr_t)ct[2 * k + 1])->w, cbm.w, sizeof cbm.w);
            } else {
                struct bmrec *rec = calloc(1, sizeof *rec); /* its record is written by write_tables */
                if (!rec)
                    return pcow__err(img, ENOMEM, "out of memory");
                memcpy(rec->w, cbm.w, sizeof cbm.w);
                ct[2 * k + 1] = (uint64_t)(uintptr_t)rec;
            }
        }
    }
    return 0;
}

/* Deep copy of a layer's in-memory tables (so a failed operation leaves the image usable). */
static int clone_tables(pcow_image *img, const struct layer *src, struct layer *dst)
{
    *dst = *src;
    if (pcow__l1_alloc(img, dst) < 0)
        goto fail;
    for (uint64_t t = l1_next(img, src, 0); t < img->l1n; t = l1_next(img, src, t + 1)) {
        uint64_t *tab = malloc(img->csize);
        if (!tab || pcow__l1_chunk(img, dst, t) < 0) {
            free(tab);
            goto fail;
        }
        memcpy(tab, l2_tab(src, t), img->csize);
        l1_set(dst, t, l1_addr(src, t), tab);
        for (uint64_t k = 0; k < img->l2n; k++) {
            if (pcow__bm_clone(img, tab[2 * k], &tab[2 * k + 1]) < 0) {
                /* entries from k on still share src's records: do not free those */
                for (uint64_t z = k; z < img->l2n; z++)
                    tab[2 * z] = tab[2 * z + 1] = 0;
                goto fail;
            }
        }
    }
    return 0;
fail:
    pcow__free_layer(img, dst);
    return pcow__err(img, ENOMEM, "out of memory");
}

int pcow_snapshot_delete(pcow_image *img, const char *key)
{
    int r = ready_rw(img);
    if (r < 0)
        return r;
    int s = find_snapshot(img, key);
    if (s < 0)
        return s;
    uint64_t *oldrefs = NULL;
    size_t nold;
    r = pcow__collect_refs(img, &oldrefs, &nold);
    if (r < 0)
        return r;
    uint32_t n = img->nlayers;
    struct layer *nlr = calloc(n, sizeof *nlr);
    struct layer Scopy;
    uint8_t *tmp = malloc(img->csize);
    bool *cloned = calloc(n, sizeof *cloned);
    memset(&Scopy, 0, sizeof Scopy);
    if (!nlr || !tmp || !cloned) {
        r = pcow__err(img, ENOMEM, "out of memory");
        goto out;
    }
    memcpy(nlr, img->layers, n * sizeof *nlr);
    r = clone_tables(img, &img->layers[s], &Scopy);
    int last = -1;
    for (uint32_t i = 0; i < n; i++)
        if (img->layers[i].parent == s)
            last = (int)i;
    for (uint32_t i = 0; i < n && r == 0; i++) {
        if (img->layers[i].parent != s)
            continue;
        r = clone_tables(img, &img->layers[i], &nlr[i]);
        if (r < 0)
            break;
        cloned[i] = true;
        r = merge_into(img, &Scopy, &nlr[i], (int)i == last, tmp);
        if (r == 0)
            r = pcow__write_tables(img, &nlr[i]);
        nlr[i].parent_id = img->layers[s].parent_id;
    }
    if (r < 0)
        goto out;
    /* drop S from the array */
    struct layer removed = img->layers[s];
    memmove(&nlr[s], &nlr[s + 1], (n - 1 - (uint32_t)s) * sizeof *nlr);
    memmove(&cloned[s], &cloned[s + 1], (n - 1 - (uint32_t)s) * sizeof *cloned);
    r = pcow__write_dir(img, nlr, n - 1, img->h.active_id, img->h.next_id, NULL);
    if (r < 0) {
        memmove(&nlr[s + 1], &nlr[s], (n - 1 - (uint32_t)s) * sizeof *nlr);
        memmove(&cloned[s + 1], &cloned[s], (n - 1 - (uint32_t)s) * sizeof *cloned);
        nlr[s] = removed;
        goto out;
    }
    /* free the tables the new state replaced */
    for (uint32_t i = 0, j = 0; i < n; i++) {
        if ((int)i == s)
            continue;
        if (cloned[j])
            pcow__free_layer(img, &img->layers[i]);
        j++;
    }
    pcow__free_layer(img, &removed);
    install(img, nlr, n - 1);
    nlr = NULL;
    pcow__free_unreferenced(img, oldrefs, nold);
out:
    if (nlr) {
        for (uint32_t i = 0; i < n; i++)
            if (cloned && cloned[i])
                pcow__free_layer(img, &nlr[i]);
        free(nlr);
    }
    pcow__free_layer(img, &Scopy);
    free(cloned);
    free(tmp);
    free(oldrefs);
    return r;
}

/* ---- rebase ---- */

static int open_new_base(pcow_image *img, const char *path, int fmt, pcow_image **b, int *bfd, uint64_t *bsize,
                         char *resolved, size_t rlen)
{
    dev_t devs[PCOW_MAX_BASE_DEPTH + 2];
    ino_t inos[PCOW_MAX_BASE_DEPTH + 2];
    struct stat st;
    if (fstat(img->fd[0], &st) < 0)
        return pcow__err(img, errno, "cannot stat: %s", strerror(errno));
    devs[0] = st.st_dev;
    inos[0] = st.st_ino;
    return pcow__resolve_base(img, path, fmt, img->flags & PCOW_OPEN_UNSAFE_BASE, b, bfd, bsize, resolved, rlen, 0,
                              devs, inos);
}

static int read_src(pcow_image *img, pcow_image *b, int bfd, uint64_t bsize, uint64_t off, uint64_t len, uint8_t *buf)
{
    /* read through a base that is not (yet) img's base */
    pcow_image *sb = img->base;
    int sfd = img->base_fd;
    uint64_t ss = img->base_size;
    uint32_t sf = img->h.base_fmt;
    img->base = b;
    img->base_fd = bfd;
    img->base_size = bsize;
    img->h.base_fmt = (b || bfd >= 0) ? (b ? PCOW_BASE_PCOW : PCOW_BASE_RAW) : PCOW_BASE_NONE;
    int r = pcow__read_base(img, off, len, buf);
    img->base = sb;
    img->base_fd = sfd;
    img->base_size = ss;
    img->h.base_fmt = sf;
    return r;
}

int pcow_rebase(pcow_image *img, const char *nb, int fmt, bool unsafe)
{
    int r = ready_rw(img);
    if (r < 0)
        return r;
    if (!unsafe && img->h.base_fmt && !img->base && img->base_fd < 0)
        return pcow__err(img, ENXIO, "the current base '%s' is not open; a safe rebase needs it (or use unsafe mode)", img->h.base);
    pcow_image *b = NULL;
    int bfd = -1;
    uint64_t bsize = 0;
    char resolved[4096] = "";
    int nfmt = PCOW_BASE_NONE;
    if (nb && *nb) {
        r = open_new_base(img, nb, fmt, &b, &bfd, &bsize, resolved, sizeof resolved);
        if (r < 0)
            return r;
        nfmt = r;
        r = 0;
    }
    uint8_t *o = malloc(img->csize), *nw = malloc(img->csize);
    if (!o || !nw) {
        r = pcow__err(img, ENOMEM, "out of memory");
        goto fail;
    }
    if (!unsafe) {
        uint64_t cm = ~(img->csize - 1);
        pcow_bitmap full;
        pcow__full_bm(img, &full);
        for (uint64_t vc = 0; vc < img->nclusters && r == 0; vc++) {
            /* bottom layers that do not own all of this cluster read the base */
            bool any = false;
            for (uint32_t i = 0; i < img->nlayers; i++) {
                struct layer *L = &img->layers[i];
                uint64_t w0 = ent_w0(img, L, vc);
                pcow_bitmap have;
                ent_owned(img, L, vc, w0, &have);
                if (L->parent < 0 && !bm_eq(&have, &full))
                    any = true;
            }
            if (!any)
                continue;
            uint64_t off = vc * img->csize, len = img->csize;
            if (off + len > img->h.vsize)
                len = img->h.vsize - off;
            memset(o, 0, img->csize);
            memset(nw, 0, img->csize);
            r = pcow__read_base(img, off, len, o);
            if (r == 0)
                r = read_src(img, b, bfd, bsize, off, len, nw);
            if (r < 0 || !memcmp(o, nw, img->csize))
                continue;
            for (uint32_t i = 0; i < img->nlayers && r == 0; i++) {
                struct layer *L = &img->layers[i];
                if (L->parent >= 0)
                    continue;
                uint64_t w0 = ent_w0(img, L, vc);
                if (w0 && !(w0 & ENTRY_PARTIAL))
                    continue;
                pcow_bitmap have;
                ent_owned(img, L, vc, w0, &have);
                uint64_t addr = w0 & cm;
                if (!w0)
                    r = pcow__reserve(img, 1, &addr);
                for (uint32_t u = 0; u < img->nsub && r == 0; u++)
                    if (!bm_test(&have, u))
                        r = pcow__pwrite(img, o + u * img->ssize, img->ssize, addr + u * img->ssize);
                if (r == 0)
                    r = pcow__persist_all(img);
                if (r == 0)
                    r = pcow__set_entry(img, i, vc, w0 ? w0 : addr, w0 ? &full : NULL);
            }
        }
        if (r < 0)
            goto fail;
    }
    struct hdr nh = img->h;
    memset(nh.base, 0, sizeof nh.base);
    nh.base_len = nb ? (uint32_t)strlen(nb) : 0;
    if (nh.base_len)
        memcpy(nh.base, nb, nh.base_len);
    nh.base_fmt = (uint32_t)nfmt;
    r = pcow__write_header(img, &nh);
    if (r < 0)
        goto fail;
    if (img->base)
        pcow__free(img->base);
    if (img->base_fd >= 0)
        close(img->base_fd);
    img->base = b;
    img->base_fd = bfd;
    img->base_size = bsize;
    snprintf(img->base_resolved, sizeof img->base_resolved, "%s", resolved);
    free(o);
    free(nw);
    return 0;
fail:
    free(o);
    free(nw);
    if (b)
        pcow__free(b);
    if (bfd >= 0)
        close(bfd);
    return r;
}

/* ---- commit ---- */

static int reopen_base(pcow_image *img)
{
    char resolved[4096];
    dev_t devs[PCOW_MAX_BASE_DEPTH + 2];
    ino_t inos[PCOW_MAX_BASE_DEPTH + 2];
    struct stat st;
    if (fstat(img->fd[0], &st) < 0)
        return pcow__err(img, errno, "cannot stat: %s", strerror(errno));
    devs[0] = st.st_dev;
    inos[0] = st.st_ino;
    int r = pcow__resolve_base(img, img->h.base, (int)img->h.base_fmt, img->flags, &img->base, &img->base_fd,
                               &img->base_size, resolved, sizeof resolved, 0, devs, inos);
    if (r < 0)
        return r;
    snprintf(img->base_resolved, sizeof img->base_resolved, "%s", resolved);
    return 0;
}

int pcow_commit(pcow_image *img)
{
    int r = ready_rw(img);
    if (r < 0)
        return r;
    if (!img->h.base_fmt)
        return pcow__err(img, EINVAL, "image has no base image to commit into");
    if (img->nlayers > 1)
        return pcow__err(img, EBUSY, "image has %u snapshot(s); committing would change them; delete them first", img->nlayers - 1);
    if (!img->base && img->base_fd < 0)
        return pcow__err(img, ENXIO, "base image '%s' is not open", img->h.base);
    /* our own shared lock on the base would block the exclusive one: drop it, and reopen the
     * base read-only at the end */
    if (img->base) {
        pcow__free(img->base);
        img->base = NULL;
    }
    if (img->base_fd >= 0) {
        close(img->base_fd);
        img->base_fd = -1;
    }
    pcow_image *wb = NULL;
    int wfd = -1;
    char e2[sizeof img->err];
    if (img->h.base_fmt == PCOW_BASE_PCOW) {
        r = pcow_open(img->base_resolved, PCOW_OPEN_RDWR | (img->flags & PCOW_OPEN_UNSAFE_BASE), &wb, e2, sizeof e2);
        if (r < 0) {
            r = pcow__err(img, r, "cannot open the base for writing: %s", e2);
            reopen_base(img);
            return r;
        }
        if (wb->h.vsize < img->h.vsize) {
            pcow_close(wb, NULL, 0);
            reopen_base(img);
            return pcow__err(img, EINVAL, "base '%s' (%llu bytes) is smaller than the image (%llu bytes)", img->h.base,
                             (unsigned long long)wb->h.vsize, (unsigned long long)img->h.vsize);
        }
    } else {
        wfd = open(img->base_resolved, O_RDWR | O_CLOEXEC);
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
        if (wfd < 0 || fcntl(wfd, F_OFD_SETLK, &fl) < 0) {
            int e = errno;
            if (wfd >= 0)
                close(wfd);
            reopen_base(img);
            return pcow__err(img, e, "cannot open base '%s' for writing: %s", img->base_resolved,
                             e == EAGAIN || e == EACCES ? "it is in use by another process" : strerror(e));
        }
    }
    uint8_t *buf = malloc(img->csize);
    if (!buf)
        r = pcow__err(img, ENOMEM, "out of memory");
    struct layer *A = &img->layers[img->active];
    for (uint64_t vc = 0; vc < img->nclusters && r == 0; vc++) {
        uint64_t w0 = ent_w0(img, A, vc);
        if (!w0)
            continue;
        pcow_bitmap bm;
        ent_owned(img, A, vc, w0, &bm);
        for (uint32_t u = 0; u < img->nsub && r == 0; u++) {
            if (!bm_test(&bm, u))
                continue;
            uint64_t off = vc * img->csize + u * img->ssize, len = img->ssize;
            if (off >= img->h.vsize)
                break;
            if (off + len > img->h.vsize)
                len = img->h.vsize - off;
            r = pcow__pread(img, buf, len, (w0 & ~(img->csize - 1)) + u * img->ssize);
            if (r < 0)
                break;
            if (wb) {
                r = pcow_write(wb, buf, len, off);
                if (r < 0)
                    r = pcow__err(img, r, "writing into the base: %s", pcow_errmsg(wb));
            } else {
                ssize_t w = pwrite(wfd, buf, len, (off_t)off);
                if (w != (ssize_t)len)
                    r = pcow__err(img, w < 0 ? errno : EIO, "writing into base '%s' failed", img->base_resolved);
            }
        }
    }
    free(buf);
    if (r == 0 && wfd >= 0 && fdatasync(wfd) < 0)
        r = pcow__err(img, errno, "cannot make base '%s' durable: %s", img->base_resolved, strerror(errno));
    if (wb) {
        char ce[512];
        int cr = pcow_close(wb, ce, sizeof ce);
        if (r == 0 && cr < 0)
            r = pcow__err(img, cr, "closing the base: %s", ce);
    }
    if (wfd >= 0)
        close(wfd);
    int rb = reopen_base(img);
    if (r < 0)
        return r;
    if (rb < 0)
        return rb;
    /* the base now holds the data: empty the active layer */
    uint64_t *oldrefs;
    size_t nold;
    r = pcow__collect_refs(img, &oldrefs, &nold);
    if (r < 0)
        return r;
    struct layer *nlr = calloc(1, sizeof *nlr);
    if (!nlr) {
        free(oldrefs);
        return pcow__err(img, ENOMEM, "out of memory");
    }
    *nlr = *A;
    nlr->l1p = NULL;
    nlr->owned = 0;
    r = pcow__new_l1(img, nlr);
    if (r == 0)
        r = pcow__write_dir(img, nlr, 1, nlr->id, img->h.next_id, NULL);
    if (r < 0) {
        pcow__free_layer(img, nlr);
        free(nlr);
        free(oldrefs);
        return r;
    }
    pcow__free_layer(img, A);
    install(img, nlr, 1);
    pcow__free_unreferenced(img, oldrefs, nold);
    free(oldrefs);
    return 0;
}
