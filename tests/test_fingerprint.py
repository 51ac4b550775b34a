"""File fingerprints: content decides, and the digest memo stays bounded (least recently used out)."""

from nodegraph import fingerprint as fp


def memo_key(path):
    stat = path.stat()
    return (str(path), stat.st_size, stat.st_mtime_ns)


def test_memo_is_bounded_and_keeps_the_recently_used(tmp_path):
    fp._memo.clear()
    files = []
    for i in range(fp.MEMO_ENTRIES + 5):
        path = tmp_path / f"f{i}.txt"
        path.write_text(f"content {i}")
        files.append(path)
    first = fp.fingerprint(str(files[0]))
    for i, path in enumerate(files[1:], start=1):
        fp.fingerprint(str(path))
        if i == fp.MEMO_ENTRIES // 2:
            assert fp.fingerprint(str(files[0])) == first  # a hit makes it recent again
    assert len(fp._memo) == fp.MEMO_ENTRIES
    assert memo_key(files[0]) in fp._memo
    assert memo_key(files[1]) not in fp._memo  # the least recently used went first
    assert fp.fingerprint(str(files[1])) == fp.fingerprint(str(files[1]))  # recomputed alike after eviction
    assert len(fp._memo) == fp.MEMO_ENTRIES


def test_distinct_contents_have_distinct_fingerprints(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("one")
    b.write_text("two")
    assert fp.fingerprint(str(a)) != fp.fingerprint(str(b))
    assert fp.fingerprint(str(tmp_path / "absent")) == b"missing"
