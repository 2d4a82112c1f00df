/**
 * Rendezvous and ring set-up over node:net (TCP between machines, unix-domain sockets inside one machine).
 *
 * 1. Every rank opens a data listener: a TCP port (ephemeral) and, on POSIX, a unix socket in os.tmpdir().
 * 2. Rank 0 listens on MASTER_ADDR:MASTER_PORT. Ranks 1..W-1 connect there (retrying until the init timeout,
 *    since rank 0 may start later) and send HELLO {rank, worldSize, host, bootId, port, unixPath}.
 *    Rank 0 checks ranks and world sizes, then sends everyone the TABLE of all ranks (the address of rank r
 *    is the address rank 0 saw its connection come from; rank 0's is MASTER_ADDR) and a random job token.
 *    These rendezvous connections stay open as the "control" star used to flood aborts.
 * 3. Rank r connects to its left neighbour (r-1+W) % W (unix socket when both run on the same machine -
 *    same hostname and kernel boot id - and the socket file is reachable; TCP otherwise) and says HELLO
 *    {rank, token}; it accepts one connection from its right neighbour (r+1) % W. Bulk data flows
 *    left -> right, so each rank reads on the socket it opened (which can use a fixed `onread` buffer).
 * 4. Listeners are closed; the unix socket file is removed.
 * 5. Between ranks of one machine (same hostname, boot id and NODE_RANK) with transport 'auto', the connecting
 *    (receiving) rank also creates a shared-memory inbox in /dev/shm and offers it in its HELLO; the left neighbour
 *    opens it, checks its key and confirms (ShmOk), and from then on sends large payloads through it (shm.ts). Ranks
 *    with different NODE_RANKs never share memory or unix sockets, even on one host (so a two-launcher test on one
 *    machine exercises the TCP path between "nodes").
 *
 * Why unix sockets locally: one Node stream reads 29 MB in 6.2 ms over a unix socket vs 8.8 ms over loopback
 * TCP (1 MiB read buffer, 16-core host); ring all-reduce of 7.3M floats: W=3 29 vs 33 ms, W=4 35 vs 38 ms
 * (W=2 the same within noise). `transport: 'tcp'` forces TCP everywhere.
 *
 * Errors: a rank that does not join in time, unreachable addresses, or inconsistent world sizes end in a
 * DistError (reason 'rendezvous') naming the rank; a MASTER_PORT that is taken is a UserError.
 */
import * as net from 'node:net';
import { randomBytes } from 'node:crypto';
import { readFileSync, unlinkSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { UserError } from '../errors.js';
import { Link, describeSocketError, type LinkHandler } from './transport.js';
import { FRAME } from './wire.js';
import { DistError } from './errors.js';
import { DEFAULT_SHM_BYTES, ShmInbox, ShmOutbox, shmDir, type ShmOffer } from './shm.js';

/**
 * 'auto': between ranks of one machine, payloads through shared memory (shm.ts) with a unix socket as doorbell;
 * TCP between machines. 'unix': unix sockets carry the payloads too (the transport before shared memory; kept for
 * comparison). 'tcp': TCP everywhere.
 */
export type TransportKind = 'auto' | 'unix' | 'tcp';

export interface RingOptions {
  rank: number;
  worldSize: number;
  masterAddr: string;
  masterPort: number;
  /** Time allowed for the whole rendezvous (all ranks joining, ring connections). */
  initTimeoutMs: number;
  /** 'auto': unix-domain sockets between ranks of one machine, TCP otherwise. 'tcp': always TCP. */
  transport: TransportKind;
  /** Size of the fixed read buffer of each ring socket. */
  readBufferBytes: number;
  /** Pause reading when this many bytes of early data are buffered. */
  maxBufferedBytes: number;
  /** Machine index (NODE_RANK): ranks of different nodes never share memory, even on one host (tests). */
  nodeRank?: number;
  /** Capacity of each shared-memory inbox (default DEFAULT_SHM_BYTES). */
  shmBytes?: number;
}

export interface Ring {
  left: Link;
  right: Link;
  /** Rank 0: control links indexed by rank (index 0 unused); other ranks: [link to rank 0]. */
  control: Link[];
}

interface PeerInfo {
  rank: number;
  addr: string;
  port: number;
  host: string;
  bootId: string;
  unixPath: string;
  /** NODE_RANK of the rank (-1 when unknown). */
  node?: number;
}

const PROTOCOL_VERSION = 2;

function bootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return '';
  }
}

