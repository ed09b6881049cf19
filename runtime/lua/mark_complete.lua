-- mark_complete: move a successfully processed task to the completed set
-- (retention > 0) and count it as processed.
--
-- KEYS[1]  active list        asynq:{<q>}:active
-- KEYS[2]  lease set          asynq:{<q>}:lease
-- KEYS[3]  completed set      asynq:{<q>}:completed
-- KEYS[4]  task hash          asynq:{<q>}:t:<id>
-- KEYS[5]  daily processed    asynq:{<q>}:processed:<YYYY-MM-DD>
-- KEYS[6]  total processed    asynq:{<q>}:processed
-- ARGV[1]  task ID
-- ARGV[2]  daily key expiry, unix s (operation time + 90 days)
-- ARGV[3]  completed-set score = completion time + retention, unix s
-- ARGV[4]  encoded TaskMessage with completed_at set
-- ARGV[5]  "9223372036854775807" (INT64_MAX)
--
-- Returns status OK. Returns the error NOT FOUND when the ID is not in active
-- or not in the lease set, and the error INTERNAL when the ID is already in
-- the completed set. Redis 7.0 sends the one-word INTERNAL reply as
-- "ERR INTERNAL", so callers should treat every error other than NOT FOUND
-- as internal. Writes made before the failing check stay, as in asynq
-- v0.26.0.
--
-- The hash keeps its result and unique_key fields. The total wraps to 1 when
-- it already equals INT64_MAX (exact string comparison, see done.lua).

if redis.call("LREM", KEYS[1], 0, ARGV[1]) == 0 then
    return redis.error_reply("NOT FOUND")
end
if redis.call("ZREM", KEYS[2], ARGV[1]) == 0 then
    return redis.error_reply("NOT FOUND")
end
if redis.call("ZADD", KEYS[3], ARGV[3], ARGV[1]) ~= 1 then
    return redis.error_reply("INTERNAL")
end

redis.call("HSET", KEYS[4],
    "msg", ARGV[4],
    "state", "completed")

if redis.call("INCR", KEYS[5]) == 1 then
    redis.call("EXPIREAT", KEYS[5], ARGV[2])
end
if redis.call("GET", KEYS[6]) == ARGV[5] then
    redis.call("SET", KEYS[6], "1")
else
    redis.call("INCR", KEYS[6])
end

return redis.status_reply("OK")
