"""RunLock with real processes. No fixed sleeps: wait for a line the child prints, or poll with a
generous deadline, and never assert on timing (the test machine is loaded)."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from genlab.errors import GenlabError
from genlab.locks import Locked, RunLock, lock_state

SRC = Path(__file__).resolve().parents[1] / "src"
DEADLINE_S = 60.0

HOLD = """
import sys
from pathlib import Path
from genlab.locks import RunLock
lock = RunLock(Path(sys.argv[1])).acquire()
print("held", flush=True)
sys.stdin.read()
lock.release()
print("released", flush=True)
"""

TRY = """
import sys
from pathlib import Path
from genlab.locks import Locked, RunLock
try:
    lock = RunLock(Path(sys.argv[1])).acquire()
except Locked as e:
    print(e, flush=True)
    sys.exit(3)
lock.release()
print("acquired", flush=True)
"""


@pytest.fixture(autouse=True)
def _no_lock_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GENLAB_LOCK_HEARTBEAT_S", raising=False)
    monkeypatch.delenv("GENLAB_LOCK_STALE_S", raising=False)


def _spawn(code: str, run: Path, **env: str) -> subprocess.Popen[str]:
    full = {**os.environ, **env}
    full["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), full.get("PYTHONPATH", "")) if p)
    return subprocess.Popen(
        [sys.executable, "-c", code, str(run)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full,
    )


def _readline(proc: subprocess.Popen[str]) -> str:
    """The child's next stdout line, waiting at most DEADLINE_S (a hung child fails, not hangs)."""
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=DEADLINE_S)
    except queue.Empty:
        proc.kill()
        pytest.fail("child printed nothing before the deadline")
    if not line:
        proc.wait(timeout=DEADLINE_S)
        pytest.fail(f"child exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
    return line.strip()


def _file_record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent or caught mid-write


def _write_record(path: Path, host: str, pid: int, heartbeat: float) -> None:
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(heartbeat))
    path.write_text(json.dumps({"host": host, "pid": pid, "since": since, "heartbeat": heartbeat}))


def test_in_process(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "r1"  # neither the run folder nor its parent exists yet
    lock = RunLock(run)
    assert lock.path == tmp_path / "runs" / ".r1.lock"
    assert lock.acquire() is lock
    rec = lock.holder()
    assert rec is not None and rec["host"] == socket.gethostname() and rec["pid"] == os.getpid()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rec["since"])
    with pytest.raises(Locked) as info:
        RunLock(run).acquire()
    assert (
        str(info.value)
        == f"{run}: being trained by {socket.gethostname()}:{os.getpid()} since {rec['since']}"
    )
    assert info.value.holder["pid"] == os.getpid()
    state = lock_state(run)
    assert state is not None and state["pid"] == os.getpid()
    with pytest.raises(Locked):  # lock_state did not disturb the lock
        RunLock(run).acquire()
    lock.release()
    lock.release()  # idempotent
    assert not lock.path.exists()
    assert lock_state(run) is None
    with RunLock(run) as again:
        assert again.holder() is not None
    assert not lock.path.exists()


def test_two_processes(tmp_path: Path) -> None:
    run = tmp_path / "r2"
    a = _spawn(HOLD, run)
    try:
        assert _readline(a) == "held"
        state = lock_state(run)
        assert state is not None and state["pid"] == a.pid
        b = _spawn(TRY, run)
        out, err = b.communicate(timeout=DEADLINE_S)
        assert b.returncode == 3, err
        assert re.fullmatch(
            rf"{re.escape(str(run))}: being trained by {re.escape(socket.gethostname())}:{a.pid} since \S+Z",
            out.strip(),
        )
        assert a.stdin is not None
        a.stdin.close()
        assert _readline(a) == "released"
        assert a.wait(timeout=DEADLINE_S) == 0
    finally:
        a.kill()
        a.wait(timeout=DEADLINE_S)
    assert lock_state(run) is None
    b2 = _spawn(TRY, run)
    out, err = b2.communicate(timeout=DEADLINE_S)
    assert b2.returncode == 0, err
    assert out.strip() == "acquired"


def test_sigkilled_holder(tmp_path: Path) -> None:
    run = tmp_path / "r3"
    # No heartbeat during the test, so the file is never caught mid-rewrite by the kill.
    a = _spawn(HOLD, run, GENLAB_LOCK_HEARTBEAT_S="3600", GENLAB_LOCK_STALE_S="7200")
    try:
        assert _readline(a) == "held"
    finally:
        a.send_signal(signal.SIGKILL)
        a.wait(timeout=DEADLINE_S)
    lock = RunLock(run)
    stale = lock.holder()
    assert stale is not None and stale["pid"] == a.pid  # the dead holder's file is still there
    assert lock_state(run) is None
    with lock:  # the kernel dropped the flock, so this host takes the file over
        rec = lock.holder()
        assert rec is not None and rec["pid"] == os.getpid()


def test_other_host(tmp_path: Path) -> None:
    run = tmp_path / "r4"
    lock = RunLock(run, stale_s=120)
    _write_record(lock.path, "other-node", 1, time.time())
    with pytest.raises(Locked, match=r": being trained by other-node:1 since ") as info:
        lock.acquire()
    assert str(info.value).startswith(f"{run}: ")
    assert _file_record(lock.path)["host"] == "other-node"  # left untouched
    state = lock_state(run)  # no flock, but a fresh heartbeat from another machine
    assert state is not None and state["host"] == "other-node"
    _write_record(lock.path, "other-node", 1, time.time() - 1000)
    assert lock_state(run) is None
    with lock:
        rec = _file_record(lock.path)
        assert rec is not None and rec["host"] == socket.gethostname() and rec["pid"] == os.getpid()
    assert not lock.path.exists()


def test_heartbeat(tmp_path: Path) -> None:
    with RunLock(tmp_path / "r5", heartbeat_s=0.05) as lock:
        first = _file_record(lock.path)
        assert first is not None
        deadline = time.monotonic() + 30
        while True:
            now = _file_record(lock.path)
            if now is not None and now["heartbeat"] > first["heartbeat"]:
                break
            assert time.monotonic() < deadline, "heartbeat never advanced"
            time.sleep(0.01)  # polling interval, not a wait we rely on
        assert now["since"] == first["since"] and now["pid"] == os.getpid()


@pytest.mark.parametrize("var", ["GENLAB_LOCK_STALE_S", "GENLAB_LOCK_HEARTBEAT_S"])
def test_bad_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, var: str) -> None:
    monkeypatch.setenv(var, "abc")
    with pytest.raises(GenlabError, match=var) as info:
        RunLock(tmp_path / "r6")
    assert "\n" not in str(info.value)
