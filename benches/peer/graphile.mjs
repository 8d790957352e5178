// graphile-worker, the peer baseline: enqueue N no-op jobs in one statement,
// then time a runner with the given concurrency until the queue is empty.
// Usage: node graphile.mjs <database-url> <jobs> <concurrency>
// Prints one JSON line: {"jobs", "concurrency", "enqueue_per_s", "process_per_s"}.
import { run, runMigrations } from "graphile-worker";
import pg from "pg";

const [url, jobsArg, concurrencyArg] = process.argv.slice(2);
const jobs = Number(jobsArg ?? 5000);
const concurrency = Number(concurrencyArg ?? 4);
const pool = new pg.Pool({ connectionString: url, max: concurrency + 2 });

await runMigrations({ pgPool: pool });
await pool.query("DELETE FROM graphile_worker._private_jobs");

let started = process.hrtime.bigint();
await pool.query(
  "SELECT graphile_worker.add_job('noop', json_build_object('i', i)) FROM generate_series(1, $1) i",
  [jobs],
);
const enqueueSeconds = Number(process.hrtime.bigint() - started) / 1e9;

let done = 0;
let finish;
const finished = new Promise((resolve) => (finish = resolve));
started = process.hrtime.bigint();
const runner = await run({
  pgPool: pool,
  concurrency,
  noHandleSignals: true,
  pollInterval: 1000,
  logger: new (await import("graphile-worker")).Logger(() => () => {}),
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
await runner.stop();
await pool.end();
console.log(
  JSON.stringify({
    jobs,
    concurrency,
    enqueue_per_s: jobs / enqueueSeconds,
    process_per_s: jobs / processSeconds,
  }),
);
