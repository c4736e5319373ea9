"""LTI 1.3 Assignment and Grade Services straight to the platform: its ``destinations.toml`` keys and
its event target (the adapter: :mod:`worker.adapters.lti_ags`).

The tool signs a client-credentials assertion with its private key; the platform checks it against
the public keys the tool publishes (``/.well-known/jwks.json``), so the file names the key id and any
rotation keys, and every key is checked to load (and to match its ``kid``) when the file is read.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from worker.vendors.base import DestinationBase, Id, TargetBase, Url

AGS_SCOPES: tuple[str, ...] = (
    "https://purl.imsglobal.org/spec/lti-ags/scope/score",
    "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem",
)


class LtiRotationKey(BaseModel):
    """Another key published in the JWKS (the next one before a switch, the last one after it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kid: str = Field(min_length=1)
    key_env: str = Field(min_length=1, description="environment variable holding a private or public key PEM")
    key: SecretStr | None = None


class LtiAgsDestination(DestinationBase):
    """LTI 1.3 AGS straight to the platform."""

    vendor: Literal["lti_ags"]
    client_id: str = Field(min_length=1)
    token_url: str = Field(pattern=r"^https?://")
    audience: str | None = Field(None, min_length=1, description="the assertion's aud (default: token_url)")
    private_key_env: str = Field(min_length=1)
    private_key: SecretStr | None = None
    kid: str = Field(min_length=1, description="RFC 7638 thumbprint of the signing key")
    rotation_keys: tuple[LtiRotationKey, ...] = ()
    scopes: tuple[str, ...] = Field(AGS_SCOPES, min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _rotation_secrets(cls, data: Any, info: ValidationInfo) -> Any:
        env = (info.context or {}).get("environ")
        if isinstance(data, dict) and isinstance(data.get("rotation_keys"), list) and env is not None:
            if any(isinstance(k, dict) and "key" in k for k in data["rotation_keys"]):
                raise ValueError("rotation_keys: a key is never written in the file; set key_env to the name "
                                 "of an environment variable holding its PEM")
            data = {**data, "rotation_keys": [
                {**k, "key": env[k["key_env"]]} if isinstance(k, dict) and env.get(str(k.get("key_env"))) else k
                for k in data["rotation_keys"]
            ]}
        return data

    @field_validator("scopes")
    @classmethod
    def _score_scope(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if AGS_SCOPES[0] not in value:
            raise ValueError(f"must include {AGS_SCOPES[0]} (scores are what gradesync posts)")
        return value

    @model_validator(mode="after")
    def _keys_match(self) -> LtiAgsDestination:
        from worker.lti_keys import KeyProblem, load_key

        problems = []
        if self.private_key is not None:
            try:
                load_key(self.private_key.get_secret_value(), kid=self.kid)
            except KeyProblem as exc:
                problems.append(f"private_key_env (${self.private_key_env}): {exc}")
        for i, rk in enumerate(self.rotation_keys):
            if rk.key is not None:
                try:
                    load_key(rk.key.get_secret_value(), kid=rk.kid, require_private=False)
                except KeyProblem as exc:
                    problems.append(f"rotation_keys[{i}].key_env (${rk.key_env}): {exc}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def missing_secrets(self) -> list[str]:
        missing = super().missing_secrets()
        return missing + [f"rotation_keys.key_env (${k.key_env})" for k in self.rotation_keys if k.key is None]


class LtiAgsTarget(TargetBase):
    """A line item URL, or the line items container + the resource link whose line item it is."""

    vendor: Literal["lti_ags"] = Field("lti_ags", exclude=True, repr=False)
    line_item_url: Url | None = Field(None, description="the line item URL (the launch's AGS lineitem claim)")
    lineitems_url: Url | None = Field(None, description="the line items container (the AGS lineitems claim)")
    resource_link_id: Id | None = None
    resource_id: Id | None = None
    tag: Id | None = None
    label: str | None = Field(None, min_length=1, max_length=255, description="label of a created line item")
    score_maximum: float | None = Field(None, gt=0, description="scoreMaximum of a created line item")
    canvas_submission: bool = Field(False, description=(
        "add Canvas's submission extension (https://canvas.instructure.com/lti/submission) to the score"))
    submitted_at: AwareDatetime | None = Field(None, description=(
        "when the learner submitted (Canvas submitted_at); default: the event's occurred_at"))
    regrade: bool = Field(False, description=(
        "a corrected grade of an existing submission: Canvas new_submission false (no new attempt)"))

    @model_validator(mode="after")
    def _addressing(self) -> LtiAgsTarget:
        if self.line_item_url is None and (self.lineitems_url is None or self.resource_link_id is None):
            raise ValueError("give line_item_url, or lineitems_url with resource_link_id")
        if self.line_item_url is not None and self.lineitems_url is not None:
            raise ValueError("give line_item_url or lineitems_url, not both")
        return self

    def item_key(self) -> str:
        if self.line_item_url is not None:
            return self.line_item_url
        return f"{self.lineitems_url}#{self.resource_link_id}#{self.resource_id or ''}#{self.tag or ''}"
