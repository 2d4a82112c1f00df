// Types of the generated bundle (scripts/build_tfjs_extras.mjs): it registers tfjs's gradients and chained ops;
// the second import brings the chained methods' declarations (x.sum(), x.reshape(), ...) onto tf.Tensor.
import '@tensorflow/tfjs-core/dist/register_all_gradients.js';
import '@tensorflow/tfjs-core/dist/public/chained_ops/register_all_chained_ops.js';
