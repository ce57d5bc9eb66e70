"""`canhbao web`: the web face alone (any number of them at scale); `canhbao serve` runs it beside the worker."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import socket
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

import typer

from dispatcher.cli.common import Context, err
from dispatcher.errors import UsageError

if TYPE_CHECKING:
    import uvicorn

HostOption = Annotated[str, typer.Option("--host", help="Địa chỉ lắng nghe của cổng web.")]
PortOption = Annotated[int, typer.Option("--port", help="Cổng TCP của cổng web (0: một cổng còn trống).")]
WorkersOption = Annotated[
    int | None, typer.Option("--workers", min=1, help="Số tiến trình cùng phục vụ cổng ([web] workers; mặc định 1).")
]


def register(app: typer.Typer) -> None:
    """Attach the command to the application."""
    app.command("web")(web)


def web(
    ctx: typer.Context, host: HostOption = "127.0.0.1", port: PortOption = 8080, workers: WorkersOption = None
) -> None:
    """Cổng web: bảng điều khiển, API, báo cáo trạng thái và tin nhắn đến từ các nhà cung cấp, /healthz. Ctrl-C dừng."""
    c: Context = ctx.obj
    count = workers or c.settings.web.workers
    if count == 1:
        server, listening = server_for(c, host, port)
        err.print(f"Cổng web đang nghe tại http://{_shown(host)}:{listening.getsockname()[1]} (Ctrl-C để dừng).")
        asyncio.run(_serve_until_signal(server, listening), loop_factory=server.config.get_loop_factory())
    else:
        _serve_in_processes(c, host, port, count)
    err.print("Đã dừng cổng web.")


def _serve_in_processes(c: Context, host: str, port: int, count: int) -> None:
    """`count` forked processes serving one socket (dispatcher/cli/supervisor.py), until SIGTERM or Ctrl-C."""
    from dispatcher.cli.supervisor import Supervisor

    c.engine  # noqa: B018 -- opened (and its schema checked) once here, so that a wrong URL is said once
    c.close()  # no connection and no checkpoint thread may cross a fork: each process opens its own
    listening = _listen(host, port)
    _app_modules()

    def serve() -> None:
        server = _server(c)
        asyncio.run(_serve_until_signal(server, listening), loop_factory=server.config.get_loop_factory())
        c.close()

    where = f"http://{_shown(host)}:{listening.getsockname()[1]}"
    err.print(f"Cổng web đang nghe tại {where} với {count} tiến trình (Ctrl-C để dừng).")
    Supervisor(count, serve).run()
    listening.close()


def server_for(c: Context, host: str, port: int) -> tuple[uvicorn.Server, socket.socket]:
    """The web app's server and the socket it will listen on, bound now so that a port in use is said at once.

    FastAPI and uvicorn are imported here, not with the module: every `canhbao` command loads the
    CLI, and they would add half a second to each.
    """
    server = _server(c)
    return server, _listen(host, port)


def _app_modules() -> None:
    """Import what serving needs (FastAPI, uvicorn, the app): once in a supervisor, its children share it."""
    import uvicorn  # noqa: F401

    import dispatcher.web  # noqa: F401


def _listen(host: str, port: int) -> socket.socket:
    try:
        return socket.create_server((host, port), reuse_port=False)
    except OSError as exc:
        raise UsageError(f"Không mở được cổng web {host}:{port}: {exc.strerror or exc}.") from exc


def _server(c: Context) -> uvicorn.Server:
    """uvicorn serving the app on `c`'s settings and database (the socket is given to `serve`)."""
    import uvicorn

    from dispatcher.web import create_app

    class Server(uvicorn.Server):
        """uvicorn, leaving the signals to the command that runs it (it would re-raise Ctrl-C after stopping)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    app = create_app(c.settings, c.engine)
    # What is loaded by now lives as long as the process: out of the collector's sight, a full
    # collection no longer walks it (tens of milliseconds that every request in flight would wait).
    gc.collect()
    gc.freeze()
    # log_config=None: our logging stays as configured (JSON lines, masked numbers); access lines are not kept.
    # proxy_headers=False: uvicorn would believe X-Forwarded-For from 127.0.0.1 by default; [web]
    # trusted_proxies alone decides whose header is believed (dispatcher/web/proxies.py).
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=5,
                            proxy_headers=False)  # fmt: skip
    return Server(config)


def start_in_thread(server: uvicorn.Server, listening: socket.socket) -> threading.Thread:
    """Serve in a thread of its own (beside the worker's loop); stop it with `stop_thread`."""
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]}, name="web", daemon=True)
    thread.start()
    return thread


def stop_thread(server: uvicorn.Server, thread: threading.Thread) -> None:
    """Let requests in progress finish, then stop serving."""
    server.should_exit = True
    thread.join(10)


async def _serve_until_signal(server: uvicorn.Server, listening: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, lambda: setattr(server, "should_exit", True))
    await server.serve(sockets=[listening])


def _shown(host: str) -> str:
    return f"[{host}]" if ":" in host else host
