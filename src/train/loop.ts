/**
 * The training program: timm 0.6.11 train.py as the MambaOut repository runs it (timm-reference §6-§10), on tfjs.
 *
 * Flow: args -> (distributed init) -> backend -> model (+ pretrained / initial checkpoint) -> data config ->
 * optimizer -> resume -> EMA -> broadcast weights -> scheduler -> datasets/loaders -> mixup -> loss -> output dir
 * (args.yaml, CheckpointSaver) -> epochs: train, validate (+EMA), scheduler step, summary.csv, curves.svg/png (curves.ts),
 * checkpoint (with the model's metadata: architecture, classes and names, eval preprocessing).
 * Log lines are timm's text with Python's number formatting; with --log-format json each also carries its numbers as
 * fields (event, epoch, step, loss, lr, img_per_sec, top1, top5, ...).
 *
 * Randomness: every source is seeded from (--seed, rank, epoch), so 2 epochs straight equal 1 epoch + resume +
 * 1 epoch, and the same command twice on the cpu backend writes the same summary.csv.
 *
 * Feeding the device (as timm's prefetcher + .item() at log points): the loop receives model-ready batches from
 * src/data/prefetch.ts (mixup, normalization and erasing done there, on the GPU on webgpu/tensorflow), and it never
 * waits for a result it does not need. Loss values are read back at --log-interval, at the epoch's last batch and
 * before a checkpoint is written; eval metrics likewise. So the non-finite-loss check runs at those points too: a
 * diverged run stops at the next log line (naming the first bad batch), at most --log-interval batches late, and
 * never after a checkpoint of NaN weights was saved. `InFlight` keeps at most 2 steps queued on the device.
 */
