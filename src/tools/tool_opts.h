/* SPDX-License-Identifier: MIT */
/*
 * tool_opts: the command-line pieces the kvfs tools share (prefix topt_).
 *
 * Values
 *   numbers    decimal digits, or hexadecimal digits after "0x"/"0X"; no
 *              sign, no blanks, and a leading 0 does not mean octal ("010"
 *              is ten)
 *   sizes      kv_parse_size(), the one size parser of kvfs: "4096", "64K",
 *              "1.5M", "4G", "1GiB" (powers of 1024, optional "iB"/"B")
 *   durations  a decimal number, fractions allowed ("2", "0.5", ".5"), with
 *              an optional unit "ms", "s" or "m" (minutes); a bare number
 *              is in the unit the option documents (--timeout: ms,
 *              --duration: s)
 * topt_parse_*() print nothing and leave *ret_* untouched on failure; the
 * *_arg() wrappers print the message the tools give for a bad value.
 *
 * Common options
 *   Every tool answers -h/--help with its usage and -V/--version with
 *   "PROG VERSION", status 0 (topt_std_opt()).  The clients of a kv-server
 *   (kvctl, kv-bench, kv-soak) share -s/--server, -p/--provider,
 *   -a/--auth-token-file and -t/--timeout: TOPT_CLIENT_SHORT and
 *   TOPT_CLIENT_LONG go into the tool's getopt_long() tables,
 *   topt_client_opt() takes them (and -h, -V) into a struct topt_client,
 *   and topt_client_kvc_opts() builds the struct kvc_opts from it.
 *
 * Threads: the topt_parse_*() functions may be called from any thread;
 * the rest is for main() before threads start (it reads the environment
 * and writes stdout/stderr).  Strings stored in a struct topt_client point
 * into argv or the environment: nothing is allocated or freed.
 */
#ifndef KVFS_TOOL_OPTS_H
#define KVFS_TOOL_OPTS_H

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "kvfs/client.h"

#define TOPT_NS_PER_MS 1000000ULL
#define TOPT_NS_PER_S  1000000000ULL

#define TOPT_DEFAULT_SERVER     "127.0.0.1:7070"
#define TOPT_DEFAULT_TIMEOUT_MS 10000
#define TOPT_MAX_TIMEOUT_MS     86400000 /* a day */

/* What a tool tells the shared code about itself. */
struct topt_tool {
	const char *prog;         /* name in messages and the version line */
	void (*usage)(FILE *out); /* writes the --help text */
};

/* ------------------------------------------------------------------ */
/* Values                                                              */

/* A number (see above) from @min to @max.  0, -EINVAL (not a number) or
 * -ERANGE (outside [@min, @max]). */
int topt_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *ret_v);

/* A size (kv_parse_size()) from @min to @max bytes.  0, -EINVAL or
 * -ERANGE. */
int topt_parse_size(const char *s, uint64_t min, uint64_t max, uint64_t *ret_bytes);

/* A duration (see above); a bare number counts @bare_ns nanoseconds each
 * (TOPT_NS_PER_MS, TOPT_NS_PER_S).  *ret_ns is rounded to the nearest
 * nanosecond and lies in [@min_ns, @max_ns].  0, -EINVAL or -ERANGE. */
int topt_parse_duration(const char *s, uint64_t bare_ns, uint64_t min_ns, uint64_t max_ns,
                        uint64_t *ret_ns);

/* topt_parse_duration() with a bare number in ms, from @min_ms to @max_ms,
 * as whole milliseconds (rounded up: never shorter than asked). */
int topt_parse_ms(const char *s, int min_ms, int max_ms, int *ret_ms);

/* topt_parse_duration() with a bare number in seconds, as seconds from
 * @min_s to @max_s. */
int topt_parse_secs(const char *s, double min_s, double max_s, double *ret_s);

/* topt_parse_uint() for option @opt; on failure prints
 * "PROG: OPT: 'S' is not a number from MIN to MAX. Try 'PROG --help'."
 * and returns -EINVAL. */
int topt_uint_arg(const struct topt_tool *t, const char *opt, const char *s, uint64_t min,
                  uint64_t max, uint64_t *ret_v);

/* topt_parse_secs() for option @opt; on failure prints "PROG: OPT: 'S' is not a number of
 * seconds" and returns -EINVAL. */
int topt_secs_arg(const struct topt_tool *t, const char *opt, const char *s, double min_s,
                  double max_s, double *ret_s);

/* ------------------------------------------------------------------ */
/* Common options                                                      */

/* Answer -h (@t's usage on stdout) or -V ("PROG VERSION" on stdout).
 * Returns true when @opt was one of them: the caller exits with status 0. */
bool topt_std_opt(const struct topt_tool *t, int opt);

/* The options of a kv-server client. */
struct topt_client {
	const char *server;          /* --server, else $KVFS_SERVER, else TOPT_DEFAULT_SERVER */
	const char *provider;        /* --provider, default "auto" */
	const char *auth_token_file; /* --auth-token-file, NULL = none */
	int timeout_ms;              /* --timeout: per-call deadline, TOPT_DEFAULT_TIMEOUT_MS */
};

/* getopt_long() short options and struct option entries of struct
 * topt_client, -h and -V; the tool adds its own to both. */
#define TOPT_CLIENT_SHORT "s:p:a:t:hV"
/* clang-format off */
#define TOPT_CLIENT_LONG                                                                           \
	{"server", required_argument, NULL, 's'},                                                  \
	{"provider", required_argument, NULL, 'p'},                                                \
	{"auth-token-file", required_argument, NULL, 'a'},                                         \
	{"timeout", required_argument, NULL, 't'},                                                 \
	{"help", no_argument, NULL, 'h'},                                                          \
	{"version", no_argument, NULL, 'V'}
/* clang-format on */

/* Defaults, with the server from $KVFS_SERVER when it is set and not empty. */
void topt_client_init(struct topt_client *c);

enum {
	TOPT_OTHER = 0, /* not a common option: the tool's own */
	TOPT_TAKEN = 1, /* stored in the struct topt_client */
	TOPT_EXIT = 2,  /* --help or --version answered: exit with status 0 */
};

/*
 * Take option @opt (getopt_long()'s return) with argument @arg into @c.
 * Returns TOPT_OTHER, TOPT_TAKEN, TOPT_EXIT, or -EINVAL after printing why
 * (the caller exits with status 2): a bad --timeout, or '?', getopt's
 * unknown option or missing argument, which getopt has already named
 * ("Try 'PROG --help'." follows).
 */
int topt_client_opt(const struct topt_tool *t, struct topt_client *c, int opt, const char *arg);

/* Check that c->server is HOST:PORT, [V6]:PORT or HOST; otherwise print
 * "PROG: 'S' is not HOST:PORT (--server / KVFS_SERVER)" and "Try 'PROG
 * --help'." and return -EINVAL. */
int topt_client_check(const struct topt_tool *t, const struct topt_client *c);

/* The struct kvc_opts for @c: the client named @client_id in the server's
 * logs, auth errors naming --auth-token-file.  Inline so that a tool that
 * is not a client needs no client library. */
static inline void topt_client_kvc_opts(const struct topt_client *c, const char *client_id,
                                        struct kvc_opts *o)
{
	kvc_opts_init(o);
	o->server = c->server;
	o->provider = c->provider;
	o->auth_token_file = c->auth_token_file;
	o->timeout_ms = c->timeout_ms;
	o->client_id = client_id;
	o->auth_option = "--auth-token-file";
}

#endif /* KVFS_TOOL_OPTS_H */
