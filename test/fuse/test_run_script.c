/* SPDX-License-Identifier: MIT */
/*
 * The README's run command, scripts/run, as a user runs it: --demo must copy
 * files in and out, verify them and exit 0 leaving nothing behind; without
 * --demo the mount must serve until Ctrl-C, which must unmount it and stop
 * the server; a mount taken away from outside must stop the script too.
 * It runs the binaries of this build (--build-dir), so no package check and
 * no build happen here.
 *
 * The script runs in its own process group, as a terminal's foreground job
 * would: Ctrl-C is SIGINT to that group.  .fini kills the group, unmounts
 * and removes the temp dir, also after a failed assertion.
 */
#include "fuse_env.h"

#define SCRIPT_MS 180000 /* bound on the script's start-up and on --demo */
#define STOP_MS   30000  /* bound on its exit after Ctrl-C */
#define STR_(x)   #x
#define STR(x)    STR_(x)

static pid_t script_pid;  /* 0 once reaped */
static pid_t script_pgid; /* its process group: the script, kv-server, cp... */
static char out_path[300], mnt[300];

static void fini(void)
{
	/* a live member keeps the group's id from being reused: kill(-g, 0)
	 * succeeding means these are still our processes */
	if (script_pgid > 0 && kill(-script_pgid, 0) == 0)
		kill(-script_pgid, SIGKILL);
	if (script_pid > 0)
		waitpid(script_pid, NULL, 0);
	if (mnt[0] && is_mounted(mnt))
		sh("fusermount3 -u -z %s 2>/dev/null", mnt);
	env_stop(); /* the temp dir */
}

static void init(void)
{
	env_init(); /* the script starts its own server and mount */
	snprintf(out_path, sizeof(out_path), "%s/run.out", E.dir);
	snprintf(mnt, sizeof(mnt), "%s/mnt", E.dir);
}

/* Start scripts/run @args (its output in out_path) in a process group of
 * its own, with SIGINT at its default as in a terminal. */
static void script_start(const char *args)
{
	char cmd[2048];

	snprintf(cmd, sizeof(cmd),
	         "exec %s/scripts/run --build-dir %s --port %d --mount %s %s >%s 2>&1",
	         env_bin("KVFS_SOURCE_ROOT"), env_bin("KVFS_BUILD_ROOT"), E.port, mnt, args,
	         out_path);
	script_pid = fork();
	cr_assert_geq(script_pid, 0);
	if (script_pid == 0) {
		setpgid(0, 0);
		signal(SIGINT, SIG_DFL);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	setpgid(script_pid, script_pid); /* whichever of the two runs first */
	script_pgid = script_pid;
}

static void print_output(void)
{
	sh("cat %s >&2", out_path);
}

/* Wait for the script to exit within @ms; returns its exit code. */
static int script_wait(uint64_t ms)
{
	uint64_t t0 = env_ms();
	int st;
	pid_t r;

	while ((r = waitpid(script_pid, &st, WNOHANG)) == 0) {
		if (env_ms() - t0 > ms) {
			print_output();
			cr_assert_fail(
			        "scripts/run still running after %llu ms (its output is above)",
			        (unsigned long long)ms);
		}
		usleep(50000);
	}
	cr_assert_eq(r, script_pid);
	script_pid = 0;
	cr_assert(WIFEXITED(st), "scripts/run died of signal %d", WTERMSIG(st));
	return WEXITSTATUS(st);
}

/* True when the script's output so far holds @text. */
static bool output_has(const char *text)
{
	return sh("grep -qF -- '%s' %s", text, out_path) == 0;
}

static void wait_output(const char *text)
{
	uint64_t t0 = env_ms();

	while (!output_has(text)) {
		bool exited = waitpid(script_pid, NULL, WNOHANG) != 0;

		if (exited || env_ms() - t0 > SCRIPT_MS) {
			print_output();
			if (exited)
				script_pid = 0;
			cr_assert_fail("scripts/run %s before printing '%s' (its output is above)",
			               exited ? "exited" : "ran for " STR(SCRIPT_MS) " ms", text);
		}
		usleep(50000);
	}
}

/* After the script: nothing mounted, nothing listening, its temp dir gone. */
static void assert_nothing_left(void)
{
	char line[512], work[512] = "";
	FILE *f = fopen(out_path, "r");

	cr_assert_not(is_mounted(mnt), "%s is still mounted after scripts/run exited", mnt);
	cr_assert_neq(sh("exec 3<>/dev/tcp/127.0.0.1/%d 2>/dev/null", E.port), 0,
	              "kv-server still listens on port %d after scripts/run exited", E.port);
	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "kv-server: %*s (%*[^)]), log %511[^\n]", work) == 1)
			break;
	fclose(f);
	cr_assert(work[0], "scripts/run did not print its kv-server log path");
	*strrchr(work, '/') = '\0';
	cr_assert_neq(access(work, F_OK), 0, "scripts/run left its temp dir %s", work);
}

TestSuite(run_script, .init = init, .fini = fini, .timeout = 400);

static void demo(const char *provider)
{
	char args[64];

	snprintf(args, sizeof(args), "--demo --provider %s", provider);
	script_start(args);
	int code = script_wait(SCRIPT_MS);

	if (code != 0 || !output_has("demo: OK"))
		print_output();
	cr_assert_eq(code, 0, "scripts/run --demo exited %d", code);
	cr_assert(output_has("demo: OK"));
	cr_assert(output_has("identical"));
	assert_nothing_left();
}

Test(run_script, demo_over_tcp_verifies_and_leaves_nothing)
{
	demo("tcp");
}

Test(run_script, demo_over_shm_verifies_and_leaves_nothing)
{
	demo("shm");
}

Test(run_script, ctrl_c_unmounts_and_stops_the_server)
{
	char src[400], dst[400];

	script_start("");
	wait_output("Press Ctrl-C");
	cr_assert(is_mounted(mnt));
	snprintf(src, sizeof(src), "%s/in.bin", E.dir);
	snprintf(dst, sizeof(dst), "%s/in.bin", mnt);
	make_file(src, 3 * 1024 * 1024 + 1, 7);
	cr_assert_eq(sh("cp %s %s && cmp %s %s", src, dst, src, dst), 0,
	             "cp and cmp through the mount of scripts/run failed");

	cr_assert_eq(kill(-script_pgid, SIGINT), 0);
	int code = script_wait(STOP_MS);

	if (code != 0)
		print_output();
	cr_assert_eq(code, 0, "scripts/run exited %d after Ctrl-C", code);
	cr_assert(output_has("stopping"));
	assert_nothing_left();
}

Test(run_script, unmount_from_outside_stops_it_with_an_error)
{
	script_start("");
	wait_output("Press Ctrl-C");
	cr_assert_eq(sh("fusermount3 -u %s", mnt), 0);
	int code = script_wait(STOP_MS);

	cr_assert_eq(code, 1, "scripts/run exited %d after its mount went away", code);
	cr_assert(output_has("unmounted from outside"));
	assert_nothing_left();
}
