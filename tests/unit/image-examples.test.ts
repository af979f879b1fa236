import { describe, expect, it } from 'vitest';
import { trainingImages, validationImages, type CachedImageSet } from '../../src/core/train/image-examples';

// The fingerprint a checkpoint keeps of the data it was trained on (a resume on other data is refused): it must
// follow everything the loss reads, the latents and the captions whichever way they are cached, and nothing else.

function imageSet(change: { latent?: number; state?: number; ids?: number } = {}): CachedImageSet {
  const latents = (i: number) => Float32Array.from({ length: 8 }, (_, k) => i + k / 8 + (change.latent === i * 8 + k ? 1e-6 : 0));
  const states = [0, 1].map((c) => Float32Array.from({ length: 6 }, (_, k) => c - k / 6 + (change.state === c * 6 + k ? 1e-6 : 0)));
  return {
    latentShape: [2, 2, 2],
    examples: [0, 1, 2].map((i) => ({ latents: latents(i), flippedLatents: null, caption: i % 2 })),
    captions: change.ids === undefined ? { kind: 'states', tokens: 3, width: 2, states } : { kind: 'ids', ids: [[49406, 320, 49407], [49406, change.ids, 49407]] },
  };
}

const fingerprint = (set: CachedImageSet) => trainingImages(set).fingerprint();

describe('an image set’s fingerprint', () => {
  it('is the same for the same latents and captions, and for training and validation alike', () => {
    expect(fingerprint(imageSet())).toBe(fingerprint(imageSet()));
    expect(validationImages(imageSet(), 1, 1000).fingerprint()).toBe(fingerprint(imageSet()));
  });

  it('changes with one latent value, one value of a cached caption state, or one caption token', () => {
    const base = fingerprint(imageSet());
    expect(fingerprint(imageSet({ latent: 13 }))).not.toBe(base);
    expect(fingerprint(imageSet({ state: 7 }))).not.toBe(base);
    expect(fingerprint(imageSet({ ids: 320 }))).not.toBe(fingerprint(imageSet({ ids: 321 })));
  });
});