/** 'localhost' -> 127.0.0.1 (Node may resolve it to ::1 on one side and 127.0.0.1 on the other). */
export function normalizeHost(addr: string): string {
  const a = addr.trim();
  if (a === 'localhost') return '127.0.0.1';
  if (a.startsWith('::ffff:') && net.isIPv4(a.slice(7))) return a.slice(7);
  if (a.startsWith('[') && a.endsWith(']')) return a.slice(1, -1);
  return a;
}

function isLoopback(addr: string): boolean {
  return addr === '::1' || /^127\./.test(addr);
}

function seconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(3))} s`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function listen(server: net.Server, opts: net.ListenOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    const onErr = (e: Error): void => reject(e);
    server.once('error', onErr);
    server.listen(opts, () => {
      server.off('error', onErr);
      resolve();
    });
  });
}

const RETRYABLE = new Set(['ECONNREFUSED', 'ENOENT', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'EADDRNOTAVAIL']);

/** Connect with retries until `deadline` (the peer may not be listening yet). */
async function connectRetry(
  make: () => net.Socket,
  deadline: number,
  what: string,
): Promise<net.Socket> {
  let delay = 20;
  for (;;) {
    const sock = make();
    try {
      await new Promise<void>((resolve, reject) => {
        sock.once('connect', resolve);
        sock.once('error', reject);
      });
      sock.removeAllListeners('error');
      return sock;
    } catch (e) {
      sock.destroy();
      const err = e as Error & { code?: string };
      const left = deadline - Date.now();
      if (!RETRYABLE.has(err.code ?? '') || left <= 0) {
        throw new DistError(`could not connect to ${what} (${describeSocketError(err)})`, null, 'rendezvous');
      }
      await sleep(Math.min(delay, left));
      delay = Math.min(delay * 2, 500);
    }
  }
}

interface DataListeners {
  tcp: net.Server;
  port: number;
  unix: net.Server | null;
  unixPath: string;
  close(): void;
}

async function openDataListeners(bindHost: string, wantUnix: boolean): Promise<DataListeners> {
  const tcp = net.createServer({ noDelay: true });
  await listen(tcp, { host: bindHost, port: 0 });
  const port = (tcp.address() as net.AddressInfo).port;
  let unix: net.Server | null = null;
  let unixPath = '';
  if (wantUnix && process.platform !== 'win32') {
    const p = join(tmpdir(), `mambaout-dist-${process.pid}-${randomBytes(4).toString('hex')}.sock`);
    if (p.length < 100) {
      const s = net.createServer();
      try {
        await listen(s, { path: p });
        unix = s;
        unixPath = p;
      } catch {
        s.close();
      }
    }
  }
  return {
    tcp,
    port,
    unix,
    unixPath,
    close() {
      tcp.close();
      if (unix) {
        unix.close();
        try {
          unlinkSync(unixPath);
        } catch {
          /* already removed by server.close() */
        }
      }
    },
  };
}

function nullHandler(): LinkHandler {
  return { control() {}, closed() {}, protocolError(l) { l.destroy(); } };
}

/** Rank 0: accept W-1 HELLOs on the master port, answer with the TABLE. */
async function hostRendezvous(o: RingOptions, master: string, bindHost: string, self: Omit<PeerInfo, 'addr'>, deadline: number): Promise<{ table: PeerInfo[]; token: string; control: Link[] }> {
  const W = o.worldSize;
  const server = net.createServer({ noDelay: true });
  try {
    await listen(server, { host: bindHost, port: o.masterPort });
  } catch (e) {
    const err = e as Error & { code?: string };
    if (err.code === 'EADDRINUSE') {
      throw new UserError(`MASTER_PORT ${o.masterPort} is already in use on ${master}; choose another port (--master-port) or stop the process that holds it.`);
    }
    if (err.code === 'EADDRNOTAVAIL') {
      throw new UserError(`MASTER_ADDR ${o.masterAddr} is not an address of the machine that runs rank 0; set it to one of this machine's addresses.`);
    }
    throw new DistError(`rank 0 could not listen on ${master}:${o.masterPort} (${describeSocketError(err)})`, 0, 'rendezvous');
  }
  const joined = new Map<number, { link: Link; info: PeerInfo }>();
  const all: Link[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        const missing: number[] = [];
        for (let r = 1; r < W; r++) if (!joined.has(r)) missing.push(r);
        const who = missing.length === 1 ? `rank ${missing[0]}` : `ranks ${missing.join(', ')}`;
        reject(new DistError(`${who} did not join the rendezvous at ${master}:${o.masterPort} within ${seconds(o.initTimeoutMs)}`, missing[0] ?? null, 'rendezvous'));
      }, Math.max(0, deadline - Date.now()));
      const fail = (e: DistError): void => {
        clearTimeout(timer);
        reject(e);
      };
      server.on('connection', (sock) => {
        const link = new Link({ peer: -1, via: 'tcp' });
        all.push(link);
        link.adopt(sock, true);
        link.handler = {
          control(l, type, payload) {
            const p = payload as Partial<PeerInfo & { worldSize: number; version: number; purpose: string }> | null;
            if (type !== FRAME.Hello || !p || p.purpose !== 'join' || l.peer !== -1) {
              l.destroy();
              return;
            }
            const r = p.rank;
            if (!Number.isInteger(r) || r! < 1 || r! >= W || p.worldSize !== W || p.version !== PROTOCOL_VERSION) {
              const msg =
                p.version !== PROTOCOL_VERSION
                  ? `rank ${r} speaks process-group protocol ${p.version}, rank 0 speaks ${PROTOCOL_VERSION} (mixed mambaout versions)`
                  : p.worldSize !== W
                    ? `rank ${r} was started with WORLD_SIZE=${p.worldSize} but rank 0 with WORLD_SIZE=${W}`
                    : `a worker joined with RANK=${r}, outside 0..${W - 1}`;
              l.sendControl(FRAME.Abort, { message: msg, rank: r ?? null });
              l.end();
              fail(new DistError(msg, r ?? null, 'rendezvous'));
              return;
            }
            if (joined.has(r!)) {
              const msg = `two workers joined with RANK=${r}`;
              l.sendControl(FRAME.Abort, { message: msg, rank: r });
              l.end();
              fail(new DistError(msg, r!, 'rendezvous'));
              return;
            }
            l.peer = r!;
            const addr = normalizeHost(sock.remoteAddress ?? '');
            joined.set(r!, { link: l, info: { rank: r!, addr, port: p.port!, host: p.host ?? '', bootId: p.bootId ?? '', unixPath: p.unixPath ?? '', node: p.node ?? -1 } });
            if (joined.size === W - 1) {
              clearTimeout(timer);
              resolve();
            }
          },
          closed(l, cause) {
            if (l.peer >= 0 && joined.get(l.peer)?.link === l && joined.size < W - 1) {
              fail(new DistError(`rank ${l.peer} disconnected during the rendezvous (${cause ?? 'connection closed'})`, l.peer, 'disconnect'));
            }
          },
          protocolError(l) {
            l.destroy();
          },
        };
      });
    });
  } catch (e) {
    for (const l of all) if (!joined.has(l.peer) || joined.get(l.peer)!.link !== l) l.destroy();
    for (const { link } of joined.values()) {
      link.sendControl(FRAME.Abort, { message: (e as Error).message, rank: (e as DistError).rank ?? null });
      link.end();
    }
    server.close();
    throw e;
  }
  server.close();
  // Stray connections that never said HELLO.
  for (const l of all) if (l.peer === -1) l.destroy();
  const token = randomBytes(8).toString('hex');
  const table: PeerInfo[] = [{ ...self, addr: master }];
  for (let r = 1; r < W; r++) table.push(joined.get(r)!.info);
  const control: Link[] = [];
  for (let r = 1; r < W; r++) {
    const link = joined.get(r)!.link;
    link.handler = nullHandler();
    link.sendControl(FRAME.Table, { token, peers: table });
    control[r] = link;
  }
  return { table, token, control };
}

