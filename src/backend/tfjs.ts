/**
 * tfjs as mambaout uses it: @tensorflow/tfjs-core, its cpu backend, and the gradient functions and chained tensor
 * methods the @tensorflow/tfjs umbrella used to register (bundled from tfjs-core by scripts/build_tfjs_extras.mjs,
 * because Node cannot load those tfjs-core files as they are). The wasm and webgpu backends are imported where they
 * are started (index.ts, webgpu.ts). Import this module for its side effects before running tfjs ops or gradients;
 * every entry into tfjs code in src/ (backend/index.ts, models/layers.ts, kernels/cpu) does.
 */
import '@tensorflow/tfjs-backend-cpu';
import './tfjs_extras.generated.js';
