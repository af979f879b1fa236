// How the headless runner fails: always one line, `error: <what and where>`, and never by waiting forever.
// Chromium can end a run in ways no promise reports: the page or the engine worker dies (out of memory),
// the browser exits. Each of those rejects `failure`, and every long step is raced against it.
import { InputError } from './headless-inputs.mjs';

/** A failure already worded for the person: printed as it is after `error: `. */
export class RunnerError extends Error {}

/** The first line of an error's message, without playwright's "page.evaluate: " prefix and call log. */
export function firstLine(e) {
  const text = String(e?.message ?? e ?? 'unknown error');
  const line = text.split('\n').map((l) => l.trim()).find((l) => l.length > 0) ?? 'unknown error';
  return line.replace(/^[a-zA-Z]+\.[a-zA-Z]+: /, '').replace(/^Error: /, '');
}

/**
 * Watches one page of the app for ways it can die. `step(what, promise)` runs a stage of the run under
 * the watch: it resolves as the promise does, or rejects with a RunnerError naming the stage when the
 * page crashes, the engine worker stops, Chromium exits, or a playwright wait times out.
 */
export function guardPage({ page, context }) {
  let stage = 'starting Chromium';
  let closing = false;
  let fail;
  const failure = new Promise((_, reject) => (fail = reject));
  failure.catch(() => undefined); // observed through step(); never an unhandled rejection
  const die = (what) => {
    if (!closing) fail(new RunnerError(`${what} while ${stage}`));
  };
  page.on('crash', () => die('the page crashed (Chromium ran out of memory?)'));
  page.on('close', () => die('the page closed'));
  context.on('close', () => die('Chromium exited'));
  // Loading the page again (navigate) ends the old engine worker on purpose; only the current page's
  // worker stopping is a failure, and a worker that closes after its successor started is the old one.
  let current = null;
  let replacing = false;
  page.on('worker', (worker) => {
    current = worker;
    replacing = false;
    worker.on('close', () => {
      if (worker === current && !replacing) die('the engine worker stopped');
    });
  });

  return {
    async step(what, promise) {
      stage = what;
      try {
        return await Promise.race([promise, failure]);
      } catch (e) {
        if (e instanceof RunnerError || e instanceof InputError) throw e;
        if (e?.name === 'TimeoutError') throw new RunnerError(`timed out while ${what} (${firstLine(e)})`);
        throw new RunnerError(`${what}: ${firstLine(e)}`);
      }
    },
    /** Loads `url` in the page as a stage of the run; the engine worker it replaces may stop meanwhile. */
    navigate(what, url) {
      replacing = true;
      return this.step(what, page.goto(url));
    },
    /** From here on, the page and browser closing is the runner's own doing. */
    closing() {
      closing = true;
    },
  };
}

/** Resolves with the promise, or after `ms` without it: closing a stuck browser must not hang the runner. */
export function withTimeout(promise, ms) {
  let timer;
  return Promise.race([promise.catch(() => undefined), new Promise((r) => (timer = setTimeout(r, ms)))]).finally(() => clearTimeout(timer));
}
