/* Checkpoints in the safetensors format: writer, strict reader, validation.
 *
 * The reader never trusts a size it reads: the header length is checked
 * against MM_CKPT_MAX_HEADER and the real length before the header is parsed,
 * every offset against the data section, and nothing is written to the
 * caller's buffer until the whole file has validated. The JSON parser knows
 * the one shape a header may have (an object of tensor objects holding
 * strings and arrays of integers), so nesting is bounded by construction. */
#include "checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef O_CLOEXEC
#define O_CLOEXEC 0
#endif

#define CKPT_FORMAT "murmur-checkpoint"
#define JSON_MAX_INT 9007199254740992ull /* 2^53: exact in a double */
#define META_EXTRA_MAX 16                /* unknown metadata keys we tolerate */
#define META_KEY_MAX 64

/* ------------------------------------------------------------------------ */
/* Byte order and UTF-8                                                      */

static int host_is_le(void)
{
    const uint32_t one = 1;
    uint8_t b;
    memcpy(&b, &one, 1);
    return b == 1;
}

static uint64_t get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Length of the valid UTF-8 sequence starting at s (at most n bytes), or 0
 * if it is invalid (overlong, surrogate, past U+10FFFF, truncated). */
static size_t utf8_seq(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        cp = c & 0x1Fu;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        cp = c & 0x0Fu;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        cp = c & 0x07u;
    } else {
        return 0;
    }
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3Fu);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)) return 0;
    if (cp >= 0xD800 && cp <= 0xDFFF) return 0;
    if (cp > 0x10FFFF) return 0;
    return len;
}

static int utf8_valid(const char *s)
{
    const uint8_t *p = (const uint8_t *)s;
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq(p + i, n - i);
        if (k == 0) return 0;
        i += k;
    }
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Writing                                                                   */

/* A growing text buffer for the header. */
typedef struct {
    char *s;
    size_t len, cap;
    int failed;
} sbuf;

static void sb_reserve(sbuf *b, size_t extra)
{
    if (b->failed) return;
    if (b->len + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + extra + 1) cap *= 2;
    char *ns = realloc(b->s, cap);
    if (!ns) {
        b->failed = 1;
        return;
    }
    b->s = ns;
    b->cap = cap;
}

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = 1;
        return;
    }
    sb_reserve(b, (size_t)n);
    if (b->failed) return;
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* A JSON string literal; the caller has checked that s is valid UTF-8. */
static void sb_json_string(sbuf *b, const char *s)
{
    sb_printf(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            sb_printf(b, "\\%c", *p);
        else if (*p < 0x20)
            sb_printf(b, "\\u%04x", *p);
        else
            sb_printf(b, "%c", *p);
    }
    sb_printf(b, "\"");
}

