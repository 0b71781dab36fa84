from bastion.types.audit import EVENT_CODES, event_code


def test_codes_are_unique_and_outcome_suffixed():
    assert len(set(EVENT_CODES.values())) == len(EVENT_CODES)
    assert event_code("user.login", "success") == "T1000I"
    assert event_code("user.login", "failure") == "T1000W"


def test_docs_catalogue_lists_every_event_type_with_its_code():
    import re
    from pathlib import Path

    doc = (Path(__file__).parents[3] / "docs" / "audit.md").read_text()
    catalogue = doc.split("## Catalogue", 1)[1]
    rows = [line for line in catalogue.splitlines() if line.startswith("| `")]
    documented: dict[str, str] = {}
    for row in rows:
        cells = row.split("|")
        types = re.findall(r"`([a-z_.]+)`", cells[1])
        codes = re.findall(r"T\d{4}", cells[2])
        for t, c in zip(types, codes, strict=False):
            documented[t] = c
    missing = {t: c for t, c in EVENT_CODES.items() if documented.get(t) != c}
    assert not missing, f"docs/audit.md catalogue lacks or mis-codes: {missing}"
