"""The API under uvicorn in a subprocess, the way production runs it."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

from jobs.settings import Settings
from tests.support.processes import ROOT, settings_env
from tests.support.services import free_port, wait_until


class ApiServer:
    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.port = free_port()
        log = open(log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1",
             "--port", str(self.port)],
            cwd=ROOT, env=settings_env(settings), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            # Its imports take seconds, many more on a machine that is busy with other tests.
            wait_until(self._ready, 90, "the API under uvicorn")
        except TimeoutError:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _ready(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/health/live", timeout=1) as answer:
            return answer.status == 200

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)
