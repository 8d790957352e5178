//! The same conformance behaviour from a guest in every language: the Rust
//! testkit, the JavaScript guest (componentize-js) and the Python guest
//! (componentize-py) are given the same inputs and must give byte-identical
//! answers. Each scenario is written once and run for every language.
//!
//! The JS and Python components are built by `scripts/build-guests.sh`, which
//! the README's test command runs first.

use flowfabric::model::{Execution, ExecutionId, FailureClass, NewSignal, PublicState};

use crate::{config, text, Env};

/// An order every conformance guest prices, and the answer each must give.
const ORDER: &str =
    r#"order:{"order":"A-7","items":[{"qty":2,"price_cents":150},{"qty":1,"price_cents":99}]}"#;
const PRICED: &str = "order=A-7 items=2 total_cents=399";

/// Language name and the kind its conformance guest is registered under.
const LANGUAGES: [(&str, &str); 3] = [
    ("rust", "testkit"),
    ("js", "conformance-js"),
    ("python", "conformance-python"),
];

fn polyglot_guest(lang: &str) -> Vec<u8> {
    let dir = std::env::var("FLOWFABRIC_POLYGLOT_DIR").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../guests/target/polyglot").to_owned()
    });
    let path = std::path::Path::new(&dir).join(format!("{lang}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "reading {}: {e} (scripts/build-guests.sh builds it)",
            path.display()
        )
    })
}

/// An environment with the JS and Python guests registered beside testkit.
async fn polyglot_env() -> Env {
    let env = Env::new().await;
    for (lang, kind) in &LANGUAGES[1..] {
        flowfabric::components::register(
            &env.db.engine,
            &env.runtime,
            env.tenant,
            kind,
            &polyglot_guest(lang),
        )
        .await
        .unwrap_or_else(|e| panic!("registering the {lang} guest: {e}"));
    }
    env
}

/// Wait for `id` to end, which must be completed.
async fn completed(env: &Env, lang: &str, id: ExecutionId) -> Execution {
    let done = env.wait_terminal(id).await;
    assert_eq!(
        done.state,
        PublicState::Completed,
        "{lang}: {:?}",
        done.last_failure
    );
    done
}

/// Submit `input` to every language's guest; returns (language, execution) pairs.
async fn submit_all(env: &Env, input: &str, retries: u32) -> Vec<(&'static str, ExecutionId)> {
    let mut ids = Vec::new();
    for (lang, kind) in LANGUAGES {
        ids.push((lang, env.submit(kind, input, retries).await));
    }
    ids
}

#[tokio::test]
async fn every_language_echoes_its_input() {
    let env = polyglot_env().await;
    let pool = env.pool(config(3));
    for (lang, id) in submit_all(&env, "echo:héllo, wörld", 0).await {
        let done = completed(&env, lang, id).await;
        assert_eq!(text(&done.result), "héllo, wörld", "{lang}");
    }
    pool.shutdown().await;
}

#[tokio::test]
async fn every_language_reports_progress_and_appends_dense_frames() {
    let env = polyglot_env().await;
    let pool = env.pool(config(3));
    for (lang, id) in submit_all(&env, "frames:4", 0).await {
        let done = completed(&env, lang, id).await;
        assert_eq!(text(&done.result), "frames=4", "{lang}");
        assert_eq!(done.progress_percent, Some(100), "{lang}");
        let frames = env.first_attempt_frames(id, 100).await;
        let items: Vec<(i64, String)> = frames
            .iter()
            .filter(|f| f.frame_type == "item")
            .map(|f| (f.seq, String::from_utf8_lossy(&f.payload).into_owned()))
            .collect();
        let first = items.first().map(|(seq, _)| *seq).unwrap_or_default();
        let expected: Vec<(i64, String)> = (0..4).map(|i| (first + i, i.to_string())).collect();
        assert_eq!(items, expected, "{lang}");
    }
    pool.shutdown().await;
}

#[tokio::test]
async fn every_language_prices_an_order_and_refuses_one_that_is_not_json() {
    let env = polyglot_env().await;
    let pool = env.pool(config(3));
    for (lang, id) in submit_all(&env, ORDER, 0).await {
        let done = completed(&env, lang, id).await;
        assert_eq!(text(&done.result), PRICED, "{lang}");
        assert_eq!(done.progress_percent, Some(100), "{lang}");
        let frames = env.first_attempt_frames(id, 10).await;
        let totals: Vec<_> = frames.iter().filter(|f| f.frame_type == "total").collect();
        assert_eq!(totals.len(), 1, "{lang}");
        assert_eq!(totals[0].payload, b"399", "{lang}");
    }
    for bad in [
        "order:{not json",
        r#"order:{"items":[{"qty":-1,"price_cents":5}]}"#,
    ] {
        // Each language words its parser's complaint its own way; the
        // class, and that nothing is retried, are the same.
        for (lang, id) in submit_all(&env, bad, 2).await {
            let done = env.wait_terminal(id).await;
            assert_eq!(done.state, PublicState::Failed, "{lang}: {bad}");
            let failure = done.last_failure.expect("a failure");
            assert_eq!(failure.class, FailureClass::Permanent, "{lang}: {bad}");
            assert_eq!(
                done.retry_count, 0,
                "{lang}: a permanent failure is not retried"
            );
        }
    }
    pool.shutdown().await;
}

