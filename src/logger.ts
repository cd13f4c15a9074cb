/** `[MechInt]`-prefixed logging that prints nothing when verbose is off. */
import { LOG_PREFIX } from './constants.js';

export interface Logger {
  info(message: string): void;
  warn(message: string): void;
}

export function createLogger(verbose: boolean): Logger {
  return {
    info: (m) => {
      if (verbose) console.log(`${LOG_PREFIX} ${m}`);
    },
    warn: (m) => {
      if (verbose) console.warn(`${LOG_PREFIX} ${m}`);
    },
  };
}

export const silentLogger: Logger = { info: () => {}, warn: () => {} };
