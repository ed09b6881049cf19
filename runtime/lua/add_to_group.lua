-- add_to_group: store a new task in the aggregating state and add its ID to
-- a group, registering the group name in the queue's groups set.
--
-- KEYS[1]  task hash   asynq:{<q>}:t:<id>
-- KEYS[2]  group set   asynq:{<q>}:g:<group>
-- KEYS[3]  groups set  asynq:{<q>}:groups
-- ARGV[1]  encoded TaskMessage
-- ARGV[2]  task ID
-- ARGV[3]  time added, unix s (the member's score)
-- ARGV[4]  group name
--
-- Returns 1 when the task was stored, or 0 when the task hash already exists
-- (task ID conflict).

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
