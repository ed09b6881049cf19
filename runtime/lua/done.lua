-- done: delete a successfully processed task (no retention) or a revoked
-- task, and count it as processed.
--
-- KEYS[1]  active list        asynq:{<q>}:active
-- KEYS[2]  lease set          asynq:{<q>}:lease
-- KEYS[3]  task hash          asynq:{<q>}:t:<id>
-- KEYS[4]  daily processed    asynq:{<q>}:processed:<YYYY-MM-DD>
-- KEYS[5]  total processed    asynq:{<q>}:processed
-- ARGV[1]  task ID
-- ARGV[2]  daily key expiry, unix s (operation time + 90 days)
-- ARGV[3]  "9223372036854775807" (INT64_MAX)
--
-- Returns status OK, or the error NOT FOUND when the ID is not in active, not
-- in the lease set, or has no task hash. Writes made before the failing check
-- stay, as in asynq v0.26.0.
--
-- The total wraps to 1 when it already equals INT64_MAX, as in asynq
-- v0.26.0, because INCR fails there. This test compares the strings exactly.
-- asynq compares the values as Lua doubles, so it also wraps totals from
-- INT64_MAX - 511 upwards.

if redis.call("LREM", KEYS[1], 0, ARGV[1]) == 0 then
    return redis.error_reply("NOT FOUND")
end
if redis.call("ZREM", KEYS[2], ARGV[1]) == 0 then
    return redis.error_reply("NOT FOUND")
end
if redis.call("DEL", KEYS[3]) == 0 then
    return redis.error_reply("NOT FOUND")
end

if redis.call("INCR", KEYS[4]) == 1 then
    redis.call("EXPIREAT", KEYS[4], ARGV[2])
end
if redis.call("GET", KEYS[5]) == ARGV[3] then
    redis.call("SET", KEYS[5], "1")
else
    redis.call("INCR", KEYS[5])
end

return redis.status_reply("OK")
