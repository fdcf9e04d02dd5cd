"""The wire contract of the colearn learner fleet.

What both sides of the wire must agree on lives here: the generated gRPC stubs, the plain data types of
the machine-learning interface, the weights codec and stream framing, the model-file format, and the
limits every receiver applies. It imports nothing else of the project and no ML framework; what both
sides merely run alike (channels, TLS, CLI helpers) is ``colearn_runtime``.
"""

from importlib.metadata import PackageNotFoundError, version

CONTRACT = "colearn.v1"
SERVICE_NAME = "colearn.v1.Learner"

try:
    __version__ = version("colearn-fleet")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
