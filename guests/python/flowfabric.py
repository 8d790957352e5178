"""FlowFabric's Python guest SDK: a thin, typed layer over the `flowfabric:task` imports.

componentize-py generates `wit_world` from `wit/task.wit`; this module hides its
`Err` results and variant classes behind plain functions and one exception, so a
task is an ordinary function `bytes -> bytes`:

    import flowfabric

    def handle(input: bytes) -> bytes:
        flowfabric.frame("log", b"hello")
        return input

    WitWorld = flowfabric.task(handle)

Raise `TaskFailure` to fail the attempt (transient failures are retried by the
execution's policy, permanent ones never are). A host call that fails raises
`HostFailure`; left uncaught, it fails the attempt as transient.

Side effects that must happen once per execution go in durable steps, and
`sleep` waits durably:

    receipt = flowfabric.step("charge", lambda: charge(order))
    flowfabric.sleep(3600)

Beyond its input a task reaches only what its kind is granted: outbound HTTP
(`flowfabric.http.get(url)`, `flowfabric.http.request(...)`) to granted
origins, config values and secrets (`flowfabric.config.get(name)`) it
is granted by name, and a scratch directory of the attempt's own
(`flowfabric.scratch.path()`, then plain `open`) when granted scratch bytes.
Anything else is refused (`HttpFailure`) or reads as absent (`None`).
"""

import json
import os
from typing import Any, Callable, List, Optional

from componentize_py_types import Err
from wit_world.imports import claimed_task as _host
from wit_world.imports import flowfabric_task_types as _types

TaskInfo = _types.TaskInfo
Signal = _types.Signal
Waitpoint = _types.Waitpoint
AttemptType = _types.AttemptType
TimeoutBehavior = _types.TimeoutBehavior


class TaskFailure(Exception):
    """Fails the attempt; `permanent` ones are never retried."""

    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.message = message
        self.permanent = permanent


class HostFailure(Exception):
    """A host call was refused: `kind` is `lease-lost`, `invalid`, `limit-exceeded`,
    `unsupported` or `unavailable`."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail


_HOST_ERRORS = {
    _types.HostError_LeaseLost: "lease-lost",
    _types.HostError_Invalid: "invalid",
    _types.HostError_LimitExceeded: "limit-exceeded",
    _types.HostError_Unsupported: "unsupported",
    _types.HostError_Unavailable: "unavailable",
}


def _call(fn, *args):
    try:
        return fn(*args)
    except Err as e:
        kind = _HOST_ERRORS.get(type(e.value), "unavailable")
        raise HostFailure(kind, str(getattr(e.value, "value", "") or "")) from None


def info() -> TaskInfo:
    return _host.info()


def progress(percent: int, message: str) -> None:
    _call(_host.progress, max(0, min(100, percent)), message)


def frame(frame_type: str, payload: bytes) -> int:
    """Append a durable frame; returns its sequence number."""
    return _call(_host.append_frame, frame_type, payload, _types.StreamMode.DURABLE)


def summary(frame_type: str, patch_json: str) -> int:
    """Merge a JSON object (RFC 7396 merge patch) into the attempt's summary."""
    return _call(_host.append_frame, frame_type, patch_json.encode(), _types.StreamMode.SUMMARY)


def log(message: str) -> None:
    _host.log(_types.LogLevel.INFO, message)


def lease_healthy() -> bool:
    """False once the lease is lost, or after three renewals failed in a row."""
    return _host.lease_healthy()


def renewal_failures() -> int:
    """Renewals of the lease that failed in a row since the last success."""
    return _host.renewal_failures()


def delay(seconds: float) -> None:
    """Park this execution for `seconds` (1 ms to 30 days), for example after
    an upstream's `Retry-After`. Does not return when it succeeds: a new
    attempt (type `delayed`) starts the handler from the top at that time, with
    the steps recorded so far kept. Not counted as a retry."""
    _call(_host.delay, max(0, round(seconds * 1000)))


def cancel(reason: str) -> None:
    """End this execution for good as `cancelled`, with `reason`. Does not return."""
    _call(_host.cancel, reason)


