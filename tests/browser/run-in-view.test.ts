import { afterAll, beforeAll, expect, test } from 'vitest';
import type { BrowserSession } from './harness';
import { openApp, tryTheDemo } from './support/train';

// Issue 11, item 5: on a 1440×900 screen the live charts used to start about 2,500 px down the page, below the
// dataset preview, the config and the estimate. When training starts those fold away and the live run comes into
// view; they unfold on demand, from the keyboard too. Item 6: a finding's icon is inline SVG, not an emoji.

const VIEWPORT = { width: 1440, height: 900 };
let browser: BrowserSession;

beforeAll(async () => {
  browser = await openApp({ viewport: VIEWPORT });
});
afterAll(async () => browser?.close());

test('at 1440×900, after Start on the demo the loss chart is on screen; the set-up unfolds on demand', async () => {
  const { page } = browser;
  await tryTheDemo(page);
  const maxSteps = page.getByLabel('Max steps', { exact: true });
  await maxSteps.waitFor({ state: 'visible' });

  // Before: the set-up is open and Start sits far below the first screen (the live run would appear under it).
  const start = page.getByRole('button', { name: 'Start training' });
  const startPageTop = await start.evaluate((el) => el.getBoundingClientRect().top + window.scrollY);
  expect(startPageTop).toBeGreaterThan(VIEWPORT.height);

  await start.click(); // scrolls down to the button, as a person would
  const chart = page.getByRole('img', { name: 'Loss (nats) chart' });
  await chart.waitFor({ state: 'visible', timeout: 120_000 });
  const box = (await chart.boundingBox())!;
  expect(box.y).toBeGreaterThanOrEqual(0);
  expect(box.y).toBeLessThan(VIEWPORT.height);
  // And on the page's first screen: it used to start about 2,500 px down, under the set-up.
  const chartPageTop = box.y + (await page.evaluate(() => window.scrollY));
  expect(chartPageTop).toBeLessThan(VIEWPORT.height);
  // The status sits above it, in view too.
  const status = (await page.getByTestId('train-status').boundingBox())!;
  expect(status.y).toBeGreaterThanOrEqual(0);
  expect(status.y).toBeLessThan(box.y);

  // Folded: the config is not on the page while the run trains...
  await expect(maxSteps.isVisible()).resolves.toBe(false);
  const summary = page.getByTestId('run-setup').locator(':scope > summary');
  await expect(summary.textContent()).resolves.toMatch(/Data, config and estimate[\s\S]*folded while training/);
  // ...and unfolds from the keyboard: focus the disclosure, press Enter.
  await summary.focus();
  await page.keyboard.press('Enter');
  await maxSteps.waitFor({ state: 'visible' });
  await expect(maxSteps.isDisabled()).resolves.toBe(true); // the running run's config cannot change under it
  await expect(page.getByTestId('run-setup').evaluate((el) => (el as HTMLDetailsElement).open)).resolves.toBe(true);
  // And folds again the same way.
  await page.keyboard.press('Enter');
  await maxSteps.waitFor({ state: 'hidden' });

  await page.getByRole('button', { name: 'Stop' }).click();
  await start.waitFor({ timeout: 120_000 });

  // The run's last word is on screen with an SVG icon: no emoji, which draws as an empty box without an emoji font.
  const finding = page.getByTestId('diagnosis').first();
  await finding.waitFor({ timeout: 30_000 });
  await expect(finding.locator('svg').count()).resolves.toBe(1);
  const icon = (await finding.locator('svg').boundingBox())!;
  expect(icon.width).toBeGreaterThan(10);
  const text = (await finding.textContent()) ?? '';
  expect(text).not.toMatch(/\p{Extended_Pictographic}/u);
  // Said once: the message and the suggestion no longer both say there is nothing to do.
  expect(text).not.toMatch(/nothing to fix/i);
  expect(browser.errors).toEqual([]);
});
