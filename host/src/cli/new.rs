//! `flowfabric new`: a guest project that builds and uploads as it is.
//!
//! The SDK sources and the WIT are the repository's own, embedded at compile
//! time, so a scaffold always matches the host that wrote it. Each project has
//! a `build.sh` that leaves `NAME.wasm` beside it, ready for
//! `flowfabric component upload NAME NAME.wasm`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

const WIT: &str = include_str!("../../../wit/task.wit");
const RUST_SDK: &str = include_str!("../../../guests/sdk/src/lib.rs");
const RUST_SDK_HTTP: &str = include_str!("../../../guests/sdk/src/http.rs");
const RUST_SDK_CONFIG: &str = include_str!("../../../guests/sdk/src/config.rs");
const RUST_SDK_STEPS: &str = include_str!("../../../guests/sdk/src/steps.rs");
const CONFIG_WIT: &str = include_str!("../../../guests/sdk/wit/config/store.wit");
const JS_SDK: &str = include_str!("../../../guests/js/flowfabric.js");
const JS_BUILD: &str = include_str!("../../../guests/js/build.mjs");
const JS_WIT: &str = include_str!("../../../guests/js/wit/world.wit");
const PYTHON_SDK: &str = include_str!("../../../guests/python/flowfabric.py");
/// The Python world and the WASI packages it imports (the task contract
/// goes beside them as `deps/task/task.wit`).
const PYTHON_WIT: [(&str, &str); 9] = [
    (
        "world.wit",
        include_str!("../../../guests/python/wit/world.wit"),
    ),
    (
        "deps/http/http.wit",
        include_str!("../../../guests/python/wit/deps/http/http.wit"),
    ),
    (
        "deps/io/io.wit",
        include_str!("../../../guests/python/wit/deps/io/io.wit"),
    ),
    (
        "deps/clocks/clocks.wit",
        include_str!("../../../guests/python/wit/deps/clocks/clocks.wit"),
    ),
    (
        "deps/random/random.wit",
        include_str!("../../../guests/python/wit/deps/random/random.wit"),
    ),
    (
        "deps/cli/cli.wit",
        include_str!("../../../guests/python/wit/deps/cli/cli.wit"),
    ),
    (
        "deps/sockets/sockets.wit",
        include_str!("../../../guests/python/wit/deps/sockets/sockets.wit"),
    ),
    (
        "deps/filesystem/filesystem.wit",
        include_str!("../../../guests/python/wit/deps/filesystem/filesystem.wit"),
    ),
    (
        "deps/config/store.wit",
        include_str!("../../../guests/python/wit/deps/config/store.wit"),
    ),
];

#[derive(clap::Args)]
pub struct New {
    /// The project's name, also the component kind it uploads as
    /// (lowercase letters, digits and dashes).
    name: String,
    /// The guest's language.
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    lang: Lang,
    /// Where to create it (default: ./NAME). Must not exist or be empty.
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Js,
    Python,
}

impl Lang {
    /// As `--lang` spells it (clap's own name for the value).
    pub fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .expect("every language is a --lang value")
            .get_name()
            .to_owned()
    }
}

pub fn run(args: New) -> anyhow::Result<()> {
    check_name(&args.name)?;
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    if dir
        .read_dir()
        .is_ok_and(|mut entries| entries.next().is_some())
    {
        bail!("{} exists and is not empty", dir.display());
    }
    for (path, contents) in files(&args.name, args.lang) {
        write(&dir, &path, &contents)?;
    }
    set_executable(&dir.join("build.sh"))?;
    println!(
        "created {}; build and upload it with:\n  cd {} && ./build.sh\n  flowfabric component upload {name} {name}.wasm\n  flowfabric run {name} --input-text world",
        dir.display(),
        dir.display(),
        name = args.name
    );
    Ok(())
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        bail!("`{name}` is not a valid name: use lowercase letters, digits and dashes, starting with a letter");
    }
    Ok(())
}

