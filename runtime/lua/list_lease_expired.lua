-- list_lease_expired: list the active tasks whose lease expired at or before
-- a cutoff. Read-only.
--
-- KEYS[1]  lease set  asynq:{<q>}:lease
-- ARGV[1]  cutoff, unix s
-- ARGV[2]  task key prefix asynq:{<q>}:t:
--
-- Returns a flat array of pairs: task ID, encoded TaskMessage, in lease
-- order (earliest expiry first). IDs whose hash or msg field is gone are
-- left out. asynq v0.26.0 returns only the messages; the IDs are added here
-- so that the caller can act on a task whose message does not decode.

local expired = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", ARGV[1])
local result = {}

for _, id in ipairs(expired) do
    local msg = redis.call("HGET", ARGV[2] .. id, "msg")
    if msg then
        result[#result + 1] = id
        result[#result + 1] = msg
    end
end

return result
