/* SPDX-License-Identifier: MIT */
/*
 * kv-server: options, setting up (engine, arena, store, listening socket,
 * the loop's fds) and tearing down.  The rest is in the files listed in
 * server_i.h.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kvfs/log.h"
#include "kvfs/token.h"
#include "kvfs/util.h"
#include "server_i.h"

#define TAG SRV_TAG

void srv_opts_init(struct srv_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->listen = "127.0.0.1:7070";
	o->memory = 1ULL << 30;
	o->provider = "auto";
	o->eviction = STORE_EVICT_LRU;
	o->max_inline = 64 * 1024;
	o->max_conns = 1024;
	o->max_unauth = 64;
	o->max_inflight = 64;
	o->max_outbuf = 8 * 1024 * 1024;
	o->max_frame = WIRE_MAX_FRAME_DEFAULT;
	o->timeout_ms = 10000;
	o->hello_timeout_ms = 10000;
	o->frame_timeout_ms = 10000;
	o->idle_timeout_ms = 0;
	o->max_held = 0; /* 1/8 of memory */
	o->max_pinned = SRV_MAX_PINNED_DEFAULT;
}

static int srv_listen(struct srv *s)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
	                         .ai_socktype = SOCK_STREAM,
	                         .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *ai, *a;
	char port[8], addr[sizeof(s->host) + 8];
	int r, one = 1;

	snprintf(port, sizeof(port), "%u", s->port);
	r = getaddrinfo(s->host, port, &hints, &ai);
	if (r) {
		fprintf(stderr, "kv-server: cannot resolve listen address %s: %s\n", s->host,
		        gai_strerror(r));
		return -EINVAL;
	}
	r = -EADDRNOTAVAIL;
	for (a = ai; a; a = a->ai_next) {
		int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

		if (fd < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 512) == 0) {
			s->lfd = fd;
			r = 0;
			break;
		}
		r = -errno;
		close(fd);
	}
	freeaddrinfo(ai);
	if (r < 0)
		fprintf(stderr, "kv-server: cannot listen on %s: %s%s\n",
		        kv_fmt_hostport(s->host, s->port, addr, sizeof(addr)), strerror(-r),
		        r == -EADDRINUSE
		                ? " (another server runs there: pick another --listen port)"
		                : "");
	return r;
}

static int numeric_host(const char *host, char *out, size_t len)
{
	struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
	struct addrinfo *ai;

	if (getaddrinfo(host, NULL, &hints, &ai))
		return -EINVAL;
	inet_ntop(AF_INET, &((struct sockaddr_in *)ai->ai_addr)->sin_addr, out, (socklen_t)len);
	freeaddrinfo(ai);
	return 0;
}

uint64_t srv_meta_budget(const struct srv_opts *o)
{
	return o->max_meta ? o->max_meta : KV_MAX(o->memory / 8, 1ULL << 20);
}

uint64_t srv_value_space(const struct srv_opts *o)
{
	uint64_t meta = srv_meta_budget(o);

	return meta < o->memory ? (o->memory - meta) & ~4095ULL : 0;
}

uint64_t srv_max_pinned(const struct srv_opts *o)
{
	return o->max_pinned == SRV_MAX_PINNED_DEFAULT ? srv_value_space(o) / 2 : o->max_pinned;
}

const char *srv_pin_limit_msg(struct srv *s, char *buf, size_t len)
{
	struct store_stats st;
	char m[32], p[32];

	store_get_stats(s->store, &st);
	if (!st.max_kept)
		return "pinning is off on this server (--max-pinned 0)";
	snprintf(buf, len,
	         "pinned keys would hold more than --max-pinned %s (%s pinned now): unpin keys "
	         "or raise --max-pinned",
	         kv_fmt_size(st.max_kept, m, sizeof(m)), kv_fmt_size(st.kept_bytes, p, sizeof(p)));
	return buf;
}

