/**
 * Write a small ImageNet-style folder: train/ and val/ with a few classes of generated JPEGs.
 *
 *   node dist/scripts/make_tiny_imagenet.js [ROOT] [--classes 4] [--train-per-class 48] [--val-per-class 16] [--seed 0]
 */
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { makeTinyImagenet } from '../src/data/tiny.js';

const argv = yargs(hideBin(process.argv))
  .usage('$0 [root]')
  .options({
    classes: { type: 'number', default: 4 },
    'train-per-class': { type: 'number', default: 48 },
    'val-per-class': { type: 'number', default: 16 },
    seed: { type: 'number', default: 0 },
  })
  .strictOptions()
  .parseSync();
const root = String(argv._[0] ?? 'data/tiny-imagenet');
const r = await makeTinyImagenet({ root, classes: argv.classes, trainPerClass: argv['train-per-class'], valPerClass: argv['val-per-class'], seed: argv.seed });
console.log(r.created ? `wrote ${r.images} images to ${r.root}` : `${r.root} already exists; left as it is`);
