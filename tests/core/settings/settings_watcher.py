"""A second Sonify process for the propagation test: it builds the `Services` every
`sonify run` builds (redis backend), then prints each new value of one chat setting."""

from __future__ import annotations

import asyncio
import sys

from core.config import load_config
from core.services import Services


async def main(config_path: str, platform: str, chat_id: str, key: str) -> None:
    services = await Services.create(load_config(config_path))
    try:
        propagation = services.chat_settings.propagation
        assert propagation is not None, "the redis backend propagates settings"
        await asyncio.wait_for(propagation.subscribed.wait(), 30)
        print("ready", flush=True)
        seen = object()
        while True:
            value = services.chat_settings.get(platform, chat_id, key)
            if value != seen:
                print(f"value {value!r}", flush=True)
                seen = value
            await asyncio.sleep(0.01)  # memory only: what the hot path reads
    finally:
        await services.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
