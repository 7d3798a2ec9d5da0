import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Protocol(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROTOCOL_UNSPECIFIED: _ClassVar[Protocol]
    PROTOCOL_SAGA: _ClassVar[Protocol]
    PROTOCOL_TWO_PHASE: _ClassVar[Protocol]

class TxState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TX_STATE_UNSPECIFIED: _ClassVar[TxState]
    TX_STATE_RUNNING: _ClassVar[TxState]
    TX_STATE_COMMITTED: _ClassVar[TxState]
    TX_STATE_COMPENSATING: _ClassVar[TxState]
    TX_STATE_COMPENSATED: _ClassVar[TxState]
    TX_STATE_PREPARING: _ClassVar[TxState]
    TX_STATE_COMMITTING: _ClassVar[TxState]
    TX_STATE_ABORTING: _ClassVar[TxState]
    TX_STATE_ABORTED: _ClassVar[TxState]
    TX_STATE_FAILED: _ClassVar[TxState]

class BranchState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BRANCH_STATE_UNSPECIFIED: _ClassVar[BranchState]
    BRANCH_STATE_PENDING: _ClassVar[BranchState]
    BRANCH_STATE_RUNNING: _ClassVar[BranchState]
    BRANCH_STATE_SUCCEEDED: _ClassVar[BranchState]
    BRANCH_STATE_FAILED: _ClassVar[BranchState]
    BRANCH_STATE_COMPENSATING: _ClassVar[BranchState]
    BRANCH_STATE_COMPENSATED: _ClassVar[BranchState]
    BRANCH_STATE_PREPARED: _ClassVar[BranchState]
    BRANCH_STATE_VOTED_NO: _ClassVar[BranchState]
    BRANCH_STATE_COMMITTED: _ClassVar[BranchState]
    BRANCH_STATE_ABORTED: _ClassVar[BranchState]
    BRANCH_STATE_SKIPPED: _ClassVar[BranchState]
PROTOCOL_UNSPECIFIED: Protocol
PROTOCOL_SAGA: Protocol
PROTOCOL_TWO_PHASE: Protocol
TX_STATE_UNSPECIFIED: TxState
TX_STATE_RUNNING: TxState
TX_STATE_COMMITTED: TxState
TX_STATE_COMPENSATING: TxState
TX_STATE_COMPENSATED: TxState
TX_STATE_PREPARING: TxState
TX_STATE_COMMITTING: TxState
TX_STATE_ABORTING: TxState
TX_STATE_ABORTED: TxState
TX_STATE_FAILED: TxState
BRANCH_STATE_UNSPECIFIED: BranchState
BRANCH_STATE_PENDING: BranchState
BRANCH_STATE_RUNNING: BranchState
BRANCH_STATE_SUCCEEDED: BranchState
BRANCH_STATE_FAILED: BranchState
BRANCH_STATE_COMPENSATING: BranchState
BRANCH_STATE_COMPENSATED: BranchState
BRANCH_STATE_PREPARED: BranchState
BRANCH_STATE_VOTED_NO: BranchState
BRANCH_STATE_COMMITTED: BranchState
BRANCH_STATE_ABORTED: BranchState
BRANCH_STATE_SKIPPED: BranchState

class Branch(_message.Message):
    __slots__ = ("name", "participant", "action", "compensation", "payload", "after", "timeout", "retry")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    COMPENSATION_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    name: str
    participant: str
    action: str
    compensation: str
    payload: bytes
    after: _containers.RepeatedScalarFieldContainer[str]
    timeout: _duration_pb2.Duration
    retry: RetryPolicy
    def __init__(self, name: _Optional[str] = ..., participant: _Optional[str] = ..., action: _Optional[str] = ..., compensation: _Optional[str] = ..., payload: _Optional[bytes] = ..., after: _Optional[_Iterable[str]] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., retry: _Optional[_Union[RetryPolicy, _Mapping]] = ...) -> None: ...

class RetryPolicy(_message.Message):
    __slots__ = ("max_attempts", "initial_backoff", "max_backoff", "multiplier")
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    INITIAL_BACKOFF_FIELD_NUMBER: _ClassVar[int]
    MAX_BACKOFF_FIELD_NUMBER: _ClassVar[int]
    MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    max_attempts: int
    initial_backoff: _duration_pb2.Duration
    max_backoff: _duration_pb2.Duration
    multiplier: float
    def __init__(self, max_attempts: _Optional[int] = ..., initial_backoff: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_backoff: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., multiplier: _Optional[float] = ...) -> None: ...

class StartSagaRequest(_message.Message):
    __slots__ = ("gid", "branches", "concurrent", "timeout", "wait", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    GID_FIELD_NUMBER: _ClassVar[int]
    BRANCHES_FIELD_NUMBER: _ClassVar[int]
    CONCURRENT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    gid: str
    branches: _containers.RepeatedCompositeFieldContainer[Branch]
    concurrent: bool
    timeout: _duration_pb2.Duration
    wait: bool
    labels: _containers.ScalarMap[str, str]
    def __init__(self, gid: _Optional[str] = ..., branches: _Optional[_Iterable[_Union[Branch, _Mapping]]] = ..., concurrent: _Optional[bool] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., wait: _Optional[bool] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class StartTwoPhaseRequest(_message.Message):
    __slots__ = ("gid", "branches", "timeout", "wait", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    GID_FIELD_NUMBER: _ClassVar[int]
    BRANCHES_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    gid: str
    branches: _containers.RepeatedCompositeFieldContainer[Branch]
    timeout: _duration_pb2.Duration
    wait: bool
    labels: _containers.ScalarMap[str, str]
    def __init__(self, gid: _Optional[str] = ..., branches: _Optional[_Iterable[_Union[Branch, _Mapping]]] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., wait: _Optional[bool] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class StartResponse(_message.Message):
    __slots__ = ("transaction", "created")
    TRANSACTION_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    transaction: Transaction
    created: bool
    def __init__(self, transaction: _Optional[_Union[Transaction, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class BranchStatus(_message.Message):
    __slots__ = ("name", "state", "attempts", "error", "result", "updated_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: BranchState
    attempts: int
    error: str
    result: bytes
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., state: _Optional[_Union[BranchState, str]] = ..., attempts: _Optional[int] = ..., error: _Optional[str] = ..., result: _Optional[bytes] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class HistoryEntry(_message.Message):
    __slots__ = ("at", "actor", "action", "reason")
    AT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    at: _timestamp_pb2.Timestamp
    actor: str
    action: str
    reason: str
    def __init__(self, at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[str] = ..., action: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Transaction(_message.Message):
    __slots__ = ("gid", "protocol", "state", "branches", "created_at", "updated_at", "error", "labels", "history")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    GID_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    BRANCHES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    gid: str
    protocol: Protocol
    state: TxState
    branches: _containers.RepeatedCompositeFieldContainer[BranchStatus]
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    error: str
    labels: _containers.ScalarMap[str, str]
    history: _containers.RepeatedCompositeFieldContainer[HistoryEntry]
    def __init__(self, gid: _Optional[str] = ..., protocol: _Optional[_Union[Protocol, str]] = ..., state: _Optional[_Union[TxState, str]] = ..., branches: _Optional[_Iterable[_Union[BranchStatus, _Mapping]]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., history: _Optional[_Iterable[_Union[HistoryEntry, _Mapping]]] = ...) -> None: ...

class GetTransactionRequest(_message.Message):
    __slots__ = ("gid",)
    GID_FIELD_NUMBER: _ClassVar[int]
    gid: str
    def __init__(self, gid: _Optional[str] = ...) -> None: ...

class ListTransactionsRequest(_message.Message):
    __slots__ = ("states", "protocol", "page_size", "page_token", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    STATES_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[TxState]
    protocol: Protocol
    page_size: int
    page_token: str
    labels: _containers.ScalarMap[str, str]
    def __init__(self, states: _Optional[_Iterable[_Union[TxState, str]]] = ..., protocol: _Optional[_Union[Protocol, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ListTransactionsResponse(_message.Message):
    __slots__ = ("transactions", "next_page_token")
    TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    transactions: _containers.RepeatedCompositeFieldContainer[Transaction]
    next_page_token: str
    def __init__(self, transactions: _Optional[_Iterable[_Union[Transaction, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ReplayRequest(_message.Message):
    __slots__ = ("gid", "reason")
    GID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    gid: str
    reason: str
    def __init__(self, gid: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class SkipBranchRequest(_message.Message):
    __slots__ = ("gid", "branch", "reason")
    GID_FIELD_NUMBER: _ClassVar[int]
    BRANCH_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    gid: str
    branch: str
    reason: str
    def __init__(self, gid: _Optional[str] = ..., branch: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class AbortRequest(_message.Message):
    __slots__ = ("gid", "reason")
    GID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    gid: str
    reason: str
    def __init__(self, gid: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...
