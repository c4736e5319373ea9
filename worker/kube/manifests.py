"""The Kubernetes objects of a :class:`~worker.kube.plan.Plan`, as plain dicts (one function per kind).

Every pod: numeric non-root user, read-only root filesystem, no privilege escalation, all capabilities
dropped, the RuntimeDefault seccomp profile, an ``emptyDir`` on ``/tmp`` (the heartbeat file, Python's
temporary files) and the destinations file mounted from its ConfigMap. Secrets reach the pods only as
environment variables from Secrets, never through the ConfigMap.
"""

from __future__ import annotations

from typing import Any

from worker.kube.plan import GroupPlan, Plan

APP = "gradesync"
CONFIG_DIR = "/etc/gradesync"
HEARTBEAT_FILE = "/tmp/gradesync/heartbeat"  # noqa: S108 - on the pod's emptyDir
WEB_PORT = 8000
FLOWER_PORT = 5555
SECRET_CORE = "gradesync-core"  # noqa: S105 - a Secret object name; Redis / broker URLs (they may hold passwords), API token, Flower login
SECRET_DESTINATIONS = "gradesync-destinations"  # noqa: S105 - the object name; the variables named by destinations.toml's *_env keys
SECRET_KEDA = "gradesync-keda"  # noqa: S105 - the object name; what KEDA needs to read the queue lengths
CONFIGMAP = "gradesync-destinations"

Obj = dict[str, Any]


def meta(plan: Plan, name: str, component: str, **extra: Any) -> Obj:
    return {"name": name, "namespace": plan.config.namespace,
            "labels": {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": component}, **extra}


def _selector(component: str) -> Obj:
    return {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": component}


def worker_name(group: GroupPlan) -> str:
    return f"gradesync-worker-{group.name}"


def _pod_security(plan: Plan) -> Obj:
    uid = plan.config.user_id
    return {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid, "fsGroup": uid,
            "seccompProfile": {"type": "RuntimeDefault"}}


CONTAINER_SECURITY: Obj = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                           "capabilities": {"drop": ["ALL"]}}


def _volumes() -> tuple[list[Obj], list[Obj]]:
    volumes: list[Obj] = [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
               {"name": "destinations", "configMap": {"name": CONFIGMAP}}]
    mounts: list[Obj] = [{"name": "tmp", "mountPath": "/tmp"},  # noqa: S108
              {"name": "destinations", "mountPath": CONFIG_DIR, "readOnly": True}]
    return volumes, mounts


def _secret_env(name: str) -> Obj:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": SECRET_CORE, "key": name}}}


def _core_env(plan: Plan) -> list[Obj]:
    env: list[Obj] = [
        {"name": "GRADESYNC_DESTINATIONS", "value": f"{CONFIG_DIR}/destinations.toml"},
        {"name": "GRADESYNC_LOG_FORMAT", "value": "json"},
        _secret_env("GRADESYNC_REDIS_URL"),
    ]
    if plan.config.keda.broker == "rabbitmq":
        env.append({"name": "GRADESYNC_BROKER_URL", "valueFrom": {"secretKeyRef": {
            "name": SECRET_CORE, "key": "GRADESYNC_BROKER_URL"}}})
    return env


def _pod_spec(plan: Plan, containers: list[Obj], grace: int, component: str) -> Obj:
    volumes, _ = _volumes()
    return {"serviceAccountName": APP, "automountServiceAccountToken": False,
            "securityContext": _pod_security(plan), "terminationGracePeriodSeconds": grace,
            # replicas spread over nodes where possible, so one node's loss takes few of them
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                           "whenUnsatisfiable": "ScheduleAnyway",
                                           "labelSelector": {"matchLabels": _selector(component)}}],
            "containers": containers, "volumes": volumes}


def _resources(cpu_request: str, memory_request: str, cpu_limit: str, memory_limit: str) -> Obj:
    return {"requests": {"cpu": cpu_request, "memory": memory_request},
            "limits": {"cpu": cpu_limit, "memory": memory_limit}}


