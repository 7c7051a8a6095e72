"""How the Maildir delivery writes a file: made without a name in ``new/`` (``O_TMPFILE``), written, then linked
under its name — or, where the system cannot, written in ``tmp/`` and moved into ``new/``. Either way a reader sees
whole files only, a Message-ID is one file, and a failed write leaves nothing behind."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from payevents.services.notifications import delivery
from payevents.services.notifications.delivery import MaildirMailer, Outgoing

pytestmark = pytest.mark.skipif(not hasattr(os, "O_TMPFILE"), reason="O_TMPFILE is Linux's")


def _mail(key: str, body: bytes = b"Subject: hi\n\nhello\n", *, first: bool = True) -> Outgoing:
    return Outgoing(key=key, recipient="ann@example.com", data=body, first_attempt=first)


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "maildir"
    yield path
    MaildirMailer._cannot_link.discard(path)


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every path the delivery opens, with its flags."""
    seen: list[tuple[str, int]] = []
    real = os.open

    def recording(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        seen.append((os.fspath(path), flags))
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(delivery.os, "open", recording)
    return seen


def _names(box: Path, sub: str) -> list[str]:
    return sorted(os.listdir(box / sub))


def _first_and_retry(box: Path) -> None:
    """A first attempt and a retry through one pass's mailer: both whole in new/, nothing left in tmp/."""
    mailer = MaildirMailer(box)
    mailer.send(_mail("m1", b"one\n"))
    mailer.send(_mail("m2", b"two\n", first=False))
    mailer.close()
    assert _names(box, "new") == ["m1", "m2"]
    assert (box / "new" / "m1").read_bytes() == b"one\n" and (box / "new" / "m2").read_bytes() == b"two\n"
    assert _names(box, "tmp") == []


def test_a_file_is_made_nameless_in_new_and_linked_there(box: Path, opened: list[tuple[str, int]]) -> None:
    _first_and_retry(box)
    made = [(p, f) for p, f in opened if f & os.O_TMPFILE == os.O_TMPFILE]
    assert [p for p, _f in made] == [str(box / "new")] * 2
    assert not [p for p, f in opened if f & os.O_CREAT and "tmp" in Path(p).parts]  # no name in tmp/, ever


def test_a_name_already_in_new_is_kept(box: Path) -> None:
    """The link claims the name: a second write of the same Message-ID (a first attempt, or a retry after a crash
    between the write and its mark) leaves the file a reader may already be reading as it is."""
    mailer = MaildirMailer(box)
    mailer.send(_mail("k", b"first\n"))
    mailer.sync()
    before = os.stat(box / "new" / "k").st_ino
    mailer.send(_mail("k", b"first\n"))
    mailer.send(_mail("k", b"first\n", first=False))
    mailer.close()
    assert _names(box, "new") == ["k"] and os.stat(box / "new" / "k").st_ino == before
    assert _names(box, "tmp") == []


def test_a_failed_write_leaves_nothing_and_the_pass_says_so(box: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mailer = MaildirMailer(box)
    real = os.write
    calls = [0]

    def full_disk(fd: int, data: Any) -> int:
        calls[0] += 1
        if calls[0] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(delivery.os, "write", full_disk)
    mailer.send(_mail("ok"))
    mailer.send(_mail("full"))
    mailer.send(_mail("after"))
    with pytest.raises(OSError, match="No space left"):
        mailer.sync()
    mailer.close()
    assert _names(box, "new") == ["after", "ok"]
    assert _names(box, "tmp") == []


@pytest.mark.parametrize("code", [errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL])
def test_where_the_file_system_cannot_the_files_go_through_tmp(box: Path, monkeypatch: pytest.MonkeyPatch,
                                                               opened: list[tuple[str, int]], code: int) -> None:
    recording = delivery.os.open

    def no_tmpfile(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(code, os.strerror(code))
        return recording(path, flags, *args, **kwargs)

    monkeypatch.setattr(delivery.os, "open", no_tmpfile)
    _first_and_retry(box)
    assert len([p for p, f in opened if f & os.O_CREAT and "tmp" in Path(p).parts]) == 2
    # the next pass's mailer does not ask again
    opened.clear()
    again = MaildirMailer(box)
    again.send(_mail("m3"))
    again.close()
    assert _names(box, "new") == ["m1", "m2", "m3"]
    assert len([p for p, f in opened if f & os.O_CREAT and "tmp" in Path(p).parts]) == 1


def test_without_proc_the_nameless_file_is_dropped_and_written_through_tmp(box: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    real_link = os.link

    def no_proc(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if str(src).startswith("/proc/"):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(src))
        real_link(src, dst, *args, **kwargs)

    monkeypatch.setattr(delivery.os, "link", no_proc)
    _first_and_retry(box)
