# Type hints of the `pipeline` package (PEP 561: py.typed is shipped beside this file).
import enum
from types import TracebackType
from typing import Any, AsyncIterator, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Type, Union

__all__ = ["Pipeline", "Message", "Sender", "PipelineError", "ConfigError", "PipelineConnectionError", "ClosedError",
           "EndOfStream", "PipelineTimeoutError", "State", "Disconnect", "DisconnectKind", "version",
           "library_path"]

def version() -> str: ...
def library_path() -> str: ...

class PipelineError(Exception):
    code: int
    code_name: str
    message: str
    def __init__(self, code: int, message: str, what: str = ...) -> None: ...

class ConfigError(PipelineError, ValueError): ...
class PipelineConnectionError(PipelineError, ConnectionError): ...
class ClosedError(PipelineConnectionError): ...
class EndOfStream(ClosedError, EOFError): ...
class PipelineTimeoutError(PipelineError, TimeoutError): ...

class DisconnectKind(enum.IntEnum):
    NONE = 0
    SERVER_CLOSED = 1
    CLOSE_COMPLETED = 2
    CLOSE_TIMEOUT = 3
    CLOSED_AFTER_OUR_CLOSE = 4
    PROTOCOL_ERROR = 5
    UPGRADE_FAILED = 6
    TCP_RESET = 7
    TCP_CLOSED = 8
    TLS = 9
    NETWORK = 10
    TIMEOUT = 11
    STAGE_DIED = 12
    STAGE_PANICKED = 13
    STOPPED = 14
    OVERRUN = 15
    IO = 16
    INTERNAL = 17
    CALLBACK_ERROR = 18

class State(NamedTuple):
    name: str
    reason: str
    kind: Union[DisconnectKind, int] = ...

class Disconnect(NamedTuple):
    kind: Union[DisconnectKind, int]
    message: str
    close_code: int
    close_reason: str
    pid: int
    signal: int
    exit_status: int
    stage: str

class Timestamps(NamedTuple):
    arrival_ns: int
    decrypted_ns: int
    parsed_ns: int
    delivered_ns: int

class Message:
    payload: memoryview
    opcode: int
    more: bool
    after_overrun: bool
    after_reconnect: bool
    @property
    def is_text(self) -> bool: ...
    @property
    def timestamps(self) -> Timestamps: ...
    def bytes(self) -> bytes: ...
    def text(self) -> str: ...
    def __len__(self) -> int: ...
    def release(self) -> None: ...

class Sender:
    def send(self, data: Union[str, bytes, bytearray, memoryview]) -> None: ...

class Pipeline:
    external_consumer: bool
    def __init__(
        self,
        url: str,
        on_message: Optional[Callable[[Message, Sender], None]] = ...,
        *,
        name: Optional[str] = ...,
        transport: str = ...,
        iface: Optional[str] = ...,
        layout: str = ...,
        wait: str = ...,
        cores: Optional[Sequence[int]] = ...,
        ca_file: Optional[str] = ...,
        insecure: bool = ...,
        timeout: float = ...,
        max_message: int = ...,
        inbox_size: int = ...,
        outbox_size: int = ...,
        delivery: str = ...,
        overrun: str = ...,
        headers: Union[Sequence[str], Dict[str, str], None] = ...,
        subprotocols: Optional[Sequence[str]] = ...,
        quiet: bool = ...,
        external_consumer: bool = ...,
        reconnect: bool = ...,
        reconnect_initial: float = ...,
        reconnect_max: float = ...,
        reconnect_max_attempts: int = ...,
        subscriptions: Optional[Sequence[str]] = ...,
        ping_interval: float = ...,
        liveness_timeout: float = ...,
        synthetic: bytes = ...,
        synthetic_chunk: int = ...,
        server_stamp: Union[str, Dict[str, Any], None] = ...,
        server_stamp_unit_ns: int = ...,
        **options: Any,
    ) -> None: ...
    def __enter__(self) -> "Pipeline": ...
    def __exit__(
        self, t: Optional[Type[BaseException]], v: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None: ...
    def shutdown(self, graceful: bool = ..., timeout: float = ...) -> None: ...
    def poll(self) -> Optional[Message]: ...
    def recv(self, timeout: Optional[float] = ...) -> Optional[Message]: ...
    def __iter__(self) -> Iterator[Message]: ...
    def __aiter__(self) -> AsyncIterator[Message]: ...
    def event_fd(self) -> int: ...
    def send(self, data: Union[str, bytes, bytearray, memoryview], timeout: float = ...) -> None: ...
    def close(self, code: int = ..., reason: str = ...) -> None: ...
    def wait_closed(self, timeout: float = ...) -> bool: ...
    def state(self) -> State: ...
    def reconnect_info(self) -> Tuple[int, Union[DisconnectKind, int], int, int]: ...
    def disconnect(self) -> Disconnect: ...
    def stats(self) -> Dict[str, int]: ...
    def name(self) -> str: ...
    def stop(self) -> None: ...
