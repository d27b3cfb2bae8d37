"""Real `redis-server`, PostgreSQL and nginx on loopback for the tests that need them.

Debian's packages (`redis-server`, `postgresql`, `nginx`); `.ci/run` installs them.
PostgreSQL refuses to run as root, so as root the cluster is created and run as the
`postgres` user; nginx runs as `nobody` (with a prefix, configuration and files of its own).
Outside CI a missing binary skips the tests that need it; in CI (`CI` set) it fails them.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import pytest

START_WITHIN_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _missing(what: str) -> None:
    message = f"{what} is not installed (Debian: apt-get install redis-server postgresql nginx)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _wait_for_port(port: int, proc: subprocess.Popen[bytes] | None, log: Path) -> None:
    deadline = time.monotonic() + START_WITHIN_S
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}):\n{_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"server did not listen on {port}:\n{_tail(log)}")


class Unwritable:
    """Files no process can write — root included — until restored: `chattr +i` (the
    immutable flag). A process that has them open gets "disk I/O error" on its next write, and
    one that opens them then gets them read-only ("attempt to write a readonly database").

    Needs root (CAP_LINUX_IMMUTABLE) and a filesystem with the flag (ext4, xfs, btrfs);
    elsewhere the tests that need it skip, and fail in CI (`CI` set), as for the servers.
    Never give it SQLite's `-shm` file: that one is mapped into memory, and a write to it then
    kills the process with SIGBUS (which is a test of its own).
    """

    def __init__(self, *paths: Path) -> None:
        self.paths = list(paths)
        self.applied: list[Path] = []

    @staticmethod
    def check(folder: Path) -> None:
        """Skip (fail in CI) unless files in `folder` can be made immutable here."""
        chattr = shutil.which("chattr")
        if chattr is None or os.geteuid() != 0:
            _missing_fault("chattr +i needs root and e2fsprogs")
        probe = folder / ".immutable-probe"
        probe.touch()
        try:
            done = subprocess.run([str(chattr), "+i", str(probe)], capture_output=True,
                                  check=False)
            if done.returncode != 0:
                _missing_fault(f"chattr +i is refused here: {done.stderr.decode().strip()}")
            subprocess.run([str(chattr), "-i", str(probe)], check=True, capture_output=True)
        finally:
            probe.unlink(missing_ok=True)

    def apply(self) -> None:
        for path in self.paths:
            if path.exists():
                subprocess.run(["chattr", "+i", str(path)], check=True, capture_output=True)
                self.applied.append(path)

    def restore(self) -> None:
        while self.applied:
            subprocess.run(["chattr", "-i", str(self.applied.pop())], check=True,
                           capture_output=True)


def sqlite_files(database: Path) -> Unwritable:
    """A SQLite database and its write-ahead log, to make unwritable (not its -shm)."""
    return Unwritable(database, database.with_name(database.name + "-wal"))


def _missing_fault(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


def _tail(log: Path) -> str:
    return log.read_text("utf-8", "replace")[-2000:] if log.exists() else "(no log)"


class RedisServer:
    """One `redis-server` without persistence: a restart loses every key. With `password`,
    clients must give it (`requirepass`); `url` then holds it percent-encoded."""

    def __init__(self, root: Path, password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            _missing("redis-server")
        self.binary = str(binary)
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.password = password

    @property
    def url(self) -> str:
        login = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{login}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        log = self.root / "redis.log"
        with log.open("ab") as sink:
            self.proc = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.root),
                 *(["--requirepass", self.password] if self.password else [])],
                stdout=sink, stderr=sink)
        _wait_for_port(self.port, self.proc, log)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # no persistence configured: whatever it held is gone
            self.proc.wait(timeout=START_WITHIN_S)
        self.proc = None

    def restart_empty(self) -> None:
        """Stop and start again on the same port, with no data (no persistence)."""
        self.stop()
        self.start()


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresServer:
    """A throwaway PostgreSQL cluster on loopback (trust auth: it listens on 127.0.0.1)."""

    def __init__(self) -> None:
        bin_dir = _pg_bin()
        if bin_dir is None:
            _missing("PostgreSQL")
        assert bin_dir is not None
        self.bin = bin_dir
        self.port = free_port()
        # Under /tmp with its own owner: pytest's tmp folders are private to root.
        self.root = Path(tempfile.mkdtemp(prefix="sonify-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self.root.chmod(0o755)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._databases = 0

    def _run(self, *argv: str) -> None:
        done = subprocess.run([*self.as_user, *argv], capture_output=True, text=True,
                              timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed:\n{done.stdout}\n{done.stderr}")

    def start(self) -> PostgresServer:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                  "--auth=trust", "--no-sync", "-E", "UTF8")
        self.resume()
        return self

    def halt(self) -> None:
        """Stop the server as an operator would (`pg_ctl stop -m fast`: sessions are cut with
        "terminating connection due to administrator command"); `resume` starts it again."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t",
                  str(int(START_WITHIN_S)), "stop")

    def resume(self) -> None:
        """Start the server (again) on the same port, with the same data."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                  "-o", options, "-w", "-t", str(int(START_WITHIN_S)), "start")
        _wait_for_port(self.port, None, self.log)

    def new_database(self) -> str:
        """A fresh, empty database; returns its SQLAlchemy (asyncpg) URL."""
        self._databases += 1
        name = f"sonify_{os.getpid()}_{self._databases}"
        self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                  "-U", "postgres", name)
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.data.exists():
            subprocess.run([*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.data),
                            "-m", "immediate", "stop"], capture_output=True, timeout=60,
                           check=False)
        shutil.rmtree(self.root, ignore_errors=True)


NGINX = "/usr/sbin/nginx"


class NginxServer:
    """nginx on 127.0.0.1 as a reverse proxy in front of `upstream_port`, as the README's
    example sets it up (X-Forwarded-For appended, X-Forwarded-Proto, the Host passed on).
    Run as an unprivileged user: `nobody` when the tests run as root, else the tests' own."""

    def __init__(self, upstream_port: int) -> None:
        binary = NGINX if Path(NGINX).exists() else shutil.which("nginx")
        if binary is None:
            _missing("nginx")
        assert binary is not None
        self.binary = binary
        self.upstream_port = upstream_port
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="sonify-nginx-"))
        self.log = self.root / "nginx.log"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "nobody")
            self.as_user = ["runuser", "-u", "nobody", "--"]
        self.proc: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        root = self.root
        return f"""daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log stderr notice;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    client_max_body_size 25m;
    server {{
        listen 127.0.0.1:{self.port};
        location / {{
            proxy_pass http://127.0.0.1:{self.upstream_port};
            proxy_bind 127.0.0.1;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""

    def start(self) -> NginxServer:
        conf = self.root / "nginx.conf"
        conf.write_text(self.config(), encoding="utf-8")
        if self.as_user:
            shutil.chown(conf, "nobody")
        with self.log.open("ab") as sink:
            self.proc = subprocess.Popen(
                [*self.as_user, self.binary, "-p", str(self.root), "-c", str(conf),
                 "-e", "stderr"], stdout=sink, stderr=sink)
        _wait_for_port(self.port, self.proc, self.log)
        return self

    def stop(self) -> None:
        pid_file = self.root / "nginx.pid"
        if self.proc is not None and self.proc.poll() is None:
            try:  # the master itself (runuser may not pass signals on)
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
            except (OSError, ValueError):
                self.proc.terminate()
            try:
                self.proc.wait(timeout=START_WITHIN_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.root, ignore_errors=True)
