#ifndef CASYNQ_RUNTIME_BROKER_H
#define CASYNQ_RUNTIME_BROKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "cmd.h"

/* asynq's Redis layout (asynq v0.26.0, internal/base/base.go). */
#define CASYNQ__QUEUES_KEY     "asynq:queues"
#define CASYNQ__SERVERS_KEY    "asynq:servers"
#define CASYNQ__WORKERS_KEY    "asynq:workers"
#define CASYNQ__CANCEL_CHANNEL "asynq:cancel"

/* Daily statistics keys expire 90 days after their first increment. */
#define CASYNQ__STATS_TTL_S       (90 * 24 * 3600)
/* The archive keeps tasks for at most 90 days and at most 10,000 - 1 of
 * them (internal/rdb/rdb.go, archiveCmd). */
#define CASYNQ__ARCHIVE_MAX_AGE_S (90 * 24 * 3600)
#define CASYNQ__ARCHIVE_MAX_SIZE  10000
/* A dequeued task's lease lasts 30 s and is extended while it runs. */
#define CASYNQ__LEASE_S           30
/* Server and worker entries live 10 s; heartbeats come every 5 s. */
#define CASYNQ__HEARTBEAT_TTL_S   10
/* Largest queue name casynq accepts: keys stay well under Redis limits. */
#define CASYNQ__MAX_QUEUE_LEN     255

/* Builders. Each starts `cmd` (which must be unused or freed) as one
 * operation. Building errors stay in the command and come out of
 * casynq__cmd_finish() or the transport, so builders return nothing. All
 * strings are copied into the command. */

/* SADD asynq:queues <queue>: the Inspector lists only registered queues. */
void casynq__broker_register_queue(struct casynq__cmd *cmd, const char *queue);

/* Adds a new pending task. unique_key NULL for a plain task, else the lock
 * key, held for unique_ttl_s seconds. */
void casynq__broker_enqueue(struct casynq__cmd *cmd, const char *queue,
                            const char *id, const void *msg, size_t msg_len,
                            int64_t now_ns, const char *unique_key,
                            int64_t unique_ttl_s);

/* Adds a new scheduled task ready at process_at_s. */
void casynq__broker_schedule(struct casynq__cmd *cmd, const char *queue,
                             const char *id, const void *msg, size_t msg_len,
                             int64_t process_at_s, const char *unique_key,
                             int64_t unique_ttl_s);

/* Adds a new aggregating task to a group. */
void casynq__broker_add_to_group(struct casynq__cmd *cmd, const char *queue,
                                 const char *id, const void *msg,
                                 size_t msg_len, const char *group,
                                 int64_t now_s, const char *unique_key,
                                 int64_t unique_ttl_s);

/* Maps the reply of enqueue, schedule and add-to-group.
 * Returns: 0, CASYNQ_ETASKID_CONFLICT, CASYNQ_EDUPLICATE, or CASYNQ_EREDIS
 *          with the Redis error text in errbuf. */
int casynq__broker_parse_enqueue(const redisReply *r, char *errbuf);

/* Moves up to max tasks from pending to active across queues, trying them
 * in the given order and skipping paused ones; each gets a lease until
 * lease_expiry_s. */
void casynq__broker_dequeue(struct casynq__cmd *cmd, const char *const *queues,
                            int nqueues, int64_t lease_expiry_s, int max);

/* One task returned by dequeue. Pointers borrow from the reply. msg is
 * NULL when the task hash was missing (the ID has then been dropped from
 * active). */
struct casynq__dequeued {
    int queue_index; /* 0-based index into the queues given to dequeue */
    const char *id;
    size_t id_len;
    const char *msg;
    size_t msg_len;
    int64_t pending_since_ns; /* unix ns; 0 when the hash had none */
};

/* Parses a dequeue reply into out (at most max entries).
 * Returns: the number of tasks (0 when every queue was empty or paused), or
 *          CASYNQ_EREDIS / CASYNQ_EPROTO with a message in errbuf. */
int casynq__broker_parse_dequeue(const redisReply *r,
                                 struct casynq__dequeued *out, int max,
                                 char *errbuf);

/* Deletes a finished task and counts it as processed. unique_key is the
 * message's unique_key (NULL or "" when not unique); the lock is released
 * only while this task still owns it. */
void casynq__broker_done(struct casynq__cmd *cmd, const char *queue,
                         const char *id, const char *unique_key, int64_t now_s);

/* One task of a done batch. unique_key is the message's unique_key (NULL
 * or "" when not unique). */
struct casynq__done_item {
    const char *id;
    const char *unique_key;
};

/* The done operation for n tasks of one queue in one script call; each
 * task gets exactly the effects of casynq__broker_done(). The reply is an
 * array of n integers, 1 when done and 0 when the task was no longer
 * active (done's NOT FOUND). */
void casynq__broker_done_batch(struct casynq__cmd *cmd, const char *queue,
                               const struct casynq__done_item *items, int n,
                               int64_t now_s);

/* Moves a finished task to completed until now_s + retention_s. msg is
 * the message re-encoded with completed_at set. */
void casynq__broker_mark_complete(struct casynq__cmd *cmd, const char *queue,
                                  const char *id, const void *msg,
                                  size_t msg_len, const char *unique_key,
                                  int64_t now_s, int64_t retention_s);

/* Puts an active task back at the head of pending (shutdown). */
void casynq__broker_requeue(struct casynq__cmd *cmd, const char *queue,
                            const char *id);

/* Moves an active task to retry at retry_at_s. msg is the updated message.
 * is_failure counts the attempt as processed and failed. */
