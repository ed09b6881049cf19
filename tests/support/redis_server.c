/*
 * DESIGN: runs redis-server as a child process of a cmocka test.
 *
 * test_redis_start() gets a free loopback port from the kernel by binding
 * 127.0.0.1:0, then forks and execs redis-server on that port. The port is
 * free only at that moment, so another process may bind it before the child
 * does. Two outcomes show this: the child exits because bind failed, or a
 * foreign server replies to PING on the port. The start loop detects the second
 * case by comparing the process_id field of INFO server with the child's pid,
 * and retries both with a new port.
 *
 * The server runs with --daemonize no, so the pid returned by fork() is the
 * server itself and waitpid() reaps it. All state lives in struct test_redis
 * and, for the cmocka group helpers, in one static struct. Only the thread
 * that runs the tests calls these functions.
 */
#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 700 /* nftw() and mkdtemp() */
#endif

#include "redis_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#define READY_TIMEOUT_MS     10000
#define STOP_TIMEOUT_MS      5000
#define POLL_INTERVAL_MS     50
#define PROBE_TIMEOUT_MS     200
#define CONNECT_TIMEOUT_MS   2000
#define START_ATTEMPTS       5
#define LOG_TAIL_BYTES       2048
#define DIR_PREFIX           "casynq-redis-"
#define DEFAULT_REDIS_SERVER "/usr/bin/redis-server"

enum launch_result {
    LAUNCH_READY,
    /* The child exited early or a foreign server replies on the port, so
     * another port may work. */
    LAUNCH_RETRY,
    LAUNCH_FAILED,
};

static struct test_redis shared_redis;

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

static struct timeval timeval_from_ms(long ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

    return tv;
}

static bool is_executable(const char *path)
{
    return access(path, X_OK) == 0;
}

/* Finds redis-server in each directory of PATH and copies its path into
 * out. Returns false when no directory contains it. */
static bool search_path(char *out, size_t size)
{
    const char *path_env = getenv("PATH");
    const char *dir = path_env;

    while (dir != NULL && *dir != '\0') {
        const char *end = strchr(dir, ':');
        size_t len = end != NULL ? (size_t)(end - dir) : strlen(dir);
        int n = snprintf(out, size, "%.*s/redis-server", (int)len, dir);

        if (len > 0 && n > 0 && (size_t)n < size && is_executable(out)) {
            return true;
        }
        dir = end != NULL ? end + 1 : NULL;
    }
    return false;
}

/* Copies the path of the redis-server binary into out: $REDIS_SERVER when
 * set, else /usr/bin/redis-server, else the first one on PATH. */
static int find_redis_server(char *out, size_t size)
{
    const char *env = getenv("REDIS_SERVER");

    if (env != NULL && *env != '\0') {
        if (!is_executable(env) || strlen(env) >= size) {
            fprintf(stderr,
                    "test_redis: REDIS_SERVER=%s is not an executable "
                    "file; unset REDIS_SERVER or point it at redis-server\n",
                    env);
            return -1;
        }
        strcpy(out, env);
        return 0;
    }
    if (is_executable(DEFAULT_REDIS_SERVER)) {
        snprintf(out, size, "%s", DEFAULT_REDIS_SERVER);
        return 0;
    }
    if (search_path(out, size)) {
        return 0;
    }
    fprintf(stderr,
            "test_redis: redis-server not found at " DEFAULT_REDIS_SERVER
            " or on PATH; run ./scripts/setup.sh to install it\n");
    return -1;
}

/* Returns a TCP port that the kernel reported free on 127.0.0.1, or -1. */
static int pick_free_port(void)
{
    struct sockaddr_in addr;
    socklen_t addr_len = sizeof(addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int port = -1;

    if (fd < 0) {
        fprintf(stderr, "test_redis: socket() failed: %s\n", strerror(errno));
        return -1;
    }
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &addr_len) != 0) {
        fprintf(stderr,
                "test_redis: failed to get a free port on 127.0.0.1: "
                "%s\n",
                strerror(errno));
    } else {
        port = ntohs(addr.sin_port);
    }
    close(fd);
    return port;
}

