-- budget_update.lua: PATCH properties of a budget, or freeze / unfreeze it.
--
-- KEYS[1] budget hash   KEYS[2] tenant hash   KEYS[3] event stream
-- ARGV[1] mode: "patch" | "freeze" | "unfreeze" | "close" (tenant-close cascade only)
-- ARGV[2] now (epoch ms)
-- ARGV[3..] for "patch": field, value pairs (overdraft_limit, commit_overage_policy,
--           metadata_json); is_over_limit is recomputed as debt > overdraft_limit.
-- last ARGV: event context (budget.frozen / unfrozen / updated / closed_via_tenant_cascade,
--            reservation.released_via_tenant_cascade, budget.over_limit_entered / exited)
-- Returns {"OK", field1, value1, ...} (the record after the update) or {"ERR", code, message}.

local function dec_gt(a, b)
  -- Both non-negative canonical decimal strings: longer is larger, else lexicographic.
  if #a ~= #b then return #a > #b end
  return a > b
end

local mode, now = ARGV[1], ARGV[2]
if redis.call("EXISTS", KEYS[1]) == 0 then
  return {"ERR", "BUDGET_NOT_FOUND", "budget not found"}
end
if mode ~= "close" and redis.call("HGET", KEYS[2], "status") == "CLOSED" then
  return {"ERR", "TENANT_CLOSED", "tenant is closed"}
end
local status = redis.call("HGET", KEYS[1], "status") or "ACTIVE"
local before = redis.call("HMGET", KEYS[1], "allocated", "remaining", "debt", "spent", "reserved",
  "is_over_limit", "ledger_id", "scope", "unit", "overdraft_limit")
local scope, unit = before[8] or "", before[9] or ""
local function ident()
  return '{"ledger_id":' .. jstr(before[7] or "") .. ',"scope":' .. jstr(scope) .. ',"unit":"' ..
    unit .. '"'
end
local function state(v, st)
  return '{"allocated":' .. (v[1] or "0") .. ',"remaining":' .. (v[2] or "0") .. ',"debt":' ..
    (v[3] or "0") .. ',"spent":' .. (v[4] or "0") .. ',"reserved":' .. (v[5] or "0") ..
    ',"status":"' .. st .. '"}'
end
local function lifecycle(event_type, operation, new_status)
  local after = redis.call("HMGET", KEYS[1], "allocated", "remaining", "debt", "spent", "reserved")
  emit(event_type, scope, ident() .. ',"operation":"' .. operation .. '","previous_state":' ..
    state(before, status) .. ',"new_state":' .. state(after, new_status) .. '}')
end

if mode == "freeze" or mode == "unfreeze" then
  if status == "CLOSED" then return {"ERR", "BUDGET_CLOSED", "budget is closed"} end
  local from, to = "ACTIVE", "FROZEN"
  if mode == "unfreeze" then from, to = "FROZEN", "ACTIVE" end
  if status ~= from then
    if status == "FROZEN" then return {"ERR", "BUDGET_FROZEN", "budget is already frozen"} end
    return {"ERR", "INVALID_TRANSITION", "budget is already " .. status}
  end
  redis.call("HSET", KEYS[1], "status", to, "updated_at", now)
  lifecycle(mode == "freeze" and "budget.frozen" or "budget.unfrozen", "STATUS_CHANGE", to)
elseif mode == "close" then
  if status ~= "CLOSED" then
    -- Holds of the closed tenant's open reservations go back to remaining here, once: the
    -- tenant is already CLOSED, so they can no longer commit or release, and expiring them
    -- later refunds nothing (expire.lua), which is what keeps this from refunding twice.
    -- remaining + reserved <= allocated, so this cannot overflow.
    local reserved = redis.call("HGET", KEYS[1], "reserved") or "0"
    if reserved ~= "0" then
      redis.call("HINCRBY", KEYS[1], "remaining", reserved)
      redis.call("HSET", KEYS[1], "reserved", "0")
    end
    redis.call("HSET", KEYS[1], "status", "CLOSED", "closed_at", now, "updated_at", now)
    local cascade = ',"cascade_reason":"tenant_closed"}'
    emit("budget.closed_via_tenant_cascade", scope, ident() .. ',"prior_status":"' .. status ..
      '","new_status":"CLOSED"' .. cascade)
    if reserved ~= "0" then
      emit("reservation.released_via_tenant_cascade", scope, ident() ..
        ',"released_amount":' .. reserved .. cascade)
    end
  end
else
  if status == "CLOSED" then return {"ERR", "BUDGET_CLOSED", "budget is closed"} end
  local fields = {}
  for i = 3, #ARGV - 1 do fields[#fields + 1] = ARGV[i] end
  if #fields > 0 then redis.call("HSET", KEYS[1], unpack(fields)) end
  local debt = redis.call("HGET", KEYS[1], "debt") or "0"
  local limit = redis.call("HGET", KEYS[1], "overdraft_limit") or "0"
  local over = "false"
  if dec_gt(debt, limit) then over = "true" end
  redis.call("HSET", KEYS[1], "is_over_limit", over, "updated_at", now)
  lifecycle("budget.updated", "UPDATE", status)
  if (before[6] == "true") ~= (over == "true") then
    local body = '{"scope":' .. jstr(scope) .. ',"unit":"' .. unit .. '","debt":' .. debt ..
      ',"overdraft_limit":' .. limit .. ',"is_over_limit":' .. over
    if tonumber(limit) > 0 then body = body .. ',"debt_utilization":' .. num_json(tonumber(debt) / tonumber(limit)) end
    emit(over == "true" and "budget.over_limit_entered" or "budget.over_limit_exited", scope, body .. '}')
  end
end
local out = redis.call("HGETALL", KEYS[1])
table.insert(out, 1, "OK")
return out
