"""One-time stream tickets: once, for 60 seconds, and gone with their session."""

from __future__ import annotations

from membersense.events.tickets import TICKET_TTL_S, MemoryTicketStore
from tests.fakes import FakeClock


def test_a_ticket_names_its_session_once() -> None:
    store = MemoryTicketStore(clock=FakeClock())
    ticket = store.issue("session-a")
    assert len(ticket) == 32 and ticket != store.issue("session-a")
    assert store.redeem(ticket) == "session-a"
    assert store.redeem(ticket) is None


def test_a_ticket_expires_and_expired_ones_are_dropped(clock: FakeClock) -> None:
    store = MemoryTicketStore(clock=clock)
    old = store.issue("session-a")
    clock.advance(TICKET_TTL_S - 1)
    fresh = store.issue("session-b")
    clock.advance(1)
    assert store.redeem(old) is None
    store.issue("session-c")  # issuing sweeps the expired ones
    assert len(store) == 2
    assert store.redeem(fresh) == "session-b"


def test_tickets_end_with_their_session_and_odd_values_are_never_looked_up() -> None:
    store = MemoryTicketStore(clock=FakeClock())
    mine, theirs = store.issue("mine"), store.issue("theirs")
    store.forget_session("mine")
    assert store.redeem(mine) is None and store.redeem(theirs) == "theirs"
    for odd in ("", "x" * 1000, "a b", mine + "!"):
        assert store.redeem(odd) is None
