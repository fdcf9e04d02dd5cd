"""Errors a learner answers with, each tied to the gRPC status code a client should see.

A client's mistake must never come back as INTERNAL: every failure that a request can cause is raised as
one of these, and the servicer turns it into its status code with the message as the details.
"""

from __future__ import annotations

import grpc


class StatusError(Exception):
    """An error that carries the gRPC status code the client should get."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class UnknownNameError(StatusError):
    """A dataloader or model name that is not registered."""

    code = grpc.StatusCode.NOT_FOUND


class InvalidParametersError(StatusError):
    """Parameters that are not valid JSON, have unknown keys, wrong types or values out of range."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class IncompatibleSetupError(StatusError):
    """A model asked for with a dataloader it cannot use."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class DataAccessDeniedError(StatusError):
    """A data location outside the learner's data root."""

    code = grpc.StatusCode.PERMISSION_DENIED


class MissingFrameworkError(StatusError):
    """A model whose ML framework this learner does not have installed (its family's extra)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class NotSetUpError(StatusError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ModelReplacedError(StatusError):
    """MLSetup replaced the model while weights for the old one were on their way in; safe to retry."""

    code = grpc.StatusCode.ABORTED


class ProposalNotFoundError(StatusError):
    code = grpc.StatusCode.NOT_FOUND


class BadWeightsError(StatusError):
    """Weights that do not decode, or do not fit the current model."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class BadRequestError(StatusError):
    """A request message that does not even parse."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class LearnerBusyError(StatusError):
    """Every slot for model calls is taken; the threads left over keep health and status answering."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class StreamDeadlineError(StatusError):
    """A client stream that did not finish within the learner's own deadline for it (a stalled sender)."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
