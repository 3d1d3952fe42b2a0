-- check_adjust_amount: adds an amount to an integer business key, guarded by
-- the sub-transaction barrier of one branch request.
--
-- KEYS[1]  business key holding an integer (for example a balance)
-- KEYS[2]  barrier key of this request's (gid, branch_id, op, barrier_id)
-- KEYS[3]  barrier key of the origin op (try for cancel, action for
--          compensate and rollback); equal to KEYS[2] when there is none
-- ARGV[1]  amount to add (integer, may be negative)
-- ARGV[2]  op of this request (text stored in the barrier key)
-- ARGV[3]  "1" when the op has an origin op, else "0"
-- ARGV[4]  barrier key lifetime, seconds
--
-- Returns:
--   0  adjusted
--   1  duplicate: this request ran before (or its cancel/compensate already
--      ran: hanging); nothing written
--   2  null compensation: the origin op never ran; barrier keys written so
--      it never will, amount unchanged
--   3  failure: the business key is missing or would go negative; nothing
--      written
--
-- Writes: KEYS[2] (and KEYS[3] on null compensation) with EX ARGV[4];
-- KEYS[1] by INCRBY.
local rcall = redis.call
local business_key = KEYS[1]
local current_key = KEYS[2]
local origin_key = KEYS[3]
local amount = tonumber(ARGV[1])
local op = ARGV[2]
local has_origin = ARGV[3] == "1"
local expire_s = tonumber(ARGV[4])

if rcall('EXISTS', current_key) == 1 then
  return 1
end
if has_origin and rcall('EXISTS', origin_key) == 0 then
  rcall('SET', origin_key, 'rollback', 'EX', expire_s)
  rcall('SET', current_key, op, 'EX', expire_s)
  return 2
end
local value = rcall('GET', business_key)
if value == false or tonumber(value) + amount < 0 then
  return 3
end
rcall('SET', current_key, op, 'EX', expire_s)
rcall('INCRBY', business_key, amount)
return 0
