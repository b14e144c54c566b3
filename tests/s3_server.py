"""A moto S3 server in a process of its own, for the object-storage tests, with a switch that
makes it fail every request (a storage outage) and back.

Run as ``python s3_server.py LOG_FILE``: starts moto's WSGI app under werkzeug on 127.0.0.1 at a
free port, prints the port on stdout, logs every request line (method and path) to LOG_FILE and
every PUT's path and ``If-None-Match`` header to LOG_FILE.puts, and stops when stdin closes. Each line on stdin is a command, answered by one line on stdout:

- ``down``: from now on every request is answered ``503 ServiceUnavailable`` (an outage; the SDKs
  retry it as a transient error, then give up);
- ``up``: requests reach moto again; its buckets and objects are as they were (moto keeps them in
  this process's memory, which an outage does not touch: a real restart would lose them);
- ``trip METHODS PATH``: go ``down`` at the first request whose method matches the regex METHODS
  (``PUT|POST``) and whose path matches the regex PATH (that request fails too), so a test can cut the storage at a precise point of a job, such as when the
  first task writes its first data file;
- ``state``: answers ``down`` or ``up``.

Why a separate process and not a thread of the test process: delta-rs holds the GIL through some
of its blocking calls (``DeltaTable.history``, ``is_deltatable``), so a server thread in the same
interpreter cannot answer them and the call hangs until delta-rs's retry timeout.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

OUTAGE_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ServiceUnavailable</Code>'
    b"<Message>injected outage (tests/s3_server.py)</Message></Error>"
)


class Faults:
    """WSGI middleware in front of moto: passes requests through, or answers 503 while down."""

    def __init__(self, app: Callable[..., Iterable[bytes]], puts_log: str | None = None) -> None:
        self.app = app
        self.puts_log = puts_log
        self.down = False
        self.trip: tuple[re.Pattern[str], re.Pattern[str]] | None = None
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method, path = environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", "")
        if method == "PUT" and self.puts_log is not None:
            with self.lock, open(self.puts_log, "a", encoding="utf-8") as fh:
                fh.write(f"{path}\t{environ.get('HTTP_IF_NONE_MATCH', '')}\n")
        with self.lock:
            if self.trip is not None and self.trip[0].fullmatch(method) and self.trip[1].search(path):
                self.down, self.trip = True, None
            down = self.down
        if not down:
            return self.app(environ, start_response)
        # Drain the body so that the client reads the answer, not a reset connection.
        stream, length = environ.get("wsgi.input"), int(environ.get("CONTENT_LENGTH") or 0)
        if stream is not None and length > 0:
            stream.read(length)
        start_response(
            "503 Service Unavailable",
            [("Content-Type", "application/xml"), ("Content-Length", str(len(OUTAGE_BODY)))],
        )
        return [OUTAGE_BODY]

    def command(self, line: str) -> str:
        verb, _, rest = line.strip().partition(" ")
        with self.lock:
            if verb == "down":
                self.down = True
            elif verb == "up":
                self.down, self.trip = False, None
            elif verb == "trip":
                method, _, pattern = rest.partition(" ")
                self.trip = (re.compile(method.upper()), re.compile(pattern))
            elif verb != "state":
                return f"error unknown command {verb!r}"
            return "down" if self.down else "up"


def main(log_file: str) -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(message)s"))
    werkzeug_log = logging.getLogger("werkzeug")
    werkzeug_log.handlers[:] = [handler]
    werkzeug_log.setLevel(logging.INFO)
    werkzeug_log.propagate = False
    faults = Faults(DomainDispatcherApplication(create_backend_app), f"{log_file}.puts")
    server = make_server("127.0.0.1", 0, faults, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    print(server.port, flush=True)
    for line in sys.stdin:  # until the parent closes our stdin (or dies)
        print(faults.command(line), flush=True)
    server.shutdown()


class S3Server:
    """The server process seen from a test: endpoint, storage options, buckets, request log, and
    the outage switch (``outage``, ``restore``, ``trip``)."""

    def __init__(self, log_file: Path, python: str | None = None) -> None:
        self.log_file = log_file
        self.process = subprocess.Popen(
            [python or sys.executable, __file__, str(log_file)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.strip():
            self.stop()
            raise RuntimeError("the moto S3 server did not start")
        self.endpoint = f"http://127.0.0.1:{int(line)}"
        self.access_key, self.secret_key = "medner-test-key-id", "medner-test-secret-value"
        self._buckets = 0
        self._lock = threading.Lock()

    @property
    def options(self) -> dict[str, str]:
        """Storage options as a user would give them (delta-rs key names)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }

    @property
    def impatient_options(self) -> dict[str, str]:
        """``options`` with few, short retries (pyarrow and delta-rs), so that an outage fails a
        job in seconds instead of the SDKs' minutes of retrying."""
        return {**self.options, "max_retries": "1", "retry_timeout": "2s", "timeout": "10s"}

    def _command(self, line: str) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        with self._lock:
            self.process.stdin.write(line + "\n")
            self.process.stdin.flush()
            answer = self.process.stdout.readline().strip()
        if answer not in ("up", "down"):
            raise RuntimeError(f"the S3 server did not take {line!r}: {answer!r}")
        return answer

    def outage(self) -> None:
        """Every request fails (503) from now until ``restore``."""
        self._command("down")

    def restore(self) -> None:
        """Requests reach moto again, with every bucket and object as before the outage."""
        self._command("up")

    def trip(self, methods: str, path_regex: str) -> None:
        """Go down at the first request whose method matches ``methods`` (a regex, ``PUT|POST``)
        and whose path matches ``path_regex``."""
        self._command(f"trip {methods} {path_regex}")

    @property
    def is_down(self) -> bool:
        return self._command("state") == "down"

    def make_bucket(self, prefix: str = "medner") -> str:
        from pyarrow import fs as pafs

        self._buckets += 1
        name = f"{prefix}-{os.getpid()}-{self._buckets}"
        s3 = pafs.S3FileSystem(
            access_key=self.access_key,
            secret_key=self.secret_key,
            endpoint_override=self.endpoint.split("://", 1)[1],
            scheme="http",
            region="us-east-1",
            allow_bucket_creation=True,
        )
        s3.create_dir(name)
        return name

    def puts(self) -> list[tuple[str, str]]:
        """(path, its ``If-None-Match`` header or "") of every PUT so far: a put-if-absent
        (``If-None-Match: *``) is how a Delta commit claims its log entry on S3."""
        puts_log = Path(f"{self.log_file}.puts")
        if not puts_log.is_file():
            return []
        lines = puts_log.read_text(encoding="utf-8").splitlines()
        return [(p, h) for p, _, h in (line.partition("\t") for line in lines)]

    def requests(self) -> list[str]:
        """Request lines served so far, as ``METHOD /path?query``."""
        out = []
        for line in self.log_file.read_text(encoding="utf-8", errors="replace").splitlines():
            if '"' in line:
                request = line.split('"')[1]
                out.append(" ".join(request.split(" ")[:2]))
        return out

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


if __name__ == "__main__":
    main(sys.argv[1])
