/* `pcow-bench case NAME [options]`: one case, one JSON object on stdout (what the harness
 * drives, one matrix cell per call); `case NAME --check` validates and prints the parameters
 * only; `case --describe` prints the parameter table (options.c). */
#define _GNU_SOURCE
#include "options.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void ratio_json(FILE *f, const char *name, double num, double den)
{
    fprintf(f, ",\"%s\":", name);
    if (num > 0 && den > 0)
        fprintf(f, "%.4f", num / den);
    else
        fprintf(f, "null");
}

/* The params object: every parameter of the case as used (defaults filled in), the COW unit
 * as the bytes it copies, plus what the case derives. */
static void params_json(FILE *f, const struct case_args *a)
{
    const struct bcase_def *c = &bench_cases[a->c];
    fputs("\"params\":{", f);
    for (int i = 0; i < MAX_CASE_PARAMS && c->params[i].p; i++) {
        enum pid p = c->params[i].p;
        fprintf(f, "%s\"%s\":", i ? "," : "", bench_params[p].name);
        if (p == P_COW_UNIT)
            fprintf(f, "%" PRIu64, a->u[p] ? a->u[p] : a->u[P_CLUSTER_SIZE]);
        else
            param_value_json(f, a, p);
    }
    if (a->c == C_EXPANSION || a->c == C_COW)
        fprintf(f, ",\"pace_ns\":%llu", PACE_NS);
    if (a->c == C_STRIPES)
        fprintf(f, ",\"stripe_unit\":%" PRIu64, a->u[P_CLUSTER_SIZE] > 2 * MiB ? a->u[P_CLUSTER_SIZE] : (uint64_t)(2 * MiB));
    fputc('}', f);
}

static void throughput_json(FILE *f, const char *name, const double *v, int rounds, uint64_t bs)
{
    double *s = malloc(sizeof(double) * (size_t)rounds);
    double med = 0;
    if (s) {
        memcpy(s, v, sizeof(double) * (size_t)rounds);
        qsort(s, (size_t)rounds, sizeof(double), cmp_d);
        med = rounds % 2 ? s[rounds / 2] : (s[rounds / 2 - 1] + s[rounds / 2]) / 2;
        free(s);
    }
    fprintf(f, ",\"%s\":{\"bytes_per_s\":%.0f,\"ops_per_s\":%.0f,\"rounds_bytes_per_s\":[", name, med,
            med / (double)bs);
    for (int k = 0; k < rounds; k++)
        fprintf(f, "%s%.0f", k ? "," : "", v[k]);
    fprintf(f, "]}");
}

/* steady: rounds alternating measurements per backend; with both, the paired ratios. */
static int steady_case(FILE *f, const struct case_args *a, const char *img, char **rtjson, char *err, size_t errlen)
{
    bool be_pcow = a->u[P_BACKEND] != BE_RAW, be_raw = a->u[P_BACKEND] != BE_PCOW;
    int rounds = (int)a->u[P_ROUNDS];
    double secs = a->seconds / rounds;
    uint64_t bs = a->u[P_BS];
    char rawp[600];
    path_in(rawp, sizeof rawp, a->dir, "steady.raw");
    struct steady_env e;
    if (steady_setup(&e, be_pcow ? img : NULL, be_raw ? rawp : NULL, a->u[P_SIZE], a->u[P_CLUSTER_SIZE], err,
                     errlen) < 0)
        return -1;
    double *rr = calloc((size_t)rounds, sizeof(double)), *rp = calloc((size_t)rounds, sizeof(double));
    if (!rr || !rp) {
        free(rr), free(rp);
        snprintf(err, errlen, "out of memory");
        steady_teardown(&e, (char[ERRLEN]){0}, ERRLEN);
        return -1;
    }
    steady_rounds(&e, (enum rwkind)a->u[P_RW], bs, (int)a->u[P_THREADS], secs, rounds, rr, rp);
    fprintf(f, ",\"result\":{\"seconds_per_round\":%.3f", secs);
    if (be_raw)
        throughput_json(f, "raw", rr, rounds, bs);
    if (be_pcow)
        throughput_json(f, "pcow", rp, rounds, bs);
    if (be_raw && be_pcow) {
        struct ratio_stats rs;
        ratio_stats(rp, rr, rounds, &rs);
        /* pcow_over_raw: the median of the paired ratios, with its 95% CI (order statistics) */
        fprintf(f, ",\"pcow_over_raw\":%.4f,\"ratio_min\":%.4f,\"ratio_max\":%.4f,\"pcow_over_raw_gmean\":%.4f",
                rs.median, rs.min, rs.max, rs.gmean);
        if (!isnan(rs.ci95_lo))
            fprintf(f, ",\"pcow_over_raw_ci95\":[%.4f,%.4f]", rs.ci95_lo, rs.ci95_hi);
        fputs(",\"ratios\":[", f);
        for (int k = 0; k < rounds; k++)
            fprintf(f, "%s%.4f", k ? "," : "", rp[k] / rr[k]);
        fputc(']', f);
    }
    free(rr), free(rp);
    if (e.rt) {
        struct pcow_runtime_stats st;
        pcow_runtime_get_stats(e.rt, &st);
        fprintf(f, ",\"faults_after_map\":%" PRIu64 ",\"faults_during_runs\":%" PRIu64 ",\"vmas_in_range\":%ld",
                e.faults_after_map, st.faults - e.faults_after_map, vmas_in(e.pm, pcow_runtime_length(e.rt)));
        *rtjson = runtime_json(e.rt);
    }
    fputc('}', f);
    return steady_teardown(&e, err, errlen);
}

