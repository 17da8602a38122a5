/* replay_main.c - runs a libFuzzer target over corpus files without libFuzzer, so CI can replay
 * every corpus under the normal compiler and sanitizers. Usage: replay_NAME FILE|DIR... */
#include "common/util.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_one(const char *path, size_t *n_done)
{
    char errstr[ERRSTR_LEN];
    struct file_map m;
    if (file_map_open(path, &m, errstr, sizeof(errstr)) != 0) {
        fprintf(stderr, "%s\n", errstr);
        return -1;
    }
    /* Copy into an exact-size heap buffer so ASan sees reads past the end. */
    uint8_t *copy = malloc(m.size ? m.size : 1);
    if (m.size) {
        memcpy(copy, m.data, m.size);
    }
    LLVMFuzzerTestOneInput(copy, m.size);
    free(copy);
    file_map_close(&m);
    (*n_done)++;
    return 0;
}

int main(int argc, char **argv)
{
    size_t n_done = 0;
    int bad = 0;
    for (int i = 1; i < argc; i++) {
        if (!path_is_dir(argv[i])) {
            bad |= replay_one(argv[i], &n_done) != 0;
            continue;
        }
        struct dirent **names;
        int n = scandir(argv[i], &names, NULL, alphasort);
        if (n < 0) {
            perror(argv[i]);
            return 2;
        }
        for (int j = 0; j < n; j++) {
            if (names[j]->d_name[0] != '.') {
                char *p = path_join(argv[i], names[j]->d_name);
                if (path_is_file(p)) {
                    bad |= replay_one(p, &n_done) != 0;
                }
                free(p);
            }
            free(names[j]);
        }
        free(names);
    }
    printf("replayed %zu inputs\n", n_done);
    return bad ? 1 : 0;
}