def waitpoint(key: str, timeout_ms: Optional[int] = None) -> Waitpoint:
    """Create (or get back) a waitpoint; hand its token to whoever should signal."""
    return _call(_host.create_waitpoint, key, timeout_ms)


def wait_for(
    key: str,
    timeout_ms: Optional[int] = None,
    reason: Optional[str] = None,
    names: Optional[List[str]] = None,
) -> List[Signal]:
    """Suspend until a signal reaches `key`'s waitpoint. Returns only when
    signals already buffered satisfy it; otherwise the run stops here and starts
    again from the top once resumed, with `resume_signals()` saying what woke it.
    `reason` is a short code operators see (`waiting_for_approval`); `names`
    are the signal names that count (all when absent)."""
    condition = _types.ResumeCondition_Waitpoint(key)
    fail = _types.TimeoutBehavior.FAIL
    if reason is None and names is None:
        return _call(_host.suspend, condition, timeout_ms, fail)
    return _call(_host.suspend_with, condition, reason, names or [], timeout_ms, fail)


def resume_signals() -> List[Signal]:
    return _host.resume_signals()


def step(name: str, fn: Callable[[], Any]) -> Any:
    """Run `fn` as the durable step `name`; its result is kept as JSON.

    A later run of the same execution (after a suspension, a retry or a
    reclaim) gets the recorded value back without calling `fn` again. Steps
    must be begun in the same order under the same names on every run: a run
    that asks for another name where the journal recorded one fails with the
    permanent class `journal_mismatch`. A permanent `TaskFailure` is recorded
    and raised again on later runs; any other exception is not recorded, so
    the retry runs the step again."""
    start = _call(_host.step_begin, name)
    if isinstance(start, _types.StepStart_Completed):
        return json.loads(start.value)
    if isinstance(start, _types.StepStart_Failed):
        raise TaskFailure(start.value, permanent=True)
    position = start.value
    try:
        value = fn()
    except TaskFailure as f:
        if f.permanent:
            _call(_host.step_record, position, _types.StepOutcome_Failed(f.message))
        raise
    encoded = json.dumps(value, separators=(",", ":")).encode()
    _call(_host.step_record, position, _types.StepOutcome_Completed(encoded))
    return json.loads(encoded)


def durable(name: str):
    """Decorator form of `step`: `@durable("charge")` over a function of no
    arguments runs it as that step where it is called."""

    def wrap(fn: Callable[[], Any]) -> Callable[[], Any]:
        return lambda: step(name, fn)

    return wrap


def sleep(seconds: float) -> None:
    """Sleep durably: the first time, the run stops here and the execution
    suspends holding nothing; at the wake time the run starts again from the
    top and this same call returns at once."""
    _call(_host.sleep, max(0, round(seconds * 1000)))


def task(handler: Callable[[bytes], bytes]):
    """The `WitWorld` class componentize-py exports, running `handler`."""

    class WitWorld:
        def run(self, input: bytes) -> bytes:
            try:
                return handler(input)
            except TaskFailure as f:
                cls = _types.FailureClass.PERMANENT if f.permanent else _types.FailureClass.TRANSIENT
                raise Err(_types.TaskError(cls, f.message))
            except HostFailure as f:
                raise Err(_types.TaskError(_types.FailureClass.TRANSIENT, f"host call failed: {f}"))

    return WitWorld


# Outbound HTTP (wasi:http), to the origins the kind's grant allows.

from types import SimpleNamespace as _Namespace
from urllib.parse import urlsplit as _urlsplit

from wit_world.imports import outgoing_handler as _outgoing
from wit_world.imports import store as _store
from wit_world.imports import streams as _streams
from wit_world.imports import wasi_http_types as _http


class HttpFailure(Exception):
    """A request the host refused or could not complete: `code` is the
    wasi:http error code (`HttpRequestDenied` for an origin the grant does
    not allow, `ConnectionRefused`, `ConnectionReadTimeout`, …) or `BadUrl`."""

    def __init__(self, code: str, detail: str = ""):
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