/// Every file of a new project, as (relative path, contents).
fn files(name: &str, lang: Lang) -> Vec<(String, String)> {
    // The Python and JS worlds include the task contract as a dependency;
    // Rust is built for the contract's own `task` world.
    let contract = match lang {
        Lang::Python | Lang::Js => "wit/deps/task/task.wit",
        Lang::Rust => "wit/task.wit",
    };
    let mut files = vec![
        (contract.to_owned(), WIT.to_owned()),
        (".gitignore".to_owned(), GITIGNORE.to_owned()),
    ];
    let specific: Vec<(&str, String)> = match lang {
        Lang::Rust => vec![
            ("Cargo.toml", RUST_MANIFEST.replace("NAME", name)),
            ("sdk/Cargo.toml", RUST_SDK_MANIFEST.to_owned()),
            (
                "sdk/src/lib.rs",
                relocate_wit(RUST_SDK, "\"../../wit\"", "\"../wit\""),
            ),
            ("sdk/src/http.rs", RUST_SDK_HTTP.to_owned()),
            ("sdk/src/config.rs", RUST_SDK_CONFIG.to_owned()),
            ("sdk/src/steps.rs", RUST_SDK_STEPS.to_owned()),
            ("sdk/wit/config/store.wit", CONFIG_WIT.to_owned()),
            ("src/lib.rs", RUST_TASK.to_owned()),
            (
                "build.sh",
                RUST_BUILD
                    .replace("NAME_LIB", &name.replace('-', "_"))
                    .replace("NAME", name),
            ),
        ],
        Lang::Js => {
            // The WASI packages the JS world imports, shared with Python's.
            let js_deps = [
                "deps/config/",
                "deps/filesystem/",
                "deps/io/",
                "deps/clocks/",
            ];
            files.extend(
                PYTHON_WIT
                    .iter()
                    .filter(|(path, _)| js_deps.iter().any(|d| path.starts_with(d)))
                    .map(|(path, wit)| (format!("wit/{path}"), (*wit).to_owned())),
            );
            vec![
                ("package.json", JS_PACKAGE.replace("NAME", name)),
                ("build.mjs", JS_BUILD.to_owned()),
                ("wit/world.wit", JS_WIT.to_owned()),
                ("flowfabric.js", JS_SDK.to_owned()),
                ("task.js", JS_TASK.to_owned()),
                ("build.sh", JS_BUILD_SH.replace("NAME", name)),
            ]
        }
        Lang::Python => {
            files.extend(
                PYTHON_WIT
                    .iter()
                    .map(|(path, wit)| (format!("wit/{path}"), (*wit).to_owned())),
            );
            vec![
                ("flowfabric.py", PYTHON_SDK.to_owned()),
                ("app.py", PYTHON_TASK.to_owned()),
                ("build.sh", PYTHON_BUILD_SH.replace("NAME", name)),
            ]
        }
    };
    files.extend(specific.into_iter().map(|(p, c)| (p.to_owned(), c)));
    files
}

/// The SDKs find the WIT two levels up in this repository; a project keeps it
/// in its own `wit/`.
fn relocate_wit(source: &str, from: &str, to: &str) -> String {
    assert!(
        source.contains(from),
        "the embedded SDK no longer names {from}"
    );
    source.replacen(from, to, 1)
}

fn write(dir: &Path, relative: &str, contents: &str) -> anyhow::Result<()> {
    let path = dir.join(relative);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))
}

fn set_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", path.display()))
}

const GITIGNORE: &str = "target/\nnode_modules/\n__pycache__/\n*.wasm\n";

const RUST_MANIFEST: &str = r#"[package]
name = "NAME"
version = "0.1.0"
edition = "2021"

[lib]
crate-type = ["cdylib"]

[dependencies]
flowfabric-guest = { path = "sdk" }

# A workspace of its own: built for wasm32-wasip2 by build.sh.
[workspace]

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true
panic = "abort"
"#;

const RUST_SDK_MANIFEST: &str = r#"[package]
name = "flowfabric-guest"
version = "0.1.0"
edition = "2021"

[dependencies]
wit-bindgen = "0.63"
wasip2 = "2"
serde = "1"
serde_json = "1"
"#;

const RUST_TASK: &str = r#"//! A FlowFabric task: greets its input, reporting progress and one frame;
//! the greeting is a durable step, made once however often the task runs.

use flowfabric_guest::{export_task, Task, TaskError};

struct Greet;

