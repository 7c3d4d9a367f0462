// Reports the size of the minified bundle (dist/herald.min.js), raw and gzipped, and
// fails when the gzipped size passes the budget (6 KB). Run `npm run build` first.
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

const BUDGET = 6 * 1024;
const file = new URL("../dist/herald.min.js", import.meta.url);
let bytes;
try {
  bytes = readFileSync(file);
} catch {
  console.error("dist/herald.min.js is missing: run `npm run build` first");
  process.exit(1);
}
const gzipped = gzipSync(bytes, { level: 9 }).length;
console.log(`dist/herald.min.js: ${bytes.length} bytes minified, ${gzipped} bytes gzipped (budget ${BUDGET})`);
if (gzipped > BUDGET) {
  console.error(`over budget by ${gzipped - BUDGET} bytes`);
  process.exit(1);
}
