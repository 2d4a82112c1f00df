/**
 * All-reduce throughput of the process group between local processes.
 *
 *   node --import tsx scripts/bench_allreduce.ts [--worlds 2,3,4] [--floats 7300000] [--iters 10] [--warmup 3]
 *        [--bucket-mb 4] [--transport auto,unix,tcp] [--op avg] [--json]
 *
 * For every (world size, transport, bucket size) it launches W workers (this file again, through the
 * launcher), each all-reduces a Float32Array of --floats random values (default 7.3M: mambaout_femto's
 * gradient) --iters times after --warmup untimed calls, a barrier before each call. The time of a call is the
 * slowest rank's. Reported (median call):
 *   algbw = bytes / time                  (bytes = 4 * floats)
 *   busbw = algbw * 2 (W-1) / W           (what each link carries in a ring; comparable across W, NCCL style)
 * Lists (--worlds, --bucket-mb, --transport) are comma separated.
 */
import { parseArgs } from 'node:util';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { cpus, loadavg } from 'node:os';
import { launch } from '../src/distributed/launcher.js';
import { ProcessGroup, type TransportKind } from '../src/distributed/group.js';

interface Row {
  world: number;
  transport: string;
  bucketMB: number;
  floats: number;
  medianMs: number;
  minMs: number;
  maxMs: number;
  algbwGBs: number;
  busbwGBs: number;
  /** CPU time (user + system) of rank 0 per call, median: what the call costs when cores are scarce. */
  cpuMs: number;
}

const { values: a } = parseArgs({
  options: {
    worlds: { type: 'string', default: '2,3,4' },
    floats: { type: 'string', default: '7300000' },
    iters: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '3' },
    'bucket-mb': { type: 'string', default: '4' },
    transport: { type: 'string', default: 'auto,tcp' },
    op: { type: 'string', default: 'avg' },
    json: { type: 'boolean', default: false },
  },
  allowPositionals: false,
});

const list = (s: string): string[] => s.split(',').map((x) => x.trim()).filter(Boolean);

async function worker(): Promise<void> {
  const floats = Number(a.floats);
  const bucketMB = Number(a['bucket-mb']);
  const transport = a.transport as TransportKind;
  const g = await ProcessGroup.fromEnv({ timeoutMs: 120_000, bucketBytes: Math.round(bucketMB * 1024 * 1024), transport });
  const buf = new Float32Array(floats);
  let x = 12345 + g.rank;
  for (let i = 0; i < floats; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    buf[i] = x / 2 ** 32 - 0.5;
  }
  const op = a.op === 'sum' ? 'sum' : 'avg';
  const times: number[] = [];
  const cpu: number[] = [];
  for (let it = 0; it < Number(a.warmup) + Number(a.iters); it++) {
    await g.barrier();
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    await g.allreduce(buf, { op });
    const dt = performance.now() - t0;
    const c = process.cpuUsage(c0);
    const [slowest] = await g.allreduceScalars([dt], 'max');
    if (it >= Number(a.warmup)) {
      times.push(slowest);
      cpu.push((c.user + c.system) / 1000);
    }
  }
  if (g.rank === 0) {
    times.sort((p, q) => p - q);
    cpu.sort((p, q) => p - q);
    const med = times[Math.floor(times.length / 2)];
    const bytes = floats * 4;
    const algbw = bytes / (med / 1000) / 1e9;
    const row: Row = {
      world: g.worldSize,
      transport: `${a.transport}(${g.sharedMemory?.left ? 'shm' : g.transport?.left ?? '-'})`,
      bucketMB,
      floats,
      medianMs: med,
      minMs: times[0],
      maxMs: times[times.length - 1],
      algbwGBs: algbw,
      busbwGBs: (algbw * 2 * (g.worldSize - 1)) / g.worldSize,
      cpuMs: cpu[Math.floor(cpu.length / 2)],
    };
    process.stdout.write(`ROW ${JSON.stringify(row)}\n`);
  }
  await g.close();
}

async function main(): Promise<void> {
  const self = fileURLToPath(import.meta.url);
  const rows: Row[] = [];
  if (!a.json) {
    console.log(`all-reduce of ${Number(a.floats).toLocaleString('en-US')} float32 (${((Number(a.floats) * 4) / 1e6).toFixed(1)} MB), op=${a.op}, ` +
      `${a.iters} timed calls after ${a.warmup} warm-up; ${cpus().length} CPU cores; node ${process.version}`);
    console.log(`load average ${loadavg().map((x) => x.toFixed(1)).join(' ')}`);
    console.log('world  transport     bucket   median ms   min ms   max ms   algbw GB/s   busbw GB/s   rank-0 CPU ms');
  }
  for (const w of list(a.worlds!).map(Number)) {
    for (const transport of list(a.transport!)) {
      for (const bucket of list(a['bucket-mb']!)) {
        let text = '';
        const out = new Writable({
          write(chunk, _enc, cb) {
            text += chunk.toString();
            cb();
          },
        });
        const args = ['--floats', a.floats!, '--iters', a.iters!, '--warmup', a.warmup!, '--bucket-mb', bucket, '--transport', transport, '--op', a.op!];
        const res = await launch({ nprocPerNode: w, script: self, args, stdout: out });
        if (res.exitCode !== 0) throw new Error(`benchmark workers failed: ${res.message}`);
        const line = text.split('\n').find((l) => l.startsWith('ROW '));
        if (!line) throw new Error(`no result from rank 0:\n${text}`);
        const row = JSON.parse(line.slice(4)) as Row;
        rows.push(row);
        if (!a.json) {
          console.log(
            `${String(row.world).padStart(5)}  ${row.transport.padEnd(12)} ${(row.bucketMB + ' MB').padStart(7)}  ${row.medianMs.toFixed(1).padStart(10)} ` +
              `${row.minMs.toFixed(1).padStart(8)} ${row.maxMs.toFixed(1).padStart(8)}  ${row.algbwGBs.toFixed(3).padStart(11)}  ${row.busbwGBs.toFixed(3).padStart(11)}  ${row.cpuMs.toFixed(1).padStart(13)}`,
          );
        }
      }
    }
  }
  if (a.json) console.log(JSON.stringify(rows, null, 1));
}

if (process.env.RANK !== undefined && process.env.WORLD_SIZE !== undefined) await worker();
else await main();
