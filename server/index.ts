/** The prediction server's public surface: what the CLI and benchmarks use (the rest of server/ is internal). */
export { startServer, type PredictionServer, type StartOptions } from './main.ts';
export { DashboardData } from './dashboard/data.ts';
