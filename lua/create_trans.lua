-- create_trans: store a new global transaction with its branches, unless the gid is taken.
--
-- KEYS[1]  trans hash of the transaction (<prefix>:{s<shard>}:t:<gid>)
-- KEYS[2]  branches hash of the transaction (<prefix>:{s<shard>}:b:<gid>)
-- KEYS[3]  due sorted set of the shard (score = next attention time, ms)
-- KEYS[4]  created sorted set of the shard (score = creation time, ms)
--
-- ARGV[1]  gid
-- ARGV[2]  now, ms since the Unix epoch (the creation time)
-- ARGV[3]  due time, ms; "" when the transaction is not scheduled
-- ARGV[4]  n, the number of trans hash field/value pairs that follow
-- ARGV[5 .. 4+2n]  trans hash field/value pairs (must include status and kind)
-- ARGV[5+2n ..]    branches hash field/value pairs
--
-- Returns:
--   {OK}                     created
--   {EXISTS, status, kind}   the gid is taken; nothing written
--
-- Writes: HSET trans and branches, ZADD created (now), ZADD due (due time) when given.

local rcall = redis.call
local trans_key = KEYS[1]
local branches_key = KEYS[2]
local due_key = KEYS[3]
local created_key = KEYS[4]
local gid = ARGV[1]
local now_ms = tonumber(ARGV[2])
local due_ms = ARGV[3]
local n_fields = tonumber(ARGV[4])
local args = ARGV

local OK, EXISTS = 1, 2

-- HSET args[from .. to] in chunks: Lua's unpack is limited to a few thousand values
local function hset_range(key, from, to)
  for i = from, to, 1000 do
    rcall('HSET', key, unpack(args, i, math.min(i + 999, to)))
  end
end

if rcall('EXISTS', trans_key) == 1 then
  local current = rcall('HMGET', trans_key, 'status', 'kind')
  return {EXISTS, current[1], current[2]}
end

local trans_end = 4 + 2 * n_fields
hset_range(trans_key, 5, trans_end)
if #args > trans_end then
  hset_range(branches_key, trans_end + 1, #args)
end
rcall('ZADD', created_key, now_ms, gid)
if due_ms ~= '' then
  rcall('ZADD', due_key, tonumber(due_ms), gid)
end
return {OK}
