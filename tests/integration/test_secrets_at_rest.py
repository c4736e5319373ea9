"""Per-event secrets are encrypted at rest (issue 9, item 2): what Redis holds, what MONITOR, the AOF and
an RDB dump show, key rotation, an unknown key, a missing key, and the dead-letter retention."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from pydantic import SecretStr

from sandbox.localredis import EmbeddedRedis
from tests.integration.test_delivery import Scripted, deliverer
from worker import errors
from worker.cli import cli
from worker.crypto import PREFIX, WireCipher, generate_key
from worker.ops.keys_cli import rotate_all
from worker.publish import Publisher
from worker.settings import ConfigError, Settings, reset_settings
from worker.store import Store
from worker.store.deadletters import DeadLetterQueue

SERVICE_KEY = "sk-at-rest-9f8e7d6c5b4a"
DESTS = """
[destinations.lt]
vendor = "ltiaas"
base_url = "http://127.0.0.1:9"
api_key_env = "AT_REST_LTIAAS_KEY"
"""


def lt_event(**over: Any) -> dict[str, Any]:
    return {"destination": "lt", "learner_id": "learner-rest", "score_given": 7, "score_maximum": 10,
            "target": {"line_item_id": "https://lms.example/li/1", "service_key": SERVICE_KEY}, **over}


@pytest.fixture
def settings(redis_client: redis.Redis, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("AT_REST_LTIAAS_KEY", "at-rest-ltiaas-api-key")
    (tmp_path / "d.toml").write_text(DESTS)
    monkeypatch.setenv("GRADESYNC_REDIS_URL", redis_url)
    monkeypatch.setenv("GRADESYNC_DESTINATIONS", str(tmp_path / "d.toml"))
    reset_settings()
    return Settings()


def test_the_stored_event_is_ciphertext_and_monitor_never_shows_the_secret(
    settings: Settings, redis_client: redis.Redis, redis_url: str
) -> None:
    publisher = Publisher(settings)
    monitor = redis.Redis.from_url(redis_url).monitor()
    seen: list[str] = []
    try:
        monitor.__enter__()
        [eid] = publisher.publish_many([lt_event()])
        redis_client.echo("end-of-publish")
        while True:
            command = monitor.next_command()["command"]
            seen.append(command)
            if "end-of-publish" in command:
                break
    finally:
        monitor.__exit__()
        publisher.close()
    assert any("EVALSHA" in c or "EVAL" in c for c in seen), seen  # the publish was watched
    assert not [c for c in seen if SERVICE_KEY in c]
    raw = redis_client.hget(f"gradesync:event:{eid}", "wire")
    assert raw is not None and raw.startswith(PREFIX.encode())
    assert not [k for k in redis_client.scan_iter() if SERVICE_KEY.encode() in repr(redis_client.dump(k)).encode()]
    record = Store.connect(settings).ledger.load(eid)  # and the ledger reads it back
    assert record is not None and SERVICE_KEY in record.wire and record.wire_error is None


def test_rotation_reencrypts_with_the_first_key_and_an_unknown_key_dead_letters(
    settings: Settings, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = settings.secret_key
    assert old is not None
    publisher = Publisher(settings)
    [eid, other] = publisher.publish_many([lt_event(), lt_event(learner_id="learner-rest-2")])
    publisher.close()
    new_key = generate_key()
    both = settings.model_copy(update={"secret_key": SecretStr(f"{new_key},{old.get_secret_value()}")})
    before = redis_client.hget(f"gradesync:event:{eid}", "wire")
    counts = rotate_all(Store.connect(settings, redis_client).ledger, WireCipher.from_settings(both))
    assert counts == {"rotated": 2, "changed_meanwhile": 0, "undecryptable": 0}
    monkeypatch.setenv("GRADESYNC_SECRET_KEY", f"{new_key},{old.get_secret_value()}")
    reset_settings()
    result = CliRunner().invoke(cli, ["keys", "rotate"])  # the command does the same, and says so
    assert result.exit_code == 0 and "re-encrypted 2 stored event(s) with the first of 2 key(s)" in result.output
    assert redis_client.hget(f"gradesync:event:{eid}", "wire") != before
    only_new = settings.model_copy(update={"secret_key": SecretStr(new_key)})
    record = Store.connect(only_new).ledger.load(eid)
    assert record is not None and SERVICE_KEY in record.wire  # readable with the new key alone

    # an event encrypted with a key nobody has any more: a dead letter with a reason, not a crash loop
    stranger = settings.model_copy(update={"secret_key": SecretStr(generate_key())})
    store = Store.connect(stranger)
    d = deliverer(stranger, store, Scripted([errors.RetryableError("must not be called")]))
    rec = store.ledger.load(other)
    assert rec is not None and rec.wire == "" and rec.wire_error is not None
    assert d.run(other, rec.token) == "dead_lettered"
    dead = store.ledger.load(other)
    assert dead is not None and dead.state == "dead_lettered"
    reason = dead.fields["reason"]
    assert "cannot decrypt the stored event" in reason and "GRADESYNC_SECRET_KEY" in reason


def test_a_missing_or_malformed_key_is_a_clear_error_at_start_up(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="GRADESYNC_SECRET_KEY is not set"):
        Publisher(settings.model_copy(update={"secret_key": None}))
    with pytest.raises(ConfigError, match="key 2 of 2 is not a Fernet key"):
        Publisher(settings.model_copy(update={"secret_key": SecretStr(f"{generate_key()},not-a-key")}))
    monkeypatch.delenv("GRADESYNC_SECRET_KEY")
    monkeypatch.setenv("GRADESYNC_API_TOKEN", "at-rest-api-token-0123456789abcdef0123")
    reset_settings()
    runner = CliRunner()
    for args in (["worker"], ["keys", "rotate"], ["serve", "--port", "0"], ["config", "check"]):
        result = runner.invoke(cli, args)
        assert result.exit_code != 0, args
        assert "GRADESYNC_SECRET_KEY is not set" in result.output, (args, result.output)
        assert "Traceback" not in result.output


def test_dead_letters_expire_after_the_retention_and_leave_the_index(
    settings: Settings, redis_client: redis.Redis
) -> None:
    short = settings.model_copy(update={"dead_letter_ttl_days": 1.0})
    publisher = Publisher(short)
    [eid] = publisher.publish_many([lt_event()])
    publisher.close()
    store = Store.connect(short)
    d = deliverer(short, store, Scripted([errors.Forbidden("score.post: HTTP 403", status=403)]))
    rec = store.ledger.load(eid)
    assert rec is not None and d.run(eid, rec.token) == "dead_lettered"
    ttl = redis_client.ttl(f"gradesync:event:{eid}")
    assert 86_000 < ttl <= 86_400 and 86_000 < redis_client.ttl(f"gradesync:event:{eid}:attempts") <= 86_400
    dlq = DeadLetterQueue(store)
    assert dlq.count() == 1 and dlq.count("lt") == 1
    # the record expires (simulated: its index entry is older than the retention)
    redis_client.delete(f"gradesync:event:{eid}", f"gradesync:event:{eid}:attempts")
    for key in ("gradesync:dlq", "gradesync:dlq:lt"):
        redis_client.zadd(key, {eid: time.time() - 86_400 - 5})
    assert dlq.count("lt") == 0 and dlq.count() == 0
    assert dlq.list()[1] == 0

    keep = settings.model_copy(update={"dead_letter_ttl_days": 0})  # 0: kept until requeued or purged
    publisher = Publisher(keep)
    [kept] = publisher.publish_many([lt_event(learner_id="learner-kept")])
    publisher.close()
    store = Store.connect(keep)
    d = deliverer(keep, store, Scripted([errors.Forbidden("score.post: HTTP 403", status=403)]))
    rec = store.ledger.load(kept)
    assert rec is not None and d.run(kept, rec.token) == "dead_lettered"
    assert redis_client.ttl(f"gradesync:event:{kept}") == -1


def test_the_aof_and_an_rdb_dump_hold_no_secret(settings: Settings, tmp_path: Path) -> None:
    server = EmbeddedRedis.start(tmp_path / "persisted", persist=True)  # AOF on, like production
    try:
        own = settings.model_copy(update={"redis_url": server.url})
        publisher = Publisher(own)
        [eid] = publisher.publish_many([lt_event()])
        publisher.close()
        client = redis.Redis.from_url(server.url)
        client.config_set("rdbcompression", "no")  # so a plaintext secret could not hide in LZF
        client.bgsave()
        files: dict[str, bytes] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            files = {str(p): p.read_bytes() for p in (tmp_path / "persisted").rglob("*")
                     if p.is_file() and (p.suffix in (".aof", ".rdb") or ".aof." in p.name)}
            aof = b"".join(v for k, v in files.items() if ".aof" in k)
            if eid.encode() in aof and any(k.endswith(".rdb") and eid.encode() in v for k, v in files.items()):
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"the AOF / RDB never showed the event: {sorted(files)}")
        assert {k: SERVICE_KEY.encode() in v for k, v in files.items()} == dict.fromkeys(files, False)
        assert b"fernet:" in b"".join(files.values())
        client.close()
    finally:
        server.stop()

