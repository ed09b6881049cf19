-- archive: move an active task to the archived set with an updated message,
-- trim the archived set by age and by size, and count the attempt as
-- processed and failed.
--
-- KEYS[1]  task hash          asynq:{<q>}:t:<id>
-- KEYS[2]  active list        asynq:{<q>}:active
-- KEYS[3]  lease set          asynq:{<q>}:lease
-- KEYS[4]  archived set       asynq:{<q>}:archived
-- KEYS[5]  daily processed    asynq:{<q>}:processed:<YYYY-MM-DD>
-- KEYS[6]  daily failed       asynq:{<q>}:failed:<YYYY-MM-DD>
-- KEYS[7]  total processed    asynq:{<q>}:processed
-- KEYS[8]  total failed       asynq:{<q>}:failed
-- ARGV[1]  task ID
-- ARGV[2]  encoded TaskMessage with error_msg and last_failed_at updated
-- ARGV[3]  archive time, unix s (the member's score)
-- ARGV[4]  age cutoff, unix s (archive time - 90 days): members scored at or
--          below it are deleted
-- ARGV[5]  size limit, at least 1 (10000 for asynq)
-- ARGV[6]  daily key expiry, unix s (operation time + 90 days)
-- ARGV[7]  "9223372036854775807" (INT64_MAX)
-- ARGV[8]  task key prefix asynq:{<q>}:t:
--
-- Returns status OK, or the error NOT FOUND when the ID is not in active or
-- not in the lease set.
--
-- Deliberate asynq v0.26.0 behaviours:
-- - The size trim removes ranks 0 to -limit, so the set keeps at most
--   limit - 1 members (9,999 for asynq's 10,000).
-- - Every trimmed member's task hash is deleted as well.
-- - Archiving always counts as processed and failed, whatever the caller's
--   failure test returned, and the uniqueness lock is not released.
-- - When the processed total already equals INT64_MAX (exact string
--   comparison, see done.lua), both totals are set to 1.
-- asynq selects members with ZRANGE ... BYSCORE, which needs Redis 6.2. This
-- script uses ZRANGEBYSCORE and ZREM*RANGE* commands, which Redis 5 has too.

local size_limit = tonumber(ARGV[5])
if size_limit == nil or size_limit < 1 then
    return redis.error_reply("archive: invalid size limit '" ..
        tostring(ARGV[5]) .. "': pass an integer of at least 1")
end
if ARGV[8] == nil then
    return redis.error_reply("archive: missing task key prefix (ARGV[8]): " ..
        "pass 8 arguments")
end

if redis.call("LREM", KEYS[2], 0, ARGV[1]) == 0 then
    return redis.error_reply("NOT FOUND")
end
if redis.call("ZREM", KEYS[3], ARGV[1]) == 0 then
    return redis.error_reply("NOT FOUND")
end

redis.call("ZADD", KEYS[4], ARGV[3], ARGV[1])

-- Each trim reads the member IDs to delete their hashes, then removes the
-- same members with a range command. Nothing runs in between, so the range
-- matches the IDs read, and no ID list has to pass through unpack(), whose
-- argument count is limited.
-- NOTE: the ID archived above is trimmed too when its score is at or below
-- the cutoff, or when it ties with the oldest members of a full set. The HSET
-- below then leaves a hash that no set refers to. asynq v0.26.0 does the same.
local expired = redis.call("ZRANGEBYSCORE", KEYS[4], "-inf", ARGV[4])
if #expired > 0 then
    for _, id in ipairs(expired) do
        redis.call("DEL", ARGV[8] .. id)
    end
    redis.call("ZREMRANGEBYSCORE", KEYS[4], "-inf", ARGV[4])
end

local excess = redis.call("ZRANGE", KEYS[4], 0, -size_limit)
if #excess > 0 then
    for _, id in ipairs(excess) do
        redis.call("DEL", ARGV[8] .. id)
    end
    redis.call("ZREMRANGEBYRANK", KEYS[4], 0, -size_limit)
end

redis.call("HSET", KEYS[1],
    "msg", ARGV[2],
    "state", "archived")

if redis.call("INCR", KEYS[5]) == 1 then
    redis.call("EXPIREAT", KEYS[5], ARGV[6])
end
if redis.call("INCR", KEYS[6]) == 1 then
    redis.call("EXPIREAT", KEYS[6], ARGV[6])
end
if redis.call("GET", KEYS[7]) == ARGV[7] then
    redis.call("SET", KEYS[7], "1")
    redis.call("SET", KEYS[8], "1")
else
    redis.call("INCR", KEYS[7])
    redis.call("INCR", KEYS[8])
end

return redis.status_reply("OK")
