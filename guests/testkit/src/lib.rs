//! One component, many behaviours, chosen by the input `command[:argument]`:
//!
//! | input | behaviour |
//! |---|---|
//! | `echo:TEXT` | returns TEXT |
//! | `fail-until:N` | transient failure on attempts before N, then `ok` |
//! | `permanent` | permanent failure |
//! | `panic` | panics (a trap) |
//! | `loop` | spins forever |
//! | `stall-until:N` | on attempts before N, spins until the lease is lost; then `ok` |
//! | `alloc:MIB` | touches MIB MiB of memory, then `ok` |
//! | `open:PATH` | tries to read a file; returns what happened |
//! | `connect:ADDR` | tries a TCP connection; returns what happened |
//! | `env` | returns the environment it sees |
//! | `frames:N` | progress + N frames + a log line, returns `frames=N` |
//! | `summary:N` | N summary patches (`{"step": i}`) and N best-effort `tick` frames, returns `summary=N` |
//! | `print:TEXT` | writes TEXT to stdout and stderr |
//! | `info` | returns the task info as `key=value` lines |
//! | `wait:KEY` | waits for a signal on KEY (the token is written as a `waitpoint` frame) |
//! | `wait-all:K1,K2,…` | waits for a signal on every key |
//! | `wait-timeout:MS:BEHAVIOUR` | waits only for the timeout (`fail`, `cancel`, `expire`, `auto-resume`) |
//! | `wait-operator` | waits for an operator to resume it |
//! | `wait-named:KEY:N1,N2:REASON` | waits on KEY for a signal named N1 or N2 (any name when empty), with the reason code REASON (none when empty); `refused: …` if the host refuses |
//! | `spawn:IN1\|IN2\|…` | spawns a testkit child per input, waits for them, returns `key=state:output;…` (`after-resume` first when it had to wait) |
//! | `spend:DIM:N:TIMES` | reports N of DIM, TIMES times (dedup keys `r1`…, each sent twice), returns the outcomes |
//! | `spend-many:D1=N1,D2=N2` | one report over those dimensions; returns `ok`, `soft(D:CUR/LIMIT)`, `hard(…)` or `error: …` |
//! | `checkpoint-wait:KEY` | writes a `checkpoint` frame and a summary, waits on KEY; once resumed, returns what it reads back of both |
//! | `read-frames:ATTEMPT:AFTER:LIMIT` | reads back its frames; returns `n=COUNT` or `error: …` |
//! | `spawn-keyed:KEY` | spawns `echo:KEY` under KEY twice, returns both ids (equal) |
//! | `big-result:KIB` | returns KIB KiB of `x` |
//! | `spawn-many:N` | spawns up to N `echo` children under keys `n1`…, stops at the first refusal, returns `spawned=K error=…` |
//! | `waitpoints:N` | creates up to N waitpoints, stops at the first refusal, returns `created=K error=…` |
//! | `frame-bytes:N:KIB` | appends up to N frames of KIB KiB, stops at the first refusal, returns `appended=K error=…` |
//! | `overflow:DIM` | reports 2^63-1 of DIM, then 1 more; returns each outcome or error |
//! | `http:METHOD:URL` | one request (with body `ping` unless a GET); returns `status=S bytes=N body=…` or `error=CODE` |
//! | `http-follow:URL` | GET, following up to 5 redirects; returns `status=S body=…` or `error=CODE` |
//! | `http-n:N:URL` | up to N GETs, stops at the first error; returns `ok=K error=…` |
//! | `http-auth:NAME:URL` | GET with `authorization: Bearer <config NAME>`; returns `status=S` or `error=CODE` |
//! | `order:JSON` | prices an order (`{"order":ID,"items":[{"qty":Q,"price_cents":P},…]}`): progress, a `total` frame, progress; returns `order=ID items=N total_cents=T` |
//! | `say:TEXT` | one `say` frame holding TEXT; returns TEXT |
//! | `progress-sleep:MS` | reports progress 10 (`started`), sleeps MS ms, reports 90 (`finishing`); returns `slept` |
//! | `drip:N:MS` | N `drip` frames (`drop I`), sleeping MS after each; returns `dripped=N` |
//! | `config:NAME` | returns the value of NAME, or `absent` |
//! | `config-names` | returns the names it may read, comma-separated |
//! | `steps:SCRIPT` | durable steps and sleeps, as `steps.rs` describes |
//! | `scratch:KIB[:UNTIL]`, `scratch-files:N` | the scratch directory, as `scratch.rs` describes |
//! | `count` | counts its calls in this instance's memory; returns `count=N` (1 on a fresh instance) |
//! | `spawn-nested:N` | spawns N `spawn:echo:a\|echo:b` children without keys (each spawns two of its own), waits, returns the report |
//!
//! A waiting command, once resumed (or satisfied at once), returns
//! `resumed attempt=N: name=payload,…` or `satisfied: …`.

