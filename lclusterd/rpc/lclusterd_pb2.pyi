from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExecRequest(_message.Message):
    __slots__ = ("id", "command", "stdin")
    ID_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    id: str
    command: str
    stdin: bytes
    def __init__(self, id: _Optional[str] = ..., command: _Optional[str] = ..., stdin: _Optional[bytes] = ...) -> None: ...

class ExecChunk(_message.Message):
    __slots__ = ("stream", "data", "ended", "exit_code", "signal", "error")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    stream: LogChunk.Stream
    data: bytes
    ended: bool
    exit_code: int
    signal: int
    error: str
    def __init__(self, stream: _Optional[_Union[LogChunk.Stream, str]] = ..., data: _Optional[bytes] = ..., ended: _Optional[bool] = ..., exit_code: _Optional[int] = ..., signal: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class JobSpec(_message.Message):
    __slots__ = ("command", "env", "memory_bytes", "cpus", "pids", "timeout_seconds", "stdin", "retries", "node", "image", "net", "publish", "volumes", "workdir", "after", "run_as")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    PIDS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    NET_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    WORKDIR_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    RUN_AS_FIELD_NUMBER: _ClassVar[int]
    command: str
    env: _containers.ScalarMap[str, str]
    memory_bytes: int
    cpus: float
    pids: int
    timeout_seconds: float
    stdin: bytes
    retries: int
    node: str
    image: str
    net: str
    publish: _containers.RepeatedScalarFieldContainer[str]
    volumes: _containers.RepeatedScalarFieldContainer[str]
    workdir: str
    after: _containers.RepeatedScalarFieldContainer[str]
    run_as: str
    def __init__(self, command: _Optional[str] = ..., env: _Optional[_Mapping[str, str]] = ..., memory_bytes: _Optional[int] = ..., cpus: _Optional[float] = ..., pids: _Optional[int] = ..., timeout_seconds: _Optional[float] = ..., stdin: _Optional[bytes] = ..., retries: _Optional[int] = ..., node: _Optional[str] = ..., image: _Optional[str] = ..., net: _Optional[str] = ..., publish: _Optional[_Iterable[str]] = ..., volumes: _Optional[_Iterable[str]] = ..., workdir: _Optional[str] = ..., after: _Optional[_Iterable[str]] = ..., run_as: _Optional[str] = ...) -> None: ...

class AddRequest(_message.Message):
    __slots__ = ("spec", "all_nodes", "batch", "array")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    ALL_NODES_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    ARRAY_FIELD_NUMBER: _ClassVar[int]
    spec: JobSpec
    all_nodes: bool
    batch: _containers.RepeatedCompositeFieldContainer[JobSpec]
    array: ArraySpec
    def __init__(self, spec: _Optional[_Union[JobSpec, _Mapping]] = ..., all_nodes: _Optional[bool] = ..., batch: _Optional[_Iterable[_Union[JobSpec, _Mapping]]] = ..., array: _Optional[_Union[ArraySpec, _Mapping]] = ...) -> None: ...

class ArraySpec(_message.Message):
    __slots__ = ("first", "last", "max_running")
    FIRST_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    MAX_RUNNING_FIELD_NUMBER: _ClassVar[int]
    first: int
    last: int
    max_running: int
    def __init__(self, first: _Optional[int] = ..., last: _Optional[int] = ..., max_running: _Optional[int] = ...) -> None: ...

class AddReply(_message.Message):
    __slots__ = ("id", "job")
    ID_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    id: str
    job: Job
    def __init__(self, id: _Optional[str] = ..., job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class JobRef(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "state", "spec", "node", "attempt", "created_at", "assigned_at", "started_at", "finished_at", "exit_code", "signal", "oom_killed", "error", "host_pid", "peak_memory_bytes", "cpu_seconds", "kill_requested", "attempts", "waiting", "pool", "is_pool", "members", "stdout_dropped_bytes", "stderr_dropped_bytes", "owner", "address", "array", "array_index", "is_array", "member_count")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    ASSIGNED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    OOM_KILLED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    HOST_PID_FIELD_NUMBER: _ClassVar[int]
    PEAK_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    KILL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    IS_POOL_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    STDOUT_DROPPED_BYTES_FIELD_NUMBER: _ClassVar[int]
    STDERR_DROPPED_BYTES_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ARRAY_FIELD_NUMBER: _ClassVar[int]
    ARRAY_INDEX_FIELD_NUMBER: _ClassVar[int]
    IS_ARRAY_FIELD_NUMBER: _ClassVar[int]
    MEMBER_COUNT_FIELD_NUMBER: _ClassVar[int]
    id: str
    state: str
    spec: JobSpec
    node: str
    attempt: int
    created_at: float
    assigned_at: float
    started_at: float
    finished_at: float
    exit_code: int
    signal: int
    oom_killed: bool
    error: str
    host_pid: int
    peak_memory_bytes: int
    cpu_seconds: float
    kill_requested: bool
    attempts: _containers.RepeatedCompositeFieldContainer[Attempt]
    waiting: str
    pool: str
    is_pool: bool
    members: _containers.RepeatedCompositeFieldContainer[Job]
    stdout_dropped_bytes: int
    stderr_dropped_bytes: int
    owner: str
    address: str
    array: str
    array_index: int
    is_array: bool
    member_count: int
    def __init__(self, id: _Optional[str] = ..., state: _Optional[str] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ..., node: _Optional[str] = ..., attempt: _Optional[int] = ..., created_at: _Optional[float] = ..., assigned_at: _Optional[float] = ..., started_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., exit_code: _Optional[int] = ..., signal: _Optional[int] = ..., oom_killed: _Optional[bool] = ..., error: _Optional[str] = ..., host_pid: _Optional[int] = ..., peak_memory_bytes: _Optional[int] = ..., cpu_seconds: _Optional[float] = ..., kill_requested: _Optional[bool] = ..., attempts: _Optional[_Iterable[_Union[Attempt, _Mapping]]] = ..., waiting: _Optional[str] = ..., pool: _Optional[str] = ..., is_pool: _Optional[bool] = ..., members: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., stdout_dropped_bytes: _Optional[int] = ..., stderr_dropped_bytes: _Optional[int] = ..., owner: _Optional[str] = ..., address: _Optional[str] = ..., array: _Optional[str] = ..., array_index: _Optional[int] = ..., is_array: _Optional[bool] = ..., member_count: _Optional[int] = ...) -> None: ...

class Attempt(_message.Message):
    __slots__ = ("attempt", "node", "assigned_at", "started_at", "ended_at", "state", "reason")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    ASSIGNED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    node: str
    assigned_at: float
    started_at: float
    ended_at: float
    state: str
    reason: str
    def __init__(self, attempt: _Optional[int] = ..., node: _Optional[str] = ..., assigned_at: _Optional[float] = ..., started_at: _Optional[float] = ..., ended_at: _Optional[float] = ..., state: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ("states", "limit", "expand_arrays")
    STATES_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    EXPAND_ARRAYS_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[str]
    limit: int
    expand_arrays: bool
    def __init__(self, states: _Optional[_Iterable[str]] = ..., limit: _Optional[int] = ..., expand_arrays: _Optional[bool] = ...) -> None: ...

class ListReply(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class NodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Node(_message.Message):
    __slots__ = ("name", "address", "capacity", "running", "prime", "version", "started_at", "state", "memory_bytes", "memory_used_bytes", "images", "subnet", "volume_roots")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    PRIME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    SUBNET_FIELD_NUMBER: _ClassVar[int]
    VOLUME_ROOTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    capacity: int
    running: int
    prime: bool
    version: str
    started_at: float
    state: str
    memory_bytes: int
    memory_used_bytes: int
    images: _containers.RepeatedScalarFieldContainer[str]
    subnet: str
    volume_roots: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ..., capacity: _Optional[int] = ..., running: _Optional[int] = ..., prime: _Optional[bool] = ..., version: _Optional[str] = ..., started_at: _Optional[float] = ..., state: _Optional[str] = ..., memory_bytes: _Optional[int] = ..., memory_used_bytes: _Optional[int] = ..., images: _Optional[_Iterable[str]] = ..., subnet: _Optional[str] = ..., volume_roots: _Optional[_Iterable[str]] = ...) -> None: ...

class NodesReply(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    def __init__(self, nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ...) -> None: ...

class WebLoginRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WebLoginReply(_message.Message):
    __slots__ = ("url", "login_expires_at", "token", "expires_at", "user", "admin")
    URL_FIELD_NUMBER: _ClassVar[int]
    LOGIN_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    url: str
    login_expires_at: float
    token: str
    expires_at: float
    user: str
    admin: bool
    def __init__(self, url: _Optional[str] = ..., login_expires_at: _Optional[float] = ..., token: _Optional[str] = ..., expires_at: _Optional[float] = ..., user: _Optional[str] = ..., admin: _Optional[bool] = ...) -> None: ...

class LogsRequest(_message.Message):
    __slots__ = ("id", "follow")
    ID_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    id: str
    follow: bool
    def __init__(self, id: _Optional[str] = ..., follow: _Optional[bool] = ...) -> None: ...

class LogChunk(_message.Message):
    __slots__ = ("stream", "data")
    class Stream(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STDOUT: _ClassVar[LogChunk.Stream]
        STDERR: _ClassVar[LogChunk.Stream]
    STDOUT: LogChunk.Stream
    STDERR: LogChunk.Stream
    STREAM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    stream: LogChunk.Stream
    data: bytes
    def __init__(self, stream: _Optional[_Union[LogChunk.Stream, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class DrainRequest(_message.Message):
    __slots__ = ("node", "drain")
    NODE_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    node: str
    drain: bool
    def __init__(self, node: _Optional[str] = ..., drain: _Optional[bool] = ...) -> None: ...

class WaitRequest(_message.Message):
    __slots__ = ("id", "timeout_seconds")
    ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    id: str
    timeout_seconds: float
    def __init__(self, id: _Optional[str] = ..., timeout_seconds: _Optional[float] = ...) -> None: ...

class EventsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("time", "previous_state", "job")
    TIME_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_STATE_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    time: float
    previous_state: str
    job: Job
    def __init__(self, time: _Optional[float] = ..., previous_state: _Optional[str] = ..., job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...