import * as tf from '@tensorflow/tfjs-core';
import { existsSync, statSync, promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { UserError } from '../errors.js';
import { settings } from '../settings.js';
import { setMaxImagePixels } from '../limits.js';
import type { Logger } from '../log/logger.js';
import { Progress } from '../log/progress.js';
import { STREAM, streamSeed } from '../utils/rng.js';
import { runSteps, type Steps } from '../utils/steps.js';
import { InFlight, readBack } from '../backend/fence.js';
import { initBackend, releaseBackend, type BackendResult } from '../backend/index.js';
import { createModel, type MambaOut } from '../models/mambaout.js';
import { expectedModel, getModelConfig, isModelName, namedArchitecture } from '../models/registry.js';
import { loadCheckpoint } from '../checkpoint/load.js';
import { CheckpointSaver, type TrainCheckpoint } from '../checkpoint/saver.js';
import { buildModelMeta, type ModelMeta } from '../checkpoint/model_meta.js';
import { writeError, writeFileAtomic } from '../checkpoint/atomic.js';
import { resolvePretrained } from '../pretrained.js';
import { resolveSplit, scanImageFolder, type ImageFolder } from '../data/folder.js';
import { describeDataConfig, resolveDataConfig, type DataConfig } from '../data/config.js';
import { DataLoader } from '../data/loader.js';
import { BATCH_PATH_WHERE, PrefetchLoader, type BatchPath } from '../data/prefetch.js';
import { DistributedSampler, OrderedDistributedSampler, SequentialSampler, type Sampler } from '../data/sampler.js';
import { Mixup, mixupActive } from '../data/mixup.js';
import type { EraseMode } from '../data/transforms/erasing.js';
import { createOptimizer, flattenOptimizerState, type Optimizer, type ParamGroup, type NamedParameter } from './optim/index.js';
import { createScheduler, type Scheduler } from './scheduler.js';
import { createTrainLoss, crossEntropy, type TrainLoss } from './loss.js';
import { dispatchClipGrad, type ClipMode } from './clip.js';
import { ModelEmaV2 } from './ema.js';
import { accuracyCounts, AverageMeter } from './metrics.js';
import { readResumeCheckpoint, torchOptimizerToTfjsLayout, type ResumeState } from './resume.js';
import { TrainingCurves } from './curves.js';
import { checkNoPrefetcher, checkWorkerSeeding, distBnLogLine, trainAugPlan, ttaReduce, type TrainAugPlan } from './timm_flags.js';
import { padL, pyExp, pyFixed, pyG, pyRepr } from '../utils/pyformat.js';
import { enableMixedPrecision } from '../ops/fused.js';
import { argsToYaml } from './args_yaml.js';
import { stepEachBucket, type DistributedDataParallel } from './ddp.js';
import { StepReplay } from './step_replay.js';
import { trainConfig, type Args, type TrainConfig } from './config.js';


export interface TrainResult {
  bestMetric: number | null;
  bestEpoch: number | null;
  outputDir: string;
  epochsRun: number;
  interrupted: boolean;
}

export interface TrainContext {
  logger: Logger;
  dist: DistributedDataParallel | null;
  /** Set by a SIGINT/SIGTERM handler: stop at the next micro-batch boundary after saving a recovery checkpoint. */
  stopRequested?: () => boolean;
  /** Test hook: called after each optimizer update. */
  onUpdate?: (info: { epoch: number; update: number; model: MambaOut }) => void | Promise<void>;
  /** Where the prefetcher does the batch work (tests, benchmarks); default: chosen for the backend. */
  batchPath?: BatchPath | 'auto';
}

/** Safe experiment name part: non-alphanumerics -> '_', trailing '_' stripped (timm safe_model_name). */
function safeModelName(name: string): string {
  return name.replace(/[^A-Za-z0-9]/g, '_').replace(/_+$/, '');
}

function timestamp(d = new Date()): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

interface EvalMetrics {
  loss: number;
  top1: number;
  top5: number;
}

/** timm's train.py main() on the parsed flags (`args`, which stay timm's args for args.yaml and the checkpoints). */
export async function runTraining(args: Args, ctx: TrainContext): Promise<TrainResult> {
  const cfg: TrainConfig = trainConfig(args);
  const { logger, dist } = ctx;
  const rank = dist?.rank ?? 0;
  const world = dist?.worldSize ?? 1;
  const isMain = rank === 0;
  const log = (m: string) => {
    if (isMain) logger.info(m);
  };
  const seed = cfg.seed;
  if (dist && world > 1) log(`Training in distributed mode with multiple processes, 1 device per process. Process ${rank}, total ${world}.`);
  else log('Training with a single process on 1 device.');

  // ---- validation of simple arguments
  const B = cfg.batchSize;
  const A = cfg.gradAccumSteps;
  if (!Number.isInteger(B) || B < 1) throw new UserError(`--batch-size must be a positive integer, got ${B}`);
  if (!Number.isInteger(A) || A < 1) throw new UserError(`--grad-accum-steps must be a positive integer, got ${A}`);
  const mcfg = getModelConfig(cfg.model);
  const modelName = mcfg.name;
  if (cfg.dataset && !/^(folder\/?|)$/.test(cfg.dataset)) {
    throw new UserError(`--dataset '${cfg.dataset}' is not supported: only ImageNet-style folders (leave --dataset empty)`);
  }
  if (cfg.augSplits > 0) throw new UserError('--aug-splits (AugMix splits) is not supported by mambaout');
  if (cfg.augRepeats > 0) throw new UserError('--aug-repeats (repeated augmentation sampler) is not supported by mambaout');
  if (cfg.layerDecay !== undefined) throw new UserError('--layer-decay is not supported by mambaout (for MambaOut timm applies no per-layer scaling anyway)');
  if (cfg.saveImages) log('--save-images is not supported; ignoring it.');
  const nWorkers = cfg.workers;
  if (!Number.isInteger(nWorkers) || nWorkers < 0) throw new UserError(`--workers must be a whole number >= 0, got ${nWorkers}`);
  const outRoot = cfg.output;
  if (outRoot && existsSync(outRoot) && !statSync(outRoot).isDirectory()) {
    throw new UserError(`--output '${outRoot}' is a file; give a folder (it is created when missing)`);
  }
  setMaxImagePixels(cfg.maxImagePixels);
  checkWorkerSeeding(cfg.workerSeeding);

  // ---- datasets first: a missing folder should fail before any heavy work
  const dataDir = cfg.dataDir;
  if (!existsSync(dataDir)) throw new UserError(`data folder '${dataDir}' does not exist`);
  const classMap = cfg.classMap || undefined;
  const trainRoot = resolveSplit(dataDir, cfg.trainSplit);
  const evalRoot = resolveSplit(dataDir, cfg.valSplit);
  const trainSet: ImageFolder = await scanImageFolder(trainRoot, { classMap });
  const evalSet: ImageFolder = await scanImageFolder(evalRoot, { classMap });
  if (evalRoot === trainRoot) log(`WARNING: no '${cfg.valSplit}' split under ${dataDir}; validating on ${evalRoot}`);

  // ---- backend
  const backend: BackendResult = await initBackend(cfg.backend, { training: true });
  log(backend.message);

  // ---- number of classes: --num-classes, else the dataset's (timm would use the model's 1000)
  let numClasses = cfg.numClasses;
  if (numClasses === undefined) {
    numClasses = cfg.pretrained && trainSet.classes.length === mcfg.defaultCfg.numClasses ? mcfg.defaultCfg.numClasses : trainSet.classes.length;
    log(`Using ${numClasses} classes (from the training folder; --num-classes overrides).`);
  }
  if (trainSet.classes.length > numClasses) {
    throw new UserError(`the training folder has ${trainSet.classes.length} classes but the model has ${numClasses} (--num-classes)`);
  }
  args.num_classes = numClasses; // timm: args.num_classes = model.num_classes (the record is timm's args)

  // ---- model
  const dropPath = cfg.dropPath ?? 0;
  const model = createModel(modelName, { numClasses, drop_path_rate: dropPath, seed: seed + rank });
  const params: NamedParameter[] = model.parameterInfo().map((p) => ({ name: p.name, variable: p.variable }));
  try {
    if (cfg.pretrained || cfg.pretrainedPath) {
      const file = await resolvePretrained(modelName, {
        path: cfg.pretrainedPath || undefined,
        interactive: logger.interactive,
        log,
        verify: async (f) => {
          await loadCheckpoint(f, { stateDictOnly: true, expect: expectedModel(modelName) });
        },
      });
      const { stateDict } = await loadCheckpoint(file, { stateDictOnly: true, expect: expectedModel(modelName) });
      if (numClasses !== (stateDict.get('head.fc2.bias')?.shape[0] ?? numClasses)) {
        // timm's load_pretrained drops the classifier when num_classes differs.
        stateDict.delete('head.fc2.weight');
        stateDict.delete('head.fc2.bias');
        model.loadStateDict(stateDict, { strict: false });
        log(`Loaded pretrained weights from ${file} (classifier re-initialised for ${numClasses} classes)`);
      } else {
        model.loadStateDict(stateDict);
        log(`Loaded pretrained weights from ${file}`);
      }
    }
    if (cfg.initialCheckpoint) {
      const { stateDict } = await loadCheckpoint(cfg.initialCheckpoint, { useEma: true, stateDictOnly: true, expect: expectedModel(modelName) });
      model.loadStateDict(stateDict);
      log(`Loaded state_dict from checkpoint '${cfg.initialCheckpoint}'`);
    }
    log(`Model ${modelName} created, param count:${model.numParams()}`);

    // ---- data config
    const dataConfig: DataConfig = resolveDataConfig(mcfg.defaultCfg, cfg.dataOverrides);
    const [, H, W] = dataConfig.inputSize;
    for (const line of describeDataConfig(dataConfig)) log(line);
    // What every checkpoint of this run says about the model: predict/validate/export/demo need nothing else.
    const modelMeta: ModelMeta = buildModelMeta({
      ...dataConfig,
      architecture: modelName,
      numClasses,
      numFeatures: mcfg.dims[mcfg.dims.length - 1],
      classNames: Array.from({ length: numClasses }, (_, i) => trainSet.classes[i] ?? `class_${i}`),
    });

    // ---- optimizer
    const optimizer: Optimizer<ParamGroup> = createOptimizer(params, {
      opt: cfg.opt,
      lr: cfg.lr,
      weightDecay: cfg.weightDecay,
      momentum: cfg.momentum,
      eps: cfg.optEps,
      betas: cfg.optBetas,
    });
    const amp = cfg.amp;
    if (enableMixedPrecision(amp)) {
      log('Using bfloat16 activation storage (WebGPU AMP: f32 math, f32 master weights). Training in mixed precision.');
    } else if (amp) {
      log(`WARNING: --amp requested but the ${backend.name} backend trains in float32 only; training in float32.`);
    } else log('AMP not enabled. Training in float32.');

    // ---- resume
    // (ours, or a timm train.py .pth.tar: a run started in PyTorch continues here; train/resume.ts)
    let resumeEpoch: number | null = null;
    let resumed: ResumeState | null = null;
    if (cfg.resume) {
      const file = cfg.resume;
      if (!existsSync(file)) throw new UserError(`--resume checkpoint '${file}' does not exist`);
      resumed = await readResumeCheckpoint(file);
      const held = namedArchitecture(resumed.arch, resumed.stateDict);
      if (held && held !== modelName && isModelName(held)) {
        throw new UserError(`--model ${modelName} conflicts with the checkpoint '${file}', which holds a ${held} model; pass --model ${held}`);
      }
      if (resumed.kind === 'weights') {
        model.loadStateDict(resumed.stateDict);
        log(`Loaded checkpoint '${file}' (model weights only; no training state inside)`);
      } else {
        log('Restoring model state from checkpoint...');
        model.loadStateDict(resumed.stateDict);
        if (!cfg.noResumeOpt && resumed.optimizer) {
          // torch's per-parameter state is in PyTorch layout: permute conv tensors to ours first
          const kinds = new Map(model.parameterInfo().map((p) => [p.name, p.kind]));
          const layout = optimizer.parameters().map((p) => ({ name: p.name, kind: kinds.get(p.name)!, shape: p.variable.shape }));
          optimizer.loadStateDict(resumed.kind === 'timm' && resumed.optimizer instanceof Map ? torchOptimizerToTfjsLayout(resumed.optimizer, layout) : resumed.optimizer);
          log('Restoring optimizer state from checkpoint...');
        }
        for (const k of resumed.ignored) log(`Not restoring '${k}' from the checkpoint: loss-scaler state has no use in float32 training`);
        resumeEpoch = resumed.resumeEpoch;
        log(`Loaded checkpoint '${file}' (epoch ${resumed.epoch})`);
      }
    }

    // ---- EMA (after resume, before the weights are broadcast: timm's order)
    let ema: ModelEmaV2 | null = null;
    let emaModel: MambaOut | null = null;
    if (cfg.modelEma) {
      ema = new ModelEmaV2(params, cfg.modelEmaDecay);
      if (resumed?.stateDictEma) {
        // EMA state is kept in the checkpoint in PyTorch layout; convert through a scratch model.
        const tmp = createModel(modelName, { numClasses, noInit: true });
        tmp.loadStateDict(resumed.stateDictEma);
        ema.set(tmp.parameterInfo().map((p) => ({ name: p.name, variable: p.variable })));
        tmp.dispose();
        log('Loaded state_dict_ema');
      }
      emaModel = createModel(modelName, { numClasses, noInit: true });
    }

    // ---- distributed: rank 0's weights everywhere (DDP broadcast at wrap time)
    if (dist && world > 1) {
      await dist.broadcastParams(params);
      log('Using mambaout all-reduce data parallel (ring over TCP).');
    }

    // ---- scheduler
    const { scheduler, numEpochs } = createScheduler(
      {
        sched: cfg.sched,
        epochs: cfg.epochs,
        minLr: cfg.minLr,
        warmupLr: cfg.warmupLr,
        warmupEpochs: cfg.warmupEpochs,
        cooldownEpochs: cfg.cooldownEpochs,
        lrNoise: cfg.lrNoise,
        lrNoisePct: cfg.lrNoisePct,
        lrNoiseStd: cfg.lrNoiseStd,
        seed,
        lrCycleMul: cfg.lrCycleMul,
        lrCycleDecay: cfg.lrCycleDecay,
        lrCycleLimit: cfg.lrCycleLimit,
        lrKDecay: cfg.lrKDecay,
        decayEpochs: cfg.decayEpochs,
        decayMilestones: cfg.decayMilestones,
        decayRate: cfg.decayRate,
        patienceEpochs: cfg.patienceEpochs,
        evalMetric: cfg.evalMetric,
      },
      optimizer,
    );
    let startEpoch = 0;
    if (cfg.startEpoch !== undefined) startEpoch = cfg.startEpoch;
    else if (resumeEpoch !== null) startEpoch = resumeEpoch;
    if (startEpoch > 0) scheduler.step(startEpoch);
    log(`Scheduled epochs: ${numEpochs}`);

    // ---- loaders
    const totalBatch = B * A * world;
    const stepsPerEpoch = Math.floor(trainSet.samples.length / totalBatch);
    if (stepsPerEpoch < 1) {
      throw new UserError(`the training set has ${trainSet.samples.length} images, fewer than one optimizer step needs (batch ${B} x accumulation ${A} x ${world} process(es) = ${totalBatch}); lower --batch-size or --grad-accum-steps`);
    }
    log(`Total batch size: ${totalBatch}`);
    const mixupArgs = {
      mixupAlpha: cfg.mixup,
      cutmixAlpha: cfg.cutmix,
      cutmixMinmax: cfg.cutmixMinmax,
    };
    const aug = trainAugPlan({
      noAug: cfg.noAug,
      mixupActive: mixupActive(mixupArgs), // timm keeps mixup/cutmix with --no-aug
      trainInterpolation: cfg.trainInterpolation,
      modelInterpolation: dataConfig.interpolation,
      reprob: cfg.reprob,
      resplit: cfg.resplit,
    });
    const useMixup = aug.mixup;
    const noPrefetcherNote = checkNoPrefetcher(cfg.noPrefetcher, useMixup);
    if (noPrefetcherNote) log(noPrefetcherNote);
    const mixup = useMixup
      ? new Mixup({
          ...mixupArgs,
          prob: cfg.mixupProb,
          switchProb: cfg.mixupSwitchProb,
          mode: cfg.mixupMode as 'batch' | 'pair' | 'elem',
          labelSmoothing: cfg.smoothing,
          numClasses,
        })
      : null;
    if (mixup && B % 2 !== 0) throw new UserError(`Mixup/CutMix needs an even --batch-size, got ${B}`);
    // One shuffling rule for 1 and N processes: a permutation seeded by (--seed + epoch), padded and strided over
    // ranks (torch's DistributedSampler; timm uses its fixed seed 0 there and the global RNG in single-process
    // runs). So W processes with batch B see exactly the batches of 1 process with batch W·B.
    const trainSampler: Sampler = new DistributedSampler(trainSet.samples.length, { numReplicas: world, rank, shuffle: true, seed });
    const workers = cfg.workers;
    const trainLoader = new DataLoader<Uint8Array>({
      samples: trainSet.samples,
      transform: {
        kind: 'train',
        imgSize: [H, W],
        scale: cfg.scale,
        ratio: cfg.ratio,
        hflip: cfg.hflip,
        vflip: cfg.vflip,
        aa: cfg.aa || null,
        colorJitter: cfg.colorJitter,
        interpolation: aug.interpolation, // --no-aug or '': the model's (timm)
        noAug: cfg.noAug,
        cropPct: null,
        mean: dataConfig.mean as [number, number, number],
      },
      batchSize: B,
      workers,
      dropLast: true,
      sampler: trainSampler,
      seed: seed + rank,
      onSkip: (p, why) => logger.warn(`skipping unreadable image ${p}: ${why}`),
    });
    const evalSampler: Sampler = world > 1 ? new OrderedDistributedSampler(evalSet.samples.length, world, rank) : new SequentialSampler(evalSet.samples.length);
    const evalLoader = new DataLoader<Uint8Array>({
      samples: evalSet.samples,
      transform: { kind: 'eval', ...dataConfig, output: 'uint8' },
      batchSize: cfg.validationBatchSize ?? B,
      workers,
      sampler: evalSampler,
      onSkip: (p, why) => logger.warn(`skipping unreadable image ${p}: ${why}`),
    });

    // ---- losses
    const trainLoss: TrainLoss = createTrainLoss({
      jsdLoss: cfg.jsdLoss,
      mixupActive: useMixup,
      bceLoss: cfg.bceLoss,
      bceTargetThresh: cfg.bceTargetThresh ?? null,
      smoothing: cfg.smoothing,
    });

    // ---- prefetchers: model-ready batches (timm's PrefetchLoader; re_prob only when augmenting, as timm)
    const reprob = cfg.noAug ? 0 : cfg.reprob;
    const trainPrefetch = new PrefetchLoader(trainLoader, {
      mean: dataConfig.mean,
      std: dataConfig.std,
      path: ctx.batchPath,
      train: {
        mixup,
        erasing: reprob > 0 ? { probability: reprob, mode: cfg.remode as EraseMode, maxCount: cfg.recount } : null,
        targets: trainLoss.targets,
        numClasses,
        smoothing: cfg.smoothing,
        seed,
        rank,
      },
    });
    const evalPrefetch = new PrefetchLoader(evalLoader, { mean: dataConfig.mean, std: dataConfig.std, path: ctx.batchPath });
    log(`Batch work (mixup/cutmix, normalize, erasing) ${BATCH_PATH_WHERE[trainPrefetch.path]}.`);

    // ---- output folder (rank 0)
    let outputDir = '';
    let saver: CheckpointSaver | null = null;
    const evalMetric = cfg.evalMetric;
    if (isMain) {
      const exp = cfg.experiment || [timestamp(), safeModelName(modelName), String(W)].join('-');
      outputDir = join(cfg.output || './output/train', exp);
      await fsp.mkdir(outputDir, { recursive: true }).catch((e: unknown) => {
        throw writeError(outputDir, e);
      });
      saver = new CheckpointSaver(outputDir, cfg.checkpointHist, evalMetric === 'loss', log);
      const { __yaml, ...rest } = args;
      await writeFileAtomic(join(outputDir, 'args.yaml'), (__yaml as string) ?? argsToYaml(rest));
    }

    const state: LoopState = {
      cfg, logger, dist, model, params, optimizer, scheduler, ema, emaModel, mixup, trainLoss, trainPrefetch, evalPrefetch,
      dataConfig, numClasses, B, A, world, rank, stepsPerEpoch, seed, saver, isMain, log, ctx,
      numEpochs, interrupted: false, modelMeta, aug, replayNoted: false, replayFailed: false,
    };

    let bestMetric: number | null = null;
    let bestEpoch: number | null = null;
    let epochsRun = 0;
    const summaryPath = outputDir ? join(outputDir, 'summary.csv') : '';
    const curves = outputDir ? new TrainingCurves(outputDir, `${modelName} on ${dataDir}`) : null;
    await curves?.seedFromSummary(summaryPath, startEpoch);
    const distBnLine = distBnLogLine(cfg.distBn, world);
    // --model-ema-force-cpu: timm keeps the EMA but does not validate it (its metrics do not pick checkpoints)
    const validateEma = !cfg.modelEmaForceCpu;
    try {
      for (let epoch = startEpoch; epoch < numEpochs; epoch++) {
        trainPrefetch.setEpoch(epoch);
        const trainMetrics = await trainOneEpoch(epoch, state);
        if (state.interrupted) break;
        if (distBnLine) log(distBnLine); // MambaOut has no BatchNorm buffers: nothing to average
        let evalMetrics = await validate(model, evalPrefetch, state, '', epoch);
        if (ema && emaModel && validateEma) {
          copyEmaTo(ema, emaModel);
          evalMetrics = await validate(emaModel, evalPrefetch, state, ' (EMA)', epoch);
        }
        const metricValue = evalMetrics[evalMetric as keyof EvalMetrics];
        if (metricValue === undefined) throw new UserError(`--eval-metric '${evalMetric}' is not one of loss, top1, top5`);
        scheduler.step(epoch + 1, metricValue);
        epochsRun++;
        if (isMain && saver) {
          await appendSummary(summaryPath, epoch, trainMetrics.loss, evalMetrics, bestMetric === null);
          if (curves) {
            curves.add({ epoch, train_loss: trainMetrics.loss, eval_loss: evalMetrics.loss, eval_top1: evalMetrics.top1, eval_top5: evalMetrics.top5, lr: trainMetrics.lr });
            try {
              await curves.write();
            } catch (e) {
              logger.warn(`could not draw ${join(outputDir, 'curves.svg')}: ${(e as Error).message}`);
            }
          }
          logger.info(
            `Epoch ${epoch}: train_loss ${pyG(trainMetrics.loss, 4, true)}  eval_loss ${pyG(evalMetrics.loss, 4, true)}  ` +
              `top1 ${pyFixed(evalMetrics.top1, 3)}  top5 ${pyFixed(evalMetrics.top5, 3)}  lr ${pyExp(trainMetrics.lr, 3)}`,
            { event: 'epoch', epoch, train_loss: trainMetrics.loss, eval_loss: evalMetrics.loss, top1: evalMetrics.top1, top5: evalMetrics.top5, lr: trainMetrics.lr },
          );
          const ck = await checkpointState(state, epoch);
          const r = await saver.saveCheckpoint(epoch, ck, metricValue);
          bestMetric = r.bestMetric;
          bestEpoch = r.bestEpoch;
        }
        if (ctx.stopRequested?.()) {
          state.interrupted = true;
          break;
        }
      }
    } finally {
      trainPrefetch.dispose();
      evalPrefetch.dispose();
      await trainLoader.close();
      await evalLoader.close();
    }
    if (bestMetric !== null) log(`*** Best metric: ${pyRepr(bestMetric)} (epoch ${bestEpoch})`);
    ema?.dispose();
    emaModel?.dispose();
    optimizer.dispose();
    return { bestMetric, bestEpoch, outputDir, epochsRun, interrupted: state.interrupted };
  } finally {
    model.dispose();
    await releaseBackend();
  }
}

/** Load the EMA's averaged weights into a model used to validate them. */
function copyEmaTo(ema: ModelEmaV2, model: MambaOut): void {
  const byName = new Map(model.parameterInfo().map((p) => [p.name, p.variable]));
  tf.tidy(() => {
    for (const p of ema.params) byName.get(p.name)!.assign(p.variable);
  });
}

interface LoopState {
  cfg: TrainConfig;
  logger: Logger;
  dist: DistributedDataParallel | null;
  model: MambaOut;
  params: NamedParameter[];
  optimizer: Optimizer<ParamGroup>;
  scheduler: Scheduler;
  ema: ModelEmaV2 | null;
  emaModel: MambaOut | null;
  mixup: Mixup | null;
  trainLoss: TrainLoss;
  trainPrefetch: PrefetchLoader;
  evalPrefetch: PrefetchLoader;
  dataConfig: DataConfig;
  numClasses: number;
  B: number;
  A: number;
  world: number;
  rank: number;
  stepsPerEpoch: number;
  seed: number;
  saver: CheckpointSaver | null;
  isMain: boolean;
  log: (m: string) => void;
  ctx: TrainContext;
  numEpochs: number;
  interrupted: boolean;
  modelMeta: ModelMeta;
  aug: TrainAugPlan;
  /** The replayed step has been announced (src/train/step_replay.ts), or that the step could not be captured. */
  replayNoted: boolean;
  /** The step could not be captured: later epochs do not try again. */
  replayFailed: boolean;
}

async function checkpointState(s: LoopState, epoch: number, extra: Record<string, unknown> = {}): Promise<TrainCheckpoint> {
  const opt = flattenOptimizerState(await s.optimizer.stateDict());
  let ema = null;
  if (s.ema && s.emaModel) {
    copyEmaTo(s.ema, s.emaModel);
    ema = await s.emaModel.stateDictAsync();
  }
  const { __yaml, ...args } = s.cfg.args; // timm's args, as they are now (num_classes set)
  void __yaml;
  return {
    epoch,
    arch: s.cfg.model,
    version: 2,
    args,
    stateDict: await s.model.stateDictAsync(),
    stateDictEma: ema,
    optimizer: { tensors: opt.tensors, meta: opt.meta },
    extra,
    modelMeta: s.modelMeta,
  };
}

async function appendSummary(path: string, epoch: number, trainLoss: number, ev: EvalMetrics, writeHeader: boolean): Promise<void> {
  let text = '';
  if (writeHeader) text += 'epoch,train_loss,eval_loss,eval_top1,eval_top5\n';
  text += `${epoch},${pyRepr(trainLoss)},${pyRepr(ev.loss)},${pyRepr(ev.top1)},${pyRepr(ev.top5)}\n`;  // csv writes str(float)
  // Append by rewriting atomically: a crash never leaves a half-written row.
  const prev = existsSync(path) ? await fsp.readFile(path, 'utf8') : '';
  await writeFileAtomic(path, prev + text);
}

async function trainOneEpoch(epoch: number, s: LoopState): Promise<{ loss: number; lr: number }> {
  const { cfg, model, params, optimizer, mixup, trainLoss, A, world, stepsPerEpoch } = s;
  const mixupOff = cfg.mixupOffEpoch;
  if (mixup && mixupOff > 0 && epoch >= mixupOff) s.trainPrefetch.mixupEnabled = false;
  model.rng.seed(streamSeed(STREAM.droppath, s.seed, s.rank, epoch));
  const logInterval = Math.max(1, cfg.logInterval);
  const recoveryInterval = cfg.recoveryInterval;
  const clipGrad = cfg.clipGrad;
  const clipMode = cfg.clipMode as ClipMode;
  const lenLoader = s.trainPrefetch.length;
  const usedBatches = stepsPerEpoch * A;
  const batchTime = new AverageMeter();
  const dataTime = new AverageMeter();
  const losses = new AverageMeter();
  const vars = params.map((p) => p.variable);
  const inFlight = new InFlight(2);
  // Loss scalars of the micro-batches since the last read, read back together (see the file header).
  const unread: { loss: tf.Scalar; n: number; batchIdx: number }[] = [];
  let lastLoss = Number.NaN;
  const readLosses = async (): Promise<void> => {
    if (!unread.length) return;
    const items = unread.splice(0);
    const vals = await readBack(items.map((u) => u.loss));
    items.forEach((u, k) => {
      const v = vals[k] * A;
      if (!Number.isFinite(v)) throw new UserError(`loss is ${v} at epoch ${epoch}, batch ${u.batchIdx}: training diverged (lower --lr or add --clip-grad)`);
      if (world === 1) losses.update(v, u.n);
      lastLoss = v;
    });
  };
  let accum: Map<string, tf.Tensor> | null = null;
  // DDP: the exchange of the last update when the loop did not wait for it (the held forward pass: the next
  // DistributedDataParallel.variableGrads issues its forward pass during the exchange and submits it after the last
  // buckets' AdamW update; H200 x2, femto, real JPEGs: 3,407 / 3,644 img/s against 3,180 / 3,363 with
  // MAMBAOUT_DIST_HOLD=off, docs/BENCHMARKS.md "GPU run 7", call 8).
  // Only when nothing between two updates reads the weights or changes the optimizer's hyper-parameters: no
  // clipping by the global norm, no EMA, no per-update lr schedule, no update hook, and an optimizer that updates in
  // place (the held pass keeps views of the weights' buffers).
  let exchange: Promise<unknown> | null = null;
  const settleExchange = async (): Promise<void> => {
    const p = exchange;
    exchange = null;
    if (p) await p;
  };
  const holdNext = s.dist !== null && s.dist.holdMode === 'auto' && world > 1 && A === 1 && clipGrad === undefined && !s.ema &&
    !s.ctx.onUpdate && s.scheduler.tInEpochs && optimizer.updatesInPlace;
  // The forward and backward passes captured on this epoch's first batch and replayed for the others, where every
  // step is the same (src/train/step_replay.ts; H200, femto, real JPEGs: 2,468 img/s against 2,284 issued through
  // tfjs); a new capture each epoch. MAMBAOUT_STEP_REPLAY: auto = one process, on = data-parallel ranks too.
  const replayWanted = settings.stepReplay === 'on' || (settings.stepReplay === 'auto' && world === 1);
  let replay = replayWanted && !s.replayFailed && A === 1 && clipGrad === undefined && optimizer.updatesInPlace
    ? StepReplay.create(world > 1 ? s.dist : null)
    : null;
  let numUpdates = epoch * lenLoader;
  let updates = 0;
  const progress = s.isMain ? new Progress(s.logger, usedBatches, `Train ${epoch}`, 'loss {loss} | lr {lr}') : null;
  let end = performance.now();
  let batchIdx = -1;
  let stoppable = false; // the previous micro-batch ended an update and was not the epoch's last
  const interrupt = async (idx: number) => {
    await settleExchange();
    await readLosses(); // never save weights that a non-finite loss produced
    if (s.saver) {
      const f = await s.saver.saveRecovery(epoch, idx, await checkpointState(s, epoch, { batch_idx: idx }));
      s.log(`Interrupted: saved recovery checkpoint ${f}; continue with --resume ${f}`);
    }
    s.interrupted = true;
  };
  const iterator = s.trainPrefetch[Symbol.asyncIterator]();
  try {
    for (;;) {
      if (batchIdx + 1 >= usedBatches) break; // micro-batches beyond steps_per_epoch·A are not used (§7.1)
      const next = await iterator.next();
      if (next.done) break;
      // A signal handled while waiting for this batch stops before this step, exactly as if it had been seen right
      // after the previous one. A batch the prefetcher had ready resolves without an event-loop turn, so give one.
      if (stoppable && s.ctx.stopRequested) await new Promise<void>((r) => setImmediate(r));
      if (stoppable && s.ctx.stopRequested?.()) {
        tf.dispose([next.value.input, next.value.target]);
        await interrupt(batchIdx);
        break;
      }
      batchIdx++;
      const { input, target, n } = next.value;
      const lastBatch = Math.floor((batchIdx + 1) / A) === stepsPerEpoch;
      dataTime.update((performance.now() - end) / 1000);

      const updateGrad = (batchIdx + 1) % A === 0;
      let lossValue: tf.Scalar;
      let grads: tf.NamedTensorMap;
      try {
        // The loss in pieces (MambaOut.forwardSteps): a held forward pass lets the previous exchange finish between its
        // blocks; everywhere else it runs straight through.
        const lossSteps = function* (): Steps<tf.Scalar> {
          const loss = trainLoss.fn(yield* model.forwardSteps(input, { training: true }), target);
          return (A > 1 ? loss.div(A) : loss) as tf.Scalar;
        };
        // DDP: without accumulation, each bucket's exchange starts as soon as the backward pass has produced it, and
        // the backward pass is issued in pieces so that the exchange runs meanwhile (DistributedDataParallel.
        // variableGrads); allreduceGrads below then waits for what is still in flight.
        const overlap = s.dist !== null && world > 1 && A === 1 && updateGrad;
        // (variableGrads waits for a previous exchange that is still running: holds its forward pass until then;
        // replayGrads awaits it)
        if (!overlap) await settleExchange();
        const { value, grads: g } = replay
          ? await replay.grads((x, y) => trainLoss.fn(runSteps(model.forwardSteps(x as tf.Tensor4D, { training: true })), y) as tf.Scalar, vars, input, target)
          : overlap ? await s.dist!.variableGrads(lossSteps, vars) : tf.tidy(() => tf.variableGrads(() => runSteps(lossSteps()), vars));
        if (replay && !s.replayNoted) {
          s.replayNoted = true;
          s.replayFailed = replay.failed !== null;
          if (replay.failed) s.logger.warn(`Training step: not replayed (${replay.failed}); every step is issued through tfjs.`);
          else s.log('Training step: captured on each epoch\'s first batch and replayed for the others (MAMBAOUT_STEP_REPLAY=off issues every step).');
        }
        if (replay?.failed) replay = null; // this step ran live; the next ones are issued as without the replay
        exchange = null;
        lossValue = value;
        grads = g;
      } finally {
        tf.dispose([input, target].filter((t) => !replay?.holds(t)));
      }
      // accumulate
      if (!accum) {
        accum = new Map();
        for (const p of params) accum.set(p.name, grads[p.variable.name]);
      } else {
        for (const p of params) {
          const g = grads[p.variable.name];
          const prev = accum.get(p.name)!;
          accum.set(p.name, tf.add(prev, g));
          prev.dispose();
          g.dispose();
        }
      }
      unread.push({ loss: lossValue, n, batchIdx });

      if (updateGrad && accum) {
        let g = accum;
        accum = null;
        if (s.dist && world > 1) {
          // Without clipping by the global norm, AdamW (every optimizer here updates a parameter from its own gradient
          // and state) runs on each run of buckets as soon as they are averaged, while later ones are still exchanged:
          // only the last buckets' update stays after the exchange (what scripts/bench_dist.ts measures).
          if (holdNext) {
            exchange = s.dist.allreduceGrads(params, g, { onBucket: stepEachBucket(optimizer) });
            exchange.catch(() => {}); // reported where it is awaited: the next variableGrads or settleExchange
            g = new Map();
          } else {
            g = await s.dist.allreduceGrads(params, g, { onBucket: clipGrad === undefined ? stepEachBucket(optimizer) : undefined });
          }
        }
        if (clipGrad !== undefined) {
          const clipped = dispatchClipGrad(params, g, clipGrad, clipMode, { outAxis: (name, rank) => outAxisOf(model, name, rank) });
          for (const [k, t] of g) if (clipped.get(k) !== t) t.dispose();
          g = clipped;
        }
        if (g.size > 0) optimizer.step(g);
        for (const t of g.values()) if (!replay?.holds(t)) t.dispose();
        s.ema?.update(params);
        updates++;
        if (s.ctx.onUpdate) await s.ctx.onUpdate({ epoch, update: updates, model });
      }
      numUpdates++;
      s.scheduler.stepUpdate(numUpdates, losses.avg); // a no-op for per-epoch schedules, as in timm
      await inFlight.push(); // at most 2 steps queued on the device
      const lr = optimizer.meanLr;
      if (lastBatch || batchIdx % logInterval === 0) {
        await readLosses(); // timm's loss.item() at log points
        batchTime.update((performance.now() - end) / 1000);
        let shown = lastLoss;
        if (s.dist && world > 1) {
          shown = (await s.dist.allreduceScalars([lastLoss], 'avg'))[0];
          losses.update(shown, n);
        }
        const pct = (100 * batchIdx) / Math.max(lenLoader - 1, 1);
        if (s.isMain) {
          s.logger.info(
            `Train: ${epoch} [${padL(batchIdx, 4)}/${lenLoader} (${padL(pyFixed(pct, 0), 3)}%)]  ` +
              `Loss: ${pyG(shown, 4, true)} (${pyG(losses.avg, 3, true)})  ` +
              `Time: ${pyFixed(batchTime.val, 3)}s, ${padL(pyFixed((n * world) / batchTime.val, 2), 7)}/s  ` +
              `(${pyFixed(batchTime.avg, 3)}s, ${padL(pyFixed((n * world) / batchTime.avg, 2), 7)}/s)  ` +
              `LR: ${pyExp(lr, 3)}  Data: ${pyFixed(dataTime.val, 3)} (${pyFixed(dataTime.avg, 3)})`,
            {
              event: 'train', epoch, step: batchIdx, steps: lenLoader, loss: shown, loss_avg: losses.avg, lr,
              img_per_sec: (n * world) / batchTime.val, batch_time: batchTime.val, data_time: dataTime.val,
            },
          );
        }
      } else {
        batchTime.update((performance.now() - end) / 1000);
      }
      progress?.update(1, n * world, { loss: pyFixed(losses.avg, 4), lr: pyExp(lr, 3) });
      const stop = s.ctx.stopRequested?.() ?? false;
      if (s.saver && recoveryInterval > 0 && (lastBatch || (batchIdx + 1) % recoveryInterval === 0) && updateGrad) {
        await settleExchange();
        await readLosses(); // never save weights that a non-finite loss produced
        await s.saver.saveRecovery(epoch, batchIdx, await checkpointState(s, epoch, { batch_idx: batchIdx }));
      }
      // A stop on the epoch's last update finishes the epoch (validation + checkpoint) first.
      if (stop && updateGrad && !lastBatch) {
        await interrupt(batchIdx);
        break;
      }
      stoppable = updateGrad && !lastBatch;
      end = performance.now();
    }
    await settleExchange(); // validation and the checkpoint read the weights
    await readLosses();
  } finally {
    progress?.stop();
    if (exchange) await exchange.catch(() => {});
    await iterator.return?.(undefined);
    if (accum) for (const t of accum.values()) if (!replay?.holds(t)) t.dispose();
    for (const u of unread) u.loss.dispose();
    replay?.drop();
  }
  return { loss: losses.avg, lr: optimizer.meanLr };
}

/** PyTorch output axis of a parameter in its tfjs layout (for AGC unit-wise norms). */
function outAxisOf(model: MambaOut, name: string, rank: number): number {
  const p = model.parameterInfo().find((q) => q.name === name);
  if (!p) return 0;
  if (p.kind === 'conv') return 3; // HWIO
  if (p.kind === 'dwconv') return 2; // [kh, kw, C, 1]
  void rank;
  return 0; // Linear [out, in] and 1-D tensors: PyTorch layout
}

async function validate(model: MambaOut, loader: PrefetchLoader, s: LoopState, suffix: string, epoch: number): Promise<EvalMetrics> {
  const losses = new AverageMeter();
  const top1 = new AverageMeter();
  const top5 = new AverageMeter();
  const batchTime = new AverageMeter();
  const logInterval = Math.max(1, s.cfg.logInterval);
  const lastIdx = loader.length - 1;
  const inFlight = new InFlight(2);
  // [loss, hits@1, hits@5] of the batches since the last read, read back together at log points.
  const unread: { stats: tf.Tensor1D; n: number; kept: number }[] = [];
  const last = { loss: 0, top1: 0, top5: 0 };
  const readStats = async (): Promise<void> => {
    if (!unread.length) return;
    const items = unread.splice(0);
    const v = await readBack(items.map((u) => u.stats));
    for (let k = 0; k < items.length; k++) {
      const { n, kept } = items[k]; // kept: rows scored (n, or n / --tta groups)
      let vals = [v[3 * k], (100 * v[3 * k + 1]) / kept, (100 * v[3 * k + 2]) / kept];
      if (s.dist && s.world > 1) vals = await s.dist.allreduceScalars(vals, 'avg');
      losses.update(vals[0], n);
      top1.update(vals[1], n);
      top5.update(vals[2], n);
      [last.loss, last.top1, last.top5] = vals;
    }
  };
  let end = performance.now();
  let batchIdx = -1;
  const progress = s.isMain ? new Progress(s.logger, loader.length, `Test${suffix}`) : null;
  const k5 = Math.min(5, s.numClasses);
  const tta = Math.max(0, Math.floor(s.cfg.tta || 0));
  try {
    for await (const { input, target, labels, n } of loader) {
      batchIdx++;
      try {
        unread.push({
          n,
          kept: tta > 1 ? Math.floor(n / tta) : n,
          stats: tf.tidy(() => {
            const full = model.forward(input) as tf.Tensor2D;
            // --tta k: mean of each k consecutive outputs against every k-th label (timm 0.6.11 validate())
            const r = tta > 1 ? ttaReduce(full, labels, tta) : null;
            const logits = r ? r.logits : full;
            const t = r ? tf.tensor1d(r.labels, 'int32') : target;
            return tf.concat([crossEntropy(logits, t).reshape([1]), accuracyCounts(logits, t, [1, k5])]) as tf.Tensor1D;
          }),
        });
      } finally {
        tf.dispose([input, target]);
      }
      await inFlight.push();
      progress?.update(1, n * s.world);
      if (batchIdx === lastIdx || batchIdx % logInterval === 0) {
        await readStats();
        batchTime.update((performance.now() - end) / 1000);
        if (s.isMain) {
          s.logger.info(
            `Test${suffix}: [${padL(batchIdx, 4)}/${lastIdx}]  Time: ${pyFixed(batchTime.val, 3)} (${pyFixed(batchTime.avg, 3)})  ` +
              `Loss: ${padL(pyFixed(last.loss, 4), 7)} (${padL(pyFixed(losses.avg, 4), 6)})  ` +
              `Acc@1: ${padL(pyFixed(last.top1, 4), 7)} (${padL(pyFixed(top1.avg, 4), 7)})  ` +
              `Acc@5: ${padL(pyFixed(last.top5, 4), 7)} (${padL(pyFixed(top5.avg, 4), 7)})`,
            { event: suffix ? 'eval_ema' : 'eval', epoch, step: batchIdx, steps: loader.length, loss: losses.avg, top1: top1.avg, top5: top5.avg },
          );
        }
      } else {
        batchTime.update((performance.now() - end) / 1000);
      }
      end = performance.now();
    }
    await readStats();
  } finally {
    progress?.stop();
    for (const u of unread) u.stats.dispose();
  }
  if (batchIdx < 0) throw new UserError('the validation folder yielded no readable images');
  return { loss: losses.avg, top1: top1.avg, top5: top5.avg };
}
