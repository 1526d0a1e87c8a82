"""langgraph-dualsaver: a LangGraph checkpointer with a Redis (or Valkey) hot tier and a
PostgreSQL durable tier.

```python
from langgraph_dualsaver import DualSaver

graph = builder.compile(checkpointer=DualSaver.from_env())
```
"""

from langgraph_dualsaver._base import StrictSerializer
from langgraph_dualsaver.chain.flusher import FlushSettings
from langgraph_dualsaver.chain.saver import DualSaver, DualStats
from langgraph_dualsaver.compression import Compression, StoredValueError, StoredValueTooLargeError
from langgraph_dualsaver.durable.saver import PostgresDurableSaver
from langgraph_dualsaver.errors import (
    CheckpointTooLargeError,
    ConfigurationError,
    DualSaverError,
    DurableWriteError,
    EventLoopError,
    InvalidIdError,
    InvalidInputError,
    InvalidMetadataError,
    MissingThreadIdError,
    SerializationError,
    StoreUnavailableError,
    ThreadBusyError,
    UnsafeRedisConfigError,
    UnsafeValueError,
)
from langgraph_dualsaver.hot.saver import RedisHotSaver
from langgraph_dualsaver.offload import (
    ObjectStoreUnavailableError,
    Offload,
    OffloadedValueMissingError,
    OffloadNotConfiguredError,
)
from langgraph_dualsaver.records import Limits
from langgraph_dualsaver.retention import Retention
from langgraph_dualsaver.settings import Timeouts
from langgraph_dualsaver.state_upgrades import StateSchema

__all__ = [
    "CheckpointTooLargeError",
    "Compression",
    "ConfigurationError",
    "DualSaver",
    "DualSaverError",
    "DualStats",
    "DurableWriteError",
    "EventLoopError",
    "FlushSettings",
    "InvalidIdError",
    "InvalidInputError",
    "InvalidMetadataError",
    "Limits",
    "MissingThreadIdError",
    "ObjectStoreUnavailableError",
    "Offload",
    "OffloadNotConfiguredError",
    "OffloadedValueMissingError",
    "PostgresDurableSaver",
    "RedisHotSaver",
    "Retention",
    "SerializationError",
    "StateSchema",
    "StoreUnavailableError",
    "StoredValueError",
    "StoredValueTooLargeError",
    "StrictSerializer",
    "ThreadBusyError",
    "Timeouts",
    "UnsafeRedisConfigError",
    "UnsafeValueError",
]
