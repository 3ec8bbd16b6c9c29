/** CRLs of the dev CA made on demand with openssl (an empty one, to be "updated" to certs/dev/crl.pem). */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DEV } from './pki.js'

/** A valid CRL of the dev CA listing no certificate. */
export function emptyCrl (): string {
  const dir = mkdtempSync(join(tmpdir(), 'aog-crl-'))
  writeFileSync(join(dir, 'index.txt'), '')
  writeFileSync(join(dir, 'crlnumber'), '2000\n')
  writeFileSync(join(dir, 'ca.cnf'), `[ ca ]\ndefault_ca = dev\n[ dev ]\ndatabase = ${dir}/index.txt\ncrlnumber = ${dir}/crlnumber\ncertificate = ${DEV}/ca.pem\nprivate_key = ${DEV}/ca-key.pem\ndefault_md = sha256\ndefault_crl_days = 30\n`)
  const out = join(dir, 'crl.pem')
  execFileSync('openssl', ['ca', '-batch', '-config', join(dir, 'ca.cnf'), '-gencrl', '-out', out], { stdio: 'ignore' })
  return out
}
