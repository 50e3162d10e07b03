/*
 * pcow-bench: micro-benchmarks of the pcow runtime, JSON on stdout.
 *
 * Full suite (one JSON document, every benchmark, the targets the issue sets):
 *   pcow-bench [--json] [--only floor,expansion,cow,steady,open,stripes] [--dir DIR]
 *              [--disk-dir DIR] [--size BYTES[K|M|G]] [--threads N] [--quick]
 *
 * One case (one JSON object; what the harness drives, one matrix cell per call):
 *   pcow-bench case floor     [--variant copy|mmap|both] [--faults N]
 *   pcow-bench case expansion [--cluster-size 64K] [--prealloc N] [--clusters N]
 *   pcow-bench case cow       [--cluster-size 64K] [--prealloc N] [--cow-unit U|whole] [--clusters N]
 *   pcow-bench case steady    [--backend pcow|raw|both] [--rw randread|randwrite|read|write] [--bs 4K]
 *                             [--threads N] [--size 256M] [--seconds S] [--rounds 10] [--cluster-size 64K]
 *   pcow-bench case open      [--clusters N] [--cluster-size 4K] [--virtual-size SIZE]
 *   pcow-bench case stripes   [--stripes N] [--size 256M] [--threads N] [--seconds S] [--cluster-size 64K]
 *   every case: [--dir DIR] (where images go, default /dev/shm) [--check] (validate and print the
 *   parameters only); all but floor: [--keep PATH] (build the image at PATH and leave it there after
 *   unmap, for pcow-img info/check).
 *   pcow-bench case --describe: every case's parameters, defaults, ranges and rules as JSON
 *   (options.c is the one table; the harness validates experiment files against it).
 *
 *   floor      the bare userfaultfd round trip: an anonymous page registered MISSING, touched
 *              by this thread, served by a handler thread with UFFDIO_COPY; and the variant
 *              mmap(MAP_FIXED) of a file page + UFFDIO_WAKE. Per-fault latency seen by the
 *              faulting thread.
 *   expansion  first-touch write latency per cluster (pre-allocation on or off).
 *   cow        first write after a snapshot (COW unit vs the whole cluster).
 *   steady     throughput over a fully allocated image vs a raw file mmap of the same size, in
 *              the same run, interleaved.
 *   open       open + map time and VMA count for an image with N allocated clusters.
 *   stripes    sequential bandwidth of an image striped over N files.
 *
 * The latency cases (expansion, cow) also measure the floor in the same process, so the ratio
 * to the floor is a same-run ratio. Latencies are nanoseconds; throughput bytes/s.
 * Exit status: 0 when the JSON was printed (suite: targets may fail), 1 on a setup or
 * measurement error (message on stderr; the suite also lists it in "errors"), 2 on bad
 * arguments (message on stderr, nothing on stdout).
 */
#define _GNU_SOURCE
#include "bench.h"

#include <string.h>

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "case"))
        return case_main(argc - 1, argv + 1);
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        suite_usage();
        return 0;
    }
    return suite_main(argc, argv);
}
