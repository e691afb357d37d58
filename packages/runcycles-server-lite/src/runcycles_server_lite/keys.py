"""Redis key layout: the one place that names keys.

Every key that belongs to a tenant carries the hash tag ``{t:<tenant>}``, so all of one
tenant's keys hash to one Redis Cluster slot and every Lua script (which only ever touches one
tenant) runs unchanged on Cluster. Keys with no tenant (API-key lookups, the tenant index,
leases) are touched by plain commands only, never inside a multi-key script.

Layout (``P`` is the configurable prefix, ``rc`` by default; ``T`` the tenant id)::

  P:{t:T}:tenant                     HASH  tenant record (see TENANT_FIELDS)
  P:{t:T}:budget:<scope>:<UNIT>      HASH  ledger (see BUDGET_FIELDS); amounts int64 strings
  P:{t:T}:budgets                    ZSET  score 0, member "<scope>|<UNIT>" (lex order, balances)
  P:{t:T}:res:<reservation_id>       HASH  ACTIVE reservation record (fields: reserve.lua)
  P:{t:T}:fin:<reservation_id>       STRING finalized reservation (compact; FIN in lib.lua)
  P:{t:T}:res:idx                    ZSET  reservation id by created_at ms (listing)
  P:{t:T}:res:exp                    ZSET  ACTIVE reservation id by expires_at + grace ms (sweeper)
  P:{t:T}:idem:reserve:<key>         STRING "D\n<hash>\n<dry-run body>" | "L\n<hash>\n<res id>"
  P:{t:T}:idem:commit|release:<key>  STRING "1": the key settled a reservation of T
  P:{t:T}:idem:extend:<res id>:<key> STRING "<hash>\n<expires_at>\n<compact balances>"
  P:{t:T}:idem:<endpoint>:<key>      HASH  other idempotency records {hash, body, ...}
  P:{t:T}:evt:<event_id>             HASH  direct-debit event record
  P:{t:T}:events                     STREAM governance events (Event envelope; see events.py)
  P:{t:T}:apikeys                    ZSET  key_id by created_at ms
  P:{t:T}:apikey:<key_id>            HASH  API key record (hash of the secret, never the secret)
  P:{t:T}:audit                      ZSET  audit entries (JSON) by time; T may be a sentinel
  P:{t:T}:policies                   HASH  policy_id -> policy JSON (stored, not enforced)
  P:{t:T}:policy-names               HASH  policy name -> policy_id (names are unique)
  P:apikey:lookup:<sha256(secret)>   STRING "<tenant>\\n<key_id>"
  P:apikey:owner:<key_id>            STRING tenant id (admin calls that name only a key_id)
  P:policy:owner:<policy_id>         STRING tenant id (admin calls that name only a policy)
  P:tenants                          ZSET  tenant id by created_at ms (admin listing, sweeper)
  P:lease:<job>                      STRING lease owner token (PX)
  P:admin:idem:<endpoint>:<key>      HASH  idempotency for admin calls with no tenant slot
  P:dashboard:session:<sha256(sid)>  HASH  dashboard browser session (see dashboard/session.py)
  P:dashboard:secret                 STRING cookie signing key when no admin key is configured
  P:dashboard:login-failures:<ip>    STRING failed sign-ins from one address (dashboard/throttle.py)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

SUBJECT_LEVELS: tuple[str, ...] = ("tenant", "workspace", "app", "workflow", "agent", "toolset")

UNITS: tuple[str, ...] = ("USD_MICROCENTS", "TOKENS", "CREDITS", "RISK_POINTS")

# Budget hash fields. Amount fields are int64 decimal strings, is_over_limit is "true"/"false",
# status is ACTIVE | FROZEN | CLOSED. Ledger identity kept by every script:
#   allocated = remaining + spent + reserved + debt
BUDGET_AMOUNT_FIELDS: tuple[str, ...] = (
    "allocated",
    "remaining",
    "reserved",
    "spent",
    "debt",
    "overdraft_limit",
)
BUDGET_FIELDS: tuple[str, ...] = (
    "ledger_id",
    "tenant_id",
    "scope",
    "unit",
    *BUDGET_AMOUNT_FIELDS,
    "is_over_limit",
    "status",
    "commit_overage_policy",
    "rollover_policy",
    "caps_json",
    "metadata_json",
    "created_at",
    "updated_at",
)

# Tenant hash fields. Timestamps are epoch ms strings; metadata_json is a JSON object.
TENANT_FIELDS: tuple[str, ...] = (
    "tenant_id",
    "name",
    "status",
    "parent_tenant_id",
    "default_commit_overage_policy",
    "default_reservation_ttl_ms",
    "max_reservation_ttl_ms",
    "max_reservation_extensions",
    "reservation_expiry_policy",
    "metadata_json",
    "created_at",
    "updated_at",
)


def secret_digest(secret: str) -> str:
    """SHA-256 hex of an API-key secret.

    Secrets are 192-bit random tokens, so a fast hash is enough (bcrypt protects guessable
    passwords, not random keys) and keeps auth on the hot path cheap.
    """
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Keys:
    """Builds key names under one prefix."""

    prefix: str = "rc"

    def tag(self, tenant: str) -> str:
        return f"{self.prefix}:{{t:{tenant}}}"

    # -- per tenant (one Cluster slot per tenant) -------------------------------------------
    def tenant(self, tenant: str) -> str:
        return f"{self.tag(tenant)}:tenant"

    def budget(self, tenant: str, scope: str, unit: str) -> str:
        return f"{self.tag(tenant)}:budget:{scope}:{unit}"

    def budget_prefix(self, tenant: str) -> str:
        return f"{self.tag(tenant)}:budget:"

    def budgets(self, tenant: str) -> str:
        return f"{self.tag(tenant)}:budgets"

    def reservation(self, tenant: str, reservation_id: str) -> str:
        return f"{self.tag(tenant)}:res:{reservation_id}"

    def finalized(self, tenant: str, reservation_id: str) -> str:
        return f"{self.tag(tenant)}:fin:{reservation_id}"

    def reservation_prefix(self, tenant: str) -> str:
        return f"{self.tag(tenant)}:res:"

    def reservation_index(self, tenant: str) -> str:
        return f"{self.tag(tenant)}:res:idx"

    def reservation_expiry(self, tenant: str) -> str:
        return f"{self.tag(tenant)}:res:exp"

    def idempotency(self, tenant: str, endpoint: str, key: str) -> str:
        return f"{self.tag(tenant)}:idem:{endpoint}:{key}"

    def event(self, tenant: str, event_id: str) -> str:
        return f"{self.tag(tenant)}:evt:{event_id}"

    def events(self, tenant: str) -> str:
        return f"{self.tag(tenant)}:events"

    def api_keys(self, tenant: str) -> str:
        return f"{self.tag(tenant)}:apikeys"

    def api_key(self, tenant: str, key_id: str) -> str:
        return f"{self.tag(tenant)}:apikey:{key_id}"

    def audit(self, tenant: str) -> str:
        return f"{self.tag(tenant)}:audit"

    def policies(self, tenant: str) -> str:
        return f"{self.tag(tenant)}:policies"

    def policy_names(self, tenant: str) -> str:
        return f"{self.tag(tenant)}:policy-names"

    # -- global (plain commands only, never inside a multi-key script) ----------------------
    def api_key_lookup(self, digest: str) -> str:
        return f"{self.prefix}:apikey:lookup:{digest}"

    def api_key_owner(self, key_id: str) -> str:
        return f"{self.prefix}:apikey:owner:{key_id}"

    def policy_owner(self, policy_id: str) -> str:
        return f"{self.prefix}:policy:owner:{policy_id}"

    def tenants(self) -> str:
        return f"{self.prefix}:tenants"

    def lease(self, job: str) -> str:
        return f"{self.prefix}:lease:{job}"

    def admin_idempotency(self, endpoint: str, key: str) -> str:
        return f"{self.prefix}:admin:idem:{endpoint}:{key}"

    def dashboard_session(self, sid_digest: str) -> str:
        return f"{self.prefix}:dashboard:session:{sid_digest}"

    def dashboard_secret(self) -> str:
        return f"{self.prefix}:dashboard:secret"

    def dashboard_login_failures(self, client: str) -> str:
        return f"{self.prefix}:dashboard:login-failures:{client}"
