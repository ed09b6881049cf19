-- delete_expired_completed: delete completed tasks whose retention has
-- ended, in batches.
--
-- KEYS[1]  completed set  asynq:{<q>}:completed
-- ARGV[1]  current time, unix s (members scored at or below it are expired)
-- ARGV[2]  task key prefix asynq:{<q>}:t:
-- ARGV[3]  batch size, at least 1
--
-- Deletes the task hash of each of the oldest expired members, up to the
-- batch size, removes them from the completed set, and returns how many it
-- deleted. The caller repeats the call until it returns 0.

local batch_size = tonumber(ARGV[3])
if batch_size == nil or batch_size < 1 then
    return redis.error_reply("delete_expired_completed: invalid batch " ..
        "size '" .. tostring(ARGV[3]) .. "': pass an integer of at least 1")
end

local expired = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", ARGV[1],
    "LIMIT", 0, batch_size)

for _, id in ipairs(expired) do
    redis.call("DEL", ARGV[2] .. id)
    redis.call("ZREM", KEYS[1], id)
end

return #expired
