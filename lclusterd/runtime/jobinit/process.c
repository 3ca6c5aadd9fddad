/*
 * The job init's process ops: its name, parent-death signal, descriptors, session and
 * namespaces; capabilities and the bounding set, no_new_privs and the seccomp filter; the
 * cgroup it joins, its stdio, loopback, hostname and umask; and the exec of the job's
 * command. The user namespace and the job's user are users.c's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include "jobinit.h"

/* Set IFF_UP on lo in the new network namespace: two ioctls, no netlink round trip. */
int op_loopback(char **a, int n) {
    (void)a, (void)n;
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0)
        return fail(errno, "socket(AF_INET)");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    int rc = ioctl(sock, SIOCGIFFLAGS, &ifr);
    if (rc == 0) {
        ifr.ifr_flags |= IFF_UP;
        rc = ioctl(sock, SIOCSIFFLAGS, &ifr);
    }
    int err = errno;
    close(sock);
    return rc < 0 ? fail(err, "ioctl(lo, IFF_UP)") : 0;
}

/* network: the fork server gives a job's network namespace its link, address and route, and
 * writes /etc/hosts and /etc/resolv.conf into its writable layer, once the namespace and the
 * layer exist (the spare's plan is done) and before the overlay is mounted over the layer. So
 * the init asks for it ("N" on the status socket) and waits for the answer: "G" to go on. */
int op_network(char **a, int n) {
    (void)a, (void)n;
    if (write(STATUS_FD, "N", 1) != 1)
        return fail(errno, "write(status socket)");
    char answer = 0;
    ssize_t got;
    do
        got = read(STATUS_FD, &answer, 1);
    while (got < 0 && errno == EINTR);
    if (got != 1 || answer != 'G')
        return refuse(ENETDOWN, "the fork server could not set up the job's network");
    return 0;
}

/* Drop every capability not in keep from the bounding set and clear the ambient set, so
 * no exec can regain one. The effective set stays until "capset" (mounts need it). */
int op_bounding(char **a, int n) {
    const char *keep_hex = a[0], *last = a[1];
    (void)n;
    unsigned long long keep = number(keep_hex, 16);
    int cap_last = (int)number(last, 10);
    for (int bit = 0; bit <= cap_last; bit++)
        if (!(keep & (1ULL << bit)) && prctl(PR_CAPBSET_DROP, bit, 0, 0, 0) < 0)
            return fail(errno, "prctl(PR_CAPBSET_DROP, %d)", bit);
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0)
        return fail(errno, "prctl(PR_CAP_AMBIENT_CLEAR_ALL)");
    return 0;
}

/* The kernel's capset(2) ABI (linux/capability.h, which musl's headers do not carry). */
#define LINUX_CAPABILITY_VERSION_3 0x20080522
struct cap_header {
    uint32_t version;
    int pid;
};
struct cap_data {
    uint32_t effective, permitted, inheritable;
};

int op_capset(char **a, int n) {
    const char *keep_hex = a[0];
    (void)n;
    unsigned long long keep = number(keep_hex, 16);
    struct cap_header header = {LINUX_CAPABILITY_VERSION_3, 0};
    struct cap_data data[2];
    for (int i = 0; i < 2; i++) {
        uint32_t word = (uint32_t)(keep >> (32 * i));
        data[i].effective = data[i].permitted = data[i].inheritable = word;
    }
    if (syscall(SYS_capset, &header, data) < 0)
        return fail(errno, "capset(%#llx)", keep);
    return 0;
}

/* ---- seccomp --------------------------------------------------------------------- */

/* seccomp RULES: install a filter compiled from RULES (the language is in seccomp.c). */
int op_seccomp(char **a, int n) {
    static struct seccomp_filter filter;
    (void)n;
    int err = seccomp_compile(a[0], &filter);
    if (err)
        return refuse(err, "seccomp: %s", filter.why);
    struct bpf_prog prog = {(unsigned short)filter.len, filter.insn};
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0)
        return fail(errno, "prctl(PR_SET_SECCOMP, %d rules)", filter.rules);
    return 0;
}

