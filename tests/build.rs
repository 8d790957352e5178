//! Builds the guests in `../guests` for `wasm32-wasip2`, so the tests always run
//! the components of the checked-out source. Exposes their directory as
//! `FLOWFABRIC_GUESTS_DIR`.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap();
    let guests = root.join("guests");
    for path in [
        "guests/Cargo.toml",
        "guests/Cargo.lock",
        "guests/sdk",
        "guests/echo",
        "guests/noop",
        "guests/testkit",
        "wit",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
    let target_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("guests-target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&guests)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    // The outer build's settings (target dir, flags, profile) must not leak in.
    for (key, _) in std::env::vars() {
        if (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || key.starts_with("RUSTC")
            || key == "RUSTFLAGS"
        {
            cmd.env_remove(key);
        }
    }
    let status = cmd.status().expect("run cargo for the guests");
    assert!(
        status.success(),
        "building the guests failed; is the target installed? (rustup target add wasm32-wasip2)"
    );
    println!(
        "cargo:rustc-env=FLOWFABRIC_GUESTS_DIR={}",
        target_dir.join("wasm32-wasip2/release").display()
    );
}
