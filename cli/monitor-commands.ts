import type { Command } from 'commander';
import type { EddyConfig } from '../common/config.ts';
import { UsageError } from '../common/errors.ts';

const out = (line: string) => process.stdout.write(line + '\n');
/** A figure, or "—" where nothing was judged (not 0.000: "no judgements" is not "all wrong"). */
const f3 = (x: number | null) => (x === null ? '—' : x.toFixed(3));
/** A relative difference with its sign: -38.5% is 38.5 % below. */
const signed = (x: number | null) => (x === null ? '—' : `${x > 0 ? '+' : x < 0 ? '-' : ''}${Math.abs(x).toFixed(1)}%`);
const when = (ms: number) => new Date(ms).toISOString().replace('T', ' ').slice(0, 19);

/**
 * `eddy quality [clientId]`: what the dashboard shows, in a terminal (or as JSON for scripts):
 * every client's live version, 7-day quality and review queue, or one client's per-label, per-version
 * and per-segment quality and history.
 * Reads the monitor's Redis state, so it needs `eddy processors run` (with the monitor) running.
 */
export function registerMonitorCommands(program: Command, config: () => EddyConfig): void {
  program
    .command('quality')
    .description('live quality from feedback (7 days): every client, or one client in detail')
    .argument('[clientId]', 'show this client: per-label precision/recall/F1, open alerts, history')
    .option('--search <text>', 'only clients whose id contains this')
    .option('--limit <n>', 'clients to list', '50')
    .option('--json', 'machine-readable output')
    .action(async (clientId: string | undefined, opts: { search?: string; limit: string; json?: boolean }) => {
      const limit = Number(opts.limit);
      if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new UsageError(`--limit must be 1..1000, got '${opts.limit}'`);
      const c = config();
      const { connectRedis } = await import('../common/redis.ts');
      const redis = await connectRedis(c);
      try {
        // Loaded on use: the dashboard's read model comes with the server's modules.
        const { DashboardData } = await import('../server/index.ts');
        const data = new DashboardData(redis, c.redisPrefix);
        if (clientId) {
          const d = await data.client(clientId);
          if (opts.json) {
            out(JSON.stringify(d, null, 2));
            return;
          }
          const q = d.quality;
          out(`${d.clientId}: live ${d.live ?? 'none (baseline)'}; versions ${d.versions.join(', ') || 'none'}`);
          out(`7 days: precision ${f3(q.precision)}  recall ${f3(q.recall)}  F1 ${f3(q.f1)}  accuracy ${f3(q.accuracy)}  judged ${q.support}  bias ${f3(q.bias)}`);
          out('');
          out(`${'LABEL'.padEnd(24)}${'PRECISION'.padStart(10)}${'RECALL'.padStart(10)}${'F1'.padStart(10)}${'SUPPORT'.padStart(10)}`);
          for (const l of d.labels) out(`${l.label.slice(0, 23).padEnd(24)}${f3(l.precision).padStart(10)}${f3(l.recall).padStart(10)}${f3(l.f1).padStart(10)}${String(l.support).padStart(10)}`);
          out('');
          out(`${'VERSION (14 DAYS)'.padEnd(24)}${'PRECISION'.padStart(10)}${'RECALL'.padStart(10)}${'F1'.padStart(10)}${'ACCURACY'.padStart(10)}${'JUDGED'.padStart(10)}`);
          for (const v of d.byVersion) out(`${(v.version + (v.version === d.live ? ' (live)' : '')).padEnd(24)}${f3(v.precision).padStart(10)}${f3(v.recall).padStart(10)}${f3(v.f1).padStart(10)}${f3(v.accuracy).padStart(10)}${String(v.support).padStart(10)}`);
          out('');
          out(`${'SEGMENT (7 DAYS)'.padEnd(24)}${'PRECISION'.padStart(10)}${'RECALL'.padStart(10)}${'F1'.padStart(10)}${'ACCURACY'.padStart(10)}${'JUDGED'.padStart(8)}${'VS CLIENT'.padStart(11)}${'VS LAST WEEK'.padStart(14)}`);
          for (const g of d.segments) {
            out(`${g.segment.slice(0, 23).padEnd(24)}${f3(g.precision).padStart(10)}${f3(g.recall).padStart(10)}${f3(g.f1).padStart(10)}${f3(g.accuracy).padStart(10)}${String(g.support).padStart(8)}`
              + `${signed(-g.gapPercent).padStart(11)}${signed(g.dropPercent === null ? null : -g.dropPercent).padStart(14)}`);
          }
          if (d.segments.length === 0) out('no judged requests in any segment in the last 7 days');
          if (d.segmentGaps.length) out(`open segment gaps: ${d.segmentGaps.map((g) => `${g.segment} (-${g.gapPercent.toFixed(1)}%)`).join(', ')}`);
          out('');
          for (const e of d.events.slice(0, 20)) out(`${when(e.at)}  ${e.title}`);
          return;
        }
        const o = await data.overview({ limit, offset: 0, search: opts.search });
        if (opts.json) {
          out(JSON.stringify(o, null, 2));
          return;
        }
        out(`${'CLIENT'.padEnd(24)}${'LIVE'.padEnd(8)}${'PREC'.padStart(7)}${'REC'.padStart(7)}${'F1'.padStart(7)}${'JUDGED'.padStart(8)}${'REVIEW'.padStart(8)}  LAST OUTCOME / ALERTS`);
        for (const r of o.clients) {
          const outcome = r.lastOutcome ? `${r.lastOutcome.status.toLowerCase()} ${r.lastOutcome.version}` : '-';
          out(`${r.clientId.slice(0, 23).padEnd(24)}${(r.live ?? '-').padEnd(8)}${f3(r.quality.precision).padStart(7)}${f3(r.quality.recall).padStart(7)}${f3(r.quality.f1).padStart(7)}${String(r.quality.support).padStart(8)}${String(r.reviewQueue).padStart(8)}  ${outcome}${r.openAlerts.length ? `  [${r.openAlerts.join(', ')}]` : ''}`);
        }
        out(`${o.clients.length} of ${o.totalClients} clients`);
      } finally {
        redis.disconnect();
      }
    });
}
