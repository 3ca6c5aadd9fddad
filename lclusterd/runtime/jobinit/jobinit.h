/*
 * What the job init's files share: the failure report, the state ops hand to one another,
 * the ops the interpreter's table (jobinit.c) names, and the seccomp filter compiler's
 * interface. Each file includes this after its own system headers.
 */
#ifndef LCLUSTERD_JOBINIT_H
#define LCLUSTERD_JOBINIT_H

#include <stddef.h>
#include <stdint.h>

/* The socket to the fork server: the job's plan comes in on it, its status goes out. */
#define STATUS_FD 3

/* ---- failure reporting (jobinit.c) ------------------------------------------------- */

/* The step being run: named in a failure report. */
extern const char *step;

/* A failed call: "call(args): strerror". Returns -1. */
int fail(int err, const char *fmt, ...);
/* A refusal whose sentence says it all (errno kept for the report). Returns -1. */
int refuse(int err, const char *fmt, ...);

/* A plan token as a number. */
unsigned long long number(const char *s, int base);

/* The job's stdin, stdout and stderr, received with its plan (jobinit.c; -1 until then),
 * put in place by the stdio op (process.c). */
extern int stdio_fds[3];

/* The job's user namespace, made while a spare ("userns") and entered last ("setuser")
 * (users.c); the idmap op (mounts.c) maps the rootfs to its ids. -1: none. */
extern int userns_fd;

/* The volumes' detached mounts, received after stdio (jobinit.c), moved into place by the
 * volume op (mounts.c). MAX_VOLUMES is lclusterd.limits.MAX_VOLUMES. */
#define MAX_VOLUMES 32
extern int volume_fds[MAX_VOLUMES];
extern int volume_count;

/* ---- the ops: what each gets is a[0..n), its arguments in the plan ------------------ */

/* mounts.c: mounts and files */
int op_mount(char **a, int n);
int op_mkdir(char **a, int n);
int op_file(char **a, int n);
int op_symlink(char **a, int n);
int op_mask(char **a, int n);
int op_readonly(char **a, int n);
int op_pivot(char **a, int n);
int op_idmap(char **a, int n);
int op_chown(char **a, int n);
int op_mkdirs(char **a, int n);
int op_volume(char **a, int n);

/* enter.c: entering a running job (exec) */
int op_pidfd(char **a, int n);
int op_setns(char **a, int n);
int op_nodump(char **a, int n);
int op_forkwait(char **a, int n);

/* users.c: the user namespace and the job's user */
int op_userns(char **a, int n);
int op_setuser(char **a, int n);
int op_ids(char **a, int n);

/* process.c: the process, its namespaces, capabilities and what it execs */
int op_loopback(char **a, int n);
int op_bounding(char **a, int n);
int op_capset(char **a, int n);
int op_seccomp(char **a, int n);
int op_cgroup(char **a, int n_args);
int op_stdio(char **a, int n);
int op_exec(char **args, int count);
int op_name(char **a, int n);
int op_pdeathsig(char **a, int n);
int op_closefds(char **a, int n);
int op_setsid(char **a, int n);
int op_unshare(char **a, int n);
int op_umask(char **a, int n);
int op_hostname(char **a, int n);
int op_nnp(char **a, int n);
int op_network(char **a, int n);

/* ---- the seccomp filter compiler (seccomp.c) ---------------------------------------- */

/* The kernel's seccomp and classic-BPF ABI (linux/seccomp.h, linux/filter.h, linux/audit.h,
 * which musl's headers do not carry). */
struct bpf_insn {
    uint16_t code;
    uint8_t jt, jf;
    uint32_t k;
};
struct bpf_prog {
    unsigned short len;
    struct bpf_insn *filter;
};
#define SECCOMP_MODE_FILTER 2

#define MAX_RULES 16
#define MAX_SYSCALLS 256 /* in all rules together */
#define MAX_VALUES 32    /* in one condition (its jumps have 8-bit offsets) */
#define MAX_FILTER 1024

struct seccomp_rule {
    unsigned err;
    char condition; /* 0: always, '&': any bit of values[0], '!': none of values */
    int nvalues;
    uint32_t values[MAX_VALUES];
};

struct seccomp_syscall {
    uint32_t nr;
    int rule; /* index in seccomp_filter.rule */
};

struct seccomp_filter {
    struct bpf_insn insn[MAX_FILTER];
    struct seccomp_rule rule[MAX_RULES];
    struct seccomp_syscall syscall[MAX_SYSCALLS]; /* sorted by nr */
    int len, rules, syscalls;
    char why[160]; /* why the rules were refused */
};

/* Compile the rules into f. Returns 0, or an errno with the reason in f->why. */
int seccomp_compile(const char *rules, struct seccomp_filter *f);

#endif
