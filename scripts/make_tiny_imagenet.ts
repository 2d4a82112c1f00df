/**
 * A small ImageNet-style folder for smoke runs and CI:
 *
 *   node --import tsx scripts/make_tiny_imagenet.ts [ROOT] [--classes 4] [--train-per-class 48] [--val-per-class 16] [--seed 0]
 *       generated images (stripes, checkerboards, rings...: learnable, no download), as CI uses;
 *   node --import tsx scripts/make_tiny_imagenet.ts ROOT --from IMAGENET_ROOT --classes N --train-per-class M --val-per-class K [--link]
 *       a real subset of an ImageNet-style folder plus ROOT/class_map.txt (all source classes, source order), so
 *       `mambaout-validate ROOT --pretrained --class-map ROOT/class_map.txt` measures the released weights' real
 *       accuracy on those classes (src/data/subset.ts).
 */
import { hideBin } from 'yargs/helpers';
import { parseArgs } from '../src/cli/parse.js';
import type { Flag } from '../src/cli/options.js';
import { runMain } from '../src/cli/main.js';
import { makeTinyImagenet } from '../src/data/tiny.js';
import { carveImagenetSubset } from '../src/data/subset.js';

const G = 'Dataset:';
const FLAGS: Flag[] = [
  { dest: 'from', type: 'string', default: '', describe: 'carve a real subset of this ImageNet-style folder (train/ and val/ of class folders) instead of generating images', group: G },
  { dest: 'classes', type: 'number', default: 4, describe: 'number of classes (generated: at most 6; --from: evenly spaced over the source classes)', group: G },
  { dest: 'train_per_class', type: 'number', default: 48, describe: 'training images per class', group: G },
  { dest: 'val_per_class', type: 'number', default: 16, describe: 'validation images per class', group: G },
  { dest: 'seed', type: 'number', default: 0, describe: 'seed of the generated images (not used with --from)', group: G },
  { dest: 'link', type: 'boolean', default: false, describe: 'with --from: hard-link the images instead of copying them', group: G },
];

runMain(async () => {
  const { args: a } = parseArgs({
    scriptName: 'make_tiny_imagenet',
    usage: '$0 [root] [--from IMAGENET_ROOT] [--classes N] [--train-per-class M] [--val-per-class K]',
    flags: FLAGS,
    positionals: [{ name: 'root', describe: 'output folder (default: data/tiny-imagenet)', type: 'string', default: 'data/tiny-imagenet' }],
    argv: hideBin(process.argv),
  });
  if (a.__help) return 0;
  const root = a.root as string;
  if (a.from) {
    const r = await carveImagenetSubset({
      from: a.from as string, root, classes: a.classes as number, trainPerClass: a.train_per_class as number, valPerClass: a.val_per_class as number, link: a.link as boolean,
    });
    console.log(`wrote ${r.images} images of ${r.classes.length} classes (source indices ${r.indices.join(', ')}) to ${r.root}`);
    console.log(`class map (all ${r.sourceClasses} source classes, source order): ${r.classMap}`);
    console.log(`validate released weights on it: mambaout-validate ${r.root} --pretrained --class-map ${r.classMap}`);
    return 0;
  }
  const r = await makeTinyImagenet({ root, classes: a.classes as number, trainPerClass: a.train_per_class as number, valPerClass: a.val_per_class as number, seed: a.seed as number });
  console.log(r.created ? `wrote ${r.images} images to ${r.root}` : `${r.root} already exists; left as it is`);
  return 0;
});
