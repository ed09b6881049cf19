-- rate_limit: admission check of casynq's limiter (runtime/limiter.c).
-- Counts a queue's backlog against a cap, then checks GCRA rate limit
-- budgets and, only when every one of them passes, consumes one unit of
-- each. A rejection writes nothing.
--
-- KEYS[1..n]       budget keys, casynq:rl:{<limit name>}[:<caller key>];
--                  each contains its theoretical arrival time (TAT) in unix
--                  microseconds, as text
-- KEYS[n+1..n+3]   when ARGV[2] > 0: asynq:{<q>}:pending, :scheduled and
--                  :retry
-- ARGV[1]          n, the number of budgets (0 for a backlog count alone)
-- ARGV[2]          backlog cap, or 0 for none
-- ARGV[1 + 2i]     emission interval T of budget i, in microseconds
-- ARGV[2 + 2i]     tolerance (burst - 1) * T of budget i, in microseconds
--
-- Returns {0} when admitted, {1, i, wait_us} when budget i has the longest
-- wait among those that reject, or {2, backlog} when the backlog is at or
-- above the cap.
--
-- Time comes from the server (TIME), so every client shares one clock.
-- Redis before 5.0 replicates scripts verbatim and refuses a write after
-- TIME unless the script switches to effects replication first; later
-- versions always replicate effects.

if redis.replicate_commands ~= nil then
    redis.replicate_commands()
end

local n = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])

if cap > 0 then
    local backlog = redis.call("LLEN", KEYS[n + 1])
        + redis.call("ZCARD", KEYS[n + 2])
        + redis.call("ZCARD", KEYS[n + 3])
    if backlog >= cap then
        return {2, backlog}
    end
end
if n == 0 then
    return {0}
end

local time = redis.call("TIME")
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tats = {}
local worst = 0
local worst_wait = 0

for i = 1, n do
    local tolerance = tonumber(ARGV[2 + 2 * i])
    local stored = redis.call("GET", KEYS[i])
    local tat = now
    if stored then
        tat = math.max(tonumber(stored), now)
    end
    local wait = tat - tolerance - now
    if wait > worst_wait then
        worst = i
        worst_wait = wait
    end
    tats[i] = tat + tonumber(ARGV[1 + 2 * i])
end
if worst > 0 then
    return {1, worst, math.ceil(worst_wait)}
end

-- Each key expires when its budget is full again, so idle keys vanish.
-- "%.3f" keeps every bit of the TAT, which a plain tostring (14
-- significant digits) would round to 100 microseconds.
for i = 1, n do
    local ttl_ms = math.ceil((tats[i] - now) / 1000)
    redis.call("SET", KEYS[i], string.format("%.3f", tats[i]), "PX", ttl_ms)
end
return {0}
