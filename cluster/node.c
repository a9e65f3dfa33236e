/* node — the node list's entries, the commit acknowledgement rule and the
 * shared secret. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cluster/cluster.h"
#include "common/net.h"

static bool id_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.';
}

bool dsq_node_id_valid(const char *s, size_t n)
{
    if (n == 0 || n >= DSQ_NODE_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!id_char(s[i]))
            return false;
    return true;
}

int dsq_node_parse(const char *s, dsq_node *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    const char *at = strchr(s, '@');
    if (at == NULL) {
        snprintf(err, errlen, "'%.100s' is not ID@HOST:PORT", s);
        return -1;
    }
    size_t idlen = (size_t)(at - s);
    if (idlen == 0 || idlen >= sizeof out->id) {
        snprintf(err, errlen, "'%.100s': a node id has 1 to %d characters", s, DSQ_NODE_ID_MAX - 1);
        return -1;
    }
    for (size_t i = 0; i < idlen; i++) {
        if (!id_char(s[i])) {
            snprintf(err, errlen, "'%.100s': a node id has letters, digits, '-', '_' and '.' only", s);
            return -1;
        }
    }
    memcpy(out->id, s, idlen);
    if (strlen(at + 1) >= sizeof out->addr_text || dsq_parse_addr(at + 1, &out->addr) != 0) {
        snprintf(err, errlen, "'%.100s': '%.80s' is not HOST:PORT (an IP address or localhost, and a port)", s,
                 at + 1);
        return -1;
    }
    const struct sockaddr_in *in4 = (const struct sockaddr_in *)&out->addr;
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&out->addr;
    if ((out->addr.ss_family == AF_INET ? in4->sin_port : in6->sin6_port) == 0) {
        snprintf(err, errlen, "'%.100s': a node needs a port of its own (not 0)", s);
        return -1;
    }
    snprintf(out->addr_text, sizeof out->addr_text, "%s", at + 1);
    return 0;
}

int dsq_commit_ack_parse(const char *s, dsq_commit_ack *out)
{
    if (strcmp(s, "quorum") == 0)
        *out = DSQ_ACK_QUORUM;
    else if (strcmp(s, "all") == 0)
        *out = DSQ_ACK_ALL;
    else if (strcmp(s, "local") == 0)
        *out = DSQ_ACK_LOCAL;
    else
        return -1;
    return 0;
}

unsigned dsq_commit_ack_needed(dsq_commit_ack ack, unsigned copies)
{
    if (copies == 0)
        return 0;
    switch (ack) {
    case DSQ_ACK_ALL: return copies;
    case DSQ_ACK_LOCAL: return 1;
    default: return copies / 2 + 1;
    }
}

int dsq_open_secret_file(const char *path, const char *holds, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* (a FIFO named by mistake must not hang the start) */
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %.300s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%.300s is not a regular file", path);
        close(fd);
        return -1;
    }
    if (st.st_mode & S_IROTH) {
        snprintf(err, errlen, "%.300s is readable by every user; chmod o-r it (it holds %s)", path, holds);
        close(fd);
        return -1;
    }
    return fd;
}

int dsq_cluster_read_secret(const char *path, char *out, size_t cap, char *err, size_t errlen)
{
    int fd = dsq_open_secret_file(path, "the nodes' secret", err, errlen);
    if (fd < 0)
        return -1;
    char buf[DSQ_SECRET_MAX + 2];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n < 0) {
        snprintf(err, errlen, "cannot read %.300s: %s", path, strerror(errno));
        return -1;
    }
    buf[n] = '\0';
    size_t len = strcspn(buf, "\n");
    while (len > 0 && (buf[len - 1] == ' ' || buf[len - 1] == '\t' || buf[len - 1] == '\r'))
        len--;
    if (len < DSQ_SECRET_MIN || len > DSQ_SECRET_MAX || len + 1 > cap) {
        snprintf(err, errlen, "%.300s: the secret's first line must have %d to %d characters (it has %zu)", path,
                 DSQ_SECRET_MIN, DSQ_SECRET_MAX, len);
        return -1;
    }
    memcpy(out, buf, len);
    out[len] = '\0';
    return 0;
}
