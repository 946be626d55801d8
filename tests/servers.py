"""Real servers for integration tests: started on loopback in a temporary directory, polled
until ready (never a fixed sleep), stopped by pid.

Under CI (``CI=true``) a missing server binary, or anything else a test needs, is a test
failure: a skip would hide a broken install (:func:`unavailable`).
``scripts/bootstrap.sh --servers`` installs the servers from Debian's packages.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from aiohttp import web

from sim.room.nginx import NGINX_RTMP_MODULE, NginxRtmp

__all__ = [
    "NginxRtmp",
    "build",
    "ffmpeg_publisher",
    "free_port",
    "nginx_rtmp",
    "prometheus",
    "pushgateway",
    "require",
    "stop_process",
    "unavailable",
    "wait_http",
]


def unavailable(message: str) -> NoReturn:
    """Something a test needs is missing: fail under CI (a broken install), skip elsewhere."""
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(message)
    pytest.skip(message)


def require(binary: str) -> str:
    """The path of ``binary``; fail under CI, skip elsewhere, if it is not installed."""
    path = shutil.which(binary)
    if path is None:
        unavailable(f"{binary} is not installed (scripts/bootstrap.sh --servers installs it)")
    return path


def require_file(path: Path, package: str) -> Path:
    """``path``, installed by Debian's ``package``; fail under CI, skip elsewhere, if missing."""
    if not path.exists():
        unavailable(f"{path} is missing: install {package} (scripts/bootstrap.sh --servers)")
    return path


def build(script: str) -> str:
    """Run ``scripts/SCRIPT`` (a build of a test server's own, such as the pion forwarder) and
    return what it printed: the path built. Its exit code 2 means a package it needs is
    missing (unavailable); any other failure fails the test with the script's last words."""
    done = subprocess.run(
        [str(Path(__file__).resolve().parent.parent / "scripts" / script)],
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode == 2:
        unavailable(f"{done.stderr.strip()} (scripts/bootstrap.sh --servers installs them)")
    if done.returncode != 0:
        pytest.fail(f"scripts/{script} failed: {done.stderr.strip()[-2000:]}")
    return done.stdout.strip()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout:g} s")


@contextlib.contextmanager
def _process(args: list[str], ready: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_http(ready, proc=proc)
        yield proc
    except Exception:
        print(log.read_text(errors="replace")[-4000:])
        raise
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """Stop a server by its pid: SIGTERM, then SIGKILL if it has not gone within 10 s."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.asynccontextmanager
async def aiohttp_app(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on a free loopback port; yield its base URL (``http://127.0.0.1:PORT``)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


class Prometheus:
    def __init__(self, url: str, config: Path) -> None:
        self.url = url
        self.config = config

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr}
        if at is not None:
            params["time"] = str(at)
        with urllib.request.urlopen(
            f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}", timeout=10
        ) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def wait_for(self, expr: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(expr)
            if result:
                return result
            time.sleep(0.5)
        raise TimeoutError(f"Prometheus had no data for {expr!r} within {timeout:g} s")


@contextlib.contextmanager
def prometheus(
    tmp: Path, scrape: str, *, interval: str = "2s", rules: list[Path] | None = None
) -> Iterator[Prometheus]:
    """A Prometheus scraping ``scrape`` (host:port) every ``interval``."""
    binary = require("prometheus")
    port = free_port()
    config = tmp / "prometheus.yml"
    rule_files = "".join(f"\n  - {path}" for path in rules or [])
    config.write_text(
        f"global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n"
        f"rule_files:{rule_files or ' []'}\n"
        f"scrape_configs:\n  - job_name: qoe\n    static_configs:\n      - targets: ['{scrape}']\n"
    )
    args = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with _process(args, f"http://127.0.0.1:{port}/-/ready", tmp / "prometheus.log"):
        yield Prometheus(f"http://127.0.0.1:{port}", config)


@contextlib.contextmanager
def pushgateway(tmp: Path) -> Iterator[str]:
    binary = require("prometheus-pushgateway")
    port = free_port()
    args = [binary, f"--web.listen-address=127.0.0.1:{port}"]
    with _process(args, f"http://127.0.0.1:{port}/-/ready", tmp / "pushgateway.log"):
        yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def nginx_rtmp(tmp: Path, *, play_restart: bool = True) -> Iterator[NginxRtmp]:
    """nginx with libnginx-mod-rtmp on free loopback ports, under ``tmp``: the server
    ``qoe rtmp-server`` runs (:mod:`sim.room.nginx`), with a missing install a test failure
    under CI and a skip elsewhere."""
    require("nginx")
    require_file(NGINX_RTMP_MODULE, "libnginx-mod-rtmp")
    server = NginxRtmp(tmp, rtmp_port=free_port(), http_port=free_port(), play_restart=play_restart)
    with server:
        try:
            yield server
        except Exception:
            print(server.log_tail())
            raise


FFMPEG_TESTSRC = [
    *("-re", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30", "-f", "lavfi", "-i", "sine=frequency=440"),
    *("-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", "30", "-pix_fmt", "yuv420p"),
    *("-c:a", "aac", "-f", "flv"),
]
"""An independent publisher of a stream without the test signal (ffmpeg's own encoders)."""


@contextlib.contextmanager
def ffmpeg_publisher(url: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``ffmpeg`` publishing testsrc2 video and a 440 Hz sine as H.264 + AAC in FLV to ``url``;
    stopped by pid. Wait for it with :meth:`NginxRtmp.wait_publishing`."""
    binary = require("ffmpeg")
    args = [binary, "-hide_banner", "-nostdin", "-loglevel", "warning", *FFMPEG_TESTSRC, url]
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        stop_process(proc)
