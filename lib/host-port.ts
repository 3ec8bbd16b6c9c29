/** HOST:PORT, the one form of every listen address and Redis node (IPv6 in brackets: [::1]:8443). */

/** The pattern config validates listen addresses with. */
export const HOST_PORT_PATTERN = '^(\\[[0-9a-fA-F:.]+\\]|[^\\s:\\[\\]]+):[0-9]{1,5}$'

/** Split "host:port" or "[v6]:port"; throws on anything else. */
export function parseHostPort (s: string): { host: string, port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^\s:[\]]+)):(\d{1,5})$/.exec(s)
  if (m === null || Number(m[3]) > 65535) throw new Error(`not HOST:PORT: ${s}`)
  return { host: m[1] ?? m[2]!, port: Number(m[3]) }
}
