"""An ASGI app served by a real uvicorn on a free loopback port, in a thread of the test process."""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn

from airflow_provider_ahachat.sandbox.server import bind_socket


class AppServer:
    """
    Serve ``app`` with uvicorn on 127.0.0.1 (a free port) while in the ``with`` block; ``url`` is its
    address. ``config`` goes to ``uvicorn.Config`` (``access_log=True``...).
    """

    def __init__(self, app: Any, **config: Any) -> None:
        self.sock = bind_socket()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        settings = {"log_level": "warning", "lifespan": "off", "log_config": None, **config}
        self.server = uvicorn.Server(uvicorn.Config(app, **settings))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> AppServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the app's server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()
