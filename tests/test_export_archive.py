"""The streaming zip writer produces archives `zipfile` reads, ZIP64 included."""

from __future__ import annotations

import io
import zipfile

from jobs.exports.archive import ZipStream


def test_small_archive_round_trips():
    out = io.BytesIO()
    archive = ZipStream(out.write)
    archive.add("a.json", b'{"a": 1}')
    archive.add_chunks("b/ünïcode.txt", [b"x" * 70000, b"y" * 5])
    archive.add("empty", b"")
    archive.close()
    z = zipfile.ZipFile(io.BytesIO(out.getvalue()))
    assert z.testzip() is None
    assert z.namelist() == ["a.json", "b/ünïcode.txt", "empty"]
    assert z.read("b/ünïcode.txt") == b"x" * 70000 + b"y" * 5
    assert z.read("empty") == b""


def test_more_than_65535_entries_use_zip64_records():
    out = io.BytesIO()
    archive = ZipStream(out.write)
    for i in range(70000):
        archive.add(f"d/{i}.json", b"%d" % i)
    archive.close()
    z = zipfile.ZipFile(io.BytesIO(out.getvalue()))
    names = z.namelist()
    assert len(names) == 70000 and names[-1] == "d/69999.json"
    assert z.read("d/69999.json") == b"69999"
