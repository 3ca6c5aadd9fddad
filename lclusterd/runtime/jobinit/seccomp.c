/*
 * The job init's seccomp filter compiler. Mechanism only: which syscalls fail, and how,
 * comes from the plan (plan.SECCOMP_RULES); the seccomp op (process.c) installs what it
 * makes. It reports through seccomp_filter.why, not fail(), so it builds on its own (the
 * unit tests' tests/unit/data/seccomp_dump.c includes this file).
 *
 * The rules, one plan token, separated by ';':
 *
 *   ERRNO NAME[,NAME...]                   the syscalls fail with ERRNO (decimal)
 *   ERRNO NAME[,NAME...] &MASK             ... when the low 32 bits of their first argument
 *                                          have any bit of MASK (hex)
 *   ERRNO NAME[,NAME...] !VALUE[,VALUE...] ... when those bits are none of the VALUEs (hex)
 *
 * A syscall is named by one rule at most. A call runs unless its syscall's rule says it
 * fails; another architecture's or the x32 ABI's calls never reach the rules.
 *
 * The filter finds a call's rule by a binary search on the syscall number rather than a
 * list of comparisons: the kernel runs it for each call whose rule has a condition, and
 * once for every syscall number when it is installed (to cache the calls it always
 * allows), so with a list every job's start would pay for all numbers times all rules.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>

#include "jobinit.h"

/* The rest of the kernel's seccomp and classic-BPF ABI (the structures are in jobinit.h). */
#define BPF_LD_W_ABS 0x20 /* BPF_LD | BPF_W | BPF_ABS */
#define BPF_JEQ_K 0x15    /* BPF_JMP | BPF_JEQ | BPF_K */
#define BPF_JGE_K 0x35    /* BPF_JMP | BPF_JGE | BPF_K */
#define BPF_JSET_K 0x45   /* BPF_JMP | BPF_JSET | BPF_K */
#define BPF_JA 0x05       /* BPF_JMP | BPF_JA */
#define BPF_RET_K 0x06    /* BPF_RET | BPF_K */
#define SECCOMP_RET_KILL_PROCESS 0x80000000U
#define SECCOMP_RET_ERRNO 0x00050000U
#define SECCOMP_RET_ALLOW 0x7fff0000U
#define SECCOMP_DATA_NR 0    /* offsetof(struct seccomp_data, nr) */
#define SECCOMP_DATA_ARCH 4  /* offsetof(struct seccomp_data, arch) */
#define SECCOMP_DATA_ARG0 16 /* low 32 bits of args[0] (little-endian) */
#define MAX_ERRNO 4095
#if defined(__x86_64__)
#define AUDIT_ARCH_NATIVE 0xc000003eU
#define X32_SYSCALL_BIT 0x40000000U
#elif defined(__aarch64__)
#define AUDIT_ARCH_NATIVE 0xc00000b7U
#else
#error "lclusterd-jobinit: add this architecture's AUDIT_ARCH value"
#endif

/* Syscalls newer than the musl headers this is built with. From 424 on every architecture
 * shares one table, so the numbers hold for x86_64 and aarch64 alike. */
#ifndef SYS_quotactl_fd
#define SYS_quotactl_fd 443
#endif
#ifndef SYS_set_mempolicy_home_node
#define SYS_set_mempolicy_home_node 450
#endif
#ifndef SYS_cachestat
#define SYS_cachestat 451
#endif
#ifndef SYS_map_shadow_stack
#define SYS_map_shadow_stack 453
#endif
#ifndef SYS_lsm_get_self_attr
#define SYS_lsm_get_self_attr 459
#define SYS_lsm_set_self_attr 460
#define SYS_lsm_list_modules 461
#endif
#ifndef SYS_open_tree_attr
#define SYS_open_tree_attr 467
#endif

