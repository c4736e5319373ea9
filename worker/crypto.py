"""Encryption at rest of each stored event (its ``wire`` field, where the per-event secrets live).

The ``wire`` field of ``{p}:event:<id>`` holds the whole event, per-event credentials included (the
``SecretStr`` fields of a vendor's target, e.g. a service key or a learner's token). It is stored as
``fernet:<token>``: `cryptography`'s Fernet (AES-128-CBC + HMAC-SHA256, authenticated, with a
timestamp), so a Redis dump, an AOF file, a replica or ``MONITOR`` shows only ciphertext. Why Fernet: it
is the one high-level, misuse-resistant recipe of a library the project already depends on (for an
adapter's AES-CMAC signatures), and :class:`cryptography.fernet.MultiFernet` gives key rotation for free.

``GRADESYNC_SECRET_KEY`` is one Fernet key (``gradesync keys generate``) or several, comma-separated:
the **first encrypts**, **all decrypt**. Rotation without a moment where one process cannot read what
another wrote: add the new key *second* everywhere (``old,new``: all can read it, none writes it yet),
then put it first (``new,old``), run ``gradesync keys rotate`` (re-encrypts every stored event with the
first key), then drop the old key. A record encrypted with a key that is no longer listed cannot be read: the worker
dead-letters it with a reason saying so (add the key back and requeue it).

A ``wire`` without the ``fernet:`` prefix is a record written before encryption existed: it is read as
is, and ``gradesync keys rotate`` encrypts it.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from worker.settings import CommonSettings, ConfigError

PREFIX = "fernet:"
ENV = "GRADESYNC_SECRET_KEY"


class UndecryptableRecord(Exception):
    """A stored event could not be decrypted with any configured key."""


def generate_key() -> str:
    """A new random Fernet key (URL-safe base64 of 32 bytes)."""
    return Fernet.generate_key().decode("ascii")


class WireCipher:
    """Encrypts and decrypts stored events with the keys of ``GRADESYNC_SECRET_KEY``."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ConfigError(f"{ENV} is empty")
        fernets: list[Fernet] = []
        for n, key in enumerate(keys, start=1):
            try:
                fernets.append(Fernet(key.encode("ascii")))
            except (ValueError, UnicodeEncodeError):
                raise ConfigError(
                    f"{ENV}: key {n} of {len(keys)} is not a Fernet key (32 bytes, URL-safe base64, 44 "
                    "characters); generate one with `gradesync keys generate`"
                ) from None
        self._multi = MultiFernet(fernets)
        self.key_count = len(fernets)

    @classmethod
    def parse(cls, value: str) -> WireCipher:
        return cls([k.strip() for k in value.split(",") if k.strip()])

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> WireCipher:
        """The configured cipher; :class:`ConfigError` saying what to do when the key is missing or bad."""
        cipher = cls.optional(settings)
        if cipher is None:
            raise ConfigError(
                f"{ENV} is not set: stored events (and their per-event secrets) are encrypted at rest with it. "
                f"Generate one with `gradesync keys generate` and set {ENV} for every producer, worker and "
                "`gradesync serve` (the same key everywhere)"
            )
        return cipher

    @classmethod
    def optional(cls, settings: CommonSettings) -> WireCipher | None:
        """The configured cipher, None when no key is set; :class:`ConfigError` when a key is malformed."""
        value = settings.secret_key.get_secret_value() if settings.secret_key is not None else ""
        if not value.strip():
            return None
        return cls.parse(value)

    def encrypt(self, plaintext: str) -> str:
        return PREFIX + self._multi.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, stored: str) -> str:
        """The plaintext of a stored ``wire``; :class:`UndecryptableRecord` when no key opens it."""
        if not is_encrypted(stored):
            return stored
        try:
            return self._multi.decrypt(stored[len(PREFIX):].encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise UndecryptableRecord(
                f"the stored event was encrypted with a key that is not in {ENV} (or it was altered); "
                "add the old key back (after the current one) and requeue it"
            ) from None

    def rotate(self, stored: str) -> str:
        """``stored`` re-encrypted with the first key (a plaintext record encrypted)."""
        if not is_encrypted(stored):
            return self.encrypt(stored)
        try:
            return PREFIX + self._multi.rotate(stored[len(PREFIX):].encode("ascii")).decode("ascii")
        except InvalidToken:
            raise UndecryptableRecord(f"encrypted with a key that is not in {ENV}") from None


def is_encrypted(stored: str) -> bool:
    return stored.startswith(PREFIX)
