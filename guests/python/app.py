"""The conformance guest in Python: a subset of the Rust testkit's commands,
with byte-identical outputs, so one integration test checks every language.

| input | behaviour |
|---|---|
| `echo:TEXT` | returns TEXT |
| `count` | counts its calls in this instance's memory; `count=N` (1 on a fresh instance) |
| `fail-until:N` | transient failure on attempts before N, then `ok on attempt N` |
| `permanent` | permanent failure |
| `frames:N` | progress + N frames + a log line, returns `frames=N` |
| `info` | returns the task info as `key=value` lines |
| `wait:KEY` | waits for a signal on KEY (the token is written as a `waitpoint` frame) |
| `steps:SCRIPT` | durable steps: the ops `step`, `fail`, `sleep`, `fail-until`, `delay-until` and `cancel`, `;`-separated |
| `http:METHOD:URL` | one request (body `ping` unless a GET); `status=S bytes=N body=…` or `error=CODE` |
| `http-n:N:URL` | up to N GETs, stops at the first error; `ok=K error=…` |
| `config:NAME` | the value of NAME, or `absent` |
| `order:JSON` | prices an order (`{"order":ID,"items":[{"qty":Q,"price_cents":P},…]}`): progress, a `total` frame, progress; `order=ID items=N total_cents=T` |
| `scratch:KIB` | lists `/scratch`, writes KIB KiB to `/scratch/a<attempt>`, reads it back; `before=[…] wrote=N read=N`, `before=[…] error=no-space` or `error=io`, or `no scratch` |
"""

import errno
import json
import os

import flowfabric
from flowfabric import TaskFailure


# Calls of `count` this instance has answered: state a fresh instance starts
# again and a reused one keeps.
_counted = 0


def handle(input: bytes) -> bytes:
    global _counted
    try:
        text = input.decode()
    except UnicodeDecodeError:
        raise TaskFailure("input is not UTF-8", permanent=True)
    command, _, arg = text.partition(":")
    if command == "echo":
        return arg.encode()
    if command == "count":
        _counted += 1
        return f"count={_counted}".encode()
    if command == "order":
        return order(arg)
    if command == "fail-until":
        attempt = flowfabric.info().attempt
        if attempt < _number(arg, "fail-until"):
            raise TaskFailure(f"attempt {attempt} fails on purpose")
        return f"ok on attempt {attempt}".encode()
    if command == "permanent":
        raise TaskFailure("this input can never succeed", permanent=True)
    if command == "frames":
        return frames(_number(arg, "frames"))
    if command == "info":
        i = flowfabric.info()
        healthy = "true" if flowfabric.lease_healthy() else "false"
        return (
            f"execution={i.execution_id}\nkind={i.kind}\nattempt={i.attempt}\n"
            f"retries={i.retry_count}\nhealthy={healthy}\n"
        ).encode()
    if command == "wait":
        return wait(arg)
    if command == "steps":
        return steps(arg)
    if command == "http":
        return http(arg)
    if command == "http-n":
        return http_n(arg)
    if command == "config":
        value = flowfabric.config.get(arg)
        return (value if value is not None else "absent").encode()
    if command == "scratch":
        return scratch(_number(arg, "scratch"))
    raise TaskFailure(f"unknown command {command!r}", permanent=True)


def order(arg: str) -> bytes:
    """Price an order like the Rust testkit (bench languages' realistic input)."""
    try:
        o = json.loads(arg)
    except ValueError as e:
        raise TaskFailure(f"order is not JSON: {e}", permanent=True)
    items = o.get("items") if isinstance(o, dict) else None
    if not isinstance(items, list):
        raise TaskFailure("order has no items", permanent=True)
    total = 0
    for item in items:
        qty = item.get("qty") if isinstance(item, dict) else None
        price = item.get("price_cents") if isinstance(item, dict) else None
        if not all(type(v) is int and v >= 0 for v in (qty, price)):
            raise TaskFailure("an item needs qty and price_cents", permanent=True)
        total += qty * price
    flowfabric.progress(50, "priced")
    flowfabric.frame("total", str(total).encode())
    flowfabric.progress(100, "done")
    oid = o.get("order")
    return f"order={oid if isinstance(oid, str) else ''} items={len(items)} total_cents={total}".encode()