#[tokio::test]
async fn every_language_fails_with_the_class_it_chose() {
    let env = polyglot_env().await;
    let pool = env.pool(config(3));
    // Permanent: never retried, even with retries left.
    for (lang, id) in submit_all(&env, "permanent", 2).await {
        let done = env.wait_terminal(id).await;
        assert_eq!(done.state, PublicState::Failed, "{lang}");
        assert_eq!(done.retry_count, 0, "{lang}");
        let failure = done.last_failure.expect("a failure");
        assert_eq!(failure.class, FailureClass::Permanent, "{lang}");
        assert_eq!(failure.message, "this input can never succeed", "{lang}");
    }
    // Transient: retried, and the retry sees its attempt number.
    for (lang, id) in submit_all(&env, "fail-until:2", 1).await {
        let done = completed(&env, lang, id).await;
        assert_eq!(done.retry_count, 1, "{lang}");
        assert_eq!(text(&done.result), "ok on attempt 2", "{lang}");
    }
    // Bad input is the guest's own permanent failure, not a crash.
    for (lang, id) in submit_all(&env, "frames:many", 2).await {
        let done = env.wait_terminal(id).await;
        assert_eq!(done.state, PublicState::Failed, "{lang}");
        let failure = done.last_failure.expect("a failure");
        assert_eq!(failure.class, FailureClass::Permanent, "{lang}");
        assert_eq!(failure.message, "frames needs a number", "{lang}");
    }
    pool.shutdown().await;
}

#[tokio::test]
async fn every_language_suspends_and_is_resumed_by_a_signal() {
    let env = polyglot_env().await;
    let pool = env.pool(config(3));
    let ids = submit_all(&env, "wait:approval", 0).await;
    for (lang, id) in &ids {
        env.wait_state(*id, PublicState::Suspended).await;
        let frames = env.first_attempt_frames(*id, 10).await;
        let frame = String::from_utf8(frames[0].payload.clone()).unwrap();
        let token = frame
            .strip_prefix("approval=")
            .unwrap_or_else(|| panic!("{lang}: the waitpoint frame, got {frame:?}"));
        let signal = NewSignal {
            name: "approve".into(),
            payload: lang.as_bytes().to_vec(),
            idempotency_key: None,
        };
        env.db.engine.deliver_signal(token, signal).await.unwrap();
    }
    for (lang, id) in ids {
        let done = completed(&env, lang, id).await;
        assert_eq!(done.attempt_index, 1, "{lang}: resumed on the same attempt");
        assert_eq!(
            text(&done.result),
            format!("resumed attempt=1: approve={lang}")
        );
    }
    pool.shutdown().await;
}

#[tokio::test]
async fn every_language_keeps_durable_steps_and_sleeps_the_same_way() {
    let env = polyglot_env().await;
    let scanners = flowfabric::engine::Scanners::start(
        env.db.backend(),
        flowfabric::engine::ScannerConfig {
            suspension_timeout: std::time::Duration::from_millis(100),
            ..Default::default()
        },
    );
    let pool = env.pool(config(3));
    // Attempt 1 records `a` and the failed `f`, sleeps, records `b` after
    // waking, then fails transiently; attempt 2 is handed all four.
    let script = "steps:step:a;fail:f;sleep:300;step:b;fail-until:2";
    let mut journals = Vec::new();
    for (lang, id) in submit_all(&env, script, 1).await {
        let done = completed(&env, lang, id).await;
        assert_eq!(done.attempt_index, 2, "{lang}");
        assert_eq!(
            text(&done.result),
            "a=a@1,f=failed(f failed for good),slept=300,b=b@1",
            "{lang}"
        );
        let steps = env
            .db
            .engine
            .list_steps(env.tenant, id, None, 100)
            .await
            .unwrap();
        let journal: Vec<_> = steps
            .iter()
            .map(|s| (s.position, s.name.clone(), s.kind, s.attempt_index, s.size))
            .collect();
        journals.push((lang, journal));
    }
    let (_, rust) = &journals[0];
    assert_eq!(rust.len(), 4, "{rust:?}");
    for (lang, journal) in &journals[1..] {
        assert_eq!(journal, rust, "{lang} records what the Rust SDK records");
    }
    pool.shutdown().await;
    scanners.shutdown().await;
}

