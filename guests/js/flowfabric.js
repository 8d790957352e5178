// FlowFabric's JavaScript guest SDK: a thin layer over the `flowfabric:task`
// imports, so a task is an ordinary function `Uint8Array -> Uint8Array`:
//
//   import { task, frame } from "./flowfabric.js";
//   export const run = task((input) => { frame("log", "hello"); return input; });
//
// Throw `TaskFailure` to fail the attempt (transient failures are retried by
// the execution's policy, permanent ones never are). A refused host call
// throws `HostFailure`; left uncaught it fails the attempt as transient.
//
// `fetch` reaches the origins the component's kind is granted (see
// `flowfabric grant set`); any other request fails. `config.get(name)` reads
// a config value or secret the kind is granted by name (`undefined` when it
// is absent or not granted). `scratch` reads and writes the attempt's own
// directory when the kind is granted scratch bytes.
//
// Side effects that must happen once per execution go in durable steps, and
// `sleep` waits durably (the handler may be async):
//
//   export const run = task(async (input) => {
//     const receipt = await step("charge", async () => charge(input));
//     sleep(60_000);
//     return JSON.stringify(receipt);
//   });
import * as host from "flowfabric:task/claimed-task@0.1.0";
import * as store from "wasi:config/store@0.2.0-rc.1";
import { getDirectories } from "wasi:filesystem/preopens@0.2.12";
import { filesystemErrorCode } from "wasi:filesystem/types@0.2.12";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export class TaskFailure extends Error {
  constructor(message, { permanent = false } = {}) {
    super(message);
    this.permanent = permanent;
  }
}

export class HostFailure extends Error {
  constructor(kind, detail) {
    super(detail ? `${kind}: ${detail}` : kind);
    this.kind = kind;
    this.detail = detail ?? "";
  }
}

// The component model's errors arrive as thrown values carrying `payload`
// (a `host-error` variant: `{ tag, val }`).
function call(fn, ...args) {
  try {
    return fn(...args);
  } catch (e) {
    const err = e?.payload ?? e;
    if (err && typeof err.tag === "string") throw new HostFailure(err.tag, err.val);
    throw e;
  }
}

const bytes = (payload) => (typeof payload === "string" ? encoder.encode(payload) : payload);
const optionalMs = (ms) => (ms === undefined || ms === null ? undefined : BigInt(ms));

export const text = (payload) => decoder.decode(payload);
export const info = () => host.info();
export const leaseHealthy = () => host.leaseHealthy();
export const renewalFailures = () => host.renewalFailures();
export const resumeSignals = () => host.resumeSignals();
export const log = (message) => host.log("info", message);

export function progress(percent, message) {
  call(host.progress, Math.max(0, Math.min(100, percent)), message);
}

/** Append a durable frame; returns its sequence number. */
export function frame(frameType, payload) {
  return Number(call(host.appendFrame, frameType, bytes(payload), "durable"));
}

/** Merge a JSON object (RFC 7396 merge patch) into the attempt's summary. */
export function summary(frameType, patch) {
  return Number(call(host.appendFrame, frameType, bytes(JSON.stringify(patch)), "summary"));
}

/** Create (or get back) a waitpoint; hand its token to whoever should signal. */
export function waitpoint(key, timeoutMs) {
  return call(host.createWaitpoint, key, optionalMs(timeoutMs));
}

/**
 * Suspend until a signal reaches `key`'s waitpoint. Returns only when signals
 * already buffered satisfy it; otherwise the run stops here and starts again
 * from the top once resumed, with `resumeSignals()` saying what woke it.
 * `{ reason, names }`: a short code operators see (`waiting_for_approval`),
 * and the signal names that count (all when absent).
 */
export function waitFor(key, timeoutMs, { reason, names } = {}) {
  const condition = { tag: "waitpoint", val: key };
  if (reason === undefined && names === undefined) {
    return call(host.suspend, condition, optionalMs(timeoutMs), "fail");
  }
  return call(host.suspendWith, condition, reason, names ?? [], optionalMs(timeoutMs), "fail");
}

/**
 * Run `fn` (sync or async) as the durable step `name`; its result is kept as
 * JSON. A later run of the same execution (after a suspension, a retry or a
 * reclaim) gets the recorded value back without running `fn` again. Steps
 * must be begun in the same order under the same names on every run: a run
 * that asks for another name where the journal recorded one fails with the
 * permanent class `journal_mismatch`. A permanent `TaskFailure` is recorded
 * and thrown again on later runs; any other error is not recorded, so the
 * retry runs the step again.
 */
