"""nginx with the RTMP module, run as a subprocess: the RTMP ingest ``qoe rtmp-server`` gives
users and the integration tests run against.

The embedded room speaks WebRTC, HTTP-FLV and HLS but no RTMP, so RTMP publishers and
viewers need a real server. nginx with Debian's ``libnginx-mod-rtmp`` is the common one;
this module owns its configuration, so the command and the tests run the same server:
``application live`` for ingest and play, the HLS it cuts (1 s fragments, 6 s playlists)
under ``/hls`` and the module's statistics under ``/stat`` over HTTP. The module serves no
HTTP-FLV. Everything nginx writes (config, pid, logs, fragments) stays in one directory.

Only the standard library and :mod:`qoe.errors`: starting nginx needs neither media nor an
event loop.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from types import TracebackType

from qoe.errors import ConfigError

__all__ = ["NGINX_RTMP_MODULE", "PACKAGES", "NginxRtmp", "find_nginx", "write_config"]

NGINX_RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
"""Where Debian's libnginx-mod-rtmp puts the module."""

PACKAGES = "nginx libnginx-mod-rtmp"
"""The Debian packages that provide the server."""

_SBIN = os.pathsep.join(("/usr/sbin", "/sbin"))
"""Where Debian installs nginx: outside an ordinary user's PATH."""


def find_nginx(module: Path = NGINX_RTMP_MODULE, binary: str = "nginx") -> tuple[str, Path]:
    """The nginx executable and its RTMP module; a one-line ConfigError naming the packages
    to install when either is missing."""
    path = shutil.which(binary) or shutil.which(binary, path=_SBIN)
    if path is None:
        problem = f"{binary} is not installed"
    elif not module.exists():
        problem = f"the RTMP module {module} is missing"
    else:
        return path, module
    raise ConfigError(
        f"{problem}: install the Debian packages {PACKAGES} (scripts/bootstrap.sh --servers installs them)"
    )


