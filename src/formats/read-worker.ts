/** Entry of the activation-file reading thread (read-thread.ts): reads files as float32, one request at a time. */
import { parentPort } from 'node:worker_threads';
import { MechIntError } from '../errors.js';
import { readFloat32Here, type ThreadRequest, type ThreadResponse } from './read-thread.js';

const port = parentPort;
if (!port) throw new Error('src/formats/read-worker is a worker thread entry; it is started by read-thread.ts');

port.on('message', (request: ThreadRequest) => {
  readFloat32Here(request.path, request.options).then(
    (file) => {
      const transfer = Object.values(file.tensors).map((t) => t.values.buffer as ArrayBuffer);
      port.postMessage({ id: request.id, file } satisfies ThreadResponse, transfer);
    },
    (err: unknown) => {
      const error = err instanceof MechIntError
        ? { code: err.code, statusCode: err.statusCode, message: err.message }
        : { code: 'MECHINT_ERR_INTERNAL', statusCode: 500, message: err instanceof Error ? err.message : String(err) };
      port.postMessage({ id: request.id, error } satisfies ThreadResponse);
    },
  );
});
