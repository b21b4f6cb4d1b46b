/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "kvfs/log.h"
#include "kvfs/util.h"

int kv_log_level = KV_LOG_INFO;
static const char *log_prog = "kvfs";

static const char *const lvl_names[] = {"error", "warning", "info", "debug"};

void kv_log_init(const char *prog)
{
	const char *env = getenv("KVFS_LOG");

	if (prog)
		log_prog = prog;
	if (!env)
		return;
	for (int i = 0; i < (int)KV_ARRAY_SIZE(lvl_names); i++) {
		if (!strncasecmp(env, lvl_names[i], strlen(env) ? strlen(env) : 1))
			kv_log_level = i;
	}
}

void kv_log_write(int lvl, const char *tag, const char *fmt, ...)
{
	char line[1024];
	struct timespec ts;
	struct tm tm;
	va_list ap;
	int n;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(line, sizeof(line), "%02d:%02d:%02d.%03ld %s[%d] %s %s: ", tm.tm_hour,
	             tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, log_prog, (int)getpid(),
	             lvl_names[lvl < 0   ? 0
	                       : lvl > 3 ? 3
	                                 : lvl],
	             tag);
	if (n < 0 || n >= (int)sizeof(line))
		n = 0;
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	n += m;
	if (n > (int)sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	if (write(STDERR_FILENO, line, n) < 0) {
		/* nothing sensible to do when stderr is gone */
	}
}

int kv_log_ratelimit(uint64_t *last_ms, unsigned interval_ms)
{
	uint64_t now = kv_now_ms();

	if (*last_ms && now - *last_ms < interval_ms)
		return 0;
	*last_ms = now;
	return 1;
}
