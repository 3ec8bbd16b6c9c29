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
    },
  },
]
