"""The gradesync worker. The Celery app is :mod:`worker.celery_app` (``celery -A worker.celery_app
worker``); importing :mod:`worker` or any module that needs no broker (``worker.errors``, ``worker.retry``,
the adapters, the store) does not load Celery."""
