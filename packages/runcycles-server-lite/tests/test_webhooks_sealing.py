"""Webhook signing secrets at rest: sealed with AES-GCM in Redis when a key is configured,
opened only to sign a delivery; a secret this server cannot open is never sent unsigned."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from runtime_support import ACTION, amount
from webhook_support import LOOPBACK_OK, receiver

from runcycles_server_lite.store import Store
from runcycles_server_lite.testing import ServerHandle, running_server
from runcycles_server_lite.webhooks.dispatcher import Dispatcher
from runcycles_server_lite.webhooks.sealing import (
    SEALED_PREFIX,
    SecretBox,
    SecretUnavailable,
    new_key,
    open_secret,
)
from runcycles_server_lite.webhooks.subscriptions import record_key

HOOKS = ["reservations:create", "webhooks:read", "webhooks:write", "events:read"]
KEY = new_key()


def test_box_round_trip_binds_the_subscription_and_the_key() -> None:
    box = SecretBox.from_text(KEY)
    sealed = box.seal("whsec_abc", "whsub_1")
    assert sealed.startswith(SEALED_PREFIX) and "whsec_abc" not in sealed
    assert box.seal("whsec_abc", "whsub_1") != sealed  # a fresh nonce each time
    assert box.open(sealed, "whsub_1") == "whsec_abc"
    with pytest.raises(SecretUnavailable, match="another WEBHOOK_SECRET_ENCRYPTION_KEY"):
        box.open(sealed, "whsub_2")  # copied onto another subscription
    with pytest.raises(SecretUnavailable):
        SecretBox.from_text(new_key()).open(sealed, "whsub_1")
    with pytest.raises(SecretUnavailable, match="no WEBHOOK_SECRET_ENCRYPTION_KEY is set"):
        open_secret(None, sealed, "whsub_1")
    assert open_secret(None, "whsec_plain", "whsub_1") == "whsec_plain"  # written before keys
    urlsafe = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    assert SecretBox.from_text(urlsafe).open(SecretBox.from_text(urlsafe).seal("s", "i"), "i")
    with pytest.raises(ValueError, match="32 bytes"):
        SecretBox.from_text(base64.b64encode(b"short").decode())
    with pytest.raises(ValueError, match="not base64"):
        SecretBox.from_text("not base64 at all!")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    with running_server(
        tmp_path_factory.mktemp("sealed"), webhook_interval_s=0, webhook_secret_key=KEY
    ) as s:
        with s.admin_client() as c:
            assert c.put("/v1/admin/config/webhook-security", json=LOOPBACK_OK).status_code == 200
        yield s


def tick(srv: ServerHandle, *, keyless: bool = False) -> None:
    async def go(store: Store) -> None:
        if keyless:
            store.secret_box = None  # a server started without the key
        d = Dispatcher(store, srv.settings)
        try:
            await d.tick()
        finally:
            await d.stop()

    srv.run_store(go)


def stored_secret(srv: ServerHandle, tenant: str, sid: str) -> str:
    async def go(store: Store) -> str:
        return str(await store.redis.hget(record_key(store, tenant, sid), "secret"))

    return srv.run_store(go)


def signed_by(secret: str, got: Any) -> bool:
    mac = hmac.new(secret.encode(), got.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(got.headers["x-cycles-signature"], f"sha256={mac}")


def test_secrets_are_sealed_at_rest_and_deliveries_signed_in_the_clear(srv: ServerHandle) -> None:
    name = f"seal-{uuid.uuid4().hex[:8]}"
    key = srv.provision(name, {"": 100}, permissions=HOOKS)
    with (
        httpx.Client(base_url=srv.base_url, headers={"X-Cycles-API-Key": key}) as t,
        receiver() as rx,
    ):
        r = t.post("/v1/webhooks", json={"url": rx.url, "event_types": ["reservation.denied"]})
        assert r.status_code == 201, r.text
        sid, secret = r.json()["subscription"]["subscription_id"], r.json()["signing_secret"]
        at_rest = stored_secret(srv, name, sid)
        assert at_rest.startswith(SEALED_PREFIX) and secret not in at_rest

        def deny() -> None:
            body = {
                "idempotency_key": uuid.uuid4().hex,
                "subject": {"tenant": name},
                "action": ACTION,
                "estimate": amount(10_000),
            }
            assert t.post("/v1/reservations", json=body).status_code == 409

        deny()
        for _ in range(50):
            tick(srv)
            if rx.received:
                break
        assert len(rx.received) == 1 and signed_by(secret, rx.received[0])

        # A new secret is sealed too, and signs from then on; the same secret again is no change.
        rotated = "whsec_" + uuid.uuid4().hex
        assert t.patch(f"/v1/webhooks/{sid}", json={"signing_secret": rotated}).status_code == 200
        assert stored_secret(srv, name, sid) != at_rest
        assert rotated not in stored_secret(srv, name, sid)
        sealed_now = stored_secret(srv, name, sid)
        assert t.patch(f"/v1/webhooks/{sid}", json={"signing_secret": rotated}).status_code == 200
        assert stored_secret(srv, name, sid) == sealed_now
        deny()
        for _ in range(50):
            tick(srv)
            if len(rx.received) == 2:
                break
        assert len(rx.received) == 2 and signed_by(rotated, rx.received[1])

        # A dispatcher without the key sends nothing and says why on the delivery.
        deny()
        tick(srv, keyless=True)
        assert len(rx.received) == 2
        rows = t.get(f"/v1/webhooks/{sid}/deliveries").json()["deliveries"]
        failed = [d for d in rows if d["status"] != "SUCCESS"]
        assert failed, rows
        assert "no WEBHOOK_SECRET_ENCRYPTION_KEY is set" in str(failed[0].get("error_message"))