/** Ranks 1..W-1: connect to rank 0, say HELLO, wait for the TABLE. */
async function joinRendezvous(o: RingOptions, master: string, self: Omit<PeerInfo, 'addr'>, deadline: number): Promise<{ table: PeerInfo[]; token: string; control: Link[] }> {
  const sock = await connectRetry(
    () => net.connect({ host: master, port: o.masterPort, noDelay: true }),
    deadline,
    `rank 0 at ${master}:${o.masterPort} within ${seconds(o.initTimeoutMs)}`,
  );
  const link = new Link({ peer: 0, via: 'tcp' });
  link.adopt(sock, true);
  const reply = await new Promise<{ table: PeerInfo[]; token: string }>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new DistError(`rank 0 did not complete the rendezvous within ${seconds(o.initTimeoutMs)} (some other rank did not join)`, null, 'rendezvous')),
      Math.max(0, deadline - Date.now()),
    );
    link.handler = {
      control(_l, type, payload) {
        const p = payload as { token?: string; peers?: PeerInfo[]; message?: string; rank?: number | null } | null;
        if (type === FRAME.Table && p?.peers && p.token) {
          clearTimeout(timer);
          resolve({ table: p.peers, token: p.token });
        } else if (type === FRAME.Abort) {
          clearTimeout(timer);
          reject(new DistError(p?.message ?? 'rank 0 aborted the rendezvous', p?.rank ?? null, 'rendezvous'));
        }
      },
      closed(_l, cause) {
        clearTimeout(timer);
        reject(new DistError(`rank 0 closed the rendezvous connection (${cause ?? 'connection closed'})`, 0, 'disconnect'));
      },
      protocolError(_l, message) {
        clearTimeout(timer);
        reject(new DistError(`unexpected data from rank 0 during the rendezvous: ${message}`, 0, 'protocol'));
      },
    };
    link.sendControl(FRAME.Hello, { purpose: 'join', version: PROTOCOL_VERSION, worldSize: o.worldSize, ...self });
  });
  link.handler = nullHandler();
  if (reply.table.length !== o.worldSize) {
    throw new DistError(`rank 0 sent a table of ${reply.table.length} ranks, expected ${o.worldSize}`, 0, 'protocol');
  }
  return { ...reply, control: [link] };
}

