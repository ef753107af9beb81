// Preloaded (node --import) into every platform component the simulator starts. When the parent
// (the demo, a test, the benchmark) dies without stopping its components — SIGKILL, a test runner
// killing its worker — the IPC channel closes and the component stops itself gracefully (its own
// SIGTERM handler) instead of running on as an orphan. The channel is unref'd: it never keeps a
// component alive by itself.
if (process.channel) {
  process.channel.unref();
  process.once('disconnect', () => process.kill(process.pid, 'SIGTERM'));
}
