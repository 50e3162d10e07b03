/* pcow-bench's case parameters: ONE table (which parameters each case takes, defaults, ranges,
 * rules between parameters), the parser of `pcow-bench case NAME ...` built on it, and
 * `pcow-bench case --describe`, which prints the table as JSON for the harness
 * (src/workloads/pcow-bench.ts validates experiment files against that JSON, committed as
 * bench/describe.json). Runtime options (prealloc, cow_unit) take their type, range, rules and
 * messages from the runtime's own table (../options.c). */
#define _GNU_SOURCE
#include "options.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

static const char *const backend_values[] = {"pcow", "raw", "both", NULL};
static const char *const rw_values[] = {"randread", "randwrite", "read", "write", NULL};
static const char *const variant_values[] = {"copy", "mmap", "both", NULL};

const struct bparam bench_params[N_PARAMS] = {
    [P_CLUSTER_SIZE] = {"cluster_size", T_SIZE, NULL, 4 * KiB, 2 * MiB, true, NULL, "image cluster size"},
    [P_PREALLOC] = {"prealloc", T_COUNT, "prealloc-depth", 0, 0, false, NULL, NULL},
    [P_COW_UNIT] = {"cow_unit", T_SIZE, "cow-unit", 0, 0, false, NULL, NULL},
    [P_CLUSTERS] = {"clusters", T_COUNT, NULL, 1, 100000000, false, NULL,
                    "clusters touched (expansion, cow) or allocated (open)"},
    [P_BACKEND] = {"backend", T_ENUM, NULL, 0, 0, false, backend_values,
                   "the pcow image, a raw file mmap, or both in alternating rounds (gives pcow_over_raw)"},
    [P_BS] = {"bs", T_SIZE, NULL, 512, 64 * MiB, true, NULL, "bytes per access"},
    [P_RW] = {"rw", T_ENUM, NULL, 0, 0, false, rw_values,
              "access pattern: random or sequential (one slice per thread) loads or stores"},
    [P_THREADS] = {"threads", T_COUNT, NULL, 1, 64, false, NULL, "threads accessing the range"},
    [P_SIZE] = {"size", T_SIZE, NULL, 16 * MiB, 0, false, NULL, "size of the image (and of the raw file)"},
    [P_SECONDS] = {"seconds", T_SECONDS, NULL, 0.01, 3600, false, NULL,
                   "measured seconds per backend (steady: split over the rounds)"},
    [P_ROUNDS] = {"rounds", T_COUNT, NULL, 1, 1000, false, NULL,
                  "measurement rounds per backend; with backend both the order alternates and each round "
                  "gives a paired pcow/raw ratio (median and 95% confidence interval)"},
    [P_STRIPES] = {"stripes", T_COUNT, NULL, 1, PCOW_MAX_STRIPES, false, NULL, "files the image is striped over"},
    [P_VARIANT] = {"variant", T_ENUM, NULL, 0, 0, false, variant_values,
                   "UFFDIO_COPY of a page, mmap(MAP_FIXED) of a file page + UFFDIO_WAKE, or both"},
    [P_FAULTS] = {"faults", T_COUNT, NULL, 100, 10000000, false, NULL, "faults measured (the first 16 are warm-up)"},
    [P_VIRTUAL_SIZE] = {"virtual_size", T_SIZE, NULL, 4 * KiB, 0, false, NULL,
                        "virtual size (default: 5/4 of clusters x cluster_size, rounded up to the cluster)"},
};

