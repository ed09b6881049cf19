-- done_unique: delete a successfully processed or revoked task whose message
-- names a uniqueness lock, count it as processed, and release the lock if
-- this task still owns it.
--
-- KEYS[1]  active list        asynq:{<q>}:active
-- KEYS[2]  lease set          asynq:{<q>}:lease
-- KEYS[3]  task hash          asynq:{<q>}:t:<id>
-- KEYS[4]  daily processed    asynq:{<q>}:processed:<YYYY-MM-DD>
-- KEYS[5]  total processed    asynq:{<q>}:processed
-- KEYS[6]  uniqueness lock    asynq:{<q>}:unique:<type>:<md5hex>
-- ARGV[1]  task ID
-- ARGV[2]  daily key expiry, unix s (operation time + 90 days)
-- ARGV[3]  "9223372036854775807" (INT64_MAX)
--
-- Returns status OK, or the error NOT FOUND when the ID is not in active, not
-- in the lease set, or has no task hash. Writes made before the failing check
-- stay, as in asynq v0.26.0.
--
-- A lock that another task has taken since (after this one's TTL ran out) is
-- left alone. The total wraps to 1 when it already equals INT64_MAX (exact
-- string comparison, see done.lua).

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

if redis.call("GET", KEYS[6]) == ARGV[1] then
    redis.call("DEL", KEYS[6])
end

return redis.status_reply("OK")
