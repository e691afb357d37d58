-- Direct debit (POST /v1/events): charge `actual` on every budgeted derived scope at once,
-- under the overage policy. Debt and over-limit do not block events (post-only accounting).
--
-- KEYS: 1 tenant, 2 idempotency record (event namespace), 3 event record, 4 budgets index,
--       5.. budget per derived scope, last: event stream
-- ARGV: 1 tenant, 2 event_id, 3 idempotency_key, 4 payload hash, 5 actual, 6 unit,
--       7 overage policy or "", 8 subject json, 9 action json, 10 metrics json or "",
--       11 metadata json or "", 12 client_time_ms or "", 13 retention ms, 14 units csv,
--       15 n, 16.. derived scopes, last: event context

local actual = ARGV[5]
local unit = ARGV[6]
local n = tonumber(ARGV[15])
local scopes = {}
for i = 1, n do scopes[i] = ARGV[15 + i] end
if not is_amount(actual) then return err("INVALID_REQUEST", "actual.amount must be an int64 >= 0") end
actual = dnorm(actual)

local idem = redis.call("HMGET", KEYS[2], "hash", "body")
if idem[1] then
  if idem[1] ~= ARGV[4] then
    return err("IDEMPOTENCY_MISMATCH", "idempotency_key was already used with a different request")
  end
  return ok(201, idem[2])
end

local tenant, terr = tenant_settings(KEYS[1])
if not tenant then return terr end
if tenant.closed then return err("TENANT_CLOSED", "tenant is closed") end
local policy = ARGV[7]
if policy == "" then policy = tenant.policy or "ALLOW_IF_AVAILABLE" end
if policy ~= "REJECT" and policy ~= "ALLOW_IF_AVAILABLE" and policy ~= "ALLOW_WITH_OVERDRAFT" then
  return err("INVALID_REQUEST", "tenant default_commit_overage_policy is not a CommitOveragePolicy")
end

local function status_refusal(b)
  if b.status == "FROZEN" then return "BUDGET_FROZEN" end
  if b.status == "CLOSED" then return "BUDGET_CLOSED" end
  return nil
end
local r, rerr = evaluate(4, scopes, actual, status_refusal)
if not r then return rerr end
if r.refusal then return refusal_error(r, actual, unit) end
local budgets, bscopes = r.budgets, r.scopes
if #budgets == 0 then
  local mismatch = unit_probe(KEYS[4], scopes, unit, ARGV[14])
  if mismatch then return mismatch end
  return err("NOT_FOUND", "Budget not found for provided scope: " .. scopes[n])
end

local plan, charged = settle_overage(budgets, actual, policy)
if not plan then
  if charged == "BUDGET_EXCEEDED" then
    return err("BUDGET_EXCEEDED", "actual exceeds the remaining budget and the overage policy is REJECT")
  end
  return err(charged, "debit would exceed the overdraft limit")
end
for i = 1, #plan do
  if not check_headroom(plan[i]) then
    return err("INTERNAL_ERROR", "debit would take the ledger of " .. bscopes[i] .. " out of range")
  end
end
local now = now_ms()
for i = 1, #plan do write_budget(budgets[i], plan[i], now) end
budget_events(budgets, bscopes, unit, {policy = policy, correlation = ARGV[2]})

local body = '{"status":"APPLIED","event_id":"' .. ARGV[2] .. '"'
if dcmp(charged, actual) < 0 then body = body .. ',"charged":' .. amount_json(unit, charged) end
body = body .. ',"balances":' .. balances_json(budgets, bscopes, unit) .. '}'

redis.call("HSET", KEYS[3], "event_id", ARGV[2], "tenant", ARGV[1], "subject_json", ARGV[8],
  "action_json", ARGV[9], "unit", unit, "amount", actual, "charged", charged,
  "overage_policy", policy, "scope_path", scopes[n], "affected_json", json_array(scopes),
  "budget_scopes", table.concat(bscopes, "\n"), "metrics_json", ARGV[10],
  "metadata_json", ARGV[11], "client_time_ms", ARGV[12], "idempotency_key", ARGV[3],
  "created_at", istr(now))
redis.call("PEXPIRE", KEYS[3], tonumber(ARGV[13]))
redis.call("HSET", KEYS[2], "hash", ARGV[4], "body", body, "event_id", ARGV[2])
redis.call("PEXPIRE", KEYS[2], tonumber(ARGV[13]))
return ok(201, body)
