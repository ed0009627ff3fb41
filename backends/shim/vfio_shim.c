/*
 * vfio_shim.c: LD_PRELOAD library that lets an unmodified VMM (QEMU) talk to
 * vfio-emu's simulated kernel instead of the host's VFIO / iommufd.
 *
 * Only the VFIO paths are touched:
 *   - open of /dev/vfio/vfio, /dev/vfio/<group>, /dev/vfio/devices/vfioN and
 *     /dev/iommu: forwarded to the server, which answers with a simulated fd;
 *     QEMU gets a real placeholder fd (an open of /dev/null) so close(), dup()
 *     and poll() behave, and the shim remembers placeholder -> simulated fd;
 *   - ioctl, pread/pwrite, mmap, munmap and close on those placeholder fds,
 *     and dup/dup2/dup3/fcntl(F_DUPFD*) of them (the copy is a dup of the
 *     simulated fd: the same open file description);
 *   - path lookups under the sysfs prefixes in VFIO_EMU_REDIRECT (the
 *     simulated /sys/bus/pci/devices/<BDF>/ etc.) go to the same paths below
 *     VFIO_EMU_ROOT, a directory tree the server wrote (iommu_group link,
 *     vfio-dev/vfioN/dev, vendor, ...).
 * Everything else goes to the real libc (dlsym(RTLD_NEXT)).
 *
 * Wire format (little endian, one request at a time under a mutex):
 *   request  struct req  + len bytes; an fd rides along with SCM_RIGHTS
 *            (IOMMU_IOAS_MAP_FILE's memory fd);
 *   reply    struct rep  + len bytes.
 * See backends/shim/server.py, which owns the other end.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

enum { OP_OPEN = 1, OP_CLOSE, OP_IOCTL, OP_PREAD, OP_PWRITE, OP_MMAP, OP_MUNMAP, OP_LOOKUP, OP_DUP };
enum { KIND_NONE = 0, KIND_CONTAINER, KIND_GROUP, KIND_DEVICE, KIND_IOMMUFD, KIND_DMABUF };
#define SIM_FD 1     /* request value: the fd inside the struct is a simulated one */

struct req {
    uint32_t op, kind;
    int32_t fd, has_fd;
    uint64_t a, b, c, d;
    uint32_t len, pad;
};
struct rep {
    int64_t ret;
    uint32_t len, newfd;     /* newfd: ret is a new simulated fd of kind newfd */
};

#define MAXFD 65536
static int sim_of[MAXFD];    /* simulated fd + 1, 0: not ours */
static unsigned char kind_of[MAXFD];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int sock = -1;
static int disabled;

#define NMAP 64
static struct { uintptr_t start; size_t len; } bar_maps[NMAP];

#define REAL(name) static __typeof__(name) *real_##name; \
    if (!real_##name) real_##name = (__typeof__(name) *)dlsym(RTLD_NEXT, #name)

/* ---------------------------------------------------------------- socket */

static int write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= w;
    }
    return 0;
}

static int read_all(int fd, void *buf, size_t n)
{
    char *p = buf;
    while (n) {
        ssize_t r = recv(fd, p, n, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= r;
    }
    return 0;
}

static int connect_server(void)
{
    const char *path = getenv("VFIO_EMU_SOCK");
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (!path || strlen(path) >= sizeof(sa.sun_path))
        return -1;
    strcpy(sa.sun_path, path);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -1;
    if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        REAL(close);
        real_close(s);
        errno = e;
        return -1;
    }
    return s;
}

/* One request/reply.  out/outlen: reply payload (copied up to outlen).
 * Returns the server's ret (>= 0 or -errno); -EIO if the server is gone. */
