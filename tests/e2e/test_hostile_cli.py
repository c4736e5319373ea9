"""Hostile input and key problems met by the `gradesync` command as a user runs it (separate processes):
per-line errors and no traceback, escapes shown not sent, one clear line for a missing or malformed key."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from tests.e2e.test_cli import Env, env  # noqa: F401 - the fixture
from tests.integration.test_hostile_corpus import CORPUS, load

pytestmark = pytest.mark.e2e


def test_publish_prints_per_line_errors_without_a_traceback(env: Env, redis_client: redis.Redis) -> None:  # noqa: F811
    lines = [load(CORPUS / name)[1] for name in ("01-score-5000-digits.case", "13-metadata-nested-5000.case",
                                                 "24-learner-id-terminal-escape.case")]
    source = env.tmp / "hostile.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    proc = env.run("publish", str(source))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "line 1: score_given: a number with 5000 digits" in proc.stderr
    assert "line 2: metadata: nested too deeply" in proc.stderr
    assert "line 3: learner_id: must not contain control characters" in proc.stderr
    assert "\x1b" not in proc.stderr  # the escape is shown, never sent to the terminal
    assert "3 invalid record(s); nothing published" in proc.stderr
    assert redis_client.dbsize() == 0


@pytest.mark.parametrize(("key", "expected"), [
    (None, "GRADESYNC_SECRET_KEY is not set"),
    ("not-a-fernet-key", "GRADESYNC_SECRET_KEY: key 1 of 1 is not a Fernet key"),
])
def test_a_missing_or_malformed_key_is_one_clear_line(env: Env, key: str | None, expected: str,  # noqa: F811
                                                      tmp_path: Path) -> None:
    env.vars.pop("GRADESYNC_SECRET_KEY", None)
    if key is not None:
        env.vars["GRADESYNC_SECRET_KEY"] = key
    source = tmp_path / "one.jsonl"
    source.write_text('{"destination": "ti", "learner_id": "5e1c7d2a-9b3f-4c6d-8e0a-1b2c3d4e5f60", '
                      '"target": {"assignment_id": "6b0f1c2e-3d4a-4b5c-8d6e-7f8091a2b3c4"}}\n')
    commands = [("worker",), ("publish", str(source)), ("config", "check")]
    if key is not None:  # without a key the read-only `dlq list` still works; with a broken one nothing does
        commands.append(("dlq", "list"))
    for args in commands:
        proc = env.run(*args)
        assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
        assert expected in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr, args
