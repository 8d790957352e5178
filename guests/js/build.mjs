// Builds a JS guest into a component: node build.mjs SOURCE OUT.wasm
// Outbound HTTP is off: FlowFabric's sandbox grants no network, and leaving it
// on would import wasi:http, which the host does not link.
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
  disableFeatures: ["http", "fetch-event"],
});
await writeFile(out, component);
console.log(`${out}: ${component.length} bytes`);
