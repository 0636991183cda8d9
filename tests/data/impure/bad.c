#include <time.h>
static long now(void) { return (long)time(0); }
