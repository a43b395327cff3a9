"""The profile directory, shared by every worker process of the app.

One profile is a group of files with the same stem (its id):

- ``<id>.pkl``: the pickle Dozer's UI reads (``time``, ``profile``, ``environ``) plus our
  ``wsgiprobe`` record;
- ``<id>.json``: that record alone, so that the listing never unpickles anything;
- ``<id>.gv``: Dozer's graph file; never written here, removed with its profile if present.

Files are written as ``.tmp-*`` and renamed into place, so readers never see half a file.
Renames, pruning and deletions hold an flock on ``.wsgiprobe.lock`` so that processes saving
at once cannot overshoot the bounds. Any file may vanish at any time (another process pruned it,
someone deleted it): every reader tolerates that.

Every save lists the directory under the flock, so the bounds count every file in it, whoever
wrote it. What a save does not do is stat() every file, sort every profile or match every name:
each process keeps a :class:`_DirectoryView` (names, sizes, mtimes, profiles) that it brings up
to date from each listing, stat()ing only the names that are new to it. A file replaced or
changed in place under a name the view already knows is therefore seen late: by the full rescan
each process makes every ``FULL_SCAN_SECONDS``. Our own files never change once renamed into
place, and their names (time, worker, pid, sequence) are never reused.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import pickle
import re
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

PROFILE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
SUFFIXES = (".pkl", ".json", ".gv")
LOCK_NAME = ".wsgiprobe.lock"
TMP_PREFIX = ".tmp-"
STALE_TMP_SECONDS = 300  # a temp file this old belongs to a process that died mid-save
FULL_SCAN_SECONDS = 60.0  # how often a process forgets its view and stats every file again

_sequence = itertools.count()


class UnsafeDirectoryError(RuntimeError):
    """The profile directory (or a file in it) could be written by someone else."""


def new_profile_id(worker: object, pid: int) -> str:
    """Sortable by time first; worker and pid make ids unique across processes."""
    worker_part = worker if isinstance(worker, int) and worker >= 0 else 0
    return f"{time.time_ns() // 1000}_w{worker_part}_p{pid}_{next(_sequence)}"


@dataclass(frozen=True, slots=True)
class ProfileInfo:
    """One row of the listing, from a profile's JSON record (defaults when it has none)."""

    id: str
    mtime: float
    record: dict[str, Any]

    def get(self, key: str, default: Any = None) -> Any:
        return self.record.get(key, default)


class _Profile(NamedTuple):
    """A profile's files as a view knows them. Immutable: a change makes a new one, so that a
    copy of the view's dict is a consistent snapshot."""

    files: tuple[tuple[str, int, float], ...]  # (name, size, mtime)
    size: int
    mtime: float  # its newest file's: the profile's age

    @classmethod
    def of(cls, files: tuple[tuple[str, int, float], ...]) -> _Profile:
        return cls(files, sum(f[1] for f in files), max(f[2] for f in files))


class _DirectoryView:
    """What one process knows of the profile directory, as of its last listing.

    ``refresh`` takes a new listing and looks only at the names that appeared or went since the
    last one: a steady directory costs a listing and two set differences, not a stat() per file.
    """

    def __init__(self) -> None:
        self.names: set[str] = set()  # the last listing: every name in it was looked at
        self.files: dict[str, tuple[int, float]] = {}  # profile file -> (size, mtime)
        self.temps: dict[str, float] = {}  # temp file -> mtime
        self.profiles: dict[str, _Profile] = {}  # by id
        self.total = 0  # bytes of every profile file
        self.since = time.monotonic()

    def refresh(self, directory: str, listing: list[str], now: float) -> list[str]:
        """Bring the view up to date; returns the stale temp files (to remove)."""
        names = set(listing)
        for name in self.names - names:
            self.forget(name)
        for name in names - self.names:
            is_temp = name.startswith(TMP_PREFIX)
            if not is_temp and _profile_id_of(name) is None:
                continue  # not ours: never counted, never removed (and not matched again)
            try:
                st = os.stat(f"{directory}/{name}", follow_symlinks=False)
            except FileNotFoundError:
                names.discard(name)  # gone since the listing: look again if it comes back
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            if is_temp:
                self.temps[name] = st.st_mtime
            else:
                self.add(name, st.st_size, st.st_mtime)
        self.names = names
        return [name for name, mtime in self.temps.items() if now - mtime > STALE_TMP_SECONDS]

    def add(self, name: str, size: int, mtime: float) -> None:
        """A profile file that is in the directory now."""
        self.forget(name)
        self.names.add(name)
        self.files[name] = (size, mtime)
        self.total += size
        profile_id = name.rpartition(".")[0]
        old = self.profiles.get(profile_id)
        files = (old.files if old else ()) + ((name, size, mtime),)
        self.profiles[profile_id] = _Profile.of(files)

    def add_temp(self, name: str, mtime: float) -> None:
        """A temp file that is in the directory now."""
        self.names.add(name)
        self.temps[name] = mtime

    def forget(self, name: str) -> None:
        """A file that is no longer in the directory."""
        self.names.discard(name)
        self.temps.pop(name, None)
        known = self.files.pop(name, None)
        if known is None:
            return
        self.total -= known[0]
        profile_id = name.rpartition(".")[0]
        files = tuple(f for f in self.profiles[profile_id].files if f[0] != name)
        if files:
            self.profiles[profile_id] = _Profile.of(files)
        else:
            del self.profiles[profile_id]


