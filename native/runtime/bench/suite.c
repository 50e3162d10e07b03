/* pcow-bench's suite: every benchmark with fixed parameter sets, one JSON document, and the
 * targets issue 8 sets (each a same-run ratio):
 *   expansion p50 with pre-allocation on / floor.uffdio_copy <= 2 at 64K, 256K, 1M and 2M clusters,
 *   on a burst of first touches as deep as the pool (see bench_expansion);
 *   4 KiB COW p50 / floor.mmap_fixed_wake <= 1.3 (the honest floor of a COW under the design);
 *   steady pcow/raw >= 0.98 (median of paired rounds, with its 95% confidence interval).
 * The measurements are cases.c's, as in case mode. */
#define _GNU_SOURCE
#include "bench.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

static const char *dir = "/dev/shm";
static const char *disk_dir = "/var/tmp";
static uint64_t steady_size = 256 * MiB;
static int nthreads = 2;
static bool quick;
static FILE *out;
static char errs[8][512];
static int nerrs;
static bool first_section = true;

static void note_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char b[512];
    vsnprintf(b, sizeof b, fmt, ap);
    va_end(ap);
    fprintf(stderr, "pcow-bench: %s\n", b);
    if (nerrs < 8)
        snprintf(errs[nerrs++], sizeof errs[0], "%s", b);
}

static void section(const char *name)
{
    fprintf(out, "%s\n  \"%s\": ", first_section ? "" : ",", name);
    first_section = false;
}

static double floor_p50, floor_mmap_p50;
static void bench_floor(void)
{
    char err[ERRLEN];
    struct floor_result fr;
    if (measure_floor(dir, quick ? 2000 : 20000, true, true, &fr, err, sizeof err) < 0)
        note_error("%s", err);
    /* For reference: the same UFFDIO_COPY round trip with faults back to back (the handler
     * never sleeps); the targets compare against the paced floor, the regime of the touches. */
    struct rt_hist *hb = malloc(sizeof *hb);
    struct pcow_runtime_hist b2b = {0};
    if (hb) {
        rt_hist_init(hb);
        if (floor_run(dir, false, false, quick ? 2000 : 20000, hb, err, sizeof err) < 0)
            note_error("%s", err);
        rt_hist_summary(hb, &b2b);
        free(hb);
    }
    section("floor");
    fprintf(out, "{\"faults\":%d,\"pace_ns\":%llu,\"uffdio_copy\":", fr.faults, PACE_NS);
    hist_obj(out, &fr.copy);
    fprintf(out, ",\"mmap_fixed_wake\":");
    hist_obj(out, &fr.mmap);
    fprintf(out, ",\"uffdio_copy_back_to_back\":");
    hist_obj(out, &b2b);
    fputc('}', out);
    floor_p50 = (double)fr.copy.p50_ns;
    floor_mmap_p50 = (double)fr.mmap.p50_ns;
}

/* Expansion at every cluster size the target names, three cells each:
 *   burst     pre-allocation on, EXP_DEPTH first touches: the burst the pool is sized for
 *             (it is full when the touches start). The target is on this cell.
 *   on / off  a sustained stream of first touches (100 us apart) with pre-allocation on and off.
 * No pool depth hides a stream that asks for space faster than the file system allocates it:
 * at 2 MiB clusters one touch per 100 us asks 20 GB/s, and allocating (zeroing) 2 MiB of tmpfs
 * costs ~1 ms here, so the sustained on-cells at 1-2 MiB show the allocation bandwidth, not the
 * pool (their pool_hits/pool_misses say so). */
#define EXP_DEPTH 64
static const struct {
    const char *id;
    uint64_t csize, clusters, quick_clusters;
} exp_sizes[] = {{"64k", 64 * KiB, 2000, 300}, {"256k", 256 * KiB, 1000, 200}, {"1m", MiB, 400, 64},
                 {"2m", 2 * MiB, 256, 32}};
