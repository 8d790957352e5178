//! Starting (or finding) the Postgres server for a test run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// `postgres://user@host:port` of the server for this test run, without a
/// database name. Started on first use.
pub fn server_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let url = match std::env::var("FLOWFABRIC_TEST_DATABASE_URL") {
            Ok(url) => url.trim_end_matches('/').to_owned(),
            Err(_) => start_throwaway_cluster(),
        };
        // A private runtime: the pools of each test's runtime must not outlive it.
        let u = url.clone();
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(super::template::prepare_template(&u))
        })
        .join()
        .expect("prepare template");
        url
    })
    .clone()
}

fn start_throwaway_cluster() -> String {
    // Lives as long as the test process: the watchdog, not `Drop`, stops and
    // deletes it once the process has exited.
    let cluster = std::mem::ManuallyDrop::new(Cluster::init());
    cluster.start();
    spawn_watchdog(&cluster.dir, &cluster.data, cluster.as_root);
    cluster.url()
}

/// A Postgres cluster of one's own, for tests that stop or restart the server
/// (the shared one serves every other test of the process). Stopped and
/// deleted on drop.
pub struct Cluster {
    dir: PathBuf,
    data: PathBuf,
    port: u16,
    as_root: bool,
    /// Acknowledged commits survive a server crash (`synchronous_commit=on`).
    /// The shared cluster trades that for speed: it is never crashed.
    crash_safe: bool,
}

impl Cluster {
    /// A running cluster with the test template prepared, like the shared one,
    /// but crash-safe: with `synchronous_commit=off`, an immediate stop loses
    /// commits already acknowledged (up to ~0.6 s of them), which no engine can
    /// survive and which a real server is not configured to do. `fsync` stays
    /// off: the WAL is written before a commit returns, and a server crash
    /// (unlike a machine crash) keeps what the kernel was given.
    pub async fn start_private() -> Self {
        let mut cluster = Self::init();
        cluster.crash_safe = true;
        cluster.start();
        super::template::prepare_template(&cluster.url()).await;
        cluster
    }

    fn init() -> Self {
        let dir = tempdir();
        let as_root = is_root();
        if as_root {
            run(Command::new("chown").args(["postgres:postgres"]).arg(&dir));
        }
        let data = dir.join("data");
        run(pg(as_root, "initdb").arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]));
        Self {
            dir,
            data,
            port: free_port(),
            as_root,
            crash_safe: false,
        }
    }

    /// `postgres://user@host:port`, without a database name.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    fn start(&self) {
        let synchronous_commit = if self.crash_safe { "on" } else { "off" };
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off \
             -c synchronous_commit={synchronous_commit} -c full_page_writes=off \
             -c max_connections=400",
            self.port,
            self.dir.display()
        );
        run(pg(self.as_root, "pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-w", "-t", "30", "-o", &opts, "start"]));
    }

    /// Stop the server at once (every connection drops, as in a crash), then
    /// start it again on the same port after `down`.
    pub async fn restart(&self, down: std::time::Duration) {
        self.stop();
        tokio::time::sleep(down).await;
        self.start();
    }

    fn stop(&self) {
        run(pg(self.as_root, "pg_ctl").arg("-D").arg(&self.data).args([
            "-m",
            "immediate",
            "-w",
            "stop",
        ]));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = pg(self.as_root, "pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pg(as_root: bool, tool: &str) -> Command {
    let exe = format!("{PG_BIN}/{tool}");
    if as_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", &exe]);
        c
    } else {
        Command::new(exe)
    }
}

/// Stop and delete the cluster once this test process has exited.
fn spawn_watchdog(dir: &Path, data: &Path, as_root: bool) {
    let stop = if as_root {
        format!(
            "runuser -u postgres -- {PG_BIN}/pg_ctl -D {} -m immediate -w stop",
            data.display()
        )
    } else {
        format!("{PG_BIN}/pg_ctl -D {} -m immediate -w stop", data.display())
    };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
        pid = std::process::id(),
        dir = dir.display()
    );
    // `setsid -f` forks the watchdog into its own session and returns at once.
    Command::new("setsid")
        .args(["-f", "sh", "-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("spawn postgres watchdog");
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("flowfabric-pg-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
