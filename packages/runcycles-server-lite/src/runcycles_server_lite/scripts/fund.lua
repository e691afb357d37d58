-- fund.lua: one admin funding operation on one budget ledger, atomically.
--
-- KEYS[1] budget hash   KEYS[2] tenant hash   KEYS[3] idempotency hash (same tenant slot)
-- KEYS[4] event stream
-- ARGV[1] operation (CREDIT | DEBIT | RESET | RESET_SPENT | REPAY_DEBT)
-- ARGV[2] amount (non-negative int64 decimal string)
-- ARGV[3] spent override for RESET_SPENT, or "" (spent becomes 0)
-- ARGV[4] request hash, or "" when the call carries no idempotency key
-- ARGV[5] idempotency record lifetime in ms
-- ARGV[6] event context (emits budget.funded / debited / reset / reset_spent / debt_repaid,
--         and budget.over_limit_entered / exited when the flag flips)
--
-- Returns {"OK"|"REPLAY", op, prev_allocated, new_allocated, prev_remaining, new_remaining,
--          prev_debt, new_debt, prev_spent, new_spent, timestamp_ms}
--      or {"ERR", code, message}.
--
-- Ledger identity kept: allocated = remaining + spent + reserved + debt. Amounts never pass
-- through a Lua number wider than 2^53: each value is split into a high part and nine low
-- digits, new values are computed and range-checked exactly before the first write, and the
-- ledger is then moved with HINCRBY by exact decimal deltas.

local B = 1000000000

local function fund_parse(s)
  s = tostring(s or "0")
  local neg = false
  if string.sub(s, 1, 1) == "-" then
    neg = true
    s = string.sub(s, 2)
  end
  local n = #s
  local lo = tonumber(string.sub(s, math.max(1, n - 8))) or 0
  local hi = 0
  if n > 9 then hi = tonumber(string.sub(s, 1, n - 9)) or 0 end
  if neg then return {-hi, -lo} end
  return {hi, lo}
end

local function fund_norm(a)
  local hi, lo = a[1], a[2]
  hi = hi + math.floor(lo / B)
  lo = lo % B
  if hi < 0 and lo > 0 then
    hi = hi + 1
    lo = lo - B
  end
  return {hi, lo}
end

local function fund_add(a, b) return fund_norm({a[1] + b[1], a[2] + b[2]}) end
local function fund_sub(a, b) return fund_norm({a[1] - b[1], a[2] - b[2]}) end

local function fund_sign(a)
  a = fund_norm(a)
  if a[1] > 0 or (a[1] == 0 and a[2] > 0) then return 1 end
  if a[1] < 0 or (a[1] == 0 and a[2] < 0) then return -1 end
  return 0
end

local function fund_cmp(a, b) return fund_sign(fund_sub(a, b)) end

local function fund_str(a)
  a = fund_norm(a)
  -- "+ 0" turns a negative zero into zero, which %.0f would print as "-0".
  local hi, lo = a[1] + 0, a[2] + 0
  if hi == 0 then return string.format("%.0f", lo) end
  if hi > 0 then return string.format("%.0f", hi) .. string.format("%09.0f", lo) end
  return "-" .. string.format("%.0f", -hi) .. string.format("%09.0f", -lo + 0)
end

local function fund_min(a, b)
  if fund_cmp(a, b) <= 0 then return a end
  return b
end

local INT64_MAX = {9223372036, 854775807}
local INT64_MIN = {-9223372036, -854775808}
local ZERO = {0, 0}

local function fund_in_range(a)
  return fund_cmp(a, INT64_MAX) <= 0 and fund_cmp(a, INT64_MIN) >= 0
end

local budget_key, tenant_key, idem_key = KEYS[1], KEYS[2], KEYS[3]
local op, amount_s, spent_s, req_hash = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local idem_ttl = tonumber(ARGV[5])

local function stored_reply(kind, rec)
  return {kind, rec[1], rec[2], rec[3], rec[4], rec[5], rec[6], rec[7], rec[8], rec[9], rec[10]}
end

local REC_FIELDS = {"operation", "prev_allocated", "new_allocated", "prev_remaining",
  "new_remaining", "prev_debt", "new_debt", "prev_spent", "new_spent", "timestamp_ms"}

-- Replay wins over every state error.
if req_hash ~= "" then
  local prior = redis.call("HGET", idem_key, "hash")
  if prior then
    if prior ~= req_hash then
      return {"ERR", "IDEMPOTENCY_MISMATCH",
        "idempotency_key was already used with a different funding request"}
    end
    return stored_reply("REPLAY", redis.call("HMGET", idem_key, unpack(REC_FIELDS)))
  end
end

local tstatus = redis.call("HGET", tenant_key, "status")
if tstatus == "CLOSED" then
  return {"ERR", "TENANT_CLOSED", "tenant is closed"}
end

local f = redis.call("HMGET", budget_key, "allocated", "remaining", "reserved", "spent", "debt",
  "overdraft_limit", "status", "is_over_limit", "ledger_id", "scope", "unit")
if not f[1] and not f[2] and not f[7] then
  return {"ERR", "BUDGET_NOT_FOUND", "budget not found"}
end
local status = f[7] or "ACTIVE"
if status == "FROZEN" then return {"ERR", "BUDGET_FROZEN", "budget is frozen"} end
if status == "CLOSED" then return {"ERR", "BUDGET_CLOSED", "budget is closed"} end

