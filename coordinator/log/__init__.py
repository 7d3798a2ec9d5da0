"""The durable transaction log: one interface, an etcd implementation, a memory one."""

from ._etcd import EtcdLog, EtcdOptions
from ._interface import Created, LogError, LostOwnership, RequestTooLarge, Stored, TxLog
from ._memory import MemoryLog, MemoryStore

__all__ = [
    "Created",
    "EtcdLog",
    "EtcdOptions",
    "LogError",
    "LostOwnership",
    "MemoryLog",
    "MemoryStore",
    "RequestTooLarge",
    "Stored",
    "TxLog",
]
