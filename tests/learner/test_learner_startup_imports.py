"""The learner core imports no ML framework at start-up; a family imports its own when it is set up."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

FRAMEWORKS = ("torch", "tensorflow", "keras", "sklearn", "jax")

SCRIPT = textwrap.dedent(
    """
    import json, sys

    import grpc

    from colearn_contract.v1 import learner_pb2 as pb
    from colearn_contract.v1 import learner_pb2_grpc as pb_grpc
    from colearn_learner import ExampleMliFactory, GRPCServer, Settings

    frameworks = {frameworks!r}
    seen = {{}}
    server = GRPCServer(ExampleMliFactory())
    seen["built"] = [m for m in frameworks if m in sys.modules]
    settings = Settings(host="127.0.0.1", port=0, metrics_port=0)
    server = GRPCServer(ExampleMliFactory(), settings=settings).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{{server.port}}") as channel:
            stub = pb_grpc.LearnerStub(channel)
            supported = stub.QuerySupportedSystem(pb.QuerySupportedSystemRequest(), timeout=30)
            names = [m.name for m in supported.models]
            seen["serving"] = [m for m in frameworks if m in sys.modules]
            seen["models"] = names
            setup = pb.MLSetupRequest(dataloader_name="DIGITS", model_name="SKLEARN_DIGITS")
            stub.MLSetup(setup, timeout=120)
            seen["after_sklearn_setup"] = [m for m in frameworks if m in sys.modules]
    finally:
        server.stop(grace=0)
    print(json.dumps(seen))
    """
)


def test_no_ml_framework_is_imported_until_a_model_is_set_up() -> None:
    code = SCRIPT.format(frameworks=FRAMEWORKS)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["built"] == []
    assert seen["serving"] == []
    assert {"SKLEARN_DIGITS", "PYTORCH_DIGITS"} <= set(seen["models"])
    # The check can see a framework when one is loaded: setting up the scikit-learn family loads sklearn only.
    assert seen["after_sklearn_setup"] == ["sklearn"]
