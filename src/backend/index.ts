/**
 * Backend selection: `--backend auto|webgpu|tensorflow|wasm|cpu` (flag or MAMBAOUT_BACKEND).
 *
 * auto tries, in order: tensorflow (tfjs-node-gpu, then tfjs-node, when installed), webgpu (when Dawn yields an
 * adapter), wasm (for inference; for training auto takes cpu, because the wasm heap is capped at 4 GB: femto at
 * 224 px needs ~0.67 GB per image of batch in a training step), cpu. One log line names the backend chosen and why
 * the others were skipped. wasm gains the gradient kernels it lacks from kernels/cpu, so `--backend wasm` trains.
 */
import * as tf from '@tensorflow/tfjs-core';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { UserError, errMessage, firstLine } from '../errors.js';
import { settings } from '../settings.js';
import './tfjs.js';

export const BACKEND_CHOICES = ['auto', 'webgpu', 'tensorflow', 'wasm', 'cpu'] as const;
export type BackendChoice = (typeof BACKEND_CHOICES)[number];

export interface BackendResult {
  /** tfjs backend name now active ('webgpu', 'tensorflow', 'wasm', 'cpu'). */
  name: string;
  /** Human description, e.g. 'webgpu (NVIDIA H200, vulkan)' or 'tensorflow (tfjs-node-gpu)'. */
  description: string;
  /** One line: chosen backend and why others were skipped. */
  message: string;
  /** Whether the backend can compute gradients for MambaOut (training). */
  supportsTraining: boolean;
}

export interface InitBackendOptions {
  /** Training needs gradient kernels: wasm is skipped (auto) or refused (explicit). */
  training?: boolean;
  /** Adapter index for webgpu (multi-GPU workers); default settings.webgpuAdapter (MAMBAOUT_WEBGPU_ADAPTER). */
  adapterIndex?: number;
  /** Threads for the wasm backend. */
  wasmThreads?: number;
}

let active: BackendResult | null = null;

export function activeBackend(): BackendResult | null {
  return active;
}

/** Resolve the requested backend name from a flag value and MAMBAOUT_BACKEND. */
export function requestedBackend(flag?: string): BackendChoice {
  const v = (flag ?? settings.backend).toLowerCase();
  if (!(BACKEND_CHOICES as readonly string[]).includes(v)) {
    throw new UserError(`unknown backend '${v}'; choose one of ${BACKEND_CHOICES.join(', ')}`);
  }
  return v as BackendChoice;
}

type Attempt = { ok: true; description: string } | { ok: false; reason: string };

async function tryTensorflow(): Promise<Attempt> {
  const reasons: string[] = [];
  for (const pkg of ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']) {
    try {
      await import(pkg);
      if (tf.findBackend('tensorflow')) {
        await tf.setBackend('tensorflow');
        await tf.ready();
        return { ok: true, description: `tensorflow (${pkg.split('/')[1]})` };
      }
      reasons.push(`${pkg} loaded but registered no backend`);
    } catch (e) {
      const msg = errMessage(e);
      reasons.push(/Cannot find (module|package)/.test(msg) ? `${pkg} not installed` : `${pkg} failed to load (${firstLine(msg, 160)})`);
    }
  }
  return { ok: false, reason: reasons.join(', ') };
}

/** On Linux Dawn needs the Vulkan loader; without it, skip quietly (Dawn would print warnings on stderr). */
function vulkanLoaderMissing(): boolean {
  if (process.platform !== 'linux') return false;
  const dirs = [
    ...(process.env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean),
    '/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/lib/x86_64-linux-gnu', '/usr/lib64', '/usr/lib', '/lib64', '/lib', '/usr/local/lib',
  ];
  return !dirs.some((d) => existsSync(join(d, 'libvulkan.so.1')));
}

async function tryWebgpu(adapterIndex?: number): Promise<Attempt> {
  if (vulkanLoaderMissing()) return { ok: false, reason: 'no Vulkan loader (libvulkan.so.1) on this machine, so Dawn has no GPU to offer' };
  try {
    const mod = await import('./webgpu.js');
    const r = await mod.initWebGPU({ adapterIndex });
    if (!r.ok) return { ok: false, reason: r.reason };
    return { ok: true, description: r.description };
  } catch (e) {
    return { ok: false, reason: `webgpu failed to start (${firstLine(errMessage(e), 160)})` };
  }
}

async function tryWasm(threads?: number): Promise<Attempt> {
  try {
    const wasm = await import('@tensorflow/tfjs-backend-wasm');
    if (threads && threads > 0) wasm.setThreadsCount(threads);
    // After the wasm package registered its kernels: add the gradient kernels it lacks and faster transposed matmul.
    const { registerWasmGradKernels } = await import('./kernels/cpu/index.js');
    registerWasmGradKernels();
    await tf.setBackend('wasm');
    await tf.ready();
    return { ok: true, description: 'wasm' };
  } catch (e) {
    return { ok: false, reason: `wasm failed to start (${firstLine(errMessage(e), 160)})` };
  }
}

