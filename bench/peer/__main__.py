"""`python -m bench.peer`: the peer pipeline (bench/peer/pipeline.py) as its own process.

Configured from the environment: PEER_TMC_URL, PEER_API_URL, PEER_APP_KEY, PEER_APP_SECRET,
PEER_SHOPS (JSON list of {"nick", "session"}), PEER_DATABASE_URL, PEER_GROUP (default "default"),
PEER_WORKERS (thread pool size, default 16). SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from types import FrameType

from tornado import ioloop  # type: ignore[import-untyped,import-not-found,unused-ignore]  # bench extra

from bench.peer.pipeline import PeerConfig, PeerPipeline, run_forever


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    env = os.environ
    shops = json.loads(env["PEER_SHOPS"])
    config = PeerConfig(
        tmc_url=env["PEER_TMC_URL"],
        api_url=env["PEER_API_URL"],
        app_key=env["PEER_APP_KEY"],
        app_secret=env["PEER_APP_SECRET"],
        sessions={s["nick"]: s["session"] for s in shops},
        database_url=env["PEER_DATABASE_URL"],
        group=env.get("PEER_GROUP", "default"),
        workers=int(env.get("PEER_WORKERS", "16")),
    )
    loop = ioloop.IOLoop.current()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        loop.add_callback_from_signal(loop.stop)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    run_forever(PeerPipeline(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
