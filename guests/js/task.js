// The conformance guest in JavaScript: a subset of the Rust testkit's
// commands, with byte-identical outputs, so one integration test checks every
// language. See guests/python/app.py for the table of commands.
import * as ff from "./flowfabric.js";
import { TaskFailure } from "./flowfabric.js";

function number(arg, command) {
  if (!/^\d+$/.test(arg)) throw new TaskFailure(`${command} needs a number`, { permanent: true });
  return Number(arg);
}

// `scratch:KIB`, answered like the Rust testkit's.
function scratch(kib) {
  if (!ff.scratch.available()) return "no scratch";
  const before = ff.scratch.list().join(",");
  const name = `a${ff.info().attempt}`;
  try {
    ff.scratch.write(name, new Uint8Array(kib * 1024).fill(7));
    const read = ff.scratch.read(name).length;
    return `before=[${before}] wrote=${kib * 1024} read=${read}`;
  } catch (e) {
    if (!(e instanceof ff.ScratchFailure)) throw e;
    return `before=[${before}] error=${e.code === "insufficient-space" ? "no-space" : "io"}`;
  }
}

// `order:JSON`, priced like the Rust testkit's (bench languages' realistic input).
function order(arg) {
  let o;
  try {
    o = JSON.parse(arg);
  } catch (e) {
    throw new TaskFailure(`order is not JSON: ${e.message}`, { permanent: true });
  }
  if (!Array.isArray(o?.items)) throw new TaskFailure("order has no items", { permanent: true });
  let total = 0;
  for (const item of o.items) {
    if (!Number.isSafeInteger(item?.qty) || !Number.isSafeInteger(item?.price_cents) || item.qty < 0 || item.price_cents < 0) {
      throw new TaskFailure("an item needs qty and price_cents", { permanent: true });
    }
    total += item.qty * item.price_cents;
  }
  ff.progress(50, "priced");
  ff.frame("total", `${total}`);
  ff.progress(100, "done");
  const id = typeof o.order === "string" ? o.order : "";
  return `order=${id} items=${o.items.length} total_cents=${total}`;
}

const describe = (signals) => signals.map((s) => `${s.name}=${ff.text(s.payload)}`).join(",");

function frames(n) {
  ff.log("producing frames");
  let last = 0;
  for (let i = 0; i < n; i++) {
    ff.progress(Math.floor((i * 100) / Math.max(n, 1)), `frame ${i}`);
    const seq = ff.frame("item", `${i}`);
    if (last !== 0 && seq !== last + 1) {
      throw new TaskFailure(`frame ${i} got seq ${seq} after ${last}`, { permanent: true });
    }
    last = seq;
  }
  ff.progress(100, "done");
  return `frames=${n}`;
}

function wait(key) {
  const resumed = ff.resumeSignals();
  const info = ff.info();
  if (resumed.length > 0 || info.attemptType === "resumed") {
    return `resumed attempt=${info.attempt}: ${describe(resumed)}`;
  }
  const waitpoint = ff.waitpoint(key);
  ff.frame("waitpoint", `${key}=${waitpoint.token}`);
  return `satisfied: ${describe(ff.waitFor(key))}`;
}

