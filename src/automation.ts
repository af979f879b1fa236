import type { WorkerClient } from './worker/client';

/**
 * A small scripting surface on `window.loraLab`, for the headless runner and browser tests:
 * the same typed calls the UI makes, so automation goes through the app's own code paths.
 */
export interface Automation {
  readonly call: WorkerClient['call'];
  /** Resolves once the engine has picked its backend and the library is loaded. */
  readonly ready: Promise<void>;
}

declare global {
  interface Window {
    loraLab?: Automation;
  }
}

export function exposeAutomation(automation: Automation): void {
  window.loraLab = automation;
}
