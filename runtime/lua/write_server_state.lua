-- write_server_state: store this server's ServerInfo and replace its workers
-- hash (one heartbeat).
--
-- KEYS[1]  server key   asynq:servers:{<host>:<pid>:<server ID>}
-- KEYS[2]  workers key  asynq:workers:{<host>:<pid>:<server ID>}
-- ARGV[1]  TTL of both keys, whole seconds (at least 1)
-- ARGV[2]  encoded ServerInfo
-- ARGV[3], ARGV[4], ...  pairs of task ID and encoded WorkerInfo, one pair
--          per in-flight task
--
-- Returns status OK. With no pairs the workers hash is deleted and not
-- recreated, as in asynq v0.26.0.

if #ARGV < 2 or #ARGV % 2 ~= 0 then
    return redis.error_reply("write_server_state: got " .. #ARGV ..
        " arguments: pass the TTL, the ServerInfo, then task ID and " ..
        "WorkerInfo pairs")
end

redis.call("SETEX", KEYS[1], ARGV[1], ARGV[2])
redis.call("DEL", KEYS[2])

for i = 3, #ARGV, 2 do
    redis.call("HSET", KEYS[2], ARGV[i], ARGV[i + 1])
end

redis.call("EXPIRE", KEYS[2], ARGV[1])
return redis.status_reply("OK")
