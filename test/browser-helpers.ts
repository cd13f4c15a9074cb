/** Shared by the browser tests: headless Debian Chromium through playwright-core, console watching, mark counts. */
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';
/** Screenshots go here (git-ignored). */
export const TEST_OUTPUT = join(import.meta.dirname, '..', 'test-output');

/** Fails with what to do when Chromium is missing, rather than skipping: CI must run these tests. */
export function requireChromium(): void {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`The browser tests need Debian's Chromium at ${CHROMIUM}: install it with \`apt-get install -y chromium\` (CI's .ci/run does).`);
  }
}

export async function launchChromium(): Promise<Browser> {
  requireChromium();
  await mkdir(TEST_OUTPUT, { recursive: true });
  return chromium.launch({
    executablePath: CHROMIUM,
    // A fresh profile each launch (Playwright makes one); nothing reaches out to the network on its own.
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
  });
}

/** Collects console errors and uncaught page errors. */
export function watchErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console: ${m.text()}`);
  });
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  return errors;
}

/**
 * Data marks drawn in a chart: the children of Vega's `role-mark` groups (bars, lines, points,
 * rules), not axes, legends or titles, keyed by mark type.
 */
export async function chartMarks(page: Page, chartSelector: string): Promise<Record<string, number>> {
  return page.$eval(chartSelector, (fig) => {
    const out: Record<string, number> = {};
    for (const g of fig.querySelectorAll('svg g.role-mark')) {
      const type = [...g.classList].find((c) => c.startsWith('mark-'))?.slice(5) ?? 'other';
      out[type] = (out[type] ?? 0) + g.children.length;
    }
    return out;
  });
}

export const total = (marks: Record<string, number>): number => Object.values(marks).reduce((a, b) => a + b, 0);
