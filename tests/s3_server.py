"""A moto S3 server (``ThreadedMotoServer``) in a process of its own, for the object-storage tests.

Run as ``python s3_server.py LOG_FILE``: starts the server on 127.0.0.1 at a free port, prints the
port on stdout, logs every request line (method and path) to LOG_FILE, and stops when stdin closes.

Why a separate process and not a thread of the test process: delta-rs holds the GIL through some
of its blocking calls (``DeltaTable.history``, ``is_deltatable``), so a server thread in the same
interpreter cannot answer them and the call hangs until delta-rs's retry timeout.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path


def main(log_file: str) -> None:
    from moto.server import ThreadedMotoServer

    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(message)s"))
    werkzeug_log = logging.getLogger("werkzeug")
    werkzeug_log.handlers[:] = [handler]
    werkzeug_log.setLevel(logging.INFO)
    werkzeug_log.propagate = False
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    print(port, flush=True)
    sys.stdin.read()  # until the parent closes our stdin (or dies)
    server.stop()


class S3Server:
    """The server process seen from a test: endpoint, storage options, buckets, request log."""

    def __init__(self, log_file: Path) -> None:
        self.log_file = log_file
        self.process = subprocess.Popen(
            [sys.executable, __file__, str(log_file)],
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

    @property
    def options(self) -> dict[str, str]:
        """Storage options as a user would give them (delta-rs key names)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }

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
