// The headless runner's image LoRA path: a diffusers folder as base_model and image folders as train_data and
// val_data (headless-inputs.mjs reads them as trees). Each folder's files go to the page through one hidden file
// input, and their paths inside the folder ride along, since a File from a plain input knows only its own name.
import { withExportedFiles } from './headless-page.mjs';
import { InputError } from './headless-inputs.mjs';

/**
 * Trains the image run the config describes in the page's worker (the `trainImages` request) and lists its output
 * folder for writeExportedFiles. Resolves { ok, run, files } or { ok: false, message, userError }, as the text path does.
 */
export async function trainImagesInPage({ page, guard, fileInput, paths }) {
  if (paths.hasSweep) throw new InputError('sweep: image runs train one run at a time for now; remove sweep');
  const folders = { model: paths.model, train: paths.train, val: paths.val };
  for (const [role, tree] of Object.entries(folders)) {
    if (tree) await guard.step(`handing the ${role} folder to Chromium`, fileInput(page, `lora-lab-headless-${role}`, tree.files.map((f) => f.abs)));
  }
  const specs = Object.fromEntries(Object.entries(folders).map(([role, tree]) => [role, tree && { name: tree.name, paths: tree.files.map((f) => f.rel) }]));
  console.log(`image run: ${paths.train.files.length} files in ${paths.train.name}${paths.val ? `, ${paths.val.files.length} in ${paths.val.name}` : ''}`);
  return guard.step(
    'training',
    withExportedFiles(
      page,
      page.evaluate(
        ({ configYaml, specs }) => {
          const folder = (role) => {
            const spec = specs[role];
            if (!spec) return null;
            const files = [...document.getElementById(`lora-lab-headless-${role}`).files];
            return {
              name: spec.name,
              files: files.map((file, i) => {
                const path = spec.paths[i];
                if (!path.endsWith(file.name)) throw new Error(`the ${role} files arrived out of order (${file.name} for ${path})`);
                return { path, file };
              }),
            };
          };
          return window.loraLabHeadlessTrain('trainImages', { model: folder('model'), train: folder('train'), val: folder('val'), configYaml });
        },
        { configYaml: paths.text, specs },
      ),
    ),
  );
}
