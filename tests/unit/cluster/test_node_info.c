/* Unit tests: cluster/cluster — what a node tells the others of itself
 * (DSQ_CLUSTER_NODE_INFO): where it takes the clients they pass on. */
#include <criterion/criterion.h>
#include <string.h>

#include "cluster/cluster.h"
#include "cluster/wire.h"

Test(node_info, both_addresses_round_trip)
{
    dsq_buf b = DSQ_BUF_INIT;
    cr_assert_eq(dsq_node_info_encode(&b, "10.0.0.1:8787", "10.0.0.1:40123"), 0);
    char client[80], forward[80];
    cr_assert_eq(dsq_node_info_decode(b.data, b.len, client, forward, sizeof client), 0);
    cr_assert_str_eq(client, "10.0.0.1:8787");
    cr_assert_str_eq(forward, "10.0.0.1:40123");
    dsq_buf_reset(&b);
    /* Either may be missing (no plain client listener; no TLS). */
    cr_assert_eq(dsq_node_info_encode(&b, "", "[::1]:7201"), 0);
    cr_assert_eq(dsq_node_info_decode(b.data, b.len, client, forward, sizeof client), 0);
    cr_assert_str_eq(client, "");
    cr_assert_str_eq(forward, "[::1]:7201");
    dsq_buf_free(&b);
}

/* A node that sends the clients' address alone (one that knows no
 * second field) is read as telling no TLS address; one that reads the
 * first field alone still finds it. */
Test(node_info, compatible_with_a_node_that_knows_one_field)
{
    dsq_buf b = DSQ_BUF_INIT;
    cr_assert_eq(dsq_w_str(&b, "127.0.0.1:8787"), 0);
    char client[80], forward[80] = "stale";
    cr_assert_eq(dsq_node_info_decode(b.data, b.len, client, forward, sizeof client), 0);
    cr_assert_str_eq(client, "127.0.0.1:8787");
    cr_assert_str_eq(forward, "");
    dsq_buf_reset(&b);

    cr_assert_eq(dsq_node_info_encode(&b, "127.0.0.1:8787", "127.0.0.1:9000"), 0);
    dsq_rd rd = dsq_rd_of(b.data, b.len);
    char old[80];
    dsq_r_str(&rd, old, sizeof old);
    cr_assert_not(rd.bad);
    cr_assert_str_eq(old, "127.0.0.1:8787");
    dsq_buf_free(&b);
}

Test(node_info, malformed_is_refused)
{
    char client[80] = "x", forward[80] = "y";
    cr_assert_eq(dsq_node_info_decode("", 0, client, forward, sizeof client), -1);
    cr_assert_str_eq(client, "");
    cr_assert_str_eq(forward, "");
    const char cut[] = "\x05" "ab"; /* says 5 bytes, has 2 */
    cr_assert_eq(dsq_node_info_decode(cut, 3, client, forward, sizeof client), -1);
    const char second_cut[] = "\x01" "a" "\x09" "b";
    cr_assert_eq(dsq_node_info_decode(second_cut, 4, client, forward, sizeof client), -1);
    cr_assert_str_eq(client, "", "nothing half-read is kept");
    /* An address longer than the room. */
    dsq_buf b = DSQ_BUF_INIT;
    cr_assert_eq(dsq_node_info_encode(&b, "127.0.0.1:1", "0123456789012345678901234567890123456789"), 0);
    char small[16];
    cr_assert_eq(dsq_node_info_decode(b.data, b.len, client, small, sizeof small), -1);
    char huge[300];
    memset(huge, 'a', sizeof huge - 1);
    huge[sizeof huge - 1] = '\0';
    cr_assert_eq(dsq_node_info_encode(&b, "", huge), -1, "a string field holds at most 255 bytes");
    dsq_buf_free(&b);
}
