#include <string.h>

#include "backend.h"

void mm_backend_free(mm_backend *be)
{
    if (!be || !be->ops) return;
    if (be->ops->destroy) be->ops->destroy(be);
    memset(be, 0, sizeof *be);
}
