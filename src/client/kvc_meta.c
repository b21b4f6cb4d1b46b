/* SPDX-License-Identifier: MIT */
/* Metadata operations: STAT, DELETE, RENAME, SETATTR (and pins), LIST, STATS. */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kvc_i.h"
#include "kvfs/util.h"
#include "kvfs/wire.h"

static void entry_from_pb(const Kvfs__Entry *m, uint64_t epoch, struct kvc_entry *e)
{
	e->epoch = epoch;
	e->size = m->size;
	e->version = m->version;
	e->mtime_ns = m->has_mtime_ns ? m->mtime_ns : 0;
	e->ctime_ns = m->has_ctime_ns ? m->ctime_ns : e->mtime_ns;
	e->atime_ns = m->has_atime_ns ? m->atime_ns : e->mtime_ns;
	e->mode = m->has_mode ? m->mode : 0;
	e->pinned = m->has_pinned && m->pinned;
	e->has_owner = m->has_uid && m->has_gid;
	e->uid = e->has_owner ? m->uid : 0;
	e->gid = e->has_owner ? m->gid : 0;
	e->type = m->has_type ? (uint8_t)m->type : KVC_TYPE_FILE;
	e->rdev = m->has_rdev ? m->rdev : 0;
}

static void op_init(struct kvc_op *op, struct kvc *kvc, const char *name, const void *key,
                    size_t keylen, int body)
{
	memset(op, 0, sizeof(*op));
	kvfs__request__init(&op->req);
	op->name = name;
	op->key = key;
	op->keylen = keylen;
	op->deadline = kvc_deadline(kvc, 0);
	op->body = body;
	op->req.body_case = (Kvfs__Request__BodyCase)body;
}

int kvc_stat(struct kvc *kvc, const void *key, size_t keylen, struct kvc_entry *ret)
{
	Kvfs__StatRequest st = KVFS__STAT_REQUEST__INIT;
	struct kvc_call *c;
	struct kvc_op op;
	int r = kvc_key_check("STAT", key, keylen);

	if (r)
		return r;
	op_init(&op, kvc, "STAT", key, keylen, KVFS__RESPONSE__BODY_STAT);
	st.key.data = (uint8_t *)(uintptr_t)key;
	st.key.len = keylen;
	op.req.stat = &st;
	r = kvc_op_run(kvc, &op, &c);
	if (r)
		return r;
	if (ret)
		entry_from_pb(c->resp.resp->stat->entry, c->epoch, ret);
	kvc_call_put(kvc, c);
	kvc_errbuf[0] = '\0';
	return 0;
}

int kvc_stat_dir(struct kvc *kvc, const void *key, size_t keylen, struct kvc_entry *ret)
{
	Kvfs__StatRequest st = KVFS__STAT_REQUEST__INIT;
	const Kvfs__StatResponse *sr;
	struct kvc_call *c;
	struct kvc_op op;
	bool probe;
	int r = kvc_key_check("STAT", key, keylen);

	if (r)
		return r;
	pthread_mutex_lock(&kvc->lock);
	probe = kvc->lim.features & KVFS__FEATURE__FEATURE_STAT_DIR;
	pthread_mutex_unlock(&kvc->lock);
	if (!probe || keylen >= KV_KEY_MAX) { /* an older server: STAT, then LIST */
		char pfx[KV_KEY_MAX + 2];
		struct kvc_list l;

		r = kvc_stat(kvc, key, keylen, ret);
		if (r != -ENOENT || keylen >= KV_KEY_MAX)
			return r;
		memcpy(pfx, key, keylen);
		pfx[keylen] = '/';
		pfx[keylen + 1] = '\0';
		r = kvc_list(kvc, pfx, NULL, NULL, 1, &l);
		if (r < 0)
			return r;
		memset(ret, 0, sizeof(*ret));
		r = l.n_entries || l.n_prefixes ? 1 : -ENOENT;
		if (r == 1 && l.n_entries && !strcmp(l.entries[0].key, pfx))
			*ret = l.entries[0].e;
		kvc_list_free(&l);
		return r;
	}
	op_init(&op, kvc, "STAT", key, keylen, KVFS__RESPONSE__BODY_STAT);
	st.key.data = (uint8_t *)(uintptr_t)key;
	st.key.len = keylen;
	st.has_dir = st.dir = 1;
	op.req.stat = &st;
	r = kvc_op_run(kvc, &op, &c);
	if (r)
		return r;
	sr = c->resp.resp->stat;
	memset(ret, 0, sizeof(*ret));
	if (!sr->has_dir || !sr->dir || sr->entry->version)
		entry_from_pb(sr->entry, c->epoch, ret);
	r = sr->has_dir && sr->dir ? 1 : 0;
	kvc_call_put(kvc, c);
	kvc_errbuf[0] = '\0';
	return r;
}