#define N_EXP_SIZES (sizeof exp_sizes / sizeof exp_sizes[0])
static double exp_burst_p50[N_EXP_SIZES], exp_on_p50[N_EXP_SIZES], exp_off_p50[N_EXP_SIZES];
static void bench_expansion(void)
{
    section("expansion");
    fprintf(out, "{\"pace_ns\":%llu,\"prealloc_depth\":%d,\"cells\":[", PACE_NS, EXP_DEPTH);
    static const char *const kinds[] = {"burst", "prealloc_on", "prealloc_off"};
    for (size_t k = 0; k < N_EXP_SIZES; k++) {
        const uint64_t cs = exp_sizes[k].csize, n = quick ? exp_sizes[k].quick_clusters : exp_sizes[k].clusters;
        fprintf(out, "%s{\"cluster_size\":%" PRIu64 ",\"clusters\":%" PRIu64 ",\"burst_clusters\":%d", k ? "," : "", cs,
                n, EXP_DEPTH);
        for (int kind = 0; kind < 3; kind++) {
            char p[512], err[ERRLEN];
            path_in(p, sizeof p, dir, "exp.img");
            struct touch_params tp = {.csize = cs,
                                      .clusters = kind == 0 ? EXP_DEPTH : n,
                                      .rt = {.prealloc_depth = kind == 2 ? 0 : EXP_DEPTH}};
            struct touch_result tr = {0};
            int r = run_expansion(p, &tp, &tr, err, sizeof err);
            rm_image(p);
            if (r < 0) {
                free(tr.runtime_json);
                note_error("expansion: %s", err);
                break;
            }
            fprintf(out, ",\"%s\":{\"touch\":", kinds[kind]);
            hist_obj(out, &tr.touch);
            fprintf(out, ",\"runtime\":%s}", tr.runtime_json ? tr.runtime_json : "null");
            free(tr.runtime_json);
            (kind == 0 ? exp_burst_p50 : kind == 1 ? exp_on_p50 : exp_off_p50)[k] = (double)tr.touch.p50_ns;
        }
        fputc('}', out);
    }
    fputs("]}", out);
}

static double cow4k_p50, cow64k_p50, cow2m_small_p50, cow2m_whole_p50;
static void cow_suite_case(uint64_t cs, uint32_t unit, uint64_t n, double *p50)
{
    char p[512], err[ERRLEN];
    path_in(p, sizeof p, dir, "cow.img");
    struct touch_params tp = {.csize = cs, .clusters = n, .rt = {.prealloc_depth = 32, .cow_unit = unit}};
    struct touch_result tr = {0};
    int r = run_cow(p, &tp, &tr, err, sizeof err);
    rm_image(p);
    if (r < 0) {
        free(tr.runtime_json);
        note_error("cow: %s", err);
        fprintf(out, "null");
        return;
    }
    fprintf(out, "{\"cluster_size\":%" PRIu64 ",\"cow_unit\":%u,\"clusters\":%" PRIu64 ",\"touch\":", cs,
            unit ? unit : (uint32_t)cs, n);
    hist_obj(out, &tr.touch);
    fprintf(out, ",\"runtime\":%s}", tr.runtime_json ? tr.runtime_json : "null");
    free(tr.runtime_json);
    *p50 = (double)tr.touch.p50_ns;
}

static void bench_cow(void)
{
    section("cow");
    fprintf(out, "{\"c64k_unit4k\":");
    cow_suite_case(64 * KiB, 4096, quick ? 300 : 1500, &cow4k_p50);
    fprintf(out, ",\"c64k_whole\":");
    cow_suite_case(64 * KiB, 0, quick ? 300 : 1500, &cow64k_p50);
    fprintf(out, ",\"c2m_unit4k\":");
    cow_suite_case(2 * MiB, 4096, quick ? 24 : 96, &cow2m_small_p50);
    fprintf(out, ",\"c2m_whole\":");
    cow_suite_case(2 * MiB, 0, quick ? 24 : 96, &cow2m_whole_p50);
    fputc('}', out);
}

/* The suite's four workloads. */
static const struct {
    const char *name;
    enum rwkind rw;
    uint64_t bs;
} wls[] = {{"randread4k", RW_RANDREAD, 4096}, {"randwrite4k", RW_RANDWRITE, 4096}, {"seqread1m", RW_READ, MiB},
           {"seqwrite1m", RW_WRITE, MiB}};

