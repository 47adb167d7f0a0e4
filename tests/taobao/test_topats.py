"""TOPATS export (docs/top-api.md#topats): start a task, read its status, download and read the zip."""

from __future__ import annotations

import hashlib
import io
import json
import types
import zipfile
from datetime import date
from pathlib import Path

import pytest

from taobao.client import TopClient
from taobao.errors import PermanentTopError, TopatsDownloadError
from taobao.models import RejectedItem, Trade
from taobao.topats import iter_trades, parse_line
from tests.taobao.gateway import SESSION, Reply, ScriptedGateway, error, ok

BIG_TID = 2899536456494937165


def fullinfo_line(tid: int, **fields: object) -> str:
    return json.dumps({"trade_fullinfo_get_response": {"trade": {"tid": tid, **fields}}}, ensure_ascii=False)


def make_zip(entries: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in entries.items():
            archive.writestr(name, text.encode("utf-8"))
    return buffer.getvalue()


def files_in(path: Path) -> list[Path]:
    return list(path.iterdir())


def serve(
    gateway: ScriptedGateway, base_url: str, data: bytes, content_type: str = "application/octet-stream"
) -> str:
    gateway.files["result.zip"] = Reply(
        body=data,
        content_type=content_type,
        headers={"Content-Disposition": 'attachment;filename="result.zip"'},
    )
    return base_url + "/files/result.zip"


EXPORT = make_zip(
    {
        "part1.txt": "\n".join(
            [
                fullinfo_line(BIG_TID, status="TRADE_FINISHED", payment="10.00", buyer_message="a\tb"),
                "",
                fullinfo_line(BIG_TID + 1, orders={"order": [{"oid": BIG_TID + 2}]}),
            ]
        )
        + "\n",
        "dir/": "",
        "part2.txt": "{not json\n"
        + fullinfo_line(5, payment=1.5)
        + "\n"
        + json.dumps({"trade": {"tid": 6}})
        + "\n",
    }
)


async def test_start_an_export(client: TopClient, gateway: ScriptedGateway) -> None:
    gateway.then(
        ok("taobao.topats.trades.sold.get", {"task": {"task_id": 123456, "created": "2024-05-01 10:00:00"}}),
        ok("taobao.topats.trades.sold.get", {"task": {"task_id": "654321"}}),
    )
    task_id = await client.topats_trades_sold_get(
        SESSION, start_date=date(2024, 4, 1), end_date=date(2024, 4, 30), fields="tid,status,orders"
    )
    assert task_id == 123456
    request = gateway.requests[0]
    assert request.signed
    assert request.form == {
        "start_time": "20240401",
        "end_time": "20240430",
        "fields": "tid,status,orders",
        "session": SESSION,
    }
    assert (
        await client.topats_trades_sold_get(
            SESSION, start_date=date(2024, 4, 1), end_date=date(2024, 4, 1), fields="tid"
        )
        == 654321
    )
    with pytest.raises(ValueError, match="before"):
        await client.topats_trades_sold_get(
            SESSION, start_date=date(2024, 4, 2), end_date=date(2024, 4, 1), fields="tid"
        )


async def test_task_status(client: TopClient, gateway: ScriptedGateway) -> None:
    gateway.then(
        ok("taobao.topats.result.get", {"task": {"task_id": 1, "status": "doing"}}),
        ok(
            "taobao.topats.result.get",
            {
                "task": {
                    "task_id": 1,
                    "status": "done",
                    "download_url": "http://files.invalid/x.zip",
                    "check_code": "abc",
                    "method": "taobao.topats.trades.sold.get",
                }
            },
        ),
    )
    doing = await client.topats_result_get(1)
    assert (doing.status, doing.done, doing.download_url) == ("doing", False, None)
    done = await client.topats_result_get(1, session=SESSION)
    assert done.done
    assert (done.download_url, done.check_code) == ("http://files.invalid/x.zip", "abc")
    assert gateway.requests[0].form == {"task_id": "1"}
    assert "session" not in gateway.requests[0].params


@pytest.mark.parametrize("upper", [False, True])
async def test_download_verifies_the_check_code_and_streams_trades(
    client: TopClient, gateway: ScriptedGateway, base_url: str, tmp_path: Path, upper: bool
) -> None:
    url = serve(gateway, base_url, EXPORT)
    check_code = hashlib.md5(EXPORT).hexdigest()
    dest = tmp_path / "export.zip"
    await client.download_topats_result(url, dest, check_code=check_code.upper() if upper else check_code)
    assert dest.read_bytes() == EXPORT
    assert not (tmp_path / "export.zip.part").exists()

    items = iter_trades(dest)
    assert isinstance(items, types.GeneratorType)  # read lazily, line by line
    items_list = list(items)
    trades = [item for item in items_list if isinstance(item, Trade)]
    rejected = [item for item in items_list if isinstance(item, RejectedItem)]
    assert [t.tid for t in trades] == [BIG_TID, BIG_TID + 1, 6]
    assert trades[0].raw["buyer_message"] == "a\tb"
    assert trades[1].orders[0].oid == BIG_TID + 2
    assert [r.reason.split(":")[0:2] for r in rejected] == [["part2.txt", "1"], ["part2.txt", "2"]]


async def test_download_with_a_wrong_check_code_leaves_no_file(
    client: TopClient, gateway: ScriptedGateway, base_url: str, tmp_path: Path
) -> None:
    url = serve(gateway, base_url, EXPORT)
    dest = tmp_path / "export.zip"
    with pytest.raises(TopatsDownloadError, match="check code"):
        await client.download_topats_result(url, dest, check_code="0" * 32)
    assert files_in(tmp_path) == []


async def test_download_into_a_stream(client: TopClient, gateway: ScriptedGateway, base_url: str) -> None:
    url = serve(gateway, base_url, EXPORT)
    buffer = io.BytesIO()
    await client.download_topats_result(url, buffer, check_code=None)
    buffer.seek(0)
    assert sum(1 for item in iter_trades(buffer) if isinstance(item, Trade)) == 3


async def test_download_answered_with_an_error_document(
    client: TopClient, gateway: ScriptedGateway, base_url: str, tmp_path: Path
) -> None:
    reply = error(15, "Remote service error", "isv.task-not-exist")
    url = serve(gateway, base_url, reply.body, content_type="application/json")
    with pytest.raises(PermanentTopError):
        await client.download_topats_result(url, tmp_path / "x.zip", check_code=None)
    url = serve(gateway, base_url, b"{}", content_type="text/plain")
    with pytest.raises(TopatsDownloadError, match="instead of a file"):
        await client.download_topats_result(url, tmp_path / "x.zip", check_code=None)
    with pytest.raises(TopatsDownloadError, match="HTTP 404"):
        await client.download_topats_result(base_url + "/files/gone.zip", tmp_path / "x.zip", check_code=None)
    assert files_in(tmp_path) == []


def test_a_large_export_is_read_in_one_pass(tmp_path: Path) -> None:
    count = 5000
    path = tmp_path / "big.zip"
    path.write_bytes(make_zip({"trades.txt": "\n".join(fullinfo_line(BIG_TID - i) for i in range(count))}))
    kinds = [type(item) for item in iter_trades(path)]
    assert kinds == [Trade] * count


def test_parse_line_shapes() -> None:
    assert isinstance(parse_line(json.dumps({"tid": 1})), Trade)
    assert isinstance(parse_line("[1]"), RejectedItem)
    assert isinstance(parse_line('{"trade_fullinfo_get_response": {"trade": {"tid": "x"}}}'), RejectedItem)
