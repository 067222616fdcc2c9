"""python -m processor: serve the simulated processor on PROCESSOR_HOST:PROCESSOR_PORT."""

import logging

from aiohttp import web

from processor.config import Behaviour
from processor.server import make_app


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s processor %(levelname)s %(message)s")
    behaviour = Behaviour.from_environment()
    print(
        f"processor: http://{behaviour.host}:{behaviour.port}/ latency {behaviour.latency_ms:g} ms "
        f"(jitter {behaviour.jitter_ms:g}), timeouts {behaviour.timeout_rate:g}, errors {behaviour.error_rate:g}, "
        f"store {behaviour.db_path}",
        flush=True,
    )
    # No access log: at hundreds of requests per second it would cost more than the answers.
    web.run_app(
        make_app(behaviour), host=behaviour.host, port=behaviour.port, access_log=None, print=None, backlog=1024
    )


if __name__ == "__main__":
    main()