export async function step(name, fn) {
  const start = call(host.stepBegin, name);
  if (start.tag === "completed") return JSON.parse(decoder.decode(start.val));
  if (start.tag === "failed") throw new TaskFailure(start.val, { permanent: true });
  const position = start.val;
  let value;
  try {
    value = await fn();
  } catch (e) {
    if (e instanceof TaskFailure && e.permanent) {
      call(host.stepRecord, position, { tag: "failed", val: e.message });
    }
    throw e;
  }
  const json = JSON.stringify(value === undefined ? null : value);
  call(host.stepRecord, position, { tag: "completed", val: encoder.encode(json) });
  return JSON.parse(json);
}

/**
 * Sleep durably for `ms` milliseconds: the first time, the run stops here
 * and the execution suspends holding nothing; at the wake time the run
 * starts again from the top and this same call returns at once.
 */
export function sleep(ms) {
  call(host.sleep, BigInt(ms));
}

/**
 * Park this execution for `ms` milliseconds (1 ms to 30 days), for example
 * after an upstream's `Retry-After`. Does not return when it succeeds: a new
 * attempt (type `delayed`) starts the handler from the top at that time, with
 * the steps recorded so far kept. Not counted as a retry.
 */
export function delay(ms) {
  call(host.delay, BigInt(ms));
}

/** End this execution for good as `cancelled`, with `reason`. Does not return. */
export function cancel(reason) {
  call(host.cancel, String(reason));
}

// A thrown value as the `task-error` the component model expects.
function taskError(e) {
  if (e instanceof TaskFailure) {
    return { payload: { class: e.permanent ? "permanent" : "transient", message: e.message } };
  }
  const message = e instanceof HostFailure ? `host call failed: ${e.message}` : String(e);
  return { payload: { class: "transient", message } };
}

/**
 * The `run` export, calling `handler(input: Uint8Array)`, sync or async; a
 * string result is UTF-8 encoded.
 */
export function task(handler) {
  return (input) => {
    let out;
    try {
      out = handler(input);
    } catch (e) {
      throw taskError(e);
    }
    if (out instanceof Promise) {
      return out.then(bytes, (e) => {
        throw taskError(e);
      });
    }
    return bytes(out);
  };
}

/** Config values and secrets (wasi:config/store): only names the grant lists
 * are readable; any other name reads as absent. */
export const config = {
  get(name) {
    try {
      return store.get(name) ?? undefined;
    } catch {
      return undefined;
    }
  },
  all() {
    try {
      return store.getAll();
    } catch {
      return [];
    }
  },
};

/** A scratch operation that failed; `code` is the wasi:filesystem error code
 * (`insufficient-space` past the quota, `no-entry`, …) or `io`. */
export class ScratchFailure extends Error {
  constructor(code) {
    super(`scratch: ${code}`);
    this.code = code;
  }
}

let scratchDir;
/** The `/scratch` preopen, or null without a grant (looked up once). */
function findScratch() {
  if (scratchDir === undefined) {
    const found = getDirectories().find(([, path]) => path === "/scratch");
    scratchDir = found ? found[0] : null;
  }
  return scratchDir;
}

function scratchDescriptor() {
  const dir = findScratch();
  if (!dir) throw new ScratchFailure("no-entry");
  return dir;
}

function scratchCall(fn) {
  try {
    return fn();
  } catch (e) {
    const payload = e?.payload;
    if (typeof payload === "string") throw new ScratchFailure(payload);
    if (payload?.tag === "last-operation-failed") {
      throw new ScratchFailure(filesystemErrorCode(payload.val) ?? "io");
    }
    throw e;
  }
}

/** The attempt's own directory (granted scratch bytes; removed when the
 * attempt ends): names are plain file names inside it. */
export const scratch = {
  available() {
    return findScratch() !== null;
  },
  list() {
    return scratchCall(() => {
      const entries = scratchDescriptor().readDirectory();
      const names = [];
      for (let e = entries.readDirectoryEntry(); e; e = entries.readDirectoryEntry()) {
        names.push(e.name);
      }
      return names.sort();
    });
  },
  write(name, data) {
    const bytes = typeof data === "string" ? encoder.encode(data) : data;
    scratchCall(() => {
      const file = scratchDescriptor().openAt({}, name, { create: true, truncate: true }, { write: true });
      const out = file.writeViaStream(0n);
      for (let at = 0; at < bytes.length; at += 4096) {
        out.blockingWriteAndFlush(bytes.subarray(at, at + 4096));
      }
    });
  },
  read(name) {
    return scratchCall(() => {
      const file = scratchDescriptor().openAt({}, name, {}, { read: true });
      const parts = [];
      let offset = 0n;
      for (;;) {
        const [data, end] = file.read(65536n, offset);
        parts.push(data);
        offset += BigInt(data.length);
        if (end || data.length === 0) break;
      }
      const out = new Uint8Array(Number(offset));
      let at = 0;
      for (const part of parts) {
        out.set(part, at);
        at += part.length;
      }
      return out;
    });
  },
};
