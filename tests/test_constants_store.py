"""The SQLite store: idempotent inserts, stage statuses, many formulas to one PCF, integrity checks."""

from __future__ import annotations

import pytest

from recurrences.constants.store import Store


def test_formulas_stages_and_pcfs(tmp_path):
    with Store(tmp_path / "s.sqlite") as st:
        f1 = st.add_formula(
            "k1", name="Leibniz", latex="x", sympy="Sum(...)", claimed="pi/4", source={"row": 1}
        )
        assert st.add_formula("k1", name="again") == f1  # idempotent on key
        f2 = st.add_formula("k2", claimed="pi/4")
        assert st.formula(f1)["source"] == {"row": 1}
        assert st.pending("read") == [f1, f2]
        st.set_stage(f1, "read", "ok", result={"candidates": [1]})
        st.set_stage(f2, "read", "failed", "no formula read")
        assert st.pending("read") == []
        assert st.pending("validate", after="read") == [f1]
        st.set_stage(f1, "validate", "ok")
        st.set_stage(f1, "convert", "ok")
        p = st.add_pcf("key-a", [2], [1, 4, 4], [1, 0, -1, 4], "pi")
        assert st.add_pcf("key-a", [2], [1, 4, 4], None, "pi") == p
        st.link(f1, p, [1, 0, 0, 1])
        assert st.pcf_formulas(p) == [f1]
        assert st.pending_dynamics() == [p]
        st.set_dynamics(p, "ok", delta=-0.99, rate=0.004, depth=4000)
        assert st.pending_dynamics() == []
        assert st.check_integrity() == []
        assert st.stage_counts() == {
            "read": {"ok": 1, "failed": 1},
            "validate": {"ok": 1},
            "convert": {"ok": 1},
        }
        assert st.reason_counts() == {"read": {"no formula read": 1}}
        assert st.retry() == 1 and st.pending("read") == [f2]


def test_rejects_bad_status_and_stage(tmp_path):
    with Store(tmp_path / "s.sqlite") as st:
        f = st.add_formula("k")
        with pytest.raises(ValueError, match="status"):
            st.set_stage(f, "read", "done")
        with pytest.raises(ValueError, match="stage"):
            st.set_stage(f, "parse", "ok")
        with pytest.raises(KeyError):
            st.formula(999)


def test_integrity_finds_inconsistencies(tmp_path):
    with Store(tmp_path / "s.sqlite") as st:
        f = st.add_formula("k")
        st.set_stage(f, "convert", "ok")  # without validate
        p = st.add_pcf("key", [1], [1], None, "pi")
        st.link(f, p, [1, 0, 0, 1])
        problems = st.check_integrity()
        assert any("without its predecessor" in x for x in problems)
        st.set_stage(f, "convert", "failed", "x")
        assert any("linked to a PCF" in x for x in st.check_integrity())


def test_persists_across_connections(tmp_path):
    path = tmp_path / "s.sqlite"
    with Store(path) as st:
        f = st.add_formula("k")
        st.set_stage(f, "read", "ok", result={"candidates": [{"text": "PCF(1, 1)"}]})
        st.set_meta("config", {"digits": 50})
    with Store(path) as st:
        assert st.stage(f, "read")["result"]["candidates"][0]["text"] == "PCF(1, 1)"
        assert st.meta("config") == {"digits": 50}
