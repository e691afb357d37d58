-- Expire due reservations of one tenant (the sweeper calls this in batches).
--
-- KEYS: 1 tenant, 2 res:exp, 3.. reservation records (candidates the sweeper saw as due),
--       last: event stream
-- ARGV: 1 retention ms, 2 idempotency ms, 3.. reservation ids (ARGV[i] is KEYS[i]'s),
--       last: event context
-- Each expiry emits reservation.expired (and the budgets' transitions).
-- Returns {expired, skipped, quarantined, missing}.
--
-- An expired reservation becomes its finalized record (see finalize in lib.lua).
-- Idempotent: non-ACTIVE rows are only dropped from the index, so a hold is returned at most
-- once. Rows that cannot be settled safely (malformed, or a ledger whose reserved amount is
-- smaller than the hold) are quarantined: marked, dropped from the index, ledger untouched.

local tenant = tenant_settings(KEYS[1]) or {closed = false}
local now = now_ms()
local expired, skipped, quarantined, missing = 0, 0, 0, 0

local function quarantine(key, id, reason)
  redis.call("HSET", key, "quarantined_at", istr(now), "quarantine_reason", reason)
  redis.call("ZREM", KEYS[2], id)
  quarantined = quarantined + 1
end

for i = 3, #KEYS - 1 do
  local key, id = KEYS[i], ARGV[i]
  local f = redis.call("HMGET", key, "status", "estimate", "expires_at", "grace_ms",
    "budget_keys", "budget_scopes", "scope_path", "unit", "created_at", "extension_count")
  if not f[1] and redis.call("EXISTS", fin_key_of(key)) == 1 then
    redis.call("ZREM", KEYS[2], id)
    skipped = skipped + 1
  elseif not f[1] then
    redis.call("ZREM", KEYS[2], id)
    missing = missing + 1
  elseif f[1] ~= "ACTIVE" then
    redis.call("ZREM", KEYS[2], id)
    skipped = skipped + 1
  else
    local estimate = dnorm(f[2] or "")
    local expires_at = tonumber(f[3] or "")
    local grace = tonumber(f[4] or "")
    if not estimate or string.sub(estimate, 1, 1) == "-" or not fits64(estimate) then
      quarantine(key, id, "INVALID_ESTIMATE")
    elseif not expires_at or not grace or grace < 0 then
      quarantine(key, id, "INVALID_EXPIRY")
    elseif now <= expires_at + grace then
      -- Extended since the sweeper looked: put it back at its real deadline.
      redis.call("ZADD", KEYS[2], expires_at + grace, id)
      skipped = skipped + 1
    else
      local budgets, bscopes, berr = recorded_budgets(f[5], f[6])
      local plans, bad = {}, berr
      if budgets and not tenant.closed then
        for j = 1, #budgets do
          local b = budgets[j]
          plans[j] = {reserved = dsub(b.reserved, estimate), remaining = dadd(b.remaining, estimate)}
          if not check_headroom(plans[j]) then bad = "LEDGER_SHORT" end
        end
      end
      if bad then
        quarantine(key, id, bad)
      else
        -- A closed tenant's ledgers belong to the close procedure; expiring must not refund
        -- them a second time.
        if not tenant.closed then
          for j = 1, #budgets do write_budget(budgets[j], plans[j], now) end
        end
        local created = tonumber(f[9] or "") or expires_at
        local scope = f[7] or ""
        emit("reservation.expired", scope, '{"reservation_id":' .. jstr(id) .. ',"scope":' ..
          jstr(scope) .. ',"unit":"' .. (f[8] or "") .. '","estimated_amount":' .. estimate ..
          ',"created_at":"' .. iso_ms(created) .. '","expired_at":"' .. iso_ms(now) ..
          '","ttl_ms":' .. istr(expires_at - created) .. ',"extensions_used":' ..
          istr(tonumber(f[10] or "0") or 0) .. '}', id)
        if not tenant.closed then budget_events(budgets, bscopes, f[8] or "", {correlation = id}) end
        finalize(key, {status = "EXPIRED", finalized_at = istr(now)}, tonumber(ARGV[1]),
          tonumber(ARGV[2]))
        redis.call("ZREM", KEYS[2], id)
        expired = expired + 1
      end
    end
  end
end
return {expired, skipped, quarantined, missing}
