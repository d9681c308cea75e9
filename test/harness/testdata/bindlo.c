/* bindlo.c: LD_PRELOAD library for Ward's tests (test/harness). DCMTK storescp and
 * Orthanc 1.10 have no listen-address option and bind the wildcard address;
 * this turns a wildcard bind() into a loopback one, so that the peers the
 * tests start are reachable from this machine only. Other addresses pass
 * through. Build: gcc -shared -fPIC -o libbindlo.so bindlo.c -ldl */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

int bind(int sock, const struct sockaddr *sa, socklen_t salen)
{
	static int (*next)(int, const struct sockaddr *, socklen_t);
	if (next == NULL)
		next = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");
	if (sa != NULL && sa->sa_family == AF_INET && salen >= (socklen_t)sizeof(struct sockaddr_in)) {
		struct sockaddr_in v4;
		memcpy(&v4, sa, sizeof v4);
		if (v4.sin_addr.s_addr == htonl(INADDR_ANY)) {
			v4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
			return next(sock, (struct sockaddr *)&v4, sizeof v4);
		}
	}
	if (sa != NULL && sa->sa_family == AF_INET6 && salen >= (socklen_t)sizeof(struct sockaddr_in6)) {
		struct sockaddr_in6 v6;
		memcpy(&v6, sa, sizeof v6);
		if (IN6_IS_ADDR_UNSPECIFIED(&v6.sin6_addr)) {
			v6.sin6_addr = in6addr_loopback;
			return next(sock, (struct sockaddr *)&v6, sizeof v6);
		}
	}
	return next(sock, sa, salen);
}
