// The words of the bus watch that broker code (src/broker/bus-events.ts) and the detection rules'
// schema (src/shared/detection-rules.ts) share: one list each, the types derived from them.

/** A broker's reasons for a connection's end (DisconnectEvent.reason). */
export const DISCONNECT_REASONS = [
  /** The client sent DISCONNECT. */
  'client',
  /** No packet within 1.5 x keep-alive ("has exceeded timeout"). */
  'keepalive-timeout',
  /** The socket closed without a DISCONNECT (a killed process, a reset, a dropped link). */
  'connection-lost',
  /** A socket error the broker reports by its errno text (detail). */
  'socket-error',
  'protocol-error',
  'malformed-packet',
  'not-authorised',
  /** Another connection took over the client id. */
  'taken-over',
  /** Ended by the broker's administration (a dynsec kick). */
  'administrative',
  'oversize',
  'out-of-memory',
  /** QoS too high or retain not supported. */
  'not-supported',
  'other',
] as const;
export type DisconnectReason = (typeof DISCONNECT_REASONS)[number];

/**
 * Why a TLS handshake failed, as far as the broker says (TlsFailureEvent.failure). Mosquitto 2.0.11
 * logs the same "certificate verify failed" for a revoked, an expired and a foreign-CA certificate:
 * `verify-failed` says only that the client's certificate did not verify.
 */
export const TLS_FAILURES = ['verify-failed', 'no-certificate', 'closed-during-handshake', 'other'] as const;
export type TlsFailure = (typeof TLS_FAILURES)[number];
