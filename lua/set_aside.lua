-- set_aside: take a transaction no replica can decode out of the schedule, recording why.
--
-- Only the replica that claimed it (at this epoch) may set it aside, so a record repaired and
-- claimed again meanwhile is left alone. The transaction's own keys are not touched: an operator
-- can read them, repair them and make the transaction due again (resetNextCronTime).
--
-- KEYS[1]  due sorted set of the shard (score = next attention time, ms)
-- KEYS[2]  trans hash of the transaction
-- KEYS[3]  set-aside hash of the shard (field = gid, value = "<ms>\t<error>")
--
-- ARGV[1]  gid
-- ARGV[2]  epoch the caller claimed it with
-- ARGV[3]  now, ms since the Unix epoch
-- ARGV[4]  why it cannot be decoded
--
-- Returns:
--   {OK}                  set aside
--   {STALE_EPOCH, epoch}  claimed again since (or gone: epoch ""); nothing written
--
-- Writes: ZREM due; HSET set-aside hash.

local rcall = redis.call
local due_key = KEYS[1]
local trans_key = KEYS[2]
local aside_key = KEYS[3]
local gid = ARGV[1]
local epoch = ARGV[2]
local now_ms = ARGV[3]
local why = ARGV[4]

local OK, STALE_EPOCH = 1, 5

local current = rcall('HGET', trans_key, 'epoch')
if current ~= epoch then
  return {STALE_EPOCH, current or ''}
end
rcall('ZREM', due_key, gid)
rcall('HSET', aside_key, gid, now_ms .. '\t' .. why)
return {OK}
