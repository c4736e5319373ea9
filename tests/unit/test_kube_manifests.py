"""The Kubernetes manifests rendered from the example files: the invariants that matter in production."""

from __future__ import annotations

import re
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
from flower.urls import handlers as flower_handlers

from worker import heartbeat
from worker.kube.plan import ClusterConfig, load_config, make_plan, per_process_rate, processes_usable
from worker.kube.render import SECRETS_FILE, render, to_text
from worker.settings import ConfigError, Settings, parse_destinations

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
DESTINATIONS = ROOT / "deploy" / "destinations.example.toml"


def _plan(**overrides: Any) -> Any:
    config = load_config(KUBE / "cluster.example.toml")
    if overrides:
        config = ClusterConfig.model_validate({**config.model_dump(), **overrides})
    return make_plan(config, DESTINATIONS.read_text())


def _objects(plan: Any, *, secrets: bool = False) -> list[dict[str, Any]]:
    return [o for name, objs in render(plan).items() if secrets or name != SECRETS_FILE for o in objs]


def _kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def _workers(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in _kind(objs, "Deployment") if o["metadata"]["name"].startswith("gradesync-worker-")]


def _env_list(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    return env


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_the_committed_example_is_what_the_generator_renders() -> None:
    for name, text in to_text(_plan()).items():
        committed = KUBE / "example" / name
        assert committed.exists(), f"{committed} missing: re-run python -m worker.kube (see cluster.example.toml)"
        assert committed.read_text() == text, f"{committed} is stale: re-run python -m worker.kube"


def test_worker_grace_period_covers_the_worker_stop_grace() -> None:
    # the worker's graceful stop (issue 9 item 11: GRADESYNC_SHUTDOWN_GRACE, default 25 s), whatever the
    # settings field is called once it exists
    fields = [f for name, f in Settings.model_fields.items() if "shutdown_grace" in name]
    settings_grace = max([25.0, *(float(f.default) for f in fields if isinstance(f.default, int | float))])
    workers = _workers(_objects(_plan()))
    assert workers
    for dep in workers:
        pod = dep["spec"]["template"]["spec"]
        grace = float(_env(pod["containers"][0])["GRADESYNC_SHUTDOWN_GRACE"])
        assert pod["terminationGracePeriodSeconds"] >= grace + 5, dep["metadata"]["name"]
        assert pod["terminationGracePeriodSeconds"] >= settings_grace + 5, dep["metadata"]["name"]


def _app_routes() -> set[str]:
    from worker.ops.api import create_app

    settings = Settings(destinations_file=DESTINATIONS, insecure_dev=True, redis_url="redis://127.0.0.1:1/0")
    return set(create_app(settings).openapi()["paths"])


def test_probes_point_at_real_routes(tmp_path: Path) -> None:
    objs = _objects(_plan())
    web_routes = _app_routes()
    flower_routes = {h[0] for h in flower_handlers if isinstance(h, tuple)}
    checked = 0
    for dep in _kind(objs, "Deployment"):
        for c in dep["spec"]["template"]["spec"]["containers"]:
            for probe in ("readinessProbe", "livenessProbe"):
                spec = c.get(probe)
                if spec is None:
                    continue
                checked += 1
                if "httpGet" in spec:
                    routes = flower_routes if c["name"] == "flower" else web_routes
                    assert spec["httpGet"]["path"] in routes, (dep["metadata"]["name"], probe)
                    assert spec["httpGet"]["port"] in {p["name"] for p in c["ports"]}
                else:  # the worker's heartbeat probe: a real module whose check fails on a stale file
                    cmd = spec["exec"]["command"]
                    assert cmd[:3] == ["python", "-m", "worker.heartbeat"]
                    stale = tmp_path / f"hb{checked}"
                    assert heartbeat.main([cmd[3], str(stale)]) == 1
                    stale.touch()
                    assert heartbeat.main([cmd[3], str(stale)]) == 0
                    assert not heartbeat.file_is_fresh(stale, now=time.time() + heartbeat.MAX_AGE + 1)
                    assert _env(c)["GRADESYNC_HEARTBEAT_FILE"] == cmd[4]
    assert checked >= 5
    web = next(d for d in _kind(objs, "Deployment") if d["metadata"]["name"] == "gradesync-web")
    container = web["spec"]["template"]["spec"]["containers"][0]
    # readiness checks Redis; liveness must not (a Redis outage must not restart the pods)
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"


def test_no_secret_value_in_a_configmap() -> None:
    everything = _objects(_plan(), secrets=True)
    secret_values = {str(v) for s in _kind(everything, "Secret") for v in s["stringData"].values()}
    secret_keys = {k for s in _kind(everything, "Secret") for k in s["stringData"]}
    for cm in _kind(everything, "ConfigMap"):
        for text in cm["data"].values():
            for value in secret_values:
                assert value not in text
            for key in secret_keys:  # a *_env key names the variable; no `NAME = value` assignment of it
                assert not re.search(rf"^\s*{re.escape(key)}\s*=", text, re.M)
        # and the mounted destinations file is one the settings accept (they refuse inline secrets)
        parse_destinations(tomllib.loads(cm["data"]["destinations.toml"]), environ={})


@pytest.mark.parametrize("broker", ["redis", "redis-sentinel", "rabbitmq"])
def test_every_secret_reference_resolves(broker: str) -> None:
    everything = _objects(_plan(keda={"broker": broker, "sentinel_addresses": "s1:26379"}), secrets=True)
    secrets = {s["metadata"]["name"]: set(s["stringData"]) for s in _kind(everything, "Secret")}
    for dep in _kind(everything, "Deployment"):
        c = dep["spec"]["template"]["spec"]["containers"][0]
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in secrets[ref["name"]], (dep["metadata"]["name"], ref)
        for ef in c.get("envFrom", []):
            assert ef["secretRef"]["name"] in secrets
    dest_envs = secrets["gradesync-destinations"]
    assert dest_envs == {"ACME_LS_SECRET", "ACME_LTIAAS_API_KEY", "ACME_EDLINK_TOKEN", "ACME_TI_API_KEY"}
    for auth in _kind(everything, "TriggerAuthentication"):
        for ref in auth["spec"]["secretTargetRef"]:
            assert ref["key"] in secrets[ref["name"]]
    broker_env = {e["name"] for d in _workers(everything) for e in _env_list(d)}
    assert ("GRADESYNC_BROKER_URL" in broker_env) == (broker == "rabbitmq")  # else the broker is the Redis URL


@pytest.mark.parametrize("broker", ["redis", "redis-sentinel", "rabbitmq"])
def test_each_group_scales_on_its_one_queue_not_one_trigger_per_destination(broker: str) -> None:
    keda = {"broker": broker, "sentinel_addresses": "s1:26379,s2:26379"}
    objs = _objects(_plan(keda=keda))
    workers = {d["metadata"]["name"]: d for d in _workers(objs)}
    seen: dict[str, str] = {}
    for so in _kind(objs, "ScaledObject"):
        target = workers[so["spec"]["scaleTargetRef"]["name"]]  # it scales a real worker Deployment
        args = target["spec"]["template"]["spec"]["containers"][0]["args"]
        group = args[args.index("--group") + 1]
        assert "--destinations" not in args  # not a list of thousands of names
        assert args[args.index("--processes") + 1] == "1"  # one process per pod: KEDA scales pods
        [trig] = so["spec"]["triggers"]  # the total backlog of the group's queue
        meta = trig["metadata"]
        assert trig["type"] == {"redis": "redis", "redis-sentinel": "redis-sentinel", "rabbitmq": "rabbitmq"}[broker]
        seen[group] = meta["queueName"] if trig["type"] == "rabbitmq" else meta["listName"]
    assert seen == {"default": "grades", "thoughtindustries": "grades.thoughtindustries"}


def test_a_dedicated_group_must_match_the_destinations_group_key() -> None:
    text = DESTINATIONS.read_text().replace('group = "thoughtindustries"\n', "")
    config = load_config(KUBE / "cluster.example.toml")
    with pytest.raises(ConfigError, match="no group"):
        make_plan(config, text)
    loose = ClusterConfig.model_validate({**config.model_dump(), "groups": {}})
    with pytest.raises(ConfigError, match="list it in the cluster file"):
        make_plan(loose, DESTINATIONS.read_text())


def test_replicas_are_capped_by_what_the_rate_limit_can_use() -> None:
    plan = _plan()
    ti = next(g for g in plan.groups if g.name == "thoughtindustries")
    # 120/min = 2 events/s; one process of 8 threads at 0.5 s does 16/s: one process is all it can use
    assert ti.usable == {"acme-ti": 1} and ti.max_replicas == 1
    default = next(g for g in plan.groups if g.name == "default")
    assert default.max_replicas == 10 and default.min_replicas == 1  # unlimited; always on (retry pump)
    assert processes_usable(6000, 32.0) == 4  # 100 events/s / 32 per process
    assert processes_usable(None, 32.0) is None
    assert per_process_rate(plan.config.worker, 16) == 32.0


def test_pods_run_as_the_images_numeric_user_with_a_read_only_root() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    user = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)[-1]
    assert user.split(":")[0].isdigit()
    for dep in _kind(_objects(_plan()), "Deployment"):
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert str(pod["securityContext"]["runAsUser"]) == user.split(":")[0]
        tmp = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for c in pod["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert any(m["mountPath"] == "/tmp" and m["name"] in tmp for m in c["volumeMounts"])
            assert c["resources"]["limits"]["memory"] and c["resources"]["requests"]["memory"]


def test_every_deployment_has_a_disruption_budget() -> None:
    objs = _objects(_plan())
    budgets = {tuple(sorted(p["spec"]["selector"]["matchLabels"].items())) for p in _kind(objs, "PodDisruptionBudget")}
    for dep in _kind(objs, "Deployment"):
        assert tuple(sorted(dep["spec"]["selector"]["matchLabels"].items())) in budgets


def test_bad_groups_are_refused() -> None:
    config = load_config(KUBE / "cluster.example.toml")
    data = config.model_dump()
    with pytest.raises(ConfigError, match="unknown destination"):
        make_plan(ClusterConfig.model_validate({**data, "groups": {"x": {"destinations": ["nope"]}}}),
                  DESTINATIONS.read_text())
    everything = {"all": {"destinations": ["acme-ls", "acme-ltiaas", "acme-edlink", "acme-ti"]}}
    all_grouped = re.sub(r"(\[destinations\.[^\]]+\]\n)", r'\1group = "all"\n',
                         DESTINATIONS.read_text().replace('group = "thoughtindustries"\n', ""))
    with pytest.raises(ConfigError, match="default"):
        make_plan(ClusterConfig.model_validate({**data, "groups": everything}), all_grouped)
