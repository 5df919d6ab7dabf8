from feature_store.keys import feature_key, namespace_pattern


def test_key_layout_has_hash_tag_on_entity() -> None:
    assert feature_key("prod", "card_tx", "c-17") == b"si:prod:card_tx:{c-17}"


def test_unsafe_characters_are_escaped_so_keys_stay_distinct() -> None:
    keys = {feature_key("prod", "v", e) for e in ["a}b", "a%7Db", "a:b", "{x}", "a\nb", "a%3Ab"]}
    assert len(keys) == 6
    k = feature_key("prod", "v", "{x}")
    # exactly one hash tag: the first '{' and first '}' wrap the whole escaped entity
    assert k.count(b"{") == 1 and k.count(b"}") == 1 and k.endswith(b"}")


def test_namespaces_do_not_overlap() -> None:
    assert feature_key("prod", "v", "e") != feature_key("replay", "v", "e")
    assert namespace_pattern("prod") == b"si:prod:*"
    assert namespace_pattern("a*b") == b"si:a\\*b:*"


def test_unicode_entity_round_trips() -> None:
    assert feature_key("prod", "sender_mail", "usér@exämple.com").decode() == "si:prod:sender_mail:{usér@exämple.com}"


def test_fast_unsafe_check_agrees_with_the_escape_set() -> None:
    from feature_store.keys import _UNSAFE, _UNSAFE_RE

    for code in range(0x300):
        ch = chr(code)
        assert (_UNSAFE_RE.search(f"a{ch}b") is not None) == (ch in _UNSAFE), repr(ch)


def test_from_flat_reads_what_from_hash_reads() -> None:
    from feature_store.windows import DayWindows

    flat = [b"n20400", b"3", b"s20400", b"12.5", b"n20401", b"1", b"s20401", b"-0.25"]
    mapping = dict(zip(flat[::2], flat[1::2]))
    assert DayWindows.from_flat(flat) == DayWindows.from_hash(mapping)
    assert DayWindows.from_flat([]) == DayWindows()
