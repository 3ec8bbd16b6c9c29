/** HOST:PORT, the one form of every listen address and Redis node (IPv6 in brackets: [::1]:8443). */
import { BlockList, isIP } from 'node:net'

/** The pattern config validates listen addresses with. */
export const HOST_PORT_PATTERN = '^(\\[[0-9a-fA-F:.]+\\]|[^\\s:\\[\\]]+):[0-9]{1,5}$'

/** Split "host:port" or "[v6]:port"; throws on anything else. */
export function parseHostPort (s: string): { host: string, port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^\s:[\]]+)):(\d{1,5})$/.exec(s)
  if (m === null || Number(m[3]) > 65535) throw new Error(`not HOST:PORT: ${s}`)
  return { host: m[1] ?? m[2]!, port: Number(m[3]) }
}

/** Loopback and private networks (RFC 1918, RFC 4193 unique local, link-local). */
const PRIVATE = new BlockList()
PRIVATE.addSubnet('127.0.0.0', 8)
PRIVATE.addSubnet('10.0.0.0', 8)
PRIVATE.addSubnet('172.16.0.0', 12)
PRIVATE.addSubnet('192.168.0.0', 16)
PRIVATE.addSubnet('169.254.0.0', 16)
PRIVATE.addAddress('::1', 'ipv6')
PRIVATE.addSubnet('fc00::', 7, 'ipv6')
PRIVATE.addSubnet('fe80::', 10, 'ipv6')

/**
 * True when a bound address is loopback or private; false for a public one and for the unspecified
 * address (0.0.0.0, ::: every interface, public ones included). An IPv4-mapped IPv6 address is
 * judged as its IPv4 address.
 */
export function isLoopbackOrPrivate (address: string): boolean {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)
  if (mapped !== null) return PRIVATE.check(mapped[1]!, 'ipv4')
  const family = isIP(address)
  return family !== 0 && PRIVATE.check(address, family === 4 ? 'ipv4' : 'ipv6')
}
