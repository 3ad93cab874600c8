"""chatauth.cache.FileCache: shared by the processes of a machine, pruned at
most once an interval instead of listing its directory at every write."""

from __future__ import annotations

import time

from chatauth.cache import FileCache


def make(tmp_path, **options):
    return FileCache(str(tmp_path), {"OPTIONS": {"PRUNE_INTERVAL": 0.2, **options}})


def test_it_is_a_cache_two_processes_share(tmp_path):
    one, other = make(tmp_path), make(tmp_path)
    one.set("k", 5, 60)
    assert other.get("k") == 5
    assert other.add("k", 6, 60) is False
    other.incr("k")
    assert one.get("k") == 6


def test_expired_entries_are_pruned_without_listing_at_every_write(
    tmp_path, monkeypatch
):
    cache = make(tmp_path)
    listed = []
    real = cache._list_cache_files
    monkeypatch.setattr(cache, "_list_cache_files", lambda: listed.append(1) or real())
    for i in range(100):
        cache.set(f"short-{i}", i, 1)
    assert len(listed) <= 1  # not once a write
    time.sleep(1.1)
    cache.set("long", 1, 60)  # a write after the interval prunes
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        cache._key_to_file("long").rsplit("/", 1)[1]
    ]
