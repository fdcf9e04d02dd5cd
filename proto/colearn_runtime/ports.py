"""The ports the learner and the backend use unless told otherwise, named once for both sides.

Files that are not Python (the Dockerfiles, compose, the Helm chart, Prometheus' scrape configuration) keep
these numbers as literals; tests check that they agree with the names here.
"""

from __future__ import annotations

#: A learner's gRPC port (``COLEARN_PORT``); ``serve-n`` and a local fleet count up from it.
LEARNER_PORT = 9995
#: A learner's Prometheus port (``COLEARN_METRICS_PORT``) when it serves metrics.
LEARNER_METRICS_PORT = 9091
#: The backend's Prometheus port in compose and the Helm chart (off unless ``--metrics_port`` is given).
BACKEND_METRICS_PORT = 9092
