from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class QueryVersionRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class QueryVersionResponse(_message.Message):
    __slots__ = ("version", "contract")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_FIELD_NUMBER: _ClassVar[int]
    version: str
    contract: str
    def __init__(self, version: _Optional[str] = ..., contract: _Optional[str] = ...) -> None: ...

class QuerySupportedSystemRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DataloaderSpec(_message.Message):
    __slots__ = ("name", "default_parameters", "required_parameters")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    default_parameters: str
    required_parameters: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., default_parameters: _Optional[str] = ..., required_parameters: _Optional[_Iterable[str]] = ...) -> None: ...

class ModelSpec(_message.Message):
    __slots__ = ("name", "default_parameters", "compatible_dataloaders")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    COMPATIBLE_DATALOADERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    default_parameters: str
    compatible_dataloaders: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., default_parameters: _Optional[str] = ..., compatible_dataloaders: _Optional[_Iterable[str]] = ...) -> None: ...

class QuerySupportedSystemResponse(_message.Message):
    __slots__ = ("dataloaders", "models")
    DATALOADERS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    dataloaders: _containers.RepeatedCompositeFieldContainer[DataloaderSpec]
    models: _containers.RepeatedCompositeFieldContainer[ModelSpec]
    def __init__(self, dataloaders: _Optional[_Iterable[_Union[DataloaderSpec, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[ModelSpec, _Mapping]]] = ...) -> None: ...

class MLSetupRequest(_message.Message):
    __slots__ = ("dataloader_name", "dataloader_parameters", "model_name", "model_parameters")
    DATALOADER_NAME_FIELD_NUMBER: _ClassVar[int]
    DATALOADER_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    dataloader_name: str
    dataloader_parameters: str
    model_name: str
    model_parameters: str
    def __init__(self, dataloader_name: _Optional[str] = ..., dataloader_parameters: _Optional[str] = ..., model_name: _Optional[str] = ..., model_parameters: _Optional[str] = ...) -> None: ...

class MLSetupResponse(_message.Message):
    __slots__ = ("unchanged", "weights_sha256")
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_SHA256_FIELD_NUMBER: _ClassVar[int]
    unchanged: bool
    weights_sha256: str
    def __init__(self, unchanged: _Optional[bool] = ..., weights_sha256: _Optional[str] = ...) -> None: ...

class ProposeWeightsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WeightsHeader(_message.Message):
    __slots__ = ("proposal_id", "encoding", "sha256")
    PROPOSAL_ID_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    proposal_id: str
    encoding: str
    sha256: str
    def __init__(self, proposal_id: _Optional[str] = ..., encoding: _Optional[str] = ..., sha256: _Optional[str] = ...) -> None: ...

class WeightsPart(_message.Message):
    __slots__ = ("header", "offset", "total_bytes", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: WeightsHeader
    offset: int
    total_bytes: int
    data: bytes
    def __init__(self, header: _Optional[_Union[WeightsHeader, _Mapping]] = ..., offset: _Optional[int] = ..., total_bytes: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class TestWeightsResponse(_message.Message):
    __slots__ = ("proposal_id", "vote_score", "test_score", "vote", "criterion")
    PROPOSAL_ID_FIELD_NUMBER: _ClassVar[int]
    VOTE_SCORE_FIELD_NUMBER: _ClassVar[int]
    TEST_SCORE_FIELD_NUMBER: _ClassVar[int]
    VOTE_FIELD_NUMBER: _ClassVar[int]
    CRITERION_FIELD_NUMBER: _ClassVar[int]
    proposal_id: str
    vote_score: float
    test_score: float
    vote: bool
    criterion: str
    def __init__(self, proposal_id: _Optional[str] = ..., vote_score: _Optional[float] = ..., test_score: _Optional[float] = ..., vote: _Optional[bool] = ..., criterion: _Optional[str] = ...) -> None: ...

class SetWeightsResponse(_message.Message):
    __slots__ = ("weights_sha256",)
    WEIGHTS_SHA256_FIELD_NUMBER: _ClassVar[int]
    weights_sha256: str
    def __init__(self, weights_sha256: _Optional[str] = ...) -> None: ...

class AcceptProposalRequest(_message.Message):
    __slots__ = ("proposal_id",)
    PROPOSAL_ID_FIELD_NUMBER: _ClassVar[int]
    proposal_id: str
    def __init__(self, proposal_id: _Optional[str] = ...) -> None: ...

class AcceptProposalResponse(_message.Message):
    __slots__ = ("weights_sha256", "accepted_rounds")
    WEIGHTS_SHA256_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    weights_sha256: str
    accepted_rounds: int
    def __init__(self, weights_sha256: _Optional[str] = ..., accepted_rounds: _Optional[int] = ...) -> None: ...

class GetCurrentWeightsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("ready", "model_name", "dataloader_name", "accepted_rounds", "weights_sha256", "vote_score", "test_score", "criterion", "busy")
    READY_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    DATALOADER_NAME_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_SHA256_FIELD_NUMBER: _ClassVar[int]
    VOTE_SCORE_FIELD_NUMBER: _ClassVar[int]
    TEST_SCORE_FIELD_NUMBER: _ClassVar[int]
    CRITERION_FIELD_NUMBER: _ClassVar[int]
    BUSY_FIELD_NUMBER: _ClassVar[int]
    ready: bool
    model_name: str
    dataloader_name: str
    accepted_rounds: int
    weights_sha256: str
    vote_score: float
    test_score: float
    criterion: str
    busy: bool
    def __init__(self, ready: _Optional[bool] = ..., model_name: _Optional[str] = ..., dataloader_name: _Optional[str] = ..., accepted_rounds: _Optional[int] = ..., weights_sha256: _Optional[str] = ..., vote_score: _Optional[float] = ..., test_score: _Optional[float] = ..., criterion: _Optional[str] = ..., busy: _Optional[bool] = ...) -> None: ...
