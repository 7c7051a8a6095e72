"""``dlq replay`` re-publishes what a fix lets through, not what the channel's rules still refuse: a record that
breaks the contract, re-published, was dead-lettered again by every service (four new dead letters for one; a
`replay --all` run twice, sixteen), and the operator was told it had been replayed."""

from __future__ import annotations

import pytest
import runtime_counter as rc
from test_consumer_runtime import drain

from payevents.errors import ContractError
from payevents.runtime.consumer import ConsumerRuntime
from payevents.runtime.deadletter import list_dead_letters, replay
from payevents.runtime.service import ServiceDef
from payevents.settings import Settings


def test_replay_holds_back_a_letter_the_channel_still_refuses_and_sends_the_rest(
        settings: Settings, counter: ServiceDef) -> None:
    boom, ev_boom = rc.event_record(settings, "PAY-R", "2.00", description="boom")  # a handler error: fixable
    bad = rc.event_dict("PAY-R", "3.00")
    bad["data"]["amount"]["currency"] = "usd"  # breaks the contract: no fix of a service lets it through
    rc.send(settings, [boom, rc.record(settings, rc.encode(bad), "PAY-R", bad["eventId"])])
    with ConsumerRuntime(settings, counter, poll_timeout=0.2) as rt:
        rt.backoff_initial, rt.backoff_max = 0.01, 0.05
        drain(rt)
        assert rt.stats.dead_lettered == 2
    letters = {d.event_id: d for d in list_dead_letters(settings, service=counter.name)}
    assert letters[bad["eventId"]].reason.startswith("invalid: data.amount.currency")

    done = replay(settings, service=counter.name)
    assert [d.event_id for d, _delivery in done.sent] == [ev_boom["eventId"]]
    assert [(d.event_id, why.split(":")[0]) for d, why in done.held] == [(bad["eventId"], "invalid")]
    with pytest.raises(ContractError, match=r"the channel.s rules still refuse it \(invalid: data\.amount\.currency"):
        replay(settings, partition=letters[bad["eventId"]].partition, offset=letters[bad["eventId"]].offset)

    with ConsumerRuntime(settings, counter, poll_timeout=0.2) as rt:  # the bug is still there: boom fails again
        rt.backoff_initial, rt.backoff_max = 0.01, 0.05
        drain(rt)
        assert rt.stats.consumed == 1
    again = [d.event_id for d in list_dead_letters(settings, service=counter.name)]
    assert sorted(again) == sorted([ev_boom["eventId"], ev_boom["eventId"], bad["eventId"]])
