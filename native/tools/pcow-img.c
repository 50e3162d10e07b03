/* pcow-img: manage pcow images, modelled on qemu-img. See native/README.md. */
#define _GNU_SOURCE
#include "pcow.h"
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define EXIT_ERR 1

static const char *usage_text =
    "usage: pcow-img COMMAND [options]\n"
    "\n"
    "  create [-c CLUSTER] [-s SUBUNIT] [-b BASE [-F raw|pcow]] [--stripes N] [--stripe-unit SIZE] [--bitmap-records] FILE [SIZE]\n"
    "  create CLUSTER_KIB SIZE_GIB FILE          (the paper's form: create 64 128 x.img)\n"
    "  info [--output=human|json] [--backing-chain] [-U] FILE\n"
    "  snapshot -c NAME | -l | -d SNAP | -a SNAP FILE   (create, list, delete, apply)\n"
    "  rollback FILE SNAPSHOT\n"
    "  rebase [-u] -b BASE [-F raw|pcow] FILE   (-b \"\" removes the base)\n"
    "  commit FILE\n"
    "  check [-r leaks|all] [--output=human|json] [-U] FILE\n"
    "  map [--output=human|json] [-U] FILE\n"
    "  convert -f raw|pcow -O raw|pcow [-c CLUSTER] [--force] IN OUT   (--force: replace an existing pcow image OUT)\n"
    "  write [--fine] FILE OFFSET SRC            (copy file SRC into the image at OFFSET; like qemu-io;\n"
    "                                            --fine: copy-on-write only the touched sub-units)\n"
    "  read [-U] FILE OFFSET LENGTH              (dump image bytes to stdout)\n"
    "  help\n"
    "\n"
    "SIZE takes K, M, G, T suffixes (powers of 1024); a plain number is bytes.\n"
    "Base paths are resolved relative to the image's directory; absolute paths and '..' are\n"
    "refused unless --unsafe-base-paths is given. -U reads an image another process holds open.\n"
    "SNAP is a snapshot's id when made only of digits, else its name (names cannot be all digits).\n"
    "Usage errors exit 2; other errors exit 1. check exits 0 (clean), 2 (corruption), 3 (leaks\n"
    "only), 1 (error).\n";

#define EXIT_USAGE 2

/* Length of the valid UTF-8 sequence at p (1..4), or 0 if the byte at p does not start one. */
static int utf8_len(const unsigned char *p)
{
    unsigned c = p[0];
    if (c < 0x80)
        return 1;
    int n = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (!n)
        return 0;
    unsigned lo = 0x80, hi = 0xbf; /* no overlong forms, surrogates or code points > U+10FFFF */
    if (c == 0xe0) lo = 0xa0;
    if (c == 0xed) hi = 0x9f;
    if (c == 0xf0) lo = 0x90;
    if (c == 0xf4) hi = 0x8f;
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (int i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    return n;
}

/* Names (file, snapshot and base names) come from the image and may hold any byte: text output
 * shows control characters and bytes that are not UTF-8 as \xNN. */
static void txt_put(FILE *o, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; p && *p;) {
        int n = utf8_len(p);
        if (n == 1 && *p >= 0x20 && *p != 0x7f) {
            fputc(*p, o);
        } else if (n > 1) {
            fwrite(p, 1, (size_t)n, o);
        } else {
            fprintf(o, "\\x%02x", *p);
            n = 1;
        }
        p += n;
    }
}

/* txt_put into a buffer (for padded columns). */
static const char *txt(const char *s, char *b, size_t n)
{
    FILE *m = fmemopen(b, n, "w");
    if (!m) {
        snprintf(b, n, "?");
        return b;
    }
    txt_put(m, s);
    fclose(m);
    b[n - 1] = 0;
    return b;
}

static void die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die_usage(const char *fmt, ...)
{
    va_list ap;
    char b[2048];
    va_start(ap, fmt);
    vsnprintf(b, sizeof b, fmt, ap);
    va_end(ap);
    fprintf(stderr, "pcow-img: ");
    txt_put(stderr, b);
    fprintf(stderr, "\nTry 'pcow-img help'.\n");
    exit(EXIT_USAGE);
}

static int fail(const char *msg)
{
    fprintf(stderr, "pcow-img: ");
    txt_put(stderr, msg);
    fputc('\n', stderr);
    return EXIT_ERR;
}

/* ---- argument parsing ---- */
struct args {
    int npos;
    char *pos[8];
    const char *opt_c, *opt_b, *opt_F, *opt_s, *opt_r, *opt_f, *opt_O, *stripes, *stripe_unit;
    bool bitmap_records, fine;
    const char *snap_name;
    char snap_op;
    bool json, chain, unsafe_base, force_share, rebase_unsafe, have_b, force;
};

