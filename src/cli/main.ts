/** The `mechint` command line. */
import { Command, CommanderError } from 'commander';
import { MechIntError } from '../errors.js';
import { VERSION } from '../version.js';
import { registerAnalyzeCommand } from './analyze.js';
import { registerDemoCommand } from './demo.js';
import { registerInspectCommand } from './inspect.js';
import { configureProgress } from './progress.js';
import { registerServeCommand } from './serve.js';
import { registerSyncCommand } from './sync.js';
import { registerWorkerCommand } from './worker.js';

function buildProgram(): Command {
  const program = new Command();
  program
    .name('mechint')
    .description('Mechanistic interpretability for TensorFlow.js: capture activations during training, analyse them, serve the analyses.')
    .version(VERSION, '-V, --version', 'print the version of mechint')
    .showHelpAfterError()
    .exitOverride();

  registerInspectCommand(program);
  registerDemoCommand(program);
  registerAnalyzeCommand(program);
  registerServeCommand(program);
  registerSyncCommand(program);
  registerWorkerCommand(program);
  return program;
}

/** Runs the CLI; resolves to the exit code. Errors of ours print as one line, never a stack trace. */
export async function main(argv: string[] = process.argv): Promise<number> {
  const program = buildProgram();
  // --json output is for programs: no progress lines beside it.
  if (argv.includes('--json')) configureProgress('off');
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode;
    if (err instanceof MechIntError) {
      console.error(`mechint: ${err.message} (${err.code})`);
      return 1;
    }
    console.error(`mechint: unexpected error: ${(err as Error).stack ?? String(err)}`);
    return 70;
  }
}
