-- Create a reservation (live) or evaluate one without mutating anything (dry run).
--
-- KEYS: 1 tenant, 2 idempotency record (reserve namespace, shared by live and dry run),
--       3 new reservation, 4 res:idx, 5 res:exp, 6 budgets index, 7.. budget per derived scope
-- ARGV: 1 mode (live|dry), 2 tenant, 3 reservation_id, 4 idempotency_key, 5 payload hash,
--       6 estimate, 7 unit, 8 ttl_ms or "", 9 grace_ms, 10 overage policy or "",
--       11 subject json, 12 action json, 13 metadata json or "", 14 idempotency ms,
--       15 dry-run idempotency ttl ms, 16 units csv, 17 n, 18.. derived scopes (tenant -> leaf),
--       last: event context (see emit in lib.lua)
-- A live denial emits reservation.denied; a live reservation emits the budgets' transitions.

local mode = ARGV[1]
local estimate = ARGV[6]
local unit = ARGV[7]
local n = tonumber(ARGV[17])
local scopes = {}
for i = 1, n do scopes[i] = ARGV[17 + i] end
local scope_path = scopes[n]
local affected = json_array(scopes)

if not is_amount(estimate) then return err("INVALID_REQUEST", "estimate.amount must be an int64 >= 0") end
estimate = dnorm(estimate)

-- Idempotent replay wins over every other check. The record is a string: "D\n<hash>\n<body>"
-- (dry run: the response itself) or "L\n<hash>\n<reservation id>" (live: the response is
-- rendered again from the reservation, ACTIVE or finalized).
-- One GET serves both layouts: on a hash (written by an older server-lite, which stored the
-- response whole) it fails with WRONGTYPE, which costs less than a TYPE on every reserve.
local idem = redis.pcall("GET", KEYS[2])
if type(idem) == "table" and idem.err then
  local old = redis.call("HMGET", KEYS[2], "hash", "kind", "body", "body_a", "body_b", "res_key",
    "expires_at")
  if old[1] ~= ARGV[5] then
    return err("IDEMPOTENCY_MISMATCH", "idempotency_key was already used with a different request")
  end
  if old[2] == "dry" then return ok(200, old[3]) end
  local rttl = 0
  if redis.call("HGET", old[6], "status") == "ACTIVE" then
    rttl = math.max(0, tonumber(old[7]) - now_ms())
  end
  return ok(200, old[4] .. istr(rttl) .. old[5])
end
if idem then
  local kind, hash, rest = string.match(idem, "^(%a)\n([^\n]*)\n(.*)$")
  if hash ~= short_hash(ARGV[5]) then
    return err("IDEMPOTENCY_MISMATCH", "idempotency_key was already used with a different request")
  end
  if kind == "D" then return ok(200, rest) end
  local res_key = tag_of(KEYS[3]) .. ":res:" .. rest
  local a = redis.call("HMGET", res_key, "status", "unit", "estimate", "rexp", "scope_path",
    "rbal", "caps_json")
  if a[1] then
    local rttl = 0
    if a[1] == "ACTIVE" then rttl = math.max(0, tonumber(a[4]) - now_ms()) end
    return ok(200, reserve_reply(rest, a[2], a[3], a[4], rttl, a[5], a[6], a[7]))
  end
  local fin = load_fin(fin_key_of(res_key))
  if fin then
    return ok(200, reserve_reply(rest, fin.unit, fin.estimate, fin.rexp, 0, fin.scope_path,
      fin.rbal, fin.caps_json))
  end
  -- The reservation is gone (past its retention): the key is free again.
end

local tenant, terr = tenant_settings(KEYS[1])
if not tenant then return terr end

local function dry_reply(decision, reason, balances, caps)
  local body = '{"decision":"' .. decision .. '","affected_scopes":' .. affected ..
    ',"scope_path":' .. jstr(scope_path) .. ',"reserved":' .. amount_json(unit, estimate)
  if balances then body = body .. ',"balances":' .. balances end
  if caps then body = body .. ',"caps":' .. caps end
  if reason then body = body .. ',"reason_code":"' .. reason .. '"' end
  body = body .. '}'
  redis.call("SET", KEYS[2], "D\n" .. short_hash(ARGV[5]) .. "\n" .. body, "PX", tonumber(ARGV[15]))
  return ok(200, body)
end

