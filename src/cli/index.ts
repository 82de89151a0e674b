/**
 * The daily-work commands: a command line over the running service's HTTP API (`mqtt-ca devices
 * list`, `certs revoke`, ...), beside the store commands of src/cli.ts. See docs/cli.md.
 */
import type { Command } from 'commander';
import { registerApprovals } from './commands/approvals.js';
import { registerBusRelay } from './commands/bus-relay.js';
import { registerCerts } from './commands/certs.js';
import { registerDevices } from './commands/devices.js';
import { registerIncidents } from './commands/incidents.js';
import { registerPosture } from './commands/posture.js';
import { registerTokens } from './commands/tokens.js';
import { addConnectionOptions, exitTwoOnUsage } from './run.js';

/** The top-level commands that talk to the API: they need no DATA_DIR, KEK or store on this machine. */
export const API_COMMANDS: readonly string[] = ['devices', 'tokens', 'certs', 'incidents', 'approvals', 'posture', 'bus-relay'];

/** Whether `command` (the one whose action runs) is one of the daily-work commands or under one. */
export function isApiCommand(command: Command): boolean {
  let top = command;
  while (top.parent?.parent) top = top.parent;
  return API_COMMANDS.includes(top.name());
}

/**
 * Adds the daily-work commands to the program. --url, --key-file and --json may come before the
 * command (`mqtt-ca --url U devices list`) or after it (`mqtt-ca devices list --json`): the
 * program's options are positional, so a store command's own options (broker-setup --key-file)
 * stay its own. Usage errors of these commands exit 2.
 */
export function registerApiCommands(program: Command): void {
  program.enablePositionalOptions();
  addConnectionOptions(program);
  const leaf = (c: Command) => exitTwoOnUsage(addConnectionOptions(c));
  for (const register of [registerDevices, registerTokens, registerCerts, registerIncidents, registerApprovals, registerPosture])
    exitTwoOnUsage(register(program, leaf));
  // Not an API-key client: it signs with a broker's secret (POST /v1/bus-events).
  exitTwoOnUsage(registerBusRelay(program));
}
