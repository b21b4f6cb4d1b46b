/* SPDX-License-Identifier: MIT */
/*
 * kvfs client library (include/kvfs/client.h): the handle (kvc_connect,
 * kvc_close, kvc_engine, kvc_limits, kvc_server_epoch) and this thread's error message
 * (kvc_strerror).  How the library is put together: kvc_i.h.
 */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvc_i.h"
#include "kvfs/token.h"
#include "kvfs/util.h"

/* ------------------------------------------------------------------ */
/* Errors                                                             */
/* ------------------------------------------------------------------ */

_Thread_local char kvc_errbuf[KVC_MSG_LEN];

const char *kvc_strerror(void)
{
	return kvc_errbuf;
}

static void set_errv(const char *fmt, va_list ap)
{
	vsnprintf(kvc_errbuf, sizeof(kvc_errbuf), fmt, ap);
}

/* Set this thread's message and return @err. */
int kvc_fail(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	set_errv(fmt, ap);
	va_end(ap);
	return err;
}

void kvc_fmt_msg(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, len, fmt, ap);
	va_end(ap);
}

/* The hint for a server's answer @st with @message: none where the
 * message already says what to do (a tenant's quota and --max-pinned are
 * not the server's memory). */
const char *kvc_status_hint(int32_t st, const char *message)
{
	if (st == KVFS__STATUS__NO_SPACE && message &&
	    (strstr(message, "quota") || strstr(message, "--max-pinned")))
		return "";
	return kvc_hint(wire_status_to_errno(st));
}

/* What to do about an error, appended to messages. */
const char *kvc_hint(int err)
{
	switch (-err) {
	case ECONNREFUSED:
		return " (is kv-server running there?)";
	case ETIMEDOUT:
		return " (server slow or unreachable: check it, or give the client a longer "
		       "timeout)";
	case ECONNRESET:
		return " (connection lost; the next call reconnects)";
	case EACCES:
		return " (check that the client's token file holds the server's token)";
	case ENOSPC:
		return " (delete keys or give kv-server more --memory)";
	case EAGAIN:
		return " (server busy: retry later)";
	case EHOSTUNREACH:
	case ENETUNREACH:
		return " (check the address and the network)";
	default:
		return "";
	}
}

/* ------------------------------------------------------------------ */
/* The handle                                                         */
/* ------------------------------------------------------------------ */

static const char *provider_of(const struct kvc *kvc)
{
	return kvc->engine ? xfer_provider(kvc->engine) : "none";
}

