// Builds a JS guest into a component: node build.mjs SOURCE OUT.wasm [WIT_DIR]
// WIT_DIR (default: `wit` beside this file) holds the world `task-js` and its
// dependencies: the task contract in deps/task, wasi:config in deps/config.
// `fetch` is on: the component imports wasi:http, and the host sends a
// request only to an origin the component's grant (and the operator's
// ceiling) allows; without a grant every request is refused.
import { componentize } from "@bytecodealliance/componentize-js";
import { writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { dirname, resolve } from "node:path";

const here = dirname(fileURLToPath(import.meta.url));
const [source = "task.js", out = "task.wasm", wit = resolve(here, "wit")] = process.argv.slice(2);
const { component } = await componentize({
  sourcePath: resolve(source),
  witPath: resolve(wit),
  worldName: "task-js",
  disableFeatures: ["fetch-event"],
});
await writeFile(out, component);
console.log(`${out}: ${component.length} bytes`);
