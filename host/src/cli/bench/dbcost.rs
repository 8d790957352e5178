//! What a stretch of work cost the Postgres server: WAL bytes, transactions,
//! statements, rows written and server CPU, read before and after it; and,
//! beside it, the CPU the bench's own process spent (the worker pool, the
//! runtime and the engine's side of every statement).
//!
//! Jobs per second depend on the machine; these per-execution figures do
//! not, and they are what to set beside a peer's per job
//! (`scripts/bench-peer.sh` reads the same counters around graphile-worker).
//! WAL bytes come from `pg_current_wal_lsn()` and are exact for the whole
//! server; transactions and rows from the database's `pg_stat_database` row,
//! which a backend publishes at most once a second while busy and within ten
//! seconds of going idle, so the counters are read only after
//! [`STATS_SETTLE`] of quiet; statements (those the clients sent, not what
//! triggers and functions ran inside them) from `pg_stat_statements`, when
//! the server loads it (`shared_preload_libraries`; none reported when it
//! does not); CPU is the user + system time of every
//! `postgres` process on this host (the bench and the server must share it)
//! plus what their exited children used (the postmaster's `cutime` and
//! `cstime` hold the backends that closed), sampled from `/proc` when the
//! work starts and ends. On a machine the server and the client share, the
//! two CPU figures together bound the jobs a second: a job can go no faster
//! than its CPU, theirs and ours, spread over the cores.

use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::PgPoolOptions;

/// How long idle backends may take to publish their counters.
pub const STATS_SETTLE: Duration = Duration::from_millis(10_500);

/// The server's counters around one stretch of work: CPU sampled when it
/// started or ended, the rest read once the counters settled.
#[derive(Debug, Clone)]
pub struct Snapshot {
    lsn: String,
    xacts: i64,
    statements: Option<i64>,
    rows: i64,
    cpu: CpuSample,
}

/// The CPU spent so far by the server and by this process.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    server_ticks: u64,
    own: Duration,
}

impl CpuSample {
    /// Microseconds of CPU every `postgres` process on this host spent since
    /// `before` (at the kernel's tick, 10 ms on most systems, per process).
    pub fn server_us_since(&self, before: &CpuSample) -> f64 {
        // SAFETY: sysconf only reads a constant of the running system.
        let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let ticks = self.server_ticks.saturating_sub(before.server_ticks) as f64;
        ticks / ticks_per_s * 1e6
    }
}

/// The CPU spent so far, for a [`snapshot`] taken a little later.
pub fn cpu_now() -> CpuSample {
    CpuSample {
        server_ticks: postgres_cpu_ticks(),
        own: own_cpu(),
    }
}

/// What happened between two snapshots, per execution.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct PerExecution {
    pub wal_bytes: f64,
    pub transactions: f64,
    /// Statements the clients sent; `None` when the server does not load
    /// `pg_stat_statements`.
    pub statements: Option<f64>,
    pub rows_written: f64,
    pub server_cpu_us: f64,
    /// The CPU this process spent (user + system, all threads).
    pub client_cpu_us: f64,
}

/// Before a stretch of work: the counters of the database `url` names, read
/// once they settled, and the CPU sampled last, as the work is about to
/// start (a sample taken before the wait would count what the server did
/// while settling, autovacuum of a fresh backlog included).
pub async fn before_work(url: &str) -> anyhow::Result<Snapshot> {
    settled(url, None).await
}

/// After a stretch of work: the CPU sampled (by [`cpu_now`]) when it ended,
/// the rest read once the counters settled.
pub async fn after_work(url: &str, cpu_at_end: CpuSample) -> anyhow::Result<Snapshot> {
    settled(url, Some(cpu_at_end)).await
}

