"""Lines appended durably: a torn last line (a crash mid-append) costs that line alone."""

from __future__ import annotations

from pathlib import Path

from etl.events_log import Event, EventLog
from etl.file_lock import append_durably


def test_an_append_after_a_torn_line_starts_a_line_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    append_durably(path, b"one\n")
    with open(path, "ab") as fh:  # a crash in the middle of a write
        fh.write(b"tw")
    append_durably(path, b"three\nfour\n")
    assert path.read_bytes().splitlines() == [b"one", b"tw", b"three", b"four"]
    append_durably(path, b"five\n")  # a whole last line gets nothing in front
    assert path.read_bytes().endswith(b"four\nfive\n")


def test_the_event_accepted_after_a_crash_mid_write_is_read_back(tmp_path: Path) -> None:
    log = EventLog(tmp_path)
    log.append([Event("u1", "i1", 1.0, 100)])
    with open(log.events_path, "ab") as fh:
        fh.write(b'{"user_id":"u2","item_id":"i')
    EventLog(tmp_path).append([Event("u3", "i3", 1.0, 300)])  # the restarted API accepts one more
    assert [(e.user_id, e.item_id) for e in EventLog(tmp_path).read()] == [("u1", "i1"), ("u3", "i3")]
