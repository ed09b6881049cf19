-- retry: move an active task to the retry set with an updated message, and
-- count the attempt as processed and failed when it was a failure.
--
-- KEYS[1]  task hash          asynq:{<q>}:t:<id>
-- KEYS[2]  active list        asynq:{<q>}:active
-- KEYS[3]  lease set          asynq:{<q>}:lease
-- KEYS[4]  retry set          asynq:{<q>}:retry
-- KEYS[5]  daily processed    asynq:{<q>}:processed:<YYYY-MM-DD>
-- KEYS[6]  daily failed       asynq:{<q>}:failed:<YYYY-MM-DD>
-- KEYS[7]  total processed    asynq:{<q>}:processed
-- KEYS[8]  total failed       asynq:{<q>}:failed
-- ARGV[1]  task ID
-- ARGV[2]  encoded TaskMessage with error_msg, last_failed_at and retried
--          already updated by the caller
-- ARGV[3]  retry-at time, unix s (the member's score)
-- ARGV[4]  daily key expiry, unix s (operation time + 90 days)
-- ARGV[5]  "1" when the error counts as a failure, "0" otherwise
-- ARGV[6]  "9223372036854775807" (INT64_MAX)
--
-- Returns status OK, or the error NOT FOUND when the ID is not in active or
-- not in the lease set.
--
-- The uniqueness lock is not released. When the processed total already
-- equals INT64_MAX (exact string comparison, see done.lua), both totals are
-- set to 1, which also resets the failed total. asynq v0.26.0 does the same.

if redis.call("LREM", KEYS[2], 0, ARGV[1]) == 0 then
    return redis.error_reply("NOT FOUND")
end
if redis.call("ZREM", KEYS[3], ARGV[1]) == 0 then
    return redis.error_reply("NOT FOUND")
end

redis.call("ZADD", KEYS[4], ARGV[3], ARGV[1])
redis.call("HSET", KEYS[1],
    "msg", ARGV[2],
    "state", "retry")

if tonumber(ARGV[5]) == 1 then
    if redis.call("INCR", KEYS[5]) == 1 then
        redis.call("EXPIREAT", KEYS[5], ARGV[4])
    end
    if redis.call("INCR", KEYS[6]) == 1 then
        redis.call("EXPIREAT", KEYS[6], ARGV[4])
    end
    if redis.call("GET", KEYS[7]) == ARGV[6] then
        redis.call("SET", KEYS[7], "1")
        redis.call("SET", KEYS[8], "1")
    else
        redis.call("INCR", KEYS[7])
        redis.call("INCR", KEYS[8])
    end
end

return redis.status_reply("OK")