static int64_t call(struct req *rq, const void *data, int send_fd,
                    void *out, size_t outlen, uint32_t *newfd)
{
    struct rep rp;
    int64_t ret = -EIO;
    pthread_mutex_lock(&lock);
    if (sock < 0 && !disabled) {
        sock = connect_server();
        if (sock < 0)
            disabled = 1;
    }
    if (sock < 0)
        goto out;
    rq->has_fd = send_fd >= 0;
    struct iovec iov[2] = { { rq, sizeof(*rq) }, { (void *)data, rq->len } };
    struct msghdr mh = { .msg_iov = iov, .msg_iovlen = rq->len ? 2 : 1 };
    char cbuf[CMSG_SPACE(sizeof(int))];
    if (send_fd >= 0) {
        memset(cbuf, 0, sizeof(cbuf));
        mh.msg_control = cbuf;
        mh.msg_controllen = sizeof(cbuf);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &send_fd, sizeof(int));
    }
    /* sendmsg may write partially only for huge payloads; finish with write_all. */
    ssize_t total = sizeof(*rq) + rq->len, w;
    do {
        w = sendmsg(sock, &mh, MSG_NOSIGNAL);
    } while (w < 0 && errno == EINTR);
    if (w < 0)
        goto out;
    if (w < total) {
        size_t done = w;
        if (done < sizeof(*rq)) {
            if (write_all(sock, (char *)rq + done, sizeof(*rq) - done) ||
                write_all(sock, data, rq->len))
                goto out;
        } else if (write_all(sock, (const char *)data + (done - sizeof(*rq)),
                             rq->len - (done - sizeof(*rq)))) {
            goto out;
        }
    }
    if (read_all(sock, &rp, sizeof(rp)))
        goto out;
    size_t keep = rp.len < outlen ? rp.len : outlen;
    if (keep && read_all(sock, out, keep))
        goto out;
    for (size_t rest = rp.len - keep; rest;) {
        char sink[4096];
        size_t n = rest < sizeof(sink) ? rest : sizeof(sink);
        if (read_all(sock, sink, n))
            goto out;
        rest -= n;
    }
    if (newfd)
        *newfd = rp.newfd;
    ret = rp.ret;
out:
    pthread_mutex_unlock(&lock);
    return ret;
}

static int ours(int fd)
{
    return fd >= 0 && fd < MAXFD && sim_of[fd];
}

/* ------------------------------------------------------------- paths */

static int vfio_path(const char *p)
{
    return p && (!strcmp(p, "/dev/iommu") || !strncmp(p, "/dev/vfio/", 10));
}

static int path_kind(const char *p)
{
    if (!strcmp(p, "/dev/iommu"))
        return KIND_IOMMUFD;
    if (!strcmp(p, "/dev/vfio/vfio"))
        return KIND_CONTAINER;
    if (!strncmp(p, "/dev/vfio/devices/", 18))
        return KIND_DEVICE;
    return KIND_GROUP;
}

/* A path under one of the redirected sysfs prefixes -> the same path below
 * VFIO_EMU_ROOT, in buf.  Returns the path to use (p itself when not redirected). */
static const char *redirect(const char *p, char *buf, size_t n)
{
    const char *root = getenv("VFIO_EMU_ROOT"), *list = getenv("VFIO_EMU_REDIRECT");
    if (!p || !root || !list || p[0] != '/')
        return p;
    for (const char *s = list; *s;) {
        const char *e = strchr(s, '|');
        size_t l = e ? (size_t)(e - s) : strlen(s);
        if (l && !strncmp(p, s, l) && (p[l] == 0 || p[l] == '/')) {
            if ((size_t)snprintf(buf, n, "%s%s", root, p) >= n)
                return p;
            return buf;
        }
        if (!e)
            break;
        s = e + 1;
    }
    return p;
}

/* realpath() results inside VFIO_EMU_ROOT are shown without the root, as the
 * simulated host would show them (QEMU compares subsystem links by path). */
static char *unroot(char *r)
{
    const char *root = getenv("VFIO_EMU_ROOT");
    size_t l = root ? strlen(root) : 0;
    if (r && l && !strncmp(r, root, l) && r[l] == '/')
        memmove(r, r + l, strlen(r + l) + 1);
    return r;
}

/* Tell the server about a redirected lookup and its outcome (for the report). */
static void note(const char *fn, const char *path, const char *used, int failed, int err)
{
    if (used == path)
        return;
    char msg[PATH_MAX + 32];
    int n = snprintf(msg, sizeof(msg), "%s %s", fn, path);
    if (n < 0 || (size_t)n >= sizeof(msg))
        return;
    struct req rq = { .op = OP_LOOKUP, .a = failed ? (uint64_t)err : 0, .len = n + 1 };
    int saved = errno;
    call(&rq, msg, -1, NULL, 0, NULL);
    errno = saved;
}

static int placeholder(int flags)
{
    REAL(open);
    return real_open("/dev/null", O_RDWR | (flags & O_CLOEXEC));
}

