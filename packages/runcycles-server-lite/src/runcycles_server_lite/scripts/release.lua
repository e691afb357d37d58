-- Release an ACTIVE reservation: the whole hold returns to every budget it charged.
--
-- KEYS: 1 tenant, 2 reservation, 3 res:exp, 4 audit log,
--       5 idempotency marker (tenant, release, key), 6 event stream
-- ARGV: 1 caller tenant, 2 idempotency_key, 3 payload hash, 4 reason or "",
--       5 actor (tenant|admin_on_behalf_of), 6 audit entry json or "", 7 retention ms,
--       8 idempotency ms, 9 event context
-- The reservation becomes its finalized record (see finalize in lib.lua).

local f = redis.call("HMGET", KEYS[2], "status", "tenant", "estimate", "unit", "budget_keys",
  "budget_scopes", "expires_at", "grace_ms", "reservation_id", "scope_path")
local status = f[1]
local fin = nil
if not status then
  fin = load_fin(fin_key_of(KEYS[2]))
  if fin then
    status = fin.status
    f[2] = ARGV[1]
  end
end
local e = owned(status, f[2], ARGV[1])
if e then return e end

if fin then
  local replay = settle_replay(redis.call("EXISTS", KEYS[5]) == 1, ARGV[3], status,
    "RELEASED", fin.settle_key, esc(ARGV[2]), fin.settle_hash, function()
      return settle_reply("RELEASED", fin.unit, fin.estimate, nil,
        bal_render(fin.settle_bal, fin.scope_path, fin.unit))
    end)
  if replay then return replay end
else
  local old = legacy_replay(KEYS[2], status, "RELEASED", "release", ARGV[2], ARGV[3])
  if old then return old end
  if redis.call("EXISTS", KEYS[5]) == 1 then return mismatch() end
end

e = active_gate(KEYS[1], status)
if e then return e end
local unit = f[4]
local estimate = dnorm(f[3] or "")
local expires_at = tonumber(f[7] or "")
local grace = tonumber(f[8] or "")
if not estimate or not expires_at or not grace then
  return err("INTERNAL_ERROR", "reservation record is malformed")
end
local now = now_ms()
if now > expires_at + grace then return err("RESERVATION_EXPIRED", "reservation has expired") end

local budgets, bscopes, berr = recorded_budgets(f[5], f[6])
if not budgets then return err("INTERNAL_ERROR", "reservation budgets are malformed: " .. berr) end
local plans = {}
for i = 1, #budgets do
  local b = budgets[i]
  plans[i] = {reserved = dsub(b.reserved, estimate), remaining = dadd(b.remaining, estimate)}
  if not check_headroom(plans[i]) then
    return err("INTERNAL_ERROR", "release would take the ledger of " .. bscopes[i] .. " out of range")
  end
end
for i = 1, #budgets do write_budget(budgets[i], plans[i], now) end
budget_events(budgets, bscopes, unit, {reservation_id = f[9], correlation = f[9]})

local body = settle_reply("RELEASED", unit, estimate, nil, balances_json(budgets, bscopes, unit))
finalize(KEYS[2], {status = "RELEASED", finalized_at = istr(now), settle_key = esc(ARGV[2]),
  settle_hash = short_hash(ARGV[3]), settle_bal = bal_compact(budgets, bscopes, f[10] or ""),
  release_reason = esc(ARGV[4]), released_by = ARGV[5]}, tonumber(ARGV[7]), tonumber(ARGV[8]))
if ARGV[6] ~= "" then redis.call("ZADD", KEYS[4], now, ARGV[6]) end
redis.call("SET", KEYS[5], "1", "PX", tonumber(ARGV[8]))
redis.call("ZREM", KEYS[3], f[9])
return ok(200, body)
