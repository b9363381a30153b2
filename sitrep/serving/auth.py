"""Optional API keys (`SITREP_API_KEYS`): `Authorization: Bearer KEY` or `X-API-Key: KEY`. Admin routes take
only keys from `SITREP_ADMIN_KEYS` (a separate list: a /classify key is not an admin key) and answer 403 when
there are none.

Keys are compared in constant time and never logged or echoed; an error says only that the key is
missing or wrong. The check runs in `guard.RequestGuard` before the body is read; the FastAPI
dependencies below repeat it per route and put the schemes into the OpenAPI document.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from fastapi import Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from sitrep.serving.errors import ApiError

API_KEY_HEADER = "x-api-key"
# Routes that need a key when keys are configured (admin routes need one always).
PROTECTED_PREFIXES = ("/classify", "/v1/", "/admin/")
ADMIN_PREFIX = "/admin/"

_bearer = HTTPBearer(
    auto_error=False, description="`Authorization: Bearer KEY`, when SITREP_API_KEYS is set."
)
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="Same keys as the bearer scheme.")


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    if x_api_key:
        return x_api_key
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None


def key_is_valid(key: str | None, keys: list[str]) -> bool:
    if not key:
        return False
    ok = False
    for k in keys:  # no early exit: the time taken does not say which key came close
        ok |= hmac.compare_digest(key.encode(), k.encode())
    return ok


def check(path: str, key: str | None, keys: list[str], admin_keys: list[str] | None = None) -> ApiError | None:
    """None if the request may go on, else the error to answer with."""
    admin = path.startswith(ADMIN_PREFIX)
    if not path.startswith(PROTECTED_PREFIXES):
        return None
    if admin:
        keys = admin_keys or []
        if not keys:
            return ApiError(
                403,
                "admin_disabled",
                "admin endpoints need SITREP_ADMIN_KEYS to be set (or send SIGHUP to reload the configured bundle)",
            )
    if not keys:
        return None
    if key is None:
        return ApiError(
            401,
            "missing_api_key",
            "this service needs an API key: send `Authorization: Bearer KEY` or `X-API-Key: KEY`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not key_is_valid(key, keys):
        return ApiError(
            401,
            "invalid_api_key",
            "the key is not an admin key" if admin else "the API key is not valid",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return None


def require_key(path: str, keys: list[str], admin_keys: list[str] | None = None) -> Callable[..., None]:
    """A route dependency enforcing the key (and documenting both schemes in OpenAPI)."""

    def dependency(
        bearer: HTTPAuthorizationCredentials | None = Security(_bearer),
        header: str | None = Security(_header),
    ) -> None:
        authorization = f"{bearer.scheme} {bearer.credentials}" if bearer else None
        error = check(path, presented_key(authorization, header), keys, admin_keys)
        if error is not None:
            raise error

    return dependency
