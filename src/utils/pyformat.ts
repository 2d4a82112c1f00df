/**
 * Python's number formatting and rounding, so logs, summary.csv and validation results read as timm's do.
 *
 * Why not toFixed / String: JavaScript rounds a decimal tie away from zero (`(45.3125).toFixed(3)` is '45.313')
 * where Python rounds the exact binary value half to even ('45.312'); `String(100)` is '100' where Python's
 * repr of a float is '100.0'; and the two switch to exponent notation at different magnitudes
 * (`String(1e-5)` '0.00001' vs Python '1e-05'). Every function here works on the exact decimal expansion of the
 * double (BigInt arithmetic), so the output equals CPython's for every finite value, ties included.
 *
 * - pyRepr(x)          repr(float) / str(float)          1 -> '1.0', 1e-5 -> '1e-05', 1e16 -> '1e+16'
 * - pyFixed(x, d)      format(x, '.{d}f')                45.3125, 3 -> '45.312'
 * - pyExp(x, d)        format(x, '.{d}e')                2.5e-5, 3 -> '2.500e-05'
 * - pyG(x, p, alt)     format(x, '.{p}g') / '#.{p}g'     0.00012345, 3, true -> '0.000123'
 * - pyRoundTo(x, n)    round(x, n) (a float)             2.675, 2 -> 2.67
 * - pyRound(x)         round(x) (an integer)             2.5 -> 2, 3.5 -> 4
 * - pyJson(v, indent)  json.dumps(v, indent=...) where the numbers listed as floats print as Python floats
 */

