/**
 * Declarative flag tables of the commands (the one CLI style: a `Flag[]` given to parse.ts's parseArgs). Each entry
 * mirrors an argparse flag of timm 0.6.11 train.py / validate.py (MambaOut copy, docs/timm-reference.md §1), with
 * the same dest name (underscores) and default. `inert` flags have no meaning on tfjs: they are accepted and produce
 * a one-line notice when set. This file holds the tables several commands share and train.py's (which the recipe
 * tests parse without loading the training loop); each other command declares its own table at the top of its
 * file in this folder (validate.ts, predict.ts, demo.ts, export.ts, distributed_train.ts), as timm's scripts do.
 */
import type { Options } from 'yargs';
import { DEFAULT_MAX_IMAGE_PIXELS } from '../limits.js';
import { SETTING_VARIABLES } from '../settings.js';
import { DEFAULT_MODEL } from '../models/registry.js';
import { ENGINE_CHOICES } from '../inference/load.js';

export interface Flag {
  /** argparse dest name, e.g. 'grad_accum_steps' (CLI spelling is --grad-accum-steps). */
  dest: string;
  type: 'string' | 'number' | 'boolean' | 'array-number' | 'array-string';
  default: unknown;
  describe: string;
  group: string;
  alias?: string[];
  choices?: readonly string[];
  /** Accepted for compatibility; a notice explains that it does nothing here. */
  inert?: string;
  /** Extra dashed spellings, e.g. --dr for --decay-rate. */
  nargs?: number;
}

export const flagName = (dest: string): string => dest.replace(/_/g, '-');

export function toYargs(flags: readonly Flag[]): Record<string, Options> {
  const out: Record<string, Options> = {};
  for (const f of flags) {
    const o: Options = { describe: f.describe + (f.inert ? ` [no effect here: ${f.inert}]` : ''), group: f.group };
    switch (f.type) {
      case 'string': o.type = 'string'; break;
      case 'number': o.type = 'number'; break;
      case 'boolean': o.type = 'boolean'; break;
      case 'array-number': o.type = 'number'; o.array = true; break;
      case 'array-string': o.type = 'string'; o.array = true; break;
    }
    if (f.default !== undefined && f.default !== null) o.default = f.default;
    if (f.alias) o.alias = f.alias;
    if (f.choices) o.choices = f.choices;
    if (f.nargs) o.nargs = f.nargs;
    out[flagName(f.dest)] = o;
  }
  return out;
}

const DS = 'Dataset parameters:';
const MD = 'Model parameters:';
const OP = 'Optimizer parameters:';
const LR = 'Learning rate schedule parameters:';
const AU = 'Augmentation and regularization parameters:';
const BN = 'Batch norm parameters (MambaOut has no BatchNorm):';
const EM = 'Model Exponential Moving Average:';
const MS = 'Miscellaneous parameters:';
const RT = 'Runtime (mambaout):';

const IM = 'Model parameters:';
const ID = 'Data parameters:';
/** Model/weights/engine flags shared by mambaout-predict and mambaout-demo. */
export const INFERENCE_MODEL_FLAGS: Flag[] = [
  { dest: 'model', type: 'string', default: undefined, describe: `model name (default: the checkpoint's architecture, else ${DEFAULT_MODEL})`, group: IM, alias: ['m'] },
  { dest: 'pretrained', type: 'boolean', default: false, describe: 'use the released ImageNet-1k weights (cached download)', group: IM },
  { dest: 'pretrained_path', type: 'string', default: '', describe: 'local file with the released weights (instead of the cache/download)', group: IM },
  { dest: 'checkpoint', type: 'string', default: '', describe: 'path to a checkpoint (.pth / .pth.tar / .safetensors, from mambaout-train or timm)', group: IM },
  { dest: 'use_ema', type: 'boolean', default: false, describe: 'use the EMA weights of the checkpoint if present', group: IM },
  { dest: 'num_classes', type: 'number', default: undefined, describe: 'number of classes (default: from the weights)', group: IM },
  { dest: 'class_map', type: 'string', default: '', describe: 'file with one class name per line (default: ImageNet-1k names for 1000 classes, class_<i> otherwise)', group: IM },
  { dest: 'engine', type: 'string', default: 'auto', describe: 'inference engine: auto (onnxruntime on CPU, tfjs on a GPU backend), onnxruntime, tfjs', group: IM, choices: ENGINE_CHOICES },
  { dest: 'threads', type: 'number', default: undefined, describe: 'onnxruntime threads (default: one per core)', group: IM },
  { dest: 'img_size', type: 'number', default: undefined, describe: "input image size (default: the model's, 224)", group: ID },
  { dest: 'crop_pct', type: 'number', default: undefined, describe: "center crop fraction (default: the model's, 1.0)", group: ID },
  { dest: 'interpolation', type: 'string', default: '', describe: "resize interpolation (default: the model's, bicubic)", group: ID },
];

