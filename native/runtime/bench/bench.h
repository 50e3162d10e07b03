/* pcow-bench: what its parts share. cases.c measures (floor, expansion, cow, steady, open,
 * stripes); options.c is the case parameter table (parse, check, --describe); case_mode.c runs
 * one case; suite.c runs the fixed suite with its targets; main.c picks the mode. */
#ifndef PCOW_BENCH_H
#define PCOW_BENCH_H

#include "pcow_runtime.h"
#include "internal.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define KiB 1024ull
#define MiB (1024ull * KiB)
#define GiB (1024ull * MiB)
#define ERRLEN 1100

/* A first touch is preceded by this much busy time: a guest does work between first touches,
 * and it lets the pre-allocation thread keep up. */
#define PACE_NS 100000ull
/* Faults of the floor measured next to a latency case. */
#define CASE_FLOOR_FAULTS 2000
/* The sub-unit of the images pcow-bench creates (the format's default at every cluster size). */
#define BENCH_SUBUNIT 4096u

/* ---- JSON and file helpers (cases.c) ---- */
void jstr(FILE *f, const char *s);
void hist_obj(FILE *f, const struct pcow_runtime_hist *s);
void path_in(char *o, size_t n, const char *d, const char *name);
void rm_image(const char *p);
long vmas_in(const void *a, uint64_t len);
char *runtime_json(pcow_runtime *rt);
const char *fs_name(const char *d);
void host_json(FILE *f, const char *d);
int cmp_d(const void *x, const void *y);
int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- floor: the bare userfaultfd round trip ---- */
struct floor_result {
    int faults;
    bool have_copy, have_mmap;
    struct pcow_runtime_hist copy, mmap;
};
int floor_run(const char *tmpdir, bool use_mmap, bool paced, int n, struct rt_hist *h, char *err, size_t errlen);
int measure_floor(const char *tmpdir, int n, bool want_copy, bool want_mmap, struct floor_result *o, char *err,
                  size_t errlen);
void floor_json(FILE *f, const struct floor_result *fr);

/* ---- first-touch latency: expansion and cow ---- */
struct touch_params {
    uint64_t csize, clusters;
    struct pcow_runtime_opts rt; /* the runtime options the image is mapped with */
};
struct touch_result {
    struct pcow_runtime_hist touch; /* seen by the faulting thread, end to end */
    long vmas_in_range;
    struct pcow_runtime_stats st;
    char *runtime_json;
};
int run_expansion(const char *img, const struct touch_params *p, struct touch_result *r, char *err, size_t errlen);
int run_cow(const char *img, const struct touch_params *p, struct touch_result *r, char *err, size_t errlen);

/* ---- steady: throughput over a fully allocated image vs a raw file mmap ---- */
enum rwkind { RW_RANDREAD, RW_RANDWRITE, RW_READ, RW_WRITE };
extern const char *const rw_names[4];
struct steady_env {
    uint64_t size, csize;
    pcow_runtime *rt;
    uint8_t *pm, *raw;
    int rfd;
    char rawpath[512];
    uint64_t faults_after_map;
};
int steady_setup(struct steady_env *e, const char *img, const char *rawpath, uint64_t size, uint64_t csize,
                 char *err, size_t errlen);
void steady_rounds(const struct steady_env *e, enum rwkind w, uint64_t bs, int threads, double secs, int rounds,
                   double *r_raw, double *r_pcow);
int steady_teardown(struct steady_env *e, char *err, size_t errlen);
double run_wl(uint8_t *m, uint64_t size, enum rwkind w, uint64_t bs, int n, double secs);
/* Paired ratios pcow/raw of n rounds: median and its distribution-free 95% confidence interval
 * (order statistics; NaN when n < 6), geometric mean, extremes. */
struct ratio_stats {
    int n;
    double median, gmean, ci95_lo, ci95_hi, min, max;
};
void ratio_stats(const double *pcow, const double *raw, int n, struct ratio_stats *o);

/* ---- open ---- */
struct open_result {
    double build_s, open_s, map_s, open_map_s;
    long vmas_in_range;
    struct pcow_runtime_stats st;
    char *runtime_json;
};
int run_open(const char *img, uint64_t vsize, uint32_t cs, uint64_t n, struct open_result *o, char *err,
             size_t errlen);

/* ---- stripes ---- */
struct stripes_result {
    uint64_t stripe_unit;
    double first_touch_s, seqwrite, seqread;
    long vmas_in_range;
    struct pcow_runtime_stats st;
    char *runtime_json;
};
int run_stripes(const char *img, uint64_t size, uint32_t cs, uint32_t k, int threads, double secs,
                struct stripes_result *o, char *err, size_t errlen);

/* ---- modes ---- */
int case_main(int argc, char **argv); /* argv[0] = "case" */
int suite_main(int argc, char **argv);
int suite_usage(void);

#endif
