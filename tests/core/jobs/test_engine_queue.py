"""The fair queue on its own: round-robin order, stable positions."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from core.jobs.fair_queue import FairQueue


@dataclass(eq=False)
class Job:
    user: str
    name: str


def make(*jobs: tuple[str, str]) -> tuple[FairQueue[Job], list[Job]]:
    queue: FairQueue[Job] = FairQueue(lambda j: j.user)
    items = [Job(u, n) for u, n in jobs]
    for item in items:
        queue.push(item)
    return queue, items


def names(queue: FairQueue[Job]) -> list[str]:
    return [j.name for j in queue.order()]


def test_one_job_per_user_per_round_in_arrival_order() -> None:
    queue, _ = make(("a", "a1"), ("a", "a2"), ("a", "a3"), ("b", "b1"), ("c", "c1"),
                    ("b", "b2"))
    assert names(queue) == ["a1", "b1", "c1", "a2", "b2", "a3"]
    assert queue.first() is not None and queue.first().name == "a1"


def test_serving_keeps_the_promised_order_and_newcomers_join_the_current_round() -> None:
    queue, items = make(("a", "a1"), ("a", "a2"), ("a", "a3"), ("b", "b1"))
    for job in queue.take(lambda j: True, 2):  # a1, b1 start
        queue.remove(job)
    assert names(queue) == ["a2", "a3"]
    queue.push(Job("c", "c1"))  # c joins the next round, behind a2 who waited longer
    assert names(queue) == ["a2", "c1", "a3"]
    queue.push(Job("b", "b2"))  # b's previous job left the line: b starts afresh too
    assert names(queue) == ["a2", "c1", "b2", "a3"]
    assert len(queue) == 4
    assert not queue.remove(items[0])  # already gone


def test_take_skips_incompatible_jobs_without_reordering() -> None:
    queue, _ = make(("a", "x1"), ("b", "y1"), ("c", "x2"))
    assert [j.name for j in queue.take(lambda j: j.name.startswith("x"), 5)] == ["x1", "x2"]
    assert names(queue) == ["x1", "y1", "x2"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from("abcd"), min_size=1, max_size=30),
       st.integers(min_value=0, max_value=10))
def test_prefixes_are_balanced_and_positions_only_improve(users: list[str], served: int) -> None:
    queue, items = make(*[(u, f"{u}{i}") for i, u in enumerate(users)])
    order = queue.order()
    for cut in range(len(order)):
        prefix, rest = order[:cut], order[cut:]
        counts = {u: sum(j.user == u for j in prefix) for u in {j.user for j in rest}}
        assert max(counts.values()) - min(counts.values()) <= 1
    for u in set(users):  # each user's own jobs keep their arrival order
        assert [j for j in order if j.user == u] == [j for j in items if j.user == u]
    before = {id(j): p for p, j in enumerate(order)}
    for _ in range(min(served, len(order))):
        head = queue.first()
        assert head is not None
        queue.remove(head)
        after = {id(j): p for p, j in enumerate(queue.order())}
        assert all(after[k] < before[k] for k in after)
        before = after
