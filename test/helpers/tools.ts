/** External tools some tests use. CI (.ci/run) installs every one of them, so none is skipped there. */
import { execFileSync } from 'node:child_process'

export function hasTool (name: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

/** The skip reason, said loudly, for a tool that is missing on this machine. */
export function missing (name: string, pkg: string): string {
  const msg = `!!! SKIPPED: ${name} is not installed (apt-get install ${pkg}); .ci/run installs it, so CI runs this test`
  process.stderr.write(msg + '\n')
  return msg
}
