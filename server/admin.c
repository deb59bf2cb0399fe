/* server/admin.c - the admin HTTP endpoint on libmicrohttpd.
 *
 *   GET /metrics  Prometheus text exposition 0.0.4 (metrics.c)
 *   GET /healthz  200 while the process serves
 *   GET /readyz   200 when the node takes clients, else 503 with the reason
 *
 * Anything else is 404; a method other than GET or HEAD is 405. The
 * endpoint is meant for loopback or a management network: it has no
 * authentication, so bind it accordingly.
 */
#include "tether/admin.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <microhttpd.h>

#include "tether/metrics.h"
#include "tether/netaddr.h"
#include "tether/sbuf.h"

struct admin {
	struct MHD_Daemon *d;
	admin_ready_fn *ready;
	void *ud;
};

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type,
			     const char *body, size_t len)
{
	struct MHD_Response *r =
		MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	enum MHD_Result ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result text(struct MHD_Connection *c, unsigned status, const char *s)
{
	return reply(c, status, "text/plain; charset=utf-8", s, strlen(s));
}

static enum MHD_Result serve_metrics(struct MHD_Connection *c)
{
	struct sbuf b = SBUF_INIT;
	enum MHD_Result ret;
	if (metrics_render(&b))
		ret = text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
	else
		ret = reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len);
	sbuf_free(&b);
	return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
				  const char *method, const char *version, const char *upload,
				  size_t *upload_size, void **con_cls)
{
	struct admin *a = cls;
	(void)version, (void)upload, (void)con_cls;
	if (*upload_size)
		return MHD_NO; /* no request bodies here */
	if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD))
		return text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "GET only\n");
	if (!strcmp(url, "/metrics"))
		return serve_metrics(c);
	if (!strcmp(url, "/healthz"))
		return text(c, MHD_HTTP_OK, "ok\n");
	if (!strcmp(url, "/readyz")) {
		char why[128] = "not ready";
		if (a->ready(a->ud, why, sizeof(why)))
			return text(c, MHD_HTTP_OK, "ready\n");
		size_t n = strlen(why);
		if (n + 1 < sizeof(why))
			why[n] = '\n', why[n + 1] = 0;
		return text(c, MHD_HTTP_SERVICE_UNAVAILABLE, why);
	}
	return text(c, MHD_HTTP_NOT_FOUND, "not found\n");
}

struct admin *admin_start(const char *listen, admin_ready_fn *ready, void *ud, char *err,
			  size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t len;
	if (netaddr_parse(listen, &ss, &len)) {
		snprintf(err, errlen, "[admin] listen: '%s' is not host:port", listen);
		return NULL;
	}
	struct admin *a = calloc(1, sizeof(*a));
	if (!a) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	a->ready = ready;
	a->ud = ud;
	/* One internal thread polling all admin connections; few, short
	 * connections (scrapers, health checks), each bounded in time. */
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	a->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, a,
				MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
				MHD_OPTION_CONNECTION_LIMIT, (unsigned)32,
				MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
				MHD_OPTION_END);
	if (!a->d) {
		snprintf(err, errlen, "[admin] listen: cannot serve on %s (%s)", listen,
			 errno ? strerror(errno) : "libmicrohttpd refused");
		free(a);
		return NULL;
	}
	return a;
}

void admin_stop(struct admin *a)
{
	if (!a)
		return;
	MHD_stop_daemon(a->d);
	free(a);
}
