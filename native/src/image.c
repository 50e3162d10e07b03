/* Open (with full validation), create, close, header and directory updates. */
#define _GNU_SOURCE
#include "pcow_internal.h"
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

static uint32_t g32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return le32toh(v); }
static uint64_t g64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return le64toh(v); }
static void p32(uint8_t *p, uint32_t v) { v = htole32(v); memcpy(p, &v, 4); }
static void p64(uint8_t *p, uint64_t v) { v = htole64(v); memcpy(p, &v, 8); }

const char *pcow_errmsg(const pcow_image *img) { return img->err; }
const char *pcow_path(const pcow_image *img) { return img->path; }
pcow_image *pcow_base_image(const pcow_image *img) { return img->base; }
void pcow__full_bm(const pcow_image *img, pcow_bitmap *o)
{
    memset(o, 0, sizeof *o);
    for (uint32_t i = 0; i < img->nsub / 64; i++)
        o->w[i] = ~0ull;
    if (img->nsub % 64)
        o->w[img->nsub / 64] = (1ull << (img->nsub % 64)) - 1;
}

/* ---- bitmap records (BITMAP_RECORDS images) ---- */
void pcow__bm_free_rec(pcow_image *img, uint64_t w0, uint64_t w1)
{
    if (img->ext && (w0 & ENTRY_PARTIAL))
        free((struct bmrec *)(uintptr_t)w1);
}

/* Replace *w1 (in-memory word 1 of entry w0) with a deep copy of its record. */
int pcow__bm_clone(const pcow_image *img, uint64_t w0, uint64_t *w1)
{
    if (!img->ext || !(w0 & ENTRY_PARTIAL) || !*w1)
        return 0;
    struct bmrec *n = malloc(sizeof *n);
    if (!n)
        return -ENOMEM;
    memcpy(n, (const struct bmrec *)(uintptr_t)*w1, sizeof *n);
    *w1 = (uint64_t)(uintptr_t)n;
    return 0;
}

/* A record slot nothing references: a free slot of a referenced bitmap cluster, the next one of
 * the bitmap cluster appended last, or the first of a newly appended bitmap cluster. */
static int alloc_rec(pcow_image *img, uint64_t *addr)
{
    if (img->bm_nfree) {
        *addr = img->bm_free[--img->bm_nfree];
        return 0;
    }
    if (img->bm_next >= img->bm_lim) {
        uint64_t a;
        int r = pcow__reserve_sparse(img, 1, &a); /* records are written before use: no fallocate */
        if (r < 0)
            return r;
        img->bm_next = a;
        img->bm_lim = a + img->csize;
    }
    *addr = img->bm_next;
    img->bm_next += BM_REC_SIZE;
    return 0;
}

/* Write bm into a fresh record (whole 64 bytes, so stale bits of a reused slot vanish); the
 * caller makes it durable before any entry points at it. */
int pcow__bm_write_rec(pcow_image *img, const pcow_bitmap *bm, uint64_t *addr)
{
    int r = alloc_rec(img, addr);
    if (r < 0)
        return r;
    uint8_t b[BM_REC_SIZE];
    for (int i = 0; i < BM_WORDS; i++)
        p64(b + 8 * i, bm->w[i]);
    r = pcow__pwrite(img, b, BM_REC_SIZE, *addr);
    if (r < 0 && img->bm_nfree < img->bm_capfree)
        img->bm_free[img->bm_nfree++] = *addr; /* never referenced: reusable */
    return r;
}

static uint64_t span(const pcow_image *img, uint64_t bytes)
{
    return (bytes + img->csize - 1) / img->csize * img->csize;
}

/* Derive sizes from a validated header. */
static void derive(pcow_image *img)
{
    img->csize = 1ull << img->h.cbits;
    img->ssize = 1ull << img->h.sbits;
    img->nsub = (uint32_t)(img->csize / img->ssize);
    img->ext = img->h.incompat & INCOMPAT_BITMAP_RECORDS;
    img->unit = 1ull << img->h.ubits;
    img->nclusters = (img->h.vsize + img->csize - 1) / img->csize;
    img->l2n = img->csize / L2_ENTRY_SIZE;
    img->l1n = (img->nclusters + img->l2n - 1) / img->l2n;
    img->l1_span = span(img, img->l1n * 8);
    img->nfiles = img->h.nstripes;
}

