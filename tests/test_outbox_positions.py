"""Outbox positions: a stream entry id as the integer PostgreSQL orders rows by."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from langgraph_dualsaver.chain.outbox import clock_position, entry_id_at, position, position_ms

pytestmark = pytest.mark.pure


@given(st.integers(0, 2**43 - 1), st.integers(0, 2**20 - 1))
def test_a_position_round_trips_and_keeps_stream_order(ms: int, seq: int) -> None:
    at = position(f"{ms}-{seq}")
    assert entry_id_at(at) == f"{ms}-{seq}"
    assert position_ms(at) == ms
    assert at < 2**63  # a BIGINT
    assert position(f"{ms}-{seq}".encode()) == at
    assert position(f"{ms + 1}-0") > at


def test_a_position_refuses_a_sequence_it_cannot_hold() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        position(f"1-{2**20}")


def test_the_clock_position_comes_after_every_entry_of_its_millisecond() -> None:
    before_ms = int(time.time() * 1000)
    at = clock_position()
    assert position_ms(at) >= before_ms
    assert at == position(f"{position_ms(at)}-{2**20 - 1}")