static double steady_min_ratio = 1e9, steady_median_ratio;
static void bench_steady(void)
{
    char p[512], rp[512], err[ERRLEN];
    path_in(p, sizeof p, dir, "steady.img");
    path_in(rp, sizeof rp, dir, "steady.raw");
    const uint64_t cs = 64 * KiB, size = steady_size;
    struct steady_env e;
    if (steady_setup(&e, p, rp, size, cs, err, sizeof err) < 0) {
        note_error("steady: %s", err);
        rm_image(p);
        return;
    }
    /* many short alternating rounds: the CI of the paired ratios' median narrows with sqrt(rounds) */
    double secs = quick ? 0.05 : 0.1;
    int reps = quick ? 6 : 20;
    section("steady");
    fprintf(out, "{\"size\":%" PRIu64 ",\"cluster_size\":%" PRIu64 ",\"seconds_per_sample\":%.2f,\"repetitions\":%d,"
                 "\"faults_after_map\":%" PRIu64 ",\"cells\":[",
            size, cs, secs, reps, e.faults_after_map);
    int thr[2] = {1, nthreads};
    double ratios[16];
    int nr = 0;
    for (int ti = 0; ti < 2; ti++) {
        if (ti == 1 && nthreads == 1)
            break;
        for (int w = 0; w < 4; w++) {
            double r_raw[20], r_pcow[20];
            steady_rounds(&e, wls[w].rw, wls[w].bs, thr[ti], secs, reps, r_raw, r_pcow);
            struct ratio_stats rs;
            ratio_stats(r_pcow, r_raw, reps, &rs);
            qsort(r_raw, (size_t)reps, sizeof(double), cmp_d);
            qsort(r_pcow, (size_t)reps, sizeof(double), cmp_d);
            ratios[nr++] = rs.median;
            if (rs.median < steady_min_ratio)
                steady_min_ratio = rs.median;
            fprintf(out,
                    "%s{\"workload\":\"%s\",\"threads\":%d,\"raw_bytes_per_s\":%.0f,\"pcow_bytes_per_s\":%.0f,"
                    "\"ratio\":%.4f,\"ratio_min\":%.4f,\"ratio_max\":%.4f,\"ratio_gmean\":%.4f,\"ratio_ci95\":[%.4f,%.4f]}",
                    (ti || w) ? "," : "", wls[w].name, thr[ti], r_raw[reps / 2], r_pcow[reps / 2], rs.median, rs.min,
                    rs.max, rs.gmean, rs.ci95_lo, rs.ci95_hi);
        }
    }
    qsort(ratios, (size_t)nr, sizeof(double), cmp_d);
    steady_median_ratio = ratios[nr / 2];
    struct pcow_runtime_stats st;
    pcow_runtime_get_stats(e.rt, &st);
    fprintf(out, "],\"faults_during_runs\":%" PRIu64 ",\"vmas_process\":%" PRIu64 "}", st.faults - e.faults_after_map,
            st.vmas);
    if (steady_teardown(&e, err, sizeof err) < 0)
        note_error("steady: %s", err);
    rm_image(p);
}

static double open_1e6_s = -1;
static long seq8g_vmas = -1;
static void open_suite_case(const char *label, uint64_t vsize, uint32_t cs, uint64_t n)
{
    char p[512], err[ERRLEN];
    path_in(p, sizeof p, disk_dir, "open.img");
    static bool firstc = true;
    fprintf(out, "%s{\"case\":\"%s\",\"cluster_size\":%u,\"virtual_size\":%" PRIu64 ",\"clusters\":%" PRIu64,
            firstc ? "" : ",", label, cs, vsize, n);
    firstc = false;
    struct open_result o = {0};
    int r = run_open(p, vsize, cs, n, &o, err, sizeof err);
    rm_image(p);
    free(o.runtime_json);
    if (r < 0) {
        note_error("open: %s", err);
        fprintf(out, ",\"error\":");
        jstr(out, err);
        fputc('}', out);
        return;
    }
    fprintf(out, ",\"build_s\":%.2f,\"open_s\":%.4f,\"map_s\":%.4f,\"open_map_s\":%.4f,\"vmas_in_range\":%ld}",
            o.build_s, o.open_s, o.map_s, o.open_map_s, o.vmas_in_range);
    if (n == 1000000)
        open_1e6_s = o.open_map_s;
    if (!strcmp(label, "sequential_8g"))
        seq8g_vmas = o.vmas_in_range;
}

