/* Prints what the job init's filter compiler (jobinit/seccomp.c) makes of the rules in
 * argv[1]: "arch HEX", then "syscall NAME NR" for each name it knows, then "insn CODE JT
 * JF K" for each instruction; or the refusal on stderr, exiting with its errno. Includes
 * the compiler's source rather than linking it, to read its file-local syscall table. */
#include "../../../lclusterd/runtime/jobinit/seccomp.c"

int main(int argc, char **argv) {
    static struct seccomp_filter filter;
    int err = seccomp_compile(argc > 1 ? argv[1] : "", &filter);
    if (err) {
        fprintf(stderr, "%s\n", filter.why);
        return err;
    }
    printf("arch %x\n", AUDIT_ARCH_NATIVE);
    for (size_t i = 0; i < sizeof SYSCALLS / sizeof SYSCALLS[0]; i++)
        printf("syscall %s %ld\n", SYSCALLS[i].name, SYSCALLS[i].nr);
    for (int i = 0; i < filter.len; i++)
        printf("insn %u %u %u %u\n", filter.insn[i].code, filter.insn[i].jt, filter.insn[i].jf, filter.insn[i].k);
    return 0;
}
