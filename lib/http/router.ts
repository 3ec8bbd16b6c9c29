/**
 * A table of method + path to handler; unknown paths answer 404 (or go to the fallback), known paths
 * with another method 405.
 */
import { AogError } from '../errors.js'
import { DOT_SEGMENT } from './request.js'

export class Router<H> {
  // The routes as added, each path with its handlers by method, searched in order: a gate has a
  // handful, and comparing the request's path with each costs less than hashing it (a new string
  // per request) for a Map. The path handed out as the route is the one added (the same string
  // for every request, so later comparisons of it are pointer comparisons).
  readonly #routes: Array<{ path: string, methods: string[], handlers: H[] }> = []
  #fallback: { route: string, handler: H } | undefined
  readonly #prefixes: Array<{ prefix: string, route: string, handler: H }> = []

  /**
   * The handler of every path under `prefix` (any method), reported as `route`. A path with a
   * dot-segment or `#` matches no prefix (400): a proxy in front that routes by the normalised path
   * (nginx: `/auth/../challenge` is its `/challenge`) but passes the raw target must not reach it.
   */
  under (prefix: string, route: string, handler: H): this {
    this.#prefixes.push({ prefix, route, handler })
    return this
  }

  /** The handler of every path not added (any method), reported as `route`; without one such paths are 404. */
  otherwise (route: string, handler: H): this {
    this.#fallback = { route, handler }
    return this
  }

  add (method: string, path: string, handler: H): this {
    let route = this.#routes.find((r) => r.path === path)
    if (route === undefined) this.#routes.push(route = { path, methods: [], handlers: [] })
    // No implicit HEAD: GET /challenge has a side effect (it issues a challenge).
    const m = method.toUpperCase()
    const at = route.methods.indexOf(m)
    if (at === -1) {
      route.methods.push(m)
      route.handlers.push(handler)
    } else {
      route.handlers[at] = handler
    }
    return this
  }

  /**
   * Find the handler, or throw AOG_NOT_FOUND / AOG_METHOD_NOT_ALLOWED (with an Allow header), or
   * AOG_BAD_REQUEST for a path under a prefix that has a dot-segment or `#` (see `under`).
   * `into.route` is set to the matched path as added (also before a 405), for logs and metric labels.
   */
  find (method: string, url: string, into?: { route: string }): H {
    const q = url.indexOf('?')
    const path = q === -1 ? url : url.slice(0, q)
    const routes = this.#routes
    for (let i = 0; i < routes.length; i++) {
      const route = routes[i]!
      if (route.path !== path) continue
      if (into !== undefined) into.route = route.path
      const at = route.methods.indexOf(method)
      if (at === -1) {
        throw new AogError('AOG_METHOD_NOT_ALLOWED', `${method} is not allowed here`, { headers: { allow: route.methods.join(', ') } })
      }
      return route.handlers[at]!
    }
    for (const p of this.#prefixes) {
      if (!path.startsWith(p.prefix)) continue
      if (DOT_SEGMENT.test(path) || path.includes('#')) throw new AogError('AOG_BAD_REQUEST', 'the request path must not have a "." or ".." segment, nor "#"')
      if (into !== undefined) into.route = p.route
      return p.handler
    }
    if (this.#fallback !== undefined) {
      if (into !== undefined) into.route = this.#fallback.route
      return this.#fallback.handler
    }
    throw new AogError('AOG_NOT_FOUND', 'no such route')
  }
}
