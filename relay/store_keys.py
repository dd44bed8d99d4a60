"""Key names, error types and small helpers shared by :class:`relay.store.Store` and its
parts (:mod:`relay.store_supervision`, :mod:`relay.store_jobs`). Import them from
:mod:`relay.store`.
"""

from __future__ import annotations

from typing import Any, Final

from protocol.errors import LonewatchError

from .fairshare import ROUTINE_JOB, ROUTINE_STREAM

PREFIX: Final = "lw:"
EVENTS: Final = PREFIX + "events"
DISPATCH: Final = PREFIX + "dispatch"
DEADLETTER: Final = PREFIX + "deadletter"
GROUP: Final = "dispatchers"
INDEX: Final = PREFIX + "deadlines"
#: How long an event id is remembered for deduplication, in seconds (30 days).
EVENT_TTL_S: Final = 30 * 24 * 3600


def device_key(device_id: str, what: str) -> str:
    """``lw:{<device>}:<what>``: a per-device key (hash tag = device id)."""
    return f"{PREFIX}{{{device_id}}}:{what}"


def event_key(event_id: str) -> str:
    """``lw:{<device>}:event:<event id>`` (the device is the part before the last ``:``)."""
    return device_key(event_id.rpartition(":")[0], f"event:{event_id}")


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class StoreError(LonewatchError, RuntimeError):
    """Redis could not be reached (connection refused, timeout, loading); nothing was
    stored. Retryable: the caller keeps the message and tries again."""


class StoreDataError(LonewatchError, ValueError):
    """Redis refused a command because of what was sent (a bug or data it cannot take).
    Not retryable: retrying would block every message behind this one."""


def _job_id(stream: Any, jid: Any) -> str:
    """A dispatcher's job id: the stream entry id, ``routine/``-prefixed for routine jobs."""
    return (ROUTINE_JOB if _s(stream) == ROUTINE_STREAM else "") + _s(jid)


def _by_stream(job_ids: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {DISPATCH: [], ROUTINE_STREAM: []}
    for j in job_ids:
        if j.startswith(ROUTINE_JOB):
            out[ROUTINE_STREAM].append(j[len(ROUTINE_JOB):])
        else:
            out[DISPATCH].append(j)
    return out
