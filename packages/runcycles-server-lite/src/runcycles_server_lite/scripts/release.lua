-- Release an ACTIVE reservation: the whole hold returns to every budget it charged.
--
-- KEYS: 1 tenant, 2 reservation, 3 res:exp, 4 audit log,
--       5 idempotency record (tenant, release, key), 6 event stream
-- ARGV: 1 caller tenant, 2 idempotency_key, 3 payload hash, 4 reason or "",
--       5 actor (tenant|admin_on_behalf_of), 6 audit entry json or "", 7 retention ms,
--       8 event context

local f = redis.call("HMGET", KEYS[2], "status", "tenant", "estimate", "unit", "budget_keys",
  "budget_scopes", "expires_at", "grace_ms", "release_key", "release_hash", "release_body",
  "reservation_id")
local status = f[1]
local e = owned(status, f[2], ARGV[1])
if e then return e end

local replay = settle_replay(redis.call("HMGET", KEYS[5], "hash", "body"), ARGV[3], status,
  "RELEASED", f[9], ARGV[2], f[10], f[11])
if replay then return replay end

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
budget_events(budgets, bscopes, unit, {reservation_id = f[12], correlation = f[12]})

local body = '{"status":"RELEASED","released":' .. amount_json(unit, estimate) ..
  ',"balances":' .. balances_json(budgets, bscopes, unit) .. '}'
redis.call("HSET", KEYS[2], "status", "RELEASED", "finalized_at", istr(now),
  "release_key", ARGV[2], "release_hash", ARGV[3], "release_reason", ARGV[4],
  "released_by", ARGV[5], "release_body", body)
if ARGV[6] ~= "" then redis.call("ZADD", KEYS[4], now, ARGV[6]) end
redis.call("HSET", KEYS[5], "hash", ARGV[3], "body", body, "reservation_id", f[12])
redis.call("PEXPIRE", KEYS[5], tonumber(ARGV[7]))
redis.call("ZREM", KEYS[3], f[12])
redis.call("PEXPIRE", KEYS[2], tonumber(ARGV[7]))
return ok(200, body)
