/**
 * Evaluation data pipeline: folder discovery, decoding, eval transform (fixture parity with
 * timm/PIL), loader (workers, ordering, corrupt files), samplers.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { readSafetensors } from '../src/checkpoint/safetensors.js';
import { UserError } from '../src/errors.js';
import { cmykToRgb, decodeRGB, decodeRGBSync, DecodeError } from '../src/data/decode.js';
import { naturalSort, resolveSplit, scanImageFolder, type Sample } from '../src/data/folder.js';
import { DataLoader, type Batch } from '../src/data/loader.js';
import { runBatch, type TaskItem } from '../src/data/worker.js';
import { regionDecoding } from '../src/data/jpeg.js';
import type { TransformSpec } from '../src/data/transforms/index.js';
import { sampleSeed } from '../src/utils/rng.js';
import {
  DistributedSampler,
  OrderedDistributedSampler,
  RandomSampler,
  SequentialSampler,
} from '../src/data/sampler.js';
import { centerCropBox, evalCropUint8, evalResizeSize, evalSourceRegion, evalTransform } from '../src/data/transforms/eval.js';
import { MAMBAOUT_DATA_DEFAULTS, resolveDataConfig, type DataConfig } from '../src/data/config.js';
import { pyRound } from '../src/utils/pyformat.js';
import {
  cropRGB, INTERPOLATIONS, resampleSimd, resizeRGB, resizeSourceRegion, type Region, type ResizeOptions, type RGBImage,
} from '../src/data/transforms/resize.js';
import { DEFAULT_TRAIN_SPEC, trainDecodeRegion, trainDecodeScale, trainTransform, type TrainKindSpec } from '../src/data/transforms/train.js';
import { Rng } from '../src/utils/rng.js';

const FIXTURES = fileURLToPath(new URL('./fixtures/', import.meta.url));
/** Small JPEGs with samplings sharp cannot write (see the test that uses them). */
const CJPEG_SAMPLES: [string, string][] = [
  ['4:2:2 (2x1)', '/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAMCAgMCAgMDAwMEAwMEBQgFBQQEBQoHBwYIDAoMDAsKCwsNDhIQDQ4RDgsLEBYQERMUFRUVDA8XGBYUGBIUFRT/2wBDAQMEBAUEBQkFBQkUDQsNFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBT/wAARCAAdACUDASEAAhEBAxEB/8QAGgAAAgMBAQAAAAAAAAAAAAAAAAcFBggBBP/EADAQAAECBQEFBgYDAAAAAAAAAAECAwAEBQYRIQcSE0GBMVGhsdLjMlJTYXHBwsPR/8QAGAEAAwEBAAAAAAAAAAAAAAAABQYHCAP/xAAwEQABAgMFBQYHAAAAAAAAAAABAgMABAUGESEx8EFhscHRFBUiUYHiEhNicaHS4f/aAAwDAQACEQMRAD8Auu0quN0uQMuySdMnGSPtyUIzpOTkxWaqU8MlGe3h+3HWyK+/GSlZv9fceEUCiutuWZ+UrO7WwQ6tmVqIal0zLzaUk/DvJA16gCLdddTYolOKUOhKsfU9yFyuTaqTPdnTkTdrw8xEJsV8cpXlrcOBVraRGdrmu6amKkvhPr3RzDh9ZgipSdJafl0OkZi/WMarmJlC3SpJw19B4xN3VcT1yziwApZWfkJ82zEpZezpTrqHVsak51bx/WISbFL7oWUOHDW9UZ3lKv2KYNOJuGXl0hpO1OXtqW4aVpb4YwcKA159ik+IhXXfe6qu6ttt8qzpgO/45AC1skqcqKH0DC+/L+DiYN1mmd0MifSN+sTEJTLNcnWS+4HFFZzlKVK8jBFckKoluVbQSMB5jrCyxaZbjSVdP0jmza2HapOIcdZJTnOS17caNlJCVt+jF1SUIVjCcpSNeoAif20BpDwLe3W+F6tMLYtGlxOAKtbRzhFbS7uVxVtNP4/DnuRWrLp79bqLe+pSk5zqsn+ZhlokompyBmFDEDWxMXW2S0T1nglvE3ffkeEaKt+12RIpLjWdABvIJ06oPnBEumqsuXfW0FZG7P3xlNmVeabCLsteUVSxabJyMogtMgK01KUfpMei9q/NcDcaUG0AYxqD4EQ22/UmaCC4OHMGNFVGnNvMidJ8V2/rd+IULlNcqs6pbz+cZOMr9cMu0qFL0mnoeGXFLUEnqCT257u6GuxbikUxTacjrZdAWmT655xMm8L0+nMGJ6fupcitDTbGgHLc9EERarMK7c74znv6wXdoUqFkXR//2Q=='],
  ['4:4:0 (1x2)', '/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAMCAgMCAgMDAwMEAwMEBQgFBQQEBQoHBwYIDAoMDAsKCwsNDhIQDQ4RDgsLEBYQERMUFRUVDA8XGBYUGBIUFRT/2wBDAQMEBAUEBQkFBQkUDQsNFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBT/wAARCAAdACUDARIAAhEBAxEB/8QAGAABAQEBAQAAAAAAAAAAAAAABgcFBAH/xAAwEAABAgUBBQYGAwAAAAAAAAABAgMABAUGESEHEhNBgTFRobHS4zJSU2FxwcLD0f/EABgBAQEAAwAAAAAAAAAAAAAAAAYHAAUI/8QAKhEAAAYBAwIEBwAAAAAAAAAAAAECAwQFEQYSEyExBxQWQRUXIiNhcaH/2gAMAwEAAhEDEQA/AGu0quN0uQMuySdMnGSPtyUIj11XE9cs4sAKWVn5CfNswEqnrJp3MrOBlLd+m8Ik9yBWcnJis1Up4ZKM9vD9uH1l7OlOuodWxqTnVvH9Yi9Vvw2S0RyMZC6bqqFeNcTeNxhZsytRDUumZebSkn4d5IGvUAQmdqcvbUtw0rS3wxg4UBrz7FJ8RA/UMZCCNUL+CUy/D2XLc80jOO46LrqbFEpxSh0JVj6nuRJrvvdVXdW22+VZ0wHf8ciRsy7ZUjavO0I6uevS/ST7Afc13TUxUl8J9e6OYcPrMatMs1ydZL7gcUVnOUpUryMXeoTCXHI5GNwZfMOHMLcXsPNm1sO1ScQ46ySnOclr24qVi02TkZRBaZAVpqUo/SY3NzHgqZNTacGDNzRFfEbjPQzDuUkJW36MXVJQhWMJylI16gCBl7V+a4G40oNoAxjUHwIjnGykS2Xz414ICIemZFG9zOKzj8ie7S7uVxVtNP4/DnuRhuU1yqzqlvP5xk4yv1w+03KXJUSZPUhXYOumozXE6nsOay6e/W6i3vqUpOc6rJ/mYqlpUKXpNPQ8MuKWoJPUEntz3d0WN+ugrY+2j6sAtbR2tVmfCeA2t+12RIpLjWdABvIJ06oPnGPP3UuRWhptjQDlueiIBdrkw5PG2eCAj0I9FM0oX0/Y/9k='],
  ['4:1:1 (4x1)', '/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAMCAgMCAgMDAwMEAwMEBQgFBQQEBQoHBwYIDAoMDAsKCwsNDhIQDQ4RDgsLEBYQERMUFRUVDA8XGBYUGBIUFRT/2wBDAQMEBAUEBQkFBQkUDQsNFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBT/wAARCAAdACUDAUEAAhEBAxEB/8QAGgAAAgMBAQAAAAAAAAAAAAAAAAcFBggBBP/EADAQAAECBQEFBgYDAAAAAAAAAAECAwAEBQYRIQcSE0GBMVGhsdLjMlJTYXHBwsPR/8QAGAEBAAMBAAAAAAAAAAAAAAAABwMEBQb/xAAwEQABAgMDCgUFAAAAAAAAAAABAgMABAURITEGQUJRcYGhscHwEhQikdImMmFy4v/aAAwDAQACEQMRAD8Auu0quN0uQMuySdMnGSPtyUIzpOTkxWaqU8MlGe3h+3Dq2ZWohqXTMvNpST8O8kDXqAIt111NiiU4pQ6Eqx9T3IpTL5RQpeqC8qNmv5dN0S1tQM3QnkaIFvDZy9oztc13TUxUl8J9e6OYcPrMEEEI7NGacaSsjEA93w2OTCCtRBOPehE3dVxPXLOLACllZ+QnzbMSll7OlOuodWxqTnVvH9YhpO1OXtqW4aVpb4YwcKA159ik+IhXXfe6qu6ttt8qzpgO/wCOQaTTReyYakcVIUDx384CWFedkXnM8t039IhKZZrk6yX3A4orOcpSpXkYIIIU5eqoSyhPiFwGcav2jKbykWpAVdePx8I5s2th2qTiHHWSU5zkte3GjZSQlbfoxdUlCFYwnKUjXqAIRW0u7lcVbTT+Pw57kVqy6e/W6i3vqUpOc6rJ/mY4uXZDlfmaecEi3r3fGtRE+CVrkurSts7v5e8aKt+12RIpLjWdABvIJ06oPnBBBB27WXG3FICsCRj/AHAgiXfQkJ1d6oqli02TkZRBaZAVpqUo/SY9F7V+a4G40oNoAxjUHwIhQuU1yqzqlvP5xk4yv1wy7SoUvSaeh4ZcUtQSeoJPbnu7oSJJf1a+6MVJ6bjxh6mUiUnkITeHrLd+22J6fupcitDTbGgHLc9EEEEEE4wrzLnrP3HOde2J10OVCjdH/9k='],
  ['4:2:2 arithmetic-coded', '/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAMCAgMCAgMDAwMEAwMEBQgFBQQEBQoHBwYIDAoMDAsKCwsNDhIQDQ4RDgsLEBYQERMUFRUVDA8XGBYUGBIUFRT/2wBDAQMEBAUEBQkFBQkUDQsNFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBT/yQARCAAdACUDASEAAhEBAxEB/8wACgAQEAUBEBEF/9oADAMBAAIRAxEAPwDSluo85uJt/Rt/2xJnTjitc+bYdbsYULGPVun8nJY709qE3e03bUyllBZXpXH/AJ3L3hsKh0hcMQwA+83aSQgeyDpqc9/TP5300HwPgsInOF/wpL3eBVzF34/33PomjvMHoeqcjiImmQeq6aayQFVX+d1ws3NWCnY/h5sPppIyeUKi/wBsCrRBWB6VXf1FcMPFWy/QiGj5LizvgSV4jDAQhFI/yoQJBwkc/wDPetnsRVP7PpS1b1xcjO99jkU/sKtd4ex1vr8bQHLs5RP+2wfwa2O3FEgYbTFEEHiBmoXfzwrzS0GIJYxkSnG1KWjxHvqYNDR7etLy1qmKZM1T2c8ulUpOSC5bwPCDTIVBGWWIRVZNpk+8WseNaqZNfyGTJp5tcH4KPECD8/Jt43tP1+OSPC3w+Qjc2aYpsyUFbiEtcqPYhEPU7JJxlRp+jUE6O2ZGQEAccbipx19kpILEzt4v0GQz9qmkT9UT1de/bYgK4XbbbeKhGPURmgbKwB7Wal0ILdvZKsPReKIgzdJuWAirRM+MOCbaM3xPKQSLfuG0HpocHQGAoXU9qt7dK1yGq/IjfHp3GL1/NWasBC1/PmcvEb8c3k3TojTg8XARqp7W7rFdzV676pF6EF2m5rVSBayz+3VsnZWEvBGNFxws7ND5Idy94JGTDnDeF4Qwmog97QgT2qkb/m88DVy4L6O3ORHVaO5PGFQu5avirdUx/WCkLBeDdgl9UIn+khkNE0UVQJc5xolmDeD/2Q=='],
  ['4:2:2 progressive', '/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAMCAgMCAgMDAwMEAwMEBQgFBQQEBQoHBwYIDAoMDAsKCwsNDhIQDQ4RDgsLEBYQERMUFRUVDA8XGBYUGBIUFRT/2wBDAQMEBAUEBQkFBQkUDQsNFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBT/wgARCAAdACUDASEAAhEBAxEB/8QAGgAAAgMBAQAAAAAAAAAAAAAAAAYEBQcBA//EABgBAAMBAQAAAAAAAAAAAAAAAAUGBwQC/9oADAMBAAIQAxAAAAG6zrpgdbcciZ0NNVnSgk7aVYfuhDcM5o6+ORK0m96KK0pqfQvRVBmK4p4l6//EAB0QAAMBAQACAwAAAAAAAAAAAAIDBAEFERIAEyH/2gAIAQEAAQUC6T8UBmTm8yXwNTMSumsiZVRtJxc7zusGYa7ft1cennNm1piAzp6Vf7EvXMnlz0hWADa8vGr1pyIFSzq9Pn//xAAjEQABBAIBAwUAAAAAAAAAAAACAAEDBAURExRR8BIxQaGx/9oACAEDAQE/AaRCWM9LrC7ivu5d1JIzltvPpRW+GTp1crdIHOyDJuQs/n4roOGRYm7rMu0+P0KCIxHSsVxMOb5Vad5yaE/ZFRi2v//EACQRAAEEAQMDBQAAAAAAAAAAAAEAAgMEBRET8BShsRIhIiSR/9oACAECAQE/AcQeuZoed1elNSfbHOyhqNfGHLCnpDo7nlZaEzWA8KC0GxNCzX1H/FUohZg3DzwpbZjeW68/VnyJdPUsK4isWhW2Hfd7r//EAB0QAAICAwEBAQAAAAAAAAAAAAABEaEhMeES0fD/2gAIAQEABj8C8o1XD00bvph2fvhMVwjUEJ30lyS1XCSE76IyjCMYMsnZCR//xAAiEAEAAgAFBAMAAAAAAAAAAAABABEhMVFx0UGx4fBhocH/2gAIAQEAAT8h9i/soGSAgI0sleKMHttetY8zb+IQFJSCbnkjtZhjmXoLBGBhfAD0wI9oSzFTfzKP7DxDebscTD1SKHv8wFnLUdnY8T//2gAMAwEAAgADAAAAEKDRYrgsof/EACIRAAECBQQDAAAAAAAAAAAAAAEAESExQWHwUbHB0XGBof/aAAgBAwEBPxCqJsoE/aBxUhF5IZfun4ywlp0m4V8iV1UWDwDio5QbELeeDsgJss0QwZkv23xDgf05BQxhl//EACERAAEDAwQDAAAAAAAAAAAAAAEAETEhQfBhsdHhUYHB/9oACAECAQE/EHQr++2ysgJbOwRNiQ+VT+amaoM+jvHQ3KMEig8jlARG7NUdgqBlkBeBaVEGG30FQMHLMpTnXlf/xAAhEAEAAwAABgMBAAAAAAAAAAABABEhMUFRgbHBYaHRcf/aAAgBAQABPxBCi5bVp8chEdjfjB8g8gb3Aj8dEMB7mL9wFBX1vlTV+t7T0mbIpoG8+H2EdzbKPzDIkd34Bjym12yc1NVg3uBMn/5DToXrfeAS3ALXO78xDIxr6YxcJVaP0ksa1bVzMVhLuK8b6dJldDlP/9k='],
];
const PHOTOS = ['astronaut', 'chelsea', 'coffee', 'hubble_deep_field', 'immunohistochemistry', 'rocket'];

