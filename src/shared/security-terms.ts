/** The words detection rules, the stores, incidents and the API share. */

export type Severity = 'info' | 'warning' | 'critical';
export const SEVERITIES: readonly Severity[] = ['info', 'warning', 'critical'];

export type IncidentKind = 'device-compromise' | 'lost-device' | 'credential-leak' | 'broker-compromise' | 'ca-compromise';
export const INCIDENT_KINDS: readonly IncidentKind[] = [
  'device-compromise',
  'lost-device',
  'credential-leak',
  'broker-compromise',
  'ca-compromise',
];
