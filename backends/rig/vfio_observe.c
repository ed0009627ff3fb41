/*
 * vfio_observe.c: LD_PRELOAD library that records, without changing them,
 * the VFIO and iommufd calls a real VMM (QEMU) makes on a real kernel.
 * Built on the host by backends/shim/build.py (build(SOURCE)), loaded in the
 * rig guest by backends/rig/guest/test_real_qemu.py; decoded on the host by
 * backends/rig/real_qemu.py with backends/uapi.py's structs.
 *
 * Every call goes to the real libc (dlsym(RTLD_NEXT)) with the caller's
 * arguments; for fds opened on /dev/vfio/... or /dev/iommu, and device fds
 * returned by VFIO_GROUP_GET_DEVICE_FD, one line per call is appended to
 * $VFIO_EMU_OBSERVE (one write(2) per line, O_APPEND):
 *
 *   O seq fd kind ret errno path          open of a VFIO path
 *   C seq fd                              close of a tracked fd
 *   I seq fd kind request ret errno value in-hex out-hex
 *                                         ioctl: the argument bytes before and
 *                                         after the call (value: the raw arg)
 *   F seq fd f_flags st_mode f_type path  the memory fd IOMMU_IOAS_MAP_FILE passes
 *   V seq vaddr maps-line                 the /proc/self/maps line of a VA map
 *
 * kind: 1 container, 2 group, 3 device, 4 iommufd (as vfio_shim.c).
 * The argument of VFIO ioctls (include/uapi/linux/vfio.h, iommufd.h) is a
 * value for GET_API_VERSION (nr 100), CHECK_EXTENSION (101), SET_IOMMU (102),
 * GROUP_UNSET_CONTAINER (105) and DEVICE_RESET (111); an int * for
 * GROUP_SET_CONTAINER (104); a string for GROUP_GET_DEVICE_FD (106); else a
 * struct whose first __u32 is argsz (VFIO) or size (iommufd).
 * dup() of a VFIO fd is not followed: QEMU does not dup them.
 */
#define _GNU_SOURCE
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
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/types.h>
#include <unistd.h>

enum { KIND_NONE = 0, KIND_CONTAINER, KIND_GROUP, KIND_DEVICE, KIND_IOMMUFD };
#define MAXFD 65536
#define ARG_MAX_BYTES 4096
static unsigned char kind_of[MAXFD];
static int log_fd = -1;
static unsigned long seq;

