// What the headless runner calls inside the app's page. installPageCalls runs in every page before the app does
// (page.addInitScript), so each step's page.evaluate only gathers its request's payload (the files handed to a
// hidden input) and calls one of these: worker requests with the runner's event and progress printers, answered as
// { ok: true, … } or { ok: false, message, userError } (a refusal the person fixes is userError: exit 2).
import { listExportedInPage } from './headless-export.mjs';

/** In the page: window.loraLabHeadlessCall(request, payload) and window.loraLabHeadlessTrain(request, payload). */
export function installPageCalls() {
  const call = async (request, payload) => {
    try {
      const result = await window.loraLab.call(request, payload, { onEvent: (e) => window.loraLabHeadlessEvent(e), onProgress: (p) => window.loraLabHeadlessProgress(p) });
      return { ok: true, result };
    } catch (e) {
      return { ok: false, message: e.message, userError: e.detail?.userError ?? false };
    }
  };
  window.loraLabHeadlessCall = call;
  // A training request ('train', 'resumeRun', 'trainImages'), then the run's files left for listExportedInPage
  // (a merged model's Blobs are copied out a slice at a time).
  window.loraLabHeadlessTrain = async (request, payload) => {
    const trained = await call(request, payload);
    if (!trained.ok) return trained;
    const exported = await call('exportRun', { runId: trained.result.runId });
    if (!exported.ok) return exported;
    window.loraLabHeadlessExport = exported.result.files;
    return { ok: true, run: trained.result };
  };
}

/** A page's training (window.loraLabHeadlessTrain) and, when it ended well, its exported files as the runner lists them. */
export async function withExportedFiles(page, training) {
  const r = await training;
  return r.ok ? { ...r, files: await page.evaluate(listExportedInPage) } : r;
}
