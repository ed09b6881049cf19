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

-- asynq's done checks three things in turn, and a task failing one keeps
-- the writes of the checks before it. Here each check runs for the whole
-- batch at once, with as few calls as possible. First LREM runs for every
-- task, then the lease set and the task hashes of the tasks that passed
-- are each checked before they are changed, which leaves the same state.
local ids = {}
local in_active = {}
for i = 1, n do
    ids[i] = ARGV[2 + 2 * i]
    if redis.call("LREM", KEYS[1], 0, ids[i]) ~= 0 then
        in_active[#in_active + 1] = i
    end
end

-- ZMSCORE returns the lease of each, or nil. Redis before 6.2 lacks it, so
-- the pcall then falls back to one ZREM per task.
local leased = {}
if #in_active > 0 then
    local members = {}
    for j, i in ipairs(in_active) do
        members[j] = ids[i]
    end
    local scores = redis.pcall("ZMSCORE", KEYS[2], unpack(members))
    if type(scores) == "table" and scores.err then
        for _, i in ipairs(in_active) do
            if redis.call("ZREM", KEYS[2], ids[i]) ~= 0 then
                leased[#leased + 1] = i
            end
        end
    else
        local remove = {}
        for j, i in ipairs(in_active) do
            if scores[j] then
                leased[#leased + 1] = i
                remove[#remove + 1] = ids[i]
            end
        end
        if #remove > 0 then
            redis.call("ZREM", KEYS[2], unpack(remove))
        end
    end
end

-- One EXISTS counts the task hashes. When all exist, one DEL removes them.
-- Otherwise each is deleted on its own to learn which one was missing.
local found = {}
if #leased > 0 then
    local keys = {}
    for j, i in ipairs(leased) do
        keys[j] = KEYS[4 + i]
    end
    if redis.call("EXISTS", unpack(keys)) == #keys then
        redis.call("DEL", unpack(keys))
        found = leased
    else
        for _, i in ipairs(leased) do
            if redis.call("DEL", KEYS[4 + i]) ~= 0 then
                found[#found + 1] = i
            end
        end
    end
end

local results = {}
for i = 1, n do
    results[i] = 0
end
local done = #found
for _, i in ipairs(found) do
    local unique = tonumber(ARGV[3 + 2 * i])
    if unique ~= nil and unique > 0 and
        redis.call("GET", KEYS[unique]) == ids[i] then
        redis.call("DEL", KEYS[unique])
    end
    results[i] = 1
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