let tmp: string;
before(() => {
  tmp = mkdtempSync(path.join(tmpdir(), 'mambaout-data-test-'));
});
after(() => {
  rmSync(tmp, { recursive: true, force: true });
});

function touch(p: string, content: string | Uint8Array = ''): void {
  mkdirSync(path.dirname(p), { recursive: true });
  writeFileSync(p, content);
}

function rawImage(w: number, h: number, channels: 1 | 2 | 3 | 4, fn: (x: number, y: number, c: number) => number): Uint8Array {
  const d = new Uint8Array(w * h * channels);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let c = 0; c < channels; c++) d[(y * w + x) * channels + c] = fn(x, y, c);
  return d;
}

async function rejectsWith<E extends Error>(p: Promise<unknown>, cls: new (...a: never[]) => E, re: RegExp): Promise<E> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${String(e)}`);
    assert.match((e as Error).message, re);
    return e as E;
  }
  assert.fail(`expected a ${cls.name}`);
}

// -------------------------------------------------------------------------------------------------
/**
 * Decodes at 1/2, 1/4 and 1/8 (the reduced IDCTs, jidctred.c) need their own reference: sharp cannot decode at a DCT
 * scale. 45x27 JPEGs (noise on the left, smooth on the right) made with sharp, and the sha256 of the RGB that
 * libjpeg-turbo 2.1.5's plain C build (scripts/build_jpeg_wasm.sh with JPEG_SIMD=0) decodes from them and from
 * CJPEG_SAMPLES at 1/2, 1/4, 1/8; native djpeg -dct int -scale 1/s gives the same bytes.
 */
const SCALED_SAMPLES: [string, string][] = [
  ['4:2:0 q95 (45x27, made with sharp)', '/9j/2wBDAAIBAQEBAQIBAQECAgICAgQDAgICAgUEBAMEBgUGBgYFBgYGBwkIBgcJBwYGCAsICQoKCgoKBggLDAsKDAkKCgr/2wBDAQICAgICAgUDAwUKBwYHCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgr/wAARCAAbAC0DASIAAhEBAxEB/8QAGwABAQACAwEAAAAAAAAAAAAABgcFCAIDBAn/xAAtEAACAgIBBAECBAcBAAAAAAACAwEEBQYHABESFAgTQgkjNIEVFiFBUYKT0f/EABkBAAIDAQAAAAAAAAAAAAAAAAIGAwQFB//EACcRAAIBBAAFBAMBAAAAAAAAAAECAwQFERIABhMhMQciMlEkQUJh/9oADAMBAAIRAxEAPwAhml7HneRsjvODrpzAYbBJnO3txsKajFWpZatrqomHea6qKlewoLICj6Y+yJyAvCEvdS1bWeR9myW/2adLbENq4jI5mzSxYWabGBXEqNKAkmUo8kezYmSiFUomG90pStrBG93tX42zmfvJ3TM4zE4nPqvq2q7utelktnxiMfdr9hrqJJ2PIlWoRLrTDcyl2V3Y56CffxHRsTvOZ5XxmxUh0/YGozWmZqxUrtFTqlQzC2QzU8lWJJvtmu8NtQKXcEDsPIxIZILjU3DYqTGI2j10Yq+FJYPrgKBIdFVV1QL8C5fcJokvLhaFnEckadNiz9i0scbgNs7r0TFsJdMDpjUagq2wnwsy2L1XA7GG+VrFR/pBkirZ7YJyGR9pt7I13G5jayHEERSWlZHE+I1/oRC/WlY/PH8Tzk3Zd75HbiNPawky+YiFTPbt36re5XPkJrVnJ4axailncudSxm6tiqgKFE2UK1gKle3VlkW/pLsgHePIBXCChrjaw558OcB4XI5cc3y24LbpLyL0Y+p/X/fx6XqShvnLN0o79ZCZVYBXRTnCodFx7m2UIoCtkllwxwTgWOV+ZJ7DzLU2y5RfgVIDj2sAgkUPjVizf15Jbb5bHOeFn4RPDiMTSTnd6RETEQUy6P8A3rYD5a836jru61cZg7CxWtBQUBP9+49FMnrucRrsYbg06tI5DxEsowlRH/MT6k2T+Cfy33++zN7DvunSZF+XA5S5PaJ/z3q9MvqRysL3JFfrEenUsMOng9/PCvHW1vpnzbLNYH69JLk4X9E/5x5NsvyjUcfczHMzqW247Yspcu/zJjiwNO7nmEt4JydawmpBLtBUtglKxXEECxZAeIQ0g3PcDbji8jxvndCzcRgMXaPDZfP5OzadGQYTIyKCVjxYq24GVi8UioROce5BGywEjdonH/HOhY/nu/rYahj3pxWyUKFKxeqjYtDXt61m77wKy2CczyspSUEZkQioFjIrGAjGalZsXp4nxn1zrIzuNyOey444vVm1kAwmTULilPjPbwntIRPgXiEkMyAzGjMsvL8b0ccSMJ4xOWGEJXWR2jbWPuNl1GDsUALuTsrPVusl3t90WjWZTO52DAFdXjAldt26jHaJ5FHtUh3xnGzN38ssoRvNunpKs/GqJyrIxrNmsXfbO56tT2Pyb7fZUEKimMQdaqMGLFKWSUqOc3pH2dCstiKOApa9j8cDJB9XJXXMsvN7Tc7NZGWTLGSR+MyPlAd/ASIyEYkzkmukfZ1rUVFVW2mFHUOGaLKZGcYQlV8/SgDwB27ADAHP6hzIyvnIKIV+yhRShYZOGKa7gEgNkAkYJsGkfZ1V9e/Qx+3Uo0j7Oqvr36GP26t8Qcf/2Q=='],
  ['4:4:4 progressive q75 (45x27, made with sharp)', '/9j/2wBDAAgGBgcGBQgHBwcJCQgKDBQNDAsLDBkSEw8UHRofHh0aHBwgJC4nICIsIxwcKDcpLDAxNDQ0Hyc5PTgyPC4zNDL/2wBDAQkJCQwLDBgNDRgyIRwhMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjL/wgARCAAbAC0DAREAAhEBAxEB/8QAGQAAAwEBAQAAAAAAAAAAAAAAAwQFAgEG/8QAGQEAAgMBAAAAAAAAAAAAAAAAAAQBAgMF/9oADAMBAAIQAxAAAAEJZimNHCPOs9KjvxqHK6Uh9c86BnHq00OhqoqhmNxMNHxX3tVwGwjQ7nCmGFzlXAbD/8QAHRAAAgMAAwEBAAAAAAAAAAAAAQIAAxEEEzIUIv/aAAgBAQABBQI6XUB245wc1yz8CvJfYAzYh/IZuwSuobhz5rmh87Wwf0sWCKi9ywjIsWCf/8QALREAAgAEAwUHBQAAAAAAAAAAAQIAAxEhEjHwBCBBsdETIjJhcaHBUYGRovH/2gAIAQMBAT8BNVw1J1x/tb2ghgow+Ln7V6jIQ0wJNt6eUWnJE1DKaJG01W8Bu0Sg4CnvrrAUNhGYFr8ra4mJ6M6qzZxs8xpecT3SYIEthlGIH7+VLZG4+ujAY4sYHir8dfzxi1KVqda9dzCFdFGVBzjZ0Dyyz3oafqDzgd6WHOZPwNz/xAAqEQABAgQFAwMFAAAAAAAAAAABAAIDESHwBBIxQVEgYYETceEikaHC0f/aAAgBAgEBPwFz5QyCJDa733TSXMyn583+U9p9MDhYTEbFYmDnEwg8soi0mQO173qvrkQ4WPc9v7yoZa4Hi7uSOHcHTaob5CTlFghxmEGtdUCnx2npuolddO33pO/FFCdMZdJdDmgwM3FfNEGjM72/YBFoBp0f/8QAJRAAAQQABAYDAAAAAAAAAAAAAQACESESIjFBAyAyYXGhgZGx/9oACAEBAAY/Ai4XAvFsi7q0JTsXmzJVKXKk6yAD1YrcEXzkNtKI3Oql6jh+1Jc1DPmk61fdFpaa0JWWcM78hECjHorhd7P0U35/eT//xAAhEAEAAgICAgIDAAAAAAAAAAABETEAIUFRYXEQoZGx0f/aAAgBAQABPyHyIDk2x6Ad+8hAGEBJWjrt8YW8GNNhKdePrxkDzEwPmG1vCQICV+eeMkMOGHBdXzuebxPREiNGhgS7/WIsPjGqGF/2L/MexiWYxfFq4coE2Su+auvru4zOm3mYJvfXB8lMJoQiSWFr94pjQWLUuAAHS37fJTP/2gAMAwEAAgADAAAAEGjtzI+enaeNaf/EAB8RAQEBAAMAAgMBAAAAAAAAAAERIQAxQVFhECCR8P/aAAgBAwEBPxAOMcchfTVtXALAVqDqTuOmlXUNoSCB2V4rVYtAkGw70VGLkaiceStOFxK6AFUI4cnnsBZqkL8iKEWzpPUOhiIXE56INVQe9vbZO++YOzkcDf8AffKYs43Q+ywR4OFaa2VIIcGUi/1nbLHZpCkeLFQXaOebDbabKO6H5QzpE8oQ7+AIdHk5RxQVWCgjmpX28cBovnQmGZ+n/8QAIxEBAQACAQIGAwAAAAAAAAAAAREhMQBRYRAgQXGBoZGx8P/aAAgBAgEBPxAimiCZYxRuH1d1ywvKIkgBRbmFZQDEztCciDTV7IPtLdL6lZWHI+Nb5bBMBCkUblPQH5dYCQJrvlk0AIHGFwnBHVWrLty++OuJowqI/vji7fweY6wBTLDPEAaZLHTVvUHpytJFaBIlmbARNRg1JhVu5luu3WHix0QiYkOk754mhofRPrHfbniuOh9D+1/Pk//EACAQAQEAAwEAAQUBAAAAAAAAAAERACExQWEQUXGBsZH/2gAIAQEAAT8QBgE7xKAN0AAk6lIs1BCqcW+fg70AstwOmHKoZqF+GtMeOy+YIh/uJcQPMABKQo1hF5FSum1MknQWkUSNjaiQEKxJN6QHSUNAH46VXDan7P8AcJuM9T+XHNfzJNnvl9EENAAE4WarvBJEuzLEPE3ZUZcZNW7eA4J69AIDnnPP07dkTYHFbdDr4HNYmy+DpK6+POc+2UYilSqt9u/1zv3c855+n//Z'],
];
const SCALED_SHA256: Record<string, [string, string, string]> = {
  '4:2:0 q95 (45x27, made with sharp)': [
    '9a65a2c4999c51d8b53d323b5547ff0ba3563c1ab615a432db212fe44fdd3e02',
    '70da23645b75a1d000fc9a14ee4daadd3e134faf39e8ee55b05fbffb3fcb97c4',
    '77b745f16d166c35e22614dea2b080bc8ed74fd96b9f59c39aec0d595d20d6b9',
  ],
  '4:4:4 progressive q75 (45x27, made with sharp)': [
    'a0753e1beaea0c9bc50d35811eee17420ac5d9bdfe2ec049ff530ef1c171f9ab',
    '0859ece97088bd34e4d70823c34631160e4b064ecccedb5bfec7d6de451ffc68',
    '345dec7e150e38893174dddb81beb62ca5c80dd49cced2cbf34cf9d2be4c5629',
  ],
  '4:2:2 (2x1)': [
    '8cf4c97ec539b611994ebe44c48e16000fb5664b87245bac99594577139969ee',
    '996c2563c67e74b0c98cca50eab90fcc13bc164d93fd43e27fb21fc632618266',
    '92fb24daac0ceb03f1d5eab397150652e125d535aaba1264e05262f1866bf981',
  ],
  '4:4:0 (1x2)': [
    'b636b3c8cea9356f866da9f3d08c390f21e4fb2d7550d7fb790df0c18e9ffa88',
    '38148bfa995db21b8b6d04ff2a731bd451ae4a2a49c4cd1830257a4bc7a410b5',
    '955d228b4c4725a75de7af2116e057df0d40e2c84c40336d4dba2cf972019062',
  ],
  '4:1:1 (4x1)': [
    '0ab054f17663fa7bf0a4ee8e611fef2e9926017cc7791f4083bd4f954aa3f88e',
    '9963d898a1f2a01031a7bf8d162f5bade7fb61b7471a66e659acea4fa9d00835',
    '385ff6030c88b1ef58ddbc7756ad6df72b618d008816da57576b42659ae98343',
  ],
  '4:2:2 arithmetic-coded': [
    '8cf4c97ec539b611994ebe44c48e16000fb5664b87245bac99594577139969ee',
    '996c2563c67e74b0c98cca50eab90fcc13bc164d93fd43e27fb21fc632618266',
    '92fb24daac0ceb03f1d5eab397150652e125d535aaba1264e05262f1866bf981',
  ],
  '4:2:2 progressive': [
    '8cf4c97ec539b611994ebe44c48e16000fb5664b87245bac99594577139969ee',
    '996c2563c67e74b0c98cca50eab90fcc13bc164d93fd43e27fb21fc632618266',
    '92fb24daac0ceb03f1d5eab397150652e125d535aaba1264e05262f1866bf981',
  ],
};

describe('folder: split resolution', () => {
  test('timm _search_split synonyms and order', () => {
    const r = path.join(tmp, 'splits');
    mkdirSync(path.join(r, 'training'), { recursive: true });
    mkdirSync(path.join(r, 'valid'), { recursive: true });
    mkdirSync(path.join(r, 'evaluation'), { recursive: true });
    assert.equal(resolveSplit(r, 'train'), path.join(r, 'training'));
    assert.equal(resolveSplit(r, 'training'), path.join(r, 'training'));
    assert.equal(resolveSplit(r, 'train[:10%]'), path.join(r, 'training'));
    // val -> val, valid, validation, eval, evaluation: 'valid' is the first that exists
    assert.equal(resolveSplit(r, 'validation'), path.join(r, 'valid'));
    assert.equal(resolveSplit(r, 'eval'), path.join(r, 'valid'));
    // a folder named exactly like the split wins
    assert.equal(resolveSplit(r, 'evaluation'), path.join(r, 'evaluation'));
    mkdirSync(path.join(r, 'val'));
    assert.equal(resolveSplit(r, 'validation'), path.join(r, 'val'));
    // unknown split without a folder -> root itself
    assert.equal(resolveSplit(r, 'test'), r);
    const r2 = path.join(tmp, 'nosplits');
    mkdirSync(r2);
    assert.equal(resolveSplit(r2, 'validation'), r2);
    assert.equal(resolveSplit(r2, 'train'), r2);
  });
});

describe('folder: natural sort and scan', () => {
  test('natural key ordering', () => {
    assert.deepEqual(naturalSort(['10', '2', '1', '02x']), ['1', '2', '02x', '10']);
    assert.deepEqual(naturalSort(['n01443537', 'n01440764', 'n15075141', 'n02085620']), [
      'n01440764', 'n01443537', 'n02085620', 'n15075141',
    ]);
    // case-insensitive, text runs compared as strings, digit runs as integers
    assert.deepEqual(naturalSort(['img12.jpg', 'Img2.jpg', 'img1b.jpg', 'b', 'A']), ['A', 'b', 'img1b.jpg', 'Img2.jpg', 'img12.jpg']);
    // '' sorts first; equal keys keep their input order (Python's sort is stable)
    assert.deepEqual(naturalSort(['x7', '', 'x007']), ['', 'x7', 'x007']);
    assert.deepEqual(naturalSort(['a99999999999999999999', 'a100000000000000000000', 'a9']), [
      'a9', 'a99999999999999999999', 'a100000000000000000000',
    ]);
  });

  test('recursive walk, leaf-directory labels, extension filter, symlinks', async () => {
    const r = path.join(tmp, 'ds1');
    touch(path.join(r, 'cat', 'a.JPG'));
    touch(path.join(r, 'cat', 'img10.jpeg'));
    touch(path.join(r, 'cat', 'img2.jpg'));
    touch(path.join(r, 'cat', 'notes.txt'));
    touch(path.join(r, 'cat', 'deep', 'x.PNG')); // label = leaf folder 'deep'
    touch(path.join(r, '10', 'b.webp'));
    touch(path.join(r, '2', 'c.jpg'));
    touch(path.join(r, 'root.jpg')); // label ''
    touch(path.join(r, 'dog', 'noext'));
    const outside = path.join(tmp, 'outside_imgs');
    touch(path.join(outside, 'z.jpg'));
    symlinkSync(outside, path.join(r, 'linked'));
    symlinkSync(r, path.join(r, 'cat', 'loop')); // a cycle must not hang the walk

    const ds = await scanImageFolder(r);
    assert.deepEqual(ds.classes, ['', '2', '10', 'cat', 'deep', 'linked']);
    const rel = ds.samples.map((s) => [path.relative(r, s.path), ds.classes[s.label]]);
    assert.deepEqual(rel, [
      ['2/c.jpg', '2'],
      ['10/b.webp', '10'],
      ['cat/a.JPG', 'cat'],
      ['cat/deep/x.PNG', 'deep'],
      ['cat/img2.jpg', 'cat'],
      ['cat/img10.jpeg', 'cat'],
      ['linked/z.jpg', 'linked'],
      ['root.jpg', ''],
    ]);
    // timm 0.6.11's own list without .webp
    const noWebp = await scanImageFolder(r, { extensions: ['.png', '.jpg', '.jpeg'] });
    assert.equal(noWebp.samples.length, 7);
    assert.deepEqual(noWebp.classes, ['', '2', 'cat', 'deep', 'linked']);
  });

  test('class map: line i -> index i, unlisted classes dropped, relative to the folder', async () => {
    const r = path.join(tmp, 'ds2');
    touch(path.join(r, 'apple', '1.jpg'));
    touch(path.join(r, 'pear', '1.jpg'));
    touch(path.join(r, 'plum', '1.jpg'));
    touch(path.join(r, 'map.txt'), 'pear\r\n  apple \nkiwi\n');
    const ds = await scanImageFolder(r, { classMap: 'map.txt' });
    assert.deepEqual(ds.classes, ['pear', 'apple', 'kiwi']);
    assert.deepEqual(
      ds.samples.map((s) => [path.basename(path.dirname(s.path)), s.label]),
      [['apple', 1], ['pear', 0]],
    );
    await rejectsWith(scanImageFolder(r, { classMap: path.join(r, 'missing.txt') }), UserError, /cannot read class map/);
    await rejectsWith(scanImageFolder(r, { classMap: 'map.pkl' }), UserError, /use a \.txt file/);
    touch(path.join(r, 'none.txt'), 'banana\n');
    await rejectsWith(scanImageFolder(r, { classMap: 'none.txt' }), UserError, /none of the 3 images/);
  });

  test('missing and empty folders are user errors', async () => {
    await rejectsWith(scanImageFolder(path.join(tmp, 'nope')), UserError, /does not exist/);
    const r = path.join(tmp, 'empty');
    touch(path.join(r, 'a', 'readme.txt'));
    const e = await rejectsWith(scanImageFolder(r), UserError, /found no \.jpg\/\.jpeg\/\.png\/\.webp images under/);
    assert.ok(e.message.includes(r));
  });
});

// -------------------------------------------------------------------------------------------------
/** Minimal little-endian, uncompressed, 8-bit CMYK TIFF (sharp cannot write CMYK from raw samples). */
function cmykTiff(w: number, h: number, px: Uint8Array): Buffer {
  const entries: [number, number, number, number | 'bps' | 'strip'][] = [
    [256, 3, 1, w], [257, 3, 1, h], [258, 3, 4, 'bps'], [259, 3, 1, 1], [262, 3, 1, 5],
    [273, 4, 1, 'strip'], [277, 3, 1, 4], [278, 3, 1, h], [279, 4, 1, w * h * 4], [284, 3, 1, 1],
  ];
  const ifd = 8;
  const bps = ifd + 2 + entries.length * 12 + 4;
  const strip = bps + 8;
  const buf = Buffer.alloc(strip + px.length);
  buf.write('II', 0);
  buf.writeUInt16LE(42, 2);
  buf.writeUInt32LE(ifd, 4);
  buf.writeUInt16LE(entries.length, ifd);
  entries.forEach(([tag, type, count, val], i) => {
    const o = ifd + 2 + i * 12;
    const v = val === 'bps' ? bps : val === 'strip' ? strip : val;
    buf.writeUInt16LE(tag, o);
    buf.writeUInt16LE(type, o + 2);
    buf.writeUInt32LE(count, o + 4);
    if (type === 3 && count === 1) buf.writeUInt16LE(v, o + 8);
    else buf.writeUInt32LE(v, o + 8);
  });
  for (let i = 0; i < 4; i++) buf.writeUInt16LE(8, bps + 2 * i);
  buf.set(px, strip);
  return buf;
}

function pixel(img: RGBImage, x: number, y: number): number[] {
  const p = (y * img.width + x) * 3;
  return [img.data[p], img.data[p + 1], img.data[p + 2]];
}

describe('decode', () => {
  test('grayscale PNG and JPEG -> replicated RGB', async () => {
    const g = rawImage(4, 2, 1, (x, y) => [0, 50, 100, 255, 10, 20, 30, 40][y * 4 + x]);
    const png = await sharp(g, { raw: { width: 4, height: 2, channels: 1 } }).toColourspace('b-w').png().toBuffer();
    assert.equal((await sharp(png).metadata()).channels, 1);
    const img = await decodeRGB(png);
    assert.equal(img.width, 4);
    assert.equal(img.height, 2);
    assert.deepEqual(Array.from(img.data), Array.from(g).flatMap((v) => [v, v, v]));
    // gray + alpha: alpha dropped
    const ga = rawImage(2, 1, 2, (x, _y, c) => (c === 0 ? [77, 200][x] : [0, 128][x]));
    const lapng = await sharp(ga, { raw: { width: 2, height: 1, channels: 2 } }).toColourspace('b-w').png().toBuffer();
    assert.deepEqual(Array.from((await decodeRGB(lapng)).data), [77, 77, 77, 200, 200, 200]);
    // 16x16 flat gray JPEG (q100 reproduces a flat block exactly)
    const jpg = await sharp(new Uint8Array(256).fill(93), { raw: { width: 16, height: 16, channels: 1 } })
      .toColourspace('b-w').jpeg({ quality: 100 }).toBuffer();
    assert.deepEqual(pixel(await decodeRGB(jpg), 5, 7), [93, 93, 93]);
  });

  test('RGBA: alpha discarded without compositing', async () => {
    const px = [255, 0, 0, 0, 0, 255, 0, 128, 0, 0, 255, 255, 10, 20, 30, 0];
    const png = await sharp(Uint8Array.from(px), { raw: { width: 2, height: 2, channels: 4 } }).png().toBuffer();
    const img = await decodeRGB(png);
    assert.deepEqual(Array.from(img.data), [255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30]);
  });

  test('palette PNG -> palette colours', async () => {
    const rgb = rawImage(4, 2, 3, (x, _y, c) => [[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]][x][c]);
    const png = await sharp(rgb, { raw: { width: 4, height: 2, channels: 3 } }).png({ palette: true, colours: 4, dither: 0 }).toBuffer();
    assert.equal((await sharp(png).metadata()).isPalette, true);
    assert.deepEqual(Array.from((await decodeRGB(png)).data), Array.from(rgb));
  });

  test('16-bit PNG (RGB, RGBA, gray) -> high byte', async () => {
    const v16 = [65535, 0, 256, 257, 511, 1000, 40000, 300, 65280, 1, 2, 3];
    const rgb16 = await sharp(Uint16Array.from(v16), { raw: { width: 4, height: 1, channels: 3 } }).toColourspace('rgb16').png().toBuffer();
    assert.equal((await sharp(rgb16).metadata()).depth, 'ushort');
    assert.deepEqual(Array.from((await decodeRGB(rgb16)).data), v16.map((v) => v >> 8));
    const rgba = [65535, 0, 256, 0, 40000, 300, 65280, 65535];
    const rgba16 = await sharp(Uint16Array.from(rgba), { raw: { width: 2, height: 1, channels: 4 } }).toColourspace('rgb16').png().toBuffer();
    assert.deepEqual(Array.from((await decodeRGB(rgba16)).data), [255, 0, 1, 156, 1, 255]);
    const g16 = await sharp(Uint16Array.from([65535, 0, 40000, 511]), { raw: { width: 4, height: 1, channels: 1 } })
      .toColourspace('grey16').png().toBuffer();
    assert.deepEqual(Array.from((await decodeRGB(g16)).data), [255, 255, 255, 0, 0, 0, 156, 156, 156, 1, 1, 1]);
  });

  test('CMYK JPEG -> Pillow cmyk2rgb (no colour management)', async () => {
    const N = 16;
    const colours = [[10, 200, 30, 60], [255, 0, 128, 0]];
    const cmyk = rawImage(N, N, 4, (x, _y, c) => colours[x < 8 ? 0 : 1][c]);
    const jpg = await sharp(cmykTiff(N, N, cmyk)).pipelineColourspace('cmyk').toColourspace('cmyk')
      .jpeg({ quality: 100, chromaSubsampling: '4:4:4' }).toBuffer();
    assert.equal((await sharp(jpg).metadata()).space, 'cmyk');
    const img = await decodeRGB(jpg);
    // Pillow: nk = 255 - K; out = nk - MULDIV255(ink, nk)
    assert.deepEqual(pixel(img, 2, 3), [187, 42, 172]);
    assert.deepEqual(pixel(img, 12, 3), [0, 255, 127]);
    assert.deepEqual(Array.from(cmykToRgb(Uint8Array.from([0, 0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 255]), 3)), [
      255, 255, 255, 0, 0, 0, 0, 0, 0,
    ]);
  });

  test('EXIF orientation is not applied', async () => {
    const rgb = rawImage(8, 4, 3, (x) => x * 30);
    const jpg = await sharp(rgb, { raw: { width: 8, height: 4, channels: 3 } }).jpeg().withMetadata({ orientation: 6 }).toBuffer();
    assert.equal((await sharp(jpg).metadata()).orientation, 6);
    const img = await decodeRGB(jpg);
    assert.equal(img.width, 8);
    assert.equal(img.height, 4);
  });

  test('corrupt, truncated and missing files -> DecodeError with the path', async () => {
    const bad = path.join(tmp, 'bad.jpg');
    touch(bad, 'this is not an image');
    const e = await rejectsWith(decodeRGB(bad), DecodeError, /cannot decode image/);
    assert.equal(e.path, bad);
    const full = await sharp(rawImage(64, 64, 3, (x, y, c) => (x * 7 + y * 3 + c * 50) & 255), {
      raw: { width: 64, height: 64, channels: 3 },
    }).jpeg().toBuffer();
    const trunc = path.join(tmp, 'trunc.jpg');
    touch(trunc, full.subarray(0, full.length >> 1));
    assert.equal((await rejectsWith(decodeRGB(trunc), DecodeError, /trunc\.jpg/)).path, trunc);
    const missing = path.join(tmp, 'missing.png');
    assert.equal((await rejectsWith(decodeRGB(missing), DecodeError, /missing\.png/)).path, missing);
  });
});

// -------------------------------------------------------------------------------------------------
describe('decode: the synchronous JPEG path (libjpeg-turbo WebAssembly)', () => {
  test('same pixels as sharp for the fixture photos; a view that the next decode reuses', async () => {
    for (const name of PHOTOS) {
      const file = path.join(FIXTURES, 'photos', `${name}.jpg`);
      const fast = decodeRGBSync(readFileSync(file));
      assert.ok(fast, `${name}: the synchronous path takes a plain JPEG`);
      const { data, info } = await sharp(file, { ignoreIcc: true, autoOrient: false }).removeAlpha().toColourspace('srgb').raw()
        .toBuffer({ resolveWithObject: true });
      assert.deepEqual([fast.width, fast.height, fast.scale], [info.width, info.height, 1]);
      assert.ok(Buffer.from(fast.data.buffer, fast.data.byteOffset, fast.data.length).equals(data), `${name}: pixels differ from sharp`);
    }
  });

  test('DCT scaling: ceil(size / s), close to a box average of the full decode', async () => {
    const file = path.join(FIXTURES, 'photos', 'coffee.jpg'); // 600x400
    const bytes = readFileSync(file);
    const full = decodeRGBSync(bytes)!;
    const fullCopy = { ...full, data: full.data.slice() };
    for (const s of [2, 4, 8] as const) {
      const seen: number[][] = [];
      const img = decodeRGBSync(bytes, { scaleFor: (w, h) => { seen.push([w, h]); return s; } })!;
      assert.deepEqual(seen, [[600, 400]]);
      assert.deepEqual([img.width, img.height, img.scale, img.fullWidth, img.fullHeight], [Math.ceil(600 / s), Math.ceil(400 / s), s, 600, 400]);
      let sum = 0;
      for (let y = 0; y < img.height; y++) for (let x = 0; x < img.width; x++) for (let c = 0; c < 3; c++) {
        let acc = 0;
        for (let dy = 0; dy < s; dy++) for (let dx = 0; dx < s; dx++) acc += fullCopy.data[((y * s + dy) * 600 + x * s + dx) * 3 + c];
        sum += Math.abs(img.data[(y * img.width + x) * 3 + c] - acc / (s * s));
      }
      const mean = sum / (img.width * img.height * 3);
      assert.ok(mean < 4, `1/${s}: mean abs difference to the box average ${mean}`);
    }
  });

  /** The RGB pixels sharp (libvips' libjpeg-turbo, native SIMD) decodes from a JPEG. */
  async function sharpPixels(buf: Uint8Array): Promise<{ data: Buffer; width: number; height: number }> {
    const { data, info } = await sharp(buf, { ignoreIcc: true, autoOrient: false }).removeAlpha().toColourspace('srgb').raw()
      .toBuffer({ resolveWithObject: true });
    assert.equal(info.channels, 3);
    return { data, width: info.width, height: info.height };
  }

  async function assertSameAsSharp(buf: Uint8Array, what: string): Promise<void> {
    const fast = decodeRGBSync(buf);
    assert.ok(fast, `${what}: the synchronous path takes it`);
    const ref = await sharpPixels(buf);
    assert.deepEqual([fast.width, fast.height], [ref.width, ref.height], what);
    const ours = Buffer.from(fast.data.buffer, fast.data.byteOffset, fast.data.length);
    if (!ours.equals(ref.data)) {
      let n = 0;
      for (let i = 0; i < ours.length; i++) if (ours[i] !== ref.data[i]) n++;
      assert.fail(`${what}: ${n} of ${ours.length} bytes differ from sharp`);
    }
  }

  test('same pixels as sharp, bit for bit, for generated JPEGs: 4:2:0, 4:4:4, progressive, gray, odd sizes, qualities', async () => {
    // The WebAssembly SIMD stages (IDCT, fancy upsampling, YCbCr->RGB) take blocks of 8/16 columns and leave edges
    // and tails to scalar code: sizes around those blocks, and noisy content that saturates the range limits.
    let seed = 12345;
    const noise = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) >> 16) & 255;
    for (const [w, h] of [[1, 1], [9, 7], [17, 16], [37, 29], [203, 117]]) {
      const smooth = rawImage(w, h, 3, (x, y, c) => Math.round(128 + 100 * Math.sin(x / 5 + c) * Math.cos(y / 7 - c)));
      const rough = rawImage(w, h, 3, () => noise());
      for (const [kind, px] of [['smooth', smooth], ['noise', rough]] as const) {
        for (const chromaSubsampling of ['4:2:0', '4:4:4']) for (const progressive of [false, true]) for (const quality of [50, 95]) {
          const buf = await sharp(px, { raw: { width: w, height: h, channels: 3 } })
            .jpeg({ quality, chromaSubsampling, progressive }).toBuffer();
          await assertSameAsSharp(buf, `${w}x${h} ${kind} ${chromaSubsampling} q${quality}${progressive ? ' progressive' : ''}`);
        }
        const gray = await sharp(px, { raw: { width: w, height: h, channels: 3 } }).toColourspace('b-w').jpeg({ quality: 90 }).toBuffer();
        await assertSameAsSharp(gray, `${w}x${h} ${kind} gray`);
      }
    }
  });

  test('same pixels as sharp for 4:2:2, 4:4:0, 4:1:1, arithmetic-coded and progressive 4:2:2 JPEGs (made with cjpeg)', async () => {
    // 37x29 photo-like content, libjpeg-turbo 2.1.5 cjpeg -quality 90 -sample 2x1 | 1x2 | 4x1 [-arithmetic | -progressive]
    for (const [what, b64] of CJPEG_SAMPLES) await assertSameAsSharp(Buffer.from(b64, 'base64'), what);
  });

  test('decodes at 1/2, 1/4 and 1/8 equal libjpeg-turbo\'s plain C build, byte for byte (reduced IDCTs in WebAssembly SIMD)', () => {
    for (const [what, b64] of [...SCALED_SAMPLES, ...CJPEG_SAMPLES]) {
      const buf = Buffer.from(b64, 'base64');
      const full = decodeRGBSync(buf)!;
      ([2, 4, 8] as const).forEach((s, i) => {
        const img = decodeRGBSync(buf, { scaleFor: () => s });
        assert.ok(img, `${what} 1/${s}: the synchronous path takes it`);
        assert.deepEqual([img.width, img.height, img.scale], [Math.ceil(full.fullWidth / s), Math.ceil(full.fullHeight / s), s]);
        assert.equal(createHash('sha256').update(img.data).digest('hex'), SCALED_SHA256[what][i], `${what} at 1/${s}`);
      });
    }
  });

  test('truncated and bit-flipped JPEGs: null (sharp decides) or a decode, never a throw; the decoder keeps working', async () => {
    const jpg = await sharp(rawImage(96, 64, 3, (x, y, c) => (x * 5 + y * 9 + c * 70) & 255), { raw: { width: 96, height: 64, channels: 3 } })
      .jpeg({ quality: 90 }).toBuffer();
    for (let cut = 1; cut < 10; cut++) {
      assert.equal(decodeRGBSync(jpg.subarray(0, Math.floor((jpg.length * cut) / 10))), null, `cut at ${cut}/10`);
    }
    let seed = 99;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
    for (let t = 0; t < 60; t++) {
      const bad = Buffer.from(jpg);
      for (let k = 0; k <= t % 5; k++) bad[Math.floor(rnd() * bad.length)] ^= 1 << Math.floor(rnd() * 8);
      const img = decodeRGBSync(bad, { scaleFor: () => ([1, 2, 4, 8] as const)[t % 4] });
      if (img) assert.equal(img.data.length, img.width * img.height * 3);
    }
    await assertSameAsSharp(jpg, 'after the damaged ones');
  });

  test('a JPEG without its quantization tables fails, also right after a file that had them (a fresh decompressor per file)', async () => {
    const jpg = await sharp(rawImage(64, 48, 3, (x, y, c) => (x * 5 + y * 9 + c * 70) & 255), { raw: { width: 64, height: 48, channels: 3 } })
      .jpeg({ quality: 90 }).toBuffer();
    const parts: Buffer[] = [jpg.subarray(0, 2)];
    let i = 2;
    while (jpg[i] === 0xff && jpg[i + 1] !== 0xda) {
      const len = jpg.readUInt16BE(i + 2);
      if (jpg[i + 1] !== 0xdb) parts.push(jpg.subarray(i, i + 2 + len)); // drop the DQT segments
      i += 2 + len;
    }
    parts.push(jpg.subarray(i));
    const noTables = Buffer.concat(parts);
    assert.ok(noTables.length < jpg.length - 60, 'the tables were dropped');
    // libjpeg keeps tables in its decompress object: with one object for all files, this decoded with jpg's tables
    assert.ok(decodeRGBSync(jpg));
    assert.equal(decodeRGBSync(noTables), null);
    await rejectsWith(decodeRGB(noTables, 'no_tables.jpg'), DecodeError, /no_tables\.jpg/);
  });

  test('PNG, CMYK and damaged JPEGs are left to sharp (null), decodeRGB still decodes or fails as before', async () => {
    const png = await sharp(rawImage(8, 6, 3, (x, y, c) => x * 30 + y + c), { raw: { width: 8, height: 6, channels: 3 } }).png().toBuffer();
    assert.equal(decodeRGBSync(png), null);
    assert.equal((await decodeRGB(png, 'x.png')).width, 8);
    const cmyk = await sharp(rawImage(8, 6, 3, (x) => x * 30), { raw: { width: 8, height: 6, channels: 3 } }).toColourspace('cmyk').jpeg().toBuffer();
    assert.equal(decodeRGBSync(cmyk), null);
    const jpg = await sharp(rawImage(64, 48, 3, (x, y, c) => (x * 7 + y * 3 + c * 50) & 255), { raw: { width: 64, height: 48, channels: 3 } }).jpeg().toBuffer();
    assert.ok(decodeRGBSync(jpg));
    const truncated = jpg.subarray(0, Math.floor(jpg.length / 2));
    assert.equal(decodeRGBSync(truncated), null); // libjpeg's warning -> sharp decides
    await rejectsWith(decodeRGB(truncated, 'half.jpg'), DecodeError, /half\.jpg/);
    const garbage = new Uint8Array([0xff, 0xd8, 0xff, 0xe0, 1, 2, 3, 4, 5, 6, 7, 8]);
    assert.equal(decodeRGBSync(garbage), null); // an error exit inside libjpeg
    assert.ok(decodeRGBSync(jpg), 'the decoder works again after an error exit');
  });
});

// -------------------------------------------------------------------------------------------------
describe('decode: region decode (only the part of a JPEG that a transform reads)', () => {
  /** cjpeg-made files (test/fixtures/jpeg/README.md): block smoothing, restart markers, gray 2x2, 4:1:1, mixed. */
  const REGION_FIXTURES = ['progressive_incomplete_420', 'restart_420', 'gray_2x2', 'progressive_411', 'arithmetic_mixed'];

  /** JPEGs of every sampling the decoder takes: sharp-made (4:2:0, 4:4:4, progressive, gray; odd sizes), cjpeg-made. */
  async function regionCorpus(): Promise<[string, Buffer][]> {
    const out: [string, Buffer][] = [];
    for (const [w, h] of [[1, 1], [9, 7], [61, 47], [203, 117], [48, 130]]) {
      const px = rawImage(w, h, 3, (x, y, c) => Math.round(128 + 90 * Math.sin(x / 6 + c + y / 13) * Math.cos(y / 5 - c) + ((x * 7 + y * 13 + c) % 29) - 14));
      const raw = { raw: { width: w, height: h, channels: 3 as const } };
      for (const chromaSubsampling of ['4:2:0', '4:4:4']) for (const progressive of [false, true]) {
        out.push([`${w}x${h} ${chromaSubsampling}${progressive ? ' progressive' : ''}`,
          await sharp(px, raw).jpeg({ quality: 90, chromaSubsampling, progressive }).toBuffer()]);
      }
      out.push([`${w}x${h} gray`, await sharp(px, raw).toColourspace('b-w').jpeg({ quality: 90 }).toBuffer()]);
    }
    for (const [what, b64] of CJPEG_SAMPLES) out.push([`${what} 37x29`, Buffer.from(b64, 'base64')]);
    for (const name of REGION_FIXTURES) out.push([name, readFileSync(path.join(FIXTURES, 'jpeg', `${name}.jpg`))]);
    out.push(['photo chelsea', readFileSync(path.join(FIXTURES, 'photos', 'chelsea.jpg'))]);
    return out;
  }

  /** Run `fn` with region decode in `mode` ('poison': the bytes outside a region are noise), then restore it. */
  function withRegionMode<T>(mode: 'on' | 'off' | 'poison', fn: () => T): T {
    const before = regionDecoding();
    regionDecoding(mode);
    try {
      return fn();
    } finally {
      regionDecoding(before);
    }
  }

  test('a region decode equals the whole decode inside the region: random regions, every sampling, progressive, arithmetic, odd sizes, at 1/1, 1/2, 1/4, 1/8', async () => {
    const rng = new Rng(2026);
    let partial = 0, poisonSeen = 0;
    for (const [what, buf] of await regionCorpus()) {
      for (const s of [1, 2, 4, 8] as const) {
        const whole = decodeRGBSync(buf, { scaleFor: () => s })!;
        assert.ok(whole, `${what}: decoded`);
        const ref = whole.data.slice();
        const { width: w, height: h } = whole;
        const regions: Region[] = [];
        for (let k = 0; k < 16; k++) {
          const left = rng.randint(0, w - 1), top = rng.randint(0, h - 1);
          regions.push({ left, top, width: rng.randint(1, w - left), height: rng.randint(1, h - top) });
        }
        regions.push({ left: w - 1, top: h - 1, width: 1, height: 1 }, { left: w >> 1, top: 0, width: 1, height: h });
        // edges on iMCU boundaries (multiples of 8 px), where a crop's margin matters most
        for (let left = 8; left < w; left += 8) {
          const top = 8 * rng.randint(0, (h - 1) >> 3);
          regions.push({ left, top, width: rng.randint(1, w - left), height: rng.randint(1, h - top) });
        }
        for (const r of regions) {
          const img = withRegionMode('poison', () => decodeRGBSync(buf, {
            scaleFor: () => s,
            regionFor: (g) => {
              assert.deepEqual([g.width, g.height, g.scale, g.fullWidth, g.fullHeight], [w, h, s, whole.fullWidth, whole.fullHeight]);
              return r;
            },
          }));
          assert.ok(img, `${what} 1/${s} ${JSON.stringify(r)}: decoded`);
          assert.deepEqual([img.width, img.height, img.data.length], [w, h, w * h * 3]);
          if (r.width === w && r.height === h) {
            assert.equal(img.region, undefined);
            continue;
          }
          assert.deepEqual(img.region, r);
          partial++;
          let diff = 0, outside = 0;
          for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let c = 0; c < 3; c++) {
            const i = (y * w + x) * 3 + c;
            const inside = x >= r.left && x < r.left + r.width && y >= r.top && y < r.top + r.height;
            if (inside && img.data[i] !== ref[i]) diff++;
            if (!inside && img.data[i] !== ref[i]) outside++;
          }
          assert.equal(diff, 0, `${what} 1/${s} region ${JSON.stringify(r)}: ${diff} bytes differ from the whole decode`);
          if (outside > 0) poisonSeen++;
        }
      }
    }
    assert.ok(partial > 2000, `${partial} partial regions`);
    assert.ok(poisonSeen > partial * 0.9, 'the bytes outside the regions were overwritten (poison)');
  });

  test('a truncated or corrupt JPEG goes to sharp with a region as it does without one', async () => {
    const px = rawImage(160, 96, 3, (x, y, c) => (x * 5 + y * 9 + c * 70 + ((x * y) % 17)) & 255);
    const raw = { raw: { width: 160, height: 96, channels: 3 as const } };
    const top = { left: 64, top: 0, width: 16, height: 8 }; // far from the damage at the end of the data
    for (const progressive of [false, true]) {
      const jpg = await sharp(px, raw).jpeg({ quality: 90, progressive }).toBuffer();
      for (let cut = 5; cut < 10; cut++) {
        const bad = jpg.subarray(0, Math.floor((jpg.length * cut) / 10));
        assert.equal(decodeRGBSync(bad), null);
        assert.equal(withRegionMode('poison', () => decodeRGBSync(bad, { regionFor: () => top })), null, `cut at ${cut}/10 with a region`);
      }
      // bytes between the entropy-coded data and EOI: libjpeg's "extraneous bytes" warning
      const extra = Buffer.concat([jpg.subarray(0, jpg.length - 2), Buffer.from([0x12, 0x34, 0x56, 0xff, 0xd9])]);
      assert.equal(decodeRGBSync(extra), null);
      assert.equal(withRegionMode('poison', () => decodeRGBSync(extra, { regionFor: () => top })), null, 'extraneous bytes with a region');
      let seed = 7;
      const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n);
      let nulls = 0;
      for (let t = 0; t < 80; t++) {
        const bad = Buffer.from(jpg);
        for (let k = 0; k <= t % 3; k++) bad[600 + rnd(bad.length - 600)] ^= 1 << rnd(8);
        const s = ([1, 2, 4, 8] as const)[t % 4];
        const whole = decodeRGBSync(bad, { scaleFor: () => s });
        const ref = whole?.data.slice();
        const w = Math.ceil(160 / s);
        const r = { left: rnd(w - 1), top: 0, width: 1, height: 1 + rnd(Math.ceil(96 / s)) };
        const part = withRegionMode('poison', () => decodeRGBSync(bad, { scaleFor: () => s, regionFor: () => r }));
        assert.equal(part === null, whole === null, `flip ${t}: the same answer with a region`);
        if (!part || !ref) {
          nulls++;
          continue;
        }
        for (let y = r.top; y < r.top + r.height; y++) for (let x = r.left; x < r.left + r.width; x++) {
          for (let c = 0; c < 3; c++) assert.equal(part.data[(y * w + x) * 3 + c], ref[(y * w + x) * 3 + c]);
        }
      }
      assert.ok(nulls > 5, `${nulls} of 80 damaged files left to sharp`);
      // through the loader's path: the truncated file is decoded by sharp, which fails on it, and is skipped
      const file = path.join(tmp, `truncated_${progressive}.jpg`);
      writeFileSync(file, jpg.subarray(0, Math.floor(jpg.length * 0.8)));
      const res = await withRegionMode('poison', () => runBatch(
        { id: 0, items: [{ index: 0, path: file, label: 0, seed: 1 }] },
        { kind: 'eval', inputSize: [3, 32, 32], cropPct: 1, interpolation: 'bicubic', mean: [0, 0, 0], std: [1, 1, 1], output: 'uint8' },
      ));
      assert.equal(res.count, 0);
      assert.equal(res.skipped.length, 1);
    }
  });

  /** JPEG files for the transform tests: landscape, portrait, square, progressive, 4:4:4, gray. */
  async function transformFiles(dir: string): Promise<string[]> {
    const files: string[] = [];
    const kinds: [number, number, Record<string, unknown>, boolean][] = [
      [203, 117, { quality: 90 }, false], [96, 160, { quality: 85, progressive: true }, false],
      [150, 150, { quality: 95, chromaSubsampling: '4:4:4' }, false], [131, 77, { quality: 90 }, true], [40, 30, { quality: 90 }, false],
    ];
    mkdirSync(dir, { recursive: true });
    for (const [k, [w, h, opts, gray]] of kinds.entries()) {
      const px = rawImage(w, h, 3, (x, y, c) => Math.round(128 + 100 * Math.sin(x / (4 + k) + c) * Math.cos(y / 6 - c)) ^ ((x * y) & 15));
      let img = sharp(px, { raw: { width: w, height: h, channels: 3 } });
      if (gray) img = img.toColourspace('b-w');
      const p = path.join(dir, `im${k}.jpg`);
      await img.jpeg(opts).toFile(p);
      files.push(p);
    }
    files.push(path.join(FIXTURES, 'jpeg', 'progressive_incomplete_420.jpg'), path.join(FIXTURES, 'jpeg', 'arithmetic_mixed.jpg'));
    return files;
  }

  /** runBatch of `items` with whole decodes and with poisoned region decodes: the same bytes. */
  async function assertSameWithRegions(spec: TransformSpec, items: TaskItem[], what: string): Promise<void> {
    const whole = await withRegionMode('off', () => runBatch({ id: 0, items }, spec));
    const region = await withRegionMode('poison', () => runBatch({ id: 0, items }, spec));
    assert.equal(whole.count, items.length, `${what}: every image decoded`);
    assert.equal(region.count, whole.count);
    const per = whole.images.length / whole.count;
    for (let k = 0; k < whole.count; k++) {
      const a = whole.images.subarray(k * per, (k + 1) * per), b = region.images.subarray(k * per, (k + 1) * per);
      assert.ok(a.every((v, i) => v === b[i]), `${what}: ${items[k].path} seed ${items[k].seed} differs with region decode`);
    }
  }

  test('the train transform gives the same bytes with region decode as with whole decodes, over many seeds (with shrink-on-load)', async () => {
    const files = await transformFiles(path.join(tmp, 'region_train'));
    const specs: [string, TrainKindSpec][] = [
      ['default, 24 px (shrink-on-load)', { kind: 'train', ...DEFAULT_TRAIN_SPEC, imgSize: 24 }],
      ['lanczos, 40x28', { kind: 'train', ...DEFAULT_TRAIN_SPEC, imgSize: [40, 28], interpolation: 'lanczos', aa: null }],
      ['nearest, 20 px', { kind: 'train', ...DEFAULT_TRAIN_SPEC, imgSize: 20, interpolation: 'nearest' }],
      ['hamming, scale 0.3-1', { kind: 'train', ...DEFAULT_TRAIN_SPEC, imgSize: 16, interpolation: 'hamming', scale: [0.3, 1], aa: null }],
      ['box, no shrink-on-load', { kind: 'train', ...DEFAULT_TRAIN_SPEC, imgSize: 16, interpolation: 'box', shrinkOnLoad: false, aa: null }],
      ['no-aug, crop 0.9', { kind: 'train', ...DEFAULT_TRAIN_SPEC, imgSize: 32, noAug: true, cropPct: 0.9 }],
    ];
    let shrunk = 0, smaller = 0, n = 0;
    for (const [what, spec] of specs) {
      const items: TaskItem[] = [];
      for (const [f, file] of files.entries()) {
        for (let k = 0; k < 40; k++) items.push({ index: f, path: file, label: 0, seed: sampleSeed(3, f, k) });
      }
      await assertSameWithRegions(spec, items, what);
      for (const it of items) {
        const buf = readFileSync(it.path);
        const hdr = decodeRGBSync(buf)!;
        const s = trainDecodeScale(hdr.fullWidth, hdr.fullHeight, spec, it.seed);
        const g = { width: Math.ceil(hdr.fullWidth / s), height: Math.ceil(hdr.fullHeight / s), scale: s, fullWidth: hdr.fullWidth, fullHeight: hdr.fullHeight };
        const r = trainDecodeRegion(g, spec, it.seed);
        n++;
        if (s > 1) shrunk++;
        if (r.width * r.height < 0.8 * g.width * g.height) smaller++;
      }
    }
    assert.ok(shrunk > 40, `shrink-on-load in ${shrunk} of ${n} samples`);
    assert.ok(smaller > n / 3, `a region under 80% of the image in ${smaller} of ${n} samples`);
  });

  test('the eval transform gives the same bytes with region decode (crop_pct, filters, non-square, padded crops)', async () => {
    const files = await transformFiles(path.join(tmp, 'region_eval'));
    const items = files.map((p, index) => ({ index, path: p, label: 0, seed: index }));
    const base = { mean: [0.485, 0.456, 0.406] as [number, number, number], std: [0.229, 0.224, 0.225] as [number, number, number] };
    const cfgs: DataConfig[] = [
      { ...base, inputSize: [3, 48, 48], cropPct: 1.0, interpolation: 'bicubic' },
      { ...base, inputSize: [3, 48, 48], cropPct: 0.875, interpolation: 'bilinear' },
      { ...base, inputSize: [3, 40, 56], cropPct: 0.95, interpolation: 'lanczos' },
      { ...base, inputSize: [3, 36, 36], cropPct: 1.0, interpolation: 'nearest' },
      { ...base, inputSize: [3, 64, 64], cropPct: 0.5, interpolation: 'bicubic' }, // upsampled, the 40x30 image padded
    ];
    for (const cfg of cfgs) {
      for (const output of ['uint8', 'float32'] as const) {
        await assertSameWithRegions({ kind: 'eval', ...cfg, output }, items, `${JSON.stringify(cfg.inputSize)} ${cfg.cropPct} ${cfg.interpolation} ${output}`);
      }
    }
    // and timm's eval transform on the fixture photos, through region decodes, still equals the Pillow reference
    const ref = await readSafetensors(path.join(FIXTURES, 'eval_transform.safetensors'));
    const cfg = resolveDataConfig(MAMBAOUT_DATA_DEFAULTS, { cropPct: 0.875 });
    const photos = PHOTOS.map((name, index) => ({ index, path: path.join(FIXTURES, 'photos', `${name}.jpg`), label: 0, seed: 0 }));
    const res = await withRegionMode('poison', () => runBatch({ id: 0, items: photos }, { kind: 'eval', ...cfg }));
    assert.equal(res.count, PHOTOS.length);
    PHOTOS.forEach((name, k) => {
      const want = ref.get(name)!.data as Float32Array;
      const got = res.images.subarray(k * 224 * 224 * 3, (k + 1) * 224 * 224 * 3);
      let max = 0;
      for (let y = 0; y < 224; y++) for (let x = 0; x < 224; x++) for (let c = 0; c < 3; c++) {
        max = Math.max(max, Math.abs(got[(y * 224 + x) * 3 + c] - want[(c * 224 + y) * 224 + x]));
      }
      assert.ok(max < 1e-5, `${name}: max abs diff ${max} to Pillow with region decode`);
      const { width: w, height: h } = decodeRGBSync(readFileSync(photos[k].path))!;
      const region = evalSourceRegion(w, h, cfg);
      if (w !== h) assert.ok(region.width * region.height < 0.95 * w * h, `${name}: ${JSON.stringify(region)} of ${w}x${h}`);
    });
  });

  test('resizeSourceRegion covers every pixel resizeRGB reads: noise outside it changes nothing (every filter, box, region, crop; SIMD and JS)', () => {
    const rng = new Rng(77);
    try {
      for (let t = 0; t < 400; t++) {
        const w = rng.randint(1, 90), h = rng.randint(1, 90);
        const img = { data: new Uint8Array(w * h * 3).map((_, i) => (i * 37 + t) & 255), width: w, height: h };
        const ow = rng.randint(1, 70), oh = rng.randint(1, 70);
        const interp = INTERPOLATIONS[rng.randint(0, INTERPOLATIONS.length - 1)];
        const opts: ResizeOptions = {};
        if (rng.random() < 0.5) {
          const l = rng.randint(0, ow - 1), tp = rng.randint(0, oh - 1);
          opts.region = { left: l, top: tp, width: rng.randint(1, ow - l), height: rng.randint(1, oh - tp) };
        }
        const mode = rng.randint(0, 2);
        if (mode === 1) {
          const x0 = rng.uniform(0, w * 0.5), y0 = rng.uniform(0, h * 0.5);
          opts.box = [x0, y0, rng.uniform(x0 + 0.25, w), rng.uniform(y0 + 0.25, h)];
        } else if (mode === 2) {
          const cw = rng.randint(1, w), chh = rng.randint(1, h);
          opts.crop = { left: rng.randint(0, w - cw), top: rng.randint(0, h - chh), width: cw, height: chh };
        }
        if (rng.random() < 0.1) [opts.region, opts.box, opts.crop] = [undefined, undefined, undefined];
        const simd = t % 2 === 0;
        resampleSimd(simd);
        const want = resizeRGB(img, ow, oh, interp, opts);
        const src = resizeSourceRegion(w, h, ow, oh, interp, opts);
        assert.ok(src.left >= 0 && src.top >= 0 && src.width > 0 && src.height > 0 && src.left + src.width <= w && src.top + src.height <= h);
        // small integers only: a -0 here once slowed every later transform (V8 widened the shared Region map)
        assert.ok(Object.values(src).every((v) => Number.isInteger(v) && !Object.is(v, -0)), JSON.stringify({ w, h, ow, oh, interp, opts }));
        const noisy = { ...img, data: img.data.map((v, i) => {
          const x = Math.floor(i / 3) % w, y = Math.floor(i / 3 / w);
          const inside = x >= src.left && x < src.left + src.width && y >= src.top && y < src.top + src.height;
          return inside ? v : (v * 131 + 71 + i) & 255;
        }) };
        const got = resizeRGB(noisy, ow, oh, interp, opts);
        assert.ok(got.data.every((v, i) => v === want.data[i]), JSON.stringify({ w, h, ow, oh, interp, opts, src, simd }));
      }
    } finally {
      resampleSimd(true);
    }
  });
});

// -------------------------------------------------------------------------------------------------
describe('eval transform', () => {
  test('resolveDataConfig follows timm', () => {
    const d = resolveDataConfig(MAMBAOUT_DATA_DEFAULTS, {});
    assert.deepEqual(d, {
      inputSize: [3, 224, 224], interpolation: 'bicubic', mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], cropPct: 1.0,
    });
    assert.deepEqual(resolveDataConfig(MAMBAOUT_DATA_DEFAULTS, { imgSize: 288 }).inputSize, [3, 288, 288]);
    assert.deepEqual(resolveDataConfig(MAMBAOUT_DATA_DEFAULTS, { imgSize: 288, inputSize: [3, 192, 256] }).inputSize, [3, 192, 256]);
    const o = resolveDataConfig(MAMBAOUT_DATA_DEFAULTS, { mean: [0.5], std: [0.25, 0.5, 1], interpolation: '', cropPct: 0.9 });
    assert.deepEqual([o.mean, o.std, o.interpolation, o.cropPct], [[0.5, 0.5, 0.5], [0.25, 0.5, 1], 'bicubic', 0.9]);
    assert.equal(resolveDataConfig(MAMBAOUT_DATA_DEFAULTS, { interpolation: 'bilinear' }).interpolation, 'bilinear');
    assert.equal(resolveDataConfig(MAMBAOUT_DATA_DEFAULTS, { cropPct: 0 }).cropPct, 0.875); // falsy -> default
    assert.equal(resolveDataConfig(MAMBAOUT_DATA_DEFAULTS, { cropPct: null }).cropPct, 1.0);
    assert.equal(resolveDataConfig({}, {}).cropPct, 0.875);
    assert.deepEqual(resolveDataConfig({ testInputSize: [3, 256, 256], testCropPct: 0.95, inputSize: [3, 224, 224] }, { useTestSize: true }).inputSize, [3, 256, 256]);
    assert.throws(() => resolveDataConfig({}, { interpolation: 'random' }), UserError);
    assert.throws(() => resolveDataConfig({}, { inputSize: [1, 224, 224] }), UserError);
    assert.throws(() => resolveDataConfig({}, { mean: [0.1, 0.2] }), UserError);
  });

  test('resize size and center-crop rounding (half to even)', () => {
    assert.deepEqual([0.5, 1.5, 2.5, 16.5, 17.5, 38].map(pyRound), [0, 2, 2, 16, 18, 38]);
    const sq = (s: number, crop: number) => ({ inputSize: [3, s, s] as [number, number, number], cropPct: crop });
    assert.deepEqual(evalResizeSize(500, 375, sq(224, 0.875)), [341, 256]); // int(256 * 500 / 375)
    assert.deepEqual(evalResizeSize(375, 500, sq(224, 0.875)), [256, 341]);
    assert.deepEqual(evalResizeSize(500, 375, sq(224, 1.0)), [298, 224]);
    assert.deepEqual(evalResizeSize(256, 300, sq(224, 0.875)), [256, 300]); // short side already 256
    assert.deepEqual(evalResizeSize(300, 300, sq(224, 0.9)), [248, 248]); // floor(224 / 0.9)
    // non-square target: both sides int(size / crop_pct), aspect not kept (timm 0.6.11)
    assert.deepEqual(evalResizeSize(500, 375, { inputSize: [3, 224, 256], cropPct: 0.875 }), [292, 256]);
    // (257 - 224) / 2 = 16.5 -> 16, (259 - 224) / 2 = 17.5 -> 18, (300 - 224) / 2 = 38
    assert.deepEqual(centerCropBox(257, 300, 224, 224), { padLeft: 0, padTop: 0, left: 16, top: 38 });
    assert.deepEqual(centerCropBox(259, 224, 224, 224), { padLeft: 0, padTop: 0, left: 18, top: 0 });
    // smaller than the crop: torchvision pads (d // 2) left/top first
    assert.deepEqual(centerCropBox(200, 300, 224, 224), { padLeft: 12, padTop: 0, left: 0, top: 38 });
  });

  test('crop window of the resize equals crop of the full resize; padding is black', () => {
    const img: RGBImage = { data: rawImage(53, 41, 3, (x, y, c) => (x * 37 + y * 11 + c * 90) % 256), width: 53, height: 41 };
    for (const interp of ['bicubic', 'bilinear', 'nearest', 'lanczos'] as const) {
      const cfg = { inputSize: [3, 24, 24] as [number, number, number], cropPct: 0.875, interpolation: interp };
      const [rw, rh] = evalResizeSize(53, 41, cfg);
      assert.deepEqual([rw, rh], [34, 27]); // floor(24 / .875) = 27, int(27 * 53 / 41) = 34
      const full = resizeRGB(img, rw, rh, interp);
      const c = centerCropBox(rw, rh, 24, 24);
      const crop = evalCropUint8(img, cfg);
      for (let y = 0; y < 24; y++) for (let x = 0; x < 24; x++) {
        assert.deepEqual(pixel(crop, x, y), pixel(full, x + c.left, y + c.top), `${interp} at ${x},${y}`);
      }
    }
    // crop_pct 2 on a 12x12 image: scale 6 -> resize 12 -> 6, zero-padded to 12 with 3 px borders
    const flat: RGBImage = { data: new Uint8Array(12 * 12 * 3).fill(200), width: 12, height: 12 };
    const padded = evalCropUint8(flat, { inputSize: [3, 12, 12], cropPct: 2, interpolation: 'bicubic' });
    for (let y = 0; y < 12; y++) for (let x = 0; x < 12; x++) {
      const inside = x >= 3 && x < 9 && y >= 3 && y < 9;
      assert.deepEqual(pixel(padded, x, y), inside ? [200, 200, 200] : [0, 0, 0], `${x},${y}`);
    }
  });

  test('Pillow resampling on hand-computed 1-D cases', () => {
    const row = (v: number[]): RGBImage => ({ data: Uint8Array.from(v.flatMap((x) => [x, x, x])), width: v.length, height: 1 });
    const gray = (img: RGBImage) => Array.from(img.data).filter((_, i) => i % 3 === 0);
    // bilinear 4 -> 2: taps (.75,.75,.25)/1.75 and (.25,.75,.75)/1.75 (edge-clamped)
    assert.deepEqual(gray(resizeRGB(row([0, 100, 200, 255]), 2, 1, 'bilinear')), [71, 209]);
    // nearest 4 -> 2 samples floor((x + .5) * 2) = 1, 3
    assert.deepEqual(gray(resizeRGB(row([0, 100, 200, 255]), 2, 1, 'nearest')), [100, 255]);
    // box 4 -> 2 averages pairs (round half up in fixed point)
    assert.deepEqual(gray(resizeRGB(row([0, 101, 200, 255]), 2, 1, 'box')), [51, 228]);
    // bicubic 2 -> 4 (upscale, a = -0.5): taps at distances .75/.25, weights normalized on the clamped window
    assert.deepEqual(gray(resizeRGB(row([0, 255]), 4, 1, 'bicubic')), [0, 53, 202, 255]);
  });

  test('the WebAssembly SIMD resampling passes give the bytes of the JS passes (random sizes, filters, regions, boxes)', () => {
    assert.ok(resampleSimd(), 'SIMD passes available on this runtime');
    const rng = new Rng(5);
    try {
      for (let it = 0; it < 200; it++) {
        const w = rng.randint(1, 60), h = rng.randint(1, 60);
        const data = new Uint8Array(w * h * 3);
        for (let i = 0; i < data.length; i++) data[i] = rng.randint(0, 255);
        const img = { data, width: w, height: h };
        const ow = rng.randint(1, 80), oh = rng.randint(1, 80);
        const interp = INTERPOLATIONS[rng.randint(1, INTERPOLATIONS.length - 1)];
        const l = rng.randint(0, ow - 1), t = rng.randint(0, oh - 1);
        const region = rng.random() < 0.5 ? { left: l, top: t, width: rng.randint(1, ow - l), height: rng.randint(1, oh - t) } : undefined;
        const x0 = rng.uniform(0, w * 0.4), y0 = rng.uniform(0, h * 0.4);
        const box: [number, number, number, number] | undefined =
          rng.random() < 0.3 ? [x0, y0, rng.uniform(x0 + 0.5, w), rng.uniform(y0 + 0.5, h)] : undefined;
        resampleSimd(true);
        const a = resizeRGB(img, ow, oh, interp, { region, box });
        resampleSimd(false);
        const b = resizeRGB(img, ow, oh, interp, { region, box });
        // a window resampled in place (PIL crop + resize) equals resizing a copy of it
        const cw = rng.randint(1, w), chh = rng.randint(1, h);
        const crop = { left: rng.randint(0, w - cw), top: rng.randint(0, h - chh), width: cw, height: chh };
        resampleSimd(true);
        const c = resizeRGB(img, ow, oh, interp, { crop, region });
        resampleSimd(false);
        const d = resizeRGB(cropRGB(img, crop), ow, oh, interp, { region });
        assert.ok(c.data.length === d.data.length && c.data.every((v, i) => v === d.data[i]), JSON.stringify({ w, h, ow, oh, interp, crop, region }));
        assert.deepEqual([a.width, a.height], [b.width, b.height]);
        assert.ok(a.data.every((v, i) => v === b.data[i]), JSON.stringify({ w, h, ow, oh, interp, region, box }));
      }
    } finally {
      resampleSimd(true);
    }
  });

  test('resizeRGB and evalCropUint8 write `into` a buffer the bytes they return otherwise, and nothing around them', () => {
    const rng = new Rng(11);
    try {
      for (let it = 0; it < 240; it++) {
        const w = rng.randint(1, 60), h = rng.randint(1, 60);
        const img = { data: new Uint8Array(w * h * 3).map(() => rng.randint(0, 255)), width: w, height: h };
        const ow = it % 12 === 0 ? w : rng.randint(1, 70), oh = it % 12 === 0 ? h : rng.randint(1, 70); // some no-op resizes
        const interp = INTERPOLATIONS[rng.randint(0, INTERPOLATIONS.length - 1)];
        const opts: ResizeOptions = {};
        if (rng.random() < 0.5) {
          const l = rng.randint(0, ow - 1), t = rng.randint(0, oh - 1);
          opts.region = { left: l, top: t, width: rng.randint(1, ow - l), height: rng.randint(1, oh - t) };
        }
        if (rng.random() < 0.3) {
          const cw = rng.randint(1, w), chh = rng.randint(1, h);
          opts.crop = { left: rng.randint(0, w - cw), top: rng.randint(0, h - chh), width: cw, height: chh };
        } else if (rng.random() < 0.3) {
          const x0 = rng.uniform(0, w * 0.4), y0 = rng.uniform(0, h * 0.4);
          opts.box = [x0, y0, rng.uniform(x0 + 0.5, w), rng.uniform(y0 + 0.5, h)];
        }
        const simd = it % 2 === 0;
        resampleSimd(simd);
        const want = resizeRGB(img, ow, oh, interp, opts);
        const offset = rng.randint(0, 7);
        const buf = new Uint8Array(offset + want.data.length + 5).fill(77);
        const got = resizeRGB(img, ow, oh, interp, { ...opts, into: { data: buf, offset } });
        const what = JSON.stringify({ w, h, ow, oh, interp, opts, simd, offset });
        assert.equal(got.data.buffer, buf.buffer, what);
        assert.deepEqual([got.width, got.height], [want.width, want.height], what);
        assert.ok(buf.subarray(offset, offset + want.data.length).every((v, i) => v === want.data[i]), what);
        assert.ok(buf.subarray(0, offset).every((v) => v === 77) && buf.subarray(offset + want.data.length).every((v) => v === 77), what);
      }
      // the eval crop, padded or not, into a batch slot that held other bytes
      for (const [iw, ih, cropPct] of [[53, 41, 0.875], [12, 12, 2], [40, 90, 1.0]] as const) {
        const img: RGBImage = { data: rawImage(iw, ih, 3, (x, y, c) => (x * 37 + y * 11 + c * 90) % 256), width: iw, height: ih };
        const cfg = { inputSize: [3, 24, 24] as [number, number, number], cropPct, interpolation: 'bicubic' as const };
        const want = evalCropUint8(img, cfg).data;
        const batch = new Uint8Array(3 * want.length).fill(9);
        evalCropUint8(img, cfg, { data: batch, offset: want.length });
        assert.deepEqual(batch.subarray(want.length, 2 * want.length), want, `${iw}x${ih} crop_pct ${cropPct}`);
        assert.ok(batch.subarray(0, want.length).every((v) => v === 9) && batch.subarray(2 * want.length).every((v) => v === 9));
      }
    } finally {
      resampleSimd(true);
    }
  });

  test('parity with timm eval transform (PIL) on six photos, crop_pct 0.875', async (t) => {
    const ref = await readSafetensors(path.join(FIXTURES, 'eval_transform.safetensors'));
    const cfg = resolveDataConfig(MAMBAOUT_DATA_DEFAULTS, { cropPct: 0.875 });
    for (const name of PHOTOS) {
      const r = ref.get(name)!;
      assert.deepEqual(r.shape, [3, 224, 224]);
      const want = r.data as Float32Array;
      const got = evalTransform(await decodeRGB(path.join(FIXTURES, 'photos', `${name}.jpg`)), cfg);
      assert.equal(got.length, 224 * 224 * 3);
      let sum = 0;
      let max = 0;
      for (let y = 0; y < 224; y++) for (let x = 0; x < 224; x++) for (let c = 0; c < 3; c++) {
        const d = Math.abs(got[(y * 224 + x) * 3 + c] - want[(c * 224 + y) * 224 + x]);
        sum += d;
        if (d > max) max = d;
      }
      const mean = sum / got.length;
      t.diagnostic(`${name}: mean abs diff ${mean.toExponential(2)}, max ${max.toExponential(2)}`);
      assert.ok(mean < 0.02, `${name}: mean abs diff ${mean}`);
      // Measured: 0 / 0 — the resampler is a port of Pillow's and libjpeg decodes identically.
      // One uint8 level is ~0.017 after normalization, so any resampling slip shows up here.
      assert.ok(max < 1e-5, `${name}: max abs diff ${max} (expected bit-exact Pillow parity)`);
    }
  });
});

// -------------------------------------------------------------------------------------------------
describe('samplers', () => {
  test('sequential and random', () => {
    assert.deepEqual([...new SequentialSampler(4)], [0, 1, 2, 3]);
    const rs = new RandomSampler(20, new Rng(3));
    const a = [...rs];
    const b = [...rs];
    assert.deepEqual([...a].sort((x, y) => x - y), Array.from({ length: 20 }, (_, i) => i));
    assert.notDeepEqual(a, b); // a new order every epoch
    assert.deepEqual([...new RandomSampler(20, new Rng(3))], a); // reproducible
  });

  test('DistributedSampler: padding with the head, striding, epochs', () => {
    const ranks = (n: number, w: number, o: Partial<{ shuffle: boolean; dropLast: boolean; seed: number }> = {}, epoch = 0) =>
      Array.from({ length: w }, (_, r) => {
        const s = new DistributedSampler(n, { numReplicas: w, rank: r, ...o });
        s.setEpoch(epoch);
        return [...s];
      });
    assert.deepEqual(ranks(10, 4, { shuffle: false }), [[0, 4, 8], [1, 5, 9], [2, 6, 0], [3, 7, 1]]);
    assert.deepEqual(ranks(10, 4, { shuffle: false, dropLast: true }), [[0, 4], [1, 5], [2, 6], [3, 7]]);
    assert.deepEqual(ranks(3, 8, { shuffle: false }), [[0], [1], [2], [0], [1], [2], [0], [1]]);
    // shuffled: permutation from Rng(seed + epoch), same on every rank
    const perm = new Rng(0 + 5).permutation(10);
    const padded = perm.concat(perm.slice(0, 2));
    const got = ranks(10, 4, {}, 5);
    got.forEach((idx, r) => assert.deepEqual(idx, padded.filter((_, i) => i % 4 === r)));
    assert.deepEqual(new Set(got.flat()), new Set(Array.from({ length: 10 }, (_, i) => i)));
    assert.notDeepEqual(ranks(10, 4, {}, 6), got);
    assert.equal(new DistributedSampler(10, { numReplicas: 4, rank: 0 }).length, 3);
    assert.throws(() => new DistributedSampler(10, { numReplicas: 4, rank: 4 }));
  });

  test('OrderedDistributedSampler', () => {
    const ranks = (n: number, w: number) => Array.from({ length: w }, (_, r) => [...new OrderedDistributedSampler(n, w, r)]);
    assert.deepEqual(ranks(10, 4), [[0, 4, 8], [1, 5, 9], [2, 6, 0], [3, 7, 1]]);
    assert.deepEqual(ranks(8, 2), [[0, 2, 4, 6], [1, 3, 5, 7]]);
    // timm slicing when the head is shorter than the padding
    assert.deepEqual(ranks(1, 4), [[0], [0], [], []]);
    assert.equal(new OrderedDistributedSampler(1, 4, 2).length, 0);
  });
});

// -------------------------------------------------------------------------------------------------
describe('loader', () => {
  let root: string;
  let samples: Sample[];
  let corrupt: string;
  const cfg: DataConfig = resolveDataConfig(MAMBAOUT_DATA_DEFAULTS, { imgSize: 32 });

  before(async () => {
    root = path.join(tmp, 'loader_ds');
    let k = 0;
    for (const cls of ['b_cls', 'a_cls', 'c_cls']) {
      for (let i = 0; i < 4; i++, k++) {
        const w = 40 + 7 * k;
        const h = 36 + 3 * k;
        const img = sharp(rawImage(w, h, 3, (x, y, c) => (x * (k + 1) + y * 5 + c * 70) & 255), { raw: { width: w, height: h, channels: 3 } });
        const p = path.join(root, cls, `img${i}.${i % 2 ? 'png' : 'jpg'}`);
        mkdirSync(path.dirname(p), { recursive: true });
        await (i % 2 ? img.png() : img.jpeg()).toFile(p);
      }
    }
    corrupt = path.join(root, 'b_cls', 'img2b.jpg');
    touch(corrupt, 'garbage, not a JPEG');
    samples = (await scanImageFolder(root)).samples;
    assert.equal(samples.length, 13);
  });

  async function collect<I extends Float32Array | Uint8Array>(loader: DataLoader<I>): Promise<Batch<I>[]> {
    const out: Batch<I>[] = [];
    for await (const b of loader) out.push(b);
    return out;
  }

  for (const workers of [0, 2]) {
    test(`all samples in order with labels, corrupt file skipped and reported (workers ${workers})`, async () => {
      const skippedSeen: string[] = [];
      const loader = new DataLoader({
        samples, transform: { kind: 'eval', ...cfg }, batchSize: 4, workers, onSkip: (p, reason) => {
          assert.ok(reason.length > 0);
          skippedSeen.push(p);
        },
      });
      try {
        assert.equal(loader.length, 4);
        const batches = await collect(loader);
        const good = samples.filter((s) => s.path !== corrupt);
        assert.deepEqual(batches.map((b) => b.shape[0]), [4, 3, 4, 1]); // batch 1 lost the corrupt file
        assert.deepEqual(batches.flatMap((b) => b.paths), good.map((s) => s.path));
        assert.deepEqual(batches.flatMap((b) => Array.from(b.labels)), good.map((s) => s.label));
        assert.deepEqual(batches.flatMap((b) => b.indices), samples.flatMap((s, i) => (s.path === corrupt ? [] : [i])));
        assert.deepEqual(batches[1].skipped.map((s) => s.path), [corrupt]);
        assert.deepEqual(skippedSeen, [corrupt]);
        assert.equal(loader.skippedCount, 1);
        // pixels equal the in-process transform, NHWC
        let i = 0;
        for (const b of batches) {
          assert.ok(b.images instanceof Float32Array);
          assert.deepEqual(b.shape.slice(1), [32, 32, 3]);
          for (let j = 0; j < b.shape[0]; j++, i++) {
            const want = evalTransform(await decodeRGB(good[i].path), cfg);
            assert.deepEqual(b.images.subarray(j * want.length, (j + 1) * want.length), want);
          }
        }
        // second epoch, then drop_last-free early exit and another full epoch
        for await (const _ of loader) break;
        assert.equal((await collect(loader)).flatMap((b) => b.paths).length, 12);
      } finally {
        await loader.close();
      }
    });
  }

  test('uint8 output, drop_last, distributed sampler order (2 workers)', async () => {
    const sampler = new DistributedSampler(samples.length, { numReplicas: 2, rank: 1, seed: 7 });
    sampler.setEpoch(3);
    const order = [...sampler];
    const loader = new DataLoader<Uint8Array>({
      samples, transform: { kind: 'eval', ...cfg, output: 'uint8' }, batchSize: 3, workers: 2, sampler, dropLast: true,
      onSkip: () => {},
    });
    try {
      assert.equal(loader.length, 2); // 7 indices -> 2 full batches of 3
      const batches = await collect(loader);
      const expected = order.slice(0, 6).filter((i) => samples[i].path !== corrupt);
      assert.deepEqual(batches.flatMap((b) => b.indices), expected);
      for (const b of batches) {
        assert.ok(b.images instanceof Uint8Array);
        for (let j = 0; j < b.shape[0]; j++) {
          const want = evalCropUint8(await decodeRGB(b.paths[j]), cfg).data;
          assert.deepEqual(b.images.subarray(j * want.length, (j + 1) * want.length), want);
        }
      }
    } finally {
      await loader.close();
    }
  });

  for (const workers of [0, 2]) {
    test(`a transform error (not a decode error) fails the epoch (workers ${workers})`, async () => {
      const bad = { kind: 'eval' as const, ...cfg, interpolation: 'bogus' as unknown as DataConfig['interpolation'] };
      const loader = new DataLoader({ samples, transform: bad, batchSize: 4, workers, onSkip: () => {} });
      try {
        await assert.rejects(collect(loader), /unknown interpolation 'bogus'/);
      } finally {
        await loader.close();
      }
    });
  }

  test('the same batches under -j 0, 1 and 4 (train with shrink-on-load, and eval), equal to the in-process transform', async () => {
    // 64-128 px JPEGs, 16 px train output: many RRC boxes are >= 32 px, so 1/2 and 1/4 decodes happen.
    const dir = path.join(tmp, 'jobs_ds');
    const rng = new Rng(11);
    const files: Sample[] = [];
    for (let i = 0; i < 20; i++) {
      const w = rng.randint(64, 128), h = rng.randint(64, 128);
      const p = path.join(dir, `c${i % 2}`, `im${i}.jpg`);
      mkdirSync(path.dirname(p), { recursive: true });
      await sharp(rawImage(w, h, 3, (x, y, c) => (x * (i + 3) + y * 7 + c * 60 + ((x * y) % 13)) & 255), { raw: { width: w, height: h, channels: 3 } })
        .jpeg({ quality: 85 }).toFile(p);
      files.push({ path: p, label: i % 2 });
    }
    const train: TrainKindSpec = { kind: 'train', ...DEFAULT_TRAIN_SPEC, imgSize: 16 };
    const specs = [train, { kind: 'eval' as const, ...cfg, output: 'uint8' as const }];
    let shrunk = 0;
    for (const spec of specs) {
      const runs: Batch<Uint8Array>[][] = [];
      for (const workers of [0, 1, 4]) {
        const loader = new DataLoader<Uint8Array>({ samples: files, transform: spec, batchSize: 3, workers, seed: 5, sampler: new DistributedSampler(files.length, { numReplicas: 1, rank: 0, seed: 9 }) });
        loader.setEpoch(2);
        try {
          runs.push(await collect(loader));
        } finally {
          await loader.close();
        }
      }
      for (const r of runs.slice(1)) {
        assert.deepEqual(r.map((b) => b.indices), runs[0].map((b) => b.indices));
        r.forEach((b, k) => assert.ok(Buffer.from(b.images).equals(Buffer.from(runs[0][k].images)), `${spec.kind} batch ${k} differs`));
      }
      // ... and equal to decoding + transforming each sample here
      let pos = 0;
      for (const b of runs[0]) {
        for (let j = 0; j < b.shape[0]; j++, pos++) {
          const per = b.shape[1] * b.shape[2] * 3;
          const got = b.images.subarray(j * per, (j + 1) * per);
          const bytes = readFileSync(b.paths[j]);
          const seed = sampleSeed(5, 2, pos);
          if (spec.kind === 'train') {
            const img = decodeRGBSync(bytes, { scaleFor: (w, h) => trainDecodeScale(w, h, train, seed) })!;
            if (img.scale > 1) shrunk++;
            assert.deepEqual(got, trainTransform(img, train, new Rng(seed)).data);
          } else {
            assert.deepEqual(got, evalCropUint8(decodeRGBSync(bytes)!, cfg).data);
          }
        }
      }
    }
    assert.ok(shrunk >= 3, `shrink-on-load used for ${shrunk} of 20 samples`);
  });

  for (const workers of [0, 2]) {
    test(`recycled batch buffers are written again, batches unchanged (workers ${workers})`, async () => {
      const spec = { kind: 'eval' as const, ...cfg, output: 'uint8' as const };
      const good = samples.filter((s) => s.path !== corrupt);
      const ref = new DataLoader<Uint8Array>({ samples: good, transform: spec, batchSize: 3, workers: 0 });
      const want = (await collect(ref)).map((b) => Buffer.from(b.images));
      await ref.close();
      const loader = new DataLoader<Uint8Array>({ samples: good, transform: spec, batchSize: 3, workers, prefetch: 2 });
      try {
        for (let epoch = 0; epoch < 2; epoch++) {
          const given: Batch<Uint8Array>[] = [];
          const buffers = new Set<ArrayBufferLike>();
          let reusedInProcess = false;
          let k = 0;
          for await (const b of loader) {
            assert.ok(Buffer.from(b.images).equals(want[k]), `epoch ${epoch} batch ${k}`);
            if (buffers.has(b.images.buffer)) reusedInProcess = true;
            buffers.add(b.images.buffer);
            loader.recycle(b);
            given.push(b);
            k++;
          }
          assert.equal(k, want.length);
          if (workers === 0) assert.ok(reusedInProcess, 'a recycled buffer came back in a later batch');
          else assert.ok(given.some((b) => b.images.byteLength === 0), 'recycled buffers were transferred to a worker');
        }
      } finally {
        await loader.close();
      }
    });
  }

  test('in-process batches that interleave (an abandoned epoch still running) keep their own file bytes', async () => {
    const spec = { kind: 'eval' as const, ...cfg, output: 'uint8' as const };
    const task = (id: number, list: Sample[]) => ({ id, items: list.map((s, i) => ({ index: i, path: s.path, label: s.label, seed: i })) });
    const pngs = samples.filter((s) => s.path.endsWith('.png'));
    const jpgs = samples.filter((s) => s.path.endsWith('.jpg') && s.path !== corrupt);
    // A waits on sharp for each PNG; meanwhile B reads and decodes JPEGs on the same thread.
    const [a, b] = await Promise.all([runBatch(task(0, pngs), spec), runBatch(task(1, jpgs), spec)]);
    const a1 = await runBatch(task(0, pngs), spec);
    const b1 = await runBatch(task(1, jpgs), spec);
    assert.deepEqual([a.count, b.count, a.skipped, b.skipped], [pngs.length, jpgs.length, [], []]);
    assert.deepEqual(a.images, a1.images);
    assert.deepEqual(b.images, b1.images);
  });

  test('per-sample seeds depend on seed, epoch and position only', () => {
    const seeds = new Set<number>();
    for (let e = 0; e < 3; e++) for (let p = 0; p < 100; p++) seeds.add(sampleSeed(42, e, p));
    assert.equal(seeds.size, 300);
    assert.equal(sampleSeed(42, 1, 7), sampleSeed(42, 1, 7));
    assert.notEqual(sampleSeed(42, 1, 7), sampleSeed(43, 1, 7));
    for (const s of seeds) assert.ok(Number.isInteger(s) && s >= 0 && s < 2 ** 32);
  });

  test('an unclosed loader with workers does not keep the process alive', () => {
    const loaderUrl = new URL('../src/data/loader.ts', import.meta.url).href;
    const script = `
      import { DataLoader } from ${JSON.stringify(loaderUrl)};
      const samples = ${JSON.stringify(samples.slice(0, 4))};
      const cfg = ${JSON.stringify(cfg)};
      const loader = new DataLoader({ samples, transform: { kind: 'eval', ...cfg }, batchSize: 2, workers: 2 });
      let n = 0;
      for await (const b of loader) n += b.shape[0];
      console.log('images', n);`;
    const res = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: fileURLToPath(new URL('..', import.meta.url)),
      encoding: 'utf8',
      timeout: 30_000,
    });
    assert.equal(res.status, 0, `child failed or hung: ${res.stderr}`);
    assert.match(res.stdout, /images 4/);
  });
});

describe('data config description (timm resolve_data_config, verbose)', () => {
  test('train and validate print the same block, with Python float and tuple formatting', async () => {
    const { describeDataConfig } = await import('../src/data/config.js');
    assert.deepEqual(describeDataConfig(resolveDataConfig(MAMBAOUT_DATA_DEFAULTS, {})), [
      'Data processing configuration for current model + dataset:',
      '\tinput_size: (3, 224, 224)',
      '\tinterpolation: bicubic',
      '\tmean: (0.485, 0.456, 0.406)',
      '\tstd: (0.229, 0.224, 0.225)',
      '\tcrop_pct: 1.0',
    ]);
    const lines = describeDataConfig(resolveDataConfig(MAMBAOUT_DATA_DEFAULTS, { mean: [1], std: [0.5, 1e-5, 2], cropPct: 0.875, inputSize: [3, 192, 256] }));
    assert.equal(lines[1], '\tinput_size: (3, 192, 256)');
    assert.equal(lines[3], '\tmean: (1.0, 1.0, 1.0)');
    assert.equal(lines[4], '\tstd: (0.5, 1e-05, 2.0)');
    assert.equal(lines[5], '\tcrop_pct: 0.875');
  });
});

describe('worker threads started from TypeScript sources (utils/worker_thread.ts)', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'mambaout-worker-thread-'));
  writeFileSync(path.join(dir, 'package.json'), '{ "type": "module" }\n'); // as the package's own sources
  after(() => rmSync(dir, { recursive: true, force: true }));
  const run = async (name: string, body: string, commonjs: boolean): Promise<{ message?: string; error?: string }> => {
    const { startModuleWorker } = await import('../src/utils/worker_thread.js');
    writeFileSync(path.join(dir, `${name}.ts`), body);
    const w = startModuleWorker(new URL(`file://${path.join(dir, `${name}.js`)}`), { answer: 42 }, { commonjs });
    try {
      return await new Promise((resolve) => {
        w.on('message', (m: string) => resolve({ message: m }));
        w.on('error', (e: Error) => resolve({ error: e.message }));
      });
    } finally {
      await w.terminate();
    }
  };
  const ok = `import { parentPort, workerData } from 'node:worker_threads';\nconst n: number = workerData.answer;\nparentPort!.postMessage(\`\${n} \${import.meta.url.endsWith('.ts')}\`);\n`;
  for (const commonjs of [true, false]) {
    test(`a module runs with its workerData and import.meta.url, and an error while loading reaches 'error' (commonjs: ${commonjs})`, async () => {
      assert.deepEqual(await run(`ok_${commonjs}`, ok, commonjs), { message: '42 true' });
      const boom = await run(`boom_${commonjs}`, `const why: string = 'broken at load';\nthrow new Error(why);\n`, commonjs);
      assert.equal(boom.error, 'broken at load');
    });
  }
  test('a module that awaits at top level runs on the ESM loader', async () => {
    const tla = `import { parentPort } from 'node:worker_threads';\nconst v = await Promise.resolve('awaited');\nparentPort!.postMessage(v);\n`;
    assert.deepEqual(await run('tla', tla, false), { message: 'awaited' });
  });
});
