"""The ledger of private faust, aiokafka and mode members (streams/kafka/PRIVATE_MEMBERS.md)
holds against the installed libraries and against the code, with no broker.

* every row's member still exists on its class (a class attribute or method, or an
  instance attribute its class's source assigns), and the installed versions are the
  ones the "pinned" column names;
* faust still calls the private methods rankflow overrides;
* every `# noqa: SLF001` in streams/ names rows, and names every private member its line
  reaches;
* the reaches SLF001 cannot see (overrides, and `self._x` of a base class's members in
  rankflow's subclasses of faust, aiokafka and mode classes) all have rows.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from faust.serializers import codecs
from faust.tables.manager import TableManager

import streams.kafka.admin
import streams.kafka.app
import streams.kafka.fetched
import streams.kafka.recovered
import streams.kafka.transport
from streams.kafka.app import create_app
from streams.ops.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
LEDGER = ROOT / "streams" / "kafka" / "PRIVATE_MEMBERS.md"
KAFKA_MODULES = [streams.kafka.admin, streams.kafka.app, streams.kafka.fetched,
                 streams.kafka.recovered, streams.kafka.transport]
NOQA = re.compile(r"#\s*noqa:\s*SLF001\b(.*)$")
LABEL = re.compile(r"^ \(ledger: ([^)]+)\)")
#: `x._name` on anything but self, cls or super()
REACH = re.compile(r"(?<!\bself)(?<!\bcls)(?<!super\(\))\.(_[A-Za-z]\w*)")


@dataclass(frozen=True)
class Row:
    member: str
    kind: str
    where: str
    pinned: str
    held_by: str

    @property
    def name(self) -> str:
        return self.member.rsplit(".", 1)[1]

    @property
    def key(self) -> str:
        """`Class._member`, as a noqa comment names the row."""
        return ".".join(self.member.split(".")[-2:])


def ledger() -> list[Row]:
    rows = []
    for line in LEDGER.read_text().splitlines():
        if not line.startswith("| `"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rows.append(Row(cells[0].strip("`"), cells[1], cells[2], cells[4], cells[5]))
    return rows


ROWS = ledger()


def resolve(member: str) -> tuple[type, str]:
    """The class a dotted `package.module.Class._member` names, and `_member`."""
    parts = member.split(".")
    for split in range(len(parts) - 2, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:-1]:
            obj = getattr(obj, attribute)
        assert inspect.isclass(obj), member
        return obj, parts[-1]
    raise AssertionError(f"no importable module in {member}")


SOURCES: dict[int, str] = {}


def source(obj: Any) -> str:
    if id(obj) not in SOURCES:
        try:
            SOURCES[id(obj)] = inspect.getsource(obj)
        except (OSError, TypeError):  # built-in or compiled
            SOURCES[id(obj)] = ""
    return SOURCES[id(obj)]


def assigns(cls: type, name: str) -> bool:
    """Does the class's own source assign `self.<name>` (an instance attribute)?"""
    return re.search(rf"\bself\.{name}\s*(?::[^=\n]+)?=(?!=)", source(cls)) is not None


def defines(cls: type, name: str) -> bool:
    """A class attribute, method or property, or an instance attribute of the class."""
    return hasattr(cls, name) or any(assigns(k, name) for k in cls.__mro__)


def test_the_ledger_has_rows_and_no_member_twice():
    members = [row.member for row in ROWS]
    assert len(members) >= 20
    assert len(set(members)) == len(members)
    keys = [row.key for row in ROWS]  # what a noqa comment names
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.member)
def test_the_tests_that_hold_it_exist(row: Row):
    files = re.findall(r"tests/[\w/]+\.py", row.held_by)
    assert files, f"{row.member}: no test holds it"
    texts = [(ROOT / name).read_text() for name in files]
    for test in re.findall(r"`(test_\w+)`", row.held_by):
        assert any(f"def {test}(" in text for text in texts), f"{row.member}: {test}"


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.member)
def test_the_member_exists_in_the_installed_version(row: Row):
    cls, name = resolve(row.member)
    assert defines(cls, name), f"{row.member} is gone: read its row in {LEDGER.name}"


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.member)
def test_the_pinned_version_is_the_installed_one(row: Row):
    if row.pinned.startswith("rankflow"):
        return
    found = re.match(r"([\w-]+) (\d+\.\d+)\.x\b", row.pinned)
    assert found, f"pinned column of {row.member}: '<distribution> <major>.<minor>.x'"
    distribution, series = found.groups()
    assert version(distribution).startswith(f"{series}."), (
        f"{distribution} {version(distribution)} is installed, {row.member} was checked "
        f"against {series}.x: read the row again, then update its pinned column")


@pytest.mark.parametrize("row", [row for row in ROWS if "override" in row.kind],
                         ids=lambda row: row.member)
def test_faust_still_calls_what_rankflow_overrides(row: Row):
    """An override of a method faust no longer calls would silently do nothing."""
    cls, name = resolve(row.member)
    modules = {sys.modules[k.__module__] for k in cls.__mro__ if k is not object}
    called = re.compile(rf"\.{name}\b")
    assert any(called.search(source(module)) for module in modules), row.member


