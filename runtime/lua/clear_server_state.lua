-- clear_server_state: delete this server's ServerInfo key and workers hash
-- (on shutdown).
--
-- KEYS[1]  server key   asynq:servers:{<host>:<pid>:<server ID>}
-- KEYS[2]  workers key  asynq:workers:{<host>:<pid>:<server ID>}
--
-- Returns status OK, also when the keys were already gone. The caller removes
-- the two names from asynq:servers and asynq:workers separately, because
-- those sets are global keys in another cluster slot.

redis.call("DEL", KEYS[1])
redis.call("DEL", KEYS[2])
return redis.status_reply("OK")
