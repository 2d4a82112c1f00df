/**
 * Python's number formatting, for log lines that read like timm's: repr(float), '{:#.Ng}', '{:.Ne}', '{:>N}'.
 */

/** Python's repr of a float: 1 -> '1.0', 0.485 -> '0.485', 1e-5 -> '1e-05'. */
export function pyFloat(v: number): string {
  if (Number.isNaN(v)) return 'nan';
  if (!Number.isFinite(v)) return v > 0 ? 'inf' : '-inf';
  if (v === 0) return Object.is(v, -0) ? '-0.0' : '0.0';
  const [m, e] = v.toExponential().split('e'); // shortest round-trip digits, as Python's repr
  const exp = Number(e);
  if (exp < -4 || exp >= 16) return `${m}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  return Number.isInteger(v) ? v.toFixed(1) : String(v);
}

/** Python's str() of a tuple of numbers: floats as repr, integers as integers when `ints`. */
export function pyTuple(values: readonly number[], ints = false): string {
  const parts = values.map((v) => (ints ? String(v) : pyFloat(v)));
  return `(${parts.join(', ')}${parts.length === 1 ? ',' : ''})`;
}

/** Python's '{:#.Ng}': N significant digits, trailing zeros kept. */
export function fmtG(v: number, digits: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (v === 0) return (0).toFixed(digits - 1);
  const exp = Math.floor(Math.log10(Math.abs(v)));
  if (exp < -4 || exp >= digits) {
    const [m, e] = v.toExponential(digits - 1).split('e');
    const en = Number(e);
    return `${m}e${en < 0 ? '-' : '+'}${String(Math.abs(en)).padStart(2, '0')}`;
  }
  return v.toFixed(Math.max(digits - 1 - exp, 0));
}

/** Python's '{:.Ne}'. */
export function fmtE(v: number, digits: number): string {
  const [m, e] = v.toExponential(digits).split('e');
  const en = Number(e);
  return `${m}e${en < 0 ? '-' : '+'}${String(Math.abs(en)).padStart(2, '0')}`;
}

/** Python's '{:>N}'. */
export const padL = (s: string | number, n: number): string => String(s).padStart(n);
