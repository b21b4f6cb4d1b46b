/* SPDX-License-Identifier: MIT */
/* kv-server: command line, then srv_create()/srv_run(). */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "kvfs/log.h"
#include "kvfs/util.h"
#include "kvfs/wire.h"
#include "server.h"

static void usage(FILE *f)
{
	fprintf(f,
	        "Usage: kv-server [OPTIONS]\n"
	        "Serve keys and values from RDMA-registered memory to kvfs, kvctl and kv-bench.\n"
	        "Values live in memory only: a restarted server starts empty, with a new random\n"
	        "instance id (in its 'listening on' line and STATS) by which clients see the\n"
	        "restart and drop what they cached (docs/protocol.md, \"Server instance\").\n"
	        "kv-server is a cache: when its memory is full, a PUT evicts the least recently\n"
	        "used keys (logged as a warning, counted in 'kvctl stats') unless they are\n"
	        "pinned (kvctl pin, or setfattr -n user.kvfs.pinned -v 1 on a kvfs file) or\n"
	        "the server runs with --eviction none.\n"
	        "\n"
	        "  -l, --listen HOST:PORT     control channel address (default 127.0.0.1:7070)\n"
	        "  -m, --memory SIZE          memory for keys and values, e.g. 512M, 4G (default\n"
	        "                             1G; the index takes --max-meta of it)\n"
	        "  -p, --provider NAME        auto|tcp|shm|verbs|efa|none (default auto: efa, "
	        "verbs,\n"
	        "                             then tcp; none = values travel inline on TCP)\n"
	        "      --engine-bind ADDR     address the transfer engine binds (default: the\n"
	        "                             listen host; needed with --listen 0.0.0.0)\n"
	        "  -e, --eviction POLICY      lru (default: a full server evicts the least\n"
	        "                             recently used keys that are not pinned) or none\n"
	        "                             (a full server refuses PUTs with NO_SPACE)\n"
	        "      --max-pinned SIZE      value bytes pinned keys (never evicted) may hold;\n"
	        "                             a pin past it fails with NO_SPACE (default: half\n"
	        "                             the memory for values; 0 = no pinning)\n"
	        "      --max-value SIZE       largest value accepted (default: all the memory\n"
	        "                             left for values)\n"
	        "      --max-inline SIZE      largest value sent inline in a frame (default 64K)\n"
	        "      --auth-token-file FILE clients must prove they hold this token; it reaches\n"
	        "                             every key\n"
	        "      --tenants FILE         several tokens, each reaching only its own key\n"
	        "                             prefix, with a byte quota; one per line:\n"
	        "                               NAME TOKEN_FILE PREFIX QUOTA\n"
	        "                             e.g. 'alice alice.token alice/ 64G' (QUOTA a size\n"
	        "                             or none; a relative TOKEN_FILE is taken from FILE's\n"
	        "                             directory; '#' starts a comment).  A tenant's\n"
	        "                             client sees PREFIX as the whole store; a quota\n"
	        "                             counts values, key names and 128 bytes per key,\n"
	        "                             and a PUT past it fails with NO_SPACE.  With\n"
	        "                             --auth-token-file too, that token sees every\n"
	        "                             tenant's keys under its prefix\n"
	        "      --timeout MS           RDMA transfer deadline (default 10000)\n"
	        "      --max-meta SIZE        part of --memory the index (keys, item records)\n"
	        "                             may take before PUTs evict or fail as for values\n"
	        "                             (default: 1/8 of --memory, at least 1M; at most\n"
	        "                             half); values get the rest\n"
	        "      --max-held SIZE        memory one client may hold in failed transfers\n"
	        "                             not yet given back (a slow or cut link) before\n"
	        "                             its next transfer is refused with BUSY\n"
	        "                             (default: 1/8 of --memory)\n"
	        "      --max-held-total SIZE  the same for all clients together, so that many\n"
	        "                             clients (or processes) cannot hold the arena\n"
	        "                             (default: 1/4 of --memory)\n"
	        "\n"
	        "Limits per connection (memory stays below about max-conns x (max-frame +\n"
	        "max-outbuf + 1.2M); see docs/reliability.md):\n"
	        "      --max-conns N          connections at once (default 1024)\n"
	        "      --max-unauth N         of them still in HELLO at once, a quarter of these\n"
	        "                             per host (default 64)\n"
	        "      --max-inflight N       RDMA requests worked on per connection (default 64)\n"
	        "      --max-frame SIZE       largest request frame read, 4K..64M (default "
	        "1088K);\n"
	        "                             a longer declared length closes the connection\n"
	        "      --max-outbuf SIZE      response bytes queued for a client before the\n"
	        "                             server stops reading its requests (default 8M)\n"
	        "      --hello-timeout MS     close a connection that has not completed HELLO\n"
	        "                             this long after connecting (default 10000)\n"
	        "      --frame-timeout MS     close a connection whose frame has not fully\n"
	        "                             arrived this long after it started, or that has\n"
	        "                             not read any of its responses for as long\n"
	        "                             (default 10000)\n"
	        "      --idle-timeout MS      close a connection past HELLO with nothing in\n"
	        "                             flight after this long without a request\n"
	        "                             (default 0 = never; clients reconnect on demand)\n"
	        "\n"
	        "  -v, --verbose              debug logging (or KVFS_LOG=debug)\n"
	        "  -q, --quiet                warnings and errors only\n"
	        "  -h, --help                 this text\n"
	        "  -V, --version              print the version\n"
	        "\n"
	        "SIGTERM or SIGINT stops accepting, finishes in-flight transfers and exits 0.\n");
}