class ProfileStore:
    def __init__(self, directory: Path, max_profiles: int, max_bytes: int) -> None:
        self.directory = Path(directory)
        self.max_profiles = max_profiles
        self.max_bytes = max_bytes
        self._lock_path = self.directory / LOCK_NAME
        self._view = _DirectoryView()
        # Threads of one process share the view: refresh, prune and save update it under this.
        self._view_lock = threading.Lock()

    # -- the directory --------------------------------------------------------------------

    def prepare(self) -> None:
        """Create the directory (0700) if missing; refuse one that others could write to.

        Dozer's pages unpickle what is in it, and a pickle is code.
        """
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(self.directory, 0o700)
        except FileExistsError:
            pass
        else:
            os.chmod(self.directory, 0o700)  # the umask may have taken owner bits away
        st = os.stat(self.directory)
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafeDirectoryError(f"profile directory {self.directory} is not a directory")
        if st.st_uid != os.geteuid():
            raise UnsafeDirectoryError(
                f"profile directory {self.directory} is owned by uid {st.st_uid}, not by this"
                f" process's user (uid {os.geteuid()}): refusing to load profiles from it"
            )
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise UnsafeDirectoryError(
                f"profile directory {self.directory} is group- or world-writable"
                f" (mode {stat.S_IMODE(st.st_mode):04o}); make it 0700"
            )
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise UnsafeDirectoryError(f"profile directory {self.directory} is not writable")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # A new open file description each time: an fd inherited across fork() would share one
        # flock between the master's children, and then they would not exclude each other.
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the flock

    # -- writing ----------------------------------------------------------------------------

    def save(self, profile_id: str, pickled: bytes, record: dict[str, Any]) -> list[str]:
        """Write one profile, then prune; returns the ids pruned (possibly this one)."""
        if not PROFILE_ID.fullmatch(profile_id):
            raise ValueError(f"bad profile id {profile_id!r}")
        record_bytes = json.dumps(record, sort_keys=True).encode()
        size = len(pickled) + len(record_bytes)
        if size > self.max_bytes:
            return [profile_id]  # would not fit even alone: not kept
        temps: list[str] = []
        try:
            # The slow part (writing bytes) happens outside the lock.
            pkl_mtime = self._write_temp(profile_id, ".pkl", pickled, temps)
            json_mtime = self._write_temp(profile_id, ".json", record_bytes, temps)
            pkl_tmp, json_tmp = temps
            directory = str(self.directory)
            with self._locked(), self._view_lock:
                # Our own temp files are in the listing: known, no need to stat() them.
                self._view.add_temp(os.path.basename(pkl_tmp), pkl_mtime)
                self._view.add_temp(os.path.basename(json_tmp), json_mtime)
                # Room first, then the rename: a reader never sees more than the bounds.
                removed = self._prune_locked(incoming=size)
                os.replace(pkl_tmp, f"{directory}/{profile_id}.pkl")
                # The record last: a listed profile has its pickle already.
                os.replace(json_tmp, f"{directory}/{profile_id}.json")
                temps.clear()
                # Known without a stat() too (a rename keeps size and mtime).
                self._view.forget(os.path.basename(pkl_tmp))
                self._view.forget(os.path.basename(json_tmp))
                self._view.add(f"{profile_id}.pkl", len(pickled), pkl_mtime)
                self._view.add(f"{profile_id}.json", len(record_bytes), json_mtime)
                return removed
        finally:
            for path in temps:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)

    def _write_temp(self, profile_id: str, suffix: str, data: bytes, temps: list[str]) -> float:
        """Write data to a new temp file, its path appended to temps; returns its mtime."""
        path = f"{self.directory}/{TMP_PREFIX}{profile_id}{suffix}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            temps.append(path)
            # No fsync: a profile lost in a crash is no loss; rename alone keeps readers safe.
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            return os.fstat(fd).st_mtime
        finally:
            os.close(fd)

    def prune(self) -> list[str]:
        with self._locked(), self._view_lock:
            return self._prune_locked()

    def _prune_locked(self, incoming: int | None = None) -> list[str]:
        """Drop the oldest profiles (mtime, then id) until both bounds hold, counting a profile
        of ``incoming`` bytes about to be added. Called with both locks held."""
        profiles = self._refresh_locked()
        count = len(profiles) + (incoming is not None)
        total = self._view.total + (incoming or 0)
        removed: list[str] = []
        if count <= self.max_profiles and total <= self.max_bytes:
            return removed
        for _, profile_id in sorted((p.mtime, i) for i, p in profiles.items()):
            if count <= self.max_profiles and total <= self.max_bytes:
                break
            profile = profiles[profile_id]
            for name, _, _ in profile.files:  # the files listed, not every suffix
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{self.directory}/{name}")
                self._view.forget(name)
            count -= 1
            total -= profile.size
            removed.append(profile_id)
        return removed

    def _refresh_locked(self) -> dict[str, _Profile]:
        """List the directory, update the view, remove stale temp files; returns the view's
        profiles by id (the live dict: copy it before letting go of the view lock)."""
        if time.monotonic() - self._view.since >= FULL_SCAN_SECONDS:
            self._view = _DirectoryView()  # everything is new to it: stat()s every file
        try:
            listing = os.listdir(self.directory)
        except FileNotFoundError:
            listing = []
        directory = str(self.directory)
        try:
            stale = self._view.refresh(directory, listing, time.time())
        except BaseException:
            self._view = _DirectoryView()  # half updated: start afresh next time
            raise
        for name in stale:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{directory}/{name}")
            self._view.forget(name)
        return self._view.profiles

    def _scan(self) -> dict[str, tuple[tuple[str, int, float], ...]]:
        """Profile files by id: (name, size, mtime), as of now; removes stale temp files."""
        with self._view_lock:
            return {i: p.files for i, p in self._refresh_locked().items()}

    def _unlink_group(self, profile_id: str) -> None:
        for suffix in SUFFIXES:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / f"{profile_id}{suffix}")

    def delete(self, profile_id: str | None = None) -> None:
        """Delete one profile, or all of them when profile_id is None."""
        if profile_id is not None and not PROFILE_ID.fullmatch(profile_id):
            raise ValueError(f"bad profile id {profile_id!r}")
        with self._locked():
            ids = [profile_id] if profile_id is not None else list(self._scan())
            for one in ids:
                self._unlink_group(one)

    # -- reading ----------------------------------------------------------------------------

    def list_profiles(self) -> tuple[list[ProfileInfo], list[tuple[float, str, str]]]:
        """Profiles newest first, and (mtime, error, id) of records that cannot be read."""
        profiles: list[ProfileInfo] = []
        errors: list[tuple[float, str, str]] = []
        for profile_id, files in self._scan().items():
            names = {name for name, _, _ in files}
            mtime = max(m for _, _, m in files)
            if f"{profile_id}.json" not in names:
                if f"{profile_id}.pkl" in names:  # e.g. written by plain Dozer
                    profiles.append(ProfileInfo(profile_id, mtime, {}))
                continue
            try:
                raw = (self.directory / f"{profile_id}.json").read_bytes()
            except FileNotFoundError:
                continue  # pruned between the scan and the read
            try:
                record = json.loads(raw)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:
                errors.append((mtime, f"{type(exc).__name__}: {exc}", profile_id))
                continue
            profiles.append(ProfileInfo(profile_id, mtime, record))
        profiles.sort(key=lambda p: (p.mtime, p.id), reverse=True)
        errors.sort(reverse=True)
        return profiles, errors

    def load(self, profile_id: str) -> dict[str, Any]:
        """The unpickled profile. FileNotFoundError if it is gone (or the id is not one)."""
        if not PROFILE_ID.fullmatch(profile_id):
            raise FileNotFoundError(profile_id)
        with open(self.directory / f"{profile_id}.pkl", "rb") as f:
            # Checked again per file: the directory's check at start-up does not cover a file
            # placed by someone else before the directory was locked down.
            st = os.fstat(f.fileno())
            if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise UnsafeDirectoryError(f"profile {profile_id} is not ours alone: not loaded")
            data = pickle.load(f)  # our own file in a directory only we can write
        if not isinstance(data, dict) or "profile" not in data:
            raise ValueError(f"profile {profile_id} is not a Dozer profile")
        return data


def _profile_id_of(name: str) -> str | None:
    stem, dot, ext = name.rpartition(".")
    if not dot or dot + ext not in SUFFIXES or not PROFILE_ID.fullmatch(stem):
        return None
    return stem
