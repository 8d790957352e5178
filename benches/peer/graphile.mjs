// graphile-worker, the peer baseline: enqueue N no-op jobs in one statement,
// then time a runner with the given concurrency until the queue is empty.
// Usage: node graphile.mjs <database-url> <jobs> <concurrency> [default|batched]
//   default: graphile-worker's defaults (each worker fetches and completes
//            its own jobs, one statement each);
//   batched: its documented high-throughput configuration — a local queue
//            fetching and locking jobs in batches (`localQueue.size`, the
//            LOCAL_QUEUE_SIZE environment variable, default 500) and batched
//            completion (`completeJobBatchDelay: 0`, `failJobBatchDelay: 0`).
// Prints one JSON line: {"mode", "jobs", "concurrency", "enqueue_per_s",
// "process_per_s", "server_cost"}; with SERVER_COST=1, server_cost holds what
// each job cost the server (WAL bytes, transactions, rows written, server
// CPU, and statements when the server loads pg_stat_statements), read the way `flowfabric bench pool --server-cost` reads them, and
// the CPU this Node process spent (client_cpu_us).
import { readdirSync, readFileSync } from "node:fs";
import { run, runMigrations, Logger } from "graphile-worker";
import pg from "pg";

const [url, jobsArg, concurrencyArg, mode = "default"] = process.argv.slice(2);
const jobs = Number(jobsArg ?? 5000);
const concurrency = Number(concurrencyArg ?? 4);
if (!["default", "batched"].includes(mode)) throw new Error(`unknown mode ${mode}`);
const localQueueSize = Number(process.env.LOCAL_QUEUE_SIZE ?? 500);
const measureCost = process.env.SERVER_COST === "1";
const pool = new pg.Pool({ connectionString: url, max: concurrency + 2 });
pool.on("error", (e) => console.error(`graphile bench: idle client error: ${e.message}`));

await runMigrations({ pgPool: pool });
await pool.query("DELETE FROM graphile_worker._private_jobs");

let started = process.hrtime.bigint();
await pool.query(
  "SELECT graphile_worker.add_job('noop', json_build_object('i', i)) FROM generate_series(1, $1) i",
  [jobs],
);
const enqueueSeconds = Number(process.hrtime.bigint() - started) / 1e9;

// The server's counters: what `bench pool --server-cost` reads (see dbcost.rs).
const settle = () => new Promise((r) => setTimeout(r, 10_500));
function cpuTicks() {
  let ticks = 0;
  for (const pid of readdirSync("/proc")) {
    let stat;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    } catch {
      continue;
    }
    const open = stat.indexOf("("), close = stat.lastIndexOf(")");
    if (open < 0 || stat.slice(open + 1, close) !== "postgres") continue;
    // utime, stime, cutime, cstime: the postmaster's c-times hold the
    // backends that exited.
    const fields = stat.slice(close + 2).split(" ");
    ticks += [11, 12, 13, 14].reduce((sum, i) => sum + Number(fields[i]), 0);
  }
  return ticks;
}
async function counters(cpu) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  // Before the wait, so that what it writes settles outside the stretch.
  const countsStatements = await offerStatementCounts(client);
  await settle();
  const { rows } = await client.query(
    `SELECT pg_current_wal_lsn()::text AS lsn, xact_commit + xact_rollback AS xacts,
            tup_inserted + tup_updated + tup_deleted AS rows
     FROM pg_stat_database WHERE datname = current_database()`,
  );
  let statements = null;
  if (countsStatements) {
    const { rows: calls } = await client.query(
      `SELECT coalesce(sum(calls), 0)::bigint AS n FROM pg_stat_statements
       WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())`,
    );
    statements = Number(calls[0].n);
  }
  await client.end();
  return { ...rows[0], statements, cpu };
}
// Statements the clients sent, from pg_stat_statements when the server loads
// it: made readable in this database; whether it is.
async function offerStatementCounts(client) {
  const { rows } = await client.query(
    "SELECT current_setting('shared_preload_libraries', true) AS libs",
  );
  if (!(rows[0].libs ?? "").split(",").some((l) => l.trim() === "pg_stat_statements")) return false;
  await client.query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
  return true;
}
// The server's CPU is sampled once the counters settled, as the work starts:
// sampled before the wait, it would count what the server did meanwhile.
const before = measureCost ? await counters(null) : null;
if (before) before.cpu = cpuTicks();
const ownBefore = process.cpuUsage();

const preset =
  mode === "batched"
    ? {
        worker: {
          localQueue: { size: localQueueSize },
          completeJobBatchDelay: 0,
          failJobBatchDelay: 0,
        },
      }
    : undefined;
let done = 0;
let finish;
const finished = new Promise((resolve) => (finish = resolve));
started = process.hrtime.bigint();
const runner = await run({
  pgPool: pool,
  concurrency,
  noHandleSignals: true,
  pollInterval: 1000,
  preset,
  logger: new Logger(() => () => {}),
  taskList: {
    noop: async () => {
      done += 1;
      if (done === jobs) finish();
    },
  },
});
await finished;
// Jobs are deleted on completion; wait for the last deletions to land.
for (;;) {
  const { rows } = await pool.query("SELECT count(*)::int AS n FROM graphile_worker._private_jobs");
  if (rows[0].n === 0) break;
  await new Promise((r) => setTimeout(r, 5));
}
const processSeconds = Number(process.hrtime.bigint() - started) / 1e9;
const cpuAfter = cpuTicks();
const ownSpent = process.cpuUsage(ownBefore);
await runner.stop();
let serverCost = null;
if (before) {
  const after = await counters(cpuAfter);
  const { rows } = await pool.query("SELECT pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)::float8 AS wal", [
    after.lsn,
    before.lsn,
  ]);
  const ticksPerSecond = 100; // USER_HZ on Linux
  serverCost = {
    wal_bytes: rows[0].wal / jobs,
    transactions: (after.xacts - before.xacts) / jobs,
    statements:
      after.statements === null || before.statements === null
        ? null
        : (after.statements - before.statements) / jobs,
    rows_written: (after.rows - before.rows) / jobs,
    server_cpu_us: ((after.cpu - before.cpu) / ticksPerSecond) * 1e6 / jobs,
    client_cpu_us: (ownSpent.user + ownSpent.system) / jobs,
  };
}
await pool.end();
console.log(
  JSON.stringify({
    mode,
    jobs,
    concurrency,
    local_queue_size: mode === "batched" ? localQueueSize : null,
    enqueue_per_s: jobs / enqueueSeconds,
    process_per_s: jobs / processSeconds,
    server_cost: serverCost,
  }),
);
