"""``qoe rtmp-server`` and the nginx-rtmp it runs (:mod:`sim.room.nginx`).

The end-to-end test is the README's RTMP tour as a user runs it: three ``qoe`` processes,
the server, a publisher and a viewer. Glass-to-glass is under 0.5 s on loopback
(test_ffmpeg_nginx); the 2 s bound here only says the viewer watched the publisher live,
with room for three processes sharing a loaded machine.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from qoe.errors import ConfigError
from sim.room.nginx import NGINX_RTMP_MODULE, NginxRtmp, find_nginx, write_config
from tests.conftest import ROOT, Completed, qoe
from tests.servers import free_port, require, require_file, stop_process, wait_http


def test_the_config_has_the_ports_the_directory_and_the_hls_settings(tmp_path: Path) -> None:
    config = write_config(tmp_path, rtmp_port=11935, http_port=18081, play_restart=False)
    text = config.read_text()
    d = tmp_path.resolve()
    assert config == d / "nginx.conf"
    for line in (
        "listen 127.0.0.1:11935;",
        "listen 127.0.0.1:18081;",
        "application live { live on; record off;",
        "play_restart off;",
        f"hls on; hls_path {d}/hls; hls_fragment 1s; hls_playlist_length 6s;",
        f"location /hls {{ alias {d}/hls; }}",
        "location /stat { rtmp_stat all; }",
        f"daemon off; pid {d}/nginx.pid; error_log {d}/error.log info;",
        f"load_module {NGINX_RTMP_MODULE};",
    ):
        assert line in text
    assert ("user root;" in text) == (os.geteuid() == 0)
    assert (d / "hls").is_dir() and (d / "tmp").is_dir()
    ipv6 = write_config(tmp_path, rtmp_port=11935, http_port=18081, host="::1").read_text()
    assert "listen [::1]:11935;" in ipv6 and "play_restart on;" in ipv6


def test_a_missing_module_names_the_packages_to_install(tmp_path: Path) -> None:
    for problem in (
        lambda: find_nginx(module=tmp_path / "ngx_rtmp_module.so"),
        lambda: find_nginx(binary="qoe-test-no-such-nginx"),
    ):
        with pytest.raises(ConfigError) as raised:
            problem()
        message = str(raised.value)
        assert "\n" not in message
        assert "install the Debian packages nginx libnginx-mod-rtmp" in message
        assert "scripts/bootstrap.sh --servers" in message
    assert "qoe-test-no-such-nginx is not installed" in message


def test_help_gives_each_option_and_its_default(cli: Callable[..., Completed]) -> None:
    done = cli("rtmp-server", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    for option, default in (
        ("--host", "default 127.0.0.1"),
        ("--rtmp-port", "default 1935"),
        ("--http-port", "default 8081"),
        ("--dir", "default a new temporary directory, removed on exit"),
    ):
        assert option in text and default in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--rtmp-port", "70000"), "argument --rtmp-port: a port is from 1 to 65535, got 70000"),
        (("--http-port", "http"), "argument --http-port: expected a port number, got 'http'"),
        (("--rtmp-port", "9000", "--http-port", "9000"), "must differ, both are 9000"),
    ],
)
def test_a_bad_port_is_a_usage_error(
    cli: Callable[..., Completed], args: tuple[str, ...], message: str
) -> None:
    done = cli("rtmp-server", *args)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_a_busy_port_is_a_usage_error(cli: Callable[..., Completed]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = cli("rtmp-server", "--rtmp-port", str(free_port()), "--http-port", str(port))
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == f"qoe rtmp-server: error: cannot serve on 127.0.0.1:{port}: Address already in use"
    )


def qoe_process(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "qoe", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.slow(seconds=11)
def test_publish_and_probe_through_the_server_then_stop_it() -> None:
    require("nginx")
    require_file(NGINX_RTMP_MODULE, "libnginx-mod-rtmp")
    rtmp_port, http_port = free_port(), free_port()
    command = qoe_process("rtmp-server", "--rtmp-port", str(rtmp_port), "--http-port", str(http_port))
    try:
        wait_http(f"http://127.0.0.1:{http_port}/stat", proc=command)
        assert command.stdout is not None
        banner = [command.stdout.readline() for _ in range(6)]
        assert banner[1].split()[-1] == f"rtmp://127.0.0.1:{rtmp_port}/live/STREAM"
        assert banner[2].split()[-1] == f"http://127.0.0.1:{http_port}/hls/STREAM.m3u8"
        assert banner[3].split()[-1] == f"http://127.0.0.1:{http_port}/stat"
        assert banner[5].strip() == "Ctrl-C stops it"
        files = re.fullmatch(r"\s*nginx pid (\d+), its files in (.+)\n", banner[4])
        assert files, banner
        pid, directory = int(files.group(1)), Path(files.group(2))
        assert directory.is_dir()
        # The command's nginx, seen through its /stat.
        server = NginxRtmp(directory, rtmp_port=rtmp_port, http_port=http_port)
        url = server.rtmp_url("canary")
        publisher = qoe_process("publish", url, "--duration", "6")
        try:
            server.wait_publishing("canary")
            probe = qoe("probe", url, "--duration", "3", "--json")
            published = publisher.communicate(timeout=60)
        finally:
            stop_process(publisher)
        assert publisher.returncode == 0, published
        assert probe.returncode == 0, probe.stderr
        result = json.loads(probe.stdout)
        assert result["success"], result["error"]
        assert result["video"]["frames"] > 0
        g2g = result["latency"]["glass_to_glass_seconds"]["p50"]
        print(f"glass-to-glass p50 {g2g:.3f} s")
        assert g2g is not None and 0 < g2g < 2.0
        command.send_signal(signal.SIGTERM)
        out, err = command.communicate(timeout=30)
    finally:
        stop_process(command)
    assert command.returncode == 0, err
    assert out == "" and err == ""
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not directory.exists()
