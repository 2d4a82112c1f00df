/** `--list-models`: the registered models with their exact parameter counts (1000 classes unless noted). */
import { countParams, listModels, MODEL_CONFIGS } from '../models/registry.js';

export function listModelsTable(): string {
  const rows = listModels().map((name) => {
    const c = MODEL_CONFIGS[name];
    const n = countParams(c.depths, c.dims, c.defaultCfg.numClasses);
    const params = n >= 1e6 ? `${(n / 1e6).toFixed(1)}M` : `${(n / 1e3).toFixed(1)}K`;
    return `${name.padEnd(16)} ${params.padStart(7)}  ${String(n).padStart(10)}  depths [${c.depths.join(', ')}]  dims [${c.dims.join(', ')}]  ${c.defaultCfg.numClasses} classes`;
  });
  return ['model              params       exact  architecture', ...rows].join('\n');
}

/** `--list-models` was given: the table goes to stdout and the command ends there (exit 0). */
export function listModelsRequested(args: Record<string, unknown>): boolean {
  if (!args.list_models) return false;
  process.stdout.write(listModelsTable() + '\n');
  return true;
}
