// The default per-test (and hook) timeout of every test file: 120 s instead of bun's 5 s. Tests
// wait on events, and a 2-core CI machine under load can take more than 5 s for a test that starts
// processes; a deadline that short fails a healthy test, while a hang still ends at 120 s.
// bunfig.toml has no key for this (bun reads only `--timeout` and setDefaultTimeout, and
// setDefaultTimeout holds for the file that calls it), so this preload prefixes that call to each
// test file as it loads, on its first line: line numbers stay. A file may still set its own.
import { plugin } from "bun";

const DEFAULT_TEST_TIMEOUT_MS = 120_000;

plugin({
  name: "veomni-test-timeout",
  setup(build) {
    build.onLoad({ filter: /\.test\.ts$/ }, async ({ path }) => ({
      loader: "ts",
      contents: `import { setDefaultTimeout as __veomniTimeout } from "bun:test"; __veomniTimeout(${DEFAULT_TEST_TIMEOUT_MS}); ${await Bun.file(path).text()}`,
    }));
  },
});