// `steps:SCRIPT`: the Rust testkit's step ops `step`, `fail`, `sleep`,
// `fail-until`, `delay-until` and `cancel`, `;`-separated, with the same results.
async function steps(script) {
  const results = [];
  for (const op of script.split(";").filter((o) => o !== "")) {
    const colon = op.indexOf(":");
    const [name, arg] = colon < 0 ? [op, ""] : [op.slice(0, colon), op.slice(colon + 1)];
    switch (name) {
      case "step": {
        const value = await ff.step(arg, async () => `${arg}@${ff.info().attempt}`);
        results.push(`${arg}=${value}`);
        break;
      }
      case "fail": {
        let message = "";
        try {
          await ff.step(arg, () => {
            throw new TaskFailure(`${arg} failed for good`, { permanent: true });
          });
        } catch (e) {
          message = e.message;
        }
        results.push(`${arg}=failed(${message})`);
        break;
      }
      case "sleep":
        ff.sleep(number(arg, "sleep"));
        results.push(`slept=${arg}`);
        break;
      case "fail-until": {
        const attempt = ff.info().attempt;
        if (attempt < number(arg, "fail-until")) throw new TaskFailure(`attempt ${attempt} fails on purpose`);
        break;
      }
      case "delay-until": {
        const [n, ms] = arg.split(":").map((part) => number(part, "delay-until"));
        const info = ff.info();
        if (info.attempt < n) {
          try {
            ff.delay(ms);
          } catch (e) {
            results.push(`delay=${e.message}`);
            break;
          }
          throw new TaskFailure("delay returned", { permanent: true });
        }
        results.push(`delayed=${info.attempt}:${info.attemptType}:${info.retryCount}`);
        break;
      }
      case "cancel":
        ff.cancel(arg);
        throw new TaskFailure("cancel returned", { permanent: true });
      default:
        throw new TaskFailure(`unknown step op \`${name}\``, { permanent: true });
    }
  }
  return results.join(",");
}

// `http:METHOD:URL`: one request with `fetch` (body `ping` unless a GET),
// reported like the Rust testkit's `http` command.
async function http(arg) {
  const colon = arg.indexOf(":");
  if (colon < 0) throw new TaskFailure("http needs METHOD:URL", { permanent: true });
  const method = arg.slice(0, colon);
  const url = arg.slice(colon + 1);
  let response;
  try {
    response = await fetch(url, { method, body: method === "GET" ? undefined : "ping" });
  } catch (e) {
    return `error=${e?.message ?? e}`;
  }
  const body = new Uint8Array(await response.arrayBuffer());
  const text = new TextDecoder().decode(body);
  return `status=${response.status} bytes=${body.length} body=${[...text].slice(0, 200).join("")}`;
}

// `http-n:N:URL`: up to N GETs with `fetch`, stopping at the first error;
// `ok=K error=…` like the Rust testkit's.
async function httpN(arg) {
  const colon = arg.indexOf(":");
  if (colon < 0) throw new TaskFailure("http-n needs N:URL", { permanent: true });
  const n = number(arg.slice(0, colon), "http-n");
  const url = arg.slice(colon + 1);
  let ok = 0;
  for (; ok < n; ok++) {
    try {
      await (await fetch(url)).arrayBuffer();
    } catch (e) {
      return `ok=${ok} error=${e?.message ?? e}`;
    }
  }
  return `ok=${ok} error=none`;
}

// Calls of `count` this instance has answered: state a fresh instance starts
// again and a reused one keeps.
let counted = 0;

function handle(input) {
  const text = new TextDecoder("utf-8", { fatal: true }).decode(input);
  const colon = text.indexOf(":");
  const [command, arg] = colon < 0 ? [text, ""] : [text.slice(0, colon), text.slice(colon + 1)];
  switch (command) {
    case "echo":
      return arg;
    case "count":
      counted += 1;
      return `count=${counted}`;
    case "order":
      return order(arg);
    case "fail-until": {
      const attempt = ff.info().attempt;
      if (attempt < number(arg, "fail-until")) throw new TaskFailure(`attempt ${attempt} fails on purpose`);
      return `ok on attempt ${attempt}`;
    }
    case "permanent":
      throw new TaskFailure("this input can never succeed", { permanent: true });
    case "frames":
      return frames(number(arg, "frames"));
    case "info": {
      const i = ff.info();
      return `execution=${i.executionId}\nkind=${i.kind}\nattempt=${i.attempt}\nretries=${i.retryCount}\nhealthy=${ff.leaseHealthy()}\n`;
    }
    case "wait":
      return wait(arg);
    case "steps":
      return steps(arg);
    case "http":
      return http(arg);
    case "http-n":
      return httpN(arg);
    case "config":
      return ff.config.get(arg) ?? "absent";
    case "scratch":
      return scratch(number(arg, "scratch"));
    default:
      throw new TaskFailure(`unknown command '${command}'`, { permanent: true });
  }
}

export const run = ff.task(handle);
