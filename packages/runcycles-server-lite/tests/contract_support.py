"""Response bodies checked against the server's own contract (``GET /openapi.json``)."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import httpx
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from runcycles_server_lite.contract import openapi_document

DOC_URI = "urn:runcycles:openapi"
DATE_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
# jsonschema checks date-time only with an optional package installed; say it here instead.
FORMATS = FormatChecker(formats=())
FORMATS.checks("date-time")(
    lambda value: not isinstance(value, str) or bool(DATE_TIME.match(value))
)


@cache
def _registry() -> Registry:
    doc = openapi_document()
    return Registry().with_resource(DOC_URI, Resource(doc, specification=DRAFT202012))


@cache
def validator(name: str) -> Draft202012Validator:
    """A validator of the contract's component ``name`` (its $refs resolve within the document;
    ``format: date-time`` is checked)."""
    schema = {"$ref": f"{DOC_URI}#/components/schemas/{name}"}
    return Draft202012Validator(
        schema,
        registry=_registry(),
        format_checker=FORMATS,
    )


def violations(body: Any, name: str) -> list[str]:
    """Where ``body`` breaks the contract's schema ``name`` ("path: message" each)."""
    return [
        f"{e.json_path}: {e.message}"
        for e in sorted(validator(name).iter_errors(body), key=lambda e: e.json_path)
    ]


def conforms(response: httpx.Response, name: str, status: int = 200) -> Any:
    """The JSON body of ``response``, asserted to have ``status`` and to match ``name``."""
    assert response.status_code == status, response.text
    body = response.json()
    assert violations(body, name) == [], body
    return body


def operation(method: str, path: str) -> dict[str, Any]:
    """The contract's operation object for ``method path``."""
    found: dict[str, Any] = openapi_document()["paths"][path][method.lower()]
    return found


def response_schema(method: str, path: str, status: int) -> str | None:
    """The schema name the contract documents for ``status`` of ``method path`` (None: the
    status is undocumented or has no body)."""
    entry = operation(method, path)["responses"].get(str(status))
    if entry is None or "content" not in entry:
        return None
    ref: str = entry["content"]["application/json"]["schema"]["$ref"]
    return ref.rsplit("/", 1)[1]
