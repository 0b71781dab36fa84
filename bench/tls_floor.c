/* The floor of a TLS-terminating relay in C, for bench/db.py to run beside our proxy.
 *
 * The twin of bench/tls_floor.py with the same arguments and the same work: terminate the
 * client's TLS (with the database's server certificate), open a TLS connection of its own to
 * the database (with a db-CA client certificate) after the protocol's TLS preamble, then move
 * bytes. No parsing, no authorization, no audit. One thread and one epoll loop, as pgbouncer
 * and HAProxy run in the bench, on the OpenSSL that Python's ssl module uses.
 *
 * It measures the steady state, not connection set-up: the preamble and both handshakes of a
 * new connection run blocking, and a write the kernel cannot take at once waits for it.
 *
 * Build: cc -O2 -o tls_floor bench/tls_floor.c -lssl -lcrypto (bench/db.py does it).
 * Run:   tls_floor {postgres|mysql} PORT DB_PORT CERT KEY CA CLIENT_CERT CLIENT_KEY
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static const unsigned char SSL_REQUEST[8] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};

struct side {
    int fd;
    SSL *ssl;
    struct side *peer;
    struct side *next_closed; /* freed after the epoll batch that may still name it */
    int closed;
};

static struct side *closed_sides;

static void fail(const char *what) {
    fprintf(stderr, "tls_floor: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

static int exactly(int fd, unsigned char *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = recv(fd, buf + got, n - got, 0);
        if (r <= 0) return -1;
        got += (size_t)r;
    }
    return 0;
}

static int send_all(int fd, const unsigned char *buf, size_t n) {
    size_t sent = 0;
    while (sent < n) {
        ssize_t r = send(fd, buf + sent, n - sent, MSG_NOSIGNAL);
        if (r <= 0) return -1;
        sent += (size_t)r;
    }
    return 0;
}

/* One MySQL packet (4-byte header, at most sizeof buf) from `from` passed on to `to`. */
static int pass_mysql_packet(int from, int to) {
    unsigned char buf[65536];
    if (exactly(from, buf, 4) < 0) return -1;
    size_t len = buf[0] | (buf[1] << 8) | ((size_t)buf[2] << 16);
    if (len > sizeof buf - 4) return -1;
    if (exactly(from, buf + 4, len) < 0) return -1;
    return send_all(to, buf, len + 4);
}

static int preamble(int postgres, int client, int server) {
    if (postgres) {
        unsigned char buf[8];
        if (exactly(client, buf, 8) < 0 || memcmp(buf, SSL_REQUEST, 8) != 0) return -1;
        if (send_all(client, (const unsigned char *)"S", 1) < 0) return -1;
        if (send_all(server, SSL_REQUEST, 8) < 0) return -1;
        if (exactly(server, buf, 1) < 0 || buf[0] != 'S') return -1;
        return 0;
    }
    if (pass_mysql_packet(server, client) < 0) return -1; /* the greeting */
    return pass_mysql_packet(client, server);             /* the client's SSLRequest */
}

static void close_pair(struct side *a) {
    struct side *both[2] = {a, a->peer};
    for (int i = 0; i < 2; i++) {
        SSL_free(both[i]->ssl);
        close(both[i]->fd); /* closing also removes it from the epoll set */
        both[i]->closed = 1;
        both[i]->next_closed = closed_sides;
        closed_sides = both[i];
    }
}

/* Write all of buf to the side's TLS, waiting for the socket when it is full. */
static int tls_write(struct side *to, const unsigned char *buf, int n) {
    while (n > 0) {
        int w = SSL_write(to->ssl, buf, n);
        if (w > 0) {
            buf += w;
            n -= w;
            continue;
        }
        int err = SSL_get_error(to->ssl, w);
        if (err != SSL_ERROR_WANT_WRITE && err != SSL_ERROR_WANT_READ) return -1;
        struct pollfd p = {to->fd, err == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN, 0};
        if (poll(&p, 1, 60000) <= 0) return -1;
    }
    return 0;
}

/* What `from` has ready relayed to its peer: one read of the socket, and every record OpenSSL
 * holds from it. The socket is not read again until empty (no read that only finds EAGAIN):
 * epoll is level-triggered and reports what is left. */
static int relay(struct side *from) {
    unsigned char buf[16384];
    for (;;) {
        int r = SSL_read(from->ssl, buf, sizeof buf);
        if (r > 0) {
            if (tls_write(from->peer, buf, r) < 0) return -1;
            if (!SSL_has_pending(from->ssl)) return 0;
            continue;
        }
        int err = SSL_get_error(from->ssl, r);
        ERR_clear_error(); /* a client that ends without close_notify is the usual end here */
        return err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE ? 0 : -1;
    }
}

static void nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

int main(int argc, char **argv) {
    if (argc != 9 || (strcmp(argv[1], "postgres") != 0 && strcmp(argv[1], "mysql") != 0)) {
        fprintf(stderr, "usage: tls_floor {postgres|mysql} PORT DB_PORT CERT KEY CA CLIENT_CERT "
                        "CLIENT_KEY\n");
        return 2;
    }
    int postgres = strcmp(argv[1], "postgres") == 0;
    int port = atoi(argv[2]), db_port = atoi(argv[3]);
    signal(SIGPIPE, SIG_IGN);

    SSL_CTX *inbound = SSL_CTX_new(TLS_server_method());
    if (!inbound || SSL_CTX_use_certificate_chain_file(inbound, argv[4]) != 1 ||
        SSL_CTX_use_PrivateKey_file(inbound, argv[5], SSL_FILETYPE_PEM) != 1)
        fail("cannot load the server certificate");
    SSL_CTX *outbound = SSL_CTX_new(TLS_client_method());
    if (!outbound || SSL_CTX_load_verify_locations(outbound, argv[6], NULL) != 1 ||
        SSL_CTX_use_certificate_chain_file(outbound, argv[7]) != 1 ||
        SSL_CTX_use_PrivateKey_file(outbound, argv[8], SSL_FILETYPE_PEM) != 1)
        fail("cannot load the client certificate or the CA");
    SSL_CTX_set_verify(outbound, SSL_VERIFY_PEER, NULL);

    int listener = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in at = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (struct sockaddr *)&at, sizeof at) < 0 || listen(listener, 512) < 0)
        fail("cannot listen");
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev);

    struct epoll_event ready[64];
    for (;;) {
        int n = epoll_wait(ep, ready, 64, -1);
        if (n < 0 && errno == EINTR) continue;
        for (int i = 0; i < n; i++) {
            struct side *side = ready[i].data.ptr;
            if (side != NULL) {
                if (!side->closed && relay(side) < 0) close_pair(side);
                continue;
            }
            int client = accept(listener, NULL, NULL);
            if (client < 0) continue;
            int server = socket(AF_INET, SOCK_STREAM, 0);
            struct sockaddr_in db = {.sin_family = AF_INET, .sin_port = htons((uint16_t)db_port)};
            db.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            SSL *in = SSL_new(inbound), *out = SSL_new(outbound);
            setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            SSL_set_fd(in, client);
            SSL_set_fd(out, server);
            if (connect(server, (struct sockaddr *)&db, sizeof db) < 0 ||
                preamble(postgres, client, server) < 0 || SSL_connect(out) != 1 ||
                SSL_accept(in) != 1) {
                fprintf(stderr, "tls_floor: a connection failed in its set-up\n");
                ERR_clear_error();
                SSL_free(in);
                SSL_free(out);
                close(client);
                close(server);
                continue;
            }
            struct side *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
            if (!a || !b) fail("out of memory");
            *a = (struct side){client, in, b, NULL, 0};
            *b = (struct side){server, out, a, NULL, 0};
            struct side *both[2] = {a, b};
            for (int k = 0; k < 2; k++) {
                nonblocking(both[k]->fd);
                struct epoll_event e = {.events = EPOLLIN, .data.ptr = both[k]};
                epoll_ctl(ep, EPOLL_CTL_ADD, both[k]->fd, &e);
            }
        }
        while (closed_sides != NULL) {
            struct side *next = closed_sides->next_closed;
            free(closed_sides);
            closed_sides = next;
        }
    }
}
