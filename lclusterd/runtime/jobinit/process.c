/*
 * The job init's process ops: its name, parent-death signal, descriptors, session and
 * namespaces; capabilities and the bounding set, no_new_privs and the seccomp filter; the
 * cgroup it joins, its stdio, loopback, hostname and umask; the user namespace it makes
 * and enters; and the exec of the job's command.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
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
#include <sys/wait.h>
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

/* ---- user namespaces ------------------------------------------------------------------- */
/* The job's user namespace, made while a spare ("userns") and entered last ("setuser"). */
int userns_fd = -1;

/* The holder: a child made in a new user namespace that makes the job's network namespace
 * there (so the job's root, root only in its user namespace, still holds NET_RAW and
 * NET_BIND_SERVICE over its own network) and lives until its parent has written the maps
 * and opened both namespaces. It shares our descriptor table (CLONE_FILES, not our memory)
 * and sends the number of its open /proc directory down a pipe: we could not name its host
 * pid from inside our own PID namespace (-1: it failed). It leaves when `done` closes. */
struct holder {
    int ready[2], done[2];
};

static int holder_main(void *arg) {
    struct holder *h = arg;
    int proc_dir = unshare(CLONE_NEWNET) < 0 ? -1 : open("/proc/self", O_PATH | O_DIRECTORY | O_CLOEXEC);
    char ignored;
    if (write(h->ready[1], &proc_dir, sizeof proc_dir) != sizeof proc_dir || read(h->done[0], &ignored, 1) < 0)
        return 1;
    return 0;
}

static int write_map(int proc_dir, const char *file, const char *base, const char *count) {
    char line[64];
    int len = snprintf(line, sizeof line, "0 %s %s\n", base, count);
    int fd = openat(proc_dir, file, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(errno, "open(%s of the user namespace)", file);
    ssize_t n = write(fd, line, (size_t)len);
    int err = errno;
    close(fd);
    return n == len ? 0 : fail(n < 0 ? err : EIO, "write(%s: 0 %s %s)", file, base, count);
}

/* Join the holder's namespaces: keep its user namespace for the job to enter last, enter its
 * network namespace now (we are root in an ancestor user namespace: allowed). */
static int join_holder(int proc_dir) {
    userns_fd = openat(proc_dir, "ns/user", O_RDONLY | O_CLOEXEC);
    if (userns_fd < 0)
        return fail(errno, "open(ns/user of the holder)");
    int net = openat(proc_dir, "ns/net", O_RDONLY | O_CLOEXEC);
    if (net < 0)
        return fail(errno, "open(ns/net of the holder)");
    int rc = setns(net, CLONE_NEWNET) < 0 ? fail(errno, "setns(network namespace)") : 0;
    close(net);
    return rc;
}

/* userns UID_BASE GID_BASE COUNT: make the user namespace the job will enter, mapping its
 * uids and gids 0..COUNT-1 to the host's UID_BASE.. and GID_BASE.. (written by us, root
 * in the parent namespace, so no setgroups restriction applies), and the job's network
 * namespace inside it, which this process enters. */
int op_userns(char **a, int n) {
    (void)n;
    static char stack[16384] __attribute__((aligned(16)));
    struct holder h = {{-1, -1}, {-1, -1}};
    if (pipe2(h.ready, O_CLOEXEC) < 0 || pipe2(h.done, O_CLOEXEC) < 0)
        return fail(errno, "pipe2()");
    int rc = -1, proc_dir = -1;
    pid_t pid = clone(holder_main, stack + sizeof stack, CLONE_NEWUSER | CLONE_FILES | SIGCHLD, &h);
    if (pid < 0) {
        fail(errno, "clone(CLONE_NEWUSER)");
    } else {
        if (read(h.ready[0], &proc_dir, sizeof proc_dir) != sizeof proc_dir || proc_dir < 0)
            fail(ECHILD, "the user namespace holder could not make its network namespace");
        else if (write_map(proc_dir, "uid_map", a[0], a[2]) == 0 && write_map(proc_dir, "gid_map", a[1], a[2]) == 0)
            rc = join_holder(proc_dir);
        close(h.done[1]);
        h.done[1] = -1;
        waitpid(pid, NULL, 0);
    }
    int fds[] = {proc_dir, h.ready[0], h.ready[1], h.done[0], h.done[1]};
    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    return rc;
}

/* setuser: enter the job's user namespace and become its root (host uid UID_BASE). The
 * kernel gives a process entering a user namespace a full bounding set there, so the
 * plan drops it again after this op. */
int op_setuser(char **a, int n) {
    (void)a, (void)n;
    if (userns_fd < 0)
        return refuse(EINVAL, "setuser: no user namespace (the spare's plan has no userns op)");
    if (setns(userns_fd, CLONE_NEWUSER) < 0)
        return fail(errno, "setns(user namespace)");
    close(userns_fd);
    userns_fd = -1;
    if (setgroups(0, NULL) < 0)
        return fail(errno, "setgroups(0)");
    if (setresgid(0, 0, 0) < 0)
        return fail(errno, "setresgid(0)");
    if (setresuid(0, 0, 0) < 0)
        return fail(errno, "setresuid(0)");
    return 0;
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