/* Runs in the forked child: sets up the process and execs redis-server.
 * Only async-signal-safe calls are allowed here, because the parent may
 * have other threads. */
static void exec_server(const char *binary, char *const argv[], pid_t parent)
{
    int devnull;

#ifdef __linux__
    /* A test that crashes must not leave a server running. */
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != parent) {
        _exit(127);
    }
#else
    (void)parent;
#endif
    /* stderr stays open so that errors printed before redis-server opens
     * its log file show up in the test output. */
    devnull = open("/dev/null", O_RDWR);
    if (devnull >= 0) {
        dup2(devnull, STDIN_FILENO);
        dup2(devnull, STDOUT_FILENO);
        close(devnull);
    }
    execv(binary, argv);
    _exit(127);
}

/* Forks redis-server for r->port and r->dir. Returns its pid, or -1. */
static pid_t spawn_server(const char *binary, const struct test_redis *r)
{
    char port[16];
    char logfile[sizeof(r->dir) + 16];
    char dir[sizeof(r->dir)];
    char opt_port[] = "--port", opt_bind[] = "--bind";
    char loopback[] = "127.0.0.1", opt_dir[] = "--dir";
    char opt_save[] = "--save", empty[] = "";
    char opt_aof[] = "--appendonly", opt_daemon[] = "--daemonize";
    char no[] = "no", opt_logfile[] = "--logfile";
    char yes[] = "yes", opt_fsync[] = "--appendfsync", always[] = "always";
    char arg0[] = "redis-server";
    char *argv[] = {arg0, opt_port,    port,    opt_bind, loopback, opt_dir,
                    dir,  opt_save,    empty,   opt_aof,  no,       opt_daemon,
                    no,   opt_logfile, logfile, NULL,     NULL,     NULL};
    pid_t parent = getpid();
    pid_t pid;

    snprintf(port, sizeof(port), "%d", r->port);
    snprintf(dir, sizeof(dir), "%s", r->dir);
    snprintf(logfile, sizeof(logfile), "%s/redis.log", r->dir);
    if (r->persistent) {
        /* argv[10] is the value of --appendonly. With fsync before every
         * reply, a SIGKILL loses no write that a client saw succeed. */
        argv[10] = yes;
        argv[15] = opt_fsync;
        argv[16] = always;
    }

    pid = fork();
    if (pid < 0) {
        fprintf(stderr, "test_redis: fork() failed: %s\n", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        exec_server(binary, argv, parent);
    }
    return pid;
}

/* Returns the process_id field of INFO server, or -1. */
static long server_process_id(redisContext *c)
{
    redisReply *reply = redisCommand(c, "INFO server");
    long process_id = -1;
    const char *field;

    if (reply == NULL) {
        return -1;
    }
    if (reply->type == REDIS_REPLY_STRING) {
        field = strstr(reply->str, "process_id:");
        if (field != NULL) {
            process_id = strtol(field + strlen("process_id:"), NULL, 10);
        }
    }
    freeReplyObject(reply);
    return process_id;
}

/* Returns 1 when the server on r->port replies to PING and is the child
 * r->pid, 0 when nothing replies yet, and -1 when a foreign server replies. */
static int probe_server(const struct test_redis *r)
{
    redisContext *c;
    redisReply *reply;
    bool pong;
    int result;

    c = redisConnectWithTimeout("127.0.0.1", r->port,
                                timeval_from_ms(PROBE_TIMEOUT_MS));
    if (c == NULL) {
        return 0;
    }
    /* A listener that is not redis-server may accept and never reply. */
    if (c->err ||
        redisSetTimeout(c, timeval_from_ms(PROBE_TIMEOUT_MS)) != REDIS_OK) {
        redisFree(c);
        return 0;
    }
    reply = redisCommand(c, "PING");
    if (reply == NULL) {
        redisFree(c);
        return 0;
    }
    pong = reply->type == REDIS_REPLY_STATUS && strcmp(reply->str, "PONG") == 0;
    freeReplyObject(reply);
    if (!pong) {
        redisFree(c);
        return 0;
    }
    result = server_process_id(c) == (long)r->pid ? 1 : -1;
    redisFree(c);
    return result;
}

/* Sends sig to the server and reaps it. Returns 0 when it exited within
 * timeout_ms, -1 when it had to be killed with SIGKILL. */
static int terminate_server(struct test_redis *r, int sig, long timeout_ms)
{
    long long deadline = monotonic_ms() + timeout_ms;
    int result = 0;

    kill(r->pid, sig);
    while (waitpid(r->pid, NULL, WNOHANG) == 0) {
        if (monotonic_ms() >= deadline) {
            fprintf(stderr,
                    "test_redis: redis-server pid %ld on port %d still "
                    "runs %ld ms after signal %d; sending SIGKILL\n",
                    (long)r->pid, r->port, timeout_ms, sig);
            kill(r->pid, SIGKILL);
            while (waitpid(r->pid, NULL, 0) < 0 && errno == EINTR) {
                continue;
            }
            result = -1;
            break;
        }
        sleep_ms(POLL_INTERVAL_MS);
    }
    r->pid = 0;
    return result;
}

static void report_early_exit(const struct test_redis *r, int status)
{
    if (WIFEXITED(status)) {
        fprintf(stderr,
                "test_redis: redis-server on port %d exited with "
                "status %d before it replied to PING\n",
                r->port, WEXITSTATUS(status));
    } else if (WIFSIGNALED(status)) {
        fprintf(stderr,
                "test_redis: redis-server on port %d was killed by "
                "signal %d before it replied to PING\n",
                r->port, WTERMSIG(status));
    }
}

/* Waits until the child r->pid replies to PING on r->port. */
static enum launch_result wait_ready(struct test_redis *r)
{
    long long deadline = monotonic_ms() + READY_TIMEOUT_MS;
    int status;

    while (monotonic_ms() < deadline) {
        int probe;

        if (waitpid(r->pid, &status, WNOHANG) == r->pid) {
            report_early_exit(r, status);
            r->pid = 0;
            return LAUNCH_RETRY;
        }
        probe = probe_server(r);
        if (probe == 1) {
            return LAUNCH_READY;
        }
        if (probe < 0) {
            fprintf(stderr,
                    "test_redis: another redis-server replies on "
                    "port %d, so another port is tried\n",
                    r->port);
            terminate_server(r, SIGKILL, STOP_TIMEOUT_MS);
            return LAUNCH_RETRY;
        }
        sleep_ms(POLL_INTERVAL_MS);
    }
    fprintf(stderr,
            "test_redis: redis-server pid %ld on port %d did not reply to "
            "PING within %d ms\n",
            (long)r->pid, r->port, READY_TIMEOUT_MS);
    terminate_server(r, SIGKILL, STOP_TIMEOUT_MS);
    return LAUNCH_FAILED;
}

static enum launch_result launch(struct test_redis *r, const char *binary)
{
    enum launch_result result;

    r->pid = spawn_server(binary, r);
    if (r->pid < 0) {
        r->pid = 0;
        return LAUNCH_FAILED;
    }
    result = wait_ready(r);
    if (result == LAUNCH_READY) {
        snprintf(r->url, sizeof(r->url), "redis://127.0.0.1:%d/0", r->port);
    }
    return result;
}

/* Copies the end of the server log to stderr, because the directory that
 * contains it is often removed right after a failure. */
static void print_log_tail(const struct test_redis *r)
{
    char path[sizeof(r->dir) + 16];
    char buf[LOG_TAIL_BYTES + 1];
    FILE *log;
    long size = 0;
    size_t n;

    snprintf(path, sizeof(path), "%s/redis.log", r->dir);
    log = fopen(path, "r");
    if (log == NULL) {
        fprintf(stderr, "test_redis: no log at %s: %s\n", path,
                strerror(errno));
        return;
    }
    if (fseek(log, 0, SEEK_END) == 0) {
        size = ftell(log);
        if (size > LOG_TAIL_BYTES) {
            fseek(log, size - LOG_TAIL_BYTES, SEEK_SET);
        } else {
            rewind(log);
        }
    }
    n = fread(buf, 1, LOG_TAIL_BYTES, log);
    buf[n] = '\0';
    fclose(log);
    fprintf(stderr, "test_redis: end of %s:\n%s\n", path, buf);
}

static int remove_entry(const char *path, const struct stat *st, int type,
                        struct FTW *ftw)
{
    (void)st;
    (void)type;
    (void)ftw;
    if (remove(path) != 0) {
        fprintf(stderr, "test_redis: cannot remove %s: %s\n", path,
                strerror(errno));
        return -1;
    }
    return 0;
}

/* Removes the temporary directory recursively. The name check keeps a
 * corrupted struct from deleting anything the harness did not create. */
static int remove_dir(const struct test_redis *r)
{
    const char *base = strrchr(r->dir, '/');

    if (base == NULL ||
        strncmp(base + 1, DIR_PREFIX, strlen(DIR_PREFIX)) != 0) {
        fprintf(stderr,
                "test_redis: refusing to remove %s, which is not a " DIR_PREFIX
                "* directory\n",
                r->dir);
        return -1;
    }
    return nftw(r->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : -1;
}

static int make_temp_dir(struct test_redis *r)
{
    const char *tmpdir = getenv("TMPDIR");
    int n;

    if (tmpdir == NULL || *tmpdir == '\0') {
        tmpdir = "/tmp";
    }
    n = snprintf(r->dir, sizeof(r->dir), "%s/" DIR_PREFIX "XXXXXX", tmpdir);
    if (n < 0 || (size_t)n >= sizeof(r->dir)) {
        fprintf(stderr,
                "test_redis: TMPDIR=%s is longer than %zu bytes; "
                "set a shorter TMPDIR\n",
                tmpdir, sizeof(r->dir) - sizeof("/" DIR_PREFIX "XXXXXX"));
        return -1;
    }
    if (mkdtemp(r->dir) == NULL) {
        fprintf(stderr, "test_redis: cannot create a directory in %s: %s\n",
                tmpdir, strerror(errno));
        return -1;
    }
    return 0;
}

static int start_server(struct test_redis *r, int persistent)
{
    enum launch_result result = LAUNCH_FAILED;
    char binary[PATH_MAX];
    int attempt;

    if (r == NULL) {
        fprintf(stderr, "test_redis: test_redis_start() got a NULL struct\n");
        return -1;
    }
    memset(r, 0, sizeof(*r));
    r->persistent = persistent;
    if (find_redis_server(binary, sizeof(binary)) != 0) {
        return -1;
    }
    if (make_temp_dir(r) != 0) {
        memset(r, 0, sizeof(*r));
        return -1;
    }

    for (attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
        r->port = pick_free_port();
        if (r->port < 0) {
            break;
        }
        result = launch(r, binary);
        if (result != LAUNCH_RETRY) {
            break;
        }
    }
    if (result == LAUNCH_READY) {
        return 0;
    }

    fprintf(stderr,
            "test_redis: redis-server did not start after %d "
            "attempt(s)\n",
            attempt > START_ATTEMPTS ? START_ATTEMPTS : attempt);
    print_log_tail(r);
    remove_dir(r);
    memset(r, 0, sizeof(*r));
    return -1;
}

int test_redis_start(struct test_redis *r)
{
    return start_server(r, 0);
}

int test_redis_start_persistent(struct test_redis *r)
{
    return start_server(r, 1);
}

int test_redis_shutdown(struct test_redis *r)
{
    if (r == NULL || r->pid <= 0) {
        fprintf(stderr,
                "test_redis: no redis-server runs on port %d; "
                "start one with test_redis_start()\n",
                r != NULL ? r->port : 0);
        return -1;
    }
    return terminate_server(r, SIGTERM, STOP_TIMEOUT_MS);
}

int test_redis_stop(struct test_redis *r)
{
    int result = 0;

    if (r == NULL) {
        return 0;
    }
    if (r->pid > 0 && terminate_server(r, SIGTERM, STOP_TIMEOUT_MS) != 0) {
        result = -1;
    }
    if (r->dir[0] != '\0' && remove_dir(r) != 0) {
        result = -1;
    }
    memset(r, 0, sizeof(*r));
    return result;
}

int test_redis_kill(struct test_redis *r)
{
    if (r == NULL || r->pid <= 0) {
        fprintf(stderr,
                "test_redis: no redis-server runs on port %d; "
                "start one with test_redis_start()\n",
                r != NULL ? r->port : 0);
        return -1;
    }
    kill(r->pid, SIGKILL);
    while (waitpid(r->pid, NULL, 0) < 0 && errno == EINTR) {
        continue;
    }
    r->pid = 0;
    return 0;
}

int test_redis_restart(struct test_redis *r)
{
    char binary[PATH_MAX];

    if (r == NULL || r->dir[0] == '\0' || r->port <= 0) {
        fprintf(stderr, "test_redis: test_redis_restart() needs a server "
                        "that test_redis_start() started\n");
        return -1;
    }
    if (r->pid > 0) {
        fprintf(stderr,
                "test_redis: redis-server pid %ld still runs on port %d; "
                "call test_redis_kill() or test_redis_shutdown() first\n",
                (long)r->pid, r->port);
        return -1;
    }
    if (find_redis_server(binary, sizeof(binary)) != 0) {
        return -1;
    }
    if (launch(r, binary) == LAUNCH_READY) {
        return 0;
    }
    fprintf(stderr, "test_redis: redis-server did not restart on port %d\n",
            r->port);
    print_log_tail(r);
    return -1;
}

redisContext *test_redis_connect(const struct test_redis *r)
{
    redisContext *c;

    if (r == NULL || r->port <= 0) {
        fprintf(stderr, "test_redis: test_redis_connect() needs a started "
                        "server\n");
        return NULL;
    }
    c = redisConnectWithTimeout("127.0.0.1", r->port,
                                timeval_from_ms(CONNECT_TIMEOUT_MS));
    if (c == NULL) {
        fprintf(stderr,
                "test_redis: cannot connect to 127.0.0.1:%d: out "
                "of memory\n",
                r->port);
        return NULL;
    }
    if (c->err) {
        fprintf(stderr, "test_redis: cannot connect to 127.0.0.1:%d: %s\n",
                r->port, c->errstr);
        redisFree(c);
        return NULL;
    }
    return c;
}

int test_redis_flushall(const struct test_redis *r)
{
    redisContext *c = test_redis_connect(r);
    redisReply *reply;
    int result = -1;

    if (c == NULL) {
        return -1;
    }
    reply = redisCommand(c, "FLUSHALL");
    if (reply == NULL) {
        fprintf(stderr, "test_redis: FLUSHALL on port %d failed: %s\n", r->port,
                c->errstr);
        redisFree(c);
        return -1;
    }
    if (reply->type == REDIS_REPLY_STATUS && strcmp(reply->str, "OK") == 0) {
        result = 0;
    } else {
        fprintf(stderr, "test_redis: FLUSHALL on port %d returned %s\n",
                r->port, reply->str != NULL ? reply->str : "no status");
    }
    freeReplyObject(reply);
    redisFree(c);
    return result;
}

int test_redis_group_setup(void **state)
{
    if (test_redis_start(&shared_redis) != 0) {
        return -1;
    }
    *state = &shared_redis;
    return 0;
}

int test_redis_group_teardown(void **state)
{
    (void)state;
    return test_redis_stop(&shared_redis);
}

const struct test_redis *test_redis_shared(void)
{
    return &shared_redis;
}