static int lock_fd(int fd, bool excl)
{
    struct flock fl = {.l_type = excl ? F_WRLCK : F_RDLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    if (fcntl(fd, F_OFD_SETLK, &fl) < 0)
        return -errno;
    return 0;
}

/* Does another open file description hold an OFD lock on fd's file that conflicts with
 * `type` (F_RDLCK: a writer; F_WRLCK: anyone)? If so, name the holder in who: "PID n" or
 * "another process". OFD locks report no owner (l_pid is -1 in F_OFD_GETLK and /proc/locks),
 * so the owner is looked up in /proc/PID/fdinfo, whose "lock:" lines list the locks held
 * through that descriptor. Returns 1 (locked), 0 (not) or -errno. */
static int lock_holder(int fd, short type, char *who, size_t n, int *pid_out)
{
    snprintf(who, n, "another process");
    *pid_out = -1;
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
        return -errno;
    if (fl.l_type == F_UNLCK)
        return 0;
    if (fl.l_pid > 0) { /* a POSIX lock names its owner */
        *pid_out = fl.l_pid;
        snprintf(who, n, "PID %d", (int)fl.l_pid);
        return 1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0)
        return 1;
    char key[80];
    snprintf(key, sizeof key, " %02x:%02x:%llu ", major(st.st_dev), minor(st.st_dev), (unsigned long long)st.st_ino);
    DIR *pd = opendir("/proc");
    if (!pd)
        return 1;
    struct dirent *pe;
    long self = (long)getpid();
    while ((pe = readdir(pd)) && *pid_out < 0) {
        char *end;
        long pid = strtol(pe->d_name, &end, 10);
        if (*end || pid <= 0 || pid == self)
            continue;
        char dp[64];
        snprintf(dp, sizeof dp, "/proc/%ld/fdinfo", pid);
        int dfd = open(dp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *fdd = dfd >= 0 ? fdopendir(dfd) : NULL;
        if (!fdd) {
            if (dfd >= 0)
                close(dfd);
            continue;
        }
        struct dirent *fe;
        while ((fe = readdir(fdd)) && *pid_out < 0) {
            if (fe->d_name[0] < '0' || fe->d_name[0] > '9')
                continue;
            int f = openat(dfd, fe->d_name, O_RDONLY | O_CLOEXEC);
            if (f < 0)
                continue;
            char b[4096];
            ssize_t k = read(f, b, sizeof b - 1);
            close(f);
            if (k <= 0)
                continue;
            b[k] = 0;
            for (char *l = strstr(b, "lock:"); l; l = strstr(l + 5, "lock:")) {
                char *nl = strchr(l, '\n');
                if (nl)
                    *nl = 0;
                if (strstr(l, "OFDLCK") && strstr(l, key) && (type == F_WRLCK || strstr(l, "WRITE")))
                    *pid_out = (int)pid;
                if (!nl)
                    break;
                *nl = '\n';
            }
        }
        closedir(fdd);
    }
    closedir(pd);
    if (*pid_out > 0)
        snprintf(who, n, "PID %d", *pid_out);
    return 1;
}

int pcow_in_use(const pcow_image *img, int *pid)
{
    char who[64];
    int p;
    int r = lock_holder(img->fd[0], F_RDLCK, who, sizeof who, &p);
    if (pid)
        *pid = p;
    return r;
}

int pcow__l1_alloc(pcow_image *img, struct layer *L)
{
    L->l1p = calloc((img->l1n >> L1P_SHIFT) + 1, sizeof *L->l1p);
    return L->l1p ? 0 : pcow__err(img, ENOMEM, "out of memory");
}

int pcow__l1_chunk(pcow_image *img, struct layer *L, uint64_t t)
{
    struct l1page *p = L->l1p[t >> L1P_SHIFT];
    if (!p) {
        p = calloc(1, sizeof *p);
        if (!p)
            return pcow__err(img, ENOMEM, "out of memory");
        __atomic_store_n(&L->l1p[t >> L1P_SHIFT], p, __ATOMIC_RELEASE);
    }
    if (p->c[(t >> L1C_BITS) & (L1D_N - 1)])
        return 0;
    struct l1chunk *c = calloc(1, sizeof *c);
    if (!c)
        return pcow__err(img, ENOMEM, "out of memory");
    __atomic_store_n(&p->c[(t >> L1C_BITS) & (L1D_N - 1)], c, __ATOMIC_RELEASE);
    return 0;
}

void pcow__free_layer(pcow_image *img, struct layer *L)
{
    for (uint64_t pi = 0; L->l1p && pi <= img->l1n >> L1P_SHIFT; pi++) {
        struct l1page *p = L->l1p[pi];
        for (uint32_t ci = 0; p && ci < L1D_N; ci++) {
            struct l1chunk *c = p->c[ci];
            for (uint32_t j = 0; c && j < L1C_N; j++) {
                if (img->ext && c->l2[j])
                    for (uint64_t k = 0; k < img->l2n; k++)
                        pcow__bm_free_rec(img, c->l2[j][2 * k], c->l2[j][2 * k + 1]);
                free(c->l2[j]);
            }
            free(c);
        }
        free(p);
    }
    free(L->l1p);
    L->l1p = NULL;
}

void pcow__free(pcow_image *img)
{
    if (!img)
        return;
    for (uint32_t i = 0; i < img->nlayers; i++)
        pcow__free_layer(img, &img->layers[i]);
    free(img->layers);
    if (img->base)
        pcow__free(img->base);
    if (img->base_fd >= 0)
        close(img->base_fd);
    for (uint32_t f = 0; f < PCOW_MAX_STRIPES; f++) {
        if (img->fd[f] >= 0)
            close(img->fd[f]);
        free(img->fpath[f]);
    }
    if (img->dirfd >= 0)
        close(img->dirfd);
    free(img->refmap);
    free(img->dropmap);
    free(img->bm_free);
    free(img->recs);
    free(img->path);
    free(img->dirpath);
    free(img);
}

static pcow_image *img_new(const char *path)
{
    pcow_image *img = calloc(1, sizeof *img);
    if (!img)
        return NULL;
    img->dirfd = -1;
    img->base_fd = -1;
    for (int f = 0; f < PCOW_MAX_STRIPES; f++)
        img->fd[f] = -1;
    img->path = strdup(path);
    char *tmp = strdup(path);
    if (!img->path || !tmp) {
        free(tmp);
        pcow__free(img);
        return NULL;
    }
    img->dirpath = strdup(dirname(tmp));
    free(tmp);
    if (!img->dirpath) {
        pcow__free(img);
        return NULL;
    }
    pcow_set_persist(img, NULL, NULL);
    return img;
}

/* Logical end of the striped image from the stripe files' sizes, rounded up to a cluster. */
static void compute_end(pcow_image *img)
{
    uint64_t end = 0;
    for (uint32_t f = 0; f < img->nfiles; f++) {
        uint64_t s = img->fsize[f];
        if (!s)
            continue;
        uint64_t last = s - 1, e;
        if (img->nfiles == 1)
            e = s;
        else
            e = ((((last >> img->h.ubits) * img->nfiles + f) << img->h.ubits) | (last & (img->unit - 1))) + 1;
        if (e > end)
            end = e;
    }
    img->end = span(img, end);
}

/* A reference to len bytes at addr: cluster aligned, not the header, inside the files, and not
 * referenced before (one owner per cluster). Returns 0, 1 (skip, check mode) or -errno. */
static int ref(pcow_image *img, uint64_t addr, uint64_t len, const char *what)
{
    if (addr % img->csize || addr < img->csize)
        return pcow__corrupt(img, "%s at offset 0x%llx is not a cluster-aligned address after the header",
                             what, (unsigned long long)addr);
    if (addr > MAX_VIRTUAL_SIZE * 4 || !pcow__in_file(img, addr, len)) {
        uint32_t f;
        uint64_t off;
        pcow__addr(img, addr > MAX_VIRTUAL_SIZE * 4 ? 0 : addr, &f, &off);
        return pcow__corrupt(img, "%s at offset 0x%llx lies outside the file (size 0x%llx)", what,
                             (unsigned long long)addr, (unsigned long long)img->fsize[f]);
    }
    uint64_t c0 = addr / img->csize, n = len / img->csize;
    for (uint64_t c = c0; c < c0 + n; c++) {
        if (c >= img->refmap_n)
            return pcow__corrupt(img, "%s at offset 0x%llx lies beyond the image end 0x%llx", what,
                                 (unsigned long long)addr, (unsigned long long)img->end);
        if (img->refmap[c / 8] & (1u << (c % 8)))
            return pcow__corrupt(img, "%s at offset 0x%llx overlaps cluster 0x%llx that is already in use",
                                 what, (unsigned long long)addr, (unsigned long long)(c * img->csize));
    }
    for (uint64_t c = c0; c < c0 + n; c++)
        img->refmap[c / 8] |= (uint8_t)(1u << (c % 8));
    if (n && c0 + n - 1 > img->ref_last)
        img->ref_last = c0 + n - 1;
    return 0;
}

static int read_dir(pcow_image *img)
{
    uint64_t bytes = (uint64_t)img->h.dir_count * DIR_REC_SIZE;
    int r = ref(img, img->h.dir_off, span(img, bytes), "layer directory");
    if (r)
        return r < 0 ? r : 1;
    uint8_t *b = malloc(bytes);
    if (!b)
        return pcow__err(img, ENOMEM, "out of memory");
    r = pcow__pread_for(img, b, bytes, img->h.dir_off, "the layer directory");
    if (r < 0) {
        free(b);
        return r;
    }
    uint32_t crc = pcow_crc32c(0, b, bytes);
    if (crc != img->h.dir_crc) {
        free(b);
        r = pcow__corrupt(img, "layer directory at 0x%llx: checksum mismatch (header says 0x%08x, data 0x%08x)",
                          (unsigned long long)img->h.dir_off, img->h.dir_crc, crc);
        return r < 0 ? r : 1;
    }
    img->layers = calloc(img->h.dir_count, sizeof *img->layers);
    if (!img->layers) {
        free(b);
        return pcow__err(img, ENOMEM, "out of memory");
    }
    img->nlayers = img->h.dir_count;
    r = 0;
    for (uint32_t i = 0; i < img->nlayers && !r; i++) {
        const uint8_t *p = b + (size_t)i * DIR_REC_SIZE;
        struct layer *L = &img->layers[i];
        L->id = g32(p);
        L->parent_id = g32(p + 4);
        L->l1_off = g64(p + 8);
        L->ctime_sec = g64(p + 16);
        L->ctime_nsec = g32(p + 24);
        uint32_t flags = g32(p + 28), nl = g32(p + 32), res = g32(p + 36);
        bool zero_tail = true;
        for (int k = 104; k < (int)DIR_REC_SIZE; k++)
            zero_tail &= p[k] == 0;
        char bad[160] = "";
        if (L->id == 0 || L->id >= img->h.next_id)
            snprintf(bad, sizeof bad, "id %u is not in 1..%u (next_layer_id - 1)", L->id, img->h.next_id - 1);
        else if (L->parent_id == L->id)
            snprintf(bad, sizeof bad, "parent_id %u is the record's own id", L->parent_id);
        else if (L->parent_id >= img->h.next_id)
            snprintf(bad, sizeof bad, "parent_id %u is not below next_layer_id %u", L->parent_id, img->h.next_id);
        else if (L->ctime_nsec >= 1000000000u)
            snprintf(bad, sizeof bad, "ctime_nsec %u is not below 10^9", L->ctime_nsec);
        else if (flags)
            snprintf(bad, sizeof bad, "flags 0x%x are not 0", flags);
        else if (nl > PCOW_LAYER_NAME_MAX)
            snprintf(bad, sizeof bad, "name_len %u exceeds %d", nl, PCOW_LAYER_NAME_MAX);
        else if (res)
            snprintf(bad, sizeof bad, "reserved field at byte 36 is 0x%x, not 0", res);
        else if (!zero_tail)
            snprintf(bad, sizeof bad, "reserved bytes 104..127 are not zero");
        if (bad[0] || nl > PCOW_LAYER_NAME_MAX) { /* (nl: bad is set then too; the compiler needs it for the copy below) */
            r = pcow__corrupt(img, "layer directory record %u (id %u) has an invalid field: %s", i, L->id, bad);
            break;
        }
        memcpy(L->name, p + 40, nl);
        L->name[nl] = 0;
        bool tail0 = true;
        for (uint32_t k = nl; k < PCOW_LAYER_NAME_MAX; k++)
            tail0 &= p[40 + k] == 0;
        if (strlen(L->name) != nl || !tail0) {
            r = pcow__corrupt(img, "layer %u: name contains NUL bytes or trailing garbage", L->id);
            break;
        }
    }
    free(b);
    if (r)
        return r < 0 ? r : 1;
    /* ids unique, names unique, parents exist, no cycles, exactly the active layer has no children */
    int act = -1;
    for (uint32_t i = 0; i < img->nlayers; i++) {
        struct layer *L = &img->layers[i];
        L->parent = -1;
        if (L->id == img->h.active_id)
            act = (int)i;
        for (uint32_t j = 0; j < img->nlayers; j++) {
            if (j != i && img->layers[j].id == L->id)
                r = pcow__corrupt(img, "layer id %u appears twice in the directory", L->id);
            if (j > i && L->name[0] && !strcmp(img->layers[j].name, L->name))
                r = pcow__corrupt(img, "snapshot name '%s' appears twice", L->name);
            if (L->parent_id && img->layers[j].id == L->parent_id)
                L->parent = (int)j;
            if (r)
                return r < 0 ? r : 1;
        }
        if (L->parent_id && L->parent < 0) {
            r = pcow__corrupt(img, "layer %u names parent %u that does not exist", L->id, L->parent_id);
            return r < 0 ? r : 1;
        }
    }
    if (act < 0) {
        r = pcow__corrupt(img, "active layer id %u is not in the layer directory", img->h.active_id);
        return r < 0 ? r : 1;
    }
    img->active = (uint32_t)act;
    for (uint32_t i = 0; i < img->nlayers; i++) {
        int p = (int)i;
        for (uint32_t steps = 0; p >= 0; steps++) {
            if (steps > img->nlayers) {
                r = pcow__corrupt(img, "layer %u: the parent chain has a loop", img->layers[i].id);
                return r < 0 ? r : 1;
            }
            p = img->layers[p].parent;
        }
        if (img->layers[i].parent == act) {
            r = pcow__corrupt(img, "layer %u has the active layer as parent", img->layers[i].id);
            return r < 0 ? r : 1;
        }
        if ((int)i != act && img->layers[i].name[0] == 0) {
            r = pcow__corrupt(img, "snapshot layer %u has an empty name", img->layers[i].id);
            return r < 0 ? r : 1;
        }
    }
    return 0;
}

static uint64_t pcow__full_bitmap64(const pcow_image *img)
{
    return img->nsub >= 64 ? ~0ull : ((1ull << img->nsub) - 1);
}

/* Read and validate the bitmap record at a (word 1 of a partial entry of layer L, cluster vc):
 * 64-byte aligned, after the header, inside the files, no bit beyond the sub-unit count. Its
 * cluster's ownership and single reference are checked once every table is loaded
 * (check_recs). Returns 0, 1 (dropped, check mode) or -errno. */
static int load_rec(pcow_image *img, const struct layer *L, uint64_t vc, uint64_t a, struct bmrec **out)
{
    int r = 0;
    if (a % BM_REC_SIZE || a < img->csize || a > MAX_VIRTUAL_SIZE * 4 || !pcow__in_file(img, a, BM_REC_SIZE))
        r = pcow__corrupt(img, "layer %u: bitmap record of cluster %llu at offset 0x%llx is not a 64-byte aligned address inside the file after the header",
                          L->id, (unsigned long long)vc, (unsigned long long)a);
    if (r)
        return r < 0 ? r : 1;
    uint8_t b[BM_REC_SIZE];
    r = pcow__pread_for(img, b, BM_REC_SIZE, a, "a bitmap record");
    if (r < 0)
        return r;
    struct bmrec *rec = malloc(sizeof *rec);
    if (!rec)
        return pcow__err(img, ENOMEM, "out of memory");
    rec->addr = a;
    pcow_bitmap bm;
    for (int i = 0; i < BM_WORDS; i++)
        bm.w[i] = rec->w[i] = g64(b + 8 * i);
    if (bm_beyond(img, &bm)) {
        free(rec);
        r = pcow__corrupt(img, "layer %u: bitmap record of cluster %llu at offset 0x%llx has bits beyond %u sub-units",
                          L->id, (unsigned long long)vc, (unsigned long long)a, img->nsub);
        return r < 0 ? r : 1;
    }
    if (img->nrecs == img->caprecs) {
        size_t nc = img->caprecs ? img->caprecs * 2 : 64;
        struct recref *n = realloc(img->recs, nc * sizeof *n);
        if (!n) {
            free(rec);
            return pcow__err(img, ENOMEM, "out of memory");
        }
        img->recs = n;
        img->caprecs = nc;
    }
    img->recs[img->nrecs++] = (struct recref){a, vc, L->id};
    *out = rec;
    return 0;
}

static int cmp_rec(const void *a, const void *b)
{
    uint64_t x = ((const struct recref *)a)->addr, y = ((const struct recref *)b)->addr;
    return x < y ? -1 : x > y;
}

/* After every table is loaded: each record is referenced once, and bitmap clusters are owned
 * by nothing else (one ref() per cluster holding records). Then the free slots of those
 * clusters become the record allocator's free list. Returns 0 or -errno (open). */
static int check_recs(pcow_image *img)
{
    if (!img->nrecs)
        return 0;
    qsort(img->recs, img->nrecs, sizeof *img->recs, cmp_rec);
    uint64_t cm = ~(img->csize - 1);
    for (size_t i = 0; i < img->nrecs; i++) {
        const struct recref *p = &img->recs[i];
        int r = 0;
        if (i > 0 && p->addr == p[-1].addr)
            r = pcow__corrupt(img, "bitmap record at offset 0x%llx is referenced twice (layer %u cluster %llu and layer %u cluster %llu)",
                              (unsigned long long)p->addr, p[-1].layer_id, (unsigned long long)p[-1].vc, p->layer_id,
                              (unsigned long long)p->vc);
        else if (i == 0 || (p->addr & cm) != (p[-1].addr & cm)) {
            char what[128];
            snprintf(what, sizeof what, "bitmap cluster (record of layer %u, virtual cluster %llu)", p->layer_id,
                     (unsigned long long)p->vc);
            r = ref(img, p->addr & cm, img->csize, what);
        }
        if (r < 0)
            return r;
    }
    if (!img->rw || img->ck)
        return 0;
    /* free slots, bounded: a few clusters' worth is plenty between two opens */
    size_t per = img->csize / BM_REC_SIZE, cap = 65536, n = 0;
    img->bm_free = malloc(cap * sizeof *img->bm_free);
    if (!img->bm_free)
        return pcow__err(img, ENOMEM, "out of memory");
    img->bm_capfree = cap;
    for (size_t i = 0; i < img->nrecs && n < cap;) {
        uint64_t c = img->recs[i].addr & cm;
        for (size_t s = 0; s < per && n < cap; s++) {
            uint64_t a = c + s * BM_REC_SIZE;
            while (i < img->nrecs && img->recs[i].addr < a)
                i++;
            if (i < img->nrecs && img->recs[i].addr == a)
                continue;
            img->bm_free[n++] = a;
        }
        while (i < img->nrecs && (img->recs[i].addr & cm) == c)
            i++;
    }
    img->bm_nfree = n;
    /* pop order: lowest address first */
    for (size_t i = 0; i < n / 2; i++) {
        uint64_t t = img->bm_free[i];
        img->bm_free[i] = img->bm_free[n - 1 - i];
        img->bm_free[n - 1 - i] = t;
    }
    return 0;
}

/* check: a cluster that only a dropped (invalid) structure references. It is not counted as a
 * leak (the corruption that dropped its reference is reported) and a repair never frees it. */
static void drop_mark(pcow_image *img, uint64_t addr)
{
    uint64_t c = addr / img->csize;
    if (img->dropmap && addr % img->csize == 0 && c > 0 && c < img->refmap_n)
        img->dropmap[c / 8] |= (uint8_t)(1u << (c % 8));
}

/* check: the L2 table at a was dropped; it and the data clusters it names are not leaks (a
 * misaligned reference counts for the cluster it points into). */
static void drop_table(pcow_image *img, uint64_t a)
{
    a &= ~(img->csize - 1);
    if (!img->dropmap || a < img->csize || a > MAX_VIRTUAL_SIZE * 4 || !pcow__in_file(img, a, img->csize))
        return;
    drop_mark(img, a);
    uint8_t *lb = malloc(img->csize);
    if (lb && pcow__pread(img, lb, img->csize, a) == 0)
        for (uint64_t k = 0; k < img->l2n; k++)
            if (g64(lb + k * 16))
                drop_mark(img, g64(lb + k * 16) & ~(img->csize - 1));
    free(lb);
}

/* check: the L1 table of L was dropped; so are the tables it names. */
static void drop_l1(pcow_image *img, const struct layer *L)
{
    if (!img->dropmap || L->l1_off % img->csize || L->l1_off < img->csize || L->l1_off > MAX_VIRTUAL_SIZE * 4 ||
        !pcow__in_file(img, L->l1_off, img->l1n * 8))
        return;
    uint8_t *b = malloc(img->l1n ? img->l1n * 8 : 1);
    if (b && pcow__pread(img, b, img->l1n * 8, L->l1_off) == 0) {
        for (uint64_t o = 0; o < img->l1_span; o += img->csize)
            drop_mark(img, L->l1_off + o);
        for (uint64_t i = 0; i < img->l1n; i++)
            if (g64(b + i * 8))
                drop_table(img, g64(b + i * 8));
    }
    free(b);
}

/* Load and validate L2 table i of layer L at address a (an L1 entry). */
static int read_l2(pcow_image *img, struct layer *L, uint64_t i, uint64_t a)
{
    char what[96];
    snprintf(what, sizeof what, "L2 table %llu of layer %u (L1 entry)", (unsigned long long)i, L->id);
    int r = ref(img, a, img->csize, what);
    if (r > 0)
        drop_table(img, a); /* check: it and its data clusters are not leaks */
    if (r)
        return r > 0 ? 0 : r;
    uint64_t *t = malloc(img->csize);
    if (!t)
        return pcow__err(img, ENOMEM, "out of memory");
    uint8_t *lb = (uint8_t *)t;
    r = pcow__pread_for(img, lb, img->csize, a, "an L2 table");
    if (r < 0) {
        free(t);
        return r;
    }
    img->table_bytes_read += img->csize;
    uint64_t k;
    for (k = 0; k < img->l2n; k++) {
        uint64_t w0 = g64(lb + k * 16), w1 = g64(lb + k * 16 + 8);
        uint64_t vc = i * img->l2n + k;
        t[2 * k] = 0;
        t[2 * k + 1] = 0;
        if (!w0)
            continue; /* word 1 of an unallocated entry is ignored */
        int bad = 0;
        if (vc >= img->nclusters)
            bad = pcow__corrupt(img, "layer %u: entry for cluster %llu lies beyond the virtual size (L2 at 0x%llx)",
                                L->id, (unsigned long long)vc, (unsigned long long)a);
        else if ((w0 & (img->csize - 1)) & ~ENTRY_PARTIAL)
            bad = pcow__corrupt(img, "layer %u: entry for cluster %llu has reserved bits set (0x%llx)",
                                L->id, (unsigned long long)vc, (unsigned long long)w0);
        else if ((w0 & ENTRY_PARTIAL) && !img->ext && (w1 & ~pcow__full_bitmap64(img)))
            bad = pcow__corrupt(img, "layer %u: entry for cluster %llu has sub-unit bits beyond %u",
                                L->id, (unsigned long long)vc, img->nsub);
        else {
            snprintf(what, sizeof what, "data cluster of layer %u, virtual cluster %llu", L->id, (unsigned long long)vc);
            bad = ref(img, w0 & ~(img->csize - 1), img->csize, what);
        }
        struct bmrec *rec = NULL;
        if (!bad && img->ext && (w0 & ENTRY_PARTIAL) && w1) {
            bad = load_rec(img, L, vc, w1, &rec);
            if (bad)
                img->refmap[(w0 / img->csize) / 8] &= (uint8_t)~(1u << ((w0 / img->csize) % 8)); /* entry dropped */
        }
        if (bad < 0) {
            r = bad;
            break;
        }
        if (bad) {
            drop_mark(img, w0 & ~(img->csize - 1));
            continue;
        }
        t[2 * k] = w0;
        t[2 * k + 1] = (w0 & ENTRY_PARTIAL) ? (img->ext ? (uint64_t)(uintptr_t)rec : w1) : 0;
        L->owned++;
    }
    if (r == 0)
        r = pcow__l1_chunk(img, L, i);
    if (r < 0) {
        for (uint64_t j = 0; j < k && j < img->l2n; j++) /* entries loaded before the error */
            pcow__bm_free_rec(img, t[2 * j], t[2 * j + 1]);
        free(t);
        return r;
    }
    l1_set(L, i, a, t);
    return 0;
}

/* Load and validate one layer's L1 and L2 tables. Invalid entries: error (open) or reported and
 * dropped (check). Only the parts of the L1 table that hold data in the file are read (holes
 * read as zeros): the cost follows the tables that exist, not the declared L1 size. The
 * in-memory L1/L2 arrays are calloc'ed (untouched pages cost address space only). */
static int read_tables(pcow_image *img, struct layer *L)
{
    char what[96];
    snprintf(what, sizeof what, "L1 table of layer %u", L->id);
    int r = ref(img, L->l1_off, img->l1_span, what);
    /* tables are allocated only once the L1 is known to lie inside the file */
    if (pcow__l1_alloc(img, L) < 0)
        return -ENOMEM;
    if (r > 0)
        drop_l1(img, L);
    if (r)
        return r < 0 ? r : 0;
    const uint64_t bytes = img->l1n * 8, chunk = bytes < (64u << 10) ? bytes : (64u << 10);
    uint8_t *b = malloc(chunk ? chunk : 1);
    if (!b)
        return pcow__err(img, ENOMEM, "out of memory");
    uint64_t pos = L->l1_off, end = L->l1_off + bytes, ds, de;
    while (r >= 0 && pos < end && pcow__data_range(img, pos, end, &ds, &de)) {
        ds &= ~7ull; /* whole entries (data runs are block-aligned anyway) */
        de = (de + 7) & ~7ull;
        if (de > end)
            de = end;
        for (uint64_t q = ds; r >= 0 && q < de; q += chunk) {
            uint64_t n = de - q < chunk ? de - q : chunk;
            r = pcow__pread_for(img, b, n, q, "an L1 table");
            if (r < 0)
                break;
            img->table_bytes_read += n;
            for (uint64_t o = 0; o < n && r >= 0; o += 8) {
                uint64_t a = g64(b + o);
                if (a)
                    r = read_l2(img, L, (q - L->l1_off + o) / 8, a);
            }
        }
        pos = de;
    }
    free(b);
    return r < 0 ? r : 0;
}

static const char *file_type(mode_t m)
{
    return S_ISDIR(m) ? "a directory" : S_ISFIFO(m) ? "a FIFO" : S_ISCHR(m) ? "a character device"
         : S_ISBLK(m) ? "a block device" : S_ISSOCK(m) ? "a socket" : "not a regular file";
}

/* Open name (relative to dirfd) as a regular file without ever blocking: O_NONBLOCK so that a
 * FIFO or device cannot hang the open, then fstat, then blocking mode again. beneath: resolve
 * it inside dirfd's directory (openat2 RESOLVE_BENEATH; a symlink leading out fails with
 * EXDEV). display names the file in messages ("" = the image itself). */
static int open_regular(pcow_image *img, int dirfd, const char *name, bool rw, bool beneath, const char *display,
                        int *out, struct stat *st)
{
    int oflags = (rw ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NONBLOCK | O_NOCTTY;
    int fd;
    if (beneath) {
        struct open_how how = {.flags = (uint64_t)oflags, .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS};
        fd = (int)syscall(SYS_openat2, dirfd, name, &how, sizeof how);
        if (fd < 0 && errno == ENOSYS && !strchr(name, '/'))
            fd = openat(dirfd, name, oflags | O_NOFOLLOW); /* plain names: no symlink at all */
    } else {
        fd = openat(dirfd, name, oflags);
    }
    const char *sep = *display ? ": " : "";
    if (fd < 0) {
        int e = errno;
        if (e == EXDEV)
            return pcow__err(img, EPERM, "%s%sleads out of the image's directory (%s) through a symlink (allowed only with "
                             "--unsafe-base-paths; libpcow: PCOW_OPEN_UNSAFE_BASE; never while repairing)", display, sep, img->dirpath);
        return pcow__err(img, e, "%s%scannot open: %s", display, sep, strerror(e));
    }
    if (fstat(fd, st) < 0) {
        int e = errno;
        close(fd);
        return pcow__err(img, e, "%s%scannot stat: %s", display, sep, strerror(e));
    }
    if (!S_ISREG(st->st_mode)) {
        close(fd);
        return pcow__err(img, EINVAL, "%s%sis %s, not a regular file (images, base images and stripe files must be regular files)",
                         display, sep, file_type(st->st_mode));
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
        int e = errno;
        close(fd);
        return pcow__err(img, e, "%s%scannot clear O_NONBLOCK: %s", display, sep, strerror(e));
    }
    *out = fd;
    return 0;
}

/* Open the base image stored as `stored` (relative to img's directory unless absolute) and
 * its own chain. Path policy: see pcow__check_base_path; in strict mode the open also refuses
 * to leave the directory through symlinks (RESOLVE_BENEATH). */
int pcow__resolve_base(pcow_image *img, const char *stored, int fmt, unsigned flags, pcow_image **bimg,
                       int *bfd, uint64_t *bsize, char *resolved, size_t rlen, int depth, dev_t *devs, ino_t *inos)
{
    char why[700];
    bool unsafe = flags & PCOW_OPEN_UNSAFE_BASE;
    int r = pcow__check_base_path(stored, unsafe, why, sizeof why);
    if (r < 0)
        return pcow__err(img, r, "%s", why);
    if (depth >= PCOW_MAX_BASE_DEPTH)
        return pcow__err(img, ELOOP, "base chain deeper than %d images at '%s'", PCOW_MAX_BASE_DEPTH, stored);
    int fd;
    struct stat st;
    char disp[PCOW_BASE_PATH_MAX + 32];
    snprintf(disp, sizeof disp, "base image '%s'", stored);
    r = open_regular(img, img->dirfd, stored, false, !unsafe, disp, &fd, &st);
    if (r == -ENOENT)
        return pcow__err(img, ENOENT, "base image '%s' (relative to %s) does not exist", stored, img->dirpath);
    if (r < 0)
        return r;
    char link[64], abs[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t ln = readlink(link, abs, sizeof abs - 1);
    if (ln < 0)
        snprintf(abs, sizeof abs, "%s/%s", img->dirpath, stored);
    else
        abs[ln] = 0;
    snprintf(resolved, rlen, "%s", abs);
    for (int d = 0; d <= depth; d++) {
        if (devs[d] == st.st_dev && inos[d] == st.st_ino) {
            close(fd);
            return pcow__err(img, ELOOP, "base chain has a loop: '%s' (%s) is already in the chain", stored, abs);
        }
    }
    uint8_t m[8] = {0};
    ssize_t got = pread(fd, m, 8, 0);
    int actual = (got == 8 && !memcmp(m, pcow_magic, 8)) ? PCOW_BASE_PCOW : PCOW_BASE_RAW;
    if (fmt && fmt != actual) {
        close(fd);
        return pcow__err(img, EINVAL, "base image '%s' is %s but the header says %s", stored,
                         actual == PCOW_BASE_PCOW ? "pcow" : "raw", fmt == PCOW_BASE_PCOW ? "pcow" : "raw");
    }
    if (actual == PCOW_BASE_RAW) {
        if (!(flags & PCOW_OPEN_NO_LOCK) && lock_fd(fd, false) < 0) {
            close(fd);
            return pcow__err(img, EAGAIN, "base image '%s' is locked for writing by another process", stored);
        }
        *bfd = fd;
        *bsize = (uint64_t)st.st_size;
        return PCOW_BASE_RAW;
    }
    close(fd);
    devs[depth + 1] = st.st_dev;
    inos[depth + 1] = st.st_ino;
    char e2[sizeof img->err];
    pcow_image *b = NULL;
    r = pcow__open_chain(abs, flags & (PCOW_OPEN_UNSAFE_BASE | PCOW_OPEN_NO_LOCK), depth + 1, devs, inos, NULL, &b, e2, sizeof e2);
    if (r < 0)
        return pcow__err(img, r, "base image '%s': %s", stored, e2);
    /* report the path the user can recognise, not /proc's */
    free(b->path);
    b->path = strdup(abs);
    if (!b->path) {
        pcow__free(b);
        return pcow__err(img, ENOMEM, "out of memory");
    }
    *bimg = b;
    *bsize = b->h.vsize;
    return PCOW_BASE_PCOW;
}

/* check: FORMAT.md says the header cluster is zero after the two slots. */
static void check_header_tail(pcow_image *img)
{
    uint64_t lim = img->csize < img->fsize[0] ? img->csize : img->fsize[0];
    uint8_t b[16384];
    for (uint64_t o = 2 * HDR_SLOT_SIZE; o < lim; o += sizeof b) {
        uint64_t n = lim - o < sizeof b ? lim - o : sizeof b;
        if (pcow__pread_for(img, b, n, o, "the header cluster") < 0)
            return;
        for (uint64_t k = 0; k < n; k++) {
            if (b[k]) {
                img->hdr_tail_bad = true;
                pcow__corrupt(img, "header cluster: byte 0x%llx after the two header slots is not zero (FORMAT.md: the "
                              "rest of the header cluster is zero)", (unsigned long long)(o + k));
                return;
            }
        }
    }
}

static int load(pcow_image *img, unsigned flags, int depth, dev_t *devs, ino_t *inos)
{
    bool rw = flags & PCOW_OPEN_RDWR;
    img->rw = rw;
    img->flags = flags;
    img->dirfd = open(img->dirpath, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (img->dirfd < 0) {
        int e = errno;
        return pcow__err(img, e, "cannot open directory %s: %s", img->dirpath, strerror(e));
    }
    struct stat st;
    int fd;
    int r0 = open_regular(img, AT_FDCWD, img->path, rw, false, "", &fd, &st);
    if (r0 < 0)
        return r0;
    img->fd[0] = fd;
    img->fpath[0] = strdup(img->path);
    if (!img->fpath[0])
        return pcow__err(img, ENOMEM, "out of memory");
    if (!(flags & PCOW_OPEN_NO_LOCK) || rw) {
        int r = lock_fd(fd, rw);
        if (r < 0) {
            char who[64];
            int pid;
            lock_holder(fd, rw ? F_WRLCK : F_RDLCK, who, sizeof who, &pid);
            if (pid > 0)
                snprintf(who, sizeof who, "in use by PID %d: ", pid);
            else
                who[0] = 0;
            return pcow__err(img, EAGAIN, "image is locked by another process (%s%s)%s", who,
                             rw ? "it is open, e.g. by a running VM or another pcow-img" : "it is open for writing, e.g. by a running VM",
                             rw ? "" : "; use -U to read it anyway");
        }
    }
    if (devs) {
        devs[depth] = st.st_dev;
        inos[depth] = st.st_ino;
    }
    uint8_t hb[2 * HDR_SLOT_SIZE];
    memset(hb, 0, sizeof hb);
    ssize_t got = pread(fd, hb, sizeof hb, 0);
    if (got < 0)
        return pcow__err(img, errno, "cannot read the header: %s", strerror(errno));
    if (got < 8 || memcmp(hb, pcow_magic, 8)) {
        if (got >= 8 && !memcmp(hb + HDR_SLOT1_OFF, pcow_magic, 8)) {
            /* slot 0 damaged; slot 1 may still be good */
        } else {
            int r = pcow__corrupt(img, "not a pcow image (bad magic; file size %lld)", (long long)st.st_size);
            return r < 0 ? r : -EUCLEAN;
        }
    }
    if ((size_t)got < sizeof hb) {
        int r = pcow__corrupt(img, "file is truncated: %lld bytes, smaller than the %u-byte header",
                              (long long)st.st_size, 2 * HDR_SLOT_SIZE);
        if (r < 0)
            return r;
    }
    struct hdr h[2];
    char why[2][300];
    int ok[2];
    for (int s = 0; s < 2; s++)
        ok[s] = pcow__hdr_decode(hb + s * HDR_SLOT1_OFF, s, &h[s], why[s], sizeof why[s]);
    for (int o = 0; o < 2; o++) {
        img->slot_valid[o] = ok[o] == 0;
        img->slot_newer[o] = ok[o] == -ENOTSUP;
        img->slot_damaged[o] = ok[o] && ok[o] != -ENOTSUP;
    }
    /* A slot of a newer format version (checksum right) that is the current one (the other is
     * damaged or has a lower generation) holds state this library cannot read; writing would
     * overwrite it (the update protocol writes the other slot first, then this one). */
    for (int o = 0; o < 2; o++) {
        if (ok[o] == -ENOTSUP && (ok[1 - o] != 0 || h[o].gen > h[1 - o].gen)) {
            char other[120] = "";
            if (ok[1 - o] == 0)
                snprintf(other, sizeof other, ", newer than slot %d's generation %llu", 1 - o, (unsigned long long)h[1 - o].gen);
            return pcow__err(img, ENOTSUP, "header slot %d: %s; it is the current header (generation %llu%s), "
                             "written by a newer pcow: refusing to open the image%s", o, why[o], (unsigned long long)h[o].gen,
                             other, rw ? " (a write would overwrite it)" : " (its contents cannot be read by this version)");
        }
    }
    if (ok[0] && ok[1]) {
        int r = pcow__corrupt(img, "no valid header: slot 0: %s; slot 1: %s", why[0], why[1]);
        return r < 0 ? r : -EUCLEAN;
    }
    int s = ok[0] ? 1 : ok[1] ? 0 : (h[1].gen > h[0].gen ? 1 : 0);
    img->cur_slot = s;
    img->h = h[s];
    if (!ok[0] && !ok[1] && h[0].gen == h[1].gen) {
        /* the update protocol never leaves two different headers with one generation */
        size_t d = HDR_SLOT_SIZE;
        for (size_t k = 0; k < HDR_SLOT_SIZE && d == HDR_SLOT_SIZE; k++)
            if ((k < 16 || k >= 24) && hb[k] != hb[HDR_SLOT1_OFF + k])
                d = k;
        if (d < HDR_SLOT_SIZE) {
            int r = pcow__corrupt(img, "header slots 0 and 1 both have generation %llu but different contents (first "
                                  "difference: field %s, byte %zu); cannot tell which is current",
                                  (unsigned long long)h[0].gen, pcow__hdr_field(d), d);
            if (r < 0)
                return r;
        }
    }
    for (int o = 0; o < 2; o++) {
        if (img->slot_damaged[o] && img->ck)
            pcow__corrupt(img, "header slot %d is damaged (%s); slot %d is used", o, why[o], s);
        if (img->slot_newer[o] && img->ck && img->ck->msg) {
            char m[1400];
            snprintf(m, sizeof m, "%s: header slot %d is an older header of a newer format version (%s, generation %llu); "
                     "slot %d (generation %llu) is used and the next update overwrites slot %d", img->path, o, why[o],
                     (unsigned long long)h[o].gen, s, (unsigned long long)h[s].gen, o);
            img->ck->msg(img->ck->ctx, "info", m);
        }
    }
    derive(img);
    /* stripe files */
    img->fsize[0] = (uint64_t)st.st_size;
    for (uint32_t f = 1; f < img->nfiles; f++) {
        char disp[PATH_MAX + 200];
        snprintf(disp, sizeof disp, "stripe file %u '%s' (in %s)", f, img->h.sname[f], img->dirpath);
        /* the base path's protections; a repair never follows a stripe file out of the directory */
        bool beneath = !(flags & PCOW_OPEN_UNSAFE_BASE) || (img->ck && rw);
        int r = open_regular(img, img->dirfd, img->h.sname[f], rw, beneath, disp, &img->fd[f], &st);
        if (r < 0)
            return r;
        size_t pl = strlen(img->dirpath) + strlen(img->h.sname[f]) + 2;
        img->fpath[f] = malloc(pl);
        if (!img->fpath[f])
            return pcow__err(img, ENOMEM, "out of memory");
        snprintf(img->fpath[f], pl, "%s/%s", img->dirpath, img->h.sname[f]);
        img->fsize[f] = (uint64_t)st.st_size;
    }
    compute_end(img);
    img->refmap_n = img->end / img->csize;
    img->refmap = calloc(img->refmap_n / 8 + 1, 1);
    if (!img->refmap)
        return pcow__err(img, ENOMEM, "image end 0x%llx needs too large a cluster map", (unsigned long long)img->end);
    if (img->refmap_n)
        img->refmap[0] |= 1; /* header cluster */
    if (img->ck) {
        img->dropmap = calloc(img->refmap_n / 8 + 1, 1);
        if (!img->dropmap)
            return pcow__err(img, ENOMEM, "out of memory");
        check_header_tail(img);
    }
    int r = read_dir(img);
    if (r < 0)
        return r;
    if (r == 0) {
        if (img->ck)
            img->ck->dir_ok = true;
        for (uint32_t i = 0; i < img->nlayers; i++) {
            r = read_tables(img, &img->layers[i]);
            if (r < 0)
                return r;
        }
        r = check_recs(img);
        if (r < 0)
            return r;
    } else {
        /* check mode with an unreadable directory: no layers to walk */
        free(img->layers);
        img->layers = NULL;
        img->nlayers = 0;
    }
    if (!img->ck) {
        free(img->refmap);
        img->refmap = NULL;
        free(img->recs);
        img->recs = NULL;
        img->nrecs = img->caprecs = 0;
    }
    if (img->rw && img->ext && !img->bm_free) {
        img->bm_free = malloc(64 * sizeof *img->bm_free);
        if (!img->bm_free)
            return pcow__err(img, ENOMEM, "out of memory");
        img->bm_capfree = 64;
    }
    /* base chain */
    if (img->h.base_fmt && !(flags & PCOW_OPEN_NO_BASE)) {
        dev_t ldevs[PCOW_MAX_BASE_DEPTH + 2];
        ino_t linos[PCOW_MAX_BASE_DEPTH + 2];
        if (!devs) {
            devs = ldevs;
            inos = linos;
            ldevs[0] = st.st_dev;
            linos[0] = st.st_ino;
            depth = 0;
        }
        r = pcow__resolve_base(img, img->h.base, (int)img->h.base_fmt, flags, &img->base, &img->base_fd,
                               &img->base_size, img->base_resolved, sizeof img->base_resolved, depth, devs, inos);
        if (r < 0) {
            if (!img->ck)
                return r;
            if (r == -ENOENT || r == -EAGAIN || r == -EACCES) {
                img->ck->res->check_errors++;
                if (img->ck->msg)
                    img->ck->msg(img->ck->ctx, "error", img->err);
            } else {
                img->ck->res->corruptions++;
                if (img->ck->msg)
                    img->ck->msg(img->ck->ctx, "corruption", img->err);
            }
        }
    }
    if (rw && !img->ck && !img->broken) {
        struct hdr nh = img->h;
        nh.flags |= HDR_FLAG_DIRTY;
        r = pcow__write_header(img, &nh);
        if (r < 0)
            return r;
    }
    return 0;
}

int pcow__open_chain(const char *path, unsigned flags, int depth, dev_t *devs, ino_t *inos, struct ckctx *ck,
                     pcow_image **out, char *err, size_t errlen)
{
    *out = NULL;
    if ((flags & PCOW_OPEN_NO_LOCK) && (flags & PCOW_OPEN_RDWR)) {
        pcow__copyerr(err, errlen, "PCOW_OPEN_NO_LOCK is only allowed for read-only opens");
        return -EINVAL;
    }
    pcow_image *img = img_new(path);
    if (!img) {
        pcow__copyerr(err, errlen, "out of memory");
        return -ENOMEM;
    }
    img->ck = ck;
    int r = load(img, flags, depth, devs, inos);
    if (r < 0 && !ck) {
        pcow__copyerr(err, errlen, img->err);
        pcow__free(img);
        return r;
    }
    if (r < 0)
        pcow__copyerr(err, errlen, img->err);
    *out = img;
    return r;
}

int pcow_open(const char *path, unsigned flags, pcow_image **out, char *err, size_t errlen)
{
    if (!path || !out) {
        pcow__copyerr(err, errlen, "pcow_open: path and out are required");
        return -EINVAL;
    }
    return pcow__open_chain(path, flags, 0, NULL, NULL, NULL, out, err, errlen);
}

int pcow__write_header(pcow_image *img, const struct hdr *nh)
{
    uint8_t b[HDR_SLOT_SIZE];
    struct hdr h = *nh;
    h.gen = img->h.gen + 1;
    /* Write the slot we did not load from first: a crash while writing it leaves the loaded
     * slot intact. Then bring the other slot up to date. */
    int first = 1 - img->cur_slot;
    for (int k = 0; k < 2; k++) {
        int s = k == 0 ? first : img->cur_slot;
        pcow__hdr_encode(&h, s, b);
        int r = pcow__pwrite(img, b, HDR_SLOT_SIZE, s ? HDR_SLOT1_OFF : 0);
        if (r == 0)
            r = pcow__persist_all(img);
        if (r < 0) {
            img->broken = true;
            return r;
        }
        img->slot_valid[s] = true;
    }
    img->h = h;
    return 0;
}

static void encode_dir(const pcow_image *img, const struct layer *layers, uint32_t n, uint8_t *b)
{
    (void)img;
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *p = b + (size_t)i * DIR_REC_SIZE;
        const struct layer *L = &layers[i];
        memset(p, 0, DIR_REC_SIZE);
        p32(p, L->id);
        p32(p + 4, L->parent_id);
        p64(p + 8, L->l1_off);
        p64(p + 16, L->ctime_sec);
        p32(p + 24, L->ctime_nsec);
        size_t nl = strlen(L->name);
        p32(p + 32, (uint32_t)nl);
        memcpy(p + 40, L->name, nl);
    }
}

/* Durably switch to a new layer directory (and header fields from nh if given): the
 * directory goes into freshly appended clusters, then the header (both slots) points at it. */
int pcow__write_dir(pcow_image *img, struct layer *layers, uint32_t n, uint32_t active_id, uint32_t next_id,
                    const struct hdr *nh_in)
{
    if (n == 0 || n > PCOW_MAX_LAYERS)
        return pcow__err(img, ENOSPC, "too many layers (%u, at most %d)", n, PCOW_MAX_LAYERS);
    uint64_t bytes = (uint64_t)n * DIR_REC_SIZE, sp = span(img, bytes), addr;
    uint8_t *b = calloc(1, sp);
    if (!b)
        return pcow__err(img, ENOMEM, "out of memory");
    encode_dir(img, layers, n, b);
    int r = pcow__reserve(img, sp / img->csize, &addr);
    if (r == 0)
        r = pcow__pwrite(img, b, sp, addr);
    if (r == 0)
        r = pcow__persist_all(img);
    struct hdr nh = nh_in ? *nh_in : img->h;
    nh.dir_off = addr;
    nh.dir_count = n;
    nh.dir_crc = pcow_crc32c(0, b, bytes);
    nh.active_id = active_id;
    nh.next_id = next_id;
    free(b);
    if (r < 0)
        return r;
    return pcow__write_header(img, &nh);
}

/* A fresh, empty L1 table for L (zeros from fallocate). */
int pcow__new_l1(pcow_image *img, struct layer *L)
{
    if (pcow__l1_alloc(img, L) < 0)
        return -ENOMEM;
    return pcow__reserve(img, img->l1_span / img->csize, &L->l1_off);
}

/* Shadow-write all of L's tables into new clusters (L2 tables that became empty are dropped)
 * and point L at them in memory; the caller makes the switch durable with pcow__write_dir. */
int pcow__write_tables(pcow_image *img, struct layer *L)
{
    uint8_t *b = calloc(1, img->csize); /* one L2 table, or one chunk of L1 (L1C_N * 8 <= C) */
    if (!b)
        return pcow__err(img, ENOMEM, "out of memory");
    int r = 0;
    L->owned = 0;
    for (uint64_t i = l1_next(img, L, 0); i < img->l1n && r == 0; i = l1_next(img, L, i + 1)) {
        uint64_t *t = l2_tab(L, i);
        bool any = false;
        for (uint64_t k = 0; k < img->l2n && r == 0; k++) {
            uint64_t w1 = t[2 * k] ? t[2 * k + 1] : 0;
            if (img->ext && w1) {
                /* shadow paging covers records too: the old state's record stays untouched */
                struct bmrec *rec = (struct bmrec *)(uintptr_t)w1;
                pcow_bitmap bm;
                memcpy(bm.w, rec->w, sizeof bm.w);
                r = pcow__bm_write_rec(img, &bm, &rec->addr);
                w1 = rec->addr;
            }
            p64(b + k * 16, t[2 * k]);
            p64(b + k * 16 + 8, w1);
            if (t[2 * k]) {
                any = true;
                L->owned++;
            }
        }
        if (r < 0)
            break;
        if (!any) {
            l1_set(L, i, 0, NULL);
            free(t);
            continue;
        }
        uint64_t a = 0;
        r = pcow__reserve(img, 1, &a);
        if (r == 0)
            r = pcow__pwrite(img, b, img->csize, a);
        l1_set(L, i, a, t);
    }
    /* The new L1: its reserved clusters read as zeros, so only the chunks that hold entries
     * are written (the cost follows the tables, not the declared L1 size). */
    if (r == 0)
        r = pcow__reserve(img, img->l1_span / img->csize, &L->l1_off);
    for (uint64_t ci = 0; r == 0 && ci * L1C_N < img->l1n; ci++) {
        if (!L->l1p[ci >> L1D_BITS]) {
            ci |= L1D_N - 1; /* a whole page without tables */
            continue;
        }
        const struct l1chunk *c = l1_chunk(L, ci * L1C_N);
        uint64_t n = img->l1n - ci * L1C_N < L1C_N ? img->l1n - ci * L1C_N : L1C_N;
        bool any = false;
        for (uint64_t j = 0; c && j < n; j++) {
            p64(b + j * 8, c->l1[j]);
            any |= c->l1[j] != 0;
        }
        if (any)
            r = pcow__pwrite(img, b, n * 8, L->l1_off + ci * L1C_N * 8);
    }
    free(b);
    if (r == 0)
        r = pcow__persist_all(img);
    return r;
}

void pcow__relink(pcow_image *img)
{
    for (uint32_t i = 0; i < img->nlayers; i++) {
        struct layer *L = &img->layers[i];
        L->parent = -1;
        if (L->id == img->h.active_id)
            img->active = i;
        for (uint32_t j = 0; j < img->nlayers; j++)
            if (L->parent_id && img->layers[j].id == L->parent_id)
                L->parent = (int)j;
    }
}

static int cmp_ref(const void *a, const void *b)
{
    const uint64_t *x = a, *y = b;
    return x[0] != y[0] ? (x[0] < y[0] ? -1 : 1) : (x[1] < y[1] ? -1 : x[1] > y[1]);
}

/* Every run of clusters the current state references (directory, L1 tables as one run each,
 * L2, data, bitmap clusters) and, tagged with bit 0, every bitmap record: *n pairs
 * (address, clusters) in 2 * *n words, sorted. Runs keep the cost proportional to the tables
 * and data that exist, not to the declared L1 sizes. */
int pcow__collect_refs(pcow_image *img, uint64_t **out, size_t *n)
{
    size_t cap = 64, cnt = 0;
    uint64_t *a = malloc(cap * 16);
    if (!a)
        return pcow__err(img, ENOMEM, "out of memory");
#define PUSH(x, c)                                                 \
    do {                                                           \
        if (cnt == cap) {                                          \
            uint64_t *na = realloc(a, cap * 2 * 16);               \
            if (!na) {                                             \
                free(a);                                           \
                return pcow__err(img, ENOMEM, "out of memory");    \
            }                                                      \
            a = na;                                                \
            cap *= 2;                                              \
        }                                                          \
        a[2 * cnt] = (x);                                          \
        a[2 * cnt++ + 1] = (c);                                    \
    } while (0)
    uint64_t dsp = span(img, (uint64_t)img->h.dir_count * DIR_REC_SIZE);
    PUSH(img->h.dir_off, dsp / img->csize);
    for (uint32_t i = 0; i < img->nlayers; i++) {
        struct layer *L = &img->layers[i];
        PUSH(L->l1_off, img->l1_span / img->csize);
        for (uint64_t j = l1_next(img, L, 0); j < img->l1n; j = l1_next(img, L, j + 1)) {
            const uint64_t *t = l2_tab(L, j);
            if (l1_addr(L, j))
                PUSH(l1_addr(L, j), 1);
            for (uint64_t k = 0; k < img->l2n; k++) {
                uint64_t w0 = t[2 * k];
                if (!w0)
                    continue;
                PUSH(w0 & ~(img->csize - 1), 1);
                const struct bmrec *rec = (const struct bmrec *)(uintptr_t)t[2 * k + 1];
                if (img->ext && (w0 & ENTRY_PARTIAL) && rec) {
                    PUSH(rec->addr & ~(img->csize - 1), 1); /* its bitmap cluster */
                    PUSH(rec->addr | 1, 1);                 /* the record itself (tagged) */
                }
            }
        }
    }
#undef PUSH
    qsort(a, cnt, 16, cmp_ref);
    *out = a;
    *n = cnt;
    return 0;
}

/* After a durable switch: free every cluster of `old` (pcow__collect_refs) that the new state
 * does not reference, and zero every record of `old` it does not use. */
void pcow__free_unreferenced(pcow_image *img, uint64_t *old, size_t nold)
{
    uint64_t *nw;
    size_t nn;
    if (pcow__collect_refs(img, &nw, &nn) < 0)
        return; /* leaks only */
    /* the new state's records (tagged), sorted; then its cluster runs as a sorted union of
     * disjoint [start, end) ranges, in place */
    uint64_t *recs = malloc(8 * (nn ? nn : 1));
    size_t nr = 0, nu = 0;
    for (size_t i = 0; i < nn; i++) {
        uint64_t s = nw[2 * i], e = s + nw[2 * i + 1] * img->csize;
        if (s & 1) {
            if (recs)
                recs[nr++] = s;
            continue;
        }
        if (nu && s <= nw[2 * nu - 1]) {
            if (e > nw[2 * nu - 1])
                nw[2 * nu - 1] = e;
        } else {
            nw[2 * nu] = s;
            nw[2 * nu + 1] = e;
            nu++;
        }
    }
    size_t j = 0, jr = 0;
    uint64_t done = 0; /* old runs may repeat (records' bitmap clusters): free each cluster once */
    for (size_t i = 0; i < nold; i++) {
        uint64_t s = old[2 * i], e = s + old[2 * i + 1] * img->csize;
        if (s & 1) {
            while (jr < nr && recs[jr] < s)
                jr++;
            if ((jr < nr && recs[jr] == s) || (i > 0 && old[2 * i - 2] == s))
                continue;
            if (!recs)
                continue; /* out of memory: leave it (a leaked record at worst) */
            /* a record the new state does not use: zero it (best effort; its cluster may be
             * punched next, or stay in use for other records) */
            static const uint8_t z[BM_REC_SIZE];
            (void)pcow__pwrite(img, z, BM_REC_SIZE, s & ~1ull);
            continue;
        }
        if (s < done)
            s = done;
        while (s < e) {
            while (j < nu && nw[2 * j + 1] <= s)
                j++;
            uint64_t fe = j < nu && nw[2 * j] < e ? nw[2 * j] : e; /* free [s, fe) */
            if (fe > s)
                pcow__free_clusters(img, s, (fe - s) / img->csize);
            s = j < nu && nw[2 * j] < e ? nw[2 * j + 1] : e; /* skip what the new state uses */
        }
        if (e > done)
            done = e;
    }
    free(recs);
    free(nw);
}

int pcow_close(pcow_image *img, char *err, size_t errlen)
{
    if (!img)
        return 0;
    int r = 0;
    if (img->rw && !img->broken && (img->h.flags & HDR_FLAG_DIRTY)) {
        struct hdr nh = img->h;
        nh.flags &= ~HDR_FLAG_DIRTY;
        r = pcow__write_header(img, &nh);
        if (r < 0)
            pcow__copyerr(err, errlen, img->err);
    }
    pcow__free(img);
    return r;
}

int pcow_probe_format(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY); /* a FIFO must not block */
    if (fd < 0)
        return -errno;
    struct stat st;
    int e = fstat(fd, &st) < 0 ? errno : S_ISREG(st.st_mode) ? 0 : S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
    if (e) {
        close(fd);
        return -e;
    }
    uint8_t m[8];
    ssize_t r = pread(fd, m, 8, 0);
    close(fd);
    return (r == 8 && !memcmp(m, pcow_magic, 8)) ? PCOW_BASE_PCOW : PCOW_BASE_RAW;
}

static int create_fail(pcow_image *img, char *err, size_t errlen, int r)
{
    pcow__copyerr(err, errlen, img->err);
    pcow__free(img);
    return r;
}

int pcow_create(const char *path, const struct pcow_create_opts *o, char *err, size_t errlen)
{
    pcow_image *img = img_new(path);
    if (!img) {
        pcow__copyerr(err, errlen, "out of memory");
        return -ENOMEM;
    }
    uint32_t cs = o->cluster_size ? o->cluster_size : 65536;
    if (cs & (cs - 1) || cs < (1u << PCOW_MIN_CLUSTER_BITS) || cs > (1u << PCOW_MAX_CLUSTER_BITS))
        return create_fail(img, err, errlen, pcow__err(img, EINVAL, "cluster size %u is not a power of two between 4 KiB and 2 MiB", cs));
    uint32_t cbits = (uint32_t)__builtin_ctz(cs);
    uint32_t smin = 12; /* 4 KiB at every cluster size: up to 512 sub-units (BITMAP_RECORDS) */
    uint32_t ss = o->subunit_size ? o->subunit_size : (1u << smin);
    if (ss & (ss - 1) || ss < (1u << smin) || ss > cs)
        return create_fail(img, err, errlen, pcow__err(img, EINVAL, "sub-unit size %u must be a power of two between %u and the cluster size %u", ss, 1u << smin, cs));
    uint32_t ns = o->stripe_count ? o->stripe_count : 1;
    if (ns > PCOW_MAX_STRIPES)
        return create_fail(img, err, errlen, pcow__err(img, EINVAL, "stripe count %u exceeds %d", ns, PCOW_MAX_STRIPES));
    uint64_t su = o->stripe_unit ? o->stripe_unit : cs;
    if (su & (su - 1) || su < cs || su > (1ull << MAX_STRIPE_UNIT_BITS))
        return create_fail(img, err, errlen, pcow__err(img, EINVAL, "stripe unit %llu must be a power of two between the cluster size and 1 GiB", (unsigned long long)su));
    img->dirfd = open(img->dirpath, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (img->dirfd < 0)
        return create_fail(img, err, errlen, pcow__err(img, errno, "cannot open directory %s: %s", img->dirpath, strerror(errno)));
    struct hdr *h = &img->h;
    h->gen = 0;
    h->cbits = cbits;
    h->sbits = (uint32_t)__builtin_ctz(ss);
    h->nstripes = ns;
    h->ubits = (uint32_t)__builtin_ctzll(su);
    h->incompat = (ns > 1 ? INCOMPAT_STRIPES : 0) | (cs / ss > 64 || o->bitmap_records ? INCOMPAT_BITMAP_RECORDS : 0);
    h->active_id = 1;
    h->next_id = 2;
    h->dir_count = 1;
    uint64_t vsize = o->virtual_size;
    /* base: validated and opened before the image file is touched (it might be the same file) */
    struct stat st_img;
    bool img_exists = stat(path, &st_img) == 0;
    if (o->base && o->base[0]) {
        char why[700];
        int r = pcow__check_base_path(o->base, o->allow_unsafe_base, why, sizeof why);
        if (r < 0)
            return create_fail(img, err, errlen, pcow__err(img, r, "%s", why));
        h->base_len = (uint32_t)strlen(o->base);
        memcpy(h->base, o->base, h->base_len + 1);
        h->base_fmt = (uint32_t)o->base_format;
        if (!o->no_base_check) {
            dev_t devs[PCOW_MAX_BASE_DEPTH + 2];
            ino_t inos[PCOW_MAX_BASE_DEPTH + 2];
            devs[0] = img_exists ? st_img.st_dev : 0;
            inos[0] = img_exists ? st_img.st_ino : 0;
            pcow_image *b = NULL;
            int bfd = -1;
            uint64_t bsize = 0;
            char res[4096];
            r = pcow__resolve_base(img, o->base, o->base_format, (o->allow_unsafe_base ? PCOW_OPEN_UNSAFE_BASE : 0) | PCOW_OPEN_NO_LOCK,
                                   &b, &bfd, &bsize, res, sizeof res, 0, devs, inos);
            if (r < 0)
                return create_fail(img, err, errlen, r);
            h->base_fmt = (uint32_t)r;
            if (b)
                pcow__free(b);
            if (bfd >= 0)
                close(bfd);
            if (!vsize)
                vsize = bsize;
        } else if (!h->base_fmt) {
            return create_fail(img, err, errlen, pcow__err(img, EINVAL, "a base format is needed when the base is not opened"));
        }
    }
    if (vsize == 0 || vsize > MAX_VIRTUAL_SIZE)
        return create_fail(img, err, errlen, pcow__err(img, EINVAL, "virtual size %llu is outside 1 byte .. 4 PiB", (unsigned long long)vsize));
    h->vsize = vsize;
    derive(img);
    if (img->l1n * 8 > MAX_L1_BYTES)
        return create_fail(img, err, errlen, pcow__err(img, EINVAL, "virtual size %llu needs an L1 table of %llu MiB per layer; use larger clusters",
                                                       (unsigned long long)vsize, (unsigned long long)(img->l1_span >> 20)));
    const char *bn = strrchr(path, '/');
    bn = bn ? bn + 1 : path;
    for (uint32_t f = 1; f < ns; f++) {
        int l = snprintf(h->sname[f], sizeof h->sname[f], "%s.s%u", bn, f);
        if (l < 0 || l > PCOW_STRIPE_NAME_MAX)
            return create_fail(img, err, errlen, pcow__err(img, ENAMETOOLONG, "image file name too long for stripe file names"));
    }
    /* files: lock before truncating, so a running user of an existing image is not destroyed */
    img->rw = true;
    for (uint32_t f = 0; f < ns; f++) {
        const char *name = f ? h->sname[f] : bn;
        /* never blocks on a FIFO; a stripe file is never a symlink (it could lead anywhere) */
        int fd = openat(img->dirfd, name, O_RDWR | O_CREAT | O_CLOEXEC | O_NONBLOCK | O_NOCTTY | (f ? O_NOFOLLOW : 0), 0644);
        if (fd < 0)
            return create_fail(img, err, errlen, pcow__err(img, errno, "cannot create %s: %s", name,
                                                           errno == ELOOP ? "it is a symlink (stripe files must be regular files in the image's directory)" : strerror(errno)));
        img->fd[f] = fd;
        struct stat fst;
        int fl = fcntl(fd, F_GETFL);
        if (fstat(fd, &fst) < 0)
            return create_fail(img, err, errlen, pcow__err(img, errno, "cannot create %s: %s", name, strerror(errno)));
        if (!S_ISREG(fst.st_mode))
            return create_fail(img, err, errlen, pcow__err(img, EINVAL, "cannot create %s: it exists and is %s", name, file_type(fst.st_mode)));
        if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
            return create_fail(img, err, errlen, pcow__err(img, errno, "cannot create %s: %s", name, strerror(errno)));
        size_t pl = strlen(img->dirpath) + strlen(name) + 2;
        img->fpath[f] = malloc(pl);
        if (!img->fpath[f])
            return create_fail(img, err, errlen, pcow__err(img, ENOMEM, "out of memory"));
        snprintf(img->fpath[f], pl, "%s/%s", img->dirpath, name);
        if (lock_fd(fd, true) < 0)
            return create_fail(img, err, errlen, pcow__err(img, EAGAIN, "%s is locked by another process; not overwriting it", img->fpath[f]));
        if (ftruncate(fd, 0) < 0)
            return create_fail(img, err, errlen, pcow__err(img, errno, "cannot truncate %s: %s", img->fpath[f], strerror(errno)));
    }
    /* header cluster, then the directory, then the empty L1 */
    uint64_t a;
    int r = pcow__reserve(img, 1, &a);
    if (r < 0)
        return create_fail(img, err, errlen, r);
    struct layer L = {.id = 1, .parent_id = 0, .parent = -1};
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    L.ctime_sec = (uint64_t)ts.tv_sec;
    L.ctime_nsec = (uint32_t)ts.tv_nsec;
    uint64_t dsp = span(img, DIR_REC_SIZE);
    r = pcow__reserve(img, dsp / img->csize, &h->dir_off);
    if (r == 0)
        r = pcow__new_l1(img, &L);
    uint8_t *b = calloc(1, dsp);
    if (r == 0 && !b)
        r = pcow__err(img, ENOMEM, "out of memory");
    if (r == 0) {
        encode_dir(img, &L, 1, b);
        h->dir_crc = pcow_crc32c(0, b, DIR_REC_SIZE);
        r = pcow__pwrite(img, b, dsp, h->dir_off);
    }
    free(b);
    pcow__free_layer(img, &L);
    uint8_t hb[HDR_SLOT_SIZE];
    for (int s = 0; s < 2 && r == 0; s++) {
        pcow__hdr_encode(h, s, hb);
        r = pcow__pwrite(img, hb, HDR_SLOT_SIZE, s ? HDR_SLOT1_OFF : 0);
    }
    if (r == 0)
        r = pcow__persist_all(img);
    if (r < 0)
        return create_fail(img, err, errlen, r);
    pcow__free(img);
    return 0;
}
