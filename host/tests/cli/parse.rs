//! Every command parsed for real, each failing cleanly without a server.

use std::process::{Command, Stdio};

use super::BIN;

#[test]
fn every_command_parses_without_panicking() {
    // clap checks a derived struct against its definition only when a command
    // is parsed for real (a subcommand flag named like a global one panics
    // then, not at `--help`): run each one far enough to fail cleanly.
    let id = "00000000-0000-7000-8000-000000000000";
    let commands: &[&[&str]] = &[
        &["serve", "--listen", "127.0.0.1:0"],
        &["worker"],
        &["migrate"],
        &["dev"],
        &["tenant", "create", "x"],
        &["tenant", "list"],
        &["component", "upload", "k", "f"],
        &["component", "list"],
        &["run", "k"],
        &["submit", "/nonexistent"],
        &["get", id],
        &["get", id, "--steps"],
        &["list"],
        &["cancel", id],
        &["replay", id],
        &["replay", id, "--keep-steps"],
        &["replay", id, "--revive-dependents"],
        &["schedule", "create", "s", "k", "--every-ms", "1000"],
        &["schedule", "list"],
        &["schedule", "get", id],
        &["schedule", "pause", id],
        &["schedule", "resume", id],
        &["schedule", "trigger", id],
        &["schedule", "rm", id],
        &["concurrency", "set", "kind", "k", "--max-running", "1"],
        &["concurrency", "list"],
        &["concurrency", "rm", "lane", "l"],
        &["run", "k", "--concurrency-key", "c"],
        &["revoke-lease", id],
        &["tail", id],
        &["flow", "create", "/nonexistent"],
        &["flow", "extend", id, "/nonexistent"],
        &["flow", "get", id],
        &["flow", "list"],
        &["flow", "cancel", id],
        &["events"],
        &["events", "leases", "--follow"],
        &["flow", "edges", "f", "--from", "a", "--to", "b"],
        &["suspended", "--kind", "k", "--lane", "l", "--limit", "5"],
        &[
            "budget",
            "adjust",
            "b",
            "--dimension",
            "d",
            "--delta",
            "-5",
            "--reason",
            "r",
        ],
        &["budget", "adjustments", "b", "--limit", "5"],
        &[
            "events",
            "leases",
            "--execution",
            "00000000-0000-0000-0000-000000000001",
            "--kind",
            "k",
            "--lane",
            "l",
            "--outcome",
            "renewed",
        ],
        &["budget", "create", "b", "--limit", "calls=5"],
        &[
            "grant",
            "set",
            "k",
            "--http",
            "https://x.com",
            "--config",
            "A",
        ],
        &["grant", "show", "k"],
        &["grant", "list"],
        &["grant", "rm", "k"],
        &["config", "set", "A", "--value", "v"],
        &["config", "set", "A", "--secret"],
        &["config", "list"],
        &["config", "rm", "A"],
        &[
            "tenant",
            "capabilities",
            id,
            "--set",
            "--http-allow",
            "https://x.com",
            "--config",
        ],
        &[
            "reseal-config",
            "--database-url",
            "postgres://nobody@127.0.0.1:1/none",
        ],
        &["signing-keys", "list"],
        &["signing-keys", "rotate", "--grace-hours", "1"],
        &[
            "signing-keys",
            "seed",
            "--kid",
            "k",
            "--secret-file",
            "/nonexistent",
        ],
        &["budget", "list"],
        &["budget", "get", id],
        &["budget", "reset", id],
        &["bench", "engine"],
        &["bench", "wasm"],
        &["bench", "signal"],
        &["bench", "flow"],
        &["bench", "schedules"],
        &["bench", "ui"],
        &["new", "Bad_Name", "--lang", "python"],
        &["bench", "languages", "--guests", "/nonexistent"],
        &["bench", "http", "--guests", "/nonexistent"],
    ];
    // All at once: the database commands each wait out a connect timeout.
    let running: Vec<_> = commands
        .iter()
        .map(|command| {
            Command::new(BIN)
                .args(*command)
                .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
                .env("FLOWFABRIC_URL", "http://127.0.0.1:1")
                .env("FLOWFABRIC_API_KEY", "ffk_x")
                .env("FLOWFABRIC_ADMIN_TOKEN", "x")
                .env("FLOWFABRIC_CONFIG_KEYS", flowfabric_tests::TEST_CONFIG_KEYS)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (command, child) in commands.iter().zip(running) {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{command:?} cannot succeed here");
        assert_eq!(out.status.code(), Some(1), "{command:?}: {stderr}");
        assert!(
            stderr
                .lines()
                .last()
                .unwrap_or_default()
                .starts_with("error: "),
            "{command:?}: {stderr}"
        );
    }
}
