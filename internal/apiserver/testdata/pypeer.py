"""Independent libzmq peer for the apiserver tests (pyzmq + protobuf).

Usage: pypeer.py PYDIR SCENARIO ENDPOINT [ARGS...]

PYDIR holds message_pb2.py, message_0_pb2.py and encrypted_pb2.py generated
by protoc from api/protocol at test time. Each scenario prints one JSON
object on stdout; the Go test checks it. Exit status 0 unless the script
itself breaks.
"""
import json
import os
import socket
import sys
import threading
import time

import zmq

sys.path.insert(0, sys.argv[1])
import message_pb2  # noqa: E402
import message_0_pb2  # noqa: E402
import encrypted_pb2  # noqa: E402

TIMEOUT_MS = 10000


def request(*items):
    """Build a Messages; items are (message_id, field) or None for a
    Message without message_0."""
    m = message_pb2.Messages()
    for it in items:
        msg = m.messages.add()
        msg.revision = 6
        if it is None:
            continue
        mid, field = it
        msg.message_0.message_id = mid
        req = msg.message_0.request
        if field in ("nic_list", "sg_list", "app_status", "app_quit"):
            setattr(req, field, True)
        elif field == "nic_details":
            req.nic_details = "vnic-" + mid
        elif field == "sg_details":
            req.sg_details = ""
        else:
            raise ValueError(field)
    return m.SerializeToString()


def describe(raw):
    """Decode a reply frame into JSON-friendly facts."""
    rep = message_pb2.Messages()
    try:
        rep.ParseFromString(raw)
    except Exception as e:  # noqa: BLE001
        return {"unparsable": str(e)}
    out = {"messages": []}
    for m in rep.messages:
        d = {"revision": m.revision}
        if m.HasField("error"):
            d["error"] = message_pb2.Error.Code.Name(m.error.code)
        if m.HasField("message_0"):
            v = m.message_0
            d["message_id"] = v.message_id
            d["status"] = v.response.status.status
            d["nic_list"] = list(v.response.nic_list)
        out["messages"].append(d)
    if rep.HasField("encrypted"):
        e = {}
        if rep.encrypted.HasField("error"):
            e["error"] = encrypted_pb2.Encrypted.Error.Code.Name(rep.encrypted.error.code)
        if rep.encrypted.HasField("aes256cbc_sha512"):
            e["bytes"] = len(rep.encrypted.aes256cbc_sha512)
        out["encrypted"] = e
    return out


def req_socket(ctx, endpoint, timeout_ms=TIMEOUT_MS):
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.IPV6, 1)
    s.setsockopt(zmq.RCVTIMEO, timeout_ms)
    s.setsockopt(zmq.SNDTIMEO, timeout_ms)
    s.connect(endpoint)
    return s


def call(sock, frame):
    sock.send(frame)
    return sock.recv()


def scenario_roundtrip(ctx, endpoint, args):
    s = req_socket(ctx, endpoint)
    replies = [
        describe(call(s, request(("a", "nic_list"), None, ("c", "sg_list")))),
        describe(call(s, request(("d", "app_status")))),
        describe(call(s, request(("e", "nic_details")))),
    ]
    return {"replies": replies}


def scenario_raw(ctx, endpoint, args):
    s = req_socket(ctx, endpoint)
    return {"replies": [describe(call(s, bytes.fromhex(h))) for h in args]}


def scenario_multipart(ctx, endpoint, args):
    s = req_socket(ctx, endpoint)
    s.send_multipart([request(("m1", "nic_list")), request(("m2", "nic_list"))])
    first = describe(s.recv())
    second = describe(call(s, request(("after", "nic_list"))))
    return {"replies": [first, second]}


def scenario_huge(ctx, endpoint, args):
    size = int(args[0])
    big = req_socket(ctx, endpoint, 500)
    big.send(b"\x0a" * size)
    t0 = time.time()
    normal = req_socket(ctx, endpoint)
    normal_reply = describe(call(normal, request(("small", "nic_list"))))
    try:
        big.recv()
        huge = "reply"
    except zmq.Again:
        huge = "timeout"
    # A fresh connection after the huge one is served too.
    after = describe(call(req_socket(ctx, endpoint), request(("after", "nic_list"))))
    return {"huge": huge, "normal": normal_reply, "after": after, "seconds": time.time() - t0}


def host_port(endpoint):
    hp = endpoint.split("://", 1)[1]
    host, port = hp.rsplit(":", 1)
    return host.strip("[]"), int(port)


