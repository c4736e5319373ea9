"""KEDA objects: one ScaledObject per worker group, with one trigger on the group's broker queue.

Not one trigger (nor one ScaledObject) per destination: the ``default`` group's workers consume the one
shared queue ``grades`` and scale on its total backlog, whatever the number of destinations; an optional
dedicated group (its destinations set ``group = "<name>"`` in the destinations file, and the cluster
file's ``[groups.<name>]`` lists them) consumes and scales on ``grades.<name>`` (:mod:`worker.routing`).
The triggers read the broker directly:

* Redis broker: the ``redis`` scaler on the queue's list (``LLEN``); ``redis-sentinel`` asks the
  sentinels for the master first.
* RabbitMQ: the ``rabbitmq`` scaler in ``QueueLength`` mode on the quorum queue.

Scale to zero and cool-down: a group with ``min_replicas = 0`` has no pod while its queues are empty.
KEDA polls every ``polling_interval`` seconds, wakes the group when a queue holds more than
``activation_messages``, and goes back to zero only after ``cooldown_period`` seconds (default 300)
without messages, so a trickle of grades does not start and stop pods every poll. Between 1 and the
maximum the HPA scales on ``messages_per_replica``; scale-down is slowed to one pod a minute after a
five-minute stabilization window, because the queue length does not count messages a worker has already
taken (they are in flight, not waiting) and a stopping worker hands its messages back. The ``default``
group never goes below one replica: the retry pump lives in the workers, and one always-on worker
re-queues the due retries of every destination (which then wakes a zero-scaled group).
"""

from __future__ import annotations

from typing import Any

from worker.keys import Keys
from worker.kube.manifests import SECRET_KEDA, Obj, meta, worker_name
from worker.kube.plan import DEFAULT_GROUP, GroupPlan, Plan

TRIGGER_AUTH = "gradesync-keda-broker"


def group_queue(group: GroupPlan) -> str:
    """The broker queue a group's workers consume (the shared one for the default group)."""
    return Keys.queue(None if group.name == DEFAULT_GROUP else group.name)


def _trigger(plan: Plan, queue: str) -> Obj:
    k = plan.config.keda
    auth = {"authenticationRef": {"name": TRIGGER_AUTH}}
    if k.broker == "rabbitmq":
        return {"type": "rabbitmq", **auth,
                "metadata": {"protocol": "amqp", "queueName": queue, "mode": "QueueLength",
                             "value": str(k.messages_per_replica),
                             "activationValue": str(k.activation_messages)}}
    meta: dict[str, Any] = {"listName": queue, "listLength": str(k.messages_per_replica),
                            "activationListLength": str(k.activation_messages),
                            "databaseIndex": str(k.redis_database)}
    if k.redis_tls:
        meta["enableTLS"] = "true"
    if k.broker == "redis-sentinel":
        meta.update({"addresses": k.sentinel_addresses, "sentinelMaster": k.sentinel_master})
        return {"type": "redis-sentinel", **auth, "metadata": meta}
    meta["address"] = k.redis_address
    return {"type": "redis", **auth, "metadata": meta}


def scaled_object(plan: Plan, group: GroupPlan) -> Obj:
    k = plan.config.keda
    name = worker_name(group)
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": meta(plan, name, f"worker-{group.name}"),
        "spec": {
            "scaleTargetRef": {"name": name},
            "pollingInterval": k.polling_interval,
            "cooldownPeriod": k.cooldown_period,
            "minReplicaCount": group.min_replicas,
            # capped by what the destinations' rate limits can use (worker.kube.plan)
            "maxReplicaCount": group.max_replicas,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {"scaleDown": {
                "stabilizationWindowSeconds": 300,
                "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}}}},
            "triggers": [_trigger(plan, group_queue(group))],
        },
    }


def trigger_authentication(plan: Plan) -> Obj:
    key = "host" if plan.config.keda.broker == "rabbitmq" else "password"
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": meta(plan, TRIGGER_AUTH, "autoscaling"),
        "spec": {"secretTargetRef": [{"parameter": key, "name": SECRET_KEDA, "key": key}]},
    }
