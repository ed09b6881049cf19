/* A first program for casynq's client: enqueues a few tasks with different
 * options into the Redis at the given URL, then prints the keys and task
 * records that Redis now holds, as asynq's tools would find them. */
#include <stdio.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include <casynq.h>

static int enqueue_one(struct casynq_client *client, const char *type,
                       const char *payload, const char *queue,
                       int64_t process_in_s, int64_t unique_ttl_s)
{
    struct casynq_enqueue_options *opts = NULL;
    struct casynq_task_info *info = NULL;
    struct casynq_task *task = NULL;
    int rc;

    rc = casynq_task_create(type, payload, strlen(payload), &task);
    if (rc == 0) {
        rc = casynq_task_set_header(task, "source", "casynq-enqueue-demo");
    }
    if (rc == 0) {
        rc = casynq_enqueue_options_create(&opts);
    }
    if (rc == 0) {
        casynq_enqueue_options_set_queue(opts, queue);
        if (process_in_s > 0) {
            casynq_enqueue_options_set_process_in_s(opts, process_in_s);
        }
        if (unique_ttl_s > 0) {
            casynq_enqueue_options_set_unique_ttl_s(opts, unique_ttl_s);
        }
        rc = casynq_client_enqueue(client, task, opts, &info);
    }
    if (rc == 0) {
        printf("enqueued %-10s id=%s queue=%s state=%s max_retry=%d "
               "timeout=%llds\n",
               type, casynq_task_info_id(info), casynq_task_info_queue(info),
               casynq_task_state_name(casynq_task_info_state(info)),
               casynq_task_info_max_retry(info),
               (long long)casynq_task_info_timeout_s(info));
    } else {
        printf("enqueue %s failed: %s (%s)\n", type,
               casynq_client_last_error(client), casynq_err_name(rc));
    }
    casynq_task_info_destroy(info);
    casynq_enqueue_options_destroy(opts);
    casynq_task_destroy(task);
    return rc;
}

static void print_redis(const struct casynq_redis_options *ro)
{
    char addr[256];
    char host[200];
    int port = 0;
    redisContext *ctx;
    redisReply *keys;

    /* The demo only talks TCP: describe gives "host:port/db". */
    casynq_redis_options_describe(ro, addr, sizeof(addr));
    if (sscanf(addr, "%199[^:]:%d", host, &port) != 2) {
        return;
    }
    ctx = redisConnect(host, port);
    if (ctx == NULL || ctx->err != 0) {
        fprintf(stderr, "cannot connect to %s to list keys\n", addr);
        redisFree(ctx);
        return;
    }
    keys = redisCommand(ctx, "KEYS asynq:*");
    printf("\nredis now holds %zu asynq keys:\n",
           keys != NULL ? keys->elements : 0);
    for (size_t i = 0; keys != NULL && i < keys->elements; i++) {
        redisReply *type = redisCommand(ctx, "TYPE %s", keys->element[i]->str);

        printf("  %-60s %s\n", keys->element[i]->str,
               type != NULL ? type->str : "?");
        freeReplyObject(type);
    }
    freeReplyObject(keys);
    redisFree(ctx);
}

int main(int argc, char **argv)
{
    struct casynq_redis_options *ro = NULL;
    struct casynq_client *client = NULL;
    int failures = 0;
    int rc;

    if (argc != 2) {
        fprintf(stderr, "usage: %s redis://HOST:PORT/DB\n", argv[0]);
        return 2;
    }
    rc = casynq_redis_options_create(&ro);
    if (rc == 0) {
        rc = casynq_redis_options_set_url(ro, argv[1]);
        if (rc != 0) {
            fprintf(stderr, "%s\n", casynq_redis_options_last_error(ro));
        }
    }
    if (rc == 0) {
        rc = casynq_client_create(ro, &client);
    }
    if (rc == 0) {
        rc = casynq_client_ping(client);
        if (rc != 0) {
            fprintf(stderr, "%s\n", casynq_client_last_error(client));
        }
    }
    if (rc != 0) {
        casynq_client_destroy(client);
        casynq_redis_options_destroy(ro);
        return 1;
    }
    failures += enqueue_one(client, "email:welcome", "{\"user_id\":42}",
                            "default", 0, 0) != 0;
    failures += enqueue_one(client, "report:daily", "{\"day\":\"mon\"}", "low",
                            3600, 0) != 0;
    failures += enqueue_one(client, "sms:otp", "{\"to\":\"+100\"}", "critical",
                            0, 60) != 0;
    /* The same unique task again: asynq rejects it as a duplicate. */
    if (enqueue_one(client, "sms:otp", "{\"to\":\"+100\"}", "critical", 0,
                    60) != CASYNQ_EDUPLICATE) {
        failures++;
    }
    print_redis(ro);
    casynq_client_destroy(client);
    casynq_redis_options_destroy(ro);
    return failures == 0 ? 0 : 1;
}