/** Wait for the right neighbour to connect to one of our data listeners and introduce itself. */
function acceptRight(l: DataListeners, right: number, deadline: number, initTimeoutMs: number): { promise: Promise<{ link: Link; token: string; shm: ShmOffer | null }>; cancel(): void } {
  const pending = new Set<Link>();
  let timer: NodeJS.Timeout | null = null;
  let settled = false;
  const promise = new Promise<{ link: Link; token: string; shm: ShmOffer | null }>((resolve, reject) => {
    timer = setTimeout(() => {
      settled = true;
      reject(new DistError(`rank ${right} did not connect to this rank within ${seconds(initTimeoutMs)}`, right, 'rendezvous'));
    }, Math.max(0, deadline - Date.now()));
    const onConn = (via: 'tcp' | 'unix') => (sock: net.Socket): void => {
      if (settled) {
        sock.destroy();
        return;
      }
      const link = new Link({ peer: right, via });
      pending.add(link);
      link.adopt(sock, true);
      link.handler = {
        control(lk, type, payload) {
          const p = payload as { purpose?: string; rank?: number; token?: string; shm?: ShmOffer } | null;
          if (settled || type !== FRAME.Hello || p?.purpose !== 'ring' || p.rank !== right || typeof p.token !== 'string') {
            lk.destroy();
            return;
          }
          settled = true;
          pending.delete(lk);
          clearTimeout(timer!);
          lk.handler = nullHandler();
          const shm = p.shm && typeof p.shm.path === 'string' && typeof p.shm.key === 'string' && typeof p.shm.bytes === 'number' ? p.shm : null;
          resolve({ link: lk, token: p.token, shm });
        },
        closed(lk) {
          pending.delete(lk);
        },
        protocolError(lk) {
          lk.destroy();
        },
      };
    };
    l.tcp.on('connection', onConn('tcp'));
    l.unix?.on('connection', onConn('unix'));
  });
  promise.catch(() => {});
  return {
    promise,
    cancel() {
      settled = true;
      if (timer) clearTimeout(timer);
      for (const lk of pending) lk.destroy();
    },
  };
}