def worker_deployment(plan: Plan, group: GroupPlan) -> Obj:
    w = plan.config.worker
    _, mounts = _volumes()
    env = [*_core_env(plan),
           _secret_env("GRADESYNC_SECRET_KEY"),  # decrypts the stored events (same key as the producers)
           {"name": "GRADESYNC_HEARTBEAT_FILE", "value": HEARTBEAT_FILE},
           {"name": "GRADESYNC_SHUTDOWN_GRACE", "value": str(w.shutdown_grace_seconds)}]
    container = {
        "name": "worker",
        "image": plan.config.image,
        "imagePullPolicy": "IfNotPresent",
        # one process per pod: KEDA scales pods, and the default (one process per core the pod *sees*,
        # i.e. every core of the node) would not fit the pod's CPU and memory limits
        # --group: the group's one broker queue (the shared ``grades`` for ``default``), not a list of its
        # destinations (thousands)
        "args": ["gradesync", "worker", "--group", group.name, "--processes", "1",
                 "--concurrency", str(group.concurrency),
                 *(["--task-events"] if w.task_events else [])],
        "env": env,
        "envFrom": [{"secretRef": {"name": SECRET_DESTINATIONS}}],
        # liveness = the heartbeat file (worker.heartbeat): never fails because Redis is down
        "livenessProbe": {"exec": {"command": ["python", "-m", "worker.heartbeat", "worker", HEARTBEAT_FILE]},
                          "initialDelaySeconds": 30, "periodSeconds": 20, "timeoutSeconds": 10,
                          "failureThreshold": 3},
        "resources": _resources(w.cpu_request, w.memory_request, w.cpu_limit, w.memory_limit),
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": mounts,
    }
    component = f"worker-{group.name}"
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": meta(plan, worker_name(group), component),
        "spec": {
            # no "replicas": KEDA owns the count, and `kubectl apply` must not reset it on every deploy
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": _selector(component)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": _selector(component)},
                "spec": _pod_spec(plan, [container], w.shutdown_grace_seconds + w.grace_margin_seconds, component),
            },
        },
    }


def web_deployment(plan: Plan) -> Obj:
    web = plan.config.web
    _, mounts = _volumes()
    container = {
        "name": "web",
        "image": plan.config.image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["gradesync", "serve", "--host", "0.0.0.0", "--port", str(WEB_PORT)],
        # the web app publishes (so it encrypts with the secret key) but calls no vendor: no vendor credential
        "env": [*_core_env(plan), _secret_env("GRADESYNC_API_TOKEN"), _secret_env("GRADESYNC_SECRET_KEY")],
        "ports": [{"name": "http", "containerPort": WEB_PORT}],
        # ready = Redis and the broker answer (/healthz): no traffic to a replica that cannot publish;
        # live = the process answers (/livez): a Redis outage takes replicas out of the Service, it
        # never restarts them
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10,
                           "timeoutSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/livez", "port": "http"}, "initialDelaySeconds": 10,
                          "periodSeconds": 20, "timeoutSeconds": 5, "failureThreshold": 3},
        "resources": _resources(web.cpu_request, web.memory_request, web.cpu_limit, web.memory_limit),
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": mounts,
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": meta(plan, "gradesync-web", "web"),
        "spec": {"replicas": web.replicas, "revisionHistoryLimit": 3,
                 "selector": {"matchLabels": _selector("web")},
                 "template": {"metadata": {"labels": _selector("web")},
                              "spec": _pod_spec(plan, [container], 30, "web")}},
    }


