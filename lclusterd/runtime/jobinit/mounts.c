/*
 * The job init's mount and file ops: mounts, directories and files, masks and read-only
 * binds, pivot_root, the idmapped rootfs and ownership of the job's writable layer.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include "jobinit.h"

static const char *nullable(const char *s) { return *s ? s : NULL; }

int op_mount(char **a, int n) {
    const char *src = a[0], *target = a[1], *fstype = a[2], *flags = a[3], *data = a[4];
    (void)n;
    unsigned long f = (unsigned long)number(flags, 10);
    if (mount(nullable(src), target, nullable(fstype), f, nullable(data)) < 0)
        return fail(errno, "mount(%s -> %s, type %s, flags %#lx)", *src ? src : "none", target,
                    *fstype ? fstype : "none", f);
    return 0;
}

int op_mkdir(char **a, int n) {
    const char *path = a[0], *mode = a[1];
    (void)n;
    if (mkdir(path, (mode_t)number(mode, 8)) < 0 && errno != EEXIST)
        return fail(errno, "mkdir(%s)", path);
    return 0;
}

/* An empty regular file: the mount point a device node is bind-mounted onto. */
int op_file(char **a, int n) {
    const char *path = a[0];
    (void)n;
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return fail(errno, "open(%s, O_CREAT)", path);
    close(fd);
    return 0;
}

int op_symlink(char **a, int n) {
    const char *target = a[0], *path = a[1];
    (void)n;
    if (symlink(target, path) < 0)
        return fail(errno, "symlink(%s -> %s)", path, target);
    return 0;
}

/* Bind /dev/null over a /proc file; one this kernel does not have is skipped. */
int op_mask(char **a, int n) {
    const char *path = a[0];
    (void)n;
    struct stat st;
    if (stat(path, &st) < 0)
        return errno == ENOENT ? 0 : fail(errno, "stat(%s)", path);
    if (mount("/dev/null", path, NULL, MS_BIND, NULL) < 0)
        return fail(errno, "mount(/dev/null -> %s, bind)", path);
    return 0;
}

int op_readonly(char **a, int n) {
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

/* Make root the new / and detach the old one (runc's pivot_root(".", ".") trick). */
int op_pivot(char **a, int n) {
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

/* idmap SOURCE TARGET: bind SOURCE at TARGET read-only, nosuid and nodev, with the job's
 * ids: a file owned by host root shows as the job's root. The overlay then takes TARGET
 * as its lower layer (idmapped lower layers: Linux 5.19). */
int op_idmap(char **a, int n) {
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

int op_chown(char **a, int n) {
    const char *path = a[0];
    (void)n;
    uid_t uid = (uid_t)number(a[1], 10);
    gid_t gid = (gid_t)number(a[2], 10);
    return lchown(path, uid, gid) < 0 ? fail(errno, "chown(%s, %u, %u)", path, uid, gid) : 0;
}
