/* Shared set-up for the in-process server tests; see server_fixture.h. */
#include "server_fixture.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

int server_fixture_init(struct server_fixture *sf)
{
    const struct test_redis *server = test_redis_shared();
    struct casynq_redis_options *opts = NULL;
    int rc = 0;

    memset(sf, 0, sizeof(*sf));
    if (server->pid == 0 || test_redis_flushall(server) != 0) {
        return -1;
    }
    sf->server = server;
    sf->redis = test_redis_connect(server);
    rc |= sf->redis == NULL ? -1 : 0;
    rc |= casynq_redis_options_create(&opts);
    rc |= casynq_redis_options_set_tcp(opts, "127.0.0.1", server->port);
    rc |= casynq_client_create(opts, &sf->client);
    rc |= casynq_config_create(&sf->cfg);
    rc |= casynq_config_set_redis(sf->cfg, opts);
    rc |= casynq_config_set_concurrency(sf->cfg, 1);
    rc |= casynq_config_set_task_check_interval_ms(sf->cfg, 50);
    rc |= casynq_config_set_delayed_task_check_interval_ms(sf->cfg, 200);
    rc |= casynq_config_set_janitor(sf->cfg, 200, 100);
    rc |= casynq_config_set_shutdown_timeout_ms(sf->cfg, 2000);
    rc |= casynq_config_set_log(sf->cfg, NULL, NULL, CASYNQ_LOG_WARN);
    rc |= casynq_mux_create(&sf->mux);
    casynq_redis_options_destroy(opts);
    return rc == 0 ? 0 : -1;
}

void server_fixture_finish(struct server_fixture *sf)
{
    casynq_server_destroy(sf->srv);
    casynq_mux_destroy(sf->mux);
    casynq_config_destroy(sf->cfg);
    casynq_client_destroy(sf->client);
    if (sf->redis != NULL) {
        redisFree(sf->redis);
    }
    memset(sf, 0, sizeof(*sf));
}

void server_fixture_start(struct server_fixture *sf)
{
    int rc = casynq_server_create(sf->cfg, sf->mux, &sf->srv);

    if (rc != 0) {
        fail_msg("casynq_server_create returned %s: %s", casynq_err_name(rc),
                 casynq_config_last_error(sf->cfg));
    }
    rc = casynq_server_start(sf->srv);
    if (rc != 0) {
        fail_msg("casynq_server_start returned %s: %s", casynq_err_name(rc),
                 casynq_server_last_error(sf->srv));
    }
}

void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

long long monotonic_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
