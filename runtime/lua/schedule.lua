-- schedule: store a new task and add its ID to the scheduled set.
--
-- KEYS[1]  task hash      asynq:{<q>}:t:<id>
-- KEYS[2]  scheduled set  asynq:{<q>}:scheduled
-- ARGV[1]  encoded TaskMessage
-- ARGV[2]  process-at time, unix s (the member's score)
-- ARGV[3]  task ID
--
-- Returns 1 when the task was stored, or 0 when the task hash already exists
-- (task ID conflict).
--
-- No group field is written even when the message carries a group key.
-- asynq v0.26.0 does the same, so the forwarder later moves such a task to
-- pending as an ordinary task.

if redis.call("EXISTS", KEYS[1]) == 1 then
    return 0
end

redis.call("HSET", KEYS[1],
    "msg", ARGV[1],
    "state", "scheduled")
redis.call("ZADD", KEYS[2], ARGV[2], ARGV[3])
return 1
