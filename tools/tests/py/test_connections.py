"""Many concurrent connections: 1,000 clients each complete an ApiVersions exchange (KIP-35) while
all stay open, and a real client still produces and consumes meanwhile."""

import resource
import selectors
import time

import kwire
from kclients import cf_consume, cf_produce, expected_got, kp_consume, sample_records

CONNECTIONS = 1000


def test_thousand_concurrent_connections_each_get_api_versions(broker, topic_name):
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft >= CONNECTIONS + 200, f"RLIMIT_NOFILE {soft} too low for this test (conftest raises it)"
    socks = []
    try:
        for i in range(CONNECTIONS):
            socks.append(kwire.connect(broker.addr, timeout_s=20))
        # Every connection sends its request before any response is read.
        for i, s in enumerate(socks):
            s.sendall(kwire.api_versions_v0(i))
        sel = selectors.DefaultSelector()
        for i, s in enumerate(socks):
            sel.register(s, selectors.EVENT_READ, i)
        answered = {}
        deadline = time.monotonic() + 60
        while len(answered) < CONNECTIONS and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1):
                i = key.data
                s = key.fileobj
                sel.unregister(s)
                s.settimeout(10)
                corr, body = kwire.recv_frame(s)
                assert corr == i
                err, apis = kwire.parse_api_versions_v0(body)
                assert err == 0
                answered[i] = apis
        sel.close()
        assert len(answered) == CONNECTIONS, f"only {len(answered)}/{CONNECTIONS} connections answered in 60 s"
        assert all(a == answered[0] for a in answered.values()), "every connection sees the same API ranges"

        # With all 1,000 still open, real clients work.
        recs = sample_records(20, partition=0, seed=3)
        offsets = cf_produce(broker.bootstrap, topic_name, recs, "zstd")
        want = expected_got(recs, offsets)
        assert cf_consume(broker.bootstrap, topic_name, [0], 20)[:20] == want
        assert kp_consume(broker.bootstrap, topic_name, [0], 20)[:20] == want

        # A second round on the same connections: they are still served.
        for i, s in enumerate(socks[:100]):
            s.sendall(kwire.api_versions_v0(CONNECTIONS + i))
        for i, s in enumerate(socks[:100]):
            corr, _ = kwire.recv_frame(s)
            assert corr == CONNECTIONS + i
    finally:
        for s in socks:
            s.close()
    assert broker.alive()
    # And after they all closed.
    more = sample_records(5, partition=0, seed=4)
    offs = cf_produce(broker.bootstrap, topic_name, more, "none")
    assert [o for _, o in offs] == list(range(20, 25))
