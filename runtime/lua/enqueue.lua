-- enqueue: store a new task and push its ID onto the pending list.
--
-- KEYS[1]  task hash     asynq:{<q>}:t:<id>
-- KEYS[2]  pending list  asynq:{<q>}:pending
-- ARGV[1]  encoded TaskMessage
-- ARGV[2]  task ID
-- ARGV[3]  enqueue time, unix ns (stored as given because a Lua number,
--          a double, cannot hold it exactly)
--
-- Returns 1 when the task was stored, or 0 when the task hash already exists
-- (task ID conflict).
--
-- The hash fields are written in the order msg, state, pending_since, which
-- is the order asynq v0.26.0 writes them, so HGETALL output matches.

if redis.call("EXISTS", KEYS[1]) == 1 then
    return 0
end

redis.call("HSET", KEYS[1],
    "msg", ARGV[1],
    "state", "pending",
    "pending_since", ARGV[3])
redis.call("LPUSH", KEYS[2], ARGV[2])
return 1
