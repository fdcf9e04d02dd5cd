"""What a score measures: a name in the Python API (``ProposedWeights.criterion``), an enum on the wire.

The names are the enum's values without their prefix, in lower case: ``CRITERION_NEGATIVE_LOSS`` is
``"negative_loss"``. A model whose criterion has no value in the contract sends ``CRITERION_UNSPECIFIED``,
which reads back as ``""``: the scores still travel, only their name does not.
"""

from __future__ import annotations

from colearn_contract.v1 import learner_pb2 as pb

_PREFIX = "CRITERION_"
_BY_NAME = {
    name.removeprefix(_PREFIX).lower(): value
    for name, value in pb.Criterion.items()
    if value != pb.CRITERION_UNSPECIFIED
}
_BY_VALUE = {value: name for name, value in _BY_NAME.items()}
#: The criterion names the contract carries.
NAMES = tuple(_BY_NAME)


def to_wire(name: str) -> int:
    return _BY_NAME.get(name, pb.CRITERION_UNSPECIFIED)


def from_wire(value: int) -> str:
    return _BY_VALUE.get(value, "")
