import { parseRunConfig, type RunConfig } from '../core/config';
import { runConfig } from './config-store.svelte';
import { datasets } from './datasets.svelte';
import { engine } from './engine.svelte';

/** public/demo/manifest.json: the built-in model and texts (see public/demo/README.md). */
interface DemoManifest {
  readonly model: { readonly name: string; readonly files: readonly string[] };
  readonly train: string;
  readonly val: string;
  readonly suggestedConfig: Partial<RunConfig>;
}

const DEMO_URL = `${import.meta.env.BASE_URL}demo/`;

async function fetchFile(path: string): Promise<File> {
  // Served by the app itself and precached by the service worker: works offline too.
  const response = await fetch(`${DEMO_URL}${path}`);
  if (!response.ok) throw new Error(`The demo file ${path} could not be loaded (${response.status}).`);
  return new File([await response.blob()], path.slice(path.lastIndexOf('/') + 1));
}

/**
 * The zero-file start: the built-in model (imported once), its two texts as the training and
 * validation datasets, and the config the demo was tuned with. The person then presses Start.
 */
export async function setUpDemo(onStep: (what: string) => void): Promise<void> {
  const manifest = (await (await fetch(`${DEMO_URL}manifest.json`)).json()) as DemoManifest;

  let model = engine.models.find((m) => m.name === manifest.model.name);
  if (!model) {
    onStep('Importing the demo model');
    const files = await Promise.all(manifest.model.files.map(fetchFile));
    const { modelId } = await engine.client.call('importModel', { name: manifest.model.name, files });
    await engine.refreshModels();
    model = engine.models.find((m) => m.id === modelId);
  }
  if (!model) throw new Error('The demo model did not appear in the library.');
  engine.selectModel(model.id);

  onStep('Checking the demo texts');
  await datasets.refresh();
  const has = (name: string) => datasets.items.find((d) => d.name === name);
  if (!has(manifest.train) || !has(manifest.val)) {
    await datasets.importFiles(await Promise.all([manifest.train, manifest.val].filter((n) => !has(n)).map(fetchFile)));
  }
  const train = has(manifest.train);
  const val = has(manifest.val);
  if (!train || !val) throw new Error(datasets.importError?.message ?? 'The demo texts could not be stored.');
  datasets.selectTrain(train.id);
  datasets.selectValidation(val.id);

  const result = parseRunConfig({ ...runConfig.value, ...manifest.suggestedConfig, output_dir: './output/demo', backend: 'auto' });
  if (result.ok) runConfig.replace(result.config);
}
