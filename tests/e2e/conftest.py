"""The e2e harness: a private Docker engine and the images, shared by every e2e test of one session.

Collected only by ``make test-e2e`` (``pytest tests/e2e``): the default run ignores this folder. The daemon
is stopped by its pidfile at the end of the session, and by an atexit hook when the session dies first.
Timings and image sizes go to ``.e2e/timings.json`` and the end of pytest's output.
"""

from __future__ import annotations

import atexit
import json
import time
from collections.abc import Iterator
from typing import Any

import e2e_images
import pytest
from e2e_docker import STATE_DIR, PrivateDockerd
from e2e_images import Built, LightImages
from e2e_timings import STARTED, TIMINGS, record


@pytest.fixture(scope="session")
def engine() -> Iterator[PrivateDockerd]:
    daemon = PrivateDockerd()
    atexit.register(daemon.stop)  # a session that dies between here and the teardown
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()
        atexit.unregister(daemon.stop)


@pytest.fixture(scope="session")
def base_image(engine: PrivateDockerd) -> Built:
    built = e2e_images.debian_base(engine)
    record(base_image_s=built.seconds, base_image_mb=built.size_mb)
    return built


@pytest.fixture(scope="session")
def wheelhouse() -> str:
    folder, seconds = e2e_images.wheelhouse()
    record(wheelhouse_s=seconds)
    return folder


@pytest.fixture(scope="session")
def light_images(engine: PrivateDockerd, base_image: Built, wheelhouse: str) -> LightImages:
    """The compose fleet's images: the learner with scikit-learn only, the backend, and Prometheus."""
    args = {"BASE_IMAGE": base_image.tag, "WHEELHOUSE": wheelhouse}
    learner = e2e_images.build(
        engine, "learner_image/Dockerfile", "colearn-learner:e2e-light", EXTRAS="sklearn", **args
    )
    backend = e2e_images.build(engine, "learner_image/Dockerfile.backend", "colearn-backend:e2e", **args)
    prometheus = e2e_images.prometheus_image(engine, base_image.tag)
    e2e_images.remove_dangling(engine)
    record(
        build_light_s=learner.seconds,
        image_light_mb=learner.size_mb,
        build_backend_s=backend.seconds,
        image_backend_mb=backend.size_mb,
    )
    return LightImages(learner, backend, prometheus)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not TIMINGS:  # nothing was built or run (--collect-only, static checks): keep the last report
        return
    record(e2e_total_s=time.monotonic() - STARTED)
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    (STATE_DIR / "timings.json").write_text(json.dumps(TIMINGS, indent=2) + "\n")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TIMINGS:
        return
    terminalreporter.write_sep("-", "e2e timings and image sizes")
    for name, value in TIMINGS.items():
        terminalreporter.write_line(f"{name:>22}: {value}")
    terminalreporter.write_line(f"(also in {STATE_DIR / 'timings.json'})")
