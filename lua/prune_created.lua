-- prune_created: drop creation-index entries whose transaction has expired.
--
-- KEYS[1]  created sorted set of the shard (score = creation time, ms)
-- KEYS[1+i]  trans hash of candidate i (i = 1 .. n)
--
-- ARGV[1]  cutoff, ms since the Unix epoch: only entries created at or before it are dropped
-- ARGV[1+i]  gid of candidate i, in the order of the keys
--
-- An entry is dropped when its score is still <= the cutoff and its trans hash no longer exists,
-- so a gid reused by a newer transaction keeps its entry.
--
-- Returns:
--   {OK, dropped}   dropped: how many entries were removed
--
-- Writes: ZREM created for each dropped entry.

local rcall = redis.call
local created_key = KEYS[1]
local cutoff = tonumber(ARGV[1])
local keys = KEYS
local args = ARGV

local OK = 1

local dropped = 0
for i = 2, #keys do
  local gid = args[i]
  local score = rcall('ZSCORE', created_key, gid)
  if score and tonumber(score) <= cutoff and rcall('EXISTS', keys[i]) == 0 then
    rcall('ZREM', created_key, gid)
    dropped = dropped + 1
  end
end
return {OK, dropped}
