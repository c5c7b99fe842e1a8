"""The streaming zip writer produces archives `zipfile` reads, ZIP64 included.

Python's `zipfile` reads an archive of more than 65,535 entries even without its ZIP64
records (it counts the central directory itself); stricter readers do not, so the end
records are parsed here by the specification (APPNOTE 4.3.14-4.3.16) and the archive is
tested with Info-ZIP's `unzip -t` as well (`scripts/system-deps.sh` installs it).
"""

from __future__ import annotations

import io
import struct
import subprocess
import zipfile
from pathlib import Path

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
    data = out.getvalue()
    z = zipfile.ZipFile(io.BytesIO(data))
    names = z.namelist()
    assert len(names) == 70000 and names[-1] == "d/69999.json"
    assert z.read("d/69999.json") == b"69999"
    # The classic end record says "see ZIP64" (0xFFFF entries); the ZIP64 locator just
    # before it points at the ZIP64 end record, which holds the real count and offset.
    eocd = data.rindex(b"PK\x05\x06")
    assert eocd == len(data) - 22, "the end record carries no comment"
    _, _, _, on_disk, total, _, _, _ = struct.unpack("<IHHHHIIH", data[eocd : eocd + 22])
    assert on_disk == total == 0xFFFF
    locator = eocd - 20
    signature, _, zip64_at, disks = struct.unpack("<IIQI", data[locator:eocd])
    assert signature == 0x07064B50 and disks == 1
    fields = struct.unpack("<IQHHIIQQQQ", data[zip64_at : zip64_at + 56])
    assert fields[0] == 0x06064B50 and fields[6] == fields[7] == 70000
    directory_size, directory_at = fields[8], fields[9]
    assert data[directory_at : directory_at + 4] == b"PK\x01\x02"
    assert directory_at + directory_size == zip64_at


def test_info_zip_reads_an_archive_of_more_than_65535_entries(tmp_path: Path):
    out = io.BytesIO()
    archive = ZipStream(out.write)
    for i in range(70000):
        archive.add(f"d/{i}.json", b"%d" % i)
    archive.close()
    path = tmp_path / "big.zip"
    path.write_bytes(out.getvalue())
    tested = subprocess.run(["unzip", "-tqq", str(path)], capture_output=True, timeout=120)
    assert tested.returncode == 0, tested.stdout + tested.stderr