impl Task for Greet {
    fn run(input: Vec<u8>) -> Result<Vec<u8>, TaskError> {
        let name = String::from_utf8(input)
            .map_err(|_| TaskError::permanent("the input is not UTF-8"))?;
        flowfabric_guest::progress(50, "greeting")?;
        flowfabric_guest::frame("greeting", name.as_bytes())?;

        // Beyond its input a task reaches only what its kind is granted
        // (see `flowfabric grant set --help`):
        //
        // Outbound HTTP, after `flowfabric grant set KIND --http https://api.example.com`:
        //     let reply = flowfabric_guest::http::get("https://api.example.com/v1/status")?;
        //     let status = reply.status;
        //
        // A config value or secret, after `flowfabric config set API_TOKEN --secret`
        // and `flowfabric grant set KIND --config API_TOKEN`:
        //     let token = flowfabric_guest::config::get("API_TOKEN");
        //
        // A directory of the attempt's own, removed when it ends, after
        // `flowfabric grant set KIND --scratch-bytes 67108864`:
        //     std::fs::write("/scratch/report.csv", &rows)
        //         .map_err(|e| TaskError::transient(e.to_string()))?;
        //
        // Faster runs: `--reuse-instances` in the kind's `grant set` (if the
        // operator allows it) runs attempts on a kept instance instead of a
        // fresh one each; statics then carry over from one attempt to the next.
        //
        // A side effect in a durable step happens once per execution, even
        // when the task runs again after a retry or a suspension:
        let greeting: String = flowfabric_guest::step("greet", || Ok(format!("hello, {name}")))?;
        // flowfabric_guest::sleep(std::time::Duration::from_secs(60))?; // durable
        Ok(greeting.into_bytes())
    }
}

export_task!(Greet);
"#;

const RUST_BUILD: &str = r#"#!/usr/bin/env bash
# Builds NAME.wasm with cargo, adding the wasm32-wasip2 target on first use.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v cargo >/dev/null; then
  echo "error: cargo is missing: install Rust from https://rustup.rs, then run ./build.sh again" >&2
  exit 1
fi
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "adding the wasm32-wasip2 target (once)…"
  rustup target add wasm32-wasip2
fi
echo "building NAME.wasm…"
cargo build --release --target wasm32-wasip2
cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/NAME_LIB.wasm" NAME.wasm
echo "built NAME.wasm"
"#;

const JS_PACKAGE: &str = r#"{
  "name": "NAME",
  "private": true,
  "type": "module",
  "scripts": {
    "build": "node build.mjs task.js NAME.wasm"
  },
  "devDependencies": {
    "@bytecodealliance/componentize-js": "0.23.0",
    "@bytecodealliance/preview2-shim": "0.25.0"
  }
}
"#;

const JS_TASK: &str = r#"// A FlowFabric task: greets its input, reporting progress and one frame;
// the greeting is a durable step, made once however often the task runs.
import { task, progress, frame, step, text, TaskFailure } from "./flowfabric.js";

export const run = task(async (input) => {
  const name = text(input);
  if (name.length === 0) throw new TaskFailure("the input is empty", { permanent: true });
  progress(50, "greeting");
  frame("greeting", name);

  // Beyond its input a task reaches only what its kind is granted
  // (see `flowfabric grant set --help`):
  //
  // Outbound HTTP, after `flowfabric grant set KIND --http https://api.example.com`:
  //     const reply = await fetch("https://api.example.com/v1/status");
  //
  // A config value or secret, after `flowfabric config set API_TOKEN --secret`
  // and `flowfabric grant set KIND --config API_TOKEN`:
  //     const token = config.get("API_TOKEN"); // undefined when not granted
  //     (import `config` from "./flowfabric.js")
  //
  // Faster runs (about ten times for JavaScript): `--reuse-instances` in the
  // kind's `grant set` (if the operator allows it) runs attempts on a kept
  // instance instead of a fresh one each; module state then carries over.
  //
  // sleep(60_000); // a durable sleep: the run resumes here a minute later
  return await step("greet", async () => `hello, ${name}`);
});
"#;

const JS_BUILD_SH: &str = r#"#!/usr/bin/env bash
# Builds NAME.wasm with componentize-js, installing it (pinned in
# package.json) into node_modules on first use. Needs Node.js 20 or newer.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "error: Node.js 20 or newer with npm is needed: https://nodejs.org, then run ./build.sh again" >&2
  exit 1
fi
if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
  echo "error: Node.js $(node --version) is too old: componentize-js needs 20 or newer" >&2
  exit 1
