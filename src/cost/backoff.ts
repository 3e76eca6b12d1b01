// Retry delays for a failing cost store: exponential, capped, with "equal
// jitter" (half fixed, half random) so nodes that lost the same server do not
// retry in lock-step, yet no retry comes back almost at once.

export function backoffDelay (attempt: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt - 1))
  return ceiling / 2 + random() * ceiling / 2
}

/** A sleep that close() can cut short. */
export class Sleeper {
  private wake: (() => void) | null = null
  private timer: NodeJS.Timeout | null = null

  sleep (ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.wake = resolve
      this.timer = setTimeout(() => { this.wake = null; resolve() }, ms)
    })
  }

  interrupt (): void {
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    const w = this.wake
    this.wake = null
    w?.()
  }
}
