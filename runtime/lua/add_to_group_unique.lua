-- add_to_group_unique: take the uniqueness lock, then store a new task in the
-- aggregating state and add its ID to a group.
--
-- KEYS[1]  task hash        asynq:{<q>}:t:<id>
-- KEYS[2]  group set        asynq:{<q>}:g:<group>
-- KEYS[3]  groups set       asynq:{<q>}:groups
-- KEYS[4]  uniqueness lock  asynq:{<q>}:unique:<type>:<md5hex>
-- ARGV[1]  encoded TaskMessage
-- ARGV[2]  task ID
-- ARGV[3]  time added, unix s (the member's score)
-- ARGV[4]  group name
-- ARGV[5]  lock TTL, whole seconds (at least 1)
--
-- Returns -1 when another task holds the lock (duplicate task), 0 when the
-- task hash already exists (task ID conflict), or 1 when the task was stored.
--
-- Two asynq v0.26.0 behaviours are kept on purpose. The lock taken before
-- the task ID check stays when that check fails. The hash gets no unique_key
-- field (the lock key is only inside msg), so the asynq Inspector does not
-- release this lock when it deletes the task.

local lock_acquired = redis.call("SET", KEYS[4], ARGV[2], "NX", "EX", ARGV[5])
if not lock_acquired then
    return -1
end

if redis.call("EXISTS", KEYS[1]) == 1 then
    return 0
end

redis.call("HSET", KEYS[1],
    "msg", ARGV[1],
    "state", "aggregating",
    "group", ARGV[4])
redis.call("ZADD", KEYS[2], ARGV[3], ARGV[2])
redis.call("SADD", KEYS[3], ARGV[4])
return 1