#define PD(p_, d_) {p_, d_}
const struct bcase_def bench_cases[N_CASES] = {
    [C_FLOOR] = {"floor", "the bare userfaultfd round trip every fault path is measured against", false,
                 {PD(P_VARIANT, "both"), PD(P_FAULTS, "20000")}, {{0}}},
    [C_EXPANSION] = {"expansion", "first-touch write latency per cluster (pre-allocation on or off)", true,
                     {PD(P_CLUSTER_SIZE, "64K"), PD(P_PREALLOC, "0"), PD(P_CLUSTERS, "2000")}, {{0}}},
    [C_COW] = {"cow", "first write after a snapshot (the COW unit or the whole cluster copied)", true,
               {PD(P_CLUSTER_SIZE, "64K"), PD(P_PREALLOC, "0"), PD(P_COW_UNIT, "whole"), PD(P_CLUSTERS, "1500")},
               {{0}}},
    [C_STEADY] = {"steady", "loads/stores over a fully allocated image vs a raw file mmap of the same size", true,
                  {PD(P_BACKEND, "pcow"), PD(P_BS, "4K"), PD(P_RW, "randread"), PD(P_THREADS, "1"),
                   PD(P_SIZE, "256M"), PD(P_SECONDS, "1"), PD(P_ROUNDS, "10"), PD(P_CLUSTER_SIZE, "64K")},
                  {{P_SIZE, R_MULTIPLE_OF, {{P_CLUSTER_SIZE, 0}}, NULL},
                   {P_SIZE, R_AT_LEAST_PRODUCT, {{P_THREADS, 0}, {P_BS, 0}}, "one block per thread"}}},
    [C_OPEN] = {"open", "open + map time and VMA count of an image with N allocated clusters", true,
                {PD(P_CLUSTERS, "10000"), PD(P_CLUSTER_SIZE, "4K"), PD(P_VIRTUAL_SIZE, NULL)},
                {{P_VIRTUAL_SIZE, R_MULTIPLE_OF, {{P_CLUSTER_SIZE, 0}}, NULL},
                 {P_VIRTUAL_SIZE, R_AT_LEAST_PRODUCT, {{P_CLUSTERS, 0}, {P_CLUSTER_SIZE, 0}}, "room for the clusters"}}},
    [C_STRIPES] = {"stripes", "sequential 1 MiB bandwidth of an image striped over N files (stripe unit max(2M, cluster))",
                   true,
                   {PD(P_STRIPES, "1"), PD(P_SIZE, "256M"), PD(P_THREADS, "1"), PD(P_SECONDS, "1"),
                    PD(P_CLUSTER_SIZE, "64K")},
                   {{P_SIZE, R_MULTIPLE_OF, {{P_CLUSTER_SIZE, 0}, {0, 2 * MiB}}, "whole stripe units"},
                    {P_SIZE, R_AT_LEAST_PRODUCT, {{P_THREADS, 0}, {0, MiB}}, "one 1M block per thread"}}},
};

/* "--cluster-size" for "cluster_size" */
const char *param_flag(enum pid p, char *b, size_t n)
{
    snprintf(b, n, "--%s", bench_params[p].name);
    for (char *c = b; *c; c++)
        if (*c == '_')
            *c = '-';
    return b;
}

static bool pow2(uint64_t v) { return v && !(v & (v - 1)); }

static const struct pcow_runtime_option *rt_opt(enum pid p)
{
    return bench_params[p].runtime ? pcow_runtime_option_find(bench_params[p].runtime) : NULL;
}

bool case_takes(enum bcase c, enum pid p)
{
    for (int i = 0; i < MAX_CASE_PARAMS && bench_cases[c].params[i].p; i++)
        if (bench_cases[c].params[i].p == p)
            return true;
    return false;
}

void case_usage(FILE *f)
{
    char fl[40];
    for (int c = 0; c < N_CASES; c++) {
        fprintf(f, "%s pcow-bench case %-9s", c ? "      " : "usage:", bench_cases[c].name);
        for (int i = 0; i < MAX_CASE_PARAMS && bench_cases[c].params[i].p; i++) {
            const char *d = bench_cases[c].params[i].dflt;
            fprintf(f, " [%s %s]", param_flag(bench_cases[c].params[i].p, fl, sizeof fl), d ? d : "auto");
        }
        fputc('\n', f);
    }
    fprintf(f, "       every case: [--dir DIR] (default /dev/shm) [--check] (validate, print the parameters, "
               "measure nothing);\n       all but floor: [--keep PATH] (leave the image at PATH)\n"
               "       pcow-bench case --describe   (every case's parameters, defaults and ranges as JSON)\n");
}

/* The pcow-bench spelling of a runtime message: "prealloc-depth 70000 must ..." -> "--prealloc 70000 must ...". */
static int rt_usage_error(const char *cn, const char *msg)
{
    char fl[40];
    for (int p = 1; p < N_PARAMS; p++) {
        const char *rn = bench_params[p].runtime;
        size_t l = rn ? strlen(rn) : 0;
        if (rn && !strncmp(msg, rn, l) && (msg[l] == ' ' || msg[l] == '\''))
            return usage_error("case %s: %s%s", cn, param_flag((enum pid)p, fl, sizeof fl), msg + l);
    }
    return usage_error("case %s: %s", cn, msg);
}

