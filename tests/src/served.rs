//! `flowfabric serve` in a process of its own over a test database: what an
//! operator runs, for tests that watch the process from outside (its exit
//! code, its memory, its connections).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

pub struct ServedProcess {
    pub process: tokio::process::Child,
    /// `http://127.0.0.1:port` the API listens on.
    pub url: String,
    /// Everything the process wrote to stderr (its log) so far.
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

/// The config sealing keys every test process is given, so none of them
/// writes a key file into the working directory.
pub const TEST_CONFIG_KEYS: &str = "test=dGVzdC1vbmx5LWNvbmZpZy1zZWFsaW5nLWtleS0zMmI=";

impl ServedProcess {
    /// Start `bin serve` on a free loopback port with `args` appended, over
    /// `database_url`, with `admin_token`; returns once it serves.
    pub async fn start(bin: &str, database_url: &str, admin_token: &str, args: &[&str]) -> Self {
        let mut process = tokio::process::Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("DATABASE_URL", database_url)
            .env("FLOWFABRIC_ADMIN_TOKEN", admin_token)
            .env("FLOWFABRIC_CONFIG_KEYS", TEST_CONFIG_KEYS)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the server");
        let mut lines = tokio::io::BufReader::new(process.stderr.take().unwrap()).lines();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                log.lock().unwrap().push_str(&format!("{line}\n"));
                if let Some(rest) = line.strip_prefix("serving on ") {
                    return rest.split_whitespace().next().unwrap().to_owned();
                }
            }
            panic!("the server exited before serving");
        })
        .await
        .expect("the server starts within 60 s");
        // Keep draining stderr so the server never blocks on a full pipe.
        let kept = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                kept.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        Self { process, url, log }
    }

    /// Resident memory of the process, in bytes (Linux `/proc`).
    pub fn rss_bytes(&self) -> u64 {
        let pid = self.process.id().expect("the server is running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS in /proc status");
        kib * 1024
    }
}
