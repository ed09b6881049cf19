-- done_batch: the done operation for several tasks of one queue in one
-- call, so a busy server pays the per-call cost of a script once per batch
-- instead of once per task. Each task gets exactly the effects of done and
-- done_unique, in the order given.
--
-- KEYS[1]  active list        asynq:{<q>}:active
-- KEYS[2]  lease set          asynq:{<q>}:lease
-- KEYS[3]  daily processed    asynq:{<q>}:processed:<YYYY-MM-DD>
-- KEYS[4]  total processed    asynq:{<q>}:processed
-- KEYS[5..4+n]  the task hash of each task, asynq:{<q>}:t:<id>
-- KEYS[5+n..]   the uniqueness keys named by the tasks that have one
-- ARGV[1]  daily key expiry, unix s (operation time + 90 days)
-- ARGV[2]  "9223372036854775807" (INT64_MAX)
-- ARGV[3]  n, the number of tasks
-- ARGV[4..] two entries per task: its ID, then the KEYS index of its
--          uniqueness key, or 0 when it has none
--
-- Returns an array of n integers: 1 when the task was done, 0 when it was
-- not in active, not in the lease set or had no task hash (done's NOT
-- FOUND). As with done, writes made before the failing check stay.

local n = tonumber(ARGV[3])
if n == nil or n < 1 or #ARGV ~= 3 + 2 * n or #KEYS < 4 + n then
    return redis.error_reply("done_batch: bad argument count")
end

local results = {}
local done = 0
for i = 1, n do
    local id = ARGV[2 + 2 * i]
    local unique = tonumber(ARGV[3 + 2 * i])
    local ok = redis.call("LREM", KEYS[1], 0, id) ~= 0
        and redis.call("ZREM", KEYS[2], id) ~= 0
        and redis.call("DEL", KEYS[4 + i]) ~= 0
    if ok then
        if unique ~= nil and unique > 0 and
            redis.call("GET", KEYS[unique]) == id then
            redis.call("DEL", KEYS[unique])
        end
        done = done + 1
        results[i] = 1
    else
        results[i] = 0
    end
end

-- The counters move once for the whole batch. The daily key was created
-- by this call when INCRBY returns the batch size, which is when done
-- sets its expiry. The total takes one INCRBY unless that would pass
-- INT64_MAX; then each increment is applied as done applies it, wrapping
-- to 1 at INT64_MAX.
if done > 0 then
    if redis.call("INCRBY", KEYS[3], done) == done then
        redis.call("EXPIREAT", KEYS[3], ARGV[1])
    end
    local added = redis.pcall("INCRBY", KEYS[4], done)
    if type(added) == "table" and added.err then
        for _ = 1, done do
            if redis.call("GET", KEYS[4]) == ARGV[2] then
                redis.call("SET", KEYS[4], "1")
            else
                redis.call("INCR", KEYS[4])
            end
        end
    end
end
return results
