"""The waiting line: arrival order, round-robin across users (start-time fair queuing).

Each job gets a round number when it arrives: one more than its user's previous
waiting job, and at least one more than the last round served from. The line is
sorted by (round, arrival). So a newcomer waits behind at most one job per other user, one
user cannot fill a whole batch while others wait, and a job's position never gets
worse except when a newcomer takes a place in an earlier round. The caller bounds
its size.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Hashable, Iterator
from itertools import count
from typing import Generic, TypeVar

T = TypeVar("T")


def fair_round(served: int, user_last: int | None) -> int:
    """A new job's round: after the round last served from, and after its user's last
    waiting job (the one rule of both backends: this queue, and the rows' queue of the
    redis backend)."""
    return max(served, user_last or 0) + 1


class FairQueue(Generic[T]):
    """Waiting jobs in fair service order."""

    def __init__(self, user_of: Callable[[T], Hashable]) -> None:
        self._user_of = user_of
        self._keys: list[tuple[int, int]] = []  # sorted (round, arrival)
        self._items: dict[tuple[int, int], T] = {}
        self._key_of: dict[int, tuple[int, int]] = {}  # id(item) -> key
        self._user_round: dict[Hashable, int] = {}  # last round given to a user's waiting job
        self._user_waiting: dict[Hashable, int] = {}
        self._served_round = 0
        self._arrivals = count()

    def __len__(self) -> int:
        return len(self._keys)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def __iter__(self) -> Iterator[T]:
        return iter(self.order())

    def push(self, item: T) -> None:
        user = self._user_of(item)
        rnd = fair_round(self._served_round, self._user_round.get(user))
        key = (rnd, next(self._arrivals))
        self._user_round[user] = rnd
        self._user_waiting[user] = self._user_waiting.get(user, 0) + 1
        bisect.insort(self._keys, key)
        self._items[key] = item
        self._key_of[id(item)] = key

    def order(self) -> list[T]:
        """Every waiting job in service order."""
        return [self._items[k] for k in self._keys]

    def first(self) -> T | None:
        return self._items[self._keys[0]] if self._keys else None

    def take(self, fits: Callable[[T], bool], limit: int) -> list[T]:
        """Up to `limit` jobs in service order that satisfy `fits` (left in the line)."""
        out: list[T] = []
        for key in self._keys:
            if len(out) >= limit:
                break
            if fits(self._items[key]):
                out.append(self._items[key])
        return out

    def remove(self, item: T) -> bool:
        """Take a job out of the line (it is being served, or dropped)."""
        key = self._key_of.pop(id(item), None)
        if key is None:
            return False
        del self._keys[bisect.bisect_left(self._keys, key)]
        del self._items[key]
        self._served_round = max(self._served_round, key[0])
        user = self._user_of(item)
        left = self._user_waiting[user] - 1
        if left:
            self._user_waiting[user] = left
        else:  # nothing waiting: the user's next job starts from the current round
            del self._user_waiting[user]
            del self._user_round[user]
        return True

    def clear(self) -> list[T]:
        items = self.order()
        for item in items:
            self.remove(item)
        return items
