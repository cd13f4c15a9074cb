/** A one-line progress display on a terminal (stderr); silent when stderr is not a TTY. */
export interface Progress {
  update(label: string, fraction?: number): void;
  done(message?: string): void;
}

export function createProgress(stream: NodeJS.WriteStream = process.stderr): Progress {
  if (!stream.isTTY) return { update: () => {}, done: () => {} };
  let last = 0;
  const width = 24;
  return {
    update(label, fraction) {
      const now = Date.now();
      if (now - last < 50 && fraction !== 1) return;
      last = now;
      const bar = fraction === undefined ? '' : `[${'#'.repeat(Math.round(Math.min(1, fraction) * width)).padEnd(width, '.')}] ${Math.round(fraction * 100)}% `;
      const line = `${bar}${label}`.slice(0, (stream.columns ?? 80) - 1);
      stream.write(`\r\x1b[2K${line}`);
    },
    done(message) {
      stream.write('\r\x1b[2K');
      if (message) stream.write(`${message}\n`);
    },
  };
}
