"""The dispatch loop's wake-up (pgqd/worker/wakeup.py): set by events, waited for with a time limit."""

from __future__ import annotations

import asyncio

import pytest

from pgqd.worker.wakeup import Wakeup


async def test_a_wake_up_set_before_the_sleep_ends_it_at_once() -> None:
    wakeup = Wakeup()
    wakeup.set()
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert await wakeup.wait(loop, 30.0)
    assert loop.time() - began < 1.0
    assert wakeup.is_set()


async def test_a_sleep_without_a_wake_up_ends_when_its_time_has_passed() -> None:
    wakeup = Wakeup()
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert not await asyncio.wait_for(wakeup.wait(loop, 0.05), timeout=10)
    # The loop may run a timer up to a millisecond early (its clock's resolution).
    assert loop.time() - began >= 0.04
    assert not wakeup.is_set()


async def test_a_wake_up_set_during_the_sleep_ends_it_and_stays_set_until_cleared() -> None:
    wakeup = Wakeup()
    loop = asyncio.get_running_loop()
    sleeper = asyncio.ensure_future(wakeup.wait(loop, 30.0))
    await asyncio.sleep(0)  # the sleeper is waiting now
    assert not sleeper.done()
    wakeup.set()
    assert await asyncio.wait_for(sleeper, timeout=10)
    assert wakeup.is_set()
    assert await asyncio.wait_for(wakeup.wait(loop, 30.0), timeout=10)  # still set: no sleep
    wakeup.clear()
    assert not await asyncio.wait_for(wakeup.wait(loop, 0.01), timeout=10)


async def test_a_sleeper_cancelled_leaves_the_wake_up_ready_for_the_next() -> None:
    wakeup = Wakeup()
    loop = asyncio.get_running_loop()
    sleeper = asyncio.ensure_future(wakeup.wait(loop, 30.0))
    await asyncio.sleep(0)
    sleeper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sleeper
    wakeup.set()  # with no one asleep, it only sets the flag
    assert await asyncio.wait_for(wakeup.wait(loop, 30.0), timeout=10)


async def test_a_second_sleeper_is_refused_rather_than_left_unwoken() -> None:
    wakeup = Wakeup()
    loop = asyncio.get_running_loop()
    first = asyncio.ensure_future(wakeup.wait(loop, 30.0))
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="one sleeper"):
        await wakeup.wait(loop, 30.0)
    wakeup.set()
    assert await asyncio.wait_for(first, timeout=10)