static void bench_open(void)
{
    section("open");
    fprintf(out, "{\"dir\":");
    jstr(out, disk_dir);
    fprintf(out, ",\"cases\":[");
    /* virtual size just above the allocated part: libpcow's map_cluster costs O(L1 size) */
    open_suite_case("1e4", 10000ull * 4096 * 5 / 4, 4096, 10000);
    open_suite_case("1e5", 100000ull * 4096 * 5 / 4, 4096, 100000);
    if (!quick)
        open_suite_case("1e6", 1000000ull * 4096 * 5 / 4, 4096, 1000000);
    open_suite_case("sequential_8g", 8 * GiB, 64 * 1024, quick ? 16384 : 131072);
    fprintf(out, "]}");
}

static void bench_stripes(void)
{
    section("stripes");
    const uint64_t size = quick ? 64 * MiB : 256 * MiB;
    fprintf(out, "{\"size\":%" PRIu64 ",\"threads\":%d,\"cluster_size\":65536,\"stripe_unit\":2097152,\"cells\":[", size,
            nthreads);
    for (uint32_t k = 1; k <= 4; k++) {
        char p[512], err[ERRLEN];
        path_in(p, sizeof p, dir, "stripe.img");
        struct stripes_result o = {0};
        int r = run_stripes(p, size, 64 * 1024, k, nthreads, quick ? 0.2 : 0.5, &o, err, sizeof err);
        rm_image(p);
        free(o.runtime_json);
        if (r < 0) {
            note_error("stripes: %s", err);
            break;
        }
        fprintf(out,
                "%s{\"stripes\":%u,\"first_touch_s\":%.3f,\"seqwrite_bytes_per_s\":%.0f,\"seqread_bytes_per_s\":%.0f,"
                "\"vmas_in_range\":%ld}",
                k > 1 ? "," : "", k, o.first_touch_s, o.seqwrite, o.seqread, o.vmas_in_range);
    }
    fprintf(out, "]}");
}

static void target(bool *firstt, const char *id, double value, const char *op, double limit, bool valid)
{
    fprintf(out, "%s{\"id\":\"%s\",\"value\":", *firstt ? "" : ",", id);
    if (valid && isfinite(value))
        fprintf(out, "%.4f", value);
    else
        fprintf(out, "null");
    bool pass = valid && isfinite(value) && (!strcmp(op, "<=") ? value <= limit : !strcmp(op, ">=") ? value >= limit : value < limit);
    fprintf(out, ",\"op\":\"%s\",\"limit\":%.4f,\"pass\":%s}", op, limit, valid ? (pass ? "true" : "false") : "null");
    *firstt = false;
}

int suite_usage(void)
{
    fprintf(stderr,
            "usage: pcow-bench [--json] [--quick] [--only floor,expansion,cow,steady,open,stripes] [--dir DIR]\n"
            "                  [--disk-dir DIR] [--size BYTES[K|M|G]] [--threads N]\n"
            "       pcow-bench case NAME [options]   (one case, one JSON object; pcow-bench case --help)\n");
    return 2;
}

static const char *const suite_names[] = {"floor", "expansion", "cow", "steady", "open", "stripes"};