/* Join a cgroup: write "0" (this process) into its cgroup.procs file. */
int op_cgroup(char **a, int n_args) {
    const char *procs = a[0];
    (void)n_args;
    int fd = open(procs, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(errno, "open(%s)", procs);
    ssize_t n = write(fd, "0", 1);
    int err = errno;
    close(fd);
    return n == 1 ? 0 : fail(n < 0 ? err : EIO, "write(%s)", procs);
}

int op_stdio(char **a, int n) {
    (void)a, (void)n;
    for (int target = 0; target < 3; target++) {
        if (stdio_fds[target] < 0)
            return refuse(0, "expected 3 stdio descriptors");
        if (dup2(stdio_fds[target], target) < 0)
            return fail(errno, "dup2(%d, %d)", stdio_fds[target], target);
    }
    for (int i = 0; i < 3; i++)
        if (stdio_fds[i] > 2)
            close(stdio_fds[i]);
    return 0;
}

static int executable(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/* Resolve argv[0] inside the new root, so a missing binary is a set-up failure with a
 * clear reason rather than an exit code 127 that looks like the job ran. */
static int find_command(const char *name, const char *search_path, char *out, size_t cap) {
    if (strchr(name, '/')) {
        if (executable(name)) {
            snprintf(out, cap, "%s", name);
            return 0;
        }
        return refuse(ENOENT, "command not found in the rootfs: %s", name);
    }
    const char *dir = search_path;
    for (;;) {
        const char *end = strchrnul(dir, ':');
        int len = (int)(end - dir);
        if (len == 0)
            snprintf(out, cap, "./%s", name);
        else
            snprintf(out, cap, "%.*s/%s", len, dir, name);
        if (executable(out))
            return 0;
        if (!*end)
            break;
        dir = end + 1;
    }
    return refuse(ENOENT, "command not found in the rootfs: %s", name);
}

/* exec CWD PATH ARGC ARGV... ENVC ENV...: find the command, close every fd but stdio
 * on exec, enter the working directory, exec. Never returns on success. */
int op_exec(char **args, int count) {
    if (count < 3)
        return refuse(EINVAL, "exec: malformed op");
    const char *cwd = args[0], *search_path = args[1];
    int argc = (int)number(args[2], 10);
    if (argc < 1 || 3 + argc >= count)
        return refuse(EINVAL, "exec: malformed argv");
    char **argv = &args[3];
    int envc = (int)number(args[3 + argc], 10);
    if (4 + argc + envc > count)
        return refuse(EINVAL, "exec: malformed environment");
    char **envp = &args[4 + argc];
    /* argv and envp must end in NULL: copy them (they sit back to back in args). */
    char **argv0 = calloc((size_t)argc + 1, sizeof *argv0), **env0 = calloc((size_t)envc + 1, sizeof *env0);
    if (!argv0 || !env0)
        return fail(ENOMEM, "exec");
    memcpy(argv0, argv, (size_t)argc * sizeof *argv0);
    memcpy(env0, envp, (size_t)envc * sizeof *env0);

    char path[4096];
    step = "find command";
    if (find_command(argv0[0], search_path, path, sizeof path) < 0)
        return -1;
    step = "close fds";
    if (syscall(SYS_close_range, 3U, ~0U, 4U /* CLOSE_RANGE_CLOEXEC */) < 0)
        return fail(errno, "close_range(3, ~0, CLOEXEC)");
    step = "chdir";
    if (chdir(cwd) < 0) {
        if (errno == ENOENT)
            return refuse(ENOENT, "working directory %s does not exist in the rootfs", cwd);
        return fail(errno, "chdir(%s)", cwd);
    }
    step = "exec";
    execve(path, argv0, env0);
    return fail(errno, "execve(%s)", path);
}

/* ---- the process ---------------------------------------------------------------------- */

int op_name(char **a, int n) {
    (void)n;
    return prctl(PR_SET_NAME, a[0], 0, 0, 0) < 0 ? fail(errno, "prctl(PR_SET_NAME)") : 0;
}

int op_pdeathsig(char **a, int n) {
    (void)n;
    return prctl(PR_SET_PDEATHSIG, (int)number(a[0], 10), 0, 0, 0) < 0 ? fail(errno, "prctl(PR_SET_PDEATHSIG)") : 0;
}

int op_closefds(char **a, int n) { /* all but stdio and the status socket */
    (void)a, (void)n;
    return syscall(SYS_close_range, 4U, ~0U, 0U) < 0 ? fail(errno, "close_range(4, ~0)") : 0;
}

int op_setsid(char **a, int n) {
    (void)a, (void)n;
    return setsid() < 0 ? fail(errno, "setsid()") : 0;
}

int op_unshare(char **a, int n) {
    (void)n;
    int flags = (int)number(a[0], 16);
    return unshare(flags) < 0 ? fail(errno, "unshare(%#x)", flags) : 0;
}

int op_umask(char **a, int n) {
    (void)n;
    umask((mode_t)number(a[0], 8));
    return 0;
}

int op_hostname(char **a, int n) {
    (void)n;
    return sethostname(a[0], strlen(a[0])) < 0 ? fail(errno, "sethostname(%s)", a[0]) : 0;
}

int op_nnp(char **a, int n) {
    (void)a, (void)n;
    return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ? fail(errno, "prctl(PR_SET_NO_NEW_PRIVS)") : 0;
}