class Response:
    def __init__(self, status: int, headers: List[tuple], body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: str) -> Optional[str]:
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v.decode(errors="replace")
        return None

    def text(self) -> str:
        return self.body.decode(errors="replace")


def _code(error) -> HttpFailure:
    name = type(error).__name__
    return HttpFailure(name[len("ErrorCode_"):] if name.startswith("ErrorCode_") else name)


_METHODS = {
    "GET": _http.Method_Get, "HEAD": _http.Method_Head, "POST": _http.Method_Post,
    "PUT": _http.Method_Put, "DELETE": _http.Method_Delete, "PATCH": _http.Method_Patch,
    "OPTIONS": _http.Method_Options,
}


def _request(method: str, url: str, headers=(), body: bytes = b"") -> Response:
    parts = _urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise HttpFailure("BadUrl", url)
    fields = _http.Fields.from_list([(k, v.encode()) for k, v in headers])
    request = _http.OutgoingRequest(fields)
    verb = method.upper()
    request.set_method(_METHODS[verb]() if verb in _METHODS else _http.Method_Other(verb))
    request.set_scheme(_http.Scheme_Https() if parts.scheme == "https" else _http.Scheme_Http())
    request.set_authority(parts.netloc)
    request.set_path_with_query((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
    # A request without a body never opens one: the host then sends it
    # whole, with no body stream to wait on.
    outgoing = request.body() if body else None
    try:
        future = _outgoing.handle(request, None)
    except Err as e:
        raise _code(e.value) from None
    if outgoing is not None:
        _write_body(outgoing, body)
    # Each resource is dropped explicitly, children before their parents:
    # left to the garbage collector, a parent can go first, and the host
    # refuses that ("resource has children").
    with future:
        result = future.get()
        while result is None:
            with future.subscribe() as ready:
                ready.block()
            result = future.get()
    # option<result<result<incoming-response, error-code>>>: the outer
    # result only says whether it was taken before.
    inner = result.value
    if isinstance(inner, Err):
        raise _code(inner.value)
    with inner.value as response:
        status = response.status()
        with response.headers() as fields:
            response_headers = fields.entries()
        with response.consume() as incoming:
            chunks = _read_all(incoming)
    return Response(status, response_headers, b"".join(chunks))


def _read_all(incoming) -> List[bytes]:
    chunks = []
    with incoming.stream() as body_stream:
        while True:
            try:
                chunks.append(body_stream.blocking_read(64 << 10))
            except Err as e:
                if isinstance(e.value, _streams.StreamError_Closed):
                    return chunks
                raise HttpFailure("HttpResponseIncomplete") from None


def _write_body(outgoing, body: bytes) -> None:
    # The stream is dropped (end of `with`) before the body is finished.
    with outgoing.write() as stream:
        try:
            for i in range(0, len(body), 4096):
                stream.blocking_write_and_flush(body[i:i + 4096])
        except Err:
            pass  # the response says what went wrong
    try:
        _http.OutgoingBody.finish(outgoing, None)
    except Err as e:
        raise _code(e.value) from None


http = _Namespace(
    request=_request,
    get=lambda url, headers=(): _request("GET", url, headers),
    post=lambda url, body, content_type="application/octet-stream": _request(
        "POST", url, [("content-type", content_type)], body
    ),
)


# Config values and secrets (wasi:config/store): only names the grant lists
# are readable; any other name reads as absent.

def _config_get(name: str) -> Optional[str]:
    try:
        return _store.get(name)
    except Err:
        return None


def _config_all() -> List[tuple]:
    try:
        return _store.get_all()
    except Err:
        return []


config = _Namespace(get=_config_get, all=_config_all)


# Scratch space: a directory of the attempt's own, granted with a byte quota
# and removed when the attempt ends. A write past the quota raises OSError.

SCRATCH = "/scratch"


def _scratch_path() -> Optional[str]:
    return SCRATCH if os.path.isdir(SCRATCH) else None


scratch = _Namespace(path=_scratch_path)
