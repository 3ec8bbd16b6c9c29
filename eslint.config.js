// ESLint flat config: neostandard (the pino/fastify house style) with its TypeScript support.
// nginx/ holds njs code (nginx's own JavaScript subset), checked by the nginx integration tests.
import neostandard from 'neostandard'

export default [
  ...neostandard({ ts: true, ignores: ['nginx/**', 'dist/**', 'coverage/**', 'lib/native/build/**', '.tap/**', 'node_modules/**'] }),
  {
    rules: {
      // TypeBox declares a schema and its static type under one name; the compiler catches real redeclarations.
      '@typescript-eslint/no-redeclare': 'off',
      // `void promise` marks a promise deliberately not awaited.
      'no-void': ['error', { allowAsStatement: true }],
      // On Node 20 a JWK export of a key these made can deadlock (lib/keys.ts); tests use test/helpers/keys.ts.
      'no-restricted-imports': ['error', {
        paths: [
          { name: 'node:crypto', importNames: ['generateKeyPair', 'generateKeyPairSync'], message: 'use keyPair() from test/helpers/keys.ts (lib/keys.ts says why)' },
          { name: 'crypto', importNames: ['generateKeyPair', 'generateKeyPairSync'], message: 'use keyPair() from test/helpers/keys.ts (lib/keys.ts says why)' },
          { name: 'jose', importNames: ['generateKeyPair'], message: 'use keyPair() from test/helpers/keys.ts (lib/keys.ts says why)' },
        ],
      }],
    },
  },
]
