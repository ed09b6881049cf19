-- forward: move due tasks from the scheduled or retry set to pending, or to
-- their group when the task hash names one.
--
-- KEYS[1]  source set     asynq:{<q>}:scheduled or asynq:{<q>}:retry
-- KEYS[2]  pending list   asynq:{<q>}:pending
-- ARGV[1]  current time, unix s (members scored at or below it are due)
-- ARGV[2]  task key prefix asynq:{<q>}:t:
-- ARGV[3]  current time, unix ns (stored as pending_since as given)
-- ARGV[4]  group key prefix asynq:{<q>}:g:
--
-- Moves at most 100 IDs per call, to keep each call short, and returns how
-- many it moved. The caller repeats the call until it returns 0.
--
-- Deliberate asynq v0.26.0 behaviours:
-- - A task whose hash has a non-empty group field goes to
--   <group prefix><group> with the current time as score and
--   state=aggregating. The group name is not added to the groups set.
-- - Any other task is pushed onto the left of pending with state=pending
--   and pending_since. This includes an ID whose hash is gone, which leaves
--   a hash holding only those two fields.

local due = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", ARGV[1],
    "LIMIT", 0, 100)

for _, id in ipairs(due) do
    local task_key = ARGV[2] .. id
    local group = redis.call("HGET", task_key, "group")

    if group and group ~= "" then
        redis.call("ZADD", ARGV[4] .. group, ARGV[1], id)
        redis.call("ZREM", KEYS[1], id)
        redis.call("HSET", task_key, "state", "aggregating")
    else
        redis.call("LPUSH", KEYS[2], id)
        redis.call("ZREM", KEYS[1], id)
        redis.call("HSET", task_key,
            "state", "pending",
            "pending_since", ARGV[3])
    end
end

return #due
