import * as tf from '@tensorflow/tfjs';
import { parseModelConfigText } from '../../../src/core/models/config';
import { loadWeightsFromSafetensors } from '../../../src/core/models/load';
import { buildModel } from '../../../src/core/models/model';
import { bytesSource, readHeader, readTensorBytes, toFloat32 } from '../../../src/core/safetensors';
import { fixtureBytes } from './train';

/**
 * The validation loss of a base model with an exported PEFT adapter merged in, computed without
 * any of the app's LoRA code: ΔW = scaling·B·A is added to the base weights with plain JS loops
 * (transposed for GPT-2's Conv1D layout), then the reference-checked forward pass runs on the merged
 * weights. Windows follow the README's definition: the token stream cut into seq_len inputs with
 * targets shifted by one, from token 0, stepping seq_len, the last partial window dropped, mean
 * cross-entropy over every target.
 */
export async function mergedEvalLoss(modelFolder: string, adapter: Map<string, Uint8Array>, stream: number[], seqLen: number): Promise<number> {
  await tf.setBackend('cpu');
  const config = parseModelConfigText(new TextDecoder().decode(fixtureBytes(`${modelFolder}/config.json`)));
  const weights = await loadWeightsFromSafetensors(config, [bytesSource('model.safetensors', fixtureBytes(`${modelFolder}/model.safetensors`))]);
  const adapterConfig = JSON.parse(new TextDecoder().decode(adapter.get('adapter_config.json')!)) as { r: number; lora_alpha: number; fan_in_fan_out: boolean };
  const scaling = adapterConfig.lora_alpha / adapterConfig.r;
  const source = bytesSource('adapter_model.safetensors', adapter.get('adapter_model.safetensors')!);
  const header = await readHeader(source);
  const tensor = async (name: string) => {
    const entry = header.tensors.find((t) => t.name === name)!;
    return { shape: entry.shape, data: toFloat32(entry.dtype, await readTensorBytes(source, entry)) };
  };
  for (const entry of header.tensors.filter((t) => t.name.endsWith('.lora_A.weight'))) {
    const modulePath = entry.name.slice('base_model.model.'.length, -'.lora_A.weight'.length);
    const A = await tensor(entry.name); // [r, in]
    const B = await tensor(`base_model.model.${modulePath}.lora_B.weight`); // [out, r]
    const [r, inF] = A.shape as [number, number];
    const outF = B.shape[0]!;
    const base = weights.get(`${modulePath}.weight`)!;
    const w = (await base.data()) as Float32Array;
    const merged = new Float32Array(w);
    for (let o = 0; o < outF; o++)
      for (let i = 0; i < inF; i++) {
        let delta = 0;
        for (let k = 0; k < r; k++) delta += B.data[o * r + k]! * A.data[k * inF + i]!;
        // GPT-2 Conv1D stores [in, out] (fan_in_fan_out); nn.Linear stores [out, in].
        merged[adapterConfig.fan_in_fan_out ? i * outF + o : o * inF + i]! += scaling * delta;
      }
    weights.set(`${modulePath}.weight`, tf.tensor(merged, base.shape));
    base.dispose();
  }
  const model = buildModel(config, weights);
  let total = 0;
  let count = 0;
  for (let start = 0; start + seqLen + 1 <= stream.length; start += seqLen) {
    const inputs = stream.slice(start, start + seqLen);
    const targets = stream.slice(start + 1, start + seqLen + 1);
    const logits = model.forward(tf.tensor2d(inputs, [1, seqLen], 'int32'));
    const logProbs = tf.logSoftmax(logits.reshape([seqLen, -1]));
    const values = (await logProbs.data()) as Float32Array;
    const vocab = logProbs.shape[1]!;
    targets.forEach((t, i) => (total -= values[i * vocab + t]!));
    count += targets.length;
    tf.dispose([logits, logProbs]);
  }
  model.dispose();
  return total / count;
}
