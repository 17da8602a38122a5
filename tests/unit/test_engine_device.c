/* test_engine_device.c - device selection: "cpu", "auto", "cuda", "cuda:N" parse into the engine
 * config, and a request for CUDA where no GPU is present (or the build has no CUDA) opens the CPU
 * backend, whose logits equal those of an engine opened on the CPU directly. */
#include "common/util.h"
#include "engine/engine.h"

/* cmocka needs these four headers first, in this order */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

static void test_engine_device_parse(void **state)
{
    (void)state;
    struct engine_config cfg;
    engine_config_default(&cfg);
    assert_int_equal(cfg.cuda_device, 0);
    assert_true(cfg.gpu_mem_fraction > 0.5f && cfg.gpu_mem_fraction < 1.0f);
    assert_int_equal(engine_device_parse("cpu", &cfg), 0);
    assert_int_equal(cfg.backend, ENGINE_BACKEND_CPU);
    assert_int_equal(engine_device_parse("cuda:3", &cfg), 0);
    assert_int_equal(cfg.backend, ENGINE_BACKEND_CUDA);
    assert_int_equal(cfg.cuda_device, 3);
    assert_int_equal(engine_device_parse("auto", &cfg), 0);
    assert_int_equal(cfg.backend, ENGINE_BACKEND_AUTO);
    assert_int_equal(cfg.cuda_device, 0);
    assert_int_equal(engine_device_parse("cuda", &cfg), 0);
    assert_int_equal(cfg.backend, ENGINE_BACKEND_CUDA);
    assert_int_equal(engine_device_parse("cuda:2+0+3", &cfg), 0);
    assert_int_equal(cfg.backend, ENGINE_BACKEND_CUDA);
    assert_int_equal(cfg.cuda_device, 2);
    assert_int_equal(cfg.tp_world, 3);
    assert_int_equal(cfg.tp_devices[0], 2);
    assert_int_equal(cfg.tp_devices[1], 0);
    assert_int_equal(cfg.tp_devices[2], 3);
    assert_int_equal(engine_device_parse("cuda:1", &cfg), 0);
    assert_int_equal(cfg.tp_world, 1);
    static const char *const bad[] = {
        "cuda:",    "cuda:x",  "cuda:1x", "cuda:-1",  "gpu",       "",
        "cuda:0+0", "cuda:0+", "cuda:+1", "cuda:0,1", "cuda:1++2", "cuda:0+1+2+3+4+5+6+7+8"
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        assert_int_equal(engine_device_parse(bad[i], &cfg), -EINVAL);
    }
}

static struct engine *open_on(enum engine_backend_kind kind)
{
    struct engine_config cfg;
    engine_config_default(&cfg);
    cfg.backend = kind;
    cfg.n_threads = 1;
    cfg.n_kv_blocks = 4;
    cfg.max_ctx = 64;
    struct engine *e = NULL;
    char err[ERRSTR_LEN];
    if (engine_open("tests/fixtures/stories260K-hf", NULL, &cfg, &e, err, sizeof(err)) != 0) {
        fail_msg("engine_open: %s", err);
    }
    return e;
}

static void test_engine_cuda_falls_back_to_cpu(void **state)
{
    (void)state;
    if (engine_cuda_device_count() > 0) {
        skip(); /* a GPU is here: tests/gpu/ covers that side */
    }
    struct engine *cpu = open_on(ENGINE_BACKEND_CPU);
    struct engine *want_cuda = open_on(ENGINE_BACKEND_CUDA);
    struct engine *autod = open_on(ENGINE_BACKEND_AUTO);
    assert_string_equal(engine_backend_name(want_cuda), "cpu");
    assert_string_equal(engine_backend_name(autod), "cpu");
    assert_int_equal(engine_get_config(want_cuda)->n_kv_blocks, 4);
    int32_t tokens[3] = { 1, 403, 407 }, pos[3] = { 0, 1, 2 }, seq[3] = { 0, 0, 0 };
    int32_t rows[3] = { 0, 1, 2 }, blocks[1] = { 2 }, n_blocks = 1;
    const int32_t *tables[1] = { blocks };
    struct engine_batch b = { 3, tokens, pos, seq, 1, tables, &n_blocks, 3, rows };
    float *a = malloc(3 * 512 * sizeof(float)), *c = malloc(3 * 512 * sizeof(float));
    assert_int_equal(engine_forward(cpu, &b, a), 0);
    assert_int_equal(engine_forward(want_cuda, &b, c), 0);
    assert_memory_equal(a, c, 3 * 512 * sizeof(float));
    free(a);
    free(c);
    engine_destroy(cpu);
    engine_destroy(want_cuda);
    engine_destroy(autod);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_engine_device_parse),
        cmocka_unit_test(test_engine_cuda_falls_back_to_cpu),
    };
    return cmocka_run_group_tests_name("engine_device", tests, NULL, NULL);
}
