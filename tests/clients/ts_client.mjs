// Connect to kamiwaza-mcp with the official TypeScript SDK client, list the tools and call one.
//
//   node ts_client.mjs stdio COMMAND [ARG...]   start the server as a subprocess
//   node ts_client.mjs http URL                 connect over streamable HTTP
//
// MCP_BEARER_TOKEN, when set, is sent as "Authorization: Bearer <token>" over HTTP.
// MCP_TOOL names the tool to call (default get_status), with no arguments.
// Prints one JSON object on stdout: the server's name, the tool names and the call's result.
// The SDK is loaded from .ci/node/node_modules (npm ci --prefix .ci/node), or from MCP_NODE_DIR.

import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const nodeDir = process.env.MCP_NODE_DIR ?? join(here, "..", "..", ".ci", "node");
// createRequire resolves the package from nodeDir, which this script's own folder cannot do.
const resolve = createRequire(join(nodeDir, "package.json")).resolve;

async function load(specifier) {
  return import(pathToFileURL(resolve(specifier)).href);
}

function fail(message) {
  process.stderr.write(`ts_client: ${message}\n`);
  process.exit(2);
}

const [mode, ...rest] = process.argv.slice(2);
const { Client } = await load("@modelcontextprotocol/sdk/client/index.js");
let transport;
if (mode === "stdio") {
  if (rest.length === 0) fail("stdio needs a command");
  const { StdioClientTransport } = await load("@modelcontextprotocol/sdk/client/stdio.js");
  transport = new StdioClientTransport({
    command: rest[0],
    args: rest.slice(1),
    env: { ...process.env },
    stderr: "inherit",
  });
} else if (mode === "http") {
  if (rest.length !== 1) fail("http needs exactly one URL");
  const { StreamableHTTPClientTransport } = await load("@modelcontextprotocol/sdk/client/streamableHttp.js");
  const token = process.env.MCP_BEARER_TOKEN;
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  transport = new StreamableHTTPClientTransport(new URL(rest[0]), { requestInit: { headers } });
} else {
  fail(`unknown mode ${JSON.stringify(mode)}; expected stdio or http`);
}

const client = new Client({ name: "kamiwaza-mcp-ts-test", version: "1.0.0" });
const timeout = setTimeout(() => fail("timed out after 60 s"), 60_000);
try {
  await client.connect(transport);
  const listing = await client.listTools();
  const tool = process.env.MCP_TOOL ?? "get_status";
  const result = await client.callTool({ name: tool, arguments: {} });
  const output = {
    server: client.getServerVersion(),
    protocolVersion: transport.protocolVersion ?? null,
    sessionId: transport.sessionId ?? null,
    tools: listing.tools.map((entry) => entry.name),
    result,
  };
  process.stdout.write(`${JSON.stringify(output)}\n`);
} finally {
  clearTimeout(timeout);
  await client.close();
}
