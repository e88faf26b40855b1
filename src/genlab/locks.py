"""One trainer per run folder, on a local disk and over NFS between machines.

The lock file sits *beside* the run folder (``runs/.NAME.lock``), so it can be taken before the
folder exists and survives ``rm -rf runs/NAME``. Two mechanisms guard it:

* ``flock``: on one machine the kernel drops it when the holder dies (SIGKILL included), so a
  dead process never blocks the next one.
* The file's content, ``{"host", "pid", "since", "heartbeat"}``, rewritten every
  ``heartbeat_s`` seconds (default 30): flock need not be coherent between NFS clients, so a
  record from another host whose heartbeat is younger than ``stale_s`` (default 120) counts as
  held. Timeout: a holder on another machine that stops beating for 2 minutes (it died) is taken
  over. Override with ``GENLAB_LOCK_HEARTBEAT_S`` / ``GENLAB_LOCK_STALE_S``; the hosts' clocks must
  agree to well within ``stale_s``.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from genlab.errors import GenlabError
from genlab.fileio import write_error

HEARTBEAT_S = 30.0
STALE_S = 120.0
_TRIES = 20  # attempts against a file that keeps being unlinked/replaced under us
_PROBE_RETRIES = 5  # attempts at the exclusive flock, 10 ms apart (a probe is not a holder)
_UNKNOWN = {"host": "?", "pid": "?", "since": "?", "heartbeat": None}
# Locks this process holds, by real path. Over NFS, Linux emulates flock with POSIX locks, which
# belong to the process and vanish when it closes ANY fd on the file: so inside this process a
# held path is answered from here and never opened again.
_HELD: dict[str, RunLock] = {}


class Locked(GenlabError):
    """Another live process holds the run; ``holder`` is its record."""

    def __init__(self, target: Path, holder: dict[str, Any]) -> None:
        self.holder = dict(holder)
        h = self.holder
        super().__init__(f"{target}: being trained by {h['host']}:{h['pid']} since {h['since']}")


def _seconds(value: float | None, var: str, default: float) -> float:
    """An explicit argument, else the environment variable, else the default; always > 0."""
    raw = os.environ.get(var, "").strip() if value is None else value
    where = var if value is None else f"{var.removeprefix('GENLAB_LOCK_').lower()} argument"
    if raw == "":
        return default
    try:
        seconds = float(raw)
    except ValueError:
        raise GenlabError(f"{where}={raw!r}: not a number of seconds") from None
    if not (seconds > 0 and math.isfinite(seconds)):
        raise GenlabError(f"{where}={raw!r}: must be a positive number of seconds")
    return seconds


def _stale_s(stale_s: float | None = None) -> float:
    return _seconds(stale_s, "GENLAB_LOCK_STALE_S", STALE_S)


def _lock_path(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    return run_dir.parent / f".{run_dir.name}.lock"


def _read(fd: int) -> dict[str, Any] | None:
    """The record in the file, or None when empty, half-written or not ours to understand."""
    try:
        rec = json.loads(os.pread(fd, 1 << 16, 0))
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("heartbeat"), int | float):
        return None
    return rec if isinstance(rec.get("host"), str) and isinstance(rec.get("pid"), int) else None


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the inode ``fd`` has open (it may be unlinked or replaced)."""
    try:
        st, now = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino)


def _foreign_and_fresh(rec: dict[str, Any] | None, stale_s: float) -> bool:
    """A record from another machine that is still beating: held, whatever our flock says."""
    return (
        rec is not None
        and rec["host"] != socket.gethostname()
        and time.time() - rec["heartbeat"] < stale_s
    )


