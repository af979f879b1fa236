// init_adapter for the headless runner: the PEFT adapter folder next to the YAML is checked against the imported
// model and stored with it, under the name the config gives it, exactly as the app's adapter import does; the run
// then starts from it as an app run starts from a stored adapter.
import { InputError } from './headless-inputs.mjs';
import { RunnerError } from './headless-guard.mjs';

/**
 * Stores `initAdapter` ({ name, files } from readConfig) with the model `modelId`. `fileInput(page, id, paths)`
 * hands files to the page (headless.mjs). A refusal (a shape, a rank, a module the model lacks) is the person's to
 * fix: exit 2 with the app's one-line message.
 */
export async function importInitAdapter({ page, guard, fileInput, modelId, initAdapter }) {
  if (!initAdapter) return;
  console.log(`importing the adapter ${initAdapter.name}`);
  await guard.step('handing the adapter files to Chromium', fileInput(page, 'lora-lab-headless-adapter', initAdapter.files));
  const stored = await guard.step(
    `importing the adapter ${initAdapter.name}`,
    page.evaluate(
      ({ modelId, name }) => window.loraLabHeadlessCall('importAdapter', { modelId, name, files: [...document.getElementById('lora-lab-headless-adapter').files] }),
      { modelId, name: initAdapter.name },
    ),
  );
  if (!stored.ok) throw stored.userError ? new InputError(`init_adapter: ${stored.message}`) : new RunnerError(`importing the adapter: ${stored.message}`);
}
