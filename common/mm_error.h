/* Error codes and error messages shared by every module.
 *
 * Functions return 0 (MM_OK) or a negative mm_err code. Functions that can fail
 * for a reason a user must read (a corrupt file, a bad flag) also take an
 * mm_error, into which they write one sentence naming what and why. */
#ifndef MM_ERROR_H
#define MM_ERROR_H

#include <stddef.h>

#define MM_ERRORS(X)                                                   \
    X(MM_OK, 0, "success")                                             \
    X(MM_ERR_NOMEM, -1, "out of memory")                               \
    X(MM_ERR_IO, -2, "input/output error")                             \
    X(MM_ERR_FORMAT, -3, "malformed data")                             \
    X(MM_ERR_INVALID, -4, "invalid argument")                          \
    X(MM_ERR_MISMATCH, -5, "does not match the model")                 \
    X(MM_ERR_LIMIT, -6, "over a limit")                                \
    X(MM_ERR_AUTH, -7, "authentication failed")                        \
    X(MM_ERR_STATE, -8, "not allowed in this state")                   \
    X(MM_ERR_BUSY, -9, "busy")                                         \
    X(MM_ERR_CLOSED, -10, "closed")

typedef enum {
#define MM_X(name, code, msg) name = code,
    MM_ERRORS(MM_X)
#undef MM_X
} mm_err;

/* Static description of an error code; never NULL. */
const char *mm_strerror(int code);

/* A human-readable account of the last failure. */
typedef struct {
    int code;
    char msg[512];
} mm_error;

/* Record code and a printf-style message in err (which may be NULL); returns code. */
int mm_error_set(mm_error *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
