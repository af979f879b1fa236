/**
 * Whether the run's set-up (dataset and preview, config, estimate) is unfolded above the live run. It takes
 * about 2,500 px of a 1440×900 screen, so it folds away when training starts and the status, charts and
 * diagnosis come into view; the person unfolds it on demand, and anything that puts a config into the form
 * (Duplicate run with changes) unfolds it first, so what changed is on screen and can take the focus.
 */
class RunSetup {
  open = $state(true);
}

export const runSetup = new RunSetup();
