/*
 * lclusterd-jobinit: a job's first process (PID 1 of its PID namespace).
 *
 * The fork server (forkserver.py) spawns this small static binary with vfork+exec
 * instead of forking itself: forking a Python process copies its page tables and then
 * pays a copy-on-write fault for every page either side touches, which cost more CPU
 * per job than everything the kernel does to build the container (runc's nsexec is C
 * for the same reason). The binary holds no policy: it executes a *plan*, a list of
 * ops built and unit-tested in Python (lclusterd/runtime/plan.py), in order:
 *
 *   argv[1..]       the spare's plan (namespaces, scratch tmpfs, loopback, bounding
 *                   set), ending with "wait"
 *   wait            blocks on fd 3 for the job: a 4-byte big-endian length, then that
 *                   many bytes of NUL-terminated tokens (the job's plan), with the
 *                   job's stdin, stdout and stderr as SCM_RIGHTS, then its volumes'
 *                   detached mounts; EOF = no job, exit 0
 *   the job's plan  cgroup join, mounts, pivot_root, masks, user, capabilities, ..., exec
 *
 * Status on fd 3 (close-on-exec, read to EOF by the fork server): nothing when the
 * exec succeeded, or one line E{"step":..,"errno":..,"detail":..} and exit 127 when an
 * op failed. A spare's failure is held back until its job arrives, so the fork server
 * hears it as that job's failure (and does not respawn a failing spare in a loop).
 *
 * This file is the interpreter: the ops table, the job message and the failure report.
 * The ops are in mounts.c (mounts and files), process.c (the process, its namespaces and
 * capabilities, exec), users.c (the user namespace and the job's user) and enter.c
 * (entering a running job: lclient -exec); seccomp.c
 * compiles the seccomp filter; jobinit.h is what they share.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "jobinit.h"

#define MAX_MESSAGE (16 << 20)

const char *step = "init";
/* The first failure: reported at once in the job's plan, after "wait" in the spare's. */
static int failed;
static int failed_errno;
static char failed_step[64];
static char failed_detail[1024];

int stdio_fds[3] = {-1, -1, -1};

/* Record a failure: detail is printf-formatted; with_reason appends ": strerror(err)". */
static int failv(int err, int with_reason, const char *fmt, va_list ap) {
    if (failed)
        return -1;
    int n = vsnprintf(failed_detail, sizeof failed_detail, fmt, ap);
    if (with_reason && err && n >= 0 && (size_t)n < sizeof failed_detail)
        snprintf(failed_detail + n, sizeof failed_detail - n, ": %s", strerror(err));
    snprintf(failed_step, sizeof failed_step, "%s", step);
    failed_errno = err;
    failed = 1;
    return -1;
}

/* A failed call: "call(args): strerror". */
int fail(int err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    failv(err, 1, fmt, ap);
    va_end(ap);
    return -1;
}

/* A refusal whose sentence says it all (errno kept for the report). */
int refuse(int err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    failv(err, 0, fmt, ap);
    va_end(ap);
    return -1;
}

