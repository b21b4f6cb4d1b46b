/* SPDX-License-Identifier: MIT */
/* Metadata operations: STAT, DELETE, RENAME, SETATTR (and pins), LIST, STATS. */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kvc_i.h"
#include "kvfs/util.h"

static void entry_from_pb(const Kvfs__Entry *m, uint64_t epoch, struct kvc_entry *e)
{
	e->epoch = epoch;
	e->size = m->size;
	e->version = m->version;
	e->mtime_ns = m->has_mtime_ns ? m->mtime_ns : 0;
	e->mode = m->has_mode ? m->mode : 0;
	e->pinned = m->has_pinned && m->pinned;
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

int kvc_setattr(struct kvc *kvc, const void *key, size_t keylen, int64_t mode, int64_t mtime_ns,
                struct kvc_entry *ret)
{
	Kvfs__SetAttrRequest sa = KVFS__SET_ATTR_REQUEST__INIT;
	struct kvc_call *c;
	struct kvc_op op;
	int r = kvc_key_check("SETATTR", key, keylen);

	if (r)
		return r;
	op_init(&op, kvc, "SETATTR", key, keylen, KVFS__RESPONSE__BODY_SETATTR);
	sa.key.data = (uint8_t *)(uintptr_t)key;
	sa.key.len = keylen;
	sa.has_mode = mode >= 0;
	sa.mode = (uint32_t)(mode >= 0 ? mode & 07777 : 0);
	sa.has_mtime_ns = mtime_ns >= 0;
	sa.mtime_ns = mtime_ns >= 0 ? mtime_ns : 0;
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
