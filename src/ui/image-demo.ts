import type { RunConfig } from '../core/config';
import type { PickedFolder } from '../worker/image-run';
import { imageConfigWith } from './image-config';

/** public/demo-image/manifest.json: the built-in tiny diffusion model and its style set (see its README.md). */
interface ImageDemoManifest {
  readonly model: { readonly name: string; readonly files: readonly string[] };
  readonly train: { readonly folder: string; readonly files: readonly string[] };
  readonly val?: { readonly folder: string; readonly files: readonly string[] };
  readonly suggestedConfig: Partial<RunConfig>;
}

const DEMO_URL = `${import.meta.env.BASE_URL}demo-image/`;

/** The manifest's files under `folder/` as a picked folder: served by the app itself (and precached), so offline too. */
async function fetchFolder(folder: string, paths: readonly string[]): Promise<PickedFolder> {
  const files = await Promise.all(
    paths.map(async (path) => {
      const response = await fetch(`${DEMO_URL}${path}`);
      if (!response.ok) throw new Error(`The image demo's file ${path} could not be loaded (${response.status}).`);
      return { path: path.slice(folder.length + 1), file: new File([await response.blob()], path.slice(path.lastIndexOf('/') + 1)) };
    }),
  );
  return { name: folder.slice(folder.lastIndexOf('/') + 1), files };
}

/** Everything "Try the image demo" needs: the model, the style images (and validation images), the tuned config. */
export async function loadImageDemo(): Promise<{ model: PickedFolder; train: PickedFolder; val: PickedFolder | null; config: RunConfig }> {
  const response = await fetch(`${DEMO_URL}manifest.json`);
  if (!response.ok) throw new Error(`The image demo could not be loaded (${response.status}).`);
  const manifest = (await response.json()) as ImageDemoManifest;
  const [model, train, val] = await Promise.all([
    fetchFolder('model', manifest.model.files),
    fetchFolder(manifest.train.folder, manifest.train.files),
    manifest.val ? fetchFolder(manifest.val.folder, manifest.val.files) : Promise.resolve(null),
  ]);
  return { model: { ...model, name: manifest.model.name }, train, val, config: imageConfigWith({ ...manifest.suggestedConfig, output_dir: './output/image-demo', backend: 'auto' }) };
}
