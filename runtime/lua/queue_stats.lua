-- queue_stats: read the statistics of one queue for the metrics endpoint,
-- the numbers that asynq v0.26.0's Inspector reports for a queue
-- (internal/rdb/inspect.go, CurrentStats and memoryUsage) and that asynq's
-- x/metrics exporter publishes. The script only reads.
--
-- KEYS[1]   pending list     asynq:{<q>}:pending
-- KEYS[2]   active list      asynq:{<q>}:active
-- KEYS[3]   scheduled set    asynq:{<q>}:scheduled
-- KEYS[4]   retry set        asynq:{<q>}:retry
-- KEYS[5]   archived set     asynq:{<q>}:archived
-- KEYS[6]   completed set    asynq:{<q>}:completed
-- KEYS[7]   processed total  asynq:{<q>}:processed
-- KEYS[8]   failed total     asynq:{<q>}:failed
-- KEYS[9]   paused flag      asynq:{<q>}:paused
-- KEYS[10]  group names      asynq:{<q>}:groups
-- ARGV[1]   task key prefix  asynq:{<q>}:t:
-- ARGV[2]   group key prefix asynq:{<q>}:g:
-- ARGV[3]   task hashes sampled per list or set for the memory estimate
-- ARGV[4]   groups sampled for the memory estimate
--
-- Returns 13 values in this order: pending, active, scheduled, retry,
-- archived, completed, processed total, failed total, paused (0 or 1),
-- number of groups and aggregating tasks. Then come the pending_since
-- field of the next pending task (unix ns, as stored, or nil) and the
-- memory estimate in bytes. The two totals and pending_since are returned
-- as the strings stored, because a Lua number has only 53 bits of
-- precision.
--
-- Memory estimate: for each of active, pending, scheduled, retry, archived
-- and completed (asynq's order), the mean MEMORY USAGE of up to ARGV[3]
-- task hashes from the start of the container, times the container's
-- length, plus the MEMORY USAGE of the container key itself; then the same
-- over up to ARGV[3] tasks of each of the first ARGV[4] groups, times the
-- number of aggregating tasks. asynq v0.26.0's script fails when a sampled
-- ID has no task hash; this one leaves such IDs out of the mean. With no
-- hash missing it adds the same numbers in the same order, so the result
-- equals the Inspector's.

local task_prefix = ARGV[1]
local group_prefix = ARGV[2]
local sample_size = tonumber(ARGV[3])
local group_sample_size = tonumber(ARGV[4])

if sample_size == nil or sample_size < 1 or group_sample_size == nil or
    group_sample_size < 0 then
    return redis.error_reply("queue_stats: invalid sample sizes '" ..
        tostring(ARGV[3]) .. "' and '" .. tostring(ARGV[4]) ..
        "': pass a task sample of at least 1 and a group sample of at " ..
        "least 0")
end

-- Sums MEMORY USAGE over the task hashes of ids that exist. Returns the sum
-- and how many existed.
local function sample_tasks(ids)
    local total = 0
    local found = 0
    for _, id in ipairs(ids) do
        local bytes = redis.call("MEMORY", "USAGE", task_prefix .. id)
        if bytes then
            total = total + bytes
            found = found + 1
        end
    end
    return total, found
end

local counts = {}
counts[1] = redis.call("LLEN", KEYS[1])
counts[2] = redis.call("LLEN", KEYS[2])
for i = 3, 6 do
    counts[i] = redis.call("ZCARD", KEYS[i])
end

local processed = redis.call("GET", KEYS[7]) or "0"
local failed = redis.call("GET", KEYS[8]) or "0"
local paused = redis.call("EXISTS", KEYS[9])

local oldest_pending_since = false
if counts[1] > 0 then
    local next_id = redis.call("LINDEX", KEYS[1], -1)
    if next_id then
        oldest_pending_since = redis.call("HGET", task_prefix .. next_id,
            "pending_since")
    end
end

local groups = redis.call("SMEMBERS", KEYS[10])
local aggregating = 0
local group_sample_total = 0
local group_sample_found = 0
for i, name in ipairs(groups) do
    local group_key = group_prefix .. name
    aggregating = aggregating + redis.call("ZCARD", group_key)
    if i <= group_sample_size then
        local total, found = sample_tasks(redis.call("ZRANGE", group_key, 0,
            sample_size - 1))
        group_sample_total = group_sample_total + total
        group_sample_found = group_sample_found + found
    end
end

-- Containers in asynq's order: active and pending first, then the sets.
local memory = 0
local order = {2, 1, 3, 4, 5, 6}
for _, i in ipairs(order) do
    local ids
    if i <= 2 then
        ids = redis.call("LRANGE", KEYS[i], 0, sample_size - 1)
    else
        ids = redis.call("ZRANGE", KEYS[i], 0, sample_size - 1)
    end
    local total, found = sample_tasks(ids)
    if found > 0 then
        memory = memory + (total / found) * counts[i]
    end
    local own = redis.call("MEMORY", "USAGE", KEYS[i])
    if own then
        memory = memory + own
    end
end
if group_sample_found > 0 then
    memory = memory + (group_sample_total / group_sample_found) * aggregating
end

return {counts[1], counts[2], counts[3], counts[4], counts[5], counts[6],
    processed, failed, paused, #groups, aggregating, oldest_pending_since,
    memory}
