/* pcow-bench's case parameter table (options.c): what each case takes, defaults, ranges and
 * the rules between parameters, shared by the parser, the case runner and --describe. */
#ifndef PCOW_BENCH_OPTIONS_H
#define PCOW_BENCH_OPTIONS_H

#include "bench.h"

/* Parameters (0 is "none": zeroed table slots end a list). */
enum pid {
    P_NONE, P_CLUSTER_SIZE, P_PREALLOC, P_COW_UNIT, P_CLUSTERS, P_BACKEND, P_BS, P_RW, P_THREADS, P_SIZE, P_SECONDS,
    P_ROUNDS, P_STRIPES, P_VARIANT, P_FAULTS, P_VIRTUAL_SIZE, N_PARAMS
};
enum ptype { T_SIZE, T_COUNT, T_SECONDS, T_ENUM };
struct bparam {
    const char *name;    /* JSON/YAML key; the flag is "--" + name with '_' -> '-' */
    enum ptype type;
    const char *runtime; /* the runtime option it sets: type, range, rules and help come from its table */
    double min, max;     /* range; max 0 = no upper bound */
    bool pow2;
    const char *const *values; /* T_ENUM, NULL-terminated */
    const char *help;
};
extern const struct bparam bench_params[N_PARAMS];

enum bcase { C_FLOOR, C_EXPANSION, C_COW, C_STEADY, C_OPEN, C_STRIPES, N_CASES };
enum { BE_PCOW, BE_RAW, BE_BOTH };          /* values of P_BACKEND */
enum { V_COPY, V_MMAP, V_BOTH };            /* values of P_VARIANT */
/* An operand of a rule: a parameter (p != 0) or a constant k. */
struct operand {
    enum pid p;
    uint64_t k;
};
enum rkind { R_MULTIPLE_OF, R_AT_LEAST_PRODUCT };
struct crule {
    enum pid p;
    enum rkind kind;
    struct operand of[2]; /* multiple_of: of every operand; at_least_product: of[0] x of[1] */
    const char *why;
};
#define MAX_CASE_PARAMS 10
#define MAX_CASE_RULES 4
struct bcase_def {
    const char *name, *help;
    bool image; /* builds an image (takes --keep) */
    struct {
        enum pid p;
        const char *dflt; /* parsed like a user's value; NULL = computed */
    } params[MAX_CASE_PARAMS];
    struct crule rules[MAX_CASE_RULES];
};
extern const struct bcase_def bench_cases[N_CASES];

struct case_args {
    enum bcase c;
    uint64_t u[N_PARAMS]; /* sizes, counts, enum indexes */
    double seconds;
    bool given[N_PARAMS];
    struct pcow_runtime_opts rt; /* the runtime options given (prealloc, cow_unit) */
    const char *dir, *keep;
    bool check_only;
};

const char *param_flag(enum pid p, char *b, size_t n);
bool case_takes(enum bcase c, enum pid p);
void case_usage(FILE *f);
/* Parse and check `case NAME [options]` (argv[0] = NAME); 0, or 2 with the message printed. */
int parse_case(int argc, char **argv, struct case_args *a);
void param_value_json(FILE *f, const struct case_args *a, enum pid p);
int describe_json(FILE *f);

#endif