def http(arg: str) -> bytes:
    method, _, url = arg.partition(":")
    if not url:
        raise TaskFailure("http needs METHOD:URL", permanent=True)
    body = b"" if method == "GET" else b"ping"
    try:
        r = flowfabric.http.request(method, url, body=body)
    except flowfabric.HttpFailure as e:
        return f"error={e}".encode()
    return f"status={r.status} bytes={len(r.body)} body={r.text()[:200]}".encode()


def http_n(arg: str) -> bytes:
    count, _, url = arg.partition(":")
    if not url:
        raise TaskFailure("http-n needs N:URL", permanent=True)
    n = _number(count, "http-n")
    for ok in range(n):
        try:
            flowfabric.http.get(url)
        except flowfabric.HttpFailure as e:
            return f"ok={ok} error={e}".encode()
    return f"ok={n} error=none".encode()


def scratch(kib: int) -> bytes:
    root = flowfabric.scratch.path()
    if root is None:
        return b"no scratch"
    before = ",".join(sorted(os.listdir(root)))
    path = os.path.join(root, f"a{flowfabric.info().attempt}")
    try:
        with open(path, "wb") as f:
            for _ in range(kib // 16):
                f.write(bytes([7]) * (16 << 10))
            f.write(bytes([7]) * ((kib % 16) << 10))
        with open(path, "rb") as f:
            read = len(f.read())
    except OSError as e:
        word = "no-space" if e.errno == errno.ENOSPC else "io"
        return f"before=[{before}] error={word}".encode()
    return f"before=[{before}] wrote={kib << 10} read={read}".encode()


def frames(n: int) -> bytes:
    flowfabric.log("producing frames")
    last = 0
    for i in range(n):
        flowfabric.progress(i * 100 // max(n, 1), f"frame {i}")
        seq = flowfabric.frame("item", str(i).encode())
        if last != 0 and seq != last + 1:
            raise TaskFailure(f"frame {i} got seq {seq} after {last}", permanent=True)
        last = seq
    flowfabric.progress(100, "done")
    return f"frames={n}".encode()


def wait(key: str) -> bytes:
    resumed = flowfabric.resume_signals()
    info = flowfabric.info()
    if resumed or info.attempt_type == flowfabric.AttemptType.RESUMED:
        return f"resumed attempt={info.attempt}: {describe(resumed)}".encode()
    waitpoint = flowfabric.waitpoint(key)
    flowfabric.frame("waitpoint", f"{key}={waitpoint.token}".encode())
    return f"satisfied: {describe(flowfabric.wait_for(key))}".encode()


def steps(script: str) -> bytes:
    results = []
    for op in filter(None, script.split(";")):
        name, _, arg = op.partition(":")
        if name == "step":
            value = flowfabric.step(arg, lambda: f"{arg}@{flowfabric.info().attempt}")
            results.append(f"{arg}={value}")
        elif name == "fail":

            @flowfabric.durable(arg)
            def failing():
                raise TaskFailure(f"{arg} failed for good", permanent=True)

            try:
                failing()
                message = ""
            except TaskFailure as f:
                message = f.message
            results.append(f"{arg}=failed({message})")
        elif name == "sleep":
            flowfabric.sleep(_number(arg, "sleep") / 1000)
            results.append(f"slept={arg}")
        elif name == "fail-until":
            attempt = flowfabric.info().attempt
            if attempt < _number(arg, "fail-until"):
                raise TaskFailure(f"attempt {attempt} fails on purpose")
        elif name == "delay-until":
            n, _, ms = arg.partition(":")
            info = flowfabric.info()
            if info.attempt < _number(n, "delay-until"):
                flowfabric.delay(_number(ms, "delay-until") / 1000)
                raise TaskFailure("delay returned", permanent=True)
            kind = info.attempt_type.name.lower()
            results.append(f"delayed={info.attempt}:{kind}:{info.retry_count}")
        elif name == "cancel":
            flowfabric.cancel(arg)
            raise TaskFailure("cancel returned", permanent=True)
        else:
            raise TaskFailure(f"unknown step op `{name}`", permanent=True)
    return ",".join(results).encode()


def describe(signals) -> str:
    return ",".join(f"{s.name}={s.payload.decode(errors='replace')}" for s in signals)


def _number(arg: str, command: str) -> int:
    try:
        return int(arg)
    except ValueError:
        raise TaskFailure(f"{command} needs a number", permanent=True)


WitWorld = flowfabric.task(handle)
