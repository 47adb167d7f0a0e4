"""Settings of the stand-in TMC server: the protocol's timings and the values the public material does
not give (docs/tmc-protocol.md#unknowns), which are ours."""

from __future__ import annotations

import random
from dataclasses import dataclass

from simulator.tmc_faults import TmcFaults
from simulator.tmc_stats import TmcServerStats


@dataclass(slots=True)
class TmcServerConfig:
    # "收到消息后若阻塞分钟级将导致确认超时": about one minute in production
    # (docs/tmc-protocol.md#redelivery).
    confirm_timeout: float = 60.0
    # "约6分钟后重新加入消费队列": about 5–6 minutes in production (docs/tmc-protocol.md#redelivery).
    failed_redelivery_delay: float = 330.0
    # Unconfirmed messages per connection before the server holds the rest
    # (docs/tmc-protocol.md#pull-flow-control).
    max_in_flight: int = 1000
    # Fraction of pushes whose content goes out as a gzip ByteArray (when production compresses is unknown).
    gzip_fraction: float = 0.0
    # The production CONNECTACK refusal codes and phrases are unknown (docs/tmc-protocol.md#unknowns); these
    # are ours.
    refusal_status_code: int = 401
    bad_sign_phrase: str = "invalid sign"
    unknown_app_phrase: str = "invalid app_key"
    # StatusCode of a SENDACK answering a malformed client SEND (also unknown in production).
    bad_request_status_code: int = 400
    # Insist on Byte `__kind` and Int64 `id`, as the Java server's casts do
    # (docs/tmc-protocol.md#message-kinds, docs/tmc-protocol.md#confirm).
    strict_types: bool = True
    # `publisher` of every push: the publishing app's key. Taobao's own key for trade topics is unknown.
    publisher: str = "stand-in"
    # Real message ids exceed 2**53 (docs/tmc-protocol.md#large-ids); starting there keeps clients honest.
    first_message_id: int = 2**53 + 1
    handshake_timeout: float = 10.0
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    close_timeout: float = 2.0
    seed: int = 0


@dataclass(frozen=True, slots=True)
class ServerState:
    """What the TMC server's parts share: its config, its fault knobs (mutable at runtime), its counters
    and the seeded RNG every random choice draws from, so a scenario replays the same way."""

    config: TmcServerConfig
    faults: TmcFaults
    stats: TmcServerStats
    rng: random.Random