int kvc_delete(struct kvc *kvc, const void *key, size_t keylen, uint64_t if_version)
{
	Kvfs__DeleteRequest d = KVFS__DELETE_REQUEST__INIT;
	struct kvc_call *c;
	struct kvc_op op;
	int r = kvc_key_check("DELETE", key, keylen);

	if (r)
		return r;
	op_init(&op, kvc, "DELETE", key, keylen, KVFS__RESPONSE__BODY_DELETE);
	d.key.data = (uint8_t *)(uintptr_t)key;
	d.key.len = keylen;
	d.has_if_version = if_version != 0;
	d.if_version = if_version;
	op.req.delete_ = &d;
	r = kvc_op_run(kvc, &op, &c);
	if (r)
		return r;
	kvc_call_put(kvc, c);
	kvc_errbuf[0] = '\0';
	return 0;
}

int kvc_rename(struct kvc *kvc, const void *src, size_t srclen, const void *dst, size_t dstlen,
               bool no_overwrite, uint64_t *ret_version)
{
	Kvfs__RenameRequest rn = KVFS__RENAME_REQUEST__INIT;
	struct kvc_call *c;
	struct kvc_op op;
	int r = kvc_key_check("RENAME", src, srclen);

	if (r || (r = kvc_key_check("RENAME", dst, dstlen)))
		return r;
	op_init(&op, kvc, "RENAME", src, srclen, KVFS__RESPONSE__BODY_RENAME);
	rn.src.data = (uint8_t *)(uintptr_t)src;
	rn.src.len = srclen;
	rn.dst.data = (uint8_t *)(uintptr_t)dst;
	rn.dst.len = dstlen;
	rn.has_no_overwrite = no_overwrite;
	rn.no_overwrite = no_overwrite;
	op.req.rename = &rn;
	r = kvc_op_run(kvc, &op, &c);
	if (r)
		return r;
	if (ret_version)
		*ret_version = c->resp.resp->rename->version;
	kvc_call_put(kvc, c);
	kvc_errbuf[0] = '\0';
	return 0;
}

int kvc_setattr(struct kvc *kvc, const void *key, size_t keylen, const struct kvc_setattr_opts *o,
                struct kvc_entry *ret)
{
	Kvfs__SetAttrRequest sa = KVFS__SET_ATTR_REQUEST__INIT;
	struct kvc_call *c;
	struct kvc_op op;
	unsigned set = o ? o->set : 0;
	int r = kvc_key_check("SETATTR", key, keylen);

	if (r)
		return r;
	op_init(&op, kvc, "SETATTR", key, keylen, KVFS__RESPONSE__BODY_SETATTR);
	sa.key.data = (uint8_t *)(uintptr_t)key;
	sa.key.len = keylen;
	sa.has_mode = !!(set & KVC_SET_MODE);
	sa.mode = sa.has_mode ? o->mode & 07777 : 0;
	sa.has_mtime_ns = !!(set & KVC_SET_MTIME);
	sa.mtime_ns = sa.has_mtime_ns ? o->mtime_ns : 0;
	sa.has_uid = !!(set & KVC_SET_UID);
	sa.uid = sa.has_uid ? o->uid : 0;
	sa.has_gid = !!(set & KVC_SET_GID);
	sa.gid = sa.has_gid ? o->gid : 0;
	sa.has_atime_ns = !!(set & KVC_SET_ATIME);
	sa.atime_ns = sa.has_atime_ns ? o->atime_ns : 0;
	sa.has_accessed_ns = !!(set & KVC_ACCESSED);
	sa.accessed_ns = sa.has_accessed_ns ? o->atime_ns : 0;
	sa.has_if_version = o && o->if_version;
	sa.if_version = o ? o->if_version : 0;
	op.req.setattr = &sa;
	r = kvc_op_run(kvc, &op, &c);
	if (r)
		return r;
	if (ret)
		entry_from_pb(c->resp.resp->setattr->entry, c->epoch, ret);
	kvc_call_put(kvc, c);
	kvc_errbuf[0] = '\0';
	return 0;
}

