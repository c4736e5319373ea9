"""The LTI commands as a user runs them: `gradesync keys generate-lti`, `config check` on the tool key, and
`gradesync destinations check` fetching a token from `gradesync sandbox`'s LTI platform."""

from __future__ import annotations

import json
import stat

import pytest

from sandbox import make_app, start
from sandbox.control import SandboxClient
from sandbox.lti_demo import demo_jwks, demo_key
from tests.e2e.test_cli import GRADESYNC, Env, env  # noqa: F401 - the fixture
from tests.integration.test_lti_independent_platform import CLIENT_ID, LibraryServer
from worker.lti_keys import load_key

pytestmark = pytest.mark.e2e

AGS = "https://purl.imsglobal.org/spec/lti-ags/scope/"


def test_keys_generate_prints_a_pair_whose_kid_matches(env: Env) -> None:  # noqa: F811
    out = env.run("keys", "generate-lti")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    kid = lines[lines.index(next(ln for ln in lines if ln.startswith("# kid"))) + 1]
    pem = out.stdout[out.stdout.index("-----BEGIN PRIVATE KEY-----"):out.stdout.index("-----END PRIVATE KEY-----") + 25]
    assert load_key(pem, kid=kid).kid == kid
    jwk = json.loads(lines[-1])
    assert jwk["kid"] == kid and jwk["alg"] == "RS256" and "d" not in jwk

    as_json = json.loads(env.run("keys", "generate-lti", "--json").stdout)
    assert load_key(as_json["private_key"], kid=as_json["kid"]).kid == as_json["jwk"]["kid"]

    target = env.tmp / "tool-key.pem"
    written = env.run("keys", "generate-lti", "--private-key-out", str(target))
    assert written.returncode == 0 and "PRIVATE KEY-----" not in written.stdout
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert load_key(target.read_text()).kid in written.stdout


def test_config_check_refuses_a_key_that_does_not_match_its_kid(env: Env) -> None:  # noqa: F811
    ok = env.run("config", "check")
    assert ok.returncode == 0, ok.stderr
    text = env.destinations.read_text()
    env.destinations.write_text(text.replace(f'kid = "{demo_key().kid}"', 'kid = "2024-01-key"'))
    bad = env.run("config", "check")
    assert bad.returncode == 1
    assert "destination 'lti'" in bad.stderr and "kid '2024-01-key' does not match the key" in bad.stderr
    assert "PRIVATE KEY" not in bad.stderr
    worker = env.run("worker")  # the worker refuses the same file
    assert worker.returncode != 0 and "kid '2024-01-key' does not match the key" in worker.stderr


def test_destinations_check_fetches_a_token_for_real(env: Env) -> None:  # noqa: F811
    jwks_file = env.tmp / "tool-jwks.json"
    jwks_file.write_text(json.dumps(demo_jwks()))
    env.start("sandbox", [*GRADESYNC, "sandbox", *[a for v, p in env.ports.items() for a in (f"--{v}-port", str(p))],
                          "--lti-ags-jwks-file", str(jwks_file)], "lti_ags")
    out = env.run("destinations", "check", "lti")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"granted  {AGS}score" in out.stdout and f"granted  {AGS}lineitem" in out.stdout
    assert f"kid={demo_key().kid}" in out.stdout and "OK" in out.stdout
    platform = SandboxClient(f"http://127.0.0.1:{env.ports['lti_ags']}")
    platform.configure(allowed_scopes=[f"{AGS}score"])
    partial = env.run("destinations", "check", "lti")
    assert partial.returncode == 1 and f"REFUSED  {AGS}lineitem" in partial.stdout
    assert len(platform.state()["assertions"]) == 2
    platform.close()
    other = env.run("destinations", "check", "ti")
    assert other.returncode == 1 and "thoughtindustries" in other.stderr


def test_destinations_check_against_the_independent_platform(env: Env) -> None:  # noqa: F811
    """`destinations check` fetching a token from lti1p3platform 0.1.8 behind authlib's RFC 7523 check."""
    jwks_host = start(make_app("lti_ags"))  # any HTTP server: a fault answers the tool's JWKS document
    SandboxClient(jwks_host.url).fault(status=200, body=demo_jwks(), path="jwks", times=-1)
    library = start(LibraryServer(f"{jwks_host.url}/.well-known/jwks.json"))
    try:
        with env.destinations.open("a") as f:
            f.write(f'\n[destinations.indep]\nvendor = "lti_ags"\nbase_url = "{library.url}"\n'
                    f'client_id = "{CLIENT_ID}"\ntoken_url = "{library.url}/token"\n'
                    f'private_key_env = "IT_LTI_KEY"\nkid = "{demo_key().kid}"\n')
        out = env.run("destinations", "check", "indep")
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"granted  {AGS}score" in out.stdout and f"granted  {AGS}lineitem" in out.stdout
        assert library.app.refusals == []  # type: ignore[attr-defined]
    finally:
        library.stop()
        jwks_host.stop()
