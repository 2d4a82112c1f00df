/**
 * "Did you mean ...?" for misspelt model names and flags: the known names closest in edit distance.
 * (yargs has a Levenshtein of its own but only uses it for commands, and does not export it.)
 */

/** Optimal-string-alignment distance (Levenshtein plus adjacent transpositions: 'femot' -> 'femto' is 1). */
export function editDistance(a: string, b: string): number {
  const m = a.length;
  const n = b.length;
  let prev2 = new Array<number>(n + 1).fill(0);
  let prev = Array.from({ length: n + 1 }, (_, j) => j);
  for (let i = 1; i <= m; i++) {
    const cur = new Array<number>(n + 1);
    cur[0] = i;
    for (let j = 1; j <= n; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) cur[j] = Math.min(cur[j], prev2[j - 2] + 1);
    }
    prev2 = prev;
    prev = cur;
  }
  return prev[n];
}

/**
 * The known names closest to `input` (case-insensitive): those at the smallest edit distance, if that is within a
 * third of the longer name's length (at least 2 edits); failing that, names containing / contained in the input
 * (at least 4 characters).
 */
export function closestNames(input: string, known: readonly string[], max = 3): string[] {
  const q = input.toLowerCase();
  const near: [string, number][] = [];
  const containing: string[] = [];
  for (const k of known) {
    const kl = k.toLowerCase();
    const d = editDistance(q, kl);
    if (d <= Math.max(2, Math.floor(Math.max(q.length, kl.length) / 3))) near.push([k, d]);
    else if (Math.min(q.length, kl.length) >= 4 && (kl.includes(q) || q.includes(kl))) containing.push(k);
  }
  near.sort((a, b) => a[1] - b[1] || a[0].localeCompare(b[0]));
  // The closest ones only (ties kept); substring matches ('tiny' -> 'mambaout_tiny') when nothing is a few edits away.
  const best = near.length ? near.filter((n) => n[1] === near[0][1]).map((n) => n[0]) : containing.sort();
  return best.slice(0, max);
}

/** ' (did you mean X?)' / ' (did you mean X or Y?)', or '' when nothing is close. */
export function didYouMean(input: string, known: readonly string[], format: (s: string) => string = (s) => s): string {
  const c = closestNames(input, known).map(format);
  if (!c.length) return '';
  return ` (did you mean ${c.length === 1 ? c[0] : `${c.slice(0, -1).join(', ')} or ${c[c.length - 1]}`}?)`;
}