int kvc_pin(struct kvc *kvc, const void *key, size_t keylen, bool pin, struct kvc_entry *ret)
{
	Kvfs__SetAttrRequest sa = KVFS__SET_ATTR_REQUEST__INIT;
	const char *name = pin ? "PIN" : "UNPIN";
	struct kvc_call *c;
	struct kvc_op op;
	int r = kvc_key_check(name, key, keylen);

	if (r)
		return r;
	op_init(&op, kvc, name, key, keylen, KVFS__RESPONSE__BODY_SETATTR);
	sa.key.data = (uint8_t *)(uintptr_t)key;
	sa.key.len = keylen;
	sa.has_pinned = true;
	sa.pinned = pin;
	op.req.setattr = &sa;
	r = kvc_op_run(kvc, &op, &c);
	if (r)
		return r;
	if (ret)
		entry_from_pb(c->resp.resp->setattr->entry, c->epoch, ret);
	kvc_call_put(kvc, c);
	kvc_errbuf[0] = '\0';
	return 0;
}

/* The name of an extended attribute, checked as the server would. */
static int xname_check(const char *what, const char *name)
{
	size_t n = name ? strlen(name) : 0;

	if (n == 0 || n > WIRE_XATTR_NAME_MAX)
		return kvc_fail(n ? -ERANGE : -EINVAL, "kvc: %s: a name is 1 to %d bytes", what,
		                WIRE_XATTR_NAME_MAX);
	return 0;
}

ssize_t kvc_getxattr(struct kvc *kvc, const void *key, size_t keylen, const char *name, void *buf,
                     size_t size)
{
	Kvfs__GetXattrRequest g = KVFS__GET_XATTR_REQUEST__INIT;
	const Kvfs__GetXattrResponse *res;
	struct kvc_call *c;
	struct kvc_op op;
	ssize_t n;
	int r = kvc_key_check("GETXATTR", key, keylen);

	if (r || (r = xname_check("GETXATTR", name)))
		return r;
	op_init(&op, kvc, "GETXATTR", key, keylen, KVFS__RESPONSE__BODY_GETXATTR);
	g.key.data = (uint8_t *)(uintptr_t)key;
	g.key.len = keylen;
	g.name.data = (uint8_t *)(uintptr_t)name;
	g.name.len = strlen(name);
	op.req.getxattr = &g;
	r = kvc_op_run(kvc, &op, &c);
	if (r)
		return r;
	res = c->resp.resp->getxattr;
	if (!res->has_value) {
		kvc_call_put(kvc, c);
		return kvc_fail(-ENODATA, "kvc: GETXATTR: no attribute %s", name);
	}
	n = (ssize_t)res->value.len;
	if (size && res->value.len > size) {
		kvc_call_put(kvc, c);
		return kvc_fail(-ERANGE, "kvc: GETXATTR: %s: the value is %zd bytes", name, n);
	}
	if (size && n)
		memcpy(buf, res->value.data, (size_t)n);
	kvc_call_put(kvc, c);
	kvc_errbuf[0] = '\0';
	return n;
}

