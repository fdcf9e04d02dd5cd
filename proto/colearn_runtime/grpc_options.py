"""Every gRPC channel and server option of the fleet, with the reason for each, in one place.

Both sides must agree on message sizes and keepalive, so both build their options here.
"""

from __future__ import annotations

import json
from typing import Any

from colearn_contract import SERVICE_NAME

# A client pings every 30 s on an idle connection, so that a learner that vanished (a pod rescheduled, a
# host partitioned) is noticed within ~40 s instead of at the next call's deadline.
KEEPALIVE_TIME_MS = 30_000
KEEPALIVE_TIMEOUT_MS = 10_000

# Calls that are safe to repeat. ProposeWeights trains again and is not; TestWeights and SetWeights are
# idempotent but stream more than gRPC's retry buffer holds, so the backend repeats them itself if needed.
IDEMPOTENT_METHODS = ("QueryVersion", "QuerySupportedSystem", "MLSetup", "AcceptProposal", "GetStatus")


def server_options(
    max_message_bytes: int, max_concurrent_streams: int | None = None
) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [
        # Weights travel in parts of at most 4 MiB; the cap leaves room for the framing and refuses more.
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # Two learners must not silently share a port: a second bind fails instead of splitting traffic.
        ("grpc.so_reuseport", 0),
        # Accept the clients' keepalive pings, also between calls (the default would answer GOAWAY).
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", KEEPALIVE_TIME_MS // 2),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    if max_concurrent_streams is not None:
        # HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS: one connection cannot open more calls than this at once.
        # A client that knows the setting queues the rest; in a burst the excess is refused (REFUSED_STREAM,
        # UNAVAILABLE, safe to retry). Either way a flood from one connection costs the learner nothing.
        options.append(("grpc.max_concurrent_streams", max_concurrent_streams))
    return options


def health_server_options() -> list[tuple[str, Any]]:
    """The health-only port answers tiny messages: it needs no room for weights."""
    return server_options(64 * 1024, max_concurrent_streams=16)


def retry_service_config(max_attempts: int = 4) -> str:
    """Retries idempotent calls on UNAVAILABLE with exponential backoff, inside gRPC itself."""
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": [{"service": SERVICE_NAME, "method": m} for m in IDEMPOTENT_METHODS],
                    "retryPolicy": {
                        "maxAttempts": max_attempts,
                        "initialBackoff": "0.2s",
                        "maxBackoff": "2s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
    )


def channel_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", retry_service_config()),
        # A learner that died comes back within seconds (a restarted pod): reconnect attempts stay at most
        # 5 s apart, so that the backend sees it again by the next round, not after gRPC's default of up to
        # 120 s of backoff. A fleet has few learners, so trying a dead one every 5 s costs nothing.
        ("grpc.initial_reconnect_backoff_ms", 1000),
        ("grpc.max_reconnect_backoff_ms", 5000),
        # Each learner gets its own channel: never share a subchannel between two LearnerClients that
        # point at the same address, or one client's stop() would close the other's connection.
        ("grpc.use_local_subchannel_pool", 1),
    ]
