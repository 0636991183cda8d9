/* Fuzz target: checkpoint parsing, with no layout (container only) and with
 * a small fixed layout (full validation and the copy into params). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static mm_layout g_layout;
static float g_params[64];
static int g_ready;

static void setup(void)
{
    mm_layout_init(&g_layout, "mlp");
    mm_layout_add(&g_layout, "w1", 2, (const uint32_t[]){3, 5});
    mm_layout_add(&g_layout, "b1", 1, (const uint32_t[]){5});
    mm_layout_add(&g_layout, "w2", 2, (const uint32_t[]){5, 2});
    mm_layout_finish(&g_layout);
    if (g_layout.total > sizeof g_params / sizeof g_params[0]) abort();
    g_ready = 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_ready) setup();
    mm_error err = {0};
    mm_ckpt_meta meta;
    /* Every refusal must say why. */
    if (mm_checkpoint_parse(data, size, NULL, NULL, &meta, "fuzz", &err) != 0 && err.msg[0] == '\0') abort();
    memset(&err, 0, sizeof err);
    if (mm_checkpoint_parse(data, size, &g_layout, g_params, &meta, "fuzz", &err) != 0 && err.msg[0] == '\0')
        abort();
    return 0;
}
