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
 *                   job's stdin, stdout and stderr as SCM_RIGHTS; EOF = no job, exit 0
 *   the job's plan  cgroup join, mounts, pivot_root, masks, capabilities, ..., exec
 *
 * Status on fd 3 (close-on-exec, read to EOF by the fork server): nothing when the
 * exec succeeded, or one line E{"step":..,"errno":..,"detail":..} and exit 127 when an
 * op failed. A spare's failure is held back until its job arrives, so the fork server
 * hears it as that job's failure (and does not respawn a failing spare in a loop).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <net/if.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define STATUS_FD 3
#define MAX_MESSAGE (16 << 20)

static const char *step = "init";
/* The first failure: reported at once in the job's plan, after "wait" in the spare's. */
static int failed;
static int failed_errno;
static char failed_step[64];
static char failed_detail[1024];

static int stdio_fds[3] = {-1, -1, -1};

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
static int fail(int err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    failv(err, 1, fmt, ap);
    va_end(ap);
    return -1;
}

/* A refusal whose sentence says it all (errno kept for the report). */
static int refuse(int err, const char *fmt, ...) {
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

static const char *nullable(const char *s) { return *s ? s : NULL; }

static unsigned long long number(const char *s, int base) { return strtoull(s, NULL, base); }

/* ---- the ops ------------------------------------------------------------------- */

static int op_mount(char **a, int n) {
    const char *src = a[0], *target = a[1], *fstype = a[2], *flags = a[3], *data = a[4];
    (void)n;
    unsigned long f = (unsigned long)number(flags, 10);
    if (mount(nullable(src), target, nullable(fstype), f, nullable(data)) < 0)
        return fail(errno, "mount(%s -> %s, type %s, flags %#lx)", *src ? src : "none", target,
                    *fstype ? fstype : "none", f);
    return 0;
}

static int op_mkdir(char **a, int n) {
    const char *path = a[0], *mode = a[1];
    (void)n;
    if (mkdir(path, (mode_t)number(mode, 8)) < 0 && errno != EEXIST)
        return fail(errno, "mkdir(%s)", path);
    return 0;
}

/* An empty regular file: the mount point a device node is bind-mounted onto. */
static int op_file(char **a, int n) {
    const char *path = a[0];
    (void)n;
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return fail(errno, "open(%s, O_CREAT)", path);
    close(fd);
    return 0;
}

static int op_symlink(char **a, int n) {
    const char *target = a[0], *path = a[1];
    (void)n;
    if (symlink(target, path) < 0)
        return fail(errno, "symlink(%s -> %s)", path, target);
    return 0;
}

/* Bind /dev/null over a /proc file; one this kernel does not have is skipped. */
static int op_mask(char **a, int n) {
    const char *path = a[0];
    (void)n;
    struct stat st;
    if (stat(path, &st) < 0)
        return errno == ENOENT ? 0 : fail(errno, "stat(%s)", path);
    if (mount("/dev/null", path, NULL, MS_BIND, NULL) < 0)
        return fail(errno, "mount(/dev/null -> %s, bind)", path);
    return 0;
}

static int op_readonly(char **a, int n) {
    const char *path = a[0];
    (void)n;
    struct stat st;
    if (stat(path, &st) < 0)
        return errno == ENOENT ? 0 : fail(errno, "stat(%s)", path);
    if (mount(path, path, NULL, MS_BIND | MS_REC, NULL) < 0)
        return fail(errno, "mount(%s, bind)", path);
    if (mount(path, path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC, NULL) < 0)
        return fail(errno, "mount(%s, read-only remount)", path);
    return 0;
}

/* Set IFF_UP on lo in the new network namespace: two ioctls, no netlink round trip. */
static int op_loopback(char **a, int n) {
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

/* Drop every capability not in keep from the bounding set and clear the ambient set, so
 * no exec can regain one. The effective set stays until "capset" (mounts need it). */
static int op_bounding(char **a, int n) {
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

static int op_capset(char **a, int n) {
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
#include "seccomp.h"

/* seccomp RULES: install a filter compiled from RULES (the language is in seccomp.h). */
static int op_seccomp(char **a, int n) {
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
static int op_cgroup(char **a, int n_args) {
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

static int op_stdio(char **a, int n) {
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

/* Make root the new / and detach the old one (runc's pivot_root(".", ".") trick). */
static int op_pivot(char **a, int n) {
    const char *root = a[0];
    (void)n;
    if (chdir(root) < 0)
        return fail(errno, "chdir(%s)", root);
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        return fail(errno, "pivot_root(%s)", root);
    /* The old root is now stacked on "."; keep its unmount from propagating anywhere. */
    if (mount(NULL, ".", NULL, MS_SLAVE | MS_REC, NULL) < 0)
        return fail(errno, "mount(old root, rslave)");
    if (umount2(".", MNT_DETACH) < 0)
        return fail(errno, "umount2(old root)");
    if (chdir("/") < 0)
        return fail(errno, "chdir(/)");
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
static int op_exec(char **args, int count) {
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
/* The kernel's new mount API (linux/mount.h, which musl's headers do not carry). */
#define OPEN_TREE_CLONE 1
#define AT_RECURSIVE_ 0x8000
#define MOVE_MOUNT_F_EMPTY_PATH 0x4
#define MOUNT_ATTR_RDONLY_ 0x1
#define MOUNT_ATTR_NOSUID_ 0x2
#define MOUNT_ATTR_NODEV_ 0x4
#define MOUNT_ATTR_IDMAP_ 0x100000
struct mount_attr_ {
    uint64_t attr_set, attr_clr, propagation, userns_fd;
};

/* The job's user namespace, made while a spare ("userns") and entered last ("setuser"). */
static int userns_fd = -1;

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
static int op_userns(char **a, int n) {
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

/* idmap SOURCE TARGET: bind SOURCE at TARGET read-only, nosuid and nodev, with the job's
 * ids: a file owned by host root shows as the job's root. The overlay then takes TARGET
 * as its lower layer (idmapped lower layers: Linux 5.19). */
static int op_idmap(char **a, int n) {
    const char *source = a[0], *target = a[1];
    (void)n;
    if (userns_fd < 0)
        return refuse(EINVAL, "idmap: no user namespace (the spare's plan has no userns op)");
    int tree = (int)syscall(SYS_open_tree, AT_FDCWD, source, OPEN_TREE_CLONE | O_CLOEXEC | AT_RECURSIVE_);
    if (tree < 0)
        return fail(errno, "open_tree(%s)", source);
    struct mount_attr_ attr = {MOUNT_ATTR_IDMAP_ | MOUNT_ATTR_RDONLY_ | MOUNT_ATTR_NOSUID_ | MOUNT_ATTR_NODEV_, 0, 0,
                               (uint64_t)userns_fd};
    int rc = 0;
    if (syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH, &attr, sizeof attr) < 0)
        rc = fail(errno, "mount_setattr(%s, idmap)", source);
    else if (syscall(SYS_move_mount, tree, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0)
        rc = fail(errno, "move_mount(%s -> %s)", source, target);
    close(tree);
    return rc;
}

/* setuser: enter the job's user namespace and become its root (host uid UID_BASE). The
 * kernel gives a process entering a user namespace a full bounding set there, so the
 * plan drops it again after this op. */
static int op_setuser(char **a, int n) {
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

static int op_chown(char **a, int n) {
    const char *path = a[0];
    (void)n;
    uid_t uid = (uid_t)number(a[1], 10);
    gid_t gid = (gid_t)number(a[2], 10);
    return lchown(path, uid, gid) < 0 ? fail(errno, "chown(%s, %u, %u)", path, uid, gid) : 0;
}

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
    char control[CMSG_SPACE(3 * sizeof(int))];
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

static int op_name(char **a, int n) {
    (void)n;
    return prctl(PR_SET_NAME, a[0], 0, 0, 0) < 0 ? fail(errno, "prctl(PR_SET_NAME)") : 0;
}

static int op_pdeathsig(char **a, int n) {
    (void)n;
    return prctl(PR_SET_PDEATHSIG, (int)number(a[0], 10), 0, 0, 0) < 0 ? fail(errno, "prctl(PR_SET_PDEATHSIG)") : 0;
}

static int op_closefds(char **a, int n) { /* all but stdio and the status socket */
    (void)a, (void)n;
    return syscall(SYS_close_range, 4U, ~0U, 0U) < 0 ? fail(errno, "close_range(4, ~0)") : 0;
}

static int op_setsid(char **a, int n) {
    (void)a, (void)n;
    return setsid() < 0 ? fail(errno, "setsid()") : 0;
}

static int op_unshare(char **a, int n) {
    (void)n;
    int flags = (int)number(a[0], 16);
    return unshare(flags) < 0 ? fail(errno, "unshare(%#x)", flags) : 0;
}

static int op_umask(char **a, int n) {
    (void)n;
    umask((mode_t)number(a[0], 8));
    return 0;
}

static int op_hostname(char **a, int n) {
    (void)n;
    return sethostname(a[0], strlen(a[0])) < 0 ? fail(errno, "sethostname(%s)", a[0]) : 0;
}

static int op_nnp(char **a, int n) {
    (void)a, (void)n;
    return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ? fail(errno, "prctl(PR_SET_NO_NEW_PRIVS)") : 0;
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
        if (failed && !spare)
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
