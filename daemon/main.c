/* main.c - judged, the daemon. */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0) {
        printf("usage: judged -c judged.yaml\n");
        return argc < 2 ? 2 : 0;
    }
    return 2;
}