local alloc, rem, spent, debt = fund_parse(f[1]), fund_parse(f[2]), fund_parse(f[4]),
  fund_parse(f[5])
local limit = fund_parse(f[6])
local amount = fund_parse(amount_s)

local d_alloc, d_rem, d_spent, d_debt = ZERO, ZERO, ZERO, ZERO
if op == "CREDIT" then
  -- Funds added to a scope in debt repay the debt first (protocol: debt is repaid before
  -- anything becomes available); the repaid part turns from unfunded debt into funded spend.
  local repaid = fund_min(debt, amount)
  d_alloc, d_rem, d_debt, d_spent = amount, amount, fund_sub(ZERO, repaid), repaid
elseif op == "DEBIT" then
  if fund_cmp(rem, amount) < 0 then
    return {"ERR", "BUDGET_EXCEEDED", "remaining " .. fund_str(rem) ..
      " is less than the debit amount " .. fund_str(amount)}
  end
  d_alloc, d_rem = fund_sub(ZERO, amount), fund_sub(ZERO, amount)
elseif op == "RESET" then
  d_alloc = fund_sub(amount, alloc)
  d_rem = d_alloc
elseif op == "RESET_SPENT" then
  local new_spent = fund_parse(spent_s ~= "" and spent_s or "0")
  d_alloc = fund_sub(amount, alloc)
  d_spent = fund_sub(new_spent, spent)
  d_rem = fund_sub(d_alloc, d_spent)
elseif op == "REPAY_DEBT" then
  -- Reference semantics: min(debt, amount) moves from debt back into remaining; any excess
  -- is a credit to allocated.
  local repaid = fund_min(debt, amount)
  d_debt = fund_sub(ZERO, repaid)
  d_rem = amount
  d_alloc = fund_sub(amount, repaid)
else
  return {"ERR", "INVALID_REQUEST", "unknown funding operation"}
end

local n_alloc, n_rem = fund_add(alloc, d_alloc), fund_add(rem, d_rem)
local n_spent, n_debt = fund_add(spent, d_spent), fund_add(debt, d_debt)
for _, v in ipairs({n_alloc, n_rem, n_spent, n_debt}) do
  if not fund_in_range(v) then
    return {"ERR", "INVALID_REQUEST", "operation would overflow a 64-bit ledger amount"}
  end
end
if fund_sign(n_alloc) < 0 or fund_sign(n_spent) < 0 or fund_sign(n_debt) < 0 then
  return {"ERR", "INVALID_REQUEST", "operation would make allocated, spent or debt negative"}
end

-- All checks passed: write.
local t = redis.call("TIME")
local now = tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local fields = {{"allocated", d_alloc}, {"remaining", d_rem}, {"spent", d_spent},
  {"debt", d_debt}}
for _, fd in ipairs(fields) do
  if fund_sign(fd[2]) ~= 0 then
    redis.call("HINCRBY", budget_key, fd[1], fund_str(fd[2]))
  end
end
local over = "false"
if fund_cmp(n_debt, limit) > 0 then over = "true" end
redis.call("HSET", budget_key, "is_over_limit", over, "updated_at", now)

local EVENT_OF = {CREDIT = "budget.funded", DEBIT = "budget.debited", RESET = "budget.reset",
  RESET_SPENT = "budget.reset_spent", REPAY_DEBT = "budget.debt_repaid"}
local reserved = f[3] or "0"
local function state(a, r, d, sp)
  return '{"allocated":' .. fund_str(a) .. ',"remaining":' .. fund_str(r) .. ',"debt":' ..
    fund_str(d) .. ',"spent":' .. fund_str(sp) .. ',"reserved":' .. reserved .. ',"status":"' ..
    status .. '"}'
end
local scope, unit = f[10] or "", f[11] or ""
local data = '{"ledger_id":' .. jstr(f[9] or "") .. ',"scope":' .. jstr(scope) .. ',"unit":"' ..
  unit .. '","operation":"' .. op .. '","previous_state":' .. state(alloc, rem, debt, spent) ..
  ',"new_state":' .. state(n_alloc, n_rem, n_debt, n_spent)
if op == "RESET_SPENT" then
  data = data .. ',"spent_override_provided":' .. (spent_s ~= "" and "true" or "false")
end
emit(EVENT_OF[op], scope, data .. '}')
if (f[8] == "true") ~= (over == "true") then
  local limit_s = fund_str(limit)
  local body = '{"scope":' .. jstr(scope) .. ',"unit":"' .. unit .. '","debt":' .. fund_str(n_debt) ..
    ',"overdraft_limit":' .. limit_s .. ',"is_over_limit":' .. over
  if tonumber(limit_s) > 0 then
    body = body .. ',"debt_utilization":' .. num_json(tonumber(fund_str(n_debt)) / tonumber(limit_s))
  end
  emit(over == "true" and "budget.over_limit_entered" or "budget.over_limit_exited", scope, body .. '}')
end

local rec = {op, fund_str(alloc), fund_str(n_alloc), fund_str(rem), fund_str(n_rem),
  fund_str(debt), fund_str(n_debt), fund_str(spent), fund_str(n_spent), now}
if req_hash ~= "" then
  local args = {"hash", req_hash}
  for i, name in ipairs(REC_FIELDS) do
    args[#args + 1] = name
    args[#args + 1] = rec[i]
  end
  redis.call("HSET", idem_key, unpack(args))
  redis.call("PEXPIRE", idem_key, idem_ttl)
end
return stored_reply("OK", rec)
