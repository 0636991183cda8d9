#include "keys.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char id_magic[] = "murmur-identity-v1", net_magic[] = "murmur-netkey-v1";
static const char cert_magic[] = "murmur-cert-v1", rev_magic[] = "murmur-revocations-v1";

#define TEXT_MAX (64 + 2 * MM_FRAME_CTRL_MAX) /* the longest key file: a revocation list */

/* Write "magic\nhex\n" to path atomically (temp file, fsync, then link: a
 * key is never replaced; or rename with replace: a newer certificate or
 * list replaces the old), mode 0600. */
static int write_file(const char *path, const char *magic, const uint8_t *key, size_t len, bool replace,
                      mm_error *err)
{
    char tmp[4096];
    size_t cap = strlen(magic) + 2 * len + 3;
    char *text = malloc(cap), *hex = malloc(2 * len + 1);
    if (!text || !hex) {
        free(text);
        free(hex);
        return mm_error_set(err, MM_ERR_NOMEM, "%s: out of memory", path);
    }
    sodium_bin2hex(hex, 2 * len + 1, key, len);
    int n = snprintf(text, cap, "%s\n%s\n", magic, hex);
    sodium_memzero(hex, 2 * len + 1);
    free(hex);
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp) {
        free(text);
        return mm_error_set(err, MM_ERR_INVALID, "%s: path too long", path);
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        free(text);
        return mm_error_set(err, MM_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    }
    bool ok = write(fd, text, (size_t)n) == n && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    sodium_memzero(text, cap);
    free(text);
    if (ok && replace) {
        if (rename(tmp, path) == 0) return MM_OK;
        int e = errno;
        unlink(tmp);
        return mm_error_set(err, MM_ERR_IO, "%s: cannot write: %s", path, strerror(e));
    }
    /* link(), not rename(): never replace an existing key. */
    if (!ok || link(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        if (e == EEXIST) return mm_error_set(err, MM_ERR_IO, "%s: already exists; keys are never overwritten", path);
        return mm_error_set(err, MM_ERR_IO, "%s: cannot write: %s", path, strerror(e));
    }
    unlink(tmp);
    return MM_OK;
}

static int write_key(const char *path, const char *magic, const uint8_t *key, size_t len, mm_error *err)
{
    return write_file(path, magic, key, len, false, err);
}

/* Read "magic\nhex\n" of exactly len bytes (secret: refuse a file others may read). */
static int read_file(const char *path, const char *magic, uint8_t *key, size_t len, bool secret, mm_error *err)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) return mm_error_set(err, MM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return mm_error_set(err, MM_ERR_IO, "%s: not a regular file", path);
    }
    if (secret && (st.st_mode & 077)) {
        close(fd);
        return mm_error_set(err, MM_ERR_INVALID,
                            "%s: key file is readable by others (mode %03o); run: chmod 600 %s", path,
                            (unsigned)(st.st_mode & 0777), path);
    }
    static char text[TEXT_MAX + 1];
    ssize_t n = read(fd, text, sizeof text - 1);
    int read_errno = errno;
    close(fd);
    if (n < 0) return mm_error_set(err, MM_ERR_IO, "%s: cannot read: %s", path, strerror(read_errno));
    text[n] = '\0';
    size_t ml = strlen(magic);
    int rc = MM_OK;
    const char *end = NULL;
    if ((size_t)n < ml + 1 || memcmp(text, magic, ml) != 0 || text[ml] != '\n')
        rc = mm_error_set(err, MM_ERR_FORMAT, "%s: not a %s file", path, magic);
    else if (sodium_hex2bin(key, len, text + ml + 1, (size_t)n - ml - 1, NULL, NULL, &end) != 0 ||
             (size_t)(end - (text + ml + 1)) != 2 * len || (*end != '\n' && *end != '\0'))
        rc = mm_error_set(err, MM_ERR_FORMAT, "%s: key is not %zu bytes of hex", path, len);
    sodium_memzero(text, (size_t)n);
    return rc;
}

static int read_key(const char *path, const char *magic, uint8_t *key, size_t len, mm_error *err)
{
    return read_file(path, magic, key, len, true, err);
}

int mm_key_write_identity(const char *path, mm_error *err)
{
    uint8_t pk[32], sk[64];
    if (sodium_init() < 0) return mm_error_set(err, MM_ERR_INVALID, "libsodium failed to initialise");
    crypto_sign_keypair(pk, sk);
    int rc = write_key(path, id_magic, sk, sizeof sk, err);
    sodium_memzero(sk, sizeof sk);
    return rc;
}

