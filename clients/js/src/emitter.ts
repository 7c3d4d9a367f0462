/** A minimal typed event emitter (the SDK has no runtime dependencies). */

/** A listener; what it returns matters only for `publication` on auto-ack subscriptions. */
export type Listener<T> = (value: T) => unknown;

/** Reports an exception thrown by a listener without breaking the SDK's own state. */
export function report(error: unknown): void {
  const g = globalThis as { reportError?: (e: unknown) => void };
  if (g.reportError) g.reportError(error);
  else setTimeout(() => {
    throw error;
  });
}

export class Emitter<E> {
  private listeners: { [K in keyof E]?: Listener<E[K]>[] } = {};

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof E>(event: K, listener: Listener<E[K]>): () => void {
    (this.listeners[event] ||= []).push(listener);
    return () => this.off(event, listener);
  }

  /** Removes a listener added with `on`. */
  off<K extends keyof E>(event: K, listener: Listener<E[K]>): void {
    const list = this.listeners[event];
    if (list) this.listeners[event] = list.filter((l) => l !== listener);
  }

  /**
   * Calls every listener of `event` in order and returns what each returned; a listener
   * that throws is reported (or, when `quiet`, yields a rejected promise instead).
   */
  protected emit<K extends keyof E>(event: K, value: E[K], quiet?: boolean): unknown[] {
    return (this.listeners[event] || []).slice().map((listener) => {
      try {
        return listener(value);
      } catch (error) {
        if (quiet) return Promise.reject(error);
        report(error);
        return undefined;
      }
    });
  }
}