def scenario_silent(ctx, endpoint, args):
    """Raw TCP peers that never speak, or speak garbage, while a REQ client
    is served."""
    host, port = host_port(endpoint)
    silent = socket.create_connection((host, port), timeout=5)
    garbage = socket.create_connection((host, port), timeout=5)
    garbage.sendall(os.urandom(64))
    # A half ZMTP greeting, then nothing.
    half = socket.create_connection((host, port), timeout=5)
    half.sendall(b"\xff\x00\x00\x00\x00\x00\x00\x00\x01\x7f")
    t0 = time.time()
    s = req_socket(ctx, endpoint, 5000)
    replies = [describe(call(s, request((f"s{i}", "nic_list")))) for i in range(5)]
    elapsed = time.time() - t0
    # The silent peer is still connected (the server did not drop it nor
    # block on it).
    # (libzmq sends its greeting at once: read it, then expect no EOF.)
    silent.setblocking(False)
    silent_state = "open"
    try:
        while True:
            if silent.recv(4096) == b"":
                silent_state = "closed"
                break
    except BlockingIOError:
        pass
    except OSError as e:
        silent_state = "error: " + str(e)
    for c in (silent, garbage, half):
        c.close()
    return {"replies": replies, "seconds": elapsed, "silent": silent_state}


def scenario_concurrent(ctx, endpoint, args):
    clients, per = int(args[0]), int(args[1])
    kinds = ["nic_list", "sg_list", "app_status", "nic_details"]
    results = [None] * clients
    barrier = threading.Barrier(clients)

    def worker(i):
        ok, errors = 0, []
        try:
            s = req_socket(ctx, endpoint)
            barrier.wait(timeout=30)
            for j in range(per):
                mid = f"c{i}-{j}"
                kind = kinds[(i + j) % len(kinds)]
                d = describe(call(s, request((mid, kind))))
                m = d.get("messages", [{}])
                if (len(m) == 1 and m[0].get("message_id") == mid
                        and m[0].get("nic_list") == [kind] and m[0].get("revision") == 6):
                    ok += 1
                else:
                    errors.append(d)
            s.close()
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
        results[i] = (ok, errors)

    t0 = time.time()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errs = [e for r in results for e in r[1]]
    return {"ok": sum(r[0] for r in results), "errors": errs[:5], "seconds": time.time() - t0}


def scenario_bench(ctx, endpoint, args):
    n = int(args[0])
    s = req_socket(ctx, endpoint)
    frame = request(("b", "nic_list"))
    call(s, frame)  # connect and warm up
    t0 = time.perf_counter()
    for _ in range(n):
        s.send(frame)
        s.recv()
    el = time.perf_counter() - t0
    return {"n": n, "seconds": el, "per_second": n / el}


