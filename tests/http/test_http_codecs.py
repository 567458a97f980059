"""The pure pieces: S2S framing, SSE events, protobuf messages, URL decoding."""
from __future__ import annotations

import gzip

import pytest
import s2_sdk._generated.s2.v1.s2_pb2 as sdk_pb
from s2_sdk._s2s._protocol import Message, deframe_message, frame_message
from s2_sdk._types import Compression

from s2core.http import proto, s2s, sse
from s2core.http.asgi import percent_decode
from s2core.http.errors import HttpError
from s2core.records import AppendAck, ReadBatch, SequencedRecord, StreamPosition


def test_frames_match_the_sdk_both_ways():
    body = b"\x08\x01" * 10
    assert s2s.encode_message(body) == frame_message(Message(body, False, Compression.NONE))
    big = bytes(range(256)) * 8
    for algo, comp in ((s2s.ZSTD, Compression.ZSTD), (s2s.GZIP, Compression.GZIP)):
        msg = deframe_message(s2s.encode_message(big, algo))
        assert msg.compression == comp and not msg.terminal
        from s2_sdk._compression import decompress
        assert decompress(msg.body, comp) == big
        dec = s2s.FrameDecoder(1 << 20)
        from s2_sdk._s2s._protocol import maybe_compress
        cbody, c = maybe_compress(big, comp)
        dec.feed(frame_message(Message(cbody, False, c)))
        assert dec.next_frame() == s2s.Frame(False, big)
    term = deframe_message(s2s.encode_terminal(412, {"seq_num_mismatch": 3}))
    assert term.terminal and term.body[:2] == b"\x01\x9c"


def test_small_messages_are_not_compressed():
    assert s2s.encode_message(b"tiny", s2s.GZIP)[3] == 0


def test_decoder_needs_more_data_then_yields():
    wire = s2s.encode_message(b"abc") + s2s.encode_message(b"defg")
    dec = s2s.FrameDecoder(100)
    for i, byte in enumerate(wire):
        dec.feed(bytes([byte]))
        f = dec.next_frame()
        if i == 6:
            assert f == s2s.Frame(False, b"abc")
        elif i == len(wire) - 1:
            assert f == s2s.Frame(False, b"defg")
        else:
            assert f is None
    assert dec.pending() == 0


def test_decoder_refuses_bombs_and_oversize():
    dec = s2s.FrameDecoder(1000)
    dec.feed((2000).to_bytes(3, "big"))
    with pytest.raises(s2s.BadFrame):
        dec.next_frame()
    bomb = gzip.compress(b"\0" * 100_000)
    dec = s2s.FrameDecoder(1000)
    dec.feed((1 + len(bomb)).to_bytes(3, "big") + bytes([s2s.GZIP << 5]) + bomb)
    with pytest.raises(s2s.BadFrame):
        dec.next_frame()


def test_negotiation():
    assert s2s.negotiate("gzip, zstd;q=0.5") == s2s.ZSTD
    assert s2s.negotiate("gzip") == s2s.GZIP
    assert s2s.negotiate(None) == s2s.NONE
    assert s2s.negotiate("br") == s2s.NONE


def test_sse_events_and_ids():
    ev = sse.batch_event({"records": []}, sse.LastEventId(4, 5, 60))
    assert ev == b'event: batch\nid: 4,5,60\ndata: {"records": []}\n\n'
    assert sse.ping_event(7) == b'event: ping\ndata: {"timestamp": 7}\n\n'
    assert sse.done_event() == b"data: [DONE]\n\n"
    assert sse.parse_last_event_id(" 1,2,3") == sse.LastEventId(1, 2, 3)
    assert sse.parse_last_event_id(None) is None
    for bad in ("1,2", "a,b,c", "1,2,3,4", "-1,2,3"):
        with pytest.raises(HttpError) as exc:
            sse.parse_last_event_id(bad)
        assert exc.value.status == 400


def test_proto_is_wire_compatible_with_the_sdk():
    inp = sdk_pb.AppendInput(records=[sdk_pb.AppendRecord(body=b"b", timestamp=0)],
                             match_seq_num=0)
    got = proto.decode_append_input(inp.SerializeToString())
    # explicit zeros are present, not absent: proto3 `optional` keeps presence
    assert got.match_seq_num == 0 and got.records[0].timestamp == 0
    assert got.fencing_token is None
    ack = sdk_pb.AppendAck()
    p = StreamPosition
    ack.ParseFromString(proto.encode_append_ack(AppendAck(p(1, 2), p(3, 4), p(5, 6))))
    assert (ack.start.seq_num, ack.end.timestamp, ack.tail.seq_num) == (1, 4, 5)
    batch = sdk_pb.ReadBatch()
    batch.ParseFromString(proto.encode_read_batch(
        ReadBatch([SequencedRecord(9, 10, ((b"h", b"v"),), b"body")], p(10, 10))))
    assert batch.records[0].headers[0].name == b"h" and batch.tail.seq_num == 10


def test_percent_decoding_is_strict():
    assert percent_decode(b"a%2Fb%20c", plus_is_space=False) == "a/b c"
    assert percent_decode(b"a+b", plus_is_space=True) == "a b"
    assert percent_decode(b"a+b", plus_is_space=False) == "a+b"
    assert percent_decode(b"%C3%BC", plus_is_space=False) == "ü"
    for bad in (b"%", b"%2", b"%zz", b"%ff"):
        with pytest.raises(ValueError):
            percent_decode(bad, plus_is_space=False)
