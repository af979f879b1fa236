import type { BrowserContext, Page } from 'playwright-core';

export declare const CHROME_PATH: string;
export declare const CHROMIUM_ARGS: readonly string[];
export declare function launchChromium(): Promise<{ context: BrowserContext; page: Page; close(): Promise<void> }>;