static void range_text(enum pid p, char *b, size_t n)
{
    const struct bparam *d = &bench_params[p];
    char lo[32], hi[32];
    if (d->type == T_SECONDS)
        snprintf(b, n, "a number of seconds from %g to %g", d->min, d->max);
    else if (d->type == T_SIZE && d->max == 0)
        snprintf(b, n, "at least %s", pcow_runtime_format_size((uint64_t)d->min, lo, sizeof lo));
    else if (d->type == T_SIZE)
        snprintf(b, n, "%s from %s to %s", d->pow2 ? "a power of two" : "a size",
                 pcow_runtime_format_size((uint64_t)d->min, lo, sizeof lo),
                 pcow_runtime_format_size((uint64_t)d->max, hi, sizeof hi));
    else
        snprintf(b, n, "a whole number from %.0f to %.0f", d->min, d->max);
}

/* Parse one value of parameter p into a; 0 or 2 with the message printed. */
static int parse_value(struct case_args *a, enum pid p, const char *v)
{
    const struct bparam *d = &bench_params[p];
    const char *cn = bench_cases[a->c].name;
    char fl[40], msg[400];
    param_flag(p, fl, sizeof fl);
    if (d->runtime) {
        if (pcow_runtime_opt_parse(&a->rt, d->runtime, v, msg, sizeof msg) < 0)
            return rt_usage_error(cn, msg);
        const struct pcow_runtime_option *o = rt_opt(p);
        a->u[p] = *(const uint32_t *)((const char *)&a->rt + o->offset);
        return 0;
    }
    switch (d->type) {
    case T_ENUM:
        for (int i = 0; d->values[i]; i++)
            if (!strcmp(v, d->values[i])) {
                a->u[p] = (uint64_t)i;
                return 0;
            }
        msg[0] = 0;
        for (int i = 0; d->values[i]; i++)
            snprintf(msg + strlen(msg), sizeof msg - strlen(msg), "%s%s", i ? (d->values[i + 1] ? ", " : " or ") : "",
                     d->values[i]);
        return usage_error("case %s: %s '%s' must be %s", cn, fl, v, msg);
    case T_SECONDS: {
        char *e;
        errno = 0;
        double x = strtod(v, &e);
        if (errno || *e || e == v || !(x >= d->min && x <= d->max))
            return usage_error("case %s: %s '%s' must be a number of seconds from %g to %g", cn, fl, v, d->min, d->max);
        a->seconds = x;
        return 0;
    }
    case T_SIZE: {
        uint64_t x;
        if (pcow_runtime_parse_size(v, &x) < 0)
            return usage_error("case %s: %s '%s' is not a size (use e.g. 4096, 64K, 2M, 1G)", cn, fl, v);
        if (x < d->min || (d->max && x > d->max) || (d->pow2 && !pow2(x))) {
            range_text(p, msg, sizeof msg);
            return usage_error("case %s: %s %s must be %s", cn, fl, v, msg);
        }
        a->u[p] = x;
        return 0;
    }
    case T_COUNT: {
        char *e;
        errno = 0;
        unsigned long long x = v[0] >= '0' && v[0] <= '9' ? strtoull(v, &e, 10) : 0;
        if (v[0] < '0' || v[0] > '9' || errno || *e || x < d->min || x > d->max) {
            range_text(p, msg, sizeof msg);
            return usage_error("case %s: %s '%s' must be %s", cn, fl, v, msg);
        }
        a->u[p] = x;
        return 0;
    }
    }
    return 0;
}

static uint64_t operand(const struct case_args *a, struct operand o)
{
    return o.p ? a->u[o.p] : o.k;
}

static const char *operand_text(const struct case_args *a, struct operand o, char *b, size_t n)
{
    char fl[40], v[32];
    if (!o.p)
        return pcow_runtime_format_size(o.k, b, n);
    if (bench_params[o.p].type == T_SIZE)
        snprintf(b, n, "%s %s", param_flag(o.p, fl, sizeof fl), pcow_runtime_format_size(a->u[o.p], v, sizeof v));
    else
        snprintf(b, n, "%s %" PRIu64, param_flag(o.p, fl, sizeof fl), a->u[o.p]);
    return b;
}

