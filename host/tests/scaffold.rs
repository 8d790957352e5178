//! `flowfabric new` in every language: the project it writes builds with its
//! own `build.sh`, and the component it builds uploads and runs as it is.

use std::path::{Path, PathBuf};
use std::process::Command;

use flowfabric::model::{PublicState, TenantId};
use flowfabric_tests::ServedProcess;
use flowfabric_tests::TestDb;

const BIN: &str = env!("CARGO_BIN_EXE_flowfabric");

fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ff-new-{name}-{}", uuid::Uuid::now_v7().simple()))
}

/// Run `flowfabric new`; returns the commands it prints as next steps, one
/// per line (`cd DIR && ./build.sh`, `flowfabric component upload …`,
/// `flowfabric run …`).
fn new_project(dir: &Path, name: &str, lang: &str) -> Vec<String> {
    let out = Command::new(BIN)
        .args(["new", name, "--lang", lang, "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    // The template greets text, so the input goes as text (`--input`
    // would have to be JSON).
    assert!(
        printed.contains(&format!("flowfabric run {name} --input-text world")),
        "{printed}"
    );
    printed
        .lines()
        .filter_map(|l| l.strip_prefix("  "))
        .map(str::to_owned)
        .collect()
}

/// Run a printed `flowfabric …` line as printed, from `dir`, against the
/// server at `url` with `key`; returns stdout.
fn run_printed(line: &str, dir: &Path, url: &str, key: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[0], "flowfabric", "{line}");
    let out = Command::new(BIN)
        .args(&words[1..])
        .current_dir(dir)
        .env("FLOWFABRIC_URL", url)
        .env("FLOWFABRIC_API_KEY", key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`{line}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The project's build.sh with a clean cargo environment (this test's own
/// target dir and flags must not leak in), finding its tools where
/// scripts/build-guests.sh installed them (the same cache layout).
fn build_command(dir: &Path) -> Command {
    let mut cmd = Command::new(dir.join("build.sh"));
    for (key, _) in std::env::vars() {
        if key.starts_with("CARGO_") && key != "CARGO_HOME" || key.starts_with("RUSTC") {
            cmd.env_remove(key);
        }
    }
    let tools = std::env::var("FLOWFABRIC_TOOLS_DIR")
        .unwrap_or_else(|_| "/var/tmp/flowfabric-tools".to_owned());
    // Shared between runs, so only the first builds wit-bindgen.
    cmd.env(
        "CARGO_TARGET_DIR",
        std::env::temp_dir().join("ff-new-rust-target"),
    )
    .env("FLOWFABRIC_TOOLS_DIR", tools)
    .env_remove("COMPONENTIZE_PY");
    cmd
}

fn build(dir: &Path) {
    let out = build_command(dir).output().expect("run build.sh");
    assert!(
        out.status.success(),
        "build.sh failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A PATH holding only what a build.sh needs besides the language's own
/// tools (bash and the coreutils it calls), for "the tool is missing".
fn bare_path() -> PathBuf {
    let bin = scratch("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["bash", "dirname", "mkdir", "rm", "grep", "cp"] {
        let found = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} is not installed"));
        std::os::unix::fs::symlink(found, bin.join(tool)).unwrap();
    }
    bin
}

#[test]
fn a_build_without_its_toolchain_says_what_to_install_in_one_line() {
    let bin = bare_path();
    for (lang, hint) in [
        ("python", "python3 is needed"),
        ("js", "Node.js 20 or newer"),
    ] {
        let dir = scratch(&format!("bare-{lang}"));
        new_project(&dir, &format!("bare-{lang}"), lang);
        let tools = scratch("no-tools");
        let out = build_command(&dir)
            .env("PATH", &bin)
            .env("FLOWFABRIC_TOOLS_DIR", &tools)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{lang}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{lang}: one line: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(hint),
            "{lang}: {stderr}"
        );
        assert!(!dir.join(format!("bare-{lang}.wasm")).exists());
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&tools);
    }
    let _ = std::fs::remove_dir_all(&bin);
}

#[test]
fn a_python_project_installs_its_toolchain_on_first_build() {
    let dir = scratch("fresh-python");
    new_project(&dir, "fresh-python", "python");
    let tools = scratch("empty-tools");
    let out = build_command(&dir)
        .env("FLOWFABRIC_TOOLS_DIR", &tools)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("installing componentize-py 0.25.1"),
        "{stdout}"
    );
    assert!(tools
        .join("componentize-py-0.25.1/bin/componentize-py")
        .exists());
    assert!(dir.join("fresh-python.wasm").exists());
    // The second build finds it and installs nothing.
    let again = build_command(&dir)
        .env("FLOWFABRIC_TOOLS_DIR", &tools)
        .output()
        .unwrap();
    assert!(again.status.success());
    assert!(!String::from_utf8_lossy(&again.stdout).contains("installing"));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&tools);
}

#[tokio::test]
async fn new_projects_build_upload_and_run_in_every_language() {
    // What a newcomer does: `serve`, then the commands `new` prints, as
    // printed, from the project's directory.
    let db = TestDb::new().await;
    let served = ServedProcess::start(BIN, db.pg_url(), ADMIN, &["--slots", "2"]).await;
    let (tenant, key) = tenant_with_key(&served.url).await;
    for lang in ["rust", "js", "python"] {
        let name = format!("greet-{lang}");
        let dir = scratch(&name);
        let steps = new_project(&dir, &name, lang);
        assert_eq!(steps.len(), 3, "{lang}: {steps:?}");
        assert_eq!(steps[0], format!("cd {} && ./build.sh", dir.display()));
        build(&dir);
        let uploaded = run_printed(&steps[1], &dir, &served.url, &key);
        assert!(
            uploaded.starts_with(&format!("uploaded {name} v1")),
            "{uploaded}"
        );
        let result = run_printed(&steps[2], &dir, &served.url, &key);
        assert_eq!(result.trim_end(), "hello, world", "{lang}");

        let listed = db
            .engine
            .list(
                tenant,
                flowfabric::model::ExecutionFilter {
                    kind: Some(name.clone()),
                    limit: 10,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let done = &listed[0];
        assert_eq!(done.state, PublicState::Completed, "{lang}");
        assert_eq!(done.progress_percent, Some(50), "{lang}");
        let id = done.execution_id;
        let frames = db.engine.read_frames(tenant, id, 1, 0, 10).await.unwrap();
        assert_eq!(frames[0].frame_type, "greeting", "{lang}");
        assert_eq!(frames[0].payload, b"world", "{lang}");
        // The greeting went through the project's SDK as a durable step.
        let steps = db.engine.list_steps(tenant, id, None, 10).await.unwrap();
        let names: Vec<_> = steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["greet"], "{lang}");
        let _ = std::fs::remove_dir_all(dir);
    }
}

const ADMIN: &str = "scaffold-admin-token";

/// A tenant created through the admin API; its id and key.
async fn tenant_with_key(url: &str) -> (TenantId, String) {
    let body: serde_json::Value = reqwest::Client::new()
        .post(format!("{url}/v1/admin/tenants"))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({ "name": "newcomer" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        body["tenant"]["tenant_id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap(),
        body["api_key"]["token"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn new_refuses_a_bad_name_or_a_directory_in_use() {
    let dir = scratch("taken");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("keep.txt"), "mine").unwrap();
    let out = Command::new(BIN)
        .args(["new", "taken", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not empty"), "{stderr}");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        1,
        "nothing was written"
    );

    let out = Command::new(BIN)
        .args(["new", "Not_Valid"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid name"));
    let _ = std::fs::remove_dir_all(dir);
}
