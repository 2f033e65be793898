// A worker's data-plane address (actors/host_addr.ts): --host wins; launch.host serves one host;
// with NATS reached over the network and a loopback launch.host, the worker's own address on its
// route to NATS (the netns multi-host test checks it across namespaces).
import { expect, test } from "bun:test";
import { networkInterfaces } from "node:os";
import { dataPlaneHost } from "../../actors/host_addr.ts";

test("--host wins; loopback NATS or a non-loopback launch.host is kept", async () => {
  expect(await dataPlaneHost({ flag: "10.9.8.7", launchHost: "127.0.0.1", natsUrl: "nats://10.1.1.1:4222" })).toBe("10.9.8.7");
  expect(await dataPlaneHost({ natsUrl: "nats://127.0.0.1:4222" })).toBe("127.0.0.1");
  expect(await dataPlaneHost({ launchHost: "127.0.0.1", natsUrl: "nats://localhost:4222,nats://10.1.1.1:4222" })).toBe("127.0.0.1");
  expect(await dataPlaneHost({ launchHost: "192.168.5.5", natsUrl: "nats://10.1.1.1:4222" })).toBe("192.168.5.5");
});

const external = Object.values(networkInterfaces()).flat().find((a) => a && a.family === "IPv4" && !a.internal)?.address;

test.skipIf(!external)(`NATS on a non-loopback address: the local end of the route to it${external ? "" : " [skipped: this machine has no non-loopback IPv4 address]"}`, async () => {
  const srv = Bun.listen({ hostname: external!, port: 0, socket: { data() {} } });
  try {
    expect(await dataPlaneHost({ launchHost: "127.0.0.1", natsUrl: `nats://${external}:${srv.port}` })).toBe(external!);
  } finally {
    srv.stop(true);
  }
});

test("an unreachable NATS server: one line saying to pass --host", async () => {
  // a non-loopback name that does not resolve
  await expect(dataPlaneHost({ natsUrl: "nats://no-such-host.invalid:4222" })).rejects.toThrow(/^--host: cannot tell this host's address toward NATS at no-such-host\.invalid:\d+ \(.*\); pass --host ADDR/);
});