static int size_arg(const char *opt, const char *v, uint64_t *ret)
{
	if (kv_parse_size(v, ret) < 0) {
		fprintf(stderr, "kv-server: %s: '%s' is not a size (use e.g. 4096, 64K, 1G)\n", opt,
		        v);
		return -1;
	}
	return 0;
}

static int num_arg(const char *opt, const char *v, unsigned long min, unsigned long max,
                   unsigned *ret)
{
	char *end;
	unsigned long x = strtoul(v, &end, 10);

	if (!*v || *v == '-' || *end || x < min || x > max) {
		fprintf(stderr, "kv-server: %s: '%s' is not a number from %lu to %lu\n", opt, v,
		        min, max);
		return -1;
	}
	*ret = (unsigned)x;
	return 0;
}

static int uint_arg(const char *opt, const char *v, unsigned *ret)
{
	return num_arg(opt, v, 1, 1000000, ret);
}

/* Milliseconds, at most a day; 0 only where @zero_ok (= off). */
static int ms_arg(const char *opt, const char *v, bool zero_ok, int *ret)
{
	unsigned x;

	if (num_arg(opt, v, zero_ok ? 0 : 1, 86400000, &x))
		return -1;
	*ret = (int)x;
	return 0;
}

/* Every connection is a descriptor: raise the soft limit to the hard one
 * (1024 by default, below --max-conns' default alone) and say when even
 * that is short of what the limits allow. */
static void nofile_raise(rlim_t want)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl))
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur < want)
		fprintf(stderr,
		        "kv-server: warning: %llu open files allowed (ulimit -n), fewer than "
		        "--max-conns needs (%llu): raise the limit or lower it\n",
		        (unsigned long long)rl.rlim_cur, (unsigned long long)want);
}