static size_t json_escape(char *out, size_t cap, const char *s) {
    size_t o = 0;
    for (; *s && o + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20) {
            o += (size_t)snprintf(out + o, cap - o, "\\u%04x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = '\0';
    return o;
}

static void report_and_exit(void) {
    char s[160], d[2200], line[2600];
    json_escape(s, sizeof s, failed_step);
    json_escape(d, sizeof d, failed_detail);
    int n = snprintf(line, sizeof line, "E{\"step\":\"%s\",\"errno\":%d,\"detail\":\"%s\"}\n", s, failed_errno, d);
    if (n > 0) {
        ssize_t ignored = write(STATUS_FD, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
        (void)ignored; /* the fork server is gone: nobody is left to tell */
    }
    _exit(127);
}

unsigned long long number(const char *s, int base) { return strtoull(s, NULL, base); }

/* ---- the job message ------------------------------------------------------------------- */

static int read_exactly(int fd, char *buf, size_t size) {
    while (size) {
        ssize_t n = read(fd, buf, size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        buf += n;
        size -= (size_t)n;
    }
    return 0;
}

/* Wait for the job on fd 3. Returns its plan as tokens (count in *count), or exits 0 when
 * the fork server closed the socket (no job is coming). */
static char **receive_job(int *count) {
    unsigned char header[4];
    char control[CMSG_SPACE((3 + MAX_VOLUMES) * sizeof(int))];
    struct iovec iov = {header, sizeof header};
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n;
    do
        n = recvmsg(STATUS_FD, &msg, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        _exit(0);
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int nfds = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (int i = 0; i < nfds && i < 3; i++)
                memcpy(&stdio_fds[i], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            for (int i = 3; i < nfds && volume_count < MAX_VOLUMES; i++)
                memcpy(&volume_fds[volume_count++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        }
    }
    if (n < 4 && read_exactly(STATUS_FD, (char *)header + n, 4 - (size_t)n) < 0)
        _exit(0);
    uint32_t length = ((uint32_t)header[0] << 24) | ((uint32_t)header[1] << 16) | ((uint32_t)header[2] << 8) | header[3];
    if (length == 0 || length > MAX_MESSAGE) {
        refuse(EINVAL, "job message of %u bytes", length);
        return NULL;
    }
    char *body = malloc(length + 1);
    if (!body) {
        fail(ENOMEM, "job message");
        return NULL;
    }
    if (read_exactly(STATUS_FD, body, length) < 0)
        _exit(0);
    body[length] = '\0';
    char **tokens = malloc(sizeof *tokens * (length + 1));
    int t = 0;
    if (!tokens) {
        fail(ENOMEM, "job message");
        return NULL;
    }
    for (char *p = body; p < body + length; p += strlen(p) + 1)
        tokens[t++] = p;
    *count = t;
    return tokens;
}

/* ---- the interpreter ------------------------------------------------------------------- */

static int op_step(char **a, int n) {
    (void)n;
    step = a[0];
    return 0;
}

/* A spare holds a failure back until its job arrives; a plan that starts with "now" (an
 * exec's: enter.c) has no job to wait for and reports it at once. */
static int report_now;

static int op_now(char **a, int n) {
    (void)a, (void)n;
    report_now = 1;
    return 0;
}

/* Every op: its name, its argument count (-1: all the rest) and what runs it. "wait" ends
 * the spare's plan (run_plan returns there). plan.ARITY in Python is held to this table. */
static const struct op {
    const char *name;
    int args;
    int (*run)(char **a, int n);
} OPS[] = {
    {"userns", 3, op_userns}, {"idmap", 2, op_idmap}, {"setuser", 0, op_setuser}, {"chown", 3, op_chown},
    {"step", 1, op_step}, {"name", 1, op_name}, {"pdeathsig", 1, op_pdeathsig}, {"closefds", 0, op_closefds},
    {"setsid", 0, op_setsid}, {"unshare", 1, op_unshare}, {"mount", 5, op_mount}, {"mkdir", 2, op_mkdir},
    {"file", 1, op_file}, {"symlink", 2, op_symlink}, {"mask", 1, op_mask}, {"readonly", 1, op_readonly},
    {"loopback", 0, op_loopback}, {"bounding", 2, op_bounding}, {"capset", 1, op_capset}, {"cgroup", 1, op_cgroup},
    {"stdio", 0, op_stdio}, {"umask", 1, op_umask}, {"pivot", 1, op_pivot}, {"hostname", 1, op_hostname},
    {"nnp", 0, op_nnp}, {"seccomp", 1, op_seccomp}, {"wait", 0, NULL}, {"exec", -1, op_exec},
    {"network", 0, op_network}, {"mkdirs", 4, op_mkdirs}, {"volume", 3, op_volume}, {"ids", 3, op_ids},
    {"pidfd", 1, op_pidfd}, {"setns", 1, op_setns}, {"nodump", 0, op_nodump}, {"forkwait", 0, op_forkwait},
    {"now", 0, op_now},
};

static const struct op *find_op(const char *name) {
    for (size_t i = 0; i < sizeof OPS / sizeof OPS[0]; i++)
        if (strcmp(OPS[i].name, name) == 0)
            return &OPS[i];
    return NULL;
}

/* Run tokens[0..count) as ops, up to a "wait" or the end. A failure in the job's plan is
 * reported at once; in the spare's plan it skips ahead to the "wait" (reported with the job). */
static void run_plan(char **tokens, int count, int spare) {
    for (int i = 0; i < count;) {
        const struct op *op = find_op(tokens[i]);
        int available = count - i - 1, args = op && op->args >= 0 ? op->args : available;
        if (op && !op->run)
            return; /* wait */
        if (!op)
            refuse(EINVAL, "unknown op %s", tokens[i]);
        else if (available < args)
            refuse(EINVAL, "op %s needs %d arguments", op->name, args);
        else
            op->run(&tokens[i + 1], args);
        if (failed && (!spare || report_now))
            report_and_exit();
        if (failed) {
            while (i < count && strcmp(tokens[i], "wait") != 0)
                i++;
            continue;
        }
        i += 1 + args;
    }
}

int main(int argc, char **argv) {
    run_plan(argv + 1, argc - 1, 1);
    int count = 0;
    char **job = receive_job(&count);
    if (failed)
        report_and_exit();
    step = "start";
    run_plan(job, count, 0);
    /* A job's plan ends in exec; reaching here means it did not. */
    refuse(EINVAL, "the job's plan has no exec");
    report_and_exit();
}
