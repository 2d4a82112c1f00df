/**
 * Adam (torch.optim.Adam, amsgrad=False): the weight decay is a classic L2 term added to the gradient
 * before the moment updates (g <- g + wd*p), unlike AdamW's decoupled decay. Maths in adamw.ts.
 */
import type { GroupSpec } from './base.js';
import { AdamFamily, type AdamOptions } from './adamw.js';

/** torch.optim.Adam (defaults lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 0). */
export class Adam extends AdamFamily {
  readonly name = 'adam';
  protected readonly decoupled = false;
  constructor(groups: GroupSpec[], opts: AdamOptions = {}) {
    super(groups, opts, 0);
  }
}