static int vfio_open(const char *path, int flags)
{
    struct req rq = { .op = OP_OPEN, .a = (uint64_t)flags, .len = strlen(path) + 1 };
    int64_t r = call(&rq, path, -1, NULL, 0, NULL);
    if (r < 0) {
        errno = (int)-r;
        return -1;
    }
    int fd = placeholder(flags);
    if (fd < 0 || fd >= MAXFD) {
        struct req c = { .op = OP_CLOSE, .fd = (int32_t)r };
        call(&c, NULL, -1, NULL, 0, NULL);
        if (fd >= 0) {
            REAL(close);
            real_close(fd);
        }
        errno = EMFILE;
        return -1;
    }
    sim_of[fd] = (int)r + 1;
    kind_of[fd] = path_kind(path);
    return fd;
}

static int want_mode(int flags)
{
    return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE;
}

#define OPEN_BODY(realname, ...)                                  \
    char buf[PATH_MAX];                                           \
    const char *orig = path;                                      \
    if (vfio_path(path))                                          \
        return vfio_open(path, flags);                            \
    path = redirect(path, buf, sizeof(buf));                      \
    REAL(realname);                                               \
    int ret_ = real_##realname(__VA_ARGS__);                      \
    note(#realname, orig, path, ret_ < 0, errno);                 \
    return ret_

int open(const char *path, int flags, ...)
{
    mode_t mode = 0;
    if (want_mode(flags)) { va_list ap; va_start(ap, flags); mode = va_arg(ap, int); va_end(ap); }
    OPEN_BODY(open, path, flags, mode);
}

int open64(const char *path, int flags, ...)
{
    mode_t mode = 0;
    if (want_mode(flags)) { va_list ap; va_start(ap, flags); mode = va_arg(ap, int); va_end(ap); }
    OPEN_BODY(open64, path, flags, mode);
}

int __open_2(const char *path, int flags) { OPEN_BODY(__open_2, path, flags); }
int __open64_2(const char *path, int flags) { OPEN_BODY(__open64_2, path, flags); }

int openat(int dirfd, const char *path, int flags, ...)
{
    mode_t mode = 0;
    if (want_mode(flags)) { va_list ap; va_start(ap, flags); mode = va_arg(ap, int); va_end(ap); }
    OPEN_BODY(openat, dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
    mode_t mode = 0;
    if (want_mode(flags)) { va_list ap; va_start(ap, flags); mode = va_arg(ap, int); va_end(ap); }
    OPEN_BODY(openat64, dirfd, path, flags, mode);
}

int __openat_2(int dirfd, const char *path, int flags) { OPEN_BODY(__openat_2, dirfd, path, flags); }
int __openat64_2(int dirfd, const char *path, int flags) { OPEN_BODY(__openat64_2, dirfd, path, flags); }

#define PATH_CALL(ret_t, name, failed, params, ...)               \
    ret_t name params                                             \
    {                                                             \
        char buf[PATH_MAX];                                       \
        const char *orig = path;                                  \
        path = redirect(path, buf, sizeof(buf));                  \
        REAL(name);                                               \
        ret_t ret_ = real_##name(__VA_ARGS__);                    \
        note(#name, orig, path, failed, errno);                   \
        return ret_;                                              \
    }

PATH_CALL(FILE *, fopen, !ret_, (const char *path, const char *mode), path, mode)
PATH_CALL(FILE *, fopen64, !ret_, (const char *path, const char *mode), path, mode)
PATH_CALL(DIR *, opendir, !ret_, (const char *path), path)
PATH_CALL(int, stat, ret_ < 0, (const char *path, struct stat *st), path, st)
PATH_CALL(int, lstat, ret_ < 0, (const char *path, struct stat *st), path, st)
PATH_CALL(int, stat64, ret_ < 0, (const char *path, struct stat64 *st), path, st)
PATH_CALL(int, lstat64, ret_ < 0, (const char *path, struct stat64 *st), path, st)
PATH_CALL(int, fstatat, ret_ < 0, (int dirfd, const char *path, struct stat *st, int fl), dirfd, path, st, fl)
PATH_CALL(int, fstatat64, ret_ < 0, (int dirfd, const char *path, struct stat64 *st, int fl), dirfd, path, st, fl)
PATH_CALL(int, statx, ret_ < 0, (int dirfd, const char *path, int fl, unsigned mask, struct statx *st),
          dirfd, path, fl, mask, st)
PATH_CALL(int, access, ret_ < 0, (const char *path, int m), path, m)
PATH_CALL(int, faccessat, ret_ < 0, (int dirfd, const char *path, int m, int fl), dirfd, path, m, fl)
PATH_CALL(ssize_t, readlink, ret_ < 0, (const char *path, char *b, size_t n), path, b, n)
PATH_CALL(ssize_t, readlinkat, ret_ < 0, (int dirfd, const char *path, char *b, size_t n), dirfd, path, b, n)

char *realpath(const char *path, char *resolved)
{
    char buf[PATH_MAX];
    const char *orig = path;
    path = redirect(path, buf, sizeof(buf));
    REAL(realpath);
    char *r = unroot(real_realpath(path, resolved));
    note("realpath", orig, path, !r, errno);
    return r;
}

char *__realpath_chk(const char *path, char *resolved, size_t n)
{
    (void)n;
    return realpath(path, resolved);
}

/* ---------------------------------------------------------------- fds */

/* The simulated fd behind a placeholder goes away (close, or dup2 over it). */
static void forget(int fd)
{
    if (!ours(fd))
        return;
    struct req rq = { .op = OP_CLOSE, .fd = sim_of[fd] - 1, .kind = kind_of[fd] };
    sim_of[fd] = 0;
    kind_of[fd] = 0;
    call(&rq, NULL, -1, NULL, 0, NULL);
}

int close(int fd)
{
    REAL(close);
    forget(fd);
    return real_close(fd);
}

/* newfd is a real dup of our oldfd: give it a dup of the simulated fd too. */
static int dup_ours(int oldfd, int newfd)
{
    REAL(close);
    if (newfd < 0 || !ours(oldfd))
        return newfd;
    if (newfd >= MAXFD) {
        real_close(newfd);
        errno = EMFILE;
        return -1;
    }
    struct req rq = { .op = OP_DUP, .fd = sim_of[oldfd] - 1, .kind = kind_of[oldfd] };
    int64_t r = call(&rq, NULL, -1, NULL, 0, NULL);
    if (r < 0) {
        real_close(newfd);
        errno = (int)-r;
        return -1;
    }
    sim_of[newfd] = (int)r + 1;
    kind_of[newfd] = kind_of[oldfd];
    return newfd;
}

int dup(int fd)
{
    REAL(dup);
    return dup_ours(fd, real_dup(fd));
}

int dup2(int fd, int fd2)
{
    REAL(dup2);
    if (fd == fd2)
        return real_dup2(fd, fd2);
    int r = real_dup2(fd, fd2);
    if (r >= 0)
        forget(fd2);
    return dup_ours(fd, r);
}

int dup3(int fd, int fd2, int flags)
{
    REAL(dup3);
    int r = real_dup3(fd, fd2, flags);
    if (r >= 0 && fd != fd2)
        forget(fd2);
    return dup_ours(fd, r);
}

#define FCNTL_BODY(realname)                                      \
    va_list ap;                                                   \
    va_start(ap, cmd);                                            \
    void *arg = va_arg(ap, void *);                               \
    va_end(ap);                                                   \
    REAL(realname);                                               \
    int r = real_##realname(fd, cmd, arg);                        \
    if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)                 \
        return dup_ours(fd, r);                                   \
    return r

int fcntl(int fd, int cmd, ...) { FCNTL_BODY(fcntl); }
int fcntl64(int fd, int cmd, ...) { FCNTL_BODY(fcntl64); }

static int32_t sim_fd_or_bad(int32_t fd)
{
    return ours(fd) ? sim_of[fd] - 1 : INT32_MAX;     /* not a VFIO fd: EBADF there */
}

#define VFIO_NR(n) ((n) & 0xff)
#define IS_VFIO(req) ((((req) >> 8) & 0xff) == ';')

int ioctl(int fd, unsigned long request, ...)
{
    va_list ap;
    va_start(ap, request);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    if (!ours(fd)) {
        REAL(ioctl);
        return real_ioctl(fd, request, arg);
    }
    struct req rq = { .op = OP_IOCTL, .fd = sim_of[fd] - 1, .kind = kind_of[fd], .a = request };
    unsigned nr = VFIO_NR(request);
    int kind = kind_of[fd];
    int64_t r;
    uint32_t newfd = 0;
    if (!IS_VFIO(request) || request >> 16) {
        errno = ENOTTY;                  /* not a VFIO/iommufd ioctl number */
        return -1;
    }
    /* VFIO_GET_API_VERSION, CHECK_EXTENSION, SET_IOMMU, UNSET_CONTAINER and
     * DEVICE_RESET take no pointer: the argument is the value. */
    int by_value = nr == 100 || nr == 101 || nr == 102 || nr == 105 || nr == 111;
    if (!by_value && !arg) {
        errno = EFAULT;                  /* copy_from_user() of NULL */
        return -1;
    }
    if (nr == 100 || nr == 101 || nr == 102 || nr == 105 || nr == 111) {
        rq.b = 0;
        rq.c = (uint64_t)arg;
        r = call(&rq, NULL, -1, NULL, 0, &newfd);
    } else if (nr == 104 && kind == KIND_GROUP) {          /* SET_CONTAINER: int *fd */
        int32_t v = sim_fd_or_bad(*(int32_t *)arg);
        rq.b = 1;
        rq.len = 4;
        r = call(&rq, &v, -1, NULL, 0, &newfd);
    } else if (nr == 106 && kind == KIND_GROUP) {          /* GET_DEVICE_FD: char * */
        rq.b = 1;
        rq.len = strlen((char *)arg) + 1;
        r = call(&rq, arg, -1, NULL, 0, &newfd);
    } else {
        /* A struct whose first __u32 is argsz (VFIO) or size (iommufd). */
        uint32_t argsz = *(uint32_t *)arg;
        if (argsz > (1u << 20))
            argsz = 1u << 20;
        if (argsz < 4)
            argsz = 4;
        char *buf = malloc(argsz);
        if (!buf) {
            errno = ENOMEM;
            return -1;
        }
        memcpy(buf, arg, argsz);
        int send_fd = -1, file_fd = -1;
        if (nr == 118 && kind == KIND_DEVICE && argsz >= 12) {        /* BIND_IOMMUFD */
            int32_t v;
            memcpy(&v, buf + 8, 4);
            v = sim_fd_or_bad(v);
            memcpy(buf + 8, &v, 4);
        } else if (nr == 113 && kind == KIND_DEVICE && argsz >= 12) { /* PCI_HOT_RESET */
            uint32_t count;
            memcpy(&count, buf + 8, 4);
            for (uint32_t i = 0; i < count && 12 + 4 * (i + 1) <= argsz; i++) {
                int32_t v;
                memcpy(&v, buf + 12 + 4 * i, 4);
                v = sim_fd_or_bad(v);
                memcpy(buf + 12 + 4 * i, &v, 4);
            }
        } else if (nr == 0x8f && kind == KIND_IOMMUFD && argsz >= 16) { /* IOAS_MAP_FILE */
            memcpy(&file_fd, buf + 12, 4);
            if (ours(file_fd)) {              /* a VFIO dma-buf: the simulated fd */
                int32_t v = sim_of[file_fd] - 1;
                memcpy(buf + 12, &v, 4);
                rq.c = SIM_FD;
            } else {                          /* the real memory fd, by SCM_RIGHTS */
                send_fd = file_fd;
                if (fcntl(send_fd, F_GETFD) < 0)
                    send_fd = -1;             /* not an open fd: the kernel's -EBADF */
            }
        }
        rq.b = 1;
        rq.len = argsz;
        r = call(&rq, buf, send_fd, buf, argsz, &newfd);
        if (nr == 0x8f && kind == KIND_IOMMUFD && argsz >= 16)
            memcpy(buf + 12, &file_fd, 4);    /* QEMU's fd number, as it passed it */
        if (r >= 0 || nr != 0x8f)
            memcpy(arg, buf, argsz);          /* copy_to_user() of what the kernel wrote */
        free(buf);
    }
    if (r < 0) {
        errno = (int)-r;
        return -1;
    }
    if (newfd) {                              /* GROUP_GET_DEVICE_FD, DEVICE_FEATURE DMA_BUF */
        int p = placeholder(O_CLOEXEC);
        if (p < 0 || p >= MAXFD) {
            errno = EMFILE;
            return -1;
        }
        sim_of[p] = (int)r + 1;
        kind_of[p] = (unsigned char)newfd;
        return p;
    }
    return (int)r;
}

static ssize_t region_rw(int op, int fd, void *buf, size_t n, off_t off)
{
    struct req rq = { .op = op, .fd = sim_of[fd] - 1, .kind = kind_of[fd], .a = n, .b = (uint64_t)off };
    int64_t r;
    if (op == OP_PWRITE) {
        rq.len = n;
        r = call(&rq, buf, -1, NULL, 0, NULL);
    } else {
        r = call(&rq, NULL, -1, buf, n, NULL);
    }
    if (r < 0) {
        errno = (int)-r;
        return -1;
    }
    return r;
}

ssize_t pread(int fd, void *buf, size_t n, off_t off)
{
    if (ours(fd))
        return region_rw(OP_PREAD, fd, buf, n, off);
    REAL(pread);
    return real_pread(fd, buf, n, off);
}

ssize_t pread64(int fd, void *buf, size_t n, off64_t off)
{
    if (ours(fd))
        return region_rw(OP_PREAD, fd, buf, n, off);
    REAL(pread64);
    return real_pread64(fd, buf, n, off);
}

ssize_t __pread_chk(int fd, void *buf, size_t n, off_t off, size_t buflen)
{
    (void)buflen;
    return pread(fd, buf, n, off);
}

ssize_t __pread64_chk(int fd, void *buf, size_t n, off64_t off, size_t buflen)
{
    (void)buflen;
    return pread64(fd, buf, n, off);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    if (ours(fd))
        return region_rw(OP_PWRITE, fd, (void *)buf, n, off);
    REAL(pwrite);
    return real_pwrite(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
    if (ours(fd))
        return region_rw(OP_PWRITE, fd, (void *)buf, n, off);
    REAL(pwrite64);
    return real_pwrite64(fd, buf, n, off);
}

/* A BAR mmap of a device fd: QEMU gets a real shared anonymous mapping at an
 * address the kernel picks; the simulated kernel records a VM_PFNMAP VMA of
 * the device fd at that same address (so a later MAP_DMA of it follows PFNs). */
static void *bar_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    REAL(mmap);
    REAL(munmap);
    void *p = real_mmap(addr, len, prot, (flags & ~MAP_TYPE) | MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return p;
    struct req rq = { .op = OP_MMAP, .fd = sim_of[fd] - 1, .kind = kind_of[fd], .a = (uintptr_t)p,
                      .b = len, .c = (uint64_t)(uint32_t)prot | ((uint64_t)(uint32_t)flags << 32),
                      .d = (uint64_t)off };
    int64_t r = call(&rq, NULL, -1, NULL, 0, NULL);
    if (r < 0) {
        real_munmap(p, len);
        errno = (int)-r;
        return MAP_FAILED;
    }
    pthread_mutex_lock(&lock);
    for (int i = 0; i < NMAP; i++) {
        if (!bar_maps[i].len) {
            bar_maps[i].start = (uintptr_t)p;
            bar_maps[i].len = len;
            break;
        }
    }
    pthread_mutex_unlock(&lock);
    return p;
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    if (ours(fd) && !(flags & MAP_ANONYMOUS))
        return bar_mmap(addr, len, prot, flags, fd, off);
    REAL(mmap);
    return real_mmap(addr, len, prot, flags, fd, off);
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off64_t off)
{
    if (ours(fd) && !(flags & MAP_ANONYMOUS))
        return bar_mmap(addr, len, prot, flags, fd, off);
    REAL(mmap64);
    return real_mmap64(addr, len, prot, flags, fd, off);
}

int munmap(void *addr, size_t len)
{
    uintptr_t a = (uintptr_t)addr;
    int hit = 0;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < NMAP; i++) {
        if (bar_maps[i].len && a < bar_maps[i].start + bar_maps[i].len &&
            bar_maps[i].start < a + len) {
            hit = 1;
            if (a <= bar_maps[i].start && bar_maps[i].start + bar_maps[i].len <= a + len)
                bar_maps[i].len = 0;
        }
    }
    pthread_mutex_unlock(&lock);
    if (hit) {
        struct req rq = { .op = OP_MUNMAP, .a = a, .b = len };
        call(&rq, NULL, -1, NULL, 0, NULL);
    }
    REAL(munmap);
    return real_munmap(addr, len);
}
