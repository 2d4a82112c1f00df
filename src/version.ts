/**
 * The package version, read once from mambaout's package.json (two folders up from dist/src/, one from src/ under
 * tsx), so `--version`, the ONNX producer field and logs never disagree with what npm installed.
 */
import { readFileSync } from 'node:fs';

function readVersion(): string {
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'mambaout' && pkg.version) return pkg.version;
    } catch {
      // not this one
    }
  }
  return '0.0.0-unknown';
}

export const VERSION: string = readVersion();