/** Python 3 `round(x)`: nearest integer, ties to even. */
export function pyRound(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** Exact decimal expansion of a finite, non-negative double: value = digits · 10^-scale (digits without sign). */
function exactDecimal(x: number): { digits: string; scale: number } {
  if (x === 0) return { digits: '0', scale: 0 };
  const buf = new DataView(new ArrayBuffer(8));
  buf.setFloat64(0, x);
  const hi = buf.getUint32(0);
  const lo = buf.getUint32(4);
  const expBits = (hi >>> 20) & 0x7ff;
  let mant = (BigInt(hi & 0xfffff) << 32n) | BigInt(lo);
  let e2: number;
  if (expBits === 0) e2 = -1074; // subnormal
  else {
    mant |= 1n << 52n;
    e2 = expBits - 1075;
  }
  if (e2 >= 0) return { digits: (mant << BigInt(e2)).toString(), scale: 0 };
  // mant · 2^e2 = mant · 5^-e2 / 10^-e2
  return { digits: (mant * 5n ** BigInt(-e2)).toString(), scale: -e2 };
}

/**
 * Round the exact value of |x| to `keep` digits after the decimal point, half to even. Returns the integer
 * n with |x| ≈ n · 10^-keep.
 */
function roundScaled(x: number, keep: number): bigint {
  const { digits, scale } = exactDecimal(Math.abs(x));
  const big = BigInt(digits);
  if (keep >= scale) return big * 10n ** BigInt(keep - scale);
  const div = 10n ** BigInt(scale - keep);
  const q = big / div;
  const r = big % div;
  const twice = 2n * r;
  if (twice > div || (twice === div && q % 2n === 1n)) return q + 1n;
  return q;
}

/** Decimal exponent of |x| (x != 0): floor(log10|x|), exactly. */
function decimalExponent(x: number): number {
  const { digits, scale } = exactDecimal(Math.abs(x));
  return digits.length - 1 - scale;
}

function special(x: number): string | null {
  if (Number.isNaN(x)) return 'nan';
  if (x === Infinity) return 'inf';
  if (x === -Infinity) return '-inf';
  return null;
}

const sign = (x: number): string => (x < 0 || Object.is(x, -0) ? '-' : '');

function placePoint(n: bigint, decimals: number): string {
  let s = n.toString();
  if (decimals === 0) return s;
  if (s.length <= decimals) s = '0'.repeat(decimals - s.length + 1) + s;
  return `${s.slice(0, s.length - decimals)}.${s.slice(s.length - decimals)}`;
}

/** Python `format(x, '.{d}f')`. */
export function pyFixed(x: number, d: number): string {
  const sp = special(x);
  if (sp) return sp;
  return sign(x) + placePoint(roundScaled(x, d), d);
}

/** Mantissa digits (p significant, rounded half to even) and decimal exponent of x != 0. */
function significant(x: number, p: number): { digits: string; exp: number } {
  let exp = decimalExponent(x);
  let n = roundScaled(x, p - 1 - exp);
  if (n.toString().length > p) {
    // rounding carried into a new digit (9.99 -> 10.0)
    exp += 1;
    n = roundScaled(x, p - 1 - exp);
  }
  return { digits: n.toString(), exp };
}

const expSuffix = (e: number): string => `e${e < 0 ? '-' : '+'}${String(Math.abs(e)).padStart(2, '0')}`;

/** Python `format(x, '.{d}e')`. */
export function pyExp(x: number, d: number): string {
  const sp = special(x);
  if (sp) return sp;
  if (x === 0) return `${sign(x)}0${d > 0 ? '.' + '0'.repeat(d) : ''}e+00`;
  const { digits, exp } = significant(x, d + 1);
  return `${sign(x)}${digits[0]}${d > 0 ? '.' + digits.slice(1) : ''}${expSuffix(exp)}`;
}

/** Python `format(x, '.{p}g')`, or `'#.{p}g'` with `alt` (keep trailing zeros and the point). */
export function pyG(x: number, p: number, alt = false): string {
  const sp = special(x);
  if (sp) return sp;
  const P = p === 0 ? 1 : p;
  const exp = x === 0 ? 0 : significant(x, P).exp;
  let body: string;
  if (exp >= -4 && exp < P) {
    body = pyFixed(Math.abs(x), P - 1 - exp);
    if (alt && !body.includes('.')) body += '.';
    if (!alt && body.includes('.')) body = body.replace(/0+$/, '').replace(/\.$/, '');
  } else {
    const m = pyExp(Math.abs(x), P - 1);
    let [mant, e] = m.split('e');
    if (alt && !mant.includes('.')) mant += '.';
    if (!alt && mant.includes('.')) mant = mant.replace(/0+$/, '').replace(/\.$/, '');
    body = `${mant}e${e}`;
  }
  return sign(x) + body;
}

/** Python `repr(float(x))` (= `str`): the shortest digits that round-trip, Python's notation. */
export function pyRepr(x: number): string {
  const sp = special(x);
  if (sp) return sp;
  if (x === 0) return `${sign(x)}0.0`;
  // toExponential() without an argument gives the shortest round-trip digits (as Python's repr).
  const [m, e] = Math.abs(x).toExponential().split('e');
  const digits = m.replace('.', '');
  const exp = Number(e);
  let body: string;
  if (exp < -4 || exp >= 16) {
    body = `${digits[0]}${digits.length > 1 ? '.' + digits.slice(1) : ''}${expSuffix(exp)}`;
  } else if (exp < 0) {
    body = `0.${'0'.repeat(-exp - 1)}${digits}`;
  } else if (digits.length <= exp + 1) {
    body = `${digits}${'0'.repeat(exp + 1 - digits.length)}.0`;
  } else {
    body = `${digits.slice(0, exp + 1)}.${digits.slice(exp + 1)}`;
  }
  return sign(x) + body;
}

/** Python `round(x, n)` for a float: correctly rounded (half to even on the exact value), as a double. */
export function pyRoundTo(x: number, n: number): number {
  if (!Number.isFinite(x)) return x;
  return Number(pyFixed(x, n));
}

/**
 * `json.dumps(value, indent=indent)` as Python writes it, for values whose float fields are named in
 * `floatKeys` (JavaScript cannot tell 100 from 100.0): those print with pyRepr ('100.0'), integers as they are.
 */
export function pyJson(value: unknown, floatKeys: ReadonlySet<string>, indent = 4): string {
  const MARK = '\u0000pyfloat:';
  const text = JSON.stringify(
    value,
    (k, v) => (typeof v === 'number' && floatKeys.has(k) ? `${MARK}${pyRepr(v)}` : v),
    indent,
  );
  return text.replace(/"\\u0000pyfloat:([^"]*)"/g, (_, s: string) => (s === 'nan' ? 'NaN' : s === 'inf' ? 'Infinity' : s === '-inf' ? '-Infinity' : s));
}

/** Python's str() of a tuple of numbers: floats as repr, integers as integers when `ints`: (3, 224, 224), (0.5,). */
export function pyTuple(values: readonly number[], ints = false): string {
  const parts = values.map((v) => (ints ? String(v) : pyRepr(v)));
  return `(${parts.join(', ')}${parts.length === 1 ? ',' : ''})`;
}

/** Python's '{:>N}' (right-aligned in N characters). */
export const padL = (s: string | number, n: number): string => String(s).padStart(n);