/* Measure one case and print its JSON object; 0, or 1 with the message on stderr. */
static int run_case(struct case_args *a)
{
    char err[ERRLEN] = "", img[600];
    if (a->keep)
        snprintf(img, sizeof img, "%s", a->keep);
    else
        path_in(img, sizeof img, a->dir, "case.img");
    const char *cn = bench_cases[a->c].name;
    char *buf = NULL;
    size_t blen = 0;
    FILE *f = open_memstream(&buf, &blen);
    if (!f) {
        fprintf(stderr, "pcow-bench: case %s: out of memory\n", cn);
        return 1;
    }
    int r = 0;
    char *rtjson = NULL;
    bool made_image = bench_cases[a->c].image && !(a->c == C_STEADY && a->u[P_BACKEND] == BE_RAW);
    fprintf(f, "{\"tool\":\"pcow-bench\",\"schema\":1,\"mode\":\"case\",\"case\":\"%s\",\"host\":", cn);
    host_json(f, a->dir);
    fputc(',', f);
    params_json(f, a);
    uint64_t cs = a->u[P_CLUSTER_SIZE];
    switch (a->c) {
    case C_FLOOR: {
        struct floor_result fr;
        uint64_t v = a->u[P_VARIANT];
        r = measure_floor(a->dir, (int)a->u[P_FAULTS], v != V_MMAP, v != V_COPY, &fr, err, sizeof err);
        fprintf(f, ",\"result\":");
        floor_json(f, &fr);
        break;
    }
    case C_EXPANSION:
    case C_COW: {
        struct touch_params p = {.csize = cs, .clusters = a->u[P_CLUSTERS], .rt = a->rt};
        /* the floor first, in this process: the ratio to it is a same-run ratio */
        struct floor_result fr;
        r = measure_floor(a->dir, CASE_FLOOR_FAULTS, true, true, &fr, err, sizeof err);
        fprintf(f, ",\"floor\":");
        floor_json(f, &fr);
        if (r < 0)
            break;
        struct touch_result tr = {0};
        r = a->c == C_EXPANSION ? run_expansion(img, &p, &tr, err, sizeof err) : run_cow(img, &p, &tr, err, sizeof err);
        rtjson = tr.runtime_json;
        if (r < 0)
            break;
        fprintf(f, ",\"result\":{\"touch\":");
        hist_obj(f, &tr.touch);
        ratio_json(f, "p50_over_floor", (double)tr.touch.p50_ns, (double)fr.copy.p50_ns);
        ratio_json(f, "p50_over_floor_mmap", (double)tr.touch.p50_ns, (double)fr.mmap.p50_ns);
        fprintf(f, ",\"vmas_in_range\":%ld}", tr.vmas_in_range);
        break;
    }
    case C_STEADY:
        r = steady_case(f, a, img, &rtjson, err, sizeof err);
        break;
    case C_OPEN: {
        struct open_result o = {0};
        r = run_open(img, a->u[P_VIRTUAL_SIZE], (uint32_t)cs, a->u[P_CLUSTERS], &o, err, sizeof err);
        rtjson = o.runtime_json;
        if (r < 0)
            break;
        fprintf(f, ",\"result\":{\"build_s\":%.3f,\"open_s\":%.6f,\"map_s\":%.6f,\"open_map_s\":%.6f,\"vmas_in_range\":%ld}",
                o.build_s, o.open_s, o.map_s, o.open_map_s, o.vmas_in_range);
        break;
    }
    case C_STRIPES: {
        struct stripes_result o = {0};
        r = run_stripes(img, a->u[P_SIZE], (uint32_t)cs, (uint32_t)a->u[P_STRIPES], (int)a->u[P_THREADS], a->seconds,
                        &o, err, sizeof err);
        rtjson = o.runtime_json;
        if (r < 0)
            break;
        fprintf(f,
                ",\"result\":{\"first_touch_s\":%.3f,\"seqwrite_bytes_per_s\":%.0f,\"seqread_bytes_per_s\":%.0f,"
                "\"vmas_in_range\":%ld}",
                o.first_touch_s, o.seqwrite, o.seqread, o.vmas_in_range);
        break;
    }
    default:
        break;
    }
    if (rtjson) {
        fprintf(f, ",\"runtime\":%s", rtjson);
        free(rtjson);
    }
    fprintf(f, ",\"image\":");
    if (a->keep && made_image)
        jstr(f, img);
    else
        fprintf(f, "null");
    fprintf(f, "}\n");
    fclose(f);
    if (made_image && (!a->keep || r < 0))
        rm_image(img);
    if (r < 0) {
        fprintf(stderr, "pcow-bench: case %s: %s\n", cn, err[0] ? err : "failed");
        free(buf);
        return 1;
    }
    fwrite(buf, 1, blen, stdout);
    free(buf);
    return fflush(stdout) == 0 ? 0 : 1;
}

int case_main(int argc, char **argv)
{
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        case_usage(stdout);
        return 0;
    }
    if (argc >= 2 && !strcmp(argv[1], "--describe")) {
        if (argc > 2)
            return usage_error("case --describe takes no other arguments");
        return describe_json(stdout) == 0 && fflush(stdout) == 0 ? 0 : 1;
    }
    struct case_args a;
    memset(&a, 0, sizeof a);
    int r = parse_case(argc - 1, argv + 1, &a);
    if (r)
        return r;
    if (a.check_only) {
        printf("{\"tool\":\"pcow-bench\",\"schema\":1,\"mode\":\"check\",\"case\":\"%s\",", bench_cases[a.c].name);
        params_json(stdout, &a);
        printf("}\n");
        return fflush(stdout) == 0 ? 0 : 1;
    }
    return run_case(&a);
}