static void parse(int argc, char **argv, struct args *a, const char *allowed)
{
    memset(a, 0, sizeof *a);
    for (int i = 0; i < argc; i++) {
        char *s = argv[i];
        const char *val = NULL;
#define NEEDVAL()                                                        \
    do {                                                                 \
        if (i + 1 >= argc)                                               \
            die_usage("option %s needs a value", s);                     \
        val = argv[++i];                                                 \
    } while (0)
        if (s[0] != '-' || s[1] == 0) {
            if (a->npos >= 8)
                die_usage("too many arguments");
            a->pos[a->npos++] = s;
            continue;
        }
        if (!strncmp(s, "--output=", 9)) {
            if (!strcmp(s + 9, "json"))
                a->json = true;
            else if (strcmp(s + 9, "human"))
                die_usage("unknown output format '%s' (human or json)", s + 9);
            continue;
        }
        if (!strcmp(s, "--output")) {
            NEEDVAL();
            a->json = !strcmp(val, "json");
            if (!a->json && strcmp(val, "human"))
                die_usage("unknown output format '%s' (human or json)", val);
            continue;
        }
        if (!strcmp(s, "--backing-chain")) {
            a->chain = true;
            continue;
        }
        if (!strcmp(s, "--unsafe-base-paths")) {
            a->unsafe_base = true;
            continue;
        }
        if (!strcmp(s, "--stripes")) {
            NEEDVAL();
            a->stripes = val;
            continue;
        }
        if (!strcmp(s, "--stripe-unit")) {
            NEEDVAL();
            a->stripe_unit = val;
            continue;
        }
        if (!strcmp(s, "--force")) {
            a->force = true;
            continue;
        }
        if (!strcmp(s, "--fine")) {
            a->fine = true;
            continue;
        }
        if (!strcmp(s, "--bitmap-records")) {
            a->bitmap_records = true;
            continue;
        }
        if (!strcmp(s, "--force-share") || !strcmp(s, "-U")) {
            a->force_share = true;
            continue;
        }
        if (s[1] == '-' || s[2] != 0 || !strchr(allowed, s[1]))
            die_usage("unknown option '%s' for this command", s);
        switch (s[1]) {
        case 'c': NEEDVAL(); if (a->snap_op || strchr(allowed, 'l')) { a->snap_op = 'c'; a->snap_name = val; } else a->opt_c = val; break;
        case 'l': a->snap_op = 'l'; break;
        case 'd': NEEDVAL(); a->snap_op = 'd'; a->snap_name = val; break;
        case 'a': NEEDVAL(); a->snap_op = 'a'; a->snap_name = val; break;
        case 'b': NEEDVAL(); a->opt_b = val; a->have_b = true; break;
        case 'F': NEEDVAL(); a->opt_F = val; break;
        case 's': NEEDVAL(); a->opt_s = val; break;
        case 'r': NEEDVAL(); a->opt_r = val; break;
        case 'f': NEEDVAL(); a->opt_f = val; break;
        case 'O': NEEDVAL(); a->opt_O = val; break;
        case 'u': a->rebase_unsafe = true; break;
        default: die_usage("unknown option '%s'", s);
        }
#undef NEEDVAL
    }
}

static bool parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!*s || *s == '-')
        return false;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return false;
    unsigned sh = 0;
    switch (*end) {
    case 0: break;
    case 'k': case 'K': sh = 10; end++; break;
    case 'm': case 'M': sh = 20; end++; break;
    case 'g': case 'G': sh = 30; end++; break;
    case 't': case 'T': sh = 40; end++; break;
    case 'b': case 'B': break;
    default: return false;
    }
    if (*end == 'i' && sh)
        end++;
    if (*end == 'B' || *end == 'b')
        end++;
    if (*end)
        return false;
    if (sh && v > (UINT64_MAX >> sh))
        return false;
    *out = (uint64_t)v << sh;
    return true;
}

