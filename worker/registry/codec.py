"""What the run-time registry stores for one destination, and back (pure: no Redis).

An entry is the destination's table of ``destinations.toml`` as JSON, validated by the same settings
validators as the file (:func:`worker.settings.validate_destination`). Two differences from the file:

- a secret may be given **directly** (``api_key = "…"`` instead of ``api_key_env``; for LTI 1.3 also a
  rotation key's ``key``). It is moved out of the table, encrypted with ``GRADESYNC_SECRET_KEY`` (Fernet,
  :class:`worker.crypto.WireCipher`) and kept under ``secrets`` by its path; the plaintext is never
  stored and no read returns it (:func:`masked` shows ``**********``). To validate and to build the
  :class:`Destination`, each is handed to the validators as if an environment variable named
  ``(stored:<path>)`` held it — so every rule of the file applies to it unchanged.
- ``*_env`` references work as in the file: each process resolves them from its own environment.

The stored JSON::

    {"config": {<the table without direct secrets>}, "secrets": {"api_key": "fernet:…"}}
"""

from __future__ import annotations

import json
from collections import ChainMap
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.crypto import UndecryptableRecord, WireCipher
from worker.settings import SECRET_KEYS, Destination, validate_destination
from worker.vendors.base import MASK

#: where a vendor's rotation keys may carry a secret given directly (LTI 1.3: ``rotation_keys[i].key``)
ROTATION = "rotation_keys"


class EntryError(Exception):
    """A destination's table is invalid: ``problems`` is a list of (key, message)."""

    def __init__(self, name: str, problems: list[tuple[str, str]]) -> None:
        self.name = name
        self.problems = problems
        super().__init__("; ".join(f"{name}: {k or '(table)'}: {m}" for k, m in problems))


@dataclass(frozen=True)
class Prepared:
    """A validated entry: what to store (``stored``, JSON text) and the destination it means here."""

    name: str
    stored: str
    destination: Destination
    secrets: dict[str, str] = field(default_factory=dict, repr=False)  # path -> plaintext (never stored)


def placeholder(path: str) -> str:
    """The pseudo environment variable a secret given directly is handed to the validators under."""
    return f"(stored:{path})"


def _split_secrets(entry: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str], list[tuple[str, str]]]:
    """The table without its direct secrets (``*_env`` set to their placeholders), the secrets by path, and
    problems (a secret that is not a non-empty string, or given both directly and as ``*_env``)."""
    config = dict(entry)
    secrets: dict[str, str] = {}
    problems: list[tuple[str, str]] = []
    for env_key, fld in SECRET_KEYS.get(str(config.get("vendor")), {}).items():
        if fld not in config:
            continue
        value = config.pop(fld)
        if not isinstance(value, str) or not value:
            problems.append((fld, "a secret given directly must be a non-empty string"))
        elif env_key in config:
            problems.append((fld, f"give either {fld} (stored encrypted) or {env_key}, not both"))
        else:
            secrets[fld] = value
    rotation = config.get(ROTATION)
    if isinstance(rotation, list):
        keys = []
        for i, rk in enumerate(rotation):
            if isinstance(rk, Mapping) and "key" in rk:
                rk = dict(rk)
                value = rk.pop("key")
                path = f"{ROTATION}.{i}.key"
                if not isinstance(value, str) or not value:
                    problems.append((path, "a secret given directly must be a non-empty string"))
                elif "key_env" in rk:
                    problems.append((path, "give either key (stored encrypted) or key_env, not both"))
                else:
                    secrets[path] = value
            keys.append(rk)
        config[ROTATION] = keys
    return config, secrets, problems


def _with_placeholders(config: Mapping[str, Any], paths: list[str]) -> dict[str, Any]:
    """``config`` with the ``*_env`` of each stored secret naming its placeholder."""
    data = dict(config)
    env_of = {fld: env_key for env_key, fld in SECRET_KEYS.get(str(data.get("vendor")), {}).items()}
    for path in paths:
        if path in env_of:
            data[env_of[path]] = placeholder(path)
        elif path.startswith(f"{ROTATION}.") and isinstance(data.get(ROTATION), list):
            i = int(path.split(".")[1])
            data[ROTATION] = [({**rk, "key_env": placeholder(path)} if n == i and isinstance(rk, Mapping) else rk)
                              for n, rk in enumerate(data[ROTATION])]
    return data


