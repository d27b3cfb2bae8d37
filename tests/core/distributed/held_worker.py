"""`sonify` whose model calls hold from the second on: a worker killed then is surely mid-batch.

`python -m tests.core.distributed.held_worker worker --config PATH --name w1` is
`sonify worker --config PATH --name w1` with one change: the first model call renders as
usual; each later one prints `HOLDING <n>` (n jobs in it) and then holds until the process
dies, reporting progress so a stop can still cancel it. The kill test waits for that line
instead of guessing from timings, so a loaded machine cannot finish the batch first.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from bot.cli import main
from core.models.pipeline import Pipeline

HOLD_FROM_CALL = 2
TICK_S = 0.2


def hold_from_second_call(run: Callable[..., Any]) -> Callable[..., Any]:
    calls, lock = [0], threading.Lock()

    def held_run(self: Pipeline, inputs: Sequence[Any], options: Any,
                 progress: Callable[[int, int], None] | None = None) -> Any:
        with lock:
            calls[0] += 1
            call = calls[0]
        if call < HOLD_FROM_CALL:
            return run(self, inputs, options, progress)
        print(f"HOLDING {len(inputs)}", flush=True)
        while True:
            time.sleep(TICK_S)
            if progress is not None:
                progress(0, int(options.steps))  # raises once the runner cancels the call

    return held_run


if __name__ == "__main__":
    Pipeline.run = hold_from_second_call(Pipeline.run)  # type: ignore[method-assign]
    sys.exit(main())
