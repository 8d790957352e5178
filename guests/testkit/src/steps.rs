//! `steps:SCRIPT`: a script of durable steps and what happens between them,
//! `;`-separated, run in order. The result is each step's result, as
//! `name=value` joined by `,`.
//!
//! | op | does |
//! |---|---|
//! | `step:NAME` | a step returning `NAME@attempt` (the attempt that ran it) |
//! | `plain:NAME` | the same value as `step:NAME`, computed without a step (a baseline) |
//! | `attempt-step` | a step named after the attempt (`at-N`): a rerun diverges |
//! | `post:NAME:URL` | a step that POSTs `NAME` to URL (a side effect) and returns the reply body |
//! | `fail:NAME` | a step that fails permanently |
//! | `big:NAME:KIB` | a step returning KIB KiB |
//! | `sleep:MS` | a durable sleep |
//! | `wait:KEY` | suspends on the waitpoint KEY unless a run was already resumed |
//! | `fail-until:N` | a transient failure (not a step) on attempts before N |
//! | `stall-until:N` | on attempts before N, spins until the lease is lost |
//! | `delay-until:N:MS` | on attempts before N, delays the execution MS (`delay=ERROR` if refused); then `delayed=ATTEMPT:TYPE:RETRIES` |
//! | `cancel:REASON` | cancels the execution (`cancel=ERROR` if refused) |
//! | `unhealthy` | spins until three renewals failed in a row, writes a `health` frame, spins until one succeeds; `recovered=HEALTHY` |

use std::time::Duration;

use flowfabric_guest::{host, step, step_bytes, AttemptType, ResumeCondition, TaskError};

pub fn run(script: &str) -> Result<Vec<u8>, TaskError> {
    let mut results = Vec::new();
    for op in script.split(';').filter(|op| !op.is_empty()) {
        let (name, arg) = op.split_once(':').unwrap_or((op, ""));
        match name {
            "step" => {
                let value: String = step(arg, || Ok(format!("{arg}@{}", host::info().attempt)))?;
                results.push(format!("{arg}={value}"));
            }
            "plain" => results.push(format!("{arg}={arg}@{}", host::info().attempt)),
            "attempt-step" => {
                let name = format!("at-{}", host::info().attempt);
                let value: String = step(&name, || Ok(name.clone()))?;
                results.push(format!("{name}={value}"));
            }
            "post" => {
                let (step_name, url) = arg
                    .split_once(':')
                    .ok_or_else(|| TaskError::permanent("post needs NAME:URL"))?;
                let body = step_bytes(step_name, || {
                    let reply =
                        flowfabric_guest::http::request("POST", url, &[], step_name.as_bytes())
                            .map_err(|e| TaskError::transient(format!("POST failed: {e}")))?;
                    Ok(reply.body)
                })?;
                results.push(format!("{step_name}={}", String::from_utf8_lossy(&body)));
            }
            "fail" => {
                let outcome: Result<String, TaskError> = step(arg, || {
                    Err(TaskError::permanent(format!("{arg} failed for good")))
                });
                let message = outcome.err().map(|e| e.message).unwrap_or_default();
                results.push(format!("{arg}=failed({message})"));
            }
            "big" => {
                let (step_name, kib) = arg
                    .split_once(':')
                    .ok_or_else(|| TaskError::permanent("big needs NAME:KIB"))?;
                let kib: usize = kib
                    .parse()
                    .map_err(|_| TaskError::permanent("big needs a size"))?;
                let out = step_bytes(step_name, || Ok(vec![b'x'; kib << 10]))?;
                results.push(format!("{step_name}={}B", out.len()));
            }
            "sleep" => {
                let ms: u64 = arg
                    .parse()
                    .map_err(|_| TaskError::permanent("sleep needs milliseconds"))?;
                flowfabric_guest::sleep(Duration::from_millis(ms))?;
                results.push(format!("slept={ms}"));
            }
            "wait" => {
                if host::info().attempt_type != AttemptType::Resumed {
                    flowfabric_guest::suspend(
                        &ResumeCondition::OperatorOnly,
                        None,
                        flowfabric_guest::TimeoutBehavior::Fail,
                    )?;
                }
                results.push(format!("waited={arg}"));
            }
            "fail-until" => {
                let n: u32 = arg
                    .parse()
                    .map_err(|_| TaskError::permanent("fail-until needs a number"))?;
                let attempt = host::info().attempt;
                if attempt < n {
                    return Err(TaskError::transient(format!(
                        "attempt {attempt} fails on purpose"
                    )));
                }
            }
            "stall-until" => {
                let n: u32 = arg
                    .parse()
                    .map_err(|_| TaskError::permanent("stall-until needs a number"))?;
                if host::info().attempt < n {
                    while host::lease_healthy() {
                        std::hint::spin_loop();
                    }
                    return Err(TaskError::transient("lease lost while stalling"));
                }
            }
            "delay-until" => {
                let (n, ms) = arg
                    .split_once(':')
                    .ok_or_else(|| TaskError::permanent("delay-until needs N:MS"))?;
                let (n, ms): (u32, u64) = n
                    .parse()
                    .ok()
                    .zip(ms.parse().ok())
                    .ok_or_else(|| TaskError::permanent("delay-until needs numbers"))?;
                let info = host::info();
                if info.attempt < n {
                    let refused = flowfabric_guest::delay(Duration::from_millis(ms))
                        .err()
                        .ok_or_else(|| TaskError::permanent("delay returned"))?;
                    results.push(format!("delay={refused:?}"));
                } else {
                    let kind = format!("{:?}", info.attempt_type);
                    let kind = kind.rsplit("::").next().unwrap_or_default().to_lowercase();
                    results.push(format!(
                        "delayed={}:{kind}:{}",
                        info.attempt, info.retry_count
                    ));
                }
            }
            "cancel" => {
                let refused = flowfabric_guest::cancel(arg)
                    .err()
                    .ok_or_else(|| TaskError::permanent("cancel returned"))?;
                results.push(format!("cancel={refused:?}"));
            }
            "unhealthy" => {
                while flowfabric_guest::renewal_failures() < 3 {
                    std::hint::spin_loop();
                }
                let seen = format!(
                    "failures={} healthy={}",
                    flowfabric_guest::renewal_failures(),
                    flowfabric_guest::lease_healthy()
                );
                flowfabric_guest::frame("health", seen.as_bytes())?;
                while flowfabric_guest::renewal_failures() > 0 {
                    std::hint::spin_loop();
                }
                results.push(format!("recovered={}", flowfabric_guest::lease_healthy()));
            }
            other => return Err(TaskError::permanent(format!("unknown step op `{other}`"))),
        }
    }
    Ok(results.join(",").into_bytes())
}
