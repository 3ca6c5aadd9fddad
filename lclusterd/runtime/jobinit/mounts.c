/*
 * The job init's mount and file ops: mounts, directories and files, masks and read-only
 * binds, pivot_root, the idmapped rootfs and ownership of the job's writable layer, the
 * working directory and the volumes' places in the job's root.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
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

/* ---- the working directory and volumes ---------------------------------------------- */

/* openat2's argument (linux/openat2.h, which musl's headers do not carry). */
struct open_how_ {
    uint64_t flags, mode, resolve;
};
#define RESOLVE_NO_MAGICLINKS_ 0x02
#define RESOLVE_IN_ROOT_ 0x10
#define MOVE_MOUNT_T_EMPTY_PATH_ 0x40
#define OPENAT2_TRIES 64 /* lclusterd.runtime.volumes.OPENAT2_TRIES (a unit test holds them equal) */

int volume_fds[MAX_VOLUMES];
int volume_count;

/* PATH (absolute, inside the job) resolved in the directory root_fd as if it were "/": a
 * symbolic link of the image, absolute or "..", can only lead to another place in the job's
 * root, never onto the host; /proc's magic links are not followed at all. EAGAIN: a rename
 * or mount on the host raced a ".." of the walk, and the kernel asks for a retry. */
static int in_root(int root_fd, const char *path) {
    struct open_how_ how = {O_PATH | O_DIRECTORY | O_CLOEXEC, 0, RESOLVE_IN_ROOT_ | RESOLVE_NO_MAGICLINKS_};
    int fd, tries = 0;
    do
        fd = (int)syscall(SYS_openat2, root_fd, path, &how, sizeof how);
    while (fd < 0 && errno == EAGAIN && ++tries < OPENAT2_TRIES);
    return fd;
}

static int open_root(const char *root) {
    int fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        fail(errno, "open(%s)", root);
    return fd;
}

/* Make prefix's last component, a directory, in its parent (resolved inside the root). */
static int make_one(int root_fd, char *prefix, long uid, long gid) {
    char *slash = strrchr(prefix, '/');
    const char *name = slash + 1;
    *slash = '\0';
    int parent = in_root(root_fd, *prefix ? prefix : "/");
    *slash = '/';
    if (parent < 0)
        return fail(errno, "openat2(%.*s)", (int)(slash - prefix), prefix);
    int rc = 0;
    if (mkdirat(parent, name, 0755) == 0) {
        if (uid >= 0 && fchownat(parent, name, (uid_t)uid, (gid_t)gid, AT_SYMLINK_NOFOLLOW) < 0)
            rc = fail(errno, "chown(%s, %ld, %ld)", prefix, uid, gid);
    } else if (errno != EEXIST) {
        rc = fail(errno, "mkdir(%s)", prefix);
    }
    close(parent);
    return rc;
}

/* mkdirs ROOT PATH UID GID: PATH and its missing parents made as directories in the job's
 * root (0755, owned by UID:GID unless -1), each step resolved inside ROOT. */
int op_mkdirs(char **a, int n) {
    const char *path = a[1];
    long uid = strcmp(a[2], "-1") ? (long)number(a[2], 10) : -1, gid = strcmp(a[3], "-1") ? (long)number(a[3], 10) : -1;
    (void)n;
    char prefix[4096];
    if (path[0] != '/' || strlen(path) >= sizeof prefix)
        return refuse(EINVAL, "mkdirs: a path must be absolute and under 4096 bytes (%.64s)", path);
    int root_fd = open_root(a[0]);
    if (root_fd < 0)
        return -1;
    int rc = 0;
    for (size_t end = 1; rc == 0 && path[end - 1]; end++) {
        if ((path[end] != '/' && path[end] != '\0') || path[end - 1] == '/')
            continue; /* inside a name, or an empty one ("//", a trailing "/") */
        memcpy(prefix, path, end);
        prefix[end] = '\0';
        int fd = in_root(root_fd, prefix);
        if (fd >= 0)
            close(fd);
        else if (errno == ENOENT)
            rc = make_one(root_fd, prefix, uid, gid);
        else
            rc = fail(errno, "openat2(%s)", prefix);
    }
    if (rc == 0) {
        int fd = in_root(root_fd, path);
        rc = fd < 0 ? fail(errno, "openat2(%s)", path) : close(fd);
    }
    close(root_fd);
    return rc;
}

/* volume ROOT PATH INDEX: move the INDEXth detached mount received with the job (the fork
 * server cloned it from the host directory it found beneath a volume root) onto PATH,
 * resolved inside ROOT. A path that resolves to ROOT itself is refused: the volume would
 * become the job's root at pivot_root. */
int op_volume(char **a, int n) {
    const char *path = a[1];
    int index = (int)number(a[2], 10);
    (void)n;
    if (index < 0 || index >= volume_count)
        return refuse(EINVAL, "volume %s: no mount received for it (index %d of %d)", path, index, volume_count);
    int root_fd = open_root(a[0]);
    if (root_fd < 0)
        return -1;
    int rc = 0, place = in_root(root_fd, path);
    struct stat root_st, place_st;
    if (place < 0)
        rc = fail(errno, "openat2(%s)", path);
    else if (fstat(root_fd, &root_st) < 0 || fstat(place, &place_st) < 0)
        rc = fail(errno, "fstat(%s)", path);
    else if (root_st.st_dev == place_st.st_dev && root_st.st_ino == place_st.st_ino)
        rc = refuse(EINVAL, "mount point %s is the job's root (a symbolic link in the image leads there)", path);
    else if (syscall(SYS_move_mount, volume_fds[index], "", place, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH_) < 0)
        rc = fail(errno, "move_mount(volume -> %s)", path);
    if (place >= 0)
        close(place);
    close(root_fd);
    return rc;
}
