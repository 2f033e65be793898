// The actor runtime: an actor owns its state and handles one message at a time from its mailbox.
// `send` enqueues and returns; `ask` enqueues and resolves with the handler's result. A handler
// that throws fails the actor: the error goes to its supervisor (onFailure) and every pending and
// later message is rejected with it, so a broken stage never silently keeps running.

export type Handler<M, R> = (msg: M) => R | Promise<R>;

interface Envelope<M, R> {
  msg: M;
  resolve: (r: R) => void;
  reject: (e: unknown) => void;
}

export class Actor<M, R = void> {
  private queue: Envelope<M, R>[] = [];
  private running = false;
  private failure: Error | null = null;
  private stopped = false;

  constructor(
    readonly name: string,
    private readonly handle: Handler<M, R>,
    private readonly onFailure: (actor: string, err: Error) => void = () => {},
  ) {}

  /** Enqueue and wait for the handler's result. */
  ask(msg: M): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      if (this.failure) return reject(this.failure);
      if (this.stopped) return reject(new Error(`actor ${this.name}: stopped, message refused`));
      this.queue.push({ msg, resolve, reject });
      if (!this.running) void this.drain();
    });
  }

  /** Fire and forget; a failure still reaches the supervisor. */
  send(msg: M): void {
    this.ask(msg).catch(() => {
      // fire and forget: a failing handler already went to the actor's onError (its supervisor)
    });
  }

  get pending(): number {
    return this.queue.length;
  }

  get failed(): Error | null {
    return this.failure;
  }

  /** Refuse new messages; the queued ones are rejected. */
  stop(reason = "stopped"): void {
    this.stopped = true;
    for (const e of this.queue.splice(0)) e.reject(new Error(`actor ${this.name}: ${reason}`));
  }

  private async drain(): Promise<void> {
    this.running = true;
    while (this.queue.length > 0) {
      const env = this.queue.shift()!;
      try {
        env.resolve(await this.handle(env.msg));
      } catch (e) {
        const err = e instanceof Error ? e : new Error(String(e));
        this.failure = new Error(`actor ${this.name}: ${err.message}`, { cause: err });
        env.reject(this.failure);
        for (const rest of this.queue.splice(0)) rest.reject(this.failure);
        this.onFailure(this.name, this.failure);
      }
    }
    this.running = false;
  }
}
