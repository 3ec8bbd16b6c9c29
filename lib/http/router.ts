/** A table of method + path to handler; unknown paths answer 404, known paths with another method 405. */
import { AogError } from '../errors.js'

export class Router<H> {
  readonly #routes = new Map<string, Map<string, H>>()

  add (method: string, path: string, handler: H): this {
    let byMethod = this.#routes.get(path)
    if (byMethod === undefined) this.#routes.set(path, byMethod = new Map())
    // No implicit HEAD: GET /challenge has a side effect (it issues a challenge).
    byMethod.set(method.toUpperCase(), handler)
    return this
  }

  /**
   * Find the handler, or throw AOG_NOT_FOUND / AOG_METHOD_NOT_ALLOWED (with an Allow header).
   * `into.route` is set to the matched path (also before a 405), for logs and metric labels.
   */
  find (method: string, url: string, into?: { route: string }): H {
    const q = url.indexOf('?')
    const path = q === -1 ? url : url.slice(0, q)
    const byMethod = this.#routes.get(path)
    if (byMethod === undefined) throw new AogError('AOG_NOT_FOUND', 'no such route')
    if (into !== undefined) into.route = path
    const handler = byMethod.get(method)
    if (handler === undefined) {
      throw new AogError('AOG_METHOD_NOT_ALLOWED', `${method} is not allowed here`, { headers: { allow: [...byMethod.keys()].join(', ') } })
    }
    return handler
  }
}