async function useCpu(): Promise<Attempt> {
  // tfjs's cpu kernels for convolution gradients, matmul and broadcasting are 10-100x slower than ours.
  const { registerCpuKernels } = await import('./kernels/cpu/index.js');
  registerCpuKernels();
  await tf.setBackend('cpu');
  await tf.ready();
  return { ok: true, description: 'cpu' };
}

/** Start a tfjs backend. Throws UserError when an explicitly requested backend is unavailable. */
export async function initBackend(choice: BackendChoice | string = 'auto', opts: InitBackendOptions = {}): Promise<BackendResult> {
  const requested = requestedBackend(choice);
  // Silence tfjs's "install tfjs-node" banner and debug checks: we choose backends deliberately.
  tf.env().set('PROD', true);
  // Unset: webgpu.ts reads settings.webgpuAdapter itself (and names a bad value as the reason webgpu was skipped).
  const adapterIndex = opts.adapterIndex;
  const skipped: string[] = [];
  let chosen: { name: string; description: string } | null = null;

  const attempt = async (name: string, fn: () => Promise<Attempt>): Promise<boolean> => {
    const r = await fn();
    if (r.ok) {
      chosen = { name, description: r.description };
      return true;
    }
    skipped.push(`${name}: ${r.reason}`);
    return false;
  };

  if (requested === 'auto') {
    if (!(await attempt('tensorflow', tryTensorflow)) && !(await attempt('webgpu', () => tryWebgpu(adapterIndex)))) {
      if (opts.training) skipped.push('wasm: its 4 GB heap limits training batches, auto trains on cpu (ask for --backend wasm to use it)');
      else await attempt('wasm', () => tryWasm(opts.wasmThreads));
      if (!chosen) await attempt('cpu', useCpu);
    }
  } else {
    const fn = { tensorflow: tryTensorflow, webgpu: () => tryWebgpu(adapterIndex), wasm: () => tryWasm(opts.wasmThreads), cpu: useCpu }[requested];
    if (!(await attempt(requested, fn))) {
      const hint = requested === 'webgpu'
        ? 'no WebGPU adapter is available on this machine (Dawn found none); use --backend cpu or auto'
        : requested === 'tensorflow'
          ? 'install @tensorflow/tfjs-node-gpu or @tensorflow/tfjs-node (needs internet for libtensorflow), or use --backend auto'
          : 'use --backend auto';
      throw new UserError(`backend '${requested}' is not available (${skipped.join('; ')}): ${hint}`);
    }
  }
  const c = chosen as unknown as { name: string; description: string };
  const message = `backend: ${c.description}` + (requested === 'auto' ? ' (auto)' : '') + (skipped.length ? `; skipped ${skipped.join('; ')}` : '');
  active = { name: c.name, description: c.description, message, supportsTraining: true };
  return active;
}

/** Backends that run tfjs on a GPU: where the tfjs engine beats onnxruntime for inference. */
export function isGpuBackend(name: string): boolean {
  return name === 'webgpu' || name === 'tensorflow';
}

/**
 * Start a GPU backend if `choice` can give one, else nothing: what `--engine auto` needs to decide between the tfjs
 * engine (on a GPU) and onnxruntime (on the CPU), without starting the wasm backend it would not use (2-core box,
 * 2026-11-30, load 3.7, under tsx: initBackend('auto') 151-177 ms of CPU, this 7-8 ms). `auto` tries tensorflow then webgpu as
 * initBackend does; an explicit GPU choice must start (a UserError as initBackend's otherwise); wasm and cpu give
 * null. `skipped` says why no GPU backend runs (for the log line).
 */
export async function initGpuBackend(choice: BackendChoice | string = 'auto', opts: InitBackendOptions = {}): Promise<{ backend: BackendResult | null; skipped: string }> {
  const requested = requestedBackend(choice);
  if (isGpuBackend(requested)) return { backend: await initBackend(requested, opts), skipped: '' };
  if (requested !== 'auto') return { backend: null, skipped: `--backend ${requested} is not a GPU backend` };
  tf.env().set('PROD', true);
  const reasons: string[] = [];
  for (const [name, fn] of [['tensorflow', tryTensorflow], ['webgpu', () => tryWebgpu(opts.adapterIndex)]] as const) {
    const r = await fn();
    if (r.ok) {
      active = { name, description: r.description, message: `backend: ${r.description} (auto)${reasons.length ? `; skipped ${reasons.join('; ')}` : ''}`, supportsTraining: true };
      return { backend: active, skipped: '' };
    }
    reasons.push(`${name}: ${r.reason}`);
  }
  return { backend: null, skipped: reasons.join('; ') };
}

/** Release backend resources (Dawn device) so the process can exit. */
export async function releaseBackend(): Promise<void> {
  if (active?.name === 'webgpu') {
    try {
      const mod = await import('./webgpu.js');
      mod.releaseWebGPU();
    } catch {
      /* nothing to release */
    }
  }
  active = null;
}

