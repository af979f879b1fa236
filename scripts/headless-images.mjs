// The headless runner's image LoRA path: a diffusers folder as base_model and image folders as train_data and
// val_data (headless-inputs.mjs reads them as trees). Each folder's files go to the page through one hidden file
// input, and their paths inside the folder ride along, since a File from a plain input knows only its own name.
// The folders are imported into the app's library first, as the image panel does: the run then trains on stored
// data, so --crash-at-step can tear the page down and resume it (resumeImageRun).
import { withExportedFiles } from './headless-page.mjs';
import { InputError } from './headless-inputs.mjs';

/**
 * Imports the config's folders into the app's library (the model, the training and validation images: as the
 * panel does, so the run is resumable and its latents cached), then trains the run in the page's worker (the
 * `trainImages` request) and lists its output folder for writeExportedFiles. `haltAfterStep`: --crash-at-step.
 * Resolves { ok, run, files } or { ok: false, message, userError }, as the text path does.
 */
export async function trainImagesInPage({ page, guard, fileInput, paths, haltAfterStep }) {
  if (paths.hasSweep) throw new InputError('sweep: image runs train one run at a time for now; remove sweep');
  const folders = { model: paths.model, train: paths.train, val: paths.val };
  const ids = {};
  for (const [role, tree] of Object.entries(folders)) {
    if (!tree) continue;
    await guard.step(`handing the ${role} folder to Chromium`, fileInput(page, `lora-lab-headless-${role}`, tree.files.map((f) => f.abs)));
    console.log(`importing ${tree.name} (${tree.files.length} files)`);
    const imported = await guard.step(
      `importing ${tree.name}`,
      page.evaluate(
        ({ role, name, paths }) => {
          const files = [...document.getElementById(`lora-lab-headless-${role}`).files].map((file, i) => {
            if (!paths[i].endsWith(file.name)) throw new Error(`the ${role} files arrived out of order (${file.name} for ${paths[i]})`);
            return { path: paths[i], file };
          });
          return window.loraLabHeadlessCall(role === 'model' ? 'importDiffusionModel' : 'importImageDataset', { name, files });
        },
        { role, name: tree.name, paths: tree.files.map((f) => f.rel) },
      ),
    );
    if (!imported.ok) throw imported.userError ? new InputError(`${role === 'model' ? 'base_model' : `${role}_data`}: ${imported.message}`) : new RunnerError(`importing ${tree.name}: ${imported.message}`);
    ids[role] = role === 'model' ? imported.result.model.id : imported.result.dataset.id;
  }
  const payload = {
    model: { modelId: ids.model },
    train: { datasetId: ids.train },
    val: ids.val ? { datasetId: ids.val } : null,
    configYaml: paths.text,
    haltAfterStep,
  };
  return guard.step('training', withExportedFiles(page, page.evaluate((payload) => window.loraLabHeadlessTrain('trainImages', payload), payload)));
}
