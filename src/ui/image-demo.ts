import type { RunConfig } from '../core/config';
import { imageConfigWith } from './image-config';
import { imageLibrary, type FolderFile } from './image-library.svelte';

/** public/demo-image/manifest.json: the built-in tiny diffusion model and its style set (see its README.md). */
interface ImageDemoManifest {
  readonly model: { readonly name: string; readonly files: readonly string[] };
  readonly train: { readonly folder: string; readonly files: readonly string[] };
  readonly val?: { readonly folder: string; readonly files: readonly string[] };
  readonly suggestedConfig: Partial<RunConfig>;
}

const DEMO_URL = `${import.meta.env.BASE_URL}demo-image/`;

/**
 * The names the demo's image folders are stored under in the library: found again by them, so a second "Try the
 * image demo" imports nothing and its run reads the latents cached by the first. (The model keeps the manifest's
 * name, which is the demo's own.)
 */
export const DEMO_STYLE_NAME = 'demo-image-style';
export const DEMO_STYLE_VAL_NAME = 'demo-image-style-val';

/** The manifest's files under `folder/`: served by the app itself (and precached), so offline too. */
async function fetchFolder(folder: string, paths: readonly string[]): Promise<FolderFile[]> {
  return Promise.all(
    paths.map(async (path) => {
      const response = await fetch(`${DEMO_URL}${path}`);
      if (!response.ok) throw new Error(`The image demo's file ${path} could not be loaded (${response.status}).`);
      return { path: path.slice(folder.length + 1), file: new File([await response.blob()], path.slice(path.lastIndexOf('/') + 1)) };
    }),
  );
}

const imageCount = (paths: readonly string[]): number => paths.filter((p) => /\.(png|jpe?g|webp)$/i.test(p)).length;

/**
 * "Try the image demo": the built-in model and its style set (and validation images) in the image library, imported
 * the first time and found again after, and chosen; returns the config the demo was tuned with. `step` says what
 * is happening, for the button. An import that fails leaves its error in the library (imageLibrary.error).
 */
export async function setUpImageDemo(step: (what: string) => void): Promise<{ config: RunConfig } | null> {
  step('Loading the demo');
  const response = await fetch(`${DEMO_URL}manifest.json`);
  if (!response.ok) throw new Error(`The image demo could not be loaded (${response.status}).`);
  const manifest = (await response.json()) as ImageDemoManifest;
  await imageLibrary.refresh();

  const model = imageLibrary.models.find((m) => m.name === manifest.model.name && m.format.kind === 'diffusers');
  if (model) imageLibrary.selectModel(model.id);
  else {
    step('Importing the demo model');
    if (!(await imageLibrary.importModel(manifest.model.name, await fetchFolder('model', manifest.model.files)))) return null;
  }

  const folders: { name: string; part: { folder: string; files: readonly string[] }; role: 'train' | 'val' }[] = [{ name: DEMO_STYLE_NAME, part: manifest.train, role: 'train' }];
  if (manifest.val) folders.push({ name: DEMO_STYLE_VAL_NAME, part: manifest.val, role: 'val' });
  for (const { name, part, role } of folders) {
    const stored = imageLibrary.datasets.find((d) => d.name === name && d.imageCount === imageCount(part.files));
    if (stored) {
      if (role === 'train') imageLibrary.selectTrain(stored.id);
      else imageLibrary.selectValidation(stored.id);
      continue;
    }
    step(role === 'train' ? 'Importing the style images' : 'Importing the validation images');
    if (!(await imageLibrary.importImages(name, await fetchFolder(part.folder, part.files), role))) return null;
  }
  if (!manifest.val) imageLibrary.selectValidation(null);
  return { config: imageConfigWith({ ...manifest.suggestedConfig, output_dir: './output/image-demo', backend: 'auto' }) };
}