def _validate(name: str, config: Mapping[str, Any], secrets: Mapping[str, str], environ: Mapping[str, str],
              attempt_time_limit: float | None) -> Destination:
    data = _with_placeholders(config, list(secrets))
    env = ChainMap({placeholder(p): v for p, v in secrets.items()}, environ)  # type: ignore[arg-type]
    dest, problems = validate_destination(name, data, environ=env, attempt_time_limit=attempt_time_limit,
                                          direct_secrets=True)
    if problems or dest is None:
        raise EntryError(name, problems or [("", "invalid")])
    return dest


def prepare(name: str, entry: Any, *, cipher: WireCipher | None, environ: Mapping[str, str],
            attempt_time_limit: float | None = None) -> Prepared:
    """Validate one destination's table (secrets may be given directly) and encrypt its direct secrets;
    :class:`EntryError` listing each problem by key."""
    if not isinstance(entry, Mapping):
        raise EntryError(name, [("", "must be a table")])
    if "name" in entry:
        raise EntryError(name, [("name", "not a key of a destination (its name is the table's name)")])
    config, secrets, problems = _split_secrets(entry)
    if secrets and cipher is None:
        problems.append((next(iter(secrets)), "a secret given directly is stored encrypted: set "
                                              "GRADESYNC_SECRET_KEY (or give its *_env instead)"))
    if problems:
        raise EntryError(name, problems)
    dest = _validate(name, config, secrets, environ, attempt_time_limit)
    encrypted = {p: cipher.encrypt(v) for p, v in secrets.items()} if cipher is not None else {}
    stored = json.dumps({"config": config, "secrets": encrypted}, sort_keys=True, separators=(",", ":"))
    return Prepared(name, stored, dest, dict(secrets))


def materialize(name: str, stored: str, *, cipher: WireCipher | None, environ: Mapping[str, str],
                attempt_time_limit: float | None = None) -> Destination:
    """The destination a stored entry means in this process (its ``*_env`` from ``environ``, its direct
    secrets decrypted); :class:`EntryError` when it no longer validates or cannot be decrypted."""
    try:
        doc = json.loads(stored)
        config, enc = doc["config"], doc.get("secrets") or {}
    except (ValueError, KeyError, TypeError):
        raise EntryError(name, [("", "the stored entry is not valid JSON of the registry")]) from None
    secrets: dict[str, str] = {}
    for path, token in enc.items():
        if cipher is None:
            raise EntryError(name, [(path, "stored encrypted, but GRADESYNC_SECRET_KEY is not set")])
        try:
            secrets[path] = cipher.decrypt(token)
        except UndecryptableRecord as exc:
            raise EntryError(name, [(path, str(exc))]) from None
    return _validate(name, config, secrets, environ, attempt_time_limit)


def masked(stored: str) -> dict[str, Any]:
    """The entry as operators see it: the table, each directly given secret shown as ``**********``."""
    doc = json.loads(stored)
    config: dict[str, Any] = dict(doc.get("config") or {})
    for path in doc.get("secrets") or {}:
        if path.startswith(f"{ROTATION}.") and isinstance(config.get(ROTATION), list):
            i = int(path.split(".")[1])
            config[ROTATION] = [({**rk, "key": MASK} if n == i else rk) for n, rk in enumerate(config[ROTATION])]
        else:
            config[path] = MASK
    return config



def rotate(stored: str, cipher: WireCipher) -> str:
    """``stored`` with each direct secret re-encrypted with the first key (``gradesync keys rotate``);
    :class:`worker.crypto.UndecryptableRecord` when a secret's key is not listed any more."""
    doc = json.loads(stored)
    secrets = doc.get("secrets") or {}
    if not secrets:
        return stored
    doc["secrets"] = {p: cipher.rotate(t) for p, t in secrets.items()}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def unchanged(old: str | None, new: Prepared, cipher: WireCipher | None) -> bool:
    """Does the stored ``old`` mean exactly ``new`` (the same table and the same secret values)? Then it is
    kept as is: a re-applied file changes nothing (its secrets' ciphertexts differ each time)."""
    if old is None:
        return False
    try:
        doc_old, doc_new = json.loads(old), json.loads(new.stored)
        if doc_old.get("config") != doc_new.get("config"):
            return False
        enc = doc_old.get("secrets") or {}
        if set(enc) != set(new.secrets):
            return False
        return not enc or (cipher is not None and all(cipher.decrypt(enc[p]) == v for p, v in new.secrets.items()))
    except (ValueError, TypeError, AttributeError, UndecryptableRecord):
        return False
