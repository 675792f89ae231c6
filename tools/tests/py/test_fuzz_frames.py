"""Socket-level fuzzing of a live broker: mutated versions of valid requests (ApiVersions v0/v3,
Metadata v1, Produce v7 with a real record batch) sent on fresh connections for a bounded time.
The broker may answer or close each connection, but must stay up, keep serving a bystander
connection, and keep every record written before.

FRESHET_PY_FUZZ_SECS bounds the run (default 15); FRESHET_FUZZ_SEED replays (the seed is printed).
Complements net/tests/fuzz_decode.rs, which fuzzes the decoder in-process much faster.
"""

import os
import random
import socket
import struct
import time

import kwire
from kclients import cf_consume, cf_produce, expected_got, sample_records

INTERESTING = [0, 1, -1, 0x7F, 0x80, 0xFF, 0x7FFF, -0x8000, 0x7FFFFFFF, -0x80000000, 0x10000]


def seeds(topic):
    batch = kwire.build_batch([(b"k%d" % i, b"v" * i, [("h", b"x")]) for i in range(4)])
    return [
        kwire.api_versions_v0(1)[4:],
        kwire.api_versions_v3(2)[4:],
        kwire.metadata_v1(3, [topic])[4:],
        kwire.metadata_v1(4, None)[4:],
        kwire.produce_v7(5, topic, 0, batch)[4:],
    ]


def mutate(rng, data, pool):
    d = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(8)
        n = len(d)
        if op == 0 and n:
            d[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif op == 1 and n >= 4:
            width = rng.choice([1, 2, 4])
            i = rng.randrange(n - width + 1)
            d[i:i + width] = (rng.choice(INTERESTING) & ((1 << (8 * width)) - 1)).to_bytes(width, "big")
        elif op == 2:
            i = rng.randrange(n + 1)
            d[i:i] = rng.randbytes(rng.randint(1, 16))
        elif op == 3 and n:
            i = rng.randrange(n)
            del d[i:i + rng.randint(1, 32)]
        elif op == 4:
            del d[rng.randrange(n + 1):]
        elif op == 5 and n >= 4:
            d[2:4] = struct.pack(">h", rng.choice([rng.randrange(20), rng.randrange(-32768, 32768)]))
        elif op == 6 and n >= 2:
            d[0:2] = struct.pack(">h", rng.choice([rng.randrange(70), rng.randrange(-32768, 32768)]))
        else:
            other = rng.choice(pool)
            cut = rng.randrange(n + 1)
            d[cut:] = other[rng.randrange(len(other)):]
    return bytes(d)


def test_mutated_frames_never_take_the_broker_down(broker, topic_name):
    seed = int(os.environ.get("FRESHET_FUZZ_SEED", time.time_ns() & 0xFFFFFFFF))
    budget_s = float(os.environ.get("FRESHET_PY_FUZZ_SECS", "15"))
    print(f"socket fuzz seed {seed} (replay: FRESHET_FUZZ_SEED={seed})")
    rng = random.Random(seed)
    recs = sample_records(10, partition=0, seed=5)
    offsets = cf_produce(broker.bootstrap, topic_name, recs, "snappy")
    bystander = kwire.connect(broker.addr)
    # Mutated produces may well be valid (the base offset is outside the CRC): aim them elsewhere.
    pool = seeds(topic_name + "-fuzz")
    sent = 0
    log = []
    deadline = time.monotonic() + budget_s
    while time.monotonic() < deadline:
        payload = mutate(rng, rng.choice(pool), pool)
        # Mostly a consistent size prefix (so the decoder sees the whole mutated frame), sometimes not.
        prefix = len(payload) if rng.random() < 0.9 else rng.choice([len(payload) + rng.randint(1, 64),
                                                                     max(0, len(payload) - 3)])
        wire = struct.pack(">i", prefix) + payload
        log.append(wire)
        s = socket.create_connection(broker.addr, timeout=5)
        try:
            s.sendall(wire)
            s.settimeout(0.2)
            try:
                s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                pass
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            s.close()
        sent += 1
        if sent % 25 == 0 or not broker.alive():
            assert broker.alive(), (f"broker died (seed {seed}); last frames sent (hex):\n"
                                    + "\n".join(w.hex() for w in log[-5:]) + "\n" + broker.log_tail())
    print(f"socket fuzz: {sent} frames")
    assert broker.alive(), f"broker died (seed {seed}); last frame: {log[-1].hex()}"
    bystander.sendall(kwire.api_versions_v0(99))
    corr, _ = kwire.recv_frame(bystander)
    assert corr == 99
    bystander.close()
    assert cf_consume(broker.bootstrap, topic_name, [0], 10)[:10] == expected_got(recs, offsets)
    more = cf_produce(broker.bootstrap, topic_name, sample_records(2, partition=0, seed=6), "none")
    assert [o for _, o in more] == [10, 11]
    assert sent >= 20