/* The syscalls a rule may name. */
static const struct {
    const char *name;
    size_t len;
    long nr;
} SYSCALLS[] = {
#define SC(n) {#n, sizeof #n - 1, SYS_##n}
    SC(acct), SC(add_key), SC(bpf), SC(cachestat), SC(clock_adjtime), SC(clock_settime), SC(clone),
    SC(clone3), SC(delete_module), SC(fanotify_init), SC(finit_module), SC(fsconfig), SC(fsmount),
    SC(fsopen), SC(fspick), SC(get_mempolicy), SC(init_module), SC(io_pgetevents), SC(io_uring_enter),
    SC(io_uring_register), SC(io_uring_setup), SC(kcmp), SC(kexec_file_load), SC(kexec_load), SC(keyctl),
    SC(lookup_dcookie), SC(lsm_get_self_attr), SC(lsm_list_modules), SC(lsm_set_self_attr),
    SC(map_shadow_stack), SC(mbind), SC(migrate_pages), SC(mount), SC(mount_setattr), SC(move_mount),
    SC(move_pages), SC(name_to_handle_at), SC(open_by_handle_at), SC(open_tree), SC(open_tree_attr),
    SC(perf_event_open), SC(personality), SC(pidfd_getfd), SC(pivot_root), SC(process_madvise),
    SC(quotactl), SC(quotactl_fd), SC(reboot), SC(request_key), SC(set_mempolicy),
    SC(set_mempolicy_home_node), SC(setdomainname), SC(sethostname), SC(setns), SC(settimeofday),
    SC(socket), SC(socketpair), SC(swapoff), SC(swapon), SC(syslog), SC(umount2), SC(unshare),
    SC(userfaultfd), SC(vhangup), SC(vmsplice),
#if defined(__x86_64__)
    SC(create_module), SC(get_kernel_syms), SC(ioperm), SC(iopl), SC(query_module), SC(sysfs),
    SC(_sysctl), SC(uselib), SC(ustat),
#endif
#undef SC
};

static long syscall_number(const char *name, size_t len) {
    for (size_t i = 0; i < sizeof SYSCALLS / sizeof SYSCALLS[0]; i++)
        if (SYSCALLS[i].len == len && memcmp(SYSCALLS[i].name, name, len) == 0)
            return SYSCALLS[i].nr;
    return -1;
}

#define LEAF_SYSCALLS 8 /* where the search turns into a list of comparisons */

/* Refuse the rules: the reason goes to f->why, the errno is returned. */
__attribute__((format(printf, 3, 4))) static int seccomp_refuse(struct seccomp_filter *f, int err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->why, sizeof f->why, fmt, ap);
    va_end(ap);
    return err;
}

/* How much of the rule at p a refusal quotes: up to its ';', at most 64 characters. */
static int rule_length(const char *p) {
    size_t n = strcspn(p, ";");
    return n < 64 ? (int)n : 64;
}

/* Parse NAME[,NAME...] at *p as the syscalls of the rule being parsed (f->rules). */
static int parse_syscalls(const char **p, struct seccomp_filter *f) {
    for (;;) {
        size_t len = strcspn(*p, ", ;");
        long nr = syscall_number(*p, len);
        if (nr < 0)
            return seccomp_refuse(f, EINVAL, "unknown syscall %.*s", (int)len, *p);
        if (f->syscalls == MAX_SYSCALLS)
            return seccomp_refuse(f, E2BIG, "more than %d syscalls", MAX_SYSCALLS);
        int i = f->syscalls++; /* kept sorted by number: insert it in place */
        for (; i > 0 && f->syscall[i - 1].nr >= (uint32_t)nr; i--) {
            if (f->syscall[i - 1].nr == (uint32_t)nr)
                return seccomp_refuse(f, EINVAL, "syscall %.*s in two rules", (int)len, *p);
            f->syscall[i] = f->syscall[i - 1];
        }
        f->syscall[i] = (struct seccomp_syscall){(uint32_t)nr, f->rules};
        *p += len;
        if (**p != ',')
            return 0;
        (*p)++;
    }
}

/* Parse the condition &MASK or !VALUE[,VALUE...] at *p (just past its space). */
static int parse_condition(const char **p, struct seccomp_rule *r, struct seccomp_filter *f) {
    const char *start = *p;
    r->condition = **p;
    if (r->condition != '&' && r->condition != '!')
        return seccomp_refuse(f, EINVAL, "malformed condition %.*s", rule_length(start), start);
    do {
        (*p)++;
        char *end = (char *)*p;
        unsigned long long v = isxdigit((unsigned char)**p) ? strtoull(*p, &end, 16) : ~0ULL;
        if (v > UINT32_MAX || (r->condition == '&' && r->nvalues == 1))
            return seccomp_refuse(f, EINVAL, "malformed condition %.*s", rule_length(start), start);
        if (r->nvalues == MAX_VALUES)
            return seccomp_refuse(f, E2BIG, "more than %d values in a condition", MAX_VALUES);
        r->values[r->nvalues++] = (uint32_t)v;
        *p = end;
    } while (**p == ',');
    return 0;
}

