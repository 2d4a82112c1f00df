// onnxruntime-node 1.16 names "dist/index.d.ts" as its typings but does not ship that file; its API is
// onnxruntime-common's, which it re-exports.
declare module 'onnxruntime-node' {
  export * from 'onnxruntime-common';
}
