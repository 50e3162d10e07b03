// Progress for a run: a live status line on a terminal, plain timestamped lines otherwise
// (CI logs, files), so the same run reads well in both.

export interface ProgressSink {
  write(text: string): void;
  isTTY: boolean;
  columns?: number;
}

export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '--:--';
  const s = Math.round(ms / 1000);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const mm = String(m).padStart(2, '0');
  const ss = String(sec).padStart(2, '0');
  return h > 0 ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

export class Progress {
  private done = 0;
  private failed = 0;
  private current = '';
  private readonly started = Date.now();
  private unitStarted = 0;
  private readonly durations: number[] = [];
  private timer: NodeJS.Timeout | undefined;
  private lineShown = false;

  constructor(
    private readonly total: number,
    private readonly sink: ProgressSink = {
      write: (t) => process.stderr.write(t),
      isTTY: Boolean(process.stderr.isTTY),
      columns: process.stderr.columns,
    },
  ) {
    if (sink.isTTY) {
      this.timer = setInterval(() => this.redraw(), 1000);
      this.timer.unref();
    }
  }

  /** Estimated time left: mean time of the units done so far × units left. */
  eta(): number {
    if (this.durations.length === 0) return Number.NaN;
    const mean = this.durations.reduce((a, b) => a + b, 0) / this.durations.length;
    return mean * (this.total - this.done);
  }

  status(): string {
    const elapsed = formatDuration(Date.now() - this.started);
    const fail = this.failed > 0 ? ` · ${this.failed} failed` : '';
    return `[${this.done}/${this.total}] ${this.current || 'idle'} · elapsed ${elapsed} · ETA ${formatDuration(this.eta())}${fail}`;
  }

  start(label: string): void {
    this.current = label;
    this.unitStarted = Date.now();
    if (this.sink.isTTY) this.redraw();
    else this.sink.write(`${new Date().toISOString()} start ${label} (${this.done + 1}/${this.total})\n`);
  }

  finish(label: string, status: string, reason?: string): void {
    const ms = Date.now() - this.unitStarted;
    this.durations.push(ms);
    this.done++;
    if (status !== 'ok') this.failed++;
    const line = `${status === 'ok' ? 'ok  ' : status.toUpperCase()} ${label} (${formatDuration(ms)})${reason ? `: ${reason.split('\n')[0]}` : ''}`;
    this.log(line);
    this.current = '';
  }

  /** A skipped unit (resume) counts as done without affecting the ETA. */
  skip(count: number): void {
    this.done += count;
  }

  /** A message that must stay on screen (the status line is redrawn below it). */
  log(line: string): void {
    if (this.sink.isTTY) {
      this.clear();
      this.sink.write(`${line}\n`);
      this.redraw();
    } else {
      this.sink.write(`${new Date().toISOString()} ${line}\n`);
    }
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.sink.isTTY) this.clear();
  }

  private clear(): void {
    if (this.lineShown) this.sink.write('\r\x1b[2K');
    this.lineShown = false;
  }

  private redraw(): void {
    if (!this.sink.isTTY) return;
    const cols = this.sink.columns ?? 100;
    let s = this.status();
    if (s.length > cols - 1) s = `${s.slice(0, cols - 2)}…`;
    this.sink.write(`\r\x1b[2K${s}`);
    this.lineShown = true;
  }
}
