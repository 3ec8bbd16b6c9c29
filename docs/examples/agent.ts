// An agent in TypeScript with the package's client library.
import { readFileSync } from 'node:fs'
import { createAgent, getChallenge, solve, submitTask } from 'aog'

const agent = createAgent({
  url: 'https://localhost:8443',
  cert: readFileSync('certs/dev/agent.pem'),
  key: readFileSync('certs/dev/agent-key.pem'),
  ca: readFileSync('certs/dev/ca.pem'),
})
const challenge = await getChallenge(agent)              // GET /challenge
const body = solve(challenge, agent.fingerprint)         // the chain, checkpoints and trace hash
console.log(await submitTask(agent, body))               // POST /task → { status: 'accepted', … }
await agent.close()
// Or the whole round in one call: `await pass(agent)`.
