/** Entry of a job's worker thread: runs one AnalysisTask and posts progress, then the result or the error. */
import { parentPort, workerData } from 'node:worker_threads';
import { MechIntError } from '../errors.js';
import { runTask, type AnalysisTask } from './task.js';

export type WorkerMessage =
  | { type: 'progress'; progress: import('../analysis/types.js').AnalysisProgress }
  | { type: 'result'; result: import('../analysis/executor.js').ExecuteOutcome }
  | { type: 'error'; error: { code: string; statusCode: number; message: string } };

const port = parentPort;
if (!port) throw new Error('src/server/worker is a worker thread entry; it is started by JobManager');
const post = (m: WorkerMessage) => port.postMessage(m);

runTask(workerData as AnalysisTask, { onProgress: (progress) => post({ type: 'progress', progress }) }).then(
  (result) => post({ type: 'result', result }),
  (err: unknown) => {
    const e = err instanceof MechIntError
      ? { code: err.code, statusCode: err.statusCode, message: err.message }
      : { code: 'MECHINT_ERR_INTERNAL', statusCode: 500, message: `The analysis failed: ${err instanceof Error ? err.message : String(err)}` };
    post({ type: 'error', error: e });
  },
);
