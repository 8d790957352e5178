//! The scratch directory commands: `/scratch` is the attempt's own, with a
//! byte quota, and empty at the start of every attempt.
//!
//! | input | behaviour |
//! |---|---|
//! | `scratch:KIB[:UNTIL]` | lists `/scratch`, writes KIB KiB to `/scratch/a<attempt>`, reads it back; returns `before=[…] wrote=N read=N`, `before=[…] error=no-space` (ENOSPC) or `error=io` (any other), or `no scratch`; on attempts before UNTIL it then fails (transient) with that report |
//! | `scratch-files:N` | creates up to N empty files, stops at the first refusal; returns `created=K error=WORD` (`none` when all were made) |

use std::io::Write;

use flowfabric_guest::{host, TaskError};

pub fn write(arg: &str) -> Result<Vec<u8>, TaskError> {
    let mut parts = arg.split(':');
    let kib: usize = parts
        .next()
        .and_then(|k| k.parse().ok())
        .ok_or_else(|| TaskError::permanent("scratch needs KIB"))?;
    let until: u32 = parts.next().and_then(|u| u.parse().ok()).unwrap_or(0);
    let attempt = host::info().attempt;
    let before = match std::fs::read_dir("/scratch") {
        Ok(entries) => {
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names.join(",")
        }
        Err(_) => return Ok(b"no scratch".to_vec()),
    };
    let path = format!("/scratch/a{attempt}");
    let outcome = fill(&path, kib << 10).and_then(|wrote| {
        let read = std::fs::read(&path)?.len();
        Ok(format!("wrote={wrote} read={read}"))
    });
    let report = match outcome {
        Ok(done) => format!("before=[{before}] {done}"),
        Err(e) => format!("before=[{before}] error={}", word(&e)),
    };
    if attempt < until {
        return Err(TaskError::transient(report));
    }
    Ok(report.into_bytes())
}

fn fill(path: &str, bytes: usize) -> std::io::Result<usize> {
    let mut file = std::fs::File::create(path)?;
    let chunk = [7u8; 16 << 10];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        file.write_all(&chunk[..n])?;
        left -= n;
    }
    file.flush()?;
    Ok(bytes)
}

pub fn files(arg: &str) -> Result<Vec<u8>, TaskError> {
    let n: u32 = arg
        .parse()
        .map_err(|_| TaskError::permanent("scratch-files needs N"))?;
    for i in 0..n {
        if let Err(e) = std::fs::File::create(format!("/scratch/f{i}")) {
            return Ok(format!("created={i} error={}", word(&e)).into_bytes());
        }
    }
    Ok(format!("created={n} error=none").into_bytes())
}

/// The error as the conformance guests of every language name it.
fn word(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::StorageFull => "no-space",
        _ => "io",
    }
}
