// An agent calling the protected upstream behind the gate: agent.fetch passes the gate when it must.
import { readFileSync } from 'node:fs'
import { createAgent } from 'aog'

const agent = createAgent({
  url: 'https://localhost:8443',
  cert: readFileSync('certs/dev/agent.pem'),
  key: readFileSync('certs/dev/agent-key.pem'),
  ca: readFileSync('certs/dev/ca.pem'),
})
const res = await agent.fetch('/hello?name=agent')           // no grant yet: passes, then sends
console.log(res.statusCode, await res.body.json())           // 200 { method: 'GET', path: '/hello?name=agent', … }
const post = await agent.fetch('/notes', {                   // the grant holds: no new pass
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ note: 'hello' }),
})
console.log(post.statusCode, await post.body.json())
await agent.close()
// A refusal of the gate itself (403, 429, …) rejects with a GateError; the upstream's own answers,
// errors included, are returned as they are.
