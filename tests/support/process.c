/*
 * DESIGN: runs a program as a child process of a test.
 *
 * test_process_spawn() opens the log file in the parent, so that an error
 * there is reported with its path, then forks. The child resets its signal
 * mask and dispositions, because the test framework may have installed
 * handlers and exec keeps ignored signals and the blocked set, and a program
 * that waits for SIGTERM or SIGTSTP must start from the defaults. The child
 * calls only async-signal-safe functions between fork and exec.
 *
 * Waiting polls waitpid(WNOHANG) every POLL_INTERVAL_MS until the bound, so
 * a hung child makes the test fail with a message instead of hanging it.
 */
#include "process.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#define POLL_INTERVAL_MS 20

static long long monotonic_ms(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec delay = {ms / 1000, (ms % 1000) * 1000000L};

    while (nanosleep(&delay, &delay) != 0 && errno == EINTR) {
        continue;
    }
}

const char *test_process_binary(const char *name)
{
    const char *path = getenv(name);

    if (path == NULL || *path == '\0') {
        fprintf(stderr,
                "test_process: %s is not set; run this test through "
                "`meson test`, which sets it to the built binary\n",
                name);
        return NULL;
    }
    if (access(path, X_OK) != 0) {
        fprintf(stderr,
                "test_process: %s=%s is not an executable file (%s); "
                "build it first or fix the variable\n",
                name, path, strerror(errno));
        return NULL;
    }
    return path;
}

/* Runs in the forked child. Only async-signal-safe calls are allowed. */
static void exec_child(const char *const argv[], int log_fd, pid_t parent)
{
    struct sigaction dfl;
    sigset_t none;
    int devnull;

#ifdef __linux__
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) {
        _exit(127);
    }
#else
    (void)parent;
#endif
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    for (int sig = 1; sig < NSIG; sig++) {
        /* SIGKILL, SIGSTOP and the signals reserved by the threads
         * library reject this, which is harmless. */
        sigaction(sig, &dfl, NULL);
    }
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) {
        dup2(devnull, STDIN_FILENO);
        close(devnull);
    }
    dup2(log_fd, STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
    close(log_fd);
    /* execv() takes char *const[] but does not modify the strings. */
    execv(argv[0], (char *const *)(uintptr_t)argv);
    _exit(127);
}

int test_process_spawn(struct test_process *p, const char *const argv[],
                       const char *log_path)
{
    pid_t parent = getpid();
    int log_fd;
    int n;

    memset(p, 0, sizeof(*p));
    n = snprintf(p->log_path, sizeof(p->log_path), "%s", log_path);
    if (n < 0 || (size_t)n >= sizeof(p->log_path)) {
        fprintf(stderr, "test_process: log path %s is longer than %zu bytes\n",
                log_path, sizeof(p->log_path) - 1);
        memset(p, 0, sizeof(*p));
        return -1;
    }
    log_fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC,
                  0644);
    if (log_fd < 0) {
        fprintf(stderr, "test_process: cannot open log file %s: %s\n", log_path,
                strerror(errno));
        memset(p, 0, sizeof(*p));
        return -1;
    }
    /* Flush so that buffered test output is not written twice. */
    fflush(NULL);
    p->pid = fork();
    if (p->pid < 0) {
        fprintf(stderr, "test_process: fork() for %s failed: %s\n", argv[0],
                strerror(errno));
        close(log_fd);
        memset(p, 0, sizeof(*p));
        return -1;
    }
    if (p->pid == 0) {
        exec_child(argv, log_fd, parent);
    }
    close(log_fd);
    return 0;
}

int test_process_signal(const struct test_process *p, int sig)
{
    if (p->pid <= 0) {
        fprintf(stderr,
                "test_process: cannot send signal %d: the process was "
                "already reaped\n",
                sig);
        return -1;
    }
    if (kill(p->pid, sig) != 0) {
        fprintf(stderr, "test_process: kill(%ld, %d) failed: %s\n",
                (long)p->pid, sig, strerror(errno));
        return -1;
    }
    return 0;
}

bool test_process_running(struct test_process *p)
{
    pid_t got;

    if (p->pid <= 0) {
        return false;
    }
    do {
        got = waitpid(p->pid, &p->wait_status, WNOHANG);
    } while (got < 0 && errno == EINTR);
    if (got == 0) {
        return true;
    }
    if (got < 0) {
        fprintf(stderr, "test_process: waitpid(%ld) failed: %s\n", (long)p->pid,
                strerror(errno));
    }
    p->pid = 0;
    return false;
}

int test_process_wait(struct test_process *p, long timeout_ms)
{
    long long deadline = monotonic_ms() + timeout_ms;

    if (p->pid <= 0) {
        fprintf(stderr, "test_process: no child process to wait for\n");
        return -1;
    }
    for (;;) {
        if (!test_process_running(p)) {
            return 0;
        }
        if (monotonic_ms() >= deadline) {
            fprintf(stderr, "test_process: pid %ld still runs after %ld ms\n",
                    (long)p->pid, timeout_ms);
            return -1;
        }
        sleep_ms(POLL_INTERVAL_MS);
    }
}

void test_process_kill(struct test_process *p)
{
    if (p->pid <= 0) {
        return;
    }
    kill(p->pid, SIGKILL);
    while (waitpid(p->pid, &p->wait_status, 0) < 0 && errno == EINTR) {
        continue;
    }
    p->pid = 0;
}

void test_process_describe_status(const struct test_process *p, char *buf,
                                  size_t len)
{
    int st = p->wait_status;

    if (p->pid > 0) {
        snprintf(buf, len, "still running as pid %ld", (long)p->pid);
    } else if (WIFEXITED(st)) {
        snprintf(buf, len, "exit status %d", WEXITSTATUS(st));
    } else if (WIFSIGNALED(st)) {
        snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(st),
                 strsignal(WTERMSIG(st)));
    } else {
        snprintf(buf, len, "wait status 0x%x", (unsigned)st);
    }
}

char *test_process_read_log(const struct test_process *p)
{
    FILE *f = fopen(p->log_path, "rb");
    char *text = NULL;
    long size;

    if (f == NULL) {
        fprintf(stderr, "test_process: cannot open %s: %s\n", p->log_path,
                strerror(errno));
        return NULL;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 ||
        fseek(f, 0, SEEK_SET) != 0) {
        fprintf(stderr, "test_process: cannot read the size of %s: %s\n",
                p->log_path, strerror(errno));
        fclose(f);
        return NULL;
    }
    text = malloc((size_t)size + 1);
    if (text != NULL) {
        size_t n = fread(text, 1, (size_t)size, f);

        text[n] = '\0';
    }
    fclose(f);
    return text;
}

bool test_process_log_contains(const struct test_process *p, const char *needle)
{
    char *text = test_process_read_log(p);
    bool found = text != NULL && strstr(text, needle) != NULL;

    free(text);
    return found;
}

void test_process_print_log(const struct test_process *p, long max_bytes)
{
    char *text = test_process_read_log(p);
    size_t len;
    const char *start;

    if (text == NULL) {
        return;
    }
    len = strlen(text);
    start = text;
    if (max_bytes > 0 && len > (size_t)max_bytes) {
        start = text + len - (size_t)max_bytes;
    }
    fprintf(stderr, "---- %s%s ----\n%s\n---- end of %s ----\n", p->log_path,
            start != text ? " (last part)" : "", start, p->log_path);
    free(text);
}
