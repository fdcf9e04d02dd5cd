"""The wire contract of the colearn learner fleet.

Everything that both sides of the wire share lives here: the generated gRPC stubs, the weights codec and
stream framing, and the plain data types of the machine-learning interface. Nothing here imports an ML
framework, so that the thin backend client can depend on this package alone.
"""

from importlib.metadata import PackageNotFoundError, version

CONTRACT = "colearn.v1"
SERVICE_NAME = "colearn.v1.Learner"

try:
    __version__ = version("colearn-fleet")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