/* Parse one rule at *p into f->rule[f->rules], leaving *p at the ';' or NUL after it. */
static int parse_rule(const char **p, struct seccomp_filter *f) {
    const char *start = *p;
    char *end = (char *)start;
    if (f->rules == MAX_RULES)
        return seccomp_refuse(f, E2BIG, "more than %d rules", MAX_RULES);
    struct seccomp_rule *r = &f->rule[f->rules];
    memset(r, 0, sizeof *r);
    if (**p == ';')
        return seccomp_refuse(f, EINVAL, "empty rule");
    unsigned long err = isdigit((unsigned char)**p) ? strtoul(*p, &end, 10) : 0;
    if (err < 1 || err > MAX_ERRNO || *end != ' ')
        return seccomp_refuse(f, EINVAL, "malformed rule %.*s", rule_length(start), start);
    r->err = (unsigned)err;
    *p = end + 1;
    int rc = parse_syscalls(p, f);
    if (rc == 0 && **p == ' ') {
        (*p)++;
        rc = parse_condition(p, r, f);
    }
    if (rc == 0 && **p != ';' && **p != '\0')
        return seccomp_refuse(f, EINVAL, "malformed rule %.*s", rule_length(start), start);
    return rc;
}

static void emit(struct seccomp_filter *f, uint16_t code, uint8_t jt, uint8_t jf, uint32_t k) {
    if (f->len < MAX_FILTER)
        f->insn[f->len] = (struct bpf_insn){code, jt, jf, k};
    f->len++; /* counts past the end, so an overflow is seen once the filter is complete */
}

static uint8_t action_length(const struct seccomp_rule *r) {
    return (uint8_t)(r->condition == 0 ? 1 : r->condition == '&' ? 4 : r->nvalues + 3);
}

/* What a call of a syscall the rule names gets, with the syscall number in A: the errno, or
 * (with a condition) a test of the first argument that returns the errno or allows. */
static void emit_action(struct seccomp_filter *f, const struct seccomp_rule *r) {
    int m = r->nvalues;
    if (r->condition)
        emit(f, BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_ARG0);
    if (r->condition == '&')
        emit(f, BPF_JSET_K, 0, 1, r->values[0]);
    for (int j = 0; r->condition == '!' && j < m; j++)
        emit(f, BPF_JEQ_K, (uint8_t)(m - j), 0, r->values[j]);
    emit(f, BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | r->err);
    if (r->condition)
        emit(f, BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW);
}

/* A binary search over f->syscall[lo, hi) for the number in A: above a few syscalls, "A >=
 * the middle one" jumps (by a JA, whose offset has 32 bits) over the lower half; a few
 * left are compared one by one, each followed by its action; no match allows the call. */
static void emit_search(struct seccomp_filter *f, int lo, int hi) {
    if (hi - lo <= LEAF_SYSCALLS) {
        for (int i = lo; i < hi; i++) {
            const struct seccomp_rule *r = &f->rule[f->syscall[i].rule];
            emit(f, BPF_JEQ_K, 0, action_length(r), f->syscall[i].nr);
            emit_action(f, r);
        }
        emit(f, BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW);
        return;
    }
    int mid = lo + (hi - lo) / 2;
    emit(f, BPF_JGE_K, 0, 1, f->syscall[mid].nr);
    int ja = f->len;
    emit(f, BPF_JA, 0, 0, 0);
    emit_search(f, lo, mid);
    if (ja < MAX_FILTER)
        f->insn[ja].k = (uint32_t)(f->len - ja - 1);
    emit_search(f, mid, hi);
}

/* Compile the rules into f. Returns 0, or an errno with the reason in f->why. */
int seccomp_compile(const char *rules, struct seccomp_filter *f) {
    f->len = f->rules = f->syscalls = 0;
    for (const char *p = rules; *p; p += *p == ';') {
        int err = parse_rule(&p, f);
        if (err)
            return err;
        f->rules++;
    }
    emit(f, BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_ARCH);
    emit(f, BPF_JEQ_K, 1, 0, AUDIT_ARCH_NATIVE);
    emit(f, BPF_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS);
    emit(f, BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_NR);
#ifdef X32_SYSCALL_BIT
    emit(f, BPF_JGE_K, 0, 1, X32_SYSCALL_BIT);
    emit(f, BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | EPERM);
#endif
    emit_search(f, 0, f->syscalls);
    if (f->len > MAX_FILTER)
        return seccomp_refuse(f, E2BIG, "%d instructions, more than %d", f->len, MAX_FILTER);
    return 0;
}
