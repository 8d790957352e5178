// Builds a JS guest into a component: node build.mjs SOURCE OUT.wasm
// `fetch` is on: the component imports wasi:http, and the host sends a
// request only to an origin the component's grant (and the operator's
// ceiling) allows; without a grant every request is refused.
import { componentize } from "@bytecodealliance/componentize-js";
import { writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { dirname, resolve } from "node:path";

const [source = "task.js", out = "task.wasm"] = process.argv.slice(2);
const here = dirname(fileURLToPath(import.meta.url));
const { component } = await componentize({
  sourcePath: resolve(source),
  witPath: resolve(here, "../../wit"),
  worldName: "task",
  disableFeatures: ["fetch-event"],
});
await writeFile(out, component);
console.log(`${out}: ${component.length} bytes`);
