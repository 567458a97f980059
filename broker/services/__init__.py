"""One module per Kafka API. Each module defines:

    API_KEY: int
    VERSIONS: (min, max)   the versions it implements
    async def handle(broker, conn, header, request)
        -> a response message, None (no response: acks=0), or an awaitable of either
           (the request's first phase runs in request order on its connection; the
           awaitable — durability, long polls — runs concurrently and is answered in order)

ApiVersions advertises exactly the registered modules, so we never advertise what we do
not serve.
"""
from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def load_services() -> dict[int, ModuleType]:
    services: dict[int, ModuleType] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        key = getattr(mod, "API_KEY", None)
        if key is None:
            continue
        assert key not in services, f"two services for api key {key}"
        assert hasattr(mod, "VERSIONS") and hasattr(mod, "handle"), mod.__name__
        services[key] = mod
    return services
