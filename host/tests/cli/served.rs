//! `flowfabric serve` in a process of its own, and the CLI run against it as
//! a user would run it.

use std::process::Command;
use std::time::Duration;

use flowfabric_tests::{ServedProcess, TestDb};

use super::BIN;

pub(crate) struct Served {
    pub(crate) process: tokio::process::Child,
    pub(crate) url: String,
    pub(crate) log: std::sync::Arc<std::sync::Mutex<String>>,
    _db: TestDb,
    dir: flowfabric_tests::ScratchDir,
}

const ADMIN: &str = "cli-test-admin";

impl Served {
    pub(crate) async fn start() -> Self {
        let db = TestDb::new().await;
        let dir = flowfabric_tests::ScratchDir::new("cli");
        std::fs::create_dir_all(dir.path()).unwrap();
        let cache = dir.path().join("cache");
        let served = ServedProcess::start(
            BIN,
            db.pg_url(),
            ADMIN,
            &["--slots", "2", "--cache-dir", cache.to_str().unwrap()],
        )
        .await;
        Self {
            process: served.process,
            url: served.url,
            log: served.log,
            _db: db,
            dir,
        }
    }

    /// Run the CLI against this server; returns (success, stdout, stderr).
    pub(crate) fn cli(&self, key: Option<&str>, args: &[&str]) -> (bool, String, String) {
        self.cli_with_input(key, args, b"")
    }

    /// [`Served::cli`] with `input` on standard input.
    pub(crate) fn cli_with_input(
        &self,
        key: Option<&str>,
        args: &[&str],
        input: &[u8],
    ) -> (bool, String, String) {
        use std::io::Write;
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env("FLOWFABRIC_URL", &self.url)
            .env("FLOWFABRIC_ADMIN_TOKEN", ADMIN)
            .env_remove("FLOWFABRIC_API_KEY");
        if let Some(key) = key {
            command.env("FLOWFABRIC_API_KEY", key);
        }
        let mut child = command
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `tenant create NAME --json` as the operator; returns the tenant's id
    /// and its first API key.
    pub(crate) fn create_tenant(&self, name: &str) -> (String, String) {
        let (ok, out, err) = self.cli(None, &["tenant", "create", name, "--json"]);
        assert!(ok, "{err}");
        let created: serde_json::Value = serde_json::from_str(&out).unwrap();
        let text = |v: &serde_json::Value| v.as_str().unwrap().to_owned();
        (
            text(&created["tenant"]["tenant_id"]),
            text(&created["api_key"]["token"]),
        )
    }

    pub(crate) fn write(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.to_string_lossy().into_owned()
    }
}

/// The CLI failed, with one line on standard error, `error: …`.
pub(crate) fn one_line_error(what: &str, (ok, _, stderr): &(bool, String, String)) {
    assert!(!ok, "{what}: should fail");
    assert_eq!(stderr.trim().lines().count(), 1, "{what}: {stderr}");
    assert!(stderr.starts_with("error: "), "{what}: {stderr}");
}

/// Run the CLI with `args` every 100 ms until its standard output passes
/// `done`, for up to 30 s; returns that output.
pub(crate) async fn wait_for(
    served: &Served,
    key: Option<&str>,
    args: &[&str],
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, out, _) = served.cli(key, args);
        if done(&out) {
            return out;
        }
        assert!(tokio::time::Instant::now() < deadline, "{args:?}: {out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