static int xattr_set(struct kvc *kvc, const void *key, size_t keylen, const char *name,
                     const void *value, size_t size, int flags, bool remove)
{
	Kvfs__SetXattrRequest a = KVFS__SET_XATTR_REQUEST__INIT;
	const char *what = remove ? "REMOVEXATTR" : "SETXATTR";
	struct kvc_call *c;
	struct kvc_op op;
	bool found;
	int r = kvc_key_check(what, key, keylen);

	if (r || (r = xname_check(what, name)))
		return r;
	if (!remove && size > WIRE_XATTR_VALUE_MAX)
		return kvc_fail(-E2BIG, "kvc: SETXATTR: a value is at most %d bytes",
		                WIRE_XATTR_VALUE_MAX);
	if ((flags & KVC_XATTR_CREATE) && (flags & KVC_XATTR_REPLACE))
		return kvc_fail(-EINVAL, "kvc: SETXATTR: create and replace exclude each other");
	op_init(&op, kvc, what, key, keylen, KVFS__RESPONSE__BODY_SETXATTR);
	a.key.data = (uint8_t *)(uintptr_t)key;
	a.key.len = keylen;
	a.name.data = (uint8_t *)(uintptr_t)name;
	a.name.len = strlen(name);
	if (remove) {
		a.has_remove = a.remove = 1;
	} else {
		a.has_value = 1;
		a.value.data = (uint8_t *)(uintptr_t)(value ? value : "");
		a.value.len = size;
		a.has_create = a.create = (flags & KVC_XATTR_CREATE) != 0;
		a.has_replace = a.replace = (flags & KVC_XATTR_REPLACE) != 0;
	}
	op.req.setxattr = &a;
	r = kvc_op_run(kvc, &op, &c);
	if (r)
		return r == -EFBIG ? -E2BIG : r; /* TOO_BIG: the value */
	found = c->resp.resp->setxattr->found;
	kvc_call_put(kvc, c);
	if (!found && (remove || (flags & KVC_XATTR_REPLACE)))
		return kvc_fail(-ENODATA, "kvc: %s: no attribute %s", what, name);
	kvc_errbuf[0] = '\0';
	return 0;
}

int kvc_setxattr(struct kvc *kvc, const void *key, size_t keylen, const char *name,
                 const void *value, size_t size, int flags)
{
	return xattr_set(kvc, key, keylen, name, value, size, flags, false);
}

int kvc_removexattr(struct kvc *kvc, const void *key, size_t keylen, const char *name)
{
	return xattr_set(kvc, key, keylen, name, NULL, 0, 0, true);
}

ssize_t kvc_listxattr(struct kvc *kvc, const void *key, size_t keylen, char *buf, size_t size)
{
	Kvfs__ListXattrRequest l = KVFS__LIST_XATTR_REQUEST__INIT;
	const Kvfs__ListXattrResponse *res;
	struct kvc_call *c;
	struct kvc_op op;
	size_t need = 0;
	int r = kvc_key_check("LISTXATTR", key, keylen);

	if (r)
		return r;
	op_init(&op, kvc, "LISTXATTR", key, keylen, KVFS__RESPONSE__BODY_LISTXATTR);
	l.key.data = (uint8_t *)(uintptr_t)key;
	l.key.len = keylen;
	op.req.listxattr = &l;
	r = kvc_op_run(kvc, &op, &c);
	if (r)
		return r;
	res = c->resp.resp->listxattr;
	for (size_t i = 0; i < res->n_names; i++)
		need += res->names[i].len + 1;
	if (size && need > size) {
		kvc_call_put(kvc, c);
		return kvc_fail(-ERANGE, "kvc: LISTXATTR: the names take %zu bytes", need);
	}
	for (size_t i = 0, w = 0; size && i < res->n_names; i++) {
		memcpy(buf + w, res->names[i].data, res->names[i].len);
		w += res->names[i].len;
		buf[w++] = '\0';
	}
	kvc_call_put(kvc, c);
	kvc_errbuf[0] = '\0';
	return (ssize_t)need;
}

static char *bin_dup(const ProtobufCBinaryData *b)
{
	char *s = malloc(b->len + 1);

	if (s) {
		if (b->len)
			memcpy(s, b->data, b->len);
		s[b->len] = '\0';
	}
	return s;
}

void kvc_list_free(struct kvc_list *l)
{
	if (!l)
		return;
	for (size_t i = 0; i < l->n_entries; i++)
		free(l->entries[i].key);
	for (size_t i = 0; i < l->n_prefixes; i++)
		free(l->prefixes[i]);
	free(l->entries);
	free(l->prefixes);
	free(l->prefix_e);
	free(l->next_start_after);
	memset(l, 0, sizeof(*l));
}

static int marker_cmp(const Kvfs__Entry *marker, const ProtobufCBinaryData *prefix)
{
	return kv_key_cmp(marker->key.data, marker->key.len, prefix->data, prefix->len);
}

