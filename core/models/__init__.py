"""Image → caption → prompt → sound: the models and how they are loaded."""

import os

# OpenMP's waiting threads spin by default (libgomp's "active" policy). Beside the bot's own
# threads, or on a shared machine, a spinning thread holds the core that the thread it waits
# for needs: on 2 busy cores a 6-beam caption step took 2-4x longer with 2 threads than with
# 1. Passive waiting gives the core back. OpenMP reads this once, when torch loads, so it is
# set here, before any module of this package imports torch; the environment still wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
