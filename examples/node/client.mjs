// A flashtx client in Node.js, built from the .proto files alone (no generated code):
// adds a SKU with one unit, places an order, replays its idempotency key, is refused the
// next unit (the SKU and what is available are read from ErrorInfo metadata, not from
// the message text), pays the order and watches its events arrive.
//
//   FLASHTX_ADDRESS=127.0.0.1:50051 FLASHTX_API_KEY=ftx1.... node client.mjs
//
// Prints one JSON line of what it saw; exits 1 on anything unexpected.

import path from "node:path";
import { fileURLToPath } from "node:url";

import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const contract = path.resolve(here, "../../protos");
const address = process.env.FLASHTX_ADDRESS ?? "127.0.0.1:50051";
const apiKey = process.env.FLASHTX_API_KEY ?? "";
const run = process.env.FLASHTX_RUN ?? String(Date.now());

const definition = protoLoader.loadSync(
  ["flashtx/v1/order.proto", "flashtx/v1/stock.proto", "flashtx/v1/event.proto"],
  { includeDirs: [contract], keepCase: true, longs: String, enums: String, defaults: true },
);
const v1 = grpc.loadPackageDefinition(definition).flashtx.v1;
const credentials = grpc.credentials.createInsecure();
const orders = new v1.OrderService(address, credentials);
const stock = new v1.StockService(address, credentials);
const events = new v1.EventService(address, credentials);

// google.rpc.Status and its details, to read the grpc-status-details-bin trailer.
const rpc = new protobuf.Root();
rpc.resolvePath = (_origin, target) => path.join(here, "protos", target);
rpc.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"]);
const Status = rpc.lookupType("google.rpc.Status");
const ErrorInfo = rpc.lookupType("google.rpc.ErrorInfo");

function metadata() {
  const m = new grpc.Metadata();
  m.set("authorization", `Bearer ${apiKey}`);
  return m;
}

function call(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata(), { deadline: Date.now() + 30_000 }, (error, reply) =>
      error ? reject(error) : resolve(reply));
  });
}

function errorInfo(error) {
  const [raw] = error.metadata.get("grpc-status-details-bin");
  const status = Status.decode(raw);
  for (const detail of status.details) {
    if (detail.type_url.endsWith("/google.rpc.ErrorInfo")) {
      return ErrorInfo.decode(detail.value);
    }
  }
  throw new Error("no ErrorInfo in the status details");
}

function check(condition, what) {
  if (!condition) throw new Error(`unexpected: ${what}`);
}

async function firstEvent(orderId, type) {
  // From the oldest event the stream holds ("0"), only this order's `type`.
  const stream = events.WatchEvents({ cursor: "0", types: [type] }, metadata());
  try {
    for await (const message of stream) {
      if (message.event.order_id === orderId) return message.event;
    }
  } finally {
    stream.cancel();
  }
  throw new Error("the event stream ended");
}

async function main() {
  const sku = `node-${run}`;
  const added = await call(stock, "UpsertSkus", {
    skus: [{ sku_id: sku, name: "Node", price_minor: 250, on_hand: 1 }],
  });
  check(added.results[0].code === "RESULT_CODE_OK", `UpsertSkus ${added.results[0].code}`);

  const request = { idempotency_key: `k1-${run}`, buyer_id: "node-buyer-1",
                    lines: [{ sku_id: sku, quantity: 1 }] };
  const placed = await call(orders, "PlaceOrder", request);
  const again = await call(orders, "PlaceOrder", request);
  check(again.replayed && again.order.order_id === placed.order.order_id, "replay");

  let refusal;
  try {
    await call(orders, "PlaceOrder", { idempotency_key: `k2-${run}`, buyer_id: "node-buyer-2",
                                       lines: [{ sku_id: sku, quantity: 1 }] });
  } catch (error) {
    check(error.code === grpc.status.FAILED_PRECONDITION, `code ${error.code}`);
    refusal = errorInfo(error);
  }
  check(refusal !== undefined, "the second unit was sold");

  const paid = await call(orders, "PayOrder", { order_id: placed.order.order_id,
                                                payment_reference: `pay-${run}` });
  const event = await firstEvent(placed.order.order_id, "order.paid");

  console.log(JSON.stringify({
    order_id: placed.order.order_id,
    total_minor: placed.order.total_minor,
    replayed: again.replayed,
    refused: { reason: refusal.reason, metadata: refusal.metadata },
    paid_status: paid.order.status,
    event: { type: event.type, sequence: event.sequence, order_status: event.order.status },
  }));
}

main().then(() => process.exit(0), (error) => {
  console.error(error);
  process.exit(1);
});