def _netloc(host: str, port: int) -> str:
    """``host:port`` as URLs and nginx's ``listen`` take it: an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def write_config(
    directory: Path,
    *,
    rtmp_port: int,
    http_port: int,
    host: str = "127.0.0.1",
    module: Path = NGINX_RTMP_MODULE,
    play_restart: bool = True,
) -> Path:
    """Write ``nginx.conf`` for a server on ``host`` into ``directory``; return its path.

    ``play_restart`` (on here, off in nginx-rtmp's defaults) makes nginx tell its players
    ``NetStream.Play.Stop`` when the publisher leaves; without it they hear nothing and only
    see the media stop.
    """
    d = directory.resolve()
    (d / "hls").mkdir(parents=True, exist_ok=True)
    (d / "tmp").mkdir(exist_ok=True)
    # As root, nginx's workers would run as "nobody", who cannot write the HLS fragments into
    # a private temporary directory.
    user = "user root;\n" if os.geteuid() == 0 else ""
    config = d / "nginx.conf"
    config.write_text(
        f"load_module {module};\n{user}"
        f"daemon off; pid {d}/nginx.pid; error_log {d}/error.log info;\n"
        "events {}\n"
        f"rtmp {{ server {{ listen {_netloc(host, rtmp_port)}; application live {{ live on; record off;\n"
        f"  play_restart {'on' if play_restart else 'off'};\n"
        f"  hls on; hls_path {d}/hls; hls_fragment 1s; hls_playlist_length 6s; }} }} }}\n"
        f"http {{ client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp;\n"
        f"  fastcgi_temp_path {d}/tmp; uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n"
        "  access_log off;\n"
        f"  server {{ listen {_netloc(host, http_port)}; location /hls {{ alias {d}/hls; }}\n"
        "    location /stat { rtmp_stat all; } } }\n"
    )
    return config


def _check_free(host: str, port: int) -> None:
    """A port already taken is a usage error, said before nginx spends its 2.5 s of retries
    and five lines on it."""
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as nginx binds
            probe.bind(address)
    except OSError as exc:
        raise ConfigError(f"cannot serve on {_netloc(host, port)}: {exc.strerror or exc}") from exc


class NginxRtmp:
    """nginx with the RTMP module on ``host``: RTMP ingest and play on ``rtmp_port``, the HLS
    it cuts and ``/stat`` over HTTP on ``http_port``, every file under ``directory``.

    ``with NginxRtmp(...) as server:`` starts it and stops it by pid. Without starting it,
    the object still reads a running server's ``/stat``.
    """

    def __init__(
        self,
        directory: Path,
        *,
        rtmp_port: int,
        http_port: int,
        host: str = "127.0.0.1",
        play_restart: bool = True,
    ) -> None:
        self.directory = directory.resolve()
        self.host = host
        self.rtmp_port = rtmp_port
        self.http_port = http_port
        self.play_restart = play_restart
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """nginx's master process, while it runs."""
        return None if self.process is None else self.process.pid

    @property
    def returncode(self) -> int | None:
        """nginx's exit code once it has exited; None while it runs, or before it started."""
        return None if self.process is None else self.process.poll()

    def rtmp_url(self, stream: str, app: str = "live") -> str:
        return f"rtmp://{_netloc(self.host, self.rtmp_port)}/{app}/{stream}"

    def hls_url(self, stream: str) -> str:
        return f"http://{_netloc(self.host, self.http_port)}/hls/{stream}.m3u8"

    @property
    def stat_url(self) -> str:
        return f"http://{_netloc(self.host, self.http_port)}/stat"

    def start(self, timeout: float = 30.0) -> None:
        """Start nginx and return once ``/stat`` answers; ConfigError (one line) if the ports
        are taken, nginx is missing, or it exits or stays silent meanwhile."""
        for port in (self.rtmp_port, self.http_port):
            _check_free(self.host, port)
        binary, module = find_nginx()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            config = write_config(
                self.directory,
                rtmp_port=self.rtmp_port,
                http_port=self.http_port,
                host=self.host,
                module=module,
                play_restart=self.play_restart,
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot write nginx's files in {self.directory}: {exc.strerror or exc}"
            ) from exc
        d = self.directory
        # -e: the log nginx writes before it has read error_log from the config.
        args = [binary, "-e", str(d / "error.log"), "-p", str(d), "-c", str(config)]
        with open(d / "nginx.log", "wb") as out:
            self.process = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ConfigError(
                    f"nginx exited with code {self.process.returncode} before {self.stat_url} "
                    f"answered: {self.failure()}"
                )
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(self.stat_url, timeout=2) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.05)
        raise ConfigError(f"nginx did not answer {self.stat_url} within {timeout:g} s: {self.failure()}")

    def failure(self) -> str:
        """One line on why nginx failed: its first ``[emerg]`` line, else its log's last line."""
        text = ""
        for name in ("nginx.log", "error.log"):
            with contextlib.suppress(OSError):
                text += (self.directory / name).read_text(errors="replace")
        emerg = re.search(r"\[emerg\] (?:\d+#\d+: )?(.*)", text)
        if emerg:
            return emerg.group(1).strip()
        last = self.log_tail(1).strip()
        return f"its log ends: {last}" if last else f"see {self.directory / 'error.log'}"

    def stop(self) -> None:
        """Stop nginx by its pid: SIGTERM (nginx's fast shutdown), SIGKILL if it has not gone
        within 10 s."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()

    def __enter__(self) -> NginxRtmp:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        """The end of nginx's error log (``info`` level): what it did with each client."""
        try:
            text = (self.directory / "error.log").read_text(errors="replace")
        except OSError as exc:
            return f"(no nginx log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def publishing(self) -> set[str]:
        """Names of the streams being published now (from ``/stat``)."""
        with urllib.request.urlopen(self.stat_url, timeout=5) as r:
            root = ET.fromstring(r.read())
        return {
            name
            for stream in root.iter("stream")
            if (name := stream.findtext("name")) and stream.find("./client/publishing") is not None
        }

    def wait_publishing(self, stream: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while stream not in self.publishing():
            if time.monotonic() > deadline:
                raise TimeoutError(f"nobody published {stream!r} within {timeout:g} s")
            time.sleep(0.05)

    def wait_segments(self, stream: str, count: int, timeout: float = 20.0) -> None:
        """Wait until the HLS playlist of ``stream`` lists at least ``count`` segments."""
        playlist = self.directory / "hls" / f"{stream}.m3u8"
        deadline = time.monotonic() + timeout
        while not playlist.exists() or playlist.read_text().count("#EXTINF") < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{playlist} did not list {count} segments within {timeout:g} s")
            time.sleep(0.05)
