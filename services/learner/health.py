"""gRPC health for a learner: the process and the model are reported separately.

Service ``""`` is SERVING once the server listens (liveness). Service ``colearn.v1.Learner`` is SERVING
only while a model is set up (readiness for rounds). On shutdown both turn NOT_SERVING first, so that
load balancers and the backend stop sending work before the server stops taking calls.
"""

from __future__ import annotations

from grpc_health.v1 import health, health_pb2

from colearn_contract import SERVICE_NAME

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class LearnerHealth:
    def __init__(self) -> None:
        # Non-blocking: Watch streams must not hold one of the worker threads that serve rounds.
        self.servicer = health.HealthServicer(experimental_non_blocking=True)
        self.servicer.set("", NOT_SERVING)
        self.servicer.set(SERVICE_NAME, NOT_SERVING)

    def listening(self) -> None:
        self.servicer.set("", SERVING)

    def model_ready(self, ready: bool) -> None:
        self.servicer.set(SERVICE_NAME, SERVING if ready else NOT_SERVING)

    def shutting_down(self) -> None:
        self.servicer.enter_graceful_shutdown()
