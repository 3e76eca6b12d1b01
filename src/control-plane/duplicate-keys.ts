// Finds keys that appear twice in one object of a JSON text. JSON.parse keeps
// the last one silently, so a config with two "acme" tenants or two models of
// one name would lose the first without a word (a review found it). Runs on
// text that JSON.parse already accepted, once per config load.

import type { ConfigProblem } from './validate-config.js'

interface Frame {
  readonly path: string
  readonly keys: Set<string> | null // null: an array
  key: string
  index: number
  expectKey: boolean
}

export function duplicateKeys (text: string): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  const stack: Frame[] = []
  const childPath = (): string => {
    const top = stack[stack.length - 1]
    if (top === undefined) return '$'
    return top.keys === null ? `${top.path}[${top.index}]` : `${top.path}.${top.key}`
  }
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]
    const top = stack[stack.length - 1]
    if (ch === '{' || ch === '[') {
      stack.push({ path: childPath(), keys: ch === '{' ? new Set() : null, key: '', index: 0, expectKey: ch === '{' })
    } else if (ch === '}' || ch === ']') {
      stack.pop()
    } else if (ch === ',') {
      if (top !== undefined) {
        if (top.keys === null) top.index++
        else top.expectKey = true
      }
    } else if (ch === '"') {
      let j = i + 1
      while (text[j] !== '"') j += text[j] === '\\' ? 2 : 1
      if (top !== undefined && top.keys !== null && top.expectKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string
        if (top.keys.has(key)) problems.push({ path: `${top.path}.${key}`, message: 'appears twice in this object; JSON would keep only the last one' })
        top.keys.add(key)
        top.key = key
        top.expectKey = false
      }
      i = j
    }
  }
  return problems
}
