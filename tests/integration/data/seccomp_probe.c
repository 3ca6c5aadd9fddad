/* Each call in a child of its own, so that one (a new user namespace) cannot affect the next. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
static void probe(const char *what, int nr, long a0, long a1, long a2) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        long rc = syscall(nr, a0, a1, a2, 0, 0);
        if (nr == SYS_clone && rc == 0) _exit(0); /* the clone's child */
        printf("%s %s\n", what, rc < 0 ? strerror(errno) : "ok");
        fflush(stdout);
        if (nr == SYS_clone && rc > 0) waitpid((pid_t)rc, NULL, 0);
        _exit(0);
    }
    waitpid(pid, NULL, 0);
}
int main(void) {
    probe("keyctl", SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3 /* session */, 1);
    probe("unshare-user", SYS_unshare, 0x10000000 /* CLONE_NEWUSER */, 0, 0);
    probe("clone-newuser", SYS_clone, 0x10000000 | SIGCHLD, 0, 0);
    probe("clone3", SYS_clone3, 0, 0, 0);
    probe("getpid", SYS_getpid, 0, 0, 0);
    return 0;
}
