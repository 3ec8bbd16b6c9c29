/** Locations inside the installed package (works from lib/ sources and from dist/). */
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** The directory holding the package's package.json. */
export function packageRoot (): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'certs'))) return dir
    const up = dirname(dir)
    if (up === dir) throw new Error('cannot find the aog package root')
    dir = up
  }
}
