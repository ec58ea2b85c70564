// An MQTT.js 5 client for ferry's conformance tests (internal/conformance).
//
// Usage: node client.js roundtrip URL VERSION QOS SIZE TOPIC
//
// roundtrip subscribes one client to TOPIC, publishes SIZE bytes to it from
// a second client (MQTT 5: with a user property, as issue 13 item 1 found
// sensors do) and waits for the publish callback (PUBACK or PUBCOMP, at
// once for QoS 0) and for the message. URL is mqtt://host:port or
// ws://host:port/path. It prints one JSON line with what it saw and exits
// 0 when both happened within 10 s without an error, 1 otherwise.
'use strict';
const mqtt = require('mqtt');

const [mode, url, version, qosArg, sizeArg, topic] = process.argv.slice(2);
if (mode !== 'roundtrip' || !topic) {
  console.error('usage: node client.js roundtrip URL VERSION QOS SIZE TOPIC');
  process.exit(2);
}
const qos = Number(qosArg);
const size = Number(sizeArg);
const protocolVersion = version === '5' ? 5 : 4;
const state = { subscribed: false, published: false, received: -1, qos: -1, errors: [] };

function finish(code) {
  console.log(JSON.stringify(state));
  process.exit(code);
}
setTimeout(() => finish(1), 10000).unref();

function client(id) {
  const c = mqtt.connect(url, { protocolVersion, clientId: id, clean: true, reconnectPeriod: 0, connectTimeout: 5000 });
  c.on('error', (err) => { state.errors.push(String(err && err.message)); finish(1); });
  return c;
}

const sub = client('js-sub-' + process.hrtime.bigint());
let pub;
let done = 0;
function step() { if (++done === 2) { pub.end(); sub.end(); finish(state.errors.length ? 1 : 0); } }

sub.on('message', (t, payload, packet) => {
  state.received = payload.length;
  state.qos = packet.qos;
  step();
});
sub.on('connect', () => {
  sub.subscribe(topic, { qos }, (err) => {
    if (err) { state.errors.push(String(err.message)); finish(1); }
    state.subscribed = true;
    pub = client('js-pub-' + process.hrtime.bigint());
    pub.on('connect', () => {
      const opts = { qos };
      if (protocolVersion === 5) opts.properties = { userProperties: { k: 'v' } };
      pub.publish(topic, Buffer.alloc(size, 'x'), opts, (err) => {
        if (err) { state.errors.push(String(err.message)); finish(1); }
        state.published = true;
        step();
      });
    });
  });
});