#[tokio::test]
async fn every_language_delays_and_cancels_its_own_execution() {
    let env = polyglot_env().await;
    let scanners = flowfabric::engine::Scanners::start(
        env.db.backend(),
        flowfabric::engine::ScannerConfig::default(),
    );
    let pool = env.pool(config(3));
    for (lang, id) in submit_all(&env, "steps:step:a;delay-until:2:200;step:b", 0).await {
        let done = completed(&env, lang, id).await;
        assert_eq!(
            text(&done.result),
            "a=a@1,delayed=2:delayed:0,b=b@2",
            "{lang}"
        );
        assert_eq!((done.attempt_index, done.retry_count), (2, 0), "{lang}");
    }
    for (lang, id) in submit_all(&env, "steps:step:a;cancel:not wanted;step:b", 2).await {
        let done = env.wait_terminal(id).await;
        assert_eq!(done.state, PublicState::Cancelled, "{lang}: {done:?}");
        assert_eq!(
            done.cancellation_reason.as_deref(),
            Some("not wanted"),
            "{lang}"
        );
        assert_eq!(done.attempt_index, 1, "{lang}: never retried");
    }
    pool.shutdown().await;
    scanners.shutdown().await;
}

#[tokio::test]
async fn every_language_reaches_a_granted_origin_and_nothing_else() {
    use crate::upstream::{grant, http_grant, loopback_ceiling, Upstream};
    let env = polyglot_env().await;
    let up = Upstream::start().await;
    env.db
        .engine
        .set_ceiling(env.tenant, &loopback_ceiling())
        .await
        .unwrap();
    let origin = format!("http://127.0.0.1:{}", up.port);
    for (_, kind) in &LANGUAGES {
        grant(
            &env,
            env.tenant,
            kind,
            http_grant(std::slice::from_ref(&origin)),
        )
        .await;
    }
    let pool = env.pool(config(3));
    for (lang, kind) in &LANGUAGES {
        let id = env
            .submit(kind, &format!("http:POST:{}", up.url("/echo")), 0)
            .await;
        let done = completed(&env, lang, id).await;
        assert_eq!(text(&done.result), "status=200 bytes=4 body=ping", "{lang}");
        // The same server under another name is outside the grant.
        let other = format!("http:GET:http://localhost:{}/hello", up.port);
        let id = env.submit(kind, &other, 0).await;
        let done = completed(&env, lang, id).await;
        assert!(
            text(&done.result).starts_with("error="),
            "{lang}: {}",
            text(&done.result)
        );
    }
    // Many requests in one run: every SDK releases each exchange's
    // resources in an order the host accepts (Python's garbage collector,
    // left to it, once dropped a response before its body).
    const MANY: u32 = 300;
    for (lang, kind) in &LANGUAGES {
        let id = env
            .submit(kind, &format!("http-n:{MANY}:{}", up.url("/hello")), 0)
            .await;
        let done = completed(&env, lang, id).await;
        assert_eq!(
            text(&done.result),
            format!("ok={MANY} error=none"),
            "{lang}"
        );
    }
    assert_eq!(
        up.hits(),
        3 + 3 * u64::from(MANY),
        "only the granted requests reached the server"
    );
    // One after another, one tenant, one origin: every SDK reads its
    // responses to the end, so each request found the connection kept.
    assert_eq!(up.connections(), 1, "connections opened");
    pool.shutdown().await;
}

#[tokio::test]
async fn every_language_reads_granted_config_and_nothing_else() {
    use crate::upstream::{grant, loopback_ceiling};
    use flowfabric::model::ComponentGrant;
    let env = polyglot_env().await;
    let engine = &env.db.engine;
    engine
        .set_ceiling(env.tenant, &loopback_ceiling())
        .await
        .unwrap();
    engine
        .put_config(env.tenant, "REGION", "eu-west", false)
        .await
        .unwrap();
    engine
        .put_config(env.tenant, "API_TOKEN", "secret-0042", true)
        .await
        .unwrap();
    let langs = LANGUAGES;
    for (_, kind) in &langs {
        let granted = ComponentGrant {
            config: vec!["REGION".into(), "API_TOKEN".into()],
            ..Default::default()
        };
        grant(&env, env.tenant, kind, granted).await;
    }
    let pool = env.pool(config(3));
    for (lang, kind) in &langs {
        for (name, want) in [
            ("REGION", "eu-west"),
            ("API_TOKEN", "secret-0042"),
            ("NOT_SET", "absent"),
        ] {
            let id = env.submit(kind, &format!("config:{name}"), 0).await;
            let done = completed(&env, lang, id).await;
            assert_eq!(text(&done.result), want, "{lang} reads {name}");
        }
    }
    // Without the grant, the same name reads as absent.
    for (_, kind) in &langs {
        grant(&env, env.tenant, kind, ComponentGrant::default()).await;
    }
    // A pool looks a kind's grant up at most once a second.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    for (lang, kind) in &langs {
        let id = env.submit(kind, "config:REGION", 0).await;
        let done = completed(&env, lang, id).await;
        assert_eq!(text(&done.result), "absent", "{lang} without a grant");
    }
    pool.shutdown().await;
}