static bool all_digits(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

static int parse_fmt(const char *s, const char *what)
{
    if (!s)
        return 0;
    if (!strcmp(s, "raw"))
        return PCOW_BASE_RAW;
    if (!strcmp(s, "pcow"))
        return PCOW_BASE_PCOW;
    die_usage("unknown %s format '%s' (raw or pcow)", what, s);
}

static void human_size(uint64_t v, char *b, size_t n)
{
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double d = (double)v;
    int i = 0;
    while (d >= 1024 && i < 5) {
        d /= 1024;
        i++;
    }
    if (i == 0)
        snprintf(b, n, "%" PRIu64 " B", v);
    else
        snprintf(b, n, "%.3g %s", d, u[i]);
}

/* A JSON string that is valid UTF-8 whatever the bytes: control characters escaped, a byte
 * that does not start a valid UTF-8 sequence becomes U+FFFD. */
static void json_str(FILE *o, const char *s)
{
    fputc('"', o);
    for (const unsigned char *p = (const unsigned char *)s; p && *p;) {
        int n = utf8_len(p);
        if (n == 0) {
            fputs("\\ufffd", o);
            n = 1;
        } else if (*p == '"' || *p == '\\') {
            fprintf(o, "\\%c", *p);
        } else if (*p < 0x20 || *p == 0x7f) {
            fprintf(o, "\\u%04x", *p);
        } else {
            fwrite(p, 1, (size_t)n, o);
        }
        p += n;
    }
    fputc('"', o);
}

static void iso_time(uint64_t sec, char *b, size_t n)
{
    time_t t = (time_t)sec;
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(b, n, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(b, n, "invalid");
}

static unsigned open_flags(const struct args *a)
{
    return (a->unsafe_base ? PCOW_OPEN_UNSAFE_BASE : 0) | (a->force_share ? PCOW_OPEN_NO_LOCK : 0);
}

/* ---- create ---- */
static int cmd_create(int argc, char **argv)
{
    struct args a;
    parse(argc, argv, &a, "cbFs");
    struct pcow_create_opts o = {0};
    const char *file;
    if (a.npos == 3 && all_digits(a.pos[0]) && all_digits(a.pos[1])) {
        /* the paper's form: create CLUSTER_KIB SIZE_GIB FILE */
        uint64_t ck = strtoull(a.pos[0], NULL, 10), gb = strtoull(a.pos[1], NULL, 10);
        if (ck == 0 || ck > 2048 || gb == 0 || gb > (1ull << 22))
            die_usage("create CLUSTER_KIB SIZE_GIB FILE: cluster %s KiB or size %s GiB out of range", a.pos[0], a.pos[1]);
        o.cluster_size = (uint32_t)(ck << 10);
        o.virtual_size = gb << 30;
        file = a.pos[2];
    } else {
        if (a.npos == 2 && all_digits(a.pos[0]) && all_digits(a.pos[1]))
            die_usage("create %s %s: FILE is missing (the positional form is create CLUSTER_KIB SIZE_GIB FILE; "
                      "to create a file named '%s', write ./%s)", a.pos[0], a.pos[1], a.pos[0], a.pos[0]);
        if (a.npos < 1 || a.npos > 2)
            die_usage("create needs FILE [SIZE]");
        file = a.pos[0];
        if (a.npos == 2 && !parse_size(a.pos[1], &o.virtual_size))
            die_usage("invalid size '%s'", a.pos[1]);
        if (a.npos == 1 && !a.opt_b)
            die_usage("create needs a SIZE when there is no base image (-b)");
    }
    uint64_t v;
    if (a.opt_c) {
        if (!parse_size(a.opt_c, &v) || v > UINT32_MAX)
            die_usage("invalid cluster size '%s'", a.opt_c);
        o.cluster_size = (uint32_t)v;
    }
    if (a.opt_s) {
        if (!parse_size(a.opt_s, &v) || v > UINT32_MAX)
            die_usage("invalid sub-unit size '%s'", a.opt_s);
        o.subunit_size = (uint32_t)v;
    }
    if (a.stripes) {
        if (!parse_size(a.stripes, &v) || v == 0 || v > PCOW_MAX_STRIPES)
            die_usage("invalid stripe count '%s' (1..%d)", a.stripes, PCOW_MAX_STRIPES);
        o.stripe_count = (uint32_t)v;
    }
    if (a.stripe_unit) {
        if (!parse_size(a.stripe_unit, &v) || v > UINT32_MAX)
            die_usage("invalid stripe unit '%s'", a.stripe_unit);
        o.stripe_unit = (uint32_t)v;
    }
    o.bitmap_records = a.bitmap_records;
    o.base = a.opt_b;
    o.base_format = parse_fmt(a.opt_F, "base");
    o.allow_unsafe_base = a.unsafe_base;
    char err[1024];
    int r = pcow_create(file, &o, err, sizeof err);
    if (r < 0)
        return fail(err);
    pcow_image *img;
    if (pcow_open(file, PCOW_OPEN_NO_BASE, &img, err, sizeof err) == 0) {
        struct pcow_info in;
        pcow_get_info(img, &in);
        char hs[32];
        human_size(in.virtual_size, hs, sizeof hs);
        char e1[4096], e2[2100];
        printf("Formatting '%s', fmt=pcow cluster_size=%u size=%" PRIu64 " (%s)%s%s\n", txt(file, e1, sizeof e1), in.cluster_size,
               in.virtual_size, hs, in.base_path[0] ? " base=" : "", txt(in.base_path, e2, sizeof e2));
        pcow_close(img, NULL, 0);
    }
    return 0;
}

/* ---- info ---- */
static void features_json(FILE *o, const struct pcow_info *in)
{
    fprintf(o, "\"features\": {\"incompatible\": [");
    if (in->incompat_features & 1)
        fprintf(o, "\"stripes\"");
    if (in->incompat_features & 2)
        fprintf(o, "%s\"bitmap_records\"", in->incompat_features & 1 ? ", " : "");
    fprintf(o, "], \"compatible\": [], \"incompatible_bits\": %" PRIu64 ", \"compatible_bits\": %" PRIu64 "}",
            in->incompat_features, in->compat_features);
}

static void info_json(FILE *o, pcow_image *img, const char *name)
{
    struct pcow_info in;
    pcow_get_info(img, &in);
    int pid = -1, in_use = pcow_in_use(img, &pid);
    fprintf(o, "{\n  \"filename\": ");
    json_str(o, name);
    fprintf(o, ",\n  \"format\": \"pcow\",\n  \"version\": %u,\n  \"virtual_size\": %" PRIu64
               ",\n  \"virtual-size\": %" PRIu64 ",\n  \"cluster_size\": %u,\n  \"cluster-size\": %u,\n  \"subunit_size\": %u"
               ",\n  \"clusters\": %" PRIu64 ",\n  \"allocated_clusters\": %" PRIu64 ",\n  \"total_data_clusters\": %" PRIu64
               ",\n  \"file_size\": %" PRIu64 ",\n  \"actual-size\": %" PRIu64 ",\n  \"image_end\": %" PRIu64
               ",\n  \"dirty\": %s,\n  \"dirty-flag\": %s,\n  \"generation\": %" PRIu64 ",\n  \"in-use\": %s,\n  \"in-use-pid\": %d,\n  ",
            in.version, in.virtual_size, in.virtual_size, in.cluster_size, in.cluster_size, in.subunit_size, in.clusters,
            in.allocated_clusters, in.total_data_clusters, in.file_size, in.file_size, in.image_end,
            in.dirty ? "true" : "false", in.dirty ? "true" : "false", in.generation, in_use == 1 ? "true" : "false",
            in_use == 1 && pid > 0 ? pid : 0);
    features_json(o, &in);
    fprintf(o, ",\n  \"stripes\": {\"count\": %u, \"unit\": %" PRIu64 ", \"files\": [", in.stripe_count, in.stripe_unit);
    for (uint32_t i = 0; i < in.stripe_count; i++) {
        struct pcow_stripe s;
        pcow_stripe_get(img, i, &s);
        fprintf(o, "%s", i ? ", " : "");
        json_str(o, s.path);
    }
    fprintf(o, "]},\n  \"base\": ");
    if (in.base_format) {
        fprintf(o, "{\"path\": ");
        json_str(o, in.base_path);
        fprintf(o, ", \"resolved_path\": ");
        json_str(o, in.base_resolved);
        fprintf(o, ", \"format\": \"%s\"}", in.base_format == PCOW_BASE_PCOW ? "pcow" : "raw");
    } else {
        fprintf(o, "null");
    }
    if (in.base_format) {
        fprintf(o, ",\n  \"backing-filename\": ");
        json_str(o, in.base_path);
        fprintf(o, ",\n  \"full-backing-filename\": ");
        json_str(o, in.base_resolved);
    }
    for (int pass = 0; pass < 2; pass++) {
        fprintf(o, ",\n  \"%s\": [", pass ? "snapshots" : "layers");
        bool first = true;
        for (uint32_t i = 0; i < in.layer_count; i++) {
            struct pcow_layer_info L;
            pcow_layer_get(img, i, &L);
            if (pass && L.active)
                continue;
            char d[40];
            iso_time(L.ctime_sec, d, sizeof d);
            fprintf(o, "%s\n    {\"id\": %u, \"name\": ", first ? "" : ",", L.id);
            json_str(o, L.name);
            fprintf(o, ", \"parent_id\": %u, \"active\": %s, \"date\": \"%s\", \"date_sec\": %" PRIu64
                       ", \"date_nsec\": %u, \"clusters\": %" PRIu64 ", \"l1_offset\": %" PRIu64 "}",
                    L.parent_id, L.active ? "true" : "false", d, L.ctime_sec, L.ctime_nsec, L.clusters, L.l1_offset);
            first = false;
        }
        fprintf(o, "%s]", first ? "" : "\n  ");
    }
    struct pcow_layer_info act;
    pcow_layer_get(img, in.active_layer, &act);
    fprintf(o, ",\n  \"active_layer\": %u\n}", act.id);
}

static void info_human(pcow_image *img, const char *name)
{
    struct pcow_info in;
    pcow_get_info(img, &in);
    char vs[32], ds[32];
    human_size(in.virtual_size, vs, sizeof vs);
    human_size(in.file_size, ds, sizeof ds);
    char en[4096], eb[2100], er[8200];
    printf("image: %s\nfile format: pcow\nversion: %u\nvirtual size: %s (%" PRIu64 " bytes)\ndisk size: %s\n"
           "cluster_size: %u\nsubunit_size: %u\nallocated clusters: %" PRIu64 " (active layer), %" PRIu64 " (all layers)\n",
           txt(name, en, sizeof en), in.version, vs, in.virtual_size, ds, in.cluster_size, in.subunit_size, in.allocated_clusters,
           in.total_data_clusters);
    if (in.base_format)
        printf("base file: %s (actual path: %s, format %s)\n", txt(in.base_path, eb, sizeof eb), txt(in.base_resolved, er, sizeof er),
               in.base_format == PCOW_BASE_PCOW ? "pcow" : "raw");
    printf("stripes: %u (unit %" PRIu64 ")\n", in.stripe_count, in.stripe_unit);
    int pid = -1;
    if (pcow_in_use(img, &pid) == 1) {
        if (pid > 0)
            printf("dirty: in use by PID %d (open read-write; not a sign of an unclean close)\n", pid);
        else
            printf("dirty: in use by another process (open read-write; not a sign of an unclean close)\n");
    } else {
        printf("dirty: %s\n", in.dirty ? "yes (not closed cleanly; run check)" : "no");
    }
    if (in.layer_count > 1) {
        printf("Snapshot list:\n%-6s %-24s %-10s %s\n", "ID", "TAG", "CLUSTERS", "DATE");
        for (uint32_t i = 0; i < in.layer_count; i++) {
            struct pcow_layer_info L;
            pcow_layer_get(img, i, &L);
            if (L.active)
                continue;
            char d[40];
            iso_time(L.ctime_sec, d, sizeof d);
            char nm[300];
            printf("%-6u %-24s %-10" PRIu64 " %s\n", L.id, txt(L.name, nm, sizeof nm), L.clusters, d);
        }
    }
}

static int cmd_info(int argc, char **argv)
{
    struct args a;
    parse(argc, argv, &a, "");
    if (a.npos != 1)
        die_usage("info needs FILE");
    char err[1024];
    pcow_image *img;
    int r = pcow_open(a.pos[0], open_flags(&a), &img, err, sizeof err);
    if (r < 0)
        return fail(err);
    if (a.json && a.chain)
        printf("[");
    pcow_image *cur = img;
    const char *name = a.pos[0];
    for (int i = 0; cur; i++) {
        if (a.json) {
            if (i)
                printf(",\n");
            info_json(stdout, cur, name);
        } else {
            if (i)
                printf("\n");
            info_human(cur, name);
        }
        if (!a.chain)
            break;
        struct pcow_info in;
        pcow_get_info(cur, &in);
        pcow_image *b = pcow_base_image(cur);
        if (!b && in.base_format == PCOW_BASE_RAW) {
            if (a.json)
                printf(",\n{\"filename\": ");
            else
                printf("\nimage: ");
            if (a.json) {
                json_str(stdout, in.base_resolved);
                struct stat st;
                uint64_t sz = stat(in.base_resolved, &st) == 0 ? (uint64_t)st.st_size : 0;
                printf(", \"format\": \"raw\", \"virtual_size\": %" PRIu64 ", \"virtual-size\": %" PRIu64 "}", sz, sz);
            } else {
                printf("%s\nfile format: raw\n", in.base_resolved);
            }
        }
        cur = b;
        if (cur)
            name = pcow_path(cur);
    }
    if (a.json)
        printf(a.chain ? "]\n" : "\n");
    pcow_close(img, NULL, 0);
    return 0;
}

/* ---- snapshot / rollback / rebase / commit ---- */
static int with_rw(const char *file, const struct args *a, unsigned extra, pcow_image **img)
{
    char err[1024];
    if (a->force_share)
        die_usage("-U is only for reading");
    int r = pcow_open(file, PCOW_OPEN_RDWR | extra | open_flags(a), img, err, sizeof err);
    if (r < 0)
        return fail(err);
    return 0;
}

static int finish(pcow_image *img, int r)
{
    char err[1024];
    if (r < 0) {
        fail(pcow_errmsg(img));
        pcow_close(img, NULL, 0);
        return EXIT_ERR;
    }
    if (pcow_close(img, err, sizeof err) < 0)
        return fail(err);
    return 0;
}

static int snapshot_list(pcow_image *img)
{
    uint32_t n = pcow_layer_count(img);
    printf("Snapshot list:\n%-6s %-24s %-10s %-8s %s\n", "ID", "TAG", "CLUSTERS", "PARENT", "DATE");
    for (uint32_t i = 0; i < n; i++) {
        struct pcow_layer_info L;
        pcow_layer_get(img, i, &L);
        if (L.active)
            continue;
        char d[40];
        iso_time(L.ctime_sec, d, sizeof d);
        char nm[300];
        printf("%-6u %-24s %-10" PRIu64 " %-8u %s\n", L.id, txt(L.name, nm, sizeof nm), L.clusters, L.parent_id, d);
    }
    return 0;
}

static int cmd_snapshot(int argc, char **argv)
{
    struct args a;
    parse(argc, argv, &a, "cldaU");
    if (!a.snap_op)
        die_usage("snapshot needs one of -c NAME, -l, -d NAME, -a NAME");
    if (a.npos != 1)
        die_usage("snapshot needs FILE");
    pcow_image *img;
    char err[1024];
    if (a.snap_op == 'l') {
        int r = pcow_open(a.pos[0], PCOW_OPEN_NO_BASE | open_flags(&a), &img, err, sizeof err);
        if (r < 0)
            return fail(err);
        if (a.json) {
            /* same records as info's "snapshots" */
            info_json(stdout, img, a.pos[0]);
            printf("\n");
        } else {
            snapshot_list(img);
        }
        pcow_close(img, NULL, 0);
        return 0;
    }
    if (with_rw(a.pos[0], &a, 0, &img))
        return EXIT_ERR;
    int r = a.snap_op == 'c' ? pcow_snapshot_create(img, a.snap_name)
          : a.snap_op == 'd' ? pcow_snapshot_delete(img, a.snap_name)
                             : pcow_snapshot_apply(img, a.snap_name);
    return finish(img, r);
}

static int cmd_rollback(int argc, char **argv)
{
    struct args a;
    parse(argc, argv, &a, "");
    if (a.npos != 2)
        die_usage("rollback needs FILE SNAPSHOT");
    pcow_image *img;
    if (with_rw(a.pos[0], &a, 0, &img))
        return EXIT_ERR;
    return finish(img, pcow_snapshot_apply(img, a.pos[1]));
}

static int cmd_rebase(int argc, char **argv)
{
    struct args a;
    parse(argc, argv, &a, "ubF");
    if (a.npos != 1 || !a.have_b)
        die_usage("rebase needs -b BASE FILE");
    pcow_image *img;
    /* unsafe rebase does not need the old base (it may be gone: that is what -u is for) */
    if (with_rw(a.pos[0], &a, a.rebase_unsafe ? PCOW_OPEN_NO_BASE : 0, &img))
        return EXIT_ERR;
    return finish(img, pcow_rebase(img, a.opt_b, parse_fmt(a.opt_F, "base"), a.rebase_unsafe));
}

static int cmd_commit(int argc, char **argv)
{
    struct args a;
    parse(argc, argv, &a, "");
    if (a.npos != 1)
        die_usage("commit needs FILE");
    pcow_image *img;
    if (with_rw(a.pos[0], &a, 0, &img))
        return EXIT_ERR;
    int r = pcow_commit(img);
    if (r == 0)
        printf("Image committed.\n");
    return finish(img, r);
}

/* ---- check ---- */
struct msgs {
    char **sev, **msg;
    size_t n, cap;
};

static void collect(void *ctx, const char *sev, const char *msg)
{
    struct msgs *m = ctx;
    if (m->n == m->cap) {
        size_t nc = m->cap ? m->cap * 2 : 16;
        char **ns = realloc(m->sev, nc * sizeof *ns);
        if (!ns)
            return;
        m->sev = ns;
        char **nm = realloc(m->msg, nc * sizeof *nm);
        if (!nm)
            return;
        m->msg = nm;
        m->cap = nc;
    }
    m->sev[m->n] = strdup(sev);
    m->msg[m->n] = strdup(msg);
    if (m->sev[m->n] && m->msg[m->n])
        m->n++;
}

static int cmd_check(int argc, char **argv)
{
    struct args a;
    parse(argc, argv, &a, "r");
    if (a.npos != 1)
        die_usage("check needs FILE");
    unsigned repair = 0;
    if (a.opt_r) {
        if (!strcmp(a.opt_r, "leaks"))
            repair = PCOW_REPAIR_LEAKS;
        else if (!strcmp(a.opt_r, "all"))
            repair = PCOW_REPAIR_ALL;
        else
            die_usage("-r takes leaks or all, not '%s'", a.opt_r);
    }
    struct pcow_check_result res;
    struct msgs m = {0};
    char err[1024];
    int r = pcow_check(a.pos[0], open_flags(&a), repair, &res, collect, &m, err, sizeof err);
    if (r < 0) {
        for (size_t i = 0; i < m.n; i++) {
            free(m.sev[i]);
            free(m.msg[i]);
        }
        free(m.sev);
        free(m.msg);
        return fail(err);
    }
    if (a.json) {
        printf("{\n  \"filename\": ");
        json_str(stdout, a.pos[0]);
        printf(",\n  \"format\": \"pcow\",\n  \"check-errors\": %" PRIu64 ",\n  \"leaks\": %" PRIu64
               ",\n  \"leaks-fixed\": %" PRIu64 ",\n  \"corruptions\": %" PRIu64 ",\n  \"corruptions-fixed\": %" PRIu64
               ",\n  \"image-end-offset\": %" PRIu64 ",\n  \"allocated-clusters\": %" PRIu64
               ",\n  \"total-clusters\": %" PRIu64 ",\n  \"messages\": [",
               res.check_errors, res.leaks, res.leaks_fixed, res.corruptions, res.corruptions_fixed,
               res.image_end_offset, res.allocated_clusters, res.total_clusters);
        for (size_t i = 0; i < m.n; i++) {
            printf("%s\n    {\"severity\": ", i ? "," : "");
            json_str(stdout, m.sev[i]);
            printf(", \"message\": ");
            json_str(stdout, m.msg[i]);
            printf("}");
        }
        printf("%s]\n}\n", m.n ? "\n  " : "");
    } else {
        for (size_t i = 0; i < m.n; i++) {
            printf("%s: ", !strcmp(m.sev[i], "corruption") ? "ERROR" : !strcmp(m.sev[i], "leak") ? "Leaked cluster" : m.sev[i]);
            txt_put(stdout, m.msg[i]);
            putchar('\n');
        }
        if (res.leaks_fixed || res.corruptions_fixed)
            printf("The following inconsistencies were found and repaired:\n    %" PRIu64 " leaked clusters\n    %" PRIu64
                   " corruptions\n\n", res.leaks_fixed, res.corruptions_fixed);
        if (!res.corruptions && !res.leaks && !res.check_errors)
            printf("No errors were found on the image.\n");
        if (res.corruptions)
            printf("\n%" PRIu64 " errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n", res.corruptions);
        if (res.leaks)
            printf("\n%" PRIu64 " leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n", res.leaks);
        if (res.check_errors)
            printf("\n%" PRIu64 " internal errors have occurred during the check.\n", res.check_errors);
        printf("%" PRIu64 "/%" PRIu64 " = %.2f%% allocated\nImage end offset: %" PRIu64 "\n", res.allocated_clusters,
               res.total_clusters, res.total_clusters ? 100.0 * (double)res.allocated_clusters / (double)res.total_clusters : 0.0,
               res.image_end_offset);
    }
    for (size_t i = 0; i < m.n; i++) {
        free(m.sev[i]);
        free(m.msg[i]);
    }
    free(m.sev);
    free(m.msg);
    if (res.check_errors)
        return 1;
    if (res.corruptions)
        return 2;
    if (res.leaks)
        return 3;
    return 0;
}

/* ---- map ---- */
struct mapout {
    bool json;
    int n;
};

static int map_cb(void *ctx, const struct pcow_map_extent *e)
{
    struct mapout *m = ctx;
    if (m->json) {
        printf("%s{\"start\": %" PRIu64 ", \"length\": %" PRIu64 ", \"depth\": %d, \"present\": %s, \"zero\": %s, \"data\": %s",
               m->n ? ",\n" : "", e->start, e->length, e->depth, e->data ? "true" : "false", e->zero ? "true" : "false",
               e->data ? "true" : "false");
        if (e->data) {
            printf(", \"offset\": %" PRIu64 ", \"file\": ", e->offset);
            json_str(stdout, e->file);
        }
        printf("}");
    } else if (e->data) {
        printf("%#-18" PRIx64 " %#-18" PRIx64 " %#-18" PRIx64 " ", e->start, e->length, e->offset);
        txt_put(stdout, e->file);
        putchar('\n');
    }
    m->n++;
    return 0;
}

static int cmd_map(int argc, char **argv)
{
    struct args a;
    parse(argc, argv, &a, "");
    if (a.npos != 1)
        die_usage("map needs FILE");
    pcow_image *img;
    char err[1024];
    int r = pcow_open(a.pos[0], open_flags(&a), &img, err, sizeof err);
    if (r < 0)
        return fail(err);
    struct mapout m = {.json = a.json};
    if (a.json)
        printf("[");
    else
        printf("%-18s %-18s %-18s %s\n", "Offset", "Length", "Mapped to", "File");
    r = pcow_map(img, map_cb, &m);
    if (a.json)
        printf("]\n");
    if (r < 0) {
        fail(pcow_errmsg(img));
        pcow_close(img, NULL, 0);
        return EXIT_ERR;
    }
    pcow_close(img, NULL, 0);
    return 0;
}

/* open(2) that never blocks on a FIFO or device and accepts only a regular file; errno set. */
static int open_regular_file(const char *path, int flags, mode_t mode)
{
    int fd = open(path, flags | O_CLOEXEC | O_NONBLOCK | O_NOCTTY, mode);
    if (fd < 0)
        return -1;
    struct stat st;
    int e = 0;
    if (fstat(fd, &st) < 0)
        e = errno;
    else if (!S_ISREG(st.st_mode))
        e = S_ISDIR(st.st_mode) ? EISDIR : EINVAL; /* EINVAL is reported as "not a regular file" */
    else {
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
            e = errno;
    }
    if (e) {
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static const char *open_err(void)
{
    return errno == EINVAL ? "not a regular file" : strerror(errno);
}

/* ---- convert ---- */
static bool zero_buf(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

struct conv {
    pcow_image *src, *dst;
    int sfd, dfd;
    const char *in, *out;
    uint8_t *buf; /* 1 MiB */
    bool failed;  /* a message was printed */
};

/* Copy [off, off+len) of the input: read in 1 MiB chunks, write only non-zero 4 KiB runs. */
static int conv_copy(struct conv *cv, uint64_t off, uint64_t len)
{
    const uint64_t chunk = 1 << 20, gran = 4096;
    uint8_t *buf = cv->buf;
    for (uint64_t end = off + len; off < end; off += chunk) {
        uint64_t n = end - off < chunk ? end - off : chunk;
        if (cv->src) {
            if (pcow_read(cv->src, buf, n, off) < 0) {
                fprintf(stderr, "pcow-img: %s\n", pcow_errmsg(cv->src));
                cv->failed = true;
                return -1;
            }
        } else {
            uint64_t got = 0;
            while (got < n) {
                ssize_t k = pread(cv->sfd, buf + got, n - got, (off_t)(off + got));
                if (k <= 0) {
                    fprintf(stderr, "pcow-img: read of %s failed at %" PRIu64 ": %s\n", cv->in, off + got,
                            k ? strerror(errno) : "unexpected end");
                    cv->failed = true;
                    return -1;
                }
                got += (uint64_t)k;
            }
        }
        for (uint64_t p = 0; p < n;) {
            uint64_t g = n - p < gran ? n - p : gran;
            if (zero_buf(buf + p, g)) {
                p += g;
                continue;
            }
            uint64_t q = p + g;
            while (q < n) {
                uint64_t g2 = n - q < gran ? n - q : gran;
                if (zero_buf(buf + q, g2))
                    break;
                q += g2;
            }
            if (cv->dst) {
                if (pcow_write(cv->dst, buf + p, q - p, off + p) < 0) {
                    fprintf(stderr, "pcow-img: %s\n", pcow_errmsg(cv->dst));
                    cv->failed = true;
                    return -1;
                }
            } else if (pwrite(cv->dfd, buf + p, q - p, (off_t)(off + p)) != (ssize_t)(q - p)) {
                fprintf(stderr, "pcow-img: write to %s failed: %s\n", cv->out, strerror(errno));
                cv->failed = true;
                return -1;
            }
            p = q;
        }
    }
    return 0;
}

static int conv_map_cb(void *ctx, const struct pcow_map_extent *e)
{
    return e->data ? conv_copy(ctx, e->start, e->length) : 0;
}

static int cmd_convert(int argc, char **argv)
{
    struct args a;
    parse(argc, argv, &a, "fOc");
    if (a.npos != 2)
        die_usage("convert needs IN OUT");
    int fin = a.opt_f ? parse_fmt(a.opt_f, "input") : 0, fout = a.opt_O ? parse_fmt(a.opt_O, "output") : PCOW_BASE_PCOW;
    const char *in = a.pos[0], *out = a.pos[1];
    char err[1024];
    if (!fin) {
        fin = pcow_probe_format(in);
        if (fin < 0) {
            fprintf(stderr, "pcow-img: %s: %s\n", in, fin == -EINVAL ? "not a regular file" : strerror(-fin));
            return EXIT_ERR;
        }
    }
    pcow_image *src = NULL, *dst = NULL;
    int sfd = -1, dfd = -1, rc = EXIT_ERR;
    uint64_t size;
    if (fin == PCOW_BASE_PCOW) {
        if (pcow_open(in, open_flags(&a), &src, err, sizeof err) < 0)
            return fail(err);
        struct pcow_info inf;
        pcow_get_info(src, &inf);
        size = inf.virtual_size;
    } else {
        sfd = open_regular_file(in, O_RDONLY, 0);
        struct stat st;
        if (sfd < 0 || fstat(sfd, &st) < 0) {
            fprintf(stderr, "pcow-img: cannot open %s: %s\n", in, open_err());
            if (sfd >= 0)
                close(sfd);
            return EXIT_ERR;
        }
        size = (uint64_t)st.st_size;
        if (size == 0) {
            close(sfd);
            return fail("input is empty (0 bytes)");
        }
    }
    struct stat sti, sto;
    if (stat(in, &sti) == 0 && stat(out, &sto) == 0 && sti.st_dev == sto.st_dev && sti.st_ino == sto.st_ino) {
        fprintf(stderr, "pcow-img: input and output are the same file\n");
        goto done;
    }
    if (!a.force && pcow_probe_format(out) == PCOW_BASE_PCOW) {
        /* like create's lock, but also for an image nobody has open: it may hold snapshots */
        fprintf(stderr, "pcow-img: ");
        txt_put(stderr, out);
        fprintf(stderr, " is an existing pcow image; not replacing it (use --force to overwrite it)\n");
        goto done;
    }
    if (fout == PCOW_BASE_PCOW) {
        struct pcow_create_opts o = {.virtual_size = size};
        uint64_t v;
        if (a.opt_c) {
            if (!parse_size(a.opt_c, &v) || v > UINT32_MAX)
                die_usage("invalid cluster size '%s'", a.opt_c);
            o.cluster_size = (uint32_t)v;
        }
        if (pcow_create(out, &o, err, sizeof err) < 0 || pcow_open(out, PCOW_OPEN_RDWR, &dst, err, sizeof err) < 0) {
            fprintf(stderr, "pcow-img: %s\n", err);
            goto done;
        }
    } else {
        dfd = open_regular_file(out, O_WRONLY | O_CREAT, 0644);
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
        if (dfd < 0 || fcntl(dfd, F_OFD_SETLK, &fl) < 0 || ftruncate(dfd, 0) < 0 || ftruncate(dfd, (off_t)size) < 0) {
            fprintf(stderr, "pcow-img: cannot create %s: %s\n", out, open_err());
            goto done;
        }
    }
    {
        /* Only data extents are read (holes of a raw input, unallocated ranges of a pcow input
         * and of its bases are skipped), and only non-zero runs are written: the output is sparse
         * and the cost follows the stored data, not the virtual size. */
        struct conv cv = {.src = src, .dst = dst, .sfd = sfd, .dfd = dfd, .in = in, .out = out, .buf = malloc(1 << 20)};
        if (!cv.buf)
            goto done;
        int r = 0;
        if (src) {
            r = pcow_map(src, conv_map_cb, &cv);
            if (r < 0 && !cv.failed)
                fprintf(stderr, "pcow-img: %s\n", pcow_errmsg(src));
        } else {
            for (uint64_t pos = 0; r == 0 && pos < size;) {
                off_t d = lseek(sfd, (off_t)pos, SEEK_DATA);
                if (d < 0 && errno == ENXIO)
                    break;
                uint64_t ds = d < 0 ? pos : (uint64_t)d; /* no SEEK_DATA: all data */
                if (ds >= size)
                    break;
                off_t h = d < 0 ? -1 : lseek(sfd, d, SEEK_HOLE);
                uint64_t de = h < 0 || (uint64_t)h > size || (uint64_t)h <= ds ? size : (uint64_t)h;
                r = conv_copy(&cv, ds, de - ds);
                pos = de;
            }
        }
        free(cv.buf);
        if (r != 0)
            goto done;
    }
    if (dfd >= 0 && fsync(dfd) < 0) {
        fprintf(stderr, "pcow-img: fsync %s: %s\n", out, strerror(errno));
        goto done;
    }
    rc = 0;
done:
    if (src)
        pcow_close(src, NULL, 0);
    if (dst && pcow_close(dst, err, sizeof err) < 0 && rc == 0) {
        fprintf(stderr, "pcow-img: %s\n", err);
        rc = EXIT_ERR;
    }
    if (sfd >= 0)
        close(sfd);
    if (dfd >= 0)
        close(dfd);
    return rc;
}

/* ---- write / read: debugging and test aids (qemu-io's role) ---- */
static int cmd_write(int argc, char **argv)
{
    struct args a;
    parse(argc, argv, &a, "");
    uint64_t off;
    if (a.npos != 3 || !parse_size(a.pos[1], &off))
        die_usage("write needs FILE OFFSET SRC");
    int fd = open_regular_file(a.pos[2], O_RDONLY, 0);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        fprintf(stderr, "pcow-img: cannot open %s: %s\n", a.pos[2], open_err());
        return EXIT_ERR;
    }
    uint8_t *buf = malloc(st.st_size ? (size_t)st.st_size : 1);
    ssize_t got = buf ? read(fd, buf, (size_t)st.st_size) : -1;
    close(fd);
    if (got != st.st_size) {
        free(buf);
        return fail("cannot read the source file");
    }
    pcow_image *img;
    if (with_rw(a.pos[0], &a, a.fine ? PCOW_OPEN_FINE_COW : 0, &img)) {
        free(buf);
        return EXIT_ERR;
    }
    int r = pcow_write(img, buf, (uint64_t)got, off);
    free(buf);
    return finish(img, r);
}

static int cmd_read(int argc, char **argv)
{
    struct args a;
    parse(argc, argv, &a, "");
    uint64_t off, len;
    if (a.npos != 3 || !parse_size(a.pos[1], &off) || !parse_size(a.pos[2], &len))
        die_usage("read needs FILE OFFSET LENGTH");
    pcow_image *img;
    char err[1024];
    if (pcow_open(a.pos[0], open_flags(&a), &img, err, sizeof err) < 0)
        return fail(err);
    uint8_t *buf = malloc(1 << 20);
    int r = buf ? 0 : -ENOMEM;
    while (r == 0 && len) {
        uint64_t n = len < (1 << 20) ? len : (1 << 20);
        r = pcow_read(img, buf, n, off);
        if (r == 0 && fwrite(buf, 1, n, stdout) != n)
            r = -EIO;
        off += n;
        len -= n;
    }
    free(buf);
    if (r < 0)
        fprintf(stderr, "pcow-img: %s\n", pcow_errmsg(img));
    pcow_close(img, NULL, 0);
    return r < 0 ? EXIT_ERR : 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage_text, stderr);
        return EXIT_ERR;
    }
    const char *c = argv[1];
    int n = argc - 2;
    char **v = argv + 2;
    if (!strcmp(c, "help") || !strcmp(c, "--help") || !strcmp(c, "-h")) {
        fputs(usage_text, stdout);
        return 0;
    }
    static const struct {
        const char *name;
        int (*run)(int, char **);
    } cmds[] = {
        {"create", cmd_create}, {"info", cmd_info},       {"snapshot", cmd_snapshot}, {"rollback", cmd_rollback},
        {"rebase", cmd_rebase}, {"commit", cmd_commit},   {"check", cmd_check},       {"map", cmd_map},
        {"convert", cmd_convert}, {"write", cmd_write},   {"read", cmd_read},
    };
    for (size_t k = 0; k < sizeof cmds / sizeof cmds[0]; k++)
        if (!strcmp(c, cmds[k].name))
            return cmds[k].run(n, v);
    die_usage("unknown command '%s'", c);
}