static uint64_t lcm(uint64_t x, uint64_t y)
{
    uint64_t g = x, h = y;
    while (h) {
        uint64_t t = g % h;
        g = h, h = t;
    }
    return g ? x / g * y : 0;
}

/* The case's rules between parameters; 0 or 2 with the message printed. */
static int check_rules(const struct case_args *a)
{
    const struct bcase_def *c = &bench_cases[a->c];
    for (int i = 0; i < MAX_CASE_RULES && c->rules[i].p; i++) {
        const struct crule *r = &c->rules[i];
        uint64_t v = a->u[r->p];
        char fl[40], vs[32], t1[64], t2[64], why[80] = "";
        param_flag(r->p, fl, sizeof fl);
        pcow_runtime_format_size(v, vs, sizeof vs);
        if (r->why)
            snprintf(why, sizeof why, ": %s", r->why);
        if (r->kind == R_MULTIPLE_OF) {
            uint64_t m = 1;
            for (int k = 0; k < 2; k++)
                if (r->of[k].p || r->of[k].k)
                    m = lcm(m, operand(a, r->of[k]));
            if (m && v % m) {
                char ms[32];
                return usage_error("case %s: %s %s must be a multiple of %s (%s%s%s%s)", c->name, fl, vs,
                                   pcow_runtime_format_size(m, ms, sizeof ms), operand_text(a, r->of[0], t1, sizeof t1),
                                   r->of[1].p || r->of[1].k ? " and " : "",
                                   r->of[1].p || r->of[1].k ? operand_text(a, r->of[1], t2, sizeof t2) : "", why);
            }
        } else {
            uint64_t x = operand(a, r->of[0]), y = operand(a, r->of[1]);
            bool overflow = x && y > UINT64_MAX / x;
            if (overflow || v < x * y)
                return usage_error("case %s: %s %s is too small for %s x %s%s", c->name, fl, vs,
                                   operand_text(a, r->of[0], t1, sizeof t1), operand_text(a, r->of[1], t2, sizeof t2),
                                   why);
        }
    }
    return 0;
}

static uint64_t free_bytes(const char *d)
{
    struct statvfs s;
    return statvfs(d, &s) == 0 ? (uint64_t)s.f_bavail * s.f_frsize : UINT64_MAX;
}

