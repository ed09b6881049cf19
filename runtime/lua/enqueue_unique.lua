-- enqueue_unique: take the uniqueness lock, then store a new task and push
-- its ID onto the pending list.
--
-- KEYS[1]  uniqueness lock  asynq:{<q>}:unique:<type>:<md5hex>
-- KEYS[2]  task hash        asynq:{<q>}:t:<id>
-- KEYS[3]  pending list     asynq:{<q>}:pending
-- ARGV[1]  task ID
-- ARGV[2]  lock TTL, whole seconds (at least 1)
-- ARGV[3]  encoded TaskMessage
-- ARGV[4]  enqueue time, unix ns (stored as given)
--
-- Returns -1 when another task holds the lock (duplicate task), 0 when the
-- task hash already exists (task ID conflict), or 1 when the task was stored.
--
-- The lock is taken before the task ID check and is kept when that check
-- fails. asynq v0.26.0 behaves the same way, so a Go client and a C client
-- see the same lock state after a conflict.

local lock_acquired = redis.call("SET", KEYS[1], ARGV[1], "NX", "EX", ARGV[2])
if not lock_acquired then
    return -1
end

if redis.call("EXISTS", KEYS[2]) == 1 then
    return 0
end

redis.call("HSET", KEYS[2],
    "msg", ARGV[3],
    "state", "pending",
    "pending_since", ARGV[4],
    "unique_key", KEYS[1])
redis.call("LPUSH", KEYS[3], ARGV[1])
return 1
