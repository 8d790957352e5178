//! Scratch directories with real guests: opt-in, the attempt's own, bounded
//! by a byte quota, and gone when the attempt ends.

use flowfabric::model::{CapabilityCeiling, ComponentGrant};

use crate::{config, text, Env};

/// Attempt directories left under the runtime's scratch root.
fn leftovers(env: &Env) -> Vec<String> {
    std::fs::read_dir(env.runtime.scratch_root())
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with("attempt-"))
                .collect()
        })
        .unwrap_or_default()
}

async fn grant_scratch(env: &Env, ceiling: Option<u64>, granted: Option<u64>) {
    let engine = &env.db.engine;
    let ceiling = CapabilityCeiling {
        scratch_bytes: ceiling,
        ..Default::default()
    };
    engine.set_ceiling(env.tenant, &ceiling).await.unwrap();
    let grant = ComponentGrant {
        scratch_bytes: granted,
        ..Default::default()
    };
    engine
        .put_grant(env.tenant, "testkit", &grant)
        .await
        .unwrap();
}

#[tokio::test]
async fn without_a_grant_there_is_no_scratch_directory() {
    let env = Env::new().await;
    let pool = env.pool(config(1));
    let seen = env.completed_text("scratch:1", 0).await;
    assert_eq!(seen, "no scratch");
    pool.shutdown().await;
}

#[tokio::test]
async fn scratch_is_the_attempts_own_bounded_and_removed_after() {
    let env = Env::new().await;
    // The ceiling is lower than the grant: the ceiling wins.
    grant_scratch(&env, Some(256 << 10), Some(256 << 10)).await;
    env.db
        .engine
        .set_ceiling(
            env.tenant,
            &CapabilityCeiling {
                scratch_bytes: Some(64 << 10),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let pool = env.pool(config(2));

    // Attempt 1 writes a file and fails; attempt 2 starts from an empty
    // directory of its own.
    let retried = env.completed_text("scratch:16:2", 1).await;
    assert_eq!(retried, "before=[] wrote=16384 read=16384");

    // Past the quota (64 KiB, less the file's own entry) the write fails
    // cleanly in the guest, and the run goes on. Rust's libc reads a failed
    // stream write as EIO whatever its cause, so the attempt's stderr says
    // what happened.
    let id = env.submit("testkit", "scratch:64", 0).await;
    let ex = env.wait_terminal(id).await;
    assert_eq!(text(&ex.result), "before=[] error=io");
    let stderr: Vec<u8> = env
        .first_attempt_frames(id, 100)
        .await
        .into_iter()
        .filter(|f| f.frame_type == "stderr")
        .flat_map(|f| f.payload)
        .collect();
    let stderr = String::from_utf8_lossy(&stderr);
    assert!(
        stderr.contains("scratch quota of 65536 bytes is used up"),
        "{stderr}"
    );
    let under = env.completed_text("scratch:56", 0).await;
    assert_eq!(under, "before=[] wrote=57344 read=57344");

    // Every entry created costs a block, so empty files are bounded too.
    let files = env.completed_text("scratch-files:1000", 0).await;
    assert_eq!(files, "created=16 error=no-space");

    // The directory is a sandbox: nothing outside it is reachable.
    let escape = env.completed_text("open:/scratch/../etc/hostname", 0).await;
    assert!(escape.starts_with("denied"), "{escape}");

    assert_eq!(leftovers(&env), Vec::<String>::new());
    pool.shutdown().await;
}
