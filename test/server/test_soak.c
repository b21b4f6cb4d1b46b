/* SPDX-License-Identifier: MIT */
/*
 * Short soak: kv-soak (src/tools/kv-soak.c) with 4 clients against a 64 MiB
 * kv-server over tcp and shm.  Every value read is checked by kv-soak; the
 * test asserts on its JSON report: no mismatch, no unexpected error, the
 * server evicted, and its VmRSS/VmData grew less than 16 MiB between the
 * sample after warm-up and the end (a leak check, not a timing).  Each
 * client reconnects every 100 operations, so what the server keeps per
 * connection would show (it kept every client's shm region mapped).
 */
#include <inttypes.h>
#include <time.h>

#include "srv_proc.h"

#define SOAK_SECONDS "20"
#define MAX_GROWTH_K (16 * 1024)

/* Integer value of "name": in @json (the first occurrence), or fail. */
static long long json_int(const char *json, const char *name)
{
	char pat[64];
	const char *p;
	char *end;
	long long v;

	snprintf(pat, sizeof(pat), "\"%s\":", name);
	p = strstr(json, pat);
	cr_assert_not_null(p, "kv-soak's report has no \"%s\": %s", name, json);
	v = strtoll(p + strlen(pat), &end, 10);
	cr_assert_neq(end, p + strlen(pat), "\"%s\" is not a number in %s", name, json);
	return v;
}

static void soak(const char *provider)
{
	const char *bin = getenv("KV_SOAK");
	struct srv s = {0};
	const char *extra[] = {"-q", NULL};
	char out[96], pid[16], *json;
	int status = 0, fd;
	pid_t child;
	off_t len;

	if (!bin)
		cr_skip_test("KV_SOAK is not set (run through meson test)");
#if defined(__SANITIZE_ADDRESS__)
	/* ASan keeps freed blocks in a quarantine (256 MiB by default) that
	 * would read as growth; a small one keeps this a leak check. */
	setenv("ASAN_OPTIONS",
	       "detect_leaks=0:abort_on_error=1:quarantine_size_mb=4:intercept_send=0", 1);
#endif
	srv_start_args(&s, provider, "64M", extra);
	snprintf(out, sizeof(out), "/tmp/kvfs-test-soak-%d.json", (int)getpid());
	snprintf(pid, sizeof(pid), "%d", (int)s.pid);
	fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	cr_assert_geq(fd, 0);
	child = fork();
	cr_assert_geq(child, 0);
	if (child == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(fd, 1);
		execl(bin, bin, "--server", s.addr, "--provider", provider, "--clients", "4",
		      "--duration", SOAK_SECONDS, "--keys", "1024", "--max-size", "4M",
		      "--server-pid", pid, "--interval", "2.5", "--warmup", "5", "--seed", "42",
		      "--reconnect", "100", "--require-evictions", "--json", (char *)NULL);
		_exit(127);
	}
	close(fd);
	for (int i = 0; i < 3000; i++) { /* the run + 280 s; kv-soak bounds itself too */
		if (waitpid(child, &status, WNOHANG) == child) {
			child = 0;
			break;
		}
		usleep(100000);
	}
	if (child) {
		kill(child, SIGKILL);
		waitpid(child, &status, 0);
		srv_dump_log(&s);
		cr_assert_fail("kv-soak did not finish within 300 s");
	}

	fd = open(out, O_RDONLY);
	cr_assert_geq(fd, 0);
	len = lseek(fd, 0, SEEK_END);
	json = xmalloc((size_t)len + 1);
	cr_assert_eq(pread(fd, json, (size_t)len, 0), len);
	json[len] = '\0';
	close(fd);
	unlink(out);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		srv_dump_log(&s);
	cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	          "kv-soak over %s: status 0x%x, report: %s", provider, status, json);

	cr_expect_eq(json_int(json, "mismatches"), 0, "mismatches: %s", json);
	cr_expect_eq(json_int(json, "unexpected_errors"), 0, "unexpected errors: %s", json);
	cr_expect_gt(json_int(json, "verified"), 100, "too few values checked: %s", json);
	cr_expect_gt(json_int(json, "server_evictions"), 0, "no eviction: %s", json);
	cr_expect_leq(json_int(json, "evicted_seen"), json_int(json, "server_evictions"),
	              "keys vanished without eviction: %s", json);
	cr_expect_lt(json_int(json, "growth_rss_kib"), MAX_GROWTH_K,
	             "server VmRSS grew by 16 MiB or more after warm-up: %s", json);
	cr_expect_lt(json_int(json, "growth_data_kib"), MAX_GROWTH_K,
	             "server VmData grew by 16 MiB or more after warm-up: %s", json);
	free(json);
	srv_done(&s);
}

Test(soak, tcp, .timeout = 400)
{
	soak("tcp");
}

Test(soak, shm, .timeout = 400)
{
	soak("shm");
}