/** Connect to the left neighbour (unix socket when possible) and introduce ourselves. */
async function connectLeft(o: RingOptions, peer: PeerInfo, token: string, deadline: number): Promise<Link> {
  const me = { host: hostname(), bootId: bootId(), node: o.nodeRank ?? -1 };
  const sameNode = me.node < 0 || (peer.node ?? -1) < 0 || me.node === peer.node;
  const sameMachine = o.transport !== 'tcp' && peer.unixPath !== '' && peer.host === me.host && peer.bootId === me.bootId && sameNode && process.platform !== 'win32';
  const holder: { link: Link | null } = { link: null };
  let sock: net.Socket | null = null;
  let via: 'tcp' | 'unix' = 'tcp';
  const onread = Link.onreadFor(holder, o.readBufferBytes);
  if (sameMachine) {
    try {
      sock = await connectRetry(() => net.connect({ path: peer.unixPath, onread }), Date.now(), `rank ${peer.rank} at ${peer.unixPath}`);
      via = 'unix';
    } catch {
      sock = null; // e.g. separate /tmp in containers: fall back to TCP
    }
  }
  if (!sock) {
    sock = await connectRetry(
      () => net.connect({ host: peer.addr, port: peer.port, noDelay: true, onread }),
      deadline,
      `rank ${peer.rank} at ${peer.addr}:${peer.port} within ${seconds(o.initTimeoutMs)}`,
    );
  }
  const link = new Link({ peer: peer.rank, via, maxBufferedBytes: o.maxBufferedBytes });
  holder.link = link;
  link.adopt(sock, false);
  link.handler = nullHandler();
  // Between ranks of one machine the payloads go through a shared-memory inbox that this (receiving) rank owns.
  const dir = sameMachine && via === 'unix' && o.transport === 'auto' ? shmDir() : null;
  const inbox = dir ? ShmInbox.create(dir, `r${o.rank}`, o.shmBytes ?? DEFAULT_SHM_BYTES) : null;
  if (inbox) link.attachShmInbox(inbox);
  link.sendControl(FRAME.Hello, { purpose: 'ring', rank: o.rank, token, shm: inbox ? inbox.offer() : undefined });
  return link;
}

/** Run the rendezvous and build the ring. World size must be >= 2. */
export async function connectRing(o: RingOptions): Promise<Ring> {
  const W = o.worldSize;
  const r = o.rank;
  const deadline = Date.now() + o.initTimeoutMs;
  const master = normalizeHost(o.masterAddr);
  const bindHost = isLoopback(master) ? master : net.isIPv6(master) ? '::' : '0.0.0.0';
  const listeners = await openDataListeners(bindHost, o.transport !== 'tcp');
  const right = (r + 1) % W;
  const left = (r - 1 + W) % W;
  const acc = acceptRight(listeners, right, deadline, o.initTimeoutMs);
  let control: Link[] = [];
  let leftLink: Link | null = null;
  try {
    const self = { rank: r, host: hostname(), bootId: bootId(), port: listeners.port, unixPath: listeners.unixPath, node: o.nodeRank ?? -1 };
    const rv = r === 0 ? await hostRendezvous(o, master, bindHost, self, deadline) : await joinRendezvous(o, master, self, deadline);
    control = rv.control;
    leftLink = await connectLeft(o, rv.table[left], rv.token, deadline);
    const { link: rightLink, token, shm } = await acc.promise;
    if (token !== rv.token) {
      rightLink.destroy();
      throw new DistError(`a process claiming to be rank ${right} of another job connected to this rank`, right, 'rendezvous');
    }
    if (shm) {
      const out = ShmOutbox.open(shm);
      if (out) rightLink.attachShmOutbox(out);
    }
    return { left: leftLink, right: rightLink, control };
  } catch (e) {
    acc.cancel();
    leftLink?.destroy();
    for (const c of control) c?.destroy();
    throw e;
  } finally {
    listeners.close();
  }
}