fi
if [ ! -d node_modules/@bytecodealliance/componentize-js ]; then
  echo "installing componentize-js (once)…"
  npm install --no-audit --no-fund --loglevel=error
fi
echo "building NAME.wasm…"
node build.mjs task.js NAME.wasm
"#;

const PYTHON_TASK: &str = r#""""A FlowFabric task: greets its input, reporting progress and one frame;
the greeting is a durable step, made once however often the task runs."""

import flowfabric
from flowfabric import TaskFailure


def greet(input: bytes) -> bytes:
    name = input.decode()
    if not name:
        raise TaskFailure("the input is empty", permanent=True)
    flowfabric.progress(50, "greeting")
    flowfabric.frame("greeting", name.encode())

    # Beyond its input a task reaches only what its kind is granted
    # (see `flowfabric grant set --help`):
    #
    # Outbound HTTP, after `flowfabric grant set KIND --http https://api.example.com`:
    #     reply = flowfabric.http.get("https://api.example.com/v1/status")
    #     status = reply.status
    #
    # A config value or secret, after `flowfabric config set API_TOKEN --secret`
    # and `flowfabric grant set KIND --config API_TOKEN`:
    #     token = flowfabric.config.get("API_TOKEN")  # None when not granted
    #
    # A directory of the attempt's own, removed when it ends, after
    # `flowfabric grant set KIND --scratch-bytes 67108864`:
    #     with open(f"{flowfabric.scratch.path()}/report.csv", "w") as f:
    #         f.write(rows)
    #
    # Faster runs (many times for Python): `--reuse-instances` in the kind's
    # `grant set` (if the operator allows it) runs attempts on a kept instance
    # instead of a fresh one each; module globals then carry over.
    #
    # flowfabric.sleep(60)  # a durable sleep: the run resumes here a minute later
    return flowfabric.step("greet", lambda: f"hello, {name}").encode()


WitWorld = flowfabric.task(greet)
"#;

const PYTHON_BUILD_SH: &str = r#"#!/usr/bin/env bash
# Builds NAME.wasm with componentize-py 0.25.1: the one $COMPONENTIZE_PY names,
# else the one in the tools cache, installed there on first use (a Python
# virtual environment under ${FLOWFABRIC_TOOLS_DIR:-~/.cache/flowfabric/tools}).
set -euo pipefail
cd "$(dirname "$0")"
version=0.25.1
py=${COMPONENTIZE_PY:-}
if [ -z "$py" ]; then
  tools=${FLOWFABRIC_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/flowfabric/tools}
  venv=$tools/componentize-py-$version
  py=$venv/bin/componentize-py
  if [ ! -x "$py" ]; then
    if ! command -v python3 >/dev/null; then
      echo "error: python3 is needed to install componentize-py: install Python 3.10 or newer, then run ./build.sh again" >&2
      exit 1
    fi
    echo "installing componentize-py $version into $venv (once)…"
    mkdir -p "$tools"
    if ! python3 -m venv "$venv"; then
      rm -rf "$venv"
      echo "error: python3 -m venv failed (on Debian and Ubuntu: apt install python3-venv)" >&2
      exit 1
    fi
    if ! "$venv/bin/pip" install -q "componentize-py==$version"; then
      rm -rf "$venv"
      echo "error: could not install componentize-py $version from PyPI (is the network reachable?)" >&2
      exit 1
    fi
  fi
fi
echo "building NAME.wasm…"
"$py" -d wit -w task-python componentize app -o NAME.wasm
echo "built NAME.wasm"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["hello", "a1", "my-task-2"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Hello", "1task", "my_task", "a/b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_language_relocates_its_wit_and_names_itself() {
        for lang in [Lang::Rust, Lang::Js, Lang::Python] {
            let files = files("my-task", lang);
            let all: String = files.iter().map(|(_, c)| c.as_str()).collect();
            assert!(
                !all.contains("../../wit"),
                "a path into this repository leaked"
            );
            // (WIT files are copied as they are: WASI's docs say `ENAMETOOLONG`.)
            let ours: String = files
                .iter()
                .filter(|(p, _)| !p.ends_with(".wit"))
                .map(|(_, c)| c.as_str())
                .collect();
            assert!(!ours.contains("NAME"), "a placeholder was left");
            assert!(files
                .iter()
                .any(|(p, _)| p == "wit/task.wit" || p == "wit/deps/task/task.wit"));
        }
    }
}
