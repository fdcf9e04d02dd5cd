"""Typed errors of the backend: each names the learner, the call and the gRPC status code."""

from __future__ import annotations

import grpc

# Codes that mean "the learner did not answer", as opposed to "the learner refused".
UNREACHABLE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)


class LearnerError(Exception):
    def __init__(
        self, name: str, address: str, method: str, code: grpc.StatusCode | None, details: str
    ) -> None:
        self.name = name
        self.address = address
        self.method = method
        self.code = code
        self.details = details
        code_name = code.name if code is not None else "BAD_RESPONSE"
        super().__init__(f"{name} ({address}) {method}: {code_name}: {details}")


class LearnerUnavailableError(LearnerError):
    """The learner is down, unreachable, or missed the call's deadline."""


def from_rpc_error(name: str, address: str, method: str, exc: grpc.RpcError) -> LearnerError:
    code = exc.code() if hasattr(exc, "code") else None
    details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
    cls = LearnerUnavailableError if code in UNREACHABLE_CODES else LearnerError
    return cls(name, address, method, code, details)
