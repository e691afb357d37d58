-- Commit the actual amount of an ACTIVE reservation.
--
-- KEYS: 1 tenant, 2 reservation, 3 res:exp, 4 idempotency marker (tenant, commit, key),
--       5 event stream
-- ARGV: 1 caller tenant, 2 actual, 3 unit, 4 idempotency_key, 5 payload hash,
--       6 metrics json or "", 7 metadata json or "", 8 retention ms, 9 idempotency ms,
--       10 event context
-- Emits reservation.commit_overage when actual > estimate, and the budgets' transitions.
-- The reservation becomes its finalized record (see finalize in lib.lua).

local actual = ARGV[2]
if not is_amount(actual) then return err("INVALID_REQUEST", "actual.amount must be an int64 >= 0") end
actual = dnorm(actual)

local f = redis.call("HMGET", KEYS[2], "status", "tenant", "estimate", "unit", "budget_keys",
  "budget_scopes", "overage_policy", "expires_at", "grace_ms", "reservation_id", "scope_path")
local status = f[1]
local fin = nil
if not status then
  -- Finalized (or never existed): the tenant is the key's own (runtime.py checked the id).
  fin = load_fin(fin_key_of(KEYS[2]))
  if fin then
    status = fin.status
    f[2] = ARGV[1]
  end
end
local e = owned(status, f[2], ARGV[1])
if e then return e end

-- The key is unique per (tenant, commit): reused on another reservation it is a mismatch
-- (the payload hash binds the reservation id).
if fin then
  local replay = settle_replay(redis.call("EXISTS", KEYS[4]) == 1, ARGV[5], status,
    "COMMITTED", fin.settle_key, esc(ARGV[4]), fin.settle_hash, function()
      return settle_reply("COMMITTED", fin.unit, fin.estimate, fin.charged,
        bal_render(fin.settle_bal, fin.scope_path, fin.unit))
    end)
  if replay then return replay end
else
  local old = legacy_replay(KEYS[2], status, "COMMITTED", "commit", ARGV[4], ARGV[5])
  if old then return old end
  if redis.call("EXISTS", KEYS[4]) == 1 then return mismatch() end
end

e = active_gate(KEYS[1], status)
if e then return e end
local unit = f[4]
if ARGV[3] ~= unit then
  return err("UNIT_MISMATCH", "actual.unit " .. ARGV[3] .. " differs from the reserved unit " .. unit,
    '{"requested_unit":"' .. ARGV[3] .. '","expected_units":["' .. unit .. '"]}')
end
local estimate = dnorm(f[3] or "")
local expires_at = tonumber(f[8] or "")
local grace = tonumber(f[9] or "")
if not estimate or not expires_at or not grace then
  return err("INTERNAL_ERROR", "reservation record is malformed")
end
local now = now_ms()
if now > expires_at + grace then return err("RESERVATION_EXPIRED", "reservation has expired") end

local budgets, bscopes, berr = recorded_budgets(f[5], f[6])
if not budgets then return err("INTERNAL_ERROR", "reservation budgets are malformed: " .. berr) end

local plans, charged = {}, actual
if dcmp(actual, estimate) <= 0 then
  local back = dsub(estimate, actual)
  for i = 1, #budgets do
    local b = budgets[i]
    plans[i] = {reserved = dsub(b.reserved, estimate), remaining = dadd(b.remaining, back),
      spent = dadd(b.spent, actual)}
  end
elseif f[7] == "REJECT" then
  -- Any overage is refused under REJECT, funds or not; the reservation stays ACTIVE.
  return err("BUDGET_EXCEEDED", "actual exceeds the reservation and the overage policy is REJECT")
else
  local plan, extra = settle_overage(budgets, dsub(actual, estimate), f[7])
  if not plan then
    if extra == "BUDGET_EXCEEDED" then
      return err("BUDGET_EXCEEDED", "actual exceeds the reservation and the overage policy is REJECT")
    end
    return err(extra, "overage would exceed the overdraft limit")
  end
  charged = dadd(estimate, extra)
  for i = 1, #budgets do
    local b, p = budgets[i], plan[i]
    p.reserved = dsub(b.reserved, estimate)
    p.spent = dadd(p.spent, estimate)
    plans[i] = p
  end
end
for i = 1, #budgets do
  if not check_headroom(plans[i]) then
    return err("INTERNAL_ERROR", "commit would take the ledger of " .. bscopes[i] .. " out of range")
  end
end
for i = 1, #budgets do write_budget(budgets[i], plans[i], now) end
local rid = f[10]
if dcmp(actual, estimate) > 0 then
  local debt = "0"
  for i = 1, #budgets do
    local d = dsub(budgets[i].debt, budgets[i].prev.debt)
    if dcmp(d, debt) > 0 then debt = d end
  end
  local leaf = bscopes[#bscopes] or ""
  emit("reservation.commit_overage", leaf, '{"reservation_id":' .. jstr(rid) .. ',"scope":' ..
    jstr(leaf) .. ',"unit":"' .. unit .. '","estimated_amount":' .. estimate ..
    ',"actual_amount":' .. actual .. ',"overage":' .. dsub(actual, estimate) ..
    ',"overage_policy":"' .. f[7] .. '","debt_incurred":' .. debt .. '}', rid)
end
budget_events(budgets, bscopes, unit, {reservation_id = rid, policy = f[7], correlation = rid})

local body = settle_reply("COMMITTED", unit, estimate, charged, balances_json(budgets, bscopes, unit))
finalize(KEYS[2], {status = "COMMITTED", finalized_at = istr(now), charged = charged,
  committed_metadata_json = ARGV[7], settle_key = esc(ARGV[4]), settle_hash = short_hash(ARGV[5]),
  settle_bal = bal_compact(budgets, bscopes, f[11] or "")}, tonumber(ARGV[8]),
  tonumber(ARGV[9]))
redis.call("SET", KEYS[4], "1", "PX", tonumber(ARGV[9]))
redis.call("ZREM", KEYS[3], rid)
return ok(200, body)
