"""Security settings: the keyed-hash key of ``mpp.ids`` and the front doors' API keys."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

# The development key of ``IdSettings``: public, so environment=production refuses it.
DEVELOPMENT_HMAC_KEY = "mpp-development-ids-key-not-a-secret"


class IdSettings(BaseModel):
    """Keyed hashes (HMAC-SHA-256, ``mpp.ids``): derived message ids and feedback ids, and the
    erasure ledger's name for a user. Without the key, neither the text of a message nor a
    user id can be confirmed from them. Rotation: docs/security.md."""

    hmac_key: SecretStr = SecretStr(DEVELOPMENT_HMAC_KEY)
    # Keys used before ``hmac_key``: still matched when reading the erasure ledger, so that a
    # rotation forgets no erasure. Never used to derive a new id.
    previous_hmac_keys: list[SecretStr] = []

    @field_validator("hmac_key")
    @classmethod
    def _long_enough(cls, v: SecretStr) -> SecretStr:
        if len(v.get_secret_value().encode()) < 16:
            raise ValueError(
                "ids.hmac_key must be at least 16 bytes; set MPP_IDS__HMAC_KEY to a random "
                "secret (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        return v


# What an API key may do (docs/security.md has the table per front door); admin may do all.
Scope = Literal["recommendations:read", "feedback:write", "users:erase", "analytics:read", "admin"]
SCOPES: tuple[Scope, ...] = (
    "recommendations:read",
    "feedback:write",
    "users:erase",
    "analytics:read",
    "admin",
)


class ApiKeySpec(BaseModel):
    """One API key as configured: its SHA-256 only (``mpp keys new`` makes a key and this)."""

    model_config = {"extra": "forbid"}

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:@-]+$")]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")]
    scopes: Annotated[list[Scope], Field(min_length=1)]
    # Token bucket per key and per worker process: ``burst`` requests at once, refilled at
    # ``rate_per_s``; past it, 429 with Retry-After (gRPC: RESOURCE_EXHAUSTED).
    rate_per_s: Annotated[float, Field(gt=0)] = 100.0
    burst: Annotated[int, Field(ge=1)] = 200

    @field_validator("sha256")
    @classmethod
    def _lower(cls, v: str) -> str:
        return v.lower()


class AuthSettings(BaseModel):
    """API keys of the front doors (recommender HTTP and gRPC, analytics reports).

    ``MPP_AUTH__KEYS`` is a JSON list of ``{"name", "sha256", "scopes", "rate_per_s",
    "burst"}``; a key is sent as ``X-API-Key: <key>``, ``Authorization: Bearer <key>`` (or
    Basic with the key as the password, for browsers) or gRPC metadata ``authorization:
    Bearer <key>``. On without keys, every request but health and metrics is refused
    (production refuses to start).
    """

    enabled: bool = True
    keys: list[ApiKeySpec] = []

    @model_validator(mode="after")
    def _unique_names(self) -> AuthSettings:
        names = [k.name for k in self.keys]
        doubles = sorted({n for n in names if names.count(n) > 1})
        if doubles:
            raise ValueError(
                f"auth.keys: the name(s) {', '.join(doubles)} appear twice; give each key "
                "its own name in MPP_AUTH__KEYS (it names the key in logs and rate limits)"
            )
        return self
