"""LTI 1.3 commands: ``gradesync keys generate-lti`` and the ``check`` command of ``gradesync destinations``.

``keys generate-lti`` prints a new RSA key pair for a tool registration: the private key PEM (for the
destination's ``private_key_env`` variable), its ``kid`` (RFC 7638 thumbprint), the public key PEM and the
JWKS entry (for platforms that take a pasted key instead of the JWKS URL).

``destinations check NAME`` asks the platform for a token for real — the same signed client assertion
the worker sends — and reports what it granted.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click

from worker.lti_keys import generate_key
from worker.settings import ConfigError, get_settings
from worker.vendors.lti import LtiAgsDestination


@click.command("generate-lti")
@click.option("--bits", type=click.Choice(["2048", "3072", "4096"]), default="2048", show_default=True)
@click.option("--private-key-out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write the private key PEM to this new file (mode 0600) instead of printing it.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: kid, private_key, public_key, jwk.")
def lti_keys_generate(bits: str, private_key_out: Path | None, as_json: bool) -> None:
    """Print a new RSA key pair for an LTI 1.3 tool registration: its kid and its JWKS entry."""
    key = generate_key(int(bits))
    private = key.private_pem().decode("ascii")
    if private_key_out is not None:
        fd = os.open(private_key_out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(private)
    if as_json:
        doc = {"kid": key.kid, "public_key": key.public_pem().decode("ascii"), "jwk": key.jwk()}
        if private_key_out is None:
            doc["private_key"] = private
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(f"# kid (put it in destinations.toml as kid = \"...\"):\n{key.kid}\n")
    if private_key_out is None:
        click.echo("# private key: the value of the variable named by private_key_env (keep it secret):")
        click.echo(private)
    else:
        click.echo(f"# private key written to {private_key_out} (mode 0600)\n")
    click.echo("# public key (platforms that take a PEM, e.g. Moodle's 'RSA key'):")
    click.echo(key.public_pem().decode("ascii"))
    click.echo("# JWK (platforms that take pasted JSON, e.g. Canvas 'Manual Entry'; `gradesync serve` publishes it"
               " at /.well-known/jwks.json):")
    click.echo(json.dumps(key.jwk()))


@click.command("check")
@click.argument("name")
def lti_check_cmd(name: str) -> None:
    """Fetch a token from an LTI 1.3 destination's platform and report the granted scopes."""

    from worker import errors
    from worker.adapters.base import AdapterContext, NullCache
    from worker.adapters.client import make_client
    from worker.adapters.lti_auth import TokenSource

    try:
        dests = get_settings().destinations()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    dest = dests.get(name)
    if dest is None:
        raise click.ClickException(f"unknown destination {name!r} (configured: {', '.join(sorted(dests))})")
    if not isinstance(dest, LtiAgsDestination):
        raise click.ClickException(f"destination {name!r} is {dest.vendor}; this check fetches LTI 1.3 tokens")
    if dest.missing_secrets():
        raise click.ClickException(f"destination {name!r}: environment variable not set for "
                                   f"{', '.join(dest.missing_secrets())}")
    http = make_client(dest)
    try:
        source = TokenSource(dest, AdapterContext(http=http, cache=NullCache()))
        click.echo(f"{name}: token {dest.token_url} client_id={dest.client_id} aud={source.audience} kid={dest.kid}")
        token = source.fetch(dest.scopes)
    except errors.GradeSyncError as exc:
        text = exc.describe() if isinstance(exc, errors.DeliveryError) else exc.message
        raise click.ClickException(f"{name}: no token: {text}") from exc
    finally:
        http.close()
    missing = [s for s in dest.scopes if s not in token.granted]
    click.echo(f"  token valid for ~{max(0, int(token.expires_at - time.time()))} s (after the refresh margin)")
    for scope in dest.scopes:
        click.echo(f"  {'granted' if scope in token.granted else 'REFUSED'}  {scope}")
    for scope in token.granted:
        if scope not in dest.scopes:
            click.echo(f"  granted  {scope} (not requested)")
    if missing:
        click.echo(f"{name}: the platform did not grant {len(missing)} requested scope(s)", err=True)
        sys.exit(1)
    click.echo(f"{name}: OK, a token with every requested scope")