/// Wait for the counters to settle, then read them, with `cpu` beside them
/// (sampled last, once they are read, when not given).
async fn settled(url: &str, cpu: Option<CpuSample>) -> anyhow::Result<Snapshot> {
    let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
    // Before the wait, so that what it writes settles outside the stretch.
    let counts_statements = offer_statement_counts(&pool).await;
    tokio::time::sleep(STATS_SETTLE).await;
    let (lsn, xacts, rows): (String, i64, i64) = sqlx::query_as(
        "SELECT pg_current_wal_lsn()::text, xact_commit + xact_rollback, \
                tup_inserted + tup_updated + tup_deleted \
         FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&pool)
    .await
    .context("reading the server's counters")?;
    let statements = match counts_statements {
        true => Some(statements_run(&pool).await?),
        false => None,
    };
    pool.close().await;
    Ok(Snapshot {
        lsn,
        xacts,
        statements,
        rows,
        cpu: cpu.unwrap_or_else(cpu_now),
    })
}

/// Makes `pg_stat_statements` readable in the database, if the server loads
/// it; whether it does.
async fn offer_statement_counts(pool: &sqlx::PgPool) -> bool {
    let loaded: Option<String> =
        sqlx::query_scalar("SELECT current_setting('shared_preload_libraries', true)")
            .fetch_one(pool)
            .await
            .ok()
            .flatten();
    if !loaded.is_some_and(|l| l.split(',').any(|l| l.trim() == "pg_stat_statements")) {
        return false;
    }
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(pool)
        .await
        .is_ok()
}

/// Top-level statements run in this database so far.
async fn statements_run(pool: &sqlx::PgPool) -> anyhow::Result<i64> {
    sqlx::query_scalar(
        "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements \
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(pool)
    .await
    .context("reading pg_stat_statements")
}

impl Snapshot {
    /// The cost from `before` to this snapshot, divided over `executions`.
    pub async fn since(
        &self,
        before: &Snapshot,
        url: &str,
        executions: usize,
    ) -> anyhow::Result<PerExecution> {
        let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
        let (wal,): (f64,) =
            sqlx::query_as("SELECT pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)::float8")
                .bind(&self.lsn)
                .bind(&before.lsn)
                .fetch_one(&pool)
                .await?;
        pool.close().await;
        let n = executions.max(1) as f64;
        let own = self.cpu.own.saturating_sub(before.cpu.own);
        Ok(PerExecution {
            wal_bytes: wal / n,
            transactions: (self.xacts - before.xacts) as f64 / n,
            statements: self
                .statements
                .zip(before.statements)
                .map(|(after, before)| (after - before) as f64 / n),
            rows_written: (self.rows - before.rows) as f64 / n,
            server_cpu_us: self.cpu.server_us_since(&before.cpu) / n,
            client_cpu_us: own.as_secs_f64() * 1e6 / n,
        })
    }
}

/// User + system time of this process, every thread of it.
fn own_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one `rusage` into the pointer it is given.
    let usage = match unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } {
        0 => unsafe { usage.assume_init() },
        _ => return Duration::ZERO,
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// User + system ticks of every `postgres` process and its exited children.
fn postgres_cpu_ticks() -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|stat| process_ticks(&stat))
        .sum()
}

/// utime + stime + cutime + cstime of one `/proc/PID/stat` line, if the
/// process is Postgres.
fn process_ticks(stat: &str) -> Option<u64> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    if &stat[open + 1..close] != "postgres" {
        return None;
    }
    // After the name: state is field 3; utime, stime, cutime and cstime are
    // fields 14 to 17.
    let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
    fields
        .get(11..15)?
        .iter()
        .map(|f| f.parse::<u64>().ok())
        .sum::<Option<u64>>()
}

#[cfg(test)]
mod tests {
    /// A spinning thread's CPU shows, however the machine shares its
    /// cores (only a generous wall-clock bound, for a reading that never
    /// moves).
    #[test]
    fn own_cpu_counts_a_busy_thread() {
        let before = super::own_cpu();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut x = 0u64;
        while super::own_cpu().saturating_sub(before) < std::time::Duration::from_millis(15) {
            assert!(std::time::Instant::now() < deadline, "no CPU counted");
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
    }

    #[test]
    fn reads_ticks_of_postgres_processes_only() {
        let line = "42 (postgres) S 1 42 42 0 -1 4194560 100 0 0 0 17 5 3 1 20 0 1 0 100 0 0";
        assert_eq!(super::process_ticks(line), Some(26));
        let other = "43 (node) S 1 43 43 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 1 0 100 0 0";
        assert_eq!(super::process_ticks(other), None);
    }
}