/* Write all len bytes, retrying short writes and EINTR. */
static int write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (n == 0) {
            errno = EIO;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int fsync_retry(int fd)
{
    int rc;
    do rc = fsync(fd);
    while (rc != 0 && errno == EINTR);
    return rc;
}

/* The tensor data, little-endian float32, packed without padding. */
static int write_tensors(int fd, const mm_layout *layout, const float *params)
{
    const int le = host_is_le();
    uint8_t stage[4096];
    for (uint32_t i = 0; i < layout->n; i++) {
        const float *src = params + layout->t[i].offset;
        size_t count = layout->t[i].count;
        if (le) {
            if (write_all(fd, src, count * sizeof(float)) != 0) return -1;
            continue;
        }
        while (count > 0) {
            size_t k = count < sizeof stage / 4 ? count : sizeof stage / 4;
            for (size_t j = 0; j < k; j++) {
                uint32_t u;
                memcpy(&u, &src[j], 4);
                for (int byte = 0; byte < 4; byte++) stage[4 * j + (size_t)byte] = (uint8_t)(u >> (8 * byte));
            }
            if (write_all(fd, stage, 4 * k) != 0) return -1;
            src += k;
            count -= k;
        }
    }
    return 0;
}

/* The header JSON, padded with spaces so that 8 + length is a multiple of 8. */
static int build_header(sbuf *b, const mm_layout *layout, const mm_ckpt_meta *meta)
{
    char fp[2 * MM_FINGERPRINT_BYTES + 1];
    mm_layout_fingerprint_hex(layout, fp);
    uint64_t step = meta ? meta->step : 0, samples = meta ? meta->samples : 0, seed = meta ? meta->seed : 0;

    sb_printf(b, "{\"__metadata__\":{\"format\":\"" CKPT_FORMAT "\",\"version\":\"%d\",\"model\":", MM_CKPT_VERSION);
    sb_json_string(b, layout->model);
    sb_printf(b, ",\"fingerprint\":\"%s\",\"step\":\"%" PRIu64 "\",\"samples\":\"%" PRIu64 "\",\"seed\":\"%" PRIu64 "\"}",
              fp, step, samples, seed);
    uint64_t pos = 0;
    for (uint32_t i = 0; i < layout->n; i++) {
        const mm_tensor_info *t = &layout->t[i];
        uint64_t bytes = (uint64_t)t->count * 4;
        sb_printf(b, ",");
        sb_json_string(b, t->name);
        sb_printf(b, ":{\"dtype\":\"F32\",\"shape\":[");
        for (uint32_t d = 0; d < t->ndim; d++) sb_printf(b, "%s%" PRIu32, d ? "," : "", t->shape[d]);
        sb_printf(b, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", pos, pos + bytes);
        pos += bytes;
    }
    sb_printf(b, "}");
    while (!b->failed && (8 + b->len) % 8 != 0) sb_printf(b, " ");
    return b->failed ? -1 : 0;
}

/* fsync the directory holding path, so the rename itself is durable. */
static int sync_parent_dir(const char *path, char **dir_out)
{
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (slash == path ? 1 : (size_t)(slash - path)) : 1;
    char *dir = malloc(n + 1);
    if (!dir) return -1;
    if (slash)
        memcpy(dir, path, n);
    else
        dir[0] = '.';
    dir[n] = '\0';
    *dir_out = dir;
    int fd = open(dir, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync_retry(fd);
    /* Some file systems cannot sync a directory; nothing more we can do. */
    if (rc != 0 && (errno == EINVAL || errno == ENOTSUP)) rc = 0;
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

int mm_checkpoint_save(const char *path, const mm_layout *layout, const float *params, const mm_ckpt_meta *meta,
                       mm_error *err)
{
    if (!path || !layout || (!params && layout->total > 0))
        return mm_error_set(err, MM_ERR_INVALID, "checkpoint save: missing path, layout or parameters");
    if (!utf8_valid(layout->model))
        return mm_error_set(err, MM_ERR_INVALID, "cannot save %s: the model name is not valid UTF-8", path);
    for (uint32_t i = 0; i < layout->n; i++)
        if (!utf8_valid(layout->t[i].name))
            return mm_error_set(err, MM_ERR_INVALID, "cannot save %s: tensor name %u is not valid UTF-8", path, i);

    sbuf hdr = {0};
    if (build_header(&hdr, layout, meta) != 0) {
        free(hdr.s);
        return mm_error_set(err, MM_ERR_NOMEM, "cannot save %s: out of memory building the header", path);
    }
    if (hdr.len > MM_CKPT_MAX_HEADER) {
        free(hdr.s);
        return mm_error_set(err, MM_ERR_LIMIT, "cannot save %s: the header would exceed %u bytes", path,
                            MM_CKPT_MAX_HEADER);
    }

    size_t tmp_cap = strlen(path) + 32;
    char *tmp = malloc(tmp_cap);
    if (!tmp) {
        free(hdr.s);
        return mm_error_set(err, MM_ERR_NOMEM, "cannot save %s: out of memory", path);
    }
    snprintf(tmp, tmp_cap, "%s.tmp.%ld", path, (long)getpid());

    int rc = MM_OK;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = mm_error_set(err, MM_ERR_IO, "cannot save %s: cannot create %s: %s", path, tmp, strerror(errno));
        goto out;
    }
    uint8_t lenbuf[8];
    put_le64(lenbuf, hdr.len);
    if (write_all(fd, lenbuf, sizeof lenbuf) != 0 || write_all(fd, hdr.s, hdr.len) != 0 ||
        write_tensors(fd, layout, params) != 0) {
        rc = mm_error_set(err, MM_ERR_IO, "cannot save %s: writing %s failed: %s", path, tmp, strerror(errno));
        goto fail;
    }
    if (fsync_retry(fd) != 0) {
        rc = mm_error_set(err, MM_ERR_IO, "cannot save %s: fsync of %s failed: %s", path, tmp, strerror(errno));
        goto fail;
    }
    int cfd = fd;
    fd = -1;
    if (close(cfd) != 0) {
        rc = mm_error_set(err, MM_ERR_IO, "cannot save %s: closing %s failed: %s", path, tmp, strerror(errno));
        goto fail;
    }
    if (rename(tmp, path) != 0) {
        rc = mm_error_set(err, MM_ERR_IO, "cannot save %s: renaming %s over it failed: %s", path, tmp,
                          strerror(errno));
        goto fail;
    }
    char *dir = NULL;
    if (sync_parent_dir(path, &dir) != 0)
        rc = mm_error_set(err, MM_ERR_IO, "saved %s but could not sync its directory %s: %s", path,
                          dir ? dir : "(out of memory)", strerror(errno));
    free(dir);
    goto out;

fail:
    if (fd >= 0) close(fd);
    unlink(tmp);
out:
    free(tmp);
    free(hdr.s);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* A strict JSON parser for the header                                       */

typedef struct {
    const uint8_t *p;
    size_t len, pos;
    const char *what;
    mm_error *err;
} jparser;

static int jp_fail(jparser *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int jp_fail(jparser *j, const char *fmt, ...)
{
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    return mm_error_set(j->err, MM_ERR_FORMAT, "%s: malformed checkpoint header at byte %zu: %s", j->what,
                        j->pos, why);
}

static void jp_ws(jparser *j)
{
    while (j->pos < j->len) {
        uint8_t c = j->p[j->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        j->pos++;
    }
}

/* Next non-space byte, or -1 at the end. */
static int jp_peek(jparser *j)
{
    jp_ws(j);
    return j->pos < j->len ? j->p[j->pos] : -1;
}

static int jp_expect(jparser *j, char c, const char *what)
{
    int got = jp_peek(j);
    if (got != c) {
        if (got < 0) return jp_fail(j, "the header ends where %s was expected", what);
        return jp_fail(j, "expected %s", what);
    }
    j->pos++;
    return 0;
}

static int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* A string into out (cap bytes with the NUL; out may be NULL to skip it). */
static int jp_string(jparser *j, char *out, size_t cap)
{
    if (jp_expect(j, '"', "a string") != 0) return -1;
    size_t n = 0;
    for (;;) {
        if (j->pos >= j->len) return jp_fail(j, "unterminated string");
        uint8_t c = j->p[j->pos];
        size_t k = 1;
        uint8_t dec[4];
        if (c == '"') {
            j->pos++;
            break;
        }
        if (c < 0x20) return jp_fail(j, "control character in a string");
        if (c == '\\') {
            if (j->pos + 1 >= j->len) return jp_fail(j, "unterminated escape");
            uint8_t e = j->p[j->pos + 1];
            j->pos += 2;
            switch (e) {
            case '"': case '\\': case '/': dec[0] = e; break;
            case 'b': dec[0] = '\b'; break;
            case 'f': dec[0] = '\f'; break;
            case 'n': dec[0] = '\n'; break;
            case 'r': dec[0] = '\r'; break;
            case 't': dec[0] = '\t'; break;
            case 'u': {
                if (j->len - j->pos < 4) return jp_fail(j, "truncated \\u escape");
                int v = 0;
                for (int i = 0; i < 4; i++) {
                    int h = hexval(j->p[j->pos + (size_t)i]);
                    if (h < 0) return jp_fail(j, "bad hex digit in a \\u escape");
                    v = v * 16 + h;
                }
                if (v == 0 || v > 0x7F) return jp_fail(j, "\\u escapes are supported only for ASCII (1-127)");
                j->pos += 4;
                dec[0] = (uint8_t)v;
                break;
            }
            default:
                j->pos -= 2;
                return jp_fail(j, "invalid escape in a string");
            }
        } else {
            k = utf8_seq(j->p + j->pos, j->len - j->pos);
            if (k == 0) return jp_fail(j, "invalid UTF-8 in a string");
            memcpy(dec, j->p + j->pos, k);
            j->pos += k;
        }
        if (out) {
            if (n + k >= cap) return jp_fail(j, "string longer than %zu bytes", cap - 1);
            memcpy(out + n, dec, k);
        }
        n += k;
    }
    if (out) out[n] = '\0';
    return 0;
}

/* A non-negative integer no larger than 2^53. */
static int jp_uint(jparser *j, uint64_t *out)
{
    int c = jp_peek(j);
    if (c == '-') return jp_fail(j, "negative numbers are not allowed");
    if (c < '0' || c > '9') return jp_fail(j, "expected an integer");
    size_t start = j->pos;
    uint64_t v = 0;
    while (j->pos < j->len && j->p[j->pos] >= '0' && j->p[j->pos] <= '9') {
        v = v * 10 + (uint64_t)(j->p[j->pos] - '0');
        if (v > JSON_MAX_INT) return jp_fail(j, "integer larger than 2^53");
        j->pos++;
    }
    if (j->pos - start > 1 && j->p[start] == '0') {
        j->pos = start;
        return jp_fail(j, "integer with a leading zero");
    }
    if (j->pos < j->len && (j->p[j->pos] == '.' || j->p[j->pos] == 'e' || j->p[j->pos] == 'E'))
        return jp_fail(j, "floating-point numbers are not allowed");
    *out = v;
    return 0;
}

/* An array of at most max integers. */
static int jp_uint_array(jparser *j, uint64_t *out, size_t max, size_t *n)
{
    if (jp_expect(j, '[', "an array of integers") != 0) return -1;
    *n = 0;
    if (jp_peek(j) == ']') {
        j->pos++;
        return 0;
    }
    for (;;) {
        if (*n == max) return jp_fail(j, "array longer than %zu elements", max);
        if (jp_uint(j, &out[*n]) != 0) return -1;
        (*n)++;
        int c = jp_peek(j);
        if (c == ']') {
            j->pos++;
            return 0;
        }
        if (c != ',') return jp_fail(j, "expected ',' or ']' in an array");
        j->pos++;
    }
}

/* Object iteration: after '{' (or a member), is there another member?
 * Returns 1 (a key follows), 0 (the object closed) or -1 (error). */
static int jp_next_member(jparser *j, int first)
{
    int c = jp_peek(j);
    if (c == '}') {
        j->pos++;
        return 0;
    }
    if (!first) {
        if (c != ',') return c < 0 ? jp_fail(j, "unterminated object") : jp_fail(j, "expected ',' or '}'");
        j->pos++;
        if (jp_peek(j) != '"') return jp_fail(j, "expected a key after ','");
    }
    return 1;
}

/* ------------------------------------------------------------------------ */
/* The header                                                                */

typedef struct {
    char name[MM_LAYOUT_NAME];
    uint32_t ndim;
    uint64_t shape[MM_LAYOUT_MAX_DIM];
    uint64_t begin, end;
} ckpt_tensor;

typedef struct {
    mm_ckpt_meta meta;
    uint32_t n;
    ckpt_tensor t[MM_LAYOUT_MAX];
    size_t data_off; /* where the data section starts in the file */
    uint64_t data_len;
} ckpt_header;

/* One tensor's object: {"dtype":..,"shape":[..],"data_offsets":[b,e]}. */
static int parse_tensor(jparser *j, ckpt_tensor *t)
{
    int seen_dtype = 0, seen_shape = 0, seen_offsets = 0;
    char key[16], dtype[16];
    if (jp_expect(j, '{', "an object for the tensor") != 0) return -1;
    for (int first = 1;; first = 0) {
        int more = jp_next_member(j, first);
        if (more < 0) return -1;
        if (more == 0) break;
        size_t key_pos = j->pos;
        if (jp_string(j, key, sizeof key) != 0) return -1;
        if (jp_expect(j, ':', "':'") != 0) return -1;
        int *seen;
        if (strcmp(key, "dtype") == 0) {
            seen = &seen_dtype;
        } else if (strcmp(key, "shape") == 0) {
            seen = &seen_shape;
        } else if (strcmp(key, "data_offsets") == 0) {
            seen = &seen_offsets;
        } else {
            j->pos = key_pos;
            return jp_fail(j, "unknown field '%s' in tensor '%s'", key, t->name);
        }
        if (*seen) {
            j->pos = key_pos;
            return jp_fail(j, "duplicate key '%s' in tensor '%s'", key, t->name);
        }
        *seen = 1;
        if (seen == &seen_dtype) {
            size_t vpos = j->pos;
            if (jp_string(j, dtype, sizeof dtype) != 0) return -1;
            if (strcmp(dtype, "F32") != 0) {
                j->pos = vpos;
                return jp_fail(j, "tensor '%s' has dtype '%s'; only F32 is supported", t->name, dtype);
            }
        } else if (seen == &seen_shape) {
            size_t nd;
            if (jp_uint_array(j, t->shape, MM_LAYOUT_MAX_DIM, &nd) != 0) return -1;
            t->ndim = (uint32_t)nd;
        } else {
            uint64_t off[2];
            size_t no;
            size_t vpos = j->pos;
            if (jp_uint_array(j, off, 2, &no) != 0) return -1;
            if (no != 2) {
                j->pos = vpos;
                return jp_fail(j, "data_offsets of tensor '%s' must have two elements", t->name);
            }
            t->begin = off[0];
            t->end = off[1];
        }
    }
    if (!seen_dtype || !seen_shape || !seen_offsets)
        return jp_fail(j, "tensor '%s' lacks %s", t->name,
                       !seen_dtype ? "its dtype" : !seen_shape ? "its shape" : "its data_offsets");
    return 0;
}

/* A decimal u64 in a string (metadata values are strings). */
static int parse_u64_text(const char *s, uint64_t *out)
{
    if (!*s) return -1;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return -1;
        uint64_t d = (uint64_t)(*s - '0');
        if (v > (UINT64_MAX - d) / 10) return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

enum { MK_FORMAT, MK_VERSION, MK_MODEL, MK_FINGERPRINT, MK_STEP, MK_SAMPLES, MK_SEED, MK_COUNT };
static const char *const meta_keys[MK_COUNT] = {"format", "version", "model", "fingerprint",
                                                "step",   "samples", "seed"};

/* The "__metadata__" object: string to string. */
static int parse_meta(jparser *j, mm_ckpt_meta *m)
{
    char vals[MK_COUNT][64];
    int seen[MK_COUNT] = {0};
    char extra[META_EXTRA_MAX][META_KEY_MAX];
    int n_extra = 0;
    char key[META_KEY_MAX];

    if (jp_expect(j, '{', "an object for __metadata__") != 0) return -1;
    for (int first = 1;; first = 0) {
        int more = jp_next_member(j, first);
        if (more < 0) return -1;
        if (more == 0) break;
        size_t key_pos = j->pos;
        if (jp_string(j, key, sizeof key) != 0) return -1;
        if (jp_expect(j, ':', "':'") != 0) return -1;
        int k = 0;
        while (k < MK_COUNT && strcmp(key, meta_keys[k]) != 0) k++;
        int dup = k < MK_COUNT && seen[k];
        for (int i = 0; k == MK_COUNT && i < n_extra; i++) dup |= strcmp(extra[i], key) == 0;
        if (dup) {
            j->pos = key_pos;
            return jp_fail(j, "duplicate key '%s' in __metadata__", key);
        }
        if (jp_peek(j) != '"') return jp_fail(j, "metadata value of '%s' is not a string", key);
        if (k < MK_COUNT) {
            seen[k] = 1;
            if (jp_string(j, vals[k], sizeof vals[k]) != 0) return -1;
        } else {
            /* Unknown keys are ignored, but kept to catch duplicates. */
            if (n_extra == META_EXTRA_MAX) {
                j->pos = key_pos;
                return jp_fail(j, "more than %d unknown metadata keys", META_EXTRA_MAX);
            }
            memcpy(extra[n_extra++], key, sizeof key);
            if (jp_string(j, NULL, 0) != 0) return -1;
        }
    }

    for (int k = 0; k < MK_COUNT; k++)
        if (!seen[k]) return jp_fail(j, "__metadata__ lacks '%s'", meta_keys[k]);
    if (strcmp(vals[MK_FORMAT], CKPT_FORMAT) != 0)
        return jp_fail(j, "format is '%s', not '" CKPT_FORMAT "'", vals[MK_FORMAT]);
    uint64_t version;
    if (parse_u64_text(vals[MK_VERSION], &version) != 0 || version == 0)
        return jp_fail(j, "version '%s' is not a positive integer", vals[MK_VERSION]);
    if (version > MM_CKPT_VERSION)
        return jp_fail(j, "version %" PRIu64 " is newer than this program reads (%d)", version, MM_CKPT_VERSION);
    size_t ml = strlen(vals[MK_MODEL]);
    if (ml == 0 || ml >= sizeof m->model) return jp_fail(j, "model name is empty or longer than %zu bytes",
                                                          sizeof m->model - 1);
    const char *fp = vals[MK_FINGERPRINT];
    int fp_ok = strlen(fp) == 2 * MM_FINGERPRINT_BYTES;
    for (const char *c = fp; fp_ok && *c; c++) fp_ok = (*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f');
    if (!fp_ok) return jp_fail(j, "fingerprint '%s' is not %d lowercase hex digits", fp, 2 * MM_FINGERPRINT_BYTES);
    if (parse_u64_text(vals[MK_STEP], &m->step) != 0)
        return jp_fail(j, "step '%s' is not an unsigned 64-bit integer", vals[MK_STEP]);
    if (parse_u64_text(vals[MK_SAMPLES], &m->samples) != 0)
        return jp_fail(j, "samples '%s' is not an unsigned 64-bit integer", vals[MK_SAMPLES]);
    if (parse_u64_text(vals[MK_SEED], &m->seed) != 0)
        return jp_fail(j, "seed '%s' is not an unsigned 64-bit integer", vals[MK_SEED]);
    m->version = (uint32_t)version;
    memcpy(m->model, vals[MK_MODEL], ml + 1);
    memcpy(m->fingerprint, fp, sizeof m->fingerprint);
    return 0;
}

/* The whole header object. */
static int parse_json(jparser *j, ckpt_header *h)
{
    int seen_meta = 0;
    if (jp_peek(j) != '{') return jp_fail(j, "the header is not a JSON object");
    j->pos++;
    for (int first = 1;; first = 0) {
        int more = jp_next_member(j, first);
        if (more < 0) return -1;
        if (more == 0) break;
        size_t key_pos = j->pos;
        char key[MM_LAYOUT_NAME];
        if (jp_string(j, key, sizeof key) != 0) return -1;
        if (jp_expect(j, ':', "':'") != 0) return -1;
        if (strcmp(key, "__metadata__") == 0) {
            if (seen_meta) {
                j->pos = key_pos;
                return jp_fail(j, "duplicate key '__metadata__'");
            }
            seen_meta = 1;
            if (parse_meta(j, &h->meta) != 0) return -1;
            continue;
        }
        for (uint32_t i = 0; i < h->n; i++)
            if (strcmp(h->t[i].name, key) == 0) {
                j->pos = key_pos;
                return jp_fail(j, "duplicate tensor '%s'", key);
            }
        if (h->n == MM_LAYOUT_MAX) {
            j->pos = key_pos;
            return jp_fail(j, "more than %d tensors", MM_LAYOUT_MAX);
        }
        ckpt_tensor *t = &h->t[h->n++];
        memset(t, 0, sizeof *t);
        memcpy(t->name, key, sizeof key);
        if (parse_tensor(j, t) != 0) return -1;
    }
    jp_ws(j);
    if (j->pos != j->len) return jp_fail(j, "unexpected bytes after the header object");
    if (!seen_meta) return jp_fail(j, "no __metadata__ object");
    return 0;
}

/* Checks that each tensor's shape matches its byte range, that the ranges lie
 * in the data section, do not overlap and cover it exactly. */
static int check_tensors(const ckpt_header *h, const char *what, mm_error *err)
{
    uint64_t total = 0;
    uint32_t order[MM_LAYOUT_MAX];
    for (uint32_t i = 0; i < h->n; i++) {
        const ckpt_tensor *t = &h->t[i];
        uint64_t count = 1;
        for (uint32_t d = 0; d < t->ndim; d++) {
            if (t->shape[d] != 0 && count > UINT64_MAX / 4 / t->shape[d])
                return mm_error_set(err, MM_ERR_FORMAT, "%s: tensor '%s' has a shape too large to address", what,
                                    t->name);
            count *= t->shape[d];
        }
        if (t->begin > t->end)
            return mm_error_set(err, MM_ERR_FORMAT,
                                "%s: tensor '%s' has data_offsets [%" PRIu64 ",%" PRIu64 "] that end before they begin",
                                what, t->name, t->begin, t->end);
        if (t->end > h->data_len)
            return mm_error_set(err, MM_ERR_FORMAT,
                                "%s: tensor '%s' has data_offsets [%" PRIu64 ",%" PRIu64
                                "] past the end of the data (%" PRIu64 " bytes)",
                                what, t->name, t->begin, t->end, h->data_len);
        if (t->end - t->begin != count * 4)
            return mm_error_set(err, MM_ERR_FORMAT,
                                "%s: tensor '%s' has %" PRIu64 " elements by its shape but data_offsets [%" PRIu64
                                ",%" PRIu64 "] hold %" PRIu64 " bytes",
                                what, t->name, count, t->begin, t->end, t->end - t->begin);
        total += t->end - t->begin; /* each <= 2^53, at most 32: no overflow */
        /* Insertion sort by begin, for the overlap check. */
        uint32_t k = i;
        while (k > 0 && h->t[order[k - 1]].begin > t->begin) {
            order[k] = order[k - 1];
            k--;
        }
        order[k] = i;
    }
    const ckpt_tensor *prev = NULL;
    for (uint32_t i = 0; i < h->n; i++) {
        const ckpt_tensor *t = &h->t[order[i]];
        if (t->begin == t->end) continue; /* empty tensors overlap nothing */
        if (prev && t->begin < prev->end)
            return mm_error_set(err, MM_ERR_FORMAT, "%s: tensors '%s' and '%s' overlap in the data section", what,
                                prev->name, t->name);
        prev = t;
    }
    if (total != h->data_len)
        return mm_error_set(err, MM_ERR_FORMAT,
                            "%s: the data section is %" PRIu64 " bytes but the tensors use %" PRIu64
                            " (trailing data or a gap)",
                            what, h->data_len, total);
    return 0;
}

/* Parses and validates the container. buf holds the first len bytes of a
 * file that is file_len bytes long (len == file_len unless only the header
 * was read); at least the header must be in buf. */
static int parse_header(const uint8_t *buf, size_t len, uint64_t file_len, const char *what, ckpt_header *h,
                        mm_error *err)
{
    memset(h, 0, sizeof *h);
    if (file_len < 8)
        return mm_error_set(err, MM_ERR_FORMAT,
                            "%s: file is %" PRIu64 " bytes, too short for a checkpoint (truncated or empty)", what,
                            file_len);
    uint64_t n = get_le64(buf);
    if (n > MM_CKPT_MAX_HEADER)
        return mm_error_set(err, MM_ERR_FORMAT,
                            "%s: header length %" PRIu64 " is over the limit of %u bytes (not a checkpoint?)", what,
                            n, MM_CKPT_MAX_HEADER);
    if (n > file_len - 8)
        return mm_error_set(err, MM_ERR_FORMAT,
                            "%s: header length %" PRIu64 " runs past the end of the file (%" PRIu64
                            " bytes; truncated?)",
                            what, n, file_len);
    if (len < 8 || n > len - 8)
        return mm_error_set(err, MM_ERR_IO, "%s: could not read the whole header (file changed while read?)", what);
    jparser j = {.p = buf + 8, .len = (size_t)n, .pos = 0, .what = what, .err = err};
    if (parse_json(&j, h) != 0) return err ? err->code : MM_ERR_FORMAT;
    h->data_off = 8 + (size_t)n;
    h->data_len = file_len - 8 - n;
    return check_tensors(h, what, err);
}

/* Checks a validated header against the layout; fills match[i] with the file
 * tensor of layout tensor i. */
static int check_layout(const ckpt_header *h, const mm_layout *layout, const char *what, uint32_t *match,
                        mm_error *err)
{
    char fp[2 * MM_FINGERPRINT_BYTES + 1];
    mm_layout_fingerprint_hex(layout, fp);
    if (strcmp(h->meta.model, layout->model) != 0 || strcmp(h->meta.fingerprint, fp) != 0)
        return mm_error_set(err, MM_ERR_MISMATCH,
                            "%s: checkpoint is of model '%s' (fingerprint %s), but this model is '%s' "
                            "(fingerprint %s)",
                            what, h->meta.model, h->meta.fingerprint, layout->model, fp);
    for (uint32_t i = 0; i < layout->n; i++) {
        const mm_tensor_info *lt = &layout->t[i];
        uint32_t k = 0;
        while (k < h->n && strcmp(h->t[k].name, lt->name) != 0) k++;
        if (k == h->n)
            return mm_error_set(err, MM_ERR_MISMATCH, "%s: tensor '%s' of model '%s' is missing", what, lt->name,
                                layout->model);
        const ckpt_tensor *t = &h->t[k];
        int same = t->ndim == lt->ndim;
        for (uint32_t d = 0; same && d < lt->ndim; d++) same = t->shape[d] == lt->shape[d];
        if (!same) {
            char fs[96] = "", ms[96] = "";
            size_t fo = 0, mo = 0;
            for (uint32_t d = 0; d < t->ndim; d++)
                fo += (size_t)snprintf(fs + fo, sizeof fs - fo, "%s%" PRIu64, d ? "," : "", t->shape[d]);
            for (uint32_t d = 0; d < lt->ndim; d++)
                mo += (size_t)snprintf(ms + mo, sizeof ms - mo, "%s%" PRIu32, d ? "," : "", lt->shape[d]);
            return mm_error_set(err, MM_ERR_MISMATCH,
                                "%s: tensor '%s' has shape [%s] in the file but [%s] in model '%s'", what, lt->name,
                                fs, ms, layout->model);
        }
        match[i] = k;
    }
    for (uint32_t k = 0; k < h->n; k++)
        if (mm_layout_find(layout, h->t[k].name) < 0)
            return mm_error_set(err, MM_ERR_MISMATCH, "%s: has tensor '%s' that model '%s' lacks", what,
                                h->t[k].name, layout->model);
    return 0;
}

/* Copies the validated data into the padded flat buffer. */
static void copy_params(const uint8_t *data, const ckpt_header *h, const mm_layout *layout, const uint32_t *match,
                        float *params)
{
    memset(params, 0, layout->total * sizeof(float));
    const int le = host_is_le();
    for (uint32_t i = 0; i < layout->n; i++) {
        const uint8_t *src = data + h->t[match[i]].begin;
        float *dst = params + layout->t[i].offset;
        size_t count = layout->t[i].count;
        if (le) {
            memcpy(dst, src, count * sizeof(float));
            continue;
        }
        for (size_t e = 0; e < count; e++) {
            uint32_t u = (uint32_t)src[4 * e] | (uint32_t)src[4 * e + 1] << 8 | (uint32_t)src[4 * e + 2] << 16 |
                         (uint32_t)src[4 * e + 3] << 24;
            memcpy(&dst[e], &u, 4);
        }
    }
}

int mm_checkpoint_parse(const uint8_t *buf, size_t len, const mm_layout *layout, float *params, mm_ckpt_meta *meta,
                        const char *what, mm_error *err)
{
    if (!what) what = "checkpoint";
    if (!buf && len > 0) return mm_error_set(err, MM_ERR_INVALID, "%s: no buffer", what);
    ckpt_header h;
    int rc = parse_header(buf, len, len, what, &h, err);
    if (rc != 0) return rc;
    if (layout) {
        uint32_t match[MM_LAYOUT_MAX];
        rc = check_layout(&h, layout, what, match, err);
        if (rc != 0) return rc;
        if (params) copy_params(buf + h.data_off, &h, layout, match, params);
    }
    if (meta) *meta = h.meta;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Files                                                                     */

/* Reads up to want bytes from fd into buf; *got says how many came. */
static int read_upto(int fd, uint8_t *buf, size_t want, size_t *got)
{
    *got = 0;
    while (*got < want) {
        ssize_t n = read(fd, buf + *got, want - *got);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (n == 0) break;
        *got += (size_t)n;
    }
    return 0;
}

/* Opens path and returns its size, refusing anything but a regular file. */
static int open_regular(const char *path, int *fd_out, uint64_t *size, mm_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return mm_error_set(err, MM_ERR_IO, "cannot open checkpoint %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int rc = mm_error_set(err, MM_ERR_IO, "cannot stat checkpoint %s: %s", path, strerror(errno));
        close(fd);
        return rc;
    }
    if (!S_ISREG(st.st_mode) || st.st_size < 0) {
        close(fd);
        return mm_error_set(err, MM_ERR_IO, "checkpoint %s is not a regular file", path);
    }
    *fd_out = fd;
    *size = (uint64_t)st.st_size;
    return 0;
}

/* Reads the first `want` bytes of an open file into a new buffer. */
static int read_prefix(int fd, const char *path, size_t want, uint8_t **buf_out, size_t *got, mm_error *err)
{
    uint8_t *buf = malloc(want ? want : 1);
    if (!buf) return mm_error_set(err, MM_ERR_NOMEM, "cannot load %s: out of memory for %zu bytes", path, want);
    if (read_upto(fd, buf, want, got) != 0) {
        int rc = mm_error_set(err, MM_ERR_IO, "cannot read checkpoint %s: %s", path, strerror(errno));
        free(buf);
        return rc;
    }
    *buf_out = buf;
    return 0;
}

int mm_checkpoint_read_meta(const char *path, mm_ckpt_meta *meta, mm_error *err)
{
    if (!path) return mm_error_set(err, MM_ERR_INVALID, "checkpoint read: no path");
    int fd = -1;
    uint64_t size = 0;
    int rc = open_regular(path, &fd, &size, err);
    if (rc != 0) return rc;
    /* The header is all we need: never more than 8 + MM_CKPT_MAX_HEADER. */
    uint64_t max = 8 + (uint64_t)MM_CKPT_MAX_HEADER;
    size_t want = (size_t)(size < max ? size : max);
    uint8_t *buf = NULL;
    size_t got = 0;
    rc = read_prefix(fd, path, want, &buf, &got, err);
    close(fd);
    if (rc != 0) return rc;
    ckpt_header h;
    rc = parse_header(buf, got, got < want ? got : size, path, &h, err);
    free(buf);
    if (rc == 0 && meta) *meta = h.meta;
    return rc;
}

int mm_checkpoint_load(const char *path, const mm_layout *layout, float *params, mm_ckpt_meta *meta, mm_error *err)
{
    if (!path || !layout || !params)
        return mm_error_set(err, MM_ERR_INVALID, "checkpoint load: missing path, layout or parameters");
    int fd = -1;
    uint64_t size = 0;
    int rc = open_regular(path, &fd, &size, err);
    if (rc != 0) return rc;
    /* No checkpoint of this layout can be larger than its header limit plus
     * every float of the flat buffer; refuse before allocating. */
    uint64_t limit = 8 + (uint64_t)MM_CKPT_MAX_HEADER + (uint64_t)layout->total * 4;
    if (size > limit || size > SIZE_MAX) {
        close(fd);
        return mm_error_set(err, MM_ERR_FORMAT,
                            "%s: file is %" PRIu64 " bytes, larger than any checkpoint of model '%s' (%" PRIu64
                            " bytes at most)",
                            path, size, layout->model, limit);
    }
    uint8_t *buf = NULL;
    size_t got = 0;
    rc = read_prefix(fd, path, (size_t)size, &buf, &got, err);
    close(fd);
    if (rc != 0) return rc;
    rc = mm_checkpoint_parse(buf, got, layout, params, meta, path, err);
    free(buf);
    return rc;
}
