// A third-party gRPC-web client (Connect's grpc-web transport over fetch) calling the gateway
// with code generated from the protos by protoc-gen-es. Run by the gateway's Rust test
// `web_client`, which starts the gateway and generates `gen/` first.
//
// Usage: node client.mjs <gateway base URL> <access token>; prints one JSON object of results.
import { createClient, ConnectError } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { TokenService } from "./gen/trellis/identity/v1/token_pb.js";
import { WidgetService, WidgetStatus } from "./gen/trellis/widgets/v1/widgets_pb.js";

const [baseUrl, token] = process.argv.slice(2);
const transport = createGrpcWebTransport({ baseUrl, useBinaryFormat: true });
const textTransport = createGrpcWebTransport({ baseUrl, useBinaryFormat: false });
const auth = { headers: { authorization: `Bearer ${token}` } };
const out = {};

// Unary, public, from proto/.
const jwks = await createClient(TokenService, transport).getJwks({});
out.kids = jwks.keys.map((k) => k.kid);

// Unary with a credential, binary and JSON-in-gRPC-web are both grpc-web framing.
const widgets = createClient(WidgetService, transport);
const widget = await widgets.getWidget({ widgetId: "w1" }, auth);
out.widget = { id: widget.widget?.id, status: WidgetStatus[widget.widget?.status ?? 0], weight: String(widget.widget?.weight) };

// A backend error: the status and its details travel in the trailers.
try {
  await widgets.getWidget({ widgetId: "missing" }, auth);
  out.missing = "no error";
} catch (e) {
  const err = ConnectError.from(e);
  out.missing = { code: err.code, message: err.rawMessage };
}

// No credential on a protected method.
try {
  await widgets.getWidget({ widgetId: "w1" });
  out.anonymous = "no error";
} catch (e) {
  out.anonymous = { code: ConnectError.from(e).code };
}

// Server streaming.
out.streamed = [];
for await (const w of widgets.watchWidgets({ count: 3 }, auth)) {
  out.streamed.push(w.id);
}

// The same unary call with the JSON codec (grpc-web+json) is refused by the gateway, which
// speaks protobuf only; the binary-format text mode is the browser default elsewhere.
try {
  await createClient(WidgetService, textTransport).getWidget({ widgetId: "w1" }, auth);
  out.json_codec = "accepted";
} catch (e) {
  out.json_codec = { code: ConnectError.from(e).code };
}

console.log(JSON.stringify(out));