int parse_case(int argc, char **argv, struct case_args *a)
{
    char fl[40], b1[32], b2[32], list[400];
    const char *known = "floor, expansion, cow, steady, open, stripes";
    if (argc < 1) {
        case_usage(stderr);
        return usage_error("case: which case? (known: %s)", known);
    }
    int c = -1;
    for (int i = 0; i < N_CASES; i++)
        if (!strcmp(argv[0], bench_cases[i].name))
            c = i;
    if (c < 0)
        return usage_error("unknown case '%s' (known: %s)", argv[0], known);
    a->c = (enum bcase)c;
    const char *cn = bench_cases[c].name;
    const char *val[N_PARAMS] = {0};
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *v = NULL;
        size_t l = strcspn(arg, "=");
        if (!strcmp(arg, "--check")) {
            a->check_only = true;
            continue;
        }
        const char **slot = NULL;
        const char *name = NULL;
        if (l == 5 && !strncmp(arg, "--dir", 5))
            slot = &a->dir, name = "--dir";
        else if (l == 6 && !strncmp(arg, "--keep", 6)) {
            if (!bench_cases[c].image)
                return usage_error("case %s: --keep does not apply to this case (it builds no image)", cn);
            slot = &a->keep, name = "--keep";
        }
        int p = 0;
        for (int k = 1; !slot && k < N_PARAMS; k++)
            if (strlen(param_flag((enum pid)k, fl, sizeof fl)) == l && !strncmp(arg, fl, l))
                p = k;
        if (!slot && !p) {
            case_usage(stderr);
            return usage_error("case %s: unknown option '%s'", cn, arg);
        }
        if (p && !case_takes(a->c, (enum pid)p)) {
            list[0] = 0;
            for (int k = 0; k < MAX_CASE_PARAMS && bench_cases[c].params[k].p; k++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s ",
                         param_flag(bench_cases[c].params[k].p, fl, sizeof fl));
            return usage_error("case %s: %s does not apply to this case (its options: %s--dir%s)", cn,
                               param_flag((enum pid)p, b1, sizeof b1), list, bench_cases[c].image ? " --keep" : "");
        }
        if (!name)
            name = param_flag((enum pid)p, b2, sizeof b2);
        if (arg[l] == '=')
            v = arg + l + 1;
        else if (i + 1 < argc)
            v = argv[++i];
        else
            return usage_error("case %s: %s needs a value", cn, name);
        if (slot ? *slot != NULL : val[p] != NULL)
            return usage_error("case %s: %s given twice", cn, name);
        if (slot)
            *slot = v;
        else
            val[p] = v;
    }
    /* every parameter of the case: given or its default, parsed by the same code */
    for (int k = 0; k < MAX_CASE_PARAMS && bench_cases[c].params[k].p; k++) {
        enum pid p = bench_cases[c].params[k].p;
        const char *v = val[p] ? val[p] : bench_cases[c].params[k].dflt;
        a->given[p] = val[p] != NULL;
        if (v) {
            int r = parse_value(a, p, v);
            if (r)
                return r;
        }
    }
    if (case_takes(a->c, P_VIRTUAL_SIZE) && !val[P_VIRTUAL_SIZE]) {
        /* just above the allocated part: map_cluster costs O(L1) */
        uint64_t cs = a->u[P_CLUSTER_SIZE];
        a->u[P_VIRTUAL_SIZE] = (a->u[P_CLUSTERS] * cs * 5 / 4 + cs - 1) / cs * cs;
    }
    /* runtime options: the runtime's own check, against the images this tool creates */
    char msg[400];
    if ((case_takes(a->c, P_PREALLOC) || case_takes(a->c, P_COW_UNIT)) &&
        pcow_runtime_opts_check(&a->rt, a->u[P_CLUSTER_SIZE], BENCH_SUBUNIT, NULL, msg, sizeof msg) < 0)
        return rt_usage_error(cn, msg);
    int r = check_rules(a);
    if (r)
        return r;

    a->dir = a->dir ? a->dir : "/dev/shm";
    struct stat st;
    if (stat(a->dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return usage_error("case %s: --dir %s: %s", cn, a->dir, stat(a->dir, &st) ? strerror(errno) : "not a directory");
    if (a->keep) {
        if (!*a->keep)
            return usage_error("case %s: --keep needs a path", cn);
        if (strlen(a->keep) > 500)
            return usage_error("case %s: --keep path is longer than 500 bytes", cn);
        if (lstat(a->keep, &st) == 0)
            return usage_error("case %s: --keep %s: already exists (remove it or choose another path)", cn, a->keep);
        char parent[600];
        snprintf(parent, sizeof parent, "%s", a->keep);
        char *sl = strrchr(parent, '/');
        if (sl)
            *(sl == parent ? sl + 1 : sl) = 0;
        else
            snprintf(parent, sizeof parent, ".");
        if (stat(parent, &st) != 0 || !S_ISDIR(st.st_mode))
            return usage_error("case %s: --keep %s: directory %s does not exist", cn, a->keep, parent);
        if (a->c == C_STEADY && a->u[P_BACKEND] == BE_RAW)
            return usage_error("case steady: --keep needs a pcow image (--backend pcow or both), not --backend raw");
    }
    if (a->check_only)
        return 0;

    /* Space the case needs in its directory (data only; metadata is small). */
    uint64_t need = 0, cs = a->u[P_CLUSTER_SIZE], n = a->u[P_CLUSTERS];
    switch (a->c) {
    case C_EXPANSION: need = (n + a->u[P_PREALLOC]) * cs; break;
    case C_COW: need = (2 * n + a->u[P_PREALLOC]) * cs; break;
    case C_STEADY: need = (a->u[P_BACKEND] == BE_BOTH ? 2 : 1) * a->u[P_SIZE]; break;
    case C_OPEN: need = n * cs; break;
    case C_STRIPES: need = a->u[P_SIZE]; break;
    default: break;
    }
    uint64_t have = free_bytes(a->dir);
    if (need > have)
        return usage_error("case %s: needs about %s in %s, which has %s free; lower the sizes or use another --dir", cn,
                           pcow_runtime_format_size(need, b1, sizeof b1), a->dir,
                           pcow_runtime_format_size(have, b2, sizeof b2));
    return 0;
}

/* One parameter's value as JSON (the params object of a case's output). */
void param_value_json(FILE *f, const struct case_args *a, enum pid p)
{
    const struct bparam *d = &bench_params[p];
    if (d->type == T_ENUM)
        fprintf(f, "\"%s\"", d->values[a->u[p]]);
    else if (d->type == T_SECONDS)
        fprintf(f, "%.3f", a->seconds);
    else
        fprintf(f, "%" PRIu64, a->u[p]);
}

static void jnum_or_null(FILE *f, double v, bool valid)
{
    if (valid)
        fprintf(f, "%.15g", v);
    else
        fputs("null", f);
}

/* A default as JSON: a number, an enum's string, a runtime option's word, or null (computed). */
static void default_json(FILE *f, enum bcase c, enum pid p, const char *dflt)
{
    const struct bparam *d = &bench_params[p];
    const struct pcow_runtime_option *o = rt_opt(p);
    if (!dflt) {
        fputs("null", f);
        return;
    }
    if (d->type == T_ENUM || (o && o->zero_word && !strcmp(dflt, o->zero_word))) {
        jstr(f, dflt);
        return;
    }
    struct case_args a = {.c = c};
    if (parse_value(&a, p, dflt) != 0)
        abort(); /* a default the table cannot parse: the --describe test catches it */
    if (d->type == T_SECONDS)
        fprintf(f, "%.15g", a.seconds);
    else
        fprintf(f, "%" PRIu64, a.u[p]);
}

static void param_json(FILE *f, enum bcase c, enum pid p, const char *dflt)
{
    const struct bparam *d = &bench_params[p];
    const struct pcow_runtime_option *o = rt_opt(p);
    static const char *const tn[] = {[T_SIZE] = "size", [T_COUNT] = "count", [T_SECONDS] = "seconds", [T_ENUM] = "enum"};
    char fl[40];
    fprintf(f, "{\"name\":\"%s\",\"flag\":\"%s\",\"type\":\"%s\"", d->name, param_flag(p, fl, sizeof fl), tn[d->type]);
    if (d->type == T_ENUM) {
        fputs(",\"values\":[", f);
        for (int i = 0; d->values[i]; i++)
            fprintf(f, "%s\"%s\"", i ? "," : "", d->values[i]);
        fputc(']', f);
    } else {
        double lo = o ? (double)o->min : d->min, hi = o ? (double)o->max : d->max;
        fputs(",\"min\":", f);
        jnum_or_null(f, lo, true);
        fputs(",\"max\":", f);
        jnum_or_null(f, hi, hi > 0);
        fprintf(f, ",\"pow2\":%s", (o ? (o->flags & PCOW_RT_OPT_POW2) != 0 : d->pow2) ? "true" : "false");
    }
    if (o) {
        fprintf(f, ",\"runtime\":\"%s\",\"zero\":", o->name);
        jstr(f, o->zero_means);
        fputs(",\"keyword\":", f);
        if (o->zero_word)
            jstr(f, o->zero_word);
        else
            fputs("null", f);
    }
    fputs(",\"default\":", f);
    default_json(f, c, p, dflt);
    fputs(",\"help\":", f);
    jstr(f, o ? o->help : d->help);
    fputc('}', f);
}

static void operand_json(FILE *f, struct operand o)
{
    if (o.p)
        fprintf(f, "\"%s\"", bench_params[o.p].name);
    else
        fprintf(f, "%" PRIu64, o.k);
}

static void rule_json(FILE *f, bool *first, const char *param, const char *kind, struct operand a, struct operand b,
                      const char *why)
{
    fprintf(f, "%s\n      {\"param\":\"%s\",\"kind\":\"%s\",\"of\":[", *first ? "" : ",", param, kind);
    operand_json(f, a);
    if (b.p || b.k) {
        fputc(',', f);
        operand_json(f, b);
    }
    fputs("],\"why\":", f);
    if (why)
        jstr(f, why);
    else
        fputs("null", f);
    fputc('}', f);
    *first = false;
}

int describe_json(FILE *f)
{
    size_t n;
    const struct pcow_runtime_option *t = pcow_runtime_options(&n);
    fputs("{\"tool\":\"pcow-bench\",\"schema\":1,\"mode\":\"describe\",\n \"runtime_options\":[", f);
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "%s\n  {\"name\":\"%s\",\"field\":\"%s\",\"type\":\"%s\",\"unit\":\"%s\",\"min\":%" PRIu64
                   ",\"max\":%" PRIu64 ",\"pow2\":%s,\"divides_cluster\":%s,\"subunit_multiple\":%s,\"page_multiple\":%s,"
                   "\"default\":0,\"zero\":",
                i ? "," : "", t[i].name, t[i].field, t[i].type == PCOW_RT_OPT_SIZE ? "size" : "count", t[i].unit,
                t[i].min, t[i].max, t[i].flags & PCOW_RT_OPT_POW2 ? "true" : "false",
                t[i].flags & PCOW_RT_OPT_DIVIDES_CLUSTER ? "true" : "false",
                t[i].flags & PCOW_RT_OPT_SUBUNIT ? "true" : "false", t[i].flags & PCOW_RT_OPT_PAGE ? "true" : "false");
        jstr(f, t[i].zero_means);
        fputs(",\"keyword\":", f);
        if (t[i].zero_word)
            jstr(f, t[i].zero_word);
        else
            fputs("null", f);
        fputs(",\"help\":", f);
        jstr(f, t[i].help);
        fputc('}', f);
    }
    fprintf(f, "],\n \"common\":[\n  {\"name\":\"dir\",\"flag\":\"--dir\",\"type\":\"path\",\"default\":\"/dev/shm\","
               "\"help\":\"where images and files go\"},\n"
               "  {\"name\":\"keep\",\"flag\":\"--keep\",\"type\":\"path\",\"default\":null,\"help\":\"build the image at "
               "this path and leave it there (cases with an image)\"},\n"
               "  {\"name\":\"check\",\"flag\":\"--check\",\"type\":\"flag\",\"default\":false,\"help\":\"validate, print "
               "the parameters with defaults filled in, measure nothing\"}],\n"
               " \"subunit\":%u,\n \"cases\":[",
            BENCH_SUBUNIT);
    for (int c = 0; c < N_CASES; c++) {
        const struct bcase_def *bc = &bench_cases[c];
        fprintf(f, "%s\n  {\"name\":\"%s\",\"image\":%s,\"help\":", c ? "," : "", bc->name, bc->image ? "true" : "false");
        jstr(f, bc->help);
        fputs(",\"params\":[", f);
        for (int i = 0; i < MAX_CASE_PARAMS && bc->params[i].p; i++) {
            fputs(i ? ",\n      " : "\n      ", f);
            param_json(f, (enum bcase)c, bc->params[i].p, bc->params[i].dflt);
        }
        fputs("],\n    \"rules\":[", f);
        bool first = true;
        /* the runtime options' rules against the image, as the runtime's check applies them */
        for (int i = 0; i < MAX_CASE_PARAMS && bc->params[i].p; i++) {
            enum pid p = bc->params[i].p;
            const struct pcow_runtime_option *o = rt_opt(p);
            if (o && (o->flags & PCOW_RT_OPT_DIVIDES_CLUSTER))
                rule_json(f, &first, bench_params[p].name, "divides", (struct operand){P_CLUSTER_SIZE, 0},
                          (struct operand){0, 0}, NULL);
            if (o && (o->flags & PCOW_RT_OPT_SUBUNIT))
                rule_json(f, &first, bench_params[p].name, "multiple_of", (struct operand){0, BENCH_SUBUNIT},
                          (struct operand){0, 0}, "the image's sub-unit");
        }
        for (int i = 0; i < MAX_CASE_RULES && bc->rules[i].p; i++) {
            const struct crule *r = &bc->rules[i];
            rule_json(f, &first, bench_params[r->p].name, r->kind == R_MULTIPLE_OF ? "multiple_of" : "at_least_product",
                      r->of[0], r->of[1], r->why);
        }
        fputs("]}", f);
    }
    fputs("]}\n", f);
    return ferror(f) ? -1 : 0;
}
