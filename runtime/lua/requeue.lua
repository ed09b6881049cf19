-- requeue: put an active task back at the right end of pending, so that it
-- is the next one dequeued (used when a server shuts down mid-task).
--
-- KEYS[1]  active list   asynq:{<q>}:active
-- KEYS[2]  lease set     asynq:{<q>}:lease
-- KEYS[3]  pending list  asynq:{<q>}:pending
-- KEYS[4]  task hash     asynq:{<q>}:t:<id>
-- ARGV[1]  task ID
--
-- Returns status OK, or the error NOT FOUND when the ID is not in active or
-- not in the lease set.
--
-- Only state changes. The message stays as it is, no stats are counted and
-- no pending_since is written, as in asynq v0.26.0, so the asynq Inspector
-- reports zero latency for such a task.

if redis.call("LREM", KEYS[1], 0, ARGV[1]) == 0 then
    return redis.error_reply("NOT FOUND")
end
if redis.call("ZREM", KEYS[2], ARGV[1]) == 0 then
    return redis.error_reply("NOT FOUND")
end

redis.call("RPUSH", KEYS[3], ARGV[1])
redis.call("HSET", KEYS[4], "state", "pending")
return redis.status_reply("OK")
