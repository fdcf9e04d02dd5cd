from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WeightsEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WEIGHTS_ENCODING_UNSPECIFIED: _ClassVar[WeightsEncoding]
    WEIGHTS_ENCODING_SAFETENSORS: _ClassVar[WeightsEncoding]

class Criterion(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CRITERION_UNSPECIFIED: _ClassVar[Criterion]
    CRITERION_ACCURACY: _ClassVar[Criterion]
    CRITERION_CATEGORICAL_ACCURACY: _ClassVar[Criterion]
    CRITERION_AUC: _ClassVar[Criterion]
    CRITERION_NEGATIVE_LOSS: _ClassVar[Criterion]

class ModelFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_FORMAT_UNSPECIFIED: _ClassVar[ModelFormat]
    MODEL_FORMAT_KERAS: _ClassVar[ModelFormat]
    MODEL_FORMAT_SAFETENSORS: _ClassVar[ModelFormat]
WEIGHTS_ENCODING_UNSPECIFIED: WeightsEncoding
WEIGHTS_ENCODING_SAFETENSORS: WeightsEncoding
CRITERION_UNSPECIFIED: Criterion
CRITERION_ACCURACY: Criterion
CRITERION_CATEGORICAL_ACCURACY: Criterion
CRITERION_AUC: Criterion
CRITERION_NEGATIVE_LOSS: Criterion
MODEL_FORMAT_UNSPECIFIED: ModelFormat
MODEL_FORMAT_KERAS: ModelFormat
MODEL_FORMAT_SAFETENSORS: ModelFormat

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
    __slots__ = ("name", "required_parameters", "default_parameters")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    required_parameters: _containers.RepeatedScalarFieldContainer[str]
    default_parameters: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., required_parameters: _Optional[_Iterable[str]] = ..., default_parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ModelSpec(_message.Message):
    __slots__ = ("name", "compatible_dataloaders", "default_parameters")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COMPATIBLE_DATALOADERS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    compatible_dataloaders: _containers.RepeatedScalarFieldContainer[str]
    default_parameters: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., compatible_dataloaders: _Optional[_Iterable[str]] = ..., default_parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class QuerySupportedSystemResponse(_message.Message):
    __slots__ = ("dataloaders", "models")
    DATALOADERS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    dataloaders: _containers.RepeatedCompositeFieldContainer[DataloaderSpec]
    models: _containers.RepeatedCompositeFieldContainer[ModelSpec]
    def __init__(self, dataloaders: _Optional[_Iterable[_Union[DataloaderSpec, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[ModelSpec, _Mapping]]] = ...) -> None: ...

class MLSetupRequest(_message.Message):
    __slots__ = ("dataloader_name", "model_name", "dataloader_parameters", "model_parameters")
    DATALOADER_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    DATALOADER_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    MODEL_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    dataloader_name: str
    model_name: str
    dataloader_parameters: _struct_pb2.Struct
    model_parameters: _struct_pb2.Struct
    def __init__(self, dataloader_name: _Optional[str] = ..., model_name: _Optional[str] = ..., dataloader_parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., model_parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

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

class ProposeWeightsResponse(_message.Message):
    __slots__ = ("part",)
    PART_FIELD_NUMBER: _ClassVar[int]
    part: WeightsPart
    def __init__(self, part: _Optional[_Union[WeightsPart, _Mapping]] = ...) -> None: ...

class TestWeightsRequest(_message.Message):
    __slots__ = ("part",)
    PART_FIELD_NUMBER: _ClassVar[int]
    part: WeightsPart
    def __init__(self, part: _Optional[_Union[WeightsPart, _Mapping]] = ...) -> None: ...

class SetWeightsRequest(_message.Message):
    __slots__ = ("part",)
    PART_FIELD_NUMBER: _ClassVar[int]
    part: WeightsPart
    def __init__(self, part: _Optional[_Union[WeightsPart, _Mapping]] = ...) -> None: ...

class GetCurrentWeightsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetCurrentWeightsResponse(_message.Message):
    __slots__ = ("part",)
    PART_FIELD_NUMBER: _ClassVar[int]
    part: WeightsPart
    def __init__(self, part: _Optional[_Union[WeightsPart, _Mapping]] = ...) -> None: ...

class WeightsHeader(_message.Message):
    __slots__ = ("proposal_id", "sha256", "encoding")
    PROPOSAL_ID_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    proposal_id: str
    sha256: str
    encoding: WeightsEncoding
    def __init__(self, proposal_id: _Optional[str] = ..., sha256: _Optional[str] = ..., encoding: _Optional[_Union[WeightsEncoding, str]] = ...) -> None: ...

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
    criterion: Criterion
    def __init__(self, proposal_id: _Optional[str] = ..., vote_score: _Optional[float] = ..., test_score: _Optional[float] = ..., vote: _Optional[bool] = ..., criterion: _Optional[_Union[Criterion, str]] = ...) -> None: ...

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

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("ready", "model_name", "dataloader_name", "accepted_rounds", "weights_sha256", "vote_score", "test_score", "busy", "criterion")
    READY_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    DATALOADER_NAME_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_SHA256_FIELD_NUMBER: _ClassVar[int]
    VOTE_SCORE_FIELD_NUMBER: _ClassVar[int]
    TEST_SCORE_FIELD_NUMBER: _ClassVar[int]
    BUSY_FIELD_NUMBER: _ClassVar[int]
    CRITERION_FIELD_NUMBER: _ClassVar[int]
    ready: bool
    model_name: str
    dataloader_name: str
    accepted_rounds: int
    weights_sha256: str
    vote_score: float
    test_score: float
    busy: bool
    criterion: Criterion
    def __init__(self, ready: _Optional[bool] = ..., model_name: _Optional[str] = ..., dataloader_name: _Optional[str] = ..., accepted_rounds: _Optional[int] = ..., weights_sha256: _Optional[str] = ..., vote_score: _Optional[float] = ..., test_score: _Optional[float] = ..., busy: _Optional[bool] = ..., criterion: _Optional[_Union[Criterion, str]] = ...) -> None: ...

class GetCurrentModelRequest(_message.Message):
    __slots__ = ("format",)
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    format: ModelFormat
    def __init__(self, format: _Optional[_Union[ModelFormat, str]] = ...) -> None: ...

class ModelFileHeader(_message.Message):
    __slots__ = ("format", "sha256", "model_name", "dataloader_name", "weights_sha256", "accepted_rounds")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    DATALOADER_NAME_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_SHA256_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    format: ModelFormat
    sha256: str
    model_name: str
    dataloader_name: str
    weights_sha256: str
    accepted_rounds: int
    def __init__(self, format: _Optional[_Union[ModelFormat, str]] = ..., sha256: _Optional[str] = ..., model_name: _Optional[str] = ..., dataloader_name: _Optional[str] = ..., weights_sha256: _Optional[str] = ..., accepted_rounds: _Optional[int] = ...) -> None: ...

class GetCurrentModelResponse(_message.Message):
    __slots__ = ("header", "offset", "total_bytes", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: ModelFileHeader
    offset: int
    total_bytes: int
    data: bytes
    def __init__(self, header: _Optional[_Union[ModelFileHeader, _Mapping]] = ..., offset: _Optional[int] = ..., total_bytes: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...
