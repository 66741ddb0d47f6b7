"""Gateway sessions: what survives a dropped socket so that RESUME can replay it.

A session is created by a successful IDENTIFY.  It owns the sequence counter and a
bounded replay buffer of the dispatches it produced; a connection is attached to it
while one is open.  After the socket goes away (except for a clean 1000/1001 close)
the session stays resumable for ``RESUME_WINDOW_S`` of the world's clock, and keeps
buffering the events it would have received.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from membersense.sandbox.gateway_protocol import dispatch_frame

if TYPE_CHECKING:
    from membersense.sandbox.world import Bot

#: How long a detached session can be resumed (Discord: "a few minutes").
RESUME_WINDOW_S = 180.0
#: Replay buffer bounds per session; a RESUME from before the oldest kept frame is refused.
REPLAY_MAX_FRAMES = 4096
REPLAY_MAX_CHARS = 32 * 1024 * 1024


class Session:
    """One IDENTIFYed gateway session of a bot."""

    def __init__(
        self,
        bot: Bot,
        *,
        intents: int,
        shard: tuple[int, int] | None,
        large_threshold: int,
    ) -> None:
        self.session_id: str = secrets.token_hex(16)
        self.bot = bot
        self.intents = intents
        self.shard = shard
        self.large_threshold = large_threshold
        self.seq = 0
        #: The attached connection (a ``gateway.Connection``) or None while detached.
        self.connection: Any = None
        self.detached_at: float | None = None
        self._replay: deque[tuple[int, str]] = deque()
        self._replay_chars = 0

    def wants(self, guild_id: int | None) -> bool:
        """Whether events of ``guild_id`` are routed to this session's shard."""
        if self.shard is None:
            return True
        shard_id, num_shards = self.shard
        if guild_id is None:
            return shard_id == 0  # Discord sends guild-less events to shard 0 only
        return (guild_id >> 22) % num_shards == shard_id

    def next_frame(self, event: str, d_json: str) -> str:
        """Number the next dispatch, keep it for replay and return its frame."""
        self.seq += 1
        frame = dispatch_frame(event, self.seq, d_json)
        self._replay.append((self.seq, frame))
        self._replay_chars += len(frame)
        while self._replay_over_budget():
            _, dropped = self._replay.popleft()
            self._replay_chars -= len(dropped)
        return frame

    def _replay_over_budget(self) -> bool:
        # The newest frame is always kept, even when it alone is over the size budget.
        size = len(self._replay)
        return size > REPLAY_MAX_FRAMES or (size > 1 and self._replay_chars > REPLAY_MAX_CHARS)

    def frames_after(self, seq: int) -> list[str] | None:
        """The buffered frames numbered after ``seq``, or None when some were already dropped."""
        if seq >= self.seq:
            return []
        oldest = self._replay[0][0] if self._replay else self.seq + 1
        if seq + 1 < oldest:
            return None
        return [frame for s, frame in self._replay if s > seq]

    def expired(self, now: float) -> bool:
        """Whether the session was detached for longer than the resume window."""
        return self.detached_at is not None and now - self.detached_at > RESUME_WINDOW_S


class SessionRegistry:
    """All live or resumable sessions, by id."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._sessions: dict[str, Session] = {}

    def add(self, session: Session) -> None:
        """Register a new session (and forget expired ones)."""
        self.purge()
        self._sessions[session.session_id] = session

    def get(self, session_id: Any) -> Session | None:
        """The resumable session ``session_id``, or None when unknown or expired."""
        if not isinstance(session_id, str):
            return None
        session = self._sessions.get(session_id)
        if session is not None and session.expired(self._clock()):
            self.discard(session)
            return None
        return session

    def discard(self, session: Session) -> None:
        """Forget ``session`` (it can no longer be resumed)."""
        self._sessions.pop(session.session_id, None)

    def purge(self) -> None:
        """Drop every session whose resume window has passed."""
        now = self._clock()
        for session in [s for s in self._sessions.values() if s.expired(now)]:
            self.discard(session)

    def detach(self, session: Session) -> None:
        """Mark ``session`` as having no connection; the resume window starts now."""
        session.connection = None
        session.detached_at = self._clock()

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._sessions.values()))

    def __len__(self) -> int:
        return len(self._sessions)
