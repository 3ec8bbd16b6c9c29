declare module 'parse-prometheus-text-format' {
  export default function parse (text: string): unknown[]
}
declare module 'ioredis-mock' {
  const RedisMock: new (...args: unknown[]) => unknown
  export default RedisMock
}
