-- dequeue: move up to a maximum number of task IDs from pending to active,
-- trying the queues in the order the caller lists them.
--
-- KEYS come in groups of four per queue, in the caller's queue order:
-- KEYS[4i-3]  pending list  asynq:{<q>}:pending
-- KEYS[4i-2]  paused flag   asynq:{<q>}:paused
-- KEYS[4i-1]  active list   asynq:{<q>}:active
-- KEYS[4i]    lease set     asynq:{<q>}:lease
-- ARGV[1]     lease expiry, unix s (the score written to the lease set)
-- ARGV[2]     maximum number of task IDs to take in this call (at least 1)
-- ARGV[i+2]   task key prefix asynq:{<q>}:t: of queue i
--
-- A paused queue is skipped. Each queue is drained from the right end of its
-- pending list until the maximum is reached or the list is empty, and then
-- the next queue is tried. For every ID moved, the task hash gets
-- state=active and loses pending_since, and the lease set gets the ID with
-- the lease expiry as score.
--
-- Returns a flat array of quadruples: queue index (1-based, in KEYS order),
-- task ID, encoded TaskMessage, and the pending_since field the hash had
-- (unix ns as stored, or nil when it had none, as after a requeue). The
-- array is empty when no queue had a task. pending_since is returned so that
-- the server can measure how long each task waited in pending.
--
-- An ID whose hash has no msg field (usually because the hash is gone) is
-- removed from active again, gets no lease and no hash write, and is
-- returned with a nil msg so that the caller can log it. It counts towards
-- the maximum, which bounds the work of one call. asynq v0.26.0 instead
-- leaves such an ID in active with a lease and creates a hash holding only
-- state, which its recoverer then skips forever.

local lease_expiry = ARGV[1]
local max_tasks = tonumber(ARGV[2])
local queue_count = #ARGV - 2

if max_tasks == nil or max_tasks < 1 then
    return redis.error_reply("dequeue: invalid maximum task count '" ..
        tostring(ARGV[2]) .. "': pass an integer of at least 1")
end
if queue_count < 1 or #KEYS ~= 4 * queue_count then
    return redis.error_reply("dequeue: got " .. #KEYS .. " keys and " ..
        queue_count .. " task key prefixes: pass 4 keys per queue " ..
        "(pending, paused, active, lease) and one prefix per queue")
end

local result = {}
local dequeued_count = 0

for queue = 1, queue_count do
    if dequeued_count >= max_tasks then
        break
    end

    local base = 4 * (queue - 1)
    local pending = KEYS[base + 1]
    local paused = KEYS[base + 2]
    local active = KEYS[base + 3]
    local lease = KEYS[base + 4]
    local task_key_prefix = ARGV[queue + 2]

    if redis.call("EXISTS", paused) == 0 then
        -- One RPOP with a count and one LPUSH leave pending and active as
        -- the same number of RPOPLPUSH calls would: LPUSH adds its
        -- arguments one after another at the head. Redis before 6.2 has no
        -- count argument, and the pcall falls back to RPOPLPUSH there. A
        -- pending key of the wrong type fails that RPOPLPUSH in turn.
        local ids = redis.pcall("RPOP", pending, max_tasks - dequeued_count)
        if type(ids) == "table" and ids.err then
            ids = {}
            while dequeued_count + #ids < max_tasks do
                local id = redis.call("RPOPLPUSH", pending, active)
                if not id then
                    break
                end
                ids[#ids + 1] = id
            end
        elseif ids then
            local pushed = redis.pcall("LPUSH", active, unpack(ids))
            if type(pushed) == "table" and pushed.err then
                -- The active key has the wrong type. RPOPLPUSH would fail
                -- before taking anything, so the IDs go back to the right
                -- end of pending in their old order before the error.
                local back = {}
                for i = #ids, 1, -1 do
                    back[#back + 1] = ids[i]
                end
                redis.call("RPUSH", pending, unpack(back))
                return redis.error_reply(pushed.err)
            end
        else
            ids = {}
        end

        -- The leases of this queue's tasks go out in one ZADD below.
        local leased = {}
        for _, id in ipairs(ids) do
            dequeued_count = dequeued_count + 1

            local task_key = task_key_prefix .. id
            local fields = redis.call("HMGET", task_key, "msg", "pending_since")
            local msg = fields[1]
            if msg then
                redis.call("HSET", task_key, "state", "active")
                redis.call("HDEL", task_key, "pending_since")
                leased[#leased + 1] = lease_expiry
                leased[#leased + 1] = id
            else
                -- The ID was pushed at the head of active just now, so the
                -- first match from the head is that copy.
                redis.call("LREM", active, 1, id)
            end

            result[#result + 1] = queue
            result[#result + 1] = id
            result[#result + 1] = msg
            result[#result + 1] = fields[2]
        end
        if #leased > 0 then
            redis.call("ZADD", lease, unpack(leased))
        end
    end
end

return result
