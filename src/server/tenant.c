/* SPDX-License-Identifier: MIT */
/* kv-server's tenants file.  See tenant.h. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvfs/wire.h"
#include "store.h"
#include "tenant.h"

/* Where a message about a line points. */
struct tenant_src {
	const char *path;
	unsigned line;
};

__attribute__((format(printf, 2, 3))) static int tenant_err(const struct tenant_src *src,
                                                            const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "kv-server: %s:%u: ", src->path, src->line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return -EINVAL;
}

static int tenant_parse_name(const struct tenant_src *src, const char *f, struct tenant *t)
{
	size_t n = strlen(f);

	if (n > TENANT_NAME_MAX || strspn(f, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	                                     "0123456789._-") != n)
		return tenant_err(src, "tenant name '%s': use 1 to %d of A-Z a-z 0-9 . _ -", f,
		                  TENANT_NAME_MAX);
	memcpy(t->name, f, n + 1);
	return 0;
}

static int tenant_parse_prefix(const struct tenant_src *src, const char *f, struct tenant *t)
{
	size_t n = strlen(f);
	const char *why;

	if (n >= KV_KEY_MAX)
		return tenant_err(src,
		                  "prefix of tenant %s: longer than %d bytes leaves no room "
		                  "for its keys",
		                  t->name, KV_KEY_MAX - 1);
	if (wire_key_validate(f, n, 0, &why) < 0)
		return tenant_err(src, "prefix '%s' of tenant %s is no valid key: %s", f, t->name,
		                  why);
	if (f[n - 1] != '/')
		return tenant_err(src,
		                  "prefix '%s' of tenant %s must end with '/' (a directory: "
		                  "'%s/')",
		                  f, t->name, f);
	memcpy(t->prefix, f, n + 1);
	t->prefixlen = n;
	return 0;
}

static int tenant_parse_quota(const struct tenant_src *src, const char *f, struct tenant *t)
{
	if (!strcmp(f, "none")) {
		t->quota = 0;
		return 0;
	}
	if (kv_parse_size(f, &t->quota) < 0 || t->quota == 0)
		return tenant_err(src,
		                  "quota '%s' of tenant %s: use a size above 0 (64M, 2G) or none",
		                  f, t->name);
	return 0;
}

/* Read the token file @f (relative to @path's directory) into @t. */
static int tenant_read_token(const struct tenant_src *src, const char *f, struct tenant *t)
{
	const char *slash = strrchr(src->path, '/');
	char file[PATH_MAX];
	int r;

	if (f[0] != '/' && slash)
		r = snprintf(file, sizeof(file), "%.*s/%s", (int)(slash - src->path), src->path, f);
	else
		r = snprintf(file, sizeof(file), "%s", f);
	if (r < 0 || (size_t)r >= sizeof(file))
		return tenant_err(src, "token file of tenant %s: path too long", t->name);
	r = kv_read_token_file(file, (char *)t->token, sizeof(t->token), &t->tokenlen);
	if (r < 0)
		return tenant_err(src, "cannot use the token file %s of tenant %s: %s", file,
		                  t->name, kv_token_strerror(r));
	if (kv_token_file_exposed(file))
		fprintf(stderr,
		        "kv-server: warning: %s:%u: the token file %s of tenant %s can be read by "
		        "other users: they can take the token (chmod 600 %s)\n",
		        src->path, src->line, file, t->name, file);
	return 0;
}

/* What the tenant on @t's line shares with one before it, if anything. */
static int tenant_check_unique(const struct tenant_src *src, const struct tenant_table *tt,
                               const struct tenant *t)
{
	for (size_t i = 0; i < tt->n; i++) {
		const struct tenant *o = &tt->t[i];
		size_t m = KV_MIN(o->prefixlen, t->prefixlen);

		if (!strcmp(o->name, t->name))
			return tenant_err(src, "tenant name %s is taken already (line %u)", t->name,
			                  o->line);
		if (!memcmp(o->prefix, t->prefix, m))
			return tenant_err(
			        src,
			        "prefix '%s' of tenant %s %s prefix '%s' of tenant %s (line "
			        "%u): one tenant would see the other's keys",
			        t->prefix, t->name,
			        t->prefixlen == o->prefixlen  ? "is the"
			        : t->prefixlen > o->prefixlen ? "lies inside the"
			                                      : "holds the",
			        o->prefix, o->name, o->line);
		if (o->tokenlen == t->tokenlen && !memcmp(o->token, t->token, t->tokenlen))
			return tenant_err(
			        src,
			        "tenant %s has the token of tenant %s (line %u): each tenant "
			        "needs a token of its own",
			        t->name, o->name, o->line);
	}
	return 0;
}

