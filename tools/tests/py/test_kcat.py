"""kcat 1.7.1 on Debian's librdkafka 2.0.2: an old client, so these scenarios exercise ApiVersions
negotiation (KIP-35/KIP-511) with a client that knows fewer API versions than the broker serves."""

import re

import pytest

from kclients import CODECS, cf_consume, kcat

N = 25


def kcat_lines(n, tag):
    return [(f"k{tag}-{i}", f"value {tag} {i} " + "x" * (i * 7)) for i in range(n)]


def kcat_produce(bootstrap, topic, lines, codec):
    data = "".join(f"{k}:{v}\n" for k, v in lines).encode()
    kcat("-b", bootstrap, "-P", "-t", topic, "-p", "0", "-K:", "-z", codec,
         "-H", "source=kcat", "-H", f"codec={codec}", "-X", "acks=all", input_bytes=data)


def kcat_consume(bootstrap, topic, count):
    out = kcat("-b", bootstrap, "-C", "-t", topic, "-p", "0", "-e", "-o", "beginning", "-c", str(count),
               "-f", "%p|%o|%k|%s|%h\n").stdout.decode()
    rows = []
    for line in out.splitlines():
        p, o, k, s, h = line.split("|", 4)
        rows.append((int(p), int(o), k, s, h))
    return rows


def test_kcat_metadata_lists_broker_and_topic(broker, topic_name):
    kcat_produce(broker.bootstrap, topic_name, kcat_lines(1, "m"), "none")
    out = kcat("-b", broker.bootstrap, "-L").stdout.decode()
    assert re.search(r"^ 1 brokers:$", out, re.M), out
    assert re.search(rf"^  broker (-?\d+) at 127\.0\.0\.1:{broker.port}", out, re.M), out
    assert f'topic "{topic_name}" with 1 partitions:' in out, out
    m = re.search(r"partition 0, leader (-?\d+), replicas: (\S+), isrs: (\S+)", out)
    assert m, out
    broker_id = re.search(r"broker (-?\d+) at", out).group(1)
    assert m.group(1) == broker_id, "the single node leads its partitions"
    assert "Error" not in out and "error" not in out, out


def test_kcat_metadata_for_one_topic(broker, topic_name):
    kcat_produce(broker.bootstrap, topic_name, kcat_lines(1, "m"), "none")
    out = kcat("-b", broker.bootstrap, "-L", "-t", topic_name).stdout.decode()
    assert f'topic "{topic_name}" with 1 partitions:' in out, out


@pytest.mark.parametrize("codec", CODECS)
def test_kcat_produce_consume_each_codec(broker, topic_name, codec):
    lines = kcat_lines(N, codec)
    kcat_produce(broker.bootstrap, topic_name, lines, codec)
    rows = kcat_consume(broker.bootstrap, topic_name, N)
    assert rows == [(0, i, k, v, f"source=kcat,codec={codec}") for i, (k, v) in enumerate(lines)]
    # The same records through the newest librdkafka, byte for byte, headers in order.
    got = cf_consume(broker.bootstrap, topic_name, [0], N)
    assert [(g.offset, g.key, g.value, g.headers) for g in got[:N]] == [
        (i, k.encode(), v.encode(), [("source", b"kcat"), ("codec", codec.encode())]) for i, (k, v) in enumerate(lines)
    ]


def test_kcat_restart_reads_everything_again(broker, topic_name):
    expected = []
    for codec in CODECS:
        lines = kcat_lines(8, codec)
        kcat_produce(broker.bootstrap, topic_name, lines, codec)
        expected += [(k, v, f"source=kcat,codec={codec}") for k, v in lines]
    broker.restart()
    rows = kcat_consume(broker.bootstrap, topic_name, len(expected))
    assert [(o, k, s, h) for _, o, k, s, h in rows] == [(i, *e) for i, e in enumerate(expected)]
