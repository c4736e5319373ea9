"""Every Redis key gradesync writes, in one place (the producers write events; the worker and the ops
surface read and update them). Nothing else builds a key name.

``{p}`` is ``Settings.key_prefix`` (default ``gradesync``)::

    {p}:event:{id}               hash: wire (the event, Fernet-encrypted: worker.crypto), state, token, ...
    {p}:event:{id}:attempts      list: one JSON record per attempt
    {p}:scheduled                zset: event id -> due time of its next attempt (durable retries)
    {p}:scheduled:{dest}         zset: the same, per destination (cheap per-destination counts)
    {p}:dispatching              zset: event id -> time a due retry was claimed (crash recovery)
    {p}:dlq                      zset: event id -> time it was dead-lettered
    {p}:dlq:{dest}               zset: the same, per destination
    {p}:hwm:{dest}:{digest}      string: newest occurred_at applied for one learner + item (stale guard)
    {p}:lock:{dest}:{digest}     string: lease on one learner + item while an attempt runs
    {p}:inflight:{dest}          zset: event id -> start time of the attempt running now
    {p}:queued                   zset: event id -> time its message was (to be) sent: recorded, requeued,
                                 queued by the retry pump or swept; removed when an attempt starts or
                                 the event finishes (the stranded-event sweeper's index)
    {p}:sweeper:lock             string: which worker runs the stranded-event sweep now (leader lease)
    {p}:session:{sid}            string: a live dashboard session (TTL = session lifetime; logout deletes)
    {p}:authfail:{client}        string: failed authentications of one client IP in the current window
    {p}:flow:{dest}              hash: the destination's flow-control state (worker/flow): breaker,
                                 breaker_reason, breaker_since, probe_at, opened, failures, rate,
                                 throttled_until, throttled_reason (flow); paused, paused_reason,
                                 paused_by, paused_since (operators); internal: tat (the GCRA's
                                 theoretical arrival time), epoch (bumped when the rate drops),
                                 probe_deadline, probe_released_at, sent_t/sent_n/sent_prev (rate seen)
    {p}:parked:{dest}            zset: event id -> time it was parked (breaker open or paused)
    {p}:parking                  set: destinations that may have parked events (the flow pump's index:
                                 added when an event is parked, removed by the pump once empty)
    {p}:audit                    stream: operator actions
    {p}:registry                 hash: destination name -> its JSON config (the run-time registry,
                                 worker/registry; secrets given directly are Fernet-encrypted in it)
    {p}:registry:names           zset (all scores 0): the registered names, paged in name order (ZRANGEBYLEX)
    {p}:registry:version         string: bumped by every change (every process polls it)
    {p}:registry:changes         stream: one entry per change (name, op, version), capped
    {p}:stats:...                counters for metrics and the dashboard
    {p}:audits                   zset: audit job id -> creation time (worker/audit: reading gradebooks back)
    {p}:audits:{id}              hash: one audit job (state, destinations, since, cursors, verdict counts)
    {p}:audits:{id}:cells:{dest} list: the event ids of the cells it reads (enumerated from the hwm keys)
    {p}:audits:{id}:results      list: one JSON verdict per cell read, in cursor order
    {p}:audits:{id}:results:{v}  list: the same, of the cells of verdict v only (drifted, missing… pages)
    {p}:audits:{id}:lock         string: the process running the job (lease; another resumes it when gone)
    {p}:audits:last              hash: destination -> id of its last finished audit (dashboard, metrics)
    {p}:audits:pace:{dest}       string: the audit's own rate-limit timestamp (its share of the limit)
    {p}:stats:minute:{dest}:{outcome}:{minute}
                                 string: outcomes of one destination in one epoch minute (expires after 2 h;
                                 the dashboard's 5/60-minute windows and its per-minute throughput chart)
    grades, grades.{group}       the broker queues (lists, not prefixed: kombu names them): the one shared
                                 queue, and one per dedicated group (worker.routing)
    {p}:cache:{ns}:{key}         vendor lookups shared by workers, among them (LTI 1.3):
    {p}:cache:lti_token:{dest}:{digest}          an access token of one destination + scope set (TTL: its
                                                 expiry minus the refresh margin)
    {p}:cache:lti_token_lock:{dest}:{digest}     SET NX lock (2 x timeout + 2 s) of the worker asking for it
    {p}:cache:lti_jwks:{kid}                     a public JWK a worker published for the web app's JWKS
    {p}:cache:lti_lineitem:{dest}:{digest}       the line item URL a {lineitems_url, resource_link_id} means
    {p}:cache:lti_lineitem_lock:{dest}:{digest}  SET NX lock (30 s) of the worker creating that line item
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = "gradesync"

    def event(self, event_id: str) -> str:
        return f"{self.prefix}:event:{event_id}"

    def attempts(self, event_id: str) -> str:
        return f"{self.prefix}:event:{event_id}:attempts"

    @property
    def scheduled(self) -> str:
        return f"{self.prefix}:scheduled"

    @property
    def dispatching(self) -> str:
        return f"{self.prefix}:dispatching"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}:dlq"

    def dlq_of(self, destination: str) -> str:
        return f"{self.prefix}:dlq:{destination}"

    @staticmethod
    def _digest(learner_id: str, item_key: str) -> str:
        return hashlib.sha256(f"{learner_id}\x00{item_key}".encode()).hexdigest()[:32]

    def hwm(self, destination: str, learner_id: str, item_key: str) -> str:
        return f"{self.prefix}:hwm:{destination}:{self._digest(learner_id, item_key)}"

    def lock(self, destination: str, learner_id: str, item_key: str) -> str:
        return f"{self.prefix}:lock:{destination}:{self._digest(learner_id, item_key)}"

    def scheduled_of(self, destination: str) -> str:
        return f"{self.prefix}:scheduled:{destination}"

    def flow(self, destination: str) -> str:
        return f"{self.prefix}:flow:{destination}"

    def parked(self, destination: str) -> str:
        return f"{self.prefix}:parked:{destination}"

    @property
    def parking(self) -> str:
        return f"{self.prefix}:parking"

    def inflight(self, destination: str) -> str:
        return f"{self.prefix}:inflight:{destination}"

    def minute(self, destination: str, outcome: str, minute: int) -> str:
        return self.stats("minute", destination, outcome, str(minute))

    @property
    def registry(self) -> str:
        return f"{self.prefix}:registry"

    @property
    def registry_names(self) -> str:
        return f"{self.prefix}:registry:names"

    @property
    def registry_version(self) -> str:
        return f"{self.prefix}:registry:version"

    @property
    def registry_changes(self) -> str:
        return f"{self.prefix}:registry:changes"

    @property
    def queued(self) -> str:
        return f"{self.prefix}:queued"

    @property
    def sweeper_lock(self) -> str:
        return f"{self.prefix}:sweeper:lock"

    def session(self, sid: str) -> str:
        return f"{self.prefix}:session:{sid}"

    def auth_failures(self, client: str) -> str:
        return f"{self.prefix}:authfail:{client}"

    @property
    def audit(self) -> str:
        return f"{self.prefix}:audit"

    def hwm_pattern(self, destination: str) -> str:
        """SCAN pattern of the stale guard's keys of one destination: one per delivered cell."""
        return f"{self.prefix}:hwm:{destination}:*"

    @property
    def audits(self) -> str:
        return f"{self.prefix}:audits"

    def audit_job(self, job_id: str, *parts: str) -> str:
        return ":".join((self.prefix, "audits", job_id, *parts))

    @property
    def audits_last(self) -> str:
        return f"{self.prefix}:audits:last"

    def audit_pace(self, destination: str) -> str:
        return f"{self.prefix}:audits:pace:{destination}"

    def stats(self, *parts: str) -> str:
        return ":".join((self.prefix, "stats", *parts))

    def cache_prefix(self) -> str:
        return self.prefix

    @staticmethod
    def queue(group: str | None = None) -> str:
        """A broker queue: the one shared queue ``grades`` (every destination without a ``group``), or a
        dedicated group's ``grades.<group>`` (its destinations' events only, for ``gradesync worker
        --destinations``). Not one per destination: a worker's take cost grows with the queues it polls
        (:mod:`worker.routing`)."""
        return f"{SHARED_QUEUE}.{group}" if group else SHARED_QUEUE


#: the broker queue of every destination without a dedicated group
SHARED_QUEUE = "grades"


#: the Celery task name of the one delivery task
DELIVER_TASK = "gradesync.deliver"