const char *srv_full_msg(struct srv *s, char *buf, size_t len)
{
	struct store_stats st;
	char p[32];

	store_get_stats(s->store, &st);
	if (!st.kept_bytes)
		return "server full: nothing can be evicted";
	snprintf(buf, len, "server full: nothing can be evicted (%s of it is pinned)",
	         kv_fmt_size(st.kept_bytes, p, sizeof(p)));
	return buf;
}

/* ---- evictions: counted by the store, told to the log here ------------ */

#define EVLOG_KEYS_MAX 200 /* characters of key names in one line */
#define EVLOG_KEY_MAX  60  /* of one key */

/* Append @key to the line's key list, escaped and cut, while it has room. */
static void evlog_add_key(struct srv_evlog *l, const char *key, size_t keylen)
{
	char k[4 * EVLOG_KEY_MAX + 8];
	size_t n = 0, i;

	for (i = 0; i < keylen && n < EVLOG_KEY_MAX; i++) {
		unsigned char ch = (unsigned char)key[i];

		if (ch < 0x20 || ch >= 0x7f || ch == '"' || ch == '\\')
			n += (size_t)snprintf(k + n, sizeof(k) - n, "\\x%02x", ch);
		else
			k[n++] = (char)ch;
	}
	k[n] = '\0';
	if (l->keys_len + n + 8 > EVLOG_KEYS_MAX) {
		l->more++;
		return;
	}
	l->keys_len +=
	        (size_t)snprintf(l->keys + l->keys_len, sizeof(l->keys) - l->keys_len, "%s\"%s%s\"",
	                         l->keys_len ? ", " : "", k, i < keylen ? "..." : "");
}

void srv_evlog_flush(struct srv *s, bool force)
{
	struct srv_evlog *l = &s->evlog;
	char b[32], p[32], why[160], more[32] = "";
	uint64_t now;

	if (!l->count)
		return;
	now = kv_now_ms();
	if (!force && now - l->last_ms < 1000)
		return;
	if (l->count - l->meta)
		snprintf(why, sizeof(why), "to make room for new values (largest PUT %s)%s",
		         kv_fmt_size(l->put_max, p, sizeof(p)),
		         l->meta ? " and to keep the index within --max-meta" : "");
	else
		snprintf(why, sizeof(why), "to keep the index within --max-meta");
	if (l->more)
		snprintf(more, sizeof(more), " and %llu more", (unsigned long long)l->more);
	KV_WARN(TAG,
	        "evicted %llu key%s (%s) %s: %s%s (a cache: --eviction none refuses PUTs "
	        "instead; pinned keys are never evicted)",
	        (unsigned long long)l->count, l->count == 1 ? "" : "s",
	        kv_fmt_size(l->bytes, b, sizeof(b)), why, l->keys, more);
	*l = (struct srv_evlog){.last_ms = now};
}

/* store_opts.on_evict: noted for the next line (srv_evlog_flush()). */
static void srv_evicted(void *arg, const char *key, size_t keylen, uint64_t size, uint64_t put_size,
                        bool meta)
{
	struct srv *s = arg;
	struct srv_evlog *l = &s->evlog;

	l->count++;
	l->bytes += size;
	if (meta)
		l->meta++;
	else
		l->put_max = KV_MAX(l->put_max, put_size);
	evlog_add_key(l, key, keylen);
}

