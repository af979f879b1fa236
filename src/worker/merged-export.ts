import { UserError } from '../core/errors';
import type { FolderSink, MergedModelPlan } from '../core/export/merged-model';
import { PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE } from '../core/export/peft';
import { peftDeltas } from '../core/export/peft-deltas';
import type { LoraDeltas } from '../core/lora/merge';
import { parseModelConfigText } from '../core/models/config';
import { bytesSource } from '../core/safetensors';
import type { LoraLabDb, StoredModel } from '../storage/db';
import { mergeIntoStoredModel } from '../storage/merge-stored-model';
import { getModel } from '../storage/models';
import { artifactBytes, BlobFileWriter, getRun, putArtifact } from '../storage/runs';
import type { Progress } from './protocol';

/** The folder of a run's output that holds the merged model. */
export const MERGED_DIR = 'merged';

/**
 * A FolderSink into a run's artifacts under merged/. Each file is one artifact record, stored as a Blob made of
 * the slices the merge writes (BlobFileWriter) when the file closes: no buffer larger than a slice is held for it,
 * so memory holds one tensor and one slice however large the shard, and the record is put in one go, never half.
 */
export function mergedArtifactSink(db: LoraLabDb, runId: string): FolderSink {
  return {
    async open(path) {
      const file = new BlobFileWriter();
      return {
        async write(bytes) {
          file.write(bytes);
        },
        async close() {
          await putArtifact(db, runId, `${MERGED_DIR}/${path}`, file.blob());
        },
      };
    },
  };
}

async function removeMergedArtifacts(db: LoraLabDb, runId: string): Promise<void> {
  const keys = await db.getAllKeys('artifacts', IDBKeyRange.bound([runId, `${MERGED_DIR}/`], [runId, `${MERGED_DIR}/\uffff`]));
  for (const key of keys) await db.delete('artifacts', key);
}

/**
 * Writes merged/ into the run's output: the stored base model with `deltas` folded in. A failure part-way
 * removes what was written, so the run has either the whole folder or none.
 */
export async function writeMergedArtifacts(
  db: LoraLabDb,
  runId: string,
  stored: StoredModel,
  deltas: LoraDeltas,
  progress?: (p: Progress) => void,
  signal?: AbortSignal,
): Promise<MergedModelPlan> {
  await removeMergedArtifacts(db, runId);
  try {
    return await mergeIntoStoredModel(db, stored, deltas, mergedArtifactSink(db, runId), {
      signal,
      onProgress: (done, total) => progress?.({ phase: 'Merging the adapter into the model', done, total, unit: 'bytes' }),
    });
  } catch (e) {
    await removeMergedArtifacts(db, runId).catch(() => undefined);
    throw e;
  }
}

/**
 * export_merged at a run's end: the adapter the run's output holds (its top-level adapter files, the best one
 * when best-adapter keeping chose it) merged into the base model, as merged/.
 */
export async function writeMergedFromAdapterFiles(
  db: LoraLabDb,
  runId: string,
  stored: StoredModel,
  files: Readonly<Record<string, Uint8Array | string>>,
  progress?: (p: Progress) => void,
): Promise<MergedModelPlan> {
  const config = files[PEFT_CONFIG_FILE];
  const weights = files[PEFT_WEIGHTS_FILE];
  // The best adapter kept during an evaluated run comes back from storage as bytes, config included.
  if (config === undefined || !(weights instanceof Uint8Array)) throw new Error('writeMergedFromAdapterFiles: the run output has no adapter files');
  const configText = typeof config === 'string' ? config : new TextDecoder().decode(config);
  const deltas = await peftDeltas(parseModelConfigText(stored.files.config), configText, bytesSource(PEFT_WEIGHTS_FILE, weights));
  return writeMergedArtifacts(db, runId, stored, deltas, progress);
}

/** The "Merge into a model" button: the finished run's stored adapter, merged into its base model, as merged/. */
export async function mergeFinishedRun(db: LoraLabDb, runId: string, progress?: (p: Progress) => void, signal?: AbortSignal): Promise<{ files: string[] }> {
  const run = await getRun(db, runId);
  if (!run) throw new UserError('run', 'is not stored any more.');
  const stored = await getModel(db, run.modelId);
  if (!stored) throw new UserError(`run ${run.name}`, `was trained on ${run.modelName}, which is not in the model library any more.`, 'Import that model again, then merge.');
  const [config, weights] = await Promise.all([db.get('artifacts', [runId, PEFT_CONFIG_FILE]), db.get('artifacts', [runId, PEFT_WEIGHTS_FILE])]);
  if (!config || !weights) {
    throw new UserError(`run ${run.name}`, 'has no finished adapter to merge (it did not reach its end).', 'Merge a run that completed or was stopped.');
  }
  const deltas = await peftDeltas(
    parseModelConfigText(stored.files.config),
    new TextDecoder().decode(await artifactBytes(config)),
    bytesSource(PEFT_WEIGHTS_FILE, await artifactBytes(weights)),
  );
  const plan = await writeMergedArtifacts(db, runId, stored, deltas, progress, signal);
  return { files: mergedFileNames(plan, stored) };
}

function mergedFileNames(plan: MergedModelPlan, stored: StoredModel): string[] {
  const names = ['config.json', ...plan.shards.map((s) => s.file)];
  if (plan.index !== null) names.push('model.safetensors.index.json');
  names.push('tokenizer.json');
  if (stored.files.tokenizerConfig !== null) names.push('tokenizer_config.json');
  if (stored.files.generationConfig) names.push('generation_config.json');
  return names.map((n) => `${MERGED_DIR}/${n}`);
}