int mm_key_write_netkey(const char *path, mm_error *err)
{
    uint8_t k[32];
    if (sodium_init() < 0) return mm_error_set(err, MM_ERR_INVALID, "libsodium failed to initialise");
    randombytes_buf(k, sizeof k);
    int rc = write_key(path, net_magic, k, sizeof k, err);
    sodium_memzero(k, sizeof k);
    return rc;
}

int mm_key_read_identity(const char *path, uint8_t sk[64], mm_error *err)
{
    int rc = read_key(path, id_magic, sk, 64, err);
    if (rc) return rc;
    /* The second half must be the public key of the first (a truncated or
     * edited file is caught here, not at the first handshake). */
    uint8_t pk[32], sk2[64];
    crypto_sign_seed_keypair(pk, sk2, sk);
    bool ok = sodium_memcmp(sk2, sk, 64) == 0;
    sodium_memzero(sk2, sizeof sk2);
    return ok ? MM_OK : mm_error_set(err, MM_ERR_FORMAT, "%s: the key's two halves do not match", path);
}

int mm_key_read_netkey(const char *path, uint8_t key[32], mm_error *err)
{
    return read_key(path, net_magic, key, 32, err);
}

int mm_key_write_cert(const char *path, const uint8_t cert[MM_CERT_BYTES], mm_error *err)
{
    return write_file(path, cert_magic, cert, MM_CERT_BYTES, true, err);
}

int mm_key_read_cert(const char *path, uint8_t cert[MM_CERT_BYTES], mm_error *err)
{
    int rc = read_file(path, cert_magic, cert, MM_CERT_BYTES, false, err);
    mm_cert c;
    if (rc == MM_OK && mm_cert_decode(&c, cert) != MM_CERT_OK)
        rc = mm_error_set(err, MM_ERR_FORMAT, "%s: certificate of an unknown version (%u) or with reserved bits set",
                          path, c.ver);
    return rc;
}

int mm_key_write_revocations(const char *path, const mm_revlist *l, mm_error *err)
{
    static mm_msg m;
    static uint8_t buf[MM_FRAME_CTRL_MAX];
    m.type = MM_MSG_REVOKE;
    m.u.revoke = *l;
    long n = mm_msg_encode(&m, buf, sizeof buf);
    if (n < 0) return mm_error_set(err, MM_ERR_INVALID, "%s: revocation list cannot be encoded (%u entries)", path, l->n);
    return write_file(path, rev_magic, buf, (size_t)n, true, err);
}

int mm_key_read_revocations(const char *path, mm_revlist *l, mm_error *err)
{
    /* The list's length is not known before it is parsed: read the hex as
     * one line, then decode the bytes it holds. */
    FILE *f = fopen(path, "r");
    if (!f) return mm_error_set(err, MM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    static char text[TEXT_MAX + 2];
    static uint8_t bin[MM_FRAME_CTRL_MAX];
    static mm_msg m;
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    size_t ml = strlen(rev_magic), blen = 0;
    const char *end = NULL;
    if (n < ml + 1 || memcmp(text, rev_magic, ml) != 0 || text[ml] != '\n')
        return mm_error_set(err, MM_ERR_FORMAT, "%s: not a %s file", path, rev_magic);
    if (n == sizeof text - 1)
        return mm_error_set(err, MM_ERR_FORMAT, "%s: too large for a revocation list", path);
    if (sodium_hex2bin(bin, sizeof bin, text + ml + 1, n - ml - 1, NULL, &blen, &end) != 0 || (*end != '\n' && *end))
        return mm_error_set(err, MM_ERR_FORMAT, "%s: the list is not hex", path);
    mm_error derr = {0};
    if (mm_msg_decode(&m, bin, blen, &derr) != MM_OK || m.type != MM_MSG_REVOKE)
        return mm_error_set(err, MM_ERR_FORMAT, "%s: not a revocation list (%s)", path,
                            derr.msg[0] ? derr.msg : "another message");
    *l = m.u.revoke;
    return MM_OK;
}

int mm_key_parse_pub(const char *hex, uint8_t pk[32])
{
    size_t len = 0;
    const char *end = NULL;
    if (!hex || strlen(hex) != 64 || sodium_hex2bin(pk, 32, hex, 64, NULL, &len, &end) != 0 || len != 32 || *end)
        return MM_ERR_FORMAT;
    return MM_OK;
}
