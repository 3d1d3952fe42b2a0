-- claim_due: lease a batch of due transactions of one shard to the calling replica.
--
-- KEYS[1]  due sorted set of the shard (score = next attention time, ms)
-- KEYS[1+i]  trans hash of candidate i (i = 1 .. n)
--
-- ARGV[1]  now, ms since the Unix epoch
-- ARGV[2]  lease expiry, ms since the Unix epoch (the new due score of a claimed transaction)
-- ARGV[3]  owner, the id of the claiming replica
-- ARGV[3+i]  gid of candidate i, in the order of the key pairs
--
-- A candidate is claimed when its due score is still <= now and it is unfinished.
-- A candidate that no longer needs attention (its trans hash is gone, or it is finished) has its
-- due entry removed. A candidate that is no longer due is skipped untouched.
--
-- The reply holds no records, so its size does not depend on what the transactions hold; the
-- caller reads each claimed transaction on its own, and one it cannot read stops no other.
--
-- Returns:
--   {OK, next_due, gid_1, epoch_1, ...}
--     next_due: the lowest due score left in the shard after claiming (ms), or -1 when empty
--     gid_i, epoch_i: each claimed transaction and the epoch it is now leased at
--
-- Writes: per claimed transaction HINCRBY epoch, HSET owner and next_ms, ZADD due (lease expiry).
--         per candidate that needs no attention, ZREM due.

local rcall = redis.call
local due_key = KEYS[1]
local now_ms = tonumber(ARGV[1])
local lease_until = ARGV[2]
local owner = ARGV[3]
local keys = KEYS
local args = ARGV

local OK = 1

local reply = {OK, -1}
local n = #keys - 1
for i = 1, n do
  local trans_key = keys[1 + i]
  local gid = args[3 + i]
  local score = rcall('ZSCORE', due_key, gid)
  if score and tonumber(score) <= now_ms then
    local status = rcall('HGET', trans_key, 'status')
    if not status or status == 'succeed' or status == 'failed' then
      rcall('ZREM', due_key, gid)
    else
      local epoch = rcall('HINCRBY', trans_key, 'epoch', 1)
      rcall('HSET', trans_key, 'owner', owner, 'next_ms', lease_until)
      rcall('ZADD', due_key, lease_until, gid)
      reply[#reply + 1] = gid
      reply[#reply + 1] = epoch
    end
  end
end
local head = rcall('ZRANGE', due_key, 0, 0, 'WITHSCORES')
if head[2] then
  reply[2] = tonumber(head[2])
end
return reply
