-- reset_due: make unfinished transactions due now (resetCronTime, resetNextCronTime).
--
-- KEYS[1]  due sorted set of the shard (score = next attention time, ms)
-- KEYS[1+i]  trans hash of candidate i (i = 1 .. n)
--
-- ARGV[1]  now, ms since the Unix epoch (the new due score)
-- ARGV[2]  floor, ms: only candidates whose due score is above it are reset; "" resets any
--          unfinished candidate, scheduled or not
-- ARGV[2+i]  gid of candidate i, in the order of the keys
--
-- A candidate whose lease is live (an owner is set and its due score, the lease expiry, is after
-- now) is left alone: a replica is driving it right now.
--
-- Returns:
--   {OK, reset}   reset: how many candidates were made due now
--
-- Writes: ZADD due (now) and HSET trans next_ms for each candidate reset.

local rcall = redis.call
local due_key = KEYS[1]
local now_ms = ARGV[1]
local floor = ARGV[2]
local keys = KEYS
local args = ARGV

local OK = 1

local reset = 0
for i = 2, #keys do
  local gid = args[i + 1]
  local current = rcall('HMGET', keys[i], 'status', 'owner')
  local status, owner = current[1], current[2]
  if status and status ~= 'succeed' and status ~= 'failed' then
    local score = rcall('ZSCORE', due_key, gid)
    local leased = owner and owner ~= '' and score and tonumber(score) > tonumber(now_ms)
    if not leased and (floor == '' or (score and tonumber(score) > tonumber(floor))) then
      rcall('ZADD', due_key, now_ms, gid)
      rcall('HSET', keys[i], 'next_ms', now_ms)
      reset = reset + 1
    end
  end
end
return {OK, reset}
