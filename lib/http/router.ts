/** A table of method + path to handler; unknown paths answer 404, known paths with another method 405. */
import { AogError } from '../errors.js'

export class Router<H> {
  // Per path: the path as added (handed out as the route, the same string for every request, so
  // that later comparisons of it are pointer comparisons) and its handlers by method.
  readonly #routes = new Map<string, { path: string, byMethod: Map<string, H> }>()

  add (method: string, path: string, handler: H): this {
    let route = this.#routes.get(path)
    if (route === undefined) this.#routes.set(path, route = { path, byMethod: new Map() })
    const byMethod = route.byMethod
    // No implicit HEAD: GET /challenge has a side effect (it issues a challenge).
    byMethod.set(method.toUpperCase(), handler)
    return this
  }

  /**
   * Find the handler, or throw AOG_NOT_FOUND / AOG_METHOD_NOT_ALLOWED (with an Allow header).
   * `into.route` is set to the matched path as added (also before a 405), for logs and metric labels.
   */
  find (method: string, url: string, into?: { route: string }): H {
    const q = url.indexOf('?')
    const path = q === -1 ? url : url.slice(0, q)
    const route = this.#routes.get(path)
    if (route === undefined) throw new AogError('AOG_NOT_FOUND', 'no such route')
    if (into !== undefined) into.route = route.path
    const byMethod = route.byMethod
    const handler = byMethod.get(method)
    if (handler === undefined) {
      throw new AogError('AOG_METHOD_NOT_ALLOWED', `${method} is not allowed here`, { headers: { allow: [...byMethod.keys()].join(', ') } })
    }
    return handler
  }
}