export const LIST_MODELS_FLAG: Flag = { dest: 'list_models', type: 'boolean', default: false, describe: 'print the available models with their parameter counts and exit', group: 'Runtime (mambaout):' };

/** --max-image-pixels: train, validate, predict and demo (src/limits.ts). */
export const IMAGE_LIMIT_FLAG: Flag = {
  dest: 'max_image_pixels', type: 'number', default: undefined, group: RT,
  describe: `refuse images with more pixels than this, read from the header before decoding (default ${DEFAULT_MAX_IMAGE_PIXELS}, ` +
    `2x Pillow's MAX_IMAGE_PIXELS, where Pillow raises DecompressionBombError; env ${SETTING_VARIABLES.maxImagePixels})`,
};

export const BACKEND_FLAGS: Flag[] = [
  { dest: 'backend', type: 'string', default: undefined, describe: `tfjs backend: auto, webgpu, tensorflow, wasm, cpu (env ${SETTING_VARIABLES.backend})`, group: RT, choices: ['auto', 'webgpu', 'tensorflow', 'wasm', 'cpu'] },
  { dest: 'log_format', type: 'string', default: 'text', describe: 'log output: text (timm-like lines) or json (pino)', group: RT, choices: ['text', 'json'] },
];

export const TRAIN_FLAGS: Flag[] = [
  // Dataset
  { dest: 'dataset', type: 'string', default: '', describe: 'dataset type (default: ImageFolder/ImageTar if empty)', group: DS, alias: ['d'] },
  { dest: 'train_split', type: 'string', default: 'train', describe: 'dataset train split (default: train)', group: DS },
  { dest: 'val_split', type: 'string', default: 'validation', describe: 'dataset validation split (default: validation)', group: DS },
  { dest: 'dataset_download', type: 'boolean', default: false, describe: 'allow download of dataset for torch/ and tfds/ datasets', group: DS, inert: 'only folder datasets are supported' },
  { dest: 'class_map', type: 'string', default: '', describe: 'path to class to idx mapping file (default: "")', group: DS },
  // Model
  { dest: 'model', type: 'string', default: DEFAULT_MODEL, describe: `Name of model to train (default: "${DEFAULT_MODEL}"; timm's "resnet50" does not exist here)`, group: MD, alias: ['m'] },
  { dest: 'pretrained', type: 'boolean', default: false, describe: 'Start with pretrained version of specified network (if avail)', group: MD },
  { dest: 'pretrained_path', type: 'string', default: '', describe: 'local file with the release weights (instead of the cache/download)', group: MD },
  { dest: 'initial_checkpoint', type: 'string', default: '', describe: 'Initialize model from this checkpoint (default: none)', group: MD },
  { dest: 'resume', type: 'string', default: '', describe: 'Resume full model and optimizer state from checkpoint (default: none)', group: MD },
  { dest: 'no_resume_opt', type: 'boolean', default: false, describe: 'prevent resume of optimizer state when resuming model', group: MD },
  { dest: 'num_classes', type: 'number', default: undefined, describe: 'number of label classes (Model default if None)', group: MD },
  { dest: 'gp', type: 'string', default: undefined, describe: 'Global pool type', group: MD, inert: 'MambaOut always mean-pools' },
  { dest: 'img_size', type: 'number', default: undefined, describe: 'Image patch size (default: None => model default)', group: MD },
  { dest: 'input_size', type: 'array-number', default: undefined, describe: 'Input all image dimensions (d h w, e.g. --input-size 3 224 224)', group: MD, nargs: 3 },
  { dest: 'crop_pct', type: 'number', default: undefined, describe: 'Input image center crop percent (for validation only)', group: MD },
  { dest: 'mean', type: 'array-number', default: undefined, describe: 'Override mean pixel value of dataset', group: MD },
  { dest: 'std', type: 'array-number', default: undefined, describe: 'Override std deviation of dataset', group: MD },
  { dest: 'interpolation', type: 'string', default: '', describe: 'Image resize interpolation type (overrides model)', group: MD },
  { dest: 'batch_size', type: 'number', default: 128, describe: 'Input batch size for training (default: 128)', group: MD, alias: ['b'] },
  { dest: 'validation_batch_size', type: 'number', default: undefined, describe: 'Validation batch size override (default: None)', group: MD, alias: ['vb'] },
  { dest: 'channels_last', type: 'boolean', default: false, describe: 'Use channels_last memory layout', group: MD, inert: 'tfjs activations are always NHWC' },
  { dest: 'torchscript', type: 'boolean', default: false, describe: 'torch.jit.script the full model', group: MD, inert: 'no TorchScript on tfjs' },
  { dest: 'aot_autograd', type: 'boolean', default: false, describe: 'Enable AOT Autograd support', group: MD, inert: 'no AOT autograd on tfjs' },
  { dest: 'fuser', type: 'string', default: '', describe: "Select jit fuser. One of ('', 'te', 'old', 'nvfuser')", group: MD, inert: 'no jit fuser on tfjs' },
  { dest: 'fast_norm', type: 'boolean', default: false, describe: 'enable experimental fast-norm', group: MD, inert: 'MambaOut uses plain LayerNorm' },
  { dest: 'grad_checkpointing', type: 'boolean', default: false, describe: 'Enable gradient checkpointing through model blocks/stages', group: MD, inert: 'MambaOut has no gradient checkpointing (timm would fail)' },
  // Optimizer
  { dest: 'opt', type: 'string', default: 'adamw', describe: 'Optimizer (default: "adamw")', group: OP },
  { dest: 'opt_eps', type: 'number', default: undefined, describe: 'Optimizer Epsilon (default: None, use opt default)', group: OP },
  { dest: 'opt_betas', type: 'array-number', default: undefined, describe: 'Optimizer Betas (default: None, use opt default)', group: OP },
  { dest: 'momentum', type: 'number', default: 0.9, describe: 'Optimizer momentum (default: 0.9)', group: OP },
  { dest: 'weight_decay', type: 'number', default: 0.05, describe: 'weight decay (default: 0.05)', group: OP },
  { dest: 'clip_grad', type: 'number', default: undefined, describe: 'Clip gradient norm (default: None, no clipping)', group: OP },
  { dest: 'clip_mode', type: 'string', default: 'norm', describe: 'Gradient clipping mode. One of ("norm", "value", "agc")', group: OP, choices: ['norm', 'value', 'agc'] },
  { dest: 'layer_decay', type: 'number', default: undefined, describe: 'layer-wise learning rate decay (default: None)', group: OP },
  // LR schedule
  { dest: 'sched', type: 'string', default: 'cosine', describe: 'LR scheduler (default: "cosine")', group: LR },
  { dest: 'lr', type: 'number', default: 0.05, describe: 'learning rate (default: 0.05)', group: LR },
  { dest: 'lr_noise', type: 'array-number', default: undefined, describe: 'learning rate noise on/off epoch percentages', group: LR },
  { dest: 'lr_noise_pct', type: 'number', default: 0.67, describe: 'learning rate noise limit percent (default: 0.67)', group: LR },
  { dest: 'lr_noise_std', type: 'number', default: 1.0, describe: 'learning rate noise std-dev (default: 1.0)', group: LR },
  { dest: 'lr_cycle_mul', type: 'number', default: 1.0, describe: 'learning rate cycle len multiplier (default: 1.0)', group: LR },
  { dest: 'lr_cycle_decay', type: 'number', default: 0.5, describe: 'amount to decay each learning rate cycle (default: 0.5)', group: LR },
  { dest: 'lr_cycle_limit', type: 'number', default: 1, describe: 'learning rate cycle limit, cycles enabled if > 1', group: LR },
  { dest: 'lr_k_decay', type: 'number', default: 1.0, describe: 'learning rate k-decay for cosine/poly (default: 1.0)', group: LR },
  { dest: 'warmup_lr', type: 'number', default: 1e-6, describe: 'warmup learning rate (default: 1e-6)', group: LR },
  { dest: 'min_lr', type: 'number', default: 1e-5, describe: 'lower lr bound for cyclic schedulers that hit 0 (1e-5)', group: LR },
  { dest: 'epochs', type: 'number', default: 300, describe: 'number of epochs to train (default: 300)', group: LR },
  { dest: 'grad_accum_steps', type: 'number', default: 1, describe: 'gradient accumulation steps', group: LR },
  { dest: 'epoch_repeats', type: 'number', default: 0.0, describe: 'epoch repeat multiplier (number of times to repeat dataset epoch per train epoch).', group: LR, inert: 'TFDS only' },
  { dest: 'start_epoch', type: 'number', default: undefined, describe: 'manual epoch number (useful on restarts)', group: LR },
  { dest: 'decay_milestones', type: 'array-number', default: [30, 60], describe: 'list of decay epoch indices for multistep lr. must be increasing', group: LR },
  { dest: 'decay_epochs', type: 'number', default: 100, describe: 'epoch interval to decay LR', group: LR },
  { dest: 'warmup_epochs', type: 'number', default: 5, describe: 'epochs to warmup LR, if scheduler supports', group: LR },
  { dest: 'cooldown_epochs', type: 'number', default: 10, describe: 'epochs to cooldown LR at min_lr, after cyclic schedule ends', group: LR },
  { dest: 'patience_epochs', type: 'number', default: 10, describe: 'patience epochs for Plateau LR scheduler (default: 10; --sched plateau)', group: LR },
  { dest: 'decay_rate', type: 'number', default: 0.1, describe: 'LR decay rate (default: 0.1)', group: LR, alias: ['dr'] },
  // Augmentation
  { dest: 'no_aug', type: 'boolean', default: false, describe: 'Disable all training augmentation, override other train aug args', group: AU },
  { dest: 'scale', type: 'array-number', default: [0.08, 1.0], describe: 'Random resize scale (default: 0.08 1.0)', group: AU },
  { dest: 'ratio', type: 'array-number', default: [3 / 4, 4 / 3], describe: 'Random resize aspect ratio (default: 0.75 1.33)', group: AU },
  { dest: 'hflip', type: 'number', default: 0.5, describe: 'Horizontal flip training aug probability', group: AU },
  { dest: 'vflip', type: 'number', default: 0.0, describe: 'Vertical flip training aug probability', group: AU },
  { dest: 'color_jitter', type: 'number', default: 0.4, describe: 'Color jitter factor (default: 0.4)', group: AU },
  { dest: 'aa', type: 'string', default: 'rand-m9-mstd0.5-inc1', describe: 'Use AutoAugment policy. "v0" or "original". (default: rand-m9-mstd0.5-inc1)', group: AU },
  { dest: 'aug_repeats', type: 'number', default: 0, describe: 'Number of augmentation repetitions (distributed training only) (default: 0)', group: AU },
  { dest: 'aug_splits', type: 'number', default: 0, describe: 'Number of augmentation splits (default: 0, valid: 0 or >=2)', group: AU },
  { dest: 'jsd_loss', type: 'boolean', default: false, describe: 'Enable Jensen-Shannon Divergence + CE loss. Use with `--aug-splits`.', group: AU },
  { dest: 'bce_loss', type: 'boolean', default: false, describe: 'Enable BCE loss w/ Mixup/CutMix use.', group: AU },
  { dest: 'bce_target_thresh', type: 'number', default: undefined, describe: 'Threshold for binarizing softened BCE targets (default: None, disabled)', group: AU },
  { dest: 'reprob', type: 'number', default: 0.25, describe: 'Random erase prob (default: 0.25)', group: AU },
  { dest: 'remode', type: 'string', default: 'pixel', describe: 'Random erase mode (default: "pixel")', group: AU, choices: ['pixel', 'rand', 'const'] },
  { dest: 'recount', type: 'number', default: 1, describe: 'Random erase count (default: 1)', group: AU },
  { dest: 'resplit', type: 'boolean', default: false, describe: 'Do not random erase first (clean) augmentation split (no aug splits: the first half of each batch, as timm)', group: AU },
  { dest: 'mixup', type: 'number', default: 0.8, describe: 'mixup alpha, mixup enabled if > 0. (default: 0.8)', group: AU },
  { dest: 'cutmix', type: 'number', default: 1.0, describe: 'cutmix alpha, cutmix enabled if > 0. (default: 1.0)', group: AU },
  { dest: 'cutmix_minmax', type: 'array-number', default: undefined, describe: 'cutmix min/max ratio, overrides alpha and enables cutmix if set (default: None)', group: AU },
  { dest: 'mixup_prob', type: 'number', default: 1.0, describe: 'Probability of performing mixup or cutmix when either/both is enabled', group: AU },
  { dest: 'mixup_switch_prob', type: 'number', default: 0.5, describe: 'Probability of switching to cutmix when both mixup and cutmix enabled', group: AU },
  { dest: 'mixup_mode', type: 'string', default: 'batch', describe: 'How to apply mixup/cutmix params. Per "batch", "pair", or "elem"', group: AU, choices: ['batch', 'pair', 'elem'] },
  { dest: 'mixup_off_epoch', type: 'number', default: 0, describe: 'Turn off mixup after this epoch, disabled if 0 (default: 0)', group: AU },
  { dest: 'smoothing', type: 'number', default: 0.1, describe: 'Label smoothing (default: 0.1)', group: AU },
  { dest: 'train_interpolation', type: 'string', default: 'random', describe: 'Training interpolation (random, bilinear, bicubic default: "random"; "" or --no-aug: the model\'s)', group: AU },
  { dest: 'drop', type: 'number', default: 0.0, describe: 'Dropout rate (default: 0.)', group: AU, inert: 'timm passes it as drop_rate, which MambaOut ignores' },
  { dest: 'drop_connect', type: 'number', default: undefined, describe: 'Drop connect rate, DEPRECATED, use drop-path (default: None)', group: AU },
  { dest: 'drop_path', type: 'number', default: undefined, describe: 'Drop path rate (default: None)', group: AU },
  { dest: 'drop_block', type: 'number', default: undefined, describe: 'Drop block rate (default: None)', group: AU, inert: 'MambaOut has no DropBlock' },
  { dest: 'head_dropout', type: 'number', default: 0.0, describe: 'dropout rate for classifier (default: 0.0)', group: AU, inert: 'parsed but never passed to the model by MambaOut train.py' },
  // BatchNorm
  { dest: 'bn_momentum', type: 'number', default: undefined, describe: 'BatchNorm momentum override (if not None)', group: BN, inert: 'no BatchNorm' },
  { dest: 'bn_eps', type: 'number', default: undefined, describe: 'BatchNorm epsilon override (if not None)', group: BN, inert: 'no BatchNorm' },
  { dest: 'sync_bn', type: 'boolean', default: false, describe: 'Enable NVIDIA Apex or Torch synchronized BatchNorm.', group: BN, inert: 'no BatchNorm' },
  { dest: 'dist_bn', type: 'string', default: 'reduce', describe: 'Distribute BatchNorm stats between nodes after each epoch ("broadcast", "reduce", or ""); MambaOut has no BatchNorm, so only timm\'s log line', group: BN },
  { dest: 'split_bn', type: 'boolean', default: false, describe: 'Enable separate BN layers per augmentation split.', group: BN, inert: 'no BatchNorm' },
  // EMA
  { dest: 'model_ema', type: 'boolean', default: false, describe: 'Enable tracking moving average of model weights', group: EM },
  { dest: 'model_ema_force_cpu', type: 'boolean', default: false, describe: 'Force ema to be tracked on CPU, rank=0 node only. Disables EMA validation (here: the EMA stays with the weights; EMA validation is skipped)', group: EM },
  { dest: 'model_ema_decay', type: 'number', default: 0.9998, describe: 'decay factor for model weights moving average (default: 0.9998)', group: EM },
  // Misc
  { dest: 'seed', type: 'number', default: 42, describe: 'random seed (default: 42)', group: MS },
  { dest: 'worker_seeding', type: 'string', default: 'all', describe: 'worker seed mode (default: all; "part" is refused: numpy worker streams cannot be reproduced)', group: MS },
  { dest: 'log_interval', type: 'number', default: 50, describe: 'how many batches to wait before logging training status', group: MS },
  { dest: 'recovery_interval', type: 'number', default: 0, describe: 'how many batches to wait before writing recovery checkpoint', group: MS },
  { dest: 'checkpoint_hist', type: 'number', default: 10, describe: 'number of checkpoints to keep (default: 10)', group: MS },
  { dest: 'workers', type: 'number', default: 8, describe: 'how many training processes to use (default: 8)', group: MS, alias: ['j'] },
  { dest: 'save_images', type: 'boolean', default: false, describe: 'save images of input bathes every log interval for debugging', group: MS },
  { dest: 'amp', type: 'boolean', default: false, describe: 'use NVIDIA Apex AMP or Native AMP for mixed precision training', group: MS },
  { dest: 'apex_amp', type: 'boolean', default: false, describe: 'Use NVIDIA Apex AMP mixed precision', group: MS, inert: 'no Apex on tfjs' },
  { dest: 'native_amp', type: 'boolean', default: false, describe: 'Use Native Torch AMP mixed precision', group: MS },
  { dest: 'no_ddp_bb', type: 'boolean', default: false, describe: 'Force broadcast buffers for native DDP to off.', group: MS, inert: 'MambaOut has no buffers' },
  { dest: 'pin_mem', type: 'boolean', default: false, describe: 'Pin CPU memory in DataLoader for more efficient (sometimes) transfer to GPU.', group: MS, inert: 'no pinned memory in tfjs' },
  { dest: 'no_prefetcher', type: 'boolean', default: false, describe: 'disable fast prefetcher (accepted without mixup/cutmix, where both timm paths give the same batches)', group: MS },
  { dest: 'output', type: 'string', default: '', describe: 'path to output folder (default: none, current dir)', group: MS },
  { dest: 'experiment', type: 'string', default: '', describe: 'name of train experiment, name of sub-folder for output', group: MS },
  { dest: 'eval_metric', type: 'string', default: 'top1', describe: 'Best metric (default: "top1")', group: MS },
  { dest: 'tta', type: 'number', default: 0, describe: 'Test/inference time augmentation (oversampling) factor. 0=None (default: 0); timm 0.6.11 averages k consecutive validation outputs', group: MS },
  { dest: 'local_rank', type: 'number', default: undefined, describe: 'local rank, also spelled --local_rank (set by PyTorch launchers; the LOCAL_RANK environment variable wins; default: from RANK)', group: MS },
  { dest: 'use_multi_epochs_loader', type: 'boolean', default: false, describe: 'use the multi-epochs-loader to save time at the beginning of every epoch', group: MS, inert: 'loader workers persist already' },
  { dest: 'log_wandb', type: 'boolean', default: false, describe: 'log training and validation metrics to wandb', group: MS, inert: 'wandb is not available in Node' },
  ...BACKEND_FLAGS,
  IMAGE_LIMIT_FLAG,
  LIST_MODELS_FLAG,
  { dest: 'dist_timeout', type: 'number', default: 300, describe: 'seconds before a silent distributed peer is declared dead', group: RT },
];

/** Notices for the flags that are set (differ from default) and have no effect here; `args` keyed by dest name. */
export function inertNotices(flags: readonly Flag[], args: Record<string, unknown>): string[] {
  const out: string[] = [];
  for (const f of flags) {
    if (!f.inert) continue;
    const v = args[f.dest];
    const set = f.type === 'boolean' ? v === true : v !== undefined && v !== null && v !== '' && v !== f.default;
    if (set) out.push(`--${flagName(f.dest)} has no effect in mambaout: ${f.inert}.`);
  }
  return out;
}