def flower_deployment(plan: Plan) -> Obj:
    _, mounts = _volumes()
    container = {
        "name": "flower",
        "image": plan.config.image,
        "imagePullPolicy": "IfNotPresent",
        # basic auth always on: $(FLOWER_BASIC_AUTH) is user:password from the Secret; `gradesync flower` also
        # puts /metrics behind it (plain `celery flower` serves /metrics to anyone, see worker.ops.flower)
        "args": ["gradesync", "flower", f"--port={FLOWER_PORT}", "--basic-auth=$(FLOWER_BASIC_AUTH)"],
        "env": [*_core_env(plan), {"name": "FLOWER_BASIC_AUTH", "valueFrom": {"secretKeyRef": {
            "name": SECRET_CORE, "key": "FLOWER_BASIC_AUTH"}}}],
        "ports": [{"name": "http", "containerPort": FLOWER_PORT}],
        # Flower's /healthcheck needs no login
        "readinessProbe": {"httpGet": {"path": "/healthcheck", "port": "http"}, "periodSeconds": 15},
        "livenessProbe": {"httpGet": {"path": "/healthcheck", "port": "http"}, "initialDelaySeconds": 15,
                          "periodSeconds": 30, "failureThreshold": 3},
        "resources": _resources("50m", "128Mi", "500m", "256Mi"),
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": mounts,
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": meta(plan, "gradesync-flower", "flower"),
        # one replica: Flower keeps its view of the workers in memory
        "spec": {"replicas": 1, "revisionHistoryLimit": 3, "selector": {"matchLabels": _selector("flower")},
                 "template": {"metadata": {"labels": _selector("flower")},
                              "spec": _pod_spec(plan, [container], 30, "flower")}},
    }


def service(plan: Plan, name: str, component: str, port: int) -> Obj:
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta(plan, name, component),
            "spec": {"selector": _selector(component),
                     "ports": [{"name": "http", "port": port, "targetPort": "http"}]}}


def pdb(plan: Plan, name: str, component: str) -> Obj:
    # maxUnavailable (not minAvailable): a node drain never blocks on a group KEDA scaled to zero
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta(plan, name, component),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _selector(component)}}}


def configmap(plan: Plan) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(plan, CONFIGMAP, "config"),
            "data": {"destinations.toml": plan.destinations_text}}


def namespace(plan: Plan) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": plan.config.namespace, "labels": {"app.kubernetes.io/name": APP}}}


def service_account(plan: Plan) -> Obj:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(plan, APP, "workload"),
            "automountServiceAccountToken": False}


PLACEHOLDER = "REPLACE-ME"


def secrets(plan: Plan) -> list[Obj]:
    """Example Secrets with placeholder values (``secrets.example.yaml``: fill in, apply once)."""
    core = {"GRADESYNC_REDIS_URL": "redis://:REPLACE-ME@redis.gradesync.svc.cluster.local:6379/0",
            "GRADESYNC_API_TOKEN": PLACEHOLDER, "FLOWER_BASIC_AUTH": f"ops:{PLACEHOLDER}",
            "GRADESYNC_SECRET_KEY": "REPLACE-ME-with-gradesync-keys-generate"}
    keda: dict[str, str] = {"password": PLACEHOLDER}
    if plan.config.keda.broker == "rabbitmq":
        core["GRADESYNC_BROKER_URL"] = "amqp://gradesync:REPLACE-ME@rabbitmq.gradesync.svc.cluster.local:5672/gradesync"
        keda = {"host": core["GRADESYNC_BROKER_URL"]}
    envs = sorted({env for d in plan.destinations for env in d.secret_envs})
    return [
        {"apiVersion": "v1", "kind": "Secret", "metadata": meta(plan, SECRET_CORE, "secrets"),
         "type": "Opaque", "stringData": core},
        {"apiVersion": "v1", "kind": "Secret", "metadata": meta(plan, SECRET_DESTINATIONS, "secrets"),
         "type": "Opaque", "stringData": dict.fromkeys(envs, PLACEHOLDER)},
        {"apiVersion": "v1", "kind": "Secret", "metadata": meta(plan, SECRET_KEDA, "secrets"),
         "type": "Opaque", "stringData": keda},
    ]
