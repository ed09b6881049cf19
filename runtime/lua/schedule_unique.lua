-- schedule_unique: take the uniqueness lock, then store a new task and add
-- its ID to the scheduled set.
--
-- KEYS[1]  uniqueness lock  asynq:{<q>}:unique:<type>:<md5hex>
-- KEYS[2]  task hash        asynq:{<q>}:t:<id>
-- KEYS[3]  scheduled set    asynq:{<q>}:scheduled
-- ARGV[1]  task ID
-- ARGV[2]  lock TTL, whole seconds (at least 1)
-- ARGV[3]  process-at time, unix s (the member's score)
-- ARGV[4]  encoded TaskMessage
--
-- Returns -1 when another task holds the lock (duplicate task), 0 when the
-- task hash already exists (task ID conflict), or 1 when the task was stored.
--
-- As in asynq v0.26.0, the lock taken before the task ID check is kept when
-- that check fails.

local lock_acquired = redis.call("SET", KEYS[1], ARGV[1], "NX", "EX", ARGV[2])
if not lock_acquired then
    return -1
end

if redis.call("EXISTS", KEYS[2]) == 1 then
    return 0
end

redis.call("HSET", KEYS[2],
    "msg", ARGV[4],
    "state", "scheduled",
    "unique_key", KEYS[1])
redis.call("ZADD", KEYS[3], ARGV[3], ARGV[1])
return 1
