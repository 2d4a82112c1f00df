// Types of the generated bundle (scripts/build_tfjs_extras.mjs): it only registers tfjs gradients and chained ops.
export {};
