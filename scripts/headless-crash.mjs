// The headless runner's `--crash-at-step N`: shows that a resumed run ends where an uninterrupted one does.
// The worker stops dead right after step N (the `haltAfterStep` of the train request: no pause, no stop, no
// status written), the page is torn down, the app is opened again on the same browser profile, its start-up
// sweep marks the run interrupted, and the run is resumed from its last checkpoint and trained to the end.
import { RunnerError } from './headless-guard.mjs';
import { withExportedFiles } from './headless-page.mjs';

/** How long a new page waits for the dead page's run lock to be dropped (Chromium drops it soon, not at once). */
const SWEEP_TIMEOUT_MS = 30_000;

/** Watches the run's events for the halt; `halted` resolves with the run's id once the worker has stopped dead. */
export function crashWatch(step) {
  let runId = null;
  let resolve;
  const halted = new Promise((r) => (resolve = r));
  return {
    step,
    halted,
    see(e) {
      if (e.kind === 'started') runId = e.runId;
      if (e.kind === 'halted') resolve({ runId, step: e.step });
    },
  };
}

/** The run's record as the app stored it (read with the plain IndexedDB API, as any tab could). */
function storedRun(page, runId) {
  return page.evaluate(
    (id) =>
      new Promise((resolve, reject) => {
        const open = indexedDB.open('lora-lab');
        open.onerror = () => reject(open.error);
        open.onsuccess = () => {
          const request = open.result.transaction('runs', 'readonly').objectStore('runs').get(id);
          request.onsuccess = () => {
            open.result.close();
            resolve(request.result ?? null);
          };
          request.onerror = () => reject(request.error);
        };
      }),
    runId,
  );
}

/**
 * After the halt: tears `page` down, opens the app in a new page of the same profile until its sweep shows the run
 * interrupted, and resumes it there with `resume` ({ request, payload }: resumeRun for a text run, resumeImageRun for
 * an image run). Returns the new page (to be guarded by the caller's `guard(page)`) and what the train step returns:
 * `{ ok, run, files }` or `{ ok: false, message, userError }`.
 */
export async function resumeAfterCrash({ page, context, url, halt, resume, guard, setUp }) {
  await page.close({ runBeforeUnload: false });
  console.log(`crash: tore the page down right after step ${halt.step}; opening the app again on the same profile`);
  const next = await context.newPage();
  const watch = guard(next);
  await setUp(next);
  const deadline = Date.now() + SWEEP_TIMEOUT_MS;
  for (;;) {
    await watch.navigate('opening the app again', url);
    await watch.step('starting the engine again', next.waitForFunction(() => window.loraLab !== undefined).then(() => next.evaluate(() => window.loraLab.ready)));
    const run = await watch.step('reading the interrupted run', storedRun(next, halt.runId));
    if (run?.status === 'interrupted') break;
    if (Date.now() > deadline) throw new RunnerError(`the crashed run is still ${run?.status ?? 'missing'} after ${SWEEP_TIMEOUT_MS / 1000} s in the reopened app`);
    await new Promise((r) => setTimeout(r, 500));
  }
  console.log(`resuming run ${halt.runId}`);
  const result = await watch.step(
    'resuming the run',
    withExportedFiles(next, next.evaluate(({ request, payload }) => window.loraLabHeadlessTrain(request, payload), resume)),
  );
  return { page: next, guard: watch, result };
}
