/*
 * srcaddr.c - LD_PRELOAD shim that makes a client's IPv4 TCP connections
 * leave from the loopback address in $WARD_TEST_SOURCE (e.g. 127.0.0.42).
 *
 * Why: DCMTK's tools have no option to choose their source address, and
 * the lockout tests must call from many addresses of one /24, as a
 * guesser rotating its address would. Only 127.0.0.0/8 addresses are
 * used; without the variable, or for another family, connect() is left
 * alone.
 *
 * Build: gcc -shared -fPIC -O2 -o libsrcaddr.so srcaddr.c -ldl
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*connect_fn)(int, const struct sockaddr *, socklen_t);

int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    static connect_fn real_connect = 0;
    if (!real_connect)
        real_connect = (connect_fn)dlsym(RTLD_NEXT, "connect");

    const char *src = getenv("WARD_TEST_SOURCE");
    if (src && addr && addr->sa_family == AF_INET) {
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        if (inet_pton(AF_INET, src, &a.sin_addr) == 1 && (ntohl(a.sin_addr.s_addr) >> 24) == 127)
            bind(fd, (const struct sockaddr *)&a, sizeof a);
    }
    return real_connect(fd, addr, len);
}