mod scratch;
mod steps;

use flowfabric_guest::{
    export_task, host, LogLevel, ResumeCondition, Signal, Task, TaskError, TimeoutBehavior,
    UsageResult,
};

struct Testkit;

/// Calls of `count` this instance has answered: state that a fresh
/// instance starts again and a kept one carries to its next attempt.
static COUNTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// `order:JSON`: parse an order, price its items, report as a task would
/// (two progress calls and a frame). `bench languages` runs it as its
/// realistic input.
fn order(arg: &str) -> Result<Vec<u8>, TaskError> {
    let order: serde_json::Value = serde_json::from_str(arg)
        .map_err(|e| TaskError::permanent(format!("order is not JSON: {e}")))?;
    let items = order["items"]
        .as_array()
        .ok_or_else(|| TaskError::permanent("order has no items"))?;
    let mut total: u64 = 0;
    for item in items {
        match (item["qty"].as_u64(), item["price_cents"].as_u64()) {
            (Some(qty), Some(price)) => total += qty * price,
            _ => return Err(TaskError::permanent("an item needs qty and price_cents")),
        }
    }
    flowfabric_guest::progress(50, "priced")?;
    flowfabric_guest::frame("total", total.to_string().as_bytes())?;
    flowfabric_guest::progress(100, "done")?;
    let id = order["order"].as_str().unwrap_or("");
    Ok(format!("order={id} items={} total_cents={total}", items.len()).into_bytes())
}