int main(int argc, char **argv)
{
	enum {
		O_BIND = 256,
		O_MAXVAL,
		O_MAXINL,
		O_TOKEN,
		O_CONNS,
		O_INFL,
		O_TMO,
		O_FRAME,
		O_OUTBUF,
		O_HELLO_TMO,
		O_FRAME_TMO,
		O_IDLE_TMO,
		O_HELD,
		O_HELD_TOTAL,
		O_UNAUTH,
		O_META,
		O_TENANTS,
		O_PINNED,
	};
	static const struct option lo[] = {
	        {"listen", required_argument, NULL, 'l'},
	        {"memory", required_argument, NULL, 'm'},
	        {"provider", required_argument, NULL, 'p'},
	        {"engine-bind", required_argument, NULL, O_BIND},
	        {"eviction", required_argument, NULL, 'e'},
	        {"max-value", required_argument, NULL, O_MAXVAL},
	        {"max-inline", required_argument, NULL, O_MAXINL},
	        {"auth-token-file", required_argument, NULL, O_TOKEN},
	        {"tenants", required_argument, NULL, O_TENANTS},
	        {"max-conns", required_argument, NULL, O_CONNS},
	        {"max-inflight", required_argument, NULL, O_INFL},
	        {"timeout", required_argument, NULL, O_TMO},
	        {"max-frame", required_argument, NULL, O_FRAME},
	        {"max-outbuf", required_argument, NULL, O_OUTBUF},
	        {"hello-timeout", required_argument, NULL, O_HELLO_TMO},
	        {"frame-timeout", required_argument, NULL, O_FRAME_TMO},
	        {"idle-timeout", required_argument, NULL, O_IDLE_TMO},
	        {"max-held", required_argument, NULL, O_HELD},
	        {"max-held-total", required_argument, NULL, O_HELD_TOTAL},
	        {"max-unauth", required_argument, NULL, O_UNAUTH},
	        {"max-meta", required_argument, NULL, O_META},
	        {"max-pinned", required_argument, NULL, O_PINNED},
	        {"verbose", no_argument, NULL, 'v'},
	        {"quiet", no_argument, NULL, 'q'},
	        {"help", no_argument, NULL, 'h'},
	        {"version", no_argument, NULL, 'V'},
	        {0},
	};
	struct srv_opts o;
	struct srv *s;
	sigset_t mask;
	bool inline_set = false;
	uint64_t sz;
	unsigned tmo;
	int c, r;

	kv_log_init("kv-server");
	srv_opts_init(&o);
	while ((c = getopt_long(argc, argv, "l:m:p:e:vqhV", lo, NULL)) != -1) {
		switch (c) {
		case 'l':
			o.listen = optarg;
			break;
		case 'm':
			if (size_arg("--memory", optarg, &o.memory))
				return 2;
			if (o.memory < 2 * 1024 * 1024) {
				fprintf(stderr, "kv-server: --memory must be at least 2M\n");
				return 2;
			}
			break;
		case 'p':
			o.provider = optarg;
			break;
		case O_BIND:
			o.engine_bind = optarg;
			break;
		case 'e':
			if (!strcmp(optarg, "lru")) {
				o.eviction = STORE_EVICT_LRU;
			} else if (!strcmp(optarg, "none")) {
				o.eviction = STORE_EVICT_NONE;
			} else {
				fprintf(stderr, "kv-server: --eviction: use lru or none\n");
				return 2;
			}
			break;
		case O_MAXVAL:
			if (size_arg("--max-value", optarg, &o.max_value))
				return 2;
			break;
		case O_MAXINL:
			if (size_arg("--max-inline", optarg, &o.max_inline))
				return 2;
			if (o.max_inline > 1024 * 1024) {
				fprintf(stderr,
				        "kv-server: --max-inline is at most 1M (frame limit)\n");
				return 2;
			}
			inline_set = true;
			break;
		case O_FRAME:
			if (size_arg("--max-frame", optarg, &sz))
				return 2;
			if (sz < WIRE_MAX_FRAME_MIN || sz > WIRE_MAX_FRAME_MAX) {
				fprintf(stderr, "kv-server: --max-frame must be from 4K to 64M\n");
				return 2;
			}
			o.max_frame = (size_t)sz;
			break;
		case O_OUTBUF:
			if (size_arg("--max-outbuf", optarg, &sz))
				return 2;
			if (sz < 64 * 1024 || sz > (1ULL << 30)) {
				fprintf(stderr, "kv-server: --max-outbuf must be from 64K to 1G\n");
				return 2;
			}
			o.max_outbuf = (size_t)sz;
			break;
		case O_HELLO_TMO:
			if (ms_arg("--hello-timeout", optarg, false, &o.hello_timeout_ms))
				return 2;
			break;
		case O_FRAME_TMO:
			if (ms_arg("--frame-timeout", optarg, false, &o.frame_timeout_ms))
				return 2;
			break;
		case O_IDLE_TMO:
			if (ms_arg("--idle-timeout", optarg, true, &o.idle_timeout_ms))
				return 2;
			break;
		case O_META:
			if (size_arg("--max-meta", optarg, &o.max_meta))
				return 2;
			if (o.max_meta < (1ULL << 20)) {
				fprintf(stderr, "kv-server: --max-meta must be at least 1M\n");
				return 2;
			}
			break;
		case O_PINNED:
			if (size_arg("--max-pinned", optarg, &o.max_pinned))
				return 2;
			break;
		case O_HELD:
			if (size_arg("--max-held", optarg, &o.max_held))
				return 2;
			if (!o.max_held) {
				fprintf(stderr, "kv-server: --max-held must be above 0\n");
				return 2;
			}
			break;
		case O_HELD_TOTAL:
			if (size_arg("--max-held-total", optarg, &o.max_held_total))
				return 2;
			if (!o.max_held_total) {
				fprintf(stderr, "kv-server: --max-held-total must be above 0\n");
				return 2;
			}
			break;
		case O_TOKEN:
			o.auth_token_file = optarg;
			break;
		case O_TENANTS:
			o.tenants_file = optarg;
			break;
		case O_CONNS:
			if (uint_arg("--max-conns", optarg, &o.max_conns))
				return 2;
			break;
		case O_UNAUTH:
			if (uint_arg("--max-unauth", optarg, &o.max_unauth))
				return 2;
			break;
		case O_INFL:
			if (uint_arg("--max-inflight", optarg, &o.max_inflight))
				return 2;
			break;
		case O_TMO:
			if (uint_arg("--timeout", optarg, &tmo))
				return 2;
			o.timeout_ms = (int)tmo;
			break;
		case 'v':
			kv_log_level = KV_LOG_DEBUG;
			break;
		case 'q':
			kv_log_level = KV_LOG_WARN;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("kv-server %s\n", KVFS_VERSION);
			return 0;
		default:
			fprintf(stderr, "Try 'kv-server --help'.\n");
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "kv-server: unexpected argument '%s'. Try 'kv-server --help'.\n",
		        argv[optind]);
		return 2;
	}
	/* The store caps values at its memory (and says so in HELLO): a larger
	 * --max-value would promise what it cannot keep. */
	if (srv_meta_budget(&o) > o.memory / 2) {
		char a[32], b[32];

		fprintf(stderr,
		        "kv-server: --max-meta %s leaves too little of --memory %s for values: "
		        "give the index at most half\n",
		        kv_fmt_size(srv_meta_budget(&o), a, sizeof(a)),
		        kv_fmt_size(o.memory, b, sizeof(b)));
		return 2;
	}
	if (o.max_value > srv_value_space(&o)) {
		char a[32], b[32], v[32];

		KV_WARN("server",
		        "--max-value %s is above the %s of --memory %s left for values (the index "
		        "takes --max-meta): larger values can never be stored",
		        kv_fmt_size(o.max_value, a, sizeof(a)),
		        kv_fmt_size(srv_value_space(&o), v, sizeof(v)),
		        kv_fmt_size(o.memory, b, sizeof(b)));
	}
	/* An inline PUT of max_inline bytes with a longest key must fit a frame. */
	if (o.max_inline + KV_KEY_MAX + 1024 > o.max_frame) {
		uint64_t fit = o.max_frame - KV_KEY_MAX - 1024;
		char a[32], b[32], f[32];

		if (inline_set) {
			fprintf(stderr,
			        "kv-server: --max-inline %s does not fit --max-frame %s with a "
			        "longest key: use at most --max-inline %s\n",
			        kv_fmt_size(o.max_inline, a, sizeof(a)),
			        kv_fmt_size(o.max_frame, b, sizeof(b)),
			        kv_fmt_size(fit, f, sizeof(f)));
			return 2;
		}
		o.max_inline = fit;
	}
	/* Signals are read through a signalfd in the event loop; block them
	 * before any thread (the engine's) starts so every thread inherits it. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);

	nofile_raise(o.max_conns + 64);
	r = srv_create(&o, &s);
	if (r < 0)
		return 1;
	r = srv_run(s);
	srv_destroy(s);
	return r < 0 ? 1 : 0;
}
