// Marks the compiled entry points (package.json "bin") executable after `tsc`, which writes them 0644: npx and the
// shell run a project's own bins through their shebang, and npm sets the bit only on bins it links for dependencies
// (CI's quick start failed with "mambaout-train: Permission denied" after `npm pack` had rebuilt dist/).
import { chmodSync, existsSync, readFileSync } from 'node:fs';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
for (const rel of Object.values(pkg.bin ?? {})) {
  const file = new URL(`../${rel}`, import.meta.url);
  if (existsSync(file)) chmodSync(file, 0o755);
}
