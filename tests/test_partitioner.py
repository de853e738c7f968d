"""The core's murmur2 places keys exactly where aiokafka's (the Java client's) does."""

from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from streams.core.partitioner import murmur2, partition_for_key


@given(st.binary(max_size=300))
def test_murmur2_equals_aiokafkas(data: bytes):
    assert murmur2(data) == aiokafka_murmur2(data)


@given(st.text(max_size=64), st.integers(1, 512))
def test_partition_for_key_is_kafkas_default_partitioner(key: str, partitions: int):
    raw = key.encode()
    assert partition_for_key(raw, partitions) == (aiokafka_murmur2(raw) & 0x7FFFFFFF) % partitions


def test_known_java_client_values():
    # Utils.murmur2 test vectors of the Java client (org.apache.kafka.common.utils.UtilsTest)
    assert murmur2(b"21") == (-973932308) & 0xFFFFFFFF
    assert murmur2(b"foobar") == (-790332482) & 0xFFFFFFFF
    assert murmur2(b"a-little-bit-long-string") == (-985981536) & 0xFFFFFFFF
    assert murmur2(b"") == 275646681
