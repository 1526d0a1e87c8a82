"""A real S3-protocol server for the offload tests: moto's standalone server (the
``moto[server]`` package of the dev extra), started as a subprocess on a free port and
stopped by its PID, even when a test fails."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tests.helpers import wait_until

REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    pid: int

    def options(self) -> dict[str, Any]:
        """``Offload`` options for this server (moto accepts any credentials)."""
        return {
            "endpoint": self.endpoint,
            "region": REGION,
            "access_key_id": "test",
            "secret_access_key": "test",
        }

    def create_bucket(self, bucket: str) -> None:
        """Through boto3 (moto's own dependency): obstore has no bucket operations."""
        import boto3

        boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="test",
            aws_secret_access_key="test",
        ).create_bucket(Bucket=bucket)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/", timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # it answered
    except OSError:
        return False


@contextmanager
def s3_server() -> Iterator[S3Server]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    server = S3Server(f"http://127.0.0.1:{port}", process.pid)
    try:
        wait_until(
            lambda: (
                (process.poll() is None and _answers(server.endpoint)) or process.poll() is not None
            ),
            "moto's S3 server answers",
            timeout=30,
        )
        assert process.poll() is None, f"moto's server exited with {process.returncode}"
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
