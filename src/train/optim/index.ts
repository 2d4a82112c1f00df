/**
 * Optimizer factory, as timm 0.6.11's `create_optimizer_v2(model, **optimizer_kwargs(args))`.
 *
 * Parameter grouping (weight decay > 0 and filterBiasAndBn, the default): parameters in registration
 * order, skipping non-trainable Variables; a parameter goes to no-decay when its rank is <= 1, its name
 * ends with `.bias`, or its name is in `noWeightDecay`; groups are [no_decay (wd 0), decay (wd)].
 * With weight decay 0 (or filtering off) all parameters form one group with that decay.
 * Rank is layout-independent (conv weights are 4-D in both PyTorch OIHW and tfjs HWIO), so the rule
 * works on the internal Variables.
 */
import { UserError } from '../../errors.js';
import { Adam } from './adam.js';
import { AdamW } from './adamw.js';
import type { GroupSpec, NamedParameter, Optimizer, ParamGroup } from './base.js';
import { Lamb } from './lamb.js';
import { SGD } from './sgd.js';

export * from './base.js';
export { AdamFamily, AdamW, type AdamGroup, type AdamOptions } from './adamw.js';
export { Adam } from './adam.js';
export { SGD, type SgdGroup, type SgdOptions } from './sgd.js';
export { Lamb, type LambGroup, type LambOptions } from './lamb.js';

/** Optimizer names accepted by createOptimizer (timm names; `sgd` = `nesterov` = SGD with Nesterov momentum). */
export const SUPPORTED_OPTIMIZERS = ['sgd', 'nesterov', 'momentum', 'adam', 'adamw', 'lamb', 'lambc'] as const;

export interface OptimizerArgs {
  /** timm `--opt` name (case-insensitive). */
  opt: string;
  lr: number;
  /** `--weight-decay`; default 0 (timm's create_optimizer_v2 default). */
  weightDecay?: number;
  /** `--momentum` (SGD family only); default 0.9. */
  momentum?: number;
  /** `--opt-eps`; when absent each optimizer's own default applies (1e-8 Adam/AdamW, 1e-6 Lamb). */
  eps?: number;
  /** `--opt-betas`; when absent (0.9, 0.999). */
  betas?: [number, number];
  /** Put 1-D parameters and biases in a no-decay group (default true). */
  filterBiasAndBn?: boolean;
  /** Full parameter names never decayed (the model's `no_weight_decay()`; MambaOut's {'norm'} matches nothing). */
  noWeightDecay?: Iterable<string>;
}

/** timm `param_groups_weight_decay`: [no_decay (wd 0), decay (wd)], trainable parameters only. */
export function paramGroupsWeightDecay(
  params: readonly NamedParameter[],
  weightDecay: number,
  noWeightDecay: Iterable<string> = [],
): [GroupSpec, GroupSpec] {
  const skip = new Set(noWeightDecay);
  const decay: NamedParameter[] = [];
  const noDecay: NamedParameter[] = [];
  for (const p of params) {
    if (!p.variable.trainable) continue;
    if (p.variable.rank <= 1 || p.name.endsWith('.bias') || skip.has(p.name)) noDecay.push(p);
    else decay.push(p);
  }
  return [
    { params: noDecay, weightDecay: 0 },
    { params: decay, weightDecay },
  ];
}

/** Build an optimizer from timm-style arguments; unknown names are a UserError listing the supported ones. */
export function createOptimizer(params: readonly NamedParameter[], args: OptimizerArgs): Optimizer<ParamGroup> {
  const optName = args.opt.toLowerCase();
  const parts = optName.split('_');
  if (parts.length > 1) {
    throw new UserError(
      `Optimizer '${args.opt}' is not supported (no '${parts[0]}_' wrappers); use one of: ${SUPPORTED_OPTIMIZERS.join(', ')}.`,
    );
  }
  if (!(SUPPORTED_OPTIMIZERS as readonly string[]).includes(optName)) {
    throw new UserError(`Unknown optimizer '${args.opt}'; supported: ${SUPPORTED_OPTIMIZERS.join(', ')}.`);
  }
  if (!Number.isFinite(args.lr) || args.lr < 0) {
    throw new UserError(`Invalid learning rate ${args.lr}; it must be a number >= 0.`);
  }
  const weightDecay = args.weightDecay ?? 0;
  if (!Number.isFinite(weightDecay) || weightDecay < 0) {
    throw new UserError(`Invalid weight decay ${weightDecay}; it must be a number >= 0.`);
  }
  const filter = args.filterBiasAndBn ?? true;
  let groups: GroupSpec[];
  let optimizerWd = weightDecay;
  if (weightDecay && filter) {
    groups = paramGroupsWeightDecay(params, weightDecay, args.noWeightDecay ?? []);
    optimizerWd = 0; // the groups carry the decay
  } else {
    groups = [{ params: params.filter((p) => p.variable.trainable) }];
  }
  const momentum = args.momentum ?? 0.9;
  const lr = args.lr;

  switch (optName) {
    case 'sgd':
    case 'nesterov':
      return new SGD(groups, { lr, momentum, nesterov: true, weightDecay: optimizerWd });
    case 'momentum':
      return new SGD(groups, { lr, momentum, nesterov: false, weightDecay: optimizerWd });
    case 'adam':
      return new Adam(groups, { lr, weightDecay: optimizerWd, eps: args.eps, betas: args.betas });
    case 'adamw':
      return new AdamW(groups, { lr, weightDecay: optimizerWd, eps: args.eps, betas: args.betas });
    case 'lamb':
    case 'lambc':
      return new Lamb(groups, {
        lr,
        weightDecay: optimizerWd,
        eps: args.eps,
        betas: args.betas,
        trustClip: optName === 'lambc',
      });
    default:
      throw new UserError(`Unknown optimizer '${args.opt}'; supported: ${SUPPORTED_OPTIMIZERS.join(', ')}.`);
  }
}
