/**
 * A quick start for the daily-work commands: `bin/mqtt-ca.js` runs them from here, with commander
 * and src/cli/ alone, instead of through src/cli.ts, which loads the whole service first (about
 * 0.8 s against 3.3 s per command here). src/cli.ts registers the same commands, so
 * `mqtt-ca --help` lists them and either way runs the same code.
 */
import { Command } from 'commander';
import { API_COMMANDS, registerApiCommands } from './index.js';

/** The program's options that take a value (src/cli/run.ts, addConnectionOptions). */
const VALUE_OPTIONS = new Set(['--url', '--key-file']);

/** Whether these arguments (after `mqtt-ca`) name a daily-work command. */
export function isApiInvocation(args: readonly string[]): boolean {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (VALUE_OPTIONS.has(a)) i++;
    else if (a === '--json' || [...VALUE_OPTIONS].some((o) => a.startsWith(`${o}=`))) continue;
    else return API_COMMANDS.includes(a);
  }
  return false;
}

export async function runApiCommands(argv: readonly string[]): Promise<void> {
  const program = new Command('mqtt-ca').description(
    'Private CA and credential lifecycle manager for MQTT fleets: daily work over the API',
  );
  registerApiCommands(program);
  await program.parseAsync([...argv]);
}