static void set_bin(protobuf_c_boolean *has, ProtobufCBinaryData *b, const char *s)
{
	if (s && *s) {
		*has = 1;
		b->data = (uint8_t *)(uintptr_t)s;
		b->len = strlen(s);
	}
}

int kvc_list(struct kvc *kvc, const char *prefix, const char *delimiter, const char *start_after,
             uint32_t limit, struct kvc_list *ret)
{
	Kvfs__ListRequest lr = KVFS__LIST_REQUEST__INIT;
	const Kvfs__ListResponse *res;
	struct kvc_list l = {0};
	struct kvc_call *c;
	struct kvc_op op;
	int r;

	if (!ret)
		return kvc_fail(-EINVAL, "kvc: LIST: no result given");
	op_init(&op, kvc, "LIST", prefix, prefix ? strlen(prefix) : 0, KVFS__RESPONSE__BODY_LIST);
	if (!prefix || !*prefix)
		op.key = NULL;
	set_bin(&lr.has_prefix, &lr.prefix, prefix);
	set_bin(&lr.has_delimiter, &lr.delimiter, delimiter);
	set_bin(&lr.has_start_after, &lr.start_after, start_after);
	lr.has_limit = limit != 0;
	lr.limit = limit;
	op.req.list = &lr;
	r = kvc_op_run(kvc, &op, &c);
	if (r)
		return r;
	res = c->resp.resp->list;
	l.entries = calloc(res->n_entries ? res->n_entries : 1, sizeof(*l.entries));
	l.prefixes =
	        calloc(res->n_common_prefixes ? res->n_common_prefixes : 1, sizeof(*l.prefixes));
	l.prefix_e =
	        calloc(res->n_common_prefixes ? res->n_common_prefixes : 1, sizeof(*l.prefix_e));
	if (!l.entries || !l.prefixes || !l.prefix_e)
		goto out_nomem;
	for (size_t i = 0; i < res->n_entries; i++) {
		l.entries[i].key = bin_dup(&res->entries[i]->key);
		if (!l.entries[i].key)
			goto out_nomem;
		l.n_entries++;
		l.entries[i].keylen = res->entries[i]->key.len;
		entry_from_pb(res->entries[i], c->epoch, &l.entries[i].e);
	}
	for (size_t i = 0, m = 0; i < res->n_common_prefixes; i++) {
		const ProtobufCBinaryData *pb = &res->common_prefixes[i];

		l.prefixes[i] = bin_dup(pb);
		if (!l.prefixes[i])
			goto out_nomem;
		l.n_prefixes++;
		/* markers come in their prefixes' order; skip any that match none */
		while (m < res->n_prefix_markers && marker_cmp(res->prefix_markers[m], pb) < 0)
			m++;
		if (m < res->n_prefix_markers && marker_cmp(res->prefix_markers[m], pb) == 0)
			entry_from_pb(res->prefix_markers[m++], c->epoch, &l.prefix_e[i]);
	}
	l.truncated = res->has_truncated && res->truncated;
	if (l.truncated && res->has_next_start_after) {
		l.next_start_after = bin_dup(&res->next_start_after);
		if (!l.next_start_after)
			goto out_nomem;
	}
	kvc_call_put(kvc, c);
	*ret = l;
	kvc_errbuf[0] = '\0';
	return 0;

out_nomem:
	kvc_call_put(kvc, c);
	kvc_list_free(&l);
	return kvc_fail(-ENOMEM, "kvc: LIST: out of memory");
}

int kvc_stats(struct kvc *kvc, void (*fn)(void *arg, const char *name, uint64_t value), void *arg)
{
	Kvfs__StatsRequest sr = KVFS__STATS_REQUEST__INIT;
	const Kvfs__StatsResponse *res;
	struct kvc_call *c;
	struct kvc_op op;
	int r;

	op_init(&op, kvc, "STATS", NULL, 0, KVFS__RESPONSE__BODY_STATS);
	op.req.stats = &sr;
	r = kvc_op_run(kvc, &op, &c);
	if (r)
		return r;
	res = c->resp.resp->stats;
	for (size_t i = 0; fn && i < res->n_counters; i++)
		fn(arg, res->counters[i]->name, res->counters[i]->value);
	kvc_call_put(kvc, c);
	kvc_errbuf[0] = '\0';
	return 0;
}
