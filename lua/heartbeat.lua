-- heartbeat: keep the calling replica in the deployment's replica set, or take it out, and
-- reply who is alive.
--
-- KEYS[1]  replica set of the deployment (sorted set, member = replica id, score = alive until, ms)
--
-- ARGV[1]  now, ms since the Unix epoch: members alive until before it are dropped
-- ARGV[2]  alive until, ms since the Unix epoch; empty: the replica leaves the set
-- ARGV[3]  id of the calling replica
--
-- Members whose time ran out (score < now) are dropped first, so a replica that died without
-- leaving is forgotten once its last heartbeat lapses. The caller sorts the ids, so every
-- replica that reads the same set computes the same shares.
--
-- Returns:
--   {OK, id_1, id_2, ...}   every replica alive at now (in score order), the caller included
--                           unless it left
--
-- Writes: ZREMRANGEBYSCORE of lapsed members; ZADD of the caller (or ZREM when it leaves).

local rcall = redis.call
local replicas_key = KEYS[1]
local now_ms = ARGV[1]
local alive_until = ARGV[2]
local id = ARGV[3]

local OK = 1

rcall('ZREMRANGEBYSCORE', replicas_key, '-inf', '(' .. now_ms)
if alive_until == '' then
  rcall('ZREM', replicas_key, id)
else
  rcall('ZADD', replicas_key, alive_until, id)
end
local reply = {OK}
for _, member in ipairs(rcall('ZRANGE', replicas_key, 0, -1)) do
  reply[#reply + 1] = member
end
return reply
