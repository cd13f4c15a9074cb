/** The `mechint` command line. */
import { Command, CommanderError } from 'commander';
import { MechIntError } from '../errors.js';
import { registerAnalyzeCommand } from './analyze.js';
import { formatInspect, inspectPath } from './inspect.js';

function buildProgram(): Command {
  const program = new Command();
  program
    .name('mechint')
    .description('Mechanistic interpretability for TensorFlow.js: capture activations during training, analyse them, serve the analyses.')
    .showHelpAfterError()
    .exitOverride();

  program
    .command('inspect')
    .description('List a shard directory or file: layers, shapes, rows, steps, bytes, and whether each shard matches the manifest')
    .argument('<path>', 'shard directory or shard file')
    .option('--json', 'print JSON')
    .action(async (path: string, opts: { json?: boolean }) => {
      const report = await inspectPath(path);
      console.log(opts.json ? JSON.stringify(report, null, 2) : formatInspect(report));
      if (!report.ok) process.exitCode = 1;
    });

  registerAnalyzeCommand(program);
  return program;
}

/** Runs the CLI; resolves to the exit code. Errors of ours print as one line, never a stack trace. */
export async function main(argv: string[] = process.argv): Promise<number> {
  const program = buildProgram();
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
