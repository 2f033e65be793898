// Entry point placeholder: this command is not built yet. It says so and fails, never fakes success.
console.error("veomni-ts: 'jobs' is not available yet in this version (see README.md, Features).");
process.exit(2);
