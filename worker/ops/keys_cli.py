"""`gradesync keys`: generate a ``GRADESYNC_SECRET_KEY`` and re-encrypt stored events after a rotation.

Rotation, step by step (see :mod:`worker.crypto`)::

    gradesync keys generate                       # the new key
    GRADESYNC_SECRET_KEY=<old>,<new>              # everywhere, rolling restart: all can read <new>
    GRADESYNC_SECRET_KEY=<new>,<old>              # everywhere, rolling restart: <new> encrypts
    gradesync keys rotate                         # every stored event re-encrypted with <new>
    GRADESYNC_SECRET_KEY=<new>                    # drop the old key; restart again
"""

from __future__ import annotations

import click

from worker.crypto import UndecryptableRecord, WireCipher, generate_key
from worker.ops.lti_cli import lti_keys_generate
from worker.registry.codec import rotate as rotate_entry
from worker.registry.store import Registry
from worker.settings import ConfigError, get_settings
from worker.store import Store
from worker.store.ledger import Ledger


def rotate_all(ledger: Ledger, cipher: WireCipher, *, batch: int = 500) -> dict[str, int]:
    """Re-encrypt the ``wire`` of every stored event with the first key: counts of what happened."""
    counts = {"rotated": 0, "changed_meanwhile": 0, "undecryptable": 0}
    prefix = ledger.keys.event("")
    for key in ledger.r.scan_iter(match=f"{prefix}*", count=batch, _type="HASH"):
        raw = ledger.r.hget(key, "wire")
        if raw is None:
            continue
        stored = raw.decode() if isinstance(raw, bytes) else str(raw)
        try:
            fresh = cipher.rotate(stored)
        except UndecryptableRecord:
            counts["undecryptable"] += 1
            continue
        event_id = (key.decode() if isinstance(key, bytes) else str(key))[len(prefix):]
        if ledger.swap_wire(event_id, stored, fresh):
            counts["rotated"] += 1
        else:
            counts["changed_meanwhile"] += 1
    return counts


@click.group("keys")
def keys_group() -> None:
    """Encryption keys of the stored events (GRADESYNC_SECRET_KEY), and the LTI tool's key pair (generate-lti)."""


@keys_group.command("generate")
def keys_generate() -> None:
    """Print a new random key for GRADESYNC_SECRET_KEY."""
    click.echo(generate_key())


@keys_group.command("rotate")
def keys_rotate() -> None:
    """Re-encrypt every stored event with the first key of GRADESYNC_SECRET_KEY (run after adding a new
    key in front of the old one; the old one can be removed afterwards)."""
    settings = get_settings()
    try:
        cipher = WireCipher.from_settings(settings)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    store = Store.connect(settings)
    counts = rotate_all(store.ledger, cipher)
    click.echo(f"re-encrypted {counts['rotated']} stored event(s) with the first of {cipher.key_count} key(s); "
               f"{counts['changed_meanwhile']} changed meanwhile (run again), "
               f"{counts['undecryptable']} encrypted with a key not in GRADESYNC_SECRET_KEY")
    dests = rotate_registry(Registry(store.redis, store.keys), cipher)
    if any(dests.values()):
        click.echo(f"re-encrypted the secrets of {dests['rotated']} registered destination(s); "
                   f"{dests['changed_meanwhile']} changed meanwhile (run again), "
                   f"{dests['undecryptable']} encrypted with a key not in GRADESYNC_SECRET_KEY")
    if counts["undecryptable"] or counts["changed_meanwhile"] or dests["undecryptable"] or dests["changed_meanwhile"]:
        raise SystemExit(1)


def rotate_registry(registry: Registry, cipher: WireCipher) -> dict[str, int]:
    """Re-encrypt the secrets given directly of every registered destination (worker.registry)."""
    counts = {"rotated": 0, "changed_meanwhile": 0, "undecryptable": 0}
    for name, stored in list(registry.items()):
        try:
            fresh = rotate_entry(stored, cipher)
        except UndecryptableRecord:
            counts["undecryptable"] += 1
            continue
        if fresh == stored:
            continue
        counts["rotated" if registry.swap(name, stored, fresh) else "changed_meanwhile"] += 1
    return counts


keys_group.add_command(lti_keys_generate)  # `gradesync keys generate-lti`
