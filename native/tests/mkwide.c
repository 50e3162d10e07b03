/* Test helper: mkwide OUT VSIZE CLUSTER LAYERS builds an image with LAYERS layers whose L1
 * tables are holes (see wide.h): declared table sizes huge, stored data tiny. */
#define _GNU_SOURCE
#include "wide.h"
#include <inttypes.h>

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: mkwide OUT VSIZE CLUSTER LAYERS\n");
        return 2;
    }
    uint64_t fs;
    if (make_wide(argv[1], strtoull(argv[2], NULL, 0), strtoull(argv[3], NULL, 0), (uint32_t)strtoul(argv[4], NULL, 0), &fs) < 0)
        return 1;
    printf("%s: %s layers, file %" PRIu64 " bytes (sparse)\n", argv[1], argv[4], fs);
    return 0;
}
