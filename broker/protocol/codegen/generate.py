"""Which specs are generated, into which files, and the registry index module."""

from __future__ import annotations

from pathlib import Path

from broker.protocol.codegen.emit import HEADER, render_module
from broker.protocol.codegen.spec import Message, load_message, snake_case

#: The APIs the broker serves (request and response of each are generated).
API_NAMES: tuple[str, ...] = (
    "Produce", "Fetch", "ListOffsets", "Metadata", "OffsetCommit", "OffsetFetch",
    "FindCoordinator", "JoinGroup", "Heartbeat", "LeaveGroup", "SyncGroup", "DescribeGroups",
    "ListGroups", "SaslHandshake", "ApiVersions", "CreateTopics", "DeleteTopics",
    "DeleteRecords", "InitProducerId", "OffsetForLeaderEpoch", "AddPartitionsToTxn",
    "AddOffsetsToTxn", "EndTxn", "WriteTxnMarkers", "TxnOffsetCommit", "DescribeAcls",
    "CreateAcls", "DeleteAcls", "DescribeConfigs", "AlterConfigs", "DescribeLogDirs",
    "SaslAuthenticate", "CreatePartitions", "DeleteGroups", "IncrementalAlterConfigs",
    "OffsetDelete", "DescribeUserScramCredentials", "AlterUserScramCredentials",
    "DescribeCluster", "DescribeProducers", "DescribeTransactions", "ListTransactions",
    "ConsumerGroupHeartbeat", "ConsumerGroupDescribe", "DescribeClientQuotas",
    "AlterClientQuotas", "AlterPartitionReassignments", "ListPartitionReassignments",
    "ElectLeaders", "DescribeTopicPartitions",
)

#: Versions below validVersions that we still decode and answer. Produce v0-v2 were removed
#: in Kafka 4.0 but librdkafka needs them advertised (KAFKA-18659), so a broker must be able
#: to read them and reply UNSUPPORTED_VERSION; request header v0 has no client id.
OLDEST_DECODABLE: dict[str, int] = {"ProduceRequest": 0, "ProduceResponse": 0, "RequestHeader": 0}

HEADERS: tuple[str, ...] = ("RequestHeader", "ResponseHeader")


def module_name(message_name: str) -> str:
    return snake_case(message_name)


def spec_names() -> list[str]:
    names = list(HEADERS)
    for api in API_NAMES:
        names += [f"{api}Request", f"{api}Response"]
    return names


def render_index(messages: list[Message]) -> str:
    lines = [HEADER.format(spec="the specs named in the modules below"), "# ruff: noqa",
             '"""Index of generated modules: (api_key, api name, request, response module)."""',
             "", "from __future__ import annotations", ""]
    mods = sorted(module_name(m.name) for m in messages)
    for mod in mods:
        lines.append(f"from broker.protocol.messages import {mod}")
    lines += ["", "APIS = ("]
    by_name = {m.name: m for m in messages}
    rows = []
    for api in API_NAMES:
        req = by_name[f"{api}Request"]
        rows.append((req.api_key, api))
    for key, api in sorted(rows):
        req_mod = module_name(f"{api}Request")
        resp_mod = module_name(f"{api}Response")
        lines.append(f"    ({key}, {api!r}, {req_mod}, {resp_mod}),")
    lines += [")", "REQUEST_HEADER = request_header", "RESPONSE_HEADER = response_header", ""]
    return "\n".join(lines)


def generate(specs: Path) -> dict[str, str]:
    """Return {file name: text} for every generated module (deterministic)."""
    files: dict[str, str] = {}
    messages = []
    for name in spec_names():
        msg = load_message(specs / f"{name}.json")
        assert msg.name == name, (msg.name, name)
        messages.append(msg)
        lo = OLDEST_DECODABLE.get(name, msg.valid[0])
        files[f"{module_name(name)}.py"] = render_module(msg, (lo, msg.valid[1]))
    files["_index.py"] = render_index(messages)
    files["__init__.py"] = (
        HEADER.format(spec="the Kafka message specs")
        + '\n"""Generated Kafka message classes and codecs; see broker.protocol.codegen."""\n'
    )
    return files
