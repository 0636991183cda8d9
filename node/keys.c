#include "keys.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char id_magic[] = "murmur-identity-v1", net_magic[] = "murmur-netkey-v1";

/* Write "magic\nhex\n" to path atomically (temp file, fsync, rename), mode 0600. */
static int write_key(const char *path, const char *magic, const uint8_t *key, size_t len, mm_error *err)
{
    char hex[2 * 64 + 1], tmp[4096], text[256];
    sodium_bin2hex(hex, sizeof hex, key, len);
    int n = snprintf(text, sizeof text, "%s\n%s\n", magic, hex);
    sodium_memzero(hex, sizeof hex);
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return mm_error_set(err, MM_ERR_INVALID, "%s: path too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0) return mm_error_set(err, MM_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    bool ok = write(fd, text, (size_t)n) == n && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    sodium_memzero(text, sizeof text);
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

static int read_key(const char *path, const char *magic, uint8_t *key, size_t len, mm_error *err)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) return mm_error_set(err, MM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return mm_error_set(err, MM_ERR_IO, "%s: not a regular file", path);
    }
    if (st.st_mode & 077) {
        close(fd);
        return mm_error_set(err, MM_ERR_INVALID,
                            "%s: key file is readable by others (mode %03o); run: chmod 600 %s", path,
                            (unsigned)(st.st_mode & 0777), path);
    }
    char text[512];
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n < 0) return mm_error_set(err, MM_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
    text[n] = '\0';
    size_t ml = strlen(magic);
    int rc = MM_OK;
    const char *end = NULL;
    if ((size_t)n < ml + 1 || memcmp(text, magic, ml) != 0 || text[ml] != '\n')
        rc = mm_error_set(err, MM_ERR_FORMAT, "%s: not a %s file", path, magic);
    else if (sodium_hex2bin(key, len, text + ml + 1, (size_t)n - ml - 1, NULL, NULL, &end) != 0 ||
             (size_t)(end - (text + ml + 1)) != 2 * len || (*end != '\n' && *end != '\0'))
        rc = mm_error_set(err, MM_ERR_FORMAT, "%s: key is not %zu bytes of hex", path, len);
    sodium_memzero(text, sizeof text);
    return rc;
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