int srv_create(const struct srv_opts *o, struct srv **ret)
{
	uint64_t arena_len = srv_value_space(o);
	struct store_opts so = {0};
	struct srv *s;
	char bind_host[64];
	int r;

	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->o = *o;
	s->lfd = s->epfd = s->sigfd = -1;
	if (!s->o.max_held)
		s->o.max_held = KV_MAX(o->memory / 8, 1);
	if (!s->o.max_held_total)
		s->o.max_held_total = KV_MAX(o->memory / 4, s->o.max_held);
	/* This process's identity for clients: they tell a restart by it (a
	 * new store whose versions start from 1 again).  Never 0, which means
	 * "unknown" on the wire. */
	do
		r = kv_random_bytes(&s->instance, sizeof(s->instance));
	while (r == 0 && !s->instance);
	if (r < 0) {
		fprintf(stderr, "kv-server: no random bytes for the instance id: %s\n",
		        strerror(-r));
		goto out_free;
	}
	r = o->listen ? kv_parse_hostport(o->listen, s->host, sizeof(s->host), 7070, &s->port) : 0;
	if (r < 0) {
		fprintf(stderr,
		        "kv-server: bad --listen '%s': use HOST:PORT, e.g. 127.0.0.1:7070\n",
		        o->listen);
		goto out_free;
	}
	if (srv_meta_budget(o) > o->memory / 2 || arena_len < 4096) {
		char a[32], b[32];

		fprintf(stderr,
		        "kv-server: --max-meta %s leaves too little of --memory %s for values: "
		        "give the index at most half\n",
		        kv_fmt_size(srv_meta_budget(o), a, sizeof(a)),
		        kv_fmt_size(o->memory, b, sizeof(b)));
		r = -EINVAL;
		goto out_free;
	}
	if (o->auth_token_file) {
		r = kv_read_token_file(o->auth_token_file, (char *)s->token, sizeof(s->token),
		                       &s->tokenlen);
		if (r < 0) {
			fprintf(stderr, "kv-server: cannot use --auth-token-file %s: %s\n",
			        o->auth_token_file, kv_token_strerror(r));
			goto out_free;
		}
		if (kv_token_file_exposed(o->auth_token_file))
			fprintf(stderr,
			        "kv-server: warning: the token file %s can be read by other users: "
			        "they can take the token (chmod 600 %s)\n",
			        o->auth_token_file, o->auth_token_file);
		s->auth = true;
	}
	if (o->tenants_file) {
		r = tenant_load(o->tenants_file, &s->tenants);
		if (r < 0)
			goto out_free;
		if (s->tokenlen) {
			const struct tenant *t =
			        tenant_by_token(&s->tenants, s->token, s->tokenlen);

			if (t) {
				fprintf(stderr,
				        "kv-server: the --auth-token-file token is tenant %s's too "
				        "(%s:%u): the whole namespace needs a token of its own\n",
				        t->name, o->tenants_file, t->line);
				r = -EINVAL;
				goto out_free;
			}
		}
		s->ns = calloc(s->tenants.n, sizeof(*s->ns));
		if (!s->ns) {
			r = -ENOMEM;
			goto out_free;
		}
		for (size_t i = 0; i < s->tenants.n; i++) {
			s->ns[i].prefix = s->tenants.t[i].prefix;
			s->ns[i].prefixlen = s->tenants.t[i].prefixlen;
			s->ns[i].quota = s->tenants.t[i].quota;
		}
		s->auth = true;
	}

	if (strcmp(o->provider, "none")) {
		struct xfer_opts xo;

		xfer_opts_init(&xo);
		xo.provider = o->provider;
		xo.timeout_ms = o->timeout_ms;
		if (o->engine_bind)
			xo.node = o->engine_bind;
		else if (strcmp(s->host, "0.0.0.0") && strcmp(s->host, "::") &&
		         numeric_host(s->host, bind_host, sizeof(bind_host)) == 0)
			xo.node = bind_host;
		if (!strcmp(o->provider, "shm"))
			xo.node = NULL;
		r = xfer_open(&xo, &s->eng);
		if (r < 0) {
			fprintf(stderr,
			        "kv-server: cannot open transfer provider '%s'%s%s: %s (try "
			        "--provider tcp, or none for inline values only)\n",
			        o->provider, xo.node ? " on " : "", xo.node ? xo.node : "",
			        xfer_strerror(r));
			goto out_free;
		}
		r = xfer_cq_create(&s->cq);
		if (r < 0)
			goto out_close_eng;
		/* Local access only: clients never get remote access to the arena. */
		r = xfer_buf_alloc(s->eng, arena_len, XFER_ACCESS_LOCAL, &s->arena_mr);
		if (r < 0) {
			char b[32];

			fprintf(stderr,
			        "kv-server: cannot register %s with provider %s: %s (try a smaller "
			        "--memory)\n",
			        kv_fmt_size(arena_len, b, sizeof(b)), xfer_provider(s->eng),
			        strerror(-r));
			goto out_destroy_cq;
		}
		s->arena_len = arena_len;
		s->arena = xfer_mr_addr(s->arena_mr);
	} else {
		s->arena = mmap(NULL, arena_len, PROT_READ | PROT_WRITE,
		                MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
		if (s->arena == MAP_FAILED) {
			r = -errno;
			fprintf(stderr, "kv-server: cannot allocate --memory: %s\n", strerror(-r));
			goto out_free;
		}
		s->arena_len = arena_len;
	}
	so.evict = o->eviction;
	so.max_value = o->max_value;
	so.max_meta = srv_meta_budget(o);
	so.ns = s->ns;
	so.nns = s->tenants.n;
	so.max_kept = srv_max_pinned(o);
	so.on_evict = srv_evicted;
	so.evict_arg = s;
	r = store_create(s->arena, s->arena_len, &so, &s->store);
	if (r < 0) {
		fprintf(stderr, "kv-server: cannot create the store: %s (--memory too small?)\n",
		        strerror(-r));
		goto out_free_arena;
	}

	r = o->listen ? srv_listen(s) : 0;
	if (r < 0)
		goto out_destroy_store;
	r = srv_loop_init(s);
	if (r < 0)
		goto out_close_fds;
	if (!s->auth && s->lfd >= 0 && strcmp(s->host, "127.0.0.1") && strcmp(s->host, "::1") &&
	    strcmp(s->host, "localhost"))
		KV_WARN(TAG,
		        "listening on %s without --auth-token-file or --tenants: anyone who can "
		        "reach it can read and write every key",
		        s->host);
	*ret = s;
	return 0;

out_close_fds:
	if (s->sigfd >= 0)
		close(s->sigfd);
	if (s->epfd >= 0)
		close(s->epfd);
	if (s->lfd >= 0)
		close(s->lfd);
out_destroy_store:
	store_destroy(s->store);
out_free_arena:
	if (s->arena_mr)
		xfer_mr_dereg(s->arena_mr);
	else if (s->arena && s->arena != MAP_FAILED)
		munmap(s->arena, s->arena_len);
out_destroy_cq:
	xfer_cq_destroy(s->cq);
out_close_eng:
	xfer_close(s->eng);
out_free:
	free(s->ns);
	tenant_table_free(&s->tenants);
	explicit_bzero(s->token, sizeof(s->token));
	free(s);
	return r;
}

void srv_destroy(struct srv *s)
{
	if (!s)
		return;
	srv_evlog_flush(s, true);
	while (s->conns)
		conn_close(s->conns, "server stopping");
	srv_free_dead(s);
	if (s->eng) {
		/* srv_run() waited for every transfer (bounded by their
		 * deadlines); whatever is left fails into the cq at close and
		 * only unpins or aborts, never touching the arena.  A failed
		 * transfer whose memory the provider has not given back
		 * (s->unsettled) may still use the arena: it stays registered,
		 * and xfer_close() leaves the provider to the process's exit. */
		if (!s->unsettled)
			xfer_mr_dereg(s->arena_mr);
		xfer_close(s->eng);
		s->eng = NULL;
		srv_reap(s);
		srv_free_dead(s);
	} else if (s->arena) {
		munmap(s->arena, s->arena_len);
	}
	store_destroy(s->store);
	xfer_cq_destroy(s->cq);
	if (s->lfd >= 0)
		close(s->lfd);
	close(s->sigfd);
	close(s->epfd);
	explicit_bzero(s->token, sizeof(s->token));
	free(s->ns); /* after store_destroy(): the store points into it */
	tenant_table_free(&s->tenants);
	free(s->held);
	free(s);
}
