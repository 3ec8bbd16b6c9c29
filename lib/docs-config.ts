/**
 * Prints the README configuration table from the config schema (`npm run docs:config`); a test
 * checks that README.md contains exactly this table.
 */
import { fileURLToPath } from 'node:url'
import { describeOptions } from './config.js'

/** The Markdown table of every option. */
export function configTable (): string {
  const rows = describeOptions().map((o) => {
    const def = o.default === undefined ? '' : `\`${String(o.default)}\``
    return `| \`${o.flag}\` | \`${o.env}\` | ${o.type} | ${def} | ${o.description} |`
  })
  return ['| flag | environment | type | default | meaning |', '| --- | --- | --- | --- | --- |', ...rows].join('\n')
}

if (process.argv[1] === fileURLToPath(import.meta.url)) process.stdout.write(configTable() + '\n')
