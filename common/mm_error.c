#include "mm_error.h"

#include <stdarg.h>
#include <stdio.h>

const char *mm_strerror(int code)
{
    switch (code) {
#define MM_X(name, value, msg) \
    case value:                \
        return msg;
        MM_ERRORS(MM_X)
#undef MM_X
    }
    return "unknown error";
}

int mm_error_set(mm_error *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}