#define REAL(name) static __typeof__(name) *real_##name; \
    if (!real_##name) real_##name = (__typeof__(name) *)dlsym(RTLD_NEXT, #name)

static void emit(const char *buf, size_t n)
{
    if (log_fd < 0) {
        REAL(open);
        const char *p = getenv("VFIO_EMU_OBSERVE");
        if (!p)
            return;
        log_fd = real_open(p, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (log_fd < 0)
            return;
    }
    while (n > 0) {
        ssize_t w = write(log_fd, buf, n);
        if (w <= 0)
            return;
        buf += w;
        n -= (size_t)w;
    }
}

static unsigned long next_seq(void)
{
    return __atomic_add_fetch(&seq, 1, __ATOMIC_SEQ_CST);
}

static int path_kind(const char *p)
{
    if (!p)
        return KIND_NONE;
    if (!strcmp(p, "/dev/iommu"))
        return KIND_IOMMUFD;
    if (!strcmp(p, "/dev/vfio/vfio"))
        return KIND_CONTAINER;
    if (!strncmp(p, "/dev/vfio/devices/", 18))
        return KIND_DEVICE;
    if (!strncmp(p, "/dev/vfio/", 10))
        return KIND_GROUP;
    return KIND_NONE;
}

static int track(int fd, int kind)
{
    if (fd >= 0 && fd < MAXFD)
        kind_of[fd] = (unsigned char)kind;
    return fd;
}

static void note_open(const char *path, int ret, int err)
{
    int kind = path_kind(path);
    if (!kind)
        return;
    track(ret, kind);
    char line[PATH_MAX + 96];
    int n = snprintf(line, sizeof(line), "O %lu %d %d %d %d %s\n", next_seq(), ret, kind, ret,
                     ret < 0 ? err : 0, path);
    emit(line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

static int want_mode(int flags)
{
    return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE;
}

#define OPEN_BODY(realname, ...)                                  \
    REAL(realname);                                               \
    int ret_ = real_##realname(__VA_ARGS__);                      \
    int err_ = errno;                                             \
    note_open(path, ret_, err_);                                  \
    errno = err_;                                                 \
    return ret_

#define MODE_ARG mode_t mode = 0; \
    if (want_mode(flags)) { va_list ap; va_start(ap, flags); mode = va_arg(ap, int); va_end(ap); }

int open(const char *path, int flags, ...) { MODE_ARG OPEN_BODY(open, path, flags, mode); }
int open64(const char *path, int flags, ...) { MODE_ARG OPEN_BODY(open64, path, flags, mode); }
int __open_2(const char *path, int flags) { OPEN_BODY(__open_2, path, flags); }
int __open64_2(const char *path, int flags) { OPEN_BODY(__open64_2, path, flags); }
int openat(int dirfd, const char *path, int flags, ...)
{ MODE_ARG OPEN_BODY(openat, dirfd, path, flags, mode); }
int openat64(int dirfd, const char *path, int flags, ...)
{ MODE_ARG OPEN_BODY(openat64, dirfd, path, flags, mode); }
int __openat_2(int dirfd, const char *path, int flags) { OPEN_BODY(__openat_2, dirfd, path, flags); }
int __openat64_2(int dirfd, const char *path, int flags)
{ OPEN_BODY(__openat64_2, dirfd, path, flags); }

int close(int fd)
{
    REAL(close);
    if (fd >= 0 && fd < MAXFD && kind_of[fd]) {
        char line[64];
        int n = snprintf(line, sizeof(line), "C %lu %d\n", next_seq(), fd);
        emit(line, (size_t)n);
        kind_of[fd] = KIND_NONE;
    }
    return real_close(fd);
}

static char *hex(char *out, const unsigned char *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        *out++ = digits[p[i] >> 4];
        *out++ = digits[p[i] & 15];
    }
    if (!n)
        *out++ = '-';
    return out;
}

/* IOMMU_IOAS_MAP_FILE's memory fd: what the file is (item 3 of the comparison). */
static void note_fd(int fd)
{
    char link[64], path[PATH_MAX] = "?", line[PATH_MAX + 128];
    struct stat st = { 0 };
    struct statfs sf = { 0 };
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t k = readlink(link, path, sizeof(path) - 1);
    if (k > 0)
        path[k] = 0;
    int fl = fcntl(fd, F_GETFL);
    fstat(fd, &st);
    fstatfs(fd, &sf);
    int n = snprintf(line, sizeof(line), "F %lu %d %o %o %lx %s\n", next_seq(), fd, fl,
                     (unsigned)st.st_mode, (unsigned long)sf.f_type, path);
    emit(line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

/* A VA map's vaddr: its /proc/self/maps line (anonymous, memfd, file; shared or not). */
static void note_va(uint64_t va)
{
    REAL(open);
    static char buf[1 << 18];
    int fd = real_open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    size_t len = 0;
    ssize_t r;
    while (len < sizeof(buf) - 1 && (r = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0)
        len += (size_t)r;
    REAL(close);
    real_close(fd);
    buf[len] = 0;
    for (char *l = buf; l && *l; ) {
        char *end = strchr(l, '\n');
        if (end)
            *end = 0;
        unsigned long lo, hi;
        if (sscanf(l, "%lx-%lx", &lo, &hi) == 2 && lo <= va && va < hi) {
            char line[PATH_MAX + 256];
            int n = snprintf(line, sizeof(line), "V %lu %lx %s\n", next_seq(),
                             (unsigned long)va, l);
            emit(line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
            return;
        }
        l = end ? end + 1 : NULL;
    }
}

#define IS_VFIO(req) ((((req) >> 8) & 0xff) == ';' && !((req) >> 16))

int ioctl(int fd, unsigned long request, ...)
{
    va_list ap;
    va_start(ap, request);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    REAL(ioctl);
    int kind = fd >= 0 && fd < MAXFD ? kind_of[fd] : KIND_NONE;
    if (!kind || !IS_VFIO(request))
        return real_ioctl(fd, request, arg);
    unsigned nr = request & 0xff;
    size_t len = 0;
    if (nr == 100 || nr == 101 || nr == 102 || nr == 105 || nr == 111 || !arg)
        len = 0;
    else if (nr == 104 && kind == KIND_GROUP)
        len = 4;
    else if (nr == 106 && kind == KIND_GROUP)
        len = strnlen((const char *)arg, 255) + 1;
    else {
        uint32_t argsz;
        memcpy(&argsz, arg, 4);
        len = argsz < 4 ? 4 : argsz > ARG_MAX_BYTES ? ARG_MAX_BYTES : argsz;
    }
    unsigned char in[ARG_MAX_BYTES];
    if (len)
        memcpy(in, arg, len);
    int ret = real_ioctl(fd, request, arg);
    int err = ret < 0 ? errno : 0;
    if (ret >= 0 && nr == 106 && kind == KIND_GROUP)
        track(ret, KIND_DEVICE);
    static char line[64 + 4 * ARG_MAX_BYTES];
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&lock);
    char *p = line + sprintf(line, "I %lu %d %d %lx %d %d %lx ", next_seq(), fd, kind,
                             request, ret, err, (unsigned long)arg);
    p = hex(p, in, len);
    *p++ = ' ';
    p = hex(p, (const unsigned char *)arg, len);
    *p++ = '\n';
    emit(line, (size_t)(p - line));
    if (kind == KIND_IOMMUFD && nr == 0x8f && len >= 16) {          /* IOMMU_IOAS_MAP_FILE */
        int32_t mfd;
        memcpy(&mfd, in + 12, 4);
        note_fd(mfd);
    } else if (kind == KIND_IOMMUFD && nr == 0x85 && len >= 24) {   /* IOMMU_IOAS_MAP */
        uint64_t va;
        memcpy(&va, in + 16, 8);
        note_va(va);
    } else if (kind == KIND_CONTAINER && nr == 113 && len >= 16) {  /* VFIO_IOMMU_MAP_DMA */
        uint64_t va;
        memcpy(&va, in + 8, 8);
        note_va(va);
    }
    pthread_mutex_unlock(&lock);
    errno = err;
    return ret;
}