#[tokio::test]
async fn every_language_writes_its_own_scratch_within_the_quota() {
    use crate::upstream::grant;
    use flowfabric::model::{CapabilityCeiling, ComponentGrant};
    let env = polyglot_env().await;
    let ceiling = CapabilityCeiling {
        scratch_bytes: Some(64 << 10),
        ..Default::default()
    };
    env.db
        .engine
        .set_ceiling(env.tenant, &ceiling)
        .await
        .unwrap();
    let langs = LANGUAGES;
    let pool = env.pool(config(3));
    for (lang, kind) in &langs {
        let id = env.submit(kind, "scratch:16", 0).await;
        let done = completed(&env, lang, id).await;
        assert_eq!(text(&done.result), "no scratch", "{lang} without a grant");
    }
    for (_, kind) in &langs {
        let granted = ComponentGrant {
            scratch_bytes: Some(64 << 10),
            ..Default::default()
        };
        grant(&env, env.tenant, kind, granted).await;
    }
    // A pool looks a kind's grant up at most once a second.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    for (lang, kind) in &langs {
        let id = env.submit(kind, "scratch:16", 0).await;
        let done = completed(&env, lang, id).await;
        assert_eq!(
            text(&done.result),
            "before=[] wrote=16384 read=16384",
            "{lang} with a grant"
        );
        let id = env.submit(kind, "scratch:80", 0).await;
        let done = completed(&env, lang, id).await;
        let over = text(&done.result);
        assert!(
            over == "before=[] error=io" || over == "before=[] error=no-space",
            "{lang} past the quota: {over}"
        );
    }
    pool.shutdown().await;
}

/// With a grant's `reuse_instances`, each language's guest answers the
/// same on instances kept from earlier attempts as on fresh ones, round
/// after round, including after its own failures: its runtime survives
/// being called again, and what one attempt reports stays its own.
#[tokio::test]
async fn every_language_answers_the_same_on_reused_instances() {
    let env = polyglot_env().await;
    for (_, kind) in LANGUAGES {
        crate::reuse::allow_reuse(&env, env.tenant, kind).await;
    }
    // One slot: every attempt after a language's first runs on a kept one.
    let pool = env.pool(config(1));
    let counts = async |expected: &str| {
        for (lang, id) in submit_all(&env, "count", 0).await {
            let done = completed(&env, lang, id).await;
            assert_eq!(text(&done.result), expected, "{lang}");
        }
    };
    counts("count=1").await;
    for round in 0..3 {
        for (lang, id) in submit_all(&env, &format!("echo:round {round}"), 0).await {
            let done = completed(&env, lang, id).await;
            assert_eq!(text(&done.result), format!("round {round}"), "{lang}");
        }
        for (lang, id) in submit_all(&env, ORDER, 0).await {
            let done = completed(&env, lang, id).await;
            assert_eq!(text(&done.result), PRICED, "{lang}");
        }
        for (lang, id) in submit_all(&env, "frames:2", 0).await {
            let done = completed(&env, lang, id).await;
            assert_eq!(text(&done.result), "frames=2", "{lang}");
            let items: Vec<String> = env
                .first_attempt_frames(id, 100)
                .await
                .iter()
                .filter(|f| f.frame_type == "item")
                .map(|f| String::from_utf8_lossy(&f.payload).into_owned())
                .collect();
            assert_eq!(items, ["0", "1"], "{lang}, round {round}");
        }
        for (lang, id) in submit_all(&env, "permanent", 0).await {
            let done = env.wait_terminal(id).await;
            let failure = done.last_failure.expect("a failure");
            assert_eq!(failure.class, FailureClass::Permanent, "{lang}");
        }
    }
    // All of it ran on the instance the first `count` made.
    counts("count=2").await;
    pool.shutdown().await;
}
