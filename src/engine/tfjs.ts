/**
 * tfjs inference engine: the MambaOut model on the active tfjs backend.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { MambaOut } from '../models/mambaout.js';
import { checkBatchArgs, type InferenceEngine } from './index.js';

export class TfjsEngine implements InferenceEngine {
  readonly name: string;
  constructor(private readonly model: MambaOut, private readonly backendDescription: string = tf.getBackend()) {
    this.name = `tfjs-${tf.getBackend()}`;
  }

  describe(): string {
    return `tfjs on backend ${this.backendDescription}, model ${this.model.name}`;
  }

  async infer(batch: Float32Array, n: number, h: number, w: number): Promise<Float32Array> {
    checkBatchArgs(batch, n, h, w);
    const y = tf.tidy(() => this.model.forward(tf.tensor4d(batch, [n, h, w, 3])));
    try {
      return (await y.data()) as Float32Array;
    } finally {
      y.dispose();
    }
  }

  forward(batch: tf.Tensor4D): tf.Tensor2D {
    return this.model.forward(batch) as tf.Tensor2D;
  }

  dispose(): void {
    this.model.dispose();
  }
}
