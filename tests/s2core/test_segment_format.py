"""Segment sections: the version 2 checksum order, corruption detection, version 1 reads."""
import struct

import crc32c
import pytest

from s2core.errors import Corrupt
from s2core.recordcodec import encode_record
from s2core.records import SequencedRecord
from s2core.segment import HEADER_SIZE, MAGIC, SectionBuilder, build_section, parse_section

UID = bytes(range(16))


def _records(n: int, size: int) -> list[SequencedRecord]:
    return [SequencedRecord(5 + 2 * i, 700 + i, ((b"k", b"v"),) if i % 4 == 0 else (),
                            bytes([i % 256]) * size, 2) for i in range(n)]


def _version1(uid: bytes, recs: list[SequencedRecord]) -> bytes:
    """A section as the first format wrote it: CRC over header, index, data in order."""
    data: list = []
    index = []
    off = 0
    for r in recs:
        index.append(struct.pack(">QQI", r.seq_num, r.timestamp, off))
        off += encode_record(data, r.seq_num, r.span, r.timestamp, r.headers, r.body)
    hdr = bytearray(struct.pack(">4sB3x16sQQIII", MAGIC, 1, uid, recs[0].seq_num,
                                recs[-1].end_seq, len(recs), off, 0))
    body = b"".join(index) + b"".join(data)
    struct.pack_into(">I", hdr, HEADER_SIZE - 4, crc32c.crc32c(body, crc32c.crc32c(hdr)))
    return bytes(hdr) + body


@pytest.mark.parametrize("size", [0, 100, 5000])  # small records are joined, big ones not
def test_round_trip_in_runs(size):
    recs = _records(300, size)
    b = SectionBuilder(UID)
    for k in range(0, len(recs), 64):
        b.add(recs[k:k + 64])
    raw = b"".join(b.finish())
    assert raw == build_section(UID, recs) and len(raw) == b.nbytes
    sec = parse_section(raw)
    assert (sec.first_seq, sec.end_seq, len(sec)) == (5, 5 + 2 * 300, 300)
    assert [sec.record(i).body for i in (0, 150, 299)] == [recs[i].body for i in (0, 150, 299)]
    assert sec.record(4).headers == ((b"k", b"v"),)


def test_every_flipped_byte_is_detected():
    raw = build_section(UID, _records(20, 30))
    for pos in range(0, len(raw), 7):
        bad = bytearray(raw)
        bad[pos] ^= 0x40
        with pytest.raises(Corrupt):
            parse_section(bytes(bad))


def test_version_1_sections_still_read():
    recs = _records(50, 40)
    old = _version1(UID, recs)
    sec = parse_section(old)
    assert (sec.first_seq, len(sec), sec.record(10).body) == (5, 50, recs[10].body)
    bad = bytearray(old)
    bad[-1] ^= 1
    with pytest.raises(Corrupt):
        parse_section(bytes(bad))
    assert build_section(UID, recs) != old  # new sections are written as version 2


@pytest.mark.parametrize("name", ["s", "caf\u00e9 \"quoted\" \\ \U0001f600", "tab\there"])
def test_checkpoint_rows_are_the_json_they_always_were(name):
    import json

    from s2core.streamstate import encode_ckpt
    want = json.dumps({"b": "basin-1", "s": name, "next": 12, "ts": 1_700_000_000_123,
                       "tok": name[::-1], "trim": 3}).encode()
    assert encode_ckpt("basin-1", name, 12, 1_700_000_000_123, name[::-1], 3) == want
