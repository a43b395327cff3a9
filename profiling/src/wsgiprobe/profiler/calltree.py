"""A profile's call tree as Dozer shows it, built when the profile is read, not when it is saved.

Dozer's ``buildtree(prof.getstats())`` costs a few ms per request (a dict per function and per
call edge, a label and a cost string each), and its result pickles to ~3x the bytes. Most saved
profiles are never looked at, so a profile is saved in a compact form (:func:`compact`) inside a
:class:`DeferredTree`, which pickles as "call :func:`dozer_tree` on this compact form". Whoever
unpickles the file (our UI, Dozer's own pages, a script) therefore gets Dozer's tree in the
``profile`` key, exactly as ``buildtree`` makes it: :func:`dozer_tree` hands Dozer's own
``buildtree`` stand-ins for cProfile's entries. The one new requirement on a reader is that
``wsgiprobe`` can be imported where it unpickles.

Saved profiles name ``wsgiprobe.profiler.calltree.dozer_tree``: keep that name importable.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from dozer.profile import buildtree

# A function in the profile: cProfile's label for a builtin, else (name, file, first line).
Code = str | tuple[str, str, int]
# (code index, callee's total time in s, call count), one per call edge.
Call = tuple[int, float, int]
# (code index, total time in s, calls made or None), one per function.
Entry = tuple[int, float, tuple[Call, ...] | None]

_PROFILER_ITSELF = "of '_lsprof.Profiler'"  # the builtin disable() call closing each phase


class _CodeInfo(NamedTuple):
    """What Dozer's label() and buildtree() read from a code object."""

    co_name: str
    co_filename: str
    co_firstlineno: int


class _StatsEntry(NamedTuple):
    """What buildtree() reads from a cProfile profiler_entry."""

    code: str | _CodeInfo
    totaltime: float
    calls: list[_StatsSubEntry] | None


class _StatsSubEntry(NamedTuple):
    """What buildtree() reads from a cProfile profiler_subentry."""

    code: str | _CodeInfo
    totaltime: float
    callcount: int


def compact(stats: Iterable[Any]) -> tuple[list[Code], list[Entry]]:
    """``cProfile.Profile().getstats()`` as plain tuples: each function once in a table, and
    entries that point into it. Only what buildtree() reads is kept."""
    codes: list[Code] = []
    index: dict[int, int] = {}  # id(code object) -> its place in codes
    entries: list[Entry] = []
    find = index.get

    def add(code: Any) -> int:
        index[id(code)] = len(codes)
        if isinstance(code, str):
            codes.append(code)
        else:
            codes.append((code.co_name, code.co_filename, code.co_firstlineno))
        return len(codes) - 1

    # Hot loop (~0.5 ms for a few hundred functions): tuple unpacking of _lsprof's entries
    # (fields in the order of their docs) and lookups by id(), as hashing a code object hashes
    # its bytecode; stats keeps every code object alive, so ids cannot be reused meanwhile.
    for code, _, _, totaltime, _, calls in stats:
        i = find(id(code))
        if i is None:
            i = add(code)
        if not calls:
            entries.append((i, totaltime, None))
            continue
        edges: list[Call] = []
        for callee, callcount, _, calltime, _ in calls:
            j = find(id(callee))
            if j is None:
                j = add(callee)
            edges.append((j, calltime, callcount))
        entries.append((i, totaltime, tuple(edges)))
    return codes, entries


def dozer_tree(codes: list[Code], entries: list[Entry]) -> dict[str, dict[str, Any]]:
    """Dozer's call tree (what ``buildtree(prof.getstats())`` returns) from :func:`compact`'s
    output. Saved profiles call this when unpickled: keep its name and signature."""
    infos = [code if isinstance(code, str) else _CodeInfo(*code) for code in codes]
    stats = [
        _StatsEntry(
            infos[code],
            totaltime,
            [_StatsSubEntry(infos[c], t, n) for c, t, n in calls] if calls else None,
        )
        for code, totaltime, calls in entries
    ]
    return buildtree(stats)


def top_level_ms(codes: list[Code], entries: list[Entry]) -> float:
    """Profiled time in ms: the functions nobody in the profile called (the request's phases),
    less the profiler's own disable() calls."""
    called = {c for _, _, calls in entries if calls for c, _, _ in calls}
    total = 0.0
    for code, totaltime, _ in entries:
        if code in called:
            continue
        label = codes[code]
        if isinstance(label, str) and _PROFILER_ITSELF in label:
            continue
        total += totaltime
    return total * 1000


class DeferredTree:
    """A profile that pickles as a call to :func:`dozer_tree`, so that the tree is built by the
    reader; the saving process never builds it."""

    __slots__ = ("codes", "entries")

    def __init__(self, codes: list[Code], entries: list[Entry]) -> None:
        self.codes = codes
        self.entries = entries

    def __reduce__(self) -> tuple[Any, tuple[list[Code], list[Entry]]]:
        return dozer_tree, (self.codes, self.entries)
