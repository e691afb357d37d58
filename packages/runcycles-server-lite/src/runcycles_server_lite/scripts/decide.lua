-- Preflight decision: evaluates like a reservation, mutates nothing but its own
-- idempotency record.
--
-- KEYS: 1 tenant, 2 idempotency record (decide namespace), 3 budgets index, 4.. budgets
-- ARGV: 1 payload hash, 2 estimate, 3 unit, 4 units csv, 5 idempotency ttl ms, 6 n, 7.. scopes

local estimate = ARGV[2]
local unit = ARGV[3]
local n = tonumber(ARGV[6])
local scopes = {}
for i = 1, n do scopes[i] = ARGV[6 + i] end
if not is_amount(estimate) then return err("INVALID_REQUEST", "estimate.amount must be an int64 >= 0") end
estimate = dnorm(estimate)

local idem = redis.call("HMGET", KEYS[2], "hash", "body")
if idem[1] then
  if idem[1] ~= ARGV[1] then
    return err("IDEMPOTENCY_MISMATCH", "idempotency_key was already used with a different request")
  end
  return ok(200, idem[2])
end

local function reply(decision, reason, caps)
  local body = '{"decision":"' .. decision .. '","affected_scopes":' .. json_array(scopes)
  if caps then body = body .. ',"caps":' .. caps end
  if reason then body = body .. ',"reason_code":"' .. reason .. '"' end
  body = body .. '}'
  redis.call("HSET", KEYS[2], "hash", ARGV[1], "body", body)
  redis.call("PEXPIRE", KEYS[2], tonumber(ARGV[5]))
  return ok(200, body)
end

local tenant, terr = tenant_settings(KEYS[1])
if not tenant then return terr end
if tenant.closed then return reply("DENY", "TENANT_CLOSED") end

local r, rerr = evaluate(3, scopes, estimate, reserve_refusal)
if not r then return rerr end
if r.refusal then return reply("DENY", r.refusal) end
if #r.budgets == 0 then
  local mismatch = unit_probe(KEYS[3], scopes, unit, ARGV[4])
  if mismatch then return mismatch end
  return reply("DENY", "BUDGET_NOT_FOUND")
end
local caps = leaf_caps(r)
return reply(caps and "ALLOW_WITH_CAPS" or "ALLOW", nil, caps)