class RunLock:
    """Exclusive, non-blocking lock on one run folder; see the module docstring."""

    def __init__(
        self, run_dir: Path, *, heartbeat_s: float | None = None, stale_s: float | None = None
    ) -> None:
        self.target = Path(run_dir)
        self.path = _lock_path(self.target)
        self.heartbeat_s = _seconds(heartbeat_s, "GENLAB_LOCK_HEARTBEAT_S", HEARTBEAT_S)
        self.stale_s = _stale_s(stale_s)
        if self.stale_s <= self.heartbeat_s:  # live holders would look dead between beats
            raise GenlabError(
                f"lock stale_s={self.stale_s:g} must exceed heartbeat_s={self.heartbeat_s:g} (GENLAB_LOCK_STALE_S / GENLAB_LOCK_HEARTBEAT_S)"
            )
        self._key = os.path.realpath(self.path)
        self._fd: int | None = None
        self._record: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> RunLock:
        """Take the lock now or raise Locked; never waits for the holder."""
        if self._fd is not None:
            return self
        if self._key in _HELD:
            raise Locked(self.target, _HELD[self._key]._record)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise write_error(self.path.parent, e) from None
        for _ in range(_TRIES):
            try:  # the kernel applies the umask
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as e:  # a read-only or full file system
                raise write_error(self.path, e) from None
            try:
                _exclusive(fd)
            except BlockingIOError:
                rec = _read(fd)
                os.close(fd)
                raise Locked(self.target, rec or _UNKNOWN) from None
            except BaseException:
                os.close(fd)
                raise
            # The holder may have unlinked the file between our open and our flock: then we
            # locked an orphan inode while the path is free (or someone else's new file).
            if not _same_file(fd, self.path):
                os.close(fd)
                continue
            rec = _read(fd)
            if _foreign_and_fresh(rec, self.stale_s):
                os.close(fd)  # drops our flock
                raise Locked(self.target, rec)  # type: ignore[arg-type]
            # Otherwise: no record, a stale other host, or this host (our flock proves it is gone).
            try:
                since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                self._record = {"host": socket.gethostname(), "pid": os.getpid(), "since": since}
                self._fd = fd
                self._write()
            except OSError as e:  # a full disk: no empty lock file stays
                self._fd = None
                if _same_file(fd, self.path):
                    self.path.unlink(missing_ok=True)
                os.close(fd)
                raise write_error(self.path, e) from None
            except BaseException:
                self._fd = None
                os.close(fd)
                raise
            _HELD[self._key] = self
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._beat, name=f"lock {self.target}", daemon=True
            )
            self._thread.start()
            return self
        raise GenlabError(
            f"{self.path}: lock file kept being replaced; gave up after {_TRIES} tries"
        )

    def _write(self) -> None:
        """Write then trim (no empty window); we hold the flock, so no other writer races us."""
        assert self._fd is not None
        self._record["heartbeat"] = time.time()
        data = json.dumps(self._record).encode()
        os.pwrite(self._fd, data, 0)
        os.ftruncate(self._fd, len(data))
        os.fsync(self._fd)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self._write()
            except OSError:
                pass  # a transient NFS hiccup: the next beat tries again, stale_s allows several

    def release(self) -> None:
        """Stop the heartbeat, remove the file while still holding the flock, then drop it."""
        fd = self._fd
        if fd is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        _HELD.pop(self._key, None)
        rec = _read(fd)  # a machine that took over after we went stale owns the file now
        ours = rec is None or (rec["host"], rec["pid"]) == (socket.gethostname(), os.getpid())
        try:
            if ours and _same_file(fd, self.path):
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        finally:
            self._fd = None
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def holder(self) -> dict[str, Any] | None:
        """What the lock file says now (None if there is no file or it cannot be read)."""
        owner = _HELD.get(self._key)
        if owner is not None and owner._fd is not None:
            return _read(owner._fd)
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return None
        try:
            return _read(fd)
        finally:
            os.close(fd)


def _exclusive(fd: int) -> None:
    """flock LOCK_EX without waiting for a holder, but past ``lock_state``'s probes: a probe
    holds a shared lock for microseconds, so a few short retries tell it from a holder."""
    for attempt in range(_PROBE_RETRIES):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if attempt == _PROBE_RETRIES - 1:
                raise
            time.sleep(0.01)


def lock_state(run_dir: Path) -> dict[str, Any] | None:
    """The live holder's record, or None; probes with a shared flock dropped at once, so it
    neither takes the lock nor creates the file."""
    path = _lock_path(run_dir)
    owner = _HELD.get(os.path.realpath(path))
    if owner is not None:
        return dict(owner._record)
    stale_s = _stale_s()
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd) or dict(_UNKNOWN)
        fcntl.flock(fd, fcntl.LOCK_UN)
        rec = _read(fd)
        return rec if _foreign_and_fresh(rec, stale_s) else None
    finally:
        os.close(fd)
