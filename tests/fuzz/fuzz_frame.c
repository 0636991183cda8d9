/* Fuzz target: the input is a received byte stream. Frames are parsed and
 * opened with a fixed-key mm_record, once per cipher, until one fails (a
 * real connection would close there). Nothing may crash or read out of
 * bounds, and a frame that opens must re-seal to the identical bytes. */
#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "record.h"

/* The valid frames of the seed corpus are sealed with this key (both
 * directions) and rekey period, so that rekeying is reached too. */
#define FUZZ_REKEY_EVERY 4
static const uint8_t FUZZ_KEY[32] = {0x6d, 0x75, 0x72, 0x6d, 0x75, 0x72, 0x20, 0x66, 0x75, 0x7a, 0x7a,
                                     0x5f, 0x66, 0x72, 0x61, 0x6d, 0x65, 0x20, 0x6b, 0x65, 0x79, 0x20,
                                     0x30, 0x30, 0x30, 0x31, 0x02, 0x03, 0x05, 0x07, 0x0b, 0x0d};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void run_stream(mm_cipher cipher, const uint8_t *data, size_t size)
{
    static uint8_t pt[MM_FRAME_MAX_PLAIN], again[MM_FRAME_HEADER + MM_FRAME_MAX_PLAIN + MM_FRAME_TAG];
    mm_record rx, tx; /* tx mirrors the sender, to check the re-seal */
    if (mm_record_init(&rx, cipher, FUZZ_KEY, FUZZ_KEY) != 0) return;
    if (mm_record_init(&tx, cipher, FUZZ_KEY, FUZZ_KEY) != 0) abort();
    rx.rekey_every = tx.rekey_every = FUZZ_REKEY_EVERY;
    size_t pos = 0;
    while (size - pos >= MM_FRAME_HEADER) {
        mm_frame_hdr h;
        const uint8_t *hdr = data + pos;
        if (mm_frame_parse_header(hdr, &h) != 0) break;
        if (h.len < MM_FRAME_TAG || h.len - MM_FRAME_TAG > MM_FRAME_MAX_PLAIN) abort();
        if (size - pos - MM_FRAME_HEADER < h.len) break; /* truncated */
        if (mm_record_open(&rx, &h, hdr, hdr + MM_FRAME_HEADER, pt) != 0) break;
        size_t n = h.len - MM_FRAME_TAG;
        long fl = mm_record_seal(&tx, (mm_frame_type)h.type, h.xid, h.offset, pt, n, again, sizeof again);
        if (fl != (long)(MM_FRAME_HEADER + h.len) || memcmp(again, hdr, (size_t)fl) != 0) abort();
        pos += MM_FRAME_HEADER + h.len;
    }
    mm_record_wipe(&rx);
    mm_record_wipe(&tx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (sodium_init() < 0) abort();
    run_stream(MM_CIPHER_CHACHA, data, size);
    run_stream(MM_CIPHER_AESGCM, data, size); /* skipped where AES-GCM is absent */
    return 0;
}
