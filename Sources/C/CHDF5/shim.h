#include <hdf5.h>

// What the HDF5 isolation (AmusedRead's HDF5Isolation.swift) needs from the OS, one spelling on Linux and macOS:
// Swift's Darwin overlay marks fork() unavailable, and the no-SIGPIPE and close-on-exec flags differ.
#include <fcntl.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

// fork(2): the HDF5 helper reads each file in a fresh copy of itself (it is single-threaded when it forks).
static inline pid_t amused_fork(void) { return fork(); }

#ifdef __APPLE__
#include <mach/mach.h>
#endif

// The number of threads this process runs, or -1 when it cannot be told. A forked copy of a threaded process may
// find a lock (malloc's, the Swift runtime's) held by a thread that does not exist in the copy: the helper forks only
// while it is alone.
static inline int amused_thread_count(void) {
#ifdef __APPLE__
    thread_act_array_t threads;
    mach_msg_type_number_t count = 0;
    if (task_threads(mach_task_self(), &threads, &count) != KERN_SUCCESS) return -1;
    for (mach_msg_type_number_t i = 0; i < count; i++) mach_port_deallocate(mach_task_self(), threads[i]);
    vm_deallocate(mach_task_self(), (vm_address_t)threads, count * sizeof(thread_act_t));
    return (int)count;
#else
    FILE *status = fopen("/proc/self/status", "r");
    if (!status) return -1;
    char line[256];
    int count = -1;
    while (fgets(line, sizeof line, status))
        if (sscanf(line, "Threads: %d", &count) == 1) break;
    fclose(status);
    return count;
#endif
}

// A connected pair of stream sockets, both close-on-exec, that never raise SIGPIPE on a send; 0 or -1 (errno set).
static inline int amused_socketpair(int fds[2]) {
#ifdef SOCK_CLOEXEC
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) return -1;
#else
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0) return -1;
    fcntl(fds[0], F_SETFD, FD_CLOEXEC);
    fcntl(fds[1], F_SETFD, FD_CLOEXEC);
#endif
#ifdef SO_NOSIGPIPE
    int one = 1;
    setsockopt(fds[0], SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#endif
    return 0;
}

// send(2) that reports a closed peer as EPIPE instead of raising SIGPIPE.
static inline long amused_send(int fd, const void *bytes, unsigned long count) {
#ifdef MSG_NOSIGNAL
    return send(fd, bytes, count, MSG_NOSIGNAL);
#else
    return send(fd, bytes, count, 0);
#endif
}

#include <stdio.h>
#include <sys/resource.h>

// Caps this process — a forked reader of one file — at `extra` bytes of address space beyond what it maps now and at
// `cpu_seconds` of CPU time: past the first, allocations fail; past the second, SIGXCPU ends it (SIGKILL a second
// later). 0, or -1 when a limit could not be set. The address-space cap is Linux's (macOS does not enforce
// RLIMIT_AS); the CPU cap holds everywhere.
static inline int amused_limit_reader(unsigned long long extra, unsigned long cpu_seconds) {
    // Never above the limits the process already has (ulimit -t / -v under a batch system): lowering is allowed.
    struct rlimit old;
    struct rlimit none = {0, 0};
    setrlimit(RLIMIT_CORE, &none);  // a reader killed by a signal dumps no core
    if (getrlimit(RLIMIT_CPU, &old) != 0) return -1;
    rlim_t soft = cpu_seconds, hard = cpu_seconds + 1;
    if (old.rlim_max != RLIM_INFINITY && hard > old.rlim_max) hard = old.rlim_max;
    if (soft > hard) soft = hard;
    struct rlimit cpu = {soft, hard};
    if (setrlimit(RLIMIT_CPU, &cpu) != 0) return -1;
#ifdef __linux__
    unsigned long long pages = 0;
    FILE *statm = fopen("/proc/self/statm", "r");
    if (!statm) return -1;
    int read = fscanf(statm, "%llu", &pages);
    fclose(statm);
    if (read != 1) return -1;
    unsigned long long cap = pages * (unsigned long long)sysconf(_SC_PAGESIZE) + extra;
    if (getrlimit(RLIMIT_AS, &old) != 0) return -1;
    if (old.rlim_max != RLIM_INFINITY && cap > old.rlim_max) cap = old.rlim_max;
    struct rlimit memory = {cap, cap};
    if (setrlimit(RLIMIT_AS, &memory) != 0) return -1;
#endif
    return 0;
}

// Points standard input and output at /dev/null (a forked reader answers through its own pipe: nothing it prints may
// reach the socket its parent inherited on fds 0 and 1).
static inline void amused_detach_stdio(void) {
    int null = open("/dev/null", O_RDWR);
    if (null < 0) return;
    dup2(null, 0);
    dup2(null, 1);
    if (null > 1) close(null);
}
