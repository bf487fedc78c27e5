"""Every line of output is one whole JSON object, whoever writes it and however many processes share the output."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import REPO

WRITER = textwrap.dedent(
    """
    import logging, os, sys, threading, warnings
    import structlog
    from pgqd.daemon.logs import configure_logging

    configure_logging("info", "json")
    log = structlog.get_logger("writer")
    for n in range(300):
        # Some lines far longer than a pipe keeps whole in one write (4 KiB).
        log.info("line", n=n, pid=os.getpid(), filler="x" * (n * 37 % 9000))
        logging.getLogger("some.library").warning("library line %d of %s", n, os.getpid())
    warnings.warn("a library warning")
    thread = threading.Thread(target=lambda: 1 / 0, name="failing")
    thread.start()
    thread.join()
    raise RuntimeError("uncaught at exit")
    """
)


def parse_all(text: str) -> list[dict[str, Any]]:
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            parsed = json.loads(line)
        except ValueError:
            raise AssertionError(f"line {number} is not one JSON object: {line[:300]!r}") from None
        assert isinstance(parsed, dict)
        lines.append(parsed)
    return lines


def run_writers(count: int, output: Any) -> None:
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER], cwd=REPO, stdout=output, stderr=subprocess.STDOUT)
        for _ in range(count)
    ]
    for writer in writers:
        assert writer.wait(timeout=60) == 1  # the uncaught exception at the end


@pytest.mark.parametrize("medium", ["pipe", "file"])
def test_lines_of_processes_writing_at_once_never_mix(medium: str, tmp_path: Path) -> None:
    if medium == "file":
        path = tmp_path / "out.log"
        with path.open("wb") as shared:
            run_writers(4, shared)
        text = path.read_text()
    else:
        # The shell reads the pipe all four processes share, so none of them blocks on a full pipe.
        script = f'for i in 1 2 3 4; do {sys.executable} -c "$WRITER" & done; wait'
        result = subprocess.run(
            ["sh", "-c", script], cwd=REPO, env={"WRITER": WRITER, "PATH": "/usr/bin:/bin"}, capture_output=True
        )
        text = result.stdout.decode() + result.stderr.decode()

    lines = parse_all(text)
    ours = [line for line in lines if line.get("event") == "line"]
    assert len(ours) == 4 * 300
    library = [line for line in lines if line.get("logger") == "some.library"]
    assert len(library) == 4 * 300
    assert all(line["level"] == "warning" and line["event"].startswith("library line") for line in library)
    if medium == "pipe":
        # A pipe keeps a write whole only up to 4 KiB: longer lines were shortened to fit, not split.
        assert max(len(line) for line in text.splitlines()) < 4096
        assert any("characters cut" in line.get("filler", "") for line in ours)
    else:
        assert max(len(line.get("filler", "")) for line in ours) > 8000
    assert sum(1 for line in lines if "a library warning" in line.get("event", "")) == 4
    threads = [line for line in lines if line.get("event") == "uncaught exception in a thread"]
    assert len(threads) == 4
    assert all("ZeroDivisionError" in line["exception"] for line in threads)
    uncaught = [line for line in lines if line.get("event") == "uncaught exception"]
    assert len(uncaught) == 4
    assert all("RuntimeError: uncaught at exit" in line["exception"] for line in uncaught)
