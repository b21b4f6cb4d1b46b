/* SPDX-License-Identifier: MIT */
/*
 * kvfs logging: one macro family for every component.
 *
 * The level is checked before the arguments are formatted.  Library code
 * (xfer, wire, client) logs at KV_LOG_DEBUG at most (one exception: the
 * client's warning that the server restarted, once per restart: see
 * "Server restarts" in kvfs/client.h); the daemons decide what the user
 * sees by raising or lowering kv_log_level.  Thread-safe: each
 * message is written with a single write(2) to stderr.
 */
#ifndef KVFS_LOG_H
#define KVFS_LOG_H

#include <stdint.h>

enum kv_log_lvl {
	KV_LOG_ERR = 0,
	KV_LOG_WARN = 1,
	KV_LOG_INFO = 2,
	KV_LOG_DEBUG = 3,
};

/* Messages above this level are dropped.  Default KV_LOG_INFO; the
 * KVFS_LOG environment variable (err|warn|info|debug) overrides it. */
extern int kv_log_level;

/* Program name printed in front of every line (default "kvfs"). */
void kv_log_init(const char *prog);

void kv_log_write(int lvl, const char *tag, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* Emit at most one message per @interval_ms for the call site owning @last_ms. */
int kv_log_ratelimit(uint64_t *last_ms, unsigned interval_ms);

#define KV_LOG(lvl, tag, ...)                                                                      \
	do {                                                                                       \
		if ((lvl) <= kv_log_level)                                                         \
			kv_log_write((lvl), (tag), __VA_ARGS__);                                   \
	} while (0)

#define KV_ERR(tag, ...)   KV_LOG(KV_LOG_ERR, tag, __VA_ARGS__)
#define KV_WARN(tag, ...)  KV_LOG(KV_LOG_WARN, tag, __VA_ARGS__)
#define KV_INFO(tag, ...)  KV_LOG(KV_LOG_INFO, tag, __VA_ARGS__)
#define KV_DEBUG(tag, ...) KV_LOG(KV_LOG_DEBUG, tag, __VA_ARGS__)

/* Rate-limited variant for hot paths: at most one line per second per site. */
#define KV_WARN_RL(tag, ...)                                                                       \
	do {                                                                                       \
		static uint64_t kv_rl_last_;                                                       \
		if (KV_LOG_WARN <= kv_log_level && kv_log_ratelimit(&kv_rl_last_, 1000))           \
			kv_log_write(KV_LOG_WARN, (tag), __VA_ARGS__);                             \
	} while (0)

#endif /* KVFS_LOG_H */
