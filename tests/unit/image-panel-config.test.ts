import { describe, expect, it } from 'vitest';
import { parseRunConfigYaml, type RunConfig } from '../../src/core/config';
import { isUserError } from '../../src/core/errors';
import { imageConfigWithInitAdapter, type ImageInitAdapter } from '../../src/core/image-run/run';
import { writtenConfigKeys } from '../../src/core/lora/adapter-check';
import { IMAGE_DEFAULTS, imageConfigStartingFrom, imageConfigYaml } from '../../src/ui/image-config';
import { addLivePoint, emptyCurves } from '../../src/ui/run-curves';
import type { RunEvent } from '../../src/worker/protocol';

// The image panel's YAML and the worker's init_adapter check agree: what "Start from" writes is what the worker
// accepts (core/image-run/run.ts imageConfigWithInitAdapter, the check a run goes through), and the YAML before it
// (rank 8 written) is what the worker refuses for a rank-4 LoRA.

const parse = (yaml: string): RunConfig => {
  const result = parseRunConfigYaml(yaml, 'config.yaml');
  if (!result.ok) throw new Error(result.issues.map((i) => `${i.key}: ${i.message}`).join('; '));
  return result.config;
};

/** A kohya-like LoRA of rank 4, alpha 2 on one UNet projection (tensors are not looked at by the check). */
const kohya: ImageInitAdapter = {
  name: 'stripes kohya',
  rank: 4,
  alpha: 2,
  useRslora: false,
  unet: new Map([['down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q', { A: new Float32Array(0), B: new Float32Array(0) } as never]]),
  textEncoder: null,
};
const unet = { linears: [] };

describe('the image panel YAML', () => {
  it('leaves init_adapter out while it is null, and writes it once a LoRA is chosen', () => {
    const fresh = imageConfigYaml(IMAGE_DEFAULTS);
    expect(fresh).not.toMatch(/^init_adapter:/m);
    expect(parse(fresh).init_adapter).toBe(null);

    const yaml = imageConfigYaml(imageConfigStartingFrom(parse(fresh), kohya));
    const config = parse(yaml);
    expect(config.init_adapter).toBe('stripes kohya');
    expect([config.lora_rank, config.lora_alpha, config.use_rslora, config.target_modules]).toEqual([4, 2, false, null]);
    // Everything else as it was.
    expect({ ...config, init_adapter: null, lora_rank: 8, lora_alpha: 8 }).toEqual(parse(fresh));
  });

  it('is accepted by the worker check after "Start from", refused before it', () => {
    const before = imageConfigYaml({ ...IMAGE_DEFAULTS, init_adapter: 'stripes kohya' });
    let refusal: unknown = null;
    try {
      imageConfigWithInitAdapter(parse(before), writtenConfigKeys(before), kohya, unet);
    } catch (e) {
      refusal = e;
    }
    expect(isUserError(refusal) && (refusal as Error).message).toMatch(/rank = 4, but lora_rank is 8/);

    const after = imageConfigYaml(imageConfigStartingFrom(parse(before), kohya));
    const run = imageConfigWithInitAdapter(parse(after), writtenConfigKeys(after), kohya, unet);
    expect([run.lora_rank, run.lora_alpha, run.target_modules]).toEqual([4, 2, [...kohya.unet.keys()]]);
  });

  it('"Start fresh" clears init_adapter and keeps the LoRA shape the person has', () => {
    const from = imageConfigStartingFrom(IMAGE_DEFAULTS, kohya);
    const fresh = parse(imageConfigYaml(imageConfigStartingFrom(from, null)));
    expect([fresh.init_adapter, fresh.lora_rank, fresh.lora_alpha]).toEqual([null, 4, 2]);
  });
});

describe('addLivePoint: the live events the text and image panels chart', () => {
  it('appends steps, evaluations and custom metrics in arrival order, and nothing for other events', () => {
    const c = emptyCurves();
    const step = (n: number, loss: number): RunEvent => ({ kind: 'step', step: n, epoch: 0, loss, learningRate: n * 1e-4, gradNorm: n / 10, tokensPerSecond: 100 + n, secondsLeft: 0, skippedSteps: 0 });
    const events: RunEvent[] = [
      { kind: 'eval', step: 0, loss: 0.9 },
      step(1, 0.5),
      { kind: 'metric', step: 1, name: 'snr', value: 3 },
      { kind: 'diagnosis', findings: [] },
      step(2, 0.25),
      { kind: 'eval', step: 2, loss: 0.4 },
      { kind: 'sample', step: 2, index: 0, prompt: 'p', png: new Uint8Array(1) },
    ];
    expect(events.map((e) => addLivePoint(c, e))).toEqual([true, true, true, false, true, true, false]);
    expect(c.steps).toEqual([1, 2]);
    expect(c.loss).toEqual([0.5, 0.25]);
    expect(c.learningRate).toEqual([1e-4, 2e-4]);
    expect(c.gradNorm).toEqual([0.1, 0.2]);
    expect(c.tokensPerSecond).toEqual([101, 102]);
    expect([c.evalSteps, c.evalLoss]).toEqual([[0, 2], [0.9, 0.4]]);
    expect([...c.custom]).toEqual([['snr', { steps: [1], values: [3] }]]);
  });
});