def test_the_short_fetch_wait_still_reaches_the_fetcher():
    """rankflow writes `_fetch_max_wait_ms` after the consumer is built: it takes effect
    only while `start()` hands it to the Fetcher it creates."""
    from aiokafka.consumer.consumer import AIOKafkaConsumer

    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in source(AIOKafkaConsumer.start)


def test_fausts_table_manager_start_is_still_a_sleep_then_prompt_tables_start():
    """PromptTableManager.on_start is faust's without the sleep."""
    steps = re.findall(r"await (self\.[\w.]+)\(", source(TableManager.on_start))
    assert steps == ["self.sleep", "self._update_channels", "self.recovery.start"]


def test_the_codecs_and_codec_types_still_reach_faust():
    """faust calls the codecs' `_dumps`/`_loads`, and takes a table's changelog codec
    from its key and value types' `_options.serializer`."""
    assert codecs.dumps("rankflow-utf8", "acct-1") == b"acct-1"
    assert codecs.loads("rankflow-utf8", b"acct-1") == "acct-1"
    wiring = create_app(Settings())
    for table, value_codec in ((wiring.accounts, "rankflow-account"),
                               (wiring.partitions, "rankflow-segment")):
        assert table.changelog_topic.key_serializer == "rankflow-utf8"
        assert table.changelog_topic.value_serializer == value_codec


def noqa_places() -> list[tuple[str, int, str, str, str]]:
    """(file, line number, code, label, next line's code) of each noqa: SLF001 in streams/."""
    places = []
    for path in sorted((ROOT / "streams").rglob("*.py")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            found = NOQA.search(line)
            if found:
                code = line[:found.start()]
                after = lines[i + 1].split("#")[0] if i + 1 < len(lines) else ""
                places.append((str(path.relative_to(ROOT)), i + 1, code, found.group(1),
                               after))
    return places


def test_there_are_noqa_places():
    assert len(noqa_places()) >= 20


@pytest.mark.parametrize("place", noqa_places(), ids=lambda place: f"{place[0]}:{place[1]}")
def test_each_slf001_exception_names_its_ledger_rows(place: tuple[str, int, str, str, str]):
    path, number, code, label, after = place
    found = LABEL.match(label)
    assert found, f"{path}:{number}: write `# noqa: SLF001 (ledger: Class._member)`"
    keys = {row.key for row in ROWS}
    named = set()
    for entry in (entry.strip() for entry in found.group(1).split(",")):
        if "." in entry:
            assert entry in keys, f"{path}:{number}: {entry} has no row in {LEDGER.name}"
        else:  # a bare `_member` stands for the one row of that name
            rows = [row.member for row in ROWS if row.name == entry]
            assert len(rows) == 1, f"{path}:{number}: {entry} names rows {rows}"
        name = entry.rsplit(".", 1)[-1]
        assert re.search(rf"\.{name}\b", code + after), f"{path}:{number}: no {name} here"
        named.add(name)
    reached = set(REACH.findall(code))
    assert reached <= named, f"{path}:{number}: {reached - named} reached, not named"


def external(cls: type) -> list[type]:
    return [k for k in cls.__mro__[1:]
            if k is not object and k.__module__.split(".")[0] in ("faust", "aiokafka", "mode")]


def unseen_reaches() -> set[tuple[str, str, str]]:
    """(rankflow class, private name, 'override' or 'self') for each private member of a
    faust, aiokafka or mode base class that a rankflow subclass overrides or reaches
    through `self`/`super()` (SLF001 sees neither)."""
    reaches = set()
    for module in KAFKA_MODULES:
        for cls in vars(module).values():
            if not inspect.isclass(cls) or cls.__module__ != module.__name__:
                continue
            bases = external(cls)
            if not bases:
                continue
            own = {name for name in vars(cls) if name.startswith("_")
                   and not name.startswith("__") and name != "_abc_impl"}  # ABCMeta's
            used = set(re.findall(r"\b(?:self|super\(\))\.(_[A-Za-z]\w*)", source(cls)))
            for name in own | used:
                if any(defines(base, name) for base in bases):
                    kind = "override" if name in own else "self"
                    reaches.add((cls.__qualname__, name, kind))
    return reaches


def module_of(cls_name: str) -> ModuleType:
    return next(m for m in KAFKA_MODULES if inspect.isclass(getattr(m, cls_name, None)))


def test_overrides_and_self_reaches_are_in_the_ledger():
    reaches = unseen_reaches()
    assert len(reaches) >= 15  # the search itself still works
    missing = []
    for cls_name, name, kind in sorted(reaches):
        cls = getattr(module_of(cls_name), cls_name)
        classes = {k.__name__ for k in external(cls)}
        rows = [row for row in ROWS
                if row.name == name and row.key.split(".")[0] in classes
                and (kind != "override" or "override" in row.kind)]
        if not rows:
            missing.append(f"{cls_name} {kind}s {name}")
    assert not missing, f"not in {LEDGER.name}: {missing}"
