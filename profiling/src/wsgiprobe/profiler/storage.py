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
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROFILE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
SUFFIXES = (".pkl", ".json", ".gv")
LOCK_NAME = ".wsgiprobe.lock"
TMP_PREFIX = ".tmp-"
STALE_TMP_SECONDS = 300  # a temp file this old belongs to a process that died mid-save

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


class ProfileStore:
    def __init__(self, directory: Path, max_profiles: int, max_bytes: int) -> None:
        self.directory = Path(directory)
        self.max_profiles = max_profiles
        self.max_bytes = max_bytes
        self._lock_path = self.directory / LOCK_NAME

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
        temps: list[Path] = []
        try:
            # The slow part (writing bytes) happens outside the lock.
            pkl_tmp = self._write_temp(profile_id, ".pkl", pickled, temps)
            json_tmp = self._write_temp(profile_id, ".json", record_bytes, temps)
            with self._locked():
                # Room first, then the rename: a reader never sees more than the bounds.
                removed = self._prune_locked(incoming=size)
                os.replace(pkl_tmp, self.directory / f"{profile_id}.pkl")
                # The record last: a listed profile has its pickle already.
                os.replace(json_tmp, self.directory / f"{profile_id}.json")
                temps.clear()
                return removed
        finally:
            for path in temps:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def _write_temp(self, profile_id: str, suffix: str, data: bytes, temps: list[Path]) -> Path:
        path = self.directory / f"{TMP_PREFIX}{profile_id}{suffix}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        temps.append(path)
        # No fsync: a profile lost in a crash is no loss; rename alone keeps readers safe.
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return path

    def prune(self) -> list[str]:
        with self._locked():
            return self._prune_locked()

    def _prune_locked(self, incoming: int | None = None) -> list[str]:
        """Drop the oldest profiles (mtime, then id) until both bounds hold, counting a profile
        of ``incoming`` bytes about to be added."""
        groups = self._scan()
        ordered = sorted(groups.items(), key=lambda item: (max(m for _, _, m in item[1]), item[0]))
        count = len(ordered) + (incoming is not None)
        total = sum(size for files in groups.values() for _, size, _ in files) + (incoming or 0)
        removed: list[str] = []
        for profile_id, files in ordered:
            if count <= self.max_profiles and total <= self.max_bytes:
                break
            self._unlink_group(profile_id)
            count -= 1
            total -= sum(size for _, size, _ in files)
            removed.append(profile_id)
        return removed

    def _scan(self) -> dict[str, list[tuple[str, int, float]]]:
        """Profile files by id: (name, size, mtime); removes stale temp files on the way."""
        groups: dict[str, list[tuple[str, int, float]]] = {}
        now = time.time()
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return groups
        for entry in entries:
            name = entry.name
            try:
                if name.startswith(TMP_PREFIX):
                    if now - entry.stat(follow_symlinks=False).st_mtime > STALE_TMP_SECONDS:
                        os.unlink(entry.path)
                    continue
                profile_id = _profile_id_of(name)
                if profile_id is None:
                    continue
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # pruned or deleted since the listing
            if stat.S_ISREG(st.st_mode):
                groups.setdefault(profile_id, []).append((name, st.st_size, st.st_mtime))
        return groups

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
