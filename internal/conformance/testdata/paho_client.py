#!/usr/bin/python3
"""A paho-mqtt (Debian's python3-paho-mqtt 1.6.1) client for ferry's
conformance tests (internal/conformance).

Usage: paho_client.py roundtrip HOST PORT VERSION QOS SIZE TOPIC

roundtrip subscribes one client to TOPIC, publishes SIZE bytes to it from a
second client (MQTT 5: with a user property, as issue 13 item 1 found
sensors do) and waits for the publish to be confirmed (on_publish: PUBACK
or PUBCOMP, immediately at QoS 0) and the message to arrive. It prints one
JSON line with what it saw and exits 0 when both happened within 10 s,
1 otherwise (paho's network thread dying on a bad ack shows as a timeout).
"""
import json
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

DEADLINE = 10.0


def main():
    if len(sys.argv) != 8 or sys.argv[1] != "roundtrip":
        print(__doc__, file=sys.stderr)
        return 2
    host, port = sys.argv[2], int(sys.argv[3])
    version, qos, size, topic = sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
    proto = mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311
    state = {"subscribed": False, "published": False, "received": -1, "qos": -1, "errors": []}
    subscribed, published, received = threading.Event(), threading.Event(), threading.Event()

    def on_subscribe(client, userdata, mid, *rest):
        state["subscribed"] = True
        subscribed.set()

    def on_message(client, userdata, msg):
        state["received"] = len(msg.payload)
        state["qos"] = msg.qos
        received.set()

    def on_publish(client, userdata, mid):
        state["published"] = True
        published.set()

    def client(cid):
        c = mqtt.Client(client_id=cid, protocol=proto)
        if proto == mqtt.MQTTv5:
            c.connect(host, port, keepalive=30, clean_start=True)
        else:
            c.connect(host, port, keepalive=30)
        return c

    sub = client("py-sub-%d" % time.monotonic_ns())
    sub.on_subscribe = on_subscribe
    sub.on_message = on_message
    sub.loop_start()
    sub.subscribe(topic, qos)
    ok = subscribed.wait(DEADLINE)
    if ok:
        pub = client("py-pub-%d" % time.monotonic_ns())
        pub.on_publish = on_publish
        pub.loop_start()
        props = None
        if proto == mqtt.MQTTv5:
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = ("k", "v")
        pub.publish(topic, b"x" * size, qos=qos, properties=props)
        ok = published.wait(DEADLINE) and received.wait(DEADLINE)
        pub.disconnect()
        pub.loop_stop()
    sub.disconnect()
    sub.loop_stop()
    print(json.dumps(state))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