int suite_main(int argc, char **argv)
{
    const char *only = "floor,expansion,cow,steady,open,stripes";
    long np = sysconf(_SC_NPROCESSORS_ONLN);
    nthreads = np > 0 ? (int)np : 2;
    for (int i = 1; i < argc; i++) {
        uint64_t v;
        if (!strcmp(argv[i], "--json"))
            continue;
        else if (!strcmp(argv[i], "--quick"))
            quick = true;
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only = argv[++i];
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--disk-dir") && i + 1 < argc)
            disk_dir = argv[++i];
        else if (!strcmp(argv[i], "--size") && i + 1 < argc) {
            if (pcow_runtime_parse_size(argv[++i], &v) < 0)
                return usage_error("--size '%s' is not a size (use e.g. 256M)", argv[i]);
            steady_size = v & ~(MiB - 1);
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            char *e;
            long t = strtol(argv[++i], &e, 10);
            if (*e || e == argv[i] || t < 1 || t > 64)
                return usage_error("--threads '%s' must be a whole number from 1 to 64", argv[i]);
            nthreads = (int)t;
        } else
            return suite_usage();
    }
    if (steady_size < 16 * MiB)
        return usage_error("--size must be at least 16M");
    for (const char *s = only; *s;) {
        size_t l = strcspn(s, ",");
        bool ok = false;
        for (size_t i = 0; i < sizeof suite_names / sizeof suite_names[0]; i++)
            ok |= strlen(suite_names[i]) == l && !strncmp(s, suite_names[i], l);
        if (!ok)
            return usage_error("unknown benchmark '%.*s' in --only (known: floor,expansion,cow,steady,open,stripes)",
                               (int)l, s);
        s += l + (s[l] == ',');
    }
#define WANT(x) (strstr(only, x) != NULL)
    out = stdout;
    struct utsname u;
    uname(&u);
    fprintf(out, "{\n  \"tool\": \"pcow-bench\",\n  \"schema\": 1,\n  \"host\": {\"kernel\":");
    jstr(out, u.release);
    fprintf(out, ",\"cpus\":%ld,\"dir\":", np);
    jstr(out, dir);
    fprintf(out, ",\"dir_fs\":\"%s\",\"threads\":%d,\"quick\":%s}", fs_name(dir), nthreads, quick ? "true" : "false");
    first_section = false;
    if (WANT("floor") || WANT("expansion") || WANT("cow"))
        bench_floor(); /* the other latencies are compared with it */
    if (WANT("expansion"))
        bench_expansion();
    if (WANT("cow"))
        bench_cow();
    if (WANT("steady"))
        bench_steady();
    if (WANT("open"))
        bench_open();
    if (WANT("stripes"))
        bench_stripes();
    section("targets");
    fputc('[', out);
    bool ft = true;
    if (WANT("steady")) {
        target(&ft, "steady_pcow_over_raw_min", steady_min_ratio, ">=", 0.98, steady_min_ratio < 1e8);
        target(&ft, "steady_pcow_over_raw_median", steady_median_ratio, ">=", 0.98, steady_min_ratio < 1e8);
    }
    if (WANT("expansion")) {
        char id[80];
        for (size_t k = 0; k < N_EXP_SIZES; k++) {
            snprintf(id, sizeof id, "expansion_p50_prealloc_burst_over_floor_%s", exp_sizes[k].id);
            target(&ft, id, exp_burst_p50[k] / floor_p50, "<=", 2.0, floor_p50 > 0 && exp_burst_p50[k] > 0);
        }
        target(&ft, "expansion_p50_prealloc_on_over_off_64k", exp_on_p50[0] / exp_off_p50[0], "<", 1.0,
               exp_off_p50[0] > 0 && exp_on_p50[0] > 0);
    }
    if (WANT("cow")) {
        target(&ft, "cow4k_p50_over_floor_mmap", cow4k_p50 / floor_mmap_p50, "<=", 1.3, floor_mmap_p50 > 0 && cow4k_p50 > 0);
        target(&ft, "cow4k_p50_over_floor", cow4k_p50 / floor_p50, "<=", 2.0, floor_p50 > 0 && cow4k_p50 > 0);
        target(&ft, "cow_whole_over_4k_64k_clusters", cow64k_p50 / cow4k_p50, ">=", 3.0, cow4k_p50 > 0 && cow64k_p50 > 0);
        target(&ft, "cow_whole_over_4k_2m_clusters", cow2m_whole_p50 / cow2m_small_p50, ">=", 3.0,
               cow2m_small_p50 > 0 && cow2m_whole_p50 > 0);
    }
    if (WANT("open")) {
        target(&ft, "seq8g_vmas", (double)seq8g_vmas, "<=", 64, seq8g_vmas >= 0 && !quick);
        target(&ft, "open_map_1e6_clusters_s", open_1e6_s, "<=", 1.0, open_1e6_s >= 0);
    }
    fputc(']', out);
    section("errors");
    fputc('[', out);
    for (int i = 0; i < nerrs; i++) {
        if (i)
            fputc(',', out);
        jstr(out, errs[i]);
    }
    fprintf(out, "]\n}\n");
    return nerrs ? 1 : 0;
#undef WANT
}

