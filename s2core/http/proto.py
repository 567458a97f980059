"""The protobuf messages of S2's API (s2.v1, from s2.proto), built at import time.

The messages are declared here as a FileDescriptorProto and turned into classes by the
protobuf runtime, in a private descriptor pool: no protoc step, no generated module, and no
clash with a client (such as s2-sdk) that registers its own `s2.v1` messages in the default
pool of the same process. See docs/decisions/0004-s2-http-api.md.

Also converts between these messages and s2core's record types. Pure: no I/O.
"""
from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from s2core.records import AppendAck, AppendRecord, ReadBatch, StreamPosition

__all__ = [
    "AppendAckPb",
    "AppendInputPb",
    "DecodeError",
    "ReadBatchPb",
    "decode_append_input",
    "encode_append_ack",
    "encode_read_batch",
]

_F = descriptor_pb2.FieldDescriptorProto
_U64, _BYTES, _STRING, _MSG = _F.TYPE_UINT64, _F.TYPE_BYTES, _F.TYPE_STRING, _F.TYPE_MESSAGE
_OPT, _REP = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED

# message name -> [(field name, number, type, label, message type, proto3 optional)]
_MESSAGES: dict[str, list[tuple[str, int, int, int, str, bool]]] = {
    "StreamPosition": [("seq_num", 1, _U64, _OPT, "", False),
                       ("timestamp", 2, _U64, _OPT, "", False)],
    "Header": [("name", 1, _BYTES, _OPT, "", False), ("value", 2, _BYTES, _OPT, "", False)],
    "AppendRecord": [("timestamp", 1, _U64, _OPT, "", True),
                     ("headers", 2, _MSG, _REP, "Header", False),
                     ("body", 3, _BYTES, _OPT, "", False)],
    "AppendInput": [("records", 1, _MSG, _REP, "AppendRecord", False),
                    ("match_seq_num", 2, _U64, _OPT, "", True),
                    ("fencing_token", 3, _STRING, _OPT, "", True)],
    "AppendAck": [("start", 1, _MSG, _OPT, "StreamPosition", False),
                  ("end", 2, _MSG, _OPT, "StreamPosition", False),
                  ("tail", 3, _MSG, _OPT, "StreamPosition", False)],
    "SequencedRecord": [("seq_num", 1, _U64, _OPT, "", False),
                        ("timestamp", 2, _U64, _OPT, "", False),
                        ("headers", 3, _MSG, _REP, "Header", False),
                        ("body", 4, _BYTES, _OPT, "", False)],
    "ReadBatch": [("records", 1, _MSG, _REP, "SequencedRecord", False),
                  ("tail", 2, _MSG, _OPT, "StreamPosition", True)],
}


def _build_file() -> descriptor_pb2.FileDescriptorProto:
    f = descriptor_pb2.FileDescriptorProto(name="s2core/http/s2.proto", package="s2.v1",
                                           syntax="proto3")
    for name, fields in _MESSAGES.items():
        m = f.message_type.add(name=name)
        for fname, number, ftype, label, type_name, optional in fields:
            fd = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                fd.type_name = f".s2.v1.{type_name}"
            if optional:
                # proto3 `optional` is a synthetic one-field oneof named _<field>
                fd.proto3_optional = True
                fd.oneof_index = len(m.oneof_decl)
                m.oneof_decl.add(name=f"_{fname}")
    return f


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_build_file())


def _cls(name: str):
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"s2.v1.{name}"))


StreamPositionPb = _cls("StreamPosition")
AppendInputPb = _cls("AppendInput")
AppendAckPb = _cls("AppendAck")
ReadBatchPb = _cls("ReadBatch")


class ParsedAppendInput:
    """An AppendInput decoded into s2core terms."""

    __slots__ = ("fencing_token", "match_seq_num", "records")

    def __init__(self, records: list[AppendRecord], match_seq_num: int | None,
                 fencing_token: str | None) -> None:
        self.records = records
        self.match_seq_num = match_seq_num
        self.fencing_token = fencing_token


def decode_append_input(data: bytes) -> ParsedAppendInput:
    """Parse a serialized AppendInput; raises DecodeError on malformed bytes."""
    msg = AppendInputPb()
    msg.ParseFromString(data)
    records = [
        AppendRecord(body=r.body, headers=[(h.name, h.value) for h in r.headers],
                     timestamp=r.timestamp if r.HasField("timestamp") else None)
        for r in msg.records
    ]
    return ParsedAppendInput(
        records,
        msg.match_seq_num if msg.HasField("match_seq_num") else None,
        msg.fencing_token if msg.HasField("fencing_token") else None,
    )


def _pos(dst, p: StreamPosition) -> None:
    dst.seq_num = p.seq_num
    dst.timestamp = p.timestamp


def encode_append_ack(ack: AppendAck) -> bytes:
    msg = AppendAckPb()
    _pos(msg.start, ack.start)
    _pos(msg.end, ack.end)
    _pos(msg.tail, ack.tail)
    return msg.SerializeToString()


def encode_read_batch(batch: ReadBatch) -> bytes:
    msg = ReadBatchPb()
    for r in batch.records:
        rec = msg.records.add(seq_num=r.seq_num, timestamp=r.timestamp, body=r.body)
        for name, value in r.headers:
            rec.headers.add(name=name, value=value)
    if batch.tail is not None:
        _pos(msg.tail, batch.tail)
    return msg.SerializeToString()
