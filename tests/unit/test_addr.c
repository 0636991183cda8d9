/* gossip/addr.c: parsing address text and grouping it into the prefixes and
 * sources the per-address limits count (SECURITY.md §2.5, §2.6). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka.h needs the headers above first. */
#include <cmocka.h>
#include <string.h>

#include "addr.h"

static void test_parse_v4(void **state)
{
    (void)state;
    mm_ip ip;
    assert_int_equal(mm_ip_parse("10.1.2.3:7000", &ip), 0);
    assert_int_equal(ip.family, 4);
    assert_memory_equal(ip.ip, ((uint8_t[]){10, 1, 2, 3}), 4);
    assert_int_equal(ip.port, 7000);
    assert_false(ip.loopback);
    assert_int_equal(mm_ip_parse("255.255.255.255", &ip), 0);
    assert_int_equal(ip.port, 0);
    assert_int_equal(mm_ip_parse("127.8.0.1:1", &ip), 0);
    assert_true(ip.loopback);
    assert_int_equal(mm_ip_parse("0.0.0.0:65535", &ip), 0);
    assert_int_equal(ip.port, 65535);
    static const char *const bad[] = {
        "", ":80", "10.1.2:80", "10.1.2.3.4:80", "256.1.2.3:80", "10.01.2.3:80", "10.1.2.3:", "10.1.2.3:65536",
        "10.1.2.3:8x", "10.1.2.3:-1", "1234.1.2.3", "a.b.c.d:1", "10..2.3:1", " 10.1.2.3:1", "node.example:80",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(mm_ip_parse(bad[i], &ip), -1);
        assert_int_equal(ip.family, 0);
    }
}

static void test_parse_v6(void **state)
{
    (void)state;
    mm_ip ip;
    const uint8_t db8[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 5};
    static const char *const same[] = {"[2001:db8:1:2::5]:7000", "[2001:0db8:0001:0002:0000:0000:0000:0005]:7000",
                                       "[2001:DB8:1:2:0:0:0:5]:7000", "[2001:db8:1:2:0::5]:7000"};
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
        assert_int_equal(mm_ip_parse(same[i], &ip), 0);
        assert_int_equal(ip.family, 6);
        assert_memory_equal(ip.ip, db8, 16);
        assert_int_equal(ip.port, 7000);
        assert_false(ip.loopback);
    }
    assert_int_equal(mm_ip_parse("[::1]:9", &ip), 0);
    assert_true(ip.loopback);
    assert_int_equal(mm_ip_parse("[::]", &ip), 0);
    assert_false(ip.loopback);
    assert_int_equal(mm_ip_parse("[1::]:1", &ip), 0);
    assert_int_equal(ip.ip[1], 1);
    assert_int_equal(mm_ip_parse("[::ffff:1.2.3.4]:5", &ip), 0); /* IPv4-mapped: IPv4 */
    assert_int_equal(ip.family, 4);
    assert_memory_equal(ip.ip, ((uint8_t[]){1, 2, 3, 4}), 4);
    assert_int_equal(mm_ip_parse("[::ffff:127.0.0.1]:5", &ip), 0);
    assert_true(ip.loopback);
    assert_int_equal(mm_ip_parse("[64:ff9b::10.0.0.1]:5", &ip), 0); /* a dotted tail, not mapped */
    assert_int_equal(ip.family, 6);
    assert_int_equal(ip.ip[15], 1);
    static const char *const bad[] = {
        "[]:1",        "[:]:1",         "[:::]:1",          "[1:2:3:4:5:6:7:8:9]:1", "[1::2::3]:1", "[12345::]:1",
        "[1:2:3:4:5:6:7]:1", "[g::1]:1", "[::1",         "[::1]x",               "[::1]:",      "[fe80::1%eth0]:1",
        "[1:]:1",      "[:1]:1",        "[::1.2.3]:1",     "[1:2:3:4:5:6:7:1.2.3.4]:1", "::1:80",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = mm_ip_parse(bad[i], &ip);
        if (rc != -1) fail_msg("accepted %s", bad[i]);
        assert_int_equal(ip.family, 0);
    }
}

static void test_prefixes(void **state)
{
    (void)state;
    /* IPv4 /24 */
    assert_true(mm_addr_prefix("10.1.2.3:1") != 0);
    assert_true(mm_addr_prefix("10.1.2.3:1") == mm_addr_prefix("10.1.2.200:9"));
    assert_true(mm_addr_prefix("10.1.2.3:1") != mm_addr_prefix("10.1.3.3:1"));
    assert_true(mm_addr_prefix("10.1.2.3:1") == mm_addr_prefix("[::ffff:10.1.2.77]:1"));
    /* IPv6 /48 */
    assert_true(mm_addr_prefix("[2001:db8:7:1::1]:1") == mm_addr_prefix("[2001:db8:7:ffff::9]:2"));
    assert_true(mm_addr_prefix("[2001:db8:7::1]:1") != mm_addr_prefix("[2001:db8:8::1]:1"));
    /* an IPv6 address whose first bytes spell an IPv4 /24 is not that /24 */
    assert_true(mm_addr_prefix("[a01:200::]:1") != mm_addr_prefix("10.1.2.0:1"));
    /* none: loopback, names, garbage */
    assert_true(mm_addr_prefix("127.0.0.1:1") == 0);
    assert_true(mm_addr_prefix("[::1]:1") == 0);
    assert_true(mm_addr_prefix("node.example:80") == 0);
    assert_true(mm_addr_prefix("") == 0);
    assert_true(mm_addr_prefix(NULL) == 0);
    char t[48];
    mm_addr_prefix_text(mm_addr_prefix("10.1.2.3:1"), t, sizeof t);
    assert_string_equal(t, "10.1.2.0/24");
    mm_addr_prefix_text(mm_addr_prefix("[2001:db8:7:1::1]:1"), t, sizeof t);
    assert_string_equal(t, "2001:db8:7::/48");
}

static size_t src(const char *a, uint8_t out[65]) { return mm_addr_source_bytes(a, out); }

static bool same_source(const char *a, const char *b)
{
    uint8_t x[65], y[65];
    size_t n = src(a, x), m = src(b, y);
    return n == m && memcmp(x, y, n) == 0;
}

static void test_sources(void **state)
{
    (void)state;
    assert_true(same_source("10.1.2.3:1", "10.1.2.3:2"));             /* /32, any port */
    assert_false(same_source("10.1.2.3:1", "10.1.2.4:1"));
    assert_true(same_source("[2001:db8::1:1]:1", "[2001:db8::2:2]:7")); /* /64 */
    assert_false(same_source("[2001:db8:0:1::1]:1", "[2001:db8:0:2::1]:1"));
    assert_false(same_source("127.0.0.1:1", "127.0.0.1:2")); /* loopback: each connection */
    assert_true(same_source("127.0.0.1:1", "127.0.0.1:1"));
    assert_false(same_source("[::1]:1", "[::1]:2"));
    assert_true(same_source("node.example:1", "node.example:2")); /* a name without its port */
    assert_false(same_source("node.example:1", "other.example:1"));
    uint8_t b[65];
    assert_true(src("10.1.2.3:1", b) == 5 && b[0] == 4);
    assert_true(src("[2001:db8::1]:1", b) == 9 && b[0] == 6);
    char long_name[200];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    assert_true(src(long_name, b) <= 65);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_v4),
        cmocka_unit_test(test_parse_v6),
        cmocka_unit_test(test_prefixes),
        cmocka_unit_test(test_sources),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
