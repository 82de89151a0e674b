import { BlockList, isIP } from 'node:net';

/** An address block: `10.0.0.0/8`, `2001:db8::/32`, or one address (`/32`, `/128`). */
export interface Cidr {
  address: string;
  prefix: number;
  family: 'ipv4' | 'ipv6';
}

/** `a.b.c.d` for an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, as a dual-stack socket reports IPv4 peers); else as given. */
const unmapped = (address: string) => (/^::ffff:\d+\.\d+\.\d+\.\d+$/i.test(address) ? address.slice(7) : address);

/** The address of an X-Forwarded-For hop, without the port or brackets some proxies add; undefined when it is none. */
function hopAddress(hop: string): string | undefined {
  if (isIP(hop)) return hop;
  const m = /^\[([0-9a-f:.]+)\](?::\d+)?$/i.exec(hop) ?? /^(\d+\.\d+\.\d+\.\d+):\d+$/.exec(hop);
  return m && isIP(m[1]!) ? m[1] : undefined;
}

/** Parses a CIDR or a single address; undefined when it is neither. */
export function parseCidr(text: string): Cidr | undefined {
  const [address = '', prefixText, ...rest] = text.trim().split('/');
  const version = isIP(address);
  if (!version || rest.length) return undefined;
  const max = version === 4 ? 32 : 128;
  if (prefixText !== undefined && !/^\d{1,3}$/.test(prefixText)) return undefined;
  const prefix = prefixText === undefined ? max : Number(prefixText);
  return prefix <= max ? { address, prefix, family: version === 4 ? 'ipv4' : 'ipv6' } : undefined;
}

/**
 * The proxies whose X-Forwarded-For is believed (TRUSTED_PROXIES). The client of a request is its
 * peer; when the peer is a trusted proxy, the right-most X-Forwarded-For hop that is not itself a
 * trusted proxy (hops to its left were written by the client, who may write anything). With no
 * trusted proxies the header is never read.
 */
export class TrustedProxies {
  private readonly blocks = new BlockList();
  readonly any: boolean;

  constructor(cidrs: readonly Cidr[]) {
    for (const c of cidrs) this.blocks.addSubnet(c.address, c.prefix, c.family);
    this.any = cidrs.length > 0;
  }

  trusts(address: string): boolean {
    const a = unmapped(address);
    const version = isIP(a);
    return version !== 0 && this.blocks.check(a, version === 4 ? 'ipv4' : 'ipv6');
  }

  /** The client address of a request from `peer` carrying this X-Forwarded-For (Node joins repeated headers with ", "). */
  clientOf(peer: string, forwardedFor: string | undefined): string {
    if (!this.any || !forwardedFor || !this.trusts(peer)) return peer;
    let client = peer;
    const hops = forwardedFor.split(',');
    for (let i = hops.length - 1; i >= 0; i--) {
      const hop = hopAddress(hops[i]!.trim());
      // A hop that is no address: nothing to its left can be believed; the last proxy is what we know.
      if (!hop) return client;
      client = hop;
      if (!this.trusts(hop)) return hop;
    }
    return client;
  }
}
