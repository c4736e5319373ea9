"""Destinations registered at run time, stored in Redis (issue 22).

- :mod:`worker.registry.codec`: one destination's stored entry (validated by the settings validators;
  secrets given directly are Fernet-encrypted), and back; pure.
- :mod:`worker.registry.store`: the Redis keys (hash, names, version, change stream) and the audit.
- :mod:`worker.registry.service`: applying a document all-or-nothing; reading the registry back.
- :mod:`worker.registry.live`: what a running worker or ``gradesync serve`` sees (polled; < 10 s).
- :mod:`worker.registry.pending`: a destination's pending events (refusing, or forcing, a removal).
"""