void casynq__broker_retry(struct casynq__cmd *cmd, const char *queue,
                          const char *id, const void *msg, size_t msg_len,
                          int64_t retry_at_s, bool is_failure, int64_t now_s);

/* Moves an active task to the archive and trims the archive. */
void casynq__broker_archive(struct casynq__cmd *cmd, const char *queue,
                            const char *id, const void *msg, size_t msg_len,
                            int64_t now_s);

/* Maps the reply of done, mark-complete, requeue, retry and archive.
 * Returns: 0, CASYNQ_ENOTFOUND (another actor moved the task), or
 *          CASYNQ_EREDIS with the error text in errbuf. */
int casynq__broker_parse_status(const redisReply *r, char *errbuf);

/* Moves up to 100 due tasks from the scheduled or retry set (`set` is
 * "scheduled" or "retry") to pending, or to their group. */
void casynq__broker_forward(struct casynq__cmd *cmd, const char *queue,
                            const char *set, int64_t now_s, int64_t now_ns);

/* Deletes up to batch completed tasks whose retention ended by now_s. */
void casynq__broker_delete_expired_completed(struct casynq__cmd *cmd,
                                             const char *queue, int64_t now_s,
                                             int batch);

/* Maps an integer reply (forward, janitor, ZADD).
 * Returns: the integer (>= 0), or CASYNQ_EREDIS with text in errbuf. */
int64_t casynq__broker_parse_count(const redisReply *r, char *errbuf);

/* ZADD XX <lease key>: extends the leases of ids that are still leased. */
void casynq__broker_extend_lease(struct casynq__cmd *cmd, const char *queue,
                                 const char *const *ids, int nids,
                                 int64_t expiry_s);

/* Lists the messages of tasks whose lease ended at or before cutoff_s. The
 * reply is a flat array id, msg, id, msg... */
void casynq__broker_list_lease_expired(struct casynq__cmd *cmd,
                                       const char *queue, int64_t cutoff_s);

/* HSET the task's result field. */
void casynq__broker_write_result(struct casynq__cmd *cmd, const char *queue,
                                 const char *id, const void *data, size_t len);

/* Task hashes and groups that the queue statistics sample for their
 * memory estimate, as asynq v0.26.0's Inspector does. */
#define CASYNQ__STATS_TASK_SAMPLE  20
#define CASYNQ__STATS_GROUP_SAMPLE 5

/* The statistics of one queue that asynq's Inspector reports. */
struct casynq__queue_stats {
    int64_t pending;
    int64_t active;
    int64_t scheduled;
    int64_t retry;
    int64_t archived;
    int64_t completed;
    int64_t aggregating;
    int64_t groups;
    int64_t processed_total; /* all-time counter */
    int64_t failed_total;    /* all-time counter */
    bool paused;
    int64_t oldest_pending_ns; /* pending_since of the next pending task,
                                * unix ns; 0 when none or unset */
    int64_t memory_bytes;      /* sampled estimate */
};

/* Reads the statistics of queue with the queue_stats script. */
void casynq__broker_queue_stats(struct casynq__cmd *cmd, const char *queue);

/* Parses the reply of casynq__broker_queue_stats() into *out.
 * Returns: 0, or CASYNQ_EREDIS / CASYNQ_EPROTO with a message in errbuf. */
int casynq__broker_parse_queue_stats(const redisReply *r,
                                     struct casynq__queue_stats *out,
                                     char *errbuf);

/* Server identity used in heartbeat key names. */
struct casynq__server_ident {
    const char *host;
    int pid;
    const char *server_id;
};

/* ZADD asynq:servers / asynq:workers <expiry_s> <key>. */
void casynq__broker_servers_zadd(struct casynq__cmd *cmd,
                                 const struct casynq__server_ident *who,
                                 int64_t expiry_s);
void casynq__broker_workers_zadd(struct casynq__cmd *cmd,
                                 const struct casynq__server_ident *who,
                                 int64_t expiry_s);

/* Writes the ServerInfo and replaces the workers hash. worker_ids[i] pairs
 * with the encoded WorkerInfo worker_infos[i] of worker_lens[i] bytes. */
void casynq__broker_write_server_state(
        struct casynq__cmd *cmd, const struct casynq__server_ident *who,
        const void *server_info, size_t server_info_len,
        const char *const *worker_ids, const char *const *worker_infos,
        const size_t *worker_lens, int nworkers, int ttl_s);

/* Blocks until the pending list of queue has a task, for at most
 * timeout_s seconds (BLMOVE from the list's right end to its right end,
 * which leaves the list as it was). The reply is the ID at the right end,
 * or nil on timeout. Needs Redis 6.2 or later. */
void casynq__broker_wait_pending(struct casynq__cmd *cmd, const char *queue,
                                 double timeout_s);

/* ZREM the server from asynq:servers / asynq:workers. */
void casynq__broker_servers_zrem(struct casynq__cmd *cmd,
                                 const struct casynq__server_ident *who);
void casynq__broker_workers_zrem(struct casynq__cmd *cmd,
                                 const struct casynq__server_ident *who);
/* Deletes the server key and the workers hash. */
void casynq__broker_clear_server_state(struct casynq__cmd *cmd,
                                       const struct casynq__server_ident *who);

/* Writes the uniqueness key name for (queue, type, payload) into out, as
 * asynq:{<queue>}:unique:<type>:<md5 hex of payload>, with no digest when
 * payload is NULL (asynq's nil payload).
 * Returns: 0 or CASYNQ_ENOMEM. */
int casynq__broker_unique_key(struct casynq__buf *out, const char *queue,
                              const char *type, const void *payload,
                              size_t payload_len);

#endif