void kvc_opts_init(struct kvc_opts *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->provider = "auto";
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

int kvc_connect(const struct kvc_opts *opts, struct kvc **ret_kvc)
{
	char saved[KVC_MSG_LEN];
	struct kvc_lim lim;
	struct kvc *kvc;
	char addr[sizeof(kvc->host) + 8]; /* "[host]:port" */
	int r;

	if (!opts || !opts->server || !*opts->server || !ret_kvc)
		return kvc_fail(-EINVAL, "kvc: no server address given (opts.server = HOST:PORT)");
	kvc = calloc(1, sizeof(*kvc));
	if (!kvc)
		return kvc_fail(-ENOMEM, "kvc: out of memory");
	kvc->sock = kvc->handover_sock = kvc->epfd = kvc->efd = kvc->tfd = -1;
	pthread_mutex_init(&kvc->lock, NULL);
	kv_cond_init_monotonic(&kvc->cond);
	kvc_up_pool_init(kvc, opts->upload_part, opts->upload_buffers);
	kvc->state = KVC_DOWN;
	kvc->backoff_ms = KVC_BACKOFF_MIN_MS;
	atomic_init(&kvc->next_id, 1);
	atomic_init(&kvc->kick_pending, false);

	r = kv_parse_hostport(opts->server, kvc->host, sizeof(kvc->host), KVC_DEFAULT_PORT,
	                      &kvc->port);
	if (r) {
		r = kvc_fail(r, "kvc: bad server address '%s' (use HOST:PORT, HOST or [V6]:PORT)",
		             opts->server);
		goto out_close;
	}
	/* Messages name HOST:PORT, with the port even when it was left out. */
	kvc->server = strdup(kv_fmt_hostport(kvc->host, kvc->port, addr, sizeof(addr)));
	kvc->provider = strdup(opts->provider && *opts->provider ? opts->provider : "auto");
	kvc->bind = dup_or_null(opts->bind);
	kvc->auth_option = strdup(opts->auth_option ? opts->auth_option : "auth_token_file");
	kvc->client_id = strdup(opts->client_id ? opts->client_id : "kvfs-client");
	kvc->rbuf = malloc(KVC_RBUF_LEN);
	if (!kvc->server || !kvc->provider || !kvc->client_id || !kvc->rbuf || !kvc->auth_option ||
	    (opts->bind && !kvc->bind)) {
		r = kvc_fail(-ENOMEM, "kvc: out of memory");
		goto out_close;
	}
	kvc->want_engine = strcmp(kvc->provider, "none") != 0;
	kvc->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : KVC_DEFAULT_TIMEOUT;
	kvc->connect_timeout_ms =
	        opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms : kvc->timeout_ms;
	kvc->bounce_size = opts->bounce_size ? opts->bounce_size : KVC_DEFAULT_BOUNCE;
	kvc->on_restart = opts->on_restart;
	kvc->on_restart_arg = opts->on_restart_arg;
	if (opts->auth_token_file) {
		r = kv_read_token_file(opts->auth_token_file, kvc->token, sizeof(kvc->token),
		                       &kvc->token_len);
		if (r) {
			r = kvc_fail(r, "kvc: cannot use the auth token file %s: %s",
			             opts->auth_token_file, kv_token_strerror(r));
			goto out_close;
		}
	}

	r = kvc_io_start(kvc);
	if (r)
		goto out_close;

	r = kvc_ensure_up(kvc, kvc_deadline(kvc, kvc->connect_timeout_ms), true, &lim);
	if (r)
		goto out_close;
	*ret_kvc = kvc;
	kvc_errbuf[0] = '\0';
	return 0;

out_close:
	snprintf(saved, sizeof(saved), "%s", kvc_errbuf);
	kvc_close(kvc);
	snprintf(kvc_errbuf, sizeof(kvc_errbuf), "%s", saved);
	return r;
}

void kvc_close(struct kvc *kvc)
{
	if (!kvc)
		return;
	pthread_mutex_lock(&kvc->lock);
	kvc->state = KVC_CLOSED;
	kvc->stop = true;
	pthread_cond_broadcast(&kvc->cond);
	pthread_mutex_unlock(&kvc->lock);
	kvc_io_stop(kvc);
	if (kvc->handover_sock >= 0)
		close(kvc->handover_sock);
	for (int i = 0; i < KVC_BOUNCE_SLOTS; i++)
		xfer_mr_dereg(kvc->bounce[i].mr);
	xfer_mr_dereg(kvc->stage_spare);
	kvc_up_pool_fini(kvc);
	xfer_mr_dereg(kvc->proof_mr);
	if (kvc->has_peer)
		xfer_peer_remove(kvc->engine, kvc->server_peer);
	xfer_close(kvc->engine);
	pthread_cond_destroy(&kvc->cond);
	pthread_mutex_destroy(&kvc->lock);
	memset(kvc->token, 0, sizeof(kvc->token));
	free(kvc->rbuf);
	free(kvc->server);
	free(kvc->provider);
	free(kvc->bind);
	free(kvc->auth_option);
	free(kvc->client_id);
	free(kvc);
}

struct xfer_engine *kvc_engine(struct kvc *kvc)
{
	bool rdma;

	pthread_mutex_lock(&kvc->lock);
	rdma = kvc->lim.rdma;
	pthread_mutex_unlock(&kvc->lock);
	return rdma ? kvc->engine : NULL;
}

void kvc_limits(struct kvc *kvc, struct kvc_limits *ret_limits)
{
	struct kvc_limits l = {0};

	pthread_mutex_lock(&kvc->lock);
	l.max_value = kvc->lim.max_value;
	l.max_inline = kvc->lim.max_inline;
	l.chunk_size = kvc->lim.chunk_size;
	l.rdma = kvc->lim.rdma;
	l.uploads = kvc->lim.features & KVFS__FEATURE__FEATURE_UPLOADS;
	snprintf(l.server_provider, sizeof(l.server_provider), "%s", kvc->lim.server_provider);
	snprintf(l.provider, sizeof(l.provider), "%s", l.rdma ? provider_of(kvc) : "none");
	pthread_mutex_unlock(&kvc->lock);
	*ret_limits = l;
}

uint64_t kvc_server_epoch(struct kvc *kvc, uint64_t *ret_instance)
{
	uint64_t epoch;

	pthread_mutex_lock(&kvc->lock);
	epoch = kvc->epoch;
	if (ret_instance)
		*ret_instance = kvc->instance;
	pthread_mutex_unlock(&kvc->lock);
	return epoch;
}
