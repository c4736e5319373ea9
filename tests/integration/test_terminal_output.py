"""Vendor text and ids shown by the CLI cannot drive the operator's terminal (issue 9, item 7): escapes in
a vendor's message, in a reason, and in the learner id of a record stored before ids were checked."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from tests.integration.test_delivery import TOML, Scripted, deliverer, event
from worker import errors
from worker.cli import cli
from worker.publish import Publisher
from worker.settings import Settings, reset_settings
from worker.store import Store

HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x9b31m\u202e"


def test_status_and_dlq_commands_show_escapes_instead_of_sending_them(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "d.toml").write_text(TOML)
    monkeypatch.setenv("UNIT_LT_KEY", "k")
    monkeypatch.setenv("GRADESYNC_REDIS_URL", redis_url)
    monkeypatch.setenv("GRADESYNC_DESTINATIONS", str(tmp_path / "d.toml"))
    reset_settings()
    settings = Settings()
    store = Store.connect(settings)
    publisher = Publisher(settings)
    [eid] = publisher.publish_many([event()])
    publisher.close()
    failure = errors.Forbidden(f"score.post: HTTP 403 {HOSTILE}", status=403, vendor_message=f"nope {HOSTILE}",
                               excerpt=HOSTILE)
    rec = store.ledger.load(eid)
    assert rec is not None
    assert deliverer(settings, store, Scripted([failure])).run(eid, rec.token) == "dead_lettered"
    # a record from before ids were checked
    redis_client.hset(store.keys.event(eid), "learner_id", f"old{HOSTILE}")

    runner = CliRunner()
    outputs = {}
    for args in (["status", eid], ["dlq", "list"], ["dlq", "show", eid], ["status", eid, "--json"],
                 ["dlq", "show", eid, "--json"], ["dlq", "export"], ["dlq", "list", "--json"]):
        result = runner.invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, (args, result.output)
        outputs[" ".join(args)] = result.output
    bad = {k: v for k, v in outputs.items()
           if any(c in v for c in ("\x1b", "\x07", "\x9b", "\u202e"))}
    assert bad == {}
    assert "\\x1b]0;pwned\\x07" in outputs[f"status {eid}"]  # shown, visibly
    assert "\\x1b" in outputs["dlq list"] and "\\x1b" in outputs[f"dlq show {eid}"]
