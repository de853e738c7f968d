"""The top-N diff: a client that removes `left` and upserts `entries` holds the new top."""

from hypothesis import given
from hypothesis import strategies as st

from streams.api.reader import competition_ranks
from streams.api.top_diff import Ranked, TopChange, apply, diff


def top(*members):
    """A ranked top from (account_id, score) pairs in board order."""
    ranks = competition_ranks([s for _, s in members], 1, 0)
    return [Ranked(r, a, float(s)) for (a, s), r in zip(members, ranks, strict=True)]


def copy_of(entries):
    return {e.account_id: e for e in entries}


def test_equal_tops_give_an_empty_change():
    old = top(("a", 9), ("b", 5))
    assert not diff(old, list(old))
    assert diff(old, list(old)) == TopChange((), ())


def test_an_entry_that_rises_moves_the_ones_it_passes_and_pushes_one_out():
    old = top(("a", 9), ("b", 5), ("c", 3))
    new = top(("c", 10), ("a", 9), ("b", 5))
    assert diff(old, new) == TopChange(entries=tuple(new), left=())
    newcomer = top(("a", 9), ("d", 6), ("b", 5))
    change = diff(old, newcomer)
    assert [e.account_id for e in change.entries] == ["d", "b"]  # b went from 2 to 3
    assert change.left == ("c",)


def test_a_score_change_without_a_rank_change_is_sent():
    change = diff(top(("a", 9), ("b", 5)), top(("a", 9.5), ("b", 5)))
    assert change.entries == (Ranked(1, "a", 9.5),) and change.left == ()


def test_a_tie_changes_the_rank_alone():
    change = diff(top(("a", 9), ("b", 5)), top(("a", 9), ("b", 9)))
    assert change.entries == (Ranked(1, "b", 9.0),)


def test_the_json_a_client_gets():
    change = diff(top(("a", 9), ("b", 5)), top(("c", 12), ("a", 9)))
    assert change.as_json() == {
        "entries": [{"rank": 1, "account_id": "c", "score": 12.0},
                    {"rank": 2, "account_id": "a", "score": 9.0}],
        "left": ["b"]}


boards = st.dictionaries(st.sampled_from("abcdefghij"), st.integers(0, 6), max_size=10)


@given(st.lists(boards, min_size=1, max_size=12), st.integers(1, 6))
def test_applying_every_change_holds_each_top_exactly(readings, n):
    """Successive readings of a board (ties included): the client's copy after each change
    equals that reading's top N."""
    def top_n(board):
        ordered = sorted(board.items(), key=lambda kv: (-kv[1], [-ord(c) for c in kv[0]]))
        return top(*ordered[:n])

    held = top_n(readings[0])
    client = copy_of(held)
    for board in readings[1:]:
        new = top_n(board)
        client = apply(client, diff(held, new))
        assert client == copy_of(new)
        held = new
