import type { Locator } from 'playwright-core';
import { expect } from 'vitest';

/**
 * Waits for `ready` inside the image panel, failing at once with the panel's error text when an error note shows
 * first (an import or run that failed would otherwise only time out).
 */
export async function waitInPanel(panel: Locator, ready: Locator, what: string, timeout: number): Promise<void> {
  const alert = panel.locator('.error[role=alert]').first();
  await Promise.race([
    ready.waitFor({ timeout }),
    alert.waitFor({ timeout }).then(async () => expect.fail(`${what} failed: ${await alert.textContent()}`)),
  ]);
}

/** Presses Train and waits until the run has ended; returns the status line. */
export async function trainAndWait(panel: Locator, timeout: number): Promise<string> {
  await panel.getByTestId('image-start').click();
  const ended = panel.getByTestId('image-status').filter({ hasText: 'ended:' });
  await waitInPanel(panel, ended, 'the run', timeout);
  return (await ended.textContent()) ?? '';
}

/** The library's image folders as listed: name and its count line, in the list's order. */
export async function listedFolders(panel: Locator): Promise<{ name: string; meta: string }[]> {
  const items = panel.getByRole('list', { name: 'Image folders' }).getByRole('listitem');
  return items.evaluateAll((lis) =>
    lis.map((li) => ({ name: li.querySelector('.name')?.textContent?.trim() ?? '', meta: li.querySelector('[data-testid=image-folder-meta]')?.textContent?.trim() ?? '' })),
  );
}

/** The number of distinct colours in each sample image on screen, and its size (a flat picture has one colour). */
export async function sampleColours(panel: Locator): Promise<{ width: number; height: number; colours: number }[]> {
  return panel.getByTestId('sample-image').evaluateAll((images) =>
    (images as HTMLImageElement[]).map((img) => {
      const canvas = Object.assign(document.createElement('canvas'), { width: img.naturalWidth, height: img.naturalHeight });
      const context = canvas.getContext('2d')!;
      context.drawImage(img, 0, 0);
      const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
      const values = new Set<number>();
      for (let i = 0; i < data.length; i += 4) values.add((data[i]! << 16) | (data[i + 1]! << 8) | data[i + 2]!);
      return { width: img.naturalWidth, height: img.naturalHeight, colours: values.size };
    }),
  );
}
