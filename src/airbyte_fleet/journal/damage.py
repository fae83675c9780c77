"""Finding damage in a journal file: what SQLite reads without complaint but has silently lost.

SQLite opens a damaged write-ahead log (WAL) without an error: it keeps the frames it can verify and
drops the rest, and with them every commit made after the damage. A journal that lost its tail that
way still reads as a consistent, older journal, so a resume would take syncs triggered in the lost
part for untouched and trigger them again. Nothing in the database shows it; the files around it do:

* the wal-index (``-shm``) that a killed process leaves behind says how many frames were committed;
  SQLite recovering fewer than that (same WAL generation, same salts) means committed frames are gone;
* a commit frame of the current generation beyond the recovered end is a commit SQLite could not
  verify (a frame before it was overwritten);
* a WAL whose header is not a WAL header, or that ends in a partial frame, was truncated or written
  over.

``PRAGMA quick_check`` finds the other kind of damage, pages that are not what SQLite wrote.

The checks run when the journal was left unclosed (a clean close folds the WAL into the database and
deletes it) and no other process has it open: a live process's WAL is in use, not damaged. A
journal closed cleanly costs two file lookups per open.

A POSIX lock belongs to the process and dies with the first ``close()`` of any descriptor of its
file, so the wal-index is only read while this process has no SQLite connection to it (SQLite's
locks live there): before the journal's own connection is made, and never when another
:class:`~airbyte_fleet.journal.Journal` of this process has the file open.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import struct
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Leftover", "find_damage", "leftover"]

_WAL_MAGIC = (0x377F0682, 0x377F0683)
_WAL_VERSION = 3007000
_WAL_HEADER = 32
_FRAME_HEADER = 24
_SHM_COPY = 48
# The byte of the wal-index every process with the database open holds a shared lock on (SQLite's
# unix VFS: UNIX_SHM_DMS, after the 8 WAL locks that start at byte 120).
_SHM_DMS = 128


@dataclass(frozen=True)
class Leftover:
    """What the last process left of its WAL: the wal-index's generation (its salts) and last
    committed frame, when the index can be trusted."""

    salts: bytes | None = None
    max_frame: int = 0


def leftover(db: Path) -> Leftover | None:
    """The WAL the last process left unclosed at *db*; None when there is nothing to check (a
    clean close left no WAL) or another process has the journal open (its WAL is in use).

    Call only while this process has no SQLite connection to *db* (see the module's doc)."""
    wal = Path(f"{db}-wal")
    try:
        fd = os.open(f"{db}-shm", os.O_RDONLY)
    except OSError:
        # No index: a WAL with content was still left unclosed (the index was deleted).
        return Leftover() if _size(wal) > 0 else None
    try:
        probe = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, _SHM_DMS, 1, 0)
        held = struct.unpack("hhqqi", fcntl.fcntl(fd, fcntl.F_GETLK, probe))[0]
        if held != fcntl.F_UNLCK:
            return None
        data = os.pread(fd, 2 * _SHM_COPY, 0)
    finally:
        os.close(fd)
    found = _index(data)
    if _size(wal) > 0 or found.max_frame > 0:
        return found
    return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _index(data: bytes) -> Leftover:
    # Both copies of the header, equal, initialised: SQLite was not caught mid-update.
    if len(data) < 2 * _SHM_COPY or data[:_SHM_COPY] != data[_SHM_COPY:]:
        return Leftover()
    version, _, _, initialised = struct.unpack_from("=IIIB", data)
    if version != _WAL_VERSION or not initialised:
        return Leftover()
    (max_frame,) = struct.unpack_from("=I", data, 16)
    return Leftover(salts=data[32:40], max_frame=max_frame)


def find_damage(conn: sqlite3.Connection, db: Path, before: Leftover) -> list[str]:
    """What is wrong with the journal at *db*, each as a few words; empty when nothing is.

    *conn* is fresh (nothing read or written through it yet); *before* is :func:`leftover`.
    """
    problems: list[str] = []
    try:
        # Recovers the WAL (its verified frames become the database's last state) and reports
        # how many frames that is; a passive checkpoint writes only what is already committed.
        _, recovered, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    except sqlite3.OperationalError:
        recovered = None  # read-only: SQLite recovers, but does not say how far
    problems += _wal_problems(db, before, recovered)
    found = [str(r[0]) for r in conn.execute("PRAGMA quick_check(5)").fetchall() if r[0] != "ok"]
    if found:
        problems.append("its pages fail SQLite's quick_check: " + "; ".join(found))
    return problems


def _wal_problems(db: Path, before: Leftover, recovered: int | None) -> list[str]:
    try:
        wal = Path(f"{db}-wal").read_bytes()
    except FileNotFoundError:
        wal = b""
    if not wal:
        if before.max_frame > 0:
            return ["its write-ahead log is gone, with the commits it held"]
        return []
    header = _wal_header(wal)
    if header is None:
        return ["its write-ahead log does not start with a valid header"]
    salts, frame_size = header
    problems: list[str] = []
    if (len(wal) - _WAL_HEADER) % frame_size:
        problems.append("its write-ahead log ends in a partial frame")
    if recovered is None:
        return problems
    recovered = max(0, recovered)
    if before.salts == salts and before.max_frame > recovered:
        problems.append(
            f"its write-ahead log lost {before.max_frame - recovered} of the "
            f"{before.max_frame} frames committed to it"
        )
        return problems
    for index in range(recovered, (len(wal) - _WAL_HEADER) // frame_size):
        at = _WAL_HEADER + index * frame_size
        (commit,) = struct.unpack_from(">I", wal, at + 4)
        # Uncommitted frames of a killed transaction may follow the end, and frames of an older
        # generation (other salts); a commit of this generation may not.
        if commit and wal[at + 8 : at + 16] == salts:
            problems.append(
                f"its write-ahead log holds commits after frame {recovered} that SQLite cannot "
                "verify"
            )
            break
    return problems


def _wal_header(wal: bytes) -> tuple[bytes, int] | None:
    """The WAL's salts and frame size, or None when the header is not a WAL header."""
    if len(wal) < _WAL_HEADER:
        return None
    magic, version, page_size = struct.unpack_from(">III", wal)
    if magic not in _WAL_MAGIC or version != _WAL_VERSION:
        return None
    if page_size == 1:
        page_size = 65536
    if page_size < 512 or page_size & (page_size - 1):
        return None
    # The header's own checksum, in the byte order its magic names (0x...82: little-endian).
    words = struct.unpack_from("<6I" if magic == _WAL_MAGIC[0] else ">6I", wal)
    s0 = s1 = 0
    for first, second in zip(words[::2], words[1::2], strict=True):
        s0 = (s0 + first + s1) & 0xFFFFFFFF
        s1 = (s1 + second + s0) & 0xFFFFFFFF
    if (s0, s1) != struct.unpack_from(">II", wal, 24):
        return None
    return wal[16:24], _FRAME_HEADER + page_size
