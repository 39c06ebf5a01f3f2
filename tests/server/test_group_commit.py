"""Group commit with durability always: before a turn with writes is synced,
the server waits (at most as long as the last sync took) while the turn holds
fewer clients than the biggest of the last 8 groups, so clients whose
requests are on their way share the sync. These tests pin down when it waits
and when it must not, from INFO persistence's simdr_group_commits,
simdr_group_commit_clients and simdr_group_commit_waits; DEBUG SLEEP holds
the event loop while requests queue up, so a turn's clients are known."""
import time

from serverutil import Server, encode

GATHER_HISTORY = 8


def stats(r):
    info = r.info("persistence")
    return (info["simdr_group_commits"], info["simdr_group_commit_clients"],
            info["simdr_group_commit_waits"])


def one_turn(server, writers, tag):
    """Holds the loop with DEBUG SLEEP while each of writers sends a SET, so
    all of them are read in the one turn after the sleep."""
    holder = server.raw()
    holder.send(encode("DEBUG", "SLEEP", "2"))
    time.sleep(0.1)
    for i, w in enumerate(writers):
        w.send(encode("SET", "%s-%d" % (tag, i), "v%d" % i))
    assert holder.read_reply() == b"+OK\r\n"
    for w in writers:
        assert w.read_reply() == b"+OK\r\n"
    holder.close()


def test_waits_for_the_clients_of_the_last_groups_and_forgets_them():
    with Server("--durability", "always") as s:
        r = s.client()
        writers = [s.raw() for _ in range(5)]
        one_turn(s, writers, "five")
        commits, clients, waits = stats(r)
        assert (commits, clients, waits) == (1, 5, 0)  # no history yet: no wait

        # Three of the five come back: the turn waits for the other two,
        # which do not come, then syncs the three.
        one_turn(s, writers[:3], "three")
        commits, clients, waits = stats(r)
        assert (commits, clients, waits) == (2, 8, 1)

        # A lone client waits while a group bigger than one is among the
        # last 8, then never again.
        lone = writers[0]
        for i in range(20):
            lone.send(encode("SET", "lone-%d" % i, "x"))
            assert lone.read_reply() == b"+OK\r\n"
        commits, clients, waits = stats(r)
        assert commits == 22 and clients == 28
        assert waits == 1 + GATHER_HISTORY
        for w in writers:
            w.close()
        for i in range(5):
            assert r.get("five-%d" % i) == b"v%d" % i
        for i in range(20):
            assert r.get("lone-%d" % i) == b"x"


def test_a_lone_client_never_waits():
    with Server("--durability", "always") as s:
        w = s.raw()
        for i in range(50):
            w.send(encode("SET", "k%d" % i, "v"))
            assert w.read_reply() == b"+OK\r\n"
        r = s.client()
        assert stats(r) == (50, 50, 0)


def test_no_group_commit_without_always():
    with Server("--durability", "everysec") as s:
        w = s.raw()
        for i in range(10):
            w.send(encode("SET", "k%d" % i, "v"))
            assert w.read_reply() == b"+OK\r\n"
        assert stats(s.client()) == (0, 0, 0)
