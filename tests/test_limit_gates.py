"""Which limited entrypoints a worker's claims ask for (pgqd/worker/limit_gates.py): pure, no database."""

from __future__ import annotations

import pytest

from pgqd.models import EntrypointLimit
from pgqd.worker.limit_gates import REOPEN_AFTER, LimitGates

FREE = EntrypointLimit("free")
PAIRED = EntrypointLimit("paired", concurrency=2)
METERED = EntrypointLimit("metered", rate_per_second=10.0, burst=10.0)
ALL = (FREE, PAIRED, METERED)


def names(limits: tuple[EntrypointLimit, ...]) -> list[str]:
    return [limit.name for limit in limits]


def test_every_entrypoint_is_asked_for_until_a_claim_reports_one_closed() -> None:
    gates = LimitGates(ALL)
    asked, _ = gates.request(0.0)
    assert names(asked) == ["free", "paired", "metered"]


def test_a_closed_entrypoint_is_left_out_until_its_moment_passes() -> None:
    gates = LimitGates(ALL)
    _, sent = gates.request(0.0)
    gates.claimed(sent, {"paired": None, "metered": 0.02}, now=1.0)
    assert names(gates.request(1.0)[0]) == ["free"]
    # The rate limit's next token comes first; a full concurrency limit waits for a slot, or REOPEN_AFTER.
    assert names(gates.request(1.02)[0]) == ["free", "metered"]
    assert names(gates.request(1.0 + REOPEN_AFTER - 0.001)[0]) == ["free", "metered"]
    assert names(gates.request(1.0 + REOPEN_AFTER)[0]) == ["free", "paired", "metered"]


def test_a_long_wait_is_cut_to_reopen_after() -> None:
    gates = LimitGates(ALL)
    _, sent = gates.request(0.0)
    gates.claimed(sent, {"metered": 60.0}, now=0.0)
    assert names(gates.request(REOPEN_AFTER)[0]) == ["free", "paired", "metered"]


def test_a_notification_reopens_the_entrypoints_it_names_or_all_when_it_names_none() -> None:
    gates = LimitGates(ALL)
    _, sent = gates.request(0.0)
    gates.claimed(sent, {"paired": None, "metered": None}, now=0.0)
    gates.reopen(["paired", "someone_else"])
    assert names(gates.request(0.0)[0]) == ["free", "paired"]
    gates.reopen()
    assert names(gates.request(0.0)[0]) == ["free", "paired", "metered"]
    assert not gates.any_closed


def test_a_claim_sent_before_a_notification_cannot_close_what_it_reopened() -> None:
    gates = LimitGates(ALL)
    _, sent = gates.request(0.0)
    gates.reopen(["paired"])  # jobs of it were enqueued while the claim was on its way
    gates.claimed(sent, {"paired": None, "metered": None}, now=0.0)
    assert names(gates.request(0.0)[0]) == ["free", "paired"]
    # A claim sent after the notification is believed.
    _, later = gates.request(0.0)
    gates.claimed(later, {"paired": None}, now=0.0)
    assert names(gates.request(0.0)[0]) == ["free"]


def test_unlimited_entrypoints_are_never_left_out() -> None:
    gates = LimitGates(ALL)
    _, sent = gates.request(0.0)
    gates.claimed(sent, {"free": None}, now=0.0)
    assert names(gates.request(0.0)[0]) == ["free", "paired", "metered"]


def test_when_every_entrypoint_is_closed_a_claim_asks_for_all_of_them() -> None:
    gates = LimitGates((PAIRED, METERED))
    _, sent = gates.request(0.0)
    gates.claimed(sent, {"paired": None, "metered": None}, now=0.0)
    assert names(gates.request(0.0)[0]) == ["paired", "metered"]
    assert not gates.any_closed


def test_a_spent_rate_limit_is_asked_again_once_a_batch_of_tokens_may_be_there() -> None:
    # 10 jobs/s: its next token in 20 ms and 3 more for a batch of 4 in another 300 ms, cut to REOPEN_AFTER.
    gates = LimitGates(ALL, batch=4)
    _, sent = gates.request(0.0)
    assert gates.claimed(sent, {"metered": 0.02}, now=1.0) == REOPEN_AFTER
    assert names(gates.request(1.0 + REOPEN_AFTER - 0.001)[0]) == ["free", "paired"]
    assert names(gates.request(1.0 + REOPEN_AFTER)[0]) == ["free", "paired", "metered"]
    # 200 jobs/s: a batch of 10 in 5 + 45 ms.
    fast = EntrypointLimit("fast", rate_per_second=200.0, burst=200.0)
    gates = LimitGates((FREE, fast), batch=10)
    _, sent = gates.request(0.0)
    assert gates.claimed(sent, {"fast": 0.005}, now=0.0) == pytest.approx(0.05)
    # A burst smaller than the batch: its tokens never make a batch, only the burst is waited for.
    small = EntrypointLimit("small", rate_per_second=200.0, burst=2.0)
    gates = LimitGates((FREE, small), batch=10)
    _, sent = gates.request(0.0)
    assert gates.claimed(sent, {"small": 0.005}, now=0.0) == pytest.approx(0.01)


def test_a_limit_without_a_time_is_not_a_timed_reopening() -> None:
    gates = LimitGates(ALL, batch=4)
    _, sent = gates.request(0.0)
    assert gates.claimed(sent, {"paired": None}, now=0.0) is None
    assert gates.claimed(sent, {"paired": 0.005}, now=0.0) == 0.005  # another claim held its row: no batch wait


def test_new_jobs_leave_a_reached_limit_closed_and_other_notices_open_it() -> None:
    gates = LimitGates(ALL)
    _, sent = gates.request(0.0)
    gates.claimed(sent, {"paired": None}, now=0.0, reached={"paired"})
    gates.reopen(["paired"], new_jobs=True)  # more jobs: the limit is still reached
    assert names(gates.request(0.0)[0]) == ["free", "metered"]
    gates.reopen(["paired"])  # a freed slot, or jobs put back
    assert names(gates.request(0.0)[0]) == ["free", "paired", "metered"]
    assert gates.reached == set()


def test_new_jobs_reopen_a_limit_closed_for_want_of_work() -> None:
    gates = LimitGates(ALL)
    _, sent = gates.request(0.0)
    gates.claimed(sent, {"paired": None}, now=0.0)
    gates.reopen(["paired"], new_jobs=True)
    assert names(gates.request(0.0)[0]) == ["free", "paired", "metered"]


def test_nothing_is_asked_for_when_every_entrypoint_is_a_reached_limit() -> None:
    gates = LimitGates((PAIRED,))
    _, sent = gates.request(0.0)
    gates.claimed(sent, {"paired": None}, now=0.0, reached={"paired"})
    assert gates.request(0.0)[0] == ()
    # Closed for want of work instead: the worker decided to claim, so it asks for all.
    gates.claimed(sent, {"paired": None}, now=0.0)
    assert names(gates.request(0.0)[0]) == ["paired"]
    # A reached limit's gate opens after its moment too.
    gates.claimed(sent, {"paired": None}, now=1.0, reached={"paired"})
    assert names(gates.request(1.0 + REOPEN_AFTER)[0]) == ["paired"]