/* Parse one line (its comment already cut) into @t; 1 when it is blank. */
static int tenant_parse_line(const struct tenant_src *src, char *line, struct tenant *t)
{
	char *f[5], *save = NULL;
	int n = 0, r;

	for (char *w = strtok_r(line, " \t\r\n\v\f", &save); w && n < 5;
	     w = strtok_r(NULL, " \t\r\n\v\f", &save)) {
		if (w[0] == '#')
			break;
		f[n++] = w;
	}
	if (n == 0)
		return 1;
	if (n != 4)
		return tenant_err(src, "expected NAME TOKEN_FILE PREFIX QUOTA, found %s%d field%s",
		                  n > 4 ? "more than " : "", n, n == 1 ? "" : "s");
	r = tenant_parse_name(src, f[0], t);
	if (r == 0)
		r = tenant_parse_prefix(src, f[2], t);
	if (r == 0)
		r = tenant_parse_quota(src, f[3], t);
	if (r == 0)
		r = tenant_read_token(src, f[1], t);
	return r;
}

static int tenant_cmp(const void *a, const void *b)
{
	const struct tenant *x = a, *y = b;

	return kv_key_cmp(x->prefix, x->prefixlen, y->prefix, y->prefixlen);
}

int tenant_load(const char *path, struct tenant_table *ret)
{
	struct tenant_table tt = {0};
	struct tenant_src src = {.path = path};
	char *line = NULL;
	size_t cap = 0;
	FILE *f;
	int r = 0;

	f = fopen(path, "re");
	if (!f) {
		r = -errno;
		fprintf(stderr, "kv-server: cannot read --tenants %s: %s\n", path, strerror(-r));
		return -EINVAL;
	}
	/* One more than the most: the line past them is parsed, then refused. */
	tt.t = calloc(STORE_NS_MAX + 1, sizeof(*tt.t));
	if (!tt.t) {
		fclose(f);
		return -ENOMEM;
	}
	while (getline(&line, &cap, f) >= 0) {
		struct tenant *t = &tt.t[tt.n];

		src.line++;
		memset(t, 0, sizeof(*t));
		t->line = src.line;
		r = tenant_parse_line(&src, line, t);
		if (r == 1) {
			r = 0;
			continue;
		}
		if (r == 0 && tt.n == STORE_NS_MAX)
			r = tenant_err(&src, "more than %d tenants", STORE_NS_MAX);
		if (r == 0)
			r = tenant_check_unique(&src, &tt, t);
		if (r < 0) {
			explicit_bzero(t, sizeof(*t));
			break;
		}
		tt.n++;
	}
	if (r == 0 && ferror(f)) {
		fprintf(stderr, "kv-server: cannot read --tenants %s: %s\n", path, strerror(errno));
		r = -EINVAL;
	}
	if (r == 0 && tt.n == 0) {
		fprintf(stderr,
		        "kv-server: %s names no tenant (a line is: NAME TOKEN_FILE PREFIX QUOTA)\n",
		        path);
		r = -EINVAL;
	}
	free(line);
	fclose(f);
	if (r < 0) {
		tenant_table_free(&tt);
		return r;
	}
	qsort(tt.t, tt.n, sizeof(*tt.t), tenant_cmp);
	*ret = tt;
	return 0;
}

void tenant_table_free(struct tenant_table *tt)
{
	if (!tt->t)
		return;
	explicit_bzero(tt->t, (STORE_NS_MAX + 1) * sizeof(*tt->t));
	free(tt->t);
	tt->t = NULL;
	tt->n = 0;
}

const struct tenant *tenant_by_token(const struct tenant_table *tt, const void *token, size_t len)
{
	for (size_t i = 0; i < tt->n; i++)
		if (tt->t[i].tokenlen == len && !memcmp(tt->t[i].token, token, len))
			return &tt->t[i];
	return NULL;
}

int tenant_key(const struct tenant *t, const void *key, size_t len, char *buf, size_t cap,
               const char **ret_key, size_t *ret_len)
{
	if (!t) {
		*ret_key = key;
		*ret_len = len;
		return 0;
	}
	if (t->prefixlen + len > cap)
		return -ENAMETOOLONG;
	memcpy(buf, t->prefix, t->prefixlen);
	if (len)
		memcpy(buf + t->prefixlen, key, len);
	*ret_key = buf;
	*ret_len = t->prefixlen + len;
	return 0;
}
