"""Generator of ``broker.protocol.messages`` from Kafka's JSON message specs.

Run ``python -m broker.protocol.codegen [--specs DIR] [--out DIR] [--check]``.
"""

from __future__ import annotations

from broker.protocol.codegen.generate import API_NAMES, generate, module_name

__all__ = ["API_NAMES", "generate", "module_name"]