impl Task for Testkit {
    fn run(input: Vec<u8>) -> Result<Vec<u8>, TaskError> {
        let input =
            String::from_utf8(input).map_err(|_| TaskError::permanent("input is not UTF-8"))?;
        let (command, arg) = input.split_once(':').unwrap_or((input.as_str(), ""));
        match command {
            "echo" => Ok(arg.as_bytes().to_vec()),
            "count" => {
                let n = COUNTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                Ok(format!("count={n}").into_bytes())
            }
            "order" => order(arg),
            "steps" => steps::run(arg),
            "scratch" => scratch::write(arg),
            "scratch-files" => scratch::files(arg),
            "http" => {
                let (method, url) = arg
                    .split_once(':')
                    .ok_or_else(|| TaskError::permanent("http needs METHOD:URL"))?;
                let body: &[u8] = if method == "GET" { b"" } else { b"ping" };
                Ok(
                    match flowfabric_guest::http::request(method, url, &[], body) {
                        Ok(r) => format!(
                            "status={} bytes={} body={}",
                            r.status,
                            r.body.len(),
                            r.text().chars().take(200).collect::<String>()
                        ),
                        Err(e) => format!("error={e}"),
                    }
                    .into_bytes(),
                )
            }
            "http-follow" => {
                let mut url = arg.to_owned();
                let mut reply = String::from("error=too many redirects");
                for _ in 0..5 {
                    match flowfabric_guest::http::get(&url) {
                        Ok(r) if (300..400).contains(&r.status) => match r.header("location") {
                            Some(next) => url = next,
                            None => break,
                        },
                        Ok(r) => {
                            reply = format!("status={} body={}", r.status, r.text());
                            break;
                        }
                        Err(e) => {
                            reply = format!("error={e}");
                            break;
                        }
                    }
                }
                Ok(reply.into_bytes())
            }
            "http-n" => {
                let (n, url) = arg
                    .split_once(':')
                    .ok_or_else(|| TaskError::permanent("http-n needs N:URL"))?;
                let n: u32 = n
                    .parse()
                    .map_err(|_| TaskError::permanent("http-n needs a count"))?;
                let mut ok = 0;
                let mut error = String::from("none");
                for _ in 0..n {
                    match flowfabric_guest::http::get(url) {
                        Ok(_) => ok += 1,
                        Err(e) => {
                            error = e.to_string();
                            break;
                        }
                    }
                }
                Ok(format!("ok={ok} error={error}").into_bytes())
            }
            "http-auth" => {
                let (name, url) = arg
                    .split_once(':')
                    .ok_or_else(|| TaskError::permanent("http-auth needs NAME:URL"))?;
                let token = flowfabric_guest::config::get(name).unwrap_or_default();
                let bearer = format!("Bearer {token}");
                let headers = [("authorization", bearer.as_str())];
                Ok(
                    match flowfabric_guest::http::request("GET", url, &headers, b"") {
                        Ok(r) => format!("status={}", r.status),
                        Err(e) => format!("error={e}"),
                    }
                    .into_bytes(),
                )
            }
            "config" => Ok(flowfabric_guest::config::get(arg)
                .unwrap_or_else(|| "absent".into())
                .into_bytes()),
            "config-names" => Ok(flowfabric_guest::config::all()
                .into_iter()
                .map(|(name, _)| name)
                .collect::<Vec<_>>()
                .join(",")
                .into_bytes()),
            "fail-until" => {
                let n: u32 = arg
                    .parse()
                    .map_err(|_| TaskError::permanent("fail-until needs a number"))?;
                let attempt = host::info().attempt;
                if attempt < n {
                    Err(TaskError::transient(format!(
                        "attempt {attempt} fails on purpose"
                    )))
                } else {
                    Ok(format!("ok on attempt {attempt}").into_bytes())
                }
            }
            "stall-until" => {
                let n: u32 = arg
                    .parse()
                    .map_err(|_| TaskError::permanent("stall-until needs a number"))?;
                let attempt = host::info().attempt;
                if attempt >= n {
                    return Ok(format!("ok on attempt {attempt}").into_bytes());
                }
                while host::lease_healthy() {
                    std::hint::spin_loop();
                }
                Err(TaskError::transient("lease lost while stalling"))
            }
            "permanent" => Err(TaskError::permanent("this input can never succeed")),
            "panic" => panic!("testkit panics on purpose"),
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "alloc" => {
                let mib: usize = arg
                    .parse()
                    .map_err(|_| TaskError::permanent("alloc needs MiB"))?;
                let mut v = vec![0u8; mib << 20];
                for i in (0..v.len()).step_by(4096) {
                    v[i] = 1;
                }
                Ok(format!("allocated {}", std::hint::black_box(v).len()).into_bytes())
            }
            "open" => Ok(match std::fs::read(arg) {
                Ok(bytes) => format!("read {} bytes", bytes.len()),
                Err(e) => format!("denied: {e}"),
            }
            .into_bytes()),
            "connect" => Ok(match std::net::TcpStream::connect(arg) {
                Ok(_) => "connected".to_string(),
                Err(e) => format!("denied: {e}"),
            }
            .into_bytes()),
            "env" => Ok(std::env::vars()
                .map(|(k, v)| format!("{k}={v}\n"))
                .collect::<String>()
                .into_bytes()),
            "summary" => {
                let n: u32 = arg
                    .parse()
                    .map_err(|_| TaskError::permanent("summary needs a count"))?;
                for i in 0..n {
                    flowfabric_guest::summary(
                        "state",
                        &format!("{{\"step\": {i}, \"s{i}\": true}}"),
                    )?;
                    flowfabric_guest::live_frame("tick", format!("{i}").as_bytes())?;
                }
                Ok(format!("summary={n}").into_bytes())
            }
            "frames" => {
                let n: u32 = arg
                    .parse()
                    .map_err(|_| TaskError::permanent("frames needs a number"))?;
                flowfabric_guest::log(LogLevel::Info, "producing frames");
                let mut last = 0;
                for i in 0..n {
                    flowfabric_guest::progress((i * 100 / n.max(1)) as u8, &format!("frame {i}"))?;
                    let seq = flowfabric_guest::frame("item", format!("{i}").as_bytes())?;
                    if seq != last + 1 && last != 0 {
                        return Err(TaskError::permanent(format!(
                            "frame {i} got seq {seq} after {last}"
                        )));
                    }
                    last = seq;
                }
                flowfabric_guest::progress(100, "done")?;
                Ok(format!("frames={n}").into_bytes())
            }
            "progress-sleep" => {
                let ms: u64 = arg
                    .parse()
                    .map_err(|_| TaskError::permanent("progress-sleep needs milliseconds"))?;
                flowfabric_guest::progress(10, "started")?;
                std::thread::sleep(std::time::Duration::from_millis(ms));
                flowfabric_guest::progress(90, "finishing")?;
                Ok(b"slept".to_vec())
            }
            "say" => {
                flowfabric_guest::frame("say", arg.as_bytes())?;
                Ok(arg.as_bytes().to_vec())
            }
            "drip" => {
                let (n, ms) = arg
                    .split_once(':')
                    .and_then(|(n, ms)| Some((n.parse::<u32>().ok()?, ms.parse::<u64>().ok()?)))
                    .ok_or_else(|| TaskError::permanent("drip needs N:MS"))?;
                for i in 0..n {
                    flowfabric_guest::frame("drip", format!("drop {i}").as_bytes())?;
                    std::thread::sleep(std::time::Duration::from_millis(ms));
                }
                Ok(format!("dripped={n}").into_bytes())
            }
            "print" => {
                println!("{arg}");
                eprintln!("err: {arg}");
                Ok(b"printed".to_vec())
            }
            "info" => {
                let i = host::info();
                Ok(format!(
                    "execution={}\nkind={}\nattempt={}\nretries={}\nhealthy={}\n",
                    i.execution_id,
                    i.kind,
                    i.attempt,
                    i.retry_count,
                    host::lease_healthy()
                )
                .into_bytes())
            }
            "wait" => wait(
                &[arg],
                ResumeCondition::Waitpoint(arg.into()),
                None,
                TimeoutBehavior::Fail,
            ),
            "wait-all" => {
                let keys: Vec<&str> = arg.split(',').collect();
                let condition =
                    ResumeCondition::AllOf(keys.iter().map(|k| k.to_string()).collect());
                wait(&keys, condition, None, TimeoutBehavior::Fail)
            }
            "wait-timeout" => {
                let (ms, behaviour) = arg.split_once(':').unwrap_or((arg, "fail"));
                let ms: u64 = ms
                    .parse()
                    .map_err(|_| TaskError::permanent("wait-timeout needs milliseconds"))?;
                let behaviour = match behaviour {
                    "fail" => TimeoutBehavior::Fail,
                    "cancel" => TimeoutBehavior::Cancel,
                    "expire" => TimeoutBehavior::Expire,
                    "auto-resume" => TimeoutBehavior::AutoResume,
                    other => {
                        return Err(TaskError::permanent(format!("unknown behaviour `{other}`")))
                    }
                };
                wait(&[], ResumeCondition::TimeoutOnly, Some(ms), behaviour)
            }
            "wait-named" => {
                let mut parts = arg.splitn(3, ':');
                let (Some(key), Some(names), Some(reason)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(TaskError::permanent("wait-named needs KEY:NAMES:REASON"));
                };
                let names: Vec<String> = names
                    .split(',')
                    .filter(|n| !n.is_empty())
                    .map(String::from)
                    .collect();
                let reason = (!reason.is_empty()).then_some(reason);
                match wait_for(
                    &[key],
                    ResumeCondition::Waitpoint(key.into()),
                    reason,
                    &names,
                    None,
                    TimeoutBehavior::Fail,
                ) {
                    Ok(out) => Ok(out),
                    Err(e) => Ok(format!("refused: {}", e.message).into_bytes()),
                }
            }
            "wait-operator" => wait(
                &[],
                ResumeCondition::OperatorOnly,
                None,
                TimeoutBehavior::Fail,
            ),
            "spawn" => spawn(arg),
            "checkpoint-wait" => {
                if host::info().attempt_type == flowfabric_guest::AttemptType::Resumed {
                    let frames = flowfabric_guest::read_frames(0, 0, 100)?;
                    let checkpoint = frames
                        .iter()
                        .find(|f| f.frame_type == "checkpoint")
                        .map(|f| String::from_utf8_lossy(&f.payload).into_owned());
                    let summary = flowfabric_guest::read_summary(0)?
                        .map(|s| String::from_utf8_lossy(&s).into_owned());
                    return Ok(
                        format!("checkpoint={checkpoint:?} summary={summary:?}").into_bytes()
                    );
                }
                flowfabric_guest::frame("checkpoint", b"page=42")?;
                flowfabric_guest::summary("progress", r#"{"page": 42}"#)?;
                wait(
                    &[arg],
                    ResumeCondition::Waitpoint(arg.into()),
                    None,
                    TimeoutBehavior::Fail,
                )
            }
            "read-frames" => {
                let mut parts = arg.split(':').map(|p| p.parse::<u64>().unwrap_or(u64::MAX));
                let (attempt, after, limit) = (
                    parts.next().unwrap_or(0) as u32,
                    parts.next().unwrap_or(0),
                    parts.next().unwrap_or(10) as u32,
                );
                Ok(match flowfabric_guest::read_frames(attempt, after, limit) {
                    Ok(frames) => format!("n={}", frames.len()),
                    Err(e) => format!("error: {e:?}"),
                }
                .into_bytes())
            }
            "spend" => spend(arg),
            "spend-many" => {
                let report: Vec<(String, u64)> = arg
                    .split(',')
                    .filter_map(|pair| {
                        let (dim, n) = pair.split_once('=')?;
                        Some((dim.to_string(), n.parse().ok()?))
                    })
                    .collect();
                Ok(match host::report_usage_many(&report, None) {
                    Ok(UsageResult::Ok) => "ok".to_string(),
                    Ok(UsageResult::SoftBreach(b)) => {
                        format!("soft({}:{}/{})", b.dimension, b.current, b.limit)
                    }
                    Ok(UsageResult::HardBreach(b)) => {
                        format!("hard({}:{}/{})", b.dimension, b.current, b.limit)
                    }
                    Ok(other) => format!("{other:?}"),
                    Err(e) => format!("error: {e:?}"),
                }
                .into_bytes())
            }
            "spawn-keyed" => {
                let kind = host::info().kind;
                let input = format!("echo:{arg}");
                let a = flowfabric_guest::spawn_child(&kind, input.as_bytes(), Some(arg))?;
                let b = flowfabric_guest::spawn_child(&kind, input.as_bytes(), Some(arg))?;
                Ok(format!("{a} {b}").into_bytes())
            }
            "big-result" => {
                let kib: usize = arg
                    .parse()
                    .map_err(|_| TaskError::permanent("big-result needs KiB"))?;
                Ok(vec![b'x'; kib << 10])
            }
            "spawn-many" => until_refused("spawned", arg, |i| {
                let kind = host::info().kind;
                flowfabric_guest::spawn_child(&kind, b"echo:c", Some(&format!("n{i}"))).map(drop)
            }),
            "waitpoints" => until_refused("created", arg, |i| {
                flowfabric_guest::waitpoint(&format!("w{i}"), None).map(drop)
            }),
            "frame-bytes" => {
                let (n, kib) = arg.split_once(':').unwrap_or((arg, "1"));
                let kib: usize = kib
                    .parse()
                    .map_err(|_| TaskError::permanent("frame-bytes needs N:KIB"))?;
                let payload = vec![b'f'; kib << 10];
                until_refused("appended", n, |_| {
                    flowfabric_guest::frame("blob", &payload).map(drop)
                })
            }
            "overflow" => {
                let outcome = |r: Result<UsageResult, flowfabric_guest::HostError>| match r {
                    Ok(UsageResult::Ok) => "ok".to_string(),
                    Ok(other) => format!("{other:?}"),
                    Err(e) => format!("error: {e:?}"),
                };
                let first = outcome(host::report_usage(arg, i64::MAX as u64, None));
                let second = outcome(host::report_usage(arg, 1, None));
                Ok(format!("{first}\n{second}").into_bytes())
            }
            "spawn-nested" => {
                let n: usize = arg
                    .parse()
                    .map_err(|_| TaskError::permanent("spawn-nested needs a count"))?;
                let kind = host::info().kind;
                for _ in 0..n {
                    flowfabric_guest::spawn_child(&kind, b"spawn:echo:a|echo:b", None)?;
                }
                children_report()
            }
            other => Err(TaskError::permanent(format!("unknown command `{other}`"))),
        }
    }
}

/// Call `act` with 1, 2, … up to the count in `n` until the host refuses;
/// report how many succeeded and the refusal.
fn until_refused(
    what: &str,
    n: &str,
    mut act: impl FnMut(u32) -> Result<(), flowfabric_guest::HostError>,
) -> Result<Vec<u8>, TaskError> {
    let n: u32 = n
        .parse()
        .map_err(|_| TaskError::permanent(format!("{what} needs a count")))?;
    for i in 1..=n {
        if let Err(e) = act(i) {
            return Ok(format!("{what}={} error={e:?}", i - 1).into_bytes());
        }
    }
    Ok(format!("{what}={n} error=none").into_bytes())
}

/// Wait as the command says: on a resumed run, report what woke it; on a
/// first run, create the waitpoints (their tokens go out as frames) and suspend.
fn wait(
    keys: &[&str],
    condition: ResumeCondition,
    timeout_ms: Option<u64>,
    on_timeout: TimeoutBehavior,
) -> Result<Vec<u8>, TaskError> {
    wait_for(keys, condition, None, &[], timeout_ms, on_timeout)
}

fn wait_for(
    keys: &[&str],
    condition: ResumeCondition,
    reason: Option<&str>,
    names: &[String],
    timeout_ms: Option<u64>,
    on_timeout: TimeoutBehavior,
) -> Result<Vec<u8>, TaskError> {
    let resumed = flowfabric_guest::resume_signals();
    if !resumed.is_empty() || host::info().attempt_type == flowfabric_guest::AttemptType::Resumed {
        let attempt = host::info().attempt;
        return Ok(format!("resumed attempt={attempt}: {}", describe(&resumed)).into_bytes());
    }
    for key in keys {
        let waitpoint = flowfabric_guest::waitpoint(key, None)?;
        flowfabric_guest::frame("waitpoint", format!("{key}={}", waitpoint.token).as_bytes())?;
    }
    let signals = if reason.is_none() && names.is_empty() {
        flowfabric_guest::suspend(&condition, timeout_ms, on_timeout)?
    } else {
        host::suspend_with(&condition, reason, names, timeout_ms, on_timeout)?
    };
    Ok(format!("satisfied: {}", describe(&signals)).into_bytes())
}

/// Report usage as `DIM:N:TIMES` says; each report is sent twice with the
/// same dedup key, so the second of each pair must be `dup`.
fn spend(arg: &str) -> Result<Vec<u8>, TaskError> {
    let mut parts = arg.split(':');
    let (Some(dimension), Some(n), Some(times)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(TaskError::permanent("spend needs DIM:N:TIMES"));
    };
    let bad = |_| TaskError::permanent("spend needs numbers");
    let (n, times): (u64, u32) = (n.parse().map_err(bad)?, times.parse().map_err(bad)?);
    let mut outcomes = Vec::new();
    for i in 1..=times {
        let key = format!("r{i}");
        for _ in 0..2 {
            outcomes.push(match host::report_usage(dimension, n, Some(&key))? {
                UsageResult::Ok => "ok".to_string(),
                UsageResult::SoftBreach(b) => format!("soft({}/{})", b.current, b.limit),
                UsageResult::HardBreach(b) => {
                    return Err(TaskError::permanent(format!(
                        "hard breach at {}/{}",
                        b.current, b.limit
                    )))
                }
                UsageResult::AlreadyApplied => "dup".to_string(),
            });
        }
    }
    Ok(outcomes.join(",").into_bytes())
}

/// Spawn one testkit child per `|`-separated input and report how each ended.
fn spawn(inputs: &str) -> Result<Vec<u8>, TaskError> {
    let kind = host::info().kind;
    for input in inputs.split('|') {
        flowfabric_guest::spawn_child(&kind, input.as_bytes(), None)?;
    }
    children_report()
}

/// Wait for the children spawned so far, then report how each ended.
fn children_report() -> Result<Vec<u8>, TaskError> {
    let children = flowfabric_guest::wait_children(None, TimeoutBehavior::Fail)?;
    let resumed = host::info().attempt_type == flowfabric_guest::AttemptType::Resumed;
    let report = children
        .iter()
        .map(|c| {
            let detail = match (&c.output, &c.error) {
                (Some(out), _) => String::from_utf8_lossy(out).into_owned(),
                (None, Some(e)) => e.clone(),
                (None, None) => String::new(),
            };
            format!("{}={}:{detail}", c.key, c.state)
        })
        .collect::<Vec<_>>()
        .join(";");
    let prefix = if resumed { "after-resume " } else { "" };
    Ok(format!("{prefix}{report}").into_bytes())
}

fn describe(signals: &[Signal]) -> String {
    signals
        .iter()
        .map(|s| format!("{}={}", s.name, String::from_utf8_lossy(&s.payload)))
        .collect::<Vec<_>>()
        .join(",")
}

export_task!(Testkit);
