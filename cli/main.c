/* main.c - judgectl: the command line for people and scripts. */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0) {
        printf("usage: judgectl COMMAND [ARGS]\n");
        return argc < 2 ? 2 : 0;
    }
    fprintf(stderr, "judgectl: unknown command '%s'\n", argv[1]);
    return 2;
}