def inverted_cbc(key):
    """The original's envelope built from pyca/cryptography primitives:
    independent of the Go code under test."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    def seal(plain):
        iv = os.urandom(16)
        h = hashes.Hash(hashes.SHA512())
        h.update(plain)
        pad = 16 - len(plain) % 16
        body = h.finalize() + plain + bytes([pad]) * pad
        # CBC decryption applied to the plaintext: the original's quirk.
        dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
        return iv + dec.update(body) + dec.finalize()

    def open_(field):
        iv, ct = field[:16], field[16:]
        enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        body = enc.update(ct) + enc.finalize()
        pad = body[-1]
        plain = body[64:len(body) - pad]
        h = hashes.Hash(hashes.SHA512())
        h.update(plain)
        if h.finalize() != body[:64]:
            raise ValueError("bad checksum")
        return plain

    return seal, open_


def scenario_encrypted(ctx, endpoint, args):
    try:
        seal, open_ = inverted_cbc(bytes.fromhex(args[0]))
    except ImportError:
        return {"skip": "python3-cryptography not installed"}
    s = req_socket(ctx, endpoint)
    outer = message_pb2.Messages()
    outer.encrypted.aes256cbc_sha512 = seal(request(("x1", "nic_list"), None, ("x2", "sg_list")))
    rep = message_pb2.Messages()
    rep.ParseFromString(call(s, outer.SerializeToString()))
    if not rep.HasField("encrypted") or not rep.encrypted.HasField("aes256cbc_sha512"):
        return {"error": "no encrypted reply", "reply": describe(rep.SerializeToString())}
    inner = describe(open_(rep.encrypted.aes256cbc_sha512))
    clear = describe(call(s, request(("clear", "nic_list"))))
    return {"inner": inner, "clear": clear}


def scenario_apiv0(ctx, endpoint, args):
    """Every MessageV0 request (20 of the original plus nic_counters), one
    Messages each; replies are printed in text format, as Python decoded
    them."""
    from google.protobuf import text_format

    V0 = message_0_pb2.MessageV0
    steps = []

    def step(name, fill):
        steps.append((name, fill))

    def nic_add(r):
        n = r.nic_add
        n.id, n.mac, n.vni = "vnic1", "52:54:00:12:34:56", 1337
        n.ip.extend(["10.0.0.1", "2001:0db8:0000:0000:0000:0000:0000:0001"])
        n.security_group.append("sg-web")
        n.ip_anti_spoof = True

    def nic_add_tap(r):
        n = r.nic_add
        n.id, n.mac, n.vni, n.type = "vnic2", "52:54:00:00:00:02", 1337, V0.Nic.TAP

    def nic_update(r):
        r.nic_update.id = "vnic1"
        r.nic_update.ip.append("10.0.0.2")

    def rule(rl, proto, port, cidr, mask):
        rl.direction = V0.Rule.INBOUND
        rl.protocol = proto
        rl.port_start = rl.port_end = port
        rl.cidr.address, rl.cidr.mask_size = cidr, mask

    def sg_add(r):
        r.sg_add.id = "sg-web"
        r.sg_add.member.append("10.0.0.9")
        rule(r.sg_add.rule.add(), 6, 22, "0.0.0.0", 0)

    def sg_rule_add(r):
        r.sg_rule_add.sg_id = "sg-web"
        rule(r.sg_rule_add.rule, 17, 53, "10.0.0.0", 8)

    def sg_rule_del(r):
        r.sg_rule_del.sg_id = "sg-web"
        rule(r.sg_rule_del.rule, 6, 22, "0.0.0.0", 0)

    def sg_member_add(r):
        r.sg_member_add.sg_id, r.sg_member_add.member = "sg-web", "10.0.0.10"

    def sg_member_del(r):
        r.sg_member_del.sg_id, r.sg_member_del.member = "sg-web", "10.0.0.9"

    def setf(field, value):
        return lambda r: setattr(r, field, value)

    step("nic_add", nic_add)
    step("nic_add_tap", nic_add_tap)
    step("nic_update", nic_update)
    step("nic_list", setf("nic_list", True))
    step("nic_details", setf("nic_details", "vnic1"))
    step("nic_details_missing", setf("nic_details", "nope"))
    step("nic_export", setf("nic_export", "vnic1"))
    step("nic_stats", setf("nic_stats", "vnic1"))
    step("nic_counters", setf("nic_counters", "vnic1"))
    step("sg_add", sg_add)
    step("sg_list", setf("sg_list", True))
    step("sg_rule_add", sg_rule_add)
    step("sg_rule_del", sg_rule_del)
    step("sg_rule_list", setf("sg_rule_list", "sg-web"))
    step("sg_member_add", sg_member_add)
    step("sg_member_del", sg_member_del)
    step("sg_member_list", setf("sg_member_list", "sg-web"))
    step("sg_details", setf("sg_details", ""))
    step("app_status", setf("app_status", True))
    step("app_config", lambda r: setattr(r.app_config, "log_level", "debug"))
    step("app_config_bad", lambda r: setattr(r.app_config, "log_level", "loud"))
    step("nic_del", setf("nic_del", "vnic2"))
    step("nic_list_after", setf("nic_list", True))
    step("sg_del", setf("sg_del", "sg-web"))
    step("sg_list_after", setf("sg_list", True))
    step("app_quit", setf("app_quit", True))

    s = req_socket(ctx, endpoint)
    replies = {}
    for name, fill in steps:
        m = message_pb2.Messages()
        msg = m.messages.add()
        msg.revision = 6
        msg.message_0.message_id = name
        fill(msg.message_0.request)
        rep = message_pb2.Messages()
        rep.ParseFromString(call(s, m.SerializeToString()))
        replies[name] = text_format.MessageToString(rep)
    return {"order": [n for n, _ in steps], "replies": replies}


SCENARIOS = {
    "apiv0": scenario_apiv0,
    "roundtrip": scenario_roundtrip,
    "raw": scenario_raw,
    "multipart": scenario_multipart,
    "huge": scenario_huge,
    "silent": scenario_silent,
    "concurrent": scenario_concurrent,
    "bench": scenario_bench,
    "encrypted": scenario_encrypted,
}


def main():
    scenario, endpoint, args = sys.argv[2], sys.argv[3], sys.argv[4:]
    ctx = zmq.Context()
    try:
        out = SCENARIOS[scenario](ctx, endpoint, args)
    except zmq.Again:
        out = {"error": "timeout"}
    print(json.dumps(out))
    sys.stdout.flush()
    ctx.destroy(linger=0)


if __name__ == "__main__":
    main()