local function denied(reason, scope, remaining)
  local data = '{"scope":' .. jstr(scope) .. ',"unit":"' .. unit .. '","reason_code":"' ..
    reason .. '","requested_amount":' .. estimate
  if remaining then data = data .. ',"remaining":' .. remaining end
  emit("reservation.denied", scope, data .. ',"action":' .. ARGV[12] .. ',"subject":' ..
    ARGV[11] .. '}')
end

if tenant.closed then
  if mode == "dry" then return dry_reply("DENY", "TENANT_CLOSED") end
  denied("TENANT_CLOSED", scope_path)
  return err("TENANT_CLOSED", "tenant is closed")
end

local r, rerr = evaluate(6, scopes, estimate, reserve_refusal)
if not r then return rerr end
local budgets, bscopes = r.budgets, r.scopes
if r.refusal then
  if mode == "dry" then return dry_reply("DENY", r.refusal, balances_json(budgets, bscopes, unit)) end
  local remaining = nil
  for i = 1, #bscopes do
    if bscopes[i] == r.refusal_scope then remaining = budgets[i].remaining end
  end
  denied(r.refusal, r.refusal_scope, remaining)
  return refusal_error(r, estimate, unit)
end
if #budgets == 0 then
  local mismatch = unit_probe(KEYS[6], scopes, unit, ARGV[16])
  if mismatch then return mismatch end
  if mode == "dry" then return dry_reply("DENY", "BUDGET_NOT_FOUND", "[]") end
  return err("NOT_FOUND", "Budget not found for provided scope: " .. scope_path)
end

local caps = leaf_caps(r)
local decision = caps and "ALLOW_WITH_CAPS" or "ALLOW"

if mode == "dry" then
  return dry_reply(decision, nil, balances_json(budgets, bscopes, unit), caps)
end

-- Live: resolve tenant defaults, check headroom, then write everything.
local ttl = tonumber(ARGV[8]) or tenant.default_ttl or 60000
local max_ttl = tenant.max_ttl or 3600000
if ttl > max_ttl then ttl = max_ttl end
if ttl < 1 then ttl = 1 end
local grace = tonumber(ARGV[9])
local policy = ARGV[10]
if policy == "" then policy = tenant.policy or "ALLOW_IF_AVAILABLE" end
if policy ~= "REJECT" and policy ~= "ALLOW_IF_AVAILABLE" and policy ~= "ALLOW_WITH_OVERDRAFT" then
  return err("INVALID_REQUEST", "tenant default_commit_overage_policy is not a CommitOveragePolicy")
end
local max_ext = tenant.max_ext or 10

local plans = {}
for i = 1, #budgets do
  local b = budgets[i]
  plans[i] = {remaining = dsub(b.remaining, estimate), reserved = dadd(b.reserved, estimate)}
  if not check_headroom(plans[i]) then
    return err("INTERNAL_ERROR", "reservation would take the ledger of " .. bscopes[i] .. " out of range")
  end
end

local now = now_ms()
local expires_at = now + ttl
for i = 1, #budgets do write_budget(budgets[i], plans[i], now) end

local rid = ARGV[3]
budget_events(budgets, bscopes, unit, {reservation_id = rid, correlation = rid})
local bkeys = {}
for i = 1, #budgets do bkeys[i] = budgets[i].key end
local rexp = istr(expires_at)
local rbal = bal_compact(budgets, bscopes, scope_path)
redis.call("HSET", KEYS[3],
  "reservation_id", rid, "tenant", ARGV[2], "status", "ACTIVE",
  "subject_json", ARGV[11], "action_json", ARGV[12], "metadata_json", ARGV[13],
  "unit", unit, "estimate", estimate, "scope_path", scope_path,
  "budget_keys", table.concat(bkeys, "\n"), "budget_scopes", table.concat(bscopes, "\n"),
  "created_at", istr(now), "expires_at", rexp, "rexp", rexp, "grace_ms", istr(grace),
  "idempotency_key", ARGV[4], "overage_policy", policy,
  "max_extensions", istr(max_ext), "extension_count", "0", "rbal", rbal)
if caps then redis.call("HSET", KEYS[3], "caps_json", caps) end
redis.call("ZADD", KEYS[4], now, rid)
redis.call("ZADD", KEYS[5], expires_at + grace, rid)

-- Kept while the reservation can be live, then idempotency ms past finalization (finalize
-- in lib.lua sets that).
redis.call("SET", KEYS[2], "L\n" .. short_hash(ARGV[5]) .. "\n" .. rid, "PX", tonumber(ARGV[14]) + ttl + grace)
return ok(200, reserve_reply(rid, unit, estimate, rexp, ttl, scope_path, rbal, caps))
