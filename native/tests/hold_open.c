/* Test helper: open an image read-write (as a running VM would), print "ready PID", and keep it
 * open until stdin reaches EOF. Used by cli_test.sh to test the OFD lock. */
#include "pcow.h"
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: hold_open IMAGE\n");
        return 2;
    }
    pcow_image *img;
    char err[1024];
    if (pcow_open(argv[1], PCOW_OPEN_RDWR, &img, err, sizeof err) < 0) {
        fprintf(stderr, "hold_open: %s\n", err);
        return 1;
    }
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    while (getchar() != EOF) {
    }
    return pcow_close(img, NULL, 0) < 0;
}
