/*
 * The job init's user ops: the user namespace a spare makes ("userns") and the job enters
 * ("setuser"), and the user the job then becomes ("ids": its groups, gid and uid, resolved
 * from its image's /etc/passwd and /etc/group by the fork server, lclusterd/runtime/users.py).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "jobinit.h"

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


/* GROUPS ("" or gids joined by ','), as an array the caller frees. */
static int parse_groups(const char *list, gid_t **out, size_t *count) {
    size_t n = *list ? 1 : 0;
    for (const char *p = list; *p; p++)
        n += *p == ',';
    gid_t *groups = calloc(n ? n : 1, sizeof *groups);
    if (!groups)
        return fail(ENOMEM, "ids: %zu groups", n);
    const char *p = list;
    for (size_t i = 0; i < n; i++) {
        char *end;
        groups[i] = (gid_t)strtoul(p, &end, 10);
        if (end == p || (*end != ',' && *end != '\0')) {
            free(groups);
            return refuse(EINVAL, "ids: malformed group list %s", list);
        }
        p = *end ? end + 1 : end;
    }
    *out = groups;
    *count = n;
    return 0;
}

/* ids UID GID GROUPS: become the job's user, its real, effective and saved ids alike. The
 * groups and the gid first: both need CAP_SETGID, which leaving uid 0 takes away, with every
 * other capability (the kernel clears the permitted, effective and ambient sets then). */
int op_ids(char **a, int n) {
    (void)n;
    uid_t uid = (uid_t)number(a[0], 10);
    gid_t gid = (gid_t)number(a[1], 10), *groups = NULL;
    size_t count = 0;
    if (parse_groups(a[2], &groups, &count) < 0)
        return -1;
    int rc = setgroups(count, groups), err = errno;
    free(groups);
    if (rc < 0)
        return fail(err, "setgroups(%zu groups: %s)", count, a[2]);
    if (setresgid(gid, gid, gid) < 0)
        return fail(errno, "setresgid(%u)", (unsigned)gid);
    if (setresuid(uid, uid, uid) < 0)
        return fail(errno, "setresuid(%u)", (unsigned)uid);
    return 0;
}
