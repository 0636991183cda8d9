/* Small runtime helpers for the command-line tools (clock, memory). */
#ifndef MM_UTIL_H
#define MM_UTIL_H

#include <stdint.h>

/* Monotonic clock in seconds. */
double mm_now_s(void);
/* Peak resident set size of this process in KiB. */
long mm_peak_rss_kib(void);

#endif
