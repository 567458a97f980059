"""Read Kafka's JSON message specs into a small model the emitter walks.

Only names, types, versions, tags and defaults are kept; the specs' "about" texts and comments
are dropped on purpose (they are documentation of Apache Kafka, not of this code).
"""

from __future__ import annotations

import json
import keyword
import re
from dataclasses import dataclass, field
from pathlib import Path

MAX_VERSION = 0x7FFF
PRIMITIVES = frozenset(
    {"bool", "int8", "int16", "int32", "int64", "uint16", "float64", "uuid", "string", "bytes",
     "records"}
)
FIXED_FORMATS = {"bool": "?", "int8": "b", "int16": "h", "int32": "i", "int64": "q",
                 "uint16": "H", "float64": "d", "uuid": "16s"}
FIXED_SIZES = {"bool": 1, "int8": 1, "int16": 2, "int32": 4, "int64": 8, "uint16": 2,
               "float64": 8, "uuid": 16}

Versions = tuple[int, int] | None


def strip_comments(text: str) -> str:
    """Remove ``//`` comments that are outside JSON strings."""
    out: list[str] = []
    i = 0
    n = len(text)
    in_string = False
    while i < n:
        c = text[i]
        if in_string:
            out.append(c)
            if c == "\\":
                out.append(text[i + 1])
                i += 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
            out.append(c)
        elif c == "/" and text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


def parse_versions(text: str | None) -> Versions:
    """'3+' -> (3, MAX), '1-5' -> (1, 5), '2' -> (2, 2), 'none'/None -> None."""
    if text is None or text == "none":
        return None
    if text.endswith("+"):
        return int(text[:-1]), MAX_VERSION
    if "-" in text:
        lo, hi = text.split("-")
        return int(lo), int(hi)
    return int(text), int(text)


def in_versions(versions: Versions, v: int) -> bool:
    return versions is not None and versions[0] <= v <= versions[1]


def snake_case(name: str) -> str:
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s).lower()
    return s + "_" if keyword.iskeyword(s) else s


@dataclass
class Field:
    """One field of a struct, across all versions."""

    name: str
    py: str
    type: str
    versions: Versions
    nullable: Versions
    tag: int | None
    tagged: Versions
    default: str | None
    flexible_override: Versions | str  # "inherit" or an explicit version range
    struct: Struct | None = None

    @property
    def is_array(self) -> bool:
        return self.type.startswith("[]")

    @property
    def elem(self) -> str:
        return self.type[2:] if self.is_array else self.type

    def present(self, v: int) -> bool:
        return in_versions(self.versions, v)

    def nullable_in(self, v: int) -> bool:
        return in_versions(self.nullable, v)

    def tagged_in(self, v: int) -> bool:
        return self.tag is not None and in_versions(self.tagged, v)


@dataclass
class Struct:
    """A message or a nested/common struct."""

    name: str
    fields: list[Field] = field(default_factory=list)


@dataclass
class Message:
    """A top-level spec file: a request, response or header."""

    spec_file: str
    name: str
    kind: str
    api_key: int | None
    valid: tuple[int, int]
    flexible: Versions
    unstable: bool
    deprecated: Versions
    root: Struct
    structs: dict[str, Struct]

    def is_flexible(self, v: int) -> bool:
        return in_versions(self.flexible, v)


def _default_text(raw: object) -> str | None:
    """Specs write defaults as strings, but a few use JSON numbers or booleans."""
    if raw is None or isinstance(raw, str):
        return raw
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return str(raw)


def load_json(path: Path) -> dict:
    return json.loads(strip_comments(path.read_text(encoding="utf-8")))


def load_message(path: Path) -> Message:
    data = load_json(path)
    structs: dict[str, Struct] = {}
    common = {c["name"]: c for c in data.get("commonStructs", [])}

    def build_struct(name: str, raw_fields: list[dict]) -> Struct:
        if name in structs:
            return structs[name]
        st = Struct(name)
        structs[name] = st
        for raw in raw_fields:
            st.fields.append(build_field(raw))
        return st

    def build_field(raw: dict) -> Field:
        ftype = raw["type"]
        elem = ftype.removeprefix("[]")
        fl = raw.get("flexibleVersions")
        f = Field(
            name=raw["name"],
            py=snake_case(raw["name"]),
            type=ftype,
            versions=parse_versions(raw["versions"]),
            nullable=parse_versions(raw.get("nullableVersions")),
            tag=raw.get("tag"),
            tagged=parse_versions(raw.get("taggedVersions")),
            default=_default_text(raw.get("default")),
            flexible_override="inherit" if fl is None else parse_versions(fl),
        )
        if elem not in PRIMITIVES:
            if "fields" in raw:
                f.struct = build_struct(elem, raw["fields"])
            else:
                f.struct = build_struct(elem, common[elem]["fields"])
        return f

    root = build_struct(data["name"], data["fields"])
    valid = parse_versions(data["validVersions"])
    assert valid is not None
    return Message(
        spec_file=path.name,
        name=data["name"],
        kind=data["type"],
        api_key=data.get("apiKey"),
        valid=valid,
        flexible=parse_versions(data.get("flexibleVersions")),
        unstable=bool(data.get("latestVersionUnstable", False)),
        deprecated=parse_versions(data.get("deprecatedVersions")),
        root=root,
        structs=structs,
    )
