/*
 * The job init's ops for entering a running job (`lclient -exec`, runtime/execs.py): a
 * process the fork server spawns on the host, given the job's init by pid, joins the job's
 * PID namespace for its child ("pidfd", "setns" CLONE_NEWPID, "forkwait"); the child joins
 * the job's cgroup while its paths are still the host's, then the job's other namespaces,
 * its user namespace last ("setns"), and from there runs the rest of its plan as a job's
 * process: the bounding set, the job's user, no_new_privs, capabilities, seccomp, exec.
 *
 * The parent stays on the host, outside the job's cgroup and PID namespace (the job cannot
 * see or reach it) and not dumpable ("nodump": no ptrace, no /proc/PID/exe of it), waits for
 * the child and ends as it did: its exit code, or the signal that ended it. Killing the
 * parent kills the child (its parent-death signal).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "jobinit.h"

static int job_pidfd = -1;

/* pidfd PID: a descriptor of the job's init (its host pid; the fork server's child, not
 * reaped while this runs, so the pid cannot name another process). */
int op_pidfd(char **a, int n) {
    (void)n;
    pid_t pid = (pid_t)number(a[0], 10);
    job_pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    return job_pidfd < 0 ? fail(errno, "pidfd_open(%d)", (int)pid) : 0;
}

/* setns FLAGS: join those namespaces of the job's init (hex CLONE_NEW* flags). */
int op_setns(char **a, int n) {
    (void)n;
    int flags = (int)number(a[0], 16);
    if (job_pidfd < 0)
        return refuse(EINVAL, "setns: no job (the plan has no pidfd op)");
    if (setns(job_pidfd, flags) < 0)
        return fail(errno, errno == ESRCH ? "setns(%#x): the job has ended" : "setns(%#x)", flags);
    return 0;
}

int op_nodump(char **a, int n) {
    (void)a, (void)n;
    return prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0 ? fail(errno, "prctl(PR_SET_DUMPABLE, 0)") : 0;
}

/* forkwait: the child goes on with the plan; the parent waits for it and ends as it did, with
 * its exit code or by its signal, holding no copy of the status socket (the fork server reads
 * the child's). */
int op_forkwait(char **a, int n) {
    (void)a, (void)n;
    pid_t child = fork();
    if (child < 0)
        return fail(errno, "fork()");
    if (child == 0)
        return 0;
    close(STATUS_FD);
    int status;
    while (waitpid(child, &status, 0) < 0)
        if (errno != EINTR)
            _exit(127);
    if (WIFSIGNALED(status)) {
        sigset_t all;
        sigfillset(&all);
        sigprocmask(SIG_UNBLOCK, &all, NULL);
        signal(WTERMSIG(status), SIG_DFL);
        raise(WTERMSIG(status));
        _exit(128 + WTERMSIG(status)); /* a signal that would not end us */
    }
    _exit(WEXITSTATUS(status));
}
