"""A partition's owner stamp and done mark read back from HMGET's answer
(streams/sink/writer.py): whole where Redis holds every field, absent where it lacks one."""

from __future__ import annotations

from streams.sink.writer import DONE_FIELDS, STAMP_FIELDS, fields_of, marks_of, stamps_of


def test_the_fields_of_each_partition_in_order():
    assert fields_of([3, 0], STAMP_FIELDS) == ["3.epoch", "3.seq", "0.epoch", "0.seq"]
    assert fields_of([1], DONE_FIELDS) == ["1.done_epoch", "1.done_seq", "1.decayed"]


def test_stamps_are_read_where_both_fields_are_held():
    values = [b"4", b"17", None, None, b"2", None]
    assert stamps_of(values, [0, 1, 2]) == {0: (4, 17)}


def test_done_marks_are_read_where_all_three_fields_are_held():
    values = [b"4", b"17", b"1700000000000", b"5", b"1", None]
    assert marks_of(values, [6, 7]) == {6: (4, 17, 1_700_000_000_000)}
