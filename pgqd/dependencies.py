"""Jobs enqueued to wait for others (``after=``): telling them apart from ordinary jobs, and checking them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from operator import attrgetter
from typing import Any

from pgqd.errors import PgqdError
from pgqd.models import PARENT_FAILURE_POLICIES, NewJob, NewStep, OnConflict, ParentFailurePolicy, PlainJobs

_DEPENDENCY = attrgetter("after", "on_parent_failure")


def dependent_steps(specs: Sequence[Any], sent: Sequence[NewJob], on_conflict: OnConflict) -> list[NewStep] | None:
    """The jobs of an enqueue call as steps when any of them waits for other jobs; None when none does (the
    ordinary statements then store them). ``specs`` are the caller's JobSpecs or mappings, ``sent`` the jobs
    ``prepare_batch`` made of them."""
    if isinstance(sent, PlainJobs):
        return None
    try:
        # JobSpecs, the common case, asked of a whole column at once (~0.05 ms per 1,000 jobs).
        pairs = list(map(_DEPENDENCY, specs))
    except AttributeError:  # some are mappings
        pairs = [(_field(spec, "after"), _field(spec, "on_parent_failure")) for spec in specs]
    if pairs.count((None, None)) == len(pairs):
        return None
    wanted, policies = [pair[0] for pair in pairs], [pair[1] for pair in pairs]
    if on_conflict != "raise":
        raise PgqdError('jobs that wait for others (after=) take on_conflict="raise" only')
    if len(sent) != len(specs):
        raise PgqdError("a dedupe key appears twice among jobs that wait for others")
    return [
        NewStep(job, parent_ids(after), check_policy(policy))
        for job, after, policy in zip(sent, wanted, policies, strict=True)
    ]


def _field(spec: Any, name: str) -> Any:
    return spec.get(name) if isinstance(spec, Mapping) else getattr(spec, name, None)


def parent_ids(after: Iterable[int] | int | None) -> tuple[int, ...]:
    if after is None:
        return ()
    items: Iterable[Any] = (after,) if isinstance(after, int) else after
    ids = []
    for parent in items:
        if isinstance(parent, bool) or not isinstance(parent, int) or parent <= 0:
            raise PgqdError(f"after= takes job ids (positive ints), got {parent!r}")
        ids.append(parent)
    return tuple(dict.fromkeys(ids))


def check_policy(policy: Any) -> ParentFailurePolicy | None:
    if policy is None or policy in PARENT_FAILURE_POLICIES:
        return policy  # type: ignore[no-any-return]
    raise PgqdError(f"on_parent_failure must be one of {', '.join(PARENT_FAILURE_POLICIES)}, got {policy!r}")
